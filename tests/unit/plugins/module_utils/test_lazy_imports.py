"""What a module call imports: every call compiles the module_utils it imports from the AnsiballZ
zip (no bytecode cache there), so the registries load a driver, a transport or an OpenStack client
only when a request reaches it. Importing them all cost each call about 0.75 s of CPU on this
machine (share_info on a local posix backend: 1.5 s a call instead of 0.75 s)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.drivers.share import registry as share_registry
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume import registry as volume_registry
from ansible_collections.storage.mobility.plugins.module_utils.services import registry as services_registry
from ansible_collections.storage.mobility.plugins.module_utils.transport import registry as transport_registry

PREFIX = "ansible_collections.storage.mobility.plugins."
# Loaded only when a request reaches them.
ON_DEMAND = ("module_utils.drivers.share.btrfs", "module_utils.drivers.share.posix", "module_utils.drivers.volume.file",
             "module_utils.transport.ssh", "module_utils.transport.local", "module_utils.manila.shares",
             "module_utils.manila.migration", "module_utils.manila.replicas", "module_utils.cinder.volumes",
             "module_utils.managers.volume", "module_utils.managers.replica", "ansible.module_utils.urls")


def imported_by(module):
    """The names in ON_DEMAND that importing plugins/modules/<module>.py loads, in a fresh interpreter."""
    code = ("import sys\n"
            "import %s\n"
            "names = %r\n"
            "print(' '.join(n for n in names if (n if n.startswith('ansible.') else %r + n) in sys.modules))\n"
            % (PREFIX + "modules." + module, ON_DEMAND, PREFIX))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("module", ["share_migration", "share", "share_info", "volume", "volume_migrate", "data_copy"])
def test_importing_a_module_loads_no_driver_transport_or_openstack_client(module):
    assert imported_by(module) == []


@pytest.mark.parametrize("registry, table", [
    (share_registry, "SHARE_DRIVERS"), (volume_registry, "VOLUME_DRIVERS"), (transport_registry, "TRANSPORTS")])
def test_every_loader_returns_the_class_registered_under_its_name(registry, table):
    loaders = getattr(registry, table)
    assert loaders
    for name, load in loaders.items():
        cls = load()
        assert isinstance(cls, type) and cls.name == name, (name, cls)


def test_every_service_loader_returns_a_class():
    for kind, (_driver, load_openstack, load_local) in services_registry.IMPLEMENTATIONS.items():
        assert isinstance(load_openstack(), type) and isinstance(load_local(), type), kind
