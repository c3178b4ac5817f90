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

Each plan carries a *pass* (see data_copy/signing.py): an id and a key drawn for phase 1 and for
each final pass, kept in the record. A report proves a verified copy only when the data_copy
module signed it with the key of the pass the migration waits for; a report made by hand, edited,
or of another migration or pass is refused and changes nothing. A report that claims no success
needs no signature: it can only fail a pass, as a cancel could.

Just before every switch, under the share's lock with the source read-only, both instances are
sealed again (data_copy/seal.py) and compared with the seals of the signed final report; when
anything changed since that verification, nothing is switched and a new final pass is asked for.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.signing import new_pass, signature_valid
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance, live_copy_progress
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso
from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles

FINAL_SUFFIX = '-final'
DEFAULT_HASH = 'xxh128'
PHASE1_PASS = 'phase1'
FINAL_PASS = 'final'
SIDES = ('source', 'destination')

# The record keeps a copy report small: this many ignored paths (the count is always kept) and log lines.
SUMMARY_IGNORED = 20
SUMMARY_LOG_LINES = 12
SUMMARY_LOG_WIDTH = 240
# Why a copy job that did not complete did not, when its report gives no error.
JOB_STATE_TEXT = {
    'absent': 'the data node has no such job (it never started there, or its folder was removed)',
    'cancelled': 'it was cancelled before it completed',
    'running': 'it is still running',
    'failed': 'it failed without saying why',
}


def final_job_id(mig):
    """The job id of the final pass, ``<id>-final``. A final pass taken again (something may have
    written into the source after it) keeps the id and gets a new pass, which makes the data mover
    run the job again (see _draw_pass)."""
    return mig['id'] + FINAL_SUFFIX


def _listed(report, key, limit=10):
    items = report.get(key) or []
    names = [item if isinstance(item, str) else item.get('path', str(item)) for item in items[:limit]]
    more = len(items) - len(names)
    return ', '.join(names) + (' and %d more' % more if more > 0 else '')


