# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a tree on the storage host that holds it, for a copy between two storage hosts.

When the data node reaches a side of a copy through a network mount (sshfs), the mount is good
enough to copy through but not to verify through: it shows its own cache, whole-second times, no
xattrs and no hard links. So the verification reads each such side ON ITS OWN HOST: the data node
opens an ssh session to the storage host (``python3 -c BOOTSTRAP``, the loader of shipping.py),
sends it the standard-library-only walking code of the data mover (``BUNDLE``) and one request,
and the host walks its own disk (walk.py: type, mode, owner, size, nanosecond times, symlink
target, xattrs and ACLs, hard links, immutable flags, content hash read from the disk after a
syncfs) and streams the entries back; the data node compares them (compare.py). The same session
kind seals a tree (seal.py) and *carries* what SFTP cannot write (``carry``): the source's
nanosecond times, xattrs/ACLs and hard links are applied on the destination host from the
source's walk.

Nothing here runs a shell on the data node; the one command given to the host's login shell is the
loader's, quoted with ``shlex.join``. The host's key is checked (``StrictHostKeyChecking=yes``)
against the keys the plan carries, written into a private file of the job; ``BatchMode`` never
asks for a password.

Frames in both directions after the request line: a length line, then the ``repr`` of a value
(read back with ``ast.literal_eval``: data, never code).

Shipped to the data node with the worker and, as the host side, to the storage host: standard
library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ast
import binascii
import errno
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.hashcache import SideLookup, SideWriter, chunks, read_records
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.shipping import BOOTSTRAP, bundle as ship
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.ssh_masters import shared_folder

PACKAGE = 'ansible_collections.storage.mobility.plugins.module_utils'
#: the modules the host side needs, below module_utils (each imports only the standard library
#: and modules of this list)
BUNDLE = ('data_copy.state', 'data_copy.fileflags', 'data_copy.seal', 'data_copy.hashing', 'data_copy.xattrs',
          'data_copy.hashcache',
          'data_copy.fileread', 'data_copy.manifest', 'data_copy.walk', 'data_copy.shipping', 'data_copy.ssh_masters',
          'data_copy.remote')
#: the name the host's key is checked under (HostKeyAlias): whatever address the data node uses
HOST_KEY_ALIAS = 'mobility-storage-host'
CONNECT_TIMEOUT = 10
#: algorithms every storage host computes with the standard library (hashlib)
STDLIB_ALGORITHMS = ('sha256', 'blake2b')
STDLIB_FALLBACK = 'blake2b'
SPEC_KEYS = ('host', 'address', 'port', 'user', 'key_file', 'host_keys', 'path')
#: seconds a job's master to a storage host outlives its last session when the job could not end
#: it (a killed worker); a job that ends closes it
MASTER_PERSIST = 30


class RemoteFailed(Exception):
    """A session to a storage host failed; the message names the host and what failed."""


def write_frame(out, value):
    data = repr(value).encode('utf-8')
    out.write(str(len(data)).encode('ascii') + b'\n' + data)
    out.flush()


def read_frame(stream):
    """The next frame's value, or EOFError when the stream ended."""
    line = stream.readline()
    if not line:
        raise EOFError('the stream ended')
    size = int(line)
    data = b''
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError('the stream ended within a frame')
        data += chunk
    return ast.literal_eval(data.decode('utf-8'))


def hash_algorithm(algorithm):
    """``(algorithm, note)``: the algorithm both hosts hash with; one of the standard library's
    (hashlib) for a copy that reads a side on a storage host, whose Python may have no xxhash."""
    if algorithm in STDLIB_ALGORITHMS or algorithm is None:
        return algorithm, None
    return STDLIB_FALLBACK, ('hashed with %s instead of %s: the storage hosts hash their own trees with the '
                             'standard library' % (STDLIB_FALLBACK, algorithm))


