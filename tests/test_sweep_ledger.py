"""The sweep ledger and workers, on a tiny stand-in launch module (absl flags, a workdir, a final.json).

Two worker processes run each grid point exactly once; a failing trial is recorded with its log's last lines and
the others go on; a worker killed with SIGKILL leaves a trial that is detected and retried; a finished sweep run
again runs nothing; a stale heartbeat from another host is detected; duplicate queue entries are pruned; the
journal storage hands each queued trial to exactly one of several racing processes; storage passwords never
reach output or files; and a real PostgreSQL server (started here, in a temporary directory) serves as ledger.
"""

import csv
import glob
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from research.errors import ConfigError
from research.sweep import report
from research.sweep import spec as spec_lib
from research.sweep.ledger import Ledger, point_status, redact, scrub, secrets, storage_url

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_TRIAL = '''
"""A stand-in launch module: counts its runs in the workdir, can fail, NaN-stop, SIGKILL itself or hang once, and trains
--num_seeds seeds at once (final.json as the training loop writes it)."""
import json, os, signal, sys, time
from absl import app, flags

flags.DEFINE_string("workdir", None, "")
flags.DEFINE_integer("seed", 0, "")
flags.DEFINE_float("lr", 0.1, "")
flags.DEFINE_integer("width", 8, "")
flags.DEFINE_enum("mode", "ok", ["ok", "fail", "nan", "die_once", "hang_once", "stopped_once", "no_final"], "")
flags.DEFINE_float("sleep", 0.0, "")
flags.DEFINE_integer("num_seeds", 1, "")
FLAGS = flags.FLAGS


def metrics(seed):
    return {"score": FLAGS.lr * 10 + seed, "loss": 1.0 / (1 + FLAGS.width)}


def main(argv):
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with open(os.path.join(FLAGS.workdir, "runs.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    print(f"training lr={FLAGS.lr} width={FLAGS.width} seed={FLAGS.seed}", flush=True)
    time.sleep(FLAGS.sleep)
    if FLAGS.mode == "fail":
        print("error: --mode=fail is a configuration error", file=sys.stderr)
        sys.exit(2)
    if FLAGS.mode == "nan":
        print("error: loss is NaN at step 3", file=sys.stderr)
        sys.exit(3)
    marker = os.path.join(FLAGS.workdir, "died")
    if FLAGS.mode == "die_once" and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    if FLAGS.mode == "hang_once" and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(600)  # alive, silent: like a process wedged in its first XLA call
    if FLAGS.mode == "stopped_once" and not os.path.exists(marker):
        open(marker, "w").close()
        print("stopped by SIGTERM at step 4/10; checkpoint saved", file=sys.stderr)
        sys.exit(143)  # what the training loop does on a SIGTERM from elsewhere (research/preemption.py)
    if FLAGS.mode == "no_final":
        return  # exits 0 without writing final.json
    final = {"step": 10, "metrics": metrics(FLAGS.seed), "params_sha256": "0" * 64, "wall_seconds": 0.01}
    if FLAGS.num_seeds > 1:  # like the training loop: the mean, and each seed's own metrics
        per = [{"seed": FLAGS.seed + i, "metrics": metrics(FLAGS.seed + i), "params_sha256": str(i) * 64}
               for i in range(FLAGS.num_seeds)]
        final["metrics"] = {k: sum(p["metrics"][k] for p in per) / len(per) for k in per[0]["metrics"]}
        final["seeds"] = per
    with open(os.path.join(FLAGS.workdir, "final.json"), "w") as f:
        json.dump(final, f)


if __name__ == "__main__":
    app.run(main)
'''

