"""Unit tests for plugins/module_utils/cinder/volumes.py: the manager's decisions against a scripted Cinder.

The fake Cinder below keeps volumes in a dict and plays a migration (or a retype) as a list of
states, one per poll, the way the real service moves ``migration_status``. The real service is
exercised by tests/integration/openstack/test_cinder.py.
"""

from __future__ import annotations

import copy

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.cinder.volumes import (
    CinderVolumeManager, Recorder, same_destination)
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    InvalidRequest, NotFound, StorageError, WaitTimeout)
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits

POOL1 = "devhost@file1#file1"
POOL2 = "devhost@file2#file2"
VOLUME_ID = "0b7e4d36-9a57-4f3c-8f1e-3c8d2b1a0f11"
COPY_ID = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


class Ctx:
    def __init__(self, check_mode=False, **waits):
        self.check_mode = check_mode
        self.waits = Waits(**waits)
        self.backends = Backends([{"name": "cloud", "driver": "cinder", "cloud": "lab"}])


class Clock:
    """A fake monotonic clock that the fake sleeper advances."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeCinder:
    """The CinderAPI methods the manager calls, over volumes in a dict; every call is recorded."""

    def __init__(self, max_version=(3, 71)):
        self.volumes_by_id = {}
        self.max = max_version
        self.calls = []
        self.script = []  # states (dict updates) the volume goes through, one per read after an action
        self.types = [{"id": "t1", "name": "on-file1", "extra_specs": {"volume_backend_name": "file1"}},
                      {"id": "t2", "name": "on-file2", "extra_specs": {"volume_backend_name": "file2"}},
                      {"id": "t3", "name": "plain", "extra_specs": {}}]
        self.capabilities = {POOL1: {"volume_backend_name": "file1"}, POOL2: {"volume_backend_name": "file2"}}

    def add(self, **fields):
        volume = {"id": VOLUME_ID, "name": "vol", "status": "available", "size": 1, "volume_type": "on-file1",
                  "os-vol-host-attr:host": POOL1, "migration_status": None, "os-vol-mig-status-attr:name_id": None,
                  "availability_zone": "nova", "description": None}
        volume.update(fields)
        self.volumes_by_id[volume["id"]] = volume
        return copy.deepcopy(volume)

    def acted(self):
        return [c for c in self.calls if c[0] in ("create", "update", "delete", "extend", "migrate", "retype")]

    # reads
    def volume(self, volume_id):
        self.calls.append(("get", volume_id))
        if self.script and volume_id in self.volumes_by_id:
            change = self.script.pop(0)
            if change is None:
                del self.volumes_by_id[volume_id]
            else:
                self.volumes_by_id[volume_id].update(change)
        found = self.volumes_by_id.get(volume_id)
        return copy.deepcopy(found) if found else None

    def volumes(self, name=None):
        return [copy.deepcopy(v) for v in self.volumes_by_id.values() if name is None or v["name"] == name]

    def find_volume(self, ref):
        found = [v for v in self.volumes_by_id.values() if ref in (v["name"], v["id"])]
        return copy.deepcopy(found[0]) if found else None

    def require_volume(self, ref):
        volume = self.find_volume(ref)
        if volume is None:
            raise NotFound("Unknown volume %r" % ref)
        return volume

    def volume_type(self, ref):
        for item in self.types:
            if ref in (item["name"], item["id"]):
                return item
        raise NotFound("Unknown volume type %r" % ref)

    def availability_zones(self):
        return ["nova"]

    def pools(self):
        return sorted(self.capabilities)

    def pool_capabilities(self):
        return self.capabilities

    def clusters(self):
        return ["cluster1@file1"]

    def messages(self, volume):
        return [{"resource_uuid": volume["id"], "user_message": "copy volume failed: no space left"}]

    def require(self, feature, minimum):
        wanted = tuple(int(x) for x in minimum.split("."))
        if self.max < wanted:
            raise InvalidRequest("Cinder speaks API microversion %d.%d at most; %s needs %s or newer"
                                 % (self.max + (feature, minimum)))
        return minimum

    # actions
    def create_volume(self, body):
        self.calls.append(("create", body))
        return self.add(id=VOLUME_ID, status="creating", **dict((k, v) for k, v in body.items() if k != "volume_type"))

    def update_volume(self, volume, fields):
        self.calls.append(("update", fields))
        self.volumes_by_id[volume["id"]].update(fields)
        return copy.deepcopy(self.volumes_by_id[volume["id"]])

    def delete_volume(self, volume):
        self.calls.append(("delete", volume["id"]))
        self.volumes_by_id[volume["id"]]["status"] = "deleting"

    def extend(self, volume, new_size):
        self.calls.append(("extend", new_size))
        self.volumes_by_id[volume["id"]]["status"] = "extending"

    def migrate(self, volume, doing, host=None, cluster=None, force_host_copy=False, lock_volume=False):
        self.calls.append(("migrate", dict(host=host, cluster=cluster, force_host_copy=force_host_copy,
                                           lock_volume=lock_volume)))
        self.volumes_by_id[volume["id"]].update(migration_status="starting",
                                                status="maintenance" if lock_volume else volume["status"])

    def retype(self, volume, new_type, migration_policy, doing):
        self.calls.append(("retype", new_type, migration_policy))
        self.volumes_by_id[volume["id"]]["status"] = "retyping"


@pytest.fixture
def cinder():
    return FakeCinder()


def manager(cinder, check_mode=False, **waits):
    """The manager under test; ``waits`` are the run's wait options (wait, timeout, sleep)."""
    clock = Clock()
    ctx = Ctx(check_mode, **waits)
    return CinderVolumeManager(ctx, ctx.backends.backends[0], api=cinder, clock=clock, sleeper=clock.sleep)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("current, destination, expected", [
    (POOL1, POOL1, True),
    (POOL1, "devhost@file1", True),
    (POOL1, POOL2, False),
    (POOL1, "devhost@file2", False),
    (POOL1, "devhost@file1#other", False),
    (None, POOL1, False),
])
def test_same_destination(current, destination, expected):
    assert same_destination(current, destination) is expected


