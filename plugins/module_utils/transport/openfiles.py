# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes holding files of a share: who could still write into a source that is about to be
switched away, and who keeps an export busy.

Everything is read from /proc: the descriptors in ``/proc/<pid>/fd`` with their access mode from
``/proc/<pid>/fdinfo/<fd>`` (``flags:``, octal, ``O_WRONLY`` or ``O_RDWR``), shared writable
mappings from ``/proc/<pid>/maps`` (through ``/proc/<pid>/map_files`` when readable, so a mapped
file that was deleted still counts), and for users also the current and root folders. A file
matches when it is on the device of one of the given paths and, unless ``whole_device`` is set,
its path (as the kernel names it) is one of those paths or below one. ``whole_device`` suits a
btrfs subvolume, which has a device of its own: every path into it counts, whatever mount shows it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

PROC = '/proc'
O_ACCMODE = 3
DELETED = ' (deleted)'


def _below(path, roots):
    return any(path == root or path.startswith(root.rstrip('/') + '/') for root in roots)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def _link(path):
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return target[:-len(DELETED)] if target.endswith(DELETED) else target


def _device(path):
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def _fd_writable(proc, pid, fd):
    text = _read(os.path.join(proc, pid, 'fdinfo', fd)) or ''
    for line in text.splitlines():
        if line.startswith('flags:'):
            try:
                return int(line.split()[1], 8) & O_ACCMODE in (1, 2)
            except (IndexError, ValueError):
                return False
    return False


def scan(paths, whole_device=False, writers_only=True, proc=PROC, exclude=None):
    """Processes holding a file of ``paths`` (open for writing or mapped shared and writable when
    ``writers_only``; any open file, mapping, current or root folder otherwise), as dicts
    ``pid``, ``command``, ``paths`` (the files, sorted), ordered by pid. This process and the pids
    in ``exclude`` are left out."""
    roots, devices = [], set()
    for path in paths:
        dev = _device(path) if path else None
        if dev is not None:
            devices.add(dev)
            roots.append(os.path.realpath(path))
    if not devices:
        return []
    skip = set([os.getpid()] + list(exclude or []))
    found = []
    try:
        pids = sorted((p for p in os.listdir(proc) if p.isdigit()), key=int)
    except OSError:
        return []

    def matches(target, dev):
        return dev in devices and target is not None and (whole_device or _below(target, roots))

    for pid in pids:
        if int(pid) in skip:
            continue
        hits = []
        fd_dir = os.path.join(proc, pid, 'fd')
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            fds = []
        for fd in fds:
            link = os.path.join(fd_dir, fd)
            target = _link(link)
            if not matches(target, _device(link)):
                continue
            if not writers_only or _fd_writable(proc, pid, fd):
                hits.append(target)
        if not writers_only:
            for name in ('cwd', 'root'):
                link = os.path.join(proc, pid, name)
                target = _link(link)
                if matches(target, _device(link)):
                    hits.append(target)
        for line in (_read(os.path.join(proc, pid, 'maps')) or '').splitlines():
            fields = line.split(None, 5)
            if len(fields) < 6 or not fields[5].startswith('/'):
                continue
            perms = fields[1]
            if writers_only and not (len(perms) > 3 and perms[1] == 'w' and perms[3] == 's'):
                continue
            target = fields[5].strip()
            if target.endswith(DELETED):
                target = target[:-len(DELETED)]
            dev = _device(os.path.join(proc, pid, 'map_files', fields[0]))
            if dev is None:
                dev = _device(target)
            if matches(target, dev):
                hits.append(target)
        if hits:
            command = (_read(os.path.join(proc, pid, 'comm')) or '?').strip()
            found.append({'pid': int(pid), 'command': command, 'paths': sorted(set(hits))})
    return found


def open_writers(paths, whole_device=False, proc=PROC):
    """Processes that could still write into ``paths``: files open for writing, shared writable
    mappings."""
    return scan(paths, whole_device=whole_device, writers_only=True, proc=proc)


def users(paths, proc=PROC):
    """Processes using ``paths`` in any way (what keeps a mount busy)."""
    return scan(paths, writers_only=False, proc=proc)


def describe(processes, limit=10):
    """``pid (command): file, file; ...`` for messages."""
    parts = []
    for item in processes[:limit]:
        files = item['paths'][:5]
        more = len(item['paths']) - len(files)
        parts.append('%d (%s): %s%s' % (item['pid'], item['command'], ', '.join(files),
                                        ' and %d more' % more if more > 0 else ''))
    if len(processes) > limit:
        parts.append('and %d more processes' % (len(processes) - limit))
    return '; '.join(parts)


def wait_closed(scan_once, timeout, clock=time.monotonic, sleeper=time.sleep, interval=0.5):
    """Call ``scan_once`` until it finds nothing or ``timeout`` seconds have passed (0: once);
    return what the last call found."""
    deadline = clock() + max(0, timeout or 0)
    found = scan_once()
    while found and clock() < deadline:
        sleeper(max(0.0, min(interval, deadline - clock())))
        found = scan_once()
    return found
