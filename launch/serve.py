"""Serve an export of `launch.export` over HTTP; concurrent requests are batched into one call.

    python -m launch.serve --model=/tmp/exports/mlp [--host=127.0.0.1 --port=8000 --max_batch=64 --max_wait_ms=2]

    GET  /healthz             {"status": "ok", "stats": {...}, "gc": {...}}: requests, batches, requests per batch,
                              queue; the garbage collector's collections per generation
    GET  /v1/models           the artifact's manifest
    POST /v1/predict/<entry>  {"inputs": {name: array, ...}} (one-input entries: {"inputs": array})
                              -> {"outputs": {name: array, ...}}; headers X-Batch-Requests, X-Batch-Rows, X-Bucket
    POST /v1/sample           generators (GAN, VAE): {"n": N, "seed": S[, "label": L]} -> {"outputs": {...}};
                              with `Accept: image/png`, a PNG grid of the images

Needs only jax, jaxlib (+ flatbuffers, numpy), starlette, uvicorn (+ httptools) and orjson: it imports nothing from
`research` (launch/artifact.py loads the artifact), so it runs where the training code is not installed. JSON goes
through orjson: a request's cost is mostly JSON, and orjson decodes a 28x28 image 3-4x and encodes one 14x faster
than the json module (non-finite outputs are written as null; NaN and Infinity in a request are refused).

Web stack: Starlette on uvicorn. FastAPI is Starlette plus pydantic models, and pydantic would add nothing
here: what a request must hold is known only once an artifact is loaded (its manifest's shapes and dtypes), so
validation is ours either way, and FastAPI answers validation failures with 422 where this contract says 400
with one line. Both are actively maintained (Encode / Kludex); uvicorn's programmatic `Server` takes a socket
we bound (so `--port=0` can print the real port) and shuts down gracefully on SIGTERM.

Batching: each request is checked (JSON, names, dtypes, shapes) on arrival and queued per entry. One batcher
task takes the entry whose oldest request waited longest, waits until that request is `--max_wait_ms` old or
`--max_batch` rows are queued, and hands the queued requests (up to `--max_batch` rows; a single request may
hold more, then it runs in chunks) to one compute thread as one call of the exported function. While that call
runs, new requests queue up, so under load batches fill by themselves and the wait only costs latency when
traffic is light.

Buckets: every distinct batch size is a new XLA compilation of the exported function (tens of ms for an MLP,
seconds for a DCGAN), so calls are padded with zero rows to the next power of two (capped at `--max_batch`):
at most log2(max_batch) + 1 programs, all compiled at start-up (`--warmup`), so no request pays for a compile;
padding costs at most twice the rows. A row's outputs can differ in the last bits with the batch size it ran in
(XLA:CPU picks other kernels for other shapes), so the same request may get answers that differ in the last
bits depending on the load; `--deterministic=true` pads every call to `--max_batch` (one program, answers
independent of the load, every call costs max_batch rows).

Limits: the queue holds at most `--max_queue` requests; past that, or when a request waited
`--request_timeout_s`, the answer is 503 with Retry-After (the server never hangs a client). Bad JSON, unknown
entries or fields, wrong shapes or dtypes, ids out of range, more rows than `--max_request_rows`, bodies over
`--max_body_bytes`: 400 with {"error": "<one line>"}. SIGTERM stops accepting connections, answers the requests
in flight (at most `--drain_timeout_s`), and exits 0. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import gc
import json
import logging
import math
import pathlib
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import orjson

from launch.artifact import Artifact, ArtifactError, InputError

log = logging.getLogger("launch.serve")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """The server's limits and batching settings (the flags of `python -m launch.serve`)."""

    max_batch: int = 64            # rows per call of the exported function
    max_wait_ms: float = 2.0       # how long the oldest queued request may wait for others to join its batch
    max_queue: int = 256           # queued requests; more: 503
    max_request_rows: int = 256    # rows of one request (n of /v1/sample)
    max_body_bytes: int = 8 << 20
    request_timeout_s: float = 30.0
    deterministic: bool = False    # pad every call to max_batch

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_request_rows", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0 or not self.request_timeout_s > 0:
            raise ValueError("--max_wait_ms must be >= 0 and --request_timeout_s > 0")

    @property
    def buckets(self) -> list[int]:
        """The batch sizes calls are padded to."""
        if self.deterministic:
            return [self.max_batch]
        sizes = [1 << k for k in range(self.max_batch.bit_length()) if 1 << k < self.max_batch]
        return [*sizes, self.max_batch]

    def bucket(self, rows: int) -> int:
        return next(b for b in self.buckets if b >= rows)


