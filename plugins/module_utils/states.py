# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reference vocabulary: instance statuses, task_state values, busy rules, progress rules,
the four migration flags, and the share migration state machine (which task_state may go to which).

Defined once here; the collection's own migration manager (managers/share_migration.py and its
mechanisms) and the Manila implementation (manila/migration.py) both read them from this file.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError

# Share instance statuses.
CREATING = 'creating'
AVAILABLE = 'available'
ERROR = 'error'
DELETING = 'deleting'
ERROR_DELETING = 'error_deleting'
MIGRATING = 'migrating'
MIGRATING_TO = 'migrating_to'
INACTIVE = 'inactive'
REPLICATION_CHANGE = 'replication_change'
INSTANCE_STATUSES = (CREATING, AVAILABLE, ERROR, DELETING, ERROR_DELETING, MIGRATING,
                     MIGRATING_TO, INACTIVE, REPLICATION_CHANGE)

# task_state values, verbatim from the reference.
MIGRATION_STARTING = 'migration_starting'
MIGRATION_IN_PROGRESS = 'migration_in_progress'
MIGRATION_COMPLETING = 'migration_completing'
MIGRATION_SUCCESS = 'migration_success'
MIGRATION_ERROR = 'migration_error'
MIGRATION_CANCELLED = 'migration_cancelled'
MIGRATION_CANCEL_IN_PROGRESS = 'migration_cancel_in_progress'
MIGRATION_DRIVER_STARTING = 'migration_driver_starting'
MIGRATION_DRIVER_IN_PROGRESS = 'migration_driver_in_progress'
MIGRATION_DRIVER_PHASE1_DONE = 'migration_driver_phase1_done'
DATA_COPYING_STARTING = 'data_copying_starting'
DATA_COPYING_IN_PROGRESS = 'data_copying_in_progress'
DATA_COPYING_COMPLETING = 'data_copying_completing'
DATA_COPYING_COMPLETED = 'data_copying_completed'
DATA_COPYING_CANCELLED = 'data_copying_cancelled'
DATA_COPYING_ERROR = 'data_copying_error'

TASK_STATES = (
    MIGRATION_STARTING, MIGRATION_IN_PROGRESS, MIGRATION_COMPLETING, MIGRATION_SUCCESS,
    MIGRATION_ERROR, MIGRATION_CANCELLED, MIGRATION_CANCEL_IN_PROGRESS,
    MIGRATION_DRIVER_STARTING, MIGRATION_DRIVER_IN_PROGRESS, MIGRATION_DRIVER_PHASE1_DONE,
    DATA_COPYING_STARTING, DATA_COPYING_IN_PROGRESS, DATA_COPYING_COMPLETING,
    DATA_COPYING_COMPLETED, DATA_COPYING_CANCELLED, DATA_COPYING_ERROR,
)

# Not busy: the share accepts other actions in these (and with no task_state at all).
IDLE_TASK_STATES = (MIGRATION_SUCCESS, MIGRATION_ERROR, MIGRATION_CANCELLED,
                    DATA_COPYING_CANCELLED, DATA_COPYING_ERROR)
BUSY_TASK_STATES = tuple(s for s in TASK_STATES if s not in IDLE_TASK_STATES)

# Values an administrator may reset task_state to (None clears it).
RESETTABLE_TASK_STATES = tuple(s for s in TASK_STATES
                               if s not in (MIGRATION_DRIVER_STARTING, MIGRATION_CANCEL_IN_PROGRESS))

# Phase 2 may start from these; cancel is allowed from these.
COMPLETABLE_TASK_STATES = (MIGRATION_DRIVER_PHASE1_DONE, DATA_COPYING_COMPLETED)
CANCELLABLE_TASK_STATES = (MIGRATION_DRIVER_IN_PROGRESS, MIGRATION_DRIVER_PHASE1_DONE,
                           DATA_COPYING_IN_PROGRESS, DATA_COPYING_COMPLETED)

# Progress is fixed at 0 in the starting states and at 100 in the terminal and phase-1-done
# states; in between the driver or the data copy reports it.
PROGRESS_ZERO_STATES = (MIGRATION_STARTING, MIGRATION_DRIVER_STARTING, DATA_COPYING_STARTING)
PROGRESS_FULL_STATES = (MIGRATION_SUCCESS, MIGRATION_ERROR, MIGRATION_CANCELLED,
                        MIGRATION_DRIVER_PHASE1_DONE, DATA_COPYING_COMPLETED,
                        DATA_COPYING_CANCELLED, DATA_COPYING_ERROR)

