# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of user-supplied names and pool addresses (``host@backend#pool``)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest

_PART = r'[A-Za-z0-9][A-Za-z0-9._-]*'
_POOL_RE = re.compile(r'^(?P<host>%s)@(?P<backend>%s)#(?P<pool>%s)$' % (_PART, _PART, _PART))
# A name becomes one path component, and Linux filesystems hold at most 255 bytes in one.
COMPONENT_MAX = 255
# Every path component this collection derives from a name, with ``%s`` where the name goes.
# The longest accepted name is the one for which all of them still fit in one component; a name
# that is longer is refused before anything is created. Names derived from a hash or an id of
# fixed length (trash entries, the btrfs driver's temporary snapshots, copy job folders and mount
# points, which are named from the migration id) do not grow with the name and are not listed.
DERIVED_NAMES = {
    'share name': (
        '%s',            # <pool>/shares/<share>, <pool>/snapshots/<share>, <export root>/<share>
        '%s.json',       # <pool>/.mobility/shares/<share>.json, the share's record (store.py)
        '%s.lock',       # <pool>/.mobility/locks/<share>.lock, the share's lock (store.py)
    ),
    'snapshot name': (
        '%s',            # <pool>/snapshots/<share>/<snapshot>
        '.%s.partial',   # a posix snapshot while it is being copied (drivers/share/posix.py)
    ),
    'volume name': (
        '%s.json',       # <pool>/.mobility/volumes/<volume>.json, the volume's record (store.py)
        'volume-%s.lock',  # <pool>/.mobility/locks/volume-<volume>.lock, its lock (store.py)
    ),
    'job id': (
        '%s',            # <state dir>/<job id>, a data copy job's folder (data_copy/job.py)
        '.%s.lock',      # <state dir>/.<job id>.lock, its lock
    ),
}


def name_limit(what):
    """The longest accepted ``what`` (``share name``, ``snapshot name``, ``job id``) in bytes."""
    patterns = DERIVED_NAMES.get(what, ('%s',))
    return COMPONENT_MAX - max(len(pattern) - 2 for pattern in patterns)


SHARE_NAME_MAX = name_limit('share name')
SNAPSHOT_NAME_MAX = name_limit('snapshot name')


def validate_name(value, what='share name'):
    """Return ``value`` if it is a safe object name, else raise InvalidRequest naming the problem.

    A name becomes a path component and a command argument, so it may not contain
    ``/``, NUL or a newline, may not be ``.`` or ``..`` or start with ``-``, and every path
    component derived from it (DERIVED_NAMES) must fit in 255 bytes.
    """
    if not isinstance(value, str) or value == '':
        raise InvalidRequest('Invalid %s %r: it must be a non-empty string' % (what, value))
    problems = []
    if '/' in value:
        problems.append("contains '/'")
    if '\x00' in value:
        problems.append('contains a NUL byte')
    if '\n' in value or '\r' in value:
        problems.append('contains a newline')
    if value in ('.', '..') or '..' in value:
        problems.append("contains '..'")
    if value.startswith('-'):
        problems.append("starts with '-'")
    if value.startswith('.'):
        problems.append("starts with '.'")
    size = len(value.encode('utf-8', 'surrogateescape'))
    limit = name_limit(what)
    if size > limit:
        problems.append('is %d bytes long, more than the limit of %d bytes for a %s (a path component holds %d '
                        'bytes and the longest name derived from it adds %d)'
                        % (size, limit, what, COMPONENT_MAX, COMPONENT_MAX - limit))
    if problems:
        raise InvalidRequest('Invalid %s %r: it %s' % (what, value, ' and '.join(problems)))
    return value


class PoolAddress(object):
    """A pool address ``host@backend#pool``, parsed once and passed down as this value.

    ``parse`` is for the pools the collection declares (every part a safe name, all three present);
    ``service`` for a pool an OpenStack service names (any non-empty parts); ``split`` reads an
    address without judging it (``pool`` and ``backend`` are None where the ``#`` or ``@`` is missing,
    as in Cinder's ``host@backend``), for choosing a backend or naming one in a message. ``str()``
    gives the address back as written."""

    __slots__ = ('host', 'backend', 'pool')

    def __init__(self, host, backend, pool=None):
        self.host = host
        self.backend = backend
        self.pool = pool

    @property
    def host_backend(self):
        """``host@backend``, the part before ``#`` (Manila's and Cinder's service host)."""
        return self.host if self.backend is None else '%s@%s' % (self.host, self.backend)

    def __str__(self):
        return self.host_backend if self.pool is None else '%s#%s' % (self.host_backend, self.pool)

    def __repr__(self):
        return 'PoolAddress(%r)' % str(self)

    def __eq__(self, other):
        return isinstance(other, PoolAddress) and str(self) == str(other)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(str(self))

    @classmethod
    def parse(cls, value, what='pool'):
        """A declared pool's address, or InvalidRequest saying what the form must be."""
        if not isinstance(value, str) or not value:
            raise InvalidRequest('Invalid %s %r: expected host@backend#pool' % (what, value))
        match = _POOL_RE.fullmatch(value)
        if not match:
            hint = ''
            if '@' not in value:
                hint = " (no '@' between host and backend)"
            elif '#' not in value:
                hint = " (no '#' before the pool name)"
            raise InvalidRequest('Invalid %s %r: expected host@backend#pool, each part letters, digits, '
                                 "'.', '_' or '-' and not starting with a punctuation mark%s" % (what, value, hint))
        return cls(match.group('host'), match.group('backend'), match.group('pool'))

    @classmethod
    def split(cls, value):
        """The parts of ``value`` as written, without judging them; never raises."""
        head, sep, pool = (value or '').partition('#')
        host, at, backend = head.partition('@')
        return cls(host, backend if at else None, pool if sep else None)

    @classmethod
    def service(cls, value, what, service, example):
        """A pool as OpenStack ``service`` names it (``host@backend#pool``, no part empty)."""
        address = cls.split(value if isinstance(value, str) else '')
        if not (address.host and address.backend and address.pool):
            raise InvalidRequest('Invalid %s %r: expected host@backend#pool as %s names pools, for example %s'
                                 % (what, value, service, example))
        return address


#: the name this value had before it took the OpenStack forms too
PoolRef = PoolAddress


def parse_pool(value, what='pool'):
    """Parse a declared pool's ``host@backend#pool`` or raise InvalidRequest (PoolAddress.parse)."""
    return PoolAddress.parse(value, what)
