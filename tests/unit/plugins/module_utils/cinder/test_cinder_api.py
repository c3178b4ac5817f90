"""Unit tests for plugins/module_utils/cinder/api.py: which call, which microversion, which lookup result."""

from __future__ import annotations

import json

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.cinder.api import CinderAPI, backend_of
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.openstack import OpenStackClient

VOLUME_ID = "0b7e4d36-9a57-4f3c-8f1e-3c8d2b1a0f11"


class Response:
    def __init__(self, status, data=None):
        self.status_code = status
        self._data = data
        self.text = json.dumps(data) if data is not None else ""

    def json(self):
        return self._data


class Proxy:
    """Stands for conn.block_storage: answers from a table, records (method, path, microversion, body)."""

    def __init__(self, answers, max_version="3.71"):
        self.answers = answers
        self.max_version = max_version
        self.sent = []

    def request(self, path, method, raise_exc=False, **kwargs):
        if path == "/":
            return Response(200, {"versions": [{"id": "v3.0", "status": "CURRENT", "version": self.max_version,
                                                "min_version": "3.0"}]})
        self.sent.append((method, path, kwargs.get("microversion"), kwargs.get("json")))
        status, data = self.answers.get((method, path), (404, {"itemNotFound": {"message": "not found"}}))
        return Response(status, data)


def api_with(answers, max_version="3.71", api_version=None):
    spec = {"name": "cloud", "driver": "cinder", "cloud": "lab"}
    if api_version:
        spec["api_version"] = api_version
    backend = Backends([spec]).backends[0]
    proxy = Proxy(answers, max_version)
    client = OpenStackClient(backend, "block-storage", connect=lambda **kwargs: type("Conn", (), {"block_storage": proxy})())
    return CinderAPI(backend, client=client), proxy


def test_backend_of():
    assert backend_of("devhost@file1#file1") == "devhost@file1"
    assert backend_of("devhost@file1") == "devhost@file1"


def test_find_volume_by_name_skips_the_records_of_a_host_copy():
    volumes = [{"id": VOLUME_ID, "name": "vol", "migration_status": "migrating"},
               {"id": "other", "name": "vol", "migration_status": "target:%s" % VOLUME_ID},
               {"id": "source", "name": "vol", "status": "deleting", "migration_status": "deleting"},
               {"id": "third", "name": "volume-two"}]
    api, proxy = api_with({("GET", "/volumes/detail?name=vol"): (200, {"volumes": volumes})})
    assert api.find_volume("vol")["id"] == VOLUME_ID
    assert proxy.sent[0][2] == "3.71", "reads use the highest microversion both sides speak"


def test_ambiguous_name_asks_for_the_id():
    volumes = [{"id": "a", "name": "vol"}, {"id": "b", "name": "vol"}]
    api, _proxy = api_with({("GET", "/volumes/detail?name=vol"): (200, {"volumes": volumes})})
    with pytest.raises(InvalidRequest) as info:
        api.find_volume("vol")
    assert "ambiguous" in str(info.value) and "a, b" in str(info.value)


def test_find_volume_by_id_and_unknown_volume():
    api, _proxy = api_with({("GET", "/volumes/detail?name=%s" % VOLUME_ID): (200, {"volumes": []}),
                            ("GET", "/volumes/%s" % VOLUME_ID): (200, {"volume": {"id": VOLUME_ID, "name": "x"}}),
                            ("GET", "/volumes/detail?name=nope"): (200, {"volumes": []})})
    assert api.find_volume(VOLUME_ID)["name"] == "x"
    with pytest.raises(NotFound) as info:
        api.require_volume("nope")
    assert "Unknown volume 'nope'" in str(info.value)


def test_migrate_to_a_host_uses_the_base_microversion_and_to_a_cluster_3_16():
    path = "/volumes/%s/action" % VOLUME_ID
    api, proxy = api_with({("POST", path): (202, None)})
    volume = {"id": VOLUME_ID, "name": "vol"}
    api.migrate(volume, "migrate", host="devhost@file2#file2", force_host_copy=True)
    api.migrate(volume, "migrate", cluster="cluster1@file2", lock_volume=True)
    assert proxy.sent[0] == ("POST", path, "3.0", {"os-migrate_volume": {
        "host": "devhost@file2#file2", "force_host_copy": True, "lock_volume": False}})
    assert proxy.sent[1] == ("POST", path, "3.16", {"os-migrate_volume": {
        "cluster": "cluster1@file2", "force_host_copy": False, "lock_volume": True}})


def test_cluster_on_a_capped_backend_fails_clearly_and_sends_nothing():
    api, proxy = api_with({}, api_version="3.10")
    with pytest.raises(InvalidRequest) as info:
        api.migrate({"id": VOLUME_ID, "name": "vol"}, "migrate", cluster="c1")
    assert "3.10 at most" in str(info.value) and "capped by api_version 3.10" in str(info.value)
    assert "3.16" in str(info.value) and proxy.sent == []


def test_errors_carry_the_status_and_cinders_message():
    path = "/volumes/%s/action" % VOLUME_ID
    api, _proxy = api_with({("POST", path): (400, {"badRequest": {"message": "Invalid volume: has snapshots"}})})
    with pytest.raises(InvalidRequest) as info:
        api.retype({"id": VOLUME_ID, "name": "vol"}, "gold", "never", "retype volume vol to gold")
    assert "Failed to retype volume vol to gold: Invalid volume: has snapshots (HTTP 400" in str(info.value)
    assert info.value.details["status"] == 400


def test_messages_need_3_3_and_are_newest_first():
    answers = {("GET", "/messages?resource_uuid=%s" % VOLUME_ID): (200, {"messages": [
        {"resource_uuid": VOLUME_ID, "created_at": "2026-01-01T00:00:01", "user_message": "old"},
        {"resource_uuid": VOLUME_ID, "created_at": "2026-01-01T00:00:09", "user_message": "new"},
        {"resource_uuid": "someone else", "created_at": "2026-01-01T00:00:10", "user_message": "other"}]})}
    api, _proxy = api_with(answers)
    assert [m["user_message"] for m in api.messages({"id": VOLUME_ID})] == ["new", "old"]
    old, proxy = api_with(answers, max_version="3.2")
    assert old.messages({"id": VOLUME_ID}) == [] and proxy.sent == []


def test_pools_and_types():
    api, _proxy = api_with({
        ("GET", "/scheduler-stats/get_pools"): (200, {"pools": [{"name": "h@b2#p"}, {"name": "h@b1#p"}]}),
        ("GET", "/types?is_public=None"): (200, {"volume_types": [{"id": "t1", "name": "gold"}]})})
    assert api.pools() == ["h@b1#p", "h@b2#p"]
    assert api.volume_type("t1")["name"] == "gold"
    with pytest.raises(NotFound) as info:
        api.volume_type("silver")
    assert "known types are gold" in str(info.value)
