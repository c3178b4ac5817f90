"""Unit tests for plugins/module_utils/managers/migration_steps.py: every task_state a migration
records passes the state machine of states.py; an illegal one is refused before anything is written.
Real shares in temporary pools (posix driver)."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_steps import MigrationSteps
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager

from mobility_helpers import Env


@pytest.fixture
def env(tmp_path):
    env = Env(tmp_path)
    env.create_share("s1")
    return env


def steps_of(env):
    ctx = env.ctx()
    return MigrationSteps(ctx, ShareManager(ctx), env.clock.clock, env.clock.sleep)


@pytest.mark.parametrize("task_state, target", [
    (None, states.MIGRATION_COMPLETING),
    (states.MIGRATION_SUCCESS, states.MIGRATION_DRIVER_PHASE1_DONE),
    (states.DATA_COPYING_STARTING, states.DATA_COPYING_COMPLETED),
])
def test_an_illegal_transition_raises_naming_both_and_writes_nothing(env, task_state, target):
    env.edit("s1", task_state=task_state)
    steps = steps_of(env)
    record, pool = env.load("s1")
    before = env.state()
    with pytest.raises(StorageError) as info:
        steps.set_state(record, pool, "a step the machine does not know", target)
    assert "%s -> %s" % (task_state, target) in str(info.value)
    assert record["task_state"] == task_state, "the record in memory is untouched too"
    assert env.state() == before


def test_a_legal_transition_is_recorded_with_its_progress(env):
    env.edit("s1", task_state=states.MIGRATION_DRIVER_IN_PROGRESS, progress={"total_progress": 40})
    steps = steps_of(env)
    record, pool = env.load("s1")
    steps.set_state(record, pool, "phase 1 done", states.MIGRATION_DRIVER_PHASE1_DONE)
    saved = env.read_record(env.A, "s1")
    assert saved["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert saved["progress"]["total_progress"] == 100


def test_record_state_is_the_administrators_override(env):
    """Only a reset comes here: it records what the machine would refuse."""
    steps = steps_of(env)
    record, pool = env.load("s1")
    steps.record_state(record, pool, "task_state reset by an administrator", states.MIGRATION_COMPLETING)
    assert env.read_record(env.A, "s1")["task_state"] == states.MIGRATION_COMPLETING


def test_instance_finds_by_role():
    record = {"instances": [{"role": "active", "pool": "a"}, {"role": "destination", "pool": "b"}]}
    assert MigrationSteps.instance(record, "destination")["pool"] == "b"
    assert MigrationSteps.instance(record, "replica") is None
