# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of a data copy job folder, shared by the module side and the detached worker.

A job folder ``<state_dir>/<job_id>/`` holds:

* ``job.json``: the request (written by the module),
* ``status.json``: state, phase and progress (rewritten atomically, about once a second),
* ``progress.log``: the progress of each status written, one JSON line each (see worker.py),
* ``report.json``: the final report of the last run,
* ``rsync.log``: what rsync printed besides progress, ``worker.log``: the worker's own output,
* ``worker.pid``: the process id of the last worker launched (its process group id too),
* ``hashes.cache.source`` and ``hashes.cache.destination``: the hashes of the files read by the
  last verification, each with the file's identity (size, mtime, ctime, inode) then, so that a
  later pass reads only what changed (hashcache.py: one file per side, in the walk's order);
  while a job runs, also ``hashes.cache.spill.run<n>.<side>`` (hashes read during the copy),
  ``hashes.cache.input.<side>`` (the verification's input) and ``hashes.cache.new.<side>`` (the
  walks' new hashes, renamed to the kept ones at the end); ``hashes.cache.salvage.<n>.<side>``:
  those a killed attempt left, merged into the next attempt's verification input, then removed,
* ``worker.py`` and ``lib/``: the worker program, written at each launch.

This file is shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import time

JOB_FILE = 'job.json'
STATUS_FILE = 'status.json'
REPORT_FILE = 'report.json'
PROGRESS_LOG = 'progress.log'
RSYNC_LOG = 'rsync.log'
WORKER_LOG = 'worker.log'
PID_FILE = 'worker.pid'
WORKER_SCRIPT = 'worker.py'
WORKER_LIB = 'lib'
REPAIR_FILE = 'repair.paths'
HASHES_FILE = 'hashes.cache'
# <state_dir>/HASH_INDEX_DIR/<sha256 of a hash cache key>.json names the last job that verified
# a copy under that key: a later job with the same key reuses its hashes (see hashcache.HashCache).
HASH_INDEX_DIR = '.hash-index'
# Beside an index entry <key>.json: <key> + FLAGS_LEDGER_SUFFIX, the destination entries whose
# immutable or append-only attributes the last pass set (worker.py); removed with the entry.
FLAGS_LEDGER_SUFFIX = '.flags.json'

STATES = ('running', 'completed', 'failed', 'cancelled')
PHASES = ('scanning', 'copying', 'verifying', 'done')
# percent and eta_seconds (the running phase's) are None until the totals are known (totals_known;
# files_counted is the count so far), bytes_total and files_total too; total_percent is the whole
# job's (copy and verification); the rates are the running phase's own; phases lists the phases
# that ended, each with its time, figures and rates.
PROGRESS_FIELDS = ('percent', 'bytes_done', 'bytes_total', 'files_done', 'files_total',
                   'rate_bytes_per_s', 'eta_seconds', 'totals_known', 'files_counted', 'rate_files_per_s',
                   'phase_seconds', 'phases', 'total_percent')
# What each line of progress.log holds (besides elapsed_seconds, from the start of the attempt).
PROGRESS_LOG_KEYS = ('updated_at', 'state', 'phase', 'final_pass', 'percent', 'total_percent', 'eta_seconds', 'totals_known',
                     'files_done', 'files_total', 'files_counted', 'bytes_done', 'bytes_total', 'rate_bytes_per_s',
                     'rate_files_per_s', 'phase_seconds')


def now_iso(when=None):
    """UTC time in ISO 8601 with microseconds."""
    when = time.time() if when is None else when
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(when)) + '.%06dZ' % int((when % 1) * 1e6)


def render_path(value):
    """A path for reports and JSON: text, never a lone surrogate.

    Bytes that are not UTF-8 are shown as ``\\xNN`` escapes, so a name made of any bytes
    renders without crashing and the JSON written from it stays valid UTF-8.
    """
    if isinstance(value, str):
        value = value.encode('utf-8', 'surrogateescape')
    return value.decode('utf-8', 'backslashreplace')


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, payload, mode=0o600):
    """Write bytes to ``path``: temporary file, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(path) or '.'
    tmp = os.path.join(folder, '.%s.tmp.%d' % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    _fsync_dir(folder)


def write_json(path, data):
    """Write ``data`` as JSON atomically (see atomic_write)."""
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + '\n').encode('utf-8'))


def read_json(path):
    """The JSON object in ``path``, or None when the file does not exist or is not valid JSON."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        value = json.loads(data.decode('utf-8'))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_pid(folder):
    """The pid recorded in ``worker.pid``, or None."""
    try:
        with open(os.path.join(folder, PID_FILE), 'rb') as handle:
            return int(handle.read().decode('ascii').strip())
    except (IOError, OSError, ValueError, UnicodeDecodeError):
        return None


def empty_progress():
    """Progress fields before anything is known: nothing done, no totals, no percentage, no ETA."""
    return {'percent': None, 'bytes_done': 0, 'bytes_total': None, 'files_done': 0, 'files_total': None,
            'rate_bytes_per_s': 0, 'eta_seconds': None, 'totals_known': False, 'files_counted': 0,
            'rate_files_per_s': 0, 'phase_seconds': None, 'phases': [], 'total_percent': None}


def append_line(path, data):
    """Append ``data`` as one JSON line to ``path`` (one write, so that lines never interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(data, sort_keys=True) + '\n').encode('utf-8'))
    finally:
        os.close(fd)


# How many ignored paths a report names (all of them are counted), and how much of a log's end a
# report or a job keeps.
IGNORED_LIMIT = 100
LOG_TAIL_LINES = 12
LOG_TAIL_WIDTH = 240


class Ignored(object):
    """The paths the ignore list left out of a copy: the first ``limit`` by name (relative to the
    copied folder, a folder with a trailing ``/``), and how many there were in all."""

    def __init__(self, limit=IGNORED_LIMIT):
        self.limit = limit
        self.paths = []
        self.count = 0
        # Entries other than an empty folder at the top (the lost+found of a filesystem's root,
        # which holds nothing of the users'): these are worth a warning.
        self.notable = 0

    def add(self, rel, folder=False, full=None):
        """Note ``rel``; ``full``, the path to look into (is a folder at the top empty?)."""
        self.count += 1
        if len(self.paths) < self.limit:
            self.paths.append(render_path(rel) + ('/' if folder else ''))
        top = b'/' not in os.fsencode(rel)
        if not (folder and top and full is not None and _empty(full)):
            self.notable += 1

    def as_dict(self):
        return {'ignored': list(self.paths), 'ignored_count': self.count}


def _empty(folder):
    try:
        return not os.listdir(folder)
    except OSError:
        return False


def log_tail(path, lines=LOG_TAIL_LINES, width=LOG_TAIL_WIDTH):
    """The last ``lines`` lines of a log (each cut to ``width`` characters); empty when there is none."""
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - lines * (width + 80)))
            data = handle.read()
    except (IOError, OSError):
        return []
    text = data.decode('utf-8', 'backslashreplace').splitlines()
    if len(text) > lines:
        text = text[-lines:]
    return [line if len(line) <= width else line[:width - 3] + '...' for line in text]