def test_recorder_keeps_each_change_once_with_its_time():
    clock = Clock()
    recorder = Recorder(clock)
    for seconds, migration_status in ((0, "starting"), (1, "starting"), (2, "migrating"), (5, "success")):
        clock.now = seconds
        recorder({"status": "available", "migration_status": migration_status})
    assert [(h["migration_status"], h["seconds"]) for h in recorder.history] == [
        ("starting", 0.0), ("migrating", 2.0), ("success", 5.0)]


@pytest.mark.parametrize("kwargs, message", [
    ({"host": POOL2, "cluster": "c1"}, "give host or cluster, not both"),
    ({"host": POOL2, "new_type": "plain"}, "new_type (a retype) and host (a migration) are two requests"),
    ({"cluster": "c", "new_type": "plain"}, "new_type (a retype) and cluster (a migration)"),
    ({"new_type": "plain", "force_host_copy": True, "lock_volume": True},
     "force_host_copy and lock_volume belong to a migration"),
    ({"host": POOL2, "migration_policy": "on-demand"}, "migration_policy applies to a retype"),
    ({"new_type": "plain", "migration_policy": "sometimes"}, "Invalid migration_policy 'sometimes'"),
    ({}, "give a destination (host or cluster) or a new_type"),
])
def test_conflicting_options_are_refused(kwargs, message):
    with pytest.raises(InvalidRequest) as info:
        CinderVolumeManager.check_request("vol", **kwargs)
    assert message in str(info.value)


# --------------------------------------------------------------------------- volume: present / absent


