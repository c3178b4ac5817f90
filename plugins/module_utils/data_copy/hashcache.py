# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hash cache: per side and path, the hash of a regular file with the identity it had when it was
read (size, modification time and change time to the nanosecond and inode number; see fileread).
A later walk reuses the hash only when all four are unchanged; any write to a file (even one that
restores its size and modification time) changes its change time, which no program can set back,
so a changed file is always read again.

On disk, each side is a file of its own, its records **in the walk's order** (walk.py: depth first,
names sorted as bytes; ``sort_key``), so that nothing needs the whole cache in memory: a walker
writes its side as it goes (SideWriter) and looks the previous one up a frame at a time
(SideLookup); records that come in another order go through sorted runs (RecordSpill). A side
file is a JSON header line (format, algorithm, side), then frames, each a length, a BLAKE2b digest
of its payload and the payload (a ``marshal``-encoded list of ``(path, identity, hash)``), then an
end frame with the count. A frame is used only when its
digest matches and every record has the right shape; a file cut short gives the frames before the
cut (each record in them is still what a walk read), a damaged frame ends the file there.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import bisect
import collections
import errno
import hashlib
import heapq
import json
import marshal
import os
import struct
import threading

HASH_CACHE_FORMAT = 'storage.mobility hash cache 3'
SIDES = ('source', 'destination')
#: records per frame: small enough to read one at a time, large enough that a frame costs little
FRAME_RECORDS = 2048
#: records of one side a RecordSpill keeps in memory before it writes them to a run file
SPILL_RECORDS = 32768
#: frames a SideLookup keeps read (as maps of FRAME_RECORDS paths each)
LOOKUP_FRAMES = 8
_FRAME_HEAD = struct.Struct('>I16s')
_END = 'end'


def sort_key(path):
    """The walk's order as bytes: the root first, then the names of each level compared in turn
    (a NUL byte, which no name holds, stands for each slash)."""
    return b'' if path == b'.' else path.replace(b'/', b'\0')


def side_path(base, side):
    """The file of one side of the cache whose files are named after ``base``."""
    return '%s.%s' % (base, side)


def _digest(payload):
    return hashlib.blake2b(payload, digest_size=16).digest()


def _cache_record(item):
    """Whether one record of a side file has the shape the walks expect."""
    return (item.__class__ is tuple and len(item) == 3 and item[0].__class__ is bytes
            and item[1].__class__ is tuple and len(item[1]) == 4 and item[2].__class__ is str)


class SideWriter(object):
    """Writes the records of one side to ``path`` (created or truncated, mode 0600) as they come,
    which must be in the walk's order; ``close`` ends the file and, when ``durable``, fsyncs it (a
    file only this run reads need not be: its frames' digests tell a torn one)."""

    def __init__(self, path, algorithm, side, durable=True):
        self.path = path
        self.durable = durable
        self.count = 0
        self._batch = []
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._handle = os.fdopen(fd, 'wb')
        header = json.dumps({'format': HASH_CACHE_FORMAT, 'algorithm': algorithm, 'side': side})
        self._handle.write(header.encode('ascii') + b'\n')

    def add(self, rel, record):
        """One file's ``(identity, hash)``."""
        self._batch.append((rel, record[0], record[1]))
        if len(self._batch) >= FRAME_RECORDS:
            self._flush()

    def _frame(self, value):
        payload = marshal.dumps(value)
        self._handle.write(_FRAME_HEAD.pack(len(payload), _digest(payload)) + payload)

    def _flush(self):
        if self._batch:
            self.count += len(self._batch)
            self._frame(self._batch)
            self._batch = []

    def close(self):
        """Write what is left and the end frame, flush and fsync; the number of records."""
        self._flush()
        self._frame((_END, self.count))
        self._handle.flush()
        if self.durable:
            os.fsync(self._handle.fileno())
        self._handle.close()
        return self.count

    def abandon(self):
        """Close without ending the file and remove it (a walk that did not finish)."""
        try:
            self._handle.close()
        except (IOError, OSError):
            pass
        remove(self.path)


