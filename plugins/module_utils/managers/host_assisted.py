# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-assisted path of a share migration: a data node copies, the records keep score.

The manager never copies data itself. Phase 1 makes the source read-only, creates the
destination instance and hands out a *copy plan*; the ``data_mover`` role executes it on a data
node and returns a *copy report*. Only a verified report bound to this migration's id moves the
share to ``data_copying_completed``. Phase 2 asks for a final pass (a last sync and a second
verification) and switches only after a verified final report, so the source is never deleted
before the destination has been proven identical.

Each plan carries a *pass*, and only a report signed for the pass the migration waits for proves
a verified copy (managers/copy_reports.py).

Just before every switch, under the share's lock with the source read-only, both instances are
sealed again (data_copy/seal.py) and compared with the seals of the signed final report; when
anything changed since that verification, nothing is switched and a new final pass is asked for.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import layout
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers.copy_reports import (
    check_report, copy_summary, current_pass, draw_pass, final_job_id, forget_final_pass, report_failure)
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_mechanism import MigrationMechanism
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance, live_copy_progress
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso
from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles

DEFAULT_HASH = 'xxh128'
SIDES = ('source', 'destination')


class HostAssisted(MigrationMechanism):
    """A data node copies (the data_mover role runs the copy plan); the manager keeps score."""

    name = 'host'

    # -- the plan ----------------------------------------------------------------------------
    def copy_plan(self, record, source, dest, final=False):
        """What the data mover must do: both trees, the ignore list, verification, the job id, and
        the pass its report must be signed for."""
        mig = record['migration']
        src_inst = active_instance(record)
        dst_inst = self.steps.instance(record, 'destination')
        current = current_pass(record, final) or {}
        return {
            'migration_id': mig['id'],
            'job_id': final_job_id(mig) if final else mig['id'],
            'final_pass': final,
            'share': record['name'],
            'source': {'helper': 'local', 'export': src_inst['path'], 'read_only': True,
                       'pool': str(source.ref), 'host': source.backend.host},
            'destination': {'helper': 'local', 'export': dst_inst['path'] if dst_inst else
                            self.ctx.driver(dest).instance_path(dest, record['name']),
                            'pool': str(dest.ref), 'host': dest.backend.host},
            'ignore_files': list(source.backend.migration_ignore_files),
            'check_hash': True,
            'hash_algorithm': mig.get('hash_algorithm') or DEFAULT_HASH,
            'report_signing': {'migration_id': mig['id'], 'pass_id': current.get('id'), 'key': current.get('key')},
        }

    def _plan_result(self, changed, before, record, pool, actions, final=False):
        """The result that hands out the copy plan (drawing its pass when none was handed out)."""
        source, dest = self.steps.pools(record)
        if current_pass(record, final) is None:
            # A migration recorded before passes existed, or a final pass not asked for yet.
            drawn = draw_pass(record, final)
            if not self.ctx.check_mode:
                self.ctx.repo.save(record, pool, '%s pass %s handed out' % ('final' if final else 'phase 1', drawn['id']))
                changed = True
        extra = {'copy_required': True, 'copy_plan': self.copy_plan(record, source, dest, final)}
        return self.steps.result(changed, before, record, pool, actions, extra)

    # -- phase 1 -----------------------------------------------------------------------------
    def start(self, record, pool, before, dest, migration, wait, timeout, sleep):
        """Phase 1 up to data_copying_starting; the copy plan is handed out, never waited for."""
        name = record['name']
        actions = [
            'host-assisted migration of share %s from %s to %s (%s)' % (name, pool, dest, migration['driver_refusal']),
            'set the source read-only for the copy',
            'create destination instance in pool %s (status migrating_to)' % dest,
            'hand the copy plan to a data node (storage.mobility.data_mover) and wait for its verified report',
            'task_state migration_starting -> data_copying_starting',
        ]
        if self.ctx.check_mode:
            return self.steps.predicted_start(record, pool, before, migration, actions, states.DATA_COPYING_STARTING)
        self.steps.begin(record, pool, migration, 'migration %s to %s requested (host-assisted)' % (migration['id'], dest))
        self._start_steps(record, pool, dest)
        return self._plan_result(True, before, record, pool, actions)

    def _start_steps(self, record, pool, dest):
        """From migration_starting to data_copying_starting; idempotent, so a rerun resumes."""
        if record.get('task_state') != states.MIGRATION_STARTING:
            return
        steps = self.steps
        try:
            steps.source_read_only(record, pool)
            steps.add_destination(record, dest)
            if current_pass(record, final=False) is None:
                draw_pass(record, final=False)
            steps.set_state(record, pool, 'source read-only, destination created', states.DATA_COPYING_STARTING)
        except Exception as exc:
            steps.fail_phase1(record, pool, dest, exc)

    def attach(self, record, pool, before, wait, timeout, sleep, copy_job=None, copy_report=None):
        """A rerun of the same start on a host-assisted migration: resume, note the running copy,
        or take the copy report."""
        if self.ctx.check_mode:
            return self._plan_result(False, before, record, pool, [])
        ts = record.get('task_state')
        if ts == states.MIGRATION_STARTING:
            self._start_steps(record, pool, self.steps.pools(record)[1])
            ts = record.get('task_state')
        if copy_report is not None:
            return self._take_phase1_report(record, pool, before, copy_report)
        if ts == states.DATA_COPYING_COMPLETED:
            return self.steps.result(False, before, record, pool, [])
        if copy_job is not None and ts in (states.DATA_COPYING_STARTING, states.DATA_COPYING_IN_PROGRESS):
            # The phase playbooks hand on the job's progress at each poll (``progress``, with its
            # ``state`` and ``phase``): kept apart from the job, so that share_info shows the same
            # figures on any machine, also when the status file is on another host.
            copy_job = dict(copy_job)
            reported = copy_job.pop('progress', None)
            if ts == states.DATA_COPYING_STARTING or record['migration'].get('copy_job') != copy_job:
                record['migration']['copy_job'] = copy_job
                record['migration'].pop('reported_progress', None)
                event = 'data node %s copying (job %s)' % (copy_job.get('data_node'), copy_job.get('job_id'))
                self.steps.set_state(record, pool, event, states.DATA_COPYING_IN_PROGRESS)
                return self._plan_result(True, before, record, pool, ['record the running copy'])
            if isinstance(reported, dict):
                progress = layout.reported_progress(reported.get('progress'), reported.get('state'),
                                                    reported.get('phase'))
                if progress:
                    # Figures of a running job, not a change of the migration: no history entry,
                    # and the module reports no change.
                    record['migration']['reported_progress'] = dict(progress, reported_at=now_iso())
                    self.ctx.repo.save(record, pool)
                    return self._plan_result(False, before, record, pool, [])
        return self._plan_result(record.get('revision') != before.get('revision'), before, record, pool, [])

    def _take_phase1_report(self, record, pool, before, report):
        steps = self.steps
        ts = record.get('task_state')
        check_report(record, report, final=False)
        if ts == states.DATA_COPYING_COMPLETED:
            return steps.result(False, before, record, pool, [])
        if ts not in states.DATA_COPYING_PENDING:
            raise InvalidRequest('Cannot take a copy report for share %s in task_state %s' % (record['name'], ts))
        problem = report_failure(report)
        if problem:
            self._fail_copy(record, pool, problem, report)
        steps.set_state(record, pool, 'copy verified', states.DATA_COPYING_COMPLETING)
        record['migration']['copy'] = copy_summary(report)
        record['migration'].pop('reported_progress', None)
        record['migration']['phase1_done_at'] = now_iso()
        steps.set_state(record, pool, 'phase 1 done: copy verified', states.DATA_COPYING_COMPLETED)
        return steps.result(True, before, record, pool, ['record the verified copy', 'task_state -> data_copying_completed'])

    def _fail_copy(self, record, pool, problem, report):
        """A failed or unverified copy: data_copying_error with the source restored and the error
        recorded first, then the destination removed (best effort: cleanup_pending otherwise)."""
        steps = self.steps
        source, dest = steps.pools(record)
        name = record['name']
        had_destination = steps.instance(record, 'destination') is not None
        kept = steps.note_destination_removal(record, source, dest)
        restore_problem = steps.restore_source(record, pool)
        record['migration']['error'] = 'Copy failed: %s' % problem
        record['migration']['copy'] = dict(copy_summary(report), differ=report.get('differ'),
                                           missing=report.get('missing'), extra=report.get('extra'))
        record['migration']['ended_at'] = now_iso()
        steps.set_state(record, pool, 'copy failed: %s' % problem, states.DATA_COPYING_ERROR)
        left = steps.run_cleanup(record, pool)
        removed = had_destination and not left and not kept
        msg = ('Failed to copy share %s to %s: %s; %sthe share is available again, untouched, in %s'
               % (name, dest, problem, 'the destination instance was removed and ' if removed else '', source))
        msg += steps.cleanup_note(left, kept, restore_problem)
        raise StorageError(msg, share=steps.shares.view(record, pool), copy_report=report)

    # -- phase 2 -----------------------------------------------------------------------------
    def check_completion_report(self, record, copy_report):
        # A forged, foreign or stale report is refused before anything is recorded.
        check_report(record, copy_report, final=True)

    def complete(self, record, pool, before, source, dest, copy_report, open_writers_wait):
        """The switchover of a host-assisted migration: final pass, verified, sealed, then switch.

        Returns a result when a data node must (again) run the final pass, None when the switch may
        go on: the final pass is verified and both instances are as it left them. Processes holding
        files of the source open for writing (through the pool path, the export or any other path
        into it) are looked for before the final pass is handed out and again immediately before
        the switch (see _refuse_open_writers).
        """
        mig = record['migration']
        if copy_report is not None:
            check_report(record, copy_report, final=True)
        if not mig.get('final_verified'):
            if copy_report is None:
                self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=False)
                # Ask for the final pass; a rerun gets the same plan (the data mover attaches).
                changed = record.get('revision') != before.get('revision')
                return self._plan_result(changed, before, record, pool,
                                         ['run the final pass on a data node (last sync and verification)'], final=True)
            problem = report_failure(copy_report)
            if problem:
                mig['error'] = 'Final pass failed, nothing was switched: %s' % problem
                # The next completion hands out a new final pass.
                forget_final_pass(record)
                back = mig.get('phase1_state') or states.DATA_COPYING_COMPLETED
                self.steps.set_state(record, pool, 'final pass failed: %s' % problem, back)
                raise StorageError('Failed to complete the migration of share %s: the final pass %s. Nothing was switched: '
                                   'the share is back in %s on %s with its source intact; fix the cause and complete again, '
                                   'or cancel' % (record['name'], problem, back, source), copy_report=copy_report)
            mig['final_verified'] = True
            mig['final_copy'] = copy_summary(copy_report)
            self.ctx.repo.save(record, pool, 'final pass verified')
        return self._sealed_for_switch(record, pool, before, source, dest, open_writers_wait)

    def _sealed_for_switch(self, record, pool, before, source, dest, open_writers_wait=0):
        """Seal both instances again and compare with the verified final pass's seals: None when they
        match (the switch may go on), else a result asking for a new final pass.

        Runs on the first run and on every rerun, whatever the record says, until the switch has
        begun: the run that found the seals equal records it (under the same lock) just before it
        switches, and a rerun after a crash in the switch finishes it without sealing again once
        the destination is available or an enforcing export serves it (its writes are then the
        users' own). A switch that stopped before that point (a crash, a busy export) seals again.
        """
        mig = record['migration']
        final_pass = current_pass(record, final=True) or {}
        if self.switched(record, source, dest) or (
                mig.get('switch_sealed') == final_pass.get('id') and self._switch_begun(record, dest)):
            return None
        self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=True)
        verified = mig.get('final_copy') or {}
        ignore = list(source.backend.migration_ignore_files)
        paths = {'source': active_instance(record)['path'], 'destination': self.steps.instance(record, 'destination')['path']}
        seals = {}
        for side, pool_of in (('source', source), ('destination', dest)):
            try:
                seals[side] = self.ctx.driver(pool_of).tree_seal(pool_of, paths[side], ignore)
            except StorageError as exc:
                raise StorageError('Failed to complete the migration of share %s: cannot seal its %s instance %s '
                                   'before the switch: %s. Nothing was switched; the share stays in %s'
                                   % (record['name'], side, paths[side], exc, record.get('task_state')))
        changed = [side for side in SIDES if verified.get(side + '_seal') != seals[side]]
        if not changed:
            mig['switch_sealed'] = final_pass.get('id')
            self.ctx.repo.save(record, pool, 'both instances sealed as the final pass verified them: switching')
            return None
        if not any(verified.get(side + '_seal') for side in SIDES):
            why = 'the verified final pass carries no seals of the trees it verified'
        else:
            why = 'the %s instance changed since the final pass verified it (%s)' % (
                ' and the '.join(changed), ', '.join('%s %s' % (side, paths[side]) for side in changed))
        msg = ('Not switching share %s: %s. The verified final pass is stale, so a new final pass must copy and verify '
               'again before the switch; the source is kept' % (record['name'], why))
        mig['final_verified'] = False
        mig['stale_final_copy'] = mig.pop('final_copy', None)
        mig['error'] = msg
        drawn = draw_pass(record, final=True)
        self.ctx.repo.save(record, pool, 'final pass stale (%s changed since its verification): final pass %s requested'
                           % (' and '.join(changed), drawn['id']))
        result = self._plan_result(True, before, record, pool,
                                   ['seal both instances: %s changed since the final pass was verified' % ' and '.join(changed),
                                    'run a new final pass on a data node (last sync and verification)'], final=True)
        result['msg'] = msg
        result['warnings'] = [msg]
        return result

    def _switch_begun(self, record, dest):
        """True once _switch may have changed something: the destination is available, or an
        enforcing export already serves it."""
        dst_inst = self.steps.instance(record, 'destination')
        if dst_inst is None:
            return False
        if dst_inst.get('status') == states.AVAILABLE:
            return True
        export = self.ctx.driver(dest).export()
        return bool(export.enforced and export.state(record['name'], dst_inst['path'])['exported'])

    def _refuse_open_writers(self, record, pool, source, wait_seconds, after_final):
        """Find processes holding files of the source open for writing, through its path in the
        pool or its export, and wait up to ``wait_seconds`` for them to close.

        Before the final pass (``after_final`` false) writers that closed in time are harmless:
        the pass copies what they wrote. After it, any writer seen may have written after the
        pass read its files, so the pass is no longer proof: a new one is needed (a new job id).
        Refusing switches nothing: the share goes back to the state phase 2 started from, with the
        source intact and the error recorded; completing again (or cancelling) works from there."""
        name = record['name']
        src_inst = active_instance(record)
        driver = self.ctx.driver(source)
        paths = [src_inst['path'], driver.export().location(name, src_inst['path'])]
        found = driver.transport.open_writers(paths)
        if not found:
            record['migration'].pop('open_writers', None)
            return
        remaining = found
        if wait_seconds:
            remaining = openfiles.wait_closed(lambda: driver.transport.open_writers(paths), wait_seconds,
                                              clock=self.steps.clock, sleeper=self.steps.sleeper)
        if not remaining and not after_final:
            return
        mig = record['migration']
        listed = openfiles.describe(remaining or found)
        if remaining:
            why = 'processes hold files of the source %s open for writing: %s' % (src_inst['path'], listed)
            if wait_seconds:
                why += ' (still open after waiting %s s, open_writers_wait)' % wait_seconds
        else:
            why = 'processes held files of the source %s open for writing: %s' % (src_inst['path'], listed)
        if after_final:
            # Their writes may be missing from the destination: the verified pass proves nothing now.
            # A new pass is drawn: the data mover runs the final job again for it, and only its
            # report can complete the migration.
            mig['final_verified'] = False
            mig.pop('final_copy', None)
            drawn = draw_pass(record, final=True)
            why += ' after the final pass; a new final pass (pass %s) is needed' % drawn['id']
        else:
            why += ' before the final pass'
        back = mig.get('phase1_state') or states.DATA_COPYING_COMPLETED
        mig['error'] = 'Switchover refused, nothing was switched: %s' % why
        mig['open_writers'] = remaining or found
        self.steps.set_state(record, pool, 'switchover refused: open writers', back)
        raise StorageError('Failed to complete the migration of share %s: %s. Nothing was switched: the share is back '
                           'in %s on %s with its source intact; stop those processes (or let open_writers_wait wait '
                           'for them) and complete again, or cancel' % (name, why, back, source),
                           open_writers=remaining or found)

    # -- cancel ------------------------------------------------------------------------------
    def check_cancel(self, record):
        """Refuse to remove the destination while a local copy job still writes into it."""
        mig = record.get('migration') or {}
        job = mig.get('copy_job') or {}
        jobs = [job]
        if layout.final_job(job):
            jobs.append(layout.final_job(job))  # the final pass runs next to the phase-1 job
        for candidate in jobs:
            progress = live_copy_progress({'copy_job': candidate})
            if progress and progress.get('state') == 'running':
                raise StorageError('Cannot cancel the migration of share %s yet: its copy job %s is still running on '
                                   'the data node; cancel the copy first (the cancel_share_migration playbook does both)'
                                   % (record['name'], candidate.get('job_id')))
