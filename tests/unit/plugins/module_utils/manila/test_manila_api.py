"""Unit tests for plugins/module_utils/manila/api.py: the calls through openstacksdk's shared-file-system
proxy, the raw REST left for what the SDK lacks, microversions and the experimental header.

ManilaAPI runs on openstacksdk's real proxy; the HTTP answers are hand-written Manila REST bodies
(see sdk_http.py), so the tests see what the SDK sends and what the collection reads.
"""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.manila.api import ManilaAPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sdk_http import HOST, Lab  # noqa: E402  (the helper lives one folder up)

SHARE_ID = "64b2e53a-b1e5-43d5-8a42-6cd684cc44e2"
REPLICA_ID = "7c0f2a10-5d3e-4b8a-9f61-2e4d5c6b7a81"
RULE_ID = "49bc2ad8-df10-48e5-ab6e-d7e0b91313e1"
ACTION = "/shares/%s/action" % SHARE_ID
REPLICA_ACTION = "/share-replicas/%s/action" % REPLICA_ID
#: a share detail as Manila 23 returns it (hand-written, trimmed)
DETAIL = {"id": SHARE_ID, "name": "data", "status": "available", "size": 1, "share_proto": "NFS",
          "host": "devhost@alpha#fake_pool_for_ALPHA", "task_state": None, "share_type": "t1",
          "share_type_name": "default", "replication_type": None, "has_replicas": False,
          "availability_zone": "nova", "description": "d", "metadata": {"k": "v"}, "share_network_id": None,
          "created_at": "2026-12-01T10:00:00.000000", "is_public": False, "project_id": "p",
          "snapshot_support": False, "access_rules_status": "active"}
REPLICA = {"id": REPLICA_ID, "share_id": SHARE_ID, "status": "available", "replica_state": "in_sync",
           "host": "devhost@beta#fake_pool_for_BETA", "availability_zone": "nova", "share_network_id": None,
           "created_at": "2026-12-01T10:00:00.000000", "updated_at": None}


def versions(max_version):
    return {"versions": [{"id": "v2.0", "status": "CURRENT", "version": max_version, "min_version": "2.0"}]}


def api_with(answers, max_version="2.99", api_version=None):
    lab = Lab("shared-file-system", "%s/v2" % HOST, versions(max_version), answers, "manila", api_version=api_version)
    return ManilaAPI(lab.backend, client=lab.client), lab


def test_a_share_from_the_sdk_reads_as_manilas_rest_detail():
    api, lab = api_with({("GET", "/shares/%s" % SHARE_ID): (200, {"share": DETAIL}),
                         ("GET", "/shares/detail?host=devhost%40alpha%23fake_pool_for_ALPHA&name=data"):
                             (200, {"shares": [DETAIL]})})
    assert api.share(SHARE_ID) == DETAIL
    assert api.shares(name="data", host="devhost@alpha#fake_pool_for_ALPHA") == [DETAIL]
    assert [s["microversion"] for s in lab.sent] == ["2.99", "2.99"]
    assert api.share("9d6e2f1c-0000-4000-8000-000000000000") is None, "a 404 reads as no share"


def test_find_share_by_name_and_unknown_share():
    api, _lab = api_with({("GET", "/shares/detail?name=data"): (200, {"shares": [DETAIL, dict(DETAIL, id="x", name="data2")]}),
                          ("GET", "/shares/detail?name=nope"): (200, {"shares": []})})
    assert api.find_share("data")["id"] == SHARE_ID
    with pytest.raises(NotFound) as info:
        api.require_share("nope")
    assert "Unknown share 'nope'" in str(info.value)


