"""Unit tests for plugins/module_utils/cinder/api.py: which call, which microversion, which lookup result.

CinderAPI runs on openstacksdk's real block-storage proxy; the HTTP answers are hand-written Cinder
REST bodies (see sdk_http.py), so the tests see what the SDK sends and what the collection reads.
"""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.cinder.api import CinderAPI, backend_of
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound, StorageError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sdk_http import HOST, Lab  # noqa: E402  (the helper lives one folder up)

VOLUME_ID = "0b7e4d36-9a57-4f3c-8f1e-3c8d2b1a0f11"
PROJECT = "5c1b9e4a6f3d4b2a8e7c0d9f1a2b3c4d"
ACTION = "/volumes/%s/action" % VOLUME_ID
#: a volume detail as Cinder 29 returns it to an administrator (hand-written, trimmed)
DETAIL = {"id": VOLUME_ID, "name": "vol", "status": "available", "size": 1, "volume_type": "gold",
          "availability_zone": "nova", "description": None, "bootable": "false", "multiattach": False,
          "attachments": [], "metadata": {}, "replication_status": None, "cluster_name": None,
          "created_at": "2026-12-01T10:00:00.000000", "updated_at": "2026-12-01T10:00:05.000000",
          "migration_status": "success", "os-vol-host-attr:host": "devhost@file1#file1",
          "os-vol-mig-status-attr:migstat": "success", "os-vol-mig-status-attr:name_id": None,
          "os-vol-tenant-attr:tenant_id": PROJECT, "volume_type_id": "t1"}


def versions(max_version):
    return {"versions": [{"id": "v3.0", "status": "CURRENT", "version": max_version, "min_version": "3.0"}]}


def api_with(answers, max_version="3.71", api_version=None):
    lab = Lab("block-storage", "%s/v3/%s" % (HOST, PROJECT), versions(max_version),
              answers, "cinder", api_version=api_version)
    return CinderAPI(lab.backend, client=lab.client), lab


def test_backend_of():
    assert backend_of("devhost@file1#file1") == "devhost@file1"
    assert backend_of("devhost@file1") == "devhost@file1"


def test_a_volume_from_the_sdk_reads_as_cinders_rest_detail():
    """The SDK's Volume object becomes the REST dict: REST names, REST values ("false" stays a string),
    and migration_status, which the SDK's Volume does not declare, from os-vol-mig-status-attr:migstat."""
    api, lab = api_with({("GET", "/volumes/%s" % VOLUME_ID): (200, {"volume": DETAIL})})
    volume = api.volume(VOLUME_ID)
    assert volume == DETAIL
    assert volume["bootable"] == "false" and volume["os-vol-host-attr:host"] == "devhost@file1#file1"
    assert lab.sent[0]["microversion"] == "3.71"
    without = dict(DETAIL)
    del without["migration_status"]
    api, _lab = api_with({("GET", "/volumes/%s" % VOLUME_ID): (200, {"volume": without})})
    assert api.volume(VOLUME_ID)["migration_status"] == "success"


def test_find_volume_by_name_skips_the_records_of_a_host_copy():
    volumes = [dict(DETAIL, **{"os-vol-mig-status-attr:migstat": "migrating", "migration_status": "migrating"}),
               {"id": "other", "name": "vol", "os-vol-mig-status-attr:migstat": "target:%s" % VOLUME_ID},
               {"id": "source", "name": "vol", "status": "deleting", "os-vol-mig-status-attr:migstat": "deleting"},
               {"id": "third", "name": "volume-two"}]
    api, lab = api_with({("GET", "/volumes/detail?name=vol"): (200, {"volumes": volumes})})
    assert api.find_volume("vol")["id"] == VOLUME_ID
    assert lab.sent[0]["microversion"] == "3.71", "reads use the highest microversion both sides speak"


def test_ambiguous_name_asks_for_the_id():
    volumes = [{"id": "a", "name": "vol"}, {"id": "b", "name": "vol"}]
    api, _lab = api_with({("GET", "/volumes/detail?name=vol"): (200, {"volumes": volumes})})
    with pytest.raises(InvalidRequest) as info:
        api.find_volume("vol")
    assert "ambiguous" in str(info.value) and "a, b" in str(info.value)


