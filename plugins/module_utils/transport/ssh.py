# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ssh transport: the storage host is another machine reached with OpenSSH (``transport: ssh``).

One connection per host for a whole playbook run: an OpenSSH ControlMaster whose socket lives in
a private folder of the controller's user (``<tmp>/mobility-cm-<uid>``, mode 0700, checked before
use), named by a digest of the connection's options. The first module call of a run opens it, the
next ones (each module call is its own process) reuse it, and ``ControlPersist`` ends it a minute
after its last session. Opening is serialised by a lock file beside the socket, so two module runs
never start two masters for one host. When that folder cannot be used safely the run falls back to
a master of its own in a private temporary folder, closed by ``close()``. Host keys are checked against the operator's known_hosts file
(``StrictHostKeyChecking=yes``, ``accept-new`` only when the backend asks for it); ``BatchMode``
keeps ssh from ever asking for a password. Every remote command is an argv list quoted for the
remote shell with ``shlex.join``; nothing typed by a user is interpreted there.

Commands (``run``), pipes (``producer | consumer`` run on the host: the stream never comes to the
controller), every file operation, the locks, the open-writer scans, mounts and seals go to ONE
helper process on the host
(ssh_helper.py, sent over stdin to ``python3 -c``), which answers with the host's local transport;
its errors come back as the same exceptions (OSError with the remote errno, LockBusy, SealError...),
each message naming the host. The helper holds the host's share locks: they end when it ends, so a
killed controller or a cut connection frees them.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import atexit
import binascii
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import shipping
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileflags import FlagError
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import SealError
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.ssh_masters import shared_folder
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError, HostUnreachable, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport import local, ssh_helper
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import (
    FileStat, LockBusy, LockReplaced, Transport)
from ansible_collections.storage.mobility.plugins.module_utils.transport.mounts import BaseUnsupported

#: the choices of ``ssh.host_key_checking``
HOST_KEY_CHECKING = ('strict', 'accept-new')
CONTROL_PERSIST = 60
CONNECT_TIMEOUT = 10
#: the exit status with which ssh itself reports that it failed (not the remote command)
SSH_FAILED = 255

# Remote exceptions re-raised as themselves (other types become StorageError).
_EXCEPTIONS = {'SealError': SealError, 'FlagError': FlagError, 'LockReplaced': LockReplaced,
               'ValueError': ValueError, 'TypeError': TypeError}

# What ssh's stderr says, to the failure an operator can act on.
_FAILURES = (
    ('REMOTE HOST IDENTIFICATION HAS CHANGED', 'host key mismatch: the host key differs from the one in %(known_hosts)s'),
    ('No ED25519 host key is known', 'unknown host key: %(known_hosts)s has no key for this host'),
    ('host key is known', 'unknown host key: %(known_hosts)s has no key for this host'),
    ('Host key verification failed', 'host key verification failed against %(known_hosts)s'),
    ('Permission denied', 'authentication refused (wrong or unauthorised key %(key)s for user %(user)s)'),
    ('Connection refused', 'unreachable (connection refused on port %(port)s)'),
    ('timed out', 'unreachable (connection timed out)'),
    ('No route to host', 'unreachable (no route to host)'),
    ('Could not resolve hostname', 'unreachable (the address does not resolve)'),
    ('Network is unreachable', 'unreachable (network is unreachable)'),
    ('Connection closed', 'connection closed by the host'),
    ('Broken pipe', 'connection lost'),
    ('a password is required', 'sudo refused (become needs passwordless sudo -n for user %(user)s)'),
    ('sudo: ', 'sudo refused'),
    ('python3: not found', 'python3 is missing on the host (the ssh transport needs it there)'),
    ('python3: command not found', 'python3 is missing on the host (the ssh transport needs it there)'),
)


class SshError(StorageError):
    """The storage host could not be reached or refused us; ``host`` and ``failure`` say which and why."""


class SshUnreachable(SshError, HostUnreachable):
    """The storage host could not be reached at all (refused, timed out, no route, no address)."""


def helper_bundle():
    """The bytes sent to the bootstrap: a length line and the JSON bundle of the helper's modules."""
    return shipping.bundle(ssh_helper.PACKAGE, ssh_helper.BUNDLE, 'transport.ssh_helper')


