"""Run the benchmark suite: `python -m benchmarks.run [--only NAME] [--repeats N]`.

Run it alone on the machine; two cores are easily shared and a timing taken beside other work is worthless.
"""

from __future__ import annotations

import argparse
import importlib
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
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {jax.device_count()} JAX devices "
          f"({jax.devices()[0].platform}), jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')}\n", flush=True)
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
