"""Unit tests for plugins/module_utils/transport/ssh.py and ssh_helper.py without a network.

The argv ssh gets (options, the remote command quoted as one word, sudo for become) and the
messages of ssh failures are checked as values. The helper is checked for real, with ssh left
out: ``Loopback`` runs the same ``python3 -c BOOTSTRAP`` with the same bundle on this machine, so
the loader, the protocol, the errno mapping and the locks held by the helper process are the ones
a storage host runs. tests/integration/test_ssh_*.py run everything through a real sshd.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import SealError, tree_seal
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError
from ansible_collections.storage.mobility.plugins.module_utils.transport import mounts
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import FileStat, LockBusy
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.registry import transport_for, transport_names
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import (
    SshError, SshOptions, SshTransport, helper_bundle)


def options(**over):
    values = {"address": "10.1.2.3", "user": "admin", "port": 2222, "private_key_file": "/k/id",
              "known_hosts_file": "/k/known_hosts"}
    values.update(over)
    return SshOptions("stor1", **values)


class Loopback(SshTransport):
    """The ssh transport with ssh taken out: remote argvs run here, no master connection."""

    def __init__(self):
        super().__init__(CommandRunner(), SshOptions("loop"))
        self._control = "unused"

    def remote(self, argv):
        return [str(a) for a in argv]

    def close(self):
        self._control = None
        super().close()


@pytest.fixture
def loop():
    transport = Loopback()
    yield transport
    transport.close()


# --------------------------------------------------------------------------- argv and messages


def test_ssh_argv_checks_host_keys_never_asks_and_uses_the_declared_key():
    argv = SshTransport(CommandRunner(), options()).ssh_argv()
    joined = " ".join(argv)
    assert argv[0] == "ssh"
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/k/known_hosts",
                   "GlobalKnownHostsFile=/dev/null", "IdentitiesOnly=yes"):
        assert "-o " + option in joined
    assert argv[argv.index("-i") + 1] == "/k/id"
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "admin"
    accept = " ".join(SshTransport(CommandRunner(), options(host_key_checking="accept-new")).ssh_argv())
    assert "StrictHostKeyChecking=accept-new" in accept and "StrictHostKeyChecking=yes" not in accept


def test_without_options_ssh_uses_its_own_defaults():
    argv = SshTransport(CommandRunner(), SshOptions("stor1")).ssh_argv()
    assert "-i" not in argv and "-p" not in argv and "-l" not in argv
    assert "StrictHostKeyChecking=yes" in argv


@pytest.mark.parametrize("words", [
    ["touch", "/srv/a b"],
    ["echo", "it's", '"quoted"', "$(id)", "`id`", "a;b", "x\ny", "*", "~", "$HOME"],
    ["mv", "--", "-rf", ""],
])
def test_the_remote_command_is_one_word_that_the_remote_shell_splits_back_into_the_argv(words):
    transport = SshTransport(CommandRunner(), options())
    argv = transport.remote(words)
    assert argv[-3:-1] == ["--", "10.1.2.3"]
    assert shlex.split(argv[-1]) == words


def test_become_runs_the_argv_under_sudo_without_a_password_prompt():
    argv = SshTransport(CommandRunner(), options(become=True)).remote(["id", "-u"])
    assert shlex.split(argv[-1]) == ["sudo", "-n", "--", "id", "-u"]


def test_remote_commands_must_be_argv_lists():
    with pytest.raises(TypeError):
        SshTransport(CommandRunner(), options()).remote("rm -rf /")


@pytest.mark.parametrize("stderr, reason", [
    ("root@10.1.2.3: Permission denied (publickey).", "authentication refused (wrong or unauthorised key /k/id for user admin)"),
    ("ssh: connect to host 10.1.2.3 port 2222: Connection refused", "unreachable (connection refused on port 2222)"),
    ("No ED25519 host key is known for [10.1.2.3]:2222 and you have requested strict checking.\n"
     "Host key verification failed.", "unknown host key: /k/known_hosts has no key for this host"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
     "host key mismatch: the host key differs from the one in /k/known_hosts"),
    ("sudo: a password is required", "sudo refused (become needs passwordless sudo -n for user admin)"),
])
def test_ssh_failures_name_the_host_and_what_failed(stderr, reason):
    error = SshTransport(CommandRunner(), options()).failure("connect", stderr)
    assert isinstance(error, SshError)
    assert str(error).startswith("Failed to connect on storage host stor1 (10.1.2.3): " + reason)
    assert error.details["host"] == "stor1" and error.details["failure"] == reason


def test_the_registry_builds_an_ssh_transport_from_the_backend():
    backend = Backends([{"name": "be1", "host": "stor1", "transport": "ssh", "ssh": {"port": 2200},
                         "pools": {"a": "/srv/a"}}]).backends[0]
    transport = transport_for(backend, CommandRunner())
    assert "ssh" in transport_names()
    assert isinstance(transport, SshTransport)
    assert (transport.options.address, transport.options.port, transport.host) == ("stor1", 2200, "stor1")


def test_the_bundle_holds_only_standard_library_code_and_the_helper():
    size, payload = helper_bundle().split(b"\n", 1)
    assert int(size) == len(payload)
    bundle = json.loads(payload)
    assert bundle["main"].endswith("transport.ssh_helper")
    for source in bundle["modules"].values():
        assert "from ansible.module_utils" not in source and "import ansible." not in source


# --------------------------------------------------------------------------- the helper, for real


def test_file_operations_answer_as_the_local_transport(loop, tmp_path):
    here = LocalTransport(CommandRunner())
    folder = str(tmp_path / "a b")
    loop.makedirs(folder + "/x")
    assert loop.is_dir(folder) and not loop.is_file(folder) and here.is_dir(folder + "/x")
    loop.write_json_atomic(folder + "/rec.json", {"k": ["\u00e9", 1]})
    assert json.loads((tmp_path / "a b" / "rec.json").read_text("utf-8")) == {"k": ["\u00e9", 1]}
    (tmp_path / "bin").write_bytes(b"\xff\x00\n\x80")
    assert loop.read_bytes(str(tmp_path / "bin")) == b"\xff\x00\n\x80"
    stat = loop.stat(folder)
    assert isinstance(stat, FileStat) and stat == here.stat(folder)
    assert sorted(loop.listdir(folder)) == ["rec.json", "x"]
    loop.append_line(folder + "/j", "one")
    loop.append_line(folder + "/j", "two")
    assert (tmp_path / "a b" / "j").read_text() == "one\ntwo\n"
    loop.write_text_atomic(folder + "/t", "text", 0o640)
    assert oct(os.stat(folder + "/t").st_mode & 0o777) == "0o640"
    loop.rename(folder + "/t", folder + "/u")
    loop.unlink(folder + "/u")
    loop.rmdir(folder + "/x")
    assert loop.statvfs(folder)["f_frsize"] > 0
    assert loop.tree_seal(folder, ["j"]) == tree_seal(folder, ["j"])
    assert loop.mount_table() == mounts.mount_table()
    assert loop.realpath(folder + "/../a b") == folder
    assert loop.is_root() == (os.geteuid() == 0) and loop.which("sh") and not loop.which("no-such-program-x")


def test_seals_collected_later_are_the_helpers_and_sent_before_any_answer_is_read(tmp_path):
    """tree_seal_later sends the request and returns: two hosts' helpers (two transports) both hold
    their request before either answer is read; a call made meanwhile gets its own answer; each
    collected seal is tree_seal's; a missing tree fails at the collection, as SealError."""
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import SealError
    trees = []
    for name in ("one", "two"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "f").write_bytes(name.encode() * 100)
        (tmp_path / name / "skip").write_bytes(b"x")
        trees.append(str(tmp_path / name))
    first, second = Loopback(), Loopback()
    try:
        waits = [first.tree_seal_later(trees[0], ["skip"]), second.tree_seal_later(trees[1], ["skip"])]
        assert first.lexists(trees[0] + "/sub/f")  # its own answer, while the seal's is pending
        assert [wait() for wait in waits] == [tree_seal(tree, ["skip"]) for tree in trees]
        missing = first.tree_seal_later(str(tmp_path / "missing"), [])
        with pytest.raises(SealError, match="missing"):
            missing()
    finally:
        first.close()
        second.close()