def test_create_update_metadata_resize_delete_send_what_manila_expects():
    api, lab = api_with({("POST", "/shares"): (200, {"share": dict(DETAIL, status="creating")}),
                         ("PUT", "/shares/%s" % SHARE_ID): (200, {"share": dict(DETAIL, description="new")}),
                         ("POST", "/shares/%s/metadata" % SHARE_ID): (200, {"metadata": {"k": "v", "a": "b"}}),
                         ("GET", "/shares/%s" % SHARE_ID): (200, {"share": DETAIL}),
                         ("POST", ACTION): (202, None),
                         ("DELETE", "/shares/%s" % SHARE_ID): (202, None)})
    created = api.create_share({"name": "data", "size": 1, "share_proto": "NFS", "share_type": "t1"})
    assert created["status"] == "creating" and created["host"] == DETAIL["host"]
    assert lab.requests_to("POST", "/shares")[0]["body"] == {
        "share": {"name": "data", "size": 1, "share_proto": "NFS", "share_type": "t1"}}
    assert api.update_share(DETAIL, {"display_description": "new"})["description"] == "new"
    assert lab.requests_to("PUT", "/shares/%s" % SHARE_ID)[0]["body"] == {"share": {"display_description": "new"}}
    api.set_metadata(DETAIL, {"a": "b"})
    assert lab.requests_to("POST", "/shares/%s/metadata" % SHARE_ID)[0]["body"] == {"metadata": {"a": "b"}}
    api.resize(DETAIL, 3)
    api.delete_share(DETAIL)
    assert lab.requests_to("POST", ACTION)[0]["body"] == {"extend": {"new_size": 3}}
    assert len(lab.requests_to("DELETE", "/shares/%s" % SHARE_ID)) == 1
    assert lab.unanswered == []


def test_a_share_in_a_given_pool_is_created_with_raw_rest_and_its_hint():
    api, lab = api_with({("POST", "/shares"): (200, {"share": DETAIL})})
    api.create_share({"name": "data", "size": 1, "share_proto": "NFS"}, only_host="devhost@beta#fake_pool_for_BETA")
    sent = lab.requests_to("POST", "/shares")[0]
    assert sent["body"]["share"]["scheduler_hints"] == {"only_host": "devhost@beta#fake_pool_for_BETA"}
    assert lab.raw == [("GET", "/"), ("POST", "/shares")]
    old, _lab = api_with({}, max_version="2.60")
    with pytest.raises(InvalidRequest) as info:
        old.create_share({"name": "data", "size": 1}, only_host="h@b#p")
    assert "needs 2.67 or newer" in str(info.value)


def test_access_rules_through_the_sdk_from_2_45_and_the_action_before():
    rule = {"id": RULE_ID, "access_type": "ip", "access_to": "10.0.0.1", "access_level": "rw", "state": "active"}
    api, lab = api_with({("GET", "/share-access-rules?share_id=%s" % SHARE_ID): (200, {"access_list": [rule]}),
                         ("POST", ACTION): [(200, {"access": dict(rule, state="queued_to_apply")}), (202, None)]})
    assert api.access_rules(DETAIL) == [rule]
    api.allow_access(DETAIL, {"access_type": "ip", "access_to": "10.0.0.1", "access_level": "rw"})
    api.deny_access(DETAIL, rule)
    assert [s["body"] for s in lab.requests_to("POST", ACTION)] == [
        {"allow_access": {"access_type": "ip", "access_to": "10.0.0.1", "access_level": "rw"}},
        {"deny_access": {"access_id": RULE_ID}}]
    assert lab.raw == [("GET", "/")]
    old, lab = api_with({("POST", ACTION): (200, {"access_list": [rule]})}, max_version="2.40")
    assert old.access_rules(DETAIL) == [rule]
    assert lab.raw == [("GET", "/"), ("POST", ACTION)] and lab.sent[0]["body"] == {"access_list": None}


