"""All checkpointing, behind one small class; the only module that imports Orbax.

A checkpoint holds the train state pytree (params, optimizer state, model state, step, RNG) and a JSON
`meta` dict (data position, accumulated wall time). Restores always go into an abstract target (shapes,
dtypes and shardings from `jax.eval_shape`), after checking that the saved tree has the same structure and
shapes, so a checkpoint from another architecture is a clear error instead of a crash deep in Orbax.

A checkpoint that cannot be read (a truncated data file, torn metadata, a step directory without its state:
what a kill or a full disk mid-save leaves) is not an error of the user's: `restore_latest` moves it aside
(never deletes it) and resumes from the newest checkpoint that reads.

Orbax is imported, and its CheckpointManager built, when first needed: a fresh run (no checkpoint directory, or
an empty one) asks only whether there is a checkpoint, which a directory listing answers, so its first training
step does not wait for Orbax's import (about a second of start-up); the first save builds the manager.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import jax

from research.errors import ConfigError

log = logging.getLogger("research")


def _key_name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _describe(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """'params/Dense_0/kernel' -> (shape, dtype); saved metadata (dicts, lists) and live state (dataclasses,
    tuples) give the same names."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(e) for e in path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves}


class Checkpointer:
    """Save every step it is asked to, keep the newest `keep`, write asynchronously."""

    def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        self._keep, self._async_save = keep, async_save
        self._built = None  # the orbax CheckpointManager, built by `_manager` when first needed

    @property
    def _manager(self):
        if self._built is None:
            import orbax.checkpoint as ocp

            options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                                   enable_async_checkpointing=self._async_save)
            handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
            self._built = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        return self._built

    def _nothing_saved(self) -> bool:
        """True when the directory is missing or empty: no checkpoint, Orbax not needed to say so (anything in
        it, even a half-written step, is left to Orbax)."""
        if self._built is not None:
            return False
        try:
            return not any(self.directory.iterdir())
        except FileNotFoundError:
            return True

    def latest_step(self) -> int | None:
        return None if self._nothing_saved() else self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return [] if self._nothing_saved() else list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save `state` and JSON `meta` at `step`. `meta` is copied now: an async save serialises it later, and the
        caller may mutate what it references (the loop's log window) in the meantime."""
        import orbax.checkpoint as ocp

        meta = json.loads(json.dumps(meta))
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(meta)), force=True)

    def check_compatible(self, step: int, abstract_state: Any) -> None:
        """Raise ConfigError naming the first difference between the saved tree and `abstract_state`."""
        saved = _describe(self._manager.item_metadata(step)["state"].tree)
        wanted = _describe(abstract_state)
        where = f"checkpoint {self.directory}/{step} was written by a different architecture or optimizer"
        missing, extra = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
        if missing or extra:
            raise ConfigError(f"{where}: {len(missing)} arrays missing (e.g. {missing[:1]}), "
                              f"{len(extra)} unexpected (e.g. {extra[:1]})")
        for key, (shape, dtype) in wanted.items():
            if saved[key][0] != shape or saved[key][1] != dtype:
                raise ConfigError(f"{where}: {key} is {saved[key][1]}{list(saved[key][0])} there, "
                                  f"{dtype}{list(shape)} here")

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, meta) saved at `step`, placed with the shardings of `abstract_state`."""
        import orbax.checkpoint as ocp

        self.check_compatible(step, abstract_state)
        out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  meta=ocp.args.JsonRestore()))
        if not isinstance(out["meta"], dict):
            raise ValueError(f"the meta of checkpoint {step} is not a JSON object")
        return out["state"], dict(out["meta"])

    def restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """`restore` for a step the user named (e.g. an export of an older checkpoint): a ConfigError naming the
        saved steps when there is none at `step`, or naming the failure when it cannot be read (left in place)."""
        steps = sorted(self.all_steps())
        if step not in steps:
            raise ConfigError(f"no checkpoint at step {step} in {self.directory}; saved steps: "
                              f"{', '.join(map(str, steps)) or 'none'}")
        try:
            return self.restore(step, abstract_state)
        except ConfigError:
            raise
        except Exception as e:  # as in restore_latest: many types for a damaged checkpoint
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ConfigError(f"checkpoint {self.directory / str(step)} is unreadable ({type(e).__name__}: "
                              f"{first})") from None

    def restore_latest(self, abstract_state: Any, move_aside: Callable[[pathlib.Path, str], Any] | None = None
                       ) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, meta) of the newest checkpoint that can be read, or None if none can. An unreadable one
        is handed to `move_aside(path, why)` (None: skipped with a warning, left in place); a checkpoint of another
        architecture is a ConfigError, as in `restore`."""
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, abstract_state)
            except ConfigError:
                raise
            except Exception as e:  # Orbax, tensorstore and json raise many types for a damaged checkpoint
                why = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                if move_aside is None:
                    log.warning("checkpoint %s is unreadable (%s); trying an older one", self.directory / str(step),
                                why)
                    continue
                move_aside(self.directory / str(step), why)
                self._manager.reload()
                continue
            return step, state, meta
        return None

    def wait(self) -> None:
        if self._built is not None:
            self._built.wait_until_finished()

    def close(self) -> None:
        if self._built is not None:
            self._built.wait_until_finished()
            self._built.close()
