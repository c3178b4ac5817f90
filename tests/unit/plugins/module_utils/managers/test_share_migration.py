"""Unit tests for plugins/module_utils/managers/share_migration.py: the reference state machine.

Real pools in tmp_path, the posix driver and the ``none`` export helper (no root needed). Faults
are injected with monkeypatch; waiting uses a fake clock and a fake sleeper (no real sleeping).
The reference's sets are written out here (REFERENCE.md), not imported from the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.crash import CRASH_AFTER_ENV
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, InvalidRequest, NotFound, StorageError, WaitTimeout)
from ansible_collections.storage.mobility.plugins.module_utils.exports import NoneExport
from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import (
    HostAssistedUnavailable, ShareMigrationManager)
from ansible_collections.storage.mobility.plugins.module_utils.states import MIGRATION_FLAGS
from ansible_collections.storage.mobility.plugins.module_utils.store import ShareRepository

from mobility_helpers import Env, RULE, backend_spec, fake_other_filesystem, populate_share, tree_state

ALL_TASK_STATES = [
    "migration_starting", "migration_in_progress", "migration_completing", "migration_success",
    "migration_error", "migration_cancelled", "migration_cancel_in_progress", "migration_driver_starting",
    "migration_driver_in_progress", "migration_driver_phase1_done", "data_copying_starting",
    "data_copying_in_progress", "data_copying_completing", "data_copying_completed",
    "data_copying_cancelled", "data_copying_error",
]
NOT_BUSY = ["migration_success", "migration_error", "migration_cancelled", "data_copying_cancelled",
            "data_copying_error"]
BUSY = [s for s in ALL_TASK_STATES if s not in NOT_BUSY]
COMPLETABLE = ["migration_driver_phase1_done", "data_copying_completed"]
CANCELLABLE = ["migration_driver_in_progress", "migration_driver_phase1_done", "data_copying_in_progress",
               "data_copying_completed"]
NOT_RESETTABLE = ["migration_driver_starting", "migration_cancel_in_progress"]
# Beyond the reference (share_migration.RECOVERY_CANCELLABLE): a run that died while starting
# leaves one of these, and cancel cleans it up.
RECOVERY_CANCELLABLE = ["migration_starting", "migration_driver_starting", "data_copying_starting"]


class Crash(BaseException):
    """The process dies here: no handler of the code under test sees it (like SIGKILL)."""


def start(env, flags=None, destination=None, check_mode=False, host_assisted=True, **kw):
    return env.migrations(check_mode=check_mode, host_assisted=host_assisted).start(
        "s1", env.B if destination is None else destination, flags or {}, **kw)


def phase1_done(env):
    result = start(env)
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    return result


def crash_once(monkeypatch, owner, name, when=None, after=False, error=Crash):
    """Make ``owner.name`` raise ``error`` once (before, or with ``after`` just after, the real call)."""
    real = getattr(owner, name)
    fired = []

    def wrapper(*args, **kwargs):
        if not fired and (when is None or when(*args, **kwargs)):
            fired.append(True)
            if after:
                real(*args, **kwargs)
            raise error("injected failure in %s" % name)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
    return fired


def spy(monkeypatch, owner, name, on_call):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        on_call(*args, **kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)


def history_states(record):
    return [h["task_state"] for h in record["history"]]


def assert_source_restored(env, record, data_before):
    """Phase-1 cleanup / cancel: destination removed, source available with its rules."""
    assert not os.path.lexists(env.share_path(env.B, "s1")), "the destination instance must be removed"
    assert tree_state(env.share_path(env.A, "s1")) == data_before
    assert record["status"] == states.AVAILABLE
    assert [(i["pool"], i["status"], i["role"]) for i in record["instances"]] == [(env.A, states.AVAILABLE, "active")]
    assert [(r["access_to"], r["access_level"], r["state"]) for r in record["access_rules"]] == [
        ("10.0.0.0/24", "rw", "active")]
    assert record["migration"]["source_read_only"] is False
    assert env.record_pools("s1") == [env.A]


# =========================================================================== validation, in order


@pytest.mark.parametrize("flag", MIGRATION_FLAGS)
def test_rule1_force_host_assisted_with_a_flag_is_an_invalid_combination(env, share, flag):
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env, {flag: True}, force_host_assisted=True)
    assert "Invalid combination" in str(info.value)
    assert "%s=true" % flag in str(info.value)
    assert env.state() == before


def test_rule1_force_host_assisted_alone_goes_to_the_host_path(env, share):
    # the control for rule 1: without a flag the same request starts a host-assisted phase 1
    result = start(env, {}, force_host_assisted=True)
    assert result["changed"] is True and result["copy_required"] is True
    assert result["task_state"] == states.DATA_COPYING_STARTING
    assert result["migration"]["mechanism"] == "host"
    assert result["migration"]["driver_refusal"] == "force_host_assisted_migration is set"
    assert result["copy_plan"]["destination"]["export"] == env.share_path(env.B, "s1")
    assert os.path.isdir(env.share_path(env.B, "s1"))


def test_rule1_comes_before_everything_else(env):
    # no such share, malformed flags combination: the combination is reported first
    with pytest.raises(InvalidRequest, match="Invalid combination"):
        env.migrations().start("ghost", env.B, {"writable": True}, force_host_assisted=True)


def test_rule2_a_share_with_replicas_is_refused(env, share):
    env.edit("s1", replicas=[{"id": "r-1"}])
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env)
    assert "it has replicas (r-1); remove them first" in str(info.value)
    assert env.state() == before


@pytest.mark.parametrize("status", ["creating", "error", "deleting", "error_deleting", "migrating", "inactive",
                                    "replication_change"])
def test_rule3_an_instance_that_is_not_available_is_refused(env, share, status):
    env.edit("s1", instances=lambda r: r["instances"][0].update(status=status))
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env)
    assert "its instance is %s, not available" % status in str(info.value)
    assert env.state() == before


@pytest.mark.parametrize("task_state", BUSY)
def test_rule4_a_busy_share_is_refused_naming_the_task(env, share, task_state):
    env.edit("s1", task_state=task_state)
    before = env.state()
    with pytest.raises(Busy) as info:
        start(env)
    assert "busy with task_state %s" % task_state in str(info.value)
    assert env.state() == before


@pytest.mark.parametrize("task_state", NOT_BUSY + [None])
def test_rule4_a_share_in_a_not_busy_state_can_migrate(env, share, task_state):
    env.edit("s1", task_state=task_state)
    result = start(env)
    assert result["changed"] is True
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE


def test_rule5_host_assisted_with_snapshots_is_refused(env, share):
    env.shares().snapshot_present("s1", "snap1")
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env, force_host_assisted=True)
    assert "host-assisted: it has snapshots (snap1)" in str(info.value)
    assert env.state() == before


def test_rule5_an_implicit_fallback_to_host_copy_with_snapshots_is_refused(env, share, monkeypatch):
    env.shares().snapshot_present("s1", "snap1")
    fake_other_filesystem(monkeypatch, env.pool_path(env.B))
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env)
    message = str(info.value)
    assert "different filesystems" in message and "cannot carry its snapshots (snap1)" in message
    monkeypatch.undo()
    assert env.state() == before


@pytest.mark.parametrize("destination, message", [
    ("nohost@be1#b", "Unknown host 'nohost' in destination pool"),
    ("localhost@be9#b", "Unknown backend 'be9' on host localhost in destination pool"),
    ("localhost@be1#zz", "Unknown pool 'zz' of backend localhost@be1 in destination pool"),
])
def test_rule6_an_unknown_destination_pool_is_refused_naming_the_part(env, share, destination, message):
    before = env.state()
    with pytest.raises(NotFound) as info:
        start(env, destination=destination)
    assert message in str(info.value)
    assert env.state() == before


def test_rule7_a_fresh_request_to_the_current_pool_is_refused(env, share):
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env, destination=env.A)
    assert "the destination pool %s is its current pool" % env.A in str(info.value)
    assert env.state() == before


def test_rule7_a_type_change_in_place_is_refused(env, share):
    before = env.state()
    with pytest.raises(InvalidRequest, match="changing only the share type in place is not a migration"):
        start(env, destination=env.A, new_share_type={"name": "gold", "extra_specs": {}})
    assert env.state() == before


def test_rule7_a_rerun_of_a_completed_migration_is_no_change(env, share):
    phase1_done(env)
    env.migrations().complete("s1")
    before = env.state()
    result = start(env)
    assert result["changed"] is False
    assert result["task_state"] == states.MIGRATION_SUCCESS
    assert "already in pool %s" % env.B in result["msg"]
    assert env.state() == before
    # and a rerun with a flag the driver cannot honour is still no change: rule 7 comes first
    assert start(env, {"nondisruptive": True})["changed"] is False
    assert env.state() == before


def test_rule8_migration_starting_then_the_driver_path(env, share, monkeypatch):
    seen = {}

    def on_compat(self, source_pool, destination_pool, share_rec, destination_driver):
        seen["compat"] = (str(source_pool.ref), str(destination_pool.ref), destination_driver.name)
        seen["compat_state"] = env.read_record(env.A, "s1")["task_state"]

    def on_create(self, pool, name):
        rec = env.read_record(env.A, "s1")
        seen["create"] = (str(pool.ref), rec["task_state"], rec["status"], rec["instances"][0]["status"],
                          rec["progress"])

    def on_start(self, source_pool, destination_pool, share_rec):
        rec = env.read_record(env.A, "s1")
        dest = [i for i in rec["instances"] if i["role"] == "destination"]
        seen["start"] = (rec["task_state"], [(i["pool"], i["status"]) for i in dest], rec["progress"])

    def on_continue(self, source_pool, destination_pool, share_rec):
        seen["continue"] = env.read_record(env.A, "s1")["task_state"]

    spy(monkeypatch, PosixShareDriver, "migration_check_compatibility", on_compat)
    spy(monkeypatch, PosixShareDriver, "create_instance", on_create)
    spy(monkeypatch, PosixShareDriver, "migration_start", on_start)
    spy(monkeypatch, PosixShareDriver, "migration_continue", on_continue)
    result = start(env)
    assert seen["compat"] == (env.A, env.B, "posix")
    assert seen["compat_state"] is None, "compatibility is checked before anything is written"
    assert seen["create"] == (env.B, states.MIGRATION_STARTING, states.MIGRATING, states.MIGRATING,
                              {"total_progress": 0})
    assert seen["start"] == (states.MIGRATION_DRIVER_STARTING, [(env.B, states.MIGRATING_TO)], {"total_progress": 0})
    assert seen["continue"] == states.MIGRATION_DRIVER_IN_PROGRESS
    rec = env.read_record(env.A, "s1")
    assert history_states(rec)[-4:] == [states.MIGRATION_STARTING, states.MIGRATION_DRIVER_STARTING,
                                        states.MIGRATION_DRIVER_IN_PROGRESS, states.MIGRATION_DRIVER_PHASE1_DONE]
    assert rec["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert rec["migration"]["mechanism"] == "driver"
    assert rec["migration"]["source_pool"] == env.A and rec["migration"]["destination_pool"] == env.B
    assert rec["migration"]["driver_refusal"] is None
    assert [(i["pool"], i["status"], i["role"]) for i in rec["instances"]] == [
        (env.A, states.MIGRATING, "active"), (env.B, states.MIGRATING_TO, "destination")]
    assert os.path.isdir(env.share_path(env.B, "s1"))
    assert os.path.isfile(os.path.join(env.share_path(env.A, "s1"), "data.txt")), "phase 1 never moves the source"
    assert result["changed"] is True and result["total_progress"] == 100
    assert result["diff"]["before"]["task_state"] is None
    assert result["diff"]["after"]["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE


# ---------------------------------------------------------------- order: the earlier rule wins


def test_order_rule2_before_rule3(env, share):
    env.edit("s1", replicas=[{"id": "r-1"}], instances=lambda r: r["instances"][0].update(status="error"))
    with pytest.raises(InvalidRequest, match="it has replicas"):
        start(env)


def test_order_rule3_before_rule4(env, share):
    env.edit("s1", task_state=states.DATA_COPYING_COMPLETED,
             instances=lambda r: r["instances"][0].update(status="error"))
    with pytest.raises(InvalidRequest) as info:
        start(env)
    assert not isinstance(info.value, Busy)
    assert "its instance is error, not available" in str(info.value)


def test_order_rule4_before_rule5(env, share):
    env.shares().snapshot_present("s1", "snap1")
    env.edit("s1", task_state=states.MIGRATION_DRIVER_IN_PROGRESS)
    with pytest.raises(Busy, match="busy with task_state migration_driver_in_progress"):
        start(env, force_host_assisted=True)


def test_order_rule5_before_rule6(env, share):
    env.shares().snapshot_present("s1", "snap1")
    with pytest.raises(InvalidRequest) as info:
        start(env, destination="localhost@be1#zz", force_host_assisted=True)
    assert not isinstance(info.value, NotFound)
    assert "it has snapshots (snap1)" in str(info.value)


def test_order_rule6_before_the_mechanism(env, share):
    # the driver would refuse nondisruptive=true; the unknown pool is reported first, nothing written
    before = env.state()
    with pytest.raises(NotFound, match="Unknown pool 'zz'"):
        start(env, {"nondisruptive": True}, destination="localhost@be1#zz")
    assert env.state() == before


def test_order_rule7_before_the_mechanism(env, share):
    before = env.state()
    with pytest.raises(InvalidRequest, match="is its current pool"):
        start(env, {"nondisruptive": True}, destination=env.A)
    assert env.state() == before


def test_order_rule1_before_rule2_and_rule4(env, share):
    env.edit("s1", replicas=[{"id": "r-1"}], task_state=states.MIGRATION_DRIVER_IN_PROGRESS)
    with pytest.raises(InvalidRequest, match="Invalid combination"):
        start(env, {"writable": True}, force_host_assisted=True)


# =========================================================================== driver refusal vs no host copy


@pytest.mark.parametrize("flag", MIGRATION_FLAGS)
def test_a_driver_that_refuses_a_requested_flag_ends_in_migration_error(env, share, monkeypatch, flag):
    real = PosixShareDriver.migration_check_compatibility

    def compat(self, *args):
        result = real(self, *args)
        result[flag] = False
        return result
    monkeypatch.setattr(PosixShareDriver, "migration_check_compatibility", compat)
    data = tree_state(share)
    flags = dict((f, f != "nondisruptive") for f in MIGRATION_FLAGS)  # posix with helper none: no nondisruptive
    flags[flag] = True
    if flag != "nondisruptive":
        flags["nondisruptive"] = False
    with pytest.raises(StorageError) as info:
        start(env, flags)
    message = str(info.value)
    assert "the driver cannot honour %s=true" % flag in message
    assert "a host-assisted copy is not allowed because" in message
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_ERROR
    assert rec["migration"]["driver_refusal"] == "the driver cannot honour %s=true" % flag
    assert rec["migration"]["error"] == message
    assert rec["migration"]["requested"][flag] is True
    assert info.value.details["share"]["task_state"] == states.MIGRATION_ERROR
    # nothing else happened: no destination, source untouched and available
    assert not os.path.lexists(env.share_path(env.B, "s1"))
    assert tree_state(share) == data
    assert [(i["pool"], i["status"]) for i in rec["instances"]] == [(env.A, states.AVAILABLE)]
    assert rec["status"] == states.AVAILABLE
    assert states.is_busy(rec["task_state"]) is False


def test_posix_with_helper_none_refuses_nondisruptive(env, share):
    with pytest.raises(StorageError):
        start(env, {"nondisruptive": True, "writable": True})
    rec = env.read_record(env.A, "s1")
    assert rec["migration"]["driver_refusal"] == "the driver cannot honour nondisruptive=true"
    assert rec["task_state"] == states.MIGRATION_ERROR


def test_a_refusal_in_check_mode_writes_nothing(env, share):
    before = env.state()
    with pytest.raises(InvalidRequest, match="cannot honour nondisruptive=true"):
        start(env, {"nondisruptive": True}, check_mode=True)
    assert env.state() == before


def test_different_filesystems_without_flags_host_copy_unavailable_and_nothing_changed(env, share, monkeypatch):
    before = env.state()
    fake_other_filesystem(monkeypatch, env.pool_path(env.B))
    with pytest.raises(HostAssistedUnavailable) as info:
        start(env, host_assisted=False)  # the driver-only mode: no data mover
    assert isinstance(info.value, InvalidRequest)
    message = str(info.value)
    assert "the pools are on different filesystems" in message
    assert "host-assisted copying is not available" in message and "nothing was changed" in message
    monkeypatch.undo()
    assert env.state() == before
    assert env.read_record(env.A, "s1")["task_state"] is None


@pytest.mark.parametrize("flags", [{"preserve_metadata": True}, {"writable": True, "preserve_metadata": True},
                                   {"writable": True, "preserve_snapshots": True}])
def test_different_filesystems_with_a_flag_a_host_copy_cannot_honour_is_a_driver_refusal(env, share, monkeypatch, flags):
    # writable=true alone is a writable host copy there (test_writable_host_copy.py).
    fake_other_filesystem(monkeypatch, env.pool_path(env.B))
    with pytest.raises(StorageError) as info:
        start(env, flags)
    assert not isinstance(info.value, InvalidRequest)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_ERROR
    assert "different filesystems" in rec["migration"]["driver_refusal"]
    assert not os.path.lexists(env.share_path(env.B, "s1"))


def test_different_filesystems_without_flags_falls_back_to_the_host_path_when_available(env, share, monkeypatch):
    fake_other_filesystem(monkeypatch, env.pool_path(env.B))
    result = start(env)
    assert result["changed"] is True and result["copy_required"] is True
    assert result["task_state"] == states.DATA_COPYING_STARTING
    migration = env.read_record(env.A, "s1")["migration"]
    assert migration["mechanism"] == "host"
    assert "different filesystems" in migration["driver_refusal"]
    assert migration["compatibility"]["compatible"] is False
    assert migration["source_read_only"] is True
    assert result["copy_plan"]["source"]["export"] == env.share_path(env.A, "s1")


def test_force_host_assisted_without_a_data_mover_changes_nothing(env, share):
    before = env.state()
    with pytest.raises(HostAssistedUnavailable, match="force_host_assisted_migration is set"):
        start(env, force_host_assisted=True, host_assisted=False)
    assert env.state() == before


def test_other_hosts_are_incompatible_for_posix(tmp_path):
    other = backend_spec(tmp_path / "pools", host="node2", pools=("x",))
    env = Env(tmp_path, [backend_spec(tmp_path / "pools"), other])
    env.create_share("s1")
    before = env.state()
    with pytest.raises(HostAssistedUnavailable, match="different hosts"):
        env.migrations(host_assisted=False).start("s1", "node2@be1#x", {})
    assert env.state() == before


# =========================================================================== idempotency, check mode, diff


def test_second_identical_start_is_no_change(env, share):
    phase1_done(env)
    before = env.state()
    result = start(env)
    assert result["changed"] is False
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert env.state() == before


def test_start_in_check_mode_plans_and_changes_nothing(env, share):
    before = env.state()
    result = start(env, check_mode=True)
    assert result["changed"] is True
    assert result["actions"] and any("create destination instance in pool %s" % env.B in a
                                     for a in result["actions"])
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert result["diff"]["before"]["task_state"] is None
    assert result["diff"]["after"]["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert env.state() == before


def test_check_mode_of_a_running_migration_changes_nothing(env, share):
    phase1_done(env)
    before = env.state()
    assert start(env, check_mode=True)["changed"] is False
    complete = env.migrations(check_mode=True).complete("s1")
    assert complete["changed"] is True and complete["actions"]
    assert complete["task_state"] == states.MIGRATION_SUCCESS
    assert complete["diff"]["before"]["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    cancel = env.migrations(check_mode=True).cancel("s1")
    assert cancel["changed"] is True and cancel["actions"]
    assert cancel["task_state"] == states.MIGRATION_CANCELLED
    reset = env.migrations(check_mode=True).reset("s1", states.MIGRATION_ERROR)
    assert reset["changed"] is True and reset["actions"]
    assert env.state() == before


def test_read_only_phase_is_planned_when_the_source_cannot_stay_writable(env, share, monkeypatch):
    real = PosixShareDriver.migration_check_compatibility

    def compat(self, *args):
        return dict(real(self, *args), writable=False)
    monkeypatch.setattr(PosixShareDriver, "migration_check_compatibility", compat)
    modes = []
    spy(monkeypatch, NoneExport, "apply", lambda self, name, path, mode: modes.append((path, mode)))
    plan = start(env, check_mode=True)
    assert "set the source read-only for the copy" in plan["actions"]
    assert modes == []
    result = start(env)
    assert modes == [(share, "ro")]
    assert result["migration"]["source_read_only"] is True
    assert env.read_record(env.A, "s1")["migration"]["source_read_only"] is True


def test_a_writable_source_is_left_alone(env, share, monkeypatch):
    modes = []
    spy(monkeypatch, NoneExport, "apply", lambda self, name, path, mode: modes.append(mode))
    result = start(env)
    assert "set the source read-only for the copy" not in result["actions"]
    assert modes == []
    assert result["migration"]["source_read_only"] is False


# =========================================================================== complete


def test_driver_assisted_migration_keeps_every_byte_and_attribute(env, monkeypatch):
    env.create_share("s1", rules=[RULE])
    src = env.share_path(env.A, "s1")
    xattr_ok = populate_share(src)
    env.shares().snapshot_present("s1", "snap1")
    data = tree_state(src)
    snap = tree_state(os.path.join(env.snapshots_path(env.A, "s1"), "snap1"))
    # the sample really has what it claims
    assert data[b"dir/hardlink-to-plain"]["hardlinks"] == (b"dir/hardlink-to-plain", b"plain.txt")
    assert data[b"dir/rel-link"]["target"] == b"../plain.txt"
    assert data[b"sparse.img"]["blocks"] * 512 < data[b"sparse.img"]["size"]
    assert {b"new\nline", b"with space", b"caf\xe9-latin1", b"empty/nested-empty"} <= set(data)
    if xattr_ok:
        assert data[b"plain.txt"]["xattrs"] == {"user.mobility.test": b"kept"}

    phase1_done(env)
    result = env.migrations().complete("s1")
    dst = env.share_path(env.B, "s1")
    assert result["changed"] is True and result["task_state"] == states.MIGRATION_SUCCESS
    assert tree_state(dst) == data, "entry by entry: content, mode, mtime_ns, links, hard links, xattrs"
    if xattr_ok:
        assert os.getxattr(os.path.join(dst, "plain.txt"), "user.mobility.test") == b"kept"
    assert not os.path.lexists(src)
    # snapshots moved with the share
    assert tree_state(os.path.join(env.snapshots_path(env.B, "s1"), "snap1")) == snap
    assert not os.path.lexists(env.snapshots_path(env.A, "s1"))
    share_view = result["share"]
    assert share_view["snapshots"][0]["path"] == os.path.join(env.snapshots_path(env.B, "s1"), "snap1")
    assert share_view["export_location"] == dst
    assert share_view["host"] == env.B and share_view["total_progress"] == 100
    assert [(i["pool"], i["status"], i["role"]) for i in share_view["instances"]] == [
        (env.B, states.AVAILABLE, "active")]
    assert env.record_pools("s1") == [env.B]
    assert env.read_record(env.B, "s1")["access_rules"][0]["access_to"] == "10.0.0.0/24"
    assert result["diff"]["before"]["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert result["diff"]["after"]["task_state"] == states.MIGRATION_SUCCESS
    assert result["actions"]
    # the share stays usable in its new pool
    assert env.shares().snapshot_present("s1", "snap2")["changed"] is True
    assert os.path.isdir(os.path.join(env.snapshots_path(env.B, "s1"), "snap2"))


def test_second_complete_is_no_change(env, share):
    phase1_done(env)
    env.migrations().complete("s1")
    before = env.state()
    result = env.migrations().complete("s1")
    assert result["changed"] is False and result["task_state"] == states.MIGRATION_SUCCESS
    assert env.state() == before


def test_complete_names_a_wrong_destination(env, share):
    phase1_done(env)
    before = env.state()
    with pytest.raises(InvalidRequest, match="is migrating to %s, not localhost@be1#a" % env.B):
        env.migrations().complete("s1", env.A)
    with pytest.raises(NotFound, match="Unknown pool 'zz'"):
        env.migrations().complete("s1", "localhost@be1#zz")
    assert env.state() == before
    assert env.migrations().complete("s1", env.B)["changed"] is True


def test_complete_applies_a_new_share_type(env, share):
    start(env, new_share_type={"name": "gold", "extra_specs": {"snapshot_support": "True"}})
    result = env.migrations().complete("s1")
    assert result["share"]["share_type"] == {"name": "gold", "extra_specs": {
        "snapshot_support": "True", "driver_handles_share_servers": "False"}}


def test_a_new_share_type_the_destination_cannot_serve_is_refused(env, share):
    before = env.state()
    with pytest.raises(InvalidRequest, match="requires snapshot_support=False"):
        start(env, new_share_type={"name": "bronze", "extra_specs": {"snapshot_support": "False"}})
    assert env.state() == before


@pytest.mark.parametrize("task_state", ALL_TASK_STATES + [None])
def test_complete_is_allowed_only_after_phase1_and_resumes_a_switchover(env, share, task_state):
    phase1_done(env)
    env.edit("s1", task_state=task_state)
    data = tree_state(share)
    before = env.state()
    mgr = env.migrations()
    if task_state in COMPLETABLE or task_state == "migration_completing":
        result = mgr.complete("s1")
        assert result["changed"] is True and result["task_state"] == states.MIGRATION_SUCCESS
        assert tree_state(env.share_path(env.B, "s1")) == data
        assert env.record_pools("s1") == [env.B]
    elif task_state == "migration_success":
        assert mgr.complete("s1")["changed"] is False
        assert env.state() == before
    else:
        with pytest.raises(InvalidRequest) as info:
            mgr.complete("s1")
        assert "its task_state is %s" % task_state in str(info.value)
        assert env.state() == before


def test_complete_records_the_phase1_state_and_history(env, share):
    phase1_done(env)
    env.migrations().complete("s1")
    rec = env.read_record(env.B, "s1")
    assert rec["migration"]["phase1_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert rec["migration"]["error"] is None and rec["migration"]["completed_at"]
    assert states.MIGRATION_COMPLETING in history_states(rec)
    assert history_states(rec)[-1] == states.MIGRATION_SUCCESS
    assert rec["progress"] == {"total_progress": 100}


# =========================================================================== cancel


@pytest.mark.parametrize("task_state", ALL_TASK_STATES + [None])
def test_cancel_is_allowed_only_in_the_four_states_and_resumes(env, share, task_state):
    phase1_done(env)
    env.edit("s1", task_state=task_state)
    data = tree_state(share)
    before = env.state()
    mgr = env.migrations()
    # migration_completing with nothing switched yet (the phase-1-done record edited here) is
    # cancellable beyond the reference; see the next test for a switched one.
    if task_state in CANCELLABLE + RECOVERY_CANCELLABLE + ["migration_cancel_in_progress", "migration_completing"]:
        result = mgr.cancel("s1")
        assert result["changed"] is True and result["task_state"] == states.MIGRATION_CANCELLED
        rec = env.read_record(env.A, "s1")
        assert rec["task_state"] == states.MIGRATION_CANCELLED
        assert_source_restored(env, rec, data)
        assert result["total_progress"] == 100
    elif task_state in NOT_BUSY or task_state is None:
        result = mgr.cancel("s1")
        assert result["changed"] is False
        assert env.state() == before
    else:
        with pytest.raises(InvalidRequest) as info:
            mgr.cancel("s1")
        assert "its task_state is %s" % task_state in str(info.value)
        assert env.state() == before


def test_cancel_after_the_switch_is_refused(env, share, monkeypatch):
    """Once the switchover moved the data, only completing it is safe."""
    phase1_done(env)

    def crash(*args):
        raise Crash()

    monkeypatch.setattr(ShareMigrationManager, "_switch", crash)
    with pytest.raises(Crash):
        env.migrations().complete("s1")
    monkeypatch.undo()
    assert env.read_record(env.A, "s1")["task_state"] == states.MIGRATION_COMPLETING
    before = env.state()
    with pytest.raises(InvalidRequest, match="already switched"):
        env.migrations().cancel("s1")
    assert env.state() == before
    assert env.migrations().complete("s1")["task_state"] == states.MIGRATION_SUCCESS


def test_cancel_restores_a_read_only_source(env, share, monkeypatch):
    real = PosixShareDriver.migration_check_compatibility
    monkeypatch.setattr(PosixShareDriver, "migration_check_compatibility",
                        lambda self, *a: dict(real(self, *a), writable=False))
    modes = []
    spy(monkeypatch, NoneExport, "apply", lambda self, name, path, mode: modes.append(mode))
    data = tree_state(share)
    phase1_done(env)
    result = env.migrations().cancel("s1")
    assert modes == ["ro", "rw"]
    assert_source_restored(env, env.read_record(env.A, "s1"), data)
    assert result["diff"]["before"]["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert result["diff"]["after"]["task_state"] == states.MIGRATION_CANCELLED
    assert env.migrations().cancel("s1")["changed"] is False
    # and the share can migrate again afterwards
    assert phase1_done(env)["changed"] is True


def test_cancel_moves_data_back_after_a_hand_reset_of_an_interrupted_switchover(env, share, monkeypatch):
    data = tree_state(share)
    phase1_done(env)
    crash_once(monkeypatch, PosixShareDriver, "migration_complete", after=True)
    with pytest.raises(Crash):
        env.migrations().complete("s1")
    monkeypatch.undo()
    assert not os.path.lexists(share)
    env.migrations().reset("s1", states.MIGRATION_DRIVER_PHASE1_DONE)
    env.migrations().cancel("s1")
    assert_source_restored(env, env.read_record(env.A, "s1"), data)


# =========================================================================== reset


@pytest.mark.parametrize("task_state", [s for s in ALL_TASK_STATES if s not in NOT_RESETTABLE] + [None])
def test_reset_accepts_the_reference_values(env, share, task_state):
    env.edit("s1", task_state="migration_error" if task_state != "migration_error" else None)
    result = env.migrations().reset("s1", task_state)
    assert result["changed"] is True
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == task_state
    assert rec["history"][-1]["event"] == "task_state reset by an administrator"
    assert env.migrations().reset("s1", task_state)["changed"] is False


@pytest.mark.parametrize("task_state", NOT_RESETTABLE + ["bogus", "available", ""])
def test_reset_refuses_other_values_and_changes_nothing(env, share, task_state):
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        env.migrations().reset("s1", task_state)
    assert "Invalid task_state %r for a reset" % task_state in str(info.value)
    assert env.state() == before


def test_reset_in_check_mode_changes_nothing(env, share):
    before = env.state()
    result = env.migrations(check_mode=True).reset("s1", states.MIGRATION_ERROR)
    assert result["changed"] is True and result["task_state"] == states.MIGRATION_ERROR and result["actions"]
    assert env.state() == before


# =========================================================================== progress


def test_progress_is_zero_while_starting_and_100_when_phase1_is_done(env, share, monkeypatch):
    seen = []
    spy(monkeypatch, PosixShareDriver, "create_instance",
        lambda self, pool, name: seen.append(env.read_record(env.A, "s1")["progress"]))
    spy(monkeypatch, PosixShareDriver, "migration_start",
        lambda self, *a: seen.append(env.read_record(env.A, "s1")["progress"]))
    result = start(env)
    assert seen == [{"total_progress": 0}, {"total_progress": 0}]
    assert result["total_progress"] == 100
    assert env.read_record(env.A, "s1")["progress"]["total_progress"] == 100


def test_progress_in_between_is_the_drivers(env, share, monkeypatch):
    monkeypatch.setattr(PosixShareDriver, "migration_continue", lambda self, *a: False)
    monkeypatch.setattr(PosixShareDriver, "migration_get_progress", lambda self, *a: {"total_progress": 40})
    result = start(env, wait=False)
    assert result["changed"] is True
    assert result["task_state"] == states.MIGRATION_DRIVER_IN_PROGRESS
    assert result["total_progress"] == 40
    assert env.read_record(env.A, "s1")["progress"] == {"total_progress": 40}


@pytest.mark.parametrize("task_state, expected", [
    ("migration_starting", 0), ("data_copying_starting", 0),  # migration_driver_starting: not resettable
    ("migration_success", 100), ("migration_error", 100), ("migration_cancelled", 100),
    ("data_copying_cancelled", 100), ("data_copying_error", 100), ("migration_driver_phase1_done", 100),
    ("data_copying_completed", 100),
])
def test_progress_after_a_reset_follows_the_fixed_values(env, share, task_state, expected):
    env.edit("s1", task_state=states.DATA_COPYING_IN_PROGRESS, progress={"total_progress": 37})
    result = env.migrations().reset("s1", task_state)
    assert result["total_progress"] == expected
    assert env.read_record(env.A, "s1")["progress"]["total_progress"] == expected


# =========================================================================== waiting and attaching


def test_start_waits_for_phase1_with_the_given_sleep(env, share, monkeypatch):
    # one poll right after the driver start, then one per wait_sleep
    answers = [False, False, False, True]
    monkeypatch.setattr(PosixShareDriver, "migration_continue", lambda self, *a: answers.pop(0))
    result = start(env, timeout=100, sleep=7)
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert env.clock.sleeps == [7, 7]
    assert answers == []


def test_timeout_returns_the_partial_result_and_a_rerun_attaches(env, share, monkeypatch):
    monkeypatch.setattr(PosixShareDriver, "migration_continue", lambda self, *a: False)
    monkeypatch.setattr(PosixShareDriver, "migration_get_progress", lambda self, *a: {"total_progress": 12})
    with pytest.raises(WaitTimeout) as info:
        start(env, timeout=10, sleep=4)
    assert "Timed out after 10 seconds waiting for migration of share s1" in str(info.value)
    partial = info.value.details["result"]
    assert partial["task_state"] == states.MIGRATION_DRIVER_IN_PROGRESS and partial["progress"]["total_progress"] == 12
    assert env.clock.sleeps == [4, 4, 2]
    assert env.read_record(env.A, "s1")["task_state"] == states.MIGRATION_DRIVER_IN_PROGRESS
    # rerun without waiting: attaches, nothing new
    again = start(env, wait=False)
    assert again["changed"] is False and again["task_state"] == states.MIGRATION_DRIVER_IN_PROGRESS
    # the driver is done now: the rerun moves to phase1_done
    monkeypatch.setattr(PosixShareDriver, "migration_continue", lambda self, *a: True)
    done = start(env, wait=False)
    assert done["changed"] is True and done["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    # a start to another pool while busy is refused (the instance is migrating)
    with pytest.raises(InvalidRequest, match="its instance is migrating, not available"):
        start(env, destination=env.A)


# =========================================================================== failures in phase 1


def test_phase1_failure_cleans_up_and_restores_the_source(env, share, monkeypatch):
    real = PosixShareDriver.migration_check_compatibility
    monkeypatch.setattr(PosixShareDriver, "migration_check_compatibility",
                        lambda self, *a: dict(real(self, *a), writable=False))
    modes = []
    spy(monkeypatch, NoneExport, "apply", lambda self, name, path, mode: modes.append((path, mode)))
    crash_once(monkeypatch, PosixShareDriver, "migration_start", error=StorageError)
    data = tree_state(share)
    with pytest.raises(StorageError) as info:
        start(env)
    message = str(info.value)
    assert "injected failure in migration_start" in message
    assert "the destination instance was removed and the share is available again in %s" % env.A in message
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_ERROR
    assert "injected failure in migration_start" in rec["migration"]["error"]
    assert rec["migration"]["ended_at"]
    assert_source_restored(env, rec, data)
    assert modes == [(share, "ro"), (share, "rw")], "read-only for the copy, then the rules restored"
    assert info.value.details["share"]["total_progress"] == 100
    assert history_states(rec)[-1] == states.MIGRATION_ERROR
    # not busy: a new attempt is accepted
    assert phase1_done(env)["changed"] is True


def test_phase1_failure_removes_a_partly_filled_destination_and_asks_the_driver_to_undo(env, share, monkeypatch):
    cancels = []
    spy(monkeypatch, PosixShareDriver, "migration_cancel",
        lambda self, source, dest, rec: cancels.append((str(source.ref), str(dest.ref))))

    def start_then_fail(self, source_pool, destination_pool, share_rec):
        # a driver that had begun copying into the destination when it failed
        with open(os.path.join(self.instance_path(destination_pool, "s1"), "partial"), "w") as handle:
            handle.write("half a file")
        raise StorageError("the copy broke off")
    monkeypatch.setattr(PosixShareDriver, "migration_start", start_then_fail)
    data = tree_state(share)
    with pytest.raises(StorageError, match="the copy broke off"):
        start(env)
    assert cancels == [(env.A, env.B)], "the driver is asked to undo its phase 1"
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_ERROR
    assert_source_restored(env, rec, data)


def test_cancel_removes_a_partly_filled_destination(env, share):
    data = tree_state(share)
    phase1_done(env)
    with open(os.path.join(env.share_path(env.B, "s1"), "partial"), "w") as handle:
        handle.write("copied by the driver in phase 1")
    env.migrations().cancel("s1")
    assert_source_restored(env, env.read_record(env.A, "s1"), data)


def test_phase1_failure_while_polling_cleans_up(env, share, monkeypatch):
    calls = []

    def continue_(self, *args):
        calls.append(1)
        if len(calls) == 3:  # the first poll after a sleep that fails
            raise StorageError("the backend lost the copy")
        return False
    monkeypatch.setattr(PosixShareDriver, "migration_continue", continue_)
    data = tree_state(share)
    with pytest.raises(StorageError, match="the backend lost the copy"):
        start(env)
    assert env.clock.sleeps == [5]
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_ERROR
    assert_source_restored(env, rec, data)


def test_phase1_failure_keeps_foreign_data_at_the_destination(env, share):
    foreign = env.share_path(env.B, "s1")
    os.makedirs(foreign)
    with open(os.path.join(foreign, "theirs"), "w") as handle:
        handle.write("not ours")
    data = tree_state(share)
    with pytest.raises(StorageError, match="not an empty folder"):
        start(env)
    assert open(os.path.join(foreign, "theirs")).read() == "not ours"
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_ERROR
    assert tree_state(share) == data
    assert [(i["pool"], i["status"]) for i in rec["instances"]] == [(env.A, states.AVAILABLE)]


# =========================================================================== failures in phase 2


@pytest.mark.parametrize("phase1_state", COMPLETABLE)
def test_phase2_failure_before_the_point_of_no_return_goes_back(env, share, monkeypatch, phase1_state):
    phase1_done(env)
    env.edit("s1", task_state=phase1_state)
    data = tree_state(share)
    crash_once(monkeypatch, PosixShareDriver, "migration_complete", error=StorageError)
    with pytest.raises(StorageError) as info:
        env.migrations().complete("s1")
    assert "Nothing was switched: the share is back in %s" % phase1_state in str(info.value)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == phase1_state
    assert "Switchover failed before anything was switched" in rec["migration"]["error"]
    assert tree_state(share) == data
    assert env.record_pools("s1") == [env.A]
    assert [(i["pool"], i["status"]) for i in rec["instances"]] == [
        (env.A, states.MIGRATING), (env.B, states.MIGRATING_TO)]
    assert os.path.isdir(env.share_path(env.B, "s1")) and os.listdir(env.share_path(env.B, "s1")) == []
    # fixed: complete again finishes
    result = env.migrations().complete("s1")
    assert result["task_state"] == states.MIGRATION_SUCCESS
    assert tree_state(env.share_path(env.B, "s1")) == data


def test_phase2_failure_after_the_point_of_no_return_stays_completing_and_a_rerun_finishes(env, share, monkeypatch):
    phase1_done(env)
    data = tree_state(share)
    crash_once(monkeypatch, PosixShareDriver, "migration_complete", after=True, error=StorageError)
    with pytest.raises(StorageError) as info:
        env.migrations().complete("s1")
    assert "The data is already on %s; run the completion again" % env.B in str(info.value)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_COMPLETING
    assert not os.path.lexists(share)
    assert tree_state(env.share_path(env.B, "s1")) == data
    # cancel is not possible any more, a new start attaches without damage
    with pytest.raises(InvalidRequest):
        env.migrations().cancel("s1")
    result = env.migrations().complete("s1")
    assert result["changed"] is True and result["task_state"] == states.MIGRATION_SUCCESS
    assert env.record_pools("s1") == [env.B]
    assert tree_state(env.share_path(env.B, "s1")) == data


def test_complete_never_deletes_the_source_when_the_driver_did_not_switch(env, share, monkeypatch):
    """Safe by default: the source is only removed after the destination has been verified."""
    phase1_done(env)
    data = tree_state(share)
    monkeypatch.setattr(PosixShareDriver, "migration_complete", lambda self, *a: None)  # a driver that did nothing
    try:
        env.migrations().complete("s1")
    except StorageError as exc:
        assert "Nothing was switched" in str(exc)
    assert tree_state(share) == data, "the source data was deleted although nothing was moved"
    rec, pool = env.load("s1")
    assert str(pool.ref) == env.A
    assert rec["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert [(i["pool"], i["status"]) for i in rec["instances"]] == [
        (env.A, states.MIGRATING), (env.B, states.MIGRATING_TO)]


# =========================================================================== crashes and convergence


def _is_switch_save(self, record, pool, event=None):
    return event == "destination available, source inactive"


def _is_final_save(self, record, pool, event=None):
    return bool(event) and event.startswith("migration ") and "completed" in event


SWITCHOVER_CRASHES = {
    "after-rename-in-driver": (PosixShareDriver, "migration_complete", None, True),
    "save-of-switched-record": (ShareRepository, "save", _is_switch_save, False),
    "delete-of-source-instance": (PosixShareDriver, "delete_instance", None, False),
    "save-in-destination": (ShareRepository, "save", _is_final_save, False),
    "delete-of-source-record": (ShareRepository, "delete", None, False),
}


@pytest.mark.parametrize("point", sorted(SWITCHOVER_CRASHES))
def test_a_crash_in_the_switchover_converges_on_rerun(env, share, monkeypatch, point):
    phase1_done(env)
    data = tree_state(share)
    owner, name, when, after = SWITCHOVER_CRASHES[point]
    fired = crash_once(monkeypatch, owner, name, when=when, after=after)
    with pytest.raises(Crash):
        env.migrations().complete("s1")
    assert fired == [True]
    monkeypatch.undo()
    # after the crash: the data exists exactly once and the share can be found
    assert not os.path.lexists(share)
    assert tree_state(env.share_path(env.B, "s1")) == data
    record, _pool = env.load("s1")
    assert record["task_state"] in (states.MIGRATION_COMPLETING, states.MIGRATION_SUCCESS)
    # rerun
    result = env.migrations().complete("s1")
    assert result["task_state"] == states.MIGRATION_SUCCESS
    assert env.record_pools("s1") == [env.B], "exactly one record, in the destination"
    rec = env.read_record(env.B, "s1")
    assert rec["task_state"] == states.MIGRATION_SUCCESS
    assert [(i["pool"], i["status"], i["role"]) for i in rec["instances"]] == [(env.B, states.AVAILABLE, "active")]
    assert tree_state(env.share_path(env.B, "s1")) == data
    assert not os.path.lexists(share)
    assert env.migrations().complete("s1")["changed"] is False


def test_a_stale_source_record_is_ignored_before_it_is_cleaned_up(env, share, monkeypatch):
    phase1_done(env)
    crash_once(monkeypatch, ShareRepository, "delete")
    with pytest.raises(Crash):
        env.migrations().complete("s1")
    monkeypatch.undo()
    assert env.record_pools("s1") == [env.A, env.B]
    assert env.read_record(env.B, "s1")["revision"] > env.read_record(env.A, "s1")["revision"]
    info = env.shares().info("s1")
    assert info[0]["host"] == env.B and info[0]["task_state"] == states.MIGRATION_SUCCESS
    assert env.record_pools("s1") == [env.A, env.B], "a query does not clean up"
    # any locked run removes the stale copy
    assert env.shares().present("s1", None, None, None, None, None, None)["changed"] is False
    assert env.record_pools("s1") == [env.B]


def _is_cancelled_save(self, record, pool, event=None):
    return event == "migration cancelled"


def _is_destination(self, pool, name):
    return pool.name == "b"


CANCEL_CRASHES = {
    "driver-cancel": (PosixShareDriver, "migration_cancel", None, False),
    "after-driver-cancel": (PosixShareDriver, "migration_cancel", None, True),
    "delete-of-destination": (PosixShareDriver, "delete_instance", _is_destination, False),
    "save-of-cancelled-record": (ShareRepository, "save", _is_cancelled_save, False),
}


@pytest.mark.parametrize("point", sorted(CANCEL_CRASHES))
def test_a_crash_during_cancel_converges_on_rerun(env, share, monkeypatch, point):
    phase1_done(env)
    data = tree_state(share)
    owner, name, when, after = CANCEL_CRASHES[point]
    fired = crash_once(monkeypatch, owner, name, when=when, after=after)
    with pytest.raises(Crash):
        env.migrations().cancel("s1")
    assert fired == [True]
    monkeypatch.undo()
    assert tree_state(share) == data
    if point == "delete-of-destination":
        # The cancel is recorded (source restored) before the destination is deleted: the
        # deletion is cleanup, noted first, which the rerun finishes.
        rec = env.read_record(env.A, "s1")
        assert rec["task_state"] == states.MIGRATION_CANCELLED
        assert [e["pool"] for e in rec["cleanup_pending"]] == [env.B]
        assert_source_restored(env, rec, data)
        result = env.migrations().cancel("s1")
        assert result["changed"] is True and result["task_state"] == states.MIGRATION_CANCELLED
        rec = env.read_record(env.A, "s1")
        assert rec["cleanup_pending"] == [] and not os.path.exists(env.share_path(env.B, "s1"))
        return
    assert env.read_record(env.A, "s1")["task_state"] == states.MIGRATION_CANCEL_IN_PROGRESS
    with pytest.raises(InvalidRequest):
        env.migrations().complete("s1")  # never completes a half-cancelled migration
    result = env.migrations().cancel("s1")
    assert result["changed"] is True and result["task_state"] == states.MIGRATION_CANCELLED
    rec = env.read_record(env.A, "s1")
    assert_source_restored(env, rec, data)
    assert env.migrations().cancel("s1")["changed"] is False


PHASE1_CRASHES = {
    "create-destination": "create_instance",
    "driver-start": "migration_start",
    "driver-continue": "migration_continue",
}


@pytest.mark.parametrize("point", sorted(PHASE1_CRASHES))
def test_a_crash_in_phase1_is_resumed_or_cleaned_up_by_a_rerun(env, share, monkeypatch, point):
    """A run that dies in phase 1 leaves a record from which the same start resumes (or cleans up);
    the share must not stay stuck in a starting state."""
    data = tree_state(share)
    crash_once(monkeypatch, PosixShareDriver, PHASE1_CRASHES[point])
    with pytest.raises(Crash):
        start(env)
    monkeypatch.undo()
    try:
        start(env, timeout=60, sleep=5)
    except WaitTimeout as exc:
        pytest.fail("the rerun waited for a phase 1 that nobody runs: %s" % exc)
    except StorageError:
        pass  # a phase-1 failure with cleanup is acceptable
    rec, _pool = env.load("s1")
    assert rec["task_state"] in (states.MIGRATION_DRIVER_PHASE1_DONE, states.MIGRATION_ERROR)
    if rec["task_state"] == states.MIGRATION_ERROR:
        assert_source_restored(env, rec, data)
    else:
        assert tree_state(share) == data
        assert env.migrations().complete("s1")["task_state"] == states.MIGRATION_SUCCESS


# =========================================================================== bad input


@pytest.mark.parametrize("destination, hint", [
    ("localhost-be1#b", "no '@' between host and backend"),
    ("localhost@be1", "no '#' before the pool name"),
    ("localhost@be1#", "expected host@backend#pool"),
    ("@be1#b", "expected host@backend#pool"),
    ("localhost@be1#b#c", "expected host@backend#pool"),
    ("localhost@be1#../b", "expected host@backend#pool"),
    ("", "expected host@backend#pool"),
])
def test_malformed_destination_pools_are_refused(env, share, destination, hint):
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        start(env, destination=destination)
    assert "Invalid destination pool %r" % destination in str(info.value)
    assert hint in str(info.value)
    assert env.state() == before


def test_unknown_share_is_named(env, share):
    before = env.state()
    for call in (lambda m: m.start("ghost", env.B, {}), lambda m: m.complete("ghost"),
                 lambda m: m.cancel("ghost"), lambda m: m.reset("ghost", None)):
        with pytest.raises(NotFound, match="Unknown share 'ghost'"):
            call(env.migrations())
    assert env.state() == before


@pytest.mark.parametrize("name, problem", [
    ("a/b", "contains '/'"), ("..", "contains '..'"), ("../s1", "contains '..'"), ("-s1", "starts with '-'"),
    ("s\x001", "contains a NUL byte"), ("s\n1", "contains a newline"),
])
def test_unsafe_share_names_are_refused_by_every_action(env, share, name, problem):
    before = env.state()
    for call in (lambda m: m.start(name, env.B, {}), lambda m: m.complete(name),
                 lambda m: m.cancel(name), lambda m: m.reset(name, None)):
        with pytest.raises(InvalidRequest) as info:
            call(env.migrations())
        assert problem in str(info.value)
    assert env.state() == before


def test_busy_share_is_refused_and_unchanged(env, share):
    start(env)
    env.edit("s1", instances=lambda r: r["instances"][0].update(status="available"),
             task_state=states.DATA_COPYING_IN_PROGRESS)
    before = env.state()
    # another destination than the running migration's: no attach, rule 4 (before rule 7) refuses
    with pytest.raises(Busy, match="busy with task_state data_copying_in_progress"):
        env.migrations().start("s1", env.A, {})
    assert env.state() == before


# =========================================================================== real process deaths

_RUN_ACTION = r"""
import json, sys
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import ShareMigrationManager
manager = ShareMigrationManager(Context(json.loads(sys.argv[1])))
getattr(manager, sys.argv[2])(*json.loads(sys.argv[3]))
"""


def run_and_die_after(env, event_glob, action, *args):
    """Run ``action`` in another Python process that exits (70, no cleanup) right after the
    record with an event matching ``event_glob`` is written (store.CRASH_AFTER_ENV)."""
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    environ[CRASH_AFTER_ENV] = event_glob
    return subprocess.run([sys.executable, "-c", _RUN_ACTION, json.dumps(env.backends), action, json.dumps(args)],
                          env=environ, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("event", ["switchover started", "destination available, source inactive",
                                   "migration * completed: *"])
def test_a_process_killed_in_the_switchover_converges_on_rerun(env, share, event):
    data = tree_state(share)
    phase1_done(env)
    proc = run_and_die_after(env, event, "complete", "s1")
    assert proc.returncode == 70, proc.stderr.decode()
    assert tree_state(env.share_path(env.B, "s1")) == data or tree_state(share) == data
    env.migrations().complete("s1")
    assert env.record_pools("s1") == [env.B]
    rec = env.read_record(env.B, "s1")
    assert rec["task_state"] == states.MIGRATION_SUCCESS
    assert tree_state(env.share_path(env.B, "s1")) == data
    assert not os.path.lexists(share)


@pytest.mark.parametrize("event", ["migration * requested", "destination instance created",
                                   "driver migration started"])
def test_a_process_killed_in_phase1_resumes_on_rerun(env, share, event):
    data = tree_state(share)
    proc = run_and_die_after(env, event, "start", "s1", env.B, {})
    assert proc.returncode == 70, proc.stderr.decode()
    assert states.is_busy(env.read_record(env.A, "s1")["task_state"])
    result = start(env, timeout=30, sleep=5)
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert env.clock.sleeps == []
    assert tree_state(share) == data
    assert env.migrations().complete("s1")["task_state"] == states.MIGRATION_SUCCESS
    assert tree_state(env.share_path(env.B, "s1")) == data


@pytest.mark.parametrize("event", ["cancel requested"])
def test_a_process_killed_during_cancel_converges_on_rerun(env, share, event):
    data = tree_state(share)
    phase1_done(env)
    proc = run_and_die_after(env, event, "cancel", "s1")
    assert proc.returncode == 70, proc.stderr.decode()
    assert env.read_record(env.A, "s1")["task_state"] == states.MIGRATION_CANCEL_IN_PROGRESS
    assert env.migrations().cancel("s1")["task_state"] == states.MIGRATION_CANCELLED
    assert_source_restored(env, env.read_record(env.A, "s1"), data)


def test_rerun_with_other_flags_does_not_join_the_running_migration(env, share):
    """A rerun joins the running phase 1 only when it asks for the same thing."""
    start(env, flags={"writable": True})
    record_before = json.dumps(env.read_record(env.A, "s1"), sort_keys=True)
    with pytest.raises(Busy, match="with other settings is running .*nondisruptive"):
        start(env, flags={"writable": True, "nondisruptive": True})
    assert json.dumps(env.read_record(env.A, "s1"), sort_keys=True) == record_before
    assert start(env, flags={"writable": True})["changed"] is False


def test_check_mode_writes_no_lock_file(env, share):
    """Check mode changes nothing on disk, not even a lock file in a pool that has none."""
    lock = os.path.join(env.pool_path(env.B), ".mobility", "locks", "s1.lock")
    os.unlink(lock)  # left by creating the share; no run holds it now
    result = start(env, check_mode=True)
    assert result["changed"] is True and result["actions"]
    assert not os.path.exists(lock)


def test_copy_reports_and_jobs_refer_to_the_running_migration_whatever_the_flags(env, share):
    """The data node's calls carry no flags; they must reach a migration started with force."""
    result = start(env, force_host_assisted=True)
    assert result["task_state"] == states.DATA_COPYING_STARTING
    job = {"data_node": "localhost", "job_id": result["copy_plan"]["job_id"], "status_file": "/nonexistent"}
    assert start(env, copy_job=job)["task_state"] == states.DATA_COPYING_IN_PROGRESS
    with pytest.raises(Busy, match="with other settings"):
        start(env)
