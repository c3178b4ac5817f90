"""Unit tests for OpenStack backends in plugins/module_utils/config.py and their dispatch in context.py."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound


def manila(**over):
    spec = {"name": "cloud1", "driver": "manila", "cloud": "mobility-lab"}
    spec.update(over)
    return spec


def test_manila_backend_has_no_pools_and_rest_transport():
    backend = Backends([manila(api_version="2.65", region_name="r1", validate_certs=False,
                               transport=None, pools=None)]).backends[0]
    assert backend.is_openstack and backend.transport == "rest" and backend.pools == {}
    assert backend.openstack == {"cloud": "mobility-lab", "api_version": "2.65", "region_name": "r1",
                                 "validate_certs": False}


@pytest.mark.parametrize("over,message", [
    ({"pools": {"a": "/srv/a"}}, "whose pools are the ones the service reports"),
    ({"transport": "local"}, "use transport rest"),
    ({"api_version": "2"}, "Invalid api_version '2'"),
    ({"interface": "private"}, "Invalid interface 'private'"),
    ({"auth": "secret"}, "Invalid auth for backend cloud1"),
])
def test_manila_backend_refusals(over, message):
    with pytest.raises(InvalidRequest, match=message):
        Backends([manila(**over)])


def test_local_backends_keep_pools_required_and_refuse_openstack_options():
    with pytest.raises(InvalidRequest, match="declares no pools"):
        Backends([{"name": "be1"}])
    with pytest.raises(InvalidRequest, match="takes no OpenStack options \\(cloud\\)"):
        Backends([{"name": "be1", "pools": {"a": "/srv/a"}, "cloud": "x"}])
    with pytest.raises(InvalidRequest, match="only the OpenStack drivers"):
        Backends([{"name": "be1", "pools": {"a": "/srv/a"}, "transport": "rest"}])


def test_resolve_ignores_openstack_backends(tmp_path):
    backends = Backends([{"name": "be1", "host": "stor1", "pools": {"a": str(tmp_path)}}, manila()])
    assert backends.resolve("stor1@be1#a").path == str(tmp_path)
    with pytest.raises(NotFound, match="Unknown host 'devhost'"):
        backends.resolve("devhost@alpha#p1")


def test_dispatch_to_manila_or_to_the_local_drivers(tmp_path):
    ctx = Context([{"name": "be1", "host": "stor1", "pools": {"a": str(tmp_path)}}, manila()])
    assert ctx.openstack_backend("manila", pool="stor1@be1#a") is None
    assert ctx.openstack_backend("manila", pool="devhost@alpha#p1").name == "cloud1"
    assert ctx.openstack_backend("manila", share="not-local").name == "cloud1"
    assert ctx.openstack_backend("cinder") is None
    only_manila = Context([manila()])
    assert only_manila.openstack_backend("manila", share="x").name == "cloud1"
    with pytest.raises(InvalidRequest, match="declare one manila backend per run"):
        Context([manila(), manila(name="cloud2")]).openstack_backend("manila", share="x")