def test_find_volume_by_id_and_unknown_volume():
    api, _lab = api_with({("GET", "/volumes/detail?name=%s" % VOLUME_ID): (200, {"volumes": []}),
                          ("GET", "/volumes/%s" % VOLUME_ID): (200, {"volume": {"id": VOLUME_ID, "name": "x"}}),
                          ("GET", "/volumes/detail?name=nope"): (200, {"volumes": []})})
    assert api.find_volume(VOLUME_ID)["name"] == "x"
    with pytest.raises(NotFound) as info:
        api.require_volume("nope")
    assert "Unknown volume 'nope'" in str(info.value)
    assert api.volume("9d6e2f1c-0000-4000-8000-000000000000") is None, "a 404 reads as no volume"


def test_migrate_to_a_host_uses_the_base_microversion_and_to_a_cluster_3_16():
    api, lab = api_with({("POST", ACTION): (202, None)})
    volume = {"id": VOLUME_ID, "name": "vol"}
    api.migrate(volume, "migrate", host="devhost@file2#file2", force_host_copy=True)
    api.migrate(volume, "migrate", cluster="cluster1@file2", lock_volume=True)
    # openstacksdk leaves out the options that are false, which Cinder reads as false
    assert [(s["microversion"], s["body"]) for s in lab.requests_to("POST", ACTION)] == [
        ("3.0", {"os-migrate_volume": {"host": "devhost@file2#file2", "force_host_copy": True}}),
        ("3.16", {"os-migrate_volume": {"cluster": "cluster1@file2", "lock_volume": True}})]


def test_cluster_on_a_capped_backend_fails_clearly_and_sends_nothing():
    api, lab = api_with({}, api_version="3.10")
    with pytest.raises(InvalidRequest) as info:
        api.migrate({"id": VOLUME_ID, "name": "vol"}, "migrate", cluster="c1")
    assert "3.10 at most" in str(info.value) and "capped by api_version 3.10" in str(info.value)
    assert "3.16" in str(info.value) and lab.sent == []


def test_extend_retype_create_update_delete_send_what_cinder_expects():
    api, lab = api_with({("POST", ACTION): (202, None),
                         ("POST", "/volumes"): (202, {"volume": dict(DETAIL, status="creating")}),
                         ("PUT", "/volumes/%s" % VOLUME_ID): (200, {"volume": dict(DETAIL, description="d")}),
                         ("DELETE", "/volumes/%s?cascade=False&force=False" % VOLUME_ID): (202, None)})
    volume = {"id": VOLUME_ID, "name": "vol"}
    api.extend(volume, 3)
    api.retype(volume, "gold", "on-demand", "retype volume vol to gold")
    created = api.create_volume({"name": "vol", "size": 1, "volume_type": "gold"})
    updated = api.update_volume(volume, {"description": "d"})
    api.delete_volume(volume)
    assert [(s["microversion"], s["body"]) for s in lab.requests_to("POST", ACTION)] == [
        ("3.0", {"os-extend": {"new_size": 3}}),
        ("3.0", {"os-retype": {"new_type": "gold", "migration_policy": "on-demand"}})]
    assert lab.requests_to("POST", "/volumes")[0]["body"] == {"volume": {"name": "vol", "size": 1, "volume_type": "gold"}}
    assert created["status"] == "creating" and created["os-vol-host-attr:host"] == "devhost@file1#file1"
    assert lab.requests_to("PUT", "/volumes/%s" % VOLUME_ID)[0]["body"] == {"volume": {"description": "d"}}
    assert updated["description"] == "d"
    assert len(lab.requests_to("DELETE", "/volumes/%s?cascade=False&force=False" % VOLUME_ID)) == 1


def test_deleting_a_volume_that_is_gone_is_not_an_error():
    api, lab = api_with({})
    api.delete_volume({"id": VOLUME_ID, "name": "vol"})
    assert lab.sent[0]["method"] == "DELETE"


def test_errors_carry_the_status_and_cinders_message():
    api, _lab = api_with({("POST", ACTION): (400, {"badRequest": {"code": 400, "message": "Invalid volume: has snapshots"}})})
    with pytest.raises(InvalidRequest) as info:
        api.retype({"id": VOLUME_ID, "name": "vol"}, "gold", "never", "retype volume vol to gold")
    assert str(info.value) == ("Failed to retype volume vol to gold: Invalid volume: has snapshots "
                               "(HTTP 400 from POST %s, microversion 3.0)" % ACTION)
    assert info.value.details["status"] == 400
    assert info.value.details["body"] == {"badRequest": {"code": 400, "message": "Invalid volume: has snapshots"}}


def test_a_service_that_does_not_answer_is_named():
    api, lab = api_with({})
    lab.client.versions()
    lab.proxy.endpoint_override = "http://127.0.0.1:9/v3"
    with pytest.raises(StorageError) as info:
        api.volumes()
    assert "Failed to list volumes: Cinder of backend cloud did not answer" in str(info.value)


