"""Unit tests for plugins/module_utils/managers/migration_mechanism.py and how the manager picks
the mechanism of a migration (managers/share_migration.py MECHANISMS). The mechanisms' own paths
are tested through the manager in test_share_migration.py (driver) and test_host_assisted.py
(host), on real shares in temporary pools."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.managers.driver_assisted import DriverAssisted
from ansible_collections.storage.mobility.plugins.module_utils.managers.host_assisted import HostAssisted
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_mechanism import MigrationMechanism

from mobility_helpers import Env


@pytest.fixture
def env(tmp_path):
    env = Env(tmp_path)
    env.create_share("s1")
    return env


@pytest.mark.parametrize("recorded, expected", [("driver", DriverAssisted), ("host", HostAssisted),
                                                (None, DriverAssisted)])
def test_the_manager_asks_the_mechanism_the_record_names(env, recorded, expected):
    """A record that names no mechanism (written before mechanisms were recorded) is driver-assisted."""
    mechanism = env.migrations()._mechanism({"migration": {"mechanism": recorded}})
    assert mechanism.__class__ is expected and mechanism.name == (recorded or "driver")


def test_a_running_host_migration_is_served_when_new_ones_may_not_use_the_data_mover(env):
    """host_assisted=False only stops new host-assisted migrations; one already running is still
    cancelled by the host mechanism (its copy job checked, the destination removed)."""
    env.migrations().start("s1", env.B, {}, force_host_assisted=True)
    assert env.read_record(env.A, "s1")["migration"]["mechanism"] == "host"
    result = env.migrations(host_assisted=False).cancel("s1")
    assert result["task_state"] == states.MIGRATION_CANCELLED
    assert env.record_pools("s1") == [env.A]


class Bare(MigrationMechanism):
    name = "bare"


@pytest.mark.parametrize("call", [
    lambda m: m.start({}, None, {}, None, {}, False, 1, 1),
    lambda m: m.attach({}, None, {}, False, 1, 1),
    lambda m: m.complete({}, None, {}, None, None, None, 0),
])
def test_a_mechanism_must_provide_its_data_steps(env, call):
    with pytest.raises(NotImplementedError):
        call(Bare(env.migrations().steps))


def test_a_switch_that_made_the_destination_available_is_switched_for_every_mechanism(env):
    bare = Bare(env.migrations().steps)
    record = {"instances": [{"role": "destination", "status": states.MIGRATING_TO}], "migration": {}}
    assert bare.switched(record, None, None) is False
    record["instances"][0]["status"] = states.AVAILABLE
    assert bare.switched(record, None, None) is True
    # the optional steps do nothing by default
    assert bare.check_cancel(record) is None and bare.cancel(record, None, None) is None
    assert bare.check_completion_report(record, {}) is None and bare.note_switch_cleanup(record, None) is None
