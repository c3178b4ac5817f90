# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Immutable (``chattr +i``) and append-only (``chattr +a``) file attributes.

Neither rsync nor a plain copy carries them, and both block a later pass (a file that cannot be
replaced or changed) and the deletion of an old instance. This module reads them cheaply with
statx(2) (``stx_attributes``: no open, any file type), sets and clears them with the
FS_IOC_GETFLAGS / FS_IOC_SETFLAGS ioctls (which need an open descriptor: regular files and
folders only, the only types ``chattr`` can flag), and holds the two users of that:

* ``clear_tree``: a driver deleting an instance clears the flags first (root only can set them,
  and only root clears them);
* ``Carrier``: the data copy worker reads the source's flags before copying (or while it copies),
  clears the flags it finds on the destination before a pass rewrites it, sets the source's flags
  on the destination once its data is final for the pass, and the verification compares them
  (``read_carried`` is an attribute of every manifest entry), so a missing flag is caught.

Shipped to the data node with the worker: standard library only, Python 3.8+, Linux.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct
import threading

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.state import read_json, write_json

# statx(2) attribute bits and the inode flag bits of the ioctls (the same values).
ATTR_IMMUTABLE = 0x10
ATTR_APPEND = 0x20
CARRIED = ATTR_IMMUTABLE | ATTR_APPEND
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_STATX_DONT_SYNC = 0x4000
_STATX_SIZE = 256
_O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_O_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)
_NAMES = ((ATTR_IMMUTABLE, 'immutable'), (ATTR_APPEND, 'append-only'))


class FlagError(Exception):
    """Flags that must be carried cannot be (the destination does not support them, no privilege)."""


def _load_statx():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
        function = libc.statx
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
    function.restype = ctypes.c_int
    return function


_STATX = _load_statx()
# stx_attributes and stx_attributes_mask in struct statx.
_U64 = struct.Struct('=Q')
_LOCAL = threading.local()


def statx_attributes(path):
    """``(attributes, attributes_mask)`` of ``path`` (not following a symlink) from statx(2),
    restricted to CARRIED, or None when statx is not available here. Raises OSError."""
    if _STATX is None:
        return None
    buffer = getattr(_LOCAL, 'buffer', None)
    if buffer is None:
        buffer = _LOCAL.buffer = ctypes.create_string_buffer(_STATX_SIZE)
    rc = _STATX(_AT_FDCWD, path if path.__class__ is bytes else os.fsencode(path),
                _AT_SYMLINK_NOFOLLOW | _AT_STATX_DONT_SYNC, 0, buffer)
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return _U64.unpack_from(buffer, 8)[0] & CARRIED, _U64.unpack_from(buffer, 56)[0] & CARRIED


def _open(path):
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)


def ioctl_flags(fd):
    """All inode flags of the open file ``fd`` (FS_IOC_GETFLAGS)."""
    buffer = bytearray(8)
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buffer, True)
    return struct.unpack_from('=i', buffer, 0)[0]


def read_carried(path, st=None):
    """The CARRIED flags of ``path`` (0 when none); ``st`` (its lstat) saves a look up for the types
    that cannot hold flags. Never raises for a filesystem without flags."""
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return 0
    try:
        found = statx_attributes(path)
    except OSError:
        return 0
    if found is not None:
        return found[0]
    try:
        fd = _open(path)
    except OSError:
        return 0
    try:
        return ioctl_flags(fd) & CARRIED
    except (IOError, OSError):
        return 0
    finally:
        os.close(fd)


def set_carried(path, wanted):
    """Make the CARRIED flags of ``path`` (a regular file or folder) exactly ``wanted``, keeping its
    other flags; return True when something changed. Raises OSError (EPERM without privilege,
    ENOTTY or EOPNOTSUPP where the filesystem has no flags)."""
    fd = _open(path)
    try:
        current = ioctl_flags(fd)
        new = (current & ~CARRIED) | (wanted & CARRIED)
        if new == current:
            return False
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(struct.pack('=i', new) + b'\0' * 4), False)
        return True
    finally:
        os.close(fd)


def describe(flags):
    """``immutable``, ``append-only``, or both."""
    return ' and '.join(name for bit, name in _NAMES if flags & bit) or 'none'


