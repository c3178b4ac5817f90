"""plugin_utils/inventory_ssh.py: a backend's ssh options filled from an inventory host."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.plugin_utils.inventory_ssh import (
    InventoryHostError, options_from_host, resolve_backends, ssh_arguments)

HOSTVARS = {
    "stora": {
        "ansible_host": "192.0.2.11",
        "ansible_port": "2222",
        "ansible_user": "ops",
        "ansible_ssh_private_key_file": "~/.ssh/id_storage",
        "ansible_become": "yes",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/etc/mobility/known_hosts -o StrictHostKeyChecking=accept-new",
    },
    "bare": {},
    "local": {"ansible_connection": "local"},
    "su": {"ansible_become": True, "ansible_become_method": "su"},
    "secret": {"ansible_host": "192.0.2.12", "ansible_password": "hunter2", "ansible_become_password": "x"},
}


def backend(ssh, name="pa"):
    return {"name": name, "driver": "posix", "host": "stora", "transport": "ssh", "ssh": ssh,
            "pools": {"ext4": "/srv/ext4"}}


def test_every_connection_variable_gives_its_option():
    options, warnings = options_from_host("stora", HOSTVARS["stora"])
    assert options == {"address": "192.0.2.11", "port": 2222, "user": "ops",
                       "private_key_file": "~/.ssh/id_storage", "become": True,
                       "known_hosts_file": "/etc/mobility/known_hosts", "host_key_checking": "accept-new"}
    assert warnings == []


def test_a_host_without_variables_is_reached_at_its_inventory_name():
    assert options_from_host("bare", {}) == ({"address": "bare"}, [])


def test_what_the_backend_sets_wins_and_the_rest_comes_from_the_inventory():
    given = [backend({"inventory_host": "stora", "user": "root", "become": False, "address": None}),
             backend({"address": "192.0.2.99"}, name="other")]
    resolved, warnings = resolve_backends(given, HOSTVARS)
    assert resolved[0]["ssh"] == {"address": "192.0.2.11", "port": 2222, "user": "root",
                                  "private_key_file": "~/.ssh/id_storage", "become": False,
                                  "known_hosts_file": "/etc/mobility/known_hosts", "host_key_checking": "accept-new"}
    assert "inventory_host" not in resolved[0]["ssh"]
    assert resolved[1] is given[1]
    # The task's own arguments are never changed in place.
    assert given[0]["ssh"]["inventory_host"] == "stora" and warnings == []


def test_backends_without_an_inventory_host_are_passed_on_untouched():
    given = [backend({"address": "192.0.2.1"}), {"name": "local", "pools": {"a": "/a"}}]
    resolved, warnings = resolve_backends(given, {})
    assert resolved is given and warnings == []


@pytest.mark.parametrize("host, expected", [
    ("nosuch", "Backend pa: ssh inventory_host nosuch is not in the inventory"),
    ("local", "Backend pa: ssh inventory_host local: it uses connection local, not ssh"),
    ("su", "ansible_become_method is su: the collection becomes root on a storage host with sudo -n only"),
])
def test_a_host_that_cannot_give_the_options_is_refused_naming_backend_and_host(host, expected):
    with pytest.raises(InventoryHostError) as caught:
        resolve_backends([backend({"inventory_host": host})], HOSTVARS)
    assert expected in str(caught.value)
    assert f"Backend pa: ssh inventory_host {host}" in str(caught.value)


def test_bad_values_are_refused_naming_the_variable():
    with pytest.raises(InventoryHostError, match="ansible_port is 'ssh': expected a TCP port"):
        options_from_host("h", {"ansible_port": "ssh"})
    with pytest.raises(InventoryHostError, match="ansible_become is 'maybe': expected a boolean"):
        options_from_host("h", {"ansible_become": "maybe"})
    with pytest.raises(InventoryHostError, match="ansible_become_user is postgres"):
        options_from_host("h", {"ansible_become": True, "ansible_become_user": "postgres"})


def test_passwords_are_never_taken_and_are_named_in_a_warning_without_their_value():
    resolved, warnings = resolve_backends([backend({"inventory_host": "secret"})], HOSTVARS)
    assert "hunter2" not in repr(resolved) and "hunter2" not in repr(warnings)
    assert warnings == ["inventory host secret has ansible_become_password, ansible_password: the collection never "
                        "uses passwords (keys or the ssh agent only)"]


def test_ssh_arguments_read_both_spellings_and_quoted_values():
    found = ssh_arguments("-o 'UserKnownHostsFile=/a b/kh' -oStrictHostKeyChecking=no -o 'ProxyJump bastion' -v")
    assert found == {"userknownhostsfile": "/a b/kh", "stricthostkeychecking": "no", "proxyjump": "bastion"}
    options, warnings = options_from_host("h", {"ansible_ssh_extra_args": "-o StrictHostKeyChecking=no"})
    assert "host_key_checking" not in options
    assert warnings == ["inventory host h turns host key checking off (StrictHostKeyChecking=no); the collection "
                        "still checks host keys (strict)"]
    with pytest.raises(InventoryHostError, match="cannot read its ssh arguments"):
        ssh_arguments("-o 'unclosed")
