"""Load and call an export of `launch.export` with jax, jaxlib and numpy alone: the runtime of `launch.serve`,
and all any Python program needs to run an artifact. It imports nothing from `research` (tests/test_serve.py
runs it in a process where importing `research` fails), so an artifact runs where the training code and its
dependencies (flax, optax, orbax, ...) are not installed.

    artifact = Artifact.load("/tmp/exports/mlp")
    outputs = artifact.call("predict", {"x": x})        # {"logits": array, "label": array}

Inputs are checked against the manifest (names, dtypes, shapes, id ranges) before anything runs; a bad one
raises `InputError` with a one-line message. The format (manifest.json, params.npz, <entry>.jax_export) is
written by research/export.py and described in docs/deploy.md; this module reads the versions it lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

FORMAT, SUPPORTED_VERSIONS = "research-export", (1,)
MANIFEST = "manifest.json"
BATCH = "batch"


class ArtifactError(Exception):
    """The directory holds no usable artifact (missing files, another format, another platform)."""


class InputError(ValueError):
    """Inputs that do not fit an entry; the message is one line naming what is wrong."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of an entry, from the manifest: shape ("batch" first), dtype, optional id range."""

    name: str
    shape: tuple[int | str, ...]
    dtype: np.dtype
    range: tuple[int, int] | None = None

    @classmethod
    def from_manifest(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), np.dtype(d["dtype"]), tuple(d["range"]) if d.get("range") else None)

    def describe(self) -> str:
        return f"{self.dtype.name}[{', '.join(map(str, self.shape))}]"

    def convert(self, value: Any) -> np.ndarray:
        """`value` (an array, or nested lists as JSON gives them) as an array of this spec; InputError if it is
        not one."""
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise self._bad("not a rectangular array of numbers") from None
        kind = arr.dtype.kind
        if self.dtype.kind == "f":
            if kind not in "fiu":
                raise self._bad(f"got {_what(arr)}, expected numbers")
            with np.errstate(over="ignore", invalid="ignore"):
                cast = arr.astype(self.dtype)
            if not np.all(np.isfinite(cast)) and np.all(np.isfinite(arr)):
                raise self._bad(f"values overflow {self.dtype.name}")
        elif self.dtype.kind in "iu":
            if kind not in "iu":
                raise self._bad(f"got {_what(arr)}, expected integers")
            info = np.iinfo(self.dtype)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise self._bad(f"values out of the range of {self.dtype.name}")
            cast = arr.astype(self.dtype)
        else:
            cast = arr.astype(self.dtype)
        if cast.ndim != len(self.shape) or any(d != BATCH and d != n for d, n in zip(self.shape, cast.shape,
                                                                                       strict=True)):
            raise self._bad(f"got shape {list(cast.shape)}")
        if cast.shape[0] < 1:
            raise self._bad("needs at least one row")
        if self.range is not None and cast.size and (cast.min() < self.range[0] or cast.max() >= self.range[1]):
            raise self._bad(f"values must be in [{self.range[0]}, {self.range[1]})")
        return cast

    def _bad(self, what: str) -> InputError:
        return InputError(f"input {self.name!r} ({self.describe()}): {what}")


def _what(arr: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or nested values"}.get(arr.dtype.kind,
                                                                                              arr.dtype.name)


