import os
import socket
import subprocess
import sys

from research.processes import host_id, pid_alive


def test_pid_alive_running_zombie_reaped_and_non_positive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, but not reaped: a zombie
        assert os.path.exists(f"/proc/{child.pid}")
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)  # reaped
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)  # os.kill would signal process groups, which are always there


def test_host_id_is_stable_and_starts_with_the_host_name():
    assert host_id() == host_id()
    assert host_id().split(":")[0] == socket.gethostname()
