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

A *writable* host copy (``writable: true`` on pools the driver cannot move between, see
ShareMigrationManager.plan_mechanism) keeps the source writable through phase 1: the first copy and
its verification run while users write, so a verification that the users' writes outran is taken
as an unverified copy (the final pass is the proof); every rerun of phase 1 after
data_copying_completed hands out a new phase-1 pass, an *increment*, whose report says how much
changed. Phase 2 makes the source read-only first (``read_only_at``), then looks for open writers,
runs the final pass and switches as above. A phase 2 that goes back to data_copying_completed
makes the source writable again.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import layout
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers.copy_reports import (
    check_report, copy_summary, current_pass, draw_pass, final_job_id, forget_final_pass, report_failure)
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_mechanism import MigrationMechanism
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance, live_copy_progress
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso
from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles
from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import DIRECT_HOST_ALIAS, SshOptions, peer_host_keys

DEFAULT_HASH = 'xxh128'
# The name a data node checks a storage host's key under (data_copy/remote.py HOST_KEY_ALIAS).
DATA_NODE_HOST_KEY_ALIAS = 'mobility-storage-host'
SIDES = ('source', 'destination')
# The record keeps the figures of this many increments of a writable copy (the count is always kept).
KEPT_INCREMENTS = 20


def writable_copy(mig):
    """True for a host-assisted migration whose source stays writable in phase 1 (writable=true)."""
    return bool(((mig or {}).get('requested') or {}).get('writable'))


def copied_while_written(report, current):
    """True when the job of ``report`` (of the pass ``current``) copied to the end and ran its
    verification, which did not prove a match: what users of a writable source do while it is
    copied. A copy that failed before its verification (rsync's error, a full pool, a cancel) is
    not: that is a failed copy."""
    if not isinstance(report, dict) or report.get('state') not in ('completed', 'failed'):
        return False
    if report.get('pass_id') != (current or {}).get('id'):
        return False
    if report.get('verification') == 'failed':
        return True
    return any(isinstance(item, dict) and item.get('phase') == 'verifying' for item in report.get('phases') or [])


def between_hosts(source, dest):
    """True for a copy between pools of two different storage hosts, one of them reached with ssh: the
    data node reaches each side on its host (sshfs, or its own disk when it is that host)."""
    return source.backend.host != dest.backend.host and 'ssh' in (source.backend.transport, dest.backend.transport)


def host_side(pool, path):
    """How a data node reaches ``path`` on the storage host of ``pool`` (a backend with transport ssh):
    its address (``direct_address``, else ``address``), port, user, the key ON the data node
    (``data_node_key_file``; none: the data node's agent or default keys) and the host's keys as the
    controller's known_hosts holds them. Never a controller path, a secret or a password."""
    backend = pool.backend
    options = SshOptions.from_backend(backend)
    lines, files = peer_host_keys(options)
    if not lines:
        raise StorageError('Cannot hand out a copy between storage hosts: the controller has no host key for %s (%s) '
                           'in %s, which the data node must check it against (it never accepts a new key); add it there'
                           % (backend.host, options.known_hosts_name(), ', '.join(files) or '~/.ssh/known_hosts'),
                           host=backend.host, failure='unknown host key')
    keys = [line.replace(DIRECT_HOST_ALIAS, DATA_NODE_HOST_KEY_ALIAS, 1) for line in lines]
    return {'host': backend.host, 'address': options.direct_address or options.address, 'port': options.port,
            'user': options.user, 'key_file': options.data_node_key_file, 'host_keys': keys, 'path': path}


