# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What changed in a posix share instance since a replica's last update (docs/replication.md,
"Updates": the posix update that copies only what changed).

Every change to an entry (content, mode, owner, xattrs, ACLs, a link, a rename of it) sets its
change time from the kernel's clock, which no program can set; adding, removing or renaming an
entry changes its folder. So after a verified update of the tree as it was at a point P, the
entries with a change time after P, and the folders among them taken whole, are all that the
next update has to copy. That holds only while three things stay true, and each is checked:

- the clock was not set back: a *mark* (an empty folder made in the pool's replication folder,
  on the instance's filesystem) gives the host's clock as the filesystem stamps it; its boot id
  and the offset between the real-time clock and the time since boot (``/proc/uptime``) must be
  the same at the next update (within CLOCK_TOLERANCE seconds, a drift backwards widens the walk);
- the filesystem is the one that was walked: the previous mark is still there with the same
  inode, device and change time (a filesystem restored from a backup, or another one mounted at
  the pool, does not have it), and the instance is on the mark's filesystem;
- the replica was not changed since its update: the replica pool's own mark, made after the
  update, and no entry of the replica instance changed after it.

When one of them fails, or any step of this fails, the update copies the whole tree as before;
the reason is returned (``last_update.full_send_reason``). Only the host's filesystem calls and
``find`` are used, through the backend's transport, so this works on remote pools unchanged.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import uuid

# The data node's changes pass lists changes with the same find (one argv builder for both).
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.changes import changed_argv

#: name prefix of the mark folders in a pool's replication folder of a share
MARK_PREFIX = 'point-'
#: name of the list of changed entries an update hands to rsync (NUL-separated, relative paths)
CHANGES_LIST = 'changes.list'
#: seconds the offset between the real-time clock and the time since boot may move between two
#: updates (NTP slews it by milliseconds; a larger move is a clock that was set)
CLOCK_TOLERANCE = 1.0
#: seconds of /proc/uptime's resolution (two decimals) and of reading it after the mark
UPTIME_SLACK = 0.02
#: seconds between the end of a pass and the replica's mark made after it (MARK_GAP > UPTIME_SLACK
#: plus the coarse clock's tick): the reach back of a check against that mark stays after the pass
MARK_GAP = 0.04
BOOT_ID = '/proc/sys/kernel/random/boot_id'
UPTIME = '/proc/uptime'


class Unknown(Exception):
    """What changed cannot be told from change times; the message says why (the update copies
    the whole tree)."""


def _clock(transport):
    """(boot id, seconds since boot) of the host."""
    boot_id = transport.read_bytes(BOOT_ID).decode('ascii', 'replace').strip()
    uptime = float(transport.read_bytes(UPTIME).split()[0])
    return boot_id, uptime


def make_mark(transport, folder, keep=()):
    """Make a new mark folder in ``folder`` (created when missing) and return what identifies it
    and the host's clock at that moment: ``name``, ``ino``, ``dev``, ``ctime_ns`` (the host's
    clock as the filesystem stamps change times), ``boot_id``, ``offset`` (real time less the
    time since boot, seconds). Other marks in ``folder`` are removed first, but those in ``keep``."""
    try:
        transport.makedirs(folder, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    for entry in transport.listdir(folder):
        if entry.startswith(MARK_PREFIX) and entry not in keep:
            transport.rmdir(os.path.join(folder, entry))
    name = MARK_PREFIX + uuid.uuid4().hex
    path = os.path.join(folder, name)
    transport.mkdir(path, 0o700)
    st = transport.lstat(path)
    boot_id, uptime = _clock(transport)
    return {'name': name, 'ino': st.ino, 'dev': st.dev, 'ctime_ns': st.ctime_ns, 'boot_id': boot_id,
            'offset': st.ctime_ns / 1e9 - uptime}


def marks_named(replicas):
    """The names of the marks the replicas' records name (their next updates start from them)."""
    names = set()
    for replica in replicas or []:
        for side in ('source', 'replica'):
            name = ((replica.get('change_marks') or {}).get(side) or {}).get('name')
            if name:
                names.add(name)
    return names


def drop_marks(transport, folder, keep):
    """Remove the marks in ``folder`` that are not in ``keep`` and a list a crash left behind;
    remove ``folder`` itself when nothing else is in it. True when something was removed."""
    try:
        entries = transport.listdir(folder)
    except OSError:
        return False
    dropped = False
    for entry in entries:
        if (entry.startswith(MARK_PREFIX) and entry not in keep) or entry == CHANGES_LIST:
            path = os.path.join(folder, entry)
            if entry == CHANGES_LIST:
                transport.unlink(path)
            else:
                transport.rmdir(path)
            dropped = True
    if transport.is_empty_dir(folder):
        transport.rmdir(folder)
        dropped = True
    return dropped


def check_mark(transport, folder, mark, now, instance, where):
    """Raise Unknown unless the earlier ``mark`` in ``folder`` still holds against ``now`` (a mark
    made just before) for the tree at ``instance``; return the seconds the clock moved back
    between them (0 when it did not). ``where`` names the side for the message."""
    if not isinstance(mark, dict) or not all(k in mark for k in ('name', 'ino', 'dev', 'ctime_ns', 'boot_id',
                                                                 'offset')):
        raise Unknown('the %s has no mark of an earlier update' % where)
    try:
        st = transport.lstat(os.path.join(folder, mark['name']))
    except OSError:
        raise Unknown('the mark of the last update is gone from the %s (a filesystem restored or mounted '
                      'anew, or a crash)' % where)
    if (st.ino, st.dev, st.ctime_ns) != (mark['ino'], mark['dev'], mark['ctime_ns']):
        raise Unknown('the mark of the last update on the %s is not the one recorded (another filesystem)' % where)
    if transport.lstat(instance).dev != st.dev:
        raise Unknown('the %s instance is not on the filesystem of its mark (a mount point)' % where)
    if now['boot_id'] != mark['boot_id']:
        raise Unknown('the host of the %s restarted since the last update' % where)
    back = mark['offset'] - now['offset']
    if abs(back) > CLOCK_TOLERANCE:
        raise Unknown('the clock of the host of the %s was set %s by %.1f s since the last update'
                      % (where, 'back' if back > 0 else 'forward', abs(back)))
    return max(0.0, back)


def since(mark, back, margin):
    """The change time (ns) after which an entry counts as changed since ``mark``: the mark's, less
    how far the clock moved back since (``back``, seconds, from check_mark) and the slack of that
    measure; less ``margin`` seconds too for a mark made before a pass (the pass's walk proved no
    change after the mark less that margin). A mark made after a pass (``after_pass``) is later
    than every write of the pass by MARK_GAP: a change after it has a change time of at least its
    own (one coarse clock), so one nanosecond less takes in one in the same tick."""
    reach = (0 if mark.get('after_pass') else margin) + back + UPTIME_SLACK
    return int(mark['ctime_ns']) - 1 - int(reach * 1e9)


def root_changed(transport, path, since_ns):
    return transport.lstat(path).ctime_ns > since_ns


def list_changes(transport, path, since_ns, ignore, list_path, what):
    """Write into ``list_path`` (on the host) the entries below ``path`` whose change time is
    after ``since_ns``: paths relative to ``path``, each ended by a NUL (rsync's ``--from0
    --files-from``); names in ``ignore`` are skipped at any depth, as rsync skips them. Raise
    Unknown when the instance's own folder changed (an entry added or removed at its top: the
    whole tree is copied) or when the walk fails (an entry removed while walked included)."""
    if root_changed(transport, path, since_ns):
        raise Unknown('the top folder of the share changed')
    rc, out, err = transport.run(changed_argv(path, since_ns, ignore, '-fprintf', list_path, '%P\\0'), what,
                                 check=False)
    if rc != 0:
        raise Unknown('the walk of the changes failed (find exited with %d: %s)' % (rc, (err or out).strip()[-500:]))


def first_change(transport, path, since_ns, ignore, what):
    """The first entry below ``path`` (or ``path`` itself) changed after ``since_ns``, or None;
    a walk that fails raises Unknown."""
    if root_changed(transport, path, since_ns):
        return path
    rc, out, err = transport.run(changed_argv(path, since_ns, ignore, '-print', '-quit'), what, check=False)
    if rc != 0:
        raise Unknown('the walk of the replica failed (find exited with %d: %s)' % (rc, (err or out).strip()[-500:]))
    return out.strip() or None
