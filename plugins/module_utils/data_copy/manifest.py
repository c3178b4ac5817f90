# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hash manifests of two trees and their comparison, for the data mover's verification.

A manifest entry describes one path below a root (the root itself is ``.``): its type, mode,
owner, group, size, modification time in nanoseconds, symlink target (never followed), device
number, extended attributes (ACLs included), hard-link structure and, for regular files, a hash
of the content. Both trees are walked in the same order (depth first, names sorted as bytes)
by one process each (threads where processes cannot be forked), and the entries are compared as
they come, so memory does not grow with the size of the tree.

A hash cache (``HashCache``) remembers, per side and path, the hash of a regular file with the
identity it had when it was read: size, modification time and change time to the nanosecond and
inode number. A later walk reuses the hash only when all four are unchanged; any write to a file
(even one that restores its size and modification time) changes its change time, which no
program can set back, so a changed file is always read again.

Paths are bytes throughout: a name that is not UTF-8 is compared exactly and only rendered
(``\\xNN``) for the report. Shipped to the data node with the worker: standard library only
(plus the optional ``xxhash`` and ``blake3`` packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ctypes
import errno
import hashlib
import json
import marshal
import mmap
import multiprocessing
import os
import queue
import stat
import sys
import threading
import time

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileflags import read_carried
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import TreeSeal
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.state import atomic_write, render_path

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
# ``flags``: the immutable and append-only attributes (see fileflags), absent when neither is set.
ATTRIBUTES = ('type', 'mode', 'uid', 'gid', 'size', 'mtime_ns', 'target', 'rdev', 'xattrs', 'link', 'hash',
              'flags', 'error')

_O_NOATIME = getattr(os, 'O_NOATIME', 0)
_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)
_O_DIRECT = getattr(os, 'O_DIRECT', 0)
HASH_CACHE_FORMAT = 'storage.mobility hash cache 2'
SIDES = ('source', 'destination')
# Entries sent at once from a walking process to the comparing one.
BATCH = 256
# Seconds between two looks at the destination files the copy has finished (see prehash).
PREHASH_ROUND = 1.0
PREHASH_FLUSH_BYTES = 64 * 1024 * 1024
DIRECT_ALIGN = 4096


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


def hasher_factory(algorithm):
    """A callable without arguments that returns a new hash object (see new_hasher)."""
    new_hasher(algorithm)  # fails here when the algorithm is not available
    if algorithm == 'xxh128':
        return _xxhash().xxh3_128
    if algorithm == 'blake3':
        return _blake3().blake3
    return getattr(hashlib, algorithm)


_KINDS = dict((stat.S_IFMT(mode), name) for mode, name in (
    (stat.S_IFREG, 'file'), (stat.S_IFDIR, 'directory'), (stat.S_IFLNK, 'symlink'), (stat.S_IFIFO, 'fifo'),
    (stat.S_IFSOCK, 'socket'), (stat.S_IFCHR, 'char_device'), (stat.S_IFBLK, 'block_device')))


# Filesystem-internal mirrors of what is compared already: XFS shows its on-disk copy of the
# POSIX ACLs to root as trusted.SGI_ACL_*, so an ext4 -> xfs copy would otherwise "differ".
FS_INTERNAL_XATTRS = ('trusted.SGI_ACL_FILE', 'trusted.SGI_ACL_DEFAULT')


def xattr_wanted(name, privileged):
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
    if not names:
        return values
    for name in sorted(names):
        if not xattr_wanted(name, privileged):
            continue
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise
    return values


def open_for_reading(path, extra=0):
    # O_NONBLOCK: a path that became a FIFO since it was looked at must not block the open (it has
    # no effect on regular files).
    flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK | extra
    try:
        return os.open(path, flags | _O_NOATIME)
    except OSError as exc:
        # O_NOATIME needs the file's owner or CAP_FOWNER.
        if exc.errno != errno.EPERM or not _O_NOATIME:
            raise
    return os.open(path, flags)


def advise(fd, advice):
    if hasattr(os, 'posix_fadvise'):
        try:
            os.posix_fadvise(fd, 0, 0, advice)
        except OSError:
            pass


