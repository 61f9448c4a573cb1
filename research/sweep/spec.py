"""The sweep spec: a TOML file naming a launch module, base flagfiles, fixed flags, grid axes (or a search
space), seeds, the metrics to report and, for reproductions, the paper's numbers.

    name = "mlp_optimizers"                      # the Optuna study's name (default: the file's stem)
    launch = "launch.mlp"
    flagfile = "experiments/mlp/quickstart.flags"  # or a list; paths are relative to the current directory
    seeds = [0, 1, 2]
    metrics = ["accuracy", "loss"]               # keys of final.json's "metrics" (or "wall_seconds", "a.b")
    [flags]                                      # fixed flags for every trial
    steps = 1500
    [axes]
    hidden = ["64", "256,256"]                   # a plain axis: values of the flag of the same name
    [axes.optimizer]                             # a labelled axis: label -> flags (may include a flagfile)
    sgd = { optimizer = "sgd", learning_rate = 0.1 }
    adamw = { optimizer = "adamw", learning_rate = 1e-3, weight_decay = 1e-4 }

A search spec has `[search]` (n_trials, sampler, seed) with `[search.params]` ranges instead of `[axes]`.
`vectorize_seeds = true` runs a grid point's (or search trial's) seeds as one trial `--seed=<first>
--num_seeds=<count>` (the launch module trains them in one vmapped program); the seeds must then be consecutive.
A reproduction adds `[paper]` (source, rows of axis labels and metric values). docs/sweeps.md has the rest.
Flag names and values are checked by asking the launch module itself (`check_flags`), so a typo is a spec
error before any trial runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from research.errors import ConfigError

RESERVED = ("seed", "workdir", "overwrite", "flagfile")  # set by the sweep itself
_TOP_KEYS = {"name", "description", "launch", "flagfile", "flags", "axes", "seeds", "metrics", "objective",
             "direction", "search", "paper", "vectorize_seeds"}
_SHARED_ONLY = ("metrics", "metrics_std", "seeds", "params_sha256")  # per-seed keys of a vectorised final.json
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One value of an axis: its label and the flags it sets (flagfiles first, then flag=value texts)."""

    label: str
    flags: dict[str, str]
    flagfiles: tuple[str, ...] = ()  # as written (relative to the current directory)


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    variants: tuple[Variant, ...]
    plain: bool = False       # a list of values of the flag named like the axis

    def labels(self) -> list[str]:
        return [v.label for v in self.variants]


@dataclasses.dataclass(frozen=True)
class Point:
    """One ledger entry of a grid, run as one trial in `trials/<name>`: a variant of every axis and a seed, or
    (vectorised seeds) a block of consecutive seeds `seed .. seed+num_seeds-1` trained in one process."""

    key: str                  # identity in the ledger, e.g. "optimizer=adam,seed=1" or "optimizer=adam,seeds=0-2"
    name: str                 # directory name, e.g. "optimizer-adam_seed-1" or "optimizer-adam_seeds-0-2"
    labels: dict[str, str]    # axis -> label
    seed: int                 # the (first) seed
    flags: dict[str, str]     # the axes' flags
    flagfiles: tuple[str, ...]  # the axes' extra flagfiles (absolute)
    num_seeds: int | None = None  # a vectorised block of this many seeds (None: one plain seed)

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,) if self.num_seeds is None else tuple(range(self.seed, self.seed + self.num_seeds))


