# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The changes pass: a final pass that copies and verifies only what changed since the last
verified pass (docs/data_mover.md, "The changes pass").

Every change to an entry (content, mode, owner, xattrs, ACLs, a link or a rename of it) sets its
change time from the kernel's clock, which no program can set; adding, removing or renaming an
entry changes its folder. After a verified pass, the data node keeps *points* beside the hash
index of the pass's key (``<key>.changes.json``): the kernel's clock as change times show it just
before that pass began to copy (the source's point) and just after it was verified (the
destination's point), with what must stay true for them to mean anything:

- the clock was not set: the boot id and the offset between the real-time clock and the time
  since boot (CLOCK_BOOTTIME) are the same, within CLOCK_TOLERANCE seconds (a drift backwards
  widens the reach of the walks);
- each tree is the one that was verified: the same device, root inode and mount of its
  filesystem (a filesystem restored from an image, or mounted anew, gets another mount id; the
  bind mounts each job makes of the same export do not count).

Then the entries of the source changed after its point (``find -newerct``), folders among them
taken whole, are all the pass must copy, and the entries of the destination changed after its
point must all be among them or their folders: the worker checks that in the seal walk after
the copy (seal.seal_walk's ``newer_than``) and falls back to the whole pass when anything else
changed, or when anything here cannot be told.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import stat
import subprocess
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline

#: seconds the real-time clock's offset from the time since boot may move between two passes (NTP
#: slews it by milliseconds; a larger move is a clock that was set)
CLOCK_TOLERANCE = 1.0
#: seconds between the last write of a pass and the point made after it (more than the coarse
#: clock's tick): a change after the point has a change time of at least the point's
MARK_GAP = 0.04
#: the changes pass lists at most this many entries (their paths are held in memory while the seal
#: walks check the destination); more changed entries: the whole pass, which walks anyway
LIST_LIMIT = 200000
POINTS_SUFFIX = '.changes.json'
#: the files of a changes pass's lists in its job folder: changed folders, other changed entries, sizes
LISTS = {'folders': 'changes.folders', 'others': 'changes.others', 'sizes': 'changes.sizes'}
BOOT_ID = '/proc/sys/kernel/random/boot_id'
MOUNTINFO = '/proc/self/mountinfo'


class Unknown(Exception):
    """What changed cannot be told from change times; the message says why (the pass then copies
    and verifies the whole trees)."""


def ns_argument(ns):
    """Integer nanoseconds since the epoch as ``find -newerct``'s ``@seconds.fraction``, exact."""
    sign = '-' if ns < 0 else ''
    seconds, rest = divmod(abs(int(ns)), 10 ** 9)
    return '@%s%d.%09d' % (sign, seconds, rest)


def find_name_pattern(name):
    """``name`` as a ``find -name`` pattern that matches that name only (wildcards escaped)."""
    return ''.join('\\' + c if c in '\\*?[' else c for c in name)


def changed_argv(path, since_ns, ignore, *action):
    """``find`` of the entries below ``path`` changed after ``since_ns``, names in ``ignore``
    skipped at any depth (as rsync skips them), each given to ``action``."""
    argv = ['find', path, '-mindepth', '1']
    for name in ignore:
        argv += ['-name', find_name_pattern(name), '-prune', '-o']
    return argv + ['-newerct', ns_argument(since_ns)] + list(action)


def _boot_id():
    with open(BOOT_ID, 'rb') as handle:
        return handle.read().decode('ascii', 'replace').strip()


def point(folder):
    """The kernel's clock now, as change times show it: a folder made and removed in ``folder``
    gives its change time (``ctime_ns``), with the ``boot_id`` and ``offset`` (real time less the
    time since boot, seconds) that tell a later check whether the clock was set meanwhile."""
    path = os.path.join(folder, '.point-' + uuid.uuid4().hex)
    os.mkdir(path, 0o700)
    try:
        ctime_ns = os.lstat(path).st_ctime_ns
    finally:
        os.rmdir(path)
    offset = time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_BOOTTIME)
    return {'ctime_ns': ctime_ns, 'boot_id': _boot_id(), 'offset': offset}


def _mount_id(st):
    """The id of the mount of the whole filesystem of device ``st.st_dev`` in this process's
    mountinfo (the first one whose root is the filesystem's top; else the first of that device).
    Each job of a migration mounts the same export at mount points of its own (a bind mount, or
    the folder itself): their ids change from job to job, the filesystem's own mount's does not,
    until the filesystem is unmounted (a restore from an image, a repair, a restart)."""
    device = '%d:%d' % (os.major(st.st_dev), os.minor(st.st_dev))
    tops, others = [], []
    with open(MOUNTINFO, 'rb') as handle:
        for line in handle:
            fields = line.split(b' ')
            if len(fields) < 5 or fields[2].decode('ascii', 'replace') != device:
                continue
            (tops if fields[3] == b'/' else others).append(int(fields[0]))
    found = tops or others
    return min(found) if found else None


def tree_identity(path):
    """What tells that ``path`` is the tree it was: its device, root inode and the id of its
    filesystem's mount (see _mount_id)."""
    st = os.stat(path)
    return {'dev': st.st_dev, 'ino': st.st_ino, 'mount_id': _mount_id(st)}


def reach_back(points, now):
    """Raise Unknown unless the kept ``points`` still hold against ``now`` (a point made just
    before); return the seconds the clock moved back between them (0 when it did not)."""
    if now['boot_id'] != points['boot_id']:
        raise Unknown('the data node restarted since the last verified pass')
    back = points['offset'] - now['offset']
    if abs(back) > CLOCK_TOLERANCE:
        raise Unknown('the clock of the data node was set %s by %.1f s since the last verified pass'
                      % ('back' if back > 0 else 'forward', abs(back)))
    return max(0.0, back)


def check_points(points, job, now, ignore):
    """(the source's, the destination's) change time in ns after which an entry counts as changed
    since the last verified pass of ``points`` (as kept by the worker); raise Unknown when they
    cannot be trusted for ``job`` now."""
    if not isinstance(points, dict) or points.get('format') != 1:
        raise Unknown('no verified pass of these trees to start from')
    if points.get('ignore_files') != list(ignore):
        raise Unknown('the ignore list changed since the last verified pass')
    if points.get('flagged_entries'):
        raise Unknown('the trees hold immutable or append-only entries, which each pass clears and sets again')
    back = reach_back(points, now)
    for side in ('source', 'destination'):
        try:
            identity = tree_identity(job[side])
        except OSError as exc:
            raise Unknown('the %s cannot be read: %s' % (side, exc.strerror))
        if identity != points.get(side + '_tree'):
            raise Unknown('the %s is not the tree that was verified (another filesystem, or mounted anew)' % side)
    slack = int(back * 1e9)
    return int(points['source_ns']) - 1 - slack, int(points['destination_ns']) - 1 - slack


def list_changed(root, since_ns, ignore, lists):
    """Write the entries below ``root`` changed after ``since_ns`` into the files of ``lists``
    (paths on the data node): ``folders`` and ``others`` (relative paths, each ended by a NUL:
    rsync's ``--from0 --files-from``) and ``sizes`` (a type and a size per line); return (entries,
    files, bytes). Raise Unknown when the top folder changed (the whole tree is copied then), when
    the walk fails, or when more than LIST_LIMIT entries changed."""
    if os.lstat(root).st_ctime_ns > since_ns:
        raise Unknown('the top folder of the source changed')
    argv = changed_argv(root, since_ns, ignore, '(', '-type', 'd', '-fprintf', lists['folders'], '%P\\0', '-o',
                        '-fprintf', lists['others'], '%P\\0', ')', '-fprintf', lists['sizes'], '%y %s\\n')
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False, env=dict(os.environ, LC_ALL='C'))
    if proc.returncode != 0:
        raise Unknown('the walk of the changes failed (find exited with %d: %s)'
                      % (proc.returncode, proc.stderr.decode('utf-8', 'replace').strip()[-500:]))
    entries = files = size = 0
    with open(lists['sizes'], 'rb') as handle:
        for line in handle:
            entries += 1
            kind, dummy, value = line.partition(b' ')
            if kind == b'f':
                files += 1
                size += int(value)
    if entries > LIST_LIMIT:
        raise Unknown('%d entries changed, more than the %d a changes pass lists' % (entries, LIST_LIMIT))
    return entries, files, size