def flagged_entries(root, ignore=(), stay_on=None):
    """``{relative path (bytes): flags}`` of every entry below ``root`` (the root as ``.``) with a
    CARRIED flag; names in ``ignore`` are skipped at any depth, folders of another filesystem than
    ``stay_on`` (a device number) are not entered."""
    ignore = frozenset(os.fsencode(name) for name in ignore or ())
    top = os.fsencode(root)
    found = {}
    flags = read_carried(top)
    if flags:
        found[b'.'] = flags
    stack = [b'']
    while stack:
        rel = stack.pop()
        folder = os.path.join(top, rel) if rel else top
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name in ignore:
                continue
            child = os.path.join(rel, entry.name) if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir and not entry.is_file(follow_symlinks=False):
                    continue
                flags = read_carried(entry.path)
            except OSError:
                continue
            if flags:
                found[child] = flags
            if is_dir:
                if stay_on is not None:
                    try:
                        if entry.stat(follow_symlinks=False).st_dev != stay_on:
                            continue
                    except OSError:
                        continue
                stack.append(child)
    return found


def clear_tree(root, one_file_system=True):
    """Clear the immutable and append-only flags of ``root`` and everything below it so that it can
    be deleted; return how many entries were changed. Raises OSError when one cannot be cleared."""
    try:
        st = os.lstat(root)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return 0
        raise
    if not stat.S_ISDIR(st.st_mode):
        return 1 if read_carried(root, st) and set_carried(root, 0) else 0
    changed = 0
    # An entry's own flags can be cleared whatever its folder's flags are.
    for rel, flags in sorted(flagged_entries(root, stay_on=st.st_dev if one_file_system else None).items()):
        path = os.fsencode(root) if rel == b'.' else os.path.join(os.fsencode(root), rel)
        if set_carried(path, 0):
            changed += 1
    return changed


def set_tree(root, flags, one_file_system=True):
    """Add ``flags`` (CARRIED bits) to ``root`` and to every regular file and folder below it: with
    ATTR_IMMUTABLE nothing in the tree can be written, added, renamed or removed (the fence of an
    old active replica, docs/replication.md). Symlinks and special files cannot hold flags (their
    folders' flag protects their names). Folders of another filesystem are not entered. Returns
    how many entries were changed; raises OSError when one cannot be set (EPERM without
    privilege, ENOTTY or EOPNOTSUPP where the filesystem has no flags)."""
    top = os.fsencode(root)
    st = os.lstat(top)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return 0
    stay_on = st.st_dev if one_file_system else None
    changed = 0
    stack = [top] if stat.S_ISDIR(st.st_mode) else []
    while stack:
        folder = stack.pop()
        for entry in list(os.scandir(folder)):
            child = os.path.join(folder, entry.name)
            child_st = os.lstat(child)
            if stat.S_ISDIR(child_st.st_mode):
                if stay_on is not None and child_st.st_dev != stay_on:
                    continue
                stack.append(child)
            elif not stat.S_ISREG(child_st.st_mode):
                continue
            current = read_carried(child, child_st)
            if current | flags != current and set_carried(child, current | flags):
                changed += 1
    # The root last: its flag is what says the whole tree was done.
    current = read_carried(top, st)
    if current | flags != current and set_carried(top, current | flags):
        changed += 1
    return changed


def render(rel):
    return os.fsdecode(rel) if isinstance(rel, bytes) else rel


