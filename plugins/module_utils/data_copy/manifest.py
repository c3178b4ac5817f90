# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hash manifests of two trees and their comparison, for the data mover's verification.

A manifest entry describes one path below a root (the root itself is ``.``): its type, mode,
owner, group, size, modification time in nanoseconds, symlink target (never followed), device
number, extended attributes (ACLs included), hard-link structure and, for regular files, a hash
of the content. Both trees are walked in the same order (depth first, names sorted as bytes)
by one thread each, and the entries are compared as they come, so memory does not grow with
the size of the tree.

Paths are bytes throughout: a name that is not UTF-8 is compared exactly and only rendered
(``\\xNN``) for the report. Shipped to the data node with the worker: standard library only
(plus the optional ``xxhash`` and ``blake3`` packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import json
import os
import queue
import stat
import threading

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.state import render_path

HASH_ALGORITHMS = ('xxh128', 'sha256', 'blake3', 'blake2b')
DEFAULT_ALGORITHM = 'xxh128'
FALLBACK_ALGORITHM = 'blake2b'
HASH_LIBRARIES = {'xxh128': 'xxhash', 'blake3': 'blake3'}
LIST_LIMIT = 1000
REPAIR_LIMIT = 100000
# Differences a later rsync pass may not see by itself (same size and time, other content or links).
REPAIR_ATTRIBUTES = frozenset(('hash', 'link', 'error'))
CHUNK = 1024 * 1024
ACL_XATTRS = ('system.posix_acl_access', 'system.posix_acl_default')
ATTRIBUTES = ('type', 'mode', 'uid', 'gid', 'size', 'mtime_ns', 'target', 'rdev', 'xattrs', 'link', 'hash',
              'error')

_O_NOATIME = getattr(os, 'O_NOATIME', 0)
_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)

_TYPES = (
    (stat.S_ISREG, 'file'),
    (stat.S_ISDIR, 'directory'),
    (stat.S_ISLNK, 'symlink'),
    (stat.S_ISFIFO, 'fifo'),
    (stat.S_ISSOCK, 'socket'),
    (stat.S_ISCHR, 'char_device'),
    (stat.S_ISBLK, 'block_device'),
)


class HashUnavailable(Exception):
    """The hash algorithm needs a Python package that is not installed."""

    def __init__(self, algorithm, library):
        super(HashUnavailable, self).__init__('Hash algorithm %s needs the Python package %s' % (algorithm, library))
        self.algorithm = algorithm
        self.library = library


class Cancelled(Exception):
    """The walk was stopped on request."""


def _xxhash():
    try:
        import xxhash  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return xxhash if hasattr(xxhash, 'xxh3_128') else None


def _blake3():
    try:
        import blake3  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return blake3


def missing_library(algorithm):
    """The package ``algorithm`` needs and lacks, or None. xxh128 falls back, so never lacks one."""
    if algorithm == 'blake3' and _blake3() is None:
        return 'blake3'
    return None


def resolve_algorithm(requested):
    """``(algorithm used, warning or None)``; raise HashUnavailable when there is no way to hash."""
    if requested not in HASH_ALGORITHMS:
        raise ValueError('Unknown hash algorithm %r; expected one of %s' % (requested, ', '.join(HASH_ALGORITHMS)))
    if requested == 'xxh128' and _xxhash() is None:
        return FALLBACK_ALGORITHM, ('The Python package xxhash is not installed on the data node: hashed with %s '
                                    'instead of xxh128 (slower; install xxhash for the fast hash)'
                                    % FALLBACK_ALGORITHM)
    if requested == 'blake3' and _blake3() is None:
        raise HashUnavailable('blake3', 'blake3')
    return requested, None


def new_hasher(algorithm):
    """A hash object with ``update`` and ``hexdigest`` for an algorithm that resolve_algorithm accepted."""
    if algorithm == 'xxh128':
        module = _xxhash()
        if module is None:
            raise HashUnavailable('xxh128', 'xxhash')
        return module.xxh3_128()
    if algorithm == 'blake3':
        module = _blake3()
        if module is None:
            raise HashUnavailable('blake3', 'blake3')
        return module.blake3()
    if algorithm == 'sha256':
        return hashlib.sha256()
    if algorithm == 'blake2b':
        return hashlib.blake2b()
    raise ValueError('Unknown hash algorithm %r' % (algorithm,))


def _file_type(mode):
    for test, name in _TYPES:
        if test(mode):
            return name
    return 'unknown'


