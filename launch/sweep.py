"""Ablation grids and hyperparameter searches: every trial its own process and workdir, an Optuna study the ledger.

    python -m launch.sweep --spec=experiments/sweeps/mlp_optimizers.toml --sweep_dir=/tmp/sweeps/mlp_opt --workers=2
    python -m launch.sweep --report --sweep_dir=/tmp/sweeps/mlp_opt        # CSV, markdown and plots from the ledger
    python -m launch.sweep --spec=... --sweep_dir=... --storage=postgresql://user:pass@host/db   # on more machines

Running the same command again runs only what is missing (nothing, once the sweep is complete) and re-reports.
The sweep dir holds sweep.json (study name, storage with any password redacted), the default ledger
(ledger.journal), trials/<point>/ (each trial's workdir), logs/<point>.log, results.csv, results.md, plots/.
See docs/sweeps.md for the spec format.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags

from launch.cli import fail, parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("spec", None, "Sweep spec (TOML), e.g. experiments/sweeps/mlp_optimizers.toml.")
flags.DEFINE_string("sweep_dir", None, "Directory of the sweep: ledger (default), trial workdirs, logs, reports.")
flags.DEFINE_integer("workers", 1, "Worker processes on this machine (trials run in parallel).")
flags.DEFINE_string("storage", None, "Ledger: journal:PATH (default <sweep_dir>/ledger.journal) or a SQLAlchemy URL "
                    "such as postgresql://user:pass@host/db; default $SWEEP_STORAGE (keeps a password out of ps).")
flags.DEFINE_bool("report", False, "Only rewrite results.csv, results.md and plots/ from the ledger.")
flags.DEFINE_bool("retry_failed", False, "Queue the points whose last trial failed (non-zero exit) once more.")
flags.DEFINE_integer("max_retries", 2, "Retries of a point whose worker died or whose trial was killed by a signal.")
flags.DEFINE_float("heartbeat_seconds", 10.0, "Seconds between a running trial's heartbeats.")
flags.DEFINE_float("stale_seconds", 120.0, "A running trial without a heartbeat for this long is lost and retried.")
flags.DEFINE_float("stall_seconds", 1800.0, "Kill and retry a trial whose log has not grown for this long (a hung "
                   "process); 0 never does. Trials log every --log_every steps: keep this well above that interval.")
flags.DEFINE_float("poll_seconds", 2.0, "Seconds between looks at the ledger while other workers' trials run.")
flags.DEFINE_bool("dry_run", False, "Print each point's command and exit.")

SWEEP_FILE = "sweep.json"


def _read_info(path: str) -> dict:
    from research.errors import ConfigError

    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path} ({type(e).__name__}); it records which sweep owns this directory: "
                          f"restore it or use another --sweep_dir") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path} is not a JSON object; restore it or use another --sweep_dir")
    return info


def _sweep_info(sweep_dir: str, name: str, url: str) -> None:
    """Refuse a sweep dir that belongs to another sweep (other study or ledger); record ours on first use."""
    from research.errors import ConfigError
    from research.sweep.ledger import redact

    path = os.path.join(sweep_dir, SWEEP_FILE)
    mine = {"study": name, "storage": redact(url)}
    if os.path.exists(path):
        theirs = _read_info(path)
        for k in ("study", "storage"):
            if theirs.get(k) != mine[k]:
                raise ConfigError(f"{sweep_dir} belongs to the sweep {theirs.get('study')!r} with the ledger "
                                  f"{theirs.get('storage')}; this is {name!r} with {mine['storage']}: use another "
                                  f"--sweep_dir (or the same --storage)")
        return
    os.makedirs(sweep_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({**mine, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=2)
    os.replace(tmp, path)


def _report(sweep_dir: str, ledger, spec) -> None:
    from research.sweep import report

    text, rows = report.write(sweep_dir, ledger, None if spec is None else spec.record(), FLAGS.max_retries)
    print(text)
    print(f"wrote {os.path.join(sweep_dir, 'results.md')}, results.csv and plots/")


def _status(ledger, spec) -> dict[str, int]:
    """How many runs (grid point × seed, or search trial) are in each status."""
    out: dict[str, int] = {}
    for s in ledger.statuses(FLAGS.max_retries).values():
        out[s] = out.get(s, 0) + 1
    return out


def _run_workers(url: str, spec, sweep_dir: str) -> bool:
    """Start --workers worker processes and wait for them; True if interrupted."""
    from research.sweep.worker import die_with_parent

    cfg = {"spec": os.path.abspath(spec.path), "sweep_dir": sweep_dir, "storage": url, "cwd": os.getcwd(),
           "heartbeat": FLAGS.heartbeat_seconds, "stale_after": FLAGS.stale_seconds, "poll": FLAGS.poll_seconds,
           "max_retries": FLAGS.max_retries, "stall_after": FLAGS.stall_seconds}
    procs = []
    for i in range(FLAGS.workers):
        p = subprocess.Popen([sys.executable, "-m", "research.sweep.worker"], stdin=subprocess.PIPE, text=True,
                             preexec_fn=die_with_parent(signal.SIGTERM))
        p.stdin.write(json.dumps({**cfg, "index": i}))
        p.stdin.close()
        procs.append(p)
    interrupted = False
    try:
        while any(p.poll() is None for p in procs):  # poll, so a killed worker is reaped (not a zombie) at once
            time.sleep(0.2)
        codes = [p.returncode for p in procs]
    except KeyboardInterrupt:
        interrupted = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait() for p in procs]
    from research.errors import interrupted_exit_code

    bad = [c for c in codes if c not in (0, interrupted_exit_code(signal.SIGINT), -signal.SIGTERM, -signal.SIGINT)]
    if bad:
        print(f"{len(bad)} worker(s) ended with an error (exit {bad[0]}); see their messages above", flush=True)
    return interrupted


def main() -> None:
    from research.errors import ConfigError, interrupted_exit_code
    from research.sweep import spec as spec_lib
    from research.sweep.ledger import Ledger, redact, storage_url

    if not FLAGS.sweep_dir:
        raise ConfigError("--sweep_dir is required")
    if FLAGS.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {FLAGS.workers}")
    if not (FLAGS.heartbeat_seconds > 0 and FLAGS.stale_seconds > FLAGS.heartbeat_seconds and FLAGS.poll_seconds > 0):
        raise ConfigError("need --heartbeat_seconds > 0, --stale_seconds > --heartbeat_seconds, --poll_seconds > 0")
    if FLAGS.stall_seconds < 0:
        raise ConfigError(f"--stall_seconds must be >= 0 (0: never), got {FLAGS.stall_seconds}")
    if FLAGS.max_retries < 0:
        raise ConfigError(f"--max_retries must be >= 0, got {FLAGS.max_retries}")
    sweep_dir = os.path.abspath(FLAGS.sweep_dir)
    given = FLAGS.storage or os.environ.get("SWEEP_STORAGE")
    spec = spec_lib.load(FLAGS.spec) if FLAGS.spec else None

    if FLAGS.report:
        info_path = os.path.join(sweep_dir, SWEEP_FILE)
        info = _read_info(info_path) if os.path.exists(info_path) else {}
        if not given and "***" in info.get("storage", ""):
            raise ConfigError(f"the ledger of {sweep_dir} is {info['storage']}: pass --storage with its password")
        url = storage_url(given or info.get("storage"), sweep_dir)
        name = spec.name if spec else info.get("study")
        if not name:
            raise ConfigError(f"{sweep_dir} has no {SWEEP_FILE}: pass --spec (and --storage) to name the sweep")
        _report(sweep_dir, Ledger.load(url, name), spec)
        return

    if spec is None:
        raise ConfigError("--spec is required (or --report to only report)")
    url = storage_url(given, sweep_dir)
    if FLAGS.dry_run:
        for p in spec.points() if spec.search is None else []:
            print(" ".join(spec.command(p.flags, p.flagfiles, p.seed, os.path.join(sweep_dir, "trials", p.name),
                                        p.num_seeds)))
        if spec.search is not None:
            n = len(spec.seeds) if spec.vectorize_seeds else None
            name = f"tNNNN_seeds-{spec.seeds[0]}-{spec.seeds[-1]}" if n else "tNNNN_seed-S"
            print(" ".join(spec.command({}, [], spec.seeds[0], os.path.join(sweep_dir, "trials", name), n))
                  + "  # plus each trial's " + ", ".join(f"--{p.name}" for p in spec.search.params))
        return
    spec_lib.check_flags(spec)
    _sweep_info(sweep_dir, spec.name, url)
    ledger = Ledger.open(url, spec)
    ledger.top_up(FLAGS.max_retries, retry_failed=FLAGS.retry_failed)
    before = _status(ledger, spec)
    what = (f"{sum(before.values())} grid points" if spec.search is None else
            f"a search of {spec.search.n_trials} trials")
    if spec.vectorize_seeds:
        what += f" (seeds vectorised: {len(spec.seeds)} per --num_seeds trial)"
    print(f"sweep {spec.name}: {what}, ledger {redact(url)}: "
          + ", ".join(f"{n} {s}" for s, n in sorted(before.items())), flush=True)
    interrupted = False
    if ledger.unfinished() or (spec.search is not None and _fresh(ledger) < spec.search.n_trials):
        interrupted = _run_workers(url, spec, sweep_dir)
    else:
        print("nothing to run: every point is done or failed (--retry_failed queues the failed ones again)")
    _report(sweep_dir, ledger, spec)
    after = _status(ledger, spec)
    left = sum(n for s, n in after.items() if s not in ("done", "failed"))
    if interrupted:
        print(f"interrupted: {left} runs unfinished; run the same command again to finish them")
        sys.exit(interrupted_exit_code(signal.SIGINT))
    if left:
        print(f"{left} runs unfinished (running elsewhere, or lost): run the same command again to finish them")
        sys.exit(1)


def _fresh(ledger) -> int:
    """Search trials asked of the sampler so far (queued retries excluded)."""
    return sum(1 for t in ledger.trials() if "fixed_params" not in t.system_attrs)


def _main(argv: list[str]) -> None:
    """ConfigError (bad spec, foreign sweep dir, unreachable ledger) -> one line on stderr, exit 2."""
    from research.errors import ConfigError
    from research.sweep.ledger import scrub, secrets

    hidden = secrets(FLAGS.storage or os.environ.get("SWEEP_STORAGE") or "")
    try:
        main()
    except ConfigError as e:
        fail(scrub(str(e), hidden), e.exit_code)
    except Exception:  # a storage error may quote the URL: never print its password
        import traceback

        sys.stderr.write(scrub(traceback.format_exc(), hidden))
        sys.exit(1)


if __name__ == "__main__":
    app.run(_main, flags_parser=parse_flags)
