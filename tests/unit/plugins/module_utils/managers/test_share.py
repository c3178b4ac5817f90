"""Unit tests for plugins/module_utils/managers/share.py with the posix driver in tmp_path pools."""

from __future__ import annotations

import os

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import (
    ShareManager, check_extra_specs, normalize_rules, normalize_share_type)

from mobility_helpers import RULE


# --------------------------------------------------------------------------- helpers


def test_normalize_rules_validates_and_sorts():
    rules = normalize_rules([
        {"access_to": "10.0.0.5", "access_level": "ro"},
        {"access_type": "user", "access_to": "alice"},
        {"access_type": "ip", "access_to": "192.168.1.7/24"},
    ])
    assert rules == [
        {"access_type": "ip", "access_to": "10.0.0.5/32", "access_level": "ro"},
        {"access_type": "ip", "access_to": "192.168.1.0/24", "access_level": "rw"},
        {"access_type": "user", "access_to": "alice", "access_level": "rw"},
    ]
    assert normalize_rules(None) == []


@pytest.mark.parametrize("rules, message", [
    (["10.0.0.1"], "Invalid access rule"),
    ([{"access_type": "kerberos", "access_to": "x"}], "Invalid access_type 'kerberos'"),
    ([{"access_to": "10.0.0.1", "access_level": "admin"}], "Invalid access_level 'admin'"),
    ([{"access_to": "not-an-ip"}], "not an IP address or network"),
    ([{"access_type": "user", "access_to": ""}], "Invalid access_to ''"),
    ([{"access_type": "user", "access_to": "a\nb"}], "a non-empty single-line string"),
    ([{"access_to": "10.0.0.1"}, {"access_to": "10.0.0.1/32", "access_level": "ro"}], "is given twice"),
])
def test_normalize_rules_refuses_bad_rules(rules, message):
    with pytest.raises(InvalidRequest) as info:
        normalize_rules(rules)
    assert message in str(info.value)


def test_share_type_and_extra_specs():
    stype = normalize_share_type(None, {"snapshot_support": True})
    assert stype == {"name": "default", "extra_specs": {"snapshot_support": "True",
                                                        "driver_handles_share_servers": "False"}}
    stats = {"snapshot_support": True, "driver_handles_share_servers": False}
    check_extra_specs(stype, stats, "pool")
    check_extra_specs(normalize_share_type("t", {"snapshot_support": "<is> True"}), stats, "pool")
    with pytest.raises(InvalidRequest, match="requires snapshot_support=False"):
        check_extra_specs(normalize_share_type("t", {"snapshot_support": "false"}), stats, "pool")
    with pytest.raises(InvalidRequest, match="expected True or False"):
        check_extra_specs(normalize_share_type("t", {"snapshot_support": "maybe"}), stats, "pool")


# --------------------------------------------------------------------------- create


def test_create_makes_the_folder_and_the_record(env):
    result = env.create_share("s1", description="d", metadata={"k": "v"})
    assert result["changed"] is True
    share = result["share"]
    path = env.share_path(env.A, "s1")
    assert os.path.isdir(path)
    assert share["status"] == states.AVAILABLE and share["host"] == env.A
    assert share["export_location"] == path
    assert share["instances"][0]["status"] == states.AVAILABLE and share["instances"][0]["pool"] == env.A
    assert share["access_rules"][0]["access_to"] == "10.0.0.0/24"
    assert share["busy"] is False and share["task_state"] is None
    assert "history" not in share
    rec = env.read_record(env.A, "s1")
    assert rec["id"] == share["id"] and rec["status"] == states.AVAILABLE
    assert [h["event"] for h in rec["history"]] == ["create requested", "created"]
    assert result["diff"]["before"] == {} and result["diff"]["after"]["name"] == "s1"
    assert result["actions"][0].startswith("create share s1 (1 GiB) in pool %s" % env.A)


def test_second_identical_create_is_no_change(env):
    env.create_share("s1")
    before = env.state()
    result = env.create_share("s1")
    assert result["changed"] is False and result["actions"] == []
    assert env.state() == before


