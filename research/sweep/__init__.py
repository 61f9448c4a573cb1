"""Ablation sweeps and hyperparameter searches whose ledger is an Optuna study.

    spec.py    the TOML sweep spec: parsing, validation (flag names asked of the launch module), grid expansion
    ledger.py  the Optuna study as ledger: claim a trial exactly once, heartbeats, stale-trial detection, retries
    worker.py  a worker process: claims trials and runs each as its own subprocess in its own workdir
    report.py  results.csv, results.md (mean ± std over seeds, paper vs ours) and plots, from the ledger alone

`launch/sweep.py` is the command-line entry; docs/sweeps.md describes the spec format and the guarantees.
"""
