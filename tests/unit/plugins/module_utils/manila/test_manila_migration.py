"""Unit tests for plugins/module_utils/manila/migration.py: validation order, idempotency, check mode."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.manila.migration import ManilaMigrationManager

from fake_manila import ALPHA, BETA, GAMMA, Backend, Ctx, FakeAPI

FLAGS = {"writable": True, "preserve_metadata": False, "preserve_snapshots": False, "nondisruptive": False}


def manager(api, check_mode=False):
    return ManilaMigrationManager(Ctx(check_mode), Backend(), api=api)


def test_start_waits_for_phase1_and_a_rerun_is_no_change():
    api = FakeAPI()
    api.add_share("s1")
    result = manager(api).start("s1", BETA, FLAGS, sleep=0)
    assert result["changed"] is True
    assert result["task_state"] == "migration_driver_phase1_done"
    assert result["migration"]["destination_pool"] == BETA
    assert result["migration"]["source_pool"] == ALPHA
    assert api.calls == [("migration_start", "s1", {
        "host": BETA, "force_host_assisted_migration": False, "new_share_type_id": None,
        "new_share_network_id": None, "writable": True, "preserve_metadata": False,
        "preserve_snapshots": False, "nondisruptive": False})]
    again = manager(api).start("s1", BETA, FLAGS, sleep=0)
    assert again["changed"] is False and len(api.calls) == 1


def test_check_mode_predicts_and_sends_nothing():
    api = FakeAPI()
    api.add_share("s1")
    result = manager(api, check_mode=True).start("s1", BETA, FLAGS, wait=False)
    assert result["changed"] is True
    assert result["task_state"] == "migration_starting"
    assert result["actions"] == ["start migration of share s1 from %s to %s" % (ALPHA, BETA)]
    assert api.calls == []


def test_conflicting_flags_are_refused_before_any_call():
    api = FakeAPI()
    with pytest.raises(InvalidRequest, match="force_host_assisted_migration cannot be combined with writable"):
        manager(api).start("nosuch", BETA, FLAGS, force_host_assisted_migration=True)


@pytest.mark.parametrize("destination,error,message", [
    ("devhost@alpha#nopool", NotFound, "Unknown pool 'nopool' of backend devhost@alpha"),
    ("devhost@delta#p1", NotFound, "Unknown host@backend 'devhost@delta'"),
    ("devhost-alpha-p1", InvalidRequest, "expected host@backend#pool"),
    (ALPHA, InvalidRequest, "already lives there"),
])
def test_bad_destinations_are_refused(destination, error, message):
    api = FakeAPI()
    api.add_share("s1")
    with pytest.raises(error, match=message):
        manager(api).start("s1", destination, FLAGS)
    assert api.calls == []


def test_busy_replicated_and_unavailable_shares_are_refused():
    api = FakeAPI()
    api.add_share("busy", task_state="migration_driver_in_progress")
    api.instances_by_share["id-busy"] = [{"host": ALPHA, "status": "migrating"}, {"host": GAMMA, "status": "migrating_to"}]
    api.add_share("rep", has_replicas=True)
    api.add_share("err", status="error")
    with pytest.raises(Busy, match="busy with task migration_driver_in_progress of a migration to " + GAMMA):
        manager(api).start("busy", BETA, FLAGS)
    with pytest.raises(InvalidRequest, match="it has replicas"):
        manager(api).start("rep", BETA, FLAGS)
    with pytest.raises(InvalidRequest, match="its status is error"):
        manager(api).start("err", BETA, FLAGS)
    assert api.calls == []


def test_too_old_cloud_is_refused_clearly():
    api = FakeAPI(max_version="2.28")
    api.add_share("s1")
    with pytest.raises(InvalidRequest, match="speaks API microversion 2.28 at most; share migration needs 2.29"):
        manager(api, check_mode=True).start("s1", BETA, FLAGS)


def test_complete_then_rerun_then_start_again_is_no_change():
    api = FakeAPI()
    api.add_share("s1")
    manager(api).start("s1", BETA, FLAGS, sleep=0)
    check = manager(api, check_mode=True).complete("s1")
    assert check["changed"] is True and check["task_state"] == "migration_success"
    assert [c[0] for c in api.calls] == ["migration_start"]
    done = manager(api).complete("s1", BETA, sleep=0)
    assert done["changed"] is True and done["share"]["host"] == BETA
    assert manager(api).complete("s1", BETA)["changed"] is False
    assert manager(api).start("s1", BETA, FLAGS)["changed"] is False
    with pytest.raises(InvalidRequest, match="its last migration ended"):
        manager(api).complete("s1", GAMMA)


def test_complete_refused_outside_phase1_done():
    api = FakeAPI()
    api.add_share("s1")
    with pytest.raises(InvalidRequest, match="its task_state is None; phase 2 starts only from"):
        manager(api).complete("s1")


def test_cancel_and_rerun():
    api = FakeAPI()
    api.add_share("s1")
    manager(api).start("s1", BETA, FLAGS, sleep=0)
    assert manager(api, check_mode=True).cancel("s1")["task_state"] == "migration_cancelled"
    result = manager(api).cancel("s1", sleep=0)
    assert result["changed"] is True and result["share"]["host"] == ALPHA
    assert manager(api).cancel("s1")["changed"] is False
    assert [c[0] for c in api.calls] == ["migration_start", "migration_cancel"]


def test_reset_task_state():
    api = FakeAPI()
    api.add_share("s1", task_state="migration_error")
    assert manager(api, check_mode=True).reset("s1", None)["task_state"] is None
    assert api.calls == []
    assert manager(api).reset("s1", None)["changed"] is True
    assert manager(api).reset("s1", None)["changed"] is False
    assert api.calls == [("reset_task_state", "s1", None)]
