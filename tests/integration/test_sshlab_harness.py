"""The ssh lab's own process handling (tests/integration/sshlab): a lab host stops only its own
processes, also after it went down and when another test makes mount namespaces meanwhile.

A host's processes are found by their mount namespace's inode number. Linux gives a freed number to
the next new namespace at once, so a host whose namespace was freed (its processes gone, after
``down``) would find, and signal, every process of whichever namespace another test makes next.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import sshlab

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sshlab.is_root(), reason="needs root: unshare of a mount namespace")]


def _in_namespace(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", *argv])


def _namespace(pid: int) -> str | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = sshlab._mount_ns(pid)  # pylint: disable=protected-access
        if found and found != sshlab._mount_ns("self"):  # pylint: disable=protected-access
            return found
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never entered a mount namespace of its own")


def test_a_stopped_host_never_signals_the_processes_of_a_later_namespace(tmp_path: Path) -> None:
    host = sshlab.Host(SimpleNamespace(base=tmp_path), "gone", "127.0.0.9", {})
    host.proc = _in_namespace("sleep", "300")
    _namespace(host.proc.pid)
    host.hold_namespace()
    assert host.pids() == [host.proc.pid]
    bystanders = []
    try:
        assert host.stop() == []  # the host goes down: its process ends
        assert host.proc.poll() is not None and host.pids() == []
        # Another test makes namespaces now: the first may well get the number the host's had.
        for dummy in range(3):
            bystanders.append(_in_namespace("sleep", "300"))
            _namespace(bystanders[-1].pid)
        assert host.pids() == []
        assert host.stop() == []  # the lab's teardown stops the host again
        time.sleep(0.2)
        assert [b.pid for b in bystanders if b.poll() is not None] == [], "the host stopped another test's processes"
    finally:
        for proc in [host.proc] + bystanders:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