def write_side(path, algorithm, side, records, durable=True):
    """Write ``records`` (``(path, (identity, hash))`` in the walk's order) as a side file; the count."""
    writer = SideWriter(path, algorithm, side, durable)
    try:
        for rel, record in records:
            writer.add(rel, record)
    except BaseException:
        writer.abandon()
        raise
    return writer.close()


def chunks(records, size=None):
    """``(path, (identity, hash))`` records as lists of ``(path, identity, hash)``, FRAME_RECORDS
    at most each (what goes over a pipe in one frame)."""
    size = size or FRAME_RECORDS
    chunk = []
    for rel, record in records:
        chunk.append((rel, record[0], record[1]))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sorted_records(entries):
    """The items of a map path -> ``(identity, hash)`` in the walk's order."""
    return sorted(entries.items(), key=lambda item: sort_key(item[0]))


def merged(first, second):
    """Two record streams in the walk's order merged into one; for a path in both, ``second``'s."""
    end = object()
    first, second = iter(first), iter(second)
    one, other = next(first, end), next(second, end)
    while one is not end or other is not end:
        if other is end or (one is not end and sort_key(one[0]) < sort_key(other[0])):
            yield one
            one = next(first, end)
        else:
            if one is not end and one[0] == other[0]:
                one = next(first, end)
            yield other
            other = next(second, end)


def _ranked(stream, rank):
    """The records of ``stream`` as ``(sort key, rank, path, record)``: merged, a lower rank first."""
    for rel, record in stream:
        yield sort_key(rel), rank, rel, record


def newest_wins(streams):
    """Record streams, each in the walk's order, merged into one; for a path in several, the
    record of the last stream that has it."""
    keyed = [_ranked(stream, -index) for index, stream in enumerate(streams)]
    last = None
    for dummy, dummy2, rel, record in heapq.merge(*keyed):
        if rel != last:
            last = rel
            yield rel, record


def read_header(handle, algorithm, side=None):
    """True when the open side file ``handle`` starts with this format's header for ``algorithm``
    (and ``side``)."""
    try:
        header = json.loads(handle.readline().decode('utf-8'))
    except (ValueError, UnicodeDecodeError):
        return False
    return (header.__class__ is dict and header.get('format') == HASH_CACHE_FORMAT
            and header.get('algorithm') == algorithm and (side is None or header.get('side') == side))


def _frame_records(handle, length=None):
    """The records of the frame at ``handle``'s position (its head included), or None when it is
    not whole, its digest does not match or a record is not of the right shape; with ``length``,
    only a frame of that payload length."""
    head = handle.read(_FRAME_HEAD.size)
    if len(head) != _FRAME_HEAD.size:
        return None
    size, digest = _FRAME_HEAD.unpack(head)
    if length is not None and size != length:
        return None
    payload = handle.read(size)
    if len(payload) != size or _digest(payload) != digest:
        return None
    try:
        value = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if value.__class__ is not list or not all(_cache_record(item) for item in value):
        return None
    return value


def _frames(handle, algorithm, side=None):
    """Yield ``(offset, payload length, records)`` of each frame of the open side file ``handle``
    from its start, up to the end frame or the first that is not whole and right."""
    handle.seek(0)
    if not read_header(handle, algorithm, side):
        return
    while True:
        offset = handle.tell()
        records = _frame_records(handle)
        if records is None:
            return
        yield offset, handle.tell() - offset - _FRAME_HEAD.size, records


def read_records(path, algorithm, side=None):
    """Yield the ``(path, (identity, hash))`` of a side file in its order; nothing when the file is
    missing, of another format, algorithm or side; up to the first damaged frame otherwise."""
    try:
        handle = open(path, 'rb')
    except (IOError, OSError):
        return
    with handle:
        for dummy, dummy2, records in _frames(handle, algorithm, side):
            for rel, ident, digest in records:
                yield rel, (ident, digest)


def load_side(path, algorithm, side=None):
    """The records of a side file as a map path -> ``(identity, hash)``; None when the file is
    missing or not of this format and algorithm."""
    if not side_exists(path, algorithm, side):
        return None
    return dict(read_records(path, algorithm, side))