def identity(st):
    """What must not change for a cached hash to stay true: size, mtime and ctime (ns), inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashCache(object):
    """Hashes of regular files by side and path, each with the identity it had when it was read.

    ``sides['source']`` and ``sides['destination']`` map a path (bytes, relative) to
    ``(identity, hash)``. Stored as a JSON header line (format and algorithm) followed by the two
    maps in Python's ``marshal`` format (a few times faster to write and read than text for
    hundreds of thousands of files). The file lives in the job's state folder, which only its
    owner can write, as it does the worker that runs there.
    """

    def __init__(self, algorithm, sides=None):
        self.algorithm = algorithm
        self.sides = sides or dict((side, {}) for side in SIDES)

    def __len__(self):
        return sum(len(entries) for entries in self.sides.values())

    def save(self, path):
        payload = marshal.dumps(tuple(self.sides[side] for side in SIDES))
        header = json.dumps({'format': HASH_CACHE_FORMAT, 'algorithm': self.algorithm, 'bytes': len(payload)})
        atomic_write(path, header.encode('ascii') + b'\n' + payload)

    @classmethod
    def load(cls, path, algorithm):
        """The cache stored in ``path``, or None when it is missing, unreadable, of another format or
        of another algorithm."""
        try:
            with open(path, 'rb') as handle:
                header = json.loads(handle.readline().decode('utf-8'))
                if header.get('format') != HASH_CACHE_FORMAT or header.get('algorithm') != algorithm:
                    return None
                payload = handle.read()
            if len(payload) != header.get('bytes'):
                return None
            maps = marshal.loads(payload)
            if maps.__class__ is not tuple or len(maps) != len(SIDES):
                return None
            for entries in maps:
                if entries.__class__ is not dict or not all(_cache_record(rel, record)
                                                            for rel, record in entries.items()):
                    return None
        except (IOError, OSError, ValueError, EOFError, TypeError, AttributeError, UnicodeDecodeError):
            return None
        return cls(algorithm, dict(zip(SIDES, maps)))


def _cache_record(rel, record):
    """Whether one item of a loaded hash cache has the shape the walks expect."""
    return (rel.__class__ is bytes and record.__class__ is tuple and len(record) == 2
            and record[0].__class__ is tuple and len(record[0]) == 4 and record[1].__class__ is str)


class _NoDirectIO(Exception):
    """The filesystem refuses O_DIRECT reads."""


class Walker(object):
    """Walks one tree depth first in sorted order and yields manifest entries.

    ``ignore``: names skipped at any depth. ``algorithm``: content hash (None: no content hash).
    ``drop_cache``: read each file from the disk, not from what the copy left in memory: with
    direct I/O (``O_DIRECT``, which also writes back the file's dirty pages first) where the
    filesystem allows it, else after telling the kernel to drop the file's cached pages.
    ``skip_times``: types (``directory``, ``symlink``) whose modification time is not recorded.
    ``cancelled``: an Event that stops the walk. ``cache``: path -> ``(identity, hash)`` of an
    earlier walk (see HashCache); ``recorded`` collects the same for this walk.
    """

    def __init__(self, root, ignore=(), algorithm=None, drop_cache=False, skip_times=(), cancelled=None,
                 privileged=None, cache=None):
        self.root = os.fsencode(root)
        self.ignore = frozenset(os.fsencode(name) for name in ignore or ())
        self.algorithm = algorithm
        self.drop_cache = drop_cache
        self.skip_times = frozenset(skip_times or ())
        self.cancelled = cancelled
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self.digest = hashlib.sha256()
        # The seal of the tree as this walk saw it (see seal.py): every entry's lstat, taken before
        # the entry was read.
        self.seal = TreeSeal()
        self._lines = []
        self._prefix = os.path.join(self.root, b'')
        self.bytes_hashed = 0
        self.counts = {'entries': 0, 'files': 0, 'bytes': 0, 'directories': 0, 'symlinks': 0, 'other': 0}
        self._links = {}
        self._local = threading.local()
        self._direct = drop_cache and bool(_O_DIRECT)
        self.cache = cache or {}
        self.recorded = {}
        self.files_hashed = 0
        self.files_reused = 0
        self.bytes_reused = 0
        self.keep_cache = False

    def _check_cancelled(self):
        if self.cancelled is not None and self.cancelled.is_set():
            raise Cancelled('cancelled')

    def read_and_hash(self, path, size=None):
        """``(hash, identity after reading)`` of the regular file ``path``; ``size``, its size when
        it was looked at, only sizes the reads (the file is read to its end)."""
        if self._direct:
            try:
                return self._hash_direct(path, size=size)
            except _NoDirectIO:
                self._direct = False  # this filesystem has no direct I/O: drop the cached pages instead
        hasher = new_hasher(self.algorithm)
        fd = open_for_reading(path)
        try:
            if self.drop_cache and hasattr(os, 'POSIX_FADV_DONTNEED'):
                advise(fd, os.POSIX_FADV_DONTNEED)
            buffer = getattr(self._local, 'buffer', None)
            if buffer is None:
                buffer = self._local.buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while True:
                count = os.readv(fd, [buffer])
                if not count:
                    break
                hasher.update(view[:count])
                self._check_cancelled()
            after = identity(os.fstat(fd))
            if hasattr(os, 'POSIX_FADV_DONTNEED') and not self.keep_cache:
                # Leave the page cache to the users of the data node.
                advise(fd, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return hasher.hexdigest(), after

    def read_identified(self, path):
        """``(identity before, hash, identity after)`` of the regular file ``path``; with direct I/O
        the identity before is the opened file's, and the read stops at its size (no extra read to
        find the end)."""
        if self._direct:
            try:
                return self._hash_direct(path, identify=True)
            except _NoDirectIO:
                self._direct = False
        before = identity(os.lstat(path))
        digest, after = self.read_and_hash(path)
        return before, digest, after

    def _hash_direct(self, path, identify=False, size=None):
        try:
            fd = open_for_reading(path, _O_DIRECT)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise _NoDirectIO()
            raise
        try:
            before = None
            if identify:
                before = identity(os.fstat(fd))
                size = before[0]
            buffer = getattr(self._local, 'direct_buffer', None)
            if buffer is None:
                # Anonymous memory is page aligned, as direct I/O wants.
                buffer = self._local.direct_buffer = mmap.mmap(-1, CHUNK)
            hasher = new_hasher(self.algorithm)
            offset = 0
            with memoryview(buffer) as view:
                while not identify or offset < size:
                    # A read past the end costs the kernel a zero fill of the rest of the buffer
                    # (XFS fills a whole 1 MiB for a 4 KiB file): read what the size says, rounded up
                    # to the alignment direct I/O wants.
                    length = CHUNK
                    if size is not None:
                        length = min(CHUNK, max(DIRECT_ALIGN, -(-(size - offset) // DIRECT_ALIGN) * DIRECT_ALIGN))
                    try:
                        count = os.preadv(fd, [view[:length]], offset)
                    except OSError as exc:
                        if exc.errno == errno.EINVAL and offset == 0:
                            raise _NoDirectIO()
                        raise
                    if not count:
                        break
                    hasher.update(view[:count])
                    offset += count
                    self._check_cancelled()
            after = identity(os.fstat(fd))
        finally:
            os.close(fd)
        if identify:
            return before, hasher.hexdigest(), after
        return hasher.hexdigest(), after

    def describe(self, rel, full, st):
        """The manifest entry of one path (``rel`` relative, ``full`` absolute, ``st`` its lstat)."""
        return entry_from_values(rel, self.values(rel, full, st))

    def values(self, rel, full, st):
        """The values of one path (see entry_from_values), counted and added to the digest."""
        self.seal.add(rel, st)
        mode = st.st_mode
        kind = _KINDS.get(stat.S_IFMT(mode), 'unknown')
        mtime = None if kind in self.skip_times else st.st_mtime_ns
        target = rdev = xattrs = link = size = digest = error = None
        try:
            found = read_xattrs(full, self.privileged)
            if found:
                xattrs = tuple(sorted(found.items()))
            if kind == 'symlink':
                target = os.readlink(full)
            elif kind in ('char_device', 'block_device'):
                rdev = st.st_rdev
            if kind != 'directory' and st.st_nlink > 1:
                inode = (st.st_dev, st.st_ino)
                first = self._links.get(inode)
                if first is None:
                    self._links[inode] = (rel, None)
                else:
                    link = first[0]
                    if first[1] is not None:
                        digest = first[1]
                        recorded = self.recorded.get(link)
                        if kind == 'file' and recorded is not None and recorded[0] == identity(st):
                            # The same inode, unchanged: a later walk (or the prehash) need not read
                            # this path either.
                            self.recorded[rel] = recorded
            if kind == 'file':
                size = st.st_size
                if self.algorithm is not None and digest is None:
                    before = (size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    cached = self.cache.get(rel)
                    if cached is not None and cached[0] == before:
                        digest = cached[1]
                        self.files_reused += 1
                        self.bytes_reused += size
                        self.recorded[rel] = cached
                    else:
                        digest, after = self.read_and_hash(full, size)
                        self._hashed(rel, size, before, digest, after)
                    if st.st_nlink > 1:
                        self._links[(st.st_dev, st.st_ino)] = (rel, digest)
        except OSError as exc:
            error = '%s: %s' % (errno.errorcode.get(exc.errno, 'error'), exc.strerror)
        flags = read_carried(full, st) or None
        values = (kind, stat.S_IMODE(mode), st.st_uid, st.st_gid, size, mtime, target, rdev, xattrs, link, digest,
                  flags, error)
        self._count(rel, kind, size, values)
        return values

    def _hashed(self, rel, size, before, digest, after):
        self.files_hashed += 1
        self.bytes_hashed += size
        if after == before:
            # Unchanged while it was read: a later walk may trust this hash.
            self.recorded[rel] = (before, digest)

    def _count(self, rel, kind, size, values):
        counts = self.counts
        counts['entries'] += 1
        if kind == 'file':
            counts['files'] += 1
            counts['bytes'] += size or 0
        elif kind == 'directory':
            counts['directories'] += 1
        elif kind == 'symlink':
            counts['symlinks'] += 1
        else:
            counts['other'] += 1
        # The digest of the concatenation, fed in blocks: the same digest, fewer calls.
        lines = self._lines
        lines.append(rel + b'\0' + repr(values).encode('utf-8', 'backslashreplace') + b'\n')
        if len(lines) >= BATCH:
            self.digest.update(b''.join(lines))
            del lines[:]

    def _children(self, rel, full):
        try:
            names = [name for name in os.listdir(full) if name not in self.ignore]
        except OSError as exc:
            return [], '%s: %s' % (errno.errorcode.get(exc.errno, 'error'), exc.strerror)
        names.sort()
        return [name if rel == b'.' else rel + b'/' + name for name in names], None

    def walk(self):
        """Yield ``(path, values, error)`` for the root (path ``.``) and every path below it,
        depth first, names sorted as bytes; ``error`` (else None) says that a folder could not be
        listed (it is not part of the values, which were counted before the listing)."""
        # The root is followed when it is a symlink, as rsync follows "source/".
        root_st = os.stat(self.root)
        if not stat.S_ISDIR(root_st.st_mode):
            yield b'.', self.values(b'.', self.root, root_st), 'not a folder'
            return
        root = self.values(b'.', self.root, root_st)
        children, error = self._children(b'.', self.root)
        yield b'.', root, error
        stack = [iter(children)]
        prefix = self._prefix
        values = self.values
        lstat = os.lstat
        cancelled = self.cancelled
        while stack:
            for rel in stack[-1]:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled('cancelled')
                full = prefix + rel
                try:
                    st = lstat(full)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        continue  # vanished since the folder was listed
                    raise
                if stat.S_ISDIR(st.st_mode):
                    found = values(rel, full, st)
                    children, error = self._children(rel, full)
                    yield rel, found, error
                    stack.append(iter(children))
                    break
                yield rel, values(rel, full, st), None
            else:
                stack.pop()

    def entries(self):
        """Yield the manifest entry (a dict) of every path, in the order of walk."""
        for rel, values, error in self.walk():
            entry = entry_from_values(rel, values)
            if error is not None:
                entry['error'] = error
            yield entry

    def hexdigest(self):
        if self._lines:
            self.digest.update(b''.join(self._lines))
            del self._lines[:]
        return 'sha256:' + self.digest.hexdigest()

    def summary(self):
        """What the comparing side needs once the walk has ended."""
        return {'counts': dict(self.counts), 'digest': self.hexdigest(), 'seal': self.seal.hexdigest(),
                'recorded': self.recorded,
                'files_hashed': self.files_hashed, 'files_reused': self.files_reused,
                'bytes_hashed': self.bytes_hashed, 'bytes_reused': self.bytes_reused}


def entry_from_values(path, values):
    """The entry (dict) of ``path`` from its values: a tuple of the ATTRIBUTES in their order, None
    where absent (xattrs as sorted ``(name, value)`` pairs). The values are what a walking process
    sends and what the manifest digest holds: a line per entry, the path, a NUL byte, the ``repr``
    of the values and a newline."""
    entry = {'path': path}
    for name, value in zip(ATTRIBUTES, values):
        if value is not None:
            entry[name] = dict(value) if name == 'xattrs' else value
    return entry


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


def _as_entry(item):
    """The entry (a dict) of an item of a walk: ``(path, values)``, or ``(path, values, error)`` for
    a folder that could not be listed."""
    entry = entry_from_values(item[0], item[1])
    if len(item) > 2:
        entry['error'] = item[2]
    return entry


def _sort_key(path):
    """The walk's order as bytes: the root first, then the names of each level compared in turn
    (a NUL byte, which no name holds, stands for each slash)."""
    return b'' if path == b'.' else path.replace(b'/', b'\0')


class _Failure(object):
    def __init__(self, exc):
        self.exc = exc


def _produce(walker, out):
    try:
        batch = []
        for path, values, error in walker.walk():
            batch.append((path, values) if error is None else (path, values, error))
            if len(batch) >= BATCH:
                out.put(batch)
                batch = []
        if batch:
            out.put(batch)
        out.put(_END)
    except BaseException as exc:  # pylint: disable=broad-except
        out.put(_Failure(exc))


class _Reader(object):
    """The entries of one side, taken from a queue of batches."""

    def __init__(self, source_queue):
        self.queue = source_queue
        self.batch = []
        self.index = 0

    def next(self):
        if self.index >= len(self.batch):
            item = self.queue.get()
            if isinstance(item, _Failure):
                raise item.exc
            if item is _END:
                return _END
            self.batch = item
            self.index = 0
        self.index += 1
        return self.batch[self.index - 1]


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
        # The seals of both trees as the walks saw them, before each entry was read (see seal.py).
        self.source_seal = None
        self.destination_seal = None
        self.cache = None
        self.files_hashed = 0
        self.files_reused = 0
        self.bytes_hashed = 0
        self.bytes_reused = 0

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


def _walk_in_process(walker, conn, parent=None, inherited=()):
    """In a forked process: send the walk's items in batches, then its summary. An item is
    ``(path, values)``, or ``(path, values, error)`` for a folder that could not be listed (cheaper
    to send and to compare than a dict). ``inherited``: the reading ends this process must not hold
    (see lifeline): holding its own, it would wait forever on a full pipe once the reader died."""
    lifeline.child_start(parent, inherited)
    try:
        batch = []
        for path, values, error in walker.walk():
            batch.append((path, values) if error is None else (path, values, error))
            if len(batch) >= BATCH:
                conn.send(batch)
                batch = []
        if batch:
            conn.send(batch)
        conn.send(('end', walker.summary()))
    except BaseException as exc:  # pylint: disable=broad-except
        try:
            conn.send(('failed', exc if isinstance(exc, Cancelled) else RuntimeError('%s: %s' % (type(exc).__name__,
                                                                                                 exc))))
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        conn.close()


def _relay(conn, out, summaries, index):
    """In a thread of the comparing process: move one walking process's entries into a queue."""
    try:
        while True:
            message = conn.recv()
            if isinstance(message, list):
                out.put(message)
                continue
            if message[0] == 'end':
                summaries[index] = message[1]
                out.put(_END)
            else:
                out.put(_Failure(message[1]))
            return
    except BaseException as exc:  # pylint: disable=broad-except
        out.put(_Failure(RuntimeError('the walking process stopped: %s: %s' % (type(exc).__name__, exc))))


