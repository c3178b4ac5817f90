# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records kept with the storage: ``.mobility/`` in each pool, atomic writes, a lock per share.

The controller keeps nothing between runs. Each pool holds the records of the shares whose
authoritative copy lives there. During the switchover of a migration a record is briefly present
in two pools; the one with the higher ``revision`` is authoritative and the other is stale.
Records and locks are read and written through the transport of the pool's host (transport/).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import socket
import time

from ansible_collections.storage.mobility.plugins.module_utils.crash import crash_point
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, HostUnreachable, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.events import Journal, watched
from ansible_collections.storage.mobility.plugins.module_utils.names import validate_name
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import ATOMIC_TMP_PREFIX
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import LockBusy, LockReplaced
from ansible_collections.storage.mobility.plugins.module_utils.transport.registry import transport_for
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

META_DIR = '.mobility'
HISTORY_LIMIT = 50


def now_iso():
    """UTC time in ISO 8601 with microseconds, as the records store it."""
    t = time.time()
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t)) + '.%06dZ' % int((t % 1) * 1e6)


class PoolStore(object):
    """The metadata folder of one pool, reached through the transport of its backend's host."""

    def __init__(self, pool, transport, hosts_down=None):
        self.pool = pool
        self.transport = transport
        self.root = os.path.join(pool.path, META_DIR)
        self.journal = Journal(transport, self.root)
        #: {storage host: its HostUnreachable error}, shared by the stores of one repository
        self.hosts_down = {} if hosts_down is None else hosts_down

    @property
    def unreachable(self):
        """The HostUnreachable error of the pool's storage host when it was met in this run, else None."""
        return self.hosts_down.get(self.pool.backend.host)

    def available(self):
        """True when the pool's folder is there. An unmounted pool is skipped, not an error, and so
        is the pool of a storage host that cannot be reached at all (asked once per host and run)."""
        if self.unreachable is not None:
            return False
        try:
            return self.transport.is_dir(self.pool.path)
        except HostUnreachable as exc:
            self.hosts_down[self.pool.backend.host] = exc
            return False

    def _dir(self, kind):
        return os.path.join(self.root, kind)

    def ensure(self):
        """Create the metadata folders; fail clearly when the pool path is missing or read-only."""
        if not self.available():
            if self.unreachable is not None:
                raise self.unreachable
            raise StorageError('Pool %s: its path %s does not exist or is not a folder'
                               % (self.pool, self.pool.path))
        for kind in ('shares', 'locks'):
            try:
                self.transport.makedirs(self._dir(kind), 0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Pool %s: cannot create its metadata folder %s: %s'
                                       % (self.pool, self._dir(kind), exc.strerror))

    def share_path(self, name):
        return os.path.join(self._dir('shares'), validate_name(name) + '.json')

    def read_record(self, path, what='record'):
        """The JSON record at ``path`` in this pool's metadata, or None when there is none."""
        try:
            return json.loads(self.transport.read_bytes(path).decode('utf-8'))
        except IOError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise StorageError('Pool %s: cannot read %s %s: %s' % (self.pool, what, path, exc))
        except ValueError as exc:
            raise StorageError('Pool %s: %s %s is not valid JSON (%s); restore it or remove it by hand'
                               % (self.pool, what, path, exc))

    def read_share(self, name):
        """The share record stored in this pool, or None."""
        return self.read_record(self.share_path(name))

    def write_share(self, record):
        self.ensure()
        self.transport.write_json_atomic(self.share_path(record['name']), record)
        self.sweep_leftovers(os.path.dirname(self.share_path(record['name'])))

    def sweep_leftovers(self, folder):
        """Remove the temporary files of atomic writes in ``folder`` whose writer is gone (a run
        killed while it wrote a record): a writer's process id is in the name, and a writer that
        no longer runs on the pool's host cannot finish its write. Returns how many were removed."""
        removed = 0
        try:
            names = self.transport.listdir(folder)
        except OSError:
            return 0
        for name in names:
            if not name.startswith(ATOMIC_TMP_PREFIX):
                continue
            pid = name[len(ATOMIC_TMP_PREFIX):].split('.', 1)[0]
            if not pid.isdigit() or self.transport.lexists('/proc/%s' % pid):
                continue
            try:
                self.transport.unlink(os.path.join(folder, name))
                removed += 1
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return removed

    def delete_share(self, name):
        """Remove the record; a record already gone is not an error."""
        path = self.share_path(name)
        try:
            self.transport.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        self.transport.fsync_dir(os.path.dirname(path))
        return True

    def has_share(self, name):
        return self.transport.lexists(self.share_path(name))

    def list_shares(self):
        folder = self._dir('shares')
        try:
            names = self.transport.listdir(folder)
        except OSError:
            return []
        return sorted(n[:-5] for n in names if n.endswith('.json') and not n.startswith('.'))

    def lock_path(self, name):
        return os.path.join(self._dir('locks'), validate_name(name) + '.lock')


