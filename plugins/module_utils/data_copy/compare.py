# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Comparing two trees: both walked at once (each in its own process, or thread), their entries
compared as they come, so that memory does not grow with the size of the tree; the result is a
Comparison with capped lists, full counts, digests, seals and the hash cache of this walk.

Shipped to the data node with the worker: standard library only (plus the optional hash packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import queue
import shutil
import tempfile
import threading

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import plumbing
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import remote as remote_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.hashcache import HashCache, sort_key
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.hashing import DEFAULT_ALGORITHM
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.manifest import differing_attributes, entry_from_values
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.state import render_path
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.walk import Walker

LIST_LIMIT = 1000
REPAIR_LIMIT = 100000
# Differences a later rsync pass may not see by itself (same size and time, other content or links).
REPAIR_ATTRIBUTES = frozenset(('hash', 'link', 'error'))


def _as_entry(item):
    """The entry (a dict) of an item of a walk: ``(path, values)``, or ``(path, values, error)`` for
    a folder that could not be listed."""
    entry = entry_from_values(item[0], item[1])
    if len(item) > 2:
        entry['error'] = item[2]
    return entry


class Comparison(object):
    """The result of comparing two trees: capped lists, full counts, digests and totals."""

    def __init__(self, limit=LIST_LIMIT):
        self.limit = limit
        self.differ = []
        self.missing = []
        self.extra = []
        self.repair = []
        self.repair_overflow = False
        self.differ_count = 0
        self.missing_count = 0
        self.extra_count = 0
        self.compared = 0
        self.bytes_compared = 0
        self.source_counts = {}
        self.source_digest = None
        self.destination_digest = None
        # The seals of both trees as the walks saw them, before each entry was read (see seal.py).
        self.source_seal = None
        self.destination_seal = None
        self.cache = None
        self.files_hashed = 0
        self.files_reused = 0
        self.bytes_hashed = 0
        self.bytes_reused = 0

    def add_differ(self, path, attributes, source=None, destination=None):
        self.differ_count += 1
        if REPAIR_ATTRIBUTES.intersection(attributes) and (destination or {}).get('type') != 'directory':
            if len(self.repair) < REPAIR_LIMIT:
                self.repair.append(path)
            else:
                self.repair_overflow = True
        if len(self.differ) < self.limit:
            item = {'path': render_path(path), 'attributes': attributes}
            for side, entry in (('source_error', source), ('destination_error', destination)):
                if entry is not None and 'error' in entry:
                    item[side] = entry['error']
            self.differ.append(item)

    def add_missing(self, path):
        self.missing_count += 1
        if len(self.missing) < self.limit:
            self.missing.append(render_path(path))

    def add_extra(self, path):
        self.extra_count += 1
        if len(self.extra) < self.limit:
            self.extra.append(render_path(path))

    @property
    def matched(self):
        return not (self.differ_count or self.missing_count or self.extra_count)

    def summary(self, first=3):
        """One sentence naming the counts and the first differing paths."""
        parts = []
        if self.differ_count:
            shown = ', '.join('%s (%s)' % (item['path'], ', '.join(item['attributes'])) for item in self.differ[:first])
            parts.append('%d differ (first: %s)' % (self.differ_count, shown))
        if self.missing_count:
            parts.append('%d missing from the destination (first: %s)'
                         % (self.missing_count, ', '.join(self.missing[:first])))
        if self.extra_count:
            parts.append('%d only in the destination (first: %s)' % (self.extra_count, ', '.join(self.extra[:first])))
        return '; '.join(parts) if parts else 'source and destination match'

    def as_dict(self):
        return {
            'differ': self.differ, 'missing': self.missing, 'extra': self.extra,
            'differ_count': self.differ_count, 'missing_count': self.missing_count,
            'extra_count': self.extra_count, 'source_digest': self.source_digest,
            'destination_digest': self.destination_digest,
        }


def compare_trees(source, destination, ignore=(), algorithm=DEFAULT_ALGORITHM, skip_times=(), limit=LIST_LIMIT,
                  on_progress=None, cancelled=None, privileged=None, cache=None, processes=True, remote=None,
                  record_to=None):
    """Compare the trees ``source`` and ``destination``; return a Comparison.

    The destination's files are read from the disk (direct I/O, or cached pages dropped first).
    ``on_progress`` is called with the Comparison after each path compared (it should throttle
    itself). ``cache``: a HashCache of an earlier walk (same algorithm) whose hashes are reused for
    files whose identity did not change; the Comparison's ``cache`` is the one of this walk.
    ``processes``: walk each tree in its own forked process (two CPUs, no shared interpreter
    lock); otherwise, or where fork is not available, in two threads.
    ``remote``: side (``source``, ``destination``) -> remote.RemoteTree for a side walked on its
    storage host (over ssh, streamed back) instead of at its path here.
    ``record_to``: where the walks write this walk's hash cache as they go (the side files of that
    base name, see hashcache.side_path): the Comparison's ``cache`` is then those files, not read
    into memory; without it, a cache in memory (small trees).
    """
    if record_to is None:
        folder = tempfile.mkdtemp(prefix='mobility-hashes-')
        try:
            result = compare_trees(source, destination, ignore=ignore, algorithm=algorithm, skip_times=skip_times,
                                   limit=limit, on_progress=on_progress, cancelled=cancelled, privileged=privileged,
                                   cache=cache, processes=processes, remote=remote,
                                   record_to=os.path.join(folder, 'hashes'))
            result.cache = HashCache(algorithm, sides=result.cache.sides)
            return result
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    cancelled = cancelled if cancelled is not None else threading.Event()
    usable = cache is not None and cache.algorithm == algorithm
    files = dict((side, hashcache_lib.side_path(record_to, side)) for side in hashcache_lib.SIDES)
    walkers = tuple(Walker(root, ignore, algorithm, drop_cache=index == 1, skip_times=skip_times, cancelled=cancelled,
                           privileged=privileged, cache=cache.lookup(side) if usable else None,
                           record_to=None if side in (remote or {}) else files[side], side=side)
                    for index, (side, root) in enumerate((('source', source), ('destination', destination))))
    queues = (queue.Queue(maxsize=64), queue.Queue(maxsize=64))
    summaries = [None, None]
    context = plumbing.fork_context() if processes else None
    children = []
    remote = remote or {}
    remote_threads = []
    for index, side in enumerate(('source', 'destination')):
        if side in remote:
            args = {'ignore': ignore, 'algorithm': algorithm, 'drop_cache': index == 1, 'skip_times': skip_times,
                    'cache': cache.records(side) if usable else None, 'record_to': files[side]}
            remote_threads.append(threading.Thread(
                target=remote_lib.produce, args=(remote[side], args, queues[index], summaries, index, plumbing.END,
                                                 plumbing.Failure, cancelled), name='manifest-remote-%d' % index))
    local = [(index, walker) for index, walker in enumerate(walkers)
             if ('source', 'destination')[index] not in remote]
    if context is not None:
        parent = os.getpid()
        for dummy, walker in local:
            receiving, sending = context.Pipe(duplex=False)
            inherited = [item[1] for item in children] + [receiving]
            child = context.Process(target=plumbing.walk_in_process, args=(walker, sending, parent, inherited),
                                    name='manifest-walk')
            child.daemon = True
            child.start()
            sending.close()
            children.append((child, receiving))
        threads = [threading.Thread(target=plumbing.relay, args=(receiving, queues[index], summaries, index),
                                    name='manifest-%d' % index)
                   for (index, dummy), (dummy2, receiving) in zip(local, children)]
    else:
        threads = [threading.Thread(target=plumbing.produce_summary, args=(walker, queues[index], summaries, index),
                                    name='manifest-%d' % index)
                   for index, walker in local]
    threads += remote_threads
    for thread in threads:
        thread.daemon = True
        thread.start()
    result = Comparison(limit)
    end = plumbing.END
    finished = False
    try:
        readers = (plumbing.Reader(queues[0]), plumbing.Reader(queues[1]))
        left = readers[0].next()
        right = readers[1].next()
        while left is not end or right is not end:
            if left is not end and right is not end and left[0] == right[0]:
                # Equal values without an error (almost all of them) need no closer look.
                if left[1] != right[1] or left[1][11] is not None or len(left) > 2 or len(right) > 2:
                    one, other = _as_entry(left), _as_entry(right)
                    attributes = differing_attributes(one, other)
                    if attributes:
                        result.add_differ(one['path'], attributes, one, other)
                size = left[1][4] or 0
                result.compared += 1
                result.bytes_compared += size
                left = readers[0].next()
                right = readers[1].next()
            elif right is end or (left is not end and sort_key(left[0]) < sort_key(right[0])):
                result.add_missing(left[0])
                left = readers[0].next()
            else:
                result.add_extra(right[0])
                right = readers[1].next()
            if on_progress is not None:
                on_progress(result)
        finished = True
    finally:
        if not finished:
            # Stop both walkers and unblock them if they wait on a full queue.
            cancelled.set()
            for child, dummy in children:
                if child.is_alive():
                    child.kill()
            for thread in threads:
                plumbing.drain(queues, thread)
        for child, receiving in children:
            child.join()
            receiving.close()
    for thread in threads:
        thread.join()
    result.source_counts = dict(summaries[0]['counts'])
    result.source_digest = summaries[0]['digest']
    result.destination_digest = summaries[1]['digest']
    result.source_seal = summaries[0]['seal']
    result.destination_seal = summaries[1]['seal']
    result.cache = HashCache(algorithm, files=files)
    for key in ('files_hashed', 'files_reused', 'bytes_hashed', 'bytes_reused'):
        setattr(result, key, summaries[0][key] + summaries[1][key])
    return result


def compare_entries(source, destination, rels, folders, ignore=(), algorithm=DEFAULT_ALGORITHM, skip_times=(),
                    limit=LIST_LIMIT, privileged=None, on_progress=None):
    """Compare only the paths ``rels`` (relative, bytes) of both trees, and the names in the
    folders ``folders`` among them (names in ``ignore`` skipped); return a Comparison whose
    digests are of the entries compared (each side's lines as the whole walk makes them, in the
    walk's order). The changes pass (changes.py) uses it for what changed since a verified pass;
    the destination's files are read from the disk, as compare_trees reads them."""
    walkers = (Walker(source, ignore, algorithm, skip_times=skip_times, privileged=privileged),
               Walker(destination, ignore, algorithm, drop_cache=True, skip_times=skip_times, privileged=privileged))
    ignored = frozenset(os.fsencode(name) for name in ignore or ())
    result = Comparison(limit)
    for rel in sorted(set(rels), key=sort_key):
        found = []
        for walker in walkers:
            full = walker.root if rel == b'.' else os.path.join(walker.root, rel)
            try:
                st = os.lstat(full) if rel != b'.' else os.stat(full)
            except OSError:
                found.append(None)
                continue
            found.append(walker.values(rel, full, st))
        one, other = found
        if one is None and other is None:
            continue
        if other is None:
            result.add_missing(rel)
        elif one is None:
            result.add_extra(rel)
        else:
            if one != other or one[11] is not None or one[12] is not None:
                attributes = differing_attributes(entry_from_values(rel, one), entry_from_values(rel, other))
                if attributes:
                    result.add_differ(rel, attributes, entry_from_values(rel, one), entry_from_values(rel, other))
            result.compared += 1
            result.bytes_compared += one[4] or 0
            if rel in folders and one[0] == 'directory' and other[0] == 'directory':
                names = []
                for walker in walkers:
                    full = walker.root if rel == b'.' else os.path.join(walker.root, rel)
                    try:
                        names.append(set(name for name in os.listdir(full) if name not in ignored))
                    except OSError as exc:
                        names.append(None)
                        result.add_differ(rel, ['error'], {'error': exc.strerror})
                if None not in names:
                    prefix = b'' if rel == b'.' else rel + b'/'
                    for name in sorted(names[0] - names[1]):
                        result.add_missing(prefix + name)
                    for name in sorted(names[1] - names[0]):
                        result.add_extra(prefix + name)
        if on_progress is not None:
            on_progress(result)
    result.source_counts = dict(walkers[0].counts)
    result.source_digest = 'changes:' + walkers[0].hexdigest()
    result.destination_digest = 'changes:' + walkers[1].hexdigest()
    for key in ('files_hashed', 'files_reused', 'bytes_hashed', 'bytes_reused'):
        setattr(result, key, getattr(walkers[0], key) + getattr(walkers[1], key))
    return result
