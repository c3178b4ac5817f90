"""Unit tests for plugins/module_utils/states.py against the reference vocabulary (REFERENCE.md).

The expected sets are written out here from the reference, not imported, so a change of the
code's sets that departs from the reference fails.
"""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError

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


# --------------------------------------------------------------------------- the four flags

def test_the_four_migration_flags_are_the_reference_parameters():
    assert sorted(states.MIGRATION_FLAGS) == ["nondisruptive", "preserve_metadata", "preserve_snapshots", "writable"]


# --------------------------------------------------------------------------- the state machine
# The reference's paths written out (REFERENCE.md, "Transitions"); each must be a chain of
# transitions the machine allows, with the reference's own transitions alone.
DRIVER_PATH = [None, "migration_starting", "migration_driver_starting", "migration_driver_in_progress",
               "migration_driver_phase1_done", "migration_completing", "migration_success"]
HOST_PATH = [None, "migration_starting", "data_copying_starting", "data_copying_in_progress",
             "data_copying_completing", "data_copying_completed", "migration_completing", "migration_success"]
CANCEL_PATH = ["migration_cancel_in_progress", "migration_cancelled"]
REFERENCE_CANCELLABLE = {"migration_driver_in_progress", "migration_driver_phase1_done",
                         "data_copying_in_progress", "data_copying_completed"}


@pytest.mark.parametrize("path", [DRIVER_PATH, HOST_PATH], ids=["driver", "host"])
def test_the_reference_paths_are_transitions_of_the_reference(path):
    for source, target in zip(path, path[1:]):
        assert states.may_transition(source, target, reference=True), (source, target)
        assert states.may_transition(source, target), (source, target)


def test_phase_2_starts_only_from_phase_1_done():
    assert set(states.sources_of("migration_completing")) == {"migration_driver_phase1_done", "data_copying_completed"}
    assert set(states.sources_of("migration_completing", reference=True)) == {
        "migration_driver_phase1_done", "data_copying_completed"}
    assert set(states.sources_of("migration_success")) == {"migration_completing"}


def test_cancel_in_the_reference_and_beyond_it():
    assert set(states.sources_of("migration_cancel_in_progress", reference=True)) == REFERENCE_CANCELLABLE
    # Beyond: a run that died while starting, and a switchover that switched nothing yet.
    assert set(states.sources_of("migration_cancel_in_progress")) == REFERENCE_CANCELLABLE | {
        "migration_starting", "migration_driver_starting", "data_copying_starting", "migration_completing"}
    assert set(states.sources_of("migration_cancelled")) == {"migration_cancel_in_progress"}


def test_a_new_migration_starts_only_when_the_share_is_not_busy():
    assert set(states.sources_of("migration_starting")) == REFERENCE_NOT_BUSY | {None}


@pytest.mark.parametrize("source", ["migration_success", "migration_cancelled", "data_copying_error", None])
def test_an_ended_migration_goes_nowhere_but_to_a_new_start_or_its_refusal(source):
    targets = {t for t in REFERENCE_TASK_STATES if states.may_transition(source, t)}
    assert targets == {"migration_starting", "migration_error"}


def test_every_transition_names_known_task_states():
    known = set(REFERENCE_TASK_STATES) | {None}
    for source, target in states.MIGRATION_TRANSITIONS:
        assert source in known and target in known
    assert states.REFERENCE_TRANSITIONS <= states.MIGRATION_TRANSITIONS


@pytest.mark.parametrize("source, target", [
    ("migration_success", "migration_completing"),
    ("migration_driver_in_progress", "migration_success"),
    ("data_copying_starting", "data_copying_completed"),
    ("migration_cancelled", "migration_cancel_in_progress"),
    (None, "migration_driver_phase1_done"),
])
def test_an_illegal_transition_is_refused_naming_both_states(source, target):
    assert not states.may_transition(source, target)
    with pytest.raises(StorageError) as info:
        states.check_transition(source, target)
    assert "%s -> %s" % (source, target) in str(info.value)


def test_a_legal_transition_passes():
    states.check_transition("migration_driver_in_progress", "migration_driver_phase1_done")


def test_reset_targets():
    assert states.may_reset(None) and states.may_reset("migration_error")
    assert not states.may_reset("migration_cancel_in_progress")
    assert not states.may_reset("migration_driver_starting")
    assert not states.may_reset("no_such_state")


def test_volume_state_machines_allow_cinders_paths_and_refuse_the_rest():
    from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
    from ansible_collections.storage.mobility.plugins.module_utils.states import check_volume_change
    for before, after in [((None, None), ("creating", None)),
                          (("available", None), ("attaching", None)), (("attaching", None), ("in-use", None)),
                          (("in-use", None), ("detaching", None)), (("available", "success"), ("maintenance", "starting")),
                          (("maintenance", "completing"), ("available", "success")),
                          (("available", "migrating"), ("available", "error"))]:
        check_volume_change("v", before, after)
    for before, after in [(("in-use", None), ("deleting", None)), (("available", None), ("available", "success")),
                          (("available", None), ("in-use", None)),
                          (("available", "migrating"), ("available", "starting"))]:
        with pytest.raises(StorageError, match="the volume state machine does not allow"):
            check_volume_change("v", before, after)
