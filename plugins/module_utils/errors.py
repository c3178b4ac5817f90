# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors raised by drivers and managers; only modules turn them into fail_json.

Each class carries its ``error_type``, the one vocabulary every module reports in its failure
result (``error_type`` key): a subclass inherits the type of the class it refines.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type


#: every ``error_type`` a module may report, and what it means
ERROR_TYPES = {
    'storage': 'the storage or the service failed, or a step found a state it cannot continue from',
    'invalid_request': 'the request is malformed or not allowed; nothing was changed',
    'not_found': 'the named object does not exist',
    'busy': 'the object is busy with another task or locked by another run',
    'timeout': 'a wait ran out of time; the result holds the last state seen',
    'command': 'an external command failed; cmd, rc, stdout and stderr say how',
    'missing_library': 'a Python library the module needs is not installed on the target',
}


class StorageError(Exception):
    """Base error. ``details`` carries cmd/rc/stdout/stderr or other facts for the report."""

    error_type = 'storage'

    def __init__(self, message, **details):
        super(StorageError, self).__init__(message)
        self.message = message
        self.details = details

    def __str__(self):
        return self.message


class HostUnreachable(StorageError):
    """A storage host could not be reached at all (connection refused, timed out, no route). Its
    pools are then unavailable for the run, as an unmounted pool is (store.py): a step that can go
    on without them does (a forced promotion of a replica elsewhere); one that needs them fails with
    this error."""


class InvalidRequest(StorageError):
    """The request is malformed or not allowed; nothing was changed."""

    error_type = 'invalid_request'


class NotFound(StorageError):
    """The named object does not exist."""

    error_type = 'not_found'


class Busy(StorageError):
    """The object is busy with another task or locked by another run."""

    error_type = 'busy'


class WaitTimeout(StorageError):
    """A wait ran out of time; ``details['result']`` holds the last state seen."""

    error_type = 'timeout'


class CommandError(StorageError):
    """An external command failed."""

    error_type = 'command'

    def __init__(self, message, cmd=None, rc=None, stdout=None, stderr=None):
        super(CommandError, self).__init__(message, cmd=cmd, rc=rc, stdout=stdout, stderr=stderr)