def test_create_waits_until_available(cinder):
    cinder.script = [{"status": "creating"}, {"status": "available", "os-vol-host-attr:host": POOL1}]
    result = manager(cinder, sleep=1).present("vol", size=2, volume_type="on-file2", description="d")
    assert result["changed"] and result["volume"]["status"] == "available" and result["volume"]["host"] == POOL1
    assert cinder.acted() == [("create", {"name": "vol", "size": 2, "volume_type": "on-file2", "description": "d"})]


def test_create_that_cinder_fails_says_why(cinder):
    cinder.script = [{"status": "creating"}, {"status": "error"}]
    with pytest.raises(StorageError) as info:
        manager(cinder, sleep=1).present("vol", size=2)
    assert "Failed to create volume vol: Cinder set its status to error. Cinder says: copy volume failed" in str(info.value)
    assert info.value.details["volume"]["status"] == "error"


def test_create_in_check_mode_predicts_and_sends_nothing(cinder):
    result = manager(cinder, check_mode=True).present("vol", size=2)
    assert result["changed"] and result["volume"]["name"] == "vol" and result["actions"] == ["create volume vol (2 GiB)"]
    assert cinder.acted() == []


@pytest.mark.parametrize("kwargs, error, message", [
    ({}, InvalidRequest, "size (GiB) is required"),
    ({"size": 1, "volume_type": "gold"}, NotFound, "Unknown volume type 'gold'"),
    ({"size": 1, "availability_zone": "moon"}, NotFound, "unknown availability zone 'moon'"),
])
def test_create_refuses_bad_input(cinder, kwargs, error, message):
    with pytest.raises(error) as info:
        manager(cinder).present("vol", **kwargs)
    assert message in str(info.value)
    assert cinder.acted() == []


def test_existing_volume_is_no_change_then_extended(cinder):
    cinder.add(size=1)
    assert not manager(cinder).present("vol", size=1)["changed"]
    cinder.script = [{"status": "extending"}, {"status": "available", "size": 3}]
    result = manager(cinder, sleep=1).present("vol", size=3)
    assert result["changed"] and result["volume"]["size"] == 3 and ("extend", 3) in cinder.acted()


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 1}, "Cannot shrink volume vol from 2 to 1 GiB"),
    ({"volume_type": "on-file2"}, "retype it with storage.mobility.volume_migrate"),
    ({"availability_zone": "other"}, "does not move a volume between availability zones"),
])
def test_existing_volume_refuses_what_cinder_cannot_change(cinder, kwargs, message):
    cinder.add(size=2)
    with pytest.raises(InvalidRequest) as info:
        manager(cinder).present("vol", **kwargs)
    assert message in str(info.value)
    assert cinder.acted() == []


def test_absent_deletes_waits_and_is_idempotent(cinder):
    cinder.add()
    cinder.script = [{"status": "deleting"}, None]
    result = manager(cinder, sleep=1).absent("vol")
    assert result["changed"] and cinder.acted() == [("delete", VOLUME_ID)]
    assert not manager(cinder).absent("vol")["changed"]


# --------------------------------------------------------------------------- migrate


def test_migration_is_followed_through_its_statuses(cinder):
    cinder.add()
    cinder.script = [{"migration_status": "starting"}, {"migration_status": "migrating"},
                     {"migration_status": "completing"},
                     {"migration_status": "success", "os-vol-host-attr:host": POOL2,
                      "os-vol-mig-status-attr:name_id": COPY_ID}]
    result = manager(cinder, sleep=1).migrate("vol", host=POOL2, force_host_copy=True)
    assert result["changed"] and result["volume"]["host"] == POOL2
    assert [h["migration_status"] for h in result["migration"]["history"]] == [
        "starting", "migrating", "completing", "success"]
    assert result["migration"]["mechanism"] == "host_copy" and result["migration"]["source"] == POOL1
    assert cinder.acted() == [("migrate", {"host": POOL2, "cluster": None, "force_host_copy": True,
                                           "lock_volume": False})]


