# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The share migration state machine (phase 1, switchover, cancel, reset) of the reference.

Every transition is written to the share's record before and after the step it guards, under the
share's lock, so a run that dies at any point leaves a record from which a rerun resumes:
``started`` attaches to a running phase 1, ``completed`` finishes an interrupted switchover,
``cancelled`` finishes an interrupted cancel.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.base import MIGRATION_FLAGS
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, InvalidRequest, StorageError)
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers import cleanup
from ansible_collections.storage.mobility.plugins.module_utils.managers.host_assisted import HostAssistedMixin
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import (
    ShareManager, active_instance, check_extra_specs, normalize_share_type)
from ansible_collections.storage.mobility.plugins.module_utils.names import parse_pool, validate_name
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso
from ansible_collections.storage.mobility.plugins.module_utils.wait import wait_for

PHASE1_PENDING = (states.MIGRATION_STARTING, states.MIGRATION_IN_PROGRESS, states.MIGRATION_DRIVER_STARTING,
                  states.MIGRATION_DRIVER_IN_PROGRESS, states.DATA_COPYING_STARTING,
                  states.DATA_COPYING_IN_PROGRESS, states.DATA_COPYING_COMPLETING)
PHASE1_FAILED = (states.MIGRATION_ERROR, states.DATA_COPYING_ERROR, states.MIGRATION_CANCELLED,
                 states.DATA_COPYING_CANCELLED)


class HostAssistedUnavailable(InvalidRequest):
    """Driver-assisted migration is impossible and host-assisted copying is not available."""


# Beyond the reference: a run that died while starting leaves one of these; cancel cleans it up.
RECOVERY_CANCELLABLE = (states.MIGRATION_STARTING, states.MIGRATION_DRIVER_STARTING, states.DATA_COPYING_STARTING)