FAST = ["--poll_seconds=0.2", "--heartbeat_seconds=0.5", "--stale_seconds=5"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A directory with the stand-in module on PYTHONPATH; trials and the launcher run from it."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "fake_trial.py").write_text(FAKE_TRIAL)
    path = os.pathsep.join([str(mods), REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "PYTHONPATH": path}


def write_spec(tmp_path, body: str, name: str = "fake") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def sweep(env, *args, timeout=180, check=True):
    proc = subprocess.run([sys.executable, "-m", "launch.sweep", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.getcwd())
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.sweep exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def runs(sweep_dir, name) -> int:
    path = os.path.join(sweep_dir, "trials", name, "runs.txt")
    return len(pathlib.Path(path).read_text().split()) if os.path.exists(path) else 0


def trials(sweep_dir, name="fake"):
    return Ledger.load(storage_url(None, sweep_dir), name).trials()


def test_two_workers_each_point_once_failures_recorded_rerun_runs_nothing(env, tmp_path):
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0, 1]
        metrics = ["score", "loss"]
        [flags]
        sleep = 0.3
        [axes.model]
        small = { width = 4, lr = 0.1 }
        big = { width = 16, lr = 0.2 }
        broken = { mode = "fail" }
        nan = { mode = "nan" }
        """)
    sd = str(tmp_path / "sweep")
    out = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=2", *FAST).stdout
    points = spec_lib.load(spec).points()
    assert {p.name: runs(sd, p.name) for p in points} == {p.name: 1 for p in points}
    ts = trials(sd)
    assert len(ts) == 8 and len({t.user_attrs["pid"] for t in ts}) == 2  # both workers took trials
    by_key = {t.user_attrs["key"]: t for t in ts}
    assert all(by_key[f"model={m},seed={s}"].state.name == "COMPLETE" for m in ("small", "big") for s in (0, 1))
    broken, nan = by_key["model=broken,seed=1"], by_key["model=nan,seed=0"]
    assert broken.state.name == "FAIL" and broken.user_attrs["exit_code"] == 2
    assert broken.user_attrs["retriable"] is False
    assert "error: --mode=fail is a configuration error" in broken.user_attrs["log_tail"]
    assert nan.user_attrs["error"] == "non-finite loss or norm (exit 3)"
    assert "loss is NaN at step 3" in nan.user_attrs["log_tail"]
    assert by_key["model=big,seed=1"].value == 0.2 * 10 + 1
    md = pathlib.Path(os.path.join(sd, "results.md")).read_text()
    assert "| big | 2 | 0 | 2.5 ± 0.71 | 0.05882 ± 0 |" in md
    assert "`model=broken,seed=0`" in md and "config error (exit 2)" in md
    assert "4 done, 4 failed" in out

    again = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=2", *FAST).stdout
    assert "nothing to run" in again
    assert len(trials(sd)) == 8 and all(runs(sd, p.name) == 1 for p in points)

    os.remove(os.path.join(sd, "results.md"))
    report = sweep(env, "--report", f"--sweep_dir={sd}").stdout
    assert "| small | 2 | 0 | 1.5 ± 0.71 |" in report and os.path.exists(os.path.join(sd, "results.md"))


def test_killed_worker_and_killed_trial_are_retried(env, tmp_path):
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0, 1]
        metrics = ["score"]
        [axes.mode]
        ok = { sleep = 2.0 }
        die_once = { mode = "die_once" }
        """)
    sd = str(tmp_path / "sweep")
    proc = subprocess.Popen([sys.executable, "-m", "launch.sweep", f"--spec={spec}", f"--sweep_dir={sd}",
                             "--workers=2", *FAST], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    victim, deadline = None, time.time() + 60
    while victim is None and time.time() < deadline:
        time.sleep(0.3)
        try:
            running = [t for t in trials(sd) if t.state.name == "RUNNING" and "pid" in t.user_attrs
                       and t.user_attrs["key"].startswith("mode=ok")]
        except ConfigError:  # the study is not created yet
            continue
        victim = running[0] if running and runs(sd, running[0].user_attrs["name"]) else None
    assert victim is not None, "no trial started"
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)  # the worker; its trial dies with it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    ts = trials(sd)
    mine = [t for t in ts if t.user_attrs["key"] == victim.user_attrs["key"]]
    assert [t.state.name for t in mine] == ["FAIL", "COMPLETE"], out
    assert "is gone" in mine[0].user_attrs["lost"] or "no heartbeat" in mine[0].user_attrs["lost"]
    assert runs(sd, victim.user_attrs["name"]) == 2
    for seed in (0, 1):  # the trial that SIGKILLs itself once is retried and completes
        dies = [t for t in ts if t.user_attrs["key"] == f"mode=die_once,seed={seed}"]
        assert [t.state.name for t in dies] == ["FAIL", "COMPLETE"]
        assert dies[0].user_attrs["error"] == "killed by SIGKILL"
    assert "4 done" in pathlib.Path(os.path.join(sd, "results.md")).read_text()


def test_a_silent_trial_is_killed_as_stalled_and_a_stopped_one_retried(env, tmp_path):
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0]
        metrics = ["score"]
        [axes.mode]
        hang_once = { mode = "hang_once" }
        stopped_once = { mode = "stopped_once" }
        """)
    sd = str(tmp_path / "sweep")
    start = time.time()
    out = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=1", "--stall_seconds=3", *FAST).stdout
    assert time.time() - start < 60, out
    by_mode = {}
    for t in trials(sd):
        by_mode.setdefault(t.user_attrs["key"].split(",")[0], []).append(t)
    hung, stopped = by_mode["mode=hang_once"], by_mode["mode=stopped_once"]
    assert [t.state.name for t in hung] == ["FAIL", "COMPLETE"], out
    assert hung[0].user_attrs["error"] == "stalled: no output for 3 s, killed" and hung[0].user_attrs["retriable"]
    assert "training lr=0.1" in hung[0].user_attrs["log_tail"]
    assert runs(sd, hung[0].user_attrs["name"]) == 2 and "stalled" in out
    assert [t.state.name for t in stopped] == ["FAIL", "COMPLETE"], out
    assert stopped[0].user_attrs["error"] == "stopped by SIGTERM after a checkpoint (exit 143)"
    assert "--stall_seconds must be >= 0" in sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--stall_seconds=-1",
                                                    check=False).stderr


def _ledger(tmp_path, body=None):
    raw = {"launch": "fake_trial", "seeds": [0, 1], "metrics": ["score"], "axes": {"lr": [0.1]}}
    spec = spec_lib.parse(body or raw, str(tmp_path / "unit.toml"))
    return Ledger.open(storage_url(None, str(tmp_path / "sd")), spec), spec


def test_stale_heartbeat_from_another_host_is_lost_and_retried(tmp_path):
    ledger, spec = _ledger(tmp_path)
    assert ledger.top_up(max_retries=1) == 2
    a, b = ledger.claim(), ledger.claim()
    assert (a.key, b.key, a.attempt) == ("lr=0.1,seed=0", "lr=0.1,seed=1", 1)
    for claim, age in ((a, 100.0), (b, 1.0)):  # a's worker on another machine went quiet 100 s ago
        ledger.storage.set_trial_user_attr(claim.trial_id, "host", "elsewhere")
        ledger.storage.set_trial_user_attr(claim.trial_id, "heartbeat", time.time() - age)
    assert ledger.fail_stale(grace=30) == [a.number]
    assert not ledger.heartbeat(a.trial_id) and ledger.heartbeat(b.trial_id)
    groups = ledger.by_key()
    assert point_status(groups[a.key], max_retries=1) == "retry"
    assert ledger.top_up(max_retries=1) == 1
    retry = ledger.claim()
    assert (retry.key, retry.attempt, retry.runs) == (a.key, 2, [(0, os.path.join("trials", "lr-0.1_seed-0"))])
    assert not ledger.succeed(a, [{"seed": 0, "workdir": "w", "final": {"metrics": {"score": 1.0}}}], 1.0)
    assert ledger.succeed(retry, [{"seed": 0, "workdir": "w", "final": {"metrics": {"score": 1.0}}}], 1.0)
    # lost again after the retry budget: the point counts as failed and is not queued
    ledger.storage.set_trial_user_attr(b.trial_id, "heartbeat", time.time() - 100)
    assert ledger.fail_stale(grace=30) == [b.number]
    assert ledger.top_up(max_retries=0) == 0 and point_status(ledger.by_key()[b.key], 0) == "failed"


def test_a_retry_is_claimed_before_new_points(tmp_path):
    ledger, spec = _ledger(tmp_path, {"launch": "fake_trial", "seeds": [0], "metrics": ["score"],
                                      "axes": {"lr": [0.1, 0.2, 0.3]}})
    assert ledger.top_up(max_retries=2) == 3
    first = ledger.claim()
    assert first.key == "lr=0.1,seed=0"
    ledger.fail(first, None, "interrupted (the worker was stopped)", "", retriable=True, interrupted=True)
    assert ledger.top_up(max_retries=2) == 1  # queued behind lr=0.2 and lr=0.3, but it resumes first
    assert [c.key for c in (ledger.claim(), ledger.claim(), ledger.claim())] == [
        "lr=0.1,seed=0", "lr=0.2,seed=0", "lr=0.3,seed=0"]


def test_retry_failed_queues_failed_points_once(tmp_path):
    ledger, spec = _ledger(tmp_path)
    ledger.top_up(max_retries=2)
    for _ in range(2):
        c = ledger.claim()
        ledger.fail(c, 2, "config error (exit 2)", "error: bad", retriable=False)
    assert ledger.top_up(max_retries=2) == 0  # a deterministic failure is not retried by itself
    assert ledger.top_up(max_retries=2, retry_failed=True) == 2
    assert ledger.top_up(max_retries=2, retry_failed=True) == 0  # already queued
    assert [ledger.claim().attempt for _ in range(2)] == [2, 2]


def test_search_asks_n_trials_and_retries_a_lost_one_with_its_params(tmp_path):
    ledger, spec = _ledger(tmp_path, {
        "launch": "fake_trial", "seeds": [0, 1], "metrics": ["score"], "direction": "maximize",
        "search": {"n_trials": 3, "sampler": "random", "params": {"lr": {"low": 1e-3, "high": 1.0, "log": True},
                                                                  "width": {"choices": [4, 16]}}}})
    claims = [ledger.claim() for _ in range(3)]
    assert [c.key for c in claims] == ["t0000", "t0001", "t0002"]
    assert all(1e-3 <= c.params["lr"] <= 1.0 and c.flags["width"] in ("4", "16") for c in claims)
    assert claims[0].runs == [(0, os.path.join("trials", "t0000_seed-0")), (1, os.path.join("trials", "t0000_seed-1"))]
    assert claims[0].flags["lr"] == repr(claims[0].params["lr"])
    assert ledger.claim() is None  # n_trials reached: the extra trial asked of the sampler is pruned
    finals = [{"seed": s, "workdir": "w", "final": {"metrics": {"score": float(s)}}} for s in (0, 1)]
    assert ledger.succeed(claims[1], finals, 1.0) and ledger.study.trials[1].value == 0.5  # mean over seeds
    ledger.storage.set_trial_user_attr(claims[0].trial_id, "heartbeat", time.time() - 100)
    ledger.storage.set_trial_user_attr(claims[0].trial_id, "host", "elsewhere")
    assert ledger.fail_stale(grace=30) == [claims[0].number]
    assert ledger.top_up(max_retries=2) == 1
    retry = ledger.claim()
    assert (retry.key, retry.attempt, retry.params, retry.runs) == ("t0000", 2, claims[0].params, claims[0].runs)


def test_duplicate_queue_entries_are_pruned(tmp_path):
    ledger, spec = _ledger(tmp_path)
    point = spec.points()[0]
    for _ in range(2):  # as if two workers topped up the same point at once
        ledger.study.enqueue_trial({"lr": "0.1", "seed": 0}, user_attrs={"key": point.key, "name": point.name})
    first = ledger.claim()
    assert first.key == point.key
    assert ledger.claim() is None  # the second entry is a duplicate of a RUNNING trial
    states = [t.state.name for t in ledger.by_key()[point.key]]
    assert states == ["RUNNING", "PRUNED"]
    assert ledger.by_key()[point.key][1].user_attrs["duplicate_of"] == first.number


def test_vectorized_sweep_runs_one_trial_per_combination(env, tmp_path):
    """vectorize_seeds: each axis combination's seeds run as one --num_seeds process; the report still has one row
    per (combination, seed) with that seed's metrics; a failed trial fails each of its seeds; a trial killed by a
    signal is retried; a finished sweep run again runs nothing."""
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0, 1, 2]
        vectorize_seeds = true
        metrics = ["score", "loss"]
        [axes.model]
        small = { width = 4, lr = 0.1 }
        big = { width = 16, lr = 0.2 }
        broken = { mode = "fail" }
        die_once = { mode = "die_once", lr = 0.3 }
        """, name="vec")
    sd = str(tmp_path / "sweep")
    out = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=2", *FAST).stdout
    assert "12 grid points (seeds vectorised: 3 per --num_seeds trial)" in out
    names = {m: f"model-{m}_seeds-0-2" for m in ("small", "big", "broken", "die_once")}
    assert {m: runs(sd, n) for m, n in names.items()} == {"small": 1, "big": 1, "broken": 1, "die_once": 2}
    ts = trials(sd, "vec")
    assert sorted((t.user_attrs["key"], t.state.name) for t in ts) == [
        ("model=big,seeds=0-2", "COMPLETE"), ("model=broken,seeds=0-2", "FAIL"),
        ("model=die_once,seeds=0-2", "COMPLETE"), ("model=die_once,seeds=0-2", "FAIL"),
        ("model=small,seeds=0-2", "COMPLETE")]
    big = next(t for t in ts if t.user_attrs["key"] == "model=big,seeds=0-2")
    assert big.params == {"model": "big", "seed": 0, "num_seeds": 3} and big.value == 3.0  # mean of 2, 3, 4
    assert [(r["seed"], r["final"]["metrics"]["score"]) for r in big.user_attrs["results"]] == [(0, 2.0), (1, 3.0),
                                                                                                  (2, 4.0)]
    assert "--seed=0 --num_seeds=3 --workdir=" in pathlib.Path(sd, "logs", names["big"] + ".log").read_text()
    table = pathlib.Path(sd, "results.csv").read_text()
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(table))}
    assert len(rows) == 12 and float(rows["model=big,seed=2"]["score"]) == 4.0
    assert rows["model=big,seed=2"]["workdir"] == os.path.join("trials", names["big"])
    assert [rows[f"model=broken,seed={s}"]["status"] for s in range(3)] == ["failed"] * 3
    assert rows["model=die_once,seed=1"]["attempts"] == "2" and float(rows["model=die_once,seed=1"]["score"]) == 4.0
    md = pathlib.Path(sd, "results.md").read_text()
    assert "| big | 3 | 0 | 3 ± 1 | 0.05882 ± 0 |" in md and "| die_once | 3 | 0 | 4 ± 1 |" in md
    assert "| broken | 0 | 3 | — | — |" in md and "12 runs: 9 done, 3 failed" in md
    assert md.count("`model=broken,seeds=0-2` (trial") == 1 and "seeds 0, 1, 2): config error (exit 2)" in md

    again = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=2", *FAST).stdout
    assert "nothing to run" in again and len(trials(sd, "vec")) == 5 and runs(sd, names["small"]) == 1


