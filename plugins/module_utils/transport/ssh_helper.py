# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The remote side of the ssh transport: one helper process per storage host and run.

ssh.py starts ``python3 -c BOOTSTRAP`` on the storage host (over the run's ssh connection) and
sends it, on stdin, the source of this file and of the standard-library-only files it needs
(``BUNDLE``): the local transport and what it imports. The helper then answers requests, one JSON
line each, by calling the LOCAL transport of the storage host: every file operation, lock, scan,
seal and mount there behaves exactly as ``transport: local`` does on that machine.

Locks live in this process: a lock taken here stays held until it is released or until the
process ends, which it does when its stdin (the ssh connection) closes, so a run killed on the
controller or a connection cut frees the host's locks, as a local run's exit does.

Protocol (each message one line of JSON):
  request  {"op": NAME, "args": [...]}
  answer   {"ok": VALUE} or {"error": {"type": T, "message": M, "errno": N, "filename": F, "holder": H}}
Bytes travel as {"b64": "..."}; FileStat as a list. Nothing here runs a shell.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import json
import os
import sys

# The files the helper needs on the storage host, by module name below module_utils (each one
# imports only the standard library and files of this list).
BUNDLE = ('errors', 'transport.mounts', 'transport.openfiles', 'transport.base', 'transport.runner',
          'data_copy.state', 'data_copy.fileflags', 'data_copy.seal', 'transport.local', 'transport.ssh_helper')
PACKAGE = 'ansible_collections.storage.mobility.plugins.module_utils'

#: operations answered by calling the local transport's method of the same name
PLAIN_OPS = ('run', 'which', 'is_root', 'pids_running', 'kill', 'stat', 'lstat', 'exists', 'lexists', 'is_dir',
             'is_file', 'is_link', 'realpath', 'listdir', 'makedirs', 'mkdir', 'rename', 'unlink', 'rmdir',
             'fsync_dir', 'read_bytes', 'write_json_atomic', 'write_text_atomic', 'append_line', 'statvfs',
             'tree_bytes', 'read_flags', 'set_flags', 'flagged_entries', 'clear_flags_tree', 'open_writers',
             'users', 'mount_table', 'same_inode', 'mount_base_beneath', 'tree_seal')


def encode(value):
    """A result as JSON values: bytes as {"b64": ...}, tuples (FileStat) as lists."""
    if isinstance(value, bytes):
        return {'b64': base64.b64encode(value).decode('ascii')}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return dict((k, encode(v)) for k, v in value.items())
    return value


def decode(value):
    if isinstance(value, dict):
        if set(value) == set(['b64']):
            return base64.b64decode(value['b64'])
        return dict((k, decode(v)) for k, v in value.items())
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def error_answer(exc):
    """The answer for an exception raised by an operation: its class name and what it carries."""
    error = {'type': type(exc).__name__, 'message': str(exc)}
    if isinstance(exc, EnvironmentError):
        error['errno'] = exc.errno
        error['message'] = exc.strerror or str(exc)
        error['filename'] = exc.filename
        error['filename2'] = getattr(exc, 'filename2', None)
    holder = getattr(exc, 'holder', None)
    if holder is not None:
        error['holder'] = holder
    return {'error': error}


class Helper(object):
    """Answers requests with the host's local transport; keeps the locks it took."""

    def __init__(self, transport):
        self.transport = transport
        self.locks = {}
        self.next_lock = 1

    def answer(self, request):
        op = request.get('op')
        args = decode(request.get('args') or [])
        try:
            if op in PLAIN_OPS:
                return {'ok': encode(getattr(self.transport, op)(*args))}
            if op == 'lock':
                handle = self.transport.lock(*args)
                if handle is None:
                    return {'ok': None}
                number = self.next_lock
                self.next_lock += 1
                self.locks[number] = handle
                return {'ok': number}
            if op == 'lock_write_holder':
                self.locks[args[0]].write_holder(args[1])
                return {'ok': None}
            if op == 'lock_release':
                handle = self.locks.pop(args[0], None)
                if handle is not None:
                    handle.release(remove=args[1])
                return {'ok': None}
            if op == 'hello':
                return {'ok': {'euid': os.geteuid(), 'pid': os.getpid(), 'python': sys.version.split()[0]}}
            return {'error': {'type': 'ValueError', 'message': 'unknown operation %r' % (op,)}}
        except Exception as exc:  # pylint: disable=broad-except
            return error_answer(exc)

    def serve(self, stdin, stdout):
        for line in iter(stdin.readline, b''):
            try:
                request = json.loads(line.decode('utf-8'))
            except ValueError:
                answer = {'error': {'type': 'ValueError', 'message': 'malformed request'}}
            else:
                answer = self.answer(request)
            stdout.write(json.dumps(answer).encode('utf-8') + b'\n')
            stdout.flush()


def main():
    """Run on the storage host (after the bootstrap loaded the bundle): serve until stdin closes."""
    from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
    from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
    helper = Helper(LocalTransport(CommandRunner()))
    try:
        helper.serve(sys.stdin.buffer, sys.stdout.buffer)
    except (IOError, OSError):
        pass  # the connection went away: exiting frees the locks
    finally:
        for number in list(helper.locks):
            try:
                helper.locks.pop(number).release()
            except (IOError, OSError):
                pass
