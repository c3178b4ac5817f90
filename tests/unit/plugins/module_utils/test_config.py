"""Unit tests for plugins/module_utils/config.py: declared backends, pools and pool lookup."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import (
    Backend, Backends, LocalBackend, OpenStackBackend)
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound


def spec(**over):
    base = {"name": "be1", "pools": {"a": {"path": "/srv/a"}, "b": "/srv/b"}}
    base.update(over)
    return base


def test_defaults_and_pool_addresses():
    backends = Backends([spec()])
    backend = backends.backends[0]
    assert backend.driver == "posix"
    assert backend.host == "localhost"
    assert backend.transport == "local"
    assert backend.export_helper == "none"
    assert backend.export_root is None
    assert backend.migration_ignore_files == ["lost+found"]
    assert [str(p) for p in backends.pools()] == ["localhost@be1#a", "localhost@be1#b"]
    assert backends.resolve("localhost@be1#b").path == "/srv/b"  # the short form "path" string
    assert repr(backends.pools()[0]) == "Pool(localhost@be1#a, '/srv/a')"


def test_paths_are_normalised_and_ignore_files_kept():
    backends = Backends([spec(pools={"a": {"path": "/srv//a/"}}, migration_ignore_files=[])])
    assert backends.pools()[0].path == "/srv/a"
    assert backends.backends[0].migration_ignore_files == []


def test_bind_export_needs_an_absolute_root():
    backend = Backends([spec(export={"helper": "bind", "root": "/exports/"})]).backends[0]
    assert backend.export_root == "/exports"
    with pytest.raises(InvalidRequest, match="sets no export root"):
        Backends([spec(export={"helper": "bind"})])
    with pytest.raises(InvalidRequest, match="must be an absolute path"):
        Backends([spec(export={"helper": "bind", "root": "exports"})])
    with pytest.raises(InvalidRequest, match="must not contain '..'"):
        Backends([spec(export={"helper": "bind", "root": "/exports/../etc"})])


@pytest.mark.parametrize("specs, message", [
    ([], "No backends declared"),
    (None, "No backends declared"),
    ({"name": "be1"}, "expected a list"),
    (["be1"], "must be a dictionary"),
    ([spec(name="bad/name")], "Invalid backend name 'bad/name'"),
    ([spec(name="-x")], "Invalid backend name '-x'"),
    ([spec(name=None)], "Invalid backend name None"),
    ([spec(host="bad host")], "Invalid host of backend be1 'bad host'"),
    ([spec(transport="nfs")], "Invalid transport 'nfs' for backend be1: supported transports are local, ssh, rest"),
    ([spec(export={"helper": "nfs"})], "Invalid export helper 'nfs' for backend be1: choose one of bind, none"),
    ([spec(export="bind")], "Invalid export for backend be1"),
    ([spec(pools={})], "Backend be1 declares no pools"),
    ([spec(pools=["/srv/a"])], "Backend be1 declares no pools"),
    ([spec(pools={"a": {}})], "Pool a of backend be1 has no path"),
    ([spec(pools={"a#x": "/srv/a"})], "Invalid pool name of backend be1 'a#x'"),
    ([spec(pools={"a": "relative/path"})], "Invalid path of pool be1#a 'relative/path'"),
    ([spec(pools={"a": "/srv/../etc"})], "must not contain '..'"),
    ([spec(pools={"a": "/srv/a\nb"})], "must be an absolute path"),
    ([spec(), spec()], "Backend localhost@be1 is declared twice"),
    ([spec(pools={"a": "/srv/a", "b": "/srv/a/"})], "have the same path /srv/a"),
    ([spec(), spec(name="be2", pools={"c": "/srv/a"})], "have the same path /srv/a"),
])
def test_invalid_backends_are_refused_with_the_reason(specs, message):
    with pytest.raises(InvalidRequest) as info:
        Backends(specs)
    assert message in str(info.value)


def test_backend_name_with_a_trailing_newline_is_refused():
    # A name ends up in pool addresses and messages; a newline must never get through.
    with pytest.raises(InvalidRequest, match="Invalid backend name"):
        Backends([spec(name="be1\n")])


@pytest.fixture
def two_hosts():
    return Backends([
        spec(),
        spec(name="be2", pools={"c": "/srv/c"}),
        spec(name="be1", host="node2", pools={"x": "/srv/x"}),
    ])


def test_resolve_finds_pools_on_every_host(two_hosts):
    assert two_hosts.resolve("localhost@be2#c").path == "/srv/c"
    assert two_hosts.resolve("node2@be1#x").path == "/srv/x"
    ref = two_hosts.resolve("localhost@be1#a").ref
    assert two_hosts.resolve(ref).path == "/srv/a"  # a PoolRef is accepted as well


def test_resolve_names_an_unknown_host(two_hosts):
    with pytest.raises(NotFound) as info:
        two_hosts.resolve("node9@be1#a", "destination pool")
    assert str(info.value) == ("Unknown host 'node9' in destination pool node9@be1#a: "
                               "declared hosts are localhost, node2")


def test_resolve_names_an_unknown_backend(two_hosts):
    with pytest.raises(NotFound) as info:
        two_hosts.resolve("node2@be2#c")
    assert str(info.value) == "Unknown backend 'be2' on host node2 in pool node2@be2#c: declared backends there are be1"


def test_resolve_names_an_unknown_pool(two_hosts):
    with pytest.raises(NotFound) as info:
        two_hosts.resolve("localhost@be1#zz")
    assert str(info.value) == ("Unknown pool 'zz' of backend localhost@be1 in pool localhost@be1#zz: "
                               "declared pools are a, b")


@pytest.mark.parametrize("address", ["localhost-be1#a", "localhost@be1", "localhost@be1#", "@be1#a"])
def test_resolve_refuses_malformed_addresses(two_hosts, address):
    with pytest.raises(InvalidRequest, match="expected host@backend#pool"):
        two_hosts.resolve(address)


def test_each_kind_of_backend_validates_only_what_it_takes():
    local, cloud = Backends([{"name": "be1", "driver": "btrfs", "pools": {"a": "/srv/a"}},
                             {"name": "cloud1", "driver": "cinder", "cloud": "lab"}]).backends
    assert isinstance(local, LocalBackend) and isinstance(cloud, OpenStackBackend)
    assert isinstance(local, Backend) and isinstance(cloud, Backend)
    assert not isinstance(local, OpenStackBackend) and not isinstance(cloud, LocalBackend)
    assert (local.is_openstack, local.transport, local.openstack) == (False, "local", {})
    assert (cloud.is_openstack, cloud.transport, cloud.pools, cloud.openstack) == (True, "rest", {}, {"cloud": "lab"})
    # the name, host and transport are checked the same way for both kinds, before the kind's own checks
    for driver in ("posix", "manila"):
        with pytest.raises(InvalidRequest, match="Invalid transport 'nfs' for backend b: supported transports are"):
            Backends([{"name": "b", "driver": driver, "transport": "nfs", "pools": {"a": "/srv/a"}}])


def test_a_pool_carries_its_address_as_a_value():
    pool = Backends([{"name": "be1", "host": "stor1", "pools": {"a": "/srv/a"}}]).pools()[0]
    assert pool.ref == PoolAddress("stor1", "be1", "a") and str(pool) == "stor1@be1#a"