class SshOptions(object):
    """How to reach one storage host (a backend's ``ssh`` option, validated by config.py)."""

    def __init__(self, host, address=None, user=None, port=None, private_key_file=None, known_hosts_file=None,
                 host_key_checking='strict', become=False, direct_address=None, direct_key_file=None,
                 data_node_key_file=None):
        self.host = host
        self.address = address or host
        self.user = user
        self.port = int(port) if port else None
        self.private_key_file = private_key_file
        self.known_hosts_file = known_hosts_file
        self.host_key_checking = host_key_checking or 'strict'
        self.become = bool(become)
        self.direct_address = direct_address
        self.direct_key_file = direct_key_file
        # A key ON the data node for its sessions to this host (host-assisted copies between hosts).
        self.data_node_key_file = data_node_key_file

    @classmethod
    def from_backend(cls, backend):
        spec = dict(getattr(backend, 'ssh', None) or {})
        return cls(backend.host, **spec)

    def key(self):
        return (self.address, self.user, self.port, self.private_key_file, self.known_hosts_file,
                self.host_key_checking, self.become, self.direct_address, self.direct_key_file, self.data_node_key_file)

    def describe(self):
        """Facts for messages: never a secret (a key file's path is not one)."""
        return {'known_hosts': self.known_hosts_file or '~/.ssh/known_hosts', 'key': self.private_key_file or '(agent/default)',
                'user': self.user or '(default)', 'port': self.port or 22}

    def known_hosts_name(self):
        """The name ssh looks this host up by in a known_hosts file (``[address]:port`` off port 22)."""
        return self.address if not self.port or self.port == 22 else '[%s]:%d' % (self.address, int(self.port))

    def master_name(self):
        """The shared master's socket name: a digest of everything that makes the connection
        (who, where, with which key and host-key rules, whether the master allows agent forwarding),
        so that backends with other options never share a master."""
        # A forwarding master hands its sessions the agent it was started with: one per agent socket.
        agent = os.environ.get('SSH_AUTH_SOCK') if self.forwards_agent() else None
        facts = json.dumps([self.address, self.user, self.port, self.private_key_file, self.known_hosts_file,
                            self.host_key_checking, agent])
        return hashlib.sha256(facts.encode('utf-8')).hexdigest()[:24]

    def forwards_agent(self):
        """True when a direct stream from this host authenticates with the operator's forwarded agent
        (no ``direct_key_file``, and an agent on the controller): the master connection then allows
        agent forwarding, which only the session of a direct stream requests."""
        return not self.direct_key_file and bool(os.environ.get('SSH_AUTH_SOCK'))


class RemoteLock(object):
    """A lock held by the host's helper (see ssh_helper.py)."""

    def __init__(self, transport, number):
        self.transport = transport
        self.number = number

    def write_holder(self, text):
        self.transport.call('lock_write_holder', self.number, text)

    def release(self, remove=False):
        self.transport.call('lock_release', self.number, remove)


