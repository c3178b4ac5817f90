# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replica service on the collection's own drivers (posix, btrfs): docs/replication.md.

A share whose share type has ``replication_type`` readable or dr gets secondary replicas in
other pools of its backend's ``replication_domain`` (same driver). The share record (in the
active replica's pool) lists every replica (managers/replica_records.py); each secondary's pool
also keeps a copy of the record (``.mobility/replicas/<share>.json``), so that a secondary can be
promoted while the active pool is gone. Every change of a replica's status or replica_state is
saved through ShareRepository.save, which writes it to the event journal.

Updates go through the driver's replication hooks (drivers/share/base.py): btrfs sends
incremental read-only snapshots, posix runs the data mover's rsync until a quiet pass.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import errno
import json
import os
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import RO, access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica_records import (
    missing_snapshots, past_rpo, replica_view, replica_views, replication_type, secondaries, settle_snapshots)
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress, validate_name
from ansible_collections.storage.mobility.plugins.module_utils.services.base import not_served, refuse_options
from ansible_collections.storage.mobility.plugins.module_utils.services.replica import ReplicaService
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso

ACTIVE = states.REPLICA_ACTIVE
IN_SYNC = states.REPLICA_IN_SYNC
OUT_OF_SYNC = states.REPLICA_OUT_OF_SYNC
ERROR = states.REPLICA_ERROR
COPIES_DIR = 'replicas'
#: a forced promotion writes its record this many revisions above the copy it starts from, so that
#: the old active's record (which may have been saved a few more times) is the stale one
FORCED_REVISION_STEP = 1000000
#: paths named in a refusal to resync a replica that has changes of its own
NAMED_PATHS = 20


def iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + '.%06dZ' % int((epoch % 1) * 1e6)


def fenced(replica):
    """True while the fence of an old active replica holds (fenced, not yet lifted by a failback)."""
    return bool(replica.get('fenced_at')) and not replica.get('fence_lifted_at')


def replica_export_name(name, pool):
    """The export name of a readable secondary: the share's own export stays the active one's."""
    return '%s.replica-%s' % (name, pool.name)


