"""Does a storage hand each queued trial to exactly one of several processes claiming at once?

    python -m research.sweep.race --storage=journal:/tmp/race.journal --trials=100 --procs=4
    python -m research.sweep.race --storage=sqlite:////tmp/race.db --trials=100 --procs=4

Queues `trials` trials in a fresh study, starts `procs` processes that each claim queued trials as fast as
they can (the atomic WAITING -> RUNNING transition the ledger relies on) and complete them, then counts trials
claimed by more than one process. This is how the ledger's default storage was chosen (docs/sweeps.md), and
tests run it against the journal and PostgreSQL.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time


def _storage(url: str):
    from research.sweep.ledger import open_storage

    return open_storage(url)  # deliberately without storage_url(): SQLite is allowed here, to measure it


def _claimer(url: str, out: str) -> None:
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = _storage(url)
    study = optuna.load_study(study_name="race", storage=storage)
    got, errors = [], []
    while True:
        try:
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting:
                break
            for t in sorted(waiting, key=lambda t: t.number):
                try:
                    if storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                        got.append(t.number)
                        storage.set_trial_state_values(t._trial_id, TrialState.COMPLETE, [0.0])
                        break
                except UpdateFinishedTrialError:
                    continue
        except Exception as e:  # e.g. "database is locked": count it and go on
            errors.append(type(e).__name__)
    with open(out, "w") as f:
        json.dump({"got": got, "errors": errors}, f)


def race(url: str, trials: int, procs: int) -> dict[str, int]:
    """Queue `trials`, claim them from `procs` processes; counts of claims, distinct trials, duplicates, errors."""
    import optuna

    storage = _storage(url)
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name="race", storage=storage)
    study = optuna.create_study(study_name="race", storage=storage)
    for i in range(trials):
        study.enqueue_trial({"i": i})
    with tempfile.TemporaryDirectory(prefix="race-") as tmp:
        outs = [os.path.join(tmp, f"{i}.json") for i in range(procs)]
        start = time.time()
        ps = [subprocess.Popen([sys.executable, "-m", "research.sweep.race", "--child", o], stdin=subprocess.PIPE,
                               text=True) for o in outs]
        for p in ps:
            p.stdin.write(url)
            p.stdin.close()
        for p in ps:
            p.wait()
        got, errors = [], []
        for o in outs:
            with open(o) as f:
                d = json.load(f)
            got += d["got"]
            errors += d["errors"]
    counts = collections.Counter(got)
    return {"claims": len(got), "distinct": len(counts), "duplicates": sum(c - 1 for c in counts.values()),
            "errors": len(errors), "seconds": round(time.time() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", help="journal:PATH or a SQLAlchemy URL (read from stdin when omitted)")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _claimer(sys.stdin.read(), args.child)
        return
    url = args.storage or sys.stdin.read().strip()
    print(json.dumps(race(url, args.trials, args.procs)))


if __name__ == "__main__":
    main()