# Share replication (docs/replication.md): replica_state values, the replication types, and
# which of them the collection's own drivers serve (writable needs synchronous mirroring).
REPLICA_ACTIVE = 'active'
REPLICA_IN_SYNC = 'in_sync'
REPLICA_OUT_OF_SYNC = 'out_of_sync'
REPLICA_ERROR = 'error'
REPLICA_STATES = (REPLICA_ACTIVE, REPLICA_IN_SYNC, REPLICA_OUT_OF_SYNC, REPLICA_ERROR)
# A secondary may be reset to these (never to active: promote it instead).
RESETTABLE_SECONDARY_STATES = (REPLICA_IN_SYNC, REPLICA_OUT_OF_SYNC, REPLICA_ERROR)
REPLICA_STATUSES = (AVAILABLE, ERROR, CREATING, DELETING, ERROR_DELETING)
REPLICATION_TYPES = ('readable', 'writable', 'dr')
LOCAL_REPLICATION_TYPES = ('readable', 'dr')
# A new secondary starts out_of_sync and becomes in_sync after its first verified update.
NEW_REPLICA_STATE = REPLICA_OUT_OF_SYNC

# The four migration flags of the reference API: each one the user asks for must be honoured by
# the driver, and a host-assisted copy honours none of them.
MIGRATION_FLAGS = ('writable', 'preserve_metadata', 'nondisruptive', 'preserve_snapshots')

# -- the phases of a share migration ----------------------------------------------------------
# Phase 1 is still running in these (a wait keeps waiting), done in these (phase 2 may start:
# the completable states), failed or ended in these.
PHASE1_PENDING = (MIGRATION_STARTING, MIGRATION_IN_PROGRESS, MIGRATION_DRIVER_STARTING,
                  MIGRATION_DRIVER_IN_PROGRESS, DATA_COPYING_STARTING,
                  DATA_COPYING_IN_PROGRESS, DATA_COPYING_COMPLETING)
PHASE1_DONE = COMPLETABLE_TASK_STATES
PHASE1_FAILED = (MIGRATION_ERROR, DATA_COPYING_ERROR, MIGRATION_CANCELLED, DATA_COPYING_CANCELLED)
# The host copy runs (a data node copies, a copy report is awaited) in these.
DATA_COPYING_PENDING = (DATA_COPYING_STARTING, DATA_COPYING_IN_PROGRESS, DATA_COPYING_COMPLETING)
# The driver or the data copy reports a live progress figure in these.
LIVE_PROGRESS_STATES = (MIGRATION_DRIVER_IN_PROGRESS, DATA_COPYING_IN_PROGRESS)
# Beyond the reference: a run that died while starting leaves one of these; cancel cleans it up.
RECOVERY_CANCELLABLE = (MIGRATION_STARTING, MIGRATION_DRIVER_STARTING, DATA_COPYING_STARTING)
# No migration runs: a new one may start (None is no task_state at all).
STARTABLE = (None,) + IDLE_TASK_STATES


# -- the share migration state machine ---------------------------------------------------------
def _edges(sources, targets):
    return [(source, target) for source in sources for target in targets]


# The transitions of the reference (REFERENCE.md, "Transitions").
REFERENCE_TRANSITIONS = frozenset(
    _edges(STARTABLE, (MIGRATION_STARTING,))
    # driver path
    + _edges((MIGRATION_STARTING,), (MIGRATION_DRIVER_STARTING, DATA_COPYING_STARTING, MIGRATION_ERROR))
    + _edges((MIGRATION_DRIVER_STARTING,), (MIGRATION_DRIVER_IN_PROGRESS, MIGRATION_ERROR))
    + _edges((MIGRATION_DRIVER_IN_PROGRESS,), (MIGRATION_DRIVER_PHASE1_DONE, MIGRATION_ERROR))
    # host path
    + _edges((DATA_COPYING_STARTING,), (DATA_COPYING_IN_PROGRESS,))
    + _edges((DATA_COPYING_IN_PROGRESS,), (DATA_COPYING_COMPLETING,))
    + _edges((DATA_COPYING_COMPLETING,), (DATA_COPYING_COMPLETED,))
    + _edges(DATA_COPYING_PENDING, (DATA_COPYING_ERROR,))
    # phase 2
    + _edges(COMPLETABLE_TASK_STATES, (MIGRATION_COMPLETING,))
    + _edges((MIGRATION_COMPLETING,), (MIGRATION_SUCCESS,))
    # cancel
    + _edges(CANCELLABLE_TASK_STATES, (MIGRATION_CANCEL_IN_PROGRESS,))
    + _edges((MIGRATION_CANCEL_IN_PROGRESS,), (MIGRATION_CANCELLED,))
)

