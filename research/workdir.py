"""The run directory contract that tools and sweeps rely on.

    <workdir>/flags.txt       the resolved flags (a valid flagfile); a restart with different run-defining
                              flags is refused
    <workdir>/metrics.jsonl   one JSON object per logged step and split
    <workdir>/tensorboard/    event files
    <workdir>/checkpoints/    Orbax checkpoints, one directory per step
    <workdir>/images/         PNG grids and plots written at evaluations
    <workdir>/final.json      step, metrics (final test metrics), params_sha256, wall_seconds, ...
    <workdir>/.lock           pid@host of the process writing here; a second writer is refused
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from research.errors import ConfigError
from research.processes import pid_alive

FLAGS_FILE, FINAL_FILE, LOCK_FILE = "flags.txt", "final.json", ".lock"
_OUTPUTS = (FLAGS_FILE, FINAL_FILE, "metrics.jsonl", "tensorboard", "checkpoints", "images")


def format_flags(flags: Mapping[str, str]) -> str:
    return "".join(f"--{k}={v}\n" for k, v in sorted(flags.items()))


def parse_flags(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("--") and "=" in line:
            k, v = line[2:].split("=", 1)
            out[k] = v
    return out


class Workdir:
    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path).absolute()
        self._locked = False

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / "checkpoints"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"workdir {self.path} is not writable: {e.strerror or e}") from None

    def lock(self) -> None:
        """Take the workdir for this process, or refuse if another live process holds it."""
        path = self.path / LOCK_FILE
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = json.loads(path.read_text())
                except (OSError, ValueError):
                    owner = {}
                if owner.get("host") == me["host"] and not pid_alive(int(owner.get("pid", -1))):
                    path.unlink(missing_ok=True)  # stale: its writer died (e.g. kill -9)
                    continue
                raise ConfigError(f"workdir {self.path} is in use by pid {owner.get('pid')} on "
                                  f"{owner.get('host')} (remove {path} if that process is gone)") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._locked = True
            return
        raise ConfigError(f"could not take the lock {path}")

    def unlock(self) -> None:
        if self._locked:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self._locked = False

    def clear(self) -> None:
        """Remove a previous run's outputs (only on an explicit --overwrite)."""
        for name in _OUTPUTS:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def check_flags(self, flags: Mapping[str, str], ignore: Iterable[str] = ()) -> None:
        """Write flags.txt, or refuse if the existing one differs in a flag not in `ignore`."""
        path = self.path / FLAGS_FILE
        has_checkpoints = self.checkpoints.exists() and any(self.checkpoints.iterdir())
        if not path.exists() or not has_checkpoints:  # nothing saved yet: nothing to protect
            if has_checkpoints:
                raise ConfigError(f"workdir {self.path} has checkpoints but no {FLAGS_FILE}; use a new --workdir "
                                  f"or --overwrite")
            path.write_text(format_flags(flags))
            return
        saved, ignore = parse_flags(path.read_text()), set(ignore)
        diffs = [f"--{k}: {saved.get(k, '<unset>')!r} there, {flags.get(k, '<unset>')!r} now"
                 for k in sorted(saved.keys() | flags.keys()) if k not in ignore and saved.get(k) != flags.get(k)]
        if diffs:
            raise ConfigError(f"workdir {self.path} holds a run with other flags ({'; '.join(diffs[:3])}"
                              f"{'; ...' if len(diffs) > 3 else ''}); use --overwrite to start afresh or a new "
                              f"--workdir")
        path.write_text(format_flags(flags))  # non-defining flags (e.g. --log_every) may have changed

    def read_final(self) -> dict[str, Any] | None:
        path = self.path / FINAL_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def write_final(self, final: Mapping[str, Any]) -> None:
        tmp = self.path / (FINAL_FILE + ".tmp")
        tmp.write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path / FINAL_FILE)
