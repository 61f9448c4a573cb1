"""HTTP serving (`launch.serve`): requests/s and p50 / p99 latency at 1 and 32 concurrent clients, batched
(`--max_batch=64`) vs batch-size-1 serving (`--max_batch=1`), with in-process jitted calls of the same exported
function as the ceiling. Target: batched >= 5x the requests/s of batch-1 serving at 32 clients.

    python -m benchmarks.run --only serve --repeats 3

Models, each trained for 1 step (speed does not depend on the weights) and exported with `launch.export`:
- MLP 784-1024-1024-10 on mnist_5k (the `mlp_flops` shape, 7 MB of weights): POST /v1/predict/predict, one image
  per request;
- MLP 784-4096-4096-10 (80 MB of weights): a call at batch 1 is bound by streaming the weights from memory, the
  case batching is for;
- the DCGAN quickstart generator (28x28, experiments/gan/quickstart.flags): POST /v1/sample, n=1.
Batching pays when one call costs much more than the HTTP handling of one request (parsing, JSON, the event
loop: a fraction of a millisecond in Python) and its cost grows slowly with the rows; for the smallest models the
HTTP handling bounds both modes, which the in-process rows show.
The server runs in its own process (`python -m launch.serve`, access log off). The clients are one asyncio loop
in this process, each with a keep-alive connection, writing a pre-built HTTP/1.1 request and reading the answer
(status and Content-Length checked) before sending its next (a closed loop) for `seconds` per measurement:
0.07-0.3 ms of CPU per request, where `http.client` threads cost 0.35-0.8 ms that the server then lacked
(benchmarks/README.md). Clients and server share the machine's two cores. "server CPU ms/req" is the server
process's user + system CPU time (all its threads: event loop, compute, XLA's pool) over the requests answered,
from /proc.
In-process rows at batch 16 and 32 are the most batching can buy at 32 clients: closed-loop clients never queue
more than 32 requests, and while one batch computes the next one forms, so batches settle near 16.
Requests/s: the median over `repeats` measurements; latencies: pooled over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator

import numpy as np

from benchmarks.timing import REPO, median_seconds, table

TRAIN = ["--steps=1", "--log_every=1", "--checkpoint_every=1", "--eval_every=0", "--progress=log"]
MODELS = {  # name -> (launch module, training flags, how a request looks)
    "MLP 784-1024-1024-10": ("mlp", ["--dataset=mnist_5k", "--hidden=1024,1024", "--batch_size=64"], "predict"),
    "MLP 784-4096-4096-10": ("mlp", ["--dataset=mnist_5k", "--hidden=4096,4096", "--batch_size=64"], "predict"),
    "DCGAN quickstart G": ("gan", ["--flagfile=experiments/gan/quickstart.flags", "--evaluator=none",
                                   "--num_eval_samples=64", "--eval_batch_size=64", "--grid_size=16"], "sample"),
}
MODES = {"batched": ["--max_batch=64", "--max_wait_ms=2"], "batch-1": ["--max_batch=1", "--max_wait_ms=0"]}


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"python -m {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def _artifact(tmp: pathlib.Path, module: str, flags: list[str]) -> pathlib.Path:
    """A 1-step run of `module` exported; returns the export directory."""
    run, out = pathlib.Path(tempfile.mkdtemp(dir=tmp)) / "run", pathlib.Path(tempfile.mkdtemp(dir=tmp)) / "export"
    _run(f"launch.{module}", *flags, *TRAIN, f"--workdir={run}")
    _run("launch.export", f"--workdir={run}", f"--out={out}")
    return out


@contextlib.contextmanager
def _server(model: pathlib.Path, mode: list[str], log: pathlib.Path) -> Iterator[tuple[str, int]]:
    """`python -m launch.serve` on a free port (compiled for every bucket before it answers); yields its URL
    and process id."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "launch.serve", f"--model={model}", "--port=0", *mode,
                                 "--max_queue=1024", "--log_level=warning", "--access_log=false"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()
        if " on http://" not in line:
            raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
        yield line.rsplit(" on ", 1)[1].strip(), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(host: str, port: int, requests: list[bytes], first: int, step: int, stop: float,
                  latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    k = first
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(requests[k % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is None:
                raise RuntimeError(f"an answer without Content-Length: {head[:300]!r}")
            data = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"status {head[9:12].decode()}: {data[:300]!r}")
            latencies.append(time.perf_counter() - t)
            k += step
    finally:
        writer.close()


def _load(url: str, path: str, bodies: list[bytes], clients: int, seconds: float) -> tuple[float, list[float]]:
    """(requests/s, latencies in s) of `clients` closed-loop clients for `seconds`."""
    parts = urllib.parse.urlsplit(url)
    requests = [(f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]
    latencies: list[float] = []

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(parts.hostname, parts.port, requests, i, clients, t0 + seconds, latencies)
                               for i in range(clients)))
        return time.perf_counter() - t0

    wall = asyncio.run(run())
    return len(latencies) / wall, latencies


def _requests(kind: str, model: pathlib.Path) -> tuple[str, list[bytes], Callable[[int], float]]:
    """(path, 64 request bodies, in-process seconds per call of the exported function at a batch size)."""
    import jax

    from launch.artifact import Artifact

    artifact = Artifact.load(model)
    rng = np.random.default_rng(0)
    if kind == "predict":
        entry, path = artifact.entries["predict"], "/v1/predict/predict"
        rows = rng.random((64, *entry.inputs[0].shape[1:]), np.float32)
        bodies = [json.dumps({"inputs": r[None].tolist()}).encode() for r in rows]
    else:
        entry, path = artifact.entries[artifact.manifest["sample"]["entry"]], "/v1/sample"
        bodies = [json.dumps({"n": 1, "seed": s}).encode() for s in range(64)]

    def per_call(batch: int, repeats: int) -> float:
        arrays = [np.zeros((batch, *t.shape[1:]), t.dtype) for t in entry.inputs]
        return median_seconds(lambda: jax.block_until_ready(entry.run(artifact.params, arrays)), repeats * 20)

    return path, bodies, per_call


def main(repeats: int = 3, seconds: float = 3.0) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = pathlib.Path(tmp)
        for name, (module, flags, kind) in MODELS.items():
            model = _artifact(tmp, module, flags)
            path, bodies, per_call = _requests(kind, model)
            calls = {b: per_call(b, repeats) for b in (1, 16, 32, 64)}
            for b, t in calls.items():
                note = "calls/s; ms per call" if b == 1 else f"rows/s; ms per call; {calls[1] * b / t:.2f}x batch 1"
                rows.append([name, f"in-process jit, batch {b}", "", b / t, t * 1e3, "", "", note])
            measured = {}
            for mode, mode_flags in MODES.items():
                with _server(model, mode_flags, model.parent / f"{mode}.log") as (url, pid):
                    _load(url, path, bodies, 32, 1.0)  # warm the connections and the server
                    for clients in (1, 32):
                        runs, cpu = [], []
                        for _ in range(max(repeats, 1)):
                            before = _cpu_seconds(pid)
                            runs.append(_load(url, path, bodies, clients, seconds))
                            cpu.append((_cpu_seconds(pid) - before) / len(runs[-1][1]))
                        rate = statistics.median(r for r, _ in runs)
                        latencies = np.array([x for _, lat in runs for x in lat]) * 1e3
                        measured[mode, clients] = rate
                        rows.append([name, f"HTTP {mode}", clients, rate, float(np.percentile(latencies, 50)),
                                     float(np.percentile(latencies, 99)), statistics.median(cpu) * 1e3, ""])
            ratio = measured["batched", 32] / measured["batch-1", 32]
            rows.append([name, "batched / batch-1 at 32 clients", 32, ratio, "", "", "", "target >= 5"])
    return table(f"HTTP serving: requests/s and latency, batched vs batch-1 ({os.cpu_count()} cores, server and "
                 f"clients on one machine; target: batched >= 5x batch-1 at 32 clients)",
                 ["model", "mode", "clients", "requests/s", "p50 ms", "p99 ms", "server CPU ms/req", "note"], rows)


if __name__ == "__main__":
    main()
