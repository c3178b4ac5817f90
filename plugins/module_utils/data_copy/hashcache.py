# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hash cache: per side and path, the hash of a regular file with the identity it had when it was
read (size, modification time and change time to the nanosecond and inode number; see fileread).
A later walk reuses the hash only when all four are unchanged; any write to a file (even one that
restores its size and modification time) changes its change time, which no program can set back,
so a changed file is always read again.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import marshal

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.state import atomic_write

HASH_CACHE_FORMAT = 'storage.mobility hash cache 2'
SIDES = ('source', 'destination')


class HashCache(object):
    """Hashes of regular files by side and path, each with the identity it had when it was read.

    ``sides['source']`` and ``sides['destination']`` map a path (bytes, relative) to
    ``(identity, hash)``. Stored as a JSON header line (format and algorithm) followed by the two
    maps in Python's ``marshal`` format (a few times faster to write and read than text for
    hundreds of thousands of files). The file lives in the job's state folder, which only its
    owner can write, as it does the worker that runs there.
    """

    def __init__(self, algorithm, sides=None):
        self.algorithm = algorithm
        self.sides = sides or dict((side, {}) for side in SIDES)

    def __len__(self):
        return sum(len(entries) for entries in self.sides.values())

    def save(self, path):
        payload = marshal.dumps(tuple(self.sides[side] for side in SIDES))
        header = json.dumps({'format': HASH_CACHE_FORMAT, 'algorithm': self.algorithm, 'bytes': len(payload)})
        atomic_write(path, header.encode('ascii') + b'\n' + payload)

    @classmethod
    def load(cls, path, algorithm):
        """The cache stored in ``path``, or None when it is missing, unreadable, of another format or
        of another algorithm."""
        try:
            with open(path, 'rb') as handle:
                header = json.loads(handle.readline().decode('utf-8'))
                if header.get('format') != HASH_CACHE_FORMAT or header.get('algorithm') != algorithm:
                    return None
                payload = handle.read()
            if len(payload) != header.get('bytes'):
                return None
            maps = marshal.loads(payload)
            if maps.__class__ is not tuple or len(maps) != len(SIDES):
                return None
            for entries in maps:
                if entries.__class__ is not dict or not all(_cache_record(rel, record)
                                                            for rel, record in entries.items()):
                    return None
        except (IOError, OSError, ValueError, EOFError, TypeError, AttributeError, UnicodeDecodeError):
            return None
        return cls(algorithm, dict(zip(SIDES, maps)))


def _cache_record(rel, record):
    """Whether one item of a loaded hash cache has the shape the walks expect."""
    return (rel.__class__ is bytes and record.__class__ is tuple and len(record) == 2
            and record[0].__class__ is tuple and len(record[0]) == 4 and record[1].__class__ is str)
