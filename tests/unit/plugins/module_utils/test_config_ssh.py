"""Unit tests for plugins/module_utils/config.py: the ssh options of a backend (``transport: ssh``)."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest


def spec(**over):
    base = {"name": "be1", "host": "stor1", "transport": "ssh", "ssh": {"address": "10.0.0.5", "user": "admin", "port": 2222,
            "private_key_file": "/keys/id", "known_hosts_file": "/keys/known_hosts"},
            "pools": {"a": "/srv/a"}}
    base.update(over)
    return base


def test_ssh_options_are_kept_with_their_defaults():
    backend = Backends([spec()]).backends[0]
    assert backend.transport == "ssh"
    assert backend.ssh == {"address": "10.0.0.5", "user": "admin", "port": 2222, "private_key_file": "/keys/id",
                           "known_hosts_file": "/keys/known_hosts", "host_key_checking": "strict", "become": False,
                           "direct_address": None, "direct_key_file": None, "data_node_key_file": None}


def test_data_path_defaults_to_direct_and_takes_controller():
    assert Backends([spec()]).backends[0].data_path == "direct"
    assert Backends([spec(data_path="controller")]).backends[0].data_path == "controller"
    assert Backends([spec(transport=None, ssh=None)]).backends[0].data_path == "direct"
    both = Backends([spec(ssh={"direct_address": "10.9.0.5", "direct_key_file": "/root/.ssh/id_peer"})]).backends[0]
    assert both.ssh["direct_address"] == "10.9.0.5" and both.ssh["direct_key_file"] == "/root/.ssh/id_peer"


def test_the_data_node_key_file_is_kept():
    backend = Backends([spec(ssh={"data_node_key_file": "/root/.ssh/id_data_node"})]).backends[0]
    assert backend.ssh["data_node_key_file"] == "/root/.ssh/id_data_node"


def test_the_address_defaults_to_the_backend_host():
    backend = Backends([spec(ssh={})]).backends[0]
    assert backend.ssh["address"] == "stor1"
    assert backend.ssh["user"] is None and backend.ssh["port"] is None


def test_ansible_nulls_for_options_left_out_are_not_options():
    backend = Backends([spec(ssh={"address": None, "user": None, "port": None, "private_key_file": None,
                                  "known_hosts_file": None, "host_key_checking": "strict", "become": False})]).backends[0]
    assert backend.ssh["address"] == "stor1"


def test_local_backends_have_no_ssh_options():
    backend = Backends([spec(transport=None, ssh=None)]).backends[0]
    assert backend.transport == "local" and backend.ssh is None


@pytest.mark.parametrize("over, message", [
    ({"ssh": "host1"}, "Invalid ssh for backend be1: expected a dictionary"),
    ({"ssh": None}, "Invalid ssh for backend be1: expected a dictionary"),
    ({"ssh": {"password": "x"}}, "Unknown ssh option(s) password for backend be1"),
    ({"ssh": {"address": "-oProxyCommand=x"}}, "Invalid ssh address '-oProxyCommand=x' for backend be1"),
    ({"ssh": {"address": "a b"}}, "Invalid ssh address 'a b'"),
    ({"ssh": {"user": "-l"}}, "Invalid ssh user '-l' for backend be1"),
    ({"ssh": {"user": "a;b"}}, "Invalid ssh user 'a;b'"),
    ({"ssh": {"port": 0}}, "Invalid ssh port 0 for backend be1"),
    ({"ssh": {"port": "x"}}, "Invalid ssh port 'x'"),
    ({"ssh": {"port": 70000}}, "Invalid ssh port 70000"),
    ({"ssh": {"private_key_file": "id_rsa"}}, "Invalid ssh private_key_file of backend be1 'id_rsa'"),
    ({"ssh": {"known_hosts_file": "kh"}}, "Invalid ssh known_hosts_file of backend be1 'kh'"),
    ({"ssh": {"host_key_checking": "no"}}, "Invalid ssh host_key_checking 'no' for backend be1: choose one of strict, accept-new"),
    ({"ssh": {"become": "yes"}}, "Invalid ssh become 'yes' for backend be1: true or false"),
    ({"ssh": {"direct_address": "-oProxyCommand=x"}}, "Invalid ssh direct_address '-oProxyCommand=x' for backend be1"),
    ({"ssh": {"direct_key_file": "id"}}, "Invalid ssh direct_key_file of backend be1 'id'"),
    ({"ssh": {"direct_key_file": "/k/%d/id"}}, "Invalid ssh direct_key_file '/k/%d/id' for backend be1: it must not contain '%'"),
    ({"ssh": {"data_node_key_file": "id"}}, "Invalid ssh data_node_key_file of backend be1 'id'"),
    ({"ssh": {"data_node_key_file": "/k/a,b"}}, "Invalid ssh data_node_key_file '/k/a,b' for backend be1: it must not "
                                                "contain '%', ',' or spaces"),
    ({"data_path": "sideways"}, "Invalid data_path 'sideways' for backend be1: choose one of direct, controller"),
    ({"transport": "local"}, "Backend be1 sets ssh options but uses transport local"),
    ({"transport": "rest"}, "Invalid transport rest for backend be1"),
])
def test_invalid_ssh_options_are_refused_naming_the_option(over, message):
    with pytest.raises(InvalidRequest) as info:
        Backends([spec(**over)])
    assert message in str(info.value)


def test_two_backends_of_one_host_must_reach_it_the_same_way():
    other = spec(name="be2", pools={"b": "/srv/b"}, ssh={"address": "10.0.0.6"})
    with pytest.raises(InvalidRequest, match="Backends be1 and be2 are both on host stor1 but declare different ssh options"):
        Backends([spec(), other])
    same = spec(name="be2", pools={"b": "/srv/b"})
    assert len(Backends([spec(), same]).backends) == 2


def test_pools_on_two_ssh_hosts_may_share_a_path_but_not_on_one_host():
    other_host = spec(name="be2", host="stor2", ssh={"address": "10.0.0.6"})
    assert len(Backends([spec(), other_host]).pools()) == 2
    with pytest.raises(InvalidRequest, match="have the same path /srv/a"):
        Backends([spec(), spec(name="be2")])


def test_openstack_backends_refuse_ssh():
    with pytest.raises(InvalidRequest, match="remove ssh from it"):
        Backends([{"name": "m1", "driver": "manila", "ssh": {"address": "x"}}])


def test_an_inventory_host_that_reaches_the_module_unresolved_is_refused_with_the_reason():
    """The action plugin replaces ``inventory_host`` with the host's options; a module run by hand
    (no action plugin) gets it as given and must say why it cannot use it."""
    with pytest.raises(InvalidRequest) as caught:
        Backends([spec(ssh={"inventory_host": "stora", "user": "root"})])
    assert "The ssh inventory_host stora of backend be1 was not resolved" in str(caught.value)
    assert "action plugin" in str(caught.value)
    assert Backends([spec(ssh={"inventory_host": None, "address": "10.0.0.6"})]).backends[0].ssh["address"] == "10.0.0.6"