def increment_summary(report, unverified=None):
    """What the record keeps of an increment: how much changed since the last pass (files and bytes
    rsync transferred, entries it deleted; None when the report does not say), whether it verified."""
    stats = report.get('rsync_stats') or {}
    summary = {'pass_id': report.get('pass_id'), 'files': stats.get('transferred'), 'bytes': stats.get('transferred_size'),
               'deleted': stats.get('deleted'), 'created': stats.get('created'), 'copy_seconds': report.get('copy_seconds'),
               'verified': unverified is None, 'at': now_iso()}
    if unverified is not None:
        summary['unverified'] = unverified
    return summary


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
        dst_path = dst_inst['path'] if dst_inst else self.ctx.driver(dest).instance_path(dest, record['name'])
        plan = {
            'migration_id': mig['id'],
            'job_id': final_job_id(mig) if final else mig['id'],
            'final_pass': final,
            'share': record['name'],
            'source': {'helper': 'local', 'export': src_inst['path'], 'read_only': True,
                       'pool': str(source.ref), 'host': source.backend.host},
            'destination': {'helper': 'local', 'export': dst_path, 'pool': str(dest.ref), 'host': dest.backend.host},
            'ignore_files': list(source.backend.migration_ignore_files),
            'check_hash': True,
            # Users keep writing while phase 1 copies: the verification may find what they changed
            # (the data mover then reports the copy unverified without failing; the final pass,
            # with the source read-only, copies and verifies everything).
            'source_writable': writable_copy(mig) and not final,
            'hash_algorithm': mig.get('hash_algorithm') or DEFAULT_HASH,
            'report_signing': {'migration_id': mig['id'], 'pass_id': current.get('id'), 'key': current.get('key')},
        }
        if between_hosts(source, dest):
            # Each side on its own storage host: the data node mounts it with sshfs, or uses it as a
            # local folder when it is that host (roles/data_mover), and verifies it there.
            for side, pool, path in (('source', source, src_inst['path']), ('destination', dest, dst_path)):
                if pool.backend.transport == 'ssh':
                    plan[side]['helper'] = 'sshfs'
                    plan[side]['ssh'] = host_side(pool, path)
        return plan

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
            'keep the source writable during phase 1 (writable=true): the final pass of phase 2 runs with it read-only'
            if writable_copy(migration) else 'set the source read-only for the copy',
            'create destination instance in pool %s (status migrating_to)' % dest,
            'hand the copy plan to a data node (storage.mobility.data_mover) and wait for its verified report',
            'task_state migration_starting -> data_copying_starting',
        ]
        if between_hosts(pool, dest):
            # Refused before anything changes when the data node could not check a host's key.
            for side_pool in (pool, dest):
                if side_pool.backend.transport == 'ssh':
                    host_side(side_pool, '/')
            actions.insert(1, 'the data node reaches %s and %s over ssh (sshfs, or its own disk) and verifies each side '
                              'on its host' % (pool.backend.host, dest.backend.host))
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
        mig = record['migration']
        try:
            if writable_copy(mig):
                event = 'source kept writable, destination created'
            else:
                mig['read_only_at'], mig['read_only_epoch'] = now_iso(), time.time()
                steps.source_read_only(record, pool)
                event = 'source read-only, destination created'
            steps.add_destination(record, dest)
            if current_pass(record, final=False) is None:
                draw_pass(record, final=False)
            steps.set_state(record, pool, event, states.DATA_COPYING_STARTING)
        except Exception as exc:
            steps.fail_phase1(record, pool, dest, exc)

    def attach(self, record, pool, before, wait, timeout, sleep, copy_job=None, copy_report=None):
        """A rerun of the same start on a host-assisted migration: resume, note the running copy,
        or take the copy report."""
        ts = record.get('task_state')
        if (ts == states.DATA_COPYING_COMPLETED and writable_copy(record['migration']) and copy_job is None
                and copy_report is None):
            return self._increment(record, pool, before)
        if self.ctx.check_mode:
            return self._plan_result(False, before, record, pool, [])
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
        mig = record['migration']
        check_report(record, report, final=False)
        if ts == states.DATA_COPYING_COMPLETED:
            if writable_copy(mig) and mig.get('increment_pass'):
                return self._take_increment(record, pool, before, report)
            return steps.result(False, before, record, pool, [])
        if ts not in states.DATA_COPYING_PENDING:
            raise InvalidRequest('Cannot take a copy report for share %s in task_state %s' % (record['name'], ts))
        problem = report_failure(report)
        unverified = None
        if problem and writable_copy(mig) and copied_while_written(report, current_pass(record, final=False)):
            # Users wrote while the data node copied and verified: the copy is kept, unverified;
            # the final pass (with the source read-only) copies and verifies everything.
            unverified = problem
        elif problem:
            self._fail_copy(record, pool, problem, report)
        steps.set_state(record, pool, 'copy verified' if unverified is None else 'copy done while users wrote (unverified)',
                        states.DATA_COPYING_COMPLETING)
        mig['copy'] = copy_summary(report)
        if unverified is not None:
            mig['copy'].update(verified=False, unverified=unverified)
            mig['copy'].pop('verified_at', None)
        mig.pop('reported_progress', None)
        mig['phase1_done_at'] = now_iso()
        steps.set_state(record, pool, 'phase 1 done: copy verified' if unverified is None else
                        'phase 1 done: copied while the source stayed writable', states.DATA_COPYING_COMPLETED)
        return steps.result(True, before, record, pool, ['record the %s copy' % ('verified' if unverified is None else 'unverified'),
                                                         'task_state -> data_copying_completed'])

    # -- increments of a writable copy -------------------------------------------------------
    def _increment(self, record, pool, before):
        """A rerun of phase 1 in data_copying_completed with the source writable: hand out an
        increment (a new phase-1 pass of the same job, which the data mover runs again: rsync copies
        what changed since the last pass). A rerun before its report arrived hands out the same plan."""
        mig = record['migration']
        source, dest = self.steps.pools(record)
        pending = mig.get('increment_pass') and mig['increment_pass'] == (current_pass(record, final=False) or {}).get('id')
        actions = [] if pending else ['copy the changes to share %s since the last pass to %s (an increment)' % (record['name'], dest)]
        if not pending:
            drawn = draw_pass(record, final=False)
            mig['increment_pass'] = drawn['id']
            if not self.ctx.check_mode:
                self.ctx.repo.save(record, pool, 'phase 1 increment %d handed out (pass %s)'
                                   % (int(mig.get('increment_count') or 0) + 1, drawn['id']))
        extra = {'copy_required': True, 'copy_plan': self.copy_plan(record, source, dest)}
        return self.steps.result(not pending, before, record, pool, actions, extra)

    def _take_increment(self, record, pool, before, report):
        """The report of an increment: its figures in the record (and the result); a copy that failed
        before its verification keeps the migration in data_copying_completed, with the destination
        as far as it got (the final pass copies and verifies everything before any switch)."""
        mig = record['migration']
        if report.get('pass_id') not in (None, mig['increment_pass']):
            raise InvalidRequest('Refusing the copy report for share %s: it was made for pass %s, not for the increment '
                                 '(pass %s) that phase 1 waits for; nothing was changed'
                                 % (record['name'], report.get('pass_id'), mig['increment_pass']))
        problem = report_failure(report)
        if problem and not copied_while_written(report, current_pass(record, final=False)):
            mig.pop('increment_pass', None)
            mig['increment_error'] = problem
            self.ctx.repo.save(record, pool, 'phase 1 increment failed: %s' % problem)
            raise StorageError('Failed to copy the changes to share %s since the last pass: %s. The migration stays in %s '
                               'with its source writable; the final pass of phase 2 copies and verifies everything before '
                               'any switch: run phase 1 again, complete or cancel'
                               % (record['name'], problem, record.get('task_state')), copy_report=report)
        increment = increment_summary(report, problem)
        mig['increment_count'] = int(mig.get('increment_count') or 0) + 1
        increment['number'] = mig['increment_count']
        mig['increments'] = (list(mig.get('increments') or []) + [increment])[-KEPT_INCREMENTS:]
        mig.pop('increment_pass', None)
        mig.pop('increment_error', None)
        self.ctx.repo.save(record, pool, 'phase 1 increment %d: %s files, %s bytes changed since the last pass%s'
                           % (increment['number'], increment['files'], increment['bytes'],
                              '' if problem is None else ' (unverified: the source changed meanwhile)'))
        return self.steps.result(True, before, record, pool, ['record increment %d' % increment['number']],
                                 {'increment': increment})

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
        if writable_copy(mig) and not mig.get('source_read_only'):
            self._refuse_running_increment(record, pool, source)
            self._read_only_for_final_pass(record, pool)
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
                self._writable_again(record, pool)
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
        # Both instances are sealed at once (a walk of each, on its pool's host): at a million
        # entries each walk takes seconds, and the share is read-only meanwhile.
        waits, seals = {}, {}
        try:
            for side, pool_of in (('source', source), ('destination', dest)):
                waits[side] = self._seal_call(record, side, paths[side],
                                              lambda p=pool_of, s=side: self.ctx.driver(p).tree_seal_later(p, paths[s], ignore))
            for side in SIDES:
                seals[side] = self._seal_call(record, side, paths[side], waits.pop(side))
        finally:
            for wait in waits.values():  # a side that failed first: the other's walk is awaited, not left behind
                try:
                    wait()
                except StorageError:
                    pass
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

    @staticmethod
    def _seal_call(record, side, path, call):
        try:
            return call()
        except StorageError as exc:
            raise StorageError('Failed to complete the migration of share %s: cannot seal its %s instance %s '
                               'before the switch: %s. Nothing was switched; the share stays in %s'
                               % (record['name'], side, path, exc, record.get('task_state')))

    def _refuse_running_increment(self, record, pool, source):
        """Phase 2 does not start while the copy job of an increment still copies into the destination
        (seen where its status file is on this machine): the final pass would copy next to it."""
        mig = record['migration']
        progress = live_copy_progress({'copy_job': mig.get('copy_job')}) if mig.get('increment_pass') else None
        if not progress or progress.get('state') != 'running':
            return
        back = mig.get('phase1_state') or states.DATA_COPYING_COMPLETED
        why = 'its increment (copy job %s) is still copying on the data node' % (mig.get('copy_job') or {}).get('job_id')
        mig['error'] = 'Switchover refused, nothing was switched: %s' % why
        self.steps.set_state(record, pool, 'switchover refused: an increment is still copying', back)
        raise StorageError('Failed to complete the migration of share %s: %s. Nothing was switched: the share is back in '
                           '%s on %s, writable; let the increment finish (rerun phase 1 to wait for it) and complete '
                           'again, or cancel' % (record['name'], why, back, source))

    def _read_only_for_final_pass(self, record, pool):
        """Phase 2 of a writable copy: the source becomes read-only (the read-only point, kept as
        ``read_only_at``) before open writers are looked for and the final pass is handed out."""
        mig = record['migration']
        mig['read_only_at'], mig['read_only_epoch'] = now_iso(), time.time()
        self.steps.source_read_only(record, pool)
        self.ctx.repo.save(record, pool, 'source read-only for the final pass (it stayed writable during phase 1)')

    def _writable_again(self, record, pool):
        """A phase 2 of a writable copy that goes back to data_copying_completed gives the users their
        writable source back (the next phase 2 makes it read-only again); the caller records it."""
        mig = record['migration']
        if not writable_copy(mig) or not mig.get('source_read_only'):
            return
        self.ctx.driver(pool).export().apply(record['name'], active_instance(record)['path'],
                                             access_mode(record['access_rules']))
        mig['source_read_only'] = False
        for key in ('read_only_at', 'read_only_epoch'):
            mig.pop(key, None)

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
        self._writable_again(record, pool)
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
