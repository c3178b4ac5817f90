# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a file's content for its hash, from the disk rather than from memory where asked.

The data mover reads each file it verifies whole: with ``O_NOATIME`` where it may, never
following a symlink, with direct I/O (``O_DIRECT``) or after dropping the file's cached pages when
the hash must be of what reached the disk, and without blocking on a path that became a FIFO. The
*identity* of a file (size, modification and change time to the nanosecond, inode) taken around a
read says whether the file changed while it was read (see hashcache). ``sync_filesystem`` flushes a
destination before it is read back.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ctypes
import errno
import mmap
import os
import threading

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.hashing import new_hasher

CHUNK = 1024 * 1024
_O_NOATIME = getattr(os, 'O_NOATIME', 0)
_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)
_O_DIRECT = getattr(os, 'O_DIRECT', 0)
DIRECT_ALIGN = 4096


class Cancelled(Exception):
    """A read or a walk was stopped on request."""


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


class _NoDirectIO(Exception):
    """The filesystem refuses O_DIRECT reads."""


class FileHasher(object):
    """Reads regular files whole and hashes them, each read giving the file's identity after it.

    ``algorithm``: the content hash (see hashing). ``drop_cache``: read each file from the disk, not
    from what the copy left in memory: with direct I/O (``O_DIRECT``, which also writes back the
    file's dirty pages first) where the filesystem allows it, else after telling the kernel to drop
    the file's cached pages. ``cancelled``: an Event that stops a read (Cancelled). ``keep_cache``:
    leave the pages read in the page cache (the copy may still need them).
    """

    def __init__(self, algorithm=None, drop_cache=False, cancelled=None):
        self.algorithm = algorithm
        self.drop_cache = drop_cache
        self.cancelled = cancelled
        self._local = threading.local()
        self._direct = drop_cache and bool(_O_DIRECT)
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