@dataclasses.dataclass(frozen=True)
class Param:
    """A search dimension: a float/int range (optionally log-uniform or stepped) or categorical choices."""

    name: str
    kind: str                 # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def text(self, value: Any) -> str:
        """A sampled value as flag text."""
        if self.kind == "int":
            return str(int(value))
        return repr(float(value)) if self.kind == "float" else str(value)

    def distribution(self):
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclasses.dataclass(frozen=True)
class Search:
    n_trials: int
    params: tuple[Param, ...]
    sampler: str = "tpe"
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Paper:
    """The paper's numbers: rows of (axis labels, metric values), shown beside ours in the report."""

    source: str
    label: str
    rows: tuple[tuple[dict[str, str], dict[str, float]], ...]


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    path: str
    launch: str
    flagfiles: tuple[str, ...]        # as written (relative to the current directory)
    flags: dict[str, str]
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]
    objective: str
    direction: str
    search: Search | None = None
    paper: Paper | None = None
    description: str = ""
    vectorize_seeds: bool = False     # a point's seeds run as one `--seed=S --num_seeds=N` trial

    # ---- grid
    def points(self) -> list[Point]:
        """What the ledger queues, in spec order (axes vary slowest to fastest, then seeds): every axis
        combination × every seed, or with vectorised seeds one block of all the seeds per combination."""
        if self.vectorize_seeds:
            return [self.block(labels, self.seeds) for labels in self.combos()]
        return [p for labels in self.combos() for p in self.seed_points(labels)]

    def seed_points(self, labels: Mapping[str, str]) -> list[Point]:
        """One plain point per seed of an axis combination (the rows of the report, vectorised or not)."""
        flags, files = self._combo_flags(labels)
        return [Point(key, dir_name(key), dict(labels), seed, flags, files)
                for seed in self.seeds for key in [point_key(labels, seed)]]

    def block(self, labels: Mapping[str, str], seeds: Sequence[int]) -> Point:
        """The vectorised point of an axis combination and a run of consecutive seeds."""
        if not seeds or list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"a block of seeds must be consecutive, got {list(seeds)}")
        flags, files = self._combo_flags(labels)
        key = block_key(labels, seeds[0], len(seeds))
        return Point(key, dir_name(key), dict(labels), seeds[0], flags, files, num_seeds=len(seeds))

    def combos(self) -> list[dict[str, str]]:
        return [{a.name: v.label for a, v in zip(self.axes, c, strict=True)}
                for c in itertools.product(*(a.variants for a in self.axes))]

    def _combo_flags(self, labels: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
        """The flags and extra flagfiles (absolute) of an axis combination given by its labels."""
        variants = []
        for axis in self.axes:
            found = [v for v in axis.variants if v.label == labels.get(axis.name)]
            if not found:
                raise KeyError(f"axis {axis.name} has no label {labels.get(axis.name)!r}")
            variants.append(found[0])
        return ({k: t for v in variants for k, t in v.flags.items()},
                tuple(os.path.abspath(f) for v in variants for f in v.flagfiles))

    # ---- commands
    def argv(self, flags: Mapping[str, str], flagfiles: Sequence[str] = ()) -> list[str]:
        """The launch module's arguments (without --seed/--workdir): flagfiles, then fixed flags, then `flags`."""
        files = [*(os.path.abspath(f) for f in self.flagfiles), *flagfiles]
        return [*(f"--flagfile={f}" for f in files), *(f"--{k}={v}" for k, v in self.flags.items()),
                *(f"--{k}={v}" for k, v in flags.items())]

    def command(self, flags: Mapping[str, str], flagfiles: Sequence[str], seed: int, workdir: str,
                num_seeds: int | None = None) -> list[str]:
        """A trial's command; a vectorised one trains seeds seed .. seed+num_seeds-1 in one process. `{sweep_dir}`
        in a flag's value becomes the sweep dir (<sweep_dir>/trials/<point> is `workdir`), so a trial can name
        another trial's workdir, e.g. a distillation teacher's: `distill_from = "{sweep_dir}/trials/<point>"`."""
        vector = [] if num_seeds is None else [f"--num_seeds={num_seeds}"]
        sweep_dir = os.path.dirname(os.path.dirname(os.path.abspath(workdir)))
        argv = [a.replace("{sweep_dir}", sweep_dir) for a in self.argv(flags, flagfiles)]
        return [sys.executable, "-m", self.launch, *argv, f"--seed={seed}", *vector, f"--workdir={workdir}"]

    # ---- the ledger's copy
    def identity(self) -> dict[str, Any]:
        """What defines the trials: a sweep may only be continued by a spec with the same identity (seeds may
        be added). Vectorised seeds change what a trial is, so they are part of it (only when on, so the ledgers
        of plain sweeps keep their identity)."""
        vector = {"vectorize_seeds": True} if self.vectorize_seeds else {}
        return {**vector, "launch": self.launch, "flagfiles": [[f, flagfile_digest(f)] for f in self.flagfiles],
                "flags": self.flags,
                "axes": [[a.name, [[v.label, v.flags, [[f, flagfile_digest(f)] for f in v.flagfiles]]
                                   for v in a.variants]] for a in self.axes],
                "search": None if self.search is None else {
                    "params": [dataclasses.asdict(p) | {"choices": list(p.choices)} for p in self.search.params],
                    "objective": self.objective, "direction": self.direction}}

    def record(self) -> dict[str, Any]:
        """Everything the report needs, stored in the ledger so `--report` works from the ledger alone."""
        paper = None if self.paper is None else {
            "source": self.paper.source, "label": self.paper.label,
            "rows": [[labels, values] for labels, values in self.paper.rows]}
        return {"name": self.name, "path": self.path, "description": self.description, "launch": self.launch,
                "flagfiles": list(self.flagfiles), "flags": self.flags,
                "axes": [[a.name, a.labels()] for a in self.axes], "seeds": list(self.seeds),
                "metrics": list(self.metrics), "objective": self.objective, "direction": self.direction,
                "search": None if self.search is None else {"n_trials": self.search.n_trials,
                                                             "params": [p.name for p in self.search.params]},
                "paper": paper, "vectorize_seeds": self.vectorize_seeds}


def point_key(labels: Mapping[str, str], seed: int) -> str:
    """A grid point's identity in the ledger: "axis=label,...,seed=S"."""
    return ",".join([*(f"{k}={v}" for k, v in labels.items()), f"seed={seed}"])


def block_key(labels: Mapping[str, str], first: int, count: int) -> str:
    """A vectorised block's identity in the ledger: "axis=label,...,seeds=FIRST-LAST"."""
    return ",".join([*(f"{k}={v}" for k, v in labels.items()), f"seeds={first}-{first + count - 1}"])


def consecutive_runs(seeds: Sequence[int]) -> list[list[int]]:
    """Sorted seeds cut into maximal runs of consecutive integers: [0, 1, 2, 5, 6] -> [[0, 1, 2], [5, 6]]."""
    runs: list[list[int]] = []
    for s in sorted(seeds):
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def seed_finals(final: Mapping[str, Any], first: int, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Split a vectorised run's final.json into one final.json-like dict per seed.

    Each seed gets its own `metrics` and `params_sha256` from `final["seeds"]`; every other top-level key
    (step, wall_seconds, train_metrics (a mean over the seeds), ...) is shared by all of them. A one-seed block
    ran without replicas, so its final.json is already the seed's. Raises ValueError when final.json does not
    hold exactly the seeds first .. first+count-1.
    """
    want = list(range(first, first + count))
    entries = final.get("seeds")
    if entries is None and count == 1:
        return [(first, dict(final))]
    if (not isinstance(entries, list) or not all(isinstance(e, Mapping) and isinstance(e.get("metrics"), Mapping)
                                                 for e in entries)):
        raise ValueError(f"final.json has no per-seed results (a \"seeds\" list with metrics) for seeds {want}")
    got = [e.get("seed") for e in entries]
    if got != want:
        raise ValueError(f"final.json holds seeds {got}, expected {want}")
    shared = {k: v for k, v in final.items() if k not in _SHARED_ONLY}
    return [(e["seed"], {**shared, "metrics": dict(e["metrics"]), "params_sha256": e.get("params_sha256"),
                         "vectorized": {"first_seed": first, "num_seeds": count}}) for e in entries]


def dir_name(key: str) -> str:
    """A file-system-safe directory name for a point key (long keys are shortened with a hash)."""
    name = re.sub(r"[^A-Za-z0-9.+-]", "_", key.replace("=", "-").replace(",", "_"))
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return name


def flag_text(value: Any, where: str) -> str:
    """A TOML value as flag text: bools true/false, lists comma-joined (as absl list flags expect)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a finite number")
        return repr(value)
    if isinstance(value, list) and all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in value):
        return ",".join(flag_text(v, where) for v in value)
    raise ConfigError(f"{where}: {value!r} is not a flag value (string, number, bool or list of them)")


def metric(final: Mapping[str, Any], key: str) -> float | None:
    """A metric of final.json: `name` from "metrics" (else top level, e.g. wall_seconds), `a.b` by path."""
    if "." in key:
        node: Any = final
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
    else:
        node = (final.get("metrics") or {}).get(key, final.get(key))
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


def flagfile_digest(path: str, _seen: tuple[str, ...] = ()) -> str:
    """sha256 of a flagfile's effective lines (comments and blank lines dropped), nested flagfiles expanded."""
    if path in _seen:
        raise ConfigError(f"flagfile {path} includes itself")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read flagfile {path}: {e.strerror or e}") from None
    h = hashlib.sha256()
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line.startswith("--flagfile="):
            line = "flagfile:" + flagfile_digest(line.split("=", 1)[1], (*_seen, path))
        h.update(line.encode() + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- parsing
def load(path: str, name: str | None = None) -> Spec:
    """Parse and validate a spec file (structure only; `check_flags` asks the launch module)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read spec {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"spec {path} is not valid TOML: {e}") from None
    try:
        return parse(raw, path, name)
    except ConfigError as e:
        raise ConfigError(f"spec {path}: {e}") from None


def parse(raw: Mapping[str, Any], path: str = "sweep.toml", name: str | None = None) -> Spec:
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    name = name or raw.get("name") or os.path.splitext(os.path.basename(path))[0]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"name {name!r} must be letters, digits and . _ + - (it names the Optuna study)")
    launch = raw.get("launch")
    if not isinstance(launch, str) or not _MODULE.match(launch):
        raise ConfigError(f"launch must name a Python module such as 'launch.mlp', got {launch!r}")

    flagfiles = raw.get("flagfile", [])
    flagfiles = [flagfiles] if isinstance(flagfiles, str) else flagfiles
    if not isinstance(flagfiles, list) or not all(isinstance(f, str) for f in flagfiles):
        raise ConfigError("flagfile must be a path or a list of paths")
    for f in flagfiles:
        _check_file(f, "flagfile")

    fixed = raw.get("flags", {})
    if not isinstance(fixed, dict):
        raise ConfigError("[flags] must be a table of flag = value")
    flags = {}
    for k, v in fixed.items():
        _check_flag_name(k, "[flags]")
        flags[k] = flag_text(v, f"[flags] {k}")

    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in seeds)):
        raise ConfigError(f"seeds must be a non-empty list of integers in [0, 2**31), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat a value: {seeds}")
    vectorize = raw.get("vectorize_seeds", False)
    if not isinstance(vectorize, bool):
        raise ConfigError(f"vectorize_seeds must be true or false, got {vectorize!r}")
    if vectorize and seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ConfigError(f"vectorize_seeds = true trains a point's seeds as one run --seed=S --num_seeds=N, so "
                          f"seeds must be consecutive increasing integers such as [0, 1, 2]; got {seeds}")

    metrics = raw.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError("metrics must be a non-empty list of final.json keys, e.g. [\"accuracy\", \"loss\"]")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"metrics repeat a name: {metrics}")
    objective = raw.get("objective", metrics[0])
    if objective not in metrics:
        raise ConfigError(f"objective {objective!r} must be one of the metrics {metrics}")

    if "axes" in raw and "search" in raw:
        raise ConfigError("a spec has [axes] (a grid) or [search] (a hyperparameter search), not both")
    axes = _parse_axes(raw.get("axes", {}), flags)
    search = _parse_search(raw["search"], flags) if "search" in raw else None
    direction = raw.get("direction", "maximize" if search is None else None)
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be 'maximize' or 'minimize', got {direction!r}"
                          + (" (a search must say which)" if direction is None else ""))

    spec = Spec(name=name, path=path, launch=launch, flagfiles=tuple(flagfiles), flags=flags, axes=axes,
                seeds=tuple(seeds), metrics=tuple(metrics), objective=objective, direction=direction,
                search=search, description=str(raw.get("description", "")), vectorize_seeds=vectorize)
    if search is None:
        names = [p.name for p in spec.points()]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"two grid points share the directory name {dup!r}; use labels that differ in "
                              f"letters or digits")
    if "paper" in raw:
        spec = dataclasses.replace(spec, paper=_parse_paper(raw["paper"], spec))
    return spec


def _check_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"{what} {path} does not exist (paths are relative to the current directory, "
                          f"{os.getcwd()})")


def _check_flag_name(name: str, where: str) -> None:
    if name == "num_seeds":
        raise ConfigError(f"{where}: --num_seeds is set by the sweep: put `vectorize_seeds = true` in the spec to "
                          f"train each point's seeds in one program")
    if name in RESERVED:
        raise ConfigError(f"{where}: --{name} is set by the sweep itself (seeds come from `seeds`, each trial gets "
                          f"its own workdir; base flagfiles go in `flagfile`)")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        raise ConfigError(f"{where}: {name!r} is not a flag name")


def _parse_axes(raw: Any, fixed: Mapping[str, str]) -> tuple[Axis, ...]:
    if not isinstance(raw, dict):
        raise ConfigError("[axes] must be a table: flag = [values] or [axes.NAME] label = { flag = value }")
    axes: list[Axis] = []
    set_by: dict[str, str] = {}
    for name, values in raw.items():
        where = f"[axes] {name}"
        if isinstance(values, list):
            _check_flag_name(name, where)
            if not values:
                raise ConfigError(f"{where} is empty: give at least one value")
            variants = [Variant(flag_text(v, where), {name: flag_text(v, where)}) for v in values]
            touched = {name}
        elif isinstance(values, dict):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ConfigError(f"{where}: axis names are letters, digits and _")
            if not values:
                raise ConfigError(f"{where} is empty: give at least one labelled variant")
            variants, touched = [], set()
            for label, body in values.items():
                vwhere = f"[axes.{name}] {label}"
                if not isinstance(body, dict) or not body:
                    raise ConfigError(f"{vwhere} must be a non-empty table of flag = value")
                files = body.get("flagfile", [])
                files = [files] if isinstance(files, str) else files
                if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                    raise ConfigError(f"{vwhere}: flagfile must be a path or a list of paths")
                for f in files:
                    _check_file(f, f"{vwhere} flagfile")
                vflags = {}
                for k, v in body.items():
                    if k != "flagfile":
                        _check_flag_name(k, vwhere)
                        vflags[k] = flag_text(v, f"{vwhere} {k}")
                variants.append(Variant(str(label), vflags, tuple(files)))
                touched |= set(vflags)
        else:
            raise ConfigError(f"{where} must be a list of values or a table of labelled variants")
        labels = [v.label for v in variants]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where} repeats a value: {labels}")
        for flag in touched:
            if flag in fixed:
                raise ConfigError(f"--{flag} is set both in [flags] and by axis {name!r}")
            if flag in set_by:
                raise ConfigError(f"--{flag} is set by two axes, {set_by[flag]!r} and {name!r}")
            set_by[flag] = name
        axes.append(Axis(name, tuple(variants), plain=isinstance(values, list)))
    return tuple(axes)


def _parse_search(raw: Any, fixed: Mapping[str, str]) -> Search:
    if not isinstance(raw, dict):
        raise ConfigError("[search] must be a table with n_trials and [search.params]")
    unknown = sorted(set(raw) - {"n_trials", "sampler", "seed", "params"})
    if unknown:
        raise ConfigError(f"[search] has unknown key {unknown[0]!r} (known: n_trials, sampler, seed, params)")
    n = raw.get("n_trials")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"[search] n_trials must be a positive integer, got {n!r}")
    sampler = raw.get("sampler", "tpe")
    if sampler not in ("tpe", "random"):
        raise ConfigError(f"[search] sampler must be 'tpe' or 'random', got {sampler!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"[search] seed must be a non-negative integer, got {seed!r}")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError("[search.params] must name at least one flag: flag = { low = .., high = .. } or "
                          "{ choices = [..] }")
    params = []
    for name, body in params_raw.items():
        where = f"[search.params] {name}"
        _check_flag_name(name, where)
        if name in fixed:
            raise ConfigError(f"--{name} is set both in [flags] and in [search.params]")
        if not isinstance(body, dict):
            raise ConfigError(f"{where} must be {{ low = .., high = .. [, log = true | step = ..] }} or "
                              f"{{ choices = [..] }}")
        extra = sorted(set(body) - {"low", "high", "log", "step", "choices"})
        if extra:
            raise ConfigError(f"{where} has unknown key {extra[0]!r}")
        if "choices" in body:
            choices = body["choices"]
            if set(body) != {"choices"}:
                raise ConfigError(f"{where}: choices cannot be combined with a range")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: choices must be a non-empty list")
            texts = [flag_text(c, where) for c in choices]
            if len(set(texts)) != len(texts):
                raise ConfigError(f"{where}: choices repeat a value")
            params.append(Param(name, "categorical", choices=tuple(texts)))
            continue
        low, high, log, step = body.get("low"), body.get("high"), body.get("log", False), body.get("step")
        nums = [x for x in (low, high, step) if x is not None]
        if low is None or high is None or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                  and math.isfinite(x) for x in nums):
            raise ConfigError(f"{where}: bad range: low and high must both be finite numbers")
        if not low < high:
            raise ConfigError(f"{where}: bad range: low ({low}) must be below high ({high})")
        if not isinstance(log, bool):
            raise ConfigError(f"{where}: log must be true or false")
        if log and low <= 0:
            raise ConfigError(f"{where}: bad range: a log range needs low > 0, got {low}")
        if log and step is not None:
            raise ConfigError(f"{where}: a log range cannot have a step")
        if step is not None and step <= 0:
            raise ConfigError(f"{where}: step must be positive, got {step}")
        kind = "int" if all(isinstance(x, int) for x in nums) else "float"
        params.append(Param(name, kind, float(low), float(high), log, None if step is None else float(step)))
    return Search(n, tuple(params), sampler, seed)


def _parse_paper(raw: Any, spec: Spec) -> Paper:
    if not isinstance(raw, dict):
        raise ConfigError("[paper] must be a table with source and rows")
    unknown = sorted(set(raw) - {"source", "label", "rows"})
    if unknown:
        raise ConfigError(f"[paper] has unknown key {unknown[0]!r} (known: source, label, rows)")
    if spec.search is not None:
        raise ConfigError("[paper] compares grid points with a paper; a search spec cannot have one")
    rows_raw = raw.get("rows")
    if not isinstance(rows_raw, list) or not rows_raw or not all(isinstance(r, dict) for r in rows_raw):
        raise ConfigError("[paper] rows must be a non-empty list of tables { axis = label, metric = value }")
    labels_of = {a.name: set(a.labels()) for a in spec.axes}
    rows, seen = [], set()
    for i, row in enumerate(rows_raw):
        where = f"[paper] row {i + 1}"
        labels = {k: flag_text(v, where) for k, v in row.items() if k in labels_of}
        values = {k: v for k, v in row.items() if k not in labels_of}
        if set(labels) != set(labels_of):
            raise ConfigError(f"{where} must give a label for every axis ({', '.join(labels_of)})")
        for k, v in labels.items():
            if v not in labels_of[k]:
                raise ConfigError(f"{where}: axis {k} has no label {v!r} (labels: {sorted(labels_of[k])})")
        for k, v in values.items():
            if k not in spec.metrics:
                raise ConfigError(f"{where}: {k!r} is neither an axis nor one of the metrics {list(spec.metrics)}")
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{where}: {k} must be a number, got {v!r}")
        if not values:
            raise ConfigError(f"{where} gives no metric value")
        combo = tuple(labels[a.name] for a in spec.axes)
        if combo in seen:
            raise ConfigError(f"{where} repeats the axis combination {labels}")
        seen.add(combo)
        rows.append((labels, {k: float(v) for k, v in values.items()}))
    return Paper(str(raw.get("source", "")), str(raw.get("label", "paper")), tuple(rows))


# ------------------------------------------------------------------------------- asking the launch module
_PROBE = r"""
import importlib, json, sys
req = json.load(open(sys.argv[1]))
out = {"error": None, "known": [], "results": []}
try:
    from absl import flags
    importlib.import_module(req["module"])
except BaseException as e:
    out["error"] = f"{type(e).__name__}: {e}"
else:
    F = flags.FLAGS
    out["known"] = sorted(F)
    out["values"] = []
    module = sys.modules[req["module"]]
    from research.errors import ConfigError
    for argv in req["argvs"]:
        try:
            F.unparse_flags()
            F(["probe", *argv])
            if hasattr(module, "config_from_flags"):  # the values, as the run will validate them
                module.config_from_flags()
            out["results"].append(None)
            values = {n: F[n].value for n in req.get("values", []) if n in F}
            out["values"].append({n: v if isinstance(v, (bool, int, float, str, type(None))) else str(v)
                                  for n, v in values.items()})
        except (flags.Error, ConfigError) as e:
            out["results"].append(str(e))
            out["values"].append({})
json.dump(out, open(sys.argv[2], "w"))
"""


def _probe(module: str, argvs: list[list[str]], timeout: float = 300,
           values: Sequence[str] = ()) -> dict[str, Any]:
    """Import `module` in a subprocess and parse each argv with its absl flags (and its `config_from_flags`, which
    validates the values as a run would): the known flag names, an error (or None) per argv, and the parsed values
    of the flags named in `values`."""
    with tempfile.TemporaryDirectory(prefix="sweep-probe-") as tmp:
        req, out = os.path.join(tmp, "req.json"), os.path.join(tmp, "out.json")
        with open(req, "w") as f:
            json.dump({"module": module, "argvs": argvs, "values": list(values)}, f)
        proc = subprocess.run([sys.executable, "-c", _PROBE, req, out], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS",
                                                                                                   "cpu")})
        if not os.path.exists(out):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"could not ask {module} for its flags: {tail}")
        with open(out) as f:
            return json.load(f)


def check_flags(spec: Spec) -> None:
    """Ask the launch module (in a subprocess) whether every flag name and value of the spec is valid; with
    vectorised seeds also whether it accepts --num_seeds (and is not asked for --red_blue, which the training
    loop refuses to combine with it); without, that no flagfile sets --num_seeds behind the sweep's back."""
    combos: list[tuple[str, list[str]]] = []
    if spec.search is None:
        for combo in itertools.product(*(a.variants for a in spec.axes)):
            flags = {k: t for v in combo for k, t in v.flags.items()}
            files = [os.path.abspath(f) for v in combo for f in v.flagfiles]
            what = ", ".join(f"{a.name}={v.label}" for a, v in zip(spec.axes, combo, strict=True)) or "the base flags"
            combos.append((what, spec.argv(flags, files)))
    else:
        combos.append(("the base flags", spec.argv({})))
        for p in spec.search.params:
            values = p.choices if p.kind == "categorical" else [p.text(p.low), p.text(p.high)]
            combos += [(f"{p.name}={v}", spec.argv({p.name: v})) for v in values]
    vector = [f"--num_seeds={len(spec.seeds)}"] if spec.vectorize_seeds else []
    res = _probe(spec.launch, [[*argv, *vector] for _, argv in combos], values=("num_seeds", "red_blue"))
    if res["error"]:
        raise ConfigError(f"spec {spec.path}: cannot import launch module {spec.launch}: {res['error']}")
    known = set(res["known"])
    for flag in ("seed", "workdir"):
        if flag not in known:
            raise ConfigError(f"spec {spec.path}: {spec.launch} has no --{flag} flag; a sweep sets both per trial")
    if spec.vectorize_seeds and "num_seeds" not in known:
        raise ConfigError(f"spec {spec.path}: vectorize_seeds = true needs a launch module that trains several "
                          f"seeds in one run (--num_seeds); {spec.launch} does not define --num_seeds")
    places = [("[flags]", spec.flags)]
    places += [(f"[axes] {a.name}" if a.plain else f"[axes.{a.name}] {v.label}", v.flags)
               for a in spec.axes for v in a.variants]
    places += [("[search.params]", {p.name: "" for p in spec.search.params})] if spec.search else []
    for where, flags in places:
        for name in flags:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean --{close[0]}?)" if close else ""
                raise ConfigError(f"spec {spec.path}: unknown flag --{name} in {where}: {spec.launch} does not "
                                  f"define it{hint}")
    for (what, _), err, values in zip(combos, res["results"], res["values"], strict=True):
        if err:
            raise ConfigError(f"spec {spec.path}: {what}: {err}")
        if spec.vectorize_seeds and values.get("red_blue") is True:
            raise ConfigError(f"spec {spec.path}: {what}: --red_blue trains its own two replicas and cannot be "
                              f"combined with --num_seeds; set vectorize_seeds = false for this spec")
        if not spec.vectorize_seeds and values.get("num_seeds", 1) != 1:
            raise ConfigError(f"spec {spec.path}: {what}: the flagfiles set --num_seeds={values['num_seeds']}, but "
                              f"each seed of the sweep is its own trial; remove it (or set vectorize_seeds = true)")