def test_lookups_types_networks_pools_services_export_locations():
    api, lab = api_with({
        ("GET", "/types?is_public=all"): (200, {"share_types": [{"id": "t1", "name": "default", "extra_specs": {}}]}),
        ("GET", "/share-networks/detail?name=net"): (200, {"share_networks": [{"id": "n1", "name": "net"}]}),
        ("GET", "/scheduler-stats/pools"): (200, {"pools": [{"name": "h@a#p", "host": "h", "backend": "a", "pool": "p"}]}),
        ("GET", "/services?binary=manila-share"): (200, {"services": [
            {"id": 1, "binary": "manila-share", "host": "h@a", "state": "up"}]}),
        ("GET", "/shares/%s/export_locations" % SHARE_ID): (200, {"export_locations": [
            {"id": "e1", "path": "10.0.0.10:/p", "preferred": True, "is_admin_only": False}]})})
    assert api.share_type("default")["id"] == "t1"
    with pytest.raises(NotFound) as info:
        api.share_type("gold")
    assert "known types are default" in str(info.value)
    assert api.share_network("net")["id"] == "n1"
    assert api.pools() == ["h@a#p"]
    assert api.services()[0]["host"] == "h@a"
    assert api.export_locations(DETAIL) == [{"id": "e1", "path": "10.0.0.10:/p", "preferred": True,
                                             "is_admin_only": False}]
    assert lab.unanswered == [] and lab.raw == [("GET", "/")]


def test_replica_actions_through_the_sdk_with_the_experimental_header_below_2_56():
    api, lab = api_with({("POST", REPLICA_ACTION): (202, None)}, max_version="2.55")
    replica = {"id": REPLICA_ID}
    api.resync_replica(replica)
    api.promote_replica(replica)
    api.reset_replica_status(replica, "available")
    api.reset_replica_state(replica, "out_of_sync")
    api.delete_replica(replica, force=True)
    sent = lab.requests_to("POST", REPLICA_ACTION)
    assert [s["body"] for s in sent] == [{"resync": None}, {"promote": None}, {"reset_status": {"status": "available"}},
                                         {"reset_replica_state": {"replica_state": "out_of_sync"}},
                                         {"force_delete": None}]
    assert all(s["microversion"] == "2.55" and s["headers"].get("X-OpenStack-Manila-API-Experimental") == "True"
               for s in sent)
    assert lab.raw == [("GET", "/")]
    assert lab.proxy.additional_headers == {}, "the header is set for the call only"


def test_replica_calls_at_2_56_and_later_carry_no_experimental_header():
    api, lab = api_with({("POST", REPLICA_ACTION): (202, None), ("DELETE", "/share-replicas/%s" % REPLICA_ID): (202, None)})
    api.resync_replica({"id": REPLICA_ID})
    api.delete_replica({"id": REPLICA_ID})
    api.delete_replica({"id": "gone"})
    assert all("X-OpenStack-Manila-API-Experimental" not in s["headers"] for s in lab.sent)
    assert lab.sent[0]["microversion"] == "2.99" and lab.sent[1]["method"] == "DELETE"


def test_promotion_with_quiesce_wait_time_and_replica_reads_stay_raw_rest():
    api, lab = api_with({("POST", REPLICA_ACTION): (202, None),
                         ("GET", "/share-replicas/detail?share_id=%s" % SHARE_ID): (200, {"share_replicas": [REPLICA]}),
                         ("GET", "/share-replicas/%s" % REPLICA_ID): (200, {"share_replica": REPLICA}),
                         ("POST", "/share-replicas"): (202, {"share_replica": dict(REPLICA, status="creating")})})
    api.promote_replica({"id": REPLICA_ID}, quiesce_wait_time=30)
    assert api.replicas(DETAIL) == [REPLICA] and api.replica(REPLICA_ID)["availability_zone"] == "nova"
    api.create_replica(DETAIL, host="devhost@beta#fake_pool_for_BETA", availability_zone="nova")
    assert lab.requests_to("POST", REPLICA_ACTION)[0]["body"] == {"promote": {"quiesce_wait_time": 30}}
    assert lab.requests_to("POST", "/share-replicas")[0]["body"] == {"share_replica": {
        "share_id": SHARE_ID, "availability_zone": "nova", "scheduler_hints": {"only_host": "devhost@beta#fake_pool_for_BETA"}}}
    assert lab.raw == [("GET", "/"), ("POST", REPLICA_ACTION), ("GET", "/share-replicas/detail?share_id=%s" % SHARE_ID),
                       ("GET", "/share-replicas/%s" % REPLICA_ID), ("POST", "/share-replicas")]