def check_spec(spec, what):
    """The side ``spec`` (how the data node reaches a storage host), validated; raise ValueError."""
    if not isinstance(spec, dict):
        raise ValueError('%s: expected a dictionary (%s)' % (what, ', '.join(SPEC_KEYS)))
    unknown = sorted(k for k in spec if k not in SPEC_KEYS)
    if unknown:
        raise ValueError('%s: unknown keys %s (known: %s)' % (what, ', '.join(unknown), ', '.join(SPEC_KEYS)))
    for key in ('host', 'address', 'path'):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ValueError('%s: %s is required' % (what, key))
    if spec['address'].startswith('-') or any(c.isspace() or c in ',@/' for c in spec['address']):
        raise ValueError('%s: address %r is not a host name or an IP address' % (what, spec['address']))
    if spec.get('user') is not None and (not isinstance(spec['user'], str) or spec['user'].startswith('-')
                                         or any(c.isspace() or c in ',@:/' for c in spec['user'])):
        raise ValueError('%s: user %r is not a login name' % (what, spec['user']))
    if spec.get('port') is not None:
        try:
            port = int(spec['port'])
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise ValueError('%s: port %r is not 1-65535' % (what, spec['port']))
    key_file = spec.get('key_file')
    if key_file is not None and (not isinstance(key_file, str) or not key_file.startswith('/') or '%' in key_file
                                 or ',' in key_file or any(c.isspace() for c in key_file)):
        raise ValueError("%s: key_file %r must be an absolute path without '%%', ',' or spaces" % (what, key_file))
    if not spec['path'].startswith('/'):
        raise ValueError('%s: path %r is not absolute' % (what, spec['path']))
    keys = spec.get('host_keys')
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and '\n' not in k for k in keys):
        raise ValueError('%s: host_keys must list the known_hosts lines of host %s (the controller has none?)'
                         % (what, spec['host']))
    return spec


def known_hosts_text(spec):
    return '\n'.join(spec['host_keys']) + '\n'


def ssh_options(spec, known_hosts_path):
    """The ssh options (``-o NAME=VALUE`` words without the ``-o``) of a session to the side's host."""
    options = ['BatchMode=yes', 'ConnectTimeout=%d' % CONNECT_TIMEOUT, 'ServerAliveInterval=5', 'ServerAliveCountMax=3',
               'StrictHostKeyChecking=yes', 'UserKnownHostsFile=%s' % known_hosts_path, 'GlobalKnownHostsFile=/dev/null',
               'HostKeyAlias=%s' % HOST_KEY_ALIAS, 'UpdateHostKeys=no', 'CheckHostIP=no', 'ForwardAgent=no',
               'ClearAllForwardings=yes']
    if spec.get('key_file'):
        options += ['IdentitiesOnly=yes', 'IdentityFile=%s' % spec['key_file']]
    if spec.get('port'):
        options.append('Port=%d' % int(spec['port']))
    if spec.get('user'):
        options.append('User=%s' % spec['user'])
    return options


def bundle():
    """The bytes the loader reads: a length line and the JSON bundle of the host side's modules."""
    return ship(PACKAGE, BUNDLE, 'data_copy.remote')