# Beyond the reference (docs/share_migration.md): what this collection adds to it.
EXTRA_TRANSITIONS = frozenset(
    # A driver that cannot honour a requested flag: migration_error without starting anything.
    _edges(STARTABLE, (MIGRATION_ERROR,))
    # Any failure in phase 1 (also one while its last step was being recorded) ends in
    # migration_error, with the source restored.
    + _edges(PHASE1_PENDING + PHASE1_DONE, (MIGRATION_ERROR,))
    # A copy report may arrive before the running copy was recorded; the copy job of a rerun is
    # recorded again; a rerun after a crash between the two steps of taking a report repeats it.
    + _edges((DATA_COPYING_STARTING,), (DATA_COPYING_COMPLETING,))
    + [(DATA_COPYING_IN_PROGRESS, DATA_COPYING_IN_PROGRESS), (DATA_COPYING_COMPLETING, DATA_COPYING_COMPLETING)]
    # A switchover that switched nothing yet (it failed, was refused, or its final pass failed)
    # goes back to the phase-1-done state it started from, or may be cancelled.
    + _edges((MIGRATION_COMPLETING,), PHASE1_DONE + (MIGRATION_CANCEL_IN_PROGRESS,))
    # A run that died while starting leaves a starting state; cancel cleans it up.
    + _edges(RECOVERY_CANCELLABLE, (MIGRATION_CANCEL_IN_PROGRESS,))
)

MIGRATION_TRANSITIONS = REFERENCE_TRANSITIONS | EXTRA_TRANSITIONS


def may_transition(from_state, to_state, reference=False):
    """True when a share migration may go from ``from_state`` to ``to_state`` (None: no task).

    ``reference`` limits the answer to the reference's own transitions (what Manila allows)."""
    return (from_state, to_state) in (REFERENCE_TRANSITIONS if reference else MIGRATION_TRANSITIONS)


def sources_of(to_state, reference=False):
    """Every task_state from which a migration may go to ``to_state``, in TASK_STATES order."""
    return tuple(s for s in (None,) + TASK_STATES if may_transition(s, to_state, reference))


def check_transition(from_state, to_state):
    """Raise StorageError for a transition the state machine does not know: that is a bug in the
    caller, and nothing may be recorded."""
    if not may_transition(from_state, to_state):
        raise StorageError('Refusing to record task_state %s -> %s: the share migration state machine does not '
                           'allow that transition (a bug in storage.mobility; nothing was recorded)'
                           % (from_state, to_state))


def may_reset(task_state):
    """An administrator may reset task_state to a value of RESETTABLE_TASK_STATES or to None."""
    return task_state is None or task_state in RESETTABLE_TASK_STATES


def is_busy(task_state):
    """True when ``task_state`` blocks other actions on the share."""
    return task_state in BUSY_TASK_STATES


def total_progress(task_state, reported=None):
    """``total_progress`` (0-100) as the reference computes it for ``task_state``.

    ``reported`` is what the driver or the copy reports for the in-between states.
    """
    if task_state in PROGRESS_ZERO_STATES:
        return 0
    if task_state in PROGRESS_FULL_STATES:
        return 100
    if task_state is None:
        return None
    if reported is None:
        return 0
    return max(0, min(100, int(reported)))


# -- volumes (Cinder's vocabulary) ------------------------------------------------------------
# A volume's status.
VOLUME_CREATING = 'creating'
VOLUME_AVAILABLE = 'available'
VOLUME_ATTACHING = 'attaching'
VOLUME_IN_USE = 'in-use'
VOLUME_DETACHING = 'detaching'
VOLUME_EXTENDING = 'extending'
VOLUME_MAINTENANCE = 'maintenance'
VOLUME_DELETING = 'deleting'
VOLUME_ERROR = 'error'
VOLUME_STATUSES = (VOLUME_CREATING, VOLUME_AVAILABLE, VOLUME_ATTACHING, VOLUME_IN_USE, VOLUME_DETACHING,
                   VOLUME_EXTENDING, VOLUME_MAINTENANCE, VOLUME_DELETING, VOLUME_ERROR)
