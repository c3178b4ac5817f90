# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data copy jobs on a data node: start, attach, resume, wait, cancel and remove.

A job runs detached (its own session) so that a lost Ansible connection does not stop it;
this side only reads and writes the job folder and signals the worker's process group.
See ``state.py`` for the files of a job folder and ``worker.py`` for what the worker does.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import time

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import changes as changes_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fastcopy as fastcopy_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags as fileflags_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileread as fileread_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import layout as layout_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline as lifeline_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import manifest as manifest_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import plumbing as plumbing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import prehash as prehash_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import progress as progress_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import remote as remote_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import seal as seal_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import shipping as shipping_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import ssh_masters as ssh_masters_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import walk as walk_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import worker as worker_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import xattrs as xattrs_lib
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.names import validate_name

# The request keys that make two requests "the same" (a completed job is not run again).
# A new pass of a migration (another pass_id) runs a completed job again: its report must be of that pass.
REQUEST_KEYS = ('source', 'destination', 'ignore_files', 'check_hash', 'hash_algorithm', 'rsync_options',
                'rsync_base_options', 'final_pass', 'bwlimit', 'migration_id', 'pass_id', 'hosts')
# The modules the worker needs, shipped into <job folder>/lib/ at each launch.
WORKER_MODULES = (state_lib, lifeline_lib, seal_lib, changes_lib, fileflags_lib, rsync_lib, hashing_lib, xattrs_lib, fileread_lib,
                  hashcache_lib, manifest_lib, walk_lib, plumbing_lib, shipping_lib, ssh_masters_lib, remote_lib,
                  prehash_lib, compare_lib, fastcopy_lib, progress_lib, worker_lib)
PACKAGE_DIRS = ('ansible_collections', 'storage', 'mobility', 'plugins', 'module_utils', 'data_copy')
LOCK_TIMEOUT = 30.0
# Finished job folders are pruned when a job is launched: those not updated for this many days,
# then the oldest while they take more than this many MiB together (0: no such bound).
KEEP_FINISHED_DAYS = 30
KEEP_FINISHED_MB = 4096
TERM_TIMEOUT = 5.0
KILL_TIMEOUT = 5.0


class MissingLibrary(InvalidRequest):
    """A Python package the request needs is not installed; ``library`` names it."""

    error_type = 'missing_library'

    def __init__(self, message, library):
        super(MissingLibrary, self).__init__(message, library=library)
        self.library = library


def ship_worker(folder):
    """Write the worker (launcher and library) into ``folder``; return the launcher's path."""
    lib = os.path.join(folder, state_lib.WORKER_LIB)
    package = lib
    for name in PACKAGE_DIRS:
        package = os.path.join(package, name)
        if not os.path.isdir(package):
            os.makedirs(package, 0o700)
        # Regular packages, so that no other ansible_collections on sys.path can shadow these.
        state_lib.atomic_write(os.path.join(package, '__init__.py'), b'')
    for module in WORKER_MODULES:
        name = module.__name__.rsplit('.', 1)[-1]
        state_lib.atomic_write(os.path.join(package, name + '.py'), shipping_lib.source_of(module).encode('utf-8'))
    script = os.path.join(folder, state_lib.WORKER_SCRIPT)
    state_lib.atomic_write(script, worker_lib.LAUNCHER.encode('utf-8'))
    return script


# ---------------------------------------------------------------------- processes


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return [arg for arg in handle.read().split(b'\0') if arg]
    except (IOError, OSError):
        return []


def _mentions(args, paths):
    wanted = set(os.fsencode(path) for path in paths)
    for arg in args:
        if arg in wanted or os.path.realpath(arg) in wanted:
            return True
    return False


def worker_alive(folder, pid):
    """True when ``pid`` is a live (not zombie) process whose command line names the job folder."""
    if not pid:
        return False
    info = lifeline_lib.proc_stat(pid)
    if info is None or info[0] in ('Z', 'X', 'x'):
        return False
    return _mentions(_cmdline(pid), (folder, os.path.join(folder, state_lib.WORKER_SCRIPT)))