class LocalReplicaManager(ReplicaService):

    def __init__(self, ctx):
        self.ctx = ctx

    # -- helpers -------------------------------------------------------------------------------
    def _served(self, name, pool=None):
        if not self.ctx.backends.local():
            raise not_served(self.ctx, 'manage replicas of share %s' % name, 'replicas', 'manila',
                             None if pool is None else PoolAddress.split(pool))

    @staticmethod
    def _check_type(record):
        kind = replication_type(record)
        if not kind:
            raise InvalidRequest('Share %s cannot have replicas: its share type %s has no replication_type '
                                 '(readable or dr on the collection\'s own drivers); migrate it to a replicated share '
                                 'type first' % (record['name'], record['share_type']['name']))
        if kind not in states.LOCAL_REPLICATION_TYPES:
            raise InvalidRequest('Share %s has replication_type %s, which the posix and btrfs drivers cannot serve: '
                                 'writable replicas need synchronous mirroring; use readable or dr'
                                 % (record['name'], kind))
        return kind

    @staticmethod
    def _need_target(name, state, pool, replica_id):
        if not pool and not replica_id:
            raise InvalidRequest('Cannot make a replica of share %s %s: name it with pool (host@backend#pool) '
                                 'or replica_id' % (name, state))

    @staticmethod
    def _find(record, pool, replica_id):
        for replica in record.get('replicas') or []:
            if replica_id and replica['id'] == replica_id:
                return replica
            if pool and not replica_id and replica['pool'] == pool:
                return replica
        return None

    def _existing(self, record, verb, pool, replica_id):
        found = self._find(record, self._address(pool), replica_id)
        if found is None:
            raise NotFound('Cannot %s a replica of share %s: it has no replica %s (replicas: %s)'
                           % (verb, record['name'], replica_id or 'in %s' % pool,
                              ', '.join('%s in %s' % (r['id'], r['pool']) for r in record.get('replicas') or [])
                              or 'none'))
        return found

    def _address(self, pool):
        return str(self.ctx.pool(pool).ref) if pool else None

    def _available(self, pool):
        return self.ctx.repo.store(pool).available()

    def _copy_path(self, pool, name):
        return os.path.join(self.ctx.repo.store(pool).root, COPIES_DIR, validate_name(name) + '.json')

    def _save(self, record, pool, event):
        """Save the record in the active pool (journaled) and its copy in every reachable secondary pool."""
        settled = settle_snapshots(record)
        if settled:
            event = '%s; snapshots %s available on every in_sync replica' % (event, ', '.join(settled))
        self.ctx.repo.save(record, pool, event)
        for replica in secondaries(record):
            other = self.ctx.pool(replica['pool'])
            if not self._available(other):
                continue
            transport = self.ctx.repo.store(other).transport
            path = self._copy_path(other, record['name'])
            try:
                transport.makedirs(os.path.dirname(path), 0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Pool %s: cannot create %s: %s' % (other, os.path.dirname(path), exc.strerror))
            transport.write_json_atomic(path, record)
        return record

    def _drop_copy(self, pool, name):
        transport = self.ctx.repo.store(pool).transport
        try:
            transport.unlink(self._copy_path(pool, name))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def _copies(self, name):
        """(record copy, pool) from every reachable pool that keeps one, newest revision first."""
        found = []
        for store in self.ctx.repo.available_stores():
            try:
                data = store.transport.read_bytes(self._copy_path(store.pool, name))
            except (IOError, OSError):
                continue
            try:
                found.append((json.loads(data.decode('utf-8')), store.pool))
            except ValueError:
                continue
        found.sort(key=lambda item: -int(item[0].get('revision', 0)))
        return found

    def _result(self, changed, record, replica, actions, before=None, after=None):
        view = after if after is not None else replica_view(record, replica)
        return {'changed': changed, 'replica': view, 'replicas': replica_views(record) or None,
                'share': {'name': record.get('name'), 'id': record.get('id'),
                          'replication_type': replication_type(record)},
                'actions': actions, 'diff': {'before': before if before is not None else view, 'after': view}}

    def _load(self, name):
        record, pool = self.ctx.load(name, cleanup=True)
        self._check_type(record)
        return record, pool

    def _export_secondary(self, record, replica):
        """A readable secondary is exported read-only under its own name; a dr one is not exported."""
        pool = self.ctx.pool(replica['pool'])
        driver = self.ctx.driver(pool)
        path = driver.instance_path(pool, record['name'])
        mode = RO if (replication_type(record) == 'readable' and access_mode(record['access_rules'])) else None
        helper = driver.export()
        export_name = replica_export_name(record['name'], pool)
        helper.apply(export_name, path, mode)
        replica['export_location'] = helper.location(export_name, path) if mode else None

    def _unexport_secondary(self, record, replica):
        pool = self.ctx.pool(replica['pool'])
        driver = self.ctx.driver(pool)
        driver.export().remove(replica_export_name(record['name'], pool), driver.instance_path(pool, record['name']))

    def _converge(self, record, pool):
        """Under the lock: fence an old active that came back; mark secondaries past the RPO."""
        changed = []
        active = active_instance(record)
        for replica in secondaries(record):
            other = self.ctx.pool(replica['pool'])
            if replica.get('fence_pending') and self._available(other):
                fenced = True
                if not self.ctx.check_mode:
                    fenced = self._fence(record, pool, active, replica)
                changed.append(('fence the old active replica in %s' % other) if fenced
                               else 'failed to fence the old active replica in %s: %s' % (other, replica['fence_error']))
            if replica.get('replica_state') == IN_SYNC and past_rpo(record, replica):
                replica['replica_state'] = OUT_OF_SYNC
                changed.append('replica %s in %s is past its RPO' % (replica['id'], other))
        if changed and not self.ctx.check_mode:
            self._save(record, pool, '; '.join(changed))
        return changed

    def _fence(self, record, active_pool, active, replica):
        """The old active is back: read-only (btrfs: the ``ro`` property; posix: the immutable
        attribute on every file and folder), not exported as the share. What it got after its
        last replicated point is read first when the fence changes change times (posix), for the
        failback to name. A fence that fails is recorded (``fence_error``) and tried again by
        the next run; it does not stop the run. Returns True when fenced."""
        other = self.ctx.pool(replica['pool'])
        driver = self.ctx.driver(other)
        path = driver.instance_path(other, record['name'])
        active_driver = self.ctx.driver(active_pool)
        active_export = active_driver.export().location(record['name'], active['path'])
        if driver.export().location(record['name'], path) != active_export:
            driver.export().remove(record['name'], path)
        if driver.replica_fence_marks_entries and 'divergence_at_fence' not in replica:
            changed = driver.replica_divergence(other, record, replica)
            replica['divergence_at_fence'] = None if changed is None else {
                'count': len(changed), 'entries': changed[:NAMED_PATHS]}
            # Saved before the fence changes the change times: a rerun must not read them again.
            self._save(record, active_pool, 'replica %s: %s entries changed after its last replicated point'
                       % (replica['id'], 'unknown' if changed is None else len(changed)))
        try:
            driver.replica_fence(other, record, True)
        except StorageError as exc:
            replica['fence_error'] = str(exc)
            return False
        replica['fence_pending'] = False
        replica.pop('fence_error', None)
        replica['fenced_at'] = now_iso()
        return True

    # -- present -------------------------------------------------------------------------------
    def present(self, name, pool=None, replica_id=None, availability_zone=None, status=None, replica_state=None):
        self._served(name, pool)
        validate_name(name)
        refuse_options('add a replica of share %s' % name, "the collection's own drivers",
                       [('availability_zone', availability_zone)], 'which have no availability zones')
        ctx = self.ctx
        with ctx.lock(name, 'replica present'):
            record, active_pool = self._load(name)
            self._converge(record, active_pool)
            found = self._find(record, self._address(pool), replica_id)
            if found is None and not pool and not replica_id:
                found = (secondaries(record) or [None])[0]
            if found is not None:
                if found.get('status') == states.CREATING and not (status or replica_state) and not ctx.check_mode:
                    # A run that died while creating it: finish the first update.
                    self._update(record, active_pool, found)
                    return self._result(True, record, found, ['finish creating replica %s' % found['id']])
                return self._reset(record, active_pool, found, status, replica_state)
            if replica_id:
                raise NotFound('Unknown replica %s of share %s: its replicas are %s'
                               % (replica_id, name, ', '.join(r['id'] for r in record.get('replicas') or []) or 'none'))
            if status or replica_state:
                raise InvalidRequest('Cannot reset the status or replica_state of a replica of share %s in %s: there '
                                     'is no such replica' % (name, pool or 'any pool'))
            if not pool:
                raise InvalidRequest('Cannot add a replica of share %s: pool (host@backend#pool) is required on the '
                                     "collection's own drivers" % name)
            return self._create(record, active_pool, ctx.pool(pool))

    def _check_pool(self, record, active_pool, target):
        name = record['name']
        if str(target.ref) == str(active_pool.ref) or self._find(record, str(target.ref), None):
            raise InvalidRequest('Cannot add a replica of share %s in pool %s: the share already has a replica there'
                                 % (name, target))
        source, dest = active_pool.backend, target.backend
        if dest.driver != source.driver:
            raise InvalidRequest('Cannot add a replica of share %s in pool %s: its backend %s uses driver %s and the '
                                 'share is on driver %s; replicas use the driver of the active replica'
                                 % (name, target, dest.name, dest.driver, source.driver))
        if not source.replication_domain or source.replication_domain != dest.replication_domain:
            raise InvalidRequest('Cannot add a replica of share %s in pool %s: backends %s (replication_domain %s) and '
                                 '%s (replication_domain %s) are not in one replication domain'
                                 % (name, target, source.name, source.replication_domain, dest.name,
                                    dest.replication_domain))
        if (source.host != dest.host and 'ssh' in (getattr(source, 'transport', None), getattr(dest, 'transport', None))
                and not self.ctx.driver(active_pool).replica_across_hosts):
            # posix updates run rsync on the active replica's host, between two of its folders.
            raise InvalidRequest('Cannot add a replica of share %s in pool %s: it is on host %s and the active replica '
                                 'on host %s; driver %s keeps replicas in pools of the active replica\'s host (local '
                                 'or reached over ssh), not on another host yet'
                                 % (name, target, dest.host, source.host, source.driver))
        if states.is_busy(record.get('task_state')):
            raise Busy('Cannot add a replica of share %s: it is busy with task_state %s' % (name, record['task_state']))
        if record.get('status') != states.AVAILABLE:
            raise InvalidRequest('Cannot add a replica to share %s: its status is %s, not available'
                                 % (name, record.get('status')))

    def _create(self, record, active_pool, target):
        ctx = self.ctx
        name = record['name']
        self._check_pool(record, active_pool, target)
        driver = ctx.driver(target)
        path = driver.instance_path(target, name)
        actions = ['create a replica of share %s in %s at %s' % (name, target, path),
                   'update it from the active replica in %s' % active_pool]
        if ctx.check_mode:
            after = {'id': None, 'share_id': record['id'], 'pool': str(target.ref), 'status': states.AVAILABLE,
                     'replica_state': IN_SYNC}
            return self._result(True, record, None, actions, before={}, after=after)
        if not record.get('replicas'):
            active = active_instance(record)
            record['replicas'] = [{'id': active['id'], 'pool': active['pool'], 'status': record['status'],
                                   'replica_state': ACTIVE, 'created_at': active.get('created_at')}]
        replica = {'id': str(uuid.uuid4()), 'pool': str(target.ref), 'status': states.CREATING,
                   'replica_state': states.NEW_REPLICA_STATE, 'created_at': now_iso()}
        record['replicas'].append(replica)
        # Recorded first: a crash leaves a replica in creating that a rerun (resynced) or absent finishes.
        self._save(record, active_pool, 'replica %s in %s requested' % (replica['id'], target))
        driver.replica_prepare(active_pool, target, record)
        self._update(record, active_pool, replica)
        return self._result(True, record, replica, actions, before={})

    def _reset(self, record, active_pool, replica, status, replica_state):
        actions = []
        if replica_state and replica_state != replica.get('replica_state'):
            if replica.get('replica_state') == ACTIVE or replica_state == ACTIVE:
                raise InvalidRequest('Cannot reset the replica_state of replica %s of share %s to %s: %s (promote a '
                                     'replica instead)' % (replica['id'], record['name'], replica_state,
                                                           'it is the active replica' if replica.get('replica_state') == ACTIVE
                                                           else 'only a promotion makes a replica active'))
            actions.append('reset replica_state of replica %s from %s to %s'
                           % (replica['id'], replica.get('replica_state'), replica_state))
        if status and status != replica.get('status'):
            actions.append('reset status of replica %s from %s to %s' % (replica['id'], replica.get('status'), status))
        before = replica_view(record, replica)
        if not actions:
            return self._result(False, record, replica, [])
        if self.ctx.check_mode:
            after = dict(before, status=status or before['status'], replica_state=replica_state or before['replica_state'])
            return self._result(True, record, replica, actions, before=before, after=after)
        if status:
            replica['status'] = status
        if replica_state:
            replica['replica_state'] = replica_state
        self._save(record, active_pool, '; '.join(actions))
        return self._result(True, record, replica, actions, before=before)

    # -- updates -------------------------------------------------------------------------------
    def _update(self, record, active_pool, replica):
        """One update of ``replica`` from the active instance; records its figures and state."""
        ctx = self.ctx
        target = ctx.pool(replica['pool'])
        driver = ctx.driver(active_pool)
        if driver.replica_updates_in_place and replica.get('replica_state') == IN_SYNC:
            # The replica's files change one by one while this runs: it must not claim in_sync
            # if the run dies half way.
            replica['replica_state'] = OUT_OF_SYNC
            self._save(record, active_pool, 'replica %s update started' % replica['id'])
        try:
            stats = driver.replica_update(active_pool, target, record, replica)
        except StorageError as exc:
            replica['replica_state'] = ERROR
            replica['sync_error'] = str(exc)
            self._save(record, active_pool, 'replica %s update failed' % replica['id'])
            raise
        # In sync only with every snapshot of the share (the reference's rule).
        replica['snapshots'] = stats.get('snapshots') or []
        missing = missing_snapshots(record, replica)
        replica.update({
            'status': states.AVAILABLE,
            'sync_error': ('the replica lacks snapshots %s' % ', '.join(missing)) if missing else None,
            'replica_state': IN_SYNC if stats['verified'] and not missing else OUT_OF_SYNC,
            'last_sync': iso(stats['source_time']), 'last_sync_epoch': stats['source_time'],
            'source_quiet_until': stats.get('source_quiet_until'),
            'last_update': {'at': now_iso(), 'bytes': stats['bytes'], 'files': stats['files'],
                            'seconds': stats['seconds'], 'passes': stats.get('passes'),
                            'verified': stats['verified'], 'incremental': stats.get('incremental'),
                            'full_send_reason': stats.get('full_send_reason')},
        })
        self._export_secondary(record, replica)
        self._save(record, active_pool, 'replica %s updated' % replica['id'])
        self._retain(record, active_pool, replica)
        return stats

    def _retain(self, record, active_pool, replica):
        """Keep on the active side the base point of every secondary, and on this secondary too:
        its own base and the others' bases it was given (btrfs), from which the others continue
        incrementally when this one is promoted with the active side gone."""
        keep = set(int(r['base']) for r in secondaries(record) if r.get('base'))
        self.ctx.driver(active_pool).replica_retain(active_pool, record, keep)
        if replica.get('base'):
            target = self.ctx.pool(replica['pool'])
            self.ctx.driver(target).replica_retain(target, record, keep)

    def resynced(self, name, pool=None, replica_id=None, force=False):
        self._served(name, pool)
        validate_name(name)
        self._need_target(name, 'resynced', pool, replica_id)
        ctx = self.ctx
        with ctx.lock(name, 'replica resynced'):
            record, active_pool = self._load(name)
            self._converge(record, active_pool)
            replica = self._existing(record, 'resync', pool, replica_id)
            if replica.get('replica_state') == ACTIVE:
                raise InvalidRequest('Cannot resync replica %s of share %s: it is the active replica; resync brings a '
                                     'secondary replica up to date with it' % (replica['id'], name))
            target = ctx.pool(replica['pool'])
            if not self._available(target):
                raise StorageError('Cannot resync replica %s of share %s: its pool %s (%s) is not reachable'
                                   % (replica['id'], name, target, target.path))
            before = replica_view(record, replica)
            actions = ['update replica %s of share %s in %s from the active replica in %s (now %s)'
                       % (replica['id'], name, target, active_pool, replica.get('replica_state'))]
            if ctx.check_mode:
                return self._result(True, record, replica, actions, before=before,
                                    after=dict(before, replica_state=IN_SYNC))
            if replica.get('old_active'):
                actions[:0] = self._failback_check(record, active_pool, replica, force)
            if fenced(replica):
                self._lift_fence(record, active_pool, replica)
            stats = self._update(record, active_pool, replica)
            # _update saved the record; it changes again only for a failback.
            if replica.pop('old_active', None) is not None:
                # A copy of the active replica now: a fence that never took is not needed any more.
                replica.pop('divergence_at_fence', None)
                replica.pop('fence_error', None)
                replica['fence_pending'] = False
                self._save(record, active_pool, 'replica %s resynced' % replica['id'])
            changed = bool(stats['bytes'] or stats['files'] or stats['files'] is None
                           or before.get('replica_state') != replica['replica_state'])
            return self._result(changed, record, replica, actions, before=before)

    def _lift_fence(self, record, active_pool, replica):
        """A failback is about to update the fenced old active: the record says so first (a run
        that dies next leaves it out_of_sync, not exported, with ``fence_lifted_at``)."""
        target = self.ctx.pool(replica['pool'])
        replica['fence_lifted_at'] = now_iso()
        self._save(record, active_pool, 'replica %s: fence (since %s) lifted to update it'
                   % (replica['id'], replica['fenced_at']))
        self.ctx.driver(target).replica_fence(target, record, False)

    def _failback_check(self, record, active_pool, replica, force):
        """An old active about to become a copy of the new one: what it got after its last
        replicated point is kept in a snapshot, and named in a refusal unless ``force``. Where the
        fence changed the entries' change times (posix), what was read before the fence counts."""
        target = self.ctx.pool(replica['pool'])
        driver = self.ctx.driver(target)
        recorded = replica.get('divergence_at_fence')
        if driver.replica_fence_marks_entries and recorded is not None:
            count, named = recorded['count'], recorded['entries']
        else:
            changed = driver.replica_divergence(target, record, replica)
            count, named = len(changed or []), (changed or [])[:NAMED_PATHS]
        if not count:
            return []
        label = time.strftime('%Y%m%dT%H%M%S', time.gmtime())
        kept = replica.get('kept_divergence') or driver.replica_keep(target, record, label)
        replica['kept_divergence'] = kept
        self._save(record, active_pool, 'replica %s: changes after its last replicated point kept in %s'
                   % (replica['id'], kept))
        if not force:
            raise InvalidRequest('Cannot resync replica %s of share %s in %s: it was written after its last replicated '
                                 'point (%s): %d changed entries: %s%s; they are kept in %s; resync with force=true to '
                                 'replace them with the active replica\'s data'
                                 % (replica['id'], record['name'], target, replica.get('last_sync') or 'unknown',
                                    count, ', '.join(named), ' and more' if count > len(named) else '', kept))
        return ['replace %d entries changed after the last replicated point (kept in %s)' % (count, kept)]

    # -- absent --------------------------------------------------------------------------------
    def absent(self, name, pool=None, replica_id=None, force=False):
        self._served(name, pool)
        validate_name(name)
        self._need_target(name, 'absent', pool, replica_id)
        ctx = self.ctx
        with ctx.lock(name, 'replica absent'):
            record, active_pool = ctx.load(name, required=False, cleanup=True)
            if record is None:
                return {'changed': False, 'replica': {}, 'replicas': None, 'share': {}, 'actions': [],
                        'diff': {'before': {}, 'after': {}}}
            replica = self._find(record, self._address(pool), replica_id)
            if replica is None:
                return self._result(False, record, None, [], before={}, after={})
            if replica.get('replica_state') == ACTIVE:
                raise InvalidRequest('Cannot delete replica %s of share %s: it is the last active replica; promote '
                                     'another replica first, or delete the share' % (replica['id'], name))
            target = ctx.pool(replica['pool'])
            reachable = self._available(target)
            if not reachable and not force:
                raise StorageError('Cannot delete replica %s of share %s: its pool %s (%s) is not reachable; delete it '
                                   'with force=true to forget it (its data stays there)'
                                   % (replica['id'], name, target, target.path))
            actions = ['%sdelete replica %s of share %s in %s' % ('force-' if force else '', replica['id'], name, target)]
            before = replica_view(record, replica)
            if ctx.check_mode:
                return self._result(True, record, None, actions, before=before, after={})
            replica['status'] = states.DELETING
            self._save(record, active_pool, 'replica %s delete requested' % replica['id'])
            if reachable:
                self._unexport_secondary(record, replica)
                ctx.driver(target).replica_delete(target, record)
                self._drop_copy(target, name)
            record['replicas'] = [r for r in record['replicas'] if r['id'] != replica['id']]
            if not secondaries(record):
                record['replicas'] = []
            self.ctx.driver(active_pool).replica_retain(
                active_pool, record, set(int(r['base']) for r in secondaries(record) if r.get('base')))
            self._save(record, active_pool, 'replica %s deleted' % replica['id'])
            return self._result(True, record, None, actions, before=before, after={})

    # -- promoted ------------------------------------------------------------------------------
    def promoted(self, name, pool=None, replica_id=None, force=False, quiesce_wait_time=None):
        self._served(name, pool)
        validate_name(name)
        self._need_target(name, 'promoted', pool, replica_id)
        refuse_options('promote a replica of share %s' % name, "the collection's own drivers",
                       [('quiesce_wait_time', quiesce_wait_time)], 'which make the active replica read-only instead')
        ctx = self.ctx
        with ctx.lock(name, 'replica promoted'):
            record, active_pool = ctx.load(name, required=False, cleanup=True)
            if record is None:
                return self._forced(name, pool, replica_id, force)
            self._check_type(record)
            self._converge(record, active_pool)
            replica = self._existing(record, 'promote', pool, replica_id)
            if replica.get('replica_state') == ACTIVE:
                return self._result(False, record, replica, [])
            if replica.get('status') not in (states.AVAILABLE, states.REPLICATION_CHANGE) and not force:
                raise InvalidRequest('Cannot promote replica %s of share %s: its status is %s, not available'
                                     % (replica['id'], name, replica.get('status')))
            resumed = replica.get('status') == states.REPLICATION_CHANGE
            if replica.get('replica_state') in (OUT_OF_SYNC, ERROR) and not force and not resumed:
                raise InvalidRequest('Cannot promote replica %s of share %s: its replica_state is %s; promoting a '
                                     'replica that is not in_sync may lose data and needs administrator intent '
                                     '(force=true)' % (replica['id'], name, replica.get('replica_state')))
            if states.is_busy(record.get('task_state')):
                raise Busy('Cannot promote a replica of share %s: it is busy with task_state %s'
                           % (name, record['task_state']))
            target = ctx.pool(replica['pool'])
            actions = ['make the active replica in %s read-only' % active_pool,
                       'final update of replica %s in %s' % (replica['id'], target),
                       'promote replica %s of share %s in %s (the active replica in %s becomes a secondary)'
                       % (replica['id'], name, target, active_pool)]
            before = replica_view(record, replica)
            if ctx.check_mode:
                return self._result(True, record, replica, actions, before=before,
                                    after=dict(before, replica_state=ACTIVE))
            return self._planned(record, active_pool, replica, target, actions, before)

    def _planned(self, record, active_pool, replica, target, actions, before):
        ctx = self.ctx
        name = record['name']
        driver = ctx.driver(active_pool)
        active = active_instance(record)
        rules_mode = access_mode(record['access_rules'])
        replica['status'] = states.REPLICATION_CHANGE
        self._save(record, active_pool, 'promotion of replica %s started' % replica['id'])
        try:
            driver.replica_set_read_only(active_pool, record, True)
            driver.export().apply(name, active['path'], RO if rules_mode else None)
            # A file still open for writing could change the active after the final update.
            writers = driver.replica_open_writers(active_pool, record)
            if writers:
                raise StorageError('Failed to promote replica %s of share %s: processes hold files of the active '
                                   'replica open for writing and could change it after the final update: %s; stop '
                                   'them and promote again' % (replica['id'], name, '; '.join(writers)))
            stats = self._update(record, active_pool, replica)
            if not stats['verified']:
                raise StorageError('Failed to promote replica %s of share %s: the active replica kept changing during '
                                   'the final update; stop what writes to it and promote again' % (replica['id'], name))
            # The other secondaries' bases go to the promoted replica: they continue incrementally from it.
            bases = sorted(set(int(r['base']) for r in secondaries(record) if r['id'] != replica['id'] and r.get('base')))
            if bases:
                driver.replica_forward_points(active_pool, target, record, replica, bases)
        except Exception:
            driver.replica_set_read_only(active_pool, record, False)
            driver.export().apply(name, active['path'], rules_mode)
            replica['status'] = states.AVAILABLE
            self._save(record, active_pool, 'promotion of replica %s failed; the active replica is writable again'
                       % replica['id'])
            raise
        old = {'id': active['id'], 'pool': active['pool'], 'status': states.AVAILABLE, 'replica_state': IN_SYNC,
               'created_at': active.get('created_at'), 'base': replica.get('base'),
               'base_time': time.time() + 0.05, 'last_sync': replica.get('last_sync'),
               'last_sync_epoch': replica.get('last_sync_epoch'), 'last_update': replica.get('last_update')}
        marks = driver.replica_reversed_marks(replica, target)
        if marks:
            old['change_marks'] = marks
        promoted = self._switch(record, active_pool, replica, target, old, 'promoted (planned)', forced=False)
        return self._result(True, record, promoted, actions, before=before)

    def _switch(self, record, old_pool, replica, target, old_entry, event, forced):
        """Make ``replica`` the active replica and ``old_entry`` a secondary; the record moves to its pool."""
        ctx = self.ctx
        name = record['name']
        new_driver = ctx.driver(target)
        new_path = new_driver.instance_path(target, name)
        new_driver.replica_set_read_only(target, record, False)
        if fenced(replica):
            # A fenced old active promoted as it is (force): writable again.
            new_driver.replica_fence(target, record, False)
        if self._available(target):
            self._unexport_secondary(record, replica)
        others = [r for r in secondaries(record) if r['id'] != replica['id']]
        for other in others:
            # Their base points belong to the old active's chain: the next update says how far behind they are.
            if other.get('replica_state') == IN_SYNC:
                other['replica_state'] = OUT_OF_SYNC
        promoted = {'id': replica['id'], 'pool': replica['pool'], 'status': states.AVAILABLE, 'replica_state': ACTIVE,
                    'created_at': replica.get('created_at')}
        self._move_snapshots(record, replica, target, old_entry)
        record['replicas'] = [promoted, old_entry] + others
        record['instances'] = [{'id': replica['id'], 'pool': replica['pool'], 'status': states.AVAILABLE,
                                'role': 'active', 'path': new_path, 'created_at': replica.get('created_at')}]
        record['status'] = states.AVAILABLE
        record['replication'] = dict(record.get('replication') or {}, last_promotion={
            'at': now_iso(), 'forced': forced, 'from_pool': old_entry['pool'], 'to_pool': replica['pool'],
            'replica_last_sync': replica.get('last_sync')})
        new_driver.export().apply(name, new_path, access_mode(record['access_rules']))
        self._save(record, target, event)
        if not forced:
            # The old pool's record is stale now (lower revision); remove it and export the old
            # active as a secondary.
            ctx.repo.delete(name, old_pool)
            old_driver = ctx.driver(old_pool)
            old_path = old_driver.instance_path(old_pool, name)
            if old_driver.export().location(name, old_path) != new_driver.export().location(name, new_path):
                old_driver.export().remove(name, old_path)
            self._export_secondary(record, old_entry)
            self._save(record, target, 'old active replica %s exported as a secondary' % old_entry['id'])
        self._drop_copy(target, name)
        return promoted

    def _move_snapshots(self, record, replica, target, old_entry):
        """The share's snapshots are now the promoted replica's copies; one it does not hold is
        recorded ``error`` (it stays in the old active's pool). The old active holds every snapshot
        it had (a forced promotion: as its record copy listed them)."""
        driver = self.ctx.driver(target)
        held = set(replica.get('snapshots') or [])
        old_entry['snapshots'] = [s['name'] for s in record.get('snapshots') or []
                                  if s.get('status') in (states.CREATING, states.AVAILABLE)]
        for snap in record.get('snapshots') or []:
            snap.pop('replicas_pending', None)
            if snap['name'] in held:
                snap['path'] = driver.snapshot_path(target, record['name'], snap['name'])
                if snap.get('status') == states.CREATING:
                    snap['status'] = states.AVAILABLE
            elif snap.get('status') in (states.CREATING, states.AVAILABLE):
                snap['status'] = states.ERROR
                snap['error'] = 'not on the replica promoted in %s (it stays in %s)' % (target, old_entry['pool'])

    def _forced(self, name, pool, replica_id, force):
        """The active pool is gone: promote a secondary from the record copy its pool keeps."""
        copies = self._copies(name)
        if not copies:
            raise NotFound('Unknown share %r: no declared pool holds it or a replica of it (pools searched: %s)'
                           % (name, ', '.join(str(p) for p in self.ctx.backends.pools())))
        record = copy.deepcopy(copies[0][0])
        self._check_type(record)
        active = active_instance(record)
        old_pool = self.ctx.pool(active['pool'])
        replica = self._existing(record, 'promote', pool, replica_id)
        if replica.get('replica_state') == ACTIVE:
            raise StorageError('Cannot promote replica %s of share %s: it is the active replica, but its pool %s is '
                               'not reachable' % (replica['id'], name, old_pool))
        if not force:
            raise InvalidRequest('Cannot promote replica %s of share %s: the active replica\'s pool %s (%s) is not '
                                 'reachable; promoting now loses what was written there after %s (the replica\'s '
                                 'last_sync) and needs administrator intent (force=true)'
                                 % (replica['id'], name, old_pool, old_pool.path, replica.get('last_sync')))
        target = self.ctx.pool(replica['pool'])
        if not self._available(target):
            raise StorageError('Cannot promote replica %s of share %s: its pool %s is not reachable either'
                               % (replica['id'], name, target))
        actions = ['promote replica %s of share %s in %s without the active replica in %s (unreachable); writes '
                   'there after %s may be missing' % (replica['id'], name, target, old_pool, replica.get('last_sync')),
                   'fence the old active replica in %s when it comes back' % old_pool]
        before = replica_view(record, replica)
        if self.ctx.check_mode:
            return self._result(True, record, replica, actions, before=before, after=dict(before, replica_state=ACTIVE))
        record['revision'] = int(record.get('revision', 0)) + FORCED_REVISION_STEP - 1
        old = {'id': active['id'], 'pool': active['pool'], 'status': states.ERROR, 'replica_state': OUT_OF_SYNC,
               'created_at': active.get('created_at'), 'base': replica.get('base'),
               'base_time': replica.get('source_quiet_until'), 'fence_pending': True, 'old_active': True,
               'last_sync': replica.get('last_sync'), 'last_sync_epoch': replica.get('last_sync_epoch')}
        promoted = self._switch(record, old_pool, replica, target, old,
                                'promoted (forced: active pool %s unreachable)' % old_pool, forced=True)
        return self._result(True, record, promoted, actions, before=before)

    # -- info ----------------------------------------------------------------------------------
    def info(self, name):
        self._served(name)
        record, dummy = self.ctx.load(name)
        return replica_views(record)
