"""Print constraints.txt: the exact installed version of every package the project needs (its dependencies and
the extras that CI and the docs install, transitively), read from the current environment.

    python .ci/constraints.py > constraints.txt     (after `pip install -e ".[dev,tensorboard]"` and a green pytest)
"""

from __future__ import annotations

import importlib.metadata as md
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("dev", "postgres", "tensorboard")


def pins(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [(root, set(extras))]
    while todo:
        package, wanted = todo.pop()
        for text in md.distribution(package).requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted or {""}):
                continue
            name = canonicalize_name(req.name)
            if name in found:
                continue
            try:
                found[name] = md.version(name)
            except md.PackageNotFoundError:  # an optional dependency this environment does not have
                continue
            todo.append((name, set(req.extras)))
    return found


if __name__ == "__main__":
    sys.stdout.write("# The exact versions the test suite ran on; regenerate with: python .ci/constraints.py > "
                     "constraints.txt\n")
    sys.stdout.write("".join(f"{k}=={v}\n" for k, v in sorted(pins("research", EXTRAS).items())))