class ShareLock(object):
    """An exclusive, non-blocking lock on one share name in every given pool.

    Locks are taken in a fixed order (sorted pool paths) so two runs never deadlock; a run that
    cannot take one lock releases the others and raises Busy naming the holder.
    """

    def __init__(self, stores, name, purpose, create=True):
        self.stores = sorted(stores, key=lambda s: s.root)
        self.name = name
        self.purpose = purpose
        # Without create (check mode) nothing is written: a pool with no lock file yet holds no
        # lock to wait for, so it is skipped.
        self.create = create
        self.handles = []

    def acquire(self):
        try:
            for store in self.stores:
                handle = self._lock_one(store)
                if handle is None:
                    continue
                self.handles.append((store, handle))
                if not self.create:
                    continue
                handle.write_holder(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                                'since': now_iso(), 'purpose': self.purpose}))
        except BaseException:
            self.release()
            raise
        return self

    def _lock_one(self, store):
        """The lock (transport.lock) of the share's lock file in ``store`` (None: no file to lock
        in check mode). A lock file can be removed by the run that holds it (see release): the
        transport then locks the file now at its path."""
        if self.create:
            store.ensure()
        try:
            return store.transport.lock(store.lock_path(self.name), create=self.create)
        except LockBusy as exc:
            raise Busy('Share %s is busy: another run holds its lock in pool %s (%s); '
                       'try again when it has finished' % (self.name, store.pool, _holder(exc.holder) or 'holder unknown'))
        except LockReplaced:
            raise Busy('Share %s is busy: its lock file in pool %s keeps being replaced; try again'
                       % (self.name, store.pool))

    def release(self):
        """Unlock; when no pool holds a record of the share (an unknown name, a deleted share),
        remove its lock files first, while still holding them, so bad input leaves nothing behind."""
        discard = self.create and bool(self.handles) and not any(
            store.has_share(self.name) for store, _handle in self.handles)
        while self.handles:
            store, handle = self.handles.pop()
            handle.release(remove=discard)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _replicas_of(record):
    """The replicas a share record lists (managers/replica.py), each with an id."""
    return [r for r in record.get('replicas') or [] if isinstance(r, dict) and r.get('id')]


def _holder(text):
    """The holder's lock file text for messages, or None."""
    try:
        info = json.loads(text)
        return 'pid %s on %s since %s for %s' % (info.get('pid'), info.get('host'), info.get('since'), info.get('purpose'))
    except Exception:
        return None


