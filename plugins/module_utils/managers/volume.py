# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume and volume migration services on the collection's own volume drivers (docs/volumes.md).

LocalVolumeManager serves the backends whose driver is a volume driver (drivers/volume/registry.py:
``file``). A volume's record (store.py VolumeRepository) lives in the pool that holds its image;
``status`` and ``migration_status`` follow Cinder's vocabulary and the transitions of states.py.
A migration is driver-assisted (the driver renames the image within one filesystem) or a host
copy (the driver's copier runs detached; each call of volume_migrate or volume_info reads its
progress; the copy is verified before the volume moves and the source is released last). Each
step is recorded before the next one starts, so a rerun after a crash converges.
Without volume backends every request is refused, naming the drivers that serve volumes.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.file import FORMATS, GIB
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.registry import (
    is_volume_backend, volume_driver)
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, InvalidRequest, NotFound, StorageError, WaitTimeout)
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress, validate_name
from ansible_collections.storage.mobility.plugins.module_utils.services.base import not_served
from ansible_collections.storage.mobility.plugins.module_utils.services.volume import VolumeService
from ansible_collections.storage.mobility.plugins.module_utils.services.volume_migration import VolumeMigrationService
from ansible_collections.storage.mobility.plugins.module_utils.store import VolumeRepository, now_iso

#: the fields of a volume's view (module results), in Cinder's names where Cinder has them
VIEW_FIELDS = ('id', 'name', 'status', 'size', 'format', 'host', 'migration_status', 'description',
               'volume_type', 'availability_zone', 'created_at', 'updated_at')


def _clock():
    return time.time()


