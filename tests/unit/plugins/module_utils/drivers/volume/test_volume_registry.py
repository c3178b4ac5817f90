"""Unit tests for plugins/module_utils/drivers/volume/{base,registry}.py: the volume driver seam."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.common import backends_argument_spec, driver_names
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.registry import share_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume import registry
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.base import VolumeDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest


class FileVolumes(VolumeDriver):
    """The smallest complete volume driver: every hook, nothing behind it."""

    name = "file"

    def get_pool_stats(self, pool):
        return {"total_capacity_gb": 1}

    def create_volume(self, pool, volume):
        return True

    def delete_volume(self, pool, volume):
        return False

    def extend_volume(self, pool, volume, new_size):
        return False

    def volume_info(self, pool, volume):
        return None

    def initialize_connection(self, pool, volume, connector):
        return {"driver_volume_type": "local", "data": {}}

    def terminate_connection(self, pool, volume, connector):
        return False


def backend(driver):
    return Backends([{"name": "be1", "driver": driver, "pools": {"a": "/srv/a"}}]).backends[0]


def test_the_registry_holds_the_file_driver_and_refuses_others_naming_the_choices():
    assert registry.volume_driver_names() == ["file"]
    assert registry.is_volume_backend(backend("file")) and not registry.is_volume_backend(backend("posix"))
    with pytest.raises(InvalidRequest) as info:
        registry.volume_driver(backend("posix"), transport=None)
    assert str(info.value) == ("Backend be1 uses driver 'posix', which is not a volume driver: known volume drivers "
                               "are file")


def test_a_registered_driver_is_made_for_its_backend_and_becomes_a_driver_choice(monkeypatch):
    monkeypatch.setitem(registry.VOLUME_DRIVERS, "file", lambda: FileVolumes)
    made = registry.volume_driver(backend("file"), transport="transport")
    assert isinstance(made, FileVolumes) and made.backend.name == "be1" and made.transport == "transport"
    assert driver_names() == share_driver_names() + ["file", "manila", "cinder"]
    assert "file" in backends_argument_spec()["backends"]["options"]["driver"]["choices"]
    # a driver that cannot move data itself says so; the manager then copies through a host
    assert made.migrate_volume(None, None, {"name": "v"}) is False


def test_a_driver_must_implement_every_hook():
    class Partial(VolumeDriver):
        name = "partial"

        def create_volume(self, pool, volume):
            return True

    with pytest.raises(TypeError, match="abstract"):
        Partial(backend("posix"), None)  # pylint: disable=abstract-class-instantiated
    assert sorted(VolumeDriver.__abstractmethods__) == [
        "create_volume", "delete_volume", "extend_volume", "get_pool_stats", "initialize_connection",
        "terminate_connection", "volume_info"]
