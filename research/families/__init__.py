"""One module per family: its frozen config (every setting of a run, validated when it is built) and
`build(config, mesh) -> Run`, the task and evaluators that config describes.

Launch modules turn flags into these configs; tools that read a finished run (export, quantisation) rebuild it
from the `config.json` its workdir holds (`load_run`), without the family's flags.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Sequence
from typing import Any

from research.data import Dataset
from research.errors import ConfigError
from research.evaluators import Evaluator
from research.workdir import Workdir

FAMILIES = ("mlp", "autoencoder", "gan", "rnn")


@dataclasses.dataclass
class Run:
    """What a family builds from its config: the task (the math), its evaluators and the dataset it trains on."""

    task: Any
    evaluators: Sequence[Evaluator]
    dataset: Dataset


def family(name: str) -> types.ModuleType:
    """The module `research.families.<name>` (with `Config` and `build`)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return importlib.import_module(f"research.families.{name}")


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain JSON-able values (tuples become lists)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """The inverse of `to_dict` for the (nested, frozen) config dataclass `cls`: validated as it is built. A key the
    class does not have is refused (a config.json of another code version must not load with settings dropped)."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{cls.__module__}.{cls.__qualname__} has no setting {', '.join(unknown)} (a config "
                          f"written by another version of this code?)")
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, kind = values[field.name], hints[field.name]
        options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
        nested = [t for t in options if dataclasses.is_dataclass(t)]
        if nested and isinstance(value, dict):
            value = from_dict(nested[0], value)
        elif isinstance(value, list) and any(typing.get_origin(t) is tuple for t in options):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def load_run(workdir: Workdir) -> tuple[types.ModuleType, Any]:
    """(the family module, its config) of the run in `workdir`, from its config.json."""
    saved = workdir.read_config()
    if saved is None or "family" not in saved or "config" not in saved:
        raise ConfigError(f"{workdir.config_file} is missing or unreadable: {workdir.path} holds no run of this "
                          f"codebase (or one from before config.json existed: rerun it to write one)")
    module = family(saved["family"])
    return module, from_dict(module.Config, saved["config"])
