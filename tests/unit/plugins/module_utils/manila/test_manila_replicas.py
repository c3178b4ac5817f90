"""Unit tests for plugins/module_utils/manila/replicas.py: the reference's refusals and idempotency."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.manila.replicas import ManilaReplicaManager

from fake_manila import ALPHA, BETA, Backend, Ctx, FakeAPI


def manager(api, check_mode=False, **waits):
    """The manager under test; ``waits`` are the run's wait options (wait, timeout, sleep)."""
    return ManilaReplicaManager(Ctx(check_mode, **waits), Backend(), api=api)


def replicated(api, name="r1"):
    share = api.add_share(name, replication_type="readable")
    api.add_replica(share, ALPHA, "active")
    return share


def test_present_creates_once_and_check_mode_creates_nothing():
    api = FakeAPI()
    replicated(api)
    check = manager(api, check_mode=True).present("r1", pool=BETA)
    assert check["changed"] is True and check["replica"]["pool"] == BETA and api.calls == []
    created = manager(api, sleep=0).present("r1", pool=BETA)
    assert created["changed"] is True and created["replica"]["replica_state"] == "in_sync"
    assert manager(api).present("r1", pool=BETA)["changed"] is False
    assert manager(api).present("r1")["changed"] is False  # any secondary satisfies present without a pool
    assert api.calls == [("create_replica", "r1", BETA)]


def test_share_without_replication_type_is_refused():
    api = FakeAPI()
    api.add_share("plain")
    with pytest.raises(InvalidRequest, match="its share type default has no replication_type"):
        manager(api).present("plain", pool=BETA)


def test_promote_in_sync_then_rerun_is_no_change():
    api = FakeAPI()
    share = replicated(api)
    api.add_replica(share, BETA, "in_sync")
    result = manager(api, sleep=0).promoted("r1", pool=BETA, quiesce_wait_time=5)
    assert result["changed"] is True and result["replica"]["replica_state"] == "active"
    assert manager(api).promoted("r1", pool=BETA)["changed"] is False
    assert api.calls == [("promote_replica", "rep-r1-beta", 5)]


def test_promote_out_of_sync_needs_force():
    api = FakeAPI()
    share = replicated(api)
    api.add_replica(share, BETA, "out_of_sync")
    with pytest.raises(InvalidRequest, match="its replica_state is out_of_sync; .* needs administrator intent"):
        manager(api, check_mode=True).promoted("r1", pool=BETA)
    assert manager(api, sleep=0).promoted("r1", pool=BETA, force=True)["changed"] is True


def test_quiesce_wait_time_needs_2_75():
    api = FakeAPI(max_version="2.74")
    share = replicated(api)
    api.add_replica(share, BETA, "in_sync")
    with pytest.raises(InvalidRequest, match="promotion with quiesce_wait_time needs 2.75 or newer"):
        manager(api, check_mode=True).promoted("r1", pool=BETA, quiesce_wait_time=5)
    assert manager(api, sleep=0).promoted("r1", pool=BETA)["changed"] is True


def test_promote_needs_a_target_and_an_existing_one():
    api = FakeAPI()
    replicated(api)
    with pytest.raises(InvalidRequest, match="name it with pool"):
        manager(api).promoted("r1")
    with pytest.raises(NotFound, match="it has no replica in " + BETA):
        manager(api).promoted("r1", pool=BETA)


def test_resync_out_of_sync_then_in_sync_is_no_change():
    api = FakeAPI()
    share = replicated(api)
    api.add_replica(share, BETA, "out_of_sync")
    assert manager(api, check_mode=True).resynced("r1", pool=BETA)["replica"]["replica_state"] == "in_sync"
    assert api.calls == []
    assert manager(api, sleep=0).resynced("r1", pool=BETA)["changed"] is True
    assert manager(api).resynced("r1", pool=BETA)["changed"] is False
    with pytest.raises(InvalidRequest, match="it is the active replica"):
        manager(api).resynced("r1", pool=ALPHA)


def test_resets_of_status_and_replica_state():
    api = FakeAPI()
    share = replicated(api)
    api.add_replica(share, BETA, "in_sync")
    result = manager(api).present("r1", pool=BETA, status="error", replica_state="out_of_sync")
    assert result["changed"] is True
    assert (result["replica"]["status"], result["replica"]["replica_state"]) == ("error", "out_of_sync")
    assert manager(api).present("r1", pool=BETA, status="error", replica_state="out_of_sync")["changed"] is False
    with pytest.raises(InvalidRequest, match="it is the active replica"):
        manager(api).present("r1", pool=ALPHA, replica_state="in_sync")
    with pytest.raises(InvalidRequest, match="there is no such replica"):
        manager(api).present("r1", pool="devhost@gamma#p1", status="available")


def test_absent_refuses_the_last_active_and_forgets_the_gone():
    api = FakeAPI()
    share = replicated(api)
    api.add_replica(share, BETA, "in_sync")
    with pytest.raises(InvalidRequest, match="it is the last active replica"):
        manager(api).absent("r1", pool=ALPHA)
    assert manager(api, check_mode=True).absent("r1", pool=BETA)["changed"] is True
    assert api.calls == []
    assert manager(api, sleep=0).absent("r1", pool=BETA, force=True)["changed"] is True
    assert manager(api).absent("r1", pool=BETA)["changed"] is False
    assert manager(api).absent("gone-share", pool=BETA)["changed"] is False
    assert api.calls == [("delete_replica", "rep-r1-beta", True)]
