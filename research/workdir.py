"""The run directory contract: this module alone decides every path a run writes.

    <workdir>/flags.txt       the resolved flags (a valid flagfile); a restart with different run-defining
                              flags is refused
    <workdir>/config.json     {"family", "config"}: the frozen config the library rebuilds the run from
                              (research/families), for tools that read a run without its flags
    <workdir>/dataset.json    what the run's data looked like (name, shapes, classes, vocabulary); a restart
                              whose data no longer matches is refused
    <workdir>/metrics.jsonl   one JSON object per logged step and split
    <workdir>/tensorboard/    event files
    <workdir>/checkpoints/    Orbax checkpoints, one directory per step
    <workdir>/images/         <tag>_<step>.png pictures written at evaluations
    <workdir>/samples/        <tag>_<step>.txt texts written at evaluations, and `--mode=sample` outputs
    <workdir>/unreadable/     checkpoints and files a run could not read, moved aside (never deleted by a run)
    <workdir>/final.json      step, metrics (final test metrics), params_sha256, wall_seconds, ...
    <workdir>/.lock           pid and host of the process writing here; a second writer is refused

`--overwrite` removes exactly the paths above (except the lock, held by the process that clears them).

The lock is an `flock` on `.lock`, so it is atomic and the kernel releases it when its process ends however it
ends (kill -9 included): there are no stale locks to detect. The owner unlinks the file when it is done; a
process that locked a file which was unlinked meanwhile tries again on the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from research.errors import ConfigError

log = logging.getLogger("research")

FLAGS_FILE, CONFIG_FILE, DATASET_FILE, FINAL_FILE = "flags.txt", "config.json", "dataset.json", "final.json"
METRICS_FILE, TENSORBOARD_DIR, CHECKPOINTS_DIR = "metrics.jsonl", "tensorboard", "checkpoints"
IMAGES_DIR, SAMPLES_DIR, UNREADABLE_DIR, LOCK_FILE = "images", "samples", "unreadable", ".lock"
OUTPUTS = (FLAGS_FILE, CONFIG_FILE, DATASET_FILE, FINAL_FILE, METRICS_FILE, TENSORBOARD_DIR, CHECKPOINTS_DIR,
           IMAGES_DIR, SAMPLES_DIR, UNREADABLE_DIR)


def format_flags(flags: Mapping[str, str]) -> str:
    return "".join(f"--{k}={v}\n" for k, v in sorted(flags.items()))


def parse_flags(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("--") and "=" in line:
            k, v = line[2:].split("=", 1)
            out[k] = v
    return out


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Replace `path` by `text` in one step: readers see the old file or the new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Workdir:
    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path).absolute()
        self._lock_fd: int | None = None

    # ---- the paths
    flags_file = property(lambda self: self.path / FLAGS_FILE)
    config_file = property(lambda self: self.path / CONFIG_FILE)
    dataset_file = property(lambda self: self.path / DATASET_FILE)
    final_file = property(lambda self: self.path / FINAL_FILE)
    metrics_file = property(lambda self: self.path / METRICS_FILE)
    tensorboard = property(lambda self: self.path / TENSORBOARD_DIR)
    checkpoints = property(lambda self: self.path / CHECKPOINTS_DIR)
    images = property(lambda self: self.path / IMAGES_DIR)
    samples = property(lambda self: self.path / SAMPLES_DIR)
    unreadable = property(lambda self: self.path / UNREADABLE_DIR)
    lock_file = property(lambda self: self.path / LOCK_FILE)

    def image_path(self, tag: str, step: int) -> pathlib.Path:
        return self.images / f"{tag}_{step:07d}.png"

    def sample_path(self, tag: str, step: int, suffix: str = ".txt") -> pathlib.Path:
        return self.samples / f"{tag}_{step:07d}{suffix}"

    # ---- creating, locking, clearing
    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"workdir {self.path} is not writable: {e.strerror or e}") from None

    def lock(self) -> None:
        """Take the workdir for this process, or refuse (ConfigError) while another process holds it."""
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        while self._lock_fd is None:
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot create the lock {self.lock_file}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                raise ConfigError(f"workdir {self.path} is in use by {owner}; wait for it to finish or use another "
                                  f"--workdir") from None
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.lock_file))
            except FileNotFoundError:
                current = False
            if not current:  # its owner unlinked it after we opened it: lock the file that is there now
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, me, 0)
            self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.lock_file.unlink()  # while still holding it: see lock()
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    @contextlib.contextmanager
    def holding_lock(self) -> Iterator[Workdir]:
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    def clear(self) -> None:
        """Remove a previous run's outputs, exactly the paths of the contract (only on an explicit --overwrite)."""
        if not self.locked:
            raise RuntimeError("clear() needs the workdir's lock")
        for name in OUTPUTS:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def move_aside(self, path: pathlib.Path, why: str) -> pathlib.Path:
        """Move a file or directory of this workdir that cannot be read to `unreadable/` (never delete it)."""
        self.unreadable.mkdir(exist_ok=True)
        target = self.unreadable / f"{path.parent.name}-{path.name}" if path.parent != self.path else \
            self.unreadable / path.name
        if target.exists():
            target = target.with_name(f"{target.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}")
        path.replace(target)
        log.warning("%s is unreadable (%s); moved it to %s", path, why, target)
        return target

    # ---- what a run records, and checks on every restart before it writes anything
    def check_flags(self, flags: Mapping[str, str], ignore: Iterable[str] = ()) -> None:
        """Refuse (ConfigError) flags that differ from the saved run's in a flag not in `ignore`."""
        if not self.has_checkpoints():  # nothing saved yet: nothing to protect
            return
        if not self.flags_file.exists():
            raise ConfigError(f"workdir {self.path} has checkpoints but no {FLAGS_FILE}; use a new --workdir or "
                              f"--overwrite")
        saved, ignore = parse_flags(self._read_text(self.flags_file)), set(ignore)
        diffs = [f"--{k}: {saved.get(k, '<unset>')!r} there, {flags.get(k, '<unset>')!r} now"
                 for k in sorted(saved.keys() | flags.keys()) if k not in ignore and saved.get(k) != flags.get(k)]
        if diffs:
            raise ConfigError(f"workdir {self.path} holds a run with other flags ({'; '.join(diffs[:3])}"
                              f"{'; ...' if len(diffs) > 3 else ''}); use --overwrite to start afresh or a new "
                              f"--workdir")

    def write_flags(self, flags: Mapping[str, str]) -> None:
        write_atomic(self.flags_file, format_flags(flags))

    def check_dataset(self, facts: Mapping[str, Any], *, only_with_checkpoints: bool = True) -> None:
        """Refuse (ConfigError) data with other `facts` than the run was trained on (by default only once it
        has checkpoints to protect; entries that read a trained run check whenever dataset.json exists)."""
        saved = self.read_dataset()
        if saved is None or (only_with_checkpoints and not self.has_checkpoints()):
            return
        facts = json.loads(json.dumps(facts))
        diffs = [k for k in sorted(saved.keys() | facts.keys()) if saved.get(k) != facts.get(k)]
        if diffs:
            raise ConfigError(f"--dataset={facts.get('name')} is not the data the run in {self.path} trained on "
                              f"({', '.join(diffs)} differ); use --overwrite to start afresh")

    def write_dataset(self, facts: Mapping[str, Any]) -> None:
        write_atomic(self.dataset_file, json.dumps(facts, sort_keys=True) + "\n")

    def read_dataset(self) -> dict[str, Any] | None:
        return self._read_json(self.dataset_file)

    def write_config(self, family: str, config: Mapping[str, Any]) -> None:
        write_atomic(self.config_file, json.dumps({"family": family, "config": config}, indent=2, sort_keys=True)
                     + "\n")

    def read_config(self) -> dict[str, Any] | None:
        return self._read_json(self.config_file)

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(p.name.isdigit() for p in self.checkpoints.iterdir())

    def read_final(self, *, move_unreadable: bool = False) -> dict[str, Any] | None:
        """final.json, or None when there is none or it cannot be read (then moved aside if asked)."""
        final = self._read_json(self.final_file)
        if final is None and self.final_file.exists() and move_unreadable:
            self.move_aside(self.final_file, "not a JSON object")
        return final

    def write_final(self, final: Mapping[str, Any]) -> None:
        write_atomic(self.final_file, json.dumps(final, indent=2, sort_keys=True) + "\n")

    def _read_text(self, path: pathlib.Path) -> str:
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from None

    @staticmethod
    def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
        """The JSON object in `path`, or None if it is missing, torn or not an object."""
        try:
            value = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return value if isinstance(value, dict) else None


def _owner(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
