# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every process a copy job starts dies with its worker, and none of them can block forever.

The worker forks helpers (the copying processes of the first copy, the hashing process that runs
beside rsync, the two walking processes of a verification) and starts rsync. Each of them:

* gets ``PR_SET_PDEATHSIG`` (SIGKILL), so that the kernel kills it when the worker dies, whatever
  killed the worker (``kill -9``, the OOM killer); a child whose worker was already gone before the
  signal was armed exits at once;
* closes, first thing after the fork, the ends of the worker's pipes that it inherited and does
  not use. A forked child that keeps the worker's end of its own pipe never sees the end of the
  file when the worker dies, and a child that keeps another process's pipe keeps that process's
  reader alive: that is how a copying process waited forever for work, and rsync and the hashing
  process waited forever to write, after the worker was killed.

The worker, when it ends, and the module, when it finds a worker gone, kill whatever is left in
the worker's process group (``group_members``).

The helpers whose work only saves later work or feeds the progress line (the hashing process beside
rsync, the count of the source) run at a lower CPU priority (``lower_priority``): on a final pass
that changes little, rsync's own walk of both trees keeps the CPUs busy, and two more walks of the
source beside it made the pass slower by as much as they took; at a lower priority they take
only the CPU time that the copy leaves. Once rsync has ended, a count still running gets the
worker's priority back (``restore_priority``, where the worker is privileged), so that the job does
not then wait behind other work of the machine.

Standard library only, Python 3.8+, Linux (elsewhere the death signal is simply not armed).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ctypes
import errno
import os
import signal
import threading

PR_SET_PDEATHSIG = 1
# Added to the nice value of a helper that yields the CPU to the copy (see lower_priority).
BACKGROUND_NICE = 10
_PRCTL = []


def _prctl():
    """libc's prctl, loaded once (before any fork, so a child only calls it), or None."""
    if not _PRCTL:
        function = None
        try:
            function = ctypes.CDLL(None, use_errno=True).prctl
            function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
        _PRCTL.append(function)
    return _PRCTL[0]


def arm(parent, signum=signal.SIGKILL):
    """In a child of ``parent``: be sent ``signum`` when ``parent`` dies; exit if it already has.

    Linux sends the signal when the *thread* that forked the child ends: fork from the thread that
    lives as long as the child is needed (the worker's main thread)."""
    function = _prctl()
    if function is not None:
        function(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if parent and os.getppid() != parent:
        os._exit(1)  # the parent died between the fork and the prctl: nobody is left to serve


def release(inherited):
    """Close connections (or file objects, or fds) a child inherited from its parent and does not use."""
    for item in inherited or ():
        try:
            if isinstance(item, int):
                os.close(item)
            else:
                item.close()
        except (IOError, OSError):
            pass


def child_start(parent, inherited=()):
    """First thing in a forked child: close what it inherited, then die with ``parent``."""
    release(inherited)
    arm(parent)


def lower_priority(increment=BACKGROUND_NICE):
    """Yield the CPU to the copy: raise the nice value of the calling thread (Linux schedules threads
    one by one; in a helper just forked, the thread is the whole process, and the threads it starts
    inherit the value). Never raises: a helper that cannot lower its priority runs as before."""
    try:
        who = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, who, min(19, os.getpriority(os.PRIO_PROCESS, who) + increment))
    except (AttributeError, OSError):
        pass


def restore_priority(task):
    """Give ``task`` (a process id, or a thread's native id) the calling thread's nice value again,
    after it lowered its own with lower_priority. Lowering a nice value needs privilege: elsewhere
    nothing changes. Never raises."""
    try:
        os.setpriority(os.PRIO_PROCESS, task, os.getpriority(os.PRIO_PROCESS, 0))
    except (AttributeError, OSError):
        pass


def preexec(parent=None):
    """A ``preexec_fn`` for subprocess.Popen: the program (rsync) dies with this process.

    Only safe when the calling process runs no other thread at the time of the Popen call (the
    child runs Python code between fork and exec)."""
    parent = parent or os.getpid()
    _prctl()

    def setup():
        arm(parent)
    return setup


def proc_stat(pid):
    """``(state letter, process group)`` of a process, or None when it does not exist."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError):
        return None
    fields = data[data.rfind(b')') + 2:].split()
    try:
        return fields[0].decode('ascii'), int(fields[2])
    except (IndexError, ValueError):
        return None


def group_members(pgid, exclude=()):
    """Live (not zombie) processes of process group ``pgid``, other than ``exclude``."""
    members = []
    try:
        names = os.listdir('/proc')
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in exclude:
            continue
        info = proc_stat(pid)
        if info is not None and info[1] == pgid and info[0] not in ('Z', 'X', 'x'):
            members.append(pid)
    return members


def kill_group_members(pgid, exclude=(), signum=signal.SIGKILL):
    """Send ``signum`` to the other live members of ``pgid``; return their pids."""
    members = group_members(pgid, exclude)
    signal_pids(members, signum)
    return members


def signal_pids(pids, signum):
    """Send ``signum`` to each of ``pids``; one that has exited meanwhile is no error."""
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