class Entry:
    """One exported function of an artifact: `run(params, arrays)` compiles once per batch size (jax.jit)."""

    def __init__(self, name: str, spec: Mapping[str, Any], exported: jax.export.Exported):
        self.name, self.exported, self.doc = name, exported, spec.get("doc", "")
        self.inputs = tuple(TensorSpec.from_manifest(t) for t in spec["inputs"])
        self.outputs = tuple(TensorSpec.from_manifest(t) for t in spec["outputs"])
        self._call = jax.jit(exported.call)

    def prepare(self, inputs: Any) -> tuple[list[np.ndarray], int]:
        """(the input arrays in the entry's order, rows): from {name: value}, or the bare value of a one-input
        entry; InputError for missing, unknown or malformed inputs and for differing row counts."""
        names = [t.name for t in self.inputs]
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise InputError(f"entry {self.name!r} takes several inputs: give an object with {names}")
            inputs = {names[0]: inputs}
        unknown = sorted(set(inputs) - set(names))
        missing = [n for n in names if n not in inputs]
        if unknown or missing:
            raise InputError(f"entry {self.name!r} takes inputs {names}" + (f"; unknown {unknown}" if unknown else "")
                             + (f"; missing {missing}" if missing else ""))
        arrays = [t.convert(inputs[t.name]) for t in self.inputs]
        rows = {len(a) for a in arrays}
        if len(rows) > 1:
            raise InputError(f"entry {self.name!r}: inputs have different numbers of rows {sorted(rows)}")
        return arrays, rows.pop()

    def run(self, params: Any, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs for prepared `arrays` (a numpy array per output name), computed now."""
        out = self._call(params, *arrays)
        return {name: np.asarray(value) for name, value in out.items()}


class Artifact:
    """An export directory, loaded: the manifest, the parameters (on the default device) and the entries."""

    def __init__(self, path: pathlib.Path, manifest: dict[str, Any], params: dict[str, jax.Array],
                 entries: dict[str, Entry]):
        self.path, self.manifest, self.params, self.entries = path, manifest, params, entries

    @classmethod
    def load(cls, path: str | pathlib.Path) -> Artifact:
        """Read and check an export directory; ArtifactError (one line) if it cannot be served here."""
        path = pathlib.Path(path)
        if not (path / MANIFEST).is_file():
            raise ArtifactError(f"{path} holds no {MANIFEST}: not an export of launch.export")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ArtifactError(f"cannot read {path / MANIFEST}: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArtifactError(f"{path / MANIFEST} is not a {FORMAT} manifest")
        if manifest.get("format_version") not in SUPPORTED_VERSIONS:
            raise ArtifactError(f"{path} has format version {manifest.get('format_version')}; this runtime reads "
                                f"{list(SUPPORTED_VERSIONS)}")
        here = jax.export.default_export_platform()
        if here not in manifest.get("platforms", ()):
            raise ArtifactError(f"{path} was exported for {manifest.get('platforms')} and JAX runs on {here} here; "
                                f"export again with --platforms including {here}")
        params = cls._load_params(path, manifest["params"])
        entries = {}
        for name, spec in manifest["entries"].items():
            try:
                exported = jax.export.deserialize(bytearray((path / spec["file"]).read_bytes()))
            except OSError as e:
                raise ArtifactError(f"cannot read entry {name!r}: {e}") from None
            except Exception as e:  # jax raises several types for a corrupt or expired artifact
                raise ArtifactError(f"cannot deserialize entry {name!r} ({spec['file']}) with jax {jax.__version__}: "
                                    f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
            if len(exported.in_avals) != len(params) + len(spec["inputs"]):
                raise ArtifactError(f"entry {name!r} takes {len(exported.in_avals)} arrays, the manifest names "
                                    f"{len(params)} parameters and {len(spec['inputs'])} inputs")
            entries[name] = Entry(name, spec, exported)
        return cls(path, manifest, params, entries)

    @staticmethod
    def _load_params(path: pathlib.Path, spec: Mapping[str, Any]) -> dict[str, jax.Array]:
        file = path / spec["file"]
        try:
            blob = file.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read the parameters: {e}") from None
        if hashlib.sha256(blob).hexdigest() != spec["sha256"]:
            raise ArtifactError(f"{file} does not match the sha256 in the manifest (changed or truncated)")
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {k: jax.device_put(npz[k]) for k in npz.files}

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise InputError(f"unknown entry {name!r}; this model has {sorted(self.entries)}")
        return self.entries[name]

    def call(self, entry: str, inputs: Any) -> dict[str, np.ndarray]:
        """The outputs of `entry` for `inputs` ({name: array-like}, or a bare array for one-input entries)."""
        e = self.entry(entry)
        arrays, _ = e.prepare(inputs)
        return e.run(self.params, arrays)
