# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reference vocabulary: instance statuses, task_state values, busy rules, progress rules."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

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

REPLICA_STATES = ('active', 'in_sync', 'out_of_sync', 'error')


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