class ShareRepository(object):
    """Finds and saves share records across every declared pool."""

    def __init__(self, backends, transport_of=None):
        """``transport_of``: a function from a backend to the transport of its host (the
        Context's); without it each backend gets a new transport of its kind."""
        self.backends = backends
        if transport_of is None:
            def transport_of(backend):
                return transport_for(backend, CommandRunner())
        self.hosts_down = {}
        self.stores = dict((str(p.ref), PoolStore(p, transport_of(p.backend), self.hosts_down)) for p in backends.pools())
        # The watched fields (events.WATCHED) of each share as last read or written, by id: a
        # save that changes one appends an event to the journal of the pool it is saved in.
        self._seen = {}

    def store(self, pool):
        return self.stores[str(pool.ref)]

    def journal_failures(self):
        """(event, error) of every journal line this run could not write, in any pool."""
        return [f for s in self.stores.values() for f in s.journal.failures]

    def available_stores(self):
        return [s for s in self.stores.values() if s.available()]

    def unreachable(self):
        """The HostUnreachable errors met so far, one per storage host (their pools were skipped)."""
        return [self.hosts_down[host] for host in sorted(self.hosts_down)]

    def lock(self, name, purpose, create=True):
        """Lock ``name`` in every reachable pool (see ShareLock)."""
        validate_name(name)
        return ShareLock(self.available_stores(), name, purpose, create)

    def find_all(self, name):
        """Every record of ``name`` with its pool, authoritative (highest revision) first."""
        found = []
        for store in self.available_stores():
            record = store.read_share(name)
            if record is not None:
                found.append((record, store.pool))
        found.sort(key=lambda item: -int(item[0].get('revision', 0)))
        if found and found[0][0].get('id'):
            self._remember(found[0][0])
        return found

    def _remember(self, record):
        """Keep the watched fields of ``record`` and of each of its replicas (by id)."""
        self._seen[record['id']] = watched(record)
        for replica in _replicas_of(record):
            self._seen[replica['id']] = watched(replica)

    def find(self, name):
        """(record, pool) of the authoritative record of ``name``, or (None, None)."""
        found = self.find_all(name)
        return found[0] if found else (None, None)

    def list_names(self):
        names = set()
        for store in self.available_stores():
            names.update(store.list_shares())
        return sorted(names)

    def save(self, record, pool, event=None):
        """Bump the revision, stamp the time, append ``event`` to history and write atomically;
        each watched field that changed is a line in the pool's event journal (events.py)."""
        record['revision'] = int(record.get('revision', 0)) + 1
        record['updated_at'] = now_iso()
        record['host'] = str(pool.ref)
        if event:
            history = record.setdefault('history', [])
            history.append({'at': record['updated_at'], 'event': event,
                            'task_state': record.get('task_state'), 'status': record.get('status')})
            del history[:-HISTORY_LIMIT]
        store = self.store(pool)
        store.write_share(record)
        before = self._seen.get(record.get('id'), {})
        self._seen[record.get('id')] = after = watched(record)
        store.journal.state_changes('share', record.get('id'), before, after, name=record.get('name'),
                                    host=record['host'], revision=record['revision'], step=event)
        # A replica's status and replica_state changes are lines of their own (kind replica).
        for replica in _replicas_of(record):
            before = self._seen.get(replica['id'], {})
            self._seen[replica['id']] = after = watched(replica)
            store.journal.state_changes('replica', replica['id'], before, after, name=record.get('name'),
                                        share_id=record.get('id'), pool=replica.get('pool'),
                                        revision=record['revision'], step=event)
        # Fault injection (crash.py): die right after a record of a matching event is written.
        crash_point(event)
        return record

    def delete(self, name, pool):
        return self.store(pool).delete_share(name)