def test_the_fence_of_a_tree_goes_through_the_helper(loop, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: only root (CAP_LINUX_IMMUTABLE) sets the immutable attribute")
    folder = tmp_path / "fence"
    folder.mkdir()
    (folder / "f").write_bytes(b"data")
    try:
        changed = loop.set_flags_tree(str(folder), 0x10)
    except OSError as exc:
        pytest.skip("the filesystem of %s has no immutable attribute: %s" % (tmp_path, exc))
    assert changed == 2
    with pytest.raises(PermissionError):
        open(str(folder / "f"), "ab")
    assert loop.clear_flags_tree(str(folder)) == 2
    (folder / "f").write_bytes(b"writable again")


def test_remote_errors_come_back_as_the_same_errno_naming_the_host(loop, tmp_path):
    with pytest.raises(OSError) as info:
        loop.stat(str(tmp_path / "missing"))
    assert info.value.errno == errno.ENOENT and info.value.filename == str(tmp_path / "missing")
    assert "on storage host loop" in str(info.value)
    loop.mkdir(str(tmp_path / "d"))
    with pytest.raises(FileExistsError):
        loop.mkdir(str(tmp_path / "d"))
    with pytest.raises(SealError, match="on storage host loop"):
        loop.tree_seal(str(tmp_path / "missing"), [])
    with pytest.raises(ValueError):
        loop.append_line(str(tmp_path / "j"), "two\nlines")


def test_a_lock_held_by_one_helper_is_busy_for_another_until_its_process_ends(tmp_path):
    first, second = Loopback(), Loopback()
    try:
        path = str(tmp_path / "share.lock")
        handle = first.lock(path)
        handle.write_holder("run 1")
        with pytest.raises(LockBusy) as info:
            second.lock(path)
        assert info.value.holder == "run 1"
        # the controller dies or the connection is cut: the helper's stdin closes, the lock ends
        os.kill(first._helper.pid, signal.SIGKILL)
        first._helper.wait()
        again = second.lock(path)
        again.release(remove=True)
        assert not os.path.exists(path)
        assert second.lock(path, create=False) is None
    finally:
        first._helper = None
        first.close()
        second.close()


def test_a_dead_helper_is_an_error_naming_the_host(loop, tmp_path):
    loop.exists("/")
    os.kill(loop._helper.pid, signal.SIGKILL)
    with pytest.raises(SshError, match="on storage host loop"):
        loop.exists("/")
    assert loop.exists("/")  # the next call starts a new helper


def test_commands_fail_naming_the_host_and_the_program(loop):
    assert loop.run(["sh", "-c", "echo $0", "a b"], "echo")[1] == "a b\n"
    with pytest.raises(CommandError, match="Failed to list on storage host loop: ls exited with 2"):
        loop.run(["ls", "/no/such/folder"], "list")
    assert loop.run(["false"], "fail", check=False)[0] == 1


def test_pipe_streams_between_two_commands_and_names_the_failed_one(loop):
    done, out = loop.pipe(["printf", "abc"], ["cat"], "copy", capture=True)
    assert (done, out) == (3, "abc")
    with pytest.raises(Exception, match="Failed to copy on storage host loop: cat /no/such exited with 1"):
        loop.pipe(["printf", "abc"], ["cat", "/no/such"], "copy")


def test_a_pipe_runs_on_the_host_reports_progress_and_takes_requests_meanwhile(loop, tmp_path):
    from ansible_collections.storage.mobility.plugins.module_utils.transport.base import TailEdit
    seen = []

    def on_chunk(done):
        seen.append(done)
        # what the btrfs driver does from its progress callback: a request in the middle of the pipe
        loop.write_json_atomic(str(tmp_path / "progress.json"), {"done": done})

    producer = ["python3", "-c", "import sys, time\nfor _ in range(8):\n"
                "    sys.stdout.buffer.write(b'x' * 65536); sys.stdout.flush(); time.sleep(0.2)\n"
                "sys.stdout.buffer.write(b'END')"]
    done, out = loop.pipe(producer, ["wc", "-c"], "count", on_chunk=on_chunk, capture=True,
                          edit=TailEdit(b"END", b"++"))
    assert done == 8 * 65536 + 3
    assert int(out) == done + 2  # the edit went in before the closing bytes
    assert len(seen) >= 2 and seen[-1] == done and seen == sorted(seen)
    assert json.loads((tmp_path / "progress.json").read_text()) == {"done": done}


def test_a_failed_pipe_on_the_host_names_the_host_and_the_program(loop):
    with pytest.raises(Exception) as info:
        loop.pipe(["printf", "abc"], ["cat", "/no/such"], "copy")
    assert "Failed to copy on storage host loop: cat /no/such exited with 1" in str(info.value)
    assert info.value.details["rc"] == 1 and info.value.details["host"] == "loop"


class Chatty(Loopback):
    """A host whose login prints a banner on stdout before the helper starts."""

    def remote(self, argv):
        return ["sh", "-c", 'echo "Welcome to stor1"; echo "[1, 2]"; exec "$@"', "sh"] + [str(a) for a in argv]


def test_lines_a_login_script_prints_before_the_helper_are_not_answers():
    chatty = Chatty()
    try:
        assert chatty.exists("/") is True
        assert chatty.is_dir("/") is True and chatty.is_file("/") is False
    finally:
        chatty.close()


# ------------------------------------------------------------------ two hosts: relay_pipe and the btrfs route
def test_relay_pipe_between_two_transports_streams_measures_and_edits(tmp_path):
    from ansible_collections.storage.mobility.plugins.module_utils.transport.base import TailEdit
    from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import relay_pipe
    src, dst = LocalTransport(CommandRunner()), LocalTransport(CommandRunner())
    data = tmp_path / "data"
    data.write_bytes(b"x" * 300000 + b"END")
    out = tmp_path / "out"
    seen = []
    done, _output = relay_pipe(src, dst, ["cat", str(data)], ["sh", "-c", 'cat > "$1"', "sh", str(out)], "copy",
                               on_chunk=seen.append, edit=TailEdit(b"END", b"MORE"))
    assert done == 300003 and seen and seen[-1] == done
    assert out.read_bytes() == b"x" * 300000 + b"MOREEND"


def test_relay_pipe_failure_names_the_failing_side(tmp_path):
    from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import relay_pipe
    src, dst = LocalTransport(CommandRunner()), LocalTransport(CommandRunner())
    with pytest.raises(Exception, match="from this machine to this machine.*false exited with 1"):
        relay_pipe(src, dst, ["echo", "hi"], ["false"], "copy")


def _btrfs_pair(tmp_path, src_transport, dst_transport, peers=True):
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver
    specs = []
    for name, host, transport in (("a", "h1", src_transport), ("b", "h2", dst_transport)):
        (tmp_path / name).mkdir(parents=True)
        spec = {"name": name, "driver": "btrfs", "host": host, "pools": {"p": str(tmp_path / name)}}
        if transport == "ssh":
            spec.update(transport="ssh", ssh={"address": "192.0.2.%d" % (len(specs) + 1)})
        specs.append(spec)
    backends = Backends(specs)
    drivers = {}
    for backend in backends.backends:
        drivers[backend.name] = BtrfsShareDriver(backend, LocalTransport(CommandRunner()))
    if peers:
        for driver in drivers.values():
            driver.peer_driver = lambda pool: drivers[pool.backend.name]
    a, b = (drivers[n] for n in ("a", "b"))
    return a, b, a.backend.pools["p"], b.backend.pools["p"]


def test_btrfs_between_two_local_backends_on_different_hosts_is_still_refused(tmp_path):
    a, b, pa, pb = _btrfs_pair(tmp_path, "local", "local")
    answer = a.migration_check_compatibility(pa, pb, {"name": "s"}, b)
    assert answer["compatible"] is False
    assert "different hosts (h1, h2)" in answer["reason"] and "transport ssh" in answer["reason"]


def test_btrfs_host_to_host_is_routed_through_the_peer_driver(tmp_path):
    a, b, pa, pb = _btrfs_pair(tmp_path, "ssh", "ssh")
    assert a._side(pa) is a and a._side(pb) is b
    assert a.reaches_host_of(pb)
    # The default data_path is direct: host to host, the data never through the controller.
    assert a.route(pb).startswith("direct from h1 to h2: btrfs send on h1 piped into ssh to h2")
    assert a.route_facts(pb)["data_path"] == "direct"
    assert "on storage host h1" in a.route(pa)
    # Without the run's peers (a driver made alone), the other host is refused, never taken for this one.
    lone, _b, _pa, lone_pb = _btrfs_pair(tmp_path / "lone", "ssh", "ssh", peers=False)
    with pytest.raises(Exception, match="on host h2, where this run has no btrfs driver"):
        lone._side(lone_pb)


def test_the_shared_masters_folder_is_used_only_when_it_is_private(tmp_path, monkeypatch):
    """``<tmp>/mobility-cm-<uid>``: made 0700; a link, a folder open to others or another user's
    is never used (the run then keeps a master of its own)."""
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import ssh_masters
    monkeypatch.setattr(ssh_masters.tempfile, "tempdir", str(tmp_path))
    folder = tmp_path / ("mobility-cm-%d" % os.geteuid())
    assert ssh_masters.shared_folder() == str(folder)
    assert (folder.stat().st_mode & 0o777) == 0o700
    folder.chmod(0o755)
    assert ssh_masters.shared_folder() is None
    folder.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)
    assert ssh_masters.shared_folder() is None


def test_the_master_name_changes_with_every_option_that_makes_the_connection():
    base = dict(address="10.0.0.5", user="root", port=22, private_key_file="/k", known_hosts_file="/kh",
                direct_key_file="/d")
    name = SshOptions("stor1", **base).master_name()
    assert SshOptions("other-name", **base).master_name() == name  # the same connection
    for key, value in (("address", "10.0.0.6"), ("user", "ops"), ("port", 2222), ("private_key_file", "/k2"),
                       ("known_hosts_file", "/kh2"), ("host_key_checking", "accept-new")):
        assert SshOptions("stor1", **dict(base, **{key: value})).master_name() != name, key