# Filesystem-internal mirrors of what is compared already: XFS shows its on-disk copy of the
# POSIX ACLs to root as trusted.SGI_ACL_*, so an ext4 -> xfs copy would otherwise "differ".
FS_INTERNAL_XATTRS = ('trusted.SGI_ACL_FILE', 'trusted.SGI_ACL_DEFAULT')


def _xattr_wanted(name, privileged):
    """The xattrs rsync -X/-A copies: ACLs and user.* always, trusted.* and security.* as root."""
    if name in FS_INTERNAL_XATTRS:
        return False
    if name in ACL_XATTRS or name.startswith('user.'):
        return True
    return privileged and name.startswith(('trusted.', 'security.'))


def read_xattrs(path, privileged=None):
    """The extended attributes of ``path`` (not following a symlink) that a copy must keep."""
    if privileged is None:
        privileged = os.geteuid() == 0
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM):
            return {}
        raise
    values = {}
    for name in sorted(names):
        if not _xattr_wanted(name, privileged):
            continue
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise
    return values


def _open_for_reading(path):
    flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC
    try:
        return os.open(path, flags | _O_NOATIME)
    except OSError as exc:
        # O_NOATIME needs the file's owner or CAP_FOWNER.
        if exc.errno != errno.EPERM or not _O_NOATIME:
            raise
    return os.open(path, flags)


def _advise(fd, advice):
    if hasattr(os, 'posix_fadvise'):
        try:
            os.posix_fadvise(fd, 0, 0, advice)
        except OSError:
            pass