class HostAssistedMixin(object):
    """Host-assisted phase 1, completion and cancel for ShareMigrationManager."""

    # -- the plan ----------------------------------------------------------------------------
    @staticmethod
    def _pass(record, final):
        """The pass the migration waits for (phase 1 or the final pass), or None."""
        return ((record.get('migration') or {}).get('passes') or {}).get(FINAL_PASS if final else PHASE1_PASS)

    def _draw_pass(self, record, final):
        """A new pass for phase 1 or the final pass, in the record (the caller saves it)."""
        drawn = new_pass(final)
        drawn['issued_at'] = now_iso()
        record['migration'].setdefault('passes', {})[FINAL_PASS if final else PHASE1_PASS] = drawn
        return drawn

    def copy_plan(self, record, source, dest, final=False):
        """What the data mover must do: both trees, the ignore list, verification, the job id, and
        the pass its report must be signed for."""
        mig = record['migration']
        src_inst = active_instance(record)
        dst_inst = self._instance(record, 'destination')
        current = self._pass(record, final) or {}
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

    # -- phase 1 -----------------------------------------------------------------------------
    def _start_host(self, record, pool, before, dest, migration):
        ctx = self.ctx
        name = record['name']
        actions = [
            'host-assisted migration of share %s from %s to %s (%s)' % (name, pool, dest, migration['driver_refusal']),
            'set the source read-only for the copy',
            'create destination instance in pool %s (status migrating_to)' % dest,
            'hand the copy plan to a data node (storage.mobility.data_mover) and wait for its verified report',
            'task_state migration_starting -> data_copying_starting',
        ]
        if ctx.check_mode:
            return self._predicted_start(record, pool, before, migration, actions, states.DATA_COPYING_STARTING)
        self._begin(record, pool, dest, migration, 'migration %s to %s requested (host-assisted)' % (migration['id'], dest))
        self._host_start_steps(record, pool, dest)
        return self._host_result(True, before, record, pool, actions)

    def _host_start_steps(self, record, pool, dest):
        """From migration_starting to data_copying_starting; idempotent, so a rerun resumes."""
        if record.get('task_state') != states.MIGRATION_STARTING:
            return
        name = record['name']
        src_driver, dst_driver = self.ctx.driver(pool), self.ctx.driver(dest)
        src_inst = active_instance(record)
        try:
            record['migration']['source_read_only'] = True
            src_driver.export().apply(name, src_inst['path'], access_mode(record['access_rules'], True))
            if self._instance(record, 'destination') is None:
                dst_driver.create_instance(dest, name)
                record['instances'].append({'id': str(uuid.uuid4()), 'pool': str(dest.ref),
                                            'status': states.MIGRATING_TO, 'role': 'destination',
                                            'path': dst_driver.instance_path(dest, name), 'created_at': now_iso()})
            if self._pass(record, final=False) is None:
                self._draw_pass(record, final=False)
            self._set(record, pool, 'source read-only, destination created', states.DATA_COPYING_STARTING)
        except Exception as exc:
            self._fail_phase1(record, pool, dest, exc)

    def _host_result(self, changed, before, record, pool, actions, final=False):
        source, dest = self._pools(record, pool)
        if self._pass(record, final) is None:
            # A migration recorded before passes existed, or a final pass not asked for yet.
            drawn = self._draw_pass(record, final)
            if not self.ctx.check_mode:
                self.ctx.repo.save(record, pool, '%s pass %s handed out' % ('final' if final else 'phase 1', drawn['id']))
                changed = True
        extra = {'copy_required': True, 'copy_plan': self.copy_plan(record, source, dest, final)}
        return self._result(changed, before, record, pool, actions, extra)

    def _host_attach(self, record, pool, before, copy_job, copy_report):
        """A rerun of the same start on a host-assisted migration: resume, note the running copy,
        or take the copy report."""
        ts = record.get('task_state')
        source, dest = self._pools(record, pool)
        if ts == states.MIGRATION_STARTING:
            self._host_start_steps(record, pool, dest)
            ts = record.get('task_state')
        if copy_report is not None:
            return self._take_phase1_report(record, pool, before, copy_report)
        if ts == states.DATA_COPYING_COMPLETED:
            return self._result(False, before, record, pool, [])
        if copy_job is not None and ts in (states.DATA_COPYING_STARTING, states.DATA_COPYING_IN_PROGRESS):
            if ts == states.DATA_COPYING_STARTING or record['migration'].get('copy_job') != copy_job:
                record['migration']['copy_job'] = copy_job
                self._set(record, pool, 'data node %s copying (job %s)' % (copy_job.get('data_node'), copy_job.get('job_id')),
                          states.DATA_COPYING_IN_PROGRESS)
                return self._host_result(True, before, record, pool, ['record the running copy'])
        return self._host_result(record.get('revision') != before.get('revision'), before, record, pool, [])

    def _check_report(self, record, report, final):
        """Refuse (InvalidRequest, nothing changed) a report that is not of this migration's job, and
        a report that claims a verified copy, or carries a signature, without a valid signature of
        the pass the migration waits for."""
        mig = record['migration']
        expected = final_job_id(mig) if final else mig['id']
        what = 'the final pass' if final else 'phase 1'
        if not isinstance(report, dict) or report.get('job_id') != expected:
            raise InvalidRequest('Refusing the copy report for share %s: it belongs to job %r, not to %s of migration %s; '
                                 'a stale or foreign report cannot complete anything, nothing was changed'
                                 % (record['name'], (report or {}).get('job_id') if isinstance(report, dict) else report,
                                    what, mig['id']))
        if self._report_failure(report) is not None and 'signature' not in report:
            return  # a failure needs no proof: it completes nothing
        problem = self._signature_problem(record, report, final)
        if problem:
            raise InvalidRequest('Refusing the copy report for share %s: %s. Only the data mover\'s own report, signed '
                                 'for the pass of %s that migration %s waits for, can prove a verified copy; nothing '
                                 'was changed' % (record['name'], problem, what, mig['id']))

    def _signature_problem(self, record, report, final):
        """Why ``report`` is not signed for the current pass, or None."""
        mig = record['migration']
        current = self._pass(record, final)
        if current is None:
            return 'no %s pass was handed out yet' % ('final' if final else 'phase 1')
        if not any(report.get(name) for name in ('migration_id', 'pass_id', 'signature')):
            return 'it carries no signature and names no pass (it was not made by the data mover for this migration)'
        if report.get('migration_id') != mig['id']:
            return 'it was made for migration %s' % report.get('migration_id')
        if report.get('pass_id') != current['id']:
            return ('it was made for pass %s, not for the current pass %s (a report of an earlier or another pass)'
                    % (report.get('pass_id'), current['id']))
        if not report.get('signature'):
            return 'it carries no signature'
        if not signature_valid(report, current.get('key')):
            return 'its signature does not match its contents (the report was changed after it was signed)'
        return None

    @staticmethod
    def _report_failure(report):
        """None when the report proves a verified copy, else why not."""
        state = report.get('state')
        if state not in (None, 'completed'):
            why = report.get('error') or JOB_STATE_TEXT.get(state) or 'no error given'
            return 'copy job %s %s: %s' % (report.get('job_id'), 'is still running' if state == 'running'
                                           else 'did not complete (%s)' % state, why)
        if report.get('verified') is not True:
            problems = []
            for key in ('differ', 'missing', 'extra'):
                if report.get(key):
                    problems.append('%s: %s' % (key, _listed(report, key)))
            why = '; '.join(problems) or report.get('verification') or report.get('error') or 'no verification result'
            return 'the copy was not verified (%s)' % why
        return None

    def _copy_summary(self, report):
        keep = ('files', 'bytes', 'directories', 'symlinks', 'hash_algorithm', 'copy_engine', 'copy_seconds',
                'verify_seconds',
                'source_digest', 'destination_digest', 'source_seal', 'destination_seal', 'pass_id', 'warnings',
                'data_node')
        summary = dict((k, report.get(k)) for k in keep if report.get(k) is not None)
        # What the ignore list left out (the first names, always the count) and the end of the log:
        # the job folder that holds the whole report is removed when the migration ends.
        if isinstance(report.get('ignored_count'), int):
            summary['ignored_count'] = report['ignored_count']
            summary['ignored'] = [str(item) for item in (report.get('ignored') or [])[:SUMMARY_IGNORED]]
        if isinstance(report.get('log_tail'), list):
            summary['log_tail'] = [str(line)[:SUMMARY_LOG_WIDTH] for line in report['log_tail'][-SUMMARY_LOG_LINES:]]
        summary['verified_at'] = now_iso()
        return summary

    def _take_phase1_report(self, record, pool, before, report):
        ts = record.get('task_state')
        self._check_report(record, report, final=False)
        if ts == states.DATA_COPYING_COMPLETED:
            return self._result(False, before, record, pool, [])
        if ts not in (states.DATA_COPYING_STARTING, states.DATA_COPYING_IN_PROGRESS, states.DATA_COPYING_COMPLETING):
            raise InvalidRequest('Cannot take a copy report for share %s in task_state %s' % (record['name'], ts))
        problem = self._report_failure(report)
        if problem:
            self._fail_copy(record, pool, problem, report)
        self._set(record, pool, 'copy verified', states.DATA_COPYING_COMPLETING)
        record['migration']['copy'] = self._copy_summary(report)
        record['migration']['phase1_done_at'] = now_iso()
        self._set(record, pool, 'phase 1 done: copy verified', states.DATA_COPYING_COMPLETED)
        return self._result(True, before, record, pool, ['record the verified copy', 'task_state -> data_copying_completed'])

    def _fail_copy(self, record, pool, problem, report):
        """A failed or unverified copy: data_copying_error with the source restored and the error
        recorded first, then the destination removed (best effort: cleanup_pending otherwise)."""
        source, dest = self._pools(record, pool)
        name = record['name']
        had_destination = self._instance(record, 'destination') is not None
        kept = self._note_destination_removal(record, source, dest)
        restore_problem = self._restore_source(record, pool)
        record['migration']['error'] = 'Copy failed: %s' % problem
        record['migration']['copy'] = dict(self._copy_summary(report), differ=report.get('differ'),
                                           missing=report.get('missing'), extra=report.get('extra'))
        record['migration']['ended_at'] = now_iso()
        self._set(record, pool, 'copy failed: %s' % problem, states.DATA_COPYING_ERROR)
        left = self._run_cleanup(record, pool)
        removed = had_destination and not left and not kept
        msg = ('Failed to copy share %s to %s: %s; %sthe share is available again, untouched, in %s'
               % (name, dest, problem, 'the destination instance was removed and ' if removed else '', source))
        msg += self._cleanup_note(left, kept, restore_problem)
        raise StorageError(msg, share=self.shares.view(record, pool), copy_report=report)

    # -- phase 2 -----------------------------------------------------------------------------
    def _complete_host(self, record, pool, before, source, dest, copy_report, open_writers_wait=0):
        """The switchover of a host-assisted migration: final pass, verified, sealed, then switch.

        Returns a result when a data node must (again) run the final pass, None when the switch may
        go on: the final pass is verified and both instances are as it left them. Processes holding
        files of the source open for writing (through the pool path, the export or any other path
        into it) are looked for before the final pass is handed out and again immediately before
        the switch (see _refuse_open_writers).
        """
        mig = record['migration']
        if copy_report is not None:
            self._check_report(record, copy_report, final=True)
        if not mig.get('final_verified'):
            if copy_report is None:
                self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=False)
                # Ask for the final pass; a rerun gets the same plan (the data mover attaches).
                changed = record.get('revision') != before.get('revision')
                return self._host_result(changed, before, record, pool,
                                         ['run the final pass on a data node (last sync and verification)'], final=True)
            problem = self._report_failure(copy_report)
            if problem:
                mig['error'] = 'Final pass failed, nothing was switched: %s' % problem
                # The next completion hands out a new final pass.
                (mig.get('passes') or {}).pop(FINAL_PASS, None)
                back = mig.get('phase1_state') or states.DATA_COPYING_COMPLETED
                self._set(record, pool, 'final pass failed: %s' % problem, back)
                raise StorageError('Failed to complete the migration of share %s: the final pass %s. Nothing was switched: '
                                   'the share is back in %s on %s with its source intact; fix the cause and complete again, '
                                   'or cancel' % (record['name'], problem, back, source), copy_report=copy_report)
            mig['final_verified'] = True
            mig['final_copy'] = self._copy_summary(copy_report)
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
        final_pass = self._pass(record, final=True) or {}
        if self._switched(record, source, dest) or (
                mig.get('switch_sealed') == final_pass.get('id') and self._switch_begun(record, dest)):
            return None
        self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=True)
        verified = mig.get('final_copy') or {}
        ignore = list(source.backend.migration_ignore_files)
        paths = {'source': active_instance(record)['path'], 'destination': self._instance(record, 'destination')['path']}
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
        drawn = self._draw_pass(record, final=True)
        self.ctx.repo.save(record, pool, 'final pass stale (%s changed since its verification): final pass %s requested'
                           % (' and '.join(changed), drawn['id']))
        result = self._host_result(True, before, record, pool,
                                   ['seal both instances: %s changed since the final pass was verified' % ' and '.join(changed),
                                    'run a new final pass on a data node (last sync and verification)'], final=True)
        result['msg'] = msg
        result['warnings'] = [msg]
        return result

    def _switch_begun(self, record, dest):
        """True once _switch may have changed something: the destination is available, or an
        enforcing export already serves it."""
        dst_inst = self._instance(record, 'destination')
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
                                              clock=self.clock, sleeper=self.sleeper)
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
            drawn = self._draw_pass(record, final=True)
            why += ' after the final pass; a new final pass (pass %s) is needed' % drawn['id']
        else:
            why += ' before the final pass'
        back = mig.get('phase1_state') or states.DATA_COPYING_COMPLETED
        mig['error'] = 'Switchover refused, nothing was switched: %s' % why
        mig['open_writers'] = remaining or found
        self._set(record, pool, 'switchover refused: open writers', back)
        raise StorageError('Failed to complete the migration of share %s: %s. Nothing was switched: the share is back '
                           'in %s on %s with its source intact; stop those processes (or let open_writers_wait wait '
                           'for them) and complete again, or cancel' % (name, why, back, source),
                           open_writers=remaining or found)

    def _cancel_host_check(self, record):
        """Refuse to remove the destination while a local copy job still writes into it."""
        mig = record.get('migration') or {}
        job = mig.get('copy_job') or {}
        jobs = [job]
        if job.get('status_file') and job.get('job_id'):
            # The final pass runs as <id>-final (-2, ...) next to the phase-1 job.
            final_id = final_job_id(mig)
            jobs.append(dict(job, job_id=final_id, status_file=job['status_file'].replace(job['job_id'], final_id)))
        for candidate in jobs:
            progress = live_copy_progress({'copy_job': candidate})
            if progress and progress.get('state') == 'running':
                raise StorageError('Cannot cancel the migration of share %s yet: its copy job %s is still running on '
                                   'the data node; cancel the copy first (the cancel_share_migration playbook does both)'
                                   % (record['name'], candidate.get('job_id')))

    @staticmethod
    def elapsed(since_epoch):
        return round(time.time() - since_epoch, 3) if since_epoch else None
