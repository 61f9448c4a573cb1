import os

from research import xla_workarounds


def test_adds_our_flags_and_keeps_the_users(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    xla_workarounds.apply()
    assert xla_workarounds.FLAGS[0] in os.environ["XLA_FLAGS"].split()
    assert "--xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=true")
    xla_workarounds.apply()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=true"
    monkeypatch.delenv("XLA_FLAGS")
    xla_workarounds.apply()
    assert os.environ["XLA_FLAGS"] == " ".join(xla_workarounds.FLAGS)