class ShareMigrationManager(HostAssistedMixin):

    def __init__(self, ctx, host_assisted=True, clock=time.monotonic, sleeper=time.sleep):
        self.ctx = ctx
        self.shares = ShareManager(ctx)
        # host_assisted=False turns the data-mover path off (the driver-only mode of 0.1).
        self.host_assisted = host_assisted
        self.clock = clock
        self.sleeper = sleeper

    # -- helpers ------------------------------------------------------------------------------
    def _instance(self, record, role):
        for inst in record.get('instances', []):
            if inst.get('role') == role:
                return inst
        return None

    def _set(self, record, pool, event, task_state=None, **changes):
        """Apply a transition and persist it (never in check mode)."""
        record['task_state'] = task_state
        record.update(changes)
        if task_state in states.PROGRESS_ZERO_STATES:
            record['progress'] = {'total_progress': 0}
        elif task_state in states.PROGRESS_FULL_STATES:
            record['progress'] = dict(record.get('progress') or {}, total_progress=100)
        self.ctx.repo.save(record, pool, event)

    def _pools(self, record, pool):
        mig = record['migration']
        return self.ctx.pool(mig['source_pool']), self.ctx.pool(mig['destination_pool'])

    def _result(self, changed, before, record, pool, actions, extra=None):
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

    # -- validation (the reference's order) ---------------------------------------------------
    def validate_start(self, record, pool, destination, flags, force_host_assisted, new_share_type):
        """Rules 2 to 7 of the reference, in order. Returns the destination Pool, or None when
        there is nothing to do (rule 7 on a rerun of a completed migration)."""
        name = record['name']
        # 2. replicas
        if record.get('replicas'):
            raise InvalidRequest('Cannot migrate share %s: it has replicas (%s); remove them first'
                                 % (name, ', '.join(r.get('id', '?') for r in record['replicas'])))
        # 3. instance status
        inst = active_instance(record)
        status = inst.get('status') if inst else None
        if status != states.AVAILABLE:
            task = record.get('task_state')
            raise InvalidRequest('Cannot migrate share %s: its instance is %s, not available%s'
                                 % (name, status, ' (the share is busy with task_state %s)' % task if task else ''))
        # 4. busy
        if states.is_busy(record.get('task_state')):
            raise Busy('Cannot migrate share %s: it is busy with task_state %s' % (name, record['task_state']))
        # 5. host-assisted requested and snapshots present
        if force_host_assisted and record.get('snapshots'):
            raise InvalidRequest('Cannot migrate share %s host-assisted: it has snapshots (%s), which a host copy '
                                 'cannot carry; delete them or use a driver-assisted migration'
                                 % (name, ', '.join(s['name'] for s in record['snapshots'])))
        # 6. destination pool known
        dest = self.ctx.pool(destination, 'destination pool')
        # 7. same pool, same type: nothing to do
        if str(dest.ref) == str(pool.ref):
            same_type = new_share_type is None or new_share_type == record['share_type']
            mig = record.get('migration') or {}
            if (same_type and record.get('task_state') == states.MIGRATION_SUCCESS
                    and mig.get('destination_pool') == str(dest.ref)):
                return None
            if not same_type:
                raise InvalidRequest('Cannot migrate share %s to %s: that is its current pool; changing only the '
                                     'share type in place is not a migration' % (name, dest))
            raise InvalidRequest('Cannot migrate share %s: the destination pool %s is its current pool, nothing '
                                 'to migrate' % (name, dest))
        return dest

    def plan_mechanism(self, record, pool, dest, flags, force_host_assisted):
        """Decide driver-assisted or host-assisted without changing anything.

        Returns (mechanism, compatibility, refusal) where mechanism is 'driver', 'host' or
        'error' (the driver refused a flag the user asked for: the reference's migration_error).
        """
        src_driver = self.ctx.driver(pool)
        dst_driver = self.ctx.driver(dest)
        wanted = [f for f in MIGRATION_FLAGS if flags.get(f)]
        if force_host_assisted:
            return 'host', None, 'force_host_assisted_migration is set'
        compat = src_driver.migration_check_compatibility(pool, dest, record, dst_driver)
        if not compat.get('compatible'):
            refusal = compat.get('reason') or 'the driver reports the pools incompatible'
        else:
            missing = [f for f in wanted if not compat.get(f)]
            refusal = ('the driver cannot honour %s' % ', '.join('%s=true' % f for f in missing)) if missing else None
        if refusal is None:
            return 'driver', compat, None
        if wanted:
            return 'error', compat, refusal
        if record.get('snapshots'):
            raise InvalidRequest('Cannot migrate share %s to %s: driver-assisted migration is not possible (%s) and '
                                 'host-assisted migration cannot carry its snapshots (%s); delete them first'
                                 % (record['name'], dest, refusal, ', '.join(s['name'] for s in record['snapshots'])))
        return 'host', compat, refusal

    # -- phase 1 -----------------------------------------------------------------------------
    def start(self, name, destination, flags, force_host_assisted=False, new_share_type=None,
              wait=True, timeout=3600, sleep=5, copy_job=None, copy_report=None):
        validate_name(name)
        parse_pool(destination, 'destination pool')
        flags = dict((f, bool(flags.get(f))) for f in MIGRATION_FLAGS)
        # 1. conflicting flags
        if force_host_assisted and any(flags.values()):
            raise InvalidRequest('Invalid combination: force_host_assisted_migration cannot be used with %s; a host '
                                 'copy can honour none of them' % ', '.join('%s=true' % f for f in MIGRATION_FLAGS if flags[f]))
        ctx = self.ctx
        with ctx.lock(name, 'migration start'):
            record, pool = ctx.load(name, cleanup=True)
            cleaned = cleanup.retry(ctx, record, pool)
            before = copy.deepcopy(record)
            stype = None
            if new_share_type is not None:
                stype = normalize_share_type(new_share_type.get('name'), new_share_type.get('extra_specs'))
            mig = record.get('migration') or {}
            # A rerun of the same request attaches to the running phase 1 instead of failing busy.
            if states.is_busy(record.get('task_state')) and mig.get('destination_pool') == str(parse_pool(destination)):
                requested = dict(flags, force_host_assisted_migration=bool(force_host_assisted))
                # A call that hands over a copy job or report refers to the running migration;
                # any other rerun must ask for the same thing to join it.
                if copy_job is None and copy_report is None and mig.get('requested') and mig['requested'] != requested:
                    differ = sorted(k for k in requested if mig['requested'].get(k) != requested[k])
                    raise Busy('Cannot migrate share %s: a migration to %s with other settings is running (%s as '
                               'started: %s); cancel it first or rerun with the same settings'
                               % (name, destination, ', '.join(differ),
                                  ', '.join('%s=%s' % (k, mig['requested'].get(k)) for k in differ)))
                return self._attach(record, pool, before, wait, timeout, sleep, copy_job, copy_report)
            if copy_report is not None and mig.get('destination_pool') == str(parse_pool(destination)):
                # A report for a migration that is no longer copying (completed, failed, cancelled).
                self._check_report(record, copy_report, final=False)
                if record.get('task_state') in states.IDLE_TASK_STATES:
                    raise InvalidRequest('Refusing the copy report for share %s: its migration %s is no longer copying '
                                         '(task_state %s); nothing was changed' % (name, mig.get('id'), record.get('task_state')))
            elif copy_report is not None:
                raise InvalidRequest('Refusing the copy report for share %s: no migration to %s is running; nothing was '
                                     'changed' % (name, destination))
            dest = self.validate_start(record, pool, destination, flags, force_host_assisted, stype)
            if dest is not None and cleanup.pending_in(record, dest):
                raise StorageError('Cannot migrate share %s to %s: what an earlier migration left there could not be '
                                   'removed yet (%s); fix the cause, then run again (every run retries it)'
                                   % (name, dest, cleanup.describe(cleanup.pending_in(record, dest))))
            if dest is None:
                return self._result(cleaned, before, record, pool, [], {'msg': 'share %s is already in pool %s' % (name, pool)})
            if stype is not None:
                check_extra_specs(stype, ctx.driver(dest).pool_stats(dest), dest)
            mechanism, compat, refusal = self.plan_mechanism(record, pool, dest, flags, force_host_assisted)
            if mechanism == 'host' and not self.host_assisted:
                raise HostAssistedUnavailable(
                    'Cannot migrate share %s to %s: driver-assisted migration is not possible (%s) and host-assisted '
                    'copying is not available yet in this version of storage.mobility (it needs the data mover); '
                    'nothing was changed' % (name, dest, refusal))
            migration = {
                'id': str(uuid.uuid4()), 'source_pool': str(pool.ref), 'destination_pool': str(dest.ref),
                'mechanism': mechanism if mechanism != 'error' else 'driver', 'requested': dict(flags, force_host_assisted_migration=force_host_assisted),
                'compatibility': compat, 'driver_refusal': refusal, 'new_share_type': stype,
                'started_at': now_iso(), 'started_epoch': time.time(), 'error': None, 'source_read_only': False,
            }
            if mechanism == 'error':
                return self._refuse(record, pool, before, dest, migration, refusal)
            if mechanism == 'host':
                return self._start_host(record, pool, before, dest, migration)
            return self._start_driver(record, pool, before, dest, migration, wait, timeout, sleep)

    def _refuse(self, record, pool, before, dest, migration, refusal):
        """The driver cannot honour a requested flag and a host copy may not be used: migration_error."""
        msg = ('Failed to migrate share %s to %s: driver-assisted migration is not possible (%s) and a host-assisted '
               'copy is not allowed because %s' % (record['name'], dest, refusal,
                                                   ', '.join('%s=true' % f for f in MIGRATION_FLAGS if migration['requested'][f])))
        migration['error'] = msg
        migration['ended_at'] = migration['started_at']
        if self.ctx.check_mode:
            raise InvalidRequest(msg)
        self._set(record, pool, 'migration refused: %s' % refusal, states.MIGRATION_ERROR, migration=migration)
        raise StorageError(msg, share=self.shares.view(record, pool))

    def _start_driver(self, record, pool, before, dest, migration, wait, timeout, sleep):
        ctx = self.ctx
        name = record['name']
        src_driver = ctx.driver(pool)
        dst_driver = ctx.driver(dest)
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
            return self._predicted_start(record, pool, before, migration, actions, states.MIGRATION_DRIVER_PHASE1_DONE)
        self._begin(record, pool, dest, migration, 'migration %s to %s requested' % (migration['id'], dest))
        self._driver_start_steps(record, pool, dest)
        if wait:
            return self._wait_phase1(record, pool, before, actions, timeout, sleep)
        return self._result(True, before, record, pool, actions)

    def _predicted_start(self, record, pool, before, migration, actions, task_state):
        """Check mode of a start: the share as phase 1 would leave it, nothing written."""
        predicted = copy.deepcopy(record)
        predicted['task_state'] = task_state
        predicted['migration'] = migration
        return self._result(True, before, predicted, pool, actions)

    def _begin(self, record, pool, dest, migration, event):
        """The first recorded step of every start: migration_starting, source instance migrating."""
        active_instance(record)['status'] = states.MIGRATING
        self._set(record, pool, event, states.MIGRATION_STARTING, migration=migration, status=states.MIGRATING)

    def _driver_start_steps(self, record, pool, dest):
        """From migration_starting to migration_driver_in_progress; each step idempotent, so a
        rerun after a crash resumes where the record says it stopped."""
        name = record['name']
        src_driver, dst_driver = self.ctx.driver(pool), self.ctx.driver(dest)
        migration = record['migration']
        try:
            if record.get('task_state') == states.MIGRATION_STARTING:
                if self._instance(record, 'destination') is None:
                    dst_driver.create_instance(dest, name)
                    record['instances'].append({'id': str(uuid.uuid4()), 'pool': str(dest.ref),
                                                'status': states.MIGRATING_TO, 'role': 'destination',
                                                'path': dst_driver.instance_path(dest, name), 'created_at': now_iso()})
                if not (migration.get('compatibility') or {}).get('writable'):
                    migration['source_read_only'] = True
                    src_driver.export().apply(name, active_instance(record)['path'],
                                              access_mode(record['access_rules'], True))
                self._set(record, pool, 'destination instance created', states.MIGRATION_DRIVER_STARTING)
            if record.get('task_state') == states.MIGRATION_DRIVER_STARTING:
                src_driver.migration_start(pool, dest, record)
                self._set(record, pool, 'driver migration started', states.MIGRATION_DRIVER_IN_PROGRESS)
            self._advance(record, pool)
        except Exception as exc:
            self._fail_phase1(record, pool, dest, exc)

    def _advance(self, record, pool):
        """One poll of a driver-assisted phase 1 (the reference's periodic 'continue')."""
        if record.get('task_state') != states.MIGRATION_DRIVER_IN_PROGRESS:
            return False
        source, dest = self._pools(record, pool)
        driver = self.ctx.driver(source)
        done = driver.migration_continue(source, dest, record)
        progress = driver.migration_get_progress(source, dest, record)
        record['progress'] = progress
        if done:
            record['migration']['phase1_done_at'] = now_iso()
            self._set(record, pool, 'phase 1 done', states.MIGRATION_DRIVER_PHASE1_DONE)
        else:
            self.ctx.repo.save(record, pool)
        return True

    def _wait_phase1(self, record, pool, before, actions, timeout, sleep):
        def fetch():
            try:
                self._advance(record, pool)
            except Exception as exc:
                self._fail_phase1(record, pool, self._pools(record, pool)[1], exc)
            return record
        wait_for(fetch, lambda r: r.get('task_state'),
                 success=states.COMPLETABLE_TASK_STATES, pending=PHASE1_PENDING, failure=PHASE1_FAILED,
                 timeout=timeout, sleep=sleep, what='migration of share %s' % record['name'],
                 clock=self.clock, sleeper=self.sleeper)
        return self._result(True, before, record, pool, actions)

    def _attach(self, record, pool, before, wait, timeout, sleep, copy_job=None, copy_report=None):
        """The same start again: resume or poll the running phase 1 (and wait for it when asked)."""
        if record['migration'].get('mechanism') == 'host':
            if self.ctx.check_mode:
                return self._host_result(False, before, record, pool, [])
            return self._host_attach(record, pool, before, copy_job, copy_report)
        if copy_report is not None:
            raise InvalidRequest('Refusing a copy report for share %s: its migration is driver-assisted' % record['name'])
        if self.ctx.check_mode:
            if record.get('task_state') == states.MIGRATION_DRIVER_PHASE1_DONE:
                source, dest = self._pools(record, pool)
                if self.ctx.driver(source).migration_refresh_pending(source, dest, record):
                    return self._result(True, before, record, pool,
                                        ['copy the changes to share %s since the last copy to %s' % (record['name'], dest)])
            return self._result(False, before, record, pool, [])
        refreshed = False
        if record.get('task_state') == states.MIGRATION_DRIVER_PHASE1_DONE:
            refreshed = self._refresh(record, pool)
        self._driver_start_steps(record, pool, self._pools(record, pool)[1])
        changed = refreshed or record.get('task_state') != before.get('task_state')
        if wait and record['task_state'] not in states.COMPLETABLE_TASK_STATES:
            result = self._wait_phase1(record, pool, before, [], timeout, sleep)
            result['changed'] = record.get('task_state') != before.get('task_state')
            return result
        return self._result(changed, before, record, pool, [])

    def _refresh(self, record, pool):
        """Phase 1 done, run again: the driver copies what changed since (btrfs: an incremental
        send). A failure here keeps the migration in phase 1 done: the destination still holds
        the previous copy, and a rerun, the completion or a cancel all remain possible."""
        source, dest = self._pools(record, pool)
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

    def _fail_phase1(self, record, pool, dest, exc):
        """Any failure in phase 1: the source back to available with its rules and the error
        recorded first, then the destination removed (best effort: cleanup_pending otherwise)."""
        name = record['name']
        problems = []
        try:
            source, _dest = self._pools(record, pool)
            try:
                self.ctx.driver(source).migration_cancel(source, dest, record)
            except Exception as cancel_exc:
                problems.append('driver cancel: %s' % cancel_exc)
            kept = self._note_destination_removal(record, source, dest)
            if kept:
                problems.append(kept)
        except Exception as cleanup_exc:
            problems.append(str(cleanup_exc))
        before_restore = {'instances': list(record.get('instances') or [])}
        restore_problem = self._restore_source(record, pool)
        record['migration']['error'] = 'Phase 1 failed: %s' % exc
        record['migration']['ended_at'] = now_iso()
        self._set(record, pool, 'phase 1 failed: %s' % exc, states.MIGRATION_ERROR)
        left = self._run_cleanup(record, pool)
        removed = self._instance(before_restore, 'destination') is not None and not left and not problems
        msg = ('Failed to migrate share %s to %s: %s; %sthe share is available again in %s'
               % (name, dest, exc, 'the destination instance was removed and ' if removed else '', pool))
        msg += self._cleanup_note(left, '; '.join(problems) or None, restore_problem)
        details = getattr(exc, 'details', {})
        raise StorageError(msg, share=self.shares.view(record, pool), **details)

    def _note_destination_removal(self, record, source, dest):
        """Before a failed or cancelled migration is recorded: note its destination instance for
        deletion (cleanup_pending). Returns why it is kept instead, or None."""
        if self._instance(record, 'destination') is None:
            return None  # never created by this migration: whatever is at that path is left alone
        if not self.ctx.driver(source).instance_exists(source, record['name']):
            return 'the source data is missing, so the destination was kept'
        cleanup.add_instance(record, dest, 'destination instance of migration %s' % record['migration']['id'])
        return None

    def _run_cleanup(self, record, pool):
        """Delete what cleanup_pending lists; return the entries that are still pending."""
        return cleanup.run_pending(self.ctx, record, pool)

    @staticmethod
    def _cleanup_note(left, kept=None, restore_problem=None):
        notes = []
        if restore_problem:
            notes.append('restoring the source export failed: %s' % restore_problem)
        if kept:
            notes.append(kept)
        if left:
            notes.append('cleanup pending, retried by every later run on the share: %s' % cleanup.describe(left))
        return (' (%s)' % '; '.join(notes)) if notes else ''

    def _restore_source(self, record, pool):
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

    # -- phase 2 -----------------------------------------------------------------------------
    def complete(self, name, destination=None, copy_report=None, open_writers_wait=0):
        """Phase 2. ``open_writers_wait``: seconds to wait for processes holding files of the source
        open for writing to close them before refusing (0 refuses at once)."""
        validate_name(name)
        if open_writers_wait is None or open_writers_wait < 0:
            raise InvalidRequest('Invalid open_writers_wait %r for share %s: give 0 or more seconds'
                                 % (open_writers_wait, name))
        ctx = self.ctx
        with ctx.lock(name, 'migration complete'):
            record, pool = ctx.load(name, cleanup=True)
            cleaned = cleanup.retry(ctx, record, pool)
            before = copy.deepcopy(record)
            ts = record.get('task_state')
            mig = record.get('migration') or {}
            if destination is not None and mig.get('destination_pool') not in (None, str(ctx.pool(destination, 'destination pool').ref)):
                raise InvalidRequest('Share %s is migrating to %s, not %s' % (name, mig['destination_pool'], destination))
            if ts == states.MIGRATION_SUCCESS:
                if copy_report is not None:
                    self._check_report(record, copy_report, final=True)
                return self._result(cleaned, before, record, pool, [], {'msg': 'migration already completed'})
            if ts not in states.COMPLETABLE_TASK_STATES and ts != states.MIGRATION_COMPLETING:
                raise InvalidRequest('Cannot complete the migration of share %s: its task_state is %s; phase 2 starts only '
                                     'from %s' % (name, ts, ' or '.join(states.COMPLETABLE_TASK_STATES)))
            source, dest = self._pools(record, pool)
            if copy_report is not None and mig.get('mechanism') == 'host':
                # A forged, foreign or stale report is refused before anything is recorded.
                self._check_report(record, copy_report, final=True)
            actions = ['switch share %s from %s to %s' % (name, source, dest),
                       'apply access rules to the destination', 'delete the source instance',
                       'task_state %s -> migration_completing -> migration_success' % ts]
            if ctx.check_mode:
                predicted = copy.deepcopy(record)
                predicted['task_state'] = states.MIGRATION_SUCCESS
                return self._result(True, before, predicted, pool, actions)
            if ts != states.MIGRATION_COMPLETING:
                mig['phase1_state'] = ts
                mig['completing_started_at'] = now_iso()
                mig['completing_started_epoch'] = time.time()
                self._set(record, pool, 'switchover started', states.MIGRATION_COMPLETING)
            mig['open_writers_wait'] = open_writers_wait
            if mig.get('mechanism') == 'host':
                pending = self._complete_host(record, pool, before, source, dest, copy_report, open_writers_wait)
                if pending is not None:
                    return pending
            else:
                self._complete_driver_data(record, source, dest)
            new_record, new_pool = self._switch(record, source, dest)
            extra = {}
            if new_record.get('cleanup_pending'):
                extra['warnings'] = ['Share %s now lives in %s, but cleanup is pending (retried by every later run on '
                                     'the share): %s' % (name, dest, cleanup.describe(new_record['cleanup_pending']))]
            return self._result(True, before, new_record, new_pool, actions, extra)

    def _complete_driver_data(self, record, source, dest):
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
            self._set(record, source, 'switchover failed: %s' % exc, back)
            raise StorageError('Failed to complete the migration of share %s: %s. Nothing was switched: the share is '
                               'back in %s on %s; fix the cause and complete again, or cancel'
                               % (record['name'], exc, back, source), **getattr(exc, 'details', {}))

    def _switch(self, record, source, dest):
        """After the data is on the destination: exports, instance statuses, source deleted, record moved.
        Each step is idempotent, so an interrupted switchover converges when run again."""
        ctx = self.ctx
        name = record['name']
        src_driver, dst_driver = ctx.driver(source), ctx.driver(dest)
        src_inst = active_instance(record)
        dst_inst = self._instance(record, 'destination')
        mode = access_mode(record['access_rules'])
        src_export = src_driver.export().location(name, src_inst['path'])
        dst_export = dst_driver.export().location(name, dst_inst['path'])
        if src_export != dst_export:
            src_driver.export().remove(name, src_inst['path'])
        dst_driver.export().apply(name, dst_inst['path'], mode)
        dst_inst['status'] = states.AVAILABLE
        src_inst['status'] = states.INACTIVE
        ctx.repo.save(record, source, 'destination available, source inactive')
        mig = record['migration']
        # From here the migration is a success: deleting the old instance (and, driver-assisted,
        # the temporary copies and the source's snapshots, after it) is cleanup, noted first and
        # retried by every later run until it succeeds.
        cleanup.add_instance(record, source, 'old instance after migration %s' % mig['id'])
        if mig.get('mechanism') != 'host':
            cleanup.add_migration(record, mig, 'temporary copies of migration %s' % mig['id'])
        mig['completed_at'] = now_iso()
        if mig.get('completing_started_epoch'):
            mig['switchover_seconds'] = round(time.time() - mig['completing_started_epoch'], 3)
        if mig.get('source_read_only') and mig.get('started_epoch'):
            # Users could read but not write the share from phase 1 until this switch.
            mig['read_only_seconds'] = round(time.time() - mig['started_epoch'], 3)
        mig['error'] = None
        new = copy.deepcopy(record)
        dst_inst = self._instance(new, 'destination')
        dst_inst['role'] = 'active'
        new['instances'] = [dst_inst]
        new['status'] = states.AVAILABLE
        if mig.get('new_share_type'):
            new['share_type'] = mig['new_share_type']
        for snap in new.get('snapshots', []):
            snap['path'] = dst_driver.snapshot_path(dest, name, snap['name'])
        new['task_state'] = states.MIGRATION_SUCCESS
        new['progress'] = {'total_progress': 100}
        # Written with a higher revision than the source's record, so it wins from now on; the
        # source's record is then removed (a crash in between leaves a stale copy that the next
        # locked run removes).
        ctx.repo.save(new, dest, 'migration %s completed: share now in %s' % (mig['id'], dest))
        ctx.repo.delete(name, source)
        self._run_cleanup(new, dest)
        return new, dest

    # -- cancel ------------------------------------------------------------------------------
    def cancel(self, name):
        validate_name(name)
        ctx = self.ctx
        with ctx.lock(name, 'migration cancel'):
            record, pool = ctx.load(name, cleanup=True)
            cleaned = cleanup.retry(ctx, record, pool)
            before = copy.deepcopy(record)
            ts = record.get('task_state')
            if ts in (None, states.MIGRATION_CANCELLED, states.MIGRATION_SUCCESS, states.MIGRATION_ERROR,
                      states.DATA_COPYING_CANCELLED, states.DATA_COPYING_ERROR):
                return self._result(cleaned, before, record, pool, [], {'msg': 'no migration to cancel (task_state %s)' % ts})
            source, dest = self._pools(record, pool)
            if ts == states.MIGRATION_COMPLETING:
                # Beyond the reference: a switchover that died before switching anything can be
                # cancelled; after the switch only completing it is safe.
                if self._switched(record, source, dest):
                    raise InvalidRequest('Cannot cancel the migration of share %s: the switchover already switched it '
                                         'to %s; run the completion again to finish it' % (name, dest))
            elif (ts not in states.CANCELLABLE_TASK_STATES + RECOVERY_CANCELLABLE
                    and ts != states.MIGRATION_CANCEL_IN_PROGRESS):
                raise InvalidRequest('Cannot cancel the migration of share %s: its task_state is %s; cancel is allowed in %s'
                                     % (name, ts, ', '.join(states.CANCELLABLE_TASK_STATES + RECOVERY_CANCELLABLE)))
            actions = ['cancel the migration of share %s to %s' % (name, dest), 'remove the destination instance',
                       'restore the source (available, access rules as before)',
                       'task_state %s -> migration_cancel_in_progress -> migration_cancelled' % ts]
            if ctx.check_mode:
                predicted = copy.deepcopy(record)
                predicted['task_state'] = states.MIGRATION_CANCELLED
                return self._result(True, before, predicted, pool, actions)
            if record['migration'].get('mechanism') == 'host':
                self._cancel_host_check(record)
            if ts != states.MIGRATION_CANCEL_IN_PROGRESS:
                self._set(record, pool, 'cancel requested', states.MIGRATION_CANCEL_IN_PROGRESS)
            if record['migration'].get('mechanism') != 'host':
                ctx.driver(source).migration_cancel(source, dest, record)
            if not ctx.driver(source).instance_exists(source, name):
                raise StorageError('Refusing to finish the cancel of share %s: its source data in %s is missing, so the '
                                   'destination in %s is kept; inspect both by hand' % (name, source, dest))
            # Only a destination this migration recorded is removed; whatever else sits at that
            # path (a run that died before recording it found it there) is left alone. The source
            # is restored and the cancel recorded first; the removal is cleanup.
            self._note_destination_removal(record, source, dest)
            restore_problem = self._restore_source(record, pool)
            if restore_problem:
                raise StorageError('Failed to cancel the migration of share %s: cannot restore the export of its source: '
                                   '%s; run the cancel again' % (name, restore_problem))
            record['migration']['ended_at'] = now_iso()
            self._set(record, pool, 'migration cancelled', states.MIGRATION_CANCELLED)
            left = self._run_cleanup(record, pool)
            extra = {}
            if left:
                extra['warnings'] = ['The migration of share %s is cancelled and the share is available in %s, but '
                                     'cleanup is pending (retried by every later run on the share): %s'
                                     % (name, pool, cleanup.describe(left))]
            return self._result(True, before, record, pool, actions, extra)

    def _switched(self, record, source, dest):
        """True once a switchover has moved the share to the destination (no way back)."""
        dst_inst = self._instance(record, 'destination')
        if dst_inst is not None and dst_inst.get('status') == states.AVAILABLE:
            return True
        if record['migration'].get('mechanism') != 'host':
            return self.ctx.driver(source).migration_complete_done(source, dest, record)
        return False

    # -- administrator reset -----------------------------------------------------------------
    def reset(self, name, task_state):
        validate_name(name)
        if task_state is not None and task_state not in states.RESETTABLE_TASK_STATES:
            raise InvalidRequest('Invalid task_state %r for a reset: allowed are %s or none'
                                 % (task_state, ', '.join(states.RESETTABLE_TASK_STATES)))
        ctx = self.ctx
        with ctx.lock(name, 'reset task_state'):
            record, pool = ctx.load(name, cleanup=True)
            cleaned = cleanup.retry(ctx, record, pool)
            before = copy.deepcopy(record)
            if record.get('task_state') == task_state:
                return self._result(cleaned, before, record, pool, [])
            actions = ['reset task_state of share %s from %s to %s' % (name, record.get('task_state'), task_state)]
            if ctx.check_mode:
                predicted = copy.deepcopy(record)
                predicted['task_state'] = task_state
                return self._result(True, before, predicted, pool, actions)
            self._set(record, pool, 'task_state reset by an administrator', task_state)
            return self._result(True, before, record, pool, actions)
