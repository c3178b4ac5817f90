# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The content hashes of the data mover: which algorithms exist, which one a data node can use
(xxh128 falls back to blake2b without the ``xxhash`` package; blake3 needs ``blake3``), and new
hash objects.

Shipped to the data node with the worker: standard library only (plus the optional ``xxhash`` and
``blake3`` packages), Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib

HASH_ALGORITHMS = ('xxh128', 'sha256', 'blake3', 'blake2b')
DEFAULT_ALGORITHM = 'xxh128'
FALLBACK_ALGORITHM = 'blake2b'
HASH_LIBRARIES = {'xxh128': 'xxhash', 'blake3': 'blake3'}


class HashUnavailable(Exception):
    """The hash algorithm needs a Python package that is not installed."""

    def __init__(self, algorithm, library):
        super(HashUnavailable, self).__init__('Hash algorithm %s needs the Python package %s' % (algorithm, library))
        self.algorithm = algorithm
        self.library = library


def _xxhash():
    try:
        import xxhash  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return xxhash if hasattr(xxhash, 'xxh3_128') else None


def _blake3():
    try:
        import blake3  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return blake3


def missing_library(algorithm):
    """The package ``algorithm`` needs and lacks, or None. xxh128 falls back, so never lacks one."""
    if algorithm == 'blake3' and _blake3() is None:
        return 'blake3'
    return None


def resolve_algorithm(requested):
    """``(algorithm used, warning or None)``; raise HashUnavailable when there is no way to hash."""
    if requested not in HASH_ALGORITHMS:
        raise ValueError('Unknown hash algorithm %r; expected one of %s' % (requested, ', '.join(HASH_ALGORITHMS)))
    if requested == 'xxh128' and _xxhash() is None:
        return FALLBACK_ALGORITHM, ('The Python package xxhash is not installed on the data node: hashed with %s '
                                    'instead of xxh128 (slower; install xxhash for the fast hash)'
                                    % FALLBACK_ALGORITHM)
    if requested == 'blake3' and _blake3() is None:
        raise HashUnavailable('blake3', 'blake3')
    return requested, None


def new_hasher(algorithm):
    """A hash object with ``update`` and ``hexdigest`` for an algorithm that resolve_algorithm accepted."""
    if algorithm == 'xxh128':
        module = _xxhash()
        if module is None:
            raise HashUnavailable('xxh128', 'xxhash')
        return module.xxh3_128()
    if algorithm == 'blake3':
        module = _blake3()
        if module is None:
            raise HashUnavailable('blake3', 'blake3')
        return module.blake3()
    if algorithm == 'sha256':
        return hashlib.sha256()
    if algorithm == 'blake2b':
        return hashlib.blake2b()
    raise ValueError('Unknown hash algorithm %r' % (algorithm,))


def hasher_factory(algorithm):
    """A callable without arguments that returns a new hash object (see new_hasher)."""
    new_hasher(algorithm)  # fails here when the algorithm is not available
    if algorithm == 'xxh128':
        return _xxhash().xxh3_128
    if algorithm == 'blake3':
        return _blake3().blake3
    return getattr(hashlib, algorithm)