def group_members(pgid, folder, destination=None):
    """Live processes of process group ``pgid`` that belong to this job.

    A member belongs to the job when its command line names the job folder (the worker) or is an
    rsync naming the destination; a reused process group id never makes a stranger a target.
    """
    if not pgid:
        return []
    marks = [folder, os.path.join(folder, state_lib.WORKER_SCRIPT)]
    if destination:
        marks.append(rsync_lib.tree_argument(destination))
    return [pid for pid in lifeline_lib.group_members(pgid) if _mentions(_cmdline(pid), marks)]


def _in_group(pid, pgid):
    info = lifeline_lib.proc_stat(pid)
    return info is not None and info[0] not in ('Z', 'X', 'x') and info[1] == pgid


def _size(count):
    count = float(count or 0)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if count < 1024 or unit == 'TiB':
            return ('%d %s' if unit == 'B' else '%.1f %s') % (count, unit)
        count /= 1024


GONE_WHILE = {
    'scanning': 'while it was starting',
    'copying': 'while it was copying',
    'verifying': 'while it was verifying the copy (the copy itself had ended; the verification runs again)',
    'done': 'after its last step',
}


def exit_description(returncode):
    """How a worker process ended, from its return code (negative: the signal that ended it)."""
    if returncode is None:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = 'signal %d' % -returncode
        return 'signal %d (%s)' % (-returncode, name)
    return 'exit code %d' % returncode


def gone_error(job_id, request, status, returncode=None):
    """Why a job whose worker disappeared without a final status failed: which pass, where it was,
    how its process ended when this run knows it (``returncode`` of the worker this run started),
    what it had done, and that running it again resumes it."""
    phase = status.get('phase') or 'scanning'
    if returncode is None:
        how = 'its process was killed or the data node restarted'
    elif returncode < 0:
        how = 'its process was ended by %s, sent by another process or the kernel,' % exit_description(returncode)
    else:
        how = 'its process ended with %s (worker.log may say why)' % exit_description(returncode)
    done = '%s%%, %s of %s files and %s of %s' % (
        status.get('percent') or 0, status.get('files_done') or 0, status.get('files_total') or '?',
        _size(status.get('bytes_done')), _size(status.get('bytes_total')) if status.get('bytes_total') else '?')
    return ('The worker of data copy job %s (%s, attempt %s) is gone without a final status: %s %s. Its last '
            'status (%s) said %s done. Nothing copied is lost: start the job again (state=started; rerunning the '
            'phase playbook does) and it resumes, without copying finished files again'
            % (job_id, 'the final pass' if request.get('final_pass') else 'a copy pass', status.get('attempt') or 1,
               how, GONE_WHILE.get(phase, 'in phase %s' % phase),
               status.get('updated_at') or 'none written', done))


# ---------------------------------------------------------------------- jobs


