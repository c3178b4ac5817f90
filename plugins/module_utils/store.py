# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records kept with the storage: ``.mobility/`` in each pool, atomic writes, a lock per share.

The controller keeps nothing between runs. Each pool holds the records of the shares whose
authoritative copy lives there. During the switchover of a migration a record is briefly present
in two pools; the one with the higher ``revision`` is authoritative and the other is stale.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fcntl
import fnmatch
import json
import os
import socket
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.names import validate_name

META_DIR = '.mobility'
HISTORY_LIMIT = 50
# Fault injection for the crash tests: when set, the process dies (exit 70, no cleanup) right
# after a record whose event matches this glob pattern has been written, as a power cut would.
CRASH_AFTER_ENV = 'STORAGE_MOBILITY_CRASH_AFTER'


def now_iso():
    """UTC time in ISO 8601 with microseconds, as the records store it."""
    t = time.time()
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t)) + '.%06dZ' % int((t % 1) * 1e6)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path, data):
    """Write ``data`` as JSON to ``path``: temp file, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(path)
    # Not derived from the name, so that the longest accepted name fits (names.DERIVED_NAMES);
    # listings skip names that start with a dot.
    tmp = os.path.join(folder, '.tmp.%d.%s' % (os.getpid(), uuid.uuid4().hex[:12]))
    payload = json.dumps(data, indent=2, sort_keys=True).encode('utf-8')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


class PoolStore(object):
    """The metadata folder of one pool."""

    def __init__(self, pool):
        self.pool = pool
        self.root = os.path.join(pool.path, META_DIR)

    def _dir(self, kind):
        return os.path.join(self.root, kind)

    def ensure(self):
        """Create the metadata folders; fail clearly when the pool path is missing or read-only."""
        if not os.path.isdir(self.pool.path):
            raise StorageError('Pool %s: its path %s does not exist or is not a folder'
                               % (self.pool, self.pool.path))
        for kind in ('shares', 'locks'):
            try:
                os.makedirs(self._dir(kind), 0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Pool %s: cannot create its metadata folder %s: %s'
                                       % (self.pool, self._dir(kind), exc.strerror))

    def share_path(self, name):
        return os.path.join(self._dir('shares'), validate_name(name) + '.json')

    def read_share(self, name):
        """The share record stored in this pool, or None."""
        path = self.share_path(name)
        try:
            with open(path, 'rb') as handle:
                return json.loads(handle.read().decode('utf-8'))
        except IOError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise StorageError('Pool %s: cannot read record %s: %s' % (self.pool, path, exc))
        except ValueError as exc:
            raise StorageError('Pool %s: record %s is not valid JSON (%s); restore it or remove it by hand'
                               % (self.pool, path, exc))

    def write_share(self, record):
        self.ensure()
        atomic_write_json(self.share_path(record['name']), record)

    def delete_share(self, name):
        """Remove the record; a record already gone is not an error."""
        path = self.share_path(name)
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        _fsync_dir(os.path.dirname(path))
        return True

    def list_shares(self):
        folder = self._dir('shares')
        try:
            names = os.listdir(folder)
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
                fd = self._lock_one(store)
                if fd is None:
                    continue
                self.handles.append((store, fd))
                if not self.create:
                    continue
                info = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                   'since': now_iso(), 'purpose': self.purpose}).encode('utf-8')
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
        except BaseException:
            self.release()
            raise
        return self

    def _lock_one(self, store):
        """The locked descriptor of the share's lock file in ``store`` (None: no file to lock in
        check mode). A lock file can be removed by the run that holds it (see release): a lock
        taken on a file that is no longer at its path is dropped and taken again."""
        path = store.lock_path(self.name)
        for _attempt in range(100):
            if self.create:
                store.ensure()
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            else:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        return None
                    raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (IOError, OSError) as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise Busy('Share %s is busy: another run holds its lock in pool %s (%s); '
                               'try again when it has finished' % (self.name, store.pool, holder or 'holder unknown'))
                raise
            if _names_inode(path, fd):
                return fd
            # The holder before us removed the file after we opened it: lock the current one.
            os.close(fd)
        raise Busy('Share %s is busy: its lock file in pool %s keeps being replaced; try again'
                   % (self.name, store.pool))

    def release(self):
        """Unlock; when no pool holds a record of the share (an unknown name, a deleted share),
        remove its lock files first, while still holding them, so bad input leaves nothing behind."""
        discard = self.create and bool(self.handles) and not any(
            os.path.lexists(store.share_path(self.name)) for store, _fd in self.handles)
        while self.handles:
            store, fd = self.handles.pop()
            try:
                if discard:
                    _unlink_locked(store.lock_path(self.name), fd)
            finally:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _names_inode(path, fd):
    """True when ``path`` still names the file open as ``fd``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _unlink_locked(path, fd):
    """Remove the lock file ``path`` that this run holds locked as ``fd``: only when the path still
    names that file (a run that opens it meanwhile finds it replaced and locks again)."""
    if not _names_inode(path, fd):
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _read_holder(fd):
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode('utf-8'))
        return 'pid %s on %s since %s for %s' % (info.get('pid'), info.get('host'), info.get('since'), info.get('purpose'))
    except Exception:
        return None


class ShareRepository(object):
    """Finds and saves share records across every declared pool."""

    def __init__(self, backends):
        self.backends = backends
        self.stores = dict((str(p.ref), PoolStore(p)) for p in backends.pools())

    def store(self, pool):
        return self.stores[str(pool.ref)]

    def available_stores(self):
        return [s for s in self.stores.values() if os.path.isdir(s.pool.path)]

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
        return found

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
        """Bump the revision, stamp the time, append ``event`` to history and write atomically."""
        record['revision'] = int(record.get('revision', 0)) + 1
        record['updated_at'] = now_iso()
        record['host'] = str(pool.ref)
        if event:
            history = record.setdefault('history', [])
            history.append({'at': record['updated_at'], 'event': event,
                            'task_state': record.get('task_state'), 'status': record.get('status')})
            del history[:-HISTORY_LIMIT]
        self.store(pool).write_share(record)
        crash_after = os.environ.get(CRASH_AFTER_ENV)
        if crash_after and event and fnmatch.fnmatchcase(event, crash_after):
            os._exit(70)
        return record

    def delete(self, name, pool):
        return self.store(pool).delete_share(name)
