"""Unit tests for plugins/module_utils/managers/replica.py: the collection's own drivers refuse replicas."""

from __future__ import annotations

import pytest

from mobility_helpers import backend_spec

from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager

PARAMS = dict(share="s1", state="promoted", pool=None, replica_id=None, availability_zone="nova", force=False,
              quiesce_wait_time=None, status=None, replica_state=None)


def test_refusal_names_the_backend_the_pool_belongs_to_and_its_driver(tmp_path):
    ctx = Context([backend_spec(tmp_path / "p", name="px"),
                   backend_spec(tmp_path / "b", name="bt", driver="btrfs")])
    with pytest.raises(InvalidRequest) as info:
        LocalReplicaManager(ctx).run(dict(PARAMS, pool="localhost@bt#a"))
    assert str(info.value) == ("Cannot manage replicas of share s1: replicas on the collection's own drivers "
                               "(backend bt with driver btrfs) are not supported yet; replicas need a backend "
                               "with driver manila (declared drivers: btrfs, posix)")


def test_refusal_comes_before_the_option_checks_and_names_every_local_backend(tmp_path):
    # availability_zone with state promoted would be refused by the option check; the missing
    # replication support is what the user must hear first (as before services existed)
    ctx = Context([backend_spec(tmp_path / "p", name="px"),
                   backend_spec(tmp_path / "b", name="bt", driver="btrfs")])
    with pytest.raises(InvalidRequest, match="backend px with driver posix, backend bt with driver btrfs"):
        LocalReplicaManager(ctx).run(PARAMS)


def test_without_local_backends_the_refusal_reads_as_before():
    ctx = Context([{"name": "blocks", "driver": "cinder", "cloud": "lab"}])
    manager = LocalReplicaManager(ctx)
    for call in (lambda: manager.present("s1"), lambda: manager.absent("s1"), lambda: manager.promoted("s1"),
                 lambda: manager.resynced("s1"), lambda: manager.info("s1")):
        with pytest.raises(InvalidRequest) as info:
            call()
        assert str(info.value) == ("Cannot manage replicas of share s1: replicas need a backend with driver manila "
                                   "(declared drivers: cinder)")
