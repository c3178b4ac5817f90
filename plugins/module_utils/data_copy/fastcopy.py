# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The first copy into an empty destination: several processes copy and hash in one pass.

rsync stays the engine of every pass that must compare (a rerun, a resumed or repaired copy, a
final pass, any request with its own rsync options). A first copy has nothing to compare: every
source entry is new. This engine copies it with one walking process and ``workers`` copying
processes (forked), so that the per-file cost of many small files is spread over the CPUs, and
each file's content is hashed while it is copied: the source is read once, for the copy and its
hash together.

The walking process (the worker itself) lists the source depth first, creates each folder in the
destination before handing out its entries, and hands regular files, symlinks and special files
to the copying processes in batches: hard-linked files by inode number (all paths of one inode
go to the same process, which copies the first and links the others), the others to the process
with the fewest bytes handed out. Each copying process, for each entry:

- regular file: opens the source (no atime update, never following a symlink), creates the
  destination (``O_EXCL``), copies the data (holes of a sparse source stay holes) while hashing
  it, then sets owner, extended attributes (ACLs included), mode and times, in that order (a
  chown clears setuid bits; a chmod after the ACL keeps its mask). The source hash is kept only
  when the file's identity (size, mtime, ctime, inode) did not change while it was read.
- symlink, fifo, device, socket: created with the same target or device number, then owner,
  extended attributes where the type allows them, mode and times.

About once a second, or after 128 MiB, a copying process flushes the destination filesystem
(``syncfs``) and reads the files it has finished back from the disk with direct I/O (see
``fileread.FileHasher``), recording each destination hash with the file's identity; a file with
several paths is read back at the end, once its other paths are linked to it (a link changes its
ctime, so a hash recorded before would not be reused). The folders get
their owner, extended attributes, mode and times last, deepest first (writing into a folder
changes its mtime). The verification that follows (``compare.compare_trees``) walks both trees
in full and reuses these hashes where the identities still match; if anything differs, the worker
lets rsync copy again and verifies again.

Standard library only (plus the optional hash packages), Python 3.8+, Linux.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import mmap
import os
import signal
import stat
import threading
import time

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileread as fileread_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import plumbing as plumbing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import xattrs as xattrs_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib

ENGINES = ('auto', 'rsync')
BATCH = 256
BATCH_BYTES = 32 * 1024 * 1024
ROUND_SECONDS = 1.0
ROUND_BYTES = 128 * 1024 * 1024
ROUND_FILES = 4096
RECORD_BATCH = 1024
PROGRESS_SECONDS = 0.5
ERROR_LIMIT = 20
MAX_WORKERS = 6