def test_create_in_check_mode_changes_nothing_and_plans(env):
    result = env.shares(check_mode=True).present("s1", env.A, 2, "nfs", None, None, [RULE])
    assert result["changed"] is True
    assert result["actions"] and "create share s1 (2 GiB)" in result["actions"][0]
    assert result["share"]["status"] == states.AVAILABLE and result["share"]["share_proto"] == "NFS"
    assert not os.path.exists(env.share_path(env.A, "s1"))
    assert env.record_pools("s1") == []
    assert env.ctx().load("s1", required=False) == (None, None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pool_address=None), "pool (host@backend#pool) is required"),
    (dict(size=None), "size (GiB) is required"),
    (dict(size=0), "Invalid size 0"),
    (dict(size="1"), "Invalid size '1'"),
    (dict(protocol="smb3"), "Invalid protocol 'smb3'"),
    (dict(pool_address="localhost@be1"), "expected host@backend#pool"),
    (dict(pool_address="localhost@be9#a"), "Unknown backend 'be9'"),
    (dict(pool_address="nohost@be1#a"), "Unknown host 'nohost'"),
    (dict(pool_address="localhost@be1#zz"), "Unknown pool 'zz'"),
    (dict(extra_specs={"snapshot_support": False}), "requires snapshot_support=False"),
    (dict(access_rules=[{"access_to": "nope"}]), "not an IP address"),
])
def test_create_refuses_bad_input_and_changes_nothing(env, kwargs, message):
    args = dict(name="s1", pool_address=env.A, size=1, protocol="NFS", share_type=None, extra_specs=None,
                access_rules=[RULE])
    args.update(kwargs)
    env.create_share("s0")  # the pools' metadata folders exist from here on
    before = env.state()
    with pytest.raises((InvalidRequest, NotFound)) as info:
        env.shares().present(**args)
    assert message in str(info.value)
    assert env.record_pools("s1") == []
    assert not os.path.exists(env.share_path(env.A, "s1"))
    assert env.state() == before


@pytest.mark.parametrize("name", ["a/b", "..", "../etc", "-rf", "a\x00b", "a\nb", ".hidden", ""])
def test_create_refuses_unsafe_share_names(env, name):
    before = env.state()
    with pytest.raises(InvalidRequest) as info:
        env.create_share(name)
    assert "Invalid share name" in str(info.value)
    assert env.state() == before
    assert not os.path.exists(os.path.join(env.pool_path(env.A), "shares"))


def test_create_finishes_a_create_interrupted_by_a_crash(env):
    ctx = env.ctx()
    # simulate a crash after the record (status creating) was written, before the folder
    result = env.shares(check_mode=True).present("s1", env.A, 1, "NFS", None, None, [RULE])
    record = dict(result["share"], status=states.CREATING)
    for key in ("export_location", "export_locations", "total_progress", "busy"):
        record.pop(key)
    record["instances"][0]["status"] = states.CREATING
    ctx.repo.save(record, ctx.pool(env.A), "create requested")
    result = env.create_share("s1")
    assert result["changed"] is True and "finish creating share s1" in result["actions"]
    assert os.path.isdir(env.share_path(env.A, "s1"))
    assert env.read_record(env.A, "s1")["status"] == states.AVAILABLE


# --------------------------------------------------------------------------- update


def test_update_rules_size_description_and_diff(env):
    env.create_share("s1")
    new_rules = [{"access_to": "192.168.0.1", "access_level": "ro"}]
    result = env.shares().present("s1", None, 3, None, None, None, new_rules, description="new")
    assert result["changed"] is True
    assert "allow ip 192.168.0.1/32 ro" in result["actions"]
    assert "deny ip 10.0.0.0/24 rw" in result["actions"]
    assert "record size 3 GiB (was 1 GiB)" in result["actions"]
    assert result["diff"]["before"]["size"] == 1 and result["diff"]["after"]["size"] == 3
    rec = env.read_record(env.A, "s1")
    assert [r["access_to"] for r in rec["access_rules"]] == ["192.168.0.1/32"]
    assert rec["size"] == 3 and rec["description"] == "new"
    again = env.shares().present("s1", None, 3, None, None, None, new_rules, description="new")
    assert again["changed"] is False


def test_update_in_check_mode_changes_nothing(env):
    env.create_share("s1")
    before = env.state()
    result = env.shares(check_mode=True).present("s1", None, 9, None, None, None, [])
    assert result["changed"] is True and result["actions"]
    assert result["share"]["size"] == 9 and result["share"]["access_rules"] == []
    assert env.state() == before


def test_update_refuses_protocol_and_type_changes(env):
    env.create_share("s1")
    before = env.state()
    with pytest.raises(InvalidRequest, match="protocol of an existing share cannot change"):
        env.shares().present("s1", None, None, "CIFS", None, None, None)
    with pytest.raises(InvalidRequest, match="new_share_type"):
        env.shares().present("s1", None, None, None, "gold", None, None)
    assert env.state() == before


def test_update_warns_when_the_share_is_in_another_pool(env):
    env.create_share("s1")
    result = env.shares().present("s1", env.B, 1, None, None, None, None)
    assert result["changed"] is False
    assert "lives in pool %s, not %s" % (env.A, env.B) in result["warnings"][0]
    assert not os.path.exists(env.share_path(env.B, "s1"))


@pytest.mark.parametrize("task_state", sorted(states.BUSY_TASK_STATES))
def test_a_busy_share_refuses_changes_but_accepts_a_no_op(env, task_state):
    env.create_share("s1")
    env.edit("s1", task_state=task_state)
    before = env.state()
    with pytest.raises(Busy) as info:
        env.shares().present("s1", None, 7, None, None, None, None)
    assert task_state in str(info.value)
    assert env.shares().present("s1", None, 1, None, None, None, None)["changed"] is False
    with pytest.raises(Busy):
        env.shares().absent("s1")
    with pytest.raises(Busy):
        env.shares().snapshot_present("s1", "snap1")
    assert env.state() == before