# A volume's migration_status (None: it never migrated).
VOLUME_MIGRATION_STARTING = 'starting'
VOLUME_MIGRATION_MIGRATING = 'migrating'
VOLUME_MIGRATION_ATTACHABLE = 'migrating_attachable'
VOLUME_MIGRATION_COMPLETING = 'completing'
VOLUME_MIGRATION_SUCCESS = 'success'
VOLUME_MIGRATION_ERROR = 'error'
VOLUME_MIGRATION_STATUSES = (None, VOLUME_MIGRATION_STARTING, VOLUME_MIGRATION_MIGRATING, VOLUME_MIGRATION_ATTACHABLE,
                             VOLUME_MIGRATION_COMPLETING, VOLUME_MIGRATION_SUCCESS, VOLUME_MIGRATION_ERROR)
# A new migration may start from these (Cinder: none, error or success).
VOLUME_MIGRATION_STARTABLE = (None, VOLUME_MIGRATION_SUCCESS, VOLUME_MIGRATION_ERROR)
# A migration runs in these: nothing else may change the volume.
VOLUME_MIGRATION_RUNNING = (VOLUME_MIGRATION_STARTING, VOLUME_MIGRATION_MIGRATING, VOLUME_MIGRATION_ATTACHABLE,
                            VOLUME_MIGRATION_COMPLETING)

VOLUME_STATUS_TRANSITIONS = frozenset(
    _edges((None,), (VOLUME_CREATING,))
    + _edges((VOLUME_CREATING,), (VOLUME_AVAILABLE, VOLUME_ERROR, VOLUME_CREATING))
    + _edges((VOLUME_AVAILABLE,), (VOLUME_ATTACHING, VOLUME_EXTENDING, VOLUME_MAINTENANCE, VOLUME_DELETING))
    + _edges((VOLUME_ATTACHING,), (VOLUME_IN_USE, VOLUME_AVAILABLE, VOLUME_ATTACHING))
    + _edges((VOLUME_IN_USE,), (VOLUME_DETACHING,))
    + _edges((VOLUME_DETACHING,), (VOLUME_AVAILABLE, VOLUME_IN_USE, VOLUME_DETACHING))
    + _edges((VOLUME_EXTENDING,), (VOLUME_AVAILABLE, VOLUME_EXTENDING))
    # lock_volume: maintenance while the volume migrates, back to available at its end
    + _edges((VOLUME_MAINTENANCE,), (VOLUME_AVAILABLE,))
    + _edges((VOLUME_DELETING,), (VOLUME_DELETING,))
    + _edges((VOLUME_ERROR,), (VOLUME_DELETING,))
)

VOLUME_MIGRATION_TRANSITIONS = frozenset(
    _edges(VOLUME_MIGRATION_STARTABLE, (VOLUME_MIGRATION_STARTING, VOLUME_MIGRATION_MIGRATING))
    + _edges((VOLUME_MIGRATION_STARTING,), (VOLUME_MIGRATION_MIGRATING, VOLUME_MIGRATION_ATTACHABLE,
                                            VOLUME_MIGRATION_ERROR))
    + _edges((VOLUME_MIGRATION_MIGRATING, VOLUME_MIGRATION_ATTACHABLE),
             (VOLUME_MIGRATION_COMPLETING, VOLUME_MIGRATION_SUCCESS, VOLUME_MIGRATION_ERROR))
    + _edges((VOLUME_MIGRATION_COMPLETING,), (VOLUME_MIGRATION_SUCCESS, VOLUME_MIGRATION_ERROR))
)


def check_volume_change(name, before, after):
    """Raise StorageError for a volume ``status`` or ``migration_status`` change the volume state
    machines do not know (a bug in the caller: nothing is recorded). ``before`` and ``after``
    are (status, migration_status); an unchanged value is always allowed."""
    for field, old, new, allowed in (('status', before[0], after[0], VOLUME_STATUS_TRANSITIONS),
                                     ('migration_status', before[1], after[1], VOLUME_MIGRATION_TRANSITIONS)):
        if old != new and (old, new) not in allowed:
            raise StorageError('Refusing to record %s %s -> %s for volume %s: the volume state machine does not '
                               'allow that transition (a bug in storage.mobility; nothing was recorded)'
                               % (field, old, new, name))
