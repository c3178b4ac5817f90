# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal QMP client (QEMU's JSON monitor protocol) over a unix socket, for the storage daemon
that pulls a volume during an asynchronous migration (drivers/volume/file.py).

One command per connection: connect, read the greeting, ``qmp_capabilities``, the command, its
answer (events that arrive meanwhile are skipped: the state they announce is read with queries).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import socket

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError


class QMPError(StorageError):
    """QEMU answered a command with an error (``klass`` is QEMU's error class)."""

    def __init__(self, message, klass=None):
        super(QMPError, self).__init__(message)
        self.klass = klass


def _read_message(handle):
    line = handle.readline()
    if not line:
        raise StorageError('The storage daemon closed its monitor socket')
    return json.loads(line.decode('utf-8'))


def _answer(handle):
    while True:
        message = _read_message(handle)
        if 'return' in message or 'error' in message:
            return message


def execute(path, command, arguments=None, timeout=30.0):
    """Run one QMP ``command`` on the monitor socket ``path``; its ``return`` value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (IOError, OSError) as exc:
            raise StorageError('Cannot reach the storage daemon monitor %s: %s' % (path, exc))
        handle = sock.makefile('rwb')
        _read_message(handle)  # the greeting
        for name, args in (('qmp_capabilities', None), (command, arguments)):
            request = {'execute': name}
            if args:
                request['arguments'] = args
            handle.write(json.dumps(request).encode('utf-8') + b'\n')
            handle.flush()
            answer = _answer(handle)
            if 'error' in answer:
                raise QMPError('Storage daemon command %s failed: %s' % (name, answer['error'].get('desc')),
                               answer['error'].get('class'))
        return answer['return']
    finally:
        sock.close()