_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)
_SEEK_DATA = getattr(os, 'SEEK_DATA', None)
_SEEK_HOLE = getattr(os, 'SEEK_HOLE', None)
_DONTNEED = getattr(os, 'POSIX_FADV_DONTNEED', None)
_O_NOATIME = getattr(os, 'O_NOATIME', 0)
_O_DIRECT = getattr(os, 'O_DIRECT', 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
_DIRECT_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NOATIME | _O_DIRECT
_ALIGN = 4096
# Files up to this size are read with one read into a new buffer.
_SMALL = 256 * 1024


def default_workers():
    """Copying processes: two per CPU (much of a small file's cost is waiting for the disk), at
    least two, at most MAX_WORKERS."""
    return max(2, min(MAX_WORKERS, 2 * (os.cpu_count() or 1)))


def blockers(job, destination_entries):
    """Why the job's copy cannot use this engine (an empty list when it can).

    ``destination_entries``: the names in the destination folder other than ignored ones."""
    reasons = []
    if job.get('copy_engine', 'auto') != 'auto':
        reasons.append('copy_engine is %s' % job.get('copy_engine'))
    if job.get('final_pass'):
        reasons.append('a final pass compares with the destination')
    if job.get('rsync_options'):
        reasons.append('the request has rsync options')
    if job.get('bwlimit'):
        reasons.append('the request limits the bandwidth')
    if list(job.get('rsync_base_options') or ()) != list(rsync_lib.DEFAULT_BASE_OPTIONS):
        reasons.append('the request has its own rsync base options')
    if destination_entries:
        reasons.append('the destination is not empty')
    if plumbing_lib.fork_context() is None or _SEEK_DATA is None:
        reasons.append('this platform cannot fork or find holes')
    return reasons


def destination_entries(destination, ignore):
    """The names in ``destination`` other than the ignored ones (stops after the first)."""
    ignored = frozenset(os.fsencode(name) for name in ignore or ())
    with os.scandir(os.fsencode(destination)) as listing:
        for entry in listing:
            if entry.name not in ignored:
                return [entry.name]
    return []


def copy_xattrs(source, target, privileged, follow=True):
    """Copy the extended attributes a copy must keep (those the verification compares, ACLs
    included); ``source`` and ``target`` are fds or paths. True when one was set."""
    try:
        names = os.listxattr(source, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise
    copied = False
    for name in names:
        if not xattrs_lib.xattr_wanted(name, privileged):
            continue
        try:
            value = os.getxattr(source, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise
        os.setxattr(target, name, value, follow_symlinks=follow)
        copied = True
    return copied


def copy_owner(target, st, privileged, follow=True):
    """Give ``target`` the owner and group of ``st``; without root only the group, where allowed
    (as rsync does)."""
    if privileged:
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=follow)
        return
    try:
        os.chown(target, -1, st.st_gid, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise


def copy_metadata(target, st, source, privileged, follow=True):
    """Owner, extended attributes, mode and times, in that order: a chown clears setuid bits, a
    chmod after the ACL keeps its mask. Symlinks have no mode of their own."""
    copy_owner(target, st, privileged, follow)
    copy_xattrs(source, target, privileged, follow)
    if follow:
        os.chmod(target, stat.S_IMODE(st.st_mode))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=follow)


def _error_text(exc):
    return '%s: %s' % (errno.errorcode.get(exc.errno, 'error'), exc.strerror or exc)


class _Copier(object):
    """One copying process: copies the entries it is handed, hashes, reads the copies back.

    The per-file path is written for many small files: few system calls (the source is opened,
    looked at, read, looked at again; the copy is created with its final mode when no chown is
    needed, written, given its times), no per-file objects beyond the data read.
    """

    def __init__(self, source, destination, algorithm, conn):
        self.source = source + b'/'
        self.destination = destination
        self.target_root = destination + b'/'
        self.algorithm = algorithm
        self.new_hasher = hashing_lib.hasher_factory(algorithm) if algorithm else None
        self.conn = conn
        self.euid = os.geteuid()
        self.privileged = self.euid == 0
        self.reader = fileread_lib.FileHasher(algorithm=algorithm, drop_cache=True)
        # Files are created with their final mode (the copying process runs with umask 0); a new
        # file's owner is ours, its group ours or, below a setgid destination root, the root's (the
        # folders made while copying inherit the setgid bit until they get their own mode at the end).
        root_st = os.stat(destination)
        self.new_gid = root_st.st_gid if root_st.st_mode & stat.S_ISGID else os.getegid()
        # O_NONBLOCK: a path that became a FIFO since it was listed must not block the open (it has
        # no effect on regular files).
        self.read_flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NOATIME | os.O_NONBLOCK
        self.direct = bool(_O_DIRECT)
        self.buffer = bytearray(fileread_lib.CHUNK)
        self.direct_buffer = mmap.mmap(-1, fileread_lib.CHUNK)  # page aligned, as direct I/O wants
        self.zeros = bytes(fileread_lib.CHUNK)
        self.links = {}
        self.records = []
        self.pending = []
        self.pending_linked = []
        self.pending_bytes = 0
        self.last_round = time.monotonic()
        self.last_progress = 0.0
        self.files = 0
        self.bytes = 0
        self.errors = 0

    # ------------------------------------------------------------------ messages

    def send_records(self):
        if self.records:
            self.conn.send(('records', self.records))
            self.records = []

    def progress(self, force=False):
        now = time.monotonic()
        if force or now - self.last_progress >= PROGRESS_SECONDS:
            self.last_progress = now
            self.conn.send(('progress', self.files, self.bytes))

    def error(self, rel, exc):
        self.errors += 1
        self.conn.send(('error', rel, _error_text(exc) if isinstance(exc, OSError) else str(exc)))

    # ------------------------------------------------------------------ entries

    def _open_source(self, full):
        try:
            return os.open(full, self.read_flags)
        except OSError as exc:
            # O_NOATIME needs the file's owner or CAP_FOWNER.
            if exc.errno != errno.EPERM or not _O_NOATIME:
                raise
            self.read_flags &= ~_O_NOATIME
        return os.open(full, self.read_flags)

    def _linked(self, st, target):
        """For an inode with several paths: link ``target`` to the copy of the first path this
        process made and return True, or remember ``target`` as that copy and return False."""
        first = self.links.get((st.st_dev, st.st_ino))
        if first is not None:
            os.link(first, target, follow_symlinks=False)
            return True
        self.links[(st.st_dev, st.st_ino)] = target
        return False

    def copy_other(self, rel):
        """A symlink, FIFO, device or socket (or a hard link of one)."""
        full = self.source + rel
        target = self.target_root + rel
        st = os.lstat(full)
        mode = st.st_mode
        if st.st_nlink > 1 and self._linked(st, target):
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(full), target)
            copy_metadata(target, st, full, self.privileged, follow=False)
        elif stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            raise OSError(errno.EAGAIN, 'changed type while it was copied')
        else:
            os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            copy_metadata(target, st, full, self.privileged)

    def copy_file(self, rel):
        """A regular file: copied and hashed in one read, its copy queued for reading back."""
        target = self.target_root + rel
        src = self._open_source(self.source + rel)
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EAGAIN, 'changed type while it was copied')
            if st.st_nlink > 1 and self._linked(st, target):
                return
            size = st.st_size
            mode = st.st_mode & 0o7777
            owned = st.st_uid == self.euid and st.st_gid == self.new_gid
            dst = os.open(target, _CREATE_FLAGS, mode & 0o777 if owned else 0o600)
            try:
                hasher = self.new_hasher() if self.new_hasher is not None else None
                if size <= _SMALL and size < st.st_blocks * 512 + 4096:
                    data = os.read(src, size)
                    if hasher is not None:
                        hasher.update(data)
                    if data:
                        self._write(dst, data)
                elif size and st.st_blocks * 512 < size:
                    self._copy_sparse(src, dst, size, hasher)
                else:
                    self._copy_dense(src, dst, size, hasher)
                if not owned:
                    copy_owner(dst, st, self.privileged)
                # Setting an ACL can change the group bits and a chown clears setuid bits: the mode
                # is set again after either, and always for special bits.
                if (copy_xattrs(src, dst, self.privileged) or not owned or mode & 0o7000):
                    os.fchmod(dst, mode)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
            after = os.fstat(src)
            if size >= _SMALL and _DONTNEED is not None:
                # Leave the page cache to the users of the data node.
                fileread_lib.advise(src, _DONTNEED)
        finally:
            os.close(src)
        self.bytes += size
        if hasher is not None:
            identity = (size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            if identity == (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino):
                self.records.append(('source', rel, (identity, hasher.hexdigest())))
            if st.st_nlink > 1:
                # Its later paths are linked to it, which changes its ctime: read it back at the end.
                self.pending_linked.append((rel, target, size))
            else:
                self.pending.append((rel, target, size))
                self.pending_bytes += size

    def _copy_dense(self, src, dst, size, hasher):
        """Copy up to the size the file had when opened (a file that grows or changes meanwhile
        keeps no hash, and the verification finds it)."""
        buffer = self.buffer
        view = memoryview(buffer)
        done = 0
        while done < size:
            count = os.readv(src, [buffer])
            if not count:
                return
            done += count
            if hasher is not None:
                hasher.update(view[:count])
            self._write(dst, view[:count])

    @staticmethod
    def _write(dst, data):
        written = os.write(dst, data)
        if written < len(data):
            view = memoryview(data)[written:]
            while len(view):
                view = view[os.write(dst, view):]

    def _copy_sparse(self, src, dst, size, hasher):
        """Copy only the data regions; the holes are left as holes (the hash sees their zeros)."""
        offset = 0
        buffer = self.buffer
        view = memoryview(buffer)
        while offset < size:
            try:
                data = os.lseek(src, offset, _SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # no data after offset: the rest is a hole
                    raise
                data = size
            data = min(data, size)
            self._hash_zeros(hasher, data - offset)
            if data >= size:
                break
            hole = min(os.lseek(src, data, _SEEK_HOLE), size)
            position = data
            while position < hole:
                count = os.preadv(src, [view[:min(len(buffer), hole - position)]], position)
                if not count:
                    hole = position
                    break
                if hasher is not None:
                    hasher.update(view[:count])
                chunk = view[:count]
                while len(chunk):
                    written = os.pwrite(dst, chunk, position)
                    chunk = chunk[written:]
                    position += written
            offset = hole
        os.ftruncate(dst, size)

    def _hash_zeros(self, hasher, count):
        if hasher is None:
            return
        zeros = memoryview(self.zeros)
        while count > 0:
            step = min(count, len(self.zeros))
            hasher.update(zeros[:step])
            count -= step

    # ------------------------------------------------------------------ reading back

    def _read_direct(self, target, size):
        """``(identity before, hash, identity after)`` of a copy, read with direct I/O up to its size
        (rounded up to the alignment, so the kernel zero-fills nothing past the end)."""
        fd = os.open(target, _DIRECT_FLAGS)
        try:
            st = os.fstat(fd)
            before = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            hasher = self.new_hasher()
            buffer = self.direct_buffer
            offset = 0
            end = st.st_size
            with memoryview(buffer) as view:
                while offset < end:
                    length = min(len(buffer), -(-(end - offset) // _ALIGN) * _ALIGN)
                    count = os.preadv(fd, [view[:length]], offset)
                    if not count:
                        break
                    hasher.update(view[:count])
                    offset += count
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return before, hasher.hexdigest(), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def read_back(self, force=False):
        """Flush the destination and hash the finished files from the disk (direct I/O)."""
        if not self.pending:
            if len(self.records) >= RECORD_BATCH:
                self.send_records()
            return
        if not force and self.pending_bytes < ROUND_BYTES and len(self.pending) < ROUND_FILES and (
                time.monotonic() - self.last_round < ROUND_SECONDS):
            return
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        fileread_lib.sync_filesystem(self.destination)
        records = self.records
        for rel, target, size in pending:
            try:
                if self.direct:
                    try:
                        before, digest, after = self._read_direct(target, size)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        self.direct = False  # no direct I/O here: drop the cached pages instead
                if not self.direct:
                    before, digest, after = self.reader.read_identified(target)
            except OSError:
                continue  # the verification reads it again
            if after == before:
                records.append(('destination', rel, (before, digest)))
        self.last_round = time.monotonic()
        self.send_records()

    def run(self):
        copy_file = self.copy_file
        while True:
            batch = self.conn.recv()
            if batch is None:
                break
            for rel, regular in batch:
                try:
                    if regular:
                        copy_file(rel)
                    else:
                        self.copy_other(rel)
                    self.files += 1
                except OSError as exc:
                    self.error(rel, exc)
            self.progress()
            self.read_back()
        self.pending.extend(self.pending_linked)
        self.read_back(force=True)
        self.send_records()
        self.progress(force=True)
        self.conn.send(('end', self.errors))


def _copy_in_process(source, destination, algorithm, conn, parent=None, inherited=()):
    """The body of a copying process (forked from the worker).

    ``inherited``: the walking process's ends of the pipes (this process's own and those of the
    copying processes forked before it), closed first: holding them, this process would never see
    the end of its pipe when the walking process dies, and would wait for work forever."""
    lifeline.child_start(parent, inherited)
    # A cancel signals the whole process group: a copying process just stops.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    os.umask(0)  # each copy is created with its final mode
    try:
        _Copier(source, destination, algorithm, conn).run()
    except (EOFError, BrokenPipeError):
        pass
    except BaseException as exc:  # pylint: disable=broad-except
        try:
            conn.send(('failed', '%s: %s' % (type(exc).__name__, exc)))
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        conn.close()


class ParallelCopy(object):
    """A first copy of ``source`` into the empty folder ``destination`` (see the module docstring).

    ``algorithm``: hash the contents while copying and read the copies back (None: copy only).
    ``on_progress(files, bytes, totals)`` is called from the walking process about twice a second;
    ``totals`` grow until ``counted`` is True (the walk has listed the whole source).
    After ``run()``: ``records`` (side -> path -> (identity, hash)), or, with ``sink``, each record
    given to ``sink.add(side, path, (identity, hash))`` as it comes instead (hashcache.RecordSpill);
    ``totals`` (as the source scan counts them), ``errors`` (the first ERROR_LIMIT ``(path, text)``) and ``error_count``.
    """

    def __init__(self, source, destination, ignore=(), algorithm=None, workers=None, on_progress=None,
                 context=None, sink=None):
        self.source = os.fsencode(os.path.realpath(source))
        self.destination = os.fsencode(os.path.realpath(destination))
        self.ignore = frozenset(os.fsencode(name) for name in ignore or ())
        self.algorithm = algorithm
        self.workers = workers or default_workers()
        self.on_progress = on_progress
        self.context = context or plumbing_lib.fork_context()
        self.records = dict((side, {}) for side in hashcache_lib.SIDES)
        self.sink = sink
        self.totals = {'entries': 1, 'files': 0, 'bytes': 0, 'directories': 1, 'symlinks': 0}
        self.errors = []
        self.error_count = 0
        self.done = {}
        self.failures = []
        self.ignored = state_lib.Ignored()
        # True once the walk has listed the whole source: ``totals`` stop growing.
        self.counted = False
        self._lock = threading.Lock()

    def _error(self, rel, text):
        with self._lock:
            self.error_count += 1
            if len(self.errors) < ERROR_LIMIT:
                self.errors.append((rel, text))

    def _drain(self, index, conn):
        """A thread of the walking process: take one copying process's messages."""
        try:
            while True:
                message = conn.recv()
                kind = message[0]
                if kind == 'records':
                    if self.sink is not None:
                        for side, rel, record in message[1]:
                            self.sink.add(side, rel, record)
                    else:
                        for side, rel, record in message[1]:
                            self.records[side][rel] = record
                elif kind == 'progress':
                    self.done[index] = (message[1], message[2])
                elif kind == 'error':
                    self._error(message[1], message[2])
                elif kind == 'failed':
                    self.failures.append(message[1])
                    return
                else:
                    return
        except (EOFError, OSError):
            self.failures.append('copying process %d stopped' % index)

    def _count(self, st):
        totals = self.totals
        totals['entries'] += 1
        if stat.S_ISREG(st.st_mode):
            totals['files'] += 1
            totals['bytes'] += st.st_size
        elif stat.S_ISLNK(st.st_mode):
            totals['symlinks'] += 1

    def _report_progress(self, force=False):
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_SECONDS:
            return
        self._last_progress = now
        done = list(self.done.values())
        self.on_progress(sum(item[0] for item in done), sum(item[1] for item in done), self.totals)

    def run(self):
        self._last_progress = time.monotonic()
        children = []
        parent = os.getpid()
        try:
            for index in range(self.workers):
                to_child, child_end = self.context.Pipe()
                inherited = [item[1] for item in children] + [to_child]
                child = self.context.Process(target=_copy_in_process, name='first-copy-%d' % index,
                                             args=(self.source, self.destination, self.algorithm, child_end, parent,
                                                   inherited))
                child.daemon = True
                child.start()
                child_end.close()
                drainer = threading.Thread(target=self._drain, args=(index, to_child), name='first-copy-drain-%d' % index)
                drainer.daemon = True
                drainer.start()
                children.append((child, to_child, drainer))
            folders = self._walk([item[1] for item in children])
            self.counted = True
            for dummy, conn, dummy in children:
                conn.send(None)
            for child, conn, drainer in children:
                while drainer.is_alive():
                    drainer.join(PROGRESS_SECONDS)
                    self._report_progress()
                child.join()
                conn.close()
            if child_failures(children):
                self.failures.append('a copying process exited with %s' % child_failures(children))
            self._report_progress(force=True)
            self._finish_folders(folders)
        finally:
            for child, conn, dummy in children:
                if child.is_alive():
                    child.kill()
                    child.join()
        return self

    def _walk(self, conns):
        """List the source, make its folders, hand out the rest; return the folders (rel, stat)."""
        root_st = os.stat(self.source)
        folders = [(b'.', root_st)]
        batches = [[] for dummy in conns]
        batch_bytes = [0] * len(conns)
        assigned = [0] * len(conns)
        stack = [b'.']
        while stack:
            rel = stack.pop()
            folder = self.source if rel == b'.' else os.path.join(self.source, rel)
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=_name)
            except OSError as exc:
                self._error(rel, _error_text(exc))
                continue
            subfolders = []
            for entry in entries:
                child = entry.name if rel == b'.' else rel + b'/' + entry.name
                if entry.name in self.ignore:
                    try:
                        folder_entry = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        folder_entry = False
                    self.ignored.add(child, folder_entry, os.path.join(self.source, child))
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        os.mkdir(os.path.join(self.destination, child), 0o700)
                        folders.append((child, st))
                        subfolders.append(child)
                        self.totals['entries'] += 1
                        self.totals['directories'] += 1
                        continue
                except OSError as exc:
                    self._error(child, _error_text(exc))
                    continue
                self._count(st)
                if st.st_nlink > 1:
                    index = st.st_ino % len(conns)
                else:
                    index = assigned.index(min(assigned))
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                assigned[index] += size + 4096
                batches[index].append((child, stat.S_ISREG(st.st_mode)))
                batch_bytes[index] += size
                if len(batches[index]) >= BATCH or batch_bytes[index] >= BATCH_BYTES:
                    conns[index].send(batches[index])
                    batches[index] = []
                    batch_bytes[index] = 0
            stack.extend(reversed(subfolders))
            self._report_progress()
        for index, batch in enumerate(batches):
            if batch:
                conns[index].send(batch)
        return folders

    def _finish_folders(self, folders):
        """Owner, extended attributes, mode and times of every folder, deepest first."""
        privileged = os.geteuid() == 0
        for rel, st in reversed(folders):
            target = self.destination if rel == b'.' else os.path.join(self.destination, rel)
            full = self.source if rel == b'.' else os.path.join(self.source, rel)
            try:
                copy_metadata(target, st, full, privileged)
            except OSError as exc:
                self._error(rel, _error_text(exc))


def _name(entry):
    return entry.name


def child_failures(children):
    """The exit codes of copying processes that did not exit cleanly (empty when all did)."""
    return ', '.join(str(child.exitcode) for child, dummy, dummy in children if child.exitcode)
