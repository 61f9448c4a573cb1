"""`python -m launch.serve`: real HTTP requests against servers on free local ports. Every endpoint, bad
requests (400, one line, the server lives), concurrent clients batched, overload (503 + Retry-After), and
SIGTERM while requests are in flight, in a process where `import research` fails."""

from __future__ import annotations

import concurrent.futures
import gc
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest

from launch.artifact import Artifact, InputError, TensorSpec
from launch.serve import Batcher, ServeConfig, image_grid, png_bytes, running
from tests.conftest import REPO
from tests.export_runs import runs  # noqa: F401  (the session's trained runs)

NO_RESEARCH = os.path.join(REPO, "tests", "no_research.py")


def request(url: str, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request on a new connection."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def artifacts(runs):  # noqa: F811
    runs.workdirs("mlp", "gan")  # trained side by side
    return {name: Artifact.load(runs.export(name)) for name in ("mlp", "gan")}


@pytest.fixture(scope="module")
def test_x() -> np.ndarray:
    """The digits test images as the registry holds them (this test process may import research; the servers
    never do)."""
    from research.data import load

    return load("digits").split("test")["x"]


LIMITS = {"max_batch": 64, "max_wait_ms": 20, "max_request_rows": 64, "max_body_bytes": 1 << 20}


@pytest.fixture(scope="module")
def mlp_server(artifacts):
    with running(artifacts["mlp"], ServeConfig(**LIMITS)) as (url, batcher):
        yield url, batcher


@pytest.fixture(scope="module")
def gan_server(artifacts):
    with running(artifacts["gan"], ServeConfig(**LIMITS)) as (url, batcher):
        yield url, batcher


@pytest.mark.slow
def test_every_endpoint(artifacts, mlp_server, gan_server, test_x):
    url, _ = mlp_server
    status, _, body = request(url, "GET", "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["entries"] == ["predict"]
    assert health["config"]["buckets"] == [1, 2, 4, 8, 16, 32, 64]
    status, _, body = request(url, "GET", "/v1/models")
    assert status == 200 and json.loads(body) == artifacts["mlp"].manifest

    x = test_x[:8]  # 8 rows: computed alone in the 8-row bucket, so exactly what the artifact computes at 8 rows
    want = artifacts["mlp"].call("predict", {"x": x})
    for inputs in ({"x": x.tolist()}, x.tolist()):  # named, or the bare array of a one-input entry
        status, headers, body = request(url, "POST", "/v1/predict/predict", {"inputs": inputs})
        assert status == 200, body
        out = json.loads(body)["outputs"]
        assert np.array_equal(np.asarray(out["logits"], np.float32), want["logits"])
        assert out["label"] == want["label"].tolist()
        assert headers["x-batch-rows"] == "8" and headers["x-bucket"] == "8" and headers["x-batch-requests"] == "1"

    url, _ = gan_server
    gan = artifacts["gan"]
    z = np.random.default_rng(3).standard_normal((16, 16)).astype(np.float32)
    for extra, labels in (({}, np.arange(16) % 10), ({"label": 4}, np.full(16, 4))):
        status, headers, body = request(url, "POST", "/v1/sample", {"n": 16, "seed": 3, **extra})
        assert status == 200, body
        out = json.loads(body)
        want = gan.call("generate", {"z": z, "label": labels.astype(np.int32)})["x"]
        assert np.array_equal(np.asarray(out["outputs"]["x"], np.float32), want)
        assert out["outputs"]["label"] == labels.tolist() and out["seed"] == 3
    status, headers, body = request(url, "POST", "/v1/sample", {"n": 16, "seed": 3}, {"Accept": "image/png"})
    assert status == 200 and headers["content-type"] == "image/png"
    from PIL import Image

    picture = np.asarray(Image.open(io.BytesIO(body)))
    grid = image_grid(gan.call("generate", {"z": z, "label": (np.arange(16) % 10).astype(np.int32)})["x"], ncol=10)
    assert picture.shape == (2 * 33 + 1, 10 * 33 + 1)  # 8x8 digits enlarged 4x, one class per column
    assert np.array_equal(picture, np.clip(np.rint(grid[..., 0] * 255), 0, 255).astype(np.uint8))
    status, _, body = request(url, "POST", "/v1/predict/generate", {"inputs": {"z": z[:2].tolist(),
                                                                              "label": [0, 9]}})
    assert status == 200 and np.asarray(json.loads(body)["outputs"]["x"]).shape == (2, 8, 8, 1)


def _bad_requests(test_x) -> list[tuple[str, str, bytes | dict, dict]]:
    """(server, path, body, headers): 36 requests the contract answers with 400."""
    x = test_x[:2].tolist()
    row = np.zeros((1, 8, 8, 1)).tolist()
    ragged = [np.zeros((8, 8, 1)).tolist(), np.zeros((8, 7, 1)).tolist()]
    z = np.zeros((2, 16)).tolist()
    bad = [("mlp", "/v1/predict/predict", b, {}) for b in (
        b"{", b"", b"   ", b"null", b"[]", b"\xff\xfe", b"[" * 50_000 + b"]" * 50_000,
        b'{"inputs": NaN}', b'{"inputs": [[[[Infinity]]]]}')]
    bad += [("mlp", "/v1/predict/predict", body, {}) for body in (
        {"inputs": [1, 2]}, {"input": x}, {"inputs": {"y": x}}, {"inputs": {"x": x}, "extra": 1},
        {"inputs": {"x": [[[["a"]]]]}}, {"inputs": np.ones((1, 8, 8, 1), bool).tolist()}, {"inputs": ragged},
        {"inputs": (np.ones((1, 8, 8, 1)) * 1e39).tolist()}, {"inputs": []},
        {"inputs": np.zeros((1, 8, 8, 2)).tolist()},
        {"inputs": [[[[{"v": 1}]]]]}, {"inputs": row * 65}, {"inputs": {"x": x, "y": x}})]
    bad += [("mlp", "/v1/predict/nope", {"inputs": x}, {}), ("mlp", "/v1/sample", {"n": 2}, {}),
            ("mlp", "/v1/predict/predict", b"{" + b" " * (2 << 20) + b"}", {})]  # body over max_body_bytes
    bad += [("gan", "/v1/sample", body, {}) for body in (
        {}, {"n": 0}, {"n": 65}, {"n": "5"}, {"n": True}, {"n": 2, "seed": -1}, {"n": 2, "label": 10},
        {"n": 2, "label": 2.5}, {"n": 2, "temperature": 1.0})]
    bad += [("gan", "/v1/predict/generate", {"inputs": body}, {}) for body in (
        {"z": z, "label": [0.5, 1.0]}, {"z": z, "label": [0, 12]}, {"z": z, "label": [1]}, {"z": z})]
    return bad


@pytest.mark.slow
def test_bad_requests_get_400_with_one_line_and_the_server_lives(mlp_server, gan_server, test_x):
    urls = {"mlp": mlp_server[0], "gan": gan_server[0]}
    bad = _bad_requests(test_x)
    assert len(bad) >= 30
    for server, path, body, headers in bad:
        status, _, answer = request(urls[server], "POST", path, body, headers)
        assert status == 400, (path, str(body)[:80], status, answer[:300])
        message = json.loads(answer)["error"]
        assert message and "\n" not in message, message
    assert mlp_server[1].snapshot()["bad_requests"] >= 20
    status, _, body = request(urls["mlp"], "POST", "/v1/predict/predict", {"inputs": test_x[:1].tolist()})
    assert status == 200 and request(urls["gan"], "GET", "/healthz")[0] == 200


def _concurrently(fn, n: int) -> list:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


@pytest.mark.slow
def test_32_concurrent_clients_are_batched_and_answered_correctly(artifacts, test_x):
    mlp = artifacts["mlp"]
    with running(mlp, ServeConfig(max_batch=64, max_wait_ms=50)) as (url, batcher):
        def client(i: int):
            answers = []
            for k in range(4):
                row = test_x[(4 * i + k) % len(test_x)][None]
                status, headers, body = request(url, "POST", "/v1/predict/predict", {"inputs": row.tolist()})
                answers.append((row, status, int(headers.get("x-batch-requests", 0)), body))
            return answers

        answers = [a for per_client in _concurrently(client, 32) for a in per_client]
        stats = batcher.snapshot()
    assert len(answers) == 128 and all(status == 200 for _, status, _, _ in answers)
    for row, _, _, body in answers:
        out = json.loads(body)["outputs"]
        want = mlp.call("predict", {"x": row})
        # a row's last bits depend on the batch size it ran in (see launch/serve.py): close, same class
        np.testing.assert_allclose(out["logits"], want["logits"], rtol=1e-5, atol=1e-5)
        assert out["label"] == want["label"].tolist()
    assert max(n for _, _, n, _ in answers) > 1
    assert stats["requests"] == 128 and stats["max_requests_per_batch"] > 1 and stats["batches"] < 128


@pytest.mark.slow
def test_a_queued_request_holds_its_arrays_not_the_parsed_json(artifacts, monkeypatch):
    """Parsed JSON kept alive while requests wait for their batch filled the oldest GC generation under load
    (full collections of the whole heap, GIL held): the lists must be gone before a request is queued."""
    sentinel, seen = 0.4242424242, []
    original = Batcher.submit

    async def submit(self, entry, arrays, rows):
        gc.collect()
        seen.append(sum(1 for o in gc.get_objects()
                        if type(o) is list and len(o) == 1 and type(o[0]) is float and o[0] == sentinel))
        return await original(self, entry, arrays, rows)

    monkeypatch.setattr(Batcher, "submit", submit)
    body = json.dumps({"inputs": [[[[sentinel]] * 8] * 8]}).encode()  # no list of ours outlives this line
    with running(artifacts["mlp"], ServeConfig(max_wait_ms=0)) as (url, _):
        status, _, answer = request(url, "POST", "/v1/predict/predict", body)
    assert status == 200, answer
    assert seen == [0]


@pytest.mark.slow
def test_deterministic_mode_answers_do_not_depend_on_the_load(artifacts, test_x):
    mlp = artifacts["mlp"]
    entry = mlp.entries["predict"]
    with running(mlp, ServeConfig(max_batch=16, max_wait_ms=30, deterministic=True)) as (url, batcher):
        assert batcher.cfg.buckets == [16]

        def client(i: int):
            row = test_x[i][None]
            return row, request(url, "POST", "/v1/predict/predict", {"inputs": row.tolist()})

        answers = _concurrently(client, 24)
    for row, (status, headers, body) in answers:
        assert status == 200 and headers["x-bucket"] == "16"
        alone = entry.run(mlp.params, [np.concatenate([row, np.zeros((15, 8, 8, 1), np.float32)])])["logits"][:1]
        assert np.array_equal(np.asarray(json.loads(body)["outputs"]["logits"], np.float32), alone)


@pytest.mark.slow
def test_overload_answers_503_with_retry_after_and_the_server_lives(artifacts, test_x):
    cfg = ServeConfig(max_batch=64, max_wait_ms=300, max_queue=2)
    with running(artifacts["mlp"], cfg) as (url, batcher):
        t = time.monotonic()
        answers = _concurrently(lambda i: request(url, "POST", "/v1/predict/predict",
                                                  {"inputs": test_x[i][None].tolist()}), 20)
        assert time.monotonic() - t < 20
        statuses = sorted(status for status, _, _ in answers)
        assert set(statuses) == {200, 503} and statuses.count(200) >= 1, statuses
        for status, headers, body in answers:
            if status == 503:
                assert headers["retry-after"] == "1" and "queue is full" in json.loads(body)["error"]
        assert batcher.snapshot()["overloaded"] == statuses.count(503)
        assert request(url, "GET", "/healthz")[0] == 200
        assert request(url, "POST", "/v1/predict/predict", {"inputs": test_x[:1].tolist()})[0] == 200
    with running(artifacts["mlp"], ServeConfig(max_wait_ms=500, request_timeout_s=0.1)) as (url, batcher):
        status, headers, body = request(url, "POST", "/v1/predict/predict", {"inputs": test_x[:1].tolist()})
        assert status == 503 and headers["retry-after"] == "1" and "waited" in json.loads(body)["error"]
        assert batcher.snapshot()["timed_out"] == 1


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight_and_exits_0_without_research(runs, artifacts, test_x, tmp_path):  # noqa: F811
    cmd = [sys.executable, NO_RESEARCH, "-m", "launch.serve", f"--model={runs.export('mlp')}", "--port=0",
           "--max_wait_ms=1500", "--log_level=warning"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "serving DIR (mlp: predict) on http://127.0.0.1:PORT"
        assert "serving" in line, line + proc.stderr.read()[-3000:]
        url = line.split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        rows = test_x[:8]
        results: dict[int, tuple] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, request(
            url, "POST", "/v1/predict/predict", {"inputs": rows[i][None].tolist()}))) for i in range(8)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 20
        while (health := json.loads(request(url, "GET", "/healthz")[2]))["stats"]["queued"] < 8:  # all 8 wait
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health["gc"]["frozen_objects"] > 10_000 and health["gc"]["threshold"][0] == 10_000  # settle_gc ran
        proc.send_signal(signal.SIGTERM)
        for th in threads:
            th.join(30)
        code = proc.wait(30)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err[-3000:]
    assert "stopped on SIGTERM: 8 requests in 1 batches" in out
    want = artifacts["mlp"].call("predict", {"x": rows})["logits"]  # the 8 rows ran as one 8-row batch
    for i in range(8):
        status, headers, body = results[i]
        assert status == 200 and headers["x-batch-requests"] == "8"
        assert np.array_equal(np.asarray(json.loads(body)["outputs"]["logits"], np.float32), want[i:i + 1])
    with pytest.raises(OSError):
        request(url, "GET", "/healthz", timeout=5)


def test_command_line_refusals(tmp_path, capsys):
    from launch.serve import main

    for args, message in [(["--model", str(tmp_path), "--port=70000"], "--port"),
                          (["--model", str(tmp_path), "--max_batch=0"], "--max_batch"),
                          (["--model", str(tmp_path), "--deterministic=maybe"], "true or false"),
                          (["--model", str(tmp_path), "--max_wait=3"], "unrecognized arguments: --max_wait=3")]:
        with pytest.raises(SystemExit) as stop:
            main(args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    for args, message in [([], "--model"), (["--model", str(tmp_path)], "holds no manifest.json")]:
        proc = subprocess.run([sys.executable, NO_RESEARCH, "-m", "launch.serve", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert message in lines[0]


# ---- pieces without a server

def test_tensor_spec_converts_or_names_the_problem():
    spec = TensorSpec("x", ("batch", 3), np.dtype(np.float32))
    assert spec.convert([[1, 2, 3]]).dtype == np.float32
    ids = TensorSpec("token", ("batch",), np.dtype(np.int32), (0, 5))
    assert ids.convert([0, 4]).tolist() == [0, 4]
    for s, value, message in [(spec, [[1, 2]], "got shape"), (spec, [[1, 2], [3]], "rectangular"),
                              (spec, [["a", "b", "c"]], "strings"), (spec, [[1e300, 0, 0]], "overflow"),
                              (ids, [1.0], "integers"), (ids, [5], r"\[0, 5\)"), (ids, [2**40], "range of int32"),
                              (spec, np.zeros((0, 3)), "at least one row")]:
        with pytest.raises(InputError, match=message):
            s.convert(value)


def test_png_bytes_is_a_png_pillow_reads():
    from PIL import Image

    for channels in (1, 3):
        image = np.random.default_rng(0).random((5, 7, channels)).astype(np.float32)
        decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
        want = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        assert np.array_equal(decoded, want[..., 0] if channels == 1 else want)


def test_buckets():
    assert ServeConfig(max_batch=64).buckets == [1, 2, 4, 8, 16, 32, 64]
    assert ServeConfig(max_batch=48).buckets == [1, 2, 4, 8, 16, 32, 48]
    assert ServeConfig(max_batch=48).bucket(33) == 48 and ServeConfig(max_batch=1).buckets == [1]
    assert ServeConfig(max_batch=48, deterministic=True).buckets == [48]
    with pytest.raises(ValueError):
        ServeConfig(max_queue=0)
