"""Unit tests for plugins/module_utils/exports.py.

Nothing is mounted here: BindExport is exercised through ``plan`` and through ``apply`` as a
non-root user (it must refuse before running a command). Real bind mounts are tested as root by
the integration targets.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import exports
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import (
    RO, RW, BindExport, NoneExport, access_mode, export_helper)


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
    assert isinstance(export_helper(bind_backend, RecordingRunner()), BindExport)
    none_backend = Backends([{"name": "be2", "pools": {"a": str(tmp_path / "x")}}]).backends[0]
    assert isinstance(export_helper(none_backend, RecordingRunner()), NoneExport)


def test_none_export_is_the_path_in_the_pool_and_never_acts(tmp_path):
    backend = Backends([{"name": "be1", "pools": {"a": str(tmp_path / "a")}}]).backends[0]
    runner = RecordingRunner()
    helper = NoneExport(backend, runner)
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
    helper = BindExport(bind_backend, RecordingRunner())
    assert helper.location("s1", "/anything/shares/s1") == str(tmp_path / "exports" / "s1")


def test_bind_plan_for_an_unmounted_export(bind_backend, tmp_path):
    helper = BindExport(bind_backend, RecordingRunner())
    inst = str(tmp_path / "a" / "shares" / "s1")
    export = str(tmp_path / "exports" / "s1")
    assert helper.plan("s1", inst, RW) == ["bind-mount %s at %s" % (inst, export)]
    assert helper.plan("s1", inst, RO) == ["bind-mount %s at %s" % (inst, export),
                                           "remount export %s read-only" % export]
    assert helper.plan("s1", inst, None) == []
    assert helper.state("s1", inst)["exported"] is False
    assert not os.path.exists(export), "plan must not create anything"


def fake_mounted(monkeypatch, serves, read_only):
    """Pretend the export path is a mount point serving (or not) the instance, ro or rw."""
    monkeypatch.setattr(exports, "is_mount_point", lambda path: True)
    monkeypatch.setattr(exports, "_same_inode", lambda a, b: serves)
    flag = os.ST_RDONLY if read_only else 0
    monkeypatch.setattr(exports.os, "statvfs", lambda path: SimpleNamespace(f_flag=flag))


@pytest.mark.parametrize("serves, read_only, mode, expected", [
    (True, False, RW, []),
    (True, True, RO, []),
    (True, False, RO, ["remount export {e} read-only"]),
    (True, True, RW, ["remount export {e} read-write"]),
    (True, False, None, ["unmount export {e}"]),
    (False, False, RW, ["unmount export {e}", "bind-mount {i} at {e}"]),
    (False, True, RO, ["unmount export {e}", "bind-mount {i} at {e}", "remount export {e} read-only"]),
    (False, False, None, ["unmount export {e}"]),
])
def test_bind_plan_for_a_mounted_export(bind_backend, tmp_path, monkeypatch, serves, read_only, mode, expected):
    helper = BindExport(bind_backend, RecordingRunner())
    inst = str(tmp_path / "a" / "shares" / "s1")
    export = str(tmp_path / "exports" / "s1")
    fake_mounted(monkeypatch, serves, read_only)
    assert helper.plan("s1", inst, mode) == [a.format(e=export, i=inst) for a in expected]
    state = helper.state("s1", inst)
    assert state["exported"] is serves
    assert state["mode"] == ((RO if read_only else RW) if serves else None)


def test_bind_apply_refuses_without_root_and_runs_nothing(bind_backend, tmp_path, monkeypatch):
    runner = RecordingRunner()
    helper = BindExport(bind_backend, runner)
    monkeypatch.setattr(exports.os, "geteuid", lambda: 1000)
    inst = str(tmp_path / "a" / "shares" / "s1")
    with pytest.raises(StorageError) as info:
        helper.apply("s1", inst, RW)
    assert "mounting needs root" in str(info.value) and "export helper none" in str(info.value)
    assert runner.calls == []
    assert not os.path.exists(str(tmp_path / "exports" / "s1"))


def test_bind_apply_with_nothing_to_do_needs_no_root(bind_backend, tmp_path, monkeypatch):
    runner = RecordingRunner()
    helper = BindExport(bind_backend, runner)
    monkeypatch.setattr(exports.os, "geteuid", lambda: 1000)
    assert helper.apply("s1", str(tmp_path / "a" / "shares" / "s1"), None) is False
    assert helper.remove("s1", str(tmp_path / "a" / "shares" / "s1")) is False
    assert runner.calls == []


def test_bind_apply_builds_argv_lists(bind_backend, tmp_path, monkeypatch):
    # Root is faked and the runner only records: nothing is mounted.
    runner = RecordingRunner()
    helper = BindExport(bind_backend, runner)
    monkeypatch.setattr(exports.os, "geteuid", lambda: 0)
    monkeypatch.setattr(exports, "is_mount_point", lambda path: False)
    inst = str(tmp_path / "a" / "shares" / "-s1")
    export = str(tmp_path / "exports" / "-s1")
    assert helper.apply("-s1", inst, RO) is True
    assert runner.calls == [["mount", "--bind", "--", inst, export],
                            ["mount", "-o", "remount,bind,ro", "--", export]]
    assert os.path.isdir(export)