class Overloaded(Exception):
    """The queue is full, or a request waited too long: 503 with Retry-After."""


@dataclasses.dataclass
class _Job:
    arrays: list[np.ndarray]
    rows: int
    future: asyncio.Future
    arrived: float


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """How a request was computed: in a call with `requests` requests of `rows` rows, padded to `bucket`."""

    requests: int
    rows: int
    bucket: int

    def headers(self) -> dict[str, str]:
        return {"X-Batch-Requests": str(self.requests), "X-Batch-Rows": str(self.rows), "X-Bucket": str(self.bucket)}


class Batcher:
    """Queues prepared requests per entry and computes them in batches on one thread (see the module doc)."""

    def __init__(self, artifact: Artifact, cfg: ServeConfig):
        self.artifact, self.cfg = artifact, cfg
        self.queues: dict[str, collections.deque[_Job]] = {name: collections.deque() for name in artifact.entries}
        self.pending = 0
        self.stats: dict[str, Any] = {"requests": 0, "batches": 0, "rows": 0, "padded_rows": 0, "overloaded": 0,
                                      "timed_out": 0, "bad_requests": 0, "compute_seconds": 0.0,
                                      "max_requests_per_batch": 0, "requests_per_batch": collections.Counter()}
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compute")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def warm_up(self) -> float:
        """Compile every entry for every bucket now (seconds taken), so that no request waits for a compile."""
        t = time.perf_counter()
        for entry in self.artifact.entries.values():
            for b in self.cfg.buckets:
                entry.run(self.artifact.params, [_filler(s, b) for s in entry.inputs])
        return time.perf_counter() - t

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Compute what is queued, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, entry: str, arrays: list[np.ndarray], rows: int) -> tuple[dict[str, np.ndarray],
                                                                                       BatchInfo]:
        """The outputs of one prepared request, computed in a batch; Overloaded when the queue is full or the
        request waited longer than the timeout."""
        if self.pending >= self.cfg.max_queue or self._closing or self._wake is None:
            self.stats["overloaded"] += 1
            raise Overloaded(f"the queue is full ({self.cfg.max_queue} requests waiting); retry shortly")
        loop = asyncio.get_running_loop()
        job = _Job(arrays, rows, loop.create_future(), loop.time())
        self.queues[entry].append(job)
        self.pending += 1
        self._wake.set()
        try:
            return await asyncio.wait_for(job.future, self.cfg.request_timeout_s)
        except TimeoutError:  # the job is skipped (its future is cancelled) if it has not started
            self.stats["timed_out"] += 1
            raise Overloaded(f"the request waited {self.cfg.request_timeout_s:g} s without being computed; retry "
                             f"later") from None

    def _oldest(self) -> str | None:
        waiting = [(q[0].arrived, name) for name, q in self.queues.items() if q]
        return min(waiting)[1] if waiting else None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self.cfg.max_wait_ms / 1000
        while True:
            name = self._oldest()
            if name is None:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            queue = self.queues[name]
            deadline = queue[0].arrived + max_wait
            while not self._closing and sum(j.rows for j in queue) < self.cfg.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
            jobs, rows = [], 0
            while queue and (not jobs or rows + queue[0].rows <= self.cfg.max_batch):
                jobs.append(queue.popleft())
                rows += jobs[-1].rows
            self.pending -= len(jobs)
            jobs = [j for j in jobs if not j.future.done()]  # timed out meanwhile
            if not jobs:
                continue
            t = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._compute, name, jobs)
            except Exception as e:  # a bug or a runtime failure: every request of the batch gets it
                log.exception("computing a batch of %s failed", name)
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self._count(jobs, results[0][1], time.perf_counter() - t)
            for j, result in zip(jobs, results, strict=True):
                if not j.future.done():
                    j.future.set_result(result)

    def _count(self, jobs: list[_Job], info: BatchInfo, seconds: float) -> None:
        s = self.stats
        s["requests"] += len(jobs)
        s["batches"] += 1
        s["rows"] += info.rows
        s["padded_rows"] += info.bucket
        s["compute_seconds"] += seconds
        s["requests_per_batch"][len(jobs)] += 1
        s["max_requests_per_batch"] = max(s["max_requests_per_batch"], len(jobs))

    def _compute(self, name: str, jobs: list[_Job]) -> list[tuple[dict[str, np.ndarray], BatchInfo]]:
        """One call per max_batch rows (normally exactly one), padded to the bucket; outputs split per job."""
        entry = self.artifact.entries[name]
        arrays = [np.concatenate([j.arrays[i] for j in jobs]) for i in range(len(entry.inputs))]
        total, size = len(arrays[0]), self.cfg.max_batch
        parts, padded = [], 0
        for start in range(0, total, size):
            chunk = [a[start:start + size] for a in arrays]
            m = len(chunk[0])
            b = self.cfg.bucket(m)
            padded += b
            if b > m:
                chunk = [np.concatenate([c, _filler(s, b - m)]) for c, s in zip(chunk, entry.inputs, strict=True)]
            parts.append({k: v[:m] for k, v in entry.run(self.artifact.params, chunk).items()})
        outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        info = BatchInfo(len(jobs), total, padded)
        offsets = np.cumsum([0] + [j.rows for j in jobs])
        return [({k: v[offsets[i]:offsets[i + 1]] for k, v in outputs.items()}, info) for i in range(len(jobs))]

    def snapshot(self) -> dict[str, Any]:
        s = dict(self.stats)
        s["requests_per_batch"] = {str(k): v for k, v in sorted(s["requests_per_batch"].items())}
        s["mean_requests_per_batch"] = s["requests"] / s["batches"] if s["batches"] else 0.0
        s["queued"] = self.pending
        return s


