# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors raised by drivers and managers; only modules turn them into fail_json."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class StorageError(Exception):
    """Base error. ``details`` carries cmd/rc/stdout/stderr or other facts for the report."""

    def __init__(self, message, **details):
        super(StorageError, self).__init__(message)
        self.message = message
        self.details = details

    def __str__(self):
        return self.message


class InvalidRequest(StorageError):
    """The request is malformed or not allowed; nothing was changed."""


class NotFound(StorageError):
    """The named object does not exist."""


class Busy(StorageError):
    """The object is busy with another task or locked by another run."""


class WaitTimeout(StorageError):
    """A wait ran out of time; ``details['result']`` holds the last state seen."""


class CommandError(StorageError):
    """An external command failed."""

    def __init__(self, message, cmd=None, rc=None, stdout=None, stderr=None):
        super(CommandError, self).__init__(message, cmd=cmd, rc=rc, stdout=stdout, stderr=stderr)
