"""Flagfiles, sweep specs and reproduction specs; `python -m experiments.results` regenerates the docs' tables."""