def test_errors_carry_the_status_and_manilas_message():
    api, _lab = api_with({("POST", REPLICA_ACTION): (400, {"badRequest": {"code": 400, "message": "Replica is not in_sync"}})})
    with pytest.raises(InvalidRequest) as info:
        api.promote_replica({"id": REPLICA_ID})
    assert str(info.value) == ("Failed to promote replica %s: Replica is not in_sync (HTTP 400 from POST %s, "
                               "microversion 2.99)" % (REPLICA_ID, REPLICA_ACTION))
    assert info.value.details["status"] == 400


def test_every_call_the_sdk_has_goes_through_the_proxy():
    """Raw REST only for what openstacksdk 4.22 lacks (the version document, share migration,
    reset_task_state, one share's instances); a call that went back to raw REST shows up in
    lab.raw and fails this test."""
    progress = {"task_state": "migration_driver_in_progress", "total_progress": 50}
    api, lab = api_with({
        ("GET", "/shares/detail?name=data"): (200, {"shares": [DETAIL]}),
        ("GET", "/shares/%s" % SHARE_ID): (200, {"share": DETAIL}),
        ("POST", "/shares"): (200, {"share": DETAIL}),
        ("PUT", "/shares/%s" % SHARE_ID): (200, {"share": DETAIL}),
        ("POST", "/shares/%s/metadata" % SHARE_ID): (200, {"metadata": {}}),
        ("DELETE", "/shares/%s" % SHARE_ID): (202, None),
        ("POST", ACTION): (200, {"access": {"id": RULE_ID}}),
        ("GET", "/share-access-rules?share_id=%s" % SHARE_ID): (200, {"access_list": []}),
        ("GET", "/shares/%s/export_locations" % SHARE_ID): (200, {"export_locations": []}),
        ("GET", "/shares/%s/instances" % SHARE_ID): (200, {"share_instances": []}),
        ("GET", "/shares/%s/migration-progress" % SHARE_ID): (200, progress),
        ("GET", "/types?is_public=all"): (200, {"share_types": [{"id": "t1", "name": "default"}]}),
        ("GET", "/share-networks/%s" % RULE_ID): (200, {"share_network": {"id": RULE_ID, "name": "net"}}),
        ("GET", "/scheduler-stats/pools"): (200, {"pools": []}),
        ("GET", "/services?binary=manila-share"): (200, {"services": []}),
        ("POST", REPLICA_ACTION): (202, None),
        ("DELETE", "/share-replicas/%s" % REPLICA_ID): (202, None)})
    share = api.require_share("data")
    api.share(SHARE_ID)
    api.create_share({"name": "data", "size": 1, "share_proto": "NFS"})
    api.update_share(share, {"display_description": "d"})
    api.set_metadata(share, {"a": "b"})
    api.resize(share, 2)
    api.access_rules(share)
    api.allow_access(share, {"access_type": "ip", "access_to": "10.0.0.1", "access_level": "rw"})
    api.deny_access(share, {"id": RULE_ID, "access_to": "10.0.0.1"})
    api.export_locations(share)
    api.share_type("default")
    api.share_network(RULE_ID)
    api.pools()
    api.services()
    api.resync_replica({"id": REPLICA_ID})
    api.promote_replica({"id": REPLICA_ID})
    api.reset_replica_status({"id": REPLICA_ID}, "available")
    api.reset_replica_state({"id": REPLICA_ID}, "in_sync")
    api.delete_replica({"id": REPLICA_ID})
    api.delete_replica({"id": REPLICA_ID}, force=True)
    api.delete_share(share)
    via_sdk = len(lab.sent)
    api.instances(share)
    api.migration_start(share, {"host": "h@b#p", "preserve_metadata": True})
    api.migration_complete(share)
    api.migration_cancel(share)
    assert api.migration_progress(share) == progress
    api.reset_task_state(share, "migration_error")
    assert lab.raw == [("GET", "/"), ("GET", "/shares/%s/instances" % SHARE_ID)] + [("POST", ACTION)] * 3 + [
        ("GET", "/shares/%s/migration-progress" % SHARE_ID), ("POST", ACTION)]
    assert via_sdk == 22 and lab.unanswered == []
