"""Full-size Fashion-MNIST and MNIST from their four IDX files on local disk (nothing is downloaded).

`fashion_mnist` and `mnist`: splits `train` (60,000) and `test` (10,000), the official ones; `x` (N, 28, 28, 1)
stored as the files' uint8 pixels with scale 255 (`Dataset.scales`: `split()` gives float32 pixel / 255 in [0, 1],
the same values as `tfds:` gives; training takes the codes to the devices and decodes batches there), `y` int32
in 0..9.

Where the files are looked for, first place that has them wins (a place holding only some of the four is an
error, not skipped):
1. the `data_dir` option (`load("fashion_mnist", data_dir=...)`): a directory holding the four files;
2. `$RESEARCH_DATA_DIR/<name>/`, e.g. `$RESEARCH_DATA_DIR/fashion_mnist/`;
3. `fashion_mnist` only: `/usr/share/datasets/fashion-mnist/`, where Debian's package installs them
   (`apt-get install dataset-fashion-mnist`; `.ci/fashion_mnist.sh` does it for CI).
The files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, each plain or gzipped (`.gz`; the plain one is read when both exist).

Checksums. Every file is checked against the sha256 of its IDX bytes: the file itself when plain, its
decompressed content when gzipped. The `.gz` bytes are not a stable identity: Debian recompressed
Fashion-MNIST (its `.gz` files' MD5s differ from the ones Zalando's README publishes, their content does not),
and the copies of the MNIST test `.gz` files we were given have the CVDF mirror's sizes and content but other
sha256s. Hashing the content accepts any faithful copy and still pins every byte a model sees. Sources of the
values in `SHA256`:
- Fashion-MNIST: computed from Debian's `dataset-fashion-mnist` 0.0~git20200523.55506a9-1. Cross-checked:
  the two label `.gz` files in Zalando's repository (zalandoresearch/fashion-mnist, data/fashion/) have the
  README's MD5s (25c81989df183df01b3e8a0aad5dffbe, bb300cfdad3c16e7a12a480ee83cd310) and decompress to the
  same bytes; the image files' content hashes equal those that third-party projects publish for files
  matching the README's MD5s (the image `.gz` files were not available to compare directly).
- MNIST: the content hashes published alongside the official `.gz` files (CVDF mirror, whose `.gz` sha256s
  TFDS pins: train images 440fcabf..., labels 3552534a..., t10k images 8d422c7b..., labels f7ae60f9...);
  the t10k two were also computed here from those copies (their `.gz` sha256s: 9fe7630f..., 2c54c993...).

Errors are `ConfigError`s of one line: a dataset found nowhere names the places looked in (and the apt
command for Fashion-MNIST); a bad file names the file and what is wrong with it (not gzip data, bad magic
number, shorter or longer than its header says, wrong checksum, images and labels disagreeing).

Why a parser of our own. The format is a 4-byte magic (0x00000803 for uint8 3-D images, 0x00000801 for uint8
1-D labels), one big-endian uint32 per dimension, then the uint8 payload: a strict reader is thirty lines
over `np.frombuffer`. The PyPI candidates, looked at in their latest releases: `idx2numpy` 1.2.3 (last
release October 2020) parses from a file object but has no gzip, no checksums, and pulls in `six` for
Python 2; `python-mnist` 0.7 (March 2020) converts every pixel through Python lists (3.8 s and int64 for
the 60,000 Fashion-MNIST training images here) and checks nothing but the magic; `mnist` 0.2.2 (September
2018) downloads from yann.lecun.com at call time into the temp directory. `tensorflow_datasets` downloads
and prepares (with TensorFlow) before it reads; torchvision (torch is only our `bench` extra) reads plain
files unchecked and otherwise downloads, comparing MD5s of `.gz` bytes that Debian's files fail; Keras
downloads. None reads a Debian-installed copy offline with checksums, so none earns a dependency.

Speed and memory. A file is read (and gunzipped) into one `bytes`, parsed as a `uint8` view of it and hashed;
the images are that view, no copy: 45 MiB for the 60,000 training images, 7.5 MiB for the test ones (before they
were kept as uint8 they were divided by 255 into float32 arrays, 4x the bytes: loading both splits raised peak RSS
by 233 MiB for 210 MiB of arrays; benchmarks/uint8_data.py compares the two, docs/data.md has its numbers).
Measured for that float32 version in fresh processes with `python -c "import time; from research.data import idx;
t = time.perf_counter(); idx.fashion_mnist(); print(time.perf_counter() - t)"` on the 2-core machine while other
jobs ran (load average 1.0-1.4): from Debian's `.gz` files, median 0.55 s for both splits (7 runs, 0.41-0.89
s; the training images alone: read + gunzip 0.26 s, sha256 0.03 s, to float32 0.03 s); from plain files,
median 0.25 s (0.11-0.45 s). Nothing is cached on disk: a cached copy could only save the gunzip.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from research.data.registry import Dataset, register
from research.errors import ConfigError

ENV_VAR = "RESEARCH_DATA_DIR"
DEBIAN_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
APT_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

# split -> (images file, labels file), without the optional `.gz`
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# sha256 of each file's IDX bytes (of the decompressed content for a .gz); sources in the module docstring
SHA256: dict[str, dict[str, str]] = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
}

INFO = {
    "fashion_mnist": {
        "origin": "Zalando Research, github.com/zalandoresearch/fashion-mnist (Xiao, Rasul & Vollgraf 2017)",
        "licence": "MIT",
        "class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot"],
    },
    "mnist": {
        "origin": "LeCun, Cortes & Burges, yann.lecun.com/exdb/mnist",
        "licence": "CC BY-SA 3.0",
        "class_names": [str(d) for d in range(10)],
    },
}


def parse_idx(data: bytes, ndim: int, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """The uint8 array (a view of `data`, not a copy) of a strict `ndim`-D uint8 IDX file's bytes.

    Refused (ConfigError naming `path`): a magic number other than 0x0000080<ndim>, a header cut short, a
    payload shorter or longer than the product of the dimensions.
    """
    magic = 0x0800 | ndim
    if len(data) < 4:
        raise ConfigError(f"{path}: truncated: {len(data)} bytes, not even an IDX magic number")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise ConfigError(f"{path}: bad magic number 0x{got:08x}, expected 0x{magic:08x} (IDX uint8 {ndim}-D); "
                          f"not the right IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ConfigError(f"{path}: truncated inside its header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    size, have = math.prod(dims), len(data) - header
    if have != size:
        what = "truncated" if have < size else f"{have - size} bytes too long"
        raise ConfigError(f"{path}: {what}: its header says {' x '.join(map(str, dims))} = {size} bytes of data, "
                          f"the file has {have}")
    return np.frombuffer(data, np.uint8, size, header).reshape(dims)


def read_bytes(path: Path) -> bytes:
    """A file's IDX bytes: its content, gunzipped when its name ends in `.gz`."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut-short stream an EOFError
        raise ConfigError(f"{path}: not a complete gzip file ({e})") from None


