# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Walking one tree: its manifest entries in a fixed order, counted, digested and sealed.

Depth first, names sorted as bytes, the root (``.``) first and followed when it is a symlink (as
rsync follows ``source/``), nothing below it followed. Each entry's ``lstat`` goes into the tree's
seal (seal.py) before the entry is read; regular files are hashed (fileread.py) unless a hash cache
of an earlier walk (hashcache.py) says they did not change.

Shipped to the data node with the worker: standard library only (plus the optional hash packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import os
import stat

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileflags import read_carried
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileread import Cancelled, FileHasher, identity
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.hashcache import SideWriter
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.hashing import DEFAULT_ALGORITHM
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.manifest import entry_from_values
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import TreeSeal
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.xattrs import read_xattrs

# Entries sent at once from a walking process to the comparing one.
BATCH = 256


_KINDS = dict((stat.S_IFMT(mode), name) for mode, name in (
    (stat.S_IFREG, 'file'), (stat.S_IFDIR, 'directory'), (stat.S_IFLNK, 'symlink'), (stat.S_IFIFO, 'fifo'),
    (stat.S_IFSOCK, 'socket'), (stat.S_IFCHR, 'char_device'), (stat.S_IFBLK, 'block_device')))


class Walker(FileHasher):
    """Walks one tree depth first in sorted order and yields manifest entries.

    ``ignore``: names skipped at any depth. ``algorithm``: content hash (None: no content hash).
    ``drop_cache``: read each file from the disk (see FileHasher, which reads the files).
    ``skip_times``: types (``directory``, ``symlink``) whose modification time is not recorded.
    ``cancelled``: an Event that stops the walk. ``cache``: what ``get(path)`` gives the
    ``(identity, hash)`` of an earlier walk (see HashCache: a map, or a SideLookup of a side file).
    This walk's records go to the side file ``record_to`` (of side ``side``; fsync'd at the end
    unless ``durable_records`` is false) as the walk goes, or, without it, into the map ``recorded``.
    """

    def __init__(self, root, ignore=(), algorithm=None, drop_cache=False, skip_times=(), cancelled=None,
                 privileged=None, cache=None, record_to=None, side=None, durable_records=True):
        super(Walker, self).__init__(algorithm, drop_cache, cancelled)
        self.root = os.fsencode(root)
        self.ignore = frozenset(os.fsencode(name) for name in ignore or ())
        self.skip_times = frozenset(skip_times or ())
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
        self.cache = cache if cache is not None else {}
        self.recorded = {}
        self.record_to = record_to
        self.side = side
        self.durable_records = durable_records
        self._writer = None
        self.files_hashed = 0
        self.files_reused = 0
        self.bytes_reused = 0

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
                    self._links[inode] = (rel, None, None)
                else:
                    link = first[0]
                    if first[1] is not None:
                        digest = first[1]
                        recorded = first[2]
                        if kind == 'file' and recorded is not None and recorded[0] == identity(st):
                            # The same inode, unchanged: a later walk (or the prehash) need not read
                            # this path either.
                            self._record(rel, recorded)
            if kind == 'file':
                size = st.st_size
                if self.algorithm is not None and digest is None:
                    before = (size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    cached = self.cache.get(rel)
                    if cached is not None and cached[0] == before:
                        digest = cached[1]
                        self.files_reused += 1
                        self.bytes_reused += size
                        recorded = self._record(rel, cached)
                    else:
                        digest, after = self.read_and_hash(full, size)
                        recorded = self._hashed(rel, size, before, digest, after)
                    if st.st_nlink > 1:
                        self._links[(st.st_dev, st.st_ino)] = (rel, digest, recorded)
        except OSError as exc:
            error = '%s: %s' % (errno.errorcode.get(exc.errno, 'error'), exc.strerror)
        flags = read_carried(full, st) or None
        values = (kind, stat.S_IMODE(mode), st.st_uid, st.st_gid, size, mtime, target, rdev, xattrs, link, digest,
                  flags, error)
        self._count(rel, kind, size, values)
        return values

    def _hashed(self, rel, size, before, digest, after):
        """Count a file read; record its hash when it did not change while it was read (a later
        walk may trust it then); the record, or None."""
        self.files_hashed += 1
        self.bytes_hashed += size
        if after == before:
            return self._record(rel, (before, digest))
        return None

    def _record(self, rel, record):
        """Keep ``(identity, hash)`` of ``rel`` for a later walk: in the side file, or the map."""
        if self._writer is not None:
            self._writer.add(rel, record)
        else:
            self.recorded[rel] = record
        return record

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
        listed (it is not part of the values, which were counted before the listing). With
        ``record_to``, the side file is complete when the walk ends, and removed when it stops
        before."""
        if self.record_to is not None:
            self._writer = SideWriter(self.record_to, self.algorithm, self.side, self.durable_records)
        finished = False
        try:
            yield from self._walk()
            finished = True
        finally:
            writer, self._writer = self._writer, None
            if writer is not None:
                if finished:
                    writer.close()
                else:
                    writer.abandon()

    def _walk(self):
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
                'files_hashed': self.files_hashed, 'files_reused': self.files_reused,
                'bytes_hashed': self.bytes_hashed, 'bytes_reused': self.bytes_reused}


def batches(walker):
    """The items of ``walker``'s walk in lists of BATCH: ``(path, values)``, or ``(path, values,
    error)`` for a folder that could not be listed (cheaper to send and to compare than a dict)."""
    batch = []
    for path, values, error in walker.walk():
        batch.append((path, values) if error is None else (path, values, error))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def manifest(root, ignore=(), algorithm=DEFAULT_ALGORITHM, skip_times=(), privileged=None):
    """All entries of one tree as a list (small trees and tests), and its digest."""
    walker = Walker(root, ignore, algorithm, skip_times=skip_times, privileged=privileged)
    entries = list(walker.entries())
    return entries, walker.hexdigest()
