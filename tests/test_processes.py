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


def test_host_id_names_the_host_boot_and_pid_namespace():
    """Two processes see each other's pids only on one host, boot and pid namespace: the id must say all three,
    the same in a child process and different when any of them differs."""
    mine = host_id()
    child = subprocess.run([sys.executable, "-c", "from research.processes import host_id; print(host_id())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert child == mine
    host, boot, namespace = mine.split(":")
    assert host == socket.gethostname()
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert boot == f.read().strip()[:8]
    assert namespace == str(os.stat("/proc/self/ns/pid").st_ino)