def _filler(spec, rows: int) -> np.ndarray:
    """Rows of padding for an input: zeros (the lowest valid id for id inputs)."""
    value = spec.range[0] if spec.range else 0
    return np.full((rows, *spec.shape[1:]), value, spec.dtype)


# ---- requests and responses

def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None):
    """A JSON response through orjson: numpy arrays written directly (float32 in its shortest round-trip form),
    non-finite floats as null. Measured on a 28x28 image: 87 us to encode where json.dumps(tolist()) takes
    1.25 ms, and 0.19 ms to decode where json.loads takes 0.6-0.8 ms; that is most of what a request costs."""
    from starlette.responses import Response

    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, headers=headers,
                    media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    return _json({"error": " ".join(str(message).split())}, status, headers)


async def _json_body(request, limit: int) -> Any:
    """The request's JSON value; InputError for a body over `limit` bytes, empty, or not (standard) JSON."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise InputError(f"the request body ({length} bytes) is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise InputError("empty request body: send a JSON object")
    try:  # standard JSON only: NaN and Infinity are refused, as is nesting deeper than 1024
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InputError(f"bad JSON: {e}") from None


def _object(value: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"the body must be a JSON object with {sorted(required | allowed)}")
    unknown, missing = sorted(set(value) - allowed), sorted(required - set(value))
    if unknown or missing:
        raise InputError(f"the body takes fields {sorted(allowed)}" + (f"; unknown {unknown}" if unknown else "")
                         + (f"; missing {missing}" if missing else ""))
    return value


def _integer(body: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{name!r} must be an integer in [{lo}, {hi}], got {json.dumps(value)[:40]}")
    return value


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1, min_size: int = 28) -> np.ndarray:
    """NHWC images in [0, 1] tiled into one HWC image (white padding), each enlarged (nearest neighbour) to at
    least `min_size` pixels so that 8x8 digits are legible."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    scale = max(1, math.ceil(min_size / images.shape[1]))
    images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """An HWC image in [0, 1] (1 or 3 channels) as an 8-bit PNG file (zlib; no imaging library needed)."""
    img = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
    h, w, c = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))  # filter type 0 on every row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def create_app(artifact: Artifact, batcher: Batcher) -> Any:
    """The Starlette application (an ASGI app) serving `artifact` through `batcher`."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    cfg, manifest = batcher.cfg, artifact.manifest
    sampler = manifest.get("sample")

    def guarded(handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        async def run(request):
            try:
                return await handler(request)
            except InputError as e:
                batcher.stats["bad_requests"] += 1
                return _error(400, str(e))
            except Overloaded as e:
                return _error(503, str(e), {"Retry-After": "1"})
            except Exception as e:  # a bug: answered, logged, and the server goes on
                log.exception("internal error on %s", request.url.path)
                return _error(500, f"internal error: {type(e).__name__}: {e}")

        return run

    async def healthz(request):
        return _json({"status": "ok", "family": manifest["family"], "entries": sorted(artifact.entries),
                      "stats": batcher.snapshot(), "config": dataclasses.asdict(cfg) | {"buckets": cfg.buckets},
                      "gc": {"frozen_objects": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                             "collections": [g["collections"] for g in gc.get_stats()]}})

    async def models(request):
        return _json(manifest)

    def prepared(entry, body: Any) -> tuple[list[np.ndarray], int]:
        # The parsed JSON (a list per pixel row and per pixel) dies here, before the request awaits its batch:
        # kept alive across that wait, it would outlive two collections and fill the oldest GC generation.
        arrays, rows = entry.prepare(_object(body, {"inputs"}, {"inputs"})["inputs"])
        if rows > cfg.max_request_rows:
            raise InputError(f"{rows} rows in one request; at most --max_request_rows={cfg.max_request_rows}")
        return arrays, rows

    async def predict(request):
        name = request.path_params["entry"]
        entry = artifact.entry(name)  # InputError for an unknown entry
        arrays, rows = prepared(entry, await _json_body(request, cfg.max_body_bytes))
        outputs, info = await batcher.submit(name, arrays, rows)
        return _json({"outputs": {k: np.ascontiguousarray(v) for k, v in outputs.items()}}, headers=info.headers())

    async def sample(request):
        if not sampler:
            raise InputError(f"this {manifest['family']} model is not a generator; its entries are "
                             f"{sorted(artifact.entries)} (POST /v1/predict/<entry>)")
        body = _object(await _json_body(request, cfg.max_body_bytes), {"n", "seed", "label"}, {"n"})
        n = _integer(body, "n", 1, cfg.max_request_rows)
        seed = _integer(body, "seed", 0, 2**63 - 1, default=0)
        classes, label_input = sampler["num_classes"], sampler["label"]
        if "label" in body and not label_input:
            raise InputError("this generator is not conditional: leave out 'label'")
        png = "image/png" in request.headers.get("accept", "")
        if png and not sampler["images"]:
            raise InputError("a PNG grid is for image generators; this one draws points: ask for JSON")
        inputs = {sampler["noise"]: np.random.default_rng(seed).standard_normal(
            (n, sampler["noise_dim"])).astype(np.float32)}  # as research's GANSampler draws z
        if label_input:
            labels = (np.full(n, _integer(body, "label", 0, classes - 1), np.int32) if "label" in body
                      else (np.arange(n) % classes).astype(np.int32))
            inputs[label_input] = labels
        arrays, rows = artifact.entry(sampler["entry"]).prepare(inputs)
        outputs, info = await batcher.submit(sampler["entry"], arrays, rows)
        if png:
            ncol = classes if label_input and "label" not in body else None
            return Response(png_bytes(image_grid(outputs[sampler["output"]], ncol=ncol)), media_type="image/png",
                            headers=info.headers())
        result = {sampler["output"]: np.ascontiguousarray(outputs[sampler["output"]])}
        if label_input:
            result[label_input] = labels
        return _json({"outputs": result, "seed": seed}, headers=info.headers())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.close()

    routes = [Route("/healthz", guarded(healthz), methods=["GET"]),
              Route("/v1/models", guarded(models), methods=["GET"]),
              Route("/v1/predict/{entry}", guarded(predict), methods=["POST"]),
              Route("/v1/sample", guarded(sample), methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


# ---- running

def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); OSError if it cannot be had."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app, log_level: str, access_log: bool, drain_timeout_s: float):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                                         timeout_graceful_shutdown=drain_timeout_s))


@contextlib.contextmanager
def running(artifact: Artifact, cfg: ServeConfig, *, host: str = "127.0.0.1", port: int = 0, warmup: bool = True,
            drain_timeout_s: float = 10.0) -> Iterator[tuple[str, Batcher]]:
    """Serve `artifact` from a background thread (tests, benchmarks, notebooks): yields (base URL, batcher)."""
    batcher = Batcher(artifact, cfg)
    if warmup:
        batcher.warm_up()
    sock = bind(host, port)
    server = _uvicorn_server(create_app(artifact, batcher), "warning", False, drain_timeout_s)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock), batcher
    finally:
        server.should_exit = True
        thread.join(drain_timeout_s + 5)
        sock.close()


def settle_gc(threshold: int = 10_000) -> None:
    """Freeze what is alive after warm-up (JAX, the artifact, the compiled programs: ~120k objects) out of the
    garbage collector's reach, and collect the youngest generation every `threshold` net allocations instead of
    700. Under load, each full collection walked that heap (~90 ms, with the GIL held); see docs/deploy.md.
    `main` calls it after warm-up; `running` does not, as it would change the collector of the process hosting it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, as every launch module
        _fail(message)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m launch.serve", description="Serve an export of launch.export over HTTP.",
                allow_abbrev=False)  # as absl: --max_wait is not --max_wait_ms
    p.add_argument("--model", required=True, help="the export directory (launch.export --out)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed at start)")
    d = ServeConfig()
    p.add_argument("--max_batch", type=int, default=d.max_batch, help="rows per call of the exported function")
    p.add_argument("--max_wait_ms", type=float, default=d.max_wait_ms, help="how long a request may wait for a "
                   "batch to fill")
    p.add_argument("--max_queue", type=int, default=d.max_queue, help="queued requests before answering 503")
    p.add_argument("--max_request_rows", type=int, default=d.max_request_rows, help="rows per request (and n of "
                   "/v1/sample)")
    p.add_argument("--max_body_bytes", type=int, default=d.max_body_bytes, help="largest request body")
    p.add_argument("--request_timeout_s", type=float, default=d.request_timeout_s, help="503 after waiting this "
                   "long")
    p.add_argument("--drain_timeout_s", type=float, default=30.0, help="on SIGTERM, how long to finish requests")
    p.add_argument("--deterministic", type=_bool, default=False, help="pad every call to --max_batch: answers "
                   "independent of the load")
    p.add_argument("--warmup", type=_bool, default=True, help="compile every batch bucket before serving")
    p.add_argument("--log_level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access_log", type=_bool, default=True, help="log every request")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        _fail(f"--port must be in [0, 65535], got {args.port}")
    if not args.drain_timeout_s > 0:
        _fail(f"--drain_timeout_s must be positive, got {args.drain_timeout_s}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Load, warm up, bind, serve until SIGTERM/SIGINT; 0 after a graceful stop."""
    args = parse_args(argv)
    try:
        cfg = ServeConfig(args.max_batch, args.max_wait_ms, args.max_queue, args.max_request_rows,
                          args.max_body_bytes, args.request_timeout_s, args.deterministic)
        artifact = Artifact.load(pathlib.Path(args.model))
    except (ValueError, ArtifactError) as e:
        _fail(str(e))
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    batcher = Batcher(artifact, cfg)
    if args.warmup:
        seconds = batcher.warm_up()
        log.info("compiled %d entries x %d batch sizes in %.1f s", len(artifact.entries), len(cfg.buckets), seconds)
    settle_gc()
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    stops: list[int] = []
    # uvicorn handles SIGTERM/SIGINT while it runs (stop accepting, drain, shut down) and afterwards raises the
    # signal again under the handler that was there before it: this one, so that a drained stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stops.append(signum))
    server = _uvicorn_server(create_app(artifact, batcher), args.log_level, args.access_log, args.drain_timeout_s)
    print(f"serving {artifact.path} ({artifact.manifest['family']}: {', '.join(sorted(artifact.entries))}) on "
          f"{url_of(sock)}", flush=True)
    server.run(sockets=[sock])
    sock.close()
    stats = batcher.snapshot()
    print(f"stopped{' on ' + signal.Signals(stops[0]).name if stops else ''}: {stats['requests']} requests in "
          f"{stats['batches']} batches", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