class SshTransport(Transport):
    name = 'ssh'

    def __init__(self, runner, options):
        super(SshTransport, self).__init__(runner)
        self.options = options
        self.host = options.host
        self._folder = None
        self._control = None
        self._helper = None
        self._helper_err = None
        self._next_id = 1
        self._answers = {}
        self._progress = {}
        self._latest = {}
        self._delivering = False
        # A second helper over another transport's master (agent_session): it neither opens nor
        # closes the master; its session requests agent forwarding.
        self._shares_master = False
        self._forward_agent = False

    @classmethod
    def from_backend(cls, backend, runner):
        return cls(runner, SshOptions.from_backend(backend))

    # -- the connection ----------------------------------------------------------------------
    def ssh_argv(self):
        """ssh and its options (without the remote command); the control socket once connected."""
        opts = self.options
        argv = ['ssh', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=%d' % CONNECT_TIMEOUT,
                '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3',
                '-o', 'StrictHostKeyChecking=%s' % ('accept-new' if opts.host_key_checking == 'accept-new' else 'yes')]
        if opts.known_hosts_file:
            argv += ['-o', 'UserKnownHostsFile=%s' % opts.known_hosts_file, '-o', 'GlobalKnownHostsFile=/dev/null']
        if opts.private_key_file:
            argv += ['-o', 'IdentitiesOnly=yes', '-i', opts.private_key_file]
        if opts.port:
            argv += ['-p', str(opts.port)]
        if opts.user:
            argv += ['-l', opts.user]
        if self._control:
            argv += ['-o', 'ControlPath=%s' % self._control, '-o', 'ControlMaster=no',
                     '-o', 'ForwardAgent=%s' % ('yes' if self._forward_agent else 'no')]
        return argv

    def remote(self, argv):
        """The ssh argv that runs ``argv`` on the host: one word, quoted for the remote shell."""
        if not isinstance(argv, (list, tuple)):
            raise TypeError('commands must be argv lists')
        argv = [str(a) for a in argv]
        if self.options.become:
            argv = ['sudo', '-n', '--'] + argv
        return self.ssh_argv() + ['--', self.options.address, shlex.join(argv)]

    def failure(self, what, stderr):
        """An SshError naming the host and what failed, from ssh's (or sudo's) stderr."""
        text = (stderr or '').strip()
        facts = self.options.describe()
        reason = None
        for marker, template in _FAILURES:
            if marker in text:
                reason = template % facts
                break
        reason = reason or 'ssh failed'
        last = text.splitlines()[-1] if text else 'no message'
        error = SshUnreachable if reason.startswith('unreachable') else SshError
        return error('Failed to %s on storage host %s (%s): %s; ssh said: %s'
                     % (what, self.host, self.options.address, reason, last),
                     host=self.host, failure=reason, stderr=text)

    def _start_master(self, control):
        """Start a ControlMaster at ``control``; '' when it runs, else ssh's stderr."""
        # The master allows agent forwarding for a direct stream's session (agent_session); the
        # helper's and every other session do not request it.
        argv = self.ssh_argv() + ['-o', 'ForwardAgent=%s' % ('yes' if self.options.forwards_agent() else 'no'),
                                  '-o', 'ControlMaster=yes', '-o', 'ControlPath=%s' % control,
                                  '-o', 'ControlPersist=%d' % CONTROL_PERSIST, '-N', '-f', '--', self.options.address]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            rc = proc.wait()
            err.seek(0)
            stderr = err.read().decode('utf-8', 'replace')
        return '' if rc == 0 else (stderr or 'ssh exited with %d' % rc)

    def _master_alive(self, control):
        argv = self.ssh_argv() + ['-o', 'ControlPath=%s' % control, '-O', 'check', '--', self.options.address]
        return subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) == 0

    def _shared_master(self):
        """The socket of the shared master for these options, started when none answers; None when
        the shared folder cannot be used safely (the caller then opens a master of its own)."""
        folder = shared_folder()
        if folder is None:
            return None
        control = os.path.join(folder, self.options.master_name())
        try:
            fd = os.open(control + '.lock', os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.lexists(control) and self._master_alive(control):
                return control
            if os.path.lexists(control):
                # A master that died (killed, host rebooted) leaves its socket: ssh would refuse to
                # listen on it and carry on as a plain connection.
                os.unlink(control)
            stderr = self._start_master(control)
            if stderr:
                raise self.failure('connect', stderr)
            return control
        finally:
            os.close(fd)

    def connect(self):
        """Reach the host's master connection (the run's shared one, or one of our own) and start
        the helper (once)."""
        if self._helper is not None:
            return
        if self._control is None:
            control = self._shared_master()
            if control is None:
                self._folder = tempfile.mkdtemp(prefix='mobility-ssh-')
                control = os.path.join(self._folder, 'cm')
                stderr = self._start_master(control)
                if stderr:
                    shutil.rmtree(self._folder, ignore_errors=True)
                    self._folder = None
                    raise self.failure('connect', stderr)
            else:
                self._shares_master = True
            self._control = control
            atexit.register(self.close)
        self._helper_err = tempfile.TemporaryFile()
        helper = subprocess.Popen(self.remote(['python3', '-c', shipping.BOOTSTRAP]), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self._helper_err)
        self._helper = helper
        try:
            helper.stdin.write(helper_bundle())
            helper.stdin.flush()
        except (IOError, OSError):
            pass
        self.call('hello')

    def _helper_gone(self, what):
        helper, self._helper = self._helper, None
        self._answers, self._progress, self._latest = {}, {}, {}
        try:
            helper.kill()
        except OSError:
            pass
        helper.wait()
        self._helper_err.seek(0)
        stderr = self._helper_err.read().decode('utf-8', 'replace')
        return self.failure(what, stderr or 'the helper process on the host ended')

    def call(self, op, *args):
        """One request to the host's helper; its answer, or its exception raised here."""
        return self._await(self._send(op, args), op)

    def _send(self, op, args):
        if self._helper is None:
            self.connect()
        number = self._next_id
        self._next_id += 1
        line = json.dumps({'id': number, 'op': op, 'args': ssh_helper.encode(list(args))}).encode('utf-8') + b'\n'
        try:
            self._helper.stdin.write(line)
            self._helper.stdin.flush()
        except (IOError, OSError):
            raise self._helper_gone(op.replace('_', ' '))
        return number

    def _await(self, number, op):
        """Read the helper's messages until the answer to request ``number``; the answers to other
        requests are kept, progress goes to the pipe's on_chunk (never re-entered: a progress
        report that comes while one is being written is kept as the latest and written after)."""
        while number not in self._answers:
            try:
                line = self._helper.stdout.readline()
            except (IOError, OSError):
                line = b''
            if not line:
                raise self._helper_gone(op.replace('_', ' '))
            try:
                message = json.loads(line.decode('utf-8'))
            except ValueError:
                continue  # not the helper's: what a login script of the host printed before it started
            if not isinstance(message, dict):
                continue
            if 'progress' in message:
                self._latest[message.get('id')] = message['progress']
                self._deliver_progress()
                continue
            self._answers[message.get('id')] = message
        answer = self._answers.pop(number)
        self._progress.pop(number, None)
        self._latest.pop(number, None)
        if 'error' in answer:
            raise self._remote_error(answer['error'])
        return ssh_helper.decode(answer['ok'])

    def _deliver_progress(self):
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._latest:
                number, done = self._latest.popitem()
                on_chunk = self._progress.get(number)
                if on_chunk is not None:
                    on_chunk(done)
        finally:
            self._delivering = False

    def _remote_error(self, error):
        kind = error.get('type')
        message = error.get('message') or ''
        if error.get('errno') is not None:
            exc = OSError(error['errno'], '%s (on storage host %s)' % (message, self.host))
            exc.filename = error.get('filename')
            exc.filename2 = error.get('filename2')
            return exc
        if kind == 'LockBusy':
            return LockBusy(error.get('holder'))
        if kind == 'BaseUnsupported':
            return BaseUnsupported('%s (on storage host %s)' % (message, self.host))
        if kind in _EXCEPTIONS:
            return _EXCEPTIONS[kind]('%s (on storage host %s)' % (message, self.host))
        if kind in ('StorageError', 'CommandError'):
            if 'storage host %s' % self.host not in message:
                message = '%s (on storage host %s)' % (message, self.host)
            details = dict(error.get('details') or {})
            details['host'] = self.host
            return StorageError(message, **details)
        return StorageError('%s on storage host %s: %s' % (kind, self.host, message), host=self.host)

    def close(self):
        """End the helper (which frees its locks); end a master of our own and remove its folder (a
        shared master ends by itself, ``CONTROL_PERSIST`` seconds after its last session)."""
        if self._helper is not None:
            helper, self._helper = self._helper, None
            try:
                helper.stdin.close()
            except (IOError, OSError):
                pass
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
            helper.stdout.close()
        if self._helper_err is not None:
            self._helper_err.close()
            self._helper_err = None
        if self._control is not None and not self._shares_master:
            argv = self.ssh_argv() + ['-O', 'exit', '--', self.options.address]
            subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._control = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    # -- commands ----------------------------------------------------------------------------
    def run(self, argv, what, check=True):
        """Run ``argv`` on the host. The helper starts it there as an argv list (no remote shell
        at all, and no new ssh session per command); ``pipe`` sessions use shlex.join."""
        if not isinstance(argv, (list, tuple)):
            raise TypeError('commands must be argv lists')
        argv = [str(a) for a in argv]
        rc, out, err = self.call('run', argv, what, False)
        if check and rc != 0:
            error = CommandError('Failed to %s on storage host %s: %s exited with %d: %s'
                                 % (what, self.host, argv[0], rc, (err or out).strip()),
                                 cmd=argv, rc=rc, stdout=out, stderr=err)
            error.details['host'] = self.host
            raise error
        return rc, out, err

    def pipe(self, producer, consumer, what, on_chunk=None, capture=False, edit=None, die_midway=False,
             on_host=False):
        """``producer | consumer`` run by the helper on the host itself: the stream stays there.
        ``die_midway`` (the crash tests kill the controller midway) streams through this process
        instead, over two ssh sessions, so that it is this process that dies; with ``on_host`` it is
        the helper on the host that dies midway (a direct stream, which never passes here)."""
        producer = [str(a) for a in producer]
        consumer = [str(a) for a in consumer]
        if not die_midway or on_host:
            edit_spec = {'closing': edit.closing, 'insert': edit.insert} if edit else None
            number = self._send('pipe', (producer, consumer, '%s on storage host %s' % (what, self.host), capture,
                                         edit_spec, bool(die_midway)))
            if on_chunk is not None:
                self._progress[number] = on_chunk
            done, output = self._await(number, 'pipe')
            if on_chunk is not None and done:
                on_chunk(done)
            return done, output
        if self._control is None:
            self.connect()
        try:
            return local.pipe_processes(self.remote(producer), self.remote(consumer), what, on_chunk=on_chunk,
                                        capture=capture, edit=edit, die_midway=die_midway,
                                        shown=(producer, consumer), where=' on storage host %s' % self.host)
        except StorageError as exc:
            if exc.details.get('rc') == SSH_FAILED:
                raise self.failure(what, exc.details.get('stderr'))
            raise

    def session_argv(self, argv):
        """The argv that runs ``argv`` on the host in a session of this run's connection (opened
        when not yet): for a stream between two hosts relayed by this process (relay_pipe)."""
        if self._control is None:
            self.connect()
        return self.remote(argv)

    def agent_session(self):
        """A second helper on this host over the run's master connection, whose session carries the
        operator's forwarded ssh agent: for one direct stream to another host (DirectStream); the
        caller closes it after the stream. Only this session gets the agent."""
        if self._control is None:
            self.connect()
        other = SshTransport(self.runner, self.options)
        other._control = self._control
        other._shares_master = True
        other._forward_agent = True
        return other

    def which(self, program):
        return self.call('which', program)

    def is_root(self):
        return self.call('is_root')

    def pids_running(self, program, verbs, paths):
        return self.call('pids_running', program, list(verbs), list(paths))

    def kill(self, pid):
        self.call('kill', pid)

    # -- file operations ---------------------------------------------------------------------
    def stat(self, path):
        return FileStat(*self.call('stat', path))

    def lstat(self, path):
        return FileStat(*self.call('lstat', path))

    def exists(self, path):
        return self.call('exists', path)

    def lexists(self, path):
        return self.call('lexists', path)

    def is_dir(self, path):
        return self.call('is_dir', path)

    def is_file(self, path):
        return self.call('is_file', path)

    def is_link(self, path):
        return self.call('is_link', path)

    def realpath(self, path):
        return self.call('realpath', path)

    def listdir(self, path):
        return self.call('listdir', path)

    def makedirs(self, path, mode=0o755):
        self.call('makedirs', path, mode)

    def mkdir(self, path, mode=0o755):
        self.call('mkdir', path, mode)

    def rename(self, source, target):
        self.call('rename', source, target)

    def unlink(self, path):
        self.call('unlink', path)

    def rmdir(self, path):
        self.call('rmdir', path)

    def fsync_dir(self, path):
        self.call('fsync_dir', path)

    def read_bytes(self, path):
        return self.call('read_bytes', path)

    def write_json_atomic(self, path, data):
        self.call('write_json_atomic', path, data)

    def write_text_atomic(self, path, text, mode=0o644):
        self.call('write_text_atomic', path, text, mode)

    def append_line(self, path, line, rotate_bytes=None):
        if '\n' in line:
            raise ValueError('append_line: the line must not contain a newline')
        self.call('append_line', path, line, rotate_bytes)

    def statvfs(self, path):
        return self.call('statvfs', path)

    def tree_bytes(self, path):
        return self.call('tree_bytes', path)

    def tree_counts(self, path, since=None):
        if since is None:
            return self.call('tree_counts', path)
        return self.call('tree_counts', path, since)

    # -- file attributes ---------------------------------------------------------------------
    def read_flags(self, path):
        return self.call('read_flags', path)

    def set_flags(self, path, flags):
        self.call('set_flags', path, flags)

    def flagged_entries(self, path, one_file_system=True):
        return self.call('flagged_entries', path, one_file_system)

    def clear_flags_tree(self, path):
        return self.call('clear_flags_tree', path)

    def set_flags_tree(self, path, flags):
        return self.call('set_flags_tree', path, flags)

    # -- the share locks ---------------------------------------------------------------------
    def lock(self, path, create=True):
        number = self.call('lock', path, create)
        return None if number is None else RemoteLock(self, number)

    # -- host-side inspections ---------------------------------------------------------------
    def open_writers(self, paths, whole_device=False):
        return self.call('open_writers', list(paths), whole_device)

    def users(self, paths):
        return self.call('users', list(paths))

    def mount_table(self):
        return self.call('mount_table')

    def same_inode(self, a, b):
        return self.call('same_inode', a, b)

    def mount_base_beneath(self, path, source, options):
        self.call('mount_base_beneath', path, source, [list(o) for o in options])

    def tree_seal(self, path, ignore):
        return self.call('tree_seal', path, list(ignore or ()))

    def tree_seal_later(self, path, ignore):
        # Sent now, its answer read when collected: the helper on the host walks while this process
        # goes on (a source and a destination on two hosts are sealed at once; one host's helper
        # answers its requests in turn, and answers to other requests meanwhile are kept).
        number = self._send('tree_seal', (path, list(ignore or ())))
        return lambda: self._await(number, 'tree_seal')


def relay_pipe(source, destination, producer, consumer, what, on_chunk=None, capture=False, edit=None,
               die_midway=False):
    """``producer`` on the host of transport ``source`` piped into ``consumer`` on the host of
    transport ``destination`` (two hosts), the stream relayed by this process over one session of
    each host's connection (a local transport runs its side here). Same answer as Transport.pipe.
    The stream passes through the controller: measured, edited at its end as on one host."""
    if source is destination:
        return source.pipe(producer, consumer, what, on_chunk=on_chunk, capture=capture, edit=edit,
                           die_midway=die_midway)
    producer = [str(a) for a in producer]
    consumer = [str(a) for a in consumer]
    sides = []
    for transport, argv in ((source, producer), (destination, consumer)):
        wrap = getattr(transport, 'session_argv', None)
        sides.append(wrap(argv) if wrap else argv)
    names = [getattr(t, 'host', None) or 'this machine' for t in (source, destination)]
    try:
        return local.pipe_processes(sides[0], sides[1], what, on_chunk=on_chunk, capture=capture, edit=edit,
                                    die_midway=die_midway, shown=(producer, consumer),
                                    where=' from %s to %s (relayed by the controller)' % tuple(names))
    except StorageError as exc:
        if exc.details.get('rc') == SSH_FAILED:
            culprit = destination if ('%s exited' % ' '.join(consumer[:2])) in str(exc) else source
            if hasattr(culprit, 'failure'):
                raise culprit.failure(what, exc.details.get('stderr'))
        raise


# -- direct streams between two storage hosts ------------------------------------------------
#: the name the sending host's ssh checks the destination's key under (HostKeyAlias): the key the
#: controller's known_hosts holds for the destination, whatever address the sender connects to
DIRECT_HOST_ALIAS = 'mobility-destination'
#: the system-wide known_hosts files ssh reads when a backend names no known_hosts_file
GLOBAL_KNOWN_HOSTS = ('/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2')


def peer_host_keys(options):
    """The host keys the controller's known_hosts file(s) hold for the host of ``options`` (a
    destination), as known_hosts lines for DIRECT_HOST_ALIAS; and the files read."""
    if options.known_hosts_file:
        files = [options.known_hosts_file]
    else:
        files = [os.path.expanduser('~/.ssh/known_hosts')] + list(GLOBAL_KNOWN_HOSTS)
    lines = []
    for path in files:
        if not os.path.isfile(path):
            continue
        # ssh-keygen finds hashed entries too, and the [address]:port form.
        proc = subprocess.run(['ssh-keygen', '-F', options.known_hosts_name(), '-f', path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
        for line in proc.stdout.decode('utf-8', 'replace').splitlines():
            fields = line.split()
            if len(fields) < 3 or fields[0].startswith('#'):
                continue
            if fields[0] == '@revoked' and len(fields) >= 4:
                lines.append('@revoked %s %s %s' % (DIRECT_HOST_ALIAS, fields[2], fields[3]))
            elif not fields[0].startswith('@'):
                lines.append('%s %s %s' % (DIRECT_HOST_ALIAS, fields[1], fields[2]))
    return lines, files


def direct_receive_argv(peer, argv, known_hosts_path, key_file=None):
    """The argv the SENDING host runs to run ``argv`` on the host of ``peer`` (SshOptions of the
    destination): ssh with the destination's key checked strictly against ``known_hosts_path``
    (a file on the sending host), no agent forwarded further, no multiplexing, and ``argv`` quoted
    for the destination's login shell. The sending host runs this argv itself without a shell
    (the helper, or subprocess on this machine), so ``argv`` is interpreted by one shell only."""
    if not isinstance(argv, (list, tuple)):
        raise TypeError('commands must be argv lists')
    argv = [str(a) for a in argv]
    if peer.become:
        argv = ['sudo', '-n', '--'] + argv
    ssh = ['ssh', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=%d' % CONNECT_TIMEOUT,
           '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3',
           '-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=%s' % known_hosts_path,
           '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'HostKeyAlias=%s' % DIRECT_HOST_ALIAS,
           '-o', 'UpdateHostKeys=no', '-o', 'CheckHostIP=no', '-o', 'ControlMaster=no', '-o', 'ControlPath=none',
           '-o', 'ForwardAgent=no', '-o', 'ClearAllForwardings=yes']
    if key_file:
        ssh += ['-o', 'IdentitiesOnly=yes', '-i', key_file]
    if peer.port:
        ssh += ['-p', str(peer.port)]
    if peer.user:
        ssh += ['-l', peer.user]
    return ssh + ['--', peer.direct_address or peer.address, shlex.join(argv)]


class DirectStream(object):
    """A stream from the host of transport ``source`` straight to the host of ``destination`` (an
    SshTransport): ``producer`` runs on the source host piped into ``ssh <destination>
    consumer`` run there too, so that the data goes from host to host and never through the
    controller. The source host checks the destination's key against the key the controller's
    known_hosts holds for it (copied into a private temporary file on the source host for the
    stream), and logs in with ``direct_key_file`` (a key on the source host) or the operator's
    agent forwarded over the run's connection to the source host for that one session."""

    def __init__(self, source, destination):
        self.source = source
        self.destination = destination
        self.peer = destination.options
        options = getattr(source, 'options', None)
        self.key_file = options.direct_key_file if options is not None else None
        self.uses_agent = options is not None and not self.key_file

    @property
    def names(self):
        return (getattr(self.source, 'host', None) or 'this machine', self.destination.host)

    def credentials(self):
        if self.key_file:
            return 'the key %s on %s' % (self.key_file, self.names[0])
        if self.uses_agent:
            return "the operator's ssh agent forwarded to %s for the stream" % self.names[0]
        return "this machine's ssh agent or default keys"

    def failure(self, what, stderr):
        """An SshError naming both hosts and what failed between them, from the sender's ssh stderr."""
        text = (stderr or '').strip()
        if self.key_file:
            key = '%s on %s' % (self.key_file, self.names[0])
        else:
            key = '(%s)' % self.credentials()
        facts = {'known_hosts': "the controller's known_hosts entry for %s" % self.destination.host,
                 'key': key, 'user': self.peer.user or '(default)', 'port': self.peer.port or 22}
        reason = 'ssh failed'
        for marker, template in _FAILURES:
            if marker in text:
                reason = template % facts
                break
        last = [line for line in text.splitlines() if line.strip()]
        return SshError('Failed to %s directly from storage host %s to storage host %s (%s): %s cannot reach %s: %s; '
                        'ssh on %s said: %s'
                        % (what, self.names[0], self.names[1], self.peer.direct_address or self.peer.address,
                           self.names[0], self.names[1], reason, self.names[0], last[-1] if last else 'no message'),
                        host=self.names[0], peer=self.names[1], failure=reason, stderr=text)

    def _open(self, what):
        """(the transport that runs the stream on the source host, the private folder there)."""
        lines, files = peer_host_keys(self.peer)
        if not lines:
            raise SshError('Failed to %s directly from storage host %s to storage host %s: the controller has no '
                           'host key for %s (%s) in %s, which %s must check it against (a direct stream never '
                           'accepts a new key); add it there, or set data_path: controller'
                           % ((what,) + self.names + (self.destination.host, self.peer.known_hosts_name(),
                                                      ', '.join(files) or '~/.ssh/known_hosts', self.names[0])),
                           host=self.names[0], peer=self.names[1], failure='unknown host key')
        if self.uses_agent and not os.environ.get('SSH_AUTH_SOCK'):
            raise SshError('Failed to %s directly from storage host %s to storage host %s: %s has no direct_key_file '
                           'and the controller has no ssh agent to forward (SSH_AUTH_SOCK is not set); start one '
                           'holding a key %s accepts, name a key on %s with direct_key_file, or set data_path: '
                           'controller' % ((what,) + self.names + (self.names[0], self.names[1], self.names[0])),
                           host=self.names[0], peer=self.names[1], failure='no ssh agent')
        runner = self.source.agent_session() if self.uses_agent else self.source
        folder = '/tmp/mobility-direct-%s' % binascii.hexlify(os.urandom(8)).decode('ascii')
        try:
            runner.mkdir(folder, 0o700)
            runner.write_text_atomic(folder + '/known_hosts', '\n'.join(lines) + '\n', 0o600)
        except BaseException:
            self._close(runner, folder)
            raise
        return runner, folder

    def _close(self, runner, folder):
        try:
            for path, remove in ((folder + '/known_hosts', runner.unlink), (folder, runner.rmdir)):
                try:
                    remove(path)
                except OSError:
                    pass
        except StorageError:
            pass  # the connection is gone: a public key left in a private folder of /tmp
        finally:
            if runner is not self.source:
                runner.close()

    def _argv(self, argv, folder):
        return direct_receive_argv(self.peer, argv, folder + '/known_hosts', self.key_file)

    def _reraise(self, what, exc):
        if exc.details.get('rc') == SSH_FAILED and not exc.details.get('peer'):
            raise self.failure(what, exc.details.get('stderr'))
        raise exc

    def probe(self, what):
        """Check that the source host can log in to the destination host (``true`` there); an
        SshError naming both hosts and the cause otherwise. Changes nothing on either host."""
        runner, folder = self._open(what)
        try:
            rc, out, err = runner.run(self._argv(['true'], folder), what, check=False)
            if rc != 0:
                raise self.failure(what, err or out)
        finally:
            self._close(runner, folder)

    def pipe(self, producer, consumer, what, on_chunk=None, capture=False, edit=None, die_midway=False):
        """``producer`` on the source host | ``consumer`` on the destination host, host to host."""
        runner, folder = self._open(what)
        try:
            if isinstance(runner, SshTransport):
                return runner.pipe(producer, self._argv(consumer, folder), what, on_chunk=on_chunk, capture=capture,
                                   edit=edit, die_midway=die_midway, on_host=True)
            return runner.pipe(producer, self._argv(consumer, folder), what, on_chunk=on_chunk, capture=capture,
                               edit=edit, die_midway=die_midway)
        except StorageError as exc:
            self._reraise(what, exc)
        finally:
            self._close(runner, folder)