class Carrier(object):
    """The flags of one copy pass (see the module docstring).

    ``ledger``: a file (shared by the passes of one pair of trees) listing the destination entries
    a pass flagged, written before it flags them; the next pass clears exactly those instead of
    walking the whole destination. Without it (or before any pass wrote it) the destination is
    walked."""

    def __init__(self, source, destination, ignore=(), log=None, ledger=None):
        self.source = source
        self.destination = destination
        self.ignore = list(ignore or ())
        self.log = log or (lambda message: None)
        self.ledger = ledger
        self.wanted = {}
        self.set_count = 0
        self._deferred = False
        self._reading = None

    def prepare(self, beside=False):
        """Before copying: read the source's flags (refusing when the destination cannot hold them)
        and clear every flag on the destination, so that the pass can rewrite any entry.

        ``beside``: when the destination can hold flags, so that there is nothing to refuse, the
        source is not read here but beside the copy (a walk of the whole source, 1.1 to 3.2 s at
        200,000 files here, that the copy then does not wait for): ``read_beside`` starts the read in a
        thread once the copy runs, ``apply`` waits for it, or reads the source itself when no copy
        started it. Otherwise the source is read here, so that a refusal comes before anything is
        copied."""
        self._deferred = bool(beside) and self._destination_problem() is None
        if not self._deferred:
            self._found(flagged_entries(self.source, self.ignore))
        cleared = self.clear_destination()
        if cleared:
            self.log('cleared the immutable or append-only flags of %d destination entries before copying'
                     % cleared)

    def _found(self, wanted):
        self.wanted = wanted
        if self.wanted:
            self._check_destination()
            self.log('%d source entries are immutable or append-only; their flags are set on the destination '
                     'after the copy' % len(self.wanted))

    def read_beside(self):
        """Start reading the source's flags in a thread, when prepare left them to be read beside the
        copy. The worker calls it once the copy's programs are started: it forks them (rsync with a
        preexec_fn) while it runs no other thread."""
        if not self._deferred or self._reading is not None:
            return
        box = {}

        def read():
            try:
                box['wanted'] = flagged_entries(self.source, self.ignore)
            except Exception as exc:  # any failure of the walk: wait() reports it
                box['error'] = exc

        thread = threading.Thread(target=read, name='flags of the source')
        thread.daemon = True
        thread.start()
        self._reading = (thread, box)

    def wait(self):
        """The source's flags, once read (see prepare): waits for the read beside the copy, or reads
        the source now when prepare left it to a copy that did not start the read."""
        if not self._deferred:
            return
        if self._reading is None:
            wanted = flagged_entries(self.source, self.ignore)
        else:
            thread, box = self._reading
            thread.join()
            self._reading = None
            if 'error' in box:
                error = box['error']
                raise FlagError('Failed to read the immutable and append-only attributes of %s: %s'
                                % (self.source, getattr(error, 'strerror', None) or error))
            wanted = box['wanted']
        self._deferred = False
        self._found(wanted)

    def _check_destination(self):
        problem = self._destination_problem()
        if problem:
            names = sorted(self.wanted)
            shown = ', '.join('%s (%s)' % (render(rel), describe(self.wanted[rel])) for rel in names[:10])
            more = len(names) - 10
            raise FlagError('Cannot carry the immutable and append-only attributes of %d source entries to %s: %s. '
                            'The entries: %s%s; clear the attributes on the source (chattr -i -a) or choose '
                            'another destination' % (len(names), self.destination, problem, shown,
                                                     ' and %d more' % more if more > 0 else ''))

    def _destination_problem(self):
        """Why the destination cannot hold the flags, or None when it can."""
        found = None
        try:
            found = statx_attributes(self.destination)
        except OSError:
            pass
        problem = None
        if found is not None and (found[1] & CARRIED) != CARRIED:
            problem = 'the destination filesystem does not support them'
        else:
            try:
                fd = _open(self.destination)
                try:
                    ioctl_flags(fd)
                finally:
                    os.close(fd)
            except (IOError, OSError) as exc:
                problem = 'the destination filesystem does not support them (%s)' % exc.strerror
        if problem is None and os.geteuid() != 0:
            problem = 'setting them needs root (CAP_LINUX_IMMUTABLE) on the data node'
        return problem

    def _read_ledger(self):
        data = read_json(self.ledger) if self.ledger else None
        if not data or not isinstance(data.get('flagged'), list):
            return None
        try:
            return [bytes.fromhex(item) for item in data.get('flagged') or []]
        except (TypeError, ValueError):
            return None

    def _write_ledger(self, paths):
        if not self.ledger:
            return
        folder = os.path.dirname(self.ledger)
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o700)
        write_json(self.ledger, {'flagged': sorted(rel.hex() for rel in paths)})

    def clear_destination(self):
        """Clear every CARRIED flag on the destination; return how many entries changed."""
        try:
            empty = not os.listdir(self.destination)
        except OSError:
            return 0
        top = os.fsencode(self.destination)
        known = None if empty else self._read_ledger()
        try:
            if empty:
                changed = 1 if read_carried(top) and set_carried(top, 0) else 0
            elif known is None:
                changed = clear_tree(self.destination)
            else:
                changed = 0
                for rel in known:
                    path = top if rel == b'.' else os.path.join(top, rel)
                    try:
                        if read_carried(path) and set_carried(path, 0):
                            changed += 1
                    except OSError as exc:
                        if exc.errno != errno.ENOENT:
                            raise
        except OSError as exc:
            raise FlagError('Failed to clear the immutable or append-only attribute of %s on the destination: %s'
                            % (render(exc.filename or self.destination), exc.strerror))
        self._write_ledger([])
        return changed

    def apply(self):
        """After a pass copied the data: set the source's flags on the destination (the deepest
        entries first, an immutable folder last). Return how many were set."""
        self.wait()
        changed = 0
        top = os.fsencode(self.destination)
        if self.wanted:
            self._write_ledger(list(self.wanted))  # before any is set: a crash leaves them listed
        for rel in sorted(self.wanted, key=lambda item: (-item.count(b'/'), item)):
            path = top if rel == b'.' else os.path.join(top, rel)
            try:
                if set_carried(path, self.wanted[rel]):
                    changed += 1
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # not copied: the verification reports it missing
                raise FlagError('Failed to set the %s attribute on %s: %s'
                                % (describe(self.wanted[rel]), render(path), exc.strerror))
        self.set_count = changed
        if changed:
            self.log('set the immutable or append-only flags of %d destination entries' % changed)
        return changed