# --------------------------------------------------------------------------- delete


def test_absent_deletes_data_and_record_and_is_idempotent(env):
    env.create_share("s1")
    with open(os.path.join(env.share_path(env.A, "s1"), "f"), "w") as handle:
        handle.write("x")
    check = env.shares(check_mode=True).absent("s1")
    assert check["changed"] is True and check["actions"][-1].startswith("delete share s1")
    assert os.path.isdir(env.share_path(env.A, "s1"))
    result = env.shares().absent("s1")
    assert result["changed"] is True and result["diff"]["after"] == {}
    assert not os.path.exists(env.share_path(env.A, "s1"))
    assert env.record_pools("s1") == []
    assert env.shares().absent("s1")["changed"] is False


def test_absent_refuses_a_share_with_snapshots_or_replicas(env):
    env.create_share("s1")
    env.shares().snapshot_present("s1", "snap1")
    with pytest.raises(InvalidRequest, match=r"it has snapshots \(snap1\)"):
        env.shares().absent("s1")
    env.shares().snapshot_absent("s1", "snap1")
    env.edit("s1", replicas=[{"id": "r1"}])
    with pytest.raises(InvalidRequest, match="it has replicas"):
        env.shares().absent("s1")
    assert os.path.isdir(env.share_path(env.A, "s1"))


# --------------------------------------------------------------------------- snapshots


def test_snapshot_present_and_absent(env):
    env.create_share("s1")
    with open(os.path.join(env.share_path(env.A, "s1"), "f"), "w") as handle:
        handle.write("x" * 1000)
    check = env.shares(check_mode=True).snapshot_present("s1", "snap1")
    assert check["changed"] is True and check["actions"]
    assert not os.path.exists(env.snapshots_path(env.A, "s1"))
    result = env.shares().snapshot_present("s1", "snap1", description="first")
    snap = result["snapshot"]
    assert result["changed"] is True and snap["status"] == states.AVAILABLE and snap["used_bytes"] == 1000
    assert os.path.isfile(os.path.join(snap["path"], "f"))
    assert env.shares().snapshot_present("s1", "snap1")["changed"] is False
    assert [s["name"] for s in env.read_record(env.A, "s1")["snapshots"]] == ["snap1"]
    assert env.shares(check_mode=True).snapshot_absent("s1", "snap1")["changed"] is True
    assert os.path.isdir(snap["path"])
    assert env.shares().snapshot_absent("s1", "snap1")["changed"] is True
    assert not os.path.exists(snap["path"])
    assert env.read_record(env.A, "s1")["snapshots"] == []
    assert env.shares().snapshot_absent("s1", "snap1")["changed"] is False
    assert env.shares().snapshot_absent("nothing", "snap1")["changed"] is False


@pytest.mark.parametrize("name", ["../x", "a/b", "-x", "a\nb"])
def test_snapshot_names_are_validated(env, name):
    env.create_share("s1")
    with pytest.raises(InvalidRequest, match="Invalid snapshot name"):
        env.shares().snapshot_present("s1", name)
    assert not os.path.exists(env.snapshots_path(env.A, "s1"))


def test_snapshot_of_an_unknown_share(env):
    with pytest.raises(NotFound, match="Unknown share 'ghost'"):
        env.shares().snapshot_present("ghost", "snap1")


# --------------------------------------------------------------------------- queries


def test_info_and_pools(env):
    env.create_share("s1")
    env.create_share("s2", pool=env.B, size=4)
    infos = ShareManager(env.ctx()).info()
    assert [i["name"] for i in infos] == ["s1", "s2"]
    assert [i["name"] for i in ShareManager(env.ctx()).info(pool_address=env.B)] == ["s2"]
    assert ShareManager(env.ctx()).info(name="ghost") == []
    with pytest.raises(InvalidRequest):
        ShareManager(env.ctx()).info(name="../x")
    pools = dict((p["name"], p) for p in ShareManager(env.ctx()).pools())
    assert pools[env.A]["shares"] == ["s1"] and pools[env.B]["shares"] == ["s2"]
    assert pools[env.B]["capabilities"]["allocated_capacity_gb"] == 4
    with pytest.raises(NotFound, match="Unknown pool 'zz'"):
        ShareManager(env.ctx()).pools("localhost@be1#zz")


def test_view_reports_progress_and_busy(env):
    env.create_share("s1")
    env.edit("s1", task_state=states.MIGRATION_DRIVER_IN_PROGRESS, progress={"total_progress": 42})
    view = ShareManager(env.ctx()).info("s1")[0]
    assert view["total_progress"] == 42 and view["busy"] is True
    env.edit("s1", task_state=states.MIGRATION_DRIVER_STARTING)
    assert ShareManager(env.ctx()).info("s1")[0]["total_progress"] == 0
    env.edit("s1", task_state=states.MIGRATION_ERROR)
    view = ShareManager(env.ctx()).info("s1")[0]
    assert view["total_progress"] == 100 and view["busy"] is False