def side_exists(path, algorithm, side=None):
    """True when ``path`` is a side file of this format for ``algorithm`` (and ``side``)."""
    try:
        with open(path, 'rb') as handle:
            return read_header(handle, algorithm, side)
    except (IOError, OSError):
        return False


def remove(path):
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


class SideLookup(object):
    """``get(path)`` on a side file without reading it into memory: an index of its frames (the
    first path of each, made by one pass over the file at the first lookup, so that an object made
    before a fork reads in the child only) and the last LOOKUP_FRAMES frames read, as maps. Lookups
    in the walk's order (a walker's) read each frame once; others (the hashing during the copy goes
    folder by folder) read a frame again when it has left the recent ones. A frame that no longer
    reads as it did when indexed is a miss, which costs a read of the file, never a wrong hash."""

    def __init__(self, path, algorithm, side=None):
        self.path = path
        self.algorithm = algorithm
        self.side = side
        self._handle = None
        self._keys = None
        self._frames = []
        self._recent = collections.OrderedDict()
        # The frame of the last lookup, with the keys it spans: ``(first key, next frame's first key
        # or None, records)``. A walker looks up paths in the walk's order, so most lookups fall in it.
        self._last = None

    def _index(self):
        self._keys = []
        try:
            self._handle = open(self.path, 'rb', buffering=0)
        except (IOError, OSError):
            return
        for offset, length, records in _frames(self._handle, self.algorithm, self.side):
            if records:
                self._keys.append(sort_key(records[0][0]))
                self._frames.append((offset, length))

    def _frame(self, number):
        found = self._recent.pop(number, None)
        if found is None:
            offset, length = self._frames[number]
            self._handle.seek(offset)
            records = _frame_records(self._handle, length)
            found = dict((rel, (ident, digest)) for rel, ident, digest in records or ())
            if len(self._recent) >= LOOKUP_FRAMES:
                self._recent.popitem(last=False)
        self._recent[number] = found
        return found

    def get(self, rel, default=None):
        if self._keys is None:
            self._index()
        key = sort_key(rel)
        last = self._last
        if last is not None and last[0] <= key and (last[1] is None or key < last[1]):
            return last[2].get(rel, default)
        keys = self._keys
        number = bisect.bisect_right(keys, key) - 1
        if number < 0:
            return default
        found = self._frame(number)
        self._last = (keys[number], keys[number + 1] if number + 1 < len(keys) else None, found)
        return found.get(rel, default)


class OverlayLookup(object):
    """``get(path)`` in a few records held in memory (``first``: path -> record), then in ``then`` (a
    SideLookup or a map): the hashes read during a copy over the kept cache, looked up without
    writing both into one file first."""

    def __init__(self, first, then):
        self.first = first
        self.then = then

    def get(self, rel, default=None):
        found = self.first.get(rel)
        return found if found is not None else self.then.get(rel, default)


class RecordSpill(object):
    """Records that come in any order (from the copying processes, from the hashing during the
    copy), without a map of every file: up to SPILL_RECORDS per side in memory, then written as a
    run (a side file ``<base>.run<n>.<side>``, sorted). ``records(side)`` merges the runs and what
    is left in memory in the walk's order, a later record of a path winning. ``add`` may be called
    from several threads; a run that cannot be written is dropped (``dropped``, ``error``): those
    files are read again by the verification."""

    def __init__(self, base, algorithm, limit=None):
        self.base = base
        self.algorithm = algorithm
        self.limit = limit or SPILL_RECORDS
        self.counts = dict((side, 0) for side in SIDES)
        self.dropped = 0
        self.error = None
        self._pending = dict((side, {}) for side in SIDES)
        self._runs = dict((side, []) for side in SIDES)
        self._lock = threading.Lock()

    def __len__(self):
        return sum(self.counts.values())

    def add(self, side, rel, record):
        with self._lock:
            pending = self._pending[side]
            pending[rel] = record
            self.counts[side] += 1
            if len(pending) >= self.limit:
                path = '%s.run%d.%s' % (self.base, len(self._runs[side]), side)
                self._pending[side] = {}
                try:
                    write_side(path, self.algorithm, side, sorted_records(pending), durable=False)
                except (IOError, OSError) as exc:
                    # Only hashes lost: the verification reads these files again.
                    self.dropped += len(pending)
                    self.error = '%s: %s' % (path, exc)
                else:
                    self._runs[side].append(path)

    def records(self, side):
        """Every record of ``side`` in the walk's order (each path once, its last record)."""
        streams = [read_records(path, self.algorithm, side) for path in self._runs[side]]
        return newest_wins(streams + [iter(sorted_records(self._pending[side]))])

    def in_memory(self):
        """The records as maps (side -> path -> record) when none went to a run file, else None."""
        with self._lock:
            if any(self._runs.values()):
                return None
            return dict((side, dict(self._pending[side])) for side in SIDES)

    def discard(self):
        """Forget the records and remove the run files."""
        with self._lock:
            for side in SIDES:
                for path in self._runs[side]:
                    remove(path)
                self._runs[side] = []
                self._pending[side] = {}