def _produce_summary(walker, out, summaries, index):
    _produce(walker, out)
    summaries[index] = walker.summary()


def fork_context():
    """The multiprocessing context that forks, or None where there is none."""
    try:
        return multiprocessing.get_context('fork')
    except ValueError:
        return None


def sync_filesystem(path):
    """Flush the filesystem holding ``path`` to disk (syncfs), or every filesystem (sync)."""
    fd = None
    try:
        fd = os.open(path, os.O_RDONLY)
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = getattr(libc, 'syncfs', None)
        if syncfs is not None and syncfs(fd) == 0:
            return 'syncfs'
    except (OSError, AttributeError):
        pass
    finally:
        if fd is not None:
            os.close(fd)
    os.sync()
    return 'sync'


class _Prehash(object):
    """The state of one prehash process (see prehash)."""

    def __init__(self, source, destination, ignore, algorithm, caches, conn):
        self.source = Walker(source, ignore, algorithm, drop_cache=False, cache=caches.get('source'))
        self.source.keep_cache = True
        self.destination = None
        if destination is not None:
            self.destination = Walker(destination, ignore, algorithm, drop_cache=True,
                                      cache=caches.get('destination'))
        self.conn = conn
        self.batch = []
        self.batch_bytes = 0
        self.pending = []
        self.last_round = self.last_flush = time.monotonic()

    def send(self, side, rel, record):
        self.batch.append((side, rel, record))
        self.batch_bytes += record[0][0]
        # Send often enough that little is lost when the process is stopped at the end of the copy.
        if len(self.batch) >= BATCH or self.batch_bytes >= PREHASH_FLUSH_BYTES or (
                time.monotonic() - self.last_flush >= PREHASH_ROUND):
            self.flush()

    def flush(self):
        if self.batch:
            self.conn.send(self.batch)
            self.batch = []
        self.batch_bytes = 0
        self.last_flush = time.monotonic()

    def hash_source(self, rel, full, st):
        before = identity(st)
        cached = self.source.cache.get(rel)
        if cached is None or cached[0] != before:
            try:
                digest, after = self.source.read_and_hash(full)
            except OSError:
                return
            if after != before:
                return
            self.send('source', rel, (before, digest))
        if self.destination is not None:
            self.pending.append((rel, st.st_size, st.st_mtime_ns))

    def destination_round(self):
        """Hash the destination files the copy has finished (same size and modification time as the
        source's); after one flush of the destination filesystem, from the disk."""
        self.last_round = time.monotonic()
        waiting, ready = [], []
        walker = self.destination
        for item in self.pending:
            rel = item[0]
            full = os.path.join(walker.root, rel)
            try:
                st = os.lstat(full)
            except OSError:
                waiting.append(item)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != item[1] or st.st_mtime_ns != item[2]:
                waiting.append(item)
                continue
            before = identity(st)
            cached = walker.cache.get(rel)
            if cached is None or cached[0] != before:
                ready.append((rel, full, before))
        self.pending = waiting
        if ready:
            sync_filesystem(walker.root)
            for rel, full, before in ready:
                try:
                    digest, after = walker.read_and_hash(full)
                except OSError:
                    continue
                if after == before:
                    self.send('destination', rel, (before, digest))
            self.flush()
        return len(ready)

    def run(self):
        root = self.source.root
        ignored = self.source.ignore
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                names = sorted(name for name in os.listdir(folder) if name not in ignored)
            except OSError:
                continue
            folders = []
            for name in names:
                full = os.path.join(folder, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    folders.append(full)
                elif stat.S_ISREG(st.st_mode):
                    self.hash_source(full[len(root) + 1:], full, st)
            stack.extend(reversed(folders))
            if self.pending and time.monotonic() - self.last_round >= PREHASH_ROUND:
                self.destination_round()
        self.flush()
        while self.pending:
            if not self.destination_round():
                time.sleep(PREHASH_ROUND / 4)
        self.conn.send(('end',))


def prehash(source, ignore, algorithm, caches, conn, destination=None, parent=None, inherited=()):
    """In a forked process while the copy runs: read and hash what can be read already.

    Reads the regular files of ``source`` in the walk's order, keeping the page cache (the copy
    may still need the pages). With ``destination``: about once a second, the destination files
    that the copy has finished (same size and modification time as the source file) are read
    from the disk (flush of the filesystem, then direct I/O or dropped pages) and hashed; files
    that are not finished yet are looked at again in the next round. Files whose identity matches
    ``caches`` (side -> path -> (identity, hash)) are not read. Sends ``[(side, path, (identity,
    hash))]`` batches on ``conn``, then ``('end',)``. The verification reuses these hashes where the
    files have not changed since (see HashCache), so it reads only the rest.
    ``parent`` and ``inherited``: see lifeline (this process dies with the worker and does not hold
    the reading end of its own pipe).
    """
    lifeline.child_start(parent, inherited)
    try:
        _Prehash(source, destination, ignore, algorithm, caches, conn).run()
    except (IOError, OSError, EOFError):
        pass  # the worker stopped listening: the copy has ended
    except Exception as exc:  # pylint: disable=broad-except
        # A cancel (SIGTERM) or anything else: the verification reads whatever was not hashed here.
        sys.stderr.write('the hashing during the copy stopped: %s: %s\n' % (type(exc).__name__, exc))
    finally:
        conn.close()


def compare_trees(source, destination, ignore=(), algorithm=DEFAULT_ALGORITHM, skip_times=(), limit=LIST_LIMIT,
                  on_progress=None, cancelled=None, privileged=None, cache=None, processes=True):
    """Compare the trees ``source`` and ``destination``; return a Comparison.

    The destination's files are read from the disk (direct I/O, or cached pages dropped first).
    ``on_progress`` is called with the Comparison after each path compared (it should throttle
    itself). ``cache``: a HashCache of an earlier walk (same algorithm) whose hashes are reused for
    files whose identity did not change; the Comparison's ``cache`` is the one of this walk.
    ``processes``: walk each tree in its own forked process (two CPUs, no shared interpreter
    lock); otherwise, or where fork is not available, in two threads.
    """
    cancelled = cancelled if cancelled is not None else threading.Event()
    sides = cache.sides if cache is not None and cache.algorithm == algorithm else {}
    walkers = (Walker(source, ignore, algorithm, drop_cache=False, skip_times=skip_times, cancelled=cancelled,
                      privileged=privileged, cache=sides.get('source')),
               Walker(destination, ignore, algorithm, drop_cache=True, skip_times=skip_times, cancelled=cancelled,
                      privileged=privileged, cache=sides.get('destination')))
    queues = (queue.Queue(maxsize=64), queue.Queue(maxsize=64))
    summaries = [None, None]
    context = fork_context() if processes else None
    children = []
    if context is not None:
        parent = os.getpid()
        for walker in walkers:
            receiving, sending = context.Pipe(duplex=False)
            inherited = [item[1] for item in children] + [receiving]
            child = context.Process(target=_walk_in_process, args=(walker, sending, parent, inherited),
                                    name='manifest-walk')
            child.daemon = True
            child.start()
            sending.close()
            children.append((child, receiving))
        threads = [threading.Thread(target=_relay, args=(receiving, out, summaries, index), name='manifest-%d' % index)
                   for index, ((dummy, receiving), out) in enumerate(zip(children, queues))]
    else:
        threads = [threading.Thread(target=_produce_summary, args=(walker, out, summaries, index),
                                    name='manifest-%d' % index)
                   for index, (walker, out) in enumerate(zip(walkers, queues))]
    for thread in threads:
        thread.daemon = True
        thread.start()
    result = Comparison(limit)
    finished = False
    try:
        readers = (_Reader(queues[0]), _Reader(queues[1]))
        left = readers[0].next()
        right = readers[1].next()
        while left is not _END or right is not _END:
            if left is not _END and right is not _END and left[0] == right[0]:
                # Equal values without an error (almost all of them) need no closer look.
                if left[1] != right[1] or left[1][11] is not None or len(left) > 2 or len(right) > 2:
                    one, other = _as_entry(left), _as_entry(right)
                    attributes = differing_attributes(one, other)
                    if attributes:
                        result.add_differ(one['path'], attributes, one, other)
                size = left[1][4] or 0
                result.compared += 1
                result.bytes_compared += size
                left = readers[0].next()
                right = readers[1].next()
            elif right is _END or (left is not _END and _sort_key(left[0]) < _sort_key(right[0])):
                result.add_missing(left[0])
                left = readers[0].next()
            else:
                result.add_extra(right[0])
                right = readers[1].next()
            if on_progress is not None:
                on_progress(result)
        finished = True
    finally:
        if not finished:
            # Stop both walkers and unblock them if they wait on a full queue.
            cancelled.set()
            for child, dummy in children:
                if child.is_alive():
                    child.kill()
            for thread in threads:
                _drain(queues, thread)
        for child, receiving in children:
            child.join()
            receiving.close()
    for thread in threads:
        thread.join()
    result.source_counts = dict(summaries[0]['counts'])
    result.source_digest = summaries[0]['digest']
    result.destination_digest = summaries[1]['digest']
    result.source_seal = summaries[0]['seal']
    result.destination_seal = summaries[1]['seal']
    result.cache = HashCache(algorithm, {'source': summaries[0]['recorded'], 'destination': summaries[1]['recorded']})
    for key in ('files_hashed', 'files_reused', 'bytes_hashed', 'bytes_reused'):
        setattr(result, key, summaries[0][key] + summaries[1][key])
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
    entries = list(walker.entries())
    return entries, walker.hexdigest()
