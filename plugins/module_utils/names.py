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


class PoolRef(object):
    """A parsed pool address ``host@backend#pool``."""

    __slots__ = ('host', 'backend', 'pool')

    def __init__(self, host, backend, pool):
        self.host = host
        self.backend = backend
        self.pool = pool

    def __str__(self):
        return '%s@%s#%s' % (self.host, self.backend, self.pool)

    def __repr__(self):
        return 'PoolRef(%r)' % str(self)

    def __eq__(self, other):
        return isinstance(other, PoolRef) and str(self) == str(other)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(str(self))


def parse_pool(value, what='pool'):
    """Parse ``host@backend#pool`` or raise InvalidRequest saying what the form must be."""
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
    return PoolRef(match.group('host'), match.group('backend'), match.group('pool'))