class RemoteTree(object):
    """One side of a copy on a storage host, as the data node reaches it over ssh.

    ``spec``: ``host`` (its name), ``address``, ``port``, ``user``, ``key_file`` (a key on the data
    node; none: the data node's agent or default keys), ``host_keys`` (known_hosts lines of the
    host for HOST_KEY_ALIAS) and ``path`` (the tree on the host). ``folder``: a private folder of
    the job where the host keys are written.
    """

    def __init__(self, spec, folder, side):
        self.spec = check_spec(spec, 'the %s side' % side)
        self.side = side
        self.host = spec['host']
        self.path = spec['path']
        self.known_hosts = os.path.join(folder, 'known_hosts-%s' % side)
        self._lock = threading.Lock()
        #: the socket of this side's master; None: not asked yet, '': none (every session logs in)
        self._control = None

    def describe(self):
        return '%s on storage host %s' % (self.path, self.host)

    def _ssh(self):
        argv = ['ssh']
        for option in ssh_options(self.spec, self.known_hosts):
            argv += ['-o', option]
        return argv

    def argv(self):
        self._write_known_hosts()
        argv = self._ssh()
        control = self.control()
        if control:
            # Over the job's master when it runs; a dead one makes ssh log in on its own.
            argv += ['-o', 'ControlMaster=no', '-o', 'ControlPath=%s' % control]
        return argv + ['--', self.spec['address'], shlex.join(['python3', '-c', BOOTSTRAP])]

    def control(self):
        """The socket of the job's master to this side's host, started at the first session: the
        walks, seals and carries of a pass then log in once per host, not once per session. ''
        when no private folder can hold it or the master does not start (every session then logs
        in, and its own error names what failed)."""
        with self._lock:
            if self._control is not None:
                return self._control
            self._control = ''
            folder = shared_folder()
            if folder is None:
                return ''
            # One master per job and side: named by the connection and this job's known_hosts file.
            name = hashlib.sha256(repr((self.spec['address'], self.spec.get('port'), self.spec.get('user'),
                                        self.spec.get('key_file'), self.known_hosts)).encode('utf-8')).hexdigest()
            control = os.path.join(folder, 'dn-' + name[:24])
            argv = self._ssh() + ['-o', 'ControlMaster=yes', '-o', 'ControlPath=%s' % control,
                                  '-o', 'ControlPersist=%d' % MASTER_PERSIST, '-N', '-f', '--', self.spec['address']]
            # -f keeps ssh's stdio in the master it leaves running: never a pipe of ours.
            with tempfile.TemporaryFile() as err:
                started = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err).wait()
            if started == 0:
                self._control = control
            return self._control

    def close(self):
        """End the job's master to this side's host (a killed job's ends MASTER_PERSIST seconds
        after its last session)."""
        with self._lock:
            control, self._control = self._control, None
        if control:
            subprocess.call(self._ssh() + ['-o', 'ControlPath=%s' % control, '-O', 'exit', '--', self.spec['address']],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _write_known_hosts(self):
        with self._lock:
            fd = os.open(self.known_hosts + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                handle.write(known_hosts_text(self.spec))
            os.rename(self.known_hosts + '.tmp', self.known_hosts)

    def session(self, request):
        """A started session (Popen) that got the bundle and ``request``."""
        proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(bundle() + json.dumps(request).encode('utf-8') + b'\n')
            proc.stdin.flush()
        except (IOError, OSError):
            pass
        return proc

    def failure(self, proc, what, message=None):
        """A RemoteFailed naming the host, the address and ssh's (or the host side's) last words."""
        try:
            proc.kill()
        except OSError:
            pass
        err = b''
        try:
            err = proc.stderr.read() or b''
        except (IOError, OSError, ValueError):
            pass
        proc.wait()
        lines = [line for line in err.decode('utf-8', 'replace').splitlines() if line.strip()]
        said = message or (lines[-1] if lines else 'no message (exit %s)' % proc.returncode)
        return RemoteFailed('Failed to %s %s on storage host %s (%s) from the data node: %s'
                            % (what, self.path, self.host, self.spec['address'], said))

    def results(self, proc, what):
        """The frames of a session up to its end: yields each batch, returns the end value."""
        while True:
            try:
                frame = read_frame(proc.stdout)
            except (EOFError, ValueError, SyntaxError) as exc:
                raise self.failure(proc, what, None if isinstance(exc, EOFError) else 'bad answer: %s' % exc)
            if frame[0] == 'batch':
                yield frame[1]
                continue
            if frame[0] == 'failed':
                raise self.failure(proc, what, frame[1])
            proc.stdin.close()
            proc.wait()
            return

    def end_value(self, proc, what):
        while True:
            try:
                frame = read_frame(proc.stdout)
            except (EOFError, ValueError, SyntaxError) as exc:
                raise self.failure(proc, what, None if isinstance(exc, EOFError) else 'bad answer: %s' % exc)
            if frame[0] == 'failed':
                raise self.failure(proc, what, frame[1])
            if frame[0] == 'end':
                try:
                    proc.stdin.close()
                except (IOError, OSError):
                    pass
                proc.wait()
                return frame[1]

    def walk_request(self, ignore, algorithm, drop_cache, skip_times, cache=False):
        return {'op': 'walk', 'root': self.path, 'ignore': list(ignore), 'algorithm': algorithm,
                'drop_cache': bool(drop_cache), 'skip_times': list(skip_times or ()), 'cache': bool(cache)}

    def walk(self, ignore, algorithm, drop_cache, skip_times=(), cache=None, cancelled=None, record_to=None):
        """Yield the walk's batches (made on the host); then ``self.summary`` holds its summary.

        ``cache``: the records ``(path, (identity, hash))`` of this side's previous walk, in the
        walk's order, sent to the host in frames (it keeps them in a file while it walks, see
        serve). ``record_to``: the side file (hashcache) this walk's records are written to as the
        host sends them after its walk (complete when the walk ends, removed when it fails)."""
        proc = self.session(self.walk_request(ignore, algorithm, drop_cache, skip_times, cache is not None))
        writer = SideWriter(record_to, algorithm, self.side) if record_to else None
        finished = False
        try:
            if cache is not None:
                try:
                    for chunk in chunks(cache):
                        write_frame(proc.stdin, ('cache', chunk))
                    write_frame(proc.stdin, ('cache', None))
                except (IOError, OSError):
                    pass  # the host side ended: its answer says why
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise RemoteFailed('cancelled')
                try:
                    frame = read_frame(proc.stdout)
                except (EOFError, ValueError, SyntaxError) as exc:
                    raise self.failure(proc, 'walk', None if isinstance(exc, EOFError) else 'bad answer: %s' % exc)
                if frame[0] == 'batch':
                    yield frame[1]
                elif frame[0] == 'records':
                    if writer is not None:
                        for rel, ident, digest in frame[1]:
                            writer.add(rel, (ident, digest))
                elif frame[0] == 'failed':
                    raise self.failure(proc, 'walk', frame[1])
                else:
                    self.summary = frame[1]
                    if writer is not None:
                        writer.close()
                    finished = True
                    proc.stdin.close()
                    proc.wait()
                    return
        finally:
            if writer is not None and not finished:
                writer.abandon()
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def seal(self, ignore):
        proc = self.session({'op': 'seal', 'root': self.path, 'ignore': list(ignore)})
        return self.end_value(proc, 'seal')

    def carry(self, batches):
        """Apply the source's times, xattrs and hard links (``batches`` of its walk) to this tree."""
        proc = self.session({'op': 'carry', 'root': self.path})
        try:
            for batch in batches:
                write_frame(proc.stdin, ('batch', batch))
            write_frame(proc.stdin, ('end', None))
        except (IOError, OSError):
            pass  # the host side ended: its answer says why
        return self.end_value(proc, 'carry the times, xattrs and hard links of the source to')


def produce(tree, args, out, summaries, index, end, failure, cancelled):
    """In a thread of the comparing process: the remote walk's batches into the queue ``out``,
    then ``end`` (or ``failure(exc)``); its summary into ``summaries[index]``."""
    try:
        for batch in tree.walk(cancelled=cancelled, **args):
            out.put(batch)
        summaries[index] = tree.summary
        out.put(end)
    except BaseException as exc:  # pylint: disable=broad-except
        out.put(failure(exc))


# ---------------------------------------------------------------------- the host side


_KINDS = {stat.S_IFREG: 'file', stat.S_IFDIR: 'directory', stat.S_IFLNK: 'symlink', stat.S_IFIFO: 'fifo',
          stat.S_IFSOCK: 'socket', stat.S_IFCHR: 'char_device', stat.S_IFBLK: 'block_device'}


def apply_entries(root, batches, privileged=None):
    """On the destination's host (or the data node for a local destination): give each entry of
    ``root`` the nanosecond modification time, the xattrs (ACLs included) and the hard links of
    the source's entry of the same path (``batches`` of the source's walk). Entries missing here or
    of another type are left to the copy and the verification. Folders' times last, deepest first
    (relinking a file changes its folder's time). Returns counts."""
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy.xattrs import read_xattrs
    root = os.fsencode(root)
    privileged = os.geteuid() == 0 if privileged is None else privileged
    counts = {'entries': 0, 'times': 0, 'xattrs': 0, 'links': 0, 'skipped': 0}
    folders = []
    for batch in batches:
        for item in batch:
            rel, values = item[0], item[1]
            kind, mtime, xattrs, link = values[0], values[5], values[8], values[9]
            full = root if rel == b'.' else root + b'/' + rel
            counts['entries'] += 1
            try:
                st = os.lstat(full)
            except OSError:
                counts['skipped'] += 1
                continue
            if _KINDS.get(stat.S_IFMT(st.st_mode)) != kind:
                counts['skipped'] += 1
                continue
            if link is not None and kind != 'directory':
                first = root + b'/' + link
                try:
                    fst = os.lstat(first)
                except OSError:
                    fst = None
                if (fst is not None and _KINDS.get(stat.S_IFMT(fst.st_mode)) == kind
                        and (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino)):
                    temp = os.path.join(os.path.dirname(full),
                                        b'.mobility-link-' + binascii.hexlify(os.urandom(6)))
                    os.link(first, temp)
                    try:
                        os.rename(temp, full)
                    except OSError:
                        os.unlink(temp)
                        raise
                    counts['links'] += 1
                    st = os.lstat(full)
            want = dict(xattrs or ())
            have = read_xattrs(full, privileged)
            if have != want and kind != 'symlink':
                for name, value in sorted(want.items()):
                    if have.get(name) != value:
                        os.setxattr(full, name, value, follow_symlinks=False)
                for name in sorted(have):
                    if name not in want:
                        os.removexattr(full, name, follow_symlinks=False)
                counts['xattrs'] += 1
            if mtime is None:
                continue
            if kind == 'directory':
                folders.append((full, mtime))
            elif st.st_mtime_ns != mtime:
                os.utime(full, ns=(st.st_atime_ns, mtime), follow_symlinks=False)
                counts['times'] += 1
    for full, mtime in reversed(folders):
        st = os.lstat(full)
        if st.st_mtime_ns != mtime:
            os.utime(full, ns=(st.st_atime_ns, mtime), follow_symlinks=False)
            counts['times'] += 1
    return counts


def _incoming(stream):
    while True:
        frame = read_frame(stream)
        if frame[0] != 'batch':
            return
        yield frame[1]


def _serve_walk(request, stdin, out, sync_filesystem, walker_class, batches):
    """A walk on this host: the previous walk's records (``cache`` frames) kept in a private
    temporary folder while it walks and looked up a frame at a time, this walk's records written
    there as it goes and sent after its batches (``records`` frames), so that neither end holds a
    map of every file."""
    algorithm = request.get('algorithm')
    folder = tempfile.mkdtemp(prefix='mobility-walk-')
    try:
        lookup = None
        if request.get('cache'):
            kept = os.path.join(folder, 'cache')
            writer = SideWriter(kept, algorithm, None, durable=False)
            while True:
                frame = read_frame(stdin)
                if frame[0] != 'cache' or frame[1] is None:
                    break
                for rel, ident, digest in frame[1]:
                    writer.add(rel, (ident, digest))
            writer.close()
            lookup = SideLookup(kept, algorithm)
        if request.get('drop_cache'):
            sync_filesystem(request['root'])
        recorded = os.path.join(folder, 'new')
        walker = walker_class(request['root'], request.get('ignore') or (), algorithm,
                              drop_cache=bool(request.get('drop_cache')), skip_times=request.get('skip_times') or (),
                              cache=lookup, record_to=recorded, durable_records=False)
        for batch in batches(walker):
            write_frame(out, ('batch', batch))
        for chunk in chunks(read_records(recorded, algorithm)):
            write_frame(out, ('records', chunk))
        write_frame(out, ('end', walker.summary()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(stdin, out):
    """The host side of one session: one request line, then frames (see the module's description)."""
    request = json.loads(stdin.readline().decode('utf-8'))
    op = request.get('op')
    try:
        if op == 'walk':
            from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileread import sync_filesystem
            from ansible_collections.storage.mobility.plugins.module_utils.data_copy.walk import Walker, batches
            _serve_walk(request, stdin, out, sync_filesystem, Walker, batches)
        elif op == 'seal':
            from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import tree_seal
            write_frame(out, ('end', tree_seal(request['root'], request.get('ignore') or ())))
        elif op == 'carry':
            write_frame(out, ('end', apply_entries(request['root'], _incoming(stdin))))
        else:
            write_frame(out, ('failed', 'unknown request %r' % (op,)))
    except Exception as exc:  # pylint: disable=broad-except
        detail = exc.strerror if isinstance(exc, EnvironmentError) and exc.strerror else str(exc)
        where = ' (%s)' % os.fsdecode(exc.filename) if isinstance(exc, EnvironmentError) and exc.filename else ''
        write_frame(out, ('failed', '%s: %s%s' % (errno.errorcode.get(getattr(exc, 'errno', None) or 0, type(exc).__name__),
                                                  detail, where)))


def main():
    serve(sys.stdin.buffer, sys.stdout.buffer)
