"""Other processes of this host: whether one still runs, and an id for "this host" that makes pids comparable.

Shared by the workdir lock (a lock whose owner died is stale) and the sweep ledger (a trial whose worker died is
lost).
"""

from __future__ import annotations

import contextlib
import os
import socket


def host_id() -> str:
    """Host name plus boot id and pid namespace: two processes with the same id can see each other's pids."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        parts.append(f.read().strip()[:8])
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return ":".join(parts)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host (and pid namespace) runs; a zombie (killed, not yet reaped) is dead."""
    if pid <= 0:
        return False  # os.kill(0 or -n) would signal process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True
