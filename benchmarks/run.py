"""Run the benchmark suite: `python -m benchmarks.run [--only NAME] [--repeats N]`.

`--suite=gpu` runs instead the GPU suite (benchmarks/gpu.py: one table, a few minutes on a GPU; `--quick` shrinks
it to a smoke test that runs anywhere).

Run it alone on the machine; two cores are easily shared and a timing taken beside other work is worthless.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time

import jax

BENCHMARKS = ["dcgan_torch", "dcgan_layers", "lstm_torch", "lstm_parts", "steps_per_call", "seeds", "mlp_flops",
              "startup", "serve", "model_parallel", "uint8_data", "quantized"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--suite", choices=["all", "gpu"], default="all",
                        help="all: the benchmarks above (or --only); gpu: benchmarks/gpu.py's one table")
    parser.add_argument("--quick", action="store_true", help="--suite=gpu: tiny sizes and repeats (a smoke test)")
    args = parser.parse_args()
    if args.suite == "gpu":
        if args.only:
            parser.error("--only applies to --suite=all")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts: PyTorch shares the GPU
        if args.quick:  # a smoke test: XLA:CPU compiles about twice as fast without LLVM's optimisations
            quick = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {quick}".strip()
    elif args.quick:
        parser.error("--quick applies to --suite=gpu")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {jax.device_count()} JAX devices "
          f"({jax.devices()[0].platform}), jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')}\n", flush=True)
    if args.suite == "gpu":
        from benchmarks import gpu

        gpu.main(repeats=args.repeats, quick=args.quick)
        return
    failed = []
    for name in args.only or BENCHMARKS:
        try:
            importlib.import_module(f"benchmarks.{name}").main(repeats=args.repeats)
        except Exception as e:  # report it and go on: one broken benchmark should not void the others' timings
            print(f"### {name} FAILED: {type(e).__name__}: {str(e)[-1500:]}\n", flush=True)
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