def test_messages_need_3_3_and_are_newest_first():
    answers = {("GET", "/messages?resource_uuid=%s" % VOLUME_ID): (200, {"messages": [
        {"resource_uuid": VOLUME_ID, "created_at": "2026-01-01T00:00:01", "user_message": "old"},
        {"resource_uuid": VOLUME_ID, "created_at": "2026-01-01T00:00:09", "user_message": "new"},
        {"resource_uuid": "someone else", "created_at": "2026-01-01T00:00:10", "user_message": "other"}]})}
    api, _lab = api_with(answers)
    assert [m["user_message"] for m in api.messages({"id": VOLUME_ID})] == ["new", "old"]
    old, lab = api_with(answers, max_version="3.2")
    assert old.messages({"id": VOLUME_ID}) == [] and lab.sent == []


def test_pools_types_zones_clusters():
    api, lab = api_with({
        ("GET", "/scheduler-stats/get_pools?detail=True"): (200, {"pools": [
            {"name": "h@b2#p", "capabilities": {"volume_backend_name": "b2"}},
            {"name": "h@b1#p", "capabilities": {"volume_backend_name": "b1"}}]}),
        ("GET", "/types?is_public=None"): (200, {"volume_types": [
            {"id": "t1", "name": "gold", "extra_specs": {"volume_backend_name": "b1"}}]}),
        ("GET", "/os-availability-zone"): (200, {"availabilityZoneInfo": [{"zoneName": "nova",
                                                                           "zoneState": {"available": True}}]}),
        ("GET", "/clusters?binary=cinder-volume"): (200, {"clusters": [{"name": "c2@b"}, {"name": "c1@b"}]})})
    assert api.pools() == ["h@b1#p", "h@b2#p"]
    assert api.pool_capabilities()["h@b2#p"] == {"volume_backend_name": "b2"}
    assert api.volume_type("t1") == {"id": "t1", "name": "gold", "extra_specs": {"volume_backend_name": "b1"}}
    with pytest.raises(NotFound) as info:
        api.volume_type("silver")
    assert "known types are gold" in str(info.value)
    assert api.availability_zones() == ["nova"]
    assert api.clusters() == ["c1@b", "c2@b"]
    assert lab.requests_to("GET", "/clusters?binary=cinder-volume")[0]["microversion"] == "3.71", "a read: the highest version"


def test_every_call_the_sdk_has_goes_through_the_proxy():
    """Raw REST only for the version document and the messages of a volume (openstacksdk 4.22 lacks
    both); a call that went back to raw REST shows up in lab.raw and fails this test."""
    api, lab = api_with({
        ("GET", "/volumes/detail?name=vol"): (200, {"volumes": [DETAIL]}),
        ("GET", "/volumes/detail"): (200, {"volumes": [DETAIL]}),
        ("GET", "/volumes/%s" % VOLUME_ID): (200, {"volume": DETAIL}),
        ("POST", "/volumes"): (202, {"volume": DETAIL}),
        ("PUT", "/volumes/%s" % VOLUME_ID): (200, {"volume": DETAIL}),
        ("DELETE", "/volumes/%s?cascade=False&force=False" % VOLUME_ID): (202, None),
        ("POST", ACTION): (202, None),
        ("GET", "/scheduler-stats/get_pools?detail=True"): (200, {"pools": [{"name": "h@b1#p"}]}),
        ("GET", "/types?is_public=None"): (200, {"volume_types": [{"id": "t1", "name": "gold"}]}),
        ("GET", "/os-availability-zone"): (200, {"availabilityZoneInfo": [{"zoneName": "nova"}]}),
        ("GET", "/clusters?binary=cinder-volume"): (200, {"clusters": []}),
        ("GET", "/messages?resource_uuid=%s" % VOLUME_ID): (200, {"messages": []})})
    volume = api.require_volume("vol")
    api.volumes()
    api.volume(VOLUME_ID)
    api.create_volume({"name": "vol", "size": 1})
    api.update_volume(volume, {"description": "d"})
    api.extend(volume, 2)
    api.migrate(volume, "migrate", host="h@b1#p")
    api.migrate(volume, "migrate", cluster="c1@b")
    api.retype(volume, "gold", "never", "retype")
    api.delete_volume(volume)
    api.volume_types()
    api.availability_zones()
    api.pools()
    api.pool_capabilities()
    api.clusters()
    api.messages(volume)
    assert lab.raw == [("GET", "/"), ("GET", "/messages?resource_uuid=%s" % VOLUME_ID)]
    assert len(lab.sent) == 16 and lab.unanswered == []