class Walker(object):
    """Walks one tree depth first in sorted order and yields manifest entries.

    ``ignore``: names skipped at any depth. ``algorithm``: content hash (None: no content hash).
    ``drop_cache``: tell the kernel to drop the cached pages of each file before reading it, so
    the hash reads what is on the disk, not what the copy left in memory. ``skip_times``: types
    (``directory``, ``symlink``) whose modification time is not recorded. ``cancelled``: an
    Event that stops the walk.
    """

    def __init__(self, root, ignore=(), algorithm=None, drop_cache=False, skip_times=(), cancelled=None,
                 privileged=None):
        self.root = os.fsencode(root)
        self.ignore = frozenset(os.fsencode(name) for name in ignore or ())
        self.algorithm = algorithm
        self.drop_cache = drop_cache
        self.skip_times = frozenset(skip_times or ())
        self.cancelled = cancelled
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self.digest = hashlib.sha256()
        self.bytes_hashed = 0
        self.counts = {'entries': 0, 'files': 0, 'bytes': 0, 'directories': 0, 'symlinks': 0, 'other': 0}
        self._links = {}
        self._buffer = bytearray(CHUNK)

    def _check_cancelled(self):
        if self.cancelled is not None and self.cancelled.is_set():
            raise Cancelled('cancelled')

    def hash_file(self, path):
        """The content hash of the regular file ``path``."""
        hasher = new_hasher(self.algorithm)
        fd = _open_for_reading(path)
        try:
            if self.drop_cache and hasattr(os, 'POSIX_FADV_DONTNEED'):
                _advise(fd, os.POSIX_FADV_DONTNEED)
            if hasattr(os, 'POSIX_FADV_SEQUENTIAL'):
                _advise(fd, os.POSIX_FADV_SEQUENTIAL)
            view = memoryview(self._buffer)
            with os.fdopen(os.dup(fd), 'rb', buffering=0) as handle:
                while True:
                    count = handle.readinto(self._buffer)
                    if not count:
                        break
                    hasher.update(view[:count])
                    self.bytes_hashed += count
                    self._check_cancelled()
            if hasattr(os, 'POSIX_FADV_DONTNEED'):
                # Leave the page cache to the users of the data node.
                _advise(fd, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return hasher.hexdigest()

    def describe(self, rel, full, st):
        """The manifest entry of one path (``rel`` relative, ``full`` absolute, ``st`` its lstat)."""
        kind = _file_type(st.st_mode)
        entry = {'path': rel, 'type': kind, 'mode': stat.S_IMODE(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid}
        if kind not in self.skip_times:
            entry['mtime_ns'] = st.st_mtime_ns
        try:
            xattrs = read_xattrs(full, self.privileged)
            if xattrs:
                entry['xattrs'] = xattrs
            if kind == 'symlink':
                entry['target'] = os.readlink(full)
            elif kind in ('char_device', 'block_device'):
                entry['rdev'] = st.st_rdev
            if kind != 'directory' and st.st_nlink > 1:
                inode = (st.st_dev, st.st_ino)
                first = self._links.get(inode)
                if first is None:
                    self._links[inode] = (rel, None)
                else:
                    entry['link'] = first[0]
                    if first[1] is not None:
                        entry['hash'] = first[1]
            if kind == 'file':
                entry['size'] = st.st_size
                if self.algorithm is not None and 'hash' not in entry:
                    entry['hash'] = self.hash_file(full)
                    if st.st_nlink > 1:
                        self._links[(st.st_dev, st.st_ino)] = (rel, entry['hash'])
        except OSError as exc:
            entry['error'] = '%s: %s' % (errno.errorcode.get(exc.errno, 'error'), exc.strerror)
        self._count(entry)
        return entry

    def _count(self, entry):
        kind = entry['type']
        self.counts['entries'] += 1
        if kind == 'file':
            self.counts['files'] += 1
            self.counts['bytes'] += entry.get('size', 0)
        elif kind == 'directory':
            self.counts['directories'] += 1
        elif kind == 'symlink':
            self.counts['symlinks'] += 1
        else:
            self.counts['other'] += 1
        self.digest.update(digest_line(entry))

    def _children(self, rel, full):
        try:
            names = [name for name in os.listdir(full) if name not in self.ignore]
        except OSError as exc:
            return [], '%s: %s' % (errno.errorcode.get(exc.errno, 'error'), exc.strerror)
        names.sort()
        return [(name, name if rel == b'.' else rel + b'/' + name) for name in names], None

    def entries(self):
        """Yield ``(key, entry)`` for the root and every path below it, depth first, names sorted."""
        # The root is followed when it is a symlink, as rsync follows "source/".
        root_st = os.stat(self.root)
        root = self.describe(b'.', self.root, root_st)
        if not stat.S_ISDIR(root_st.st_mode):
            root['error'] = 'not a folder'
            yield (), root
            return
        children, error = self._children(b'.', self.root)
        if error:
            root['error'] = error
        yield (), root
        stack = [(iter(children), ())]
        while stack:
            self._check_cancelled()
            iterator, prefix = stack[-1]
            try:
                name, rel = next(iterator)
            except StopIteration:
                stack.pop()
                continue
            full = os.path.join(self.root, rel)
            try:
                st = os.lstat(full)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # vanished since the folder was listed
                raise
            key = prefix + (name,)
            entry = self.describe(rel, full, st)
            if stat.S_ISDIR(st.st_mode):
                children, error = self._children(rel, full)
                if error:
                    entry['error'] = error
                yield key, entry
                stack.append((iter(children), key))
            else:
                yield key, entry

    def hexdigest(self):
        return 'sha256:' + self.digest.hexdigest()


def _jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return sorted([name, _jsonable(item)] for name, item in value.items())
    return value


def digest_line(entry):
    """The canonical bytes of one entry, as fed to the manifest digest."""
    record = dict((name, _jsonable(entry[name])) for name in ATTRIBUTES if name in entry)
    return entry['path'] + b'\0' + json.dumps(record, sort_keys=True, separators=(',', ':')).encode('ascii') + b'\n'


def differing_attributes(source, destination):
    """Names of the attributes in which two entries of the same path differ."""
    names = []
    for name in ATTRIBUTES:
        if name == 'error':
            if 'error' in source or 'error' in destination:
                names.append('error')
            continue
        if source.get(name) != destination.get(name):
            names.append(name)
    return names


_END = object()


class _Failure(object):
    def __init__(self, exc):
        self.exc = exc


def _produce(walker, out):
    try:
        for item in walker.entries():
            out.put(item)
        out.put(_END)
    except BaseException as exc:  # pylint: disable=broad-except
        out.put(_Failure(exc))


def _next(source_queue):
    item = source_queue.get()
    if isinstance(item, _Failure):
        raise item.exc
    return item


class Comparison(object):
    """The result of comparing two trees: capped lists, full counts, digests and totals."""

    def __init__(self, limit=LIST_LIMIT):
        self.limit = limit
        self.differ = []
        self.missing = []
        self.extra = []
        self.repair = []
        self.repair_overflow = False
        self.differ_count = 0
        self.missing_count = 0
        self.extra_count = 0
        self.compared = 0
        self.bytes_compared = 0
        self.source_counts = {}
        self.source_digest = None
        self.destination_digest = None

    def add_differ(self, path, attributes, source=None, destination=None):
        self.differ_count += 1
        if REPAIR_ATTRIBUTES.intersection(attributes) and (destination or {}).get('type') != 'directory':
            if len(self.repair) < REPAIR_LIMIT:
                self.repair.append(path)
            else:
                self.repair_overflow = True
        if len(self.differ) < self.limit:
            item = {'path': render_path(path), 'attributes': attributes}
            for side, entry in (('source_error', source), ('destination_error', destination)):
                if entry is not None and 'error' in entry:
                    item[side] = entry['error']
            self.differ.append(item)

    def add_missing(self, path):
        self.missing_count += 1
        if len(self.missing) < self.limit:
            self.missing.append(render_path(path))

    def add_extra(self, path):
        self.extra_count += 1
        if len(self.extra) < self.limit:
            self.extra.append(render_path(path))

    @property
    def matched(self):
        return not (self.differ_count or self.missing_count or self.extra_count)

    def summary(self, first=3):
        """One sentence naming the counts and the first differing paths."""
        parts = []
        if self.differ_count:
            shown = ', '.join('%s (%s)' % (item['path'], ', '.join(item['attributes'])) for item in self.differ[:first])
            parts.append('%d differ (first: %s)' % (self.differ_count, shown))
        if self.missing_count:
            parts.append('%d missing from the destination (first: %s)'
                         % (self.missing_count, ', '.join(self.missing[:first])))
        if self.extra_count:
            parts.append('%d only in the destination (first: %s)' % (self.extra_count, ', '.join(self.extra[:first])))
        return '; '.join(parts) if parts else 'source and destination match'

    def as_dict(self):
        return {
            'differ': self.differ, 'missing': self.missing, 'extra': self.extra,
            'differ_count': self.differ_count, 'missing_count': self.missing_count,
            'extra_count': self.extra_count, 'source_digest': self.source_digest,
            'destination_digest': self.destination_digest,
        }


def compare_trees(source, destination, ignore=(), algorithm=DEFAULT_ALGORITHM, skip_times=(), limit=LIST_LIMIT,
                  on_progress=None, cancelled=None, privileged=None):
    """Compare the trees ``source`` and ``destination``; return a Comparison.

    The destination's files are read from the disk (cached pages dropped first). ``on_progress``
    is called with the Comparison after each path compared (it should throttle itself).
    """
    cancelled = cancelled if cancelled is not None else threading.Event()
    walkers = (Walker(source, ignore, algorithm, drop_cache=False, skip_times=skip_times, cancelled=cancelled,
                      privileged=privileged),
               Walker(destination, ignore, algorithm, drop_cache=True, skip_times=skip_times, cancelled=cancelled,
                      privileged=privileged))
    queues = (queue.Queue(maxsize=4096), queue.Queue(maxsize=4096))
    threads = [threading.Thread(target=_produce, args=(walker, out), name='manifest-%d' % index)
               for index, (walker, out) in enumerate(zip(walkers, queues))]
    for thread in threads:
        thread.daemon = True
        thread.start()
    result = Comparison(limit)
    finished = False
    try:
        left = _next(queues[0])
        right = _next(queues[1])
        while left is not _END or right is not _END:
            if right is _END or (left is not _END and left[0] < right[0]):
                result.add_missing(left[1]['path'])
                left = _next(queues[0])
            elif left is _END or right[0] < left[0]:
                result.add_extra(right[1]['path'])
                right = _next(queues[1])
            else:
                attributes = differing_attributes(left[1], right[1])
                if attributes:
                    result.add_differ(left[1]['path'], attributes, left[1], right[1])
                result.compared += 1
                result.bytes_compared += left[1].get('size', 0)
                left = _next(queues[0])
                right = _next(queues[1])
            if on_progress is not None:
                on_progress(result)
        finished = True
    finally:
        if not finished:
            # Stop both walkers and unblock them if they wait on a full queue.
            cancelled.set()
            for thread in threads:
                _drain(queues, thread)
    for thread in threads:
        thread.join()
    result.source_counts = dict(walkers[0].counts)
    result.source_digest = walkers[0].hexdigest()
    result.destination_digest = walkers[1].hexdigest()
    return result


def _drain(queues, thread):
    while thread.is_alive():
        for out in queues:
            try:
                out.get_nowait()
            except queue.Empty:
                pass
        thread.join(0.01)


def manifest(root, ignore=(), algorithm=DEFAULT_ALGORITHM, skip_times=(), privileged=None):
    """All entries of one tree as a list (small trees and tests), and its digest."""
    walker = Walker(root, ignore, algorithm, skip_times=skip_times, privileged=privileged)
    entries = [entry for dummy, entry in walker.entries()]
    return entries, walker.hexdigest()
