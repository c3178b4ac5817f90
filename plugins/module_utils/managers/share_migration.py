# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The share migration state machine (phase 1, switchover, cancel, reset) of the reference.

Every transition is written to the share's record before and after the step it guards, under the
share's lock, so a run that dies at any point leaves a record from which a rerun resumes:
``started`` attaches to a running phase 1, ``completed`` finishes an interrupted switchover,
``cancelled`` finishes an interrupted cancel.

The manager validates, locks, loads, records and returns results; how the data moves is the job of
the migration's mechanism (managers/migration_mechanism.py: driver_assisted.py, host_assisted.py),
which reaches the records through MigrationSteps (managers/migration_steps.py). Every task_state
goes through the state machine of states.py.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import contextlib
import copy
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, InvalidRequest, StorageError)
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers import cleanup
from ansible_collections.storage.mobility.plugins.module_utils.managers.copy_reports import check_report
from ansible_collections.storage.mobility.plugins.module_utils.managers.driver_assisted import DriverAssisted
from ansible_collections.storage.mobility.plugins.module_utils.managers.host_assisted import HostAssisted, writable_copy
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_steps import MigrationSteps
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import (
    ShareManager, active_instance, check_extra_specs, normalize_share_type)
from ansible_collections.storage.mobility.plugins.module_utils.names import parse_pool, validate_name
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso

MIGRATION_FLAGS = states.MIGRATION_FLAGS
# The mechanisms by the name the migration record keeps (``migration.mechanism``); a record that
# names none is driver-assisted.
MECHANISMS = {DriverAssisted.name: DriverAssisted, HostAssisted.name: HostAssisted}


class HostAssistedUnavailable(InvalidRequest):
    """Driver-assisted migration is impossible and host-assisted copying is not available."""


