# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mount table of this machine, read from /proc/self/mountinfo, and the mount syscalls of the
export helpers' read-only base (used by the local transport; the lookups in a table are pure).

``os.path.ismount`` cannot see a bind mount of a folder of the same filesystem (same device),
so mount points are looked up here.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ctypes
import errno
import os
import re

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError

_OCTAL = re.compile(r'\\([0-7]{3})')


def _unescape(field):
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text):
    """The lines of a ``/proc/<pid>/mountinfo`` as a list of dicts: mount_point, root (path inside
    the filesystem), fstype, source, options (the mount's own, ``ro`` or ``rw`` first), mount_id
    and parent_id (to order mounts stacked on one mount point: the upper one's parent is the one
    beneath). A transport to another host parses the text it read there with it."""
    table = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index('-')
        except ValueError:
            continue
        table.append({'mount_point': _unescape(fields[4]), 'root': _unescape(fields[3]),
                      'options': fields[5], 'fstype': fields[sep + 1], 'source': _unescape(fields[sep + 2]),
                      'mount_id': fields[0], 'parent_id': fields[1]})
    return table


def mount_table():
    """The mounts of this machine (parse_mountinfo of /proc/self/mountinfo)."""
    try:
        with open('/proc/self/mountinfo') as handle:
            return parse_mountinfo(handle.read())
    except IOError:
        return []


def same_inode(a, b):
    """True when both paths are the same folder: how a bind mount is recognised."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def deepest_mount(real, table):
    """The entry of ``table`` of the filesystem holding the resolved path ``real`` (the deepest
    mount point above it)."""
    best = {'mount_point': '/', 'root': '/', 'options': '', 'fstype': 'unknown', 'source': 'unknown'}
    for entry in table:
        point = entry['mount_point']
        if (real == point or real.startswith(point.rstrip('/') + '/')) and len(point) >= len(best['mount_point']):
            best = entry
    return best


def stack_at(real, table):
    """The mounts of ``table`` stacked on the resolved mount point ``real``, lowest first (the
    last one is what the path shows); an empty list when nothing is mounted there."""
    here = [entry for entry in table if entry['mount_point'] == real]
    ids = set(entry.get('mount_id') for entry in here)
    above = dict((entry.get('parent_id'), entry) for entry in here)
    bottom = [entry for entry in here if entry.get('parent_id') not in ids]
    ordered = []
    current = bottom[0] if bottom else None
    while current is not None and current not in ordered:
        ordered.append(current)
        current = above.get(current.get('mount_id'))
    # Anything the parent links do not reach (should not happen) still counts as mounted.
    return ordered + [entry for entry in here if entry not in ordered]


def stacked_mounts(path, table=None):
    """The mounts stacked on the mount point ``path`` of this machine, lowest first."""
    return stack_at(os.path.realpath(path), mount_table() if table is None else table)


# -- the read-only base of the bind exports: new mount API syscalls --------------------------------
class BaseUnsupported(StorageError):
    """This kernel cannot slide a mount beneath another one (before Linux 6.5)."""


# Linux syscalls (one numbering on every architecture since 5.2) and their flags.
SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT, SYS_MOVE_MOUNT = 430, 431, 432, 429
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
BASE_ATTRS = 0x1 | 0x2 | 0x4 | 0x8  # MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_BENEATH = 0x200


def _syscall(number, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def mount_base_beneath(path, source, options):
    """Slide a new read-only, empty tmpfs named ``source`` (``options``: (key, value) pairs)
    beneath the mount on top of ``path``, without ever uncovering ``path``: fsopen, fsconfig,
    fsmount, then move_mount with MOVE_MOUNT_BENEATH (Linux 6.5). Raises BaseUnsupported when the
    kernel cannot do it."""
    fds = []
    try:
        try:
            fs_fd = _syscall(SYS_FSOPEN, b'tmpfs', FSOPEN_CLOEXEC)
        except OSError as exc:
            raise BaseUnsupported('fsopen: %s' % exc.strerror)
        fds.append(fs_fd)
        _syscall(SYS_FSCONFIG, fs_fd, FSCONFIG_SET_STRING, b'source', source.encode(), 0)
        for key, value in options:
            _syscall(SYS_FSCONFIG, fs_fd, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
        _syscall(SYS_FSCONFIG, fs_fd, FSCONFIG_CMD_CREATE, None, None, 0)
        mnt_fd = _syscall(SYS_FSMOUNT, fs_fd, FSMOUNT_CLOEXEC, BASE_ATTRS)
        fds.append(mnt_fd)
        try:
            _syscall(SYS_MOVE_MOUNT, mnt_fd, b'', AT_FDCWD, os.fsencode(path),
                     MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS):
                raise BaseUnsupported('move_mount beneath %s: %s' % (path, exc.strerror))
            raise
    except AttributeError as exc:  # no libc syscall() on this platform
        raise BaseUnsupported(str(exc))
    finally:
        for fd in fds:
            os.close(fd)
