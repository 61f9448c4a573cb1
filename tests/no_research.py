"""Run Python code in a process where `import research` fails: what a machine that has only the artifact's
runtime (jax, jaxlib, numpy, starlette, uvicorn) looks like.

    python tests/no_research.py -m launch.serve --model=DIR ...     # a module, as `python -m`
    python tests/no_research.py -c "code"                            # code, as `python -c`

A finder first on `sys.meta_path` refuses `research` and its submodules, whichever finder would have found them
(the editable install's, a path entry, the working directory), and the script checks that it does before it
runs anything. It runs as a script, so sys.path[0] is tests/, not the repository.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys


class BlockResearch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "research" or name.startswith("research."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by tests/no_research.py)", name=name)
        return None


def main() -> None:
    sys.meta_path.insert(0, BlockResearch())
    try:
        import research  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("tests/no_research.py: `import research` still works")
    mode, target, *args = sys.argv[1:]
    if mode == "-m":
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif mode == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<no_research -c>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(f"usage: {sys.argv[0]} -m MODULE [ARGS...] | -c CODE [ARGS...]")
    loaded = sorted(m for m in sys.modules if m == "research" or m.startswith("research."))
    if loaded:
        raise SystemExit(f"tests/no_research.py: research modules were loaded: {loaded}")


if __name__ == "__main__":
    main()
