"""The workdir lock under contention: `python -m tests.lock_race WORKDIR PROCESSES ROUNDS` forks PROCESSES
processes per round that all call `Workdir.lock()` at the same moment; the winner holds the lock until every
contender has tried. Prints one JSON line per round: {"won": n, "refused": n, "left_lock": bool}.

A plain script without JAX, so that forking it is safe and cheap (tests/test_checkpoint_workdir.py runs it).
"""

from __future__ import annotations

import json
import os
import sys

from research.errors import ConfigError
from research.workdir import Workdir


def contend(path: str, n: int) -> dict:
    go_r, go_w = os.pipe()            # closed by the parent: every child starts at once
    done_r, done_w = os.pipe()        # each child writes W (took the lock) or L (refused)
    release_r, release_w = os.pipe()  # closed by the parent once all have tried: the winner unlocks
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(go_w)
                os.close(done_r)
                os.close(release_w)
                os.read(go_r, 1)
                wd = Workdir(path)
                try:
                    wd.lock()
                    won = True
                except ConfigError:
                    won = False
                os.write(done_w, b"W" if won else b"L")
                if won:
                    os.read(release_r, 1)
                    wd.unlock()
            finally:
                os._exit(0)
        pids.append(pid)
    for fd in (go_r, done_w, release_r):
        os.close(fd)
    os.close(go_w)
    answers = b""
    while len(answers) < n:
        chunk = os.read(done_r, n)
        if not chunk:
            break
        answers += chunk
    os.close(release_w)
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(done_r)
    return {"won": answers.count(b"W"), "refused": answers.count(b"L"),
            "left_lock": os.path.exists(os.path.join(path, ".lock"))}


if __name__ == "__main__":
    workdir, processes, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for _ in range(rounds):
        print(json.dumps(contend(workdir, processes)), flush=True)
