"""Unit tests for plugins/module_utils/managers/volume.py: no local volume driver yet, a clear refusal."""

from __future__ import annotations

import pytest

from mobility_helpers import backend_spec

from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers.volume import LocalVolumeManager

MIGRATE = dict(volume="v1", host="devhost@file2#file2", cluster=None, force_host_copy=False, lock_volume=False,
               new_type=None, migration_policy=None)


@pytest.fixture
def ctx(tmp_path):
    return Context([backend_spec(tmp_path / "b", name="bt", driver="btrfs")])


def test_every_volume_request_is_refused_naming_the_backend(ctx):
    manager = LocalVolumeManager(ctx)
    expected = ("Cannot %s: volumes on the collection's own drivers (backend bt with driver btrfs) are not supported "
                "yet; volumes need a backend with driver cinder (declared drivers: btrfs)")
    cases = [
        (lambda: manager.run(dict(state="present", name="v1", size=1, volume_type=None, availability_zone=None,
                                  description=None)), "manage volume v1"),
        (lambda: manager.run(dict(state="absent", name="v1")), "manage volume v1"),
        (lambda: manager.run_info(dict(name=None)), "list volumes"),
        (manager.pools, "list volumes"),
        (lambda: manager.run_migrate(MIGRATE), "migrate volume v1"),
        (lambda: manager.run_migrate(dict(MIGRATE, host=None, new_type="gold")), "migrate volume v1"),
    ]
    for call, what in cases:
        with pytest.raises(InvalidRequest) as info:
            call()
        assert str(info.value) == expected % what


def test_conflicting_migration_options_are_refused_first(ctx):
    with pytest.raises(InvalidRequest, match="give host or cluster, not both"):
        LocalVolumeManager(ctx).run_migrate(dict(MIGRATE, cluster="c1@file1"))


def test_without_local_backends_the_refusal_reads_as_before():
    ctx = Context([{"name": "cloud1", "driver": "manila", "cloud": "lab"}])
    with pytest.raises(InvalidRequest) as info:
        LocalVolumeManager(ctx).run_info(dict(name=None))
    assert str(info.value) == "Cannot list volumes: volumes need a backend with driver cinder (declared drivers: manila)"
