"""Unit tests for plugins/module_utils/openstack.py: options, microversions, error translation.

The client is tested with a stand-in for ``openstack.connect`` (a proxy that answers like Manila),
and once with the real openstacksdk against a closed port, to see its failure come back typed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import openstack as osmod
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, InvalidRequest, NotFound, StorageError)

VERSIONS = {"versions": [{"id": "v1.0", "status": "DEPRECATED", "version": "", "min_version": ""},
                         {"id": "v2.0", "status": "CURRENT", "version": "2.99", "min_version": "2.0"}]}


class Response:
    def __init__(self, status, body=None):
        self.status_code = status
        self.text = "" if body is None else (body if isinstance(body, str) else json.dumps(body))

    def json(self):
        return json.loads(self.text)


class Proxy:
    """Answers ``GET /`` with a version document and every other call from ``answers``."""

    def __init__(self, answers=None, versions=None):
        self.answers = dict(answers or {})
        self.versions = versions or VERSIONS
        self.calls = []

    def request(self, path, method, raise_exc=True, **kwargs):
        assert raise_exc is False
        self.calls.append((method, path, kwargs))
        if path == "/":
            return Response(200, self.versions)
        answer = self.answers[(method, path)]
        if isinstance(answer, Exception):
            raise answer
        return answer


def backend(**options):
    spec = {"name": "lab", "driver": "manila", "cloud": "c1"}
    spec.update(options)
    return Backends([spec]).backends[0]


def client(proxy, **options):
    seen = {}

    def connect(**kwargs):
        seen.update(kwargs)
        return type("Conn", (), {"shared_file_system": proxy})()

    the_client = osmod.OpenStackClient(backend(**options), "shared-file-system", connect=connect)
    the_client.seen = seen
    return the_client


def test_parse_and_format_versions():
    assert osmod.parse_version("2.29") == (2, 29)
    assert osmod.format_version((2, 7)) == "2.7"
    with pytest.raises(InvalidRequest, match="expected MAJOR.MINOR"):
        osmod.parse_version("2.x")


def test_api_message_reads_openstack_error_bodies():
    assert osmod.api_message('{"badRequest": {"code": 400, "message": "Invalid share"}}') == "Invalid share"
    assert osmod.api_message('{"message": "plain"}') == "plain"
    assert osmod.api_message("<html><body><h1>502 Bad Gateway</h1></body></html>") == "502 Bad Gateway"


def test_connection_kwargs_map_the_backend_options():
    options = {"cloud": "c1", "region_name": "r1", "interface": "internal", "cacert": "/ca.pem",
               "validate_certs": False, "client_cert": "/c.pem", "client_key": "/k.pem",
               "endpoint_override": "http://127.0.0.1:8786/", "api_version": "2.65"}
    assert osmod.connection_kwargs(options, "shared-file-system") == {
        "cloud": "c1", "region_name": "r1", "interface": "internal", "cacert": "/ca.pem", "verify": False,
        "cert": "/c.pem", "key": "/k.pem", "shared_file_system_endpoint_override": "http://127.0.0.1:8786/"}
    assert osmod.connection_kwargs({"auth": {"auth_url": "u"}, "auth_type": "password"}, "block-storage") == {
        "auth": {"auth_url": "u"}, "auth_type": "password"}


def test_versions_are_read_once_and_capped():
    proxy = Proxy()
    the_client = client(proxy)
    assert the_client.versions() == ((2, 0), (2, 99))
    assert the_client.microversion("share migration", "2.29") == "2.99"
    assert the_client.microversion("progress action", "2.22", maximum="2.97") == "2.97"
    assert [c[1] for c in proxy.calls] == ["/"]
    assert the_client.seen == {"cloud": "c1"}

    capped = client(Proxy(), api_version="2.28")
    assert capped.max_version() == (2, 28)
    with pytest.raises(InvalidRequest) as info:
        capped.microversion("share migration", "2.29")
    assert str(info.value) == ("Manila of backend lab speaks API microversion 2.28 at most (capped by api_version 2.28 "
                               "of the backend); share migration needs 2.29 or newer")
    assert info.value.details["required_microversion"] == "2.29"


def test_old_cloud_without_cap_names_no_cap():
    old = client(Proxy(versions={"version": {"status": "CURRENT", "version": "2.20", "min_version": "2.0"}}))
    with pytest.raises(InvalidRequest, match=r"speaks API microversion 2.20 at most; x needs 2.29 or newer"):
        old.microversion("x", "2.29")


def test_request_sends_the_microversion_and_decodes():
    proxy = Proxy({("GET", "/shares/1"): Response(200, {"share": {"id": "1"}})})
    the_client = client(proxy)
    assert the_client.request("GET", "/shares/1", "read share", microversion="2.29",
                              headers={"X-H": "1"}) == {"share": {"id": "1"}}
    assert proxy.calls[-1] == ("GET", "/shares/1", {"headers": {"X-H": "1"}, "microversion": "2.29"})


@pytest.mark.parametrize("status,error", [(400, InvalidRequest), (403, InvalidRequest), (404, NotFound),
                                          (409, Busy), (500, StorageError)])
def test_http_errors_become_typed_errors_with_status_and_body(status, error):
    body = {"badRequest": {"code": status, "message": "Share access ip:10.0.0.1 exists."}}
    proxy = Proxy({("POST", "/shares/1/action"): Response(status, body)})
    with pytest.raises(error) as info:
        client(proxy).request("POST", "/shares/1/action", "allow access to share s1", body={"x": 1},
                              microversion="2.99")
    assert info.type is error
    assert str(info.value) == ("Failed to allow access to share s1: Share access ip:10.0.0.1 exists. "
                               "(HTTP %d from POST /shares/1/action, microversion 2.99)" % status)
    assert info.value.details["status"] == status
    assert info.value.details["body"] == body


def test_not_found_ok_returns_none():
    proxy = Proxy({("GET", "/shares/9"): Response(404, {"itemNotFound": {"message": "gone"}})})
    assert client(proxy).request("GET", "/shares/9", "read share", not_found_ok=True) is None


def test_transport_and_connect_failures_are_storage_errors():
    proxy = Proxy({("GET", "/shares"): ConnectionError("Connection refused")})
    with pytest.raises(StorageError, match="Failed to list shares: Manila of backend lab did not answer: Connection refused"):
        client(proxy).request("GET", "/shares", "list shares")

    def broken(**kwargs):
        raise RuntimeError("Cloud c1 was not found.")

    the_client = osmod.OpenStackClient(backend(), "shared-file-system", connect=broken)
    with pytest.raises(StorageError, match="Failed to connect to Manila for backend lab: Cloud c1 was not found."):
        the_client.versions()


def test_missing_openstacksdk_is_reported_like_missing_required_lib(monkeypatch):
    monkeypatch.setitem(sys.modules, "openstack", None)  # the import in openstack_connect fails
    with pytest.raises(StorageError, match="Failed to import the required Python library \\(openstacksdk\\)"):
        osmod.OpenStackClient(backend(), "shared-file-system").versions()


def test_unknown_service_is_refused():
    with pytest.raises(InvalidRequest, match="Unknown OpenStack service 'object-store'"):
        osmod.OpenStackClient(backend(), "object-store")


def test_real_openstacksdk_against_a_closed_port():
    """openstacksdk builds the session from the options; a refused connection comes back typed."""
    pytest.importorskip("openstack")
    the_client = osmod.OpenStackClient(backend(cloud=None, auth_type="admin_token",
                                               auth={"endpoint": "http://127.0.0.1:9/", "token": "admin:p"},
                                               endpoint_override="http://127.0.0.1:9/"), "shared-file-system")
    with pytest.raises(StorageError, match="Failed to connect to Manila for backend lab: Unable to find a version "
                                           "discovery document at http://127.0.0.1:9/"):
        the_client.versions()


def test_the_services_do_not_import_openstacksdk_until_a_backend_connects():
    """Every module imports services/registry.py; importing the SDK there cost each module run
    1.5-4 s on this machine even with only local backends declared."""
    code = ("import sys\n"
            "import ansible_collections.storage.mobility.plugins.module_utils.services.registry\n"
            "print('openstack' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------------------ openstacksdk proxy calls
def test_rest_fields_of_an_sdk_resource_keep_the_rest_names_and_values():
    from openstack.block_storage.v3.volume import Volume

    rest = {"id": "v1", "name": "vol", "bootable": "false", "os-vol-host-attr:host": "h@b#p",
            "os-vol-mig-status-attr:migstat": "migrating", "size": 1}
    volume = Volume.existing(**dict(rest, migration_status="migrating", links=[]))
    assert volume.is_bootable is False, "the SDK's own attribute is converted"
    assert osmod.rest_fields(volume) == rest, "undeclared fields (migration_status, links) are left out"
    aliased = osmod.rest_fields(volume, (("migration_status", "os-vol-mig-status-attr:migstat"),))
    assert aliased["migration_status"] == "migrating" and aliased["bootable"] == "false"
    assert osmod.rest_fields(None) is None
    assert osmod.rest_fields({"id": "plain"}) == {"id": "plain"}


class SdkProxy:
    """The adapter attributes OpenStackClient.sdk sets, and a record of what each call saw."""

    def __init__(self):
        self.default_microversion = None
        self.additional_headers = {"User": "kept"}
        self.seen = []

    def things(self):
        for item in ("a", "b"):
            self.seen.append((item, self.default_microversion, dict(self.additional_headers)))
            yield item


class HttpError(Exception):
    """Shaped like openstacksdk's HttpException: status_code and the response."""

    def __init__(self, status, text):
        super().__init__("HttpException: %d" % status)
        self.status_code = status
        self.response = Response(status, text)


