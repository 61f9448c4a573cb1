"""Fashion-MNIST's 60,000 training images in memory and on the devices: uint8 codes (what `fashion_mnist` stores
now, decoded inside the jitted step) vs float32 values (what it stored before: pixel / 255 on the host, copied to
the devices as float32).

Each measurement runs in a fresh child process (`python -m benchmarks.uint8_data --child=uint8|float32`), so peak
RSS is the process's own. Timed: `research.data.load("fashion_mnist")` (read, gunzip, sha256; the float32 path also
divides), an `ArrayPipeline` over the training split, and its arrays copied to every device as the loop's
`--data_on_device` does; then, separately, the first batch gathered and decoded by a jitted function (its compilation
included). Bytes: the dataset arrays on one device (the training split's `x` and `y`), and the rise of peak RSS over
the process after `import jax`. Targets (the issue): load + pipeline < 3 s; the dataset on a device <= 2x its uint8
size (47.1 MB: 60,000 x 784 pixel bytes + 60,000 label bytes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.timing import REPO, table

UINT8_BYTES = 60_000 * 28 * 28 + 60_000  # the training split at one byte per pixel and per label


def _child(kind: str) -> dict:
    import jax
    import numpy as np

    from research import data, parallel
    from research.data.pipeline import ArrayPipeline

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mesh = parallel.make_mesh()
    t0 = time.perf_counter()
    ds = data.load("fashion_mnist")
    if kind == "uint8":
        arrays, scales = ds.stored("train"), ds.scales
    else:  # the float32 path as it was: every pixel divided on the host, float32 copied to the devices
        arrays, scales = ds.split("train"), {}
    pipeline = ArrayPipeline(arrays, 128, seed=0, scales=scales)
    on_device = parallel.to_replicated(pipeline.arrays, mesh)
    jax.block_until_ready(on_device)
    t_pipeline = time.perf_counter() - t0

    t1 = time.perf_counter()
    gather = jax.jit(lambda d, i: pipeline.decode(jax.tree.map(lambda a: a[i], d)))
    batch = jax.block_until_ready(gather(on_device, parallel.to_replicated(pipeline.next_rows(), mesh)))
    t_batch = time.perf_counter() - t1
    assert batch["x"].dtype == np.float32 and float(batch["x"].max()) <= 1.0
    device = jax.devices()[0]
    device_bytes = sum(s.data.nbytes for a in jax.tree.leaves(on_device) for s in a.addressable_shards
                       if s.device == device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return {"pipeline_s": t_pipeline, "first_batch_s": t_batch, "device_bytes": device_bytes, "rss_bytes": rss,
            "host_bytes": sum(a.nbytes for a in arrays.values())}


def _measure(kind: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.uint8_data", f"--child={kind}"], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(repeats: int = 3) -> str:
    runs = {kind: [_measure(kind) for _ in range(max(repeats, 1))] for kind in ("float32", "uint8")}
    med = {kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs.items()}
    mb = lambda b: b / 1e6
    rows = [[kind, m["pipeline_s"], m["first_batch_s"], mb(m["host_bytes"]), mb(m["device_bytes"]),
             m["device_bytes"] / UINT8_BYTES, mb(m["rss_bytes"])] for kind, m in med.items()]
    rows.append(["uint8 / float32", med["uint8"]["pipeline_s"] / med["float32"]["pipeline_s"],
                 med["uint8"]["first_batch_s"] / med["float32"]["first_batch_s"],
                 med["uint8"]["host_bytes"] / med["float32"]["host_bytes"],
                 med["uint8"]["device_bytes"] / med["float32"]["device_bytes"], "",
                 med["uint8"]["rss_bytes"] / med["float32"]["rss_bytes"]])
    return table("Fashion-MNIST training split: uint8 codes vs float32 values (targets: load + pipeline < 3 s, "
                 "device bytes <= 2x uint8)",
                 ["stored as", "load + pipeline s", "first batch s", "host MB (train arrays)",
                  "device MB (per device)", "device / uint8 size", "peak RSS rise MB"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=["uint8", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
    else:
        main(args.repeats)
