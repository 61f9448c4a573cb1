"""A sweep worker: claims trials from the ledger and runs each as its own subprocess in its own workdir.

    python -m research.sweep.worker < config.json     (started by launch/sweep.py; the config, which may hold
                                                        the storage URL, comes on stdin, never on argv)

A trial is `python -m <launch> --flagfile=... --<flags> --seed=S --workdir=<sweep_dir>/trials/<name>`, with
its output appended to `<sweep_dir>/logs/<name>.log`; its result is the workdir's final.json. A vectorised trial
adds `--num_seeds=N` and its final.json is split into one result per seed (`spec.seed_finals`). While it runs,
a thread writes the trial's heartbeat to the ledger; if the ledger says the trial was declared lost meanwhile,
the subprocess is killed (a retry owns the point now); it also watches the trial's log, and a trial that writes
nothing for `stall_after` seconds (a hung process: alive, no progress) is killed and recorded as a retriable
failure. Trial subprocesses die with their worker
(PR_SET_PDEATHSIG), so a killed worker leaves no orphan holding the workdir's lock. SIGTERM/SIGINT stop the
current trial, record it as interrupted (retried later) and end the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from research.errors import exit_reason, interrupted_exit_code, resumable
from research.sweep import ledger as ledger_lib
from research.sweep.spec import Spec, load, metric, seed_finals

LOG_TAIL_LINES = 20


class _TrialEnded(Exception):
    """A run of the trial did not succeed: record it in the ledger (unless `record` is false) and stop the trial."""

    def __init__(self, reason: str, code: int | None, retriable: bool, say: str, record: bool = True,
                 interrupted: bool = False):
        super().__init__(reason)
        self.reason, self.code, self.retriable, self.say, self.record = reason, code, retriable, say, record
        self.interrupted = interrupted


@dataclasses.dataclass
class WorkerConfig:
    spec: str                  # path to the spec file
    sweep_dir: str
    storage: str               # normalised storage URL (may hold a password: never print it)
    cwd: str                   # where trials run (paths in the spec are relative to it)
    index: int = 0
    heartbeat: float = 10.0    # seconds between heartbeats
    stale_after: float = 120.0  # a RUNNING trial without heartbeat for this long is lost
    poll: float = 2.0          # seconds between looks at the ledger while others run
    max_retries: int = 2
    stall_after: float = 0.0   # kill a trial whose log has not grown for this long (0: never)


def die_with_parent(sig: int):
    """A preexec_fn: the child gets `sig` when the process that started it dies (Linux; a no-op elsewhere)."""
    parent = os.getpid()

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec if sys.platform.startswith("linux") else None


class _Heartbeat(threading.Thread):
    """Beats every `interval` seconds; kills the running trial if the ledger says the trial is no longer ours, or
    if its log has not grown for `stall_after` seconds (0: never)."""

    def __init__(self, ledger: ledger_lib.Ledger, trial_id: int, interval: float, say, log_path: str = "",
                 stall_after: float = 0.0):
        super().__init__(daemon=True)
        self.ledger, self.trial_id, self.interval, self.say = ledger, trial_id, interval, say
        self.log_path, self.stall_after = log_path, stall_after
        self.proc: subprocess.Popen | None = None
        self.lost = self.stalled = False
        self._halt = threading.Event()
        self._size, self._grew = -1, time.monotonic()

    def watch(self, proc: subprocess.Popen | None) -> None:
        """The subprocess to kill if the trial is lost or stalls; its stall clock starts now."""
        self._size, self._grew = -1, time.monotonic()
        self.proc = proc

    def _check_stall(self) -> None:
        if not self.stall_after or self.proc is None or self.proc.poll() is not None:
            return
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            size = -1
        now = time.monotonic()
        if size != self._size:
            self._size, self._grew = size, now
        elif now - self._grew >= self.stall_after:
            self.stalled = True
            self.proc.kill()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self._check_stall()
            try:
                alive = self.ledger.heartbeat(self.trial_id)
            except Exception as e:  # a transient storage error: try again at the next beat
                self.say(f"heartbeat failed ({type(e).__name__}); retrying")
                continue
            if not alive:
                self.lost = True
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()


class Worker:
    def __init__(self, cfg: WorkerConfig, spec: Spec | None = None):
        self.cfg = cfg
        self.spec = spec or load(cfg.spec)
        self.hidden = ledger_lib.secrets(cfg.storage)
        self.ledger = ledger_lib.Ledger.open(cfg.storage, self.spec, worker_index=cfg.index)
        self.stopping = False
        self.proc: subprocess.Popen | None = None

    def say(self, msg: str) -> None:
        print(ledger_lib.scrub(f"[worker {self.cfg.index}] {msg}", self.hidden), flush=True)

    def on_signal(self, signum, frame) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    # ---- the loop
    def run(self, max_storage_errors: int = 5) -> int:
        ran, errors = 0, 0
        while not self.stopping:
            try:
                for number in self.ledger.fail_stale(self.cfg.stale_after):
                    self.say(f"trial {number}: its worker is gone; marked lost, will be retried")
                self.ledger.top_up(self.cfg.max_retries)
                claim = self.ledger.claim()
                errors = 0
            except Exception as e:  # a storage hiccup (e.g. a dropped database connection): wait and try again
                errors += 1
                if errors >= max_storage_errors:
                    raise
                self.say(f"ledger error ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                         f"retrying")
                time.sleep(self.cfg.poll * errors)
                continue
            if claim is None:
                if not self.ledger.unfinished():
                    break
                time.sleep(self.cfg.poll)  # others are running: wait in case one of them dies
                continue
            self.run_trial(claim)
            ran += 1
        return ran

    def run_trial(self, claim: ledger_lib.Claim) -> None:
        os.makedirs(os.path.join(self.cfg.sweep_dir, "logs"), exist_ok=True)
        log_path = os.path.join(self.cfg.sweep_dir, "logs", f"{claim.name}.log")
        beat = _Heartbeat(self.ledger, claim.trial_id, self.cfg.heartbeat, self.say, log_path, self.cfg.stall_after)
        beat.start()
        results: list[dict[str, Any]] = []
        start = time.time()
        self.say(f"trial {claim.number}: {claim.key} (attempt {claim.attempt})")
        offset = 0
        try:
            for seed, rel in claim.runs:
                workdir = os.path.join(self.cfg.sweep_dir, rel)
                cmd = self.spec.command(claim.flags, claim.flagfiles, seed, workdir, claim.num_seeds)
                offset = self._log_header(log_path, claim, seed, cmd)
                results += self._run(claim, seed, rel, cmd, log_path, offset, beat)
            beat.stop()
            wall = time.time() - start
            if self.ledger.succeed(claim, results, wall):
                shown = " ".join(f"{m}={v:.4g}" for m in self.spec.metrics
                                 if (v := metric(results[0]["final"], m)) is not None)
                shown += f" (seed {results[0]['seed']} of {len(results)})" if len(results) > 1 else ""
                self.say(f"trial {claim.number}: done in {wall:.1f} s {shown}")
            else:
                self.say(f"trial {claim.number}: finished, but the ledger had already closed it")
        except _TrialEnded as end:
            beat.stop()
            if end.record:
                self.ledger.fail(claim, end.code, end.reason, _tail(log_path, offset), retriable=end.retriable,
                                 results=results, wall=time.time() - start, interrupted=end.interrupted)
            self.say(f"trial {claim.number}: {end.say}")
        finally:
            if beat.is_alive():
                beat.stop()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def _log_header(self, log_path: str, claim: ledger_lib.Claim, seed: int, cmd: list[str]) -> int:
        """Start a run's section of the trial's log; returns where the run's own output begins."""
        seeds = f"seed {seed}" if claim.num_seeds is None else f"seeds {seed}-{seed + claim.num_seeds - 1}"
        with open(log_path, "a") as log:
            log.write(f"==== trial {claim.number} attempt {claim.attempt} {seeds} on "
                      f"{self.ledger.host.split(':')[0]} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                      f"==== {' '.join(cmd)}\n")
            return log.tell()

    def _run(self, claim: ledger_lib.Claim, seed: int, rel: str, cmd: list[str], log_path: str, offset: int,
             beat: _Heartbeat) -> list[dict[str, Any]]:
        """Run one workdir of the trial to its end; its results (one per seed), or _TrialEnded."""
        workdir = os.path.join(self.cfg.sweep_dir, rel)
        with open(log_path, "a") as log:
            run_start = time.time()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.cfg.cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                         preexec_fn=die_with_parent(signal.SIGKILL))
            beat.watch(self.proc)
            code = self.proc.wait()
        self.proc = None
        beat.watch(None)
        if beat.lost:
            raise _TrialEnded("lost", code, False, "declared lost by another worker; stopped it", record=False)
        if beat.stalled:
            reason = f"stalled: no output for {self.cfg.stall_after:g} s, killed"
            raise _TrialEnded(reason, code, True, f"{reason}; retried later")
        if self.stopping:
            raise _TrialEnded("interrupted (the worker was stopped)", code, True, "interrupted; it will be run again",
                              interrupted=True)
        if code != 0:
            reason, retriable = exit_reason(code), resumable(code)
            last = _tail(log_path, offset, lines=1).strip()
            raise _TrialEnded(reason, code, retriable,
                              f"FAILED, {reason}{'; retried later' if retriable else ''}: {last}")
        final = _read_final(workdir)
        if final is None:
            raise _TrialEnded(f"exited 0 without a readable {workdir}/final.json", code, False, "FAILED, no final.json")
        seconds = round(time.time() - run_start, 2)
        if claim.num_seeds is None:
            return [{"seed": seed, "workdir": rel, "final": final, "seconds": seconds}]
        try:
            per_seed = seed_finals(final, seed, claim.num_seeds)
        except ValueError as e:
            raise _TrialEnded(f"vectorised run {workdir}: {e}", code, False, f"FAILED, {e}") from None
        return [{"seed": s, "workdir": rel, "final": f, "seconds": seconds, "vectorized": claim.num_seeds}
                for s, f in per_seed]


