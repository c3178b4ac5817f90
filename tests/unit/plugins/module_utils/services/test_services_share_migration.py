"""Unit tests for plugins/module_utils/services/share_migration.py: one interface, two state machines."""

from __future__ import annotations

import pytest

from mobility_helpers import backend_spec

from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.services.share_migration import (
    LocalShareMigrations, ManilaShareMigrations)
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits


class Recorder:
    """A stand-in state machine that records how the service called it."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        def record(*args, **kwargs):
            self.calls.append((method, args, kwargs))
            return {"changed": False}
        return record


def params(**over):
    p = dict(share="s1", state="started", destination_pool="localhost@bt#b", writable=True,
             preserve_metadata=False, preserve_snapshots=False, nondisruptive=False,
             force_host_assisted_migration=False, new_share_type=None, new_share_network=None,
             task_state=None, copy_job=None, copy_report=None, open_writers_wait=0)
    p.update(over)
    return p


@pytest.fixture
def ctx(tmp_path):
    ctx = Context([backend_spec(tmp_path / "pools", name="bt", driver="btrfs", pools=("a", "b")),
                   {"name": "cloud1", "driver": "manila", "cloud": "lab"}])
    ctx.waits = Waits(wait=True, timeout=77, sleep=3)
    return ctx


def test_local_start_takes_the_waits_from_the_context(ctx):
    manager = Recorder()
    LocalShareMigrations(ctx, manager).run(params(copy_job={"id": "j"}))
    flags = {"writable": True, "preserve_metadata": False, "preserve_snapshots": False, "nondisruptive": False}
    waits = {"wait": True, "timeout": 77, "sleep": 3}
    assert manager.calls == [("start", ("s1", "localhost@bt#b", flags, False, None),
                              dict(waits, copy_job={"id": "j"}, copy_report=None))]


def test_local_states_reach_the_state_machine(ctx):
    manager = Recorder()
    service = LocalShareMigrations(ctx, manager)
    service.run(params(state="completed", copy_report={"r": 1}, open_writers_wait=5))
    service.run(params(state="cancelled"))
    service.run(params(state="reset", task_state="none"))
    service.run(params(state="reset", task_state="migration_error"))
    assert manager.calls == [
        ("complete", ("s1", "localhost@bt#b"), {"copy_report": {"r": 1}, "open_writers_wait": 5}),
        ("cancel", ("s1",), {}),
        ("reset", ("s1", None), {}),
        ("reset", ("s1", "migration_error"), {}),
    ]


def test_local_refusal_of_a_share_network_names_the_btrfs_backend_not_posix(ctx):
    manager = Recorder()
    with pytest.raises(InvalidRequest) as info:
        LocalShareMigrations(ctx, manager).run(params(new_share_network="net1"))
    message = str(info.value)
    assert message == ("Cannot migrate share s1: new_share_network is not supported by backend bt with driver btrfs, "
                       "which has no share networks")
    assert "posix" not in message
    assert manager.calls == []


@pytest.mark.parametrize("state", ["started", "completed", "cancelled", "reset"])
def test_manila_refuses_copy_job_and_copy_report_in_every_state(ctx, state):
    manager = Recorder()
    with pytest.raises(InvalidRequest, match="Cannot use copy_job or copy_report with share s1 on backend cloud1"):
        ManilaShareMigrations(ctx, ctx.backends.openstack("manila")[0], manager).run(
            params(state=state, task_state="none", copy_report={"r": 1}))
    assert manager.calls == []


def test_manila_start_names_the_share_type_and_passes_the_waits(ctx):
    manager = Recorder()
    service = ManilaShareMigrations(ctx, ctx.backends.openstack("manila")[0], manager)
    with pytest.raises(InvalidRequest, match="in Manila new_share_type names an existing share type"):
        service.run(params(new_share_type={"name": "gold", "extra_specs": {"a": "b"}}))
    service.run(params(new_share_type={"name": "gold", "extra_specs": None}, new_share_network="net1"))
    service.run(params(state="cancelled"))
    waits = {"wait": True, "timeout": 77, "sleep": 3}
    assert manager.calls == [
        ("start", ("s1", "localhost@bt#b", {"writable": True, "preserve_metadata": False, "preserve_snapshots": False,
                                            "nondisruptive": False}, False, "gold", "net1"), waits),
        ("cancel", ("s1",), waits),
    ]