def test_vectorized_blocks_report_extend_retry_and_prune(tmp_path):
    raw = {"launch": "fake_trial", "seeds": [0, 1, 2], "vectorize_seeds": True, "metrics": ["score"],
           "axes": {"lr": [0.1, 0.2]}}
    ledger, spec = _ledger(tmp_path, raw)
    assert ledger.top_up(max_retries=1) == 2 and ledger.top_up(max_retries=1) == 0
    a, b = ledger.claim(), ledger.claim()
    assert (a.key, a.num_seeds, a.runs, a.params) == ("lr=0.1,seeds=0-2", 3, [(0, os.path.join("trials",
                                                      "lr-0.1_seeds-0-2"))], {"lr": "0.1", "seed": 0, "num_seeds": 3})
    results = [{"seed": s, "workdir": a.runs[0][1], "final": {"metrics": {"score": float(s)}}} for s in (0, 1, 2)]
    assert ledger.succeed(a, results, 9.0) and ledger.study.trials[a.number].value == 1.0
    ledger.fail(b, 3, "non-finite loss or norm (exit 3)", "error: loss is NaN", retriable=False)
    assert ledger.statuses(max_retries=1) == {f"lr={lr},seed={s}": status for lr, status in (("0.1", "done"),
                                              ("0.2", "failed")) for s in (0, 1, 2)}
    assert ledger.top_up(max_retries=1) == 0

    rows = report.collect(ledger, ledger.record)
    assert [(r["key"], r["status"], r["metrics"]["score"], r["trial_seconds"]) for r in rows] == [
        ("lr=0.1,seed=0", "done", 0.0, 9.0), ("lr=0.1,seed=1", "done", 1.0, 9.0), ("lr=0.1,seed=2", "done", 2.0, 9.0),
        *((f"lr=0.2,seed={s}", "failed", None, None) for s in (0, 1, 2))]
    md = report.markdown(rows, ledger.record)
    assert "| 0.1 | 3 | 0 | 1 ± 1 |" in md and "| 0.2 | 0 | 3 | — |" in md
    assert "Trial wall time: 9 s in total over 1 trial process(es) for 3 completed run(s)" in md

    # more seeds in the spec: only the missing ones run, as one new block per combination (the failed one too)
    wider, _ = _ledger(tmp_path, {**raw, "seeds": [0, 1, 2, 3, 4]})
    assert wider.top_up(max_retries=1) == 2
    c, d = wider.claim(), wider.claim()
    assert (c.key, c.num_seeds, c.runs) == ("lr=0.1,seeds=3-4", 2, [(3, os.path.join("trials", "lr-0.1_seeds-3-4"))])
    assert d.key == "lr=0.2,seeds=3-4"
    # c's worker, on another machine, goes quiet: the same block is queued again as attempt 2
    wider.storage.set_trial_user_attr(c.trial_id, "host", "elsewhere")
    wider.storage.set_trial_user_attr(c.trial_id, "heartbeat", time.time() - 100)
    assert wider.fail_stale(grace=30) == [c.number]
    assert wider.statuses(max_retries=1)["lr=0.1,seed=4"] == "retry"
    assert wider.top_up(max_retries=1) == 1
    retry = wider.claim()
    assert (retry.key, retry.attempt, retry.num_seeds) == ("lr=0.1,seeds=3-4", 2, 2)
    # a block overlapping one that completed (as an older spec might queue it) is a duplicate; one outside the spec
    # (seeds 5-6) is pruned too
    for seeds in ([0, 1], [5, 6]):
        wider._enqueue(wider.spec.block({"lr": "0.1"}, seeds))
    assert wider.claim() is None
    pruned = {t.user_attrs["key"]: t.user_attrs for t in wider.trials() if t.state.name == "PRUNED"}
    assert pruned["lr=0.1,seeds=0-1"]["duplicate_of"] == a.number and pruned["lr=0.1,seeds=5-6"]["not_in_spec"]
    # --retry_failed queues the failed block itself again
    assert wider.top_up(max_retries=1, retry_failed=True) == 1
    again = wider.claim()
    assert (again.key, again.attempt, again.runs[0][0], again.num_seeds) == ("lr=0.2,seeds=0-2", 2, 0, 3)


