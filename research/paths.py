"""Where the codebase keeps machine-wide caches (generated datasets, evaluator networks, XLA programs)."""

import os
import pathlib


def cache_dir(*parts: str) -> pathlib.Path:
    """`$RESEARCH_CACHE_DIR` (default `~/.cache/research`) joined with `parts`, created on demand."""
    root = os.environ.get("RESEARCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "research")
    path = pathlib.Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