class VolumeRepository(object):
    """Volume records (docs/volumes.md): ``.mobility/volumes/<name>.json`` in the pool that holds
    the volume's image, written atomically through the pool's transport; a lock per volume name
    in ``.mobility/locks/volume-<name>.lock`` of every pool of the volume backends. As for shares,
    a record may briefly be in two pools at the end of a migration: the higher ``revision`` wins.
    Each change of ``status`` or ``migration_status`` is a ``volume.*`` line in the journal."""

    def __init__(self, pools, transport_of):
        """``pools``: the pools of the volume backends; ``transport_of``: backend -> its transport."""
        self.stores = dict((str(p.ref), PoolStore(p, transport_of(p.backend))) for p in pools)
        self._seen = {}

    def store(self, pool):
        return self.stores[str(pool.ref)]

    def journal(self, pool):
        return self.store(pool).journal

    def journal_failures(self):
        return [f for s in self.stores.values() for f in s.journal.failures]

    def available_stores(self):
        return [s for s in self.stores.values() if s.available()]

    @staticmethod
    def _path(store, name):
        return os.path.join(store.root, 'volumes', validate_name(name, 'volume name') + '.json')

    def _read(self, store, name):
        return store.read_record(self._path(store, name), 'volume record')

    def find_all(self, name):
        """Every record of volume ``name`` with its pool, authoritative (highest revision) first."""
        found = []
        for store in self.available_stores():
            record = self._read(store, name)
            if record is not None:
                found.append((record, store.pool))
        found.sort(key=lambda item: -int(item[0].get('revision', 0)))
        if found:
            self._seen[found[0][0]['id']] = watched(found[0][0])
        return found

    def list_names(self):
        names = set()
        for store in self.available_stores():
            try:
                entries = store.transport.listdir(os.path.join(store.root, 'volumes'))
            except OSError:
                continue
            names.update(n[:-5] for n in entries if n.endswith('.json') and not n.startswith('.'))
        return sorted(names)

    def save(self, record, pool, event=None):
        """Bump the revision, stamp the time and the pool, write atomically; a line per watched change."""
        store = self.store(pool)
        store.ensure()
        try:
            store.transport.makedirs(os.path.join(store.root, 'volumes'), 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Pool %s: cannot create its volume records folder: %s' % (pool, exc.strerror))
        record['revision'] = int(record.get('revision', 0)) + 1
        record['updated_at'] = now_iso()
        record['host'] = str(pool.ref)
        if event:
            history = record.setdefault('history', [])
            history.append({'at': record['updated_at'], 'event': event, 'status': record.get('status'),
                            'migration_status': record.get('migration_status')})
            del history[:-HISTORY_LIMIT]
        store.transport.write_json_atomic(self._path(store, record['name']), record)
        store.sweep_leftovers(os.path.dirname(self._path(store, record['name'])))
        before = self._seen.get(record['id'], {})
        self._seen[record['id']] = after = watched(record)
        store.journal.state_changes('volume', record['id'], before, after, name=record['name'],
                                    host=record['host'], revision=record['revision'], step=event)
        crash_point(event)
        return record

    def delete(self, name, pool):
        """Remove the record of ``name`` in ``pool``; one already gone is not an error."""
        store = self.store(pool)
        path = self._path(store, name)
        try:
            store.transport.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        store.transport.fsync_dir(os.path.dirname(path))
        return True

    def lock(self, name, purpose, create=True):
        return VolumeLock(self, name, purpose, create)


class VolumeLock(object):
    """The exclusive, non-blocking lock of one volume name in every reachable pool (sorted order)."""

    def __init__(self, repo, name, purpose, create=True):
        self.stores = sorted(repo.available_stores(), key=lambda s: s.root)
        self.name = validate_name(name, 'volume name')
        self.purpose = purpose
        self.create = create
        self.handles = []

    def acquire(self):
        try:
            for store in self.stores:
                if self.create:
                    store.ensure()
                path = os.path.join(store.root, 'locks', 'volume-%s.lock' % self.name)
                try:
                    handle = store.transport.lock(path, create=self.create)
                except LockBusy as exc:
                    raise Busy('Volume %s is busy: another run holds its lock in pool %s (%s); try again when it '
                               'has finished' % (self.name, store.pool, _holder(exc.holder) or 'holder unknown'))
                except LockReplaced:
                    raise Busy('Volume %s is busy: its lock file in pool %s keeps being replaced; try again'
                               % (self.name, store.pool))
                if handle is None:
                    continue
                self.handles.append(handle)
                if self.create:
                    handle.write_holder(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                                    'since': now_iso(), 'purpose': self.purpose}))
        except BaseException:
            self.release()
            raise
        return self

    def release(self):
        while self.handles:
            self.handles.pop().release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
