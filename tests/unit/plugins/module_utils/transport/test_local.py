"""Unit tests for plugins/module_utils/transport/local.py (and the interface in transport/base.py,
the registry in transport/registry.py): real files, real flock(2) locks held by real processes,
real commands and a real pipe between two processes.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport import local as local_mod
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import (
    FileStat, LockBusy, TailEdit, Transport)
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport, atomic_write_json
from ansible_collections.storage.mobility.plugins.module_utils.transport.registry import transport_for, transport_names
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner


@pytest.fixture
def tr():
    return LocalTransport(CommandRunner())


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_json_writes_valid_json_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "rec.json"
    atomic_write_json(str(path), {"b": [1, 2], "a": "\u00e9"})
    assert json.loads(path.read_text("utf-8")) == {"a": "\u00e9", "b": [1, 2]}
    atomic_write_json(str(path), {"a": 2})  # replaces in place
    assert json.loads(path.read_text("utf-8")) == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["rec.json"]
    assert (os.stat(path).st_mode & 0o777) == 0o600


def test_atomic_write_json_replaces_by_rename_never_in_place(tmp_path, monkeypatch):
    path = tmp_path / "rec.json"
    atomic_write_json(str(path), {"v": 1})
    seen = []
    real_rename = os.rename

    def rename(src, dst):
        # When the rename happens the old content is still whole and the new one is complete.
        seen.append((json.loads(open(dst).read()), json.loads(open(src).read())))
        return real_rename(src, dst)

    monkeypatch.setattr(local_mod.os, "rename", rename)
    atomic_write_json(str(path), {"v": 2})
    assert seen == [({"v": 1}, {"v": 2})]


def test_atomic_write_json_failure_keeps_the_old_record_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "rec.json"
    atomic_write_json(str(path), {"v": 1})

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_mod.os, "rename", fail)
    with pytest.raises(OSError):
        atomic_write_json(str(path), {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["rec.json"], "a failed write must not leave its temp file behind"


def test_unserialisable_data_changes_nothing(tmp_path):
    path = tmp_path / "rec.json"
    atomic_write_json(str(path), {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(str(path), {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["rec.json"]


# --------------------------------------------------------------------------- lock files


def test_release_removes_a_lock_file_only_while_it_names_the_locked_file(tmp_path):
    path = tmp_path / "s1.lock"
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink(str(path))
    path.write_text("another run's lock")  # the path names another file now
    assert local_mod.unlink_locked(str(path), fd) is False
    assert path.read_text() == "another run's lock"
    os.close(fd)


# --------------------------------------------------------------------------- the registry


def test_the_registry_gives_a_local_backend_the_local_transport(tmp_path):
    backend = Backends([{"name": "be1", "pools": {"a": str(tmp_path)}}]).backends[0]
    transport = transport_for(backend, CommandRunner())
    assert isinstance(transport, LocalTransport) and isinstance(transport, Transport)
    assert transport_names() == ["local", "ssh"]


def test_a_backend_without_a_file_transport_is_refused_naming_the_choices(tmp_path):
    backend = Backends([{"name": "cloud", "driver": "manila", "auth": {"auth_url": "http://x"}}]).backends[0]
    assert backend.transport == "rest"
    with pytest.raises(InvalidRequest, match="Backend cloud uses transport 'rest', which has no file transport: "
                                             "known transports are local, ssh"):
        transport_for(backend, CommandRunner())


def test_the_interface_is_abstract():
    with pytest.raises(TypeError):
        Transport(CommandRunner())  # pylint: disable=abstract-class-instantiated


# --------------------------------------------------------------------------- commands


def test_run_returns_the_output_and_names_what_failed(tr, tmp_path):
    assert tr.run(["echo", "hello"], "say hello") == (0, "hello\n", "")
    with pytest.raises(CommandError) as info:
        tr.run(["ls", str(tmp_path / "missing")], "list the missing folder")
    assert str(info.value).startswith("Failed to list the missing folder: ls exited with 2")
    assert info.value.details["cmd"] == ["ls", str(tmp_path / "missing")] and info.value.details["rc"] == 2
    assert tr.run(["false"], "fail", check=False)[0] == 1
    with pytest.raises(TypeError):
        tr.run("echo not an argv", "run a shell string")


def test_pipe_passes_the_stream_measures_it_and_captures_the_consumer(tr):
    seen = []
    data = b"x" * 3000000
    done, out = tr.pipe([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * 3000000)"],
                        ["wc", "-c"], "count bytes", on_chunk=seen.append, capture=True)
    assert done == len(data) and out == str(len(data))
    assert seen and seen[-1] == len(data) and seen == sorted(seen)


def test_pipe_edits_the_end_of_the_stream_only_when_it_closes_as_expected(tr, tmp_path):
    target = tmp_path / "out"
    consumer = [sys.executable, "-c", "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, open(sys.argv[1], 'wb'))",
                str(target)]
    edit = TailEdit(b"END!", b"<inserted>")
    done = tr.pipe(["printf", "body-END!"], consumer, "copy", edit=edit)[0]
    assert done == len(b"body-END!") and target.read_bytes() == b"body-<inserted>END!"
    tr.pipe(["printf", "body-no-end"], consumer, "copy", edit=edit)
    assert target.read_bytes() == b"body-no-end"


@pytest.mark.parametrize("producer, consumer, failed, rc", [
    (["sh", "-c", "echo partial; echo producer broke >&2; exit 3"], ["cat"], "sh -c", 3),
    (["echo", "data"], ["sh", "-c", "cat >/dev/null; echo consumer broke >&2; exit 4"], "sh -c", 4),
])
def test_a_failed_pipe_names_the_program_that_failed(tr, producer, consumer, failed, rc):
    with pytest.raises(StorageError) as info:
        tr.pipe(producer, consumer, "move the stream")
    message = str(info.value)
    assert message.startswith("Failed to move the stream: %s exited with %d" % (failed, rc))
    assert "broke" in message and info.value.details["rc"] == rc
    assert info.value.details["cmd"] == producer + ["|"] + consumer


def test_a_pipe_told_to_die_midway_passes_half_the_stream_and_exits_70(tmp_path):
    target = tmp_path / "half"
    script = (
        "import sys\n"
        "from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner\n"
        "from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport\n"
        "LocalTransport(CommandRunner()).pipe(['printf', '0123456789'], ['sh', '-c', 'cat > \"$1\"', 'sh', sys.argv[1]],\n"
        "                                     'copy', die_midway=True)\n"
        "print('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 70 and "not reached" not in proc.stdout, proc.stderr
    # The consumer, orphaned, finishes on its own: on a loaded machine it may not even have opened
    # its file yet.
    deadline = time.monotonic() + 30
    while (not target.exists() or target.read_bytes() != b"01234") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.read_bytes() == b"01234"


def test_which_and_is_root(tr):
    assert tr.which("sh") is True and tr.which("no-such-program-here") is False
    assert tr.is_root() == (os.geteuid() == 0)


def test_pids_running_finds_a_real_process_by_exact_path_and_kill_stops_it(tr, tmp_path):
    folder = str(tmp_path / "stage")
    # python -c SCRIPT ARG...: argv[1] is "-c", the folder is an argument.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "x", folder])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "x", folder + "0"])
    program = os.path.basename(sys.executable)
    try:
        assert tr.pids_running(program, ("-c",), [folder]) == [proc.pid]
        assert tr.pids_running(program, ("-m",), [folder]) == []
        tr.kill(proc.pid)
        assert proc.wait(timeout=10) == -9
        tr.kill(proc.pid)  # already gone: not an error
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()


def test_pids_running_matches_program_verb_and_exact_paths_in_a_recorded_proc(tmp_path):
    proc = tmp_path / "proc"

    def fake(pid, *argv):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    fake(101, "/usr/bin/btrfs", "receive", "/p/.mobility/btrfs/m1")
    fake(102, "btrfs", "send", "-q", "-p", "/p/x/inc-000001", "/p/x/inc-000002")
    fake(103, "btrfs", "receive", "/p/.mobility/btrfs/m10")      # another migration
    fake(104, "rsync", "send", "/p/.mobility/btrfs/m1")          # not btrfs
    fake(105, "btrfs", "subvolume", "/p/.mobility/btrfs/m1")     # not a transfer
    (proc / "self").mkdir()
    found = LocalTransport(CommandRunner()).pids_running("btrfs", ("send", "receive"),
                                                         ["/p/.mobility/btrfs/m1", "/p/x/inc-000002"], proc=str(proc))
    assert found == [101, 102]


# --------------------------------------------------------------------------- file operations


def test_stat_returns_plain_values(tr, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    os.symlink(str(path), str(tmp_path / "link"))
    real = os.stat(str(path))
    st = tr.stat(str(tmp_path / "link"))
    assert isinstance(st, FileStat) and not isinstance(st, os.stat_result)
    assert (st.ino, st.dev, st.size, st.mtime_ns) == (real.st_ino, real.st_dev, 5, real.st_mtime_ns)
    assert tr.lstat(str(tmp_path / "link")).ino == os.lstat(str(tmp_path / "link")).st_ino != st.ino
    with pytest.raises(OSError) as info:
        tr.stat(str(tmp_path / "missing"))
    assert info.value.errno == errno.ENOENT


def test_file_predicates_and_folder_operations(tr, tmp_path):
    base = str(tmp_path)
    tr.makedirs(os.path.join(base, "a", "b"), 0o700)
    assert tr.is_dir(os.path.join(base, "a", "b")) and (os.stat(os.path.join(base, "a", "b")).st_mode & 0o777) == 0o700
    with pytest.raises(OSError) as info:
        tr.mkdir(os.path.join(base, "a"))
    assert info.value.errno == errno.EEXIST
    os.symlink(os.path.join(base, "gone"), os.path.join(base, "dangling"))
    assert tr.lexists(os.path.join(base, "dangling")) and not tr.exists(os.path.join(base, "dangling"))
    assert tr.is_link(os.path.join(base, "dangling")) and not tr.is_dir(os.path.join(base, "dangling"))
    assert tr.is_empty_dir(os.path.join(base, "a", "b")) and not tr.is_empty_dir(os.path.join(base, "a"))
    assert not tr.is_empty_dir(os.path.join(base, "missing"))
    os.symlink(os.path.join(base, "a", "b"), os.path.join(base, "to-empty"))
    assert not tr.is_empty_dir(os.path.join(base, "to-empty")), "a symlink is not an empty folder"
    assert tr.realpath(os.path.join(base, "to-empty")) == os.path.realpath(os.path.join(base, "a", "b"))
    tr.rename(os.path.join(base, "a", "b"), os.path.join(base, "c"))
    assert sorted(tr.listdir(base)) == ["a", "c", "dangling", "to-empty"]
    tr.rmdir(os.path.join(base, "c"))
    tr.unlink(os.path.join(base, "dangling"))
    assert sorted(tr.listdir(base)) == ["a", "to-empty"]
    with pytest.raises(OSError):
        tr.listdir(os.path.join(base, "missing"))


def test_read_bytes_write_json_atomic_statvfs_and_tree_bytes(tr, tmp_path):
    path = str(tmp_path / "rec.json")
    tr.write_json_atomic(path, {"b": 1, "a": [2]})
    assert json.loads(tr.read_bytes(path).decode()) == {"a": [2], "b": 1}
    with pytest.raises(IOError):
        tr.read_bytes(str(tmp_path / "missing"))
    vfs = tr.statvfs(str(tmp_path))
    real = os.statvfs(str(tmp_path))
    assert (vfs["f_blocks"], vfs["f_frsize"]) == (real.f_blocks, real.f_frsize) and vfs["f_bavail"] >= 0
    (tmp_path / "t" / "d").mkdir(parents=True)
    (tmp_path / "t" / "one").write_bytes(b"x" * 10)
    (tmp_path / "t" / "d" / "two").write_bytes(b"y" * 32)
    assert tr.tree_bytes(str(tmp_path / "t")) == 42
    tr.fsync_dir(str(tmp_path))


# --------------------------------------------------------------------------- locks


HOLD = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, sys.argv[2].encode()); print('held', flush=True); "
        "sys.stdin.read()")


def test_a_lock_held_by_another_process_is_busy_with_its_holder_text(tr, tmp_path):
    path = str(tmp_path / "s1.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path, "the other run"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy) as info:
            tr.lock(path)
        assert info.value.holder == "the other run"
        with pytest.raises(LockBusy):
            tr.lock(path, create=False)
    finally:
        holder.communicate("", timeout=30)
    lock = tr.lock(path)
    lock.write_holder("this run")
    assert open(path).read() == "this run"
    lock.release()
    assert os.path.exists(path)


def test_a_lock_excludes_another_process_until_released_and_can_remove_its_file(tr, tmp_path):
    path = str(tmp_path / "s1.lock")
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
             "sys.exit(0 if fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) is None else 1)")
    lock = tr.lock(path)
    assert subprocess.run([sys.executable, "-c", probe, path], capture_output=True, check=False).returncode == 1
    lock.release(remove=True)
    assert not os.path.exists(path)
    lock = tr.lock(path)
    lock.release()
    assert subprocess.run([sys.executable, "-c", probe, path], check=False).returncode == 0


def test_without_create_a_missing_lock_file_is_no_lock_and_nothing_is_written(tr, tmp_path):
    path = str(tmp_path / "s1.lock")
    assert tr.lock(path, create=False) is None
    assert not os.path.exists(path)


# --------------------------------------------------------------------------- inspections


def test_mount_of_and_the_mount_table(tr, tmp_path):
    root = tr.mount_of("/")
    assert root["mount_point"] == "/" and root["fstype"] != "unknown"
    mine = tr.mount_of(str(tmp_path))
    assert str(tmp_path).startswith(mine["mount_point"])
    assert any(e["mount_point"] == mine["mount_point"] for e in tr.mount_table())
    assert tr.is_mount_point("/") and not tr.is_mount_point(str(tmp_path))
    assert tr.stacked_mounts(str(tmp_path)) == []
    assert tr.same_inode(str(tmp_path), str(tmp_path) + "/.") and not tr.same_inode(str(tmp_path), "/")


def test_open_writers_and_users_see_a_real_process(tr, tmp_path):
    target = str(tmp_path / "held")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'ab'); print('ok', flush=True); "
                               "sys.stdin.read()", target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        assert [w["paths"] for w in tr.open_writers([str(tmp_path)]) if w["pid"] == holder.pid] == [[target]]
        assert holder.pid in [u["pid"] for u in tr.users([str(tmp_path)])]
    finally:
        holder.communicate("", timeout=30)
    assert [w for w in tr.open_writers([str(tmp_path)]) if w["pid"] == holder.pid] == []


def test_tree_seal_is_the_data_movers_seal(tr, tmp_path):
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import tree_seal
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_bytes(b"data")
    (tmp_path / "t" / "skip").write_bytes(b"other")
    assert tr.tree_seal(str(tmp_path / "t"), ["skip"]) == tree_seal(str(tmp_path / "t"), ["skip"])
    before = tr.tree_seal(str(tmp_path / "t"), [])
    (tmp_path / "t" / "f").write_bytes(b"changed")
    assert tr.tree_seal(str(tmp_path / "t"), []) != before


def test_flags_of_a_plain_file_are_zero(tr, tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_bytes(b"data")
    assert tr.read_flags(str(tmp_path / "t" / "f")) == 0
    assert tr.flagged_entries(str(tmp_path / "t")) == {}
    assert not tr.clear_flags_tree(str(tmp_path / "t"))


# --------------------------------------------------------------------------- direct I/O probe


def test_opens_direct_here_and_through_the_commands_other_hosts_use(tr, tmp_path):
    """A file on this machine's disk opens with O_DIRECT; a procfs file refuses it (EINVAL). The
    interface's own version (dd iflag=direct, what an ssh transport runs on its host) agrees."""
    image = tmp_path / "image"
    image.write_bytes(b"\0" * 8192)
    assert tr.opens_direct(str(image)) is True
    assert tr.opens_direct("/proc/self/status") is False
    assert tr.opens_direct(str(tmp_path / "missing")) is False
    assert Transport.opens_direct(tr, str(image)) is True
    assert Transport.opens_direct(tr, "/proc/self/status") is False
