# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The detached worker of a data copy job: scan, copy (rsync, or the parallel first copy), verify, report.

The module writes this file and its siblings (``state``, ``rsync``, ``walk``, ``compare``, ...) into the job
folder under ``lib/`` together with the launcher script ``LAUNCHER`` (``worker.py`` in the job
folder), then starts the launcher in its own session. Ansible deletes the module's own copy of
the collection when the module exits; the job folder keeps what the worker needs.

Standard library only (plus the optional hash packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ctypes
import errno
import gc
import hashlib
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import changes as changes_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fastcopy as fastcopy_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags as fileflags_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileread as fileread_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import plumbing as plumbing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import prehash as prehash_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import progress as progress_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import remote as remote_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import seal as seal_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import walk as walk_lib

# Beside state_lib.HASHES_FILE's side files: the verification's input (the last pass's hashes and
# those read during the copy, see Worker.verification_cache) and the walks' new ones until kept.
HASHES_INPUT = state_lib.HASHES_FILE + '.input'
HASHES_NEW = state_lib.HASHES_FILE + '.new'
HASHES_RUNS = state_lib.HASHES_FILE + '.spill'
HASHES_SALVAGE = state_lib.HASHES_FILE + '.salvage'


def release_memory():
    """Give the memory of freed objects back to the system (glibc's malloc_trim), so that the
    processes forked next do not start with it."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


# The script written as <job folder>/worker.py and started as: python -B worker.py <job folder>.
LAUNCHER = '''# -*- coding: utf-8 -*-
# Written by the storage.mobility data_copy module: the detached worker of this job folder.
# Run: python worker.py <job folder>
import faulthandler
import os
import sys

# A crash of the interpreter (SIGSEGV, SIGABRT, ...) leaves its stack in worker.log (stderr).
faulthandler.enable()

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.worker import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
'''

STATUS_INTERVAL = 1.0
# A verification whose trees changed while it ran (their seals before and after differ) is run again
# this many times (reading only what changed) before the job fails.
SEAL_RETRIES = 2
# rsync prints progress about once a second: a little less here so that no update is skipped.
STATUS_THROTTLE = 0.9
TERMINATE_GRACE = 5.0
# progress.log gets a line per status write (about one a second) for this long, then one per
# PROGRESS_LOG_LATER seconds: a day-long copy leaves a few MB, not tens.
PROGRESS_LOG_DETAILED = 600.0
PROGRESS_LOG_LATER = 10.0


class Terminated(Exception):
    """The worker received SIGTERM, SIGINT or SIGHUP (a cancel)."""


class JobFailed(Exception):
    """The job cannot complete; the message is the job's error."""


def _on_signal(signum, frame):  # pylint: disable=unused-argument
    raise Terminated('received signal %d' % signum)


# Kept here for callers of the worker module; the function lives in fileread.
sync_filesystem = fileread_lib.sync_filesystem


def scan_tree(root, ignore, on_progress=None, ignored=None):
    """Totals of a tree: entries (the root included), files, bytes, directories, symlinks.

    ``ignored`` (a state.Ignored): where the paths left out by the ignore list are noted."""
    ignore = frozenset(os.fsencode(name) for name in ignore)
    totals = {'entries': 1, 'files': 0, 'bytes': 0, 'directories': 1, 'symlinks': 0}
    top = os.fsencode(root)
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        if ignored is not None:
            names.sort()
        for name in names:
            path = os.path.join(folder, name)
            if name in ignore:
                if ignored is not None:
                    ignored.add(path[len(top) + 1:], os.path.isdir(path) and not os.path.islink(path), path)
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            totals['entries'] += 1
            if stat.S_ISDIR(st.st_mode):
                totals['directories'] += 1
                stack.append(path)
            elif stat.S_ISREG(st.st_mode):
                totals['files'] += 1
                totals['bytes'] += st.st_size
            elif stat.S_ISLNK(st.st_mode):
                totals['symlinks'] += 1
        if on_progress is not None:
            on_progress(totals)
    return totals


def skipped_times(options):
    """Entry types whose modification time rsync was told not to keep."""
    kinds = []
    if rsync_lib.options_say(options, 'O', '--omit-dir-times'):
        kinds.append('directory')
    if rsync_lib.options_say(options, 'J', '--omit-link-times'):
        kinds.append('symlink')
    return kinds


def cache_key(job):
    """The key under which jobs share recorded hashes: the request's, or both real paths, and the
    ignore list."""
    paths = (os.path.realpath(job['source']), os.path.realpath(job['destination']))
    key = job.get('hash_cache_key') or '%s\0%s' % paths
    return '%s\0%s' % (key, '\0'.join(job['ignore_files']))


def hash_index_path(state_dir, job):
    """``<state_dir>/.hash-index/<sha256 of the key>.json``: names the last job that verified a copy
    under the key of ``job`` (a later job with that key reuses its hashes)."""
    digest = hashlib.sha256(cache_key(job).encode('utf-8', 'surrogateescape')).hexdigest()
    return os.path.join(state_dir, state_lib.HASH_INDEX_DIR, digest + '.json')


class Worker(object):
    """Runs one attempt of the job described by ``<folder>/job.json``."""

    def __init__(self, folder, clock=time.monotonic, leader=False):
        self.folder = os.path.abspath(folder)
        self.clock = clock
        # The launched worker leads its own process group (see job.py); only then does it kill
        # what is left in that group when it ends.
        self.leader = bool(leader) and os.getpgrp() == os.getpid()
        self.job = state_lib.read_json(self.path(state_lib.JOB_FILE))
        if self.job is None:
            raise JobFailed('No readable %s in %s' % (state_lib.JOB_FILE, self.folder))
        previous = state_lib.read_json(self.path(state_lib.STATUS_FILE)) or {}
        self.status = {
            'job_id': self.job['job_id'], 'state': 'running', 'phase': 'scanning', 'pid': os.getpid(),
            'started_at': previous.get('started_at') or state_lib.now_iso(), 'updated_at': None,
            'attempt': previous.get('attempt') or 1, 'error': None, 'warnings': [],
            'final_pass': bool(self.job.get('final_pass')), 'phases': [],
        }
        self.status.update(state_lib.empty_progress())
        self.phases = progress_lib.PhaseClock()
        self.estimator = None
        self._begun = clock()
        self._last_log = None
        self._counted = None
        self.warnings = self.status['warnings']
        self.totals = None
        self.rsync = None
        self.algorithm = None
        self.copy_seconds = 0.0
        self.verify_seconds = 0.0
        self.rsync_rc = None
        self.rsync_stats = {}
        self._last_write = None
        self.cache = None
        # hashcache.RecordSpill of the hashes read during the copy, once there is one (see spill).
        self.prehashed = None
        # side -> hash files a killed attempt left, merged into the verification's input (see
        # salvage_hash_leftovers).
        self.salvaged = {}
        self._prehash = None
        self.hash_stats = {}
        self._scan_thread = None
        # The scan thread's id for the scheduler (it lowers its own priority while rsync runs).
        self._scan_tid = None
        self.copy_engine = None
        self.seals = {}
        # The changes pass (changes.py): whether this pass copied only what changed, or why not;
        # the clock as change times show it just before this pass began to copy (see keep_points).
        self.changes_report = None
        self.source_point = None
        self._wrote_at = None
        self.flags = fileflags_lib.Carrier(self.job['source'], self.job['destination'], self.job['ignore_files'],
                                           self.log, ledger=self._index_path()[:-len('.json')] + state_lib.FLAGS_LEDGER_SUFFIX)
        self.ignored = None
        # The sides on other storage hosts (``hosts`` of the request): read there, never through
        # their mounts here (see remote.py).
        self.remote = {}
        for side, spec in sorted((self.job.get('hosts') or {}).items()):
            try:
                self.remote[side] = remote_lib.RemoteTree(spec, self.folder, side)
            except ValueError as exc:
                raise JobFailed('Invalid hosts of job %s: %s' % (self.job['job_id'], exc))

    def path(self, name):
        return os.path.join(self.folder, name)

    def write_status(self, force=True, **changes):
        """Merge ``changes`` into the status and write it (at most once a second unless ``force``)."""
        self.status.update(changes)
        now = self.clock()
        if not force and self._last_write is not None and now - self._last_write < STATUS_THROTTLE:
            return
        self._last_write = now
        self.status['updated_at'] = state_lib.now_iso()
        # The log line first: a reader that sees the status's final state finds its line in the log too
        # (the other way round the job could read completed while progress.log still ended verifying).
        self.log_progress(now, force)
        state_lib.write_json(self.path(state_lib.STATUS_FILE), self.status)

    def log_progress(self, now, force=False):
        """Append the status's progress to ``progress.log`` (a JSON line), about once a second for
        the first minutes, then every PROGRESS_LOG_LATER seconds, and at every phase or state change."""
        interval = STATUS_THROTTLE if now - self._begun < PROGRESS_LOG_DETAILED else PROGRESS_LOG_LATER
        if not force and self._last_log is not None and now - self._last_log < interval:
            return
        self._last_log = now
        line = dict((key, self.status.get(key)) for key in state_lib.PROGRESS_LOG_KEYS)
        line['elapsed_seconds'] = round(now - self._begun, 3)
        try:
            state_lib.append_line(self.path(state_lib.PROGRESS_LOG), line)
        except (IOError, OSError):
            pass  # the log is for people; the status file is what counts

    def begin_phase(self, phase, write=True, **changes):
        """Start ``phase`` (``scanning``, ``copying``, ``verifying``): its own clock, rates and estimate.
        Without ``write`` the status is written by the first ``progress`` call that follows."""
        now = self.clock()
        self.phases.begin(phase, now)
        self.estimator = progress_lib.Estimator(now)
        fields = dict(percent=None, bytes_done=0, files_done=0, rate_bytes_per_s=0, rate_files_per_s=0,
                      eta_seconds=None, phase_seconds=0, total_percent=self.status.get('total_percent'))
        fields.update(changes)
        self.status.update(fields, phase=phase, phases=self.phases.summary())
        if write:
            self.write_status()

    def progress(self, files_done, bytes_done, files_total, bytes_total, counted=True, force=False):
        """The running phase's figures: percent and ETA from files and bytes once the totals are
        counted (``counted``), the phase's own rates, written at most about once a second."""
        now = self.clock()
        if files_total is not None:
            files_done = min(files_done, files_total) if counted else files_done
        if bytes_total is not None and counted:
            bytes_done = min(bytes_done, bytes_total)
        self.phases.figures(files_done, bytes_done)
        estimator = self.estimator or progress_lib.Estimator(now)
        estimator.observe(now, files_done, bytes_done)
        if counted:
            estimate = estimator.estimate(files_done, bytes_done, files_total, bytes_total)
        else:
            estimate = {'percent': None, 'eta_seconds': None}
        elapsed = self.phases.elapsed(now)
        later = 0.0
        if self.phases.current == 'copying' and self.job.get('check_hash') and counted:
            later = files_total * progress_lib.VERIFY_FILE_COST + bytes_total * progress_lib.VERIFY_BYTE_COST
        spent = sum(item['seconds'] for item in self.phases.ended if item['phase'] != 'scanning') + elapsed
        whole = progress_lib.total_percent(spent, estimate['eta_seconds'], later)
        if whole is not None and self.status.get('total_percent') is not None:
            # The guess of the verification to come may have been short: the whole job's share never
            # goes back within an attempt.
            whole = max(whole, self.status['total_percent'])
        estimate['total_percent'] = whole if whole is not None else self.status.get('total_percent')
        changes = dict(estimate, files_done=files_done, bytes_done=bytes_done, totals_known=bool(counted),
                       rate_bytes_per_s=progress_lib.rate(bytes_done, elapsed),
                       rate_files_per_s=progress_lib.rate(files_done, elapsed), phase_seconds=round(elapsed, 1))
        if counted:
            changes.update(files_total=files_total, bytes_total=bytes_total, files_counted=files_total)
        else:
            changes.update(files_total=None, bytes_total=None, files_counted=files_total)
        self.write_status(force=force, **changes)

    def end_phases(self):
        """End the running phase; the status names each phase with its own time and rates, and keeps
        the copy's rate (not the verification's) as the job's rate."""
        self.phases.end(self.clock())
        summary = self.phases.summary()
        copying = [item for item in summary if item['phase'] == 'copying']
        changes = {'phases': summary, 'phase_seconds': None, 'rate_files_per_s': 0}
        if copying:
            changes.update(rate_bytes_per_s=copying[0]['rate_bytes_per_s'],
                           rate_files_per_s=copying[0]['rate_files_per_s'])
        self.status.update(changes)

    def log(self, message):
        sys.stdout.write('%s %s\n' % (state_lib.now_iso(), message))
        sys.stdout.flush()

    # ------------------------------------------------------------------ phases

    def scan(self):
        def progress(totals):
            self.write_status(force=False, files_counted=totals['entries'])

        self.write_status(phase='scanning', totals_known=False)
        ignored = state_lib.Ignored()
        self.totals = scan_tree(self.job['source'], self.job['ignore_files'], progress, ignored)
        self.ignored = ignored
        self.write_status(files_total=self.totals['entries'], bytes_total=self.totals['bytes'],
                          files_counted=self.totals['entries'], totals_known=True)
        self.log('scanned %(entries)d entries, %(files)d files, %(bytes)d bytes' % self.totals)

    def start_scan(self):
        """Count the source in a thread while rsync runs (its file list walks the same tree)."""
        stop = self._stop_scan = threading.Event()

        def check(totals):
            self._counted = totals['entries']
            if stop.is_set():
                raise Terminated('the copy ended')

        def scan():
            self._scan_tid = threading.get_native_id()
            lifeline.lower_priority()
            try:
                ignored = state_lib.Ignored()
                self.totals = scan_tree(self.job['source'], self.job['ignore_files'], check, ignored)
                self.ignored = ignored
            except Terminated:
                pass
            except Exception as exc:  # pylint: disable=broad-except
                self.log('the scan of the source failed: %s' % exc)

        self._scan_thread = threading.Thread(target=scan, name='scan')
        self._scan_thread.daemon = True
        self._scan_thread.start()

    def finish_scan(self):
        if self._scan_thread is not None:
            if self.rsync is not None and self.rsync.returncode != 0:
                self._stop_scan.set()
            elif self._scan_tid is not None and self._scan_thread.is_alive():
                # rsync has ended and the job waits for the count alone: it must not wait behind
                # other work of the machine (a privileged worker only; others wait at nice +10).
                lifeline.restore_priority(self._scan_tid)
            self._scan_thread.join()
            self._scan_thread = None
            self._scan_tid = None
        if self.totals is None:
            self.totals = {'entries': 0, 'files': 0, 'bytes': 0, 'directories': 0, 'symlinks': 0}
        else:
            self.log('scanned %(entries)d entries, %(files)d files, %(bytes)d bytes' % self.totals)

    # ------------------------------------------------------------------ hash cache

    def cache_key(self):
        """Jobs with the same key reuse each other's hashes: the request's, or both real paths."""
        return cache_key(self.job)

    def _index_path(self):
        return hash_index_path(os.path.dirname(self.folder), self.job)

    def load_cache(self, algorithm):
        """The hashes of this job's last verification, else of the last verified job with the same
        key, else None. Only hashes of files whose identity did not change are used."""
        if not self.job.get('reuse_hashes', True):
            return None
        cache = hashcache_lib.HashCache.load(self.path(state_lib.HASHES_FILE), algorithm)
        if cache is None:
            index = state_lib.read_json(self._index_path()) or {}
            other = index.get('job_id')
            if other and index.get('key') == self.cache_key() and '/' not in other and other != self.job['job_id']:
                folder = os.path.join(os.path.dirname(self.folder), other)
                cache = hashcache_lib.HashCache.load(os.path.join(folder, state_lib.HASHES_FILE), algorithm)
                if cache is not None:
                    self.log('reusing the hashes of job %s where files did not change' % other)
        return cache

    def salvage_hash_leftovers(self):
        """The hash files an attempt that was killed left (the copy's runs, the verification's input,
        the walks' new side files, what an earlier attempt salvaged): each record in them is a file's
        hash with the identity it had when it was read, as good as the kept cache's, so they are kept
        aside (hashes.cache.salvage.<n>.<side>) and merged into this attempt's verification input
        (then removed): a verification killed at a million files does not read them all again. A
        save's temporary file, or a file of no side, is removed."""
        self.salvaged = dict((side, []) for side in hashcache_lib.SIDES)
        prefixes = tuple(name + '.' for name in (HASHES_RUNS, HASHES_INPUT, HASHES_NEW))
        kept = '%s.' % HASHES_SALVAGE
        names = sorted(os.listdir(self.folder))
        numbers = [int(name.split('.')[-2]) for name in names
                   if name.startswith(kept) and name.split('.')[-2].isdigit()]
        number = max(numbers) + 1 if numbers else 0
        for name in names:
            path = os.path.join(self.folder, name)
            side = name.rsplit('.', 1)[-1]
            if name.startswith('.' + state_lib.HASHES_FILE) and '.tmp.' in name:
                hashcache_lib.remove(path)
            elif not name.startswith(prefixes + (kept,)):
                continue
            elif side not in hashcache_lib.SIDES:
                hashcache_lib.remove(path)
            elif name.startswith(kept):
                self.salvaged[side].append(path)
            else:
                target = self.path('%s%d.%s' % (kept, number, side))
                number += 1
                os.rename(path, target)
                self.salvaged[side].append(target)

    def spill(self, algorithm):
        """Where the hashes read during the copy go (hashes.cache.spill.run*: see hashcache.RecordSpill)."""
        if self.prehashed is None:
            self.prehashed = hashcache_lib.RecordSpill(self.path(HASHES_RUNS), algorithm)
        return self.prehashed

    def verification_cache(self, algorithm):
        """What the verification's walks look the files up in, and whether it is this run's own
        input to remove afterwards: the hashes of the last pass, and those read during this one's
        copy (``prehashed``, which win), and those a killed attempt left (``salvaged``). They are
        read from side files in the walk's order, and what this process holds of them is let go
        before the walkers start, so that neither it nor the walkers (forked from it) keep a map of
        every file: the kept cache alone is read from its own files; with any of the others, all
        are merged into hashes.cache.input.*, unless the hashes read during the copy all fit in memory
        (then they lie over the kept cache's files in the walks' lookups, see HashCache's overlay)."""
        cache = self.cache if self.cache is not None and self.cache.algorithm == algorithm else None
        self.cache = None
        if cache is None:
            cache = self.load_cache(algorithm)
        if cache is not None and cache.files:
            cache = hashcache_lib.HashCache(algorithm, files=cache.files)
        prehashed, self.prehashed = self.prehashed, None
        if prehashed is not None and prehashed.error:
            self.warnings.append('Could not keep %d hashes read during the copy (%s); the verification reads those '
                                 'files again' % (prehashed.dropped, prehashed.error))
        if prehashed is not None and (not len(prehashed) or prehashed.algorithm != algorithm):
            prehashed.discard()
            prehashed = None
        salvaged, self.salvaged = self.salvaged, {}
        if prehashed is None and not any(salvaged.values()):
            release_memory()
            return cache, False
        overlay = prehashed.in_memory() if not any(salvaged.values()) else None
        if overlay is not None:
            # Few hashes read during the copy (none went to a run file, at most SPILL_RECORDS a side):
            # the walks look them up in memory over the kept cache's files, which are not copied into
            # an input file (a final pass after 1% changed rewrote every record of the tree for them).
            prehashed.discard()
            del prehashed
            release_memory()
            return hashcache_lib.HashCache(algorithm, files=cache.files if cache is not None else None,
                                           overlay=overlay), False
        base = self.path(HASHES_INPUT)
        files = {}
        try:
            for side in hashcache_lib.SIDES:
                files[side] = hashcache_lib.side_path(base, side)
                earlier = hashcache_lib.newest_wins(
                    [cache.records(side) if cache is not None else iter(())]
                    + [hashcache_lib.read_records(path, algorithm, side) for path in salvaged.get(side, ())])
                added = prehashed.records(side) if prehashed is not None else iter(())
                hashcache_lib.write_side(files[side], algorithm, side, hashcache_lib.merged(earlier, added),
                                         durable=False)
        except (IOError, OSError) as exc:
            self.warnings.append('Could not write the hashes read during the copy for the verification (%s); '
                                 'it reads every file again' % exc)
            hashcache_lib.HashCache(algorithm, files=files).discard()
            return None, False
        finally:
            if prehashed is not None:
                prehashed.discard()
            for paths in salvaged.values():
                for path in paths:
                    hashcache_lib.remove(path)
        del cache, prehashed
        release_memory()
        return hashcache_lib.HashCache(algorithm, files=files), True

    def save_cache(self, cache, verified):
        """Keep this walk's hashes; name this job in the index once a verification passed."""
        if cache is None:
            return
        try:
            cache.save(self.path(state_lib.HASHES_FILE))
            # The single file of the format before per-side files, if an older version left one.
            hashcache_lib.remove(self.path(state_lib.HASHES_FILE))
            if verified:
                index = self._index_path()
                if not os.path.isdir(os.path.dirname(index)):
                    os.makedirs(os.path.dirname(index), 0o700)
                state_lib.write_json(index, {'job_id': self.job['job_id'], 'key': self.cache_key()})
        except (IOError, OSError) as exc:
            self.warnings.append('Could not keep the hashes for a later pass (%s); it reads every file again' % exc)

    def start_prehash(self):
        """While rsync copies, read and hash the source in a second process (see prehash.prehash)."""
        job = self.job
        if not job.get('check_hash') or not job.get('reuse_hashes', True):
            return
        if self.remote:
            # Reading a side through its network mount would double the traffic and prove nothing:
            # the verification reads each such side on its own host.
            return
        context = plumbing_lib.fork_context()
        if context is None:
            return
        try:
            algorithm = hashing_lib.resolve_algorithm(job['hash_algorithm'])[0]
        except (ValueError, hashing_lib.HashUnavailable):
            return
        self.algorithm = algorithm
        self.cache = self.load_cache(algorithm)
        # Looked up in its files by the hashing process (hashcache.SideLookup): this one reads nothing.
        known = dict((side, self.cache.lookup(side)) for side in hashcache_lib.SIDES) if self.cache is not None else {}
        receiving, sending = context.Pipe(duplex=False)
        # The child closes this process's reading end (and rsync's output, if rsync runs already):
        # holding them it would block forever on a full pipe, and keep rsync blocked, once the
        # worker is gone (see lifeline).
        inherited = [receiving] + ([self.rsync.stdout] if self.rsync is not None and self.rsync.stdout else [])
        child = context.Process(target=prehash_lib.prehash, name='prehash',
                                args=(job['source'], job['ignore_files'], algorithm, known, sending),
                                kwargs={'destination': job['destination'], 'parent': os.getpid(),
                                        'inherited': inherited})
        child.daemon = True
        child.start()
        sending.close()
        self._prehash = (child, receiving)

    def read_prehash(self, block=False):
        """Take what the hashing process sent; with ``block``, everything until it ends."""
        if self._prehash is None:
            return
        child, receiving = self._prehash
        try:
            while block or receiving.poll():
                message = receiving.recv()
                if isinstance(message, list):
                    spill = self.spill(self.algorithm)
                    for side, rel, record in message:
                        spill.add(side, rel, record)
                else:
                    break
            else:
                return
        except (EOFError, OSError):
            pass
        receiving.close()
        child.join()
        self._prehash = None

    def stop_prehash(self):
        """After the copy: stop the hashing process, keep what it sent."""
        if self._prehash is None:
            return
        child = self._prehash[0]
        if child.is_alive():
            child.kill()
        self.read_prehash(block=True)

    def _rsync_progress(self, reader, force=False):
        """rsync's figures as the status shows them: entries checked and bytes done against the totals
        of the count that runs beside it (rsync's own totals grow while it lists the tree, so they are
        not shown as totals)."""
        latest = reader.latest or {}
        done = latest.get('bytes_done', 0)
        files_done = reader.checked
        counted = self._scan_thread is None or not self._scan_thread.is_alive()
        totals = self.totals if counted and self.totals is not None else None
        if totals is None:
            self.progress(files_done, done, self._counted, None, counted=False, force=force)
        else:
            self.progress(files_done, done, totals['entries'], totals['bytes'], force=force)

    def save_repair(self, comparison):
        """Remember what the next attempt must copy again although rsync's quick check would skip it."""
        if not comparison.repair:
            return
        state_lib.write_json(self.path(state_lib.REPAIR_FILE), {
            'paths': [path.hex() for path in comparison.repair], 'checksum': comparison.repair_overflow})

    def repair(self):
        """Before copying again after a failed verification: remove the destination files whose content
        or links differed (rsync copies them anew), or ask rsync to compare checksums when there were
        too many to list. Returns the extra rsync options."""
        plan = state_lib.read_json(self.path(state_lib.REPAIR_FILE))
        if not plan:
            return []
        destination = os.fsencode(os.path.realpath(self.job['destination']))
        removed = 0
        for hexpath in plan.get('paths') or []:
            target = os.path.join(destination, bytes.fromhex(hexpath))
            parent = os.path.realpath(os.path.dirname(target))
            if parent != destination and not parent.startswith(destination + b'/'):
                continue
            try:
                if not stat.S_ISDIR(os.lstat(target).st_mode):
                    os.unlink(target)
                    removed += 1
            except OSError:
                continue
        self.log('removed %d destination files that failed verification, to copy them again' % removed)
        return ['--checksum'] if plan.get('checksum') else []

    def copy(self, scan=False):
        """Run rsync (with ``scan``, count the source meanwhile); return its exit code. Raise
        JobFailed when the copy failed."""
        job = self.job
        program = self.rsync_program()
        extra = list(job['rsync_options']) + self.repair()
        if 'destination' in self.remote:
            # A network mount (sshfs) cannot set a symlink's time, xattrs or ACLs: carry_metadata sets
            # them on the destination's host.
            extra += ['--omit-link-times', '--no-xattrs', '--no-acls']
        argv = rsync_lib.build_argv(job['source'], job['destination'], job['ignore_files'],
                                    job['rsync_base_options'], extra, job.get('bwlimit'), rsync=program)
        if scan:
            self.totals = None
            self._counted = 0
        self.begin_phase('copying', totals_known=False, files_total=None, bytes_total=None)
        env = dict(os.environ, LC_ALL='C', LANG='C')
        with open(self.path(state_lib.RSYNC_LOG), 'ab') as log:
            reader = self._rsync_reader(log, argv)
            started = self.clock()
            # The hashing process is forked first, so that it holds no end of rsync's pipe; rsync is
            # started while this process runs no other thread (its preexec_fn runs between fork and
            # exec) and dies with it; the count of the source and the read of its immutable and
            # append-only flags run in threads from then on.
            self.start_prehash()
            try:
                self.rsync = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, env=env, close_fds=True,
                                              preexec_fn=lifeline.preexec())
            except OSError:
                self.stop_prehash()
                raise
            if scan:
                self.start_scan()
            self.flags.read_beside()
            try:
                rc = self._pump_rsync(reader, lambda: self._rsync_progress(reader))
            finally:
                if self.rsync.poll() is None:
                    self._stop_rsync()
                self.rsync.stdout.close()
                self.stop_prehash()
                self.finish_scan()
            log.write(('--- rsync exited with %d (%s) after %.1f s\n'
                       % (rc, rsync_lib.describe_exit(rc), self.clock() - started)).encode('utf-8'))
        self.copy_seconds += self.clock() - started
        self.rsync_rc = rc
        self.rsync_stats = rsync_lib.parse_stats(reader.lines)
        tail = [line for line in reader.lines if not line.startswith(('Number of', 'Total ', 'Literal data',
                                                                      'Matched data', 'File list', 'sent ',
                                                                      'total size'))][-5:]
        if rc == rsync_lib.RC_VANISHED:
            message = 'some source files vanished during the copy (rsync exit code 24)'
            if job.get('final_pass'):
                raise JobFailed('Failed to copy %s to %s on the final pass: %s; the source must not change '
                                'during the final pass' % (job['source'], job['destination'], message))
            self.warnings.append(message.capitalize() + '; the next pass copies what changed')
        elif rc != rsync_lib.RC_OK:
            raise JobFailed('Failed to copy %s to %s: rsync exited with %d (%s)%s'
                            % (job['source'], job['destination'], rc, rsync_lib.describe_exit(rc),
                               (': ' + ' | '.join(tail)) if tail else ''))
        try:
            os.unlink(self.path(state_lib.REPAIR_FILE))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        self.progress(self.totals['entries'], self.totals['bytes'], self.totals['entries'], self.totals['bytes'],
                      force=True)
        return rc

    def rsync_program(self):
        """The path of rsync on the data node; JobFailed naming both trees when it is not installed."""
        program = shutil.which('rsync')
        if program is None:
            raise JobFailed('Failed to copy %s to %s: rsync is not installed on the data node'
                            % (self.job['source'], self.job['destination']))
        return program

    def _rsync_reader(self, log, argv):
        """A ProgressReader of rsync's output that writes its lines into the open ``log`` after a
        header naming the attempt and ``argv``."""
        header = '--- %s attempt %s: %s\n' % (
            state_lib.now_iso(), self.status['attempt'], ' '.join(repr(arg) for arg in argv))
        log.write(header.encode('utf-8', 'backslashreplace'))
        log.flush()

        def log_line(line):
            log.write(line.encode('utf-8', 'backslashreplace') + b'\n')

        return rsync_lib.ProgressReader(on_line=log_line)

    def _pump_rsync(self, reader, on_tick):
        """Feed the running rsync's output to ``reader`` (and take what the hashing process sends,
        if one runs) until rsync ends, ``on_tick`` after each read or second; rsync's exit code."""
        fd = self.rsync.stdout.fileno()
        while True:
            watched = [fd] + ([self._prehash[1].fileno()] if self._prehash is not None else [])
            ready = select.select(watched, [], [], STATUS_INTERVAL)[0]
            if len(ready) > 1 or ready and ready[0] != fd:
                self.read_prehash()
            if fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    break
                reader.feed(data)
            on_tick()
        reader.close()
        return self.rsync.wait()

    def first_copy(self):
        """Copy into an empty destination with the parallel engine (see fastcopy); return False
        when rsync must copy instead (the engine does not apply, or it could not copy everything)."""
        job = self.job
        if self.remote:
            self.log('copying with rsync: a side is on another storage host (%s)'
                     % ', '.join(tree.describe() for tree in self.remote.values()))
            return False
        try:
            entries = fastcopy_lib.destination_entries(job['destination'], job['ignore_files'])
        except OSError:
            return False
        reasons = fastcopy_lib.blockers(job, entries)
        if reasons:
            self.log('copying with rsync: %s' % '; '.join(reasons))
            return False
        algorithm = None
        if job.get('check_hash') and job.get('reuse_hashes', True):
            try:
                algorithm = hashing_lib.resolve_algorithm(job['hash_algorithm'])[0]
            except (ValueError, hashing_lib.HashUnavailable):
                algorithm = None
        self.begin_phase('copying', totals_known=False, files_total=None, bytes_total=None)
        started = self.clock()

        def progress(files, done, totals):
            # The walk counts the source while the copying processes copy: the totals are known
            # once it has listed every folder. Folders are made by the walk (counted as done).
            counted = bool(getattr(engine, 'counted', False))
            files_done = files + totals['directories']
            if counted:
                self.progress(files_done, done, totals['entries'], totals['bytes'])
            else:
                self.progress(files_done, done, totals['entries'], None, counted=False)

        engine = fastcopy_lib.ParallelCopy(job['source'], job['destination'], job['ignore_files'], algorithm,
                                           on_progress=progress, sink=self.spill(algorithm) if algorithm else None)
        self.copy_engine = 'parallel'
        self.log('first copy into the empty destination: %d copying processes, hashing %s'
                 % (engine.workers, algorithm or 'off'))
        try:
            engine.run()
        except (OSError, EOFError) as exc:
            engine.failures.append('%s: %s' % (type(exc).__name__, exc))
        self.copy_seconds += self.clock() - started
        self.totals = dict(engine.totals)
        self.ignored = engine.ignored
        self.algorithm = algorithm or self.algorithm
        problems = list(engine.failures) + ['%s: %s' % (state_lib.render_path(rel), text) for rel, text in engine.errors]
        if problems:
            self.log('the first copy left %d problems (first: %s); rsync copies what is missing'
                     % (engine.error_count + len(engine.failures), ' | '.join(problems[:3])))
            return False
        self.log('first copy done in %.1f s: %d entries, %d bytes, %d contents hashed from the disk'
                 % (self.clock() - started, self.totals['entries'], self.totals['bytes'],
                    self.prehashed.counts['destination'] if self.prehashed is not None else 0))
        self.progress(self.totals['entries'], self.totals['bytes'], self.totals['entries'], self.totals['bytes'],
                      force=True)
        return True

    def copy_with_rsync(self):
        self.copy(scan=True)

    def _stop_rsync(self):
        try:
            self.rsync.terminate()
            self.rsync.wait(TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            self.rsync.kill()
            self.rsync.wait()
        except OSError:
            pass

    def verify(self):
        """Compare hash manifests of both trees and prove that the hashes belong to the trees as they
        are now; return the Comparison.

        Each walk seals its tree from the ``lstat`` taken before each entry was read (see seal.py);
        after a comparison that matched, both trees are sealed again. Equal seals mean that nothing
        changed from the moment each entry was looked at until the end, so every hash is of the
        content the trees hold now; the report carries these seals, which the share migration
        compares with the instances just before it switches. When a tree changed meanwhile, the
        verification runs again (reading only what changed), and the job fails when it keeps
        changing.
        """
        job = self.job
        begun = self.clock()
        for attempt in range(SEAL_RETRIES + 1):
            comparison = self.compare()
            self.seals = {}
            if not comparison.matched:
                return comparison
            try:
                after = self.tree_seals()
            except (seal_lib.SealError, remote_lib.RemoteFailed) as exc:
                raise JobFailed('Failed to verify %s against %s: %s' % (job['destination'], job['source'], exc))
            self.verify_seconds = self.clock() - begun
            changed = [side for side, walked, now in (('source', comparison.source_seal, after[0]),
                                                      ('destination', comparison.destination_seal, after[1]))
                       if walked != now]
            if not changed:
                self.seals = {'source_seal': after[0], 'destination_seal': after[1]}
                return comparison
            self.log('the %s changed during verification %d (its seal before and after the hashing differ); '
                     'verifying again' % (' and the '.join(changed), attempt + 1))
        raise JobFailed('Failed to verify %s against %s: the %s changed while it was verified, %d times in a row '
                        '(its seal before and after the hashing differ); nothing may write to either tree during '
                        'the copy' % (job['destination'], job['source'], ' and the '.join(changed),
                                      SEAL_RETRIES + 1))

    def tree_seals(self):
        """The seals of both trees now: each side on another storage host sealed there."""
        job = self.job
        local = [side for side in ('source', 'destination') if side not in self.remote]
        seals = dict(zip(local, seal_lib.tree_seals([job[side] for side in local], job['ignore_files'])))
        for side, tree in self.remote.items():
            seals[side] = tree.seal(job['ignore_files'])
        return [seals['source'], seals['destination']]

    def carry_metadata(self):
        """A copy through a network mount (a side on another storage host): give the destination the
        source's nanosecond times, xattrs/ACLs and hard links, which SFTP does not carry, from a walk of
        the source on its own host, applied on the destination's host."""
        if not self.remote:
            return
        job = self.job
        ignore = job['ignore_files']
        started = self.clock()
        source = self.remote.get('source')
        try:
            if source is not None:
                batches = source.walk(ignore, None, False)
            else:
                batches = walk_lib.batches(walk_lib.Walker(job['source'], ignore, None))
            destination = self.remote.get('destination')
            if destination is not None:
                counts = destination.carry(batches)
            else:
                counts = remote_lib.apply_entries(job['destination'], batches)
        except (remote_lib.RemoteFailed, OSError) as exc:
            raise JobFailed('Failed to carry the times, xattrs and hard links of %s to %s: %s'
                            % (self.describe('source'), self.describe('destination'), exc))
        self.log('carried to %s from %s in %.1f s: %s' % (
            self.describe('destination'), self.describe('source'), self.clock() - started,
            ', '.join('%s %s' % (key, counts[key]) for key in sorted(counts))))

    def describe(self, side):
        tree = self.remote.get(side)
        return tree.describe() if tree is not None else '%s on the data node' % self.job[side]

    def compare(self):
        """Compare hash manifests of both trees once; return the Comparison."""
        job = self.job
        if self.remote:
            # The storage hosts hash their own trees with the standard library.
            algorithm, warning = remote_lib.hash_algorithm(job['hash_algorithm'])
            if warning in self.warnings:
                warning = None
        else:
            algorithm, warning = hashing_lib.resolve_algorithm(job['hash_algorithm'])
        if warning:
            self.warnings.append(warning)
        self.algorithm = algorithm
        total = self.totals['bytes']
        entries = self.totals['entries']
        self.begin_phase('verifying', write=False)
        self.progress(0, 0, entries, total, force=True)
        started = self.clock()
        how = 'on its host' if 'destination' in self.remote else sync_filesystem(job['destination'])
        self.log('flushed %s to disk (%s) in %.1f s' % (job['destination'], how, self.clock() - started))

        def progress(result):
            now = self.clock()
            if self._last_write is not None and now - self._last_write < STATUS_THROTTLE:
                return
            self.progress(result.compared, result.bytes_compared, entries, total)

        options = list(job['rsync_base_options']) + list(job['rsync_options'])
        during = len(self.prehashed) if self.prehashed is not None else 0
        cache, temporary = self.verification_cache(algorithm)
        try:
            result = compare_lib.compare_trees(job['source'], job['destination'], job['ignore_files'], algorithm,
                                               skip_times=skipped_times(options), on_progress=progress, cache=cache,
                                               remote=self.remote, record_to=self.path(HASHES_NEW))
        except remote_lib.RemoteFailed as exc:
            raise JobFailed('Failed to verify %s against %s: %s' % (self.describe('destination'),
                                                                    self.describe('source'), exc))
        finally:
            if temporary:
                cache.discard()
        self.verify_seconds = self.clock() - started
        self.log('verification read %d files (%d bytes) and reused the hashes of %d unchanged files (%d bytes); '
                 '%d files were hashed during the copy' % (
                     result.files_hashed, result.bytes_hashed, result.files_reused, result.bytes_reused, during))
        self.hash_stats = {'files_hashed': result.files_hashed, 'bytes_hashed': result.bytes_hashed,
                           'files_reused': result.files_reused, 'bytes_reused': result.bytes_reused,
                           'files_hashed_during_copy': during}
        self.save_cache(result.cache, result.matched)
        self.progress(max(result.compared, entries), max(result.bytes_compared, total), entries, total, force=True)
        return result

    # ------------------------------------------------------------------ changes pass

    def _points_path(self):
        return self._index_path()[:-len('.json')] + changes_lib.POINTS_SUFFIX

    def changes_refusal(self):
        """Why this job copies and verifies the whole trees rather than what changed (None: it
        may try the changes pass, see changes.py)."""
        job = self.job
        if not job.get('final_pass'):
            return 'not a final pass'
        if job.get('copy_engine', 'auto') != 'auto':
            return 'copy_engine is %s' % job.get('copy_engine')
        if self.remote:
            return 'a side is on another storage host'
        if not job.get('check_hash') or not job.get('reuse_hashes', True):
            return 'the request does not reuse the hashes of the last verified pass'
        if job.get('rsync_options') or list(job.get('rsync_base_options') or ()) != list(rsync_lib.DEFAULT_BASE_OPTIONS):
            return 'the request has its own rsync options'
        if os.path.exists(self.path(state_lib.REPAIR_FILE)):
            return 'an earlier attempt left files to copy again'
        return None

    def changes_pass(self):
        """A final pass that copies and verifies what changed since the last verified pass: the
        Comparison when it did, else None (the reason is logged and reported) and nothing was
        written that the whole pass would not write."""
        reason = self.changes_refusal()
        if reason is None:
            try:
                return self._changes_pass()
            except changes_lib.Unknown as exc:
                reason = str(exc)
            except (OSError, seal_lib.SealError) as exc:
                reason = 'the changes could not be told: %s' % exc
        if self.job.get('final_pass'):
            self.changes_report = {'incremental': False, 'full_pass_reason': reason}
            self.log('copying and verifying the whole trees: %s' % reason)
        self.copy_engine = None
        return None

    def _changes_pass(self):
        job = self.job
        ignore = job['ignore_files']
        folder = os.path.dirname(self._points_path())
        points = state_lib.read_json(self._points_path())
        if not points:
            raise changes_lib.Unknown('no verified pass of these trees to start from')
        begun = changes_lib.point(folder)
        since_source, since_destination = changes_lib.check_points(points, job, begun, ignore)
        self.begin_phase('copying', totals_known=False, files_total=None, bytes_total=None)
        started = self.clock()
        lists = dict((name, self.path(path)) for name, path in changes_lib.LISTS.items())
        # The destination is walked at the same time (on its own disk): nothing may have changed in
        # it since the last verified pass; the walk also brings it into memory for the seal walk.
        destination_walk = changes_lib.start_first_change(job['destination'], since_destination, ignore)
        try:
            try:
                entries, files, size = changes_lib.list_changed(job['source'], since_source, ignore, lists)
            except BaseException:
                destination_walk.kill()
                destination_walk.communicate()
                raise
            touched = changes_lib.first_change(destination_walk, job['destination'], since_destination)
            if touched is not None:
                raise changes_lib.Unknown('the destination changed since the last verified pass (%s)'
                                          % state_lib.render_path(touched))
            folders, others = changes_lib.read_list(lists['folders']), changes_lib.read_list(lists['others'])
            listed = folders + others
            self.log('changes pass: %d entries (%d folders, %d files, %d bytes) changed in %s since the last verified '
                     'pass (listed in %.1f s)' % (entries, len(folders), files, size, job['source'],
                                                  self.clock() - started))
            self.progress(0, 0, entries, size, force=True)
            # The folders whole (quick check, --delete), then every other entry that changed, each
            # copied whatever its size and time say (a change within the same second, size kept).
            for names, options in (('folders', ['-r']), ('others', ['--ignore-times'])):
                if os.path.getsize(lists[names]):
                    rc = self._copy_listed(lists[names], options, entries, size)
                    if rc != rsync_lib.RC_OK:
                        raise changes_lib.Unknown('rsync of the changed %s exited with %d (%s)'
                                                  % ('folders' if names == 'folders' else 'entries', rc,
                                                     rsync_lib.describe_exit(rc)))
        finally:
            changes_lib.remove_quietly(*lists.values())
        self.copy_seconds += self.clock() - started
        source = os.fsencode(job['source'])
        fixed = changes_lib.restore_folder_times(source, os.fsencode(job['destination']), listed)
        self.log('copied the changed entries in %.1f s; set the times of %d folders above them'
                 % (self.clock() - started, fixed))
        self.progress(entries, size, entries, size, force=True)
        copied = self.clock()
        wanted = changes_lib.compare_set(source, listed, folders, ignore)
        time.sleep(max(0.0, changes_lib.MARK_GAP - (self.clock() - copied)))
        after_copy = changes_lib.point(folder)
        return self._verify_changes(wanted, begun, after_copy, since_destination, entries)

    def _copy_listed(self, list_path, options, entries, size):
        """rsync the entries of ``list_path`` with the extra ``options``; its exit code."""
        job = self.job
        program = self.rsync_program()
        argv = rsync_lib.build_argv(job['source'], job['destination'], job['ignore_files'], job['rsync_base_options'],
                                    options + ['--from0', '--files-from=' + list_path], job.get('bwlimit'),
                                    rsync=program)
        env = dict(os.environ, LC_ALL='C', LANG='C')
        with open(self.path(state_lib.RSYNC_LOG), 'ab') as log:
            reader = self._rsync_reader(log, argv)
            self.rsync = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env=env, close_fds=True,
                                          preexec_fn=lifeline.preexec())
            try:
                rc = self._pump_rsync(reader, lambda: self.progress(
                    reader.checked, (reader.latest or {}).get('bytes_done', 0), entries, size))
            finally:
                if self.rsync.poll() is None:
                    self._stop_rsync()
                self.rsync.stdout.close()
        self.rsync_rc = rc
        stats = rsync_lib.parse_stats(reader.lines)
        for key, value in stats.items():
            self.rsync_stats[key] = self.rsync_stats.get(key, 0) + value if isinstance(value, (int, float)) else value
        return rc

    def _verify_changes(self, wanted, begun, after_copy, since_destination, listed):
        """Compare what changed and the folders above it, then seal both trees and prove from the
        change times that nothing else changed: the source since ``begun`` (before its walk), the
        destination since its point but what was compared, and that not after ``after_copy``."""
        job = self.job
        algorithm, warning = hashing_lib.resolve_algorithm(job['hash_algorithm'])
        self.algorithm = algorithm
        self.begin_phase('verifying', write=False)
        total = len(wanted)
        self.progress(0, 0, total, None, counted=False, force=True)
        started = self.clock()
        how = sync_filesystem(job['destination'])
        self.log('flushed %s to disk (%s) in %.1f s' % (job['destination'], how, self.clock() - started))
        options = list(job['rsync_base_options']) + list(job['rsync_options'])

        def progress(result):
            now = self.clock()
            if self._last_write is None or now - self._last_write >= STATUS_THROTTLE:
                self.progress(result.compared, result.bytes_compared, total, None, counted=False)

        comparison = compare_lib.compare_entries(job['source'], job['destination'], wanted, wanted, job['ignore_files'],
                                                 algorithm, skip_times=skipped_times(options), on_progress=progress)
        if not comparison.matched:
            raise changes_lib.Unknown('what changed does not match after its copy (%s)' % comparison.summary())
        walks = seal_lib.seal_walks([(job['source'], begun['ctime_ns'] - 1, 1, state_lib.Ignored()),
                                     (job['destination'], since_destination, total + 1, None)], job['ignore_files'])
        source_walk, destination_walk = walks
        if source_walk['newer_count']:
            raise changes_lib.Unknown('the source changed during the final pass (%s)'
                                      % state_lib.render_path(source_walk['newer'][0][0]))
        if destination_walk['newer_count'] > len(destination_walk['newer']):
            raise changes_lib.Unknown('more entries of the destination changed than what was copied')
        for rel, ctime_ns in destination_walk['newer']:
            if ctime_ns >= after_copy['ctime_ns'] or rel not in wanted:
                raise changes_lib.Unknown('the destination changed %s (%s)' % (
                    'after the copy' if ctime_ns >= after_copy['ctime_ns'] else 'since the last verified pass',
                    state_lib.render_path(rel)))
        if warning:
            self.warnings.append(warning)
        comparison.source_counts = dict(source_walk['counts'])
        comparison.source_seal = source_walk['seal']
        comparison.destination_seal = destination_walk['seal']
        self.seals = {'source_seal': source_walk['seal'], 'destination_seal': destination_walk['seal']}
        self.totals = dict(source_walk['counts'])
        self.ignored = source_walk['ignored']
        self.verify_seconds = self.clock() - started
        self.hash_stats = {'files_hashed': comparison.files_hashed, 'bytes_hashed': comparison.bytes_hashed,
                           'files_reused': 0, 'bytes_reused': 0, 'files_hashed_during_copy': 0}
        self.changes_report = {'incremental': True, 'full_pass_reason': None, 'entries_listed': listed,
                               'entries_compared': comparison.compared}
        self.copy_engine = 'changes'
        self.source_point = begun
        self._wrote_at = self.clock()
        self.log('changes pass verified: %d entries compared, %d files read (%d bytes); nothing else changed in '
                 'either tree (%d entries each sealed)'
                 % (comparison.compared, comparison.files_hashed, comparison.bytes_hashed, self.totals['entries']))
        self.progress(total, comparison.bytes_compared, total, comparison.bytes_compared, force=True)
        return comparison

    def take_point(self):
        """Before a pass copies: the clock as change times show it (None where a later changes pass
        cannot use it: a side on another storage host, no verification with hashes)."""
        try:
            # This pass writes into the destination: the points of the last verified pass no longer
            # tell what changed there, whatever this pass proves.
            changes_lib.remove_quietly(self._points_path())
            if self.remote or not self.job.get('check_hash'):
                return None
            folder = os.path.dirname(self._points_path())
            if not os.path.isdir(folder):
                os.makedirs(folder, 0o700)
            return changes_lib.point(folder)
        except OSError as exc:
            self.log('no point for a later changes pass: %s' % exc)
            return None

    def keep_points(self):
        """After a verified pass: what a later changes pass starts from (changes.py)."""
        if self.source_point is None or not self.seals:
            return
        job = self.job
        try:
            wait = changes_lib.MARK_GAP - (self.clock() - (self._wrote_at or 0.0))
            if wait > 0:
                time.sleep(wait)
            folder = os.path.dirname(self._points_path())
            after = changes_lib.point(folder)
            changes_lib.reach_back(self.source_point, after)
            state_lib.write_json(self._points_path(), {
                'format': 1, 'job_id': job['job_id'], 'source_ns': self.source_point['ctime_ns'],
                'destination_ns': after['ctime_ns'], 'boot_id': after['boot_id'],
                'offset': max(self.source_point['offset'], after['offset']),
                'source_tree': changes_lib.tree_identity(job['source']),
                'destination_tree': changes_lib.tree_identity(job['destination']),
                'ignore_files': list(job['ignore_files']), 'flagged_entries': len(self.flags.wanted)})
        except (OSError, changes_lib.Unknown) as exc:
            self.log('no point for a later changes pass: %s' % exc)

    @staticmethod
    def flag_step(step):
        """Carry the immutable and append-only attributes (fileflags.Carrier): before a pass, after it."""
        try:
            step()
        except fileflags_lib.FlagError as exc:
            raise JobFailed(str(exc))

    # ------------------------------------------------------------------ run

    def report(self, comparison=None, error=None):
        job = self.job
        totals = self.totals or {}
        if comparison is not None and comparison.source_counts:
            totals = comparison.source_counts
        report = {
            'job_id': job['job_id'], 'source': job['source'], 'destination': job['destination'],
            'state': 'failed' if error else 'completed', 'error': error,
            'verified': bool(comparison is not None and comparison.matched and not error),
            'verification': 'skipped', 'hash_algorithm': None,
            'files': totals.get('files', 0), 'bytes': totals.get('bytes', 0),
            'directories': totals.get('directories', 0), 'symlinks': totals.get('symlinks', 0),
            'differ': [], 'missing': [], 'extra': [], 'differ_count': 0, 'missing_count': 0, 'extra_count': 0,
            'source_digest': None, 'destination_digest': None,
            'copy_seconds': round(self.copy_seconds, 3),
            'verify_seconds': round(self.verify_seconds, 3) if comparison is not None else None,
            'rsync_rc': self.rsync_rc, 'rsync_stats': self.rsync_stats, 'copy_engine': self.copy_engine,
            'final_pass': bool(job.get('final_pass')), 'ignore_files': job['ignore_files'],
            'migration_id': job.get('migration_id'), 'pass_id': job.get('pass_id'),
            'source_seal': None, 'destination_seal': None,
            'hashing': dict(self.hash_stats) or None, 'flagged_entries': len(self.flags.wanted),
            'phases': self.phases.summary(), 'changes_pass': self.changes_report,
            'warnings': list(self.warnings), 'started_at': self.status['started_at'],
            'finished_at': state_lib.now_iso(), 'attempt': self.status['attempt'],
        }
        # What the ignore list left out, by name; unknown (None) when the count of the source did
        # not finish (a failed copy).
        ignored = self.ignored
        report.update(ignored.as_dict() if ignored is not None else {'ignored': None, 'ignored_count': None})
        if ignored is not None and ignored.notable:
            report['warnings'].append(self.ignored_warning(ignored))
        report['log_tail'] = state_lib.log_tail(self.path(state_lib.WORKER_LOG))
        if comparison is not None:
            report.update(comparison.as_dict())
            report.update(self.seals)
            report['hash_algorithm'] = self.algorithm
            report['verification'] = 'passed' if comparison.matched else 'failed'
        elif job.get('check_hash') and error:
            report['verification'] = 'not run'
        state_lib.write_json(self.path(state_lib.REPORT_FILE), report)
        return report

    def ignored_warning(self, ignored):
        shown = ', '.join(ignored.paths[:5])
        more = ignored.count - min(5, len(ignored.paths))
        return ('The ignore list (%s) left %d entries of %s out of the copy and the verification: %s%s; they '
                'are not in the destination' % (', '.join(self.job['ignore_files']), ignored.count,
                                                self.job['source'], shown, ' and %d more' % more if more > 0 else ''))

    def run(self):
        try:
            return self._run()
        finally:
            for tree in self.remote.values():
                tree.close()
            self.reap()

    def reap(self):
        """The leader of the job's process group kills what is left in it (nothing, normally: each
        helper has ended or dies with this process)."""
        if not self.leader:
            return
        try:
            left = lifeline.kill_group_members(os.getpid(), exclude=(os.getpid(),))
        except OSError:
            return
        if left:
            self.log('stopped %d processes left in the job\'s process group: %s'
                     % (len(left), ', '.join(str(pid) for pid in left)))

    def _run(self):
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _on_signal)
        comparison = None
        try:
            try:
                os.unlink(self.path(state_lib.REPORT_FILE))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            self.salvage_hash_leftovers()
            self.begin_phase('scanning', totals_known=False)
            self.log('attempt %s of job %s: %s -> %s' % (
                self.status['attempt'], self.job['job_id'], self.job['source'], self.job['destination']))
            comparison = self.changes_pass()
            if comparison is None:
                self.source_point = self.take_point()
                self.flag_step(lambda: self.flags.prepare(beside=True))
                if self.first_copy():
                    self.copy_engine = 'parallel'
                else:
                    self.copy_engine = 'parallel, then rsync' if self.copy_engine else 'rsync'
                    self.copy_with_rsync()
                self.flag_step(self.flags.apply)
                self.carry_metadata()
                self._wrote_at = self.clock()
            if self.job.get('check_hash') and comparison is None:
                comparison = self.verify()
                if not comparison.matched and self.copy_engine == 'parallel':
                    # Something changed or was not copied as it is: rsync compares and copies again.
                    self.log('the first copy does not match the source (%s); rsync copies again'
                             % comparison.summary())
                    self.copy_engine = 'parallel, then rsync'
                    self.save_repair(comparison)
                    self.flag_step(self.flags.clear_destination)
                    self.copy_with_rsync()
                    self.flag_step(self.flags.apply)
                    self.carry_metadata()
                    comparison = self.verify()
                if not comparison.matched:
                    self.save_repair(comparison)
                    raise JobFailed('Verification of %s against %s failed: %s'
                                    % (self.job['destination'], self.job['source'], comparison.summary()))
            self.keep_points()
            self.end_phases()
            self.report(comparison)
            self.write_status(state='completed', phase='done', percent=100, total_percent=100, eta_seconds=0)
            self.log('completed')
            return 0
        except Terminated as exc:
            if self.rsync is not None and self.rsync.poll() is None:
                self._stop_rsync()
            self.end_phases()
            self.write_status(state='cancelled', error=None, eta_seconds=None, rate_bytes_per_s=0, rate_files_per_s=0)
            self.log('cancelled (%s)' % exc)
            return 0
        except JobFailed as exc:
            self.end_phases()
            self.report(comparison, error=str(exc))
            self.write_status(state='failed', error=str(exc), eta_seconds=None, rate_bytes_per_s=0, rate_files_per_s=0)
            self.log('failed: %s' % exc)
            return 1
        except Exception as exc:  # pylint: disable=broad-except
            self.log(traceback.format_exc())
            error = 'The data copy worker of job %s stopped on an unexpected error: %s: %s' % (
                self.job['job_id'], type(exc).__name__, exc)
            try:
                self.end_phases()
                self.report(comparison, error=error)
            finally:
                self.write_status(state='failed', error=error, eta_seconds=None, rate_bytes_per_s=0, rate_files_per_s=0)
            return 1


def main(argv=None):
    """Entry point of the launcher: ``main([job_folder])``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write('usage: worker.py JOB_FOLDER\n')
        return 2
    try:
        worker = Worker(argv[0], leader=True)
    except JobFailed as exc:
        sys.stderr.write('%s\n' % exc)
        return 2
    return worker.run()
