# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The interface of a share migration mechanism: how the data of a migration moves.

The manager (managers/share_migration.py) validates, locks, loads, records and returns results;
it asks the mechanism named in the migration record (``migration.mechanism``) for every step that
depends on how the data moves. Driver-assisted (managers/driver_assisted.py): the backend's driver
copies. Host-assisted (managers/host_assisted.py): a data node copies and reports. A new mechanism
is one new subclass, added to MECHANISMS in managers/share_migration.py.

A mechanism reaches the records only through ``steps`` (managers/migration_steps.py), so every
task_state it records passes the state machine of states.py.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils import states


class MigrationMechanism(object):
    """One way of moving a share's data from the source instance to the destination instance."""

    #: the value of ``migration.mechanism`` in the record
    name = None

    def __init__(self, steps):
        self.steps = steps
        self.ctx = steps.ctx

    # -- phase 1 -------------------------------------------------------------------------------
    def start(self, record, pool, before, dest, migration, wait, timeout, sleep):
        """Phase 1 of a new migration (validated, nothing recorded yet); returns the result."""
        raise NotImplementedError

    def attach(self, record, pool, before, wait, timeout, sleep, copy_job=None, copy_report=None):
        """The same start run again on a running phase 1: resume it, refresh or advance it, note
        the running copy or take its copy report; returns the result."""
        raise NotImplementedError

    # -- phase 2 -------------------------------------------------------------------------------
    def check_completion_report(self, record, copy_report):
        """Refuse a copy report handed to the completion before anything is recorded."""

    def complete(self, record, pool, before, source, dest, copy_report, open_writers_wait):
        """Bring the data to the destination for the switch (in migration_completing). Returns a
        result when the switch must wait (a data node must copy again), None when it may go on."""
        raise NotImplementedError

    def data_switched(self, record, source, dest):
        """True when the mechanism already moved the share's data for good (no way back)."""
        return False

    def switched(self, record, source, dest):
        """True once a switchover has moved the share to the destination (no way back)."""
        dst_inst = self.steps.instance(record, 'destination')
        if dst_inst is not None and dst_inst.get('status') == states.AVAILABLE:
            return True
        return self.data_switched(record, source, dest)

    def note_switch_cleanup(self, record, source):
        """After the switch: note for cleanup what the mechanism left besides the old instance."""

    # -- cancel --------------------------------------------------------------------------------
    def check_cancel(self, record):
        """Refuse (StorageError, nothing changed) a cancel the mechanism cannot do yet."""

    def cancel(self, record, source, dest):
        """Stop moving the data (in migration_cancel_in_progress); the manager then restores the
        source and notes the destination for removal."""
