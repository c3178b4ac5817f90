# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Peak memory (RSS) of all the processes of one job together, sampled from /proc.

A run of ours is ``ansible-playbook`` (the controller and the module it runs) and the job's detached
worker, which starts a session of its own and forks or starts helpers (copying processes, the
hashing process, the walkers of the verification, rsync). A process belongs to the run when its
environment carries this sampler's marker (every process the run starts inherits it) or, where the
cgroup v1 memory controller is writable, when it is in the run's cgroup (a process that cleared its
environment is still there). The cgroup is used for membership only: its usage counts the page
cache of the copied files, which is not the job's memory.

Every ``interval`` seconds the sampler sums VmRSS over the members: ``peak_rss_bytes`` is the largest
sum seen for the job (the worker, whose pid the job folder's pid file gives, and every process of
its session: the worker starts one, and its helpers and rsync stay in it), ``peak_rss_all_bytes``
the same over every member, ansible-playbook's processes and the module included (a sum of RSS
counts the pages that forked processes share once per process). ``processes`` gives
each member's own peak (VmHWM, the kernel's high-water mark, so also a peak between two samples).
A peak shorter than the interval can be missed by the sums; the per-process figures cannot miss it.

A sum of RSS counts a page that several processes share (the pages a forked helper still shares
with the worker that forked it) once per process. ``peak_pss_bytes`` is the largest sum of their
proportional set sizes (``/proc/PID/smaps_rollup``: a shared page split between its sharers), read
every ``pss_every``-th sample (it costs the kernel a walk of each process's page tables): the
memory the job really took, never more than the RSS sum.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

MARKER = 'MOBILITY_BENCH_MEMORY_TAG'
CGROUP_ROOT = '/sys/fs/cgroup/memory'


def _read(path, mode='r'):
    try:
        with open(path, mode) as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


def process_info(pid, proc='/proc'):
    """(rss_bytes, hwm_bytes, session id, name, command line, parent pid) of ``pid``, or None if it is gone."""
    status = _read('%s/%d/status' % (proc, pid))
    stat = _read('%s/%d/stat' % (proc, pid))
    if status is None or stat is None:
        return None
    rss = hwm = 0
    name = ''
    for line in status.splitlines():
        if line.startswith('VmRSS:'):
            rss = int(line.split()[1]) * 1024
        elif line.startswith('VmHWM:'):
            hwm = int(line.split()[1]) * 1024
        elif line.startswith('Name:'):
            name = line.split(None, 1)[1].strip() if len(line.split()) > 1 else ''
    # The fields after the command name (which may hold spaces and parentheses): state, ppid, pgrp, session.
    fields = stat[stat.rfind(')') + 2:].split()
    try:
        session = int(fields[3])
        ppid = int(fields[1])
    except (IndexError, ValueError):
        return None
    cmdline = (_read('%s/%d/cmdline' % (proc, pid), 'rb') or b'').replace(b'\0', b' ').strip()
    return rss, hwm, session, name, cmdline.decode('utf-8', 'replace')[:160], ppid


def pss_bytes(pid, proc='/proc'):
    """The proportional set size of ``pid`` in bytes, or None (gone, or no smaps_rollup)."""
    text = _read('%s/%d/smaps_rollup' % (proc, pid))
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith('Pss:'):
            return int(line.split()[1]) * 1024
    return None


def has_marker(pid, token, proc='/proc'):
    environ = _read('%s/%d/environ' % (proc, pid), 'rb')
    return environ is not None and ('%s=%s' % (MARKER, token)).encode('ascii') in environ.split(b'\0')


class JobMemory:
    """Samples the memory of the processes started with ``env()`` (and attached with ``attach``)."""

    def __init__(self, interval=0.1, proc='/proc', cgroup_root=CGROUP_ROOT, leader_pid_file=None, pss_every=5):
        self.interval = interval
        self.pss_every = pss_every
        self.peak_pss = 0
        self.leader_pid_file = leader_pid_file
        self.leader = None
        self.proc = proc
        self.token = uuid.uuid4().hex
        self.cgroup = None
        self.cgroup_error = None
        self.members = {}  # pid -> {'name', 'cmdline', 'session', 'hwm'}
        self.peak_job = self.peak_all = 0
        self.peak_job_breakdown = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = None
        if cgroup_root and os.path.isdir(cgroup_root):
            path = os.path.join(cgroup_root, 'mobility-bench-%d-%s' % (os.getpid(), self.token[:8]))
            try:
                os.mkdir(path)
                self.cgroup = path
            except OSError as exc:
                self.cgroup_error = str(exc)

    def env(self, base=None):
        """The environment for the run's first process: ``base`` (or this one's) plus the marker."""
        env = dict(os.environ if base is None else base)
        env[MARKER] = self.token
        return env

    def attach(self, pid):
        """Put ``pid`` in the cgroup (right after it started, before it forked anything)."""
        if self.cgroup:
            try:
                with open(os.path.join(self.cgroup, 'cgroup.procs'), 'w') as handle:
                    handle.write('%d\n' % pid)
            except OSError as exc:
                self.cgroup_error = str(exc)

    def _candidates(self):
        pids = set()
        if self.cgroup:
            text = _read(os.path.join(self.cgroup, 'cgroup.procs')) or ''
            pids.update(int(item) for item in text.split())
        for entry in os.listdir(self.proc):
            if entry.isdigit():
                pid = int(entry)
                if pid not in pids and has_marker(pid, self.token, self.proc):
                    pids.add(pid)
        return pids

    def _job_session(self):
        """The session of the job: its leader's pid (read from ``leader_pid_file`` once it exists)."""
        if self.leader is None and self.leader_pid_file:
            text = _read(self.leader_pid_file)
            if text and text.strip().isdigit():
                self.leader = int(text.strip())
        return self.leader

    def sample(self):
        """One sample; returns the number of live members."""
        session_of_job = self._job_session()
        with_pss = self.pss_every and self.samples % self.pss_every == 0
        total_job = total_all = total_pss = 0
        breakdown = []
        alive = 0
        for pid in self._candidates():
            info = process_info(pid, self.proc)
            if info is None:
                continue
            rss, hwm, session, name, cmdline, ppid = info
            if not rss and not cmdline:
                continue  # a zombie: its memory is gone
            alive += 1
            member = self.members.setdefault(pid, {'pid': pid, 'name': name, 'cmdline': cmdline, 'ppid': ppid,
                                                   'session': session, 'hwm_bytes': 0})
            # The job's leader (the worker); the others of its session are forked helpers or programs.
            member['leader'] = pid == session_of_job
            member['hwm_bytes'] = max(member['hwm_bytes'], hwm, rss)
            member['in_job'] = session_of_job is not None and session == session_of_job
            member['cmdline'] = cmdline  # a child between fork and exec showed its parent's
            total_all += rss
            if member['in_job']:
                total_job += rss
                if with_pss:
                    total_pss += pss_bytes(pid, self.proc) or 0
                breakdown.append((rss, pid, name))
        self.samples += 1
        self.peak_pss = max(self.peak_pss, total_pss)
        self.peak_all = max(self.peak_all, total_all)
        if total_job > self.peak_job:
            self.peak_job = total_job
            self.peak_job_breakdown = [{'pid': pid, 'name': name, 'rss_bytes': rss}
                                       for rss, pid, name in sorted(breakdown, reverse=True)]
        return alive

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self):
        self._thread = threading.Thread(target=self._loop, name='job-memory')
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self, linger=10.0):
        """Stop sampling once no member is left (at most ``linger`` seconds after the call)."""
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline:
            if not self.sample():
                break
            time.sleep(self.interval)
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.cgroup:
            try:
                os.rmdir(self.cgroup)
            except OSError:
                pass  # a member still lives (it would be moved to the root cgroup when it ends)
        return self.result()

    def result(self):
        processes = sorted(self.members.values(), key=lambda item: -item['hwm_bytes'])
        return {'peak_rss_bytes': self.peak_job, 'peak_rss_all_bytes': self.peak_all,
                'peak_pss_bytes': self.peak_pss if self.pss_every else None,
                'peak_breakdown': self.peak_job_breakdown[:12],
                'processes': [{'pid': item['pid'], 'ppid': item['ppid'], 'name': item['name'], 'cmdline': item['cmdline'],
                               'in_job': item.get('in_job', False), 'leader': item.get('leader', False),
                               'hwm_bytes': item['hwm_bytes']}
                              for item in processes[:12]],
                'process_count': len(self.members), 'samples': self.samples, 'interval_seconds': self.interval,
                'membership': 'environment marker + cgroup' if self.cgroup else 'environment marker',
                'cgroup_error': self.cgroup_error}