def test_vectorized_search_runs_each_trials_seeds_in_one_process(tmp_path):
    ledger, spec = _ledger(tmp_path, {
        "launch": "fake_trial", "seeds": [3, 4], "vectorize_seeds": True, "metrics": ["score"],
        "direction": "maximize", "search": {"n_trials": 2, "sampler": "random",
                                            "params": {"lr": {"low": 1e-3, "high": 1.0, "log": True}}}})
    first, second = ledger.claim(), ledger.claim()
    assert (first.key, first.num_seeds, first.runs) == ("t0000", 2, [(3, os.path.join("trials", "t0000_seeds-3-4"))])
    finals = [{"seed": s, "workdir": first.runs[0][1], "final": {"metrics": {"score": float(s)}}, "seconds": 5.0}
              for s in (3, 4)]
    assert ledger.succeed(first, finals, 6.0) and ledger.study.trials[first.number].value == 3.5
    ledger.fail(second, 3, "non-finite loss or norm (exit 3)", "", retriable=False)
    rows = report.collect(ledger, ledger.record)
    assert [(r["key"], r["seed"], r["status"], r["metrics"]["score"]) for r in rows] == [
        ("t0000", 3, "done", 3.0), ("t0000", 4, "done", 4.0), ("t0001", 3, "failed", None),
        ("t0001", 4, "failed", None)]
    md = report.markdown(rows, ledger.record)
    assert "| 0 | " in md and "| 2 | 0 | 3.5 ± 0.71 |" in md and "| 0 | 2 | — |" in md
    assert "over 1 trial process(es) for 2 completed run(s)" in md


