"""Unit tests for plugins/module_utils/exports.py.

BindExport is exercised through ``plan`` with a faked mount table and through ``apply`` as a
non-root user (it must refuse before running a command). As root, real bind mounts in tmp_path
show that the export path never accepts a write that does not land in the share (a probe writes
through it after every command of a switchover), that exports of the old layout are converted
without a gap, and that a busy export names who keeps it busy. Without root those tests skip
with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import exports
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import (
    BASE_SOURCE, RO, RW, BindExport, NoneExport, access_mode, export_helper)
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.mounts import stacked_mounts
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")


class RecordingRunner:
    def __init__(self):
        self.calls = []

    def run(self, argv, what, check=True):
        self.calls.append(list(argv))
        return 0, "", ""


def rule(level, state="active"):
    return {"access_type": "ip", "access_to": "10.0.0.1/32", "access_level": level, "state": state}


# --------------------------------------------------------------------------- access_mode


@pytest.mark.parametrize("rules, read_only_phase, expected", [
    (None, False, None),
    ([], False, None),
    ([], True, None),  # no rule: not exported, even in a read-only phase
    ([rule("ro")], False, RO),
    ([rule("ro"), rule("ro")], False, RO),
    ([rule("rw")], False, RW),
    ([rule("ro"), rule("rw")], False, RW),  # any rw rule makes the export rw
    ([rule("rw")], True, RO),  # the read-only phase of a migration wins
    ([rule("rw", state="deleting")], False, None),  # rules being deleted do not count
    ([rule("rw", state="deleting"), rule("ro")], False, RO),
    ([{"access_level": "rw"}], False, RW),  # no state means active
])
def test_access_mode(rules, read_only_phase, expected):
    assert access_mode(rules, read_only_phase) == expected


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def bind_backend(tmp_path):
    spec = {"name": "be1", "pools": {"a": str(tmp_path / "a")},
            "export": {"helper": "bind", "root": str(tmp_path / "exports")}}
    return Backends([spec]).backends[0]


def test_export_helper_picks_the_declared_helper(bind_backend, tmp_path):
    assert isinstance(export_helper(bind_backend, LocalTransport(RecordingRunner())), BindExport)
    none_backend = Backends([{"name": "be2", "pools": {"a": str(tmp_path / "x")}}]).backends[0]
    assert isinstance(export_helper(none_backend, LocalTransport(RecordingRunner())), NoneExport)


def test_none_export_is_the_path_in_the_pool_and_never_acts(tmp_path):
    backend = Backends([{"name": "be1", "pools": {"a": str(tmp_path / "a")}}]).backends[0]
    runner = RecordingRunner()
    helper = NoneExport(backend, LocalTransport(runner))
    path = str(tmp_path / "a" / "shares" / "s1")
    assert helper.location("s1", path) == path
    assert helper.state("s1", path)["exported"] is False
    os.makedirs(path)
    state = helper.state("s1", path)
    assert state == {"helper": "none", "path": path, "mode": None, "enforced": False, "exported": True}
    for mode in (RW, RO, None):
        assert helper.plan("s1", path, mode) == []
        assert helper.apply("s1", path, mode) is False
    assert helper.remove("s1", path) is False
    assert runner.calls == []


def test_bind_location_is_fixed_under_the_export_root(bind_backend, tmp_path):
    helper = BindExport(bind_backend, LocalTransport(RecordingRunner()))
    assert helper.location("s1", "/anything/shares/s1") == str(tmp_path / "exports" / "s1")


def test_bind_plan_for_an_unmounted_export(bind_backend, tmp_path):
    helper = BindExport(bind_backend, LocalTransport(RecordingRunner()))
    inst = str(tmp_path / "a" / "shares" / "s1")
    export = str(tmp_path / "exports" / "s1")
    base = "mount a read-only base at %s" % export
    assert helper.plan("s1", inst, RW) == [base, "bind-mount %s at %s" % (inst, export)]
    assert helper.plan("s1", inst, RO) == [base, "bind-mount %s at %s" % (inst, export),
                                           "remount export %s read-only" % export]
    assert helper.plan("s1", inst, None) == []
    assert helper.state("s1", inst)["exported"] is False
    assert not os.path.exists(export), "plan must not create anything"


def fake_stack(monkeypatch, layers, serves):
    """Pretend the export path has these mounts stacked (lowest first): "base", "ro" or "rw" (a
    share bind mount with that mode); the top share mount serves the instance or not."""
    table = []
    for index, layer in enumerate(layers):
        entry = {"mount_id": str(100 + index), "parent_id": str(99 + index), "root": "/",
                 "fstype": "tmpfs" if layer == "base" else "ext4",
                 "source": BASE_SOURCE if layer == "base" else "/dev/sdz1",
                 "options": "ro,relatime" if layer in ("base", "ro") else "rw,relatime"}
        table.append(entry)
    monkeypatch.setattr(LocalTransport, "stacked_mounts", lambda self, path: list(table))
    monkeypatch.setattr(LocalTransport, "same_inode", lambda self, a, b: serves)


B = "mount a read-only base at {e}"
BB = "mount a read-only base beneath export {e}"
U = "unmount export {e}"
M = "bind-mount {i} at {e}"


@pytest.mark.parametrize("layers, serves, mode, expected, exported", [
    # the layout of this version: a read-only base, the share on it
    (["base", "rw"], True, RW, [], True),
    (["base", "ro"], True, RO, [], True),
    (["base", "rw"], True, RO, ["remount export {e} read-only"], True),
    (["base", "ro"], True, RW, ["remount export {e} read-write"], True),
    (["base", "rw"], True, None, [U], True),
    (["base", "rw"], False, RW, [U, M], False),
    (["base", "ro"], False, RO, [U, M, "remount export {e} read-only"], False),
    (["base"], False, RW, [M], False),
    (["base"], False, None, [], False),
    # the old layout (a bind mount straight on the folder): converted on the next apply
    (["rw"], True, RW, [BB], True),
    (["rw"], True, RO, [BB, "remount export {e} read-only"], True),
    (["rw"], True, None, [BB, U], True),
    (["rw"], False, RW, [BB, U, M], False),
    (["ro"], False, None, [BB, U], False),
    # nothing mounted at all
    ([], False, RW, [B, M], False),
    ([], False, None, [], False),
])
def test_bind_plan_for_each_layout(bind_backend, tmp_path, monkeypatch, layers, serves, mode, expected, exported):
    helper = BindExport(bind_backend, LocalTransport(RecordingRunner()))
    inst = str(tmp_path / "a" / "shares" / "s1")
    export = str(tmp_path / "exports" / "s1")
    fake_stack(monkeypatch, layers, serves)
    assert helper.plan("s1", inst, mode) == [a.format(e=export, i=inst) for a in expected]
    state = helper.state("s1", inst)
    assert state["exported"] is exported
    assert state["read_only_base"] is ("base" in layers)
    top = layers[-1] if layers and layers[-1] != "base" else None
    assert state["mode"] == (top if exported else None)


def test_bind_apply_refuses_without_root_and_runs_nothing(bind_backend, tmp_path, monkeypatch):
    runner = RecordingRunner()
    helper = BindExport(bind_backend, LocalTransport(runner))
    monkeypatch.setattr(LocalTransport, "is_root", lambda self: False)
    inst = str(tmp_path / "a" / "shares" / "s1")
    with pytest.raises(StorageError) as info:
        helper.apply("s1", inst, RW)
    assert "mounting needs root" in str(info.value) and "export helper none" in str(info.value)
    assert runner.calls == []
    assert not os.path.exists(str(tmp_path / "exports" / "s1"))


def test_bind_apply_with_nothing_to_do_needs_no_root(bind_backend, tmp_path, monkeypatch):
    runner = RecordingRunner()
    helper = BindExport(bind_backend, LocalTransport(runner))
    monkeypatch.setattr(LocalTransport, "is_root", lambda self: False)
    assert helper.apply("s1", str(tmp_path / "a" / "shares" / "s1"), None) is False
    assert helper.remove("s1", str(tmp_path / "a" / "shares" / "s1")) is False
    assert runner.calls == []


def test_bind_apply_builds_argv_lists(bind_backend, tmp_path, monkeypatch):
    # Root is faked and the runner only records: nothing is mounted.
    runner = RecordingRunner()
    helper = BindExport(bind_backend, LocalTransport(runner))
    monkeypatch.setattr(LocalTransport, "is_root", lambda self: True)
    monkeypatch.setattr(LocalTransport, "stacked_mounts", lambda self, path: [])
    inst = str(tmp_path / "a" / "shares" / "-s1")
    export = str(tmp_path / "exports" / "-s1")
    assert helper.apply("-s1", inst, RO) is True
    assert runner.calls == [["mount", "-t", "tmpfs", "-o", "ro,size=4k,mode=0755,nosuid,nodev,noexec", "--",
                             BASE_SOURCE, export],
                            ["mount", "--bind", "--", inst, export],
                            ["mount", "-o", "remount,bind,ro", "--", export]]
    assert os.path.isdir(export)


# --------------------------------------------------------------------------- real bind mounts (root)


class ProbingRunner(CommandRunner):
    """Runs the real commands; after each one, writes a numbered file through the export path
    and records whether the write was accepted. A crash or kill between any two commands of a
    switchover leaves the export as it is at one of these probes."""

    def __init__(self, export):
        super().__init__()
        self.export = export
        self.probes = []

    def run(self, argv, what, check=True):
        result = super().run(argv, what, check)
        self.probe(argv[0] + " " + argv[1])
        return result

    def probe(self, after):
        name = "probe-%03d" % len(self.probes)
        try:
            with open(os.path.join(self.export, name), "w") as handle:
                handle.write(after)
            accepted = True
        except OSError:
            accepted = False
        self.probes.append((name, after, accepted))


@pytest.fixture
def bind_lab(tmp_path):
    spec = {"name": "be1", "pools": {"a": str(tmp_path / "a")},
            "export": {"helper": "bind", "root": str(tmp_path / "exports")}}
    backend = Backends([spec]).backends[0]
    src = tmp_path / "a" / "shares" / "src"
    dst = tmp_path / "a" / "shares" / "dst"
    src.mkdir(parents=True)
    dst.mkdir(parents=True)
    (src / "data").write_text("old")
    export = tmp_path / "exports" / "s1"
    yield backend, str(src), str(dst), str(export)
    for _attempt in range(8):
        if not stacked_mounts(str(export)):
            break
        subprocess.run(["umount", "-l", str(export)], check=False, capture_output=True)


def accepted_writes_land_in(runner, dst):
    """Every probe write the export accepted is in ``dst``; return the accepted ones."""
    accepted = [(name, after) for name, after, ok in runner.probes if ok]
    for name, after in accepted:
        assert os.path.exists(os.path.join(dst, name)), (
            "a write through the export after %r was accepted but is not in the new instance" % after)
    return accepted


@needs_root
def test_switch_never_accepts_a_write_outside_the_new_instance(bind_lab):
    backend, src, dst, export = bind_lab
    helper = BindExport(backend, LocalTransport(CommandRunner()))
    helper.apply("s1", src, RO)  # phase 2: the source is exported read-only
    runner = ProbingRunner(export)
    helper = BindExport(backend, LocalTransport(runner))
    assert helper.apply("s1", dst, RW) is True
    assert [after for _n, after, _ok in runner.probes] == ["umount " + export, "mount --bind"]
    # Between the two steps the export path showed the read-only base: the write failed.
    assert runner.probes[0][2] is False
    assert accepted_writes_land_in(runner, dst) == [("probe-001", "mount --bind")]
    # Nothing was left in the export root's own folder, under the mounts.
    for entry in stacked_mounts(export):
        subprocess.run(["umount", export], check=True)
    assert os.listdir(export) == []


@needs_root
def test_switch_to_a_read_only_export_and_unexport_keep_the_base(bind_lab):
    backend, src, dst, export = bind_lab
    helper = BindExport(backend, LocalTransport(CommandRunner()))
    helper.apply("s1", src, RW)
    runner = ProbingRunner(export)
    BindExport(backend, LocalTransport(runner)).apply("s1", dst, RO)
    accepted_writes_land_in(runner, dst)
    assert helper.state("s1", dst)["mode"] == RO and helper.state("s1", dst)["read_only_base"] is True
    # No rule any more: not exported, but the path stays read-only (the base), never writable.
    assert helper.apply("s1", dst, None) is True
    state = helper.state("s1", dst)
    assert state["exported"] is False and state["read_only_base"] is True
    with pytest.raises(OSError):
        open(os.path.join(export, "x"), "w").close()
    assert helper.plan("s1", dst, None) == []


@needs_root
def test_an_export_of_the_old_layout_is_converted_without_a_gap(bind_lab):
    backend, src, dst, export = bind_lab
    os.makedirs(export)
    subprocess.run(["mount", "--bind", src, export], check=True)  # what the previous version made
    helper = BindExport(backend, LocalTransport(CommandRunner()))
    state = helper.state("s1", src)
    assert state["exported"] is True and state["read_only_base"] is False
    assert helper.plan("s1", src, RW) == ["mount a read-only base beneath export %s" % export]
    assert helper.apply("s1", src, RW) is True
    stack = stacked_mounts(export)
    assert [e["source"] == BASE_SOURCE for e in stack] == [True, False]
    assert helper.state("s1", src)["exported"] is True
    assert helper.apply("s1", src, RW) is False
    # The next switch uncovers the base, not the folder.
    runner = ProbingRunner(export)
    BindExport(backend, LocalTransport(runner)).apply("s1", dst, RW)
    assert runner.probes[0][2] is False
    accepted_writes_land_in(runner, dst)


@needs_root
def test_without_move_mount_beneath_the_base_is_stacked_on_top(bind_lab, monkeypatch):
    backend, src, dst, export = bind_lab
    os.makedirs(export)
    subprocess.run(["mount", "--bind", src, export], check=True)

    def unsupported(self, path, source, options):
        raise exports.BaseUnsupported("simulated kernel before 6.5")

    monkeypatch.setattr(LocalTransport, "mount_base_beneath", unsupported)
    runner = ProbingRunner(export)
    helper = BindExport(backend, LocalTransport(runner))
    assert helper.apply("s1", src, RW) is True
    # The base on top made the path read-only for an instant, never writable elsewhere.
    assert [ok for _n, _a, ok in runner.probes] == [False, True]
    assert os.path.exists(os.path.join(src, "probe-001"))
    state = helper.state("s1", src)
    assert state["exported"] is True and state["read_only_base"] is True and state["hidden_mounts"] == 1
    assert BindExport(backend, LocalTransport(CommandRunner())).remove("s1", src) is True
    assert stacked_mounts(export) == [] and not os.path.exists(export)


@needs_root
def test_remove_takes_the_share_and_its_base_away(bind_lab):
    backend, src, dst, export = bind_lab
    helper = BindExport(backend, LocalTransport(CommandRunner()))
    helper.apply("s1", src, RO)
    assert len(stacked_mounts(export)) == 2
    assert helper.remove("s1", src) is True
    assert stacked_mounts(export) == [] and not os.path.exists(export)
    assert helper.remove("s1", src) is False


@needs_root
def test_a_busy_export_is_not_switched_and_the_error_names_who_uses_it(bind_lab):
    backend, src, dst, export = bind_lab
    helper = BindExport(backend, LocalTransport(CommandRunner()))
    helper.apply("s1", src, RO)
    squatter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=export)
    try:
        deadline = time.monotonic() + 10
        while os.readlink("/proc/%d/cwd" % squatter.pid) != export and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StorageError) as info:
            helper.apply("s1", dst, RW)
        message = str(info.value)
        assert "busy" in message and "%d (python" % squatter.pid in message
        # Nothing changed: the export still serves the source, read-only, so a process inside it
        # cannot write there either.
        state = helper.state("s1", src)
        assert state["exported"] is True and state["mode"] == RO
        touch = subprocess.run(["touch", "written-from-inside"], cwd=export, capture_output=True, text=True, check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    finally:
        squatter.kill()
        squatter.wait()
    assert helper.apply("s1", dst, RW) is True
    assert helper.state("s1", dst)["exported"] is True