class JobLock(object):
    """Serializes module runs acting on one job (not the worker): ``<state_dir>/.<job_id>.lock``."""

    def __init__(self, state_dir, job_id, clock, sleeper, timeout=LOCK_TIMEOUT):
        self.path = os.path.join(state_dir, '.%s.lock' % job_id)
        self.state_dir = state_dir
        self.job_id = job_id
        self.clock = clock
        self.sleeper = sleeper
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = self.clock() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._current():
                    return self
                # The job was removed (and its lock file with it) while this run waited: lock the
                # file that is there now.
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                continue
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if self.clock() >= deadline:
                os.close(self.fd)
                self.fd = None
                raise Busy('Data copy job %s is busy: another run has held its lock for %d seconds'
                           % (self.job_id, self.timeout))
            self.sleeper(0.1)

    def _current(self):
        """True when the locked file is still the one at the lock's path."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except OSError:
            return False

    def unlink(self):
        """Remove the lock file while holding it (a job that is removed leaves nothing behind)."""
        try:
            os.unlink(self.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def __exit__(self, *exc_info):
        if self.fd is not None:
            try:
                # A run that looked at a job that does not exist (a status query after the job was
                # removed, a cancel of a pass that never ran) leaves no lock file behind.
                if not os.path.lexists(os.path.join(self.state_dir, self.job_id)) and self._current():
                    self.unlink()
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                self.fd = None


class DataCopyJobs(object):
    """The data copy jobs of one state folder on this data node."""

    def __init__(self, state_dir=None, check_mode=False, python=None, clock=time.monotonic, sleeper=time.sleep,
                 term_timeout=TERM_TIMEOUT, kill_timeout=KILL_TIMEOUT, keep_finished_days=KEEP_FINISHED_DAYS,
                 keep_finished_mb=KEEP_FINISHED_MB):
        self.state_dir = os.path.realpath(os.path.expanduser(state_dir or layout_lib.default_state_dir()))
        # The bound on what stays on a data node: applied each time a job is launched (see prune).
        self.keep_finished_days = keep_finished_days
        self.keep_finished_mb = keep_finished_mb
        self.check_mode = check_mode
        self.python = python or sys.executable
        self.clock = clock
        self.sleeper = sleeper
        self.term_timeout = term_timeout
        self.kill_timeout = kill_timeout
        # The workers this object started (pid -> Popen): while this run lasts, a worker that is gone
        # is its child, and its exit status says how it ended (see exit_status); one that has not
        # ended is alive, also in the moment after its exec when the kernel shows no command line
        # yet (a view right after the start took such a worker for gone under load).
        self._launched = {}

    # ------------------------------------------------------------------ reading

    def folder(self, job_id):
        return os.path.join(self.state_dir, validate_name(job_id, 'job id'))

    def _lock(self, job_id):
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, 0o700)
        return JobLock(self.state_dir, job_id, self.clock, self.sleeper)

    def _pid(self, folder, status):
        pid = state_lib.read_pid(folder)
        if pid is None and status:
            pid = status.get('pid')
        return pid

    def view(self, job_id, looked_again=False):
        """The job as the module returns it (``state: absent`` when there is no such job)."""
        folder = self.folder(job_id)
        request = state_lib.read_json(os.path.join(folder, state_lib.JOB_FILE))
        job = {'id': job_id, 'folder': folder, 'state': 'absent', 'phase': None,
               'progress': state_lib.empty_progress(), 'report': None, 'error': None,
               'final_job_id': layout_lib.final_job_id(job_id)}
        job.update(layout_lib.job_paths(self.state_dir, job_id))
        if request is None:
            return job
        status = state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE)) or {}
        job.update(source=request.get('source'), destination=request.get('destination'),
                   state=status.get('state') or 'running', phase=status.get('phase') or 'scanning',
                   error=status.get('error'), pid=self._pid(folder, status), attempt=status.get('attempt'),
                   started_at=status.get('started_at'), updated_at=status.get('updated_at'),
                   warnings=list(status.get('warnings') or []))
        for field in state_lib.PROGRESS_FIELDS:
            if field in status:
                job['progress'][field] = status[field]
        job['final_pass'] = bool(request.get('final_pass'))
        job['alive'] = worker_alive(folder, job['pid']) or (
            job['pid'] in self._launched and self.exit_status(job['pid']) is None)
        if not job['alive'] and job['pid'] is None and job['state'] == 'running':
            # Between writing status.json and recording the new worker's pid: starting.
            job['alive'] = self._recent(os.path.join(folder, state_lib.STATUS_FILE))
        if status.get('interrupted'):
            job['interrupted'] = True  # found gone by an earlier run (see settle)
        if job['state'] == 'running' and not job['alive']:
            if not looked_again and self._ended(folder):
                # The worker wrote its last status and exited after this view read status.json.
                return self.view(job_id, looked_again=True)
            job['interrupted'] = True
            job['state'] = 'failed'
            job['error'] = gone_error(job_id, request, status, self.exit_status(job['pid']))
        if job['state'] != 'running':
            job['report'] = state_lib.read_json(os.path.join(folder, state_lib.REPORT_FILE))
            if job['report'] is None:
                # No report (a worker that was killed): the end of its log says how far it got.
                job['log_tail'] = state_lib.log_tail(os.path.join(folder, state_lib.WORKER_LOG))
        job['progress_line'] = progress_lib.progress_line(dict(job['progress'], state=job['state'], phase=job['phase']),
                                                          final_pass=job['final_pass'])
        return job

    def exit_status(self, pid):
        """The return code of the worker ``pid`` that this object started, reaping it; None while it
        runs, or when another run started it (its exit status went to that run)."""
        process = self._launched.get(pid)
        return process.poll() if process is not None else None

    @staticmethod
    def _ended(folder):
        """Whether status.json, read now, says that the job stopped running."""
        status = state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE)) or {}
        return status.get('state') not in (None, 'running')

    @staticmethod
    def _recent(path, seconds=15.0):
        try:
            return time.time() - os.stat(path).st_mtime < seconds
        except OSError:
            return False

    def wait(self, job_id, seconds):
        """Wait up to ``seconds`` (monotonic) for the job to stop running; return its view.

        Where Linux gives a pidfd of the worker, the wait ends as soon as the worker exits, not at
        the next look at its status. A worker found gone is settled (see settle).
        """
        deadline = self.clock() + max(0, seconds or 0)
        interval = 0.1
        watched = None
        try:
            while True:
                job = self.view(job_id)
                remaining = deadline - self.clock()
                if job['state'] != 'running' or remaining <= 0:
                    if job['state'] == 'failed' and job.get('interrupted') and not self.check_mode:
                        job = self.settle(job_id) or job
                    return job
                if watched is None and job.get('alive') and job.get('pid'):
                    watched = self._pidfd(job['pid'])
                if watched:
                    select.select([watched], [], [], min(interval, remaining))
                else:
                    self.sleeper(min(interval, remaining))
                interval = min(1.0, interval * 2)
        finally:
            if watched:
                os.close(watched)

    def settle(self, job_id):
        """A job whose worker is gone: stop what is left of its process group and record in its
        status that it failed, and why (``interrupted``), so that every reader of ``status.json``
        sees it. Returns the job's view, or None when another run holds the job's lock (it acts on
        the job itself)."""
        folder = self.folder(job_id)
        try:
            lock = JobLock(self.state_dir, job_id, self.clock, self.sleeper, timeout=0)
            lock.__enter__()
        except Busy:
            return None
        try:
            job = self.view(job_id)
            if not (job['state'] == 'failed' and job.get('interrupted')):
                return job  # it ended on its own after all, or runs: what its status says now
            left = self._members(folder, job)
            if left:
                self._kill(left, job['pid'])
            status = state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE)) or {}
            if status.get('state') == 'running':
                status.update(state='failed', interrupted=True, error=job['error'], eta_seconds=None,
                              rate_bytes_per_s=0, ended_at=state_lib.now_iso())
                state_lib.write_json(os.path.join(folder, state_lib.STATUS_FILE), status)
        finally:
            lock.__exit__(None, None, None)
        return self.view(job_id)

    def _pidfd(self, pid):
        """A pidfd of ``pid`` (readable once it exits), or 0 where there is none or sleeping is faked."""
        if self.sleeper is not time.sleep or not hasattr(os, 'pidfd_open'):
            return 0
        try:
            return os.pidfd_open(pid)
        except OSError:
            return 0

    # ------------------------------------------------------------------ requests

    def build_request(self, job_id, source, destination, ignore_files=None, check_hash=True,
                      hash_algorithm=hashing_lib.DEFAULT_ALGORITHM, rsync_options=None, rsync_base_options=None,
                      final_pass=False, bwlimit=None, reuse_hashes=True, hash_cache_key=None, copy_engine='auto',
                      migration_id=None, pass_id=None, hosts=None):
        """Validate a start request and return it as stored in ``job.json``.

        ``migration_id`` and ``pass_id`` (see signing.py) are written into the report, which the module
        signs only when they are the ones it is asked to sign for; the signing key is never stored.
        ``hosts``: side -> how this data node reaches the storage host that holds it (see remote.py),
        for a side mounted here from another storage host: verified there, never through the mount.
        """
        validate_name(job_id, 'job id')
        for what, value in (('migration id', migration_id), ('pass id', pass_id)):
            if value is not None:
                validate_name(value, what)
        if not source or not destination:
            raise InvalidRequest('Failed to start data copy job %s: source and destination are required' % job_id)
        request = {
            'job_id': job_id,
            'source': os.path.normpath(source),
            'destination': os.path.normpath(destination),
            'ignore_files': list(['lost+found'] if ignore_files is None else ignore_files),
            'check_hash': bool(check_hash),
            'hash_algorithm': hash_algorithm or hashing_lib.DEFAULT_ALGORITHM,
            'rsync_options': list(rsync_options or []),
            'rsync_base_options': list(rsync_lib.DEFAULT_BASE_OPTIONS if rsync_base_options is None
                                       else rsync_base_options),
            'final_pass': bool(final_pass),
            'bwlimit': str(bwlimit) if bwlimit not in (None, '') else None,
            'reuse_hashes': bool(reuse_hashes),
            'hash_cache_key': hash_cache_key or None,
            'copy_engine': copy_engine or 'auto',
            'migration_id': migration_id or None,
            'pass_id': pass_id or None,
            'hosts': None,
        }
        if hosts:
            if not isinstance(hosts, dict) or any(side not in ('source', 'destination') for side in hosts):
                raise InvalidRequest('Failed to start data copy job %s: hosts must map source and/or destination '
                                     'to a storage host' % job_id)
            try:
                request['hosts'] = dict((side, remote_lib.check_spec(dict(spec), 'hosts.%s' % side))
                                        for side, spec in sorted(hosts.items()) if spec)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest('Failed to start data copy job %s: invalid %s' % (job_id, exc))
        for side in ('source', 'destination'):
            path = request[side]
            if not os.path.isabs(path):
                raise InvalidRequest('Failed to start data copy job %s: the %s %s is not an absolute path'
                                     % (job_id, side, path))
            if not os.path.isdir(path):
                raise InvalidRequest('Failed to start data copy job %s: the %s %s is not a folder (is it mounted?)'
                                     % (job_id, side, path))
        real_source = os.path.realpath(request['source'])
        real_destination = os.path.realpath(request['destination'])
        if real_source == real_destination:
            raise InvalidRequest('Failed to start data copy job %s: source and destination are the same folder %s'
                                 % (job_id, real_source))
        for inner, outer in ((real_destination, real_source), (real_source, real_destination)):
            if inner.startswith(outer.rstrip('/') + '/'):
                raise InvalidRequest('Failed to start data copy job %s: %s is inside %s; source and destination '
                                     'must not contain each other' % (job_id, inner, outer))
        for side, real in (('source', real_source), ('destination', real_destination)):
            if (self.state_dir + '/').startswith(real.rstrip('/') + '/'):
                raise InvalidRequest('Failed to start data copy job %s: the job folders (%s) are inside the %s %s; '
                                     'choose another state_dir' % (job_id, self.state_dir, side, real))
        if request['copy_engine'] not in fastcopy_lib.ENGINES:
            raise InvalidRequest('Failed to start data copy job %s: unknown copy engine %s (expected one of %s)'
                                 % (job_id, request['copy_engine'], ', '.join(fastcopy_lib.ENGINES)))
        if request['hash_algorithm'] not in hashing_lib.HASH_ALGORITHMS:
            raise InvalidRequest('Failed to start data copy job %s: unknown hash algorithm %s (expected one of %s)'
                                 % (job_id, request['hash_algorithm'], ', '.join(hashing_lib.HASH_ALGORITHMS)))
        try:
            rsync_lib.build_argv(request['source'], request['destination'], request['ignore_files'],
                                 request['rsync_base_options'], request['rsync_options'], request['bwlimit'])
        except rsync_lib.RsyncArgumentError as exc:
            raise InvalidRequest('Failed to start data copy job %s: %s' % (job_id, exc))
        if request['check_hash'] and not request.get('hosts'):
            # (A job with sides on other hosts hashes with the standard library: remote.hash_algorithm.)
            library = hashing_lib.missing_library(request['hash_algorithm'])
            if library:
                raise MissingLibrary('Failed to start data copy job %s: hash algorithm %s needs the Python package '
                                     '%s on the data node' % (job_id, request['hash_algorithm'], library), library)
        return request

    @staticmethod
    def writable(path):
        """True when the filesystem holding ``path`` is mounted read-write (statvfs)."""
        try:
            return not os.statvfs(path).f_flag & os.ST_RDONLY
        except OSError:
            return False

    def hash_warning(self, request):
        """The warning for an xxh128 request on a data node without xxhash, or None."""
        if not request['check_hash']:
            return None
        if request.get('hosts'):
            # The storage hosts hash with the standard library; the report's warning says which.
            return remote_lib.hash_algorithm(request['hash_algorithm'])[1]
        return hashing_lib.resolve_algorithm(request['hash_algorithm'])[1]

    # ------------------------------------------------------------------ actions

    def start(self, request, wait_seconds=0):
        """Start, attach to, resume or restart the job of ``request``; return the module result."""
        job_id = request['job_id']
        folder = self.folder(job_id)
        warnings = []
        warning = self.hash_warning(request)
        if warning:
            warnings.append(warning)
        if shutil.which('rsync') is None:
            raise StorageError('Failed to start data copy job %s: rsync is not installed on the data node '
                               '(install the rsync package)' % job_id)
        with self._lock(job_id):
            result = self._start_locked(request, folder, warnings)
        if wait_seconds and not self.check_mode and result['job']['state'] == 'running':
            # Wait without the lock: another run may attach meanwhile.
            result['job'] = self.wait(job_id, wait_seconds)
        return result

    def _start_locked(self, request, folder, warnings):
        job_id = request['job_id']
        existing = state_lib.read_json(os.path.join(folder, state_lib.JOB_FILE))
        if existing is None and os.path.isdir(folder) and os.listdir(folder):
            raise InvalidRequest('Failed to start data copy job %s: %s exists but is not a data copy job folder '
                                 '(no %s); remove it or use another job id' % (job_id, folder, state_lib.JOB_FILE))
        if existing is not None:
            changed_paths = [side for side in ('source', 'destination') if existing.get(side) != request[side]]
            if changed_paths:
                raise InvalidRequest(
                    'Failed to start data copy job %s: it already copies %s to %s, this request names %s; use '
                    'another job id or remove the job first (state=absent)'
                    % (job_id, existing.get('source'), existing.get('destination'),
                       ' and '.join('%s %s' % (side, request[side]) for side in changed_paths)),
                    differences=changed_paths)
        job = self.view(job_id)
        same = existing is not None and all(existing.get(key) == request[key] for key in REQUEST_KEYS)
        if job['state'] == 'running':  # running means alive here: view() fails interrupted jobs
            if not same:
                warnings.append('Data copy job %s is already running with other options; attached to it '
                                'without changing them' % job_id)
            return self._result(False, job, ['attach to running job %s (pid %s)' % (job_id, job['pid'])], warnings)
        if job['state'] == 'completed' and same:
            return self._result(False, job, [], warnings)
        if job['state'] == 'absent':
            action = 'start job %s: copy %s to %s' % (job_id, request['source'], request['destination'])
        elif job.get('interrupted'):
            action = 'resume job %s: its worker is gone (phase %s)' % (job_id, job['phase'])
        elif job['state'] == 'completed':
            action = 'run job %s again: the request changed' % job_id
        else:
            action = 'restart job %s (it is %s)' % (job_id, job['state'])
        # The job whose hashes this one reuses (the phase-1 copy of a final pass) is kept too.
        reused = (state_lib.read_json(worker_lib.hash_index_path(self.state_dir, request)) or {}).get('job_id')
        pruned = self.prune(keep=(job_id, reused), max_days=self.keep_finished_days, max_mb=self.keep_finished_mb)
        if self.check_mode:
            predicted = dict(job, state='running', phase='scanning', error=None, report=None,
                             progress=state_lib.empty_progress(),
                             progress_line='check mode: would %s; nothing is copied' % action)
            predicted.pop('interrupted', None)
            return self._result(True, predicted, [action] + pruned, warnings)
        self._launch(folder, request, job)
        return self._result(True, self.view(job_id), [action] + pruned, warnings)

    @staticmethod
    def _result(changed, job, actions, warnings):
        return {'changed': changed, 'job': job, 'actions': actions, 'warnings': warnings}

    def _launch(self, folder, request, previous):
        if previous['state'] != 'absent':
            # A worker that was killed may have left its rsync running: stop it before starting over.
            self._kill(self._members(folder, previous), previous.get('pid'))
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o700)
        request = dict(request, created_at=state_lib.now_iso())
        state_lib.write_json(os.path.join(folder, state_lib.JOB_FILE), request)
        script = ship_worker(folder)
        status = {'job_id': request['job_id'], 'state': 'running', 'phase': 'scanning', 'pid': None,
                  'started_at': state_lib.now_iso(), 'updated_at': state_lib.now_iso(),
                  'attempt': int(previous.get('attempt') or 0) + 1, 'error': None, 'warnings': []}
        status.update(state_lib.empty_progress())
        state_lib.write_json(os.path.join(folder, state_lib.STATUS_FILE), status)
        try:
            os.unlink(os.path.join(folder, state_lib.PID_FILE))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
        with open(os.devnull, 'rb') as devnull, open(os.path.join(folder, state_lib.WORKER_LOG), 'ab') as log:
            process = subprocess.Popen([self.python, '-B', script, folder], cwd=folder, stdin=devnull, stdout=log,
                                       stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, env=env)
        self._launched[process.pid] = process
        state_lib.atomic_write(os.path.join(folder, state_lib.PID_FILE), ('%d\n' % process.pid).encode('ascii'))
        return process.pid

    def _members(self, folder, job):
        pid = job.get('pid')
        return group_members(pid, folder, job.get('destination')) if pid else []

    def _kill(self, members, pgid):
        """SIGTERM the job's processes, then SIGKILL what is left; wait until they are gone."""
        if not members:
            return False
        for signum, timeout in ((signal.SIGTERM, self.term_timeout), (signal.SIGKILL, self.kill_timeout)):
            lifeline_lib.signal_pids(members, signum)
            deadline = self.clock() + timeout
            while True:
                members = [pid for pid in members if _in_group(pid, pgid)]
                if not members:
                    return True
                if self.clock() >= deadline:
                    break
                self.sleeper(0.05)
        if members:
            raise StorageError('Failed to stop the processes %s of a data copy job: they survived SIGKILL'
                               % ', '.join(str(pid) for pid in members))
        return True

    def cancel(self, job_id):
        """Stop the job's worker and rsync; the job becomes ``cancelled``."""
        folder = self.folder(job_id)
        with self._lock(job_id):
            job = self.view(job_id)
            if job['state'] == 'absent':
                return {'changed': False, 'job': job, 'actions': [], 'warnings': []}
            members = self._members(folder, job)
            # A job cancelled before is not cancelled again (its status may still say that an earlier
            # run found its worker gone): a cancel reports a change once.
            was_running = (job['state'] == 'running' or bool(members)
                           or (job.get('interrupted') and job['state'] != 'cancelled'))
            if not was_running:
                return {'changed': False, 'job': job, 'actions': [], 'warnings': []}
            action = 'cancel job %s%s' % (job_id, ' (stop pid %s)' % job['pid'] if members else '')
            if self.check_mode:
                predicted = dict(job, state='cancelled', error=None, progress_line='check mode: would %s' % action)
                predicted.pop('interrupted', None)
                return {'changed': True, 'job': predicted, 'actions': [action], 'warnings': []}
            self._kill(members, job['pid'])
            status = state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE)) or {}
            status.update(state='cancelled', error=None, eta_seconds=None, rate_bytes_per_s=0, rate_files_per_s=0,
                          updated_at=state_lib.now_iso(), cancelled_at=state_lib.now_iso())
            state_lib.write_json(os.path.join(folder, state_lib.STATUS_FILE), status)
        return {'changed': True, 'job': self.view(job_id), 'actions': [action], 'warnings': []}

    def remove(self, job_id):
        """Cancel the job if it runs and delete its folder, its lock file and the hash index entries
        that name it. ``removed`` in the result: the job as it was (its report, the end of its log)."""
        folder = self.folder(job_id)
        with self._lock(job_id) as lock:
            if not os.path.lexists(folder):
                if not self.check_mode:
                    lock.unlink()
                return {'changed': False, 'job': self.view(job_id), 'actions': [], 'warnings': []}
            if not os.path.isdir(folder) or os.path.islink(folder) or not os.path.isfile(
                    os.path.join(folder, state_lib.JOB_FILE)) and os.listdir(folder):
                raise InvalidRequest('Failed to remove data copy job %s: %s is not a data copy job folder (no %s); '
                                     'it was left alone' % (job_id, folder, state_lib.JOB_FILE))
            job = self.view(job_id)
            if job['state'] != 'absent' and job.get('report') is None and 'log_tail' not in job:
                job['log_tail'] = state_lib.log_tail(os.path.join(folder, state_lib.WORKER_LOG))
            actions = []
            members = self._members(folder, job) if job['state'] != 'absent' else []
            if members:
                actions.append('cancel job %s (stop pid %s)' % (job_id, job['pid']))
            actions.append('remove job folder %s' % folder)
            if not self.check_mode:
                self._kill(members, job.get('pid'))
                shutil.rmtree(folder)
                self._forget_hashes(job_id)
                lock.unlink()
        gone = dict(self.view(job_id)) if not self.check_mode else dict(job, state='absent')
        return {'changed': True, 'job': gone, 'removed': job, 'actions': actions, 'warnings': []}

    def _forget_hashes(self, job_id=None):
        """Remove the hash index entries that name ``job_id`` (None: that name a job folder that is gone)."""
        index_dir = os.path.join(self.state_dir, state_lib.HASH_INDEX_DIR)
        try:
            names = os.listdir(index_dir)
        except OSError:
            return
        for name in names:
            if name.endswith(state_lib.FLAGS_LEDGER_SUFFIX):
                continue  # goes with the index entry it belongs to
            path = os.path.join(index_dir, name)
            other = (state_lib.read_json(path) or {}).get('job_id')
            if job_id is not None and other != job_id:
                continue
            if job_id is None and other and '/' not in other and os.path.isdir(os.path.join(self.state_dir, other)):
                continue
            # The file-attribute ledger of the same destination (worker.py) goes with its index.
            ledger = path[:-len('.json')] + state_lib.FLAGS_LEDGER_SUFFIX if path.endswith('.json') else None
            for gone in (path, ledger):
                if gone is None:
                    continue
                try:
                    os.unlink(gone)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise

    # ------------------------------------------------------------------ the bound on job folders

    def finished_jobs(self, keep=()):
        """``(job id, seconds since its last update, bytes)`` of every job folder whose job is not
        running (completed, failed, cancelled, or its worker gone), oldest first; never ``keep``."""
        found = []
        try:
            names = os.listdir(self.state_dir)
        except OSError:
            return found
        now = time.time()
        for name in names:
            if name.startswith('.') or name in keep:
                continue
            folder = os.path.join(self.state_dir, name)
            if os.path.islink(folder) or not os.path.isfile(os.path.join(folder, state_lib.JOB_FILE)):
                continue
            try:
                validate_name(name, 'job id')
                job = self.view(name)
            except (InvalidRequest, IOError, OSError):
                continue
            if job['state'] == 'running' or job.get('alive'):
                continue
            updated = 0
            for item in (state_lib.STATUS_FILE, state_lib.REPORT_FILE, state_lib.JOB_FILE):
                try:
                    updated = max(updated, os.stat(os.path.join(folder, item)).st_mtime)
                except OSError:
                    pass
            found.append((name, max(0.0, now - updated), _folder_bytes(folder)))
        found.sort(key=lambda item: -item[1])
        return found

    def prune_plan(self, keep=(), max_days=None, max_mb=None):
        """The finished job folders the bound removes: those not updated for more than ``max_days``
        days, then the oldest until the rest take at most ``max_mb`` MiB (0 or None: no such bound).
        Returns ``[(job id, why)]``."""
        plan = []
        jobs = self.finished_jobs(keep)
        total = sum(item[2] for item in jobs)
        for name, age, size in jobs:
            why = None
            if max_days and age > max_days * 86400:
                why = 'finished, last updated %.1f days ago (more than %s)' % (age / 86400.0, max_days)
            elif max_mb and total > max_mb * 1024 * 1024:
                why = 'finished job folders take %s, more than %s MiB; the oldest go first' % (_size(total), max_mb)
            if why:
                plan.append((name, why))
                total -= size
        return plan

    def prune(self, keep=(), max_days=None, max_mb=None):
        """Remove the finished job folders of ``prune_plan``; a job another run holds the lock of is
        skipped. Returns the actions (planned ones in check mode)."""
        actions = []
        for name, why in self.prune_plan(keep, max_days, max_mb):
            if self.check_mode:
                actions.append('prune job folder %s (%s)' % (name, why))
                continue
            try:
                lock = JobLock(self.state_dir, name, self.clock, self.sleeper, timeout=0)
                lock.__enter__()
            except Busy:
                continue
            try:
                job = self.view(name)
                if job['state'] == 'running' or job.get('alive'):
                    continue
                folder = self.folder(name)
                self._kill(self._members(folder, job), job.get('pid'))
                shutil.rmtree(folder)
                self._forget_hashes(name)
                lock.unlink()
            finally:
                lock.__exit__(None, None, None)
            actions.append('prune job folder %s (%s)' % (name, why))
        if actions and not self.check_mode:
            self._forget_hashes()
        return actions


def _folder_bytes(folder):
    """Space a folder takes (allocated blocks of everything below it)."""
    total = 0
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                pass
    return total
