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

Protocol (each message one line of JSON, ``id`` the request's number):
  request  {"id": I, "op": NAME, "args": [...]}
  answer   {"id": I, "ok": VALUE} or {"id": I, "error": {"type": T, "message": M, "errno": N, ...}}
  progress {"id": I, "progress": BYTES}   (a ``pipe`` running, at most every PROGRESS_SECONDS)
Bytes travel as {"b64": "..."}; FileStat as a list. Nothing here runs a shell.

``pipe`` runs ``producer | consumer`` on the host itself (the stream never leaves it) in a thread,
so that the controller can go on asking (it writes the progress the pipe reports). When the
connection ends, the pipe stops at its next progress report (its processes are killed and waited
for) before the locks are released.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import json
import os
import sys
import threading
import time

# The files the helper needs on the storage host, by module name below module_utils (each one
# imports only the standard library and files of this list).
BUNDLE = ('errors', 'transport.mounts', 'transport.openfiles', 'transport.base', 'transport.runner',
          'data_copy.state', 'data_copy.fileflags', 'data_copy.seal', 'transport.local', 'transport.ssh_helper')
PACKAGE = 'ansible_collections.storage.mobility.plugins.module_utils'
PROGRESS_SECONDS = 0.5

#: operations answered by calling the local transport's method of the same name
PLAIN_OPS = ('run', 'which', 'is_root', 'pids_running', 'kill', 'stat', 'lstat', 'exists', 'lexists', 'is_dir',
             'is_file', 'is_link', 'realpath', 'listdir', 'makedirs', 'mkdir', 'rename', 'unlink', 'rmdir',
             'fsync_dir', 'read_bytes', 'write_json_atomic', 'write_text_atomic', 'append_line', 'statvfs',
             'tree_bytes', 'tree_counts', 'read_flags', 'set_flags', 'flagged_entries', 'clear_flags_tree',
             'set_flags_tree', 'open_writers', 'users', 'mount_table', 'same_inode', 'mount_base_beneath', 'tree_seal')


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
    details = getattr(exc, 'details', None)
    if isinstance(details, dict):
        error['details'] = details
    holder = getattr(exc, 'holder', None)
    if holder is not None:
        error['holder'] = holder
    return {'error': error}


class Helper(object):
    """Answers requests with the host's local transport; keeps the locks it took."""

    def __init__(self, transport, stdout=None):
        self.transport = transport
        self.stdout = stdout
        self.locks = {}
        self.next_lock = 1
        self.pipes = []
        self._write = threading.Lock()

    def emit(self, message):
        with self._write:
            self.stdout.write(json.dumps(message).encode('utf-8') + b'\n')
            self.stdout.flush()

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

    def start_pipe(self, number, args):
        """Run a pipe in a thread; its progress and its answer are emitted with ``number``."""
        from ansible_collections.storage.mobility.plugins.module_utils.transport.base import TailEdit
        producer, consumer, what, capture, edit = args[:5]
        # The crash tests' fault: this process (the sending side on the host) dies midway.
        die_midway = bool(args[5]) if len(args) > 5 else False
        edit = TailEdit(edit['closing'], edit['insert']) if edit else None
        last = [0.0]

        def on_chunk(done):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_SECONDS:
                last[0] = now
                self.emit({'id': number, 'progress': done})  # raises once the connection is gone

        def work():
            try:
                answer = {'ok': encode(list(self.transport.pipe(producer, consumer, what, on_chunk=on_chunk,
                                                                capture=capture, edit=edit,
                                                                die_midway=die_midway)))}
            except Exception as exc:  # pylint: disable=broad-except
                answer = error_answer(exc)
            answer['id'] = number
            try:
                self.emit(answer)
            except (IOError, OSError):
                pass

        thread = threading.Thread(target=work)
        thread.start()
        self.pipes.append(thread)

    def serve(self, stdin):
        for line in iter(stdin.readline, b''):
            try:
                request = json.loads(line.decode('utf-8'))
            except ValueError:
                self.emit({'error': {'type': 'ValueError', 'message': 'malformed request'}})
                continue
            if request.get('op') == 'pipe':
                self.start_pipe(request.get('id'), decode(request.get('args')))
                continue
            answer = self.answer(request)
            answer['id'] = request.get('id')
            self.emit(answer)


def main():
    """Run on the storage host (after the bootstrap loaded the bundle): serve until stdin closes."""
    from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
    from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
    helper = Helper(LocalTransport(CommandRunner()), sys.stdout.buffer)
    try:
        helper.serve(sys.stdin.buffer)
    except (IOError, OSError):
        pass  # the connection went away: exiting frees the locks
    finally:
        # A pipe still running holds the share's data in flight: the locks outlive it.
        for thread in helper.pipes:
            thread.join()
        for number in list(helper.locks):
            try:
                helper.locks.pop(number).release()
            except (IOError, OSError):
                pass
