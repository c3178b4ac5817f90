"""Unit tests for the direct streams of plugins/module_utils/transport/ssh.py (DirectStream,
direct_receive_argv, peer_host_keys) and the btrfs driver's choice of route.

The stream from one storage host to another runs on the sending host: ``producer | ssh <other
host> <consumer quoted for its shell>``. Here the sending host is this machine (a local source
transport) and ``ssh`` a stand-in on PATH that logs what it was given and runs the remote command
with ``sh -c`` as sshd does: the two levels (an argv on the sending host, one shell word on the
receiving host) for real, without a network. The real ssh lab runs it between two sshd hosts
(tests/integration/test_ssh_direct.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import TailEdit
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import (
    DIRECT_HOST_ALIAS, DirectStream, SshError, SshOptions, SshTransport, direct_receive_argv, peer_host_keys)

NASTY = ["/srv/pool b/it's \"here\"", "$(touch /tmp/direct-pwned)", "`id`", "a;b|c&d", "x\ny", "*", "~", "$HOME", "-rf", ""]

# Logs its argv and the known_hosts file it was told to use, then runs the remote command the way
# sshd does (the words after the address joined by spaces, given to the login shell).
FAKE_SSH = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
cut = args.index('--')
opts, address, command = args[:cut], args[cut + 1], args[cut + 2:]
known = [o.split('=', 1)[1] for o in opts if o.startswith('UserKnownHostsFile=')][0]
folder = os.path.dirname(known)
with open({log!r}, 'a') as handle:
    handle.write(json.dumps({{'opts': opts, 'address': address, 'command': command,
                              'known_hosts': open(known).read(), 'file_mode': os.stat(known).st_mode & 0o777,
                              'folder_mode': os.stat(folder).st_mode & 0o777}}) + '\\n')
if os.environ.get('FAKE_SSH_FAIL'):
    sys.stderr.write(os.environ['FAKE_SSH_FAIL'] + '\\n')
    sys.exit(255)
os.execvp('sh', ['sh', '-c', ' '.join(command)])
"""
# The destination's "btrfs": writes its argv (as JSON) and its stdin where the test reads them.
FAKE_RECEIVER = """#!/bin/sh
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" > {argv_out}
cat > {data_out}
"""


def peer(tmp_path, **over):
    known = tmp_path / "known_hosts"
    if not known.exists():
        known.write_text("[192.0.2.2]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPeerKeyOfH2xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                         "192.0.2.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherHostxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
    values = {"address": "192.0.2.2", "user": "root", "port": 2222, "known_hosts_file": str(known)}
    values.update(over)
    return SshOptions("h2", **values)


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "ssh.log"
    script = folder / "ssh"
    script.write_text(FAKE_SSH.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    receiver = folder / "fake-receive"
    receiver.write_text(FAKE_RECEIVER.format(argv_out=tmp_path / "argv.json", data_out=tmp_path / "data.out"))
    receiver.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (folder, os.environ["PATH"]))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls


# --------------------------------------------------------------------------- the argv, two levels
def test_the_receive_argv_checks_the_destination_key_strictly_and_forwards_nothing(tmp_path):
    argv = direct_receive_argv(peer(tmp_path), ["btrfs", "receive", "/srv/p"], "/tmp/x/known_hosts", "/root/.ssh/id_peer")
    assert argv[0] == "ssh" and argv[-3:-1] == ["--", "192.0.2.2"]
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/tmp/x/known_hosts",
                   "GlobalKnownHostsFile=/dev/null", "HostKeyAlias=%s" % DIRECT_HOST_ALIAS, "ForwardAgent=no",
                   "ControlPath=none", "IdentitiesOnly=yes"):
        assert option in options
    assert not any(o.startswith("StrictHostKeyChecking=accept-new") for o in options)
    assert argv[argv.index("-i") + 1] == "/root/.ssh/id_peer"
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "root"
    # Without a key file: ssh's own (the forwarded agent), never IdentitiesOnly.
    agent = direct_receive_argv(peer(tmp_path), ["true"], "/tmp/x/known_hosts")
    assert "-i" not in agent and "IdentitiesOnly=yes" not in agent
    # direct_address: the other address, the key still checked as the controller knows it.
    other = direct_receive_argv(peer(tmp_path, direct_address="10.9.0.2"), ["true"], "/tmp/x/known_hosts")
    assert other[-2] == "10.9.0.2"
    sudo = direct_receive_argv(peer(tmp_path, become=True), ["btrfs", "receive", "/p"], "/k")
    assert sudo[-1] == "sudo -n -- btrfs receive /p"
    with pytest.raises(TypeError):
        direct_receive_argv(peer(tmp_path), "btrfs receive /p", "/k")


