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
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import openfiles, states
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance, live_copy_progress
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso

FINAL_SUFFIX = '-final'
DEFAULT_HASH = 'xxh128'


def final_job_id(mig):
    """The job id of the final pass: ``<id>-final``, then ``<id>-final-2``, ... when a pass had to
    be taken again because something may have written into the source after it (a completed job
    of the same id is never run again, so a new pass needs a new id)."""
    number = mig.get('final_pass_number') or 1
    return mig['id'] + FINAL_SUFFIX + ('-%d' % number if number > 1 else '')


def _listed(report, key, limit=10):
    items = report.get(key) or []
    names = [item if isinstance(item, str) else item.get('path', str(item)) for item in items[:limit]]
    more = len(items) - len(names)
    return ', '.join(names) + (' and %d more' % more if more > 0 else '')


class HostAssistedMixin(object):
    """Host-assisted phase 1, completion and cancel for ShareMigrationManager."""

    # -- the plan ----------------------------------------------------------------------------
    def copy_plan(self, record, source, dest, final=False):
        """What the data mover must do: both trees, the ignore list, verification, the job id."""
        mig = record['migration']
        src_inst = active_instance(record)
        dst_inst = self._instance(record, 'destination')
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
            self._set(record, pool, 'source read-only, destination created', states.DATA_COPYING_STARTING)
        except Exception as exc:
            self._fail_phase1(record, pool, dest, exc)

    def _host_result(self, changed, before, record, pool, actions, final=False):
        source, dest = self._pools(record, pool)
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
        mig = record['migration']
        expected = final_job_id(mig) if final else mig['id']
        if not isinstance(report, dict) or report.get('job_id') != expected:
            raise InvalidRequest('Refusing the copy report for share %s: it belongs to job %r, not to %s of migration %s; '
                                 'a stale or foreign report cannot complete anything, nothing was changed'
                                 % (record['name'], (report or {}).get('job_id') if isinstance(report, dict) else report,
                                    'the final pass' if final else 'phase 1', mig['id']))

    @staticmethod
    def _report_failure(report):
        """None when the report proves a verified copy, else why not."""
        if report.get('state') not in (None, 'completed'):
            return 'the copy job ended %s: %s' % (report.get('state'), report.get('error') or 'no error given')
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
                'source_digest', 'destination_digest', 'warnings', 'data_node')
        summary = dict((k, report.get(k)) for k in keep if report.get(k) is not None)
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
        """A failed or unverified copy: data_copying_error, destination removed, source restored."""
        source, dest = self._pools(record, pool)
        name = record['name']
        kept = None
        if self._instance(record, 'destination') is not None:
            if self.ctx.driver(source).instance_exists(source, name):
                self.ctx.driver(dest).delete_instance(dest, name)
            else:
                kept = 'the source data is missing, so the destination was kept'
        self._restore_source(record, pool)
        record['migration']['error'] = 'Copy failed: %s' % problem
        record['migration']['copy'] = dict(self._copy_summary(report), differ=report.get('differ'),
                                           missing=report.get('missing'), extra=report.get('extra'))
        record['migration']['ended_at'] = now_iso()
        self._set(record, pool, 'copy failed: %s' % problem, states.DATA_COPYING_ERROR)
        msg = ('Failed to copy share %s to %s: %s; the destination instance was removed and the share is available '
               'again, untouched, in %s' % (name, dest, problem, source))
        if kept:
            msg += ' (%s)' % kept
        raise StorageError(msg, share=self.shares.view(record, pool), copy_report=report)

    # -- phase 2 -----------------------------------------------------------------------------
    def _complete_host(self, record, pool, before, source, dest, copy_report, open_writers_wait=0):
        """The switchover of a host-assisted migration: final pass, verified, then switch.

        Processes holding files of the source open for writing (through the pool path, the export
        or any other path into it) are looked for before the final pass is handed out and again
        immediately before the switch; see _refuse_open_writers."""
        mig = record['migration']
        if mig.get('final_verified'):
            if not self._switch_begun(record, dest):
                self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=True)
            return None
        if copy_report is None:
            self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=False)
            # Ask for the final pass; a rerun gets the same plan (the data mover attaches).
            changed = record.get('revision') != before.get('revision')
            return self._host_result(changed, before, record, pool,
                                     ['run the final pass on a data node (last sync and verification)'], final=True)
        self._check_report(record, copy_report, final=True)
        problem = self._report_failure(copy_report)
        if problem:
            mig['error'] = 'Final pass failed, nothing was switched: %s' % problem
            back = mig.get('phase1_state') or states.DATA_COPYING_COMPLETED
            self._set(record, pool, 'final pass failed: %s' % problem, back)
            raise StorageError('Failed to complete the migration of share %s: the final pass %s. Nothing was switched: '
                               'the share is back in %s on %s with its source intact; fix the cause and complete again, '
                               'or cancel' % (record['name'], problem, back, source), copy_report=copy_report)
        self._refuse_open_writers(record, pool, source, open_writers_wait, after_final=True)
        mig['final_verified'] = True
        mig['final_copy'] = self._copy_summary(copy_report)
        self.ctx.repo.save(record, pool, 'final pass verified')
        return None

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
        paths = [src_inst['path'], self.ctx.driver(source).export().location(name, src_inst['path'])]
        found = openfiles.open_writers(paths)
        if not found:
            record['migration'].pop('open_writers', None)
            return
        remaining = found
        if wait_seconds:
            remaining = openfiles.wait_closed(lambda: openfiles.open_writers(paths), wait_seconds,
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
            mig['final_pass_number'] = (mig.get('final_pass_number') or 1) + 1
            # Every final job id of this migration, for the cancel playbook and the cleanup.
            mig['final_job_ids'] = [mig['id'] + FINAL_SUFFIX + ('-%d' % n if n > 1 else '')
                                    for n in range(1, mig['final_pass_number'] + 1)]
            mig.pop('final_verified', None)
            mig.pop('final_copy', None)
            why += ' after the final pass; a new final pass (job %s) is needed' % final_job_id(mig)
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
