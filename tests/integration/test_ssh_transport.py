"""plugins/module_utils/transport/ssh.py against a real sshd of the ssh lab (tests/integration/sshlab).

Quoting: argvs with spaces, quotes, ``$()``, backquotes, globs, newlines and a leading dash
arrive on the host exactly as sent, through the ssh command line (``remote()``: one word quoted
with shlex.join for the remote shell, as ``pipe`` uses it) and through the helper (``run``).
Also: one master connection per host serves many calls, and ``close()`` leaves no process, no
socket and no lock behind. Needs root (skipped with "needs root" otherwise, a failure under CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import sshlab
from sshlab import is_root

from ansible_collections.storage.mobility.plugins.module_utils.transport.base import LockBusy
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import SshOptions, SshTransport, shared_folder

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices")

ssh_lab = sshlab.ssh_lab  # the lab's session fixture, shared with test_ssh_storage.py

NASTY = ["a b", "it's", '"double"', "$(touch /tmp/ssh-quoting-pwned)", "`id`", "; rm -rf /", "*", "~", "$HOME",
         "line1\nline2", "-n", "", "\\", "tab\there", "\u00e9t\u00e9"]
# Prints its arguments as JSON: what the remote process really received.
ECHO_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


@pytest.fixture
def transport(ssh_lab):  # pylint: disable=redefined-outer-name
    tr = SshTransport(CommandRunner(), SshOptions("stora", **ssh_lab.ssh_options("stora")))
    yield tr
    tr.close()


def test_an_argv_sent_on_the_ssh_command_line_arrives_intact(transport):
    transport.connect()
    proc = subprocess.run(transport.remote(["python3", "-c", ECHO_ARGV] + NASTY), capture_output=True, text=True,
                          check=True)
    assert json.loads(proc.stdout) == NASTY
    assert not os.path.exists("/tmp/ssh-quoting-pwned")


def test_an_argv_run_through_the_helper_arrives_intact(transport, ssh_lab):  # pylint: disable=redefined-outer-name
    rc, out, _err = transport.run(["python3", "-c", ECHO_ARGV] + NASTY, "echo")
    assert rc == 0 and json.loads(out) == NASTY
    assert ssh_lab.ssh("stora", ["ls", "/tmp/ssh-quoting-pwned"], check=False).returncode != 0


def test_both_sides_of_a_pipe_on_the_host_get_their_argv_intact(transport):
    producer = ["python3", "-c", ECHO_ARGV] + NASTY
    consumer = ["python3", "-c", "import sys; data = sys.stdin.read(); print(len(sys.argv), data, end='')", "x y"]
    done, out = transport.pipe(producer, consumer, "echo", capture=True)
    assert out.startswith("2 ") and json.loads(out[2:]) == NASTY
    assert done == len(out[2:].encode("utf-8")) + 1  # the producer's newline (captured output is stripped)


def test_paths_with_odd_names_are_file_operations_not_commands(transport, ssh_lab):  # pylint: disable=redefined-outer-name
    pool = ssh_lab.pools("stora")["ext4"]
    odd = os.path.join(pool, "odd $(x) 'q' \"d\"\nnl")
    transport.makedirs(odd)
    transport.write_json_atomic(odd + "/r.json", {"k": "v"})
    assert json.loads(transport.read_bytes(odd + "/r.json")) == {"k": "v"}
    assert ssh_lab.ssh("stora", ["cat", odd + "/r.json"]).returncode == 0
    transport.unlink(odd + "/r.json")
    transport.rmdir(odd)
    assert not transport.lexists(odd)


def _end_master(tr) -> None:
    """``ssh -O exit`` to the shared master of ``tr``'s options (what ControlPersist does later)."""
    control = os.path.join(shared_folder(), tr.options.master_name())
    subprocess.run(tr.ssh_argv() + ["-o", f"ControlPath={control}", "-O", "exit", "--", tr.options.address],
                   capture_output=True, check=False)


def _settle(host, expected, seconds=30):
    """The host's process count once it reaches ``expected`` (sshd sessions take a moment to exit,
    longer on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while len(host.pids()) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(host.pids())


def _steady(host, seconds=30, still=1.5):
    """The host's process count once it has not changed for ``still`` seconds: sessions of earlier
    tests (and the master just ended) may still be on their way out."""
    deadline = time.monotonic() + seconds
    count, since = len(host.pids()), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < still:
        time.sleep(0.1)
        now = len(host.pids())
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_one_connection_serves_the_run_and_close_leaves_nothing(ssh_lab):  # pylint: disable=redefined-outer-name
    """One master per host for every module run (each its own process, as here each transport);
    close() ends the run's helper, and the lock with it; the master stays for ControlPersist and
    is the only thing left on the host."""
    host = ssh_lab.hosts["stora"]
    tr = SshTransport(CommandRunner(), SshOptions("stora", **ssh_lab.ssh_options("stora")))
    _end_master(tr)
    baseline = _steady(host)
    pool = ssh_lab.pools("stora")["xfs"]
    handle = tr.lock(pool + "/t.lock")
    handle.write_holder("first")
    for _attempt in range(20):
        assert tr.is_dir(pool)
    assert tr.run(["true"], "true")[0] == 0
    control = tr._control
    assert os.path.dirname(control) == shared_folder() and os.path.exists(control)
    assert tr._folder is None  # no folder of the run's own
    assert len(host.pids()) > baseline  # the master's sshd session and the run's helper
    tr.close()
    with_master = _settle(host, baseline + 2)  # the master's session: sshd and its privilege-separated child
    assert with_master > baseline
    other = SshTransport(CommandRunner(), SshOptions("stora", **ssh_lab.ssh_options("stora")))
    third = SshTransport(CommandRunner(), SshOptions("stora", **ssh_lab.ssh_options("stora")))
    try:
        # close() ended the helper, and the lock with it
        again = other.lock(pool + "/t.lock")
        assert other._control == control  # the next run reuses the master
        with pytest.raises(LockBusy):
            third.lock(pool + "/t.lock")
        again.release(remove=True)
    finally:
        other.close()
        third.close()
    # Every helper of the runs ended on the host: only the master's session is left, then nothing.
    assert _settle(host, with_master) == with_master
    _end_master(tr)
    assert _settle(host, baseline) == baseline