@pytest.mark.parametrize("word", NASTY)
def test_a_nasty_path_arrives_at_the_destination_as_one_literal_argument(tmp_path, word):
    """The sending host runs the argv without a shell; the destination's shell gets one word per
    argument back, and nothing in it runs (``$(...)``, backquotes, ``;``)."""
    fake = tmp_path / "btrfs"
    fake.write_text(FAKE_RECEIVER.format(argv_out=tmp_path / "argv.json", data_out="/dev/null"))
    fake.chmod(0o755)
    argv = direct_receive_argv(peer(tmp_path), ["btrfs", "receive", word], "/k")
    pwned = "/tmp/direct-pwned"
    if os.path.exists(pwned):
        os.unlink(pwned)
    env = dict(os.environ, PATH="%s:%s" % (tmp_path, os.environ["PATH"]))
    # What sshd on the destination does with the command: the login shell runs it.
    proc = subprocess.run(["sh", "-c", argv[-1]], env=env, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0
    assert json.loads((tmp_path / "argv.json").read_text()) == ["receive", word]
    assert not os.path.exists(pwned)


# --------------------------------------------------------------------------- known_hosts
def test_the_destination_keys_come_from_the_controllers_known_hosts_for_its_address_and_port(tmp_path):
    lines, files = peer_host_keys(peer(tmp_path))
    assert files == [str(tmp_path / "known_hosts")]
    assert lines == ["%s ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPeerKeyOfH2xxxxxxxxxxxxxxxxxxxxxxxxxxxxx" % DIRECT_HOST_ALIAS]
    # Another port is another entry: none.
    assert peer_host_keys(peer(tmp_path, port=22))[0] == []


# --------------------------------------------------------------------------- the stream
def test_a_direct_stream_runs_on_the_sending_host_with_a_private_known_hosts_file_removed_after(tmp_path, fake_ssh):
    src = LocalTransport(CommandRunner())
    dst = SshTransport(CommandRunner(), peer(tmp_path))
    data = tmp_path / "stream"
    data.write_bytes(b"y" * 200000 + b"END")
    seen = []
    target = "/srv/pool b/it's $(id)"
    done, _output = DirectStream(src, dst).pipe(["cat", str(data)], ["fake-receive", "receive", target], "send s1",
                                                on_chunk=seen.append, edit=TailEdit(b"END", b"MORE"))
    assert done == 200003 and seen[-1] == done
    assert (tmp_path / "data.out").read_bytes() == b"y" * 200000 + b"MOREEND"
    assert json.loads((tmp_path / "argv.json").read_text()) == ["receive", target]
    (call,) = fake_ssh()
    assert call["address"] == "192.0.2.2"
    assert call["known_hosts"] == "%s ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPeerKeyOfH2xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n" % DIRECT_HOST_ALIAS
    assert call["file_mode"] == 0o600 and call["folder_mode"] & 0o077 == 0
    # The private folder is gone once the stream ended.
    folder = [o.split("=", 1)[1] for o in call["opts"] if o.startswith("UserKnownHostsFile=")][0]
    assert not os.path.exists(os.path.dirname(folder))


@pytest.mark.parametrize("stderr, reason", [
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
     "host key mismatch: the host key differs from the one in the controller's known_hosts entry for h2"),
    ("root@192.0.2.2: Permission denied (publickey).",
     "authentication refused (wrong or unauthorised key (this machine's ssh agent or default keys) for user root)"),
    ("ssh: connect to host 192.0.2.2 port 2222: Connection refused", "unreachable (connection refused on port 2222)"),
])
def test_a_failed_login_from_the_sending_host_names_both_hosts_and_the_cause(tmp_path, fake_ssh, monkeypatch, stderr, reason):
    monkeypatch.setenv("FAKE_SSH_FAIL", stderr)
    src = LocalTransport(CommandRunner())
    dst = SshTransport(CommandRunner(), peer(tmp_path))
    with pytest.raises(SshError) as caught:
        DirectStream(src, dst).probe("check that share s can be sent to h2@b#p")
    message = str(caught.value)
    assert "directly from storage host this machine to storage host h2 (192.0.2.2)" in message
    assert reason in message
    assert caught.value.details["peer"] == "h2"
    with pytest.raises(SshError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        DirectStream(src, dst).pipe(["echo", "hi"], ["fake-receive", "receive", "/p"], "send s1")
    assert not (tmp_path / "data.out").exists()  # nothing arrived


def test_no_key_of_the_destination_in_the_controllers_known_hosts_is_refused_before_any_stream(tmp_path, fake_ssh):
    src = LocalTransport(CommandRunner())
    dst = SshTransport(CommandRunner(), peer(tmp_path, address="192.0.2.77"))
    with pytest.raises(SshError, match=r"the controller has no host key for h2 \(\[192.0.2.77\]:2222\).*never accepts a new key"):
        DirectStream(src, dst).pipe(["echo", "hi"], ["fake-receive", "receive", "/p"], "send s1")
    assert fake_ssh() == []


def test_agent_forwarding_without_an_agent_on_the_controller_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    src = SshTransport(CommandRunner(), SshOptions("h1", address="192.0.2.1"))
    dst = SshTransport(CommandRunner(), peer(tmp_path))
    with pytest.raises(SshError, match="h1 has no direct_key_file and the controller has no ssh agent to forward"):
        DirectStream(src, dst).probe("check")
    assert src._control is None  # refused before any connection


def test_only_the_master_and_the_agent_session_allow_agent_forwarding(monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    transport = SshTransport(CommandRunner(), SshOptions("h1", address="192.0.2.1"))
    assert transport.options.forwards_agent()
    transport._control = "/tmp/cm"
    assert "ForwardAgent=no" in transport.remote(["true"])
    session = transport.agent_session()
    assert "ForwardAgent=yes" in session.remote(["true"]) and session._shares_master
    keyed = SshOptions("h1", address="192.0.2.1", direct_key_file="/root/.ssh/id_peer")
    assert not keyed.forwards_agent()


# --------------------------------------------------------------------------- the btrfs route
def _pair(tmp_path, data_path=None, dst_transport="ssh", key=None):
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver
    (tmp_path / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir(parents=True)
    ssh_a = {"address": "192.0.2.1"}
    if key:
        ssh_a["direct_key_file"] = key
    a = {"name": "a", "driver": "btrfs", "host": "h1", "transport": "ssh", "ssh": ssh_a, "pools": {"p": str(tmp_path / "a")}}
    if data_path:
        a["data_path"] = data_path
    b = {"name": "b", "driver": "btrfs", "host": "h2", "pools": {"p": str(tmp_path / "b")}}
    if dst_transport == "ssh":
        b.update(transport="ssh", ssh={"address": "192.0.2.2"})
    backends = Backends([a, b])
    drivers = dict((be.name, BtrfsShareDriver(be, LocalTransport(CommandRunner()))) for be in backends.backends)
    for driver in drivers.values():
        driver.peer_driver = lambda pool: drivers[pool.backend.name]
    return drivers["a"], drivers["b"].backend.pools["p"]


def test_the_route_says_which_way_the_data_goes(tmp_path):
    driver, pool = _pair(tmp_path / "default")
    assert driver.route_facts(pool) == {
        "data_path": "direct",
        "route": "direct from h1 to h2: btrfs send on h1 piped into ssh to h2 (logging in with the operator's ssh agent "
                 "forwarded to h1 for the stream), btrfs receive on h2; the data does not pass through the controller"}
    keyed, pool = _pair(tmp_path / "key", key="/root/.ssh/id_peer")
    assert "logging in with the key /root/.ssh/id_peer on h1" in keyed.route(pool)
    relayed, pool = _pair(tmp_path / "relay", data_path="controller")
    assert relayed.route_facts(pool)["data_path"] == "controller"
    assert relayed.route(pool).startswith("relayed by the controller: btrfs send on h1, btrfs receive on h2")
    here, pool = _pair(tmp_path / "here", dst_transport="local")
    assert here.route(pool).startswith("direct from h1 to h2, the controller's own machine")
