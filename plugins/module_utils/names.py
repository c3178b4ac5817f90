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
_NAME_MAX = 255


def validate_name(value, what='share name'):
    """Return ``value`` if it is a safe object name, else raise InvalidRequest naming the problem.

    A name becomes a path component and a command argument, so it may not contain
    ``/``, NUL or a newline, may not be ``.`` or ``..`` or start with ``-``.
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
    if len(value.encode('utf-8', 'surrogateescape')) > _NAME_MAX:
        problems.append('is longer than %d bytes' % _NAME_MAX)
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