class HashCache(object):
    """Hashes of regular files by side and path, each with the identity it had when it was read.

    Either in memory (``sides``: side -> path -> ``(identity, hash)``) or in side files
    (``files``: side -> path of its side file), loaded into memory only when ``sides`` is read;
    ``lookup(side)`` gives what a walk looks its files up in (a SideLookup of the file, or the map).
    ``overlay`` (side -> path -> record, few) wins over both in ``lookup`` and ``records``: the input
    of a verification, the kept cache with the hashes read during the copy on top (never saved).
    """

    def __init__(self, algorithm, sides=None, files=None, overlay=None):
        self.algorithm = algorithm
        self.files = dict(files or {})
        self._sides = sides if sides is not None else (None if self.files else dict((s, {}) for s in SIDES))
        self.overlay = dict((side, entries) for side, entries in (overlay or {}).items() if entries)

    @property
    def sides(self):
        if self._sides is None:
            self._sides = dict((side, load_side(self.files.get(side), self.algorithm, side) or {})
                               if self.files.get(side) else (side, {}) for side in SIDES)
        return self._sides

    def __len__(self):
        return sum(len(entries) for entries in self.sides.values())

    def lookup(self, side):
        """What a walk of ``side`` looks its files up in: a map, or a SideLookup of its side file
        (under the overlay's records of that side, if any)."""
        if self._sides is None:
            path = self.files.get(side)
            found = SideLookup(path, self.algorithm, side) if path else {}
        else:
            found = self._sides.get(side) or {}
        return OverlayLookup(self.overlay[side], found) if side in self.overlay else found

    def records(self, side):
        """The records of ``side`` in the walk's order (the overlay's winning)."""
        if self._sides is None:
            path = self.files.get(side)
            found = read_records(path, self.algorithm, side) if path else iter(())
        else:
            found = iter(sorted_records(self._sides.get(side) or {}))
        return merged(found, sorted_records(self.overlay[side])) if side in self.overlay else found

    def save(self, base):
        """Keep the cache as the side files of ``base`` (see side_path): files are renamed there,
        maps written."""
        folder = os.path.dirname(base) or '.'
        for side in SIDES:
            target = side_path(base, side)
            source = self.files.get(side) if self._sides is None else None
            if source:
                if source != target:
                    os.rename(source, target)
            else:
                tmp = os.path.join(folder, '.%s.tmp.%d' % (os.path.basename(target), os.getpid()))
                write_side(tmp, self.algorithm, side, sorted_records(self.sides.get(side) or {}))
                os.rename(tmp, target)
            self.files[side] = target
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, base, algorithm):
        """The cache kept as the side files of ``base``, not read yet, or None when neither side
        file is there for this format and algorithm."""
        files = dict((side, side_path(base, side)) for side in SIDES
                     if side_exists(side_path(base, side), algorithm, side))
        if not files:
            return None
        return cls(algorithm, files=files)

    def discard(self):
        """Remove the side files (a cache of a walk that is not kept)."""
        for path in self.files.values():
            remove(path)
        self.files = {}
