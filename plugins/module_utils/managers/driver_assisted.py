# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The driver-assisted mechanism of a share migration: the backend's driver moves the data.

Phase 1: destination instance, source read-only unless the driver keeps it writable,
``migration_driver_starting`` -> driver start -> ``migration_driver_in_progress`` -> the driver's
"continue" polled until done -> ``migration_driver_phase1_done``; a rerun then copies what changed
since (a refresh). Phase 2: the driver's last sync, checked on the destination before anything is
switched.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers import cleanup
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_mechanism import MigrationMechanism
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso
from ansible_collections.storage.mobility.plugins.module_utils.wait import wait_for


class DriverAssisted(MigrationMechanism):
    """The source pool's driver copies (and keeps copying until the switch)."""

    name = 'driver'

    # -- phase 1 -------------------------------------------------------------------------------
    def start(self, record, pool, before, dest, migration, wait, timeout, sleep):
        ctx = self.ctx
        name = record['name']
        src_driver = ctx.driver(pool)
        compat = migration['compatibility']
        actions = [
            'driver-assisted migration of share %s from %s to %s (%s driver)' % (name, pool, dest, src_driver.name),
            'create destination instance in pool %s (status migrating_to)' % dest,
        ]
        if not compat.get('writable'):
            actions.append('set the source read-only for the copy')
        actions.append('task_state migration_starting -> migration_driver_starting -> migration_driver_in_progress '
                       '-> migration_driver_phase1_done')
        if ctx.check_mode:
            return self.steps.predicted_start(record, pool, before, migration, actions,
                                              states.MIGRATION_DRIVER_PHASE1_DONE)
        self.steps.begin(record, pool, migration, 'migration %s to %s requested' % (migration['id'], dest))
        self._start_steps(record, pool, dest)
        if wait:
            return self._wait_phase1(record, pool, before, actions, timeout, sleep)
        return self.steps.result(True, before, record, pool, actions)

    def _start_steps(self, record, pool, dest):
        """From migration_starting to migration_driver_in_progress; each step idempotent, so a
        rerun after a crash resumes where the record says it stopped."""
        steps = self.steps
        migration = record['migration']
        try:
            if record.get('task_state') == states.MIGRATION_STARTING:
                steps.add_destination(record, dest)
                if not (migration.get('compatibility') or {}).get('writable'):
                    steps.source_read_only(record, pool)
                steps.set_state(record, pool, 'destination instance created', states.MIGRATION_DRIVER_STARTING)
            if record.get('task_state') == states.MIGRATION_DRIVER_STARTING:
                self.ctx.driver(pool).migration_start(pool, dest, record)
                steps.set_state(record, pool, 'driver migration started', states.MIGRATION_DRIVER_IN_PROGRESS)
            self._advance(record, pool)
        except Exception as exc:
            steps.fail_phase1(record, pool, dest, exc)

    def _advance(self, record, pool):
        """One poll of a driver-assisted phase 1 (the reference's periodic 'continue'), with the
        progress the driver reports."""
        if record.get('task_state') != states.MIGRATION_DRIVER_IN_PROGRESS:
            return False
        source, dest = self.steps.pools(record)
        driver = self.ctx.driver(source)
        done = driver.migration_continue(source, dest, record)
        progress = driver.migration_get_progress(source, dest, record)
        record['progress'] = progress
        if done:
            record['migration']['phase1_done_at'] = now_iso()
            self.steps.set_state(record, pool, 'phase 1 done', states.MIGRATION_DRIVER_PHASE1_DONE)
        else:
            self.ctx.repo.save(record, pool)
        return True

    def _wait_phase1(self, record, pool, before, actions, timeout, sleep):
        steps = self.steps

        def fetch():
            try:
                self._advance(record, pool)
            except Exception as exc:
                steps.fail_phase1(record, pool, steps.pools(record)[1], exc)
            return record
        wait_for(fetch, lambda r: r.get('task_state'),
                 success=states.PHASE1_DONE, pending=states.PHASE1_PENDING, failure=states.PHASE1_FAILED,
                 timeout=timeout, sleep=sleep, what='migration of share %s' % record['name'],
                 clock=steps.clock, sleeper=steps.sleeper)
        return steps.result(True, before, record, pool, actions)

    def attach(self, record, pool, before, wait, timeout, sleep, copy_job=None, copy_report=None):
        """Resume or poll the running phase 1, refresh a finished one (and wait when asked)."""
        steps = self.steps
        if copy_report is not None:
            raise InvalidRequest('Refusing a copy report for share %s: its migration is driver-assisted' % record['name'])
        if self.ctx.check_mode:
            if record.get('task_state') == states.MIGRATION_DRIVER_PHASE1_DONE:
                source, dest = steps.pools(record)
                if self.ctx.driver(source).migration_refresh_pending(source, dest, record):
                    return steps.result(True, before, record, pool,
                                        ['copy the changes to share %s since the last copy to %s' % (record['name'], dest)])
            return steps.result(False, before, record, pool, [])
        refreshed = False
        if record.get('task_state') == states.MIGRATION_DRIVER_PHASE1_DONE:
            refreshed = self._refresh(record, pool)
        self._start_steps(record, pool, steps.pools(record)[1])
        changed = refreshed or record.get('task_state') != before.get('task_state')
        if wait and record['task_state'] not in states.PHASE1_DONE:
            result = self._wait_phase1(record, pool, before, [], timeout, sleep)
            result['changed'] = record.get('task_state') != before.get('task_state')
            return result
        return steps.result(changed, before, record, pool, [])

    def _refresh(self, record, pool):
        """Phase 1 done, run again: the driver copies what changed since (btrfs: an incremental
        send). A failure here keeps the migration in phase 1 done: the destination still holds
        the previous copy, and a rerun, the completion or a cancel all remain possible."""
        source, dest = self.steps.pools(record)
        driver = self.ctx.driver(source)
        try:
            copied = driver.migration_refresh(source, dest, record)
        except Exception as exc:
            raise StorageError('Failed to refresh the copy of share %s on %s: %s; the migration stays in %s with the '
                               'destination as of the previous copy: run phase 1 again, complete or cancel'
                               % (record['name'], dest, exc, record.get('task_state')), **getattr(exc, 'details', {}))
        if not copied:
            return False
        record['progress'] = dict(driver.migration_get_progress(source, dest, record), total_progress=100)
        record['migration']['refreshed_at'] = now_iso()
        self.ctx.repo.save(record, pool, 'phase 1 refreshed: changes since the last copy sent')
        return True

    # -- phase 2 -------------------------------------------------------------------------------
    def complete(self, record, pool, before, source, dest, copy_report, open_writers_wait):
        driver = self.ctx.driver(source)
        try:
            driver.migration_complete(source, dest, record)
            if not driver.migration_complete_done(source, dest, record):
                # Never trust a return value with the source: delete nothing unless the data is
                # really on the destination.
                raise StorageError('the %s driver returned, but the data of share %s is not on %s'
                                   % (driver.name, record['name'], dest))
        except Exception as exc:
            if driver.migration_complete_done(source, dest, record):
                raise StorageError('Failed to complete the migration of share %s: %s. The data is already on %s; '
                                   'run the completion again to finish the switchover' % (record['name'], exc, dest))
            back = record['migration'].get('phase1_state') or states.MIGRATION_DRIVER_PHASE1_DONE
            record['migration']['error'] = 'Switchover failed before anything was switched: %s' % exc
            self.steps.set_state(record, source, 'switchover failed: %s' % exc, back)
            raise StorageError('Failed to complete the migration of share %s: %s. Nothing was switched: the share is '
                               'back in %s on %s; fix the cause and complete again, or cancel'
                               % (record['name'], exc, back, source), **getattr(exc, 'details', {}))
        return None

    def data_switched(self, record, source, dest):
        return self.ctx.driver(source).migration_complete_done(source, dest, record)

    def note_switch_cleanup(self, record, source):
        mig = record['migration']
        cleanup.add_migration(record, mig, 'temporary copies of migration %s' % mig['id'])

    # -- cancel --------------------------------------------------------------------------------
    def cancel(self, record, source, dest):
        self.ctx.driver(source).migration_cancel(source, dest, record)