class ShareMigrationManager(object):

    def __init__(self, ctx, host_assisted=True, clock=time.monotonic, sleeper=time.sleep):
        self.ctx = ctx
        self.shares = ShareManager(ctx)
        # host_assisted=False turns the data-mover path off (the driver-only mode of 0.1).
        self.host_assisted = host_assisted
        # The mechanisms a new migration may use (a running one keeps its own).
        self.mechanisms = dict((name, cls) for name, cls in MECHANISMS.items()
                               if host_assisted or name != HostAssisted.name)
        self.clock = clock
        self.sleeper = sleeper
        self.steps = MigrationSteps(ctx, self.shares, clock, sleeper)

    def _mechanism(self, record, name=None):
        """The mechanism of the migration in ``record`` (or the one named ``name``)."""
        if name is None:
            name = (record.get('migration') or {}).get('mechanism')
        return MECHANISMS.get(name, DriverAssisted)(self.steps)

    @contextlib.contextmanager
    def _locked(self, name, purpose):
        """Under the share's lock: (record, pool, cleaned, before) with the cleanup an earlier run
        left retried first (``cleaned``) and ``before`` the record as found."""
        ctx = self.ctx
        with ctx.lock(name, purpose):
            record, pool = ctx.load(name, cleanup=True)
            cleaned = cleanup.retry(ctx, record, pool)
            yield record, pool, cleaned, copy.deepcopy(record)

    @staticmethod
    def elapsed(since_epoch):
        return round(time.time() - since_epoch, 3) if since_epoch else None

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
            return HostAssisted.name, None, 'force_host_assisted_migration is set'
        compat = src_driver.migration_check_compatibility(pool, dest, record, dst_driver)
        if not compat.get('compatible'):
            refusal = compat.get('reason') or 'the driver reports the pools incompatible'
        else:
            missing = [f for f in wanted if not compat.get(f)]
            refusal = ('the driver cannot honour %s' % ', '.join('%s=true' % f for f in missing)) if missing else None
        if refusal is None:
            return DriverAssisted.name, compat, None
        # Beyond the reference: with only writable asked for and a driver that cannot move the share
        # at all (posix pools on different filesystems), a host copy keeps the source writable in
        # phase 1 and makes it read-only for the final pass of phase 2 (docs/share_migration.md).
        writable_copy = wanted == ['writable'] and not compat.get('compatible')
        if wanted and not writable_copy:
            return 'error', compat, refusal
        if record.get('snapshots'):
            raise InvalidRequest('Cannot migrate share %s to %s: driver-assisted migration is not possible (%s) and '
                                 'host-assisted migration cannot carry its snapshots (%s); delete them first'
                                 % (record['name'], dest, refusal, ', '.join(s['name'] for s in record['snapshots'])))
        return HostAssisted.name, compat, refusal

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
        with self._locked(name, 'migration start') as (record, pool, cleaned, before):
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
                return self._mechanism(record).attach(record, pool, before, wait, timeout, sleep, copy_job, copy_report)
            if copy_report is not None and mig.get('destination_pool') == str(parse_pool(destination)):
                # A report for a migration that is no longer copying (completed, failed, cancelled).
                check_report(record, copy_report, final=False)
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
                return self.steps.result(cleaned, before, record, pool, [], {'msg': 'share %s is already in pool %s' % (name, pool)})
            if stype is not None:
                check_extra_specs(stype, ctx.driver(dest).pool_stats(dest), dest)
            mechanism, compat, refusal = self.plan_mechanism(record, pool, dest, flags, force_host_assisted)
            if mechanism not in self.mechanisms and mechanism != 'error':
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
            return self._mechanism(record, mechanism).start(record, pool, before, dest, migration, wait, timeout, sleep)

    def _refuse(self, record, pool, before, dest, migration, refusal):
        """The driver cannot honour a requested flag and a host copy may not be used: migration_error."""
        msg = ('Failed to migrate share %s to %s: driver-assisted migration is not possible (%s) and a host-assisted '
               'copy is not allowed because %s' % (record['name'], dest, refusal,
                                                   ', '.join('%s=true' % f for f in MIGRATION_FLAGS if migration['requested'][f])))
        migration['error'] = msg
        migration['ended_at'] = migration['started_at']
        if self.ctx.check_mode:
            raise InvalidRequest(msg)
        self.steps.set_state(record, pool, 'migration refused: %s' % refusal, states.MIGRATION_ERROR, migration=migration)
        raise StorageError(msg, share=self.shares.view(record, pool))

    # -- phase 2 -----------------------------------------------------------------------------
    def complete(self, name, destination=None, copy_report=None, open_writers_wait=0):
        """Phase 2. ``open_writers_wait``: seconds to wait for processes holding files of the source
        open for writing to close them before refusing (0 refuses at once)."""
        validate_name(name)
        if open_writers_wait is None or open_writers_wait < 0:
            raise InvalidRequest('Invalid open_writers_wait %r for share %s: give 0 or more seconds'
                                 % (open_writers_wait, name))
        ctx = self.ctx
        with self._locked(name, 'migration complete') as (record, pool, cleaned, before):
            ts = record.get('task_state')
            mig = record.get('migration') or {}
            if destination is not None and mig.get('destination_pool') not in (None, str(ctx.pool(destination, 'destination pool').ref)):
                raise InvalidRequest('Share %s is migrating to %s, not %s' % (name, mig['destination_pool'], destination))
            if ts == states.MIGRATION_SUCCESS:
                if copy_report is not None:
                    check_report(record, copy_report, final=True)
                return self.steps.result(cleaned, before, record, pool, [], {'msg': 'migration already completed'})
            if ts != states.MIGRATION_COMPLETING and not states.may_transition(ts, states.MIGRATION_COMPLETING):
                raise InvalidRequest('Cannot complete the migration of share %s: its task_state is %s; phase 2 starts only '
                                     'from %s' % (name, ts, ' or '.join(states.COMPLETABLE_TASK_STATES)))
            source, dest = self.steps.pools(record)
            mechanism = self._mechanism(record)
            if copy_report is not None:
                mechanism.check_completion_report(record, copy_report)
            actions = []
            if mig.get('mechanism') == HostAssisted.name and writable_copy(mig) and not mig.get('source_read_only'):
                actions.append('set the source read-only for the final pass (it stayed writable during phase 1)')
            actions += ['switch share %s from %s to %s' % (name, source, dest),
                        'apply access rules to the destination', 'delete the source instance',
                        'task_state %s -> migration_completing -> migration_success' % ts]
            if ctx.check_mode:
                predicted = copy.deepcopy(record)
                predicted['task_state'] = states.MIGRATION_SUCCESS
                return self.steps.result(True, before, predicted, pool, actions)
            if ts != states.MIGRATION_COMPLETING:
                mig['phase1_state'] = ts
                mig['completing_started_at'] = now_iso()
                mig['completing_started_epoch'] = time.time()
                self.steps.set_state(record, pool, 'switchover started', states.MIGRATION_COMPLETING)
            mig['open_writers_wait'] = open_writers_wait
            pending = mechanism.complete(record, pool, before, source, dest, copy_report, open_writers_wait)
            if pending is not None:
                return pending
            new_record, new_pool = self._switch(record, source, dest)
            extra = {}
            if new_record.get('cleanup_pending'):
                extra['warnings'] = ['Share %s now lives in %s, but cleanup is pending (retried by every later run on '
                                     'the share): %s' % (name, dest, cleanup.describe(new_record['cleanup_pending']))]
            return self.steps.result(True, before, new_record, new_pool, actions, extra)

    def _switch(self, record, source, dest):
        """After the data is on the destination: exports, instance statuses, source deleted, record moved.
        Each step is idempotent, so an interrupted switchover converges when run again."""
        states.check_transition(record.get('task_state'), states.MIGRATION_SUCCESS)
        ctx = self.ctx
        name = record['name']
        src_driver, dst_driver = ctx.driver(source), ctx.driver(dest)
        src_inst = active_instance(record)
        dst_inst = self.steps.instance(record, 'destination')
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
        self._mechanism(record).note_switch_cleanup(record, source)
        mig['completed_at'] = now_iso()
        if mig.get('completing_started_epoch'):
            mig['switchover_seconds'] = round(time.time() - mig['completing_started_epoch'], 3)
        read_only_epoch = mig.get('read_only_epoch') or mig.get('started_epoch')
        if mig.get('source_read_only') and read_only_epoch:
            # Users could read but not write the share from the read-only point (the start of
            # phase 1, or of phase 2 for a writable host copy) until this switch.
            mig['read_only_seconds'] = round(time.time() - read_only_epoch, 3)
        mig['error'] = None
        new = copy.deepcopy(record)
        dst_inst = self.steps.instance(new, 'destination')
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
        self.steps.run_cleanup(new, dest)
        return new, dest

    # -- cancel ------------------------------------------------------------------------------
    def cancel(self, name):
        validate_name(name)
        ctx = self.ctx
        with self._locked(name, 'migration cancel') as (record, pool, cleaned, before):
            ts = record.get('task_state')
            if ts in (None, states.MIGRATION_CANCELLED, states.MIGRATION_SUCCESS, states.MIGRATION_ERROR,
                      states.DATA_COPYING_CANCELLED, states.DATA_COPYING_ERROR):
                return self.steps.result(cleaned, before, record, pool, [], {'msg': 'no migration to cancel (task_state %s)' % ts})
            source, dest = self.steps.pools(record)
            mechanism = self._mechanism(record)
            if ts == states.MIGRATION_COMPLETING:
                # Beyond the reference: a switchover that died before switching anything can be
                # cancelled; after the switch only completing it is safe.
                if mechanism.switched(record, source, dest):
                    raise InvalidRequest('Cannot cancel the migration of share %s: the switchover already switched it '
                                         'to %s; run the completion again to finish it' % (name, dest))
            elif (ts != states.MIGRATION_CANCEL_IN_PROGRESS
                    and not states.may_transition(ts, states.MIGRATION_CANCEL_IN_PROGRESS)):
                raise InvalidRequest('Cannot cancel the migration of share %s: its task_state is %s; cancel is allowed in %s'
                                     % (name, ts, ', '.join(states.CANCELLABLE_TASK_STATES + states.RECOVERY_CANCELLABLE)))
            actions = ['cancel the migration of share %s to %s' % (name, dest), 'remove the destination instance',
                       'restore the source (available, access rules as before)',
                       'task_state %s -> migration_cancel_in_progress -> migration_cancelled' % ts]
            if ctx.check_mode:
                predicted = copy.deepcopy(record)
                predicted['task_state'] = states.MIGRATION_CANCELLED
                return self.steps.result(True, before, predicted, pool, actions)
            mechanism.check_cancel(record)
            if ts != states.MIGRATION_CANCEL_IN_PROGRESS:
                self.steps.set_state(record, pool, 'cancel requested', states.MIGRATION_CANCEL_IN_PROGRESS)
            mechanism.cancel(record, source, dest)
            if not ctx.driver(source).instance_exists(source, name):
                raise StorageError('Refusing to finish the cancel of share %s: its source data in %s is missing, so the '
                                   'destination in %s is kept; inspect both by hand' % (name, source, dest))
            # Only a destination this migration recorded is removed; whatever else sits at that
            # path (a run that died before recording it found it there) is left alone. The source
            # is restored and the cancel recorded first; the removal is cleanup.
            self.steps.note_destination_removal(record, source, dest)
            restore_problem = self.steps.restore_source(record, pool)
            if restore_problem:
                raise StorageError('Failed to cancel the migration of share %s: cannot restore the export of its source: '
                                   '%s; run the cancel again' % (name, restore_problem))
            record['migration']['ended_at'] = now_iso()
            self.steps.set_state(record, pool, 'migration cancelled', states.MIGRATION_CANCELLED)
            left = self.steps.run_cleanup(record, pool)
            extra = {}
            if left:
                extra['warnings'] = ['The migration of share %s is cancelled and the share is available in %s, but '
                                     'cleanup is pending (retried by every later run on the share): %s'
                                     % (name, pool, cleanup.describe(left))]
            return self.steps.result(True, before, record, pool, actions, extra)

    # -- administrator reset -----------------------------------------------------------------
    def reset(self, name, task_state):
        validate_name(name)
        if not states.may_reset(task_state):
            raise InvalidRequest('Invalid task_state %r for a reset: allowed are %s or none'
                                 % (task_state, ', '.join(states.RESETTABLE_TASK_STATES)))
        ctx = self.ctx
        with self._locked(name, 'reset task_state') as (record, pool, cleaned, before):
            if record.get('task_state') == task_state:
                return self.steps.result(cleaned, before, record, pool, [])
            actions = ['reset task_state of share %s from %s to %s' % (name, record.get('task_state'), task_state)]
            if ctx.check_mode:
                predicted = copy.deepcopy(record)
                predicted['task_state'] = task_state
                return self.steps.result(True, before, predicted, pool, actions)
            # An administrator's reset overrides the state machine (that is its purpose).
            self.steps.record_state(record, pool, 'task_state reset by an administrator', task_state)
            return self.steps.result(True, before, record, pool, actions)
