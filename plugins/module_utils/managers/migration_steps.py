# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record steps a share migration shares between its manager and its mechanisms.

``MigrationSteps`` is the small object the manager hands to a mechanism: every task_state it
records goes through the state machine of states.py, and a failed or cancelled phase 1 restores
the source and notes the destination for removal the same way for both mechanisms.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers import cleanup
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso


class MigrationSteps(object):
    """Record, result and recovery steps of a share migration, on one context."""

    def __init__(self, ctx, shares, clock, sleeper):
        self.ctx = ctx
        self.shares = shares
        self.clock = clock
        self.sleeper = sleeper

    # -- the record ---------------------------------------------------------------------------
    @staticmethod
    def instance(record, role):
        for inst in record.get('instances', []):
            if inst.get('role') == role:
                return inst
        return None

    def set_state(self, record, pool, event, task_state=None, **changes):
        """Apply a transition of the state machine and persist it (never in check mode). A
        transition the machine does not allow raises StorageError before anything changes."""
        states.check_transition(record.get('task_state'), task_state)
        self.record_state(record, pool, event, task_state, **changes)

    def record_state(self, record, pool, event, task_state=None, **changes):
        """Persist ``task_state`` without asking the state machine: only an administrator's reset
        (which exists to override it) comes here directly."""
        record['task_state'] = task_state
        record.update(changes)
        if task_state in states.PROGRESS_ZERO_STATES:
            record['progress'] = {'total_progress': 0}
        elif task_state in states.PROGRESS_FULL_STATES:
            record['progress'] = dict(record.get('progress') or {}, total_progress=100)
        self.ctx.repo.save(record, pool, event)

    def pools(self, record):
        mig = record['migration']
        return self.ctx.pool(mig['source_pool']), self.ctx.pool(mig['destination_pool'])

    def result(self, changed, before, record, pool, actions, extra=None):
        view = self.shares.view(record, pool)
        result = {
            'changed': changed, 'actions': actions, 'share': view,
            'task_state': view.get('task_state'), 'total_progress': view.get('total_progress'),
            'migration': view.get('migration') or {},
            'diff': {'before': self.shares._diffable(before, pool) if before else {},
                     'after': self.shares._diffable(record, pool)},
        }
        result.update(extra or {})
        return result

    # -- phase 1 steps both mechanisms take ----------------------------------------------------
    def predicted_start(self, record, pool, before, migration, actions, task_state):
        """Check mode of a start: the share as phase 1 would leave it, nothing written."""
        predicted = copy.deepcopy(record)
        predicted['task_state'] = task_state
        predicted['migration'] = migration
        return self.result(True, before, predicted, pool, actions)

    def begin(self, record, pool, migration, event):
        """The first recorded step of every start: migration_starting, source instance migrating."""
        active_instance(record)['status'] = states.MIGRATING
        self.set_state(record, pool, event, states.MIGRATION_STARTING, migration=migration, status=states.MIGRATING)

    def add_destination(self, record, dest):
        """Create the destination instance (status migrating_to) unless this migration already did."""
        if self.instance(record, 'destination') is not None:
            return
        name = record['name']
        dst_driver = self.ctx.driver(dest)
        dst_driver.create_instance(dest, name)
        record['instances'].append({'id': str(uuid.uuid4()), 'pool': str(dest.ref),
                                    'status': states.MIGRATING_TO, 'role': 'destination',
                                    'path': dst_driver.instance_path(dest, name), 'created_at': now_iso()})

    def source_read_only(self, record, pool):
        """Users keep reading the source but no longer write it (recorded in the migration)."""
        record['migration']['source_read_only'] = True
        self.ctx.driver(pool).export().apply(record['name'], active_instance(record)['path'],
                                             access_mode(record['access_rules'], True))

    def fail_phase1(self, record, pool, dest, exc):
        """Any failure in phase 1: the source back to available with its rules and the error
        recorded first, then the destination removed (best effort: cleanup_pending otherwise)."""
        name = record['name']
        problems = []
        try:
            source, _dest = self.pools(record)
            try:
                self.ctx.driver(source).migration_cancel(source, dest, record)
            except Exception as cancel_exc:
                problems.append('driver cancel: %s' % cancel_exc)
            kept = self.note_destination_removal(record, source, dest)
            if kept:
                problems.append(kept)
        except Exception as cleanup_exc:
            problems.append(str(cleanup_exc))
        before_restore = {'instances': list(record.get('instances') or [])}
        restore_problem = self.restore_source(record, pool)
        record['migration']['error'] = 'Phase 1 failed: %s' % exc
        record['migration']['ended_at'] = now_iso()
        self.set_state(record, pool, 'phase 1 failed: %s' % exc, states.MIGRATION_ERROR)
        left = self.run_cleanup(record, pool)
        removed = self.instance(before_restore, 'destination') is not None and not left and not problems
        msg = ('Failed to migrate share %s to %s: %s; %sthe share is available again in %s'
               % (name, dest, exc, 'the destination instance was removed and ' if removed else '', pool))
        msg += self.cleanup_note(left, '; '.join(problems) or None, restore_problem)
        details = getattr(exc, 'details', {})
        raise StorageError(msg, share=self.shares.view(record, pool), **details)

    # -- undoing a migration ---------------------------------------------------------------------
    def note_destination_removal(self, record, source, dest):
        """Before a failed or cancelled migration is recorded: note its destination instance for
        deletion (cleanup_pending). Returns why it is kept instead, or None."""
        if self.instance(record, 'destination') is None:
            return None  # never created by this migration: whatever is at that path is left alone
        if not self.ctx.driver(source).instance_exists(source, record['name']):
            return 'the source data is missing, so the destination was kept'
        cleanup.add_instance(record, dest, 'destination instance of migration %s' % record['migration']['id'])
        return None

    def run_cleanup(self, record, pool):
        """Delete what cleanup_pending lists; return the entries that are still pending."""
        return cleanup.run_pending(self.ctx, record, pool)

    @staticmethod
    def cleanup_note(left, kept=None, restore_problem=None):
        notes = []
        if restore_problem:
            notes.append('restoring the source export failed: %s' % restore_problem)
        if kept:
            notes.append(kept)
        if left:
            notes.append('cleanup pending, retried by every later run on the share: %s' % cleanup.describe(left))
        return (' (%s)' % '; '.join(notes)) if notes else ''

    def restore_source(self, record, pool):
        """The source instance available with its access rules; returns the export's error, if any
        (the record is written by the caller in either case)."""
        record['instances'] = [i for i in record['instances'] if i.get('role') == 'active']
        src_inst = active_instance(record)
        src_inst['status'] = states.AVAILABLE
        record['status'] = states.AVAILABLE
        if record.get('migration'):
            record['migration']['source_read_only'] = False
        driver = self.ctx.driver(pool)
        try:
            driver.export().apply(record['name'], src_inst['path'], access_mode(record['access_rules']))
        except Exception as exc:  # pylint: disable=broad-except
            if record.get('migration'):
                record['migration']['restore_error'] = str(exc)
            return str(exc)
        return None