def _tail(path: str, offset: int, lines: int = LOG_TAIL_LINES, chars: int = 4000) -> str:
    """The last lines a trial wrote to its log (after `offset`), progress-bar carriage returns folded."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [r.rsplit("\r", 1)[-1] for r in text.splitlines()]
    return "\n".join(rows[-lines:])[-chars:]


def _read_final(workdir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(workdir, "final.json")) as f:
            final = json.load(f)
    except (OSError, ValueError):
        return None
    return final if isinstance(final, dict) else None


def main() -> int:
    cfg = WorkerConfig(**json.loads(sys.stdin.read()))
    hidden = ledger_lib.secrets(cfg.storage)
    try:
        worker = Worker(cfg)
        signal.signal(signal.SIGTERM, worker.on_signal)
        signal.signal(signal.SIGINT, worker.on_signal)
        ran = worker.run()
    except KeyboardInterrupt:
        return interrupted_exit_code(signal.SIGINT)
    except Exception as e:
        from research.errors import ConfigError

        text = str(e) if isinstance(e, ConfigError) else traceback.format_exc()
        sys.stderr.write(ledger_lib.scrub(f"[worker {cfg.index}] error: {text}\n", hidden))
        return e.exit_code if isinstance(e, ConfigError) else 1
    worker.say(f"ran {ran} trial(s); {'stopped' if worker.stopping else 'nothing left to run'}")
    return interrupted_exit_code(signal.SIGINT) if worker.stopping else 0


if __name__ == "__main__":
    sys.exit(main())
