"""Unit tests for plugins/module_utils/services/registry.py: one implementation picked per request."""

from __future__ import annotations

import pytest

from mobility_helpers import Env, backend_spec

from ansible_collections.storage.mobility.plugins.module_utils.cinder.volumes import CinderVolumeManager
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.volume import LocalVolumeManager
from ansible_collections.storage.mobility.plugins.module_utils.manila.replicas import ManilaReplicaManager
from ansible_collections.storage.mobility.plugins.module_utils.manila.shares import ManilaShareManager
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import (
    IMPLEMENTATIONS, local_service, service, share_info)
from ansible_collections.storage.mobility.plugins.module_utils.services.replica import ReplicaService
from ansible_collections.storage.mobility.plugins.module_utils.services.share import ShareService
from ansible_collections.storage.mobility.plugins.module_utils.services.share_migration import (
    LocalShareMigrations, ManilaShareMigrations, ShareMigrationService)
from ansible_collections.storage.mobility.plugins.module_utils.services.volume import VolumeService
from ansible_collections.storage.mobility.plugins.module_utils.services.volume_migration import VolumeMigrationService

MANILA = {"name": "cloud1", "driver": "manila", "cloud": "lab"}
CINDER = {"name": "blocks", "driver": "cinder", "cloud": "lab"}
INTERFACES = {"share": ShareService, "share_migration": ShareMigrationService, "replica": ReplicaService,
              "volume": VolumeService, "volume_migration": VolumeMigrationService}


def test_every_implementation_implements_the_interface_of_its_kind():
    assert sorted(IMPLEMENTATIONS) == sorted(INTERFACES)
    for kind, (driver, load_openstack, load_local) in IMPLEMENTATIONS.items():
        assert driver in ("manila", "cinder")
        openstack, local = load_openstack(), load_local()
        assert issubclass(openstack, INTERFACES[kind]) and issubclass(local, INTERFACES[kind])
        assert not openstack.__abstractmethods__ and not local.__abstractmethods__


def test_only_local_backends_pick_the_collections_own_implementations(tmp_path):
    ctx = Env(tmp_path).ctx()
    assert isinstance(service(ctx, "share", pool=Env.A, share="s1"), ShareManager)
    assert isinstance(service(ctx, "share_migration", pool=Env.B, share="s1"), LocalShareMigrations)
    assert isinstance(service(ctx, "replica"), LocalReplicaManager)
    assert isinstance(service(ctx, "volume"), LocalVolumeManager)
    assert isinstance(service(ctx, "volume_migration"), LocalVolumeManager)


def test_a_declared_openstack_backend_serves_what_the_local_backends_do_not(tmp_path):
    ctx = Context([backend_spec(tmp_path / "pools"), MANILA, CINDER])
    # a pool of a declared local backend stays local, a pool Manila names goes to Manila
    assert isinstance(service(ctx, "share", pool=Env.A), ShareManager)
    chosen = service(ctx, "share", pool="devhost@alpha#p1")
    assert isinstance(chosen, ManilaShareManager) and chosen.backend.name == "cloud1"
    # a share not in the local records goes to Manila
    assert isinstance(service(ctx, "share_migration", share="elsewhere"), ManilaShareMigrations)
    assert isinstance(service(ctx, "replica", pool="devhost@beta#p1"), ManilaReplicaManager)
    assert isinstance(service(ctx, "replica", pool=Env.B), LocalReplicaManager)
    assert isinstance(service(ctx, "volume"), CinderVolumeManager)
    assert service(ctx, "volume_migration").backend.name == "blocks"
    # the snapshot and pool modules ask the collection's own implementation whatever else is declared
    assert isinstance(local_service(ctx, "share"), ShareManager)


def test_a_share_in_the_local_records_stays_local_although_manila_is_declared(tmp_path):
    env = Env(tmp_path)
    env.shares().present("s1", Env.A, 1, "NFS", None, None, None)
    ctx = Context(env.backends + [MANILA])
    assert isinstance(service(ctx, "share", share="s1"), ShareManager)
    assert isinstance(service(ctx, "share_migration", share="s1", pool="devhost@alpha#p1"), ManilaShareMigrations)
    assert isinstance(service(ctx, "share_migration", share="s1"), LocalShareMigrations)


def test_two_backends_with_one_openstack_driver_are_refused():
    ctx = Context([MANILA, dict(MANILA, name="cloud2")])
    with pytest.raises(InvalidRequest, match="Backends cloud1, cloud2 all use driver manila"):
        service(ctx, "replica")


def test_share_info_without_openstack_lists_the_local_shares(tmp_path):
    env = Env(tmp_path)
    env.shares().present("s1", Env.A, 1, "NFS", None, None, None)
    env.shares().present("s2", Env.B, 1, "NFS", None, None, None)
    result = share_info(env.ctx())
    assert result["changed"] is False
    assert sorted(s["name"] for s in result["shares"]) == ["s1", "s2"]
    assert [s["name"] for s in share_info(env.ctx(), pool=Env.B)["shares"]] == ["s2"]