def check_sha256(data: bytes, path: Path, name: str, base: str, table: Mapping[str, Mapping[str, str]]) -> None:
    got = hashlib.sha256(data).hexdigest()
    want = table[name][base]
    if got == want:
        return
    other = [n for n, files in table.items() if n != name and got in files.values()]
    hint = f" (that is {other[0]}'s {base})" if other else " (a corrupted or different file)"
    form = "its decompressed content" if path.suffix == ".gz" else "the file"
    raise ConfigError(f"{path}: checksum mismatch: sha256 of {form} is {got}, {name} expects {want}{hint}")


def find_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / (base + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def places(name: str, data_dir: str | os.PathLike | None) -> list[tuple[str, Path | None]]:
    """(description, directory or None when not configured), in search order."""
    env = os.environ.get(ENV_VAR)
    out: list[tuple[str, Path | None]] = [
        ("data_dir " + (str(data_dir) if data_dir else "(not given)"), Path(data_dir) if data_dir else None),
        (f"${ENV_VAR}/{name}/ " + (f"({Path(env, name)})" if env else f"(${ENV_VAR} not set)"),
         Path(env, name) if env else None),
    ]
    if name in DEBIAN_DIRS:
        out.append((DEBIAN_DIRS[name] + "/", Path(DEBIAN_DIRS[name])))
    return out


def locate(name: str, data_dir: str | os.PathLike | None) -> dict[str, Path]:
    """{base name: path} of the four files in the first place holding them (see the module docstring)."""
    bases = [b for pair in FILES.values() for b in pair]
    looked = []
    for description, directory in places(name, data_dir):
        looked.append(description)
        if directory is None:
            continue
        found = {b: find_file(directory, b) for b in bases}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if any(found.values()):
            missing = ", ".join(b + "[.gz]" for b, p in found.items() if p is None)
            raise ConfigError(f"{name}: {directory} holds only some of its IDX files; missing {missing}")
    if name in APT_PACKAGES:
        how = f"install them with `apt-get install {APT_PACKAGES[name]}` (as root)"
    else:
        how = f"put the four official files (plain or .gz) in ${ENV_VAR}/{name}/ or pass data_dir"
    raise ConfigError(f"dataset {name!r} not found: no {', '.join(b + '[.gz]' for b in bases)} in "
                      f"{'; '.join(looked)}; {how}")


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None = None,
                     checksums: Mapping[str, Mapping[str, str]] | None = None) -> Dataset:
    """The `Dataset` of `name` ("fashion_mnist" or "mnist"), found and verified as the module docstring says.

    `checksums` replaces the `SHA256` table (tests use it with synthetic files).
    """
    table = SHA256 if checksums is None else checksums
    paths = locate(name, data_dir)
    splits = {}
    for split, (images_base, labels_base) in FILES.items():
        arrays = {}
        for key, base, ndim in (("x", images_base, 3), ("y", labels_base, 1)):
            path = paths[base]
            data = read_bytes(path)
            values = parse_idx(data, ndim, path)
            check_sha256(data, path, name, base, table)
            if key == "x":
                if values.shape[1:] != IMAGE_SHAPE:
                    raise ConfigError(f"{path}: images are {values.shape[1]} x {values.shape[2]}, expected "
                                      f"{IMAGE_SHAPE[0]} x {IMAGE_SHAPE[1]}")
                arrays["x"] = values[..., None]  # uint8 codes, scale 255 (a view of the file's bytes)
            else:
                if values.size and values.max() >= NUM_CLASSES:
                    raise ConfigError(f"{path}: label {values.max()} is out of range 0..{NUM_CLASSES - 1}")
                arrays["y"] = values.astype(np.int32)
            del data, values
        if len(arrays["x"]) != len(arrays["y"]):
            raise ConfigError(f"{name} {split}: {paths[images_base]} has {len(arrays['x'])} images but "
                              f"{paths[labels_base]} has {len(arrays['y'])} labels")
        splits[split] = arrays
    info = {**INFO[name], "source": str(paths[FILES["train"][0]].parent),
            "files": {b: str(p) for b, p in paths.items()}}
    return Dataset(name, splits, num_classes=NUM_CLASSES, info=info, scales={"x": 255.0})


@register("fashion_mnist")
def fashion_mnist(data_dir: str | None = None) -> Dataset:
    return load_idx_dataset("fashion_mnist", data_dir)


@register("mnist")
def mnist(data_dir: str | None = None) -> Dataset:
    return load_idx_dataset("mnist", data_dir)
