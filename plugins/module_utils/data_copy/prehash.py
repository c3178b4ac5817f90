# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hashing while the copy runs: a forked process reads and hashes what can be read already, so that
the verification after the copy reads only the rest (see prehash).

Shipped to the data node with the worker: standard library only (plus the optional hash packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import stat
import sys
import time

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileread import identity, sync_filesystem
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.walk import BATCH, Walker

# Seconds between two looks at the destination files the copy has finished (see prehash).
PREHASH_ROUND = 1.0
PREHASH_FLUSH_BYTES = 64 * 1024 * 1024


class _Prehash(object):
    """The state of one prehash process (see prehash)."""

    def __init__(self, source, destination, ignore, algorithm, caches, conn):
        self.source = Walker(source, ignore, algorithm, drop_cache=False, cache=caches.get('source'))
        self.source.keep_cache = True
        self.destination = None
        if destination is not None:
            self.destination = Walker(destination, ignore, algorithm, drop_cache=True,
                                      cache=caches.get('destination'))
        self.conn = conn
        self.batch = []
        self.batch_bytes = 0
        self.pending = []
        self.last_round = self.last_flush = time.monotonic()

    def send(self, side, rel, record):
        self.batch.append((side, rel, record))
        self.batch_bytes += record[0][0]
        # Send often enough that little is lost when the process is stopped at the end of the copy.
        if len(self.batch) >= BATCH or self.batch_bytes >= PREHASH_FLUSH_BYTES or (
                time.monotonic() - self.last_flush >= PREHASH_ROUND):
            self.flush()

    def flush(self):
        if self.batch:
            self.conn.send(self.batch)
            self.batch = []
        self.batch_bytes = 0
        self.last_flush = time.monotonic()

    def hash_source(self, rel, full, st):
        before = identity(st)
        cached = self.source.cache.get(rel)
        if cached is None or cached[0] != before:
            try:
                digest, after = self.source.read_and_hash(full)
            except OSError:
                return
            if after != before:
                return
            self.send('source', rel, (before, digest))
        if self.destination is not None:
            self.pending.append((rel, st.st_size, st.st_mtime_ns))

    def destination_round(self):
        """Hash the destination files the copy has finished (same size and modification time as the
        source's); after one flush of the destination filesystem, from the disk."""
        self.last_round = time.monotonic()
        waiting, ready = [], []
        walker = self.destination
        for item in self.pending:
            rel = item[0]
            full = os.path.join(walker.root, rel)
            try:
                st = os.lstat(full)
            except OSError:
                waiting.append(item)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != item[1] or st.st_mtime_ns != item[2]:
                waiting.append(item)
                continue
            before = identity(st)
            cached = walker.cache.get(rel)
            if cached is None or cached[0] != before:
                ready.append((rel, full, before))
        self.pending = waiting
        if ready:
            sync_filesystem(walker.root)
            for rel, full, before in ready:
                try:
                    digest, after = walker.read_and_hash(full)
                except OSError:
                    continue
                if after == before:
                    self.send('destination', rel, (before, digest))
            self.flush()
        return len(ready)

    def run(self):
        root = self.source.root
        ignored = self.source.ignore
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                names = sorted(name for name in os.listdir(folder) if name not in ignored)
            except OSError:
                continue
            folders = []
            for name in names:
                full = os.path.join(folder, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    folders.append(full)
                elif stat.S_ISREG(st.st_mode):
                    self.hash_source(full[len(root) + 1:], full, st)
            stack.extend(reversed(folders))
            if self.pending and time.monotonic() - self.last_round >= PREHASH_ROUND:
                self.destination_round()
        self.flush()
        while self.pending:
            if not self.destination_round():
                time.sleep(PREHASH_ROUND / 4)
        self.conn.send(('end',))


def prehash(source, ignore, algorithm, caches, conn, destination=None, parent=None, inherited=()):
    """In a forked process while the copy runs: read and hash what can be read already.

    Reads the regular files of ``source`` in the walk's order, keeping the page cache (the copy
    may still need the pages). With ``destination``: about once a second, the destination files
    that the copy has finished (same size and modification time as the source file) are read
    from the disk (flush of the filesystem, then direct I/O or dropped pages) and hashed; files
    that are not finished yet are looked at again in the next round. Files whose identity matches
    ``caches`` (side -> what ``get(path)`` gives ``(identity, hash)`` of: a map, or a SideLookup of
    a side file, see hashcache) are not read. Sends ``[(side, path, (identity, hash))]`` batches on
    ``conn``, then ``('end',)``. The verification reuses these hashes where the files have not
    changed since (see HashCache), so it reads only the rest.
    ``parent`` and ``inherited``: see lifeline (this process dies with the worker and does not hold
    the reading end of its own pipe). It runs at a lower CPU priority (lifeline.lower_priority):
    what it hashes saves the verification's reads, and it must not slow the copy to do so.
    """
    lifeline.child_start(parent, inherited)
    lifeline.lower_priority()
    try:
        _Prehash(source, destination, ignore, algorithm, caches, conn).run()
    except (IOError, OSError, EOFError):
        pass  # the worker stopped listening: the copy has ended
    except Exception as exc:  # pylint: disable=broad-except
        # A cancel (SIGTERM) or anything else: the verification reads whatever was not hashed here.
        sys.stderr.write('the hashing during the copy stopped: %s: %s\n' % (type(exc).__name__, exc))
    finally:
        conn.close()