def test_the_moment_cinder_swaps_the_records_of_a_host_copy_is_waited_through(cinder):
    cinder.add()
    cinder.script = [{"migration_status": "migrating"}, {"migration_status": "completing"},
                     {"migration_status": None, "os-vol-host-attr:host": POOL2},
                     {"migration_status": "success", "os-vol-mig-status-attr:name_id": COPY_ID}]
    result = manager(cinder, sleep=1).migrate("vol", host=POOL2, force_host_copy=True)
    assert result["changed"] and result["volume"]["migration_status"] == "success"


def test_a_migration_status_reset_by_hand_ends_the_wait(cinder):
    cinder.add()
    cinder.script = [{"migration_status": "migrating"}] + [{"migration_status": None}] * 60
    with pytest.raises(StorageError) as info:
        manager(cinder, sleep=1).migrate("vol", host=POOL2)
    assert "migration_status of the volume was cleared while it migrated" in str(info.value)


def test_driver_assisted_move_keeps_the_name_id(cinder):
    cinder.add()
    cinder.script = [{"migration_status": "success", "os-vol-host-attr:host": POOL2}]
    result = manager(cinder, sleep=1).migrate("vol", host="devhost@file2")
    assert result["migration"]["mechanism"] == "driver"


@pytest.mark.parametrize("destination", [POOL1, "devhost@file1"])
def test_volume_on_the_destination_is_no_change(cinder, destination):
    cinder.add(migration_status="success")
    for check_mode in (False, True):
        result = manager(cinder, check_mode).migrate("vol", host=destination)
        assert not result["changed"] and result["actions"] == []
    assert cinder.acted() == []


def test_check_mode_predicts_and_never_waits(cinder):
    cinder.add()
    result = manager(cinder, check_mode=True).migrate("vol", host=POOL2, lock_volume=True)
    assert result["changed"] and result["volume"]["host"] == POOL2
    assert result["actions"] == ["migrate volume vol to host %s, locked" % POOL2]
    assert cinder.acted() == [] and not [c for c in cinder.calls if c[0] == "get"]


def test_without_wait_returns_once_started(cinder):
    cinder.add()
    result = manager(cinder, wait=False).migrate("vol", host=POOL2, lock_volume=True)
    assert result["changed"] and result["volume"]["migration_status"] == "starting"
    assert result["volume"]["status"] == "maintenance"


def test_rerun_follows_a_running_migration_instead_of_starting_one(cinder):
    cinder.add(migration_status="migrating", status="maintenance")
    cinder.script = [{"migration_status": "completing"},
                     {"migration_status": "success", "status": "available", "os-vol-host-attr:host": POOL2}]
    result = manager(cinder, sleep=1).migrate("vol", host=POOL2)
    assert not result["changed"] and result["volume"]["host"] == POOL2
    assert cinder.acted() == []


def test_rerun_without_wait_reports_the_running_migration(cinder):
    cinder.add(migration_status="migrating")
    result = manager(cinder, wait=False).migrate("vol", host=POOL2)
    assert not result["changed"] and "already migrating" in result["warnings"][0]
    assert cinder.acted() == []


def test_failed_migration_reports_cinders_reason(cinder):
    cinder.add()
    cinder.script = [{"migration_status": "migrating"}, {"migration_status": "error"}]
    with pytest.raises(StorageError) as info:
        manager(cinder, sleep=1).migrate("vol", host=POOL2)
    message = str(info.value)
    assert "Failed to migrate volume vol to host %s: Cinder set migration_status to error" % POOL2 in message
    assert "no space left" in message
    assert info.value.details["volume"]["migration_status"] == "error"
    assert [h["migration_status"] for h in info.value.details["history"]] == ["migrating", "error"]


def test_timeout_carries_the_volume_and_history(cinder):
    cinder.add()
    cinder.script = [{"migration_status": "migrating"}] * 20
    with pytest.raises(WaitTimeout) as info:
        manager(cinder, timeout=5, sleep=1).migrate("vol", host=POOL2)
    assert info.value.details["volume"]["migration_status"] == "migrating"
    assert info.value.details["history"]