def test_sdk_call_runs_at_the_microversion_with_the_headers_and_restores_them():
    proxy = SdkProxy()
    the_client = client(proxy)
    assert the_client.sdk("list things", "GET", "/things", lambda p: p.things(), microversion="2.55",
                          headers={"X-Experimental": "True"}) == ["a", "b"]
    assert proxy.seen == [("a", "2.55", {"User": "kept", "X-Experimental": "True"}),
                          ("b", "2.55", {"User": "kept", "X-Experimental": "True"})], "a generator is read while set"
    assert proxy.default_microversion is None and proxy.additional_headers == {"User": "kept"}


def test_sdk_call_errors_read_as_raw_rest_errors():
    proxy = SdkProxy()
    the_client = client(proxy)

    def fail(status, text):
        def call(_proxy):
            raise HttpError(status, text)
        return call

    with pytest.raises(Busy) as info:
        the_client.sdk("extend share s1", "POST", "/shares/x/action",
                       fail(409, {"conflictingRequest": {"message": "busy share"}}), microversion="2.7")
    assert str(info.value) == "Failed to extend share s1: busy share (HTTP 409 from POST /shares/x/action, microversion 2.7)"
    assert info.value.details["body"] == {"conflictingRequest": {"message": "busy share"}}
    assert the_client.sdk("read share", "GET", "/shares/x", fail(404, ""), not_found_ok=True) is None
    with pytest.raises(NotFound, match=r"HttpException: 404 \(HTTP 404 from GET /shares/x\)"):
        the_client.sdk("read share", "GET", "/shares/x", fail(404, ""))
    assert proxy.default_microversion is None

    def refuse(_proxy):
        raise ValueError("Required microversion 3.16 is higher than currently selected 3.0")

    with pytest.raises(StorageError) as info:
        the_client.sdk("migrate volume v", "POST", "/volumes/v/action", refuse, microversion="3.0")
    assert "Failed to migrate volume v: openstacksdk refused the call for Manila of backend lab" in str(info.value)
