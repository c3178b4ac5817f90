"""Unit tests for plugins/module_utils/states.py against the reference vocabulary (REFERENCE.md).

The expected sets are written out here from the reference, not imported, so a change of the
code's sets that departs from the reference fails.
"""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states

REFERENCE_TASK_STATES = [
    "migration_starting", "migration_in_progress", "migration_completing", "migration_success",
    "migration_error", "migration_cancelled", "migration_cancel_in_progress", "migration_driver_starting",
    "migration_driver_in_progress", "migration_driver_phase1_done", "data_copying_starting",
    "data_copying_in_progress", "data_copying_completing", "data_copying_completed",
    "data_copying_cancelled", "data_copying_error",
]
# Busy: every migration_* and migration_driver_* state, and data_copying_starting / in_progress /
# completing / completed; minus the not-busy ones.
REFERENCE_NOT_BUSY = {"migration_success", "migration_error", "migration_cancelled",
                      "data_copying_cancelled", "data_copying_error"}
REFERENCE_BUSY = {
    "migration_starting", "migration_in_progress", "migration_completing", "migration_cancel_in_progress",
    "migration_driver_starting", "migration_driver_in_progress", "migration_driver_phase1_done",
    "data_copying_starting", "data_copying_in_progress", "data_copying_completing", "data_copying_completed",
}
REFERENCE_INSTANCE_STATUSES = {"creating", "available", "error", "deleting", "error_deleting", "migrating",
                               "migrating_to", "inactive", "replication_change"}


def test_task_states_are_the_reference_values_verbatim():
    assert list(states.TASK_STATES) == REFERENCE_TASK_STATES
    assert set(states.INSTANCE_STATUSES) == REFERENCE_INSTANCE_STATUSES
    assert set(states.REPLICA_STATES) == {"active", "in_sync", "out_of_sync", "error"}


def test_busy_and_not_busy_partition_every_task_state():
    assert REFERENCE_BUSY | REFERENCE_NOT_BUSY == set(REFERENCE_TASK_STATES)
    assert set(states.BUSY_TASK_STATES) == REFERENCE_BUSY
    assert set(states.IDLE_TASK_STATES) == REFERENCE_NOT_BUSY


@pytest.mark.parametrize("task_state", sorted(REFERENCE_BUSY))
def test_is_busy_in_each_busy_state(task_state):
    assert states.is_busy(task_state) is True


@pytest.mark.parametrize("task_state", sorted(REFERENCE_NOT_BUSY) + [None])
def test_is_not_busy_in_each_idle_state_and_without_a_task(task_state):
    assert states.is_busy(task_state) is False


def test_reset_allows_every_value_but_driver_starting_and_cancel_in_progress():
    assert set(states.RESETTABLE_TASK_STATES) == set(REFERENCE_TASK_STATES) - {
        "migration_driver_starting", "migration_cancel_in_progress"}


def test_complete_and_cancel_sets():
    assert set(states.COMPLETABLE_TASK_STATES) == {"migration_driver_phase1_done", "data_copying_completed"}
    assert set(states.CANCELLABLE_TASK_STATES) == {"migration_driver_in_progress", "migration_driver_phase1_done",
                                                   "data_copying_in_progress", "data_copying_completed"}


STARTING = ["migration_starting", "migration_driver_starting", "data_copying_starting"]
TERMINAL_AND_PHASE1_DONE = ["migration_success", "migration_error", "migration_cancelled", "data_copying_cancelled",
                            "data_copying_error", "migration_driver_phase1_done", "data_copying_completed"]


@pytest.mark.parametrize("task_state", STARTING)
@pytest.mark.parametrize("reported", [None, 0, 37, 100])
def test_progress_is_fixed_at_zero_in_the_starting_states(task_state, reported):
    assert states.total_progress(task_state, reported) == 0


@pytest.mark.parametrize("task_state", TERMINAL_AND_PHASE1_DONE)
@pytest.mark.parametrize("reported", [None, 0, 37])
def test_progress_is_fixed_at_100_in_terminal_and_phase1_done_states(task_state, reported):
    assert states.total_progress(task_state, reported) == 100


@pytest.mark.parametrize("task_state", ["migration_driver_in_progress", "data_copying_in_progress"])
def test_progress_in_between_is_what_the_driver_or_copy_reports(task_state):
    assert states.total_progress(task_state, 42) == 42
    assert states.total_progress(task_state, "55") == 55
    assert states.total_progress(task_state, None) == 0
    assert states.total_progress(task_state, 150) == 100  # clamped
    assert states.total_progress(task_state, -3) == 0


def test_no_task_means_no_progress():
    assert states.total_progress(None) is None