class LocalVolumeManager(VolumeService, VolumeMigrationService):
    """Volumes on the collection's own volume drivers."""

    serves_local_options = True
    serves_local_migration_options = True
    #: time.time and time.sleep, replaced by the tests
    clock = staticmethod(_clock)
    sleep = staticmethod(time.sleep)

    def __init__(self, ctx):
        self.ctx = ctx
        self.backends = [b for b in ctx.backends.local() if is_volume_backend(b)]
        pools = [p for b in self.backends for p in (b.pools[n] for n in sorted(b.pools))]
        self.repo = VolumeRepository(pools, ctx.transport) if self.backends else None
        self._drivers = {}

    # -- plumbing ----------------------------------------------------------------------------
    def _served(self, what):
        if not self.backends:
            raise not_served(self.ctx, what, 'volumes', 'cinder or file')

    def driver(self, pool):
        key = (pool.backend.host, pool.backend.name)
        if key not in self._drivers:
            self._drivers[key] = volume_driver(pool.backend, self.ctx.transport(pool.backend))
        return self._drivers[key]

    def _pool(self, address, what):
        ref = PoolAddress.split(address)
        if ref.pool is None and ref.backend is not None:
            # host@backend: any pool of that volume backend (the first by name)
            match = [b for b in self.backends if b.host == ref.host and b.name == ref.backend]
            if not match:
                raise NotFound('Unknown %s %r: no volume backend %s is declared (volume backends: %s)'
                               % (what, address, ref.host_backend,
                                  ', '.join('%s@%s' % (b.host, b.name) for b in self.backends)))
            return match[0].pools[sorted(match[0].pools)[0]]
        pool = self.ctx.backends.resolve(address, what)
        if not is_volume_backend(pool.backend):
            raise InvalidRequest('Invalid %s %s: backend %s uses driver %s, which holds shares, not volumes'
                                 % (what, address, pool.backend.name, pool.backend.driver))
        return pool

    def _load(self, name, required=True):
        validate_name(name, 'volume name')
        found = self.repo.find_all(name)
        if not found:
            if required:
                raise NotFound('Unknown volume %r: no volume pool holds it (pools searched: %s)'
                               % (name, ', '.join(sorted(self.repo.stores))))
            return None, None, []
        record, pool = found[0]
        return record, self.ctx.pool(record['host']), found[1:]

    def _lock(self, name, purpose):
        return self.repo.lock(name, purpose, create=not self.ctx.check_mode)

    def _set(self, record, pool, event, **fields):
        """Record ``fields`` (status, migration_status, ...) after checking the volume state machines."""
        after = dict(record, **fields)
        states.check_volume_change(record['name'], (record.get('status'), record.get('migration_status')),
                                   (after.get('status'), after.get('migration_status')))
        record.update(fields)
        return self.repo.save(record, pool, event)

    def view(self, record, pool=None, driver_info=None):
        result = dict((k, record.get(k)) for k in VIEW_FIELDS)
        result['attachments'] = [dict(a) for a in record.get('attachments') or []]
        result['name_id'] = None
        result['os-vol-host-attr:host'] = record.get('host')
        result['os-vol-mig-status-attr:migstat'] = record.get('migration_status')
        result['os-vol-mig-status-attr:name_id'] = None
        if driver_info:
            result['path'] = driver_info['path']
            result['allocated_bytes'] = driver_info['allocated_bytes']
        migration = record.get('migration')
        if migration:
            result['migration'] = dict(migration)
            if record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING and pool is not None:
                result['migration']['progress'] = self.progress(record, pool)
        return result

    def _result(self, changed, record, pool, actions, before=None, **extra):
        volume = self.view(record, pool) if record else {}
        result = {'changed': changed, 'volume': volume, 'actions': actions,
                  'diff': {'before': before or {}, 'after': volume}}
        result.update(extra)
        return result

    # -- the volume service ------------------------------------------------------------------
    def pools(self):
        self._served('list volumes')
        return [str(p.ref) for b in self.backends for p in (b.pools[n] for n in sorted(b.pools))]

    def info(self, name=None):
        self._served('list volumes')
        names = [name] if name is not None else self.repo.list_names()
        views = []
        for each in names:
            record, pool, _stale = self._load(each, required=False)
            if record is None:
                continue
            views.append(self.view(record, pool, self.driver(pool).volume_info(pool, record)))
        return views

    def present(self, name, size=None, volume_type=None, availability_zone=None, description=None, pool=None,
                format=None):
        self._served('manage volume %s' % name)
        if volume_type or availability_zone:
            raise InvalidRequest('Cannot manage volume %s: driver file has no %s; choose where the volume goes '
                                 'with pool' % (name, 'volume types' if volume_type else 'availability zones'))
        if format is not None and format not in FORMATS:
            raise InvalidRequest('Invalid format %r for volume %s: choose one of %s' % (format, name, ', '.join(FORMATS)))
        if size is not None and size < 1:
            raise InvalidRequest('Invalid size %r for volume %s: a volume has at least 1 GiB' % (size, name))
        target = self._pool(pool, 'pool') if pool else None
        with self._lock(name, 'manage volume %s' % name):
            record, where, _stale = self._load(name, required=False)
            if record is None or record.get('status') == states.VOLUME_CREATING:
                return self._create(name, record, where, target, size, format or 'raw', description)
            return self._update(record, where, target, size, format, description)

    def _create(self, name, record, where, target, size, fmt, description):
        if record is None:
            if not size:
                raise InvalidRequest('Cannot create volume %s: give its size (GiB)' % name)
            if target is None:
                all_pools = self.pools()
                if len(all_pools) > 1:
                    raise InvalidRequest('Cannot create volume %s: give its pool (host@backend#pool), one of %s'
                                         % (name, ', '.join(all_pools)))
                target = self._pool(all_pools[0], 'pool')
            record = {'id': str(uuid.uuid4()), 'name': name, 'size': size, 'format': fmt, 'status': None,
                      'migration_status': None, 'description': description, 'volume_type': None,
                      'availability_zone': None, 'created_at': now_iso(), 'attachments': []}
            where = target
        actions = ['create volume %s (%d GiB, %s) in %s' % (name, record['size'], record['format'], where)]
        if self.ctx.check_mode:
            predicted = dict(record, status=states.VOLUME_AVAILABLE, host=str(where.ref))
            return self._result(True, predicted, None, actions)
        driver = self.driver(where)
        driver.require('qemu-img')
        if record.get('status') is None:
            self._set(record, where, 'create', status=states.VOLUME_CREATING)
        driver.create_volume(where, record)
        self._set(record, where, 'created', status=states.VOLUME_AVAILABLE)
        return self._result(True, record, where, actions)

    def _update(self, record, where, target, size, fmt, description):
        name = record['name']
        if target is not None and str(target.ref) != record['host']:
            raise InvalidRequest('Cannot move volume %s from %s to %s with module volume: use volume_migrate'
                                 % (name, record['host'], target.ref))
        if fmt is not None and fmt != record['format']:
            raise InvalidRequest('Cannot change the format of volume %s from %s to %s' % (name, record['format'], fmt))
        if size is not None and size < record['size']:
            raise InvalidRequest('Cannot shrink volume %s from %d GiB to %d GiB: volumes only grow'
                                 % (name, record['size'], size))
        actions = []
        before = self.view(record)
        if size is not None and size > record['size']:
            if record.get('status') != states.VOLUME_AVAILABLE and record.get('status') != states.VOLUME_EXTENDING:
                raise InvalidRequest('Cannot extend volume %s: it is %s; a volume extends only while available'
                                     % (name, record.get('status')))
            actions.append('extend volume %s from %d GiB to %d GiB' % (name, record['size'], size))
        if description is not None and description != record.get('description'):
            actions.append('update the description of volume %s' % name)
        if not actions:
            return self._result(False, record, where, [])
        if self.ctx.check_mode:
            predicted = dict(record, size=max(size or 0, record['size']),
                             description=record.get('description') if description is None else description)
            return self._result(True, predicted, None, actions, before)
        if size is not None and size > record['size']:
            self._set(record, where, 'extend', status=states.VOLUME_EXTENDING)
            self.driver(where).extend_volume(where, record, size)
            self._set(record, where, 'extended', status=states.VOLUME_AVAILABLE, size=size)
        if description is not None and description != record.get('description'):
            record['description'] = description
            self.repo.save(record, where, 'description')
        return self._result(True, record, where, actions, before)

    def absent(self, name):
        self._served('manage volume %s' % name)
        with self._lock(name, 'delete volume %s' % name):
            record, where, stale = self._load(name, required=False)
            if record is None:
                return self._result(False, None, None, [])
            if record.get('status') in (states.VOLUME_IN_USE, states.VOLUME_ATTACHING, states.VOLUME_DETACHING):
                raise InvalidRequest('Cannot delete volume %s: it is %s; detach it first (state: detached)'
                                     % (name, record['status']))
            if record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING:
                raise Busy('Cannot delete volume %s: it is migrating (migration_status %s); cancel the migration '
                           'first (volume_migrate state: cancelled)' % (name, record['migration_status']))
            before = self.view(record)
            actions = ['delete volume %s from %s' % (name, where)]
            if self.ctx.check_mode:
                return self._result(True, None, None, actions, before)
            self._set(record, where, 'delete', status=states.VOLUME_DELETING)
            self.driver(where).delete_volume(where, record)
            for _old, old_pool in stale:
                self.repo.delete(name, old_pool)
            self.repo.delete(name, where)
            self.repo.journal(where).emit('volume.deleted', 'volume', record['id'], name=name, host=str(where.ref))
            return self._result(True, None, None, actions, before)

    def attach(self, name):
        self._served('attach volume %s' % name)
        with self._lock(name, 'attach volume %s' % name):
            record, where, _stale = self._load(name)
            status = record.get('status')
            if status == states.VOLUME_IN_USE:
                return self._reattach(record, where)
            if status not in (states.VOLUME_AVAILABLE, states.VOLUME_ATTACHING):
                raise InvalidRequest('Cannot attach volume %s: it is %s; a volume attaches only while available'
                                     % (name, status))
            before = self.view(record)
            actions = ['attach volume %s' % name]
            if self.ctx.check_mode:
                return self._result(True, dict(record, status=states.VOLUME_IN_USE), None, actions, before)
            target, via_pull = self._attach_pool(record, where)
            if via_pull and record['migration'].get('phase') != 'pulling':
                raise Busy('Cannot attach volume %s now: its migration is %s (phase %s); rerun volume_migrate to let '
                           'it end, then attach' % (name, record['migration_status'], record['migration'].get('phase')))
            if status != states.VOLUME_ATTACHING:
                self._set(record, where, 'attach', status=states.VOLUME_ATTACHING)
            if via_pull:
                record['migration']['attached_during_pull'] = True
            try:
                info = self.driver(target).initialize_connection(target, record, {'host': target.backend.host},
                                                                 via_pull=via_pull)
            except StorageError:
                self._set(record, where, 'attach_failed', status=states.VOLUME_AVAILABLE)
                raise
            attachment = {'id': str(uuid.uuid4()), 'path': info['data']['device_path'], 'pid': info['data']['pid'],
                          'attached_at': now_iso(), 'mechanism': 'qemu-storage-daemon fuse export',
                          'pool': str(target.ref)}
            if via_pull:
                attachment['mechanism'] = 'qemu-storage-daemon fuse export of the pull (nbd)'
            self._set(record, where, 'attached', status=states.VOLUME_IN_USE, attachments=[attachment])
            return self._result(True, record, where, actions, before, attachment=attachment)

    def _attach_pool(self, record, where):
        """(pool, via_pull) of an attachment: the destination, through the pull daemon, while an asynchronous
        migration runs (or its pull daemon still serves an attachment after it); else the volume's pool."""
        migration = record.get('migration') or {}
        if migration.get('mechanism') != 'async':
            return where, False
        if record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING:
            return self.ctx.pool(migration['destination']), True
        return where, self.driver(where).pull_running(where, record)

    def _reattach(self, record, where):
        """An in-use volume: no change while its storage daemon runs; one that died (a crash, a reboot)
        is started again on the same path, after its stale FUSE mount is unmounted."""
        attachment = record['attachments'][0]
        target, via_pull = self._attach_pool(record, where)
        driver = self.driver(target)
        _folder, _path, pidfile = driver.attachment_paths(target, record)
        if driver.daemon_pids(pidfile) or self.ctx.check_mode:
            return self._result(False, record, where, [], attachment=attachment)
        if via_pull and record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING and \
                not driver.pull_running(target, record):
            raise Busy('Cannot restart the attachment of volume %s: its pull daemon is not running; rerun '
                       'volume_migrate first (it restarts the pull and the attachment)' % record['name'])
        info = driver.initialize_connection(target, record, {'host': target.backend.host}, via_pull=via_pull)
        attachment = dict(attachment, pid=info['data']['pid'], restarted_at=now_iso())
        record['attachments'] = [attachment]
        self.repo.save(record, where, 'attachment_restarted')
        return self._result(True, record, where, ['restart the attachment of volume %s' % record['name']],
                            attachment=attachment)

    def detach(self, name):
        self._served('detach volume %s' % name)
        with self._lock(name, 'detach volume %s' % name):
            record, where, _stale = self._load(name)
            status = record.get('status')
            if status not in (states.VOLUME_IN_USE, states.VOLUME_DETACHING):
                return self._result(False, record, where, [])
            before = self.view(record)
            actions = ['detach volume %s' % name]
            if self.ctx.check_mode:
                return self._result(True, dict(record, status=states.VOLUME_AVAILABLE, attachments=[]), None,
                                    actions, before)
            if status != states.VOLUME_DETACHING:
                self._set(record, where, 'detach', status=states.VOLUME_DETACHING)
            target, via_pull = self._attach_pool(record, where)
            pulling = via_pull and record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING
            # while the volume is pulled, only the FUSE daemon stops; the pull goes on
            self.driver(target).terminate_connection(target, record, {'host': target.backend.host},
                                                     stop_pull=not pulling)
            self._set(record, where, 'detached', status=states.VOLUME_AVAILABLE, attachments=[])
            return self._result(True, record, where, actions, before)

    # -- migration ---------------------------------------------------------------------------
    def retype(self, name, new_type, migration_policy=None):
        self._served('migrate volume %s' % name)
        raise InvalidRequest('Cannot retype volume %s to %s: driver file has no volume types; move it to another '
                             'pool with host' % (name, new_type))

    def progress(self, record, pool):
        """Bytes done and total, percent, rate and ETA of the running host copy, from the copier's output."""
        migration = record.get('migration') or {}
        total = migration['bytes_total'] if migration.get('bytes_total') is not None else record['size'] * GIB
        if migration.get('mechanism') == 'async' and migration.get('phase') == 'pulling':
            destination = self.ctx.pool(migration['destination'])
            # the source's data bytes (the holes the job steps over in a moment do not count)
            state = self.driver(pool).pull_state(destination, record, source_pool=pool)
            total = state.get('bytes_total') if state.get('bytes_total') is not None else total
            done = state.get('bytes_done') or 0
            elapsed = max(self.clock() - migration.get('copy_started', self.clock()), 0.001)
            rate = done / elapsed if done else 0.0
            return {'bytes_done': done, 'bytes_total': total, 'percent': round(100.0 * done / total, 2) if total else 100.0,
                    'rate_bytes_per_second': int(rate), 'eta_seconds': int((total - done) / rate) if rate > 0 else None,
                    'copier': state['state'], 'seconds': round(elapsed, 1)}
        if migration.get('mechanism') != 'host_copy' or migration.get('phase') != 'copying':
            completing = record.get('migration_status') == states.VOLUME_MIGRATION_COMPLETING
            done = total if completing else 0
            return {'bytes_done': done, 'bytes_total': total,
                    'percent': 100.0 * done / total if total else (100.0 if completing else 0.0),
                    'rate_bytes_per_second': None, 'eta_seconds': None, 'copier': None}
        destination = self.ctx.pool(migration['destination'])
        state = self.driver(pool).copy_state(pool, destination, record)
        done = int(total * state['percent'] / 100.0)
        elapsed = max(self.clock() - migration.get('copy_started', self.clock()), 0.001)
        rate = done / elapsed if done else 0.0
        eta = int((total - done) / rate) if rate > 0 else None
        return {'bytes_done': done, 'bytes_total': total, 'percent': round(state['percent'], 2),
                'rate_bytes_per_second': int(rate), 'eta_seconds': eta, 'copier': state['state'],
                'seconds': round(elapsed, 1)}

    def migrate(self, name, host=None, cluster=None, force_host_copy=False, lock_volume=False, rate_limit=None,
                async_migration=False):
        self._served('migrate volume %s' % name)
        if async_migration and lock_volume:
            raise InvalidRequest('Cannot migrate volume %s with async_migration and lock_volume: an asynchronous '
                                 'migration keeps the volume attachable, lock_volume forbids attaching it' % name)
        if cluster:
            raise InvalidRequest('Cannot migrate volume %s to cluster %s: driver file has no clusters; give host '
                                 '(host@backend#pool)' % (name, cluster))
        if rate_limit is not None and rate_limit < 1:
            raise InvalidRequest('Invalid rate_limit %r: give bytes per second, at least 1' % rate_limit)
        destination = self._pool(host, 'host')
        started = self.clock()
        with self._lock(name, 'migrate volume %s' % name):
            record, source, stale = self._load(name)
            if record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING or \
                    (record.get('migration') or {}).get('phase') == 'releasing':
                running = record['migration']
                if running['destination'] != str(destination.ref):
                    raise Busy('Cannot migrate volume %s to %s: it is migrating to %s (migration_status %s); wait '
                               'for it or cancel it' % (name, destination.ref, running['destination'],
                                                        record.get('migration_status')))
                result = self._step(record, source, stale)
            else:
                result = self._start(record, source, destination, force_host_copy, lock_volume, rate_limit,
                                     async_migration)
        if result.get('done') or self.ctx.check_mode or not self.ctx.waits.wait:
            return self._migration_result(result, started)
        return self._migration_result(self._follow(name, started), started)

    def _migration_result(self, result, started):
        result.pop('done', None)
        record, pool = result.pop('record'), result.pop('pool', None)
        migration = dict(record.get('migration') or {})
        migration['migration_status'] = record.get('migration_status')
        migration['seconds'] = round(self.clock() - started, 1)
        out = self._result(result.pop('changed'), record, pool, result.pop('actions'), result.pop('before', None))
        out['migration'] = migration
        if 'progress' in out['volume'].get('migration', {}):
            out['migration']['progress'] = out['volume']['migration']['progress']
        out.update(result)
        return out

    def _start(self, record, source, destination, force_host_copy, lock_volume, rate_limit, async_migration=False):
        name = record['name']
        last = record.get('migration') or {}
        if str(destination.ref) == record['host']:
            if last.get('destination') == record['host'] and record.get('migration_status') == 'success':
                return {'changed': False, 'record': record, 'pool': source, 'actions': [], 'done': True}
            raise InvalidRequest('Cannot migrate volume %s to %s: it is already there' % (name, destination.ref))
        status = record.get('status')
        if status == states.VOLUME_IN_USE:
            raise InvalidRequest('Cannot migrate volume %s: it is in-use (attached) and driver file moves only '
                                 'detached volumes%s; detach it first (volume state: detached)'
                                 % (name, ' (force_host_copy copies an image nothing writes to)' if force_host_copy else ''))
        if status != states.VOLUME_AVAILABLE:
            raise InvalidRequest('Cannot migrate volume %s: it is %s; a volume migrates only while available or in-use'
                                 % (name, status))
        same_fs = self.driver(source).same_filesystem(source, destination)
        mechanism = 'driver' if same_fs and not force_host_copy else 'host_copy'
        if async_migration:
            mechanism = 'async'
        actions = ['migrate volume %s from %s to %s (%s)' % (name, source.ref, destination.ref,
                                                             {'driver': 'driver-assisted', 'host_copy': 'host copy',
                                                              'async': 'asynchronous pull'}[mechanism])]
        before = self.view(record)
        if self.ctx.check_mode:
            predicted = dict(record, host=str(destination.ref), migration_status=states.VOLUME_MIGRATION_SUCCESS)
            return {'changed': True, 'record': predicted, 'actions': actions, 'before': before, 'done': True}
        if mechanism == 'host_copy':
            self.driver(source).require('qemu-img', 'setsid')
        if mechanism == 'async':
            self.driver(source).require('qemu-img', 'qemu-storage-daemon', 'fusermount3')
        record['migration'] = {'id': str(uuid.uuid4()), 'source': str(source.ref), 'destination': str(destination.ref),
                               'mechanism': mechanism, 'force_host_copy': force_host_copy, 'lock_volume': lock_volume,
                               'rate_limit': rate_limit, 'phase': 'starting', 'started_at': now_iso(),
                               'restore_status': status, 'result': None}
        fields = {'migration_status': states.VOLUME_MIGRATION_STARTING}
        if lock_volume:
            fields['status'] = states.VOLUME_MAINTENANCE
        self._set(record, source, 'migration_start', **fields)
        self._notify(record, source, 'volume.migrate.start', mechanism=mechanism)
        if mechanism == 'driver':
            record['migration']['phase'] = 'moving'
            self._set(record, source, 'migration_driver', migration_status=states.VOLUME_MIGRATION_MIGRATING)
        elif mechanism == 'async':
            self._start_pull(record, source)
        else:
            self._start_copy(record, source)
        result = self._step(record, source, [])
        result.update(changed=True, actions=actions, before=before)
        return result

    def _start_copy(self, record, source):
        migration = record['migration']
        destination = self.ctx.pool(migration['destination'])
        job = self.driver(source).start_copy(source, destination, record, rate_limit=migration.get('rate_limit'))
        migration.update(phase='copying', copier_pid=job['pid'], bytes_total=job['bytes_total'],
                         copy_started=self.clock())
        self._set(record, source, 'migration_copy', migration_status=states.VOLUME_MIGRATION_MIGRATING)

    def _start_pull(self, record, source, restart=False):
        """Start the pull daemon and its job (again after a crash); the volume is attachable from then on."""
        migration = record['migration']
        destination = self.ctx.pool(migration['destination'])
        driver = self.driver(source)
        if not restart:
            migration['source_signature'] = driver.source_signature(source, record)
        job = driver.start_pull(source, destination, record, rate_limit=migration.get('rate_limit'))
        migration.update(phase='pulling', bytes_total=job['bytes_total'], copy_started=self.clock())
        if record.get('migration_status') != states.VOLUME_MIGRATION_ATTACHABLE:
            self._set(record, source, 'migration_attachable', migration_status=states.VOLUME_MIGRATION_ATTACHABLE)
        else:
            self.repo.save(record, source, 'migration_pull_restarted')
        if restart and record.get('attachments'):
            # the attachment's NBD client reconnects to the new pull daemon; a dead FUSE daemon is started again
            _folder, _path, pidfile = driver.attachment_paths(destination, record)
            if not driver.daemon_pids(pidfile):
                driver.initialize_connection(destination, record, {'host': destination.backend.host}, via_pull=True)

    def _notify(self, record, pool, event, **fields):
        migration = record.get('migration') or {}
        self.repo.journal(pool).emit(event, 'volume', record['id'], name=record['name'], migration_id=migration.get('id'),
                                     source=migration.get('source'), destination=migration.get('destination'), **fields)

    def _step(self, record, pool, stale):
        """Move a running migration as far as it can go now; {'record', 'pool', 'done', ...}."""
        migration = record['migration']
        name = record['name']
        for _old, old_pool in stale:
            if migration.get('phase') != 'releasing' and not self.ctx.check_mode:
                self.repo.delete(name, old_pool)
        if self.ctx.check_mode:
            return {'changed': False, 'record': record, 'pool': pool, 'actions': [], 'done': False}
        source = self.ctx.pool(migration['source'])
        destination = self.ctx.pool(migration['destination'])
        driver = self.driver(source)
        if migration['phase'] == 'starting':
            if migration['mechanism'] == 'driver':
                migration['phase'] = 'moving'
                self._set(record, pool, 'migration_driver', migration_status=states.VOLUME_MIGRATION_MIGRATING)
            elif migration['mechanism'] == 'async':
                self._start_pull(record, pool)
            else:
                self._start_copy(record, pool)
        if migration['phase'] == 'moving':
            if driver.migrate_volume(source, destination, record):
                return self._release(record, source, destination)
            # The driver cannot move it after all (two mounts of one filesystem): copy it, as Cinder does.
            migration['mechanism'] = 'host_copy'
            self._start_copy(record, pool)
            return {'changed': True, 'record': record, 'pool': pool, 'done': False,
                    'actions': ['copy volume %s through the host: the driver cannot move it' % name]}
        if migration['phase'] == 'copying':
            state = driver.copy_state(source, destination, record)
            if state['state'] == 'running':
                self._progress_event(record, pool)
                return {'changed': False, 'record': record, 'pool': pool, 'actions': [], 'done': False}
            if state['state'] == 'stopped':
                # the copier died (killed, host restarted): copy again into the same target (-n)
                self._start_copy(record, pool)
                return {'changed': False, 'record': record, 'pool': pool,
                        'actions': ['restart the copy of volume %s' % name], 'done': False}
            if state['state'] == 'failed':
                driver.stop_copy(source, destination, record)
                return self._fail(record, pool, 'qemu-img convert exited with %s: %s'
                                  % (state.get('rc'), state.get('output')))
            self._copied(migration)
            self._set(record, pool, 'migration_completing', migration_status=states.VOLUME_MIGRATION_COMPLETING)
        if migration['phase'] == 'pulling':
            state = driver.pull_state(destination, record)
            if state['state'] == 'running':
                self._progress_event(record, pool)
                return {'changed': False, 'record': record, 'pool': pool, 'actions': [], 'done': False}
            if state['state'] == 'stopped':
                # the pull daemon died (killed, host restarted): start it again; the job pulls what is missing
                self._start_pull(record, pool, restart=True)
                return {'changed': True, 'record': record, 'pool': pool,
                        'actions': ['restart the pull of volume %s' % name], 'done': False}
            if state['state'] == 'failed':
                if record.get('attachments') or migration.get('attached_during_pull'):
                    # the destination holds writes: never thrown away on a failed job; the rerun pulls again
                    driver.stop_pull(destination, record)
                    raise StorageError('The pull of volume %s failed (%s); the destination keeps the writes made '
                                       'during it: rerun volume_migrate to pull again, or cancel the migration'
                                       % (name, state.get('error')))
                driver.cancel_pull(source, destination, record)
                return self._fail(record, pool, 'the pull failed: %s' % state.get('error'))
            self._copied(migration)
            self._set(record, pool, 'migration_completing', migration_status=states.VOLUME_MIGRATION_COMPLETING)
        if migration['phase'] == 'verifying' and migration['mechanism'] == 'async':
            began = self.clock()
            why = driver.finish_pull(source, destination, record, migration.get('source_signature'))
            if why is None and not migration.get('attached_during_pull') and not record.get('attachments'):
                # nothing attached: the pull daemon stops first (SIGTERM flushes the qcow2 metadata), so that
                # the compare reads from disk what the daemon wrote
                driver.stop_pull(destination, record)
                migration['verified'] = 'compare'
                if not driver.compare_pull(source, destination, record):
                    why = 'the destination differs from the source (qemu-img compare)'
            else:
                migration['verified'] = 'job'
            if why is not None:
                raise StorageError('Cannot complete the migration of volume %s: %s; the source is kept; cancel the '
                                   'migration to go back to it' % (name, why))
            migration['verify_seconds'] = round(self.clock() - began, 2)
            driver.place_copy(destination, record)
            return self._release(record, source, destination)
        if migration['phase'] == 'verifying':
            began = self.clock()
            if not driver.verify_copy(source, destination, record):
                driver.stop_copy(source, destination, record)
                return self._fail(record, pool, 'the copy differs from the source (qemu-img compare)')
            migration['verify_seconds'] = round(self.clock() - began, 2)
            driver.place_copy(destination, record)
            return self._release(record, source, destination)
        if migration['phase'] == 'releasing':
            return self._release(record, source, destination)
        raise StorageError('Volume %s has a migration in an unknown phase %r; resolve it by hand'
                           % (name, migration['phase']))

    def _copied(self, migration):
        """The copy or the pull ended: its seconds (since its last start, after a crash the restart) are kept."""
        migration['phase'] = 'verifying'
        if migration.get('copy_started'):
            migration['copy_seconds'] = round(max(self.clock() - migration['copy_started'], 0.0), 2)

    def _release(self, record, source, destination):
        """The destination holds the verified volume: record it there, then release the source."""
        migration = record['migration']
        if migration['phase'] != 'releasing':
            migration['phase'] = 'releasing'
            migration['result'] = 'success'
            migration['finished_at'] = now_iso()
            fields = {'migration_status': states.VOLUME_MIGRATION_SUCCESS,
                      'status': migration.get('restore_status') or states.VOLUME_AVAILABLE}
            if migration['mechanism'] == 'async':
                fields['format'] = 'qcow2'  # the pulled destination is a qcow2 image
                if record.get('attachments'):
                    fields['status'] = states.VOLUME_IN_USE
            self._set(record, destination, 'migration_success', **fields)
        self.repo.delete(record['name'], source)
        driver = self.driver(source)
        if migration['mechanism'] == 'host_copy':
            driver.remove_file(driver.image_path(source, record))
            driver.stop_copy(source, destination, record)
        if migration['mechanism'] == 'async':
            driver.remove_file(driver.image_path(source, record))
            if not record.get('attachments'):
                driver.stop_pull(destination, record)
        migration['phase'] = 'done'
        self.repo.save(record, destination, 'migration_released')
        self._notify(record, source, 'volume.migrate.end', result='success', mechanism=migration['mechanism'])
        return {'changed': True, 'record': record, 'pool': destination,
                'actions': ['release the source of volume %s in %s' % (record['name'], source.ref)], 'done': True}

    def _fail(self, record, pool, why):
        migration = record['migration']
        migration.update(phase='done', result='error', error=why, finished_at=now_iso())
        self._set(record, pool, 'migration_error', migration_status=states.VOLUME_MIGRATION_ERROR,
                  status=migration.get('restore_status') or states.VOLUME_AVAILABLE)
        self._notify(record, pool, 'volume.migrate.end', result='error', error=why, mechanism=migration['mechanism'])
        raise StorageError('Failed to migrate volume %s to %s: %s; the volume stays in %s, unchanged'
                           % (record['name'], migration['destination'], why, pool), volume=self.view(record, pool))

    def _progress_event(self, record, pool):
        """One volume.migrate.progress line per poll of a running copy (every wait_sleep seconds while a run
        waits, and on each rerun)."""
        progress = self.progress(record, pool)
        keys = ('bytes_done', 'bytes_total', 'percent', 'rate_bytes_per_second', 'eta_seconds')
        fields = dict((k, progress[k]) for k in keys)
        self._notify(record, pool, 'volume.migrate.progress', **fields)

    def _follow(self, name, started):
        """Poll the migration until it is done (the lock is taken for each step, not between them)."""
        timeout, sleep = self.ctx.waits.timeout, self.ctx.waits.sleep
        while True:
            with self._lock(name, 'migrate volume %s' % name):
                record, pool, stale = self._load(name)
                if record.get('migration_status') not in states.VOLUME_MIGRATION_RUNNING and \
                        (record.get('migration') or {}).get('phase') != 'releasing':
                    return {'changed': True, 'record': record, 'pool': pool, 'actions': [], 'done': True}
                result = self._step(record, pool, stale)
            if result.get('done'):
                result['changed'] = True
                return result
            waited = self.clock() - started
            if waited >= timeout:
                raise WaitTimeout('Timed out after %d seconds waiting for the migration of volume %s to %s (it goes on; '
                                  'volume_info shows its progress)' % (int(waited), name, record['migration']['destination']),
                                  result=self.view(record, pool))
            pause = max(0.0, min(sleep, timeout - waited))
            migration = record.get('migration') or {}
            if migration.get('mechanism') == 'host_copy' and migration.get('phase') == 'copying':
                # the copy's end is seen at once (its exit status is written), not at the next poll
                source = self.ctx.pool(migration['source'])
                self.driver(source).wait_copy(source, record, pause, self.sleep)
            elif migration.get('mechanism') == 'async' and migration.get('phase') == 'pulling':
                # the same for the pull: its job's end is asked of the daemon between the polls
                destination = self.ctx.pool(migration['destination'])
                self.driver(destination).wait_pull(destination, record, pause, self.sleep)
            else:
                self.sleep(pause)

    def cancel(self, name):
        self._served('cancel the migration of volume %s' % name)
        with self._lock(name, 'cancel the migration of volume %s' % name):
            record, pool, _stale = self._load(name)
            migration = record.get('migration') or {}
            if record.get('migration_status') not in states.VOLUME_MIGRATION_RUNNING:
                return self._result(False, record, pool, [], migration=migration)
            if migration.get('phase') not in ('starting', 'copying', 'pulling'):
                raise Busy('Cannot cancel the migration of volume %s: it is %s (phase %s) and finishes on its own; '
                           'rerun volume_migrate to let it end' % (name, record['migration_status'], migration.get('phase')))
            actions = ['cancel the migration of volume %s to %s' % (name, migration['destination'])]
            before = self.view(record)
            if self.ctx.check_mode:
                return self._result(True, dict(record, migration_status=states.VOLUME_MIGRATION_ERROR), None, actions,
                                    before, migration=migration)
            destination = self.ctx.pool(migration['destination'])
            if migration['mechanism'] == 'async':
                # the attachment on the destination ends (its writes were the destination's), the source stays
                if record.get('status') == states.VOLUME_IN_USE:
                    self._set(record, pool, 'detach', status=states.VOLUME_DETACHING)
                self.driver(pool).cancel_pull(pool, destination, record)
                record['attachments'] = []
                actions.append('detach volume %s from the destination' % name)
            else:
                self.driver(pool).stop_copy(pool, destination, record)
            migration.update(phase='done', result='cancelled', finished_at=now_iso())
            self._set(record, pool, 'migration_cancelled', migration_status=states.VOLUME_MIGRATION_ERROR,
                      status=migration.get('restore_status') or states.VOLUME_AVAILABLE)
            self._notify(record, pool, 'volume.migrate.end', result='cancelled', mechanism=migration['mechanism'])
            return self._result(True, record, pool, actions, before, migration=migration)