@pytest.mark.parametrize("host, message", [
    ("devhost@file9#file9", "reports no such pool"),
    ("devhost@file9", "reports no such backend"),
    ("devhost@file1#nope", "reports no such pool"),
    ("nohost", "the host must read host@backend#pool or host@backend"),
])
def test_unknown_destination_is_refused_before_anything_is_sent(cinder, host, message):
    cinder.add()
    with pytest.raises((InvalidRequest, NotFound)) as info:
        manager(cinder).migrate("vol", host=host)
    assert message in str(info.value) and "Failed to migrate volume vol to host %s" % host in str(info.value)
    assert cinder.acted() == []


def test_volume_in_a_wrong_status_is_refused(cinder):
    cinder.add(status="error")
    with pytest.raises(InvalidRequest) as info:
        manager(cinder).migrate("vol", host=POOL2)
    assert "its status is error" in str(info.value)


def test_cluster_needs_microversion_3_16():
    old = FakeCinder(max_version=(3, 10))
    old.add()
    with pytest.raises(InvalidRequest) as info:
        manager(old).migrate("vol", cluster="cluster1@file1")
    assert "Failed to migrate volume vol to cluster cluster1@file1" in str(info.value)
    assert "3.16" in str(info.value) and old.acted() == []


def test_cluster_migration(cinder):
    cinder.add(cluster_name="cluster0@file0")
    cinder.script = [{"migration_status": "success", "cluster_name": "cluster1@file1"}]
    result = manager(cinder, sleep=1).migrate("vol", cluster="cluster1@file1")
    assert result["changed"] and cinder.acted()[0][1]["cluster"] == "cluster1@file1"
    with pytest.raises(NotFound):
        manager(cinder).migrate("vol", cluster="cluster7@file7")


# --------------------------------------------------------------------------- retype


def test_retype_with_migration_on_demand(cinder):
    cinder.add()
    cinder.script = [{"status": "retyping", "migration_status": "migrating"},
                     {"status": "available", "migration_status": "success", "volume_type": "on-file2",
                      "os-vol-host-attr:host": POOL2}]
    result = manager(cinder, sleep=1).retype("vol", "on-file2", migration_policy="on-demand")
    assert result["changed"] and result["retype"]["moved"] and result["volume"]["volume_type"] == "on-file2"
    assert cinder.acted() == [("retype", "on-file2", "on-demand")]
    assert not manager(cinder).retype("vol", "on-file2", migration_policy="on-demand")["changed"]


def test_retype_that_needs_a_move_is_refused_under_policy_never(cinder):
    cinder.add()
    with pytest.raises(InvalidRequest) as info:
        manager(cinder).retype("vol", "on-file2")
    assert "migration_policy never forbids" in str(info.value) and cinder.acted() == []


def test_retype_refused_by_cinder_later_is_an_error(cinder):
    cinder.add()
    cinder.script = [{"status": "retyping"}, {"status": "available"}]
    with pytest.raises(StorageError) as info:
        manager(cinder, sleep=1).retype("vol", "plain")
    assert "Cinder left the volume with type on-file1" in str(info.value)


def test_retype_in_check_mode(cinder):
    cinder.add()
    result = manager(cinder, check_mode=True).retype("vol", "plain")
    assert result["changed"] and result["volume"]["volume_type"] == "plain" and cinder.acted() == []


def test_info_lists_volumes_with_cinders_attributes(cinder):
    cinder.add(**{"os-vol-mig-status-attr:name_id": COPY_ID, "migration_status": "success"})
    (volume,) = manager(cinder).info()
    assert volume["name_id"] == volume["os-vol-mig-status-attr:name_id"] == COPY_ID
    assert volume["host"] == volume["os-vol-host-attr:host"] == POOL1
    assert manager(cinder).info("nope") == []