def start_first_change(root, since_ns, ignore):
    """Start a ``find`` that names the first entry below ``root`` changed after ``since_ns`` (names
    in ``ignore`` skipped); it walks the whole tree when nothing changed, which also brings the
    tree's folders and inodes into memory for the seal walk after the copy. See first_change."""
    return subprocess.Popen(changed_argv(root, since_ns, ignore, '-printf', '%P\\n', '-quit'),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, LC_ALL='C'), preexec_fn=lifeline.preexec())


def first_change(proc, root, since_ns):
    """The relative path (bytes) of the first changed entry the ``find`` of start_first_change
    named, ``.`` for the top folder, or None; raise Unknown when the walk failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise Unknown('the walk of the destination failed (find exited with %d: %s)'
                      % (proc.returncode, err.decode('utf-8', 'replace').strip()[-500:]))
    if out.strip():
        return out.splitlines()[0]
    return b'.' if os.lstat(root).st_ctime_ns > since_ns else None


def read_list(list_path):
    """The relative paths (bytes) of a list written by list_changed."""
    with open(list_path, 'rb') as handle:
        return [rel for rel in handle.read().split(b'\0') if rel]


def ancestors(rels):
    """The folders above the paths ``rels`` (relative, bytes), the top one as ``.``."""
    found = {b'.'}
    for rel in rels:
        parent = os.path.dirname(rel)
        while parent and parent not in found:
            found.add(parent)
            parent = os.path.dirname(parent)
    return found


def remove_quietly(*paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise


def compare_set(root, listed, folders, ignore):
    """What a changes pass compares after its copy: the ``listed`` paths (relative, bytes), the
    folders above them and everything below the listed ``folders`` (among ``listed``, as
    list_changed told them apart) of the tree at ``root`` (bytes), which rsync copied whole. Raise
    Unknown when that is more than twice LIST_LIMIT entries."""
    ignore = frozenset(os.fsencode(name) for name in ignore or ())
    wanted = set(listed)
    wanted.update(ancestors(listed))
    stack = list(folders)
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(os.path.join(root, rel))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        for name in names:
            if name in ignore:
                continue
            child = rel + b'/' + name
            if child not in wanted:
                wanted.add(child)
                full = os.path.join(root, child)
                if os.path.isdir(full) and not os.path.islink(full):
                    stack.append(child)
        if len(wanted) > 2 * LIST_LIMIT:
            raise Unknown('more than %d entries are below the folders that changed' % (2 * LIST_LIMIT))
    return wanted


def restore_folder_times(source, destination, listed):
    """Give the folders above the ``listed`` paths (relative, bytes; the listed ones excepted,
    rsync set theirs) in ``destination`` the modification time of the same folder in ``source``:
    rsync wrote into them (a file's temporary copy, renamed over it) but set no times on folders it
    was not given. Those folders did not change in the source (else they would be listed). Returns
    how many were set."""
    given = set(listed)
    fixed = 0
    for rel in sorted(ancestors(listed) - given):
        if rel == b'.':
            src, dst = source, destination
        else:
            src, dst = os.path.join(source, rel), os.path.join(destination, rel)
        src_st = os.stat(src) if rel == b'.' else os.lstat(src)
        dst_st = os.stat(dst) if rel == b'.' else os.lstat(dst)
        if not (stat.S_ISDIR(src_st.st_mode) and stat.S_ISDIR(dst_st.st_mode)):
            continue
        if dst_st.st_mtime_ns != src_st.st_mtime_ns:
            os.utime(dst, ns=(dst_st.st_atime_ns, src_st.st_mtime_ns))
            fixed += 1
    return fixed