def test_journal_hands_each_trial_to_one_of_several_racing_processes(tmp_path):
    from research.sweep.race import race

    result = race(f"journal:{tmp_path / 'race.journal'}", trials=40, procs=3)
    assert result["claims"] == result["distinct"] == 40 and result["duplicates"] == 0 and not result["errors"]


def test_a_trial_without_final_json_fails_and_dry_run_runs_nothing(env, tmp_path):
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0]
        metrics = ["score"]
        [axes.mode]
        ok = { mode = "ok" }
        silent = { mode = "no_final" }
        """)
    sd = str(tmp_path / "sweep")
    dry = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--dry_run").stdout.splitlines()
    assert len(dry) == 2 and all("-m fake_trial" in line and "--seed=0" in line for line in dry)
    assert "--mode=no_final" in dry[1] and f"--workdir={sd}/trials/mode-silent_seed-0" in dry[1]
    assert not os.path.exists(sd)  # a dry run writes nothing
    sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=1", *FAST)
    silent = [t for t in trials(sd) if t.user_attrs["key"] == "mode=silent,seed=0"]
    assert [t.state.name for t in silent] == ["FAIL"] and not silent[0].user_attrs["retriable"]
    assert "exited 0 without a readable" in silent[0].user_attrs["error"]


def _started(sd, name, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and runs(sd, name) < n:
        time.sleep(0.2)
    return runs(sd, name) >= n


def _interactive() -> None:
    """In the child before exec: SIGINT acts as in an interactive shell, whatever the test process inherited (a
    process started with SIGINT ignored keeps ignoring it: Python installs no KeyboardInterrupt handler then)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_stopping_the_sweep_interrupts_its_trial_and_a_rerun_finishes_it(env, tmp_path):
    body = """
        launch = "fake_trial"
        seeds = [0]
        metrics = ["score"]
        [flags]
        sleep = 10
        """  # long enough that a signal sent once the trial started finds it running on a loaded machine
    spec, sd = write_spec(tmp_path, body), str(tmp_path / "sweep")
    start = lambda: subprocess.Popen([sys.executable, "-m", "launch.sweep", f"--spec={spec}", f"--sweep_dir={sd}",
                                      "--workers=1", *FAST], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, preexec_fn=_interactive)
    proc = start()
    assert _started(sd, "seed-0", 1), "the trial never started"
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the worker stops its trial, the sweep says how to go on
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again" in out, out
    [stopped] = trials(sd)
    assert stopped.state.name == "FAIL" and stopped.user_attrs["retriable"] and stopped.user_attrs["interrupted"]
    # the spec changed under the ledger: refused, nothing run
    write_spec(tmp_path, body.replace("sleep = 10", "sleep = 0"))
    changed = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=1", *FAST, check=False)
    assert changed.returncode == 2 and "holds a sweep named 'fake' with a different" in changed.stderr
    assert runs(sd, "seed-0") == 1
    write_spec(tmp_path, body)
    proc = start()
    assert _started(sd, "seed-0", 2), "the retry never started"
    proc.send_signal(signal.SIGTERM)  # a scheduler stopping the whole sweep: its workers die with it
    proc.communicate(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and [t.state.name for t in trials(sd)] != ["FAIL", "FAIL"]:
        time.sleep(0.2)
    assert [t.state.name for t in trials(sd)] == ["FAIL", "FAIL"]
    sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=1", *FAST)
    assert [t.state.name for t in trials(sd)] == ["FAIL", "FAIL", "COMPLETE"] and runs(sd, "seed-0") == 3


def test_a_worker_rides_out_storage_errors_and_gives_up_after_five(tmp_path, monkeypatch):
    from research.sweep import worker as worker_lib

    ledger, spec = _ledger(tmp_path)
    w = worker_lib.Worker.__new__(worker_lib.Worker)
    w.cfg = worker_lib.WorkerConfig(spec=str(tmp_path / "unit.toml"), sweep_dir=str(tmp_path / "sd"),
                                    storage="journal:x", cwd=str(tmp_path), poll=0.01)
    w.spec, w.ledger, w.hidden, w.stopping, w.proc = spec, ledger, [], False, None
    said, ran = [], []
    w.say = said.append
    w.run_trial = ran.append
    failures = iter([OSError("connection reset"), OSError("connection reset")])
    real_claim = ledger.claim

    def flaky_claim():
        error = next(failures, None)
        if error is not None:
            raise error
        return real_claim()

    monkeypatch.setattr(ledger, "claim", flaky_claim)
    monkeypatch.setattr(ledger, "unfinished", lambda: False)
    assert w.run() == 2 and [c.key for c in ran] == ["lr=0.1,seed=0", "lr=0.1,seed=1"]
    assert sum("ledger error (OSError: connection reset); retrying" in m for m in said) == 2
    monkeypatch.setattr(ledger, "claim", lambda: (_ for _ in ()).throw(OSError("down")))
    with pytest.raises(OSError, match="down"):
        w.run(max_storage_errors=5)


def test_storage_urls_and_redaction(tmp_path, env):
    url = "postgresql+psycopg://sweeper:s3cr%40t@db.example:5432/sweeps?sslpassword=k3y&sslmode=require"
    assert redact(url) == "postgresql+psycopg://sweeper:***@db.example:5432/sweeps?sslmode=require&sslpassword=***"
    assert scrub(f"failed for {url}", secrets(url)).count("***") == 2
    assert "s3cr" not in scrub(f"pw s3cr@t / s3cr%40t in {url}", secrets(url))
    assert storage_url(None, "/x") == "journal:/x/ledger.journal"
    assert storage_url("shared/l.journal", "/x") == "journal:" + os.path.abspath("shared/l.journal")
    with pytest.raises(Exception, match="SQLite is not a safe ledger"):
        storage_url("sqlite:///x.db", "/x")
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        metrics = ["score"]
        """)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    proc = sweep(env, f"--spec={spec}", f"--sweep_dir={tmp_path / 'sd'}",
                 f"--storage=postgresql://u:hunter2@127.0.0.1:{port}/db", check=False, timeout=60)
    assert proc.returncode == 2 and "hunter2" not in proc.stdout + proc.stderr
    assert "postgresql://u:***@127.0.0.1" in proc.stderr


# ------------------------------------------------------------------------------------------------ PostgreSQL
def _pg_bin() -> str | None:
    found = shutil.which("initdb") and shutil.which("pg_ctl")
    if found:
        return os.path.dirname(shutil.which("initdb"))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: [int(x) for x in p.split("/")[-3].split(".") if x.isdigit()])
    return os.path.dirname(versions[-1]) if versions else None


def _as_server_user():
    """initdb refuses root: run the server as `postgres` (or `nobody`) when we are root."""
    if os.geteuid() != 0:
        return None, None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            continue
    pytest.fail("running as root, and neither a postgres nor a nobody user exists to run the server")


@pytest.fixture
def postgres():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/postgres.sh installs them")
    uid, gid = _as_server_user()
    root = tempfile.mkdtemp(prefix="sweep-pg-")
    if uid is not None:
        os.chown(root, uid, gid)
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as f:
        f.write("pg-s3cret\n")
    if uid is not None:
        os.chown(pwfile, uid, gid)

    def run(*cmd):
        kw = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=root, **kw)

    data = os.path.join(root, "data")
    r = run(f"{bindir}/initdb", "-D", data, "-U", "sweeper", f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
            "--auth-local=trust", "-E", "UTF8", "--no-sync")
    assert r.returncode == 0, r.stderr
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "server.log"), "-w", "-t", "60", "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off", "start")
    assert r.returncode == 0, r.stderr + pathlib.Path(os.path.join(root, "server.log")).read_text()[-2000:]
    try:
        yield f"postgresql://sweeper:pg-s3cret@127.0.0.1:{port}/postgres"
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_a_postgresql_ledger(env, tmp_path, postgres):
    spec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0, 1]
        metrics = ["score"]
        [flags]
        sleep = 0.5
        [axes]
        lr = [0.1, 0.2]
        """, name="pg_sweep")
    sd = str(tmp_path / "sweep")
    env = {**env, "SWEEP_STORAGE": postgres}  # the password stays out of argv
    out = sweep(env, f"--spec={spec}", f"--sweep_dir={sd}", "--workers=2", *FAST)
    points = spec_lib.load(spec).points()
    assert all(runs(sd, p.name) == 1 for p in points)
    ts = Ledger.load(postgres, "pg_sweep").trials()
    assert sorted(t.user_attrs["key"] for t in ts) == sorted(p.key for p in points)
    assert all(t.state.name == "COMPLETE" for t in ts) and len({t.user_attrs["pid"] for t in ts}) == 2
    text = out.stdout + out.stderr
    for path in glob.glob(os.path.join(sd, "**", "*"), recursive=True):
        if os.path.isfile(path):
            text += pathlib.Path(path).read_text(errors="replace")
    assert "pg-s3cret" not in text and "postgresql://sweeper:***@127.0.0.1" in text
    assert json.loads(pathlib.Path(os.path.join(sd, "sweep.json")).read_text())["storage"].startswith("postgresql://sweeper:***@")

    # the storage hands each queued trial to exactly one of several racing processes, without errors
    from research.sweep.race import race

    result = race(postgres, trials=30, procs=3)
    assert result["claims"] == result["distinct"] == 30 and result["duplicates"] == 0 and not result["errors"]

    # a vectorised sweep on the same server (a worker in this process): one trial per combination, per-seed rows
    from research.sweep.worker import Worker, WorkerConfig

    vec = write_spec(tmp_path, """
        launch = "fake_trial"
        seeds = [0, 1]
        vectorize_seeds = true
        metrics = ["score"]
        [axes]
        lr = [0.1, 0.2]
        """, name="pg_vec")
    worker = Worker(WorkerConfig(spec=vec, sweep_dir=str(tmp_path / "vsweep"), storage=postgres, cwd=str(tmp_path),
                                 heartbeat=0.5, stale_after=5.0, poll=0.2))
    assert worker.run() == 2
    ledger = Ledger.load(postgres, "pg_vec")
    assert sorted((t.user_attrs["key"], t.state.name) for t in ledger.trials()) == [
        ("lr=0.1,seeds=0-1", "COMPLETE"), ("lr=0.2,seeds=0-1", "COMPLETE")]
    rows = report.collect(ledger, ledger.record)
    assert [(r["key"], r["metrics"]["score"]) for r in rows] == [("lr=0.1,seed=0", 1.0), ("lr=0.1,seed=1", 2.0),
                                                                 ("lr=0.2,seed=0", 2.0), ("lr=0.2,seed=1", 3.0)]
