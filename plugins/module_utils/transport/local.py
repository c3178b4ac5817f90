# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local transport: the storage is on the machine this code runs on (``transport: local``).

Every call is the system call or command the drivers, the store and the export helpers made
themselves before the transport existed; nothing here decides anything about shares.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import uuid

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import seal_later, tree_seal
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport import mounts, openfiles
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import (
    ATOMIC_TMP_PREFIX, FileStat, LockBusy, LockReplaced, Transport)

CHUNK = 1024 * 1024
PROC = '/proc'


def _file_stat(st):
    return FileStat(st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
                    st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


def _write_all(fd, data):
    """Write all of ``data``; False when the reader went away (BrokenPipeError)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True


def _drain(handle):
    """The text written to a temporary file, which is then closed."""
    handle.seek(0)
    data = handle.read().decode('utf-8', 'replace').strip()
    handle.close()
    return data


def atomic_write_json(path, data):
    """Write ``data`` as JSON to ``path``: temp file, fsync, rename, fsync of the folder."""
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode('utf-8'))


def atomic_write_bytes(path, payload, mode=0o600):
    """Write ``payload`` to ``path`` with ``mode``: temp file, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(path)
    # Not derived from the name, so that the longest accepted name fits (names.DERIVED_NAMES);
    # listings skip names that start with a dot.
    tmp = os.path.join(folder, '%s%d.%s' % (ATOMIC_TMP_PREFIX, os.getpid(), uuid.uuid4().hex[:12]))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            if mode != 0o600:
                os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def names_inode(path, fd):
    """True when ``path`` still names the file open as ``fd``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def unlink_locked(path, fd):
    """Remove the lock file ``path`` that this run holds locked as ``fd``: only when the path still
    names that file (a run that opens it meanwhile finds it replaced and locks again)."""
    if not names_inode(path, fd):
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _read_holder(fd):
    try:
        return os.pread(fd, 4096, 0).decode('utf-8')
    except (OSError, UnicodeDecodeError):
        return None


def pipe_processes(producer, consumer, what, on_chunk=None, capture=False, edit=None, die_midway=False,
                   shown=None, where=''):
    """Run ``producer | consumer`` (argv lists) on this machine with the stream passing through
    this process (Transport.pipe). ``shown`` (the argv pair errors name, when the argvs run the
    real commands elsewhere) and ``where`` (said after ``what``) serve the ssh transport."""
    err_send = tempfile.TemporaryFile()
    err_recv = tempfile.TemporaryFile()
    out_recv = tempfile.TemporaryFile() if capture else subprocess.DEVNULL
    send = subprocess.Popen(producer, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_send)
    try:
        recv = subprocess.Popen(consumer, stdin=subprocess.PIPE, stdout=out_recv, stderr=err_recv)
    except OSError:
        send.kill()
        send.wait()
        raise
    done = 0
    broken = False
    # The last bytes read are held back until the next read or the end: they may be the
    # closing bytes the edit goes in front of.
    held = b''
    hold = len(edit.closing) if edit else 0
    try:
        src, dst = send.stdout.fileno(), recv.stdin.fileno()
        if die_midway:
            stream = b''.join(iter(lambda: os.read(src, CHUNK), b''))
            _write_all(dst, stream[:len(stream) // 2])
            os._exit(70)
        while True:
            chunk = os.read(src, CHUNK)
            if not chunk:
                break
            done += len(chunk)
            if hold:
                chunk = held + chunk
                held, chunk = chunk[-hold:], chunk[:-hold]
            if not _write_all(dst, chunk):
                broken = True
                break
            if on_chunk is not None:
                on_chunk(done)
        if held and not broken:
            broken = not _write_all(dst, edit.finish(held))
    except BaseException:
        send.kill()
        recv.kill()
        raise
    finally:
        if broken:
            send.kill()
        send.stdout.close()
        try:
            recv.stdin.close()
        except OSError:
            pass
        send_rc = send.wait()
        recv_rc = recv.wait()
    send_err, recv_err = _drain(err_send), _drain(err_recv)
    output = _drain(out_recv) if capture else ''
    if send_rc != 0 or recv_rc != 0:
        named = shown or (producer, consumer)
        failed = ' '.join(named[1][:2] if recv_rc != 0 else named[0][:2])
        raise StorageError('Failed to %s%s: %s exited with %d: %s'
                           % (what, where, failed, recv_rc if recv_rc != 0 else send_rc,
                              (recv_err if recv_rc != 0 else send_err) or 'no message'),
                           cmd=list(named[0]) + ['|'] + list(named[1]), rc=recv_rc or send_rc,
                           stderr='%s\n%s' % (send_err, recv_err))
    return done, output


class LocalLock(object):
    """A lock file held with flock(2): the lock lives as long as the open descriptor."""

    def __init__(self, path, fd):
        self.path = path
        self.fd = fd

    def write_holder(self, text):
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode('utf-8'), 0)

    def release(self, remove=False):
        try:
            if remove:
                unlink_locked(self.path, self.fd)
        finally:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)


class LocalTransport(Transport):
    name = 'local'

    # -- commands ----------------------------------------------------------------------------
    def run(self, argv, what, check=True):
        return self.runner.run(argv, what, check=check)

    def pipe(self, producer, consumer, what, on_chunk=None, capture=False, edit=None, die_midway=False):
        return pipe_processes(producer, consumer, what, on_chunk=on_chunk, capture=capture, edit=edit,
                              die_midway=die_midway)

    def which(self, program):
        return shutil.which(program) is not None

    def is_root(self):
        return os.geteuid() == 0

    def pids_running(self, program, verbs, paths, proc=PROC):
        wanted = set(paths)
        found = []
        for pid in os.listdir(proc):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(os.path.join(proc, pid, 'cmdline'), 'rb') as handle:
                    argv = [a.decode('utf-8', 'replace') for a in handle.read().split(b'\0') if a]
            except (IOError, OSError):
                continue
            if (len(argv) > 2 and os.path.basename(argv[0]) == program and argv[1] in verbs
                    and wanted.intersection(argv[2:])):
                found.append(int(pid))
        return sorted(found)

    def kill(self, pid):
        try:
            os.kill(pid, 9)
        except OSError:
            pass

    # -- file operations ---------------------------------------------------------------------
    def stat(self, path):
        return _file_stat(os.stat(path))

    def lstat(self, path):
        return _file_stat(os.lstat(path))

    def exists(self, path):
        return os.path.exists(path)

    def lexists(self, path):
        return os.path.lexists(path)

    def is_dir(self, path):
        return os.path.isdir(path)

    def is_file(self, path):
        return os.path.isfile(path)

    def is_link(self, path):
        return os.path.islink(path)

    def realpath(self, path):
        return os.path.realpath(path)

    def listdir(self, path):
        return os.listdir(path)

    def makedirs(self, path, mode=0o755):
        os.makedirs(path, mode)

    def mkdir(self, path, mode=0o755):
        os.mkdir(path, mode)

    def rename(self, source, target):
        os.rename(source, target)

    def unlink(self, path):
        os.unlink(path)

    def rmdir(self, path):
        os.rmdir(path)

    def fsync_dir(self, path):
        fsync_dir(path)

    def read_bytes(self, path):
        with open(path, 'rb') as handle:
            return handle.read()

    def write_json_atomic(self, path, data):
        atomic_write_json(path, data)

    def write_text_atomic(self, path, text, mode=0o644):
        atomic_write_bytes(path, text.encode('utf-8'), mode)

    def append_line(self, path, line, rotate_bytes=None):
        if '\n' in line:
            raise ValueError('append_line: the line must not contain a newline')
        if rotate_bytes:
            try:
                if os.stat(path).st_size >= rotate_bytes:
                    os.rename(path, path + '.1')
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # One write() of the whole line: O_APPEND keeps concurrent writers' lines whole.
            view = memoryview((line + '\n').encode('utf-8'))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def statvfs(self, path):
        st = os.statvfs(path)
        return {'f_blocks': st.f_blocks, 'f_bavail': st.f_bavail, 'f_frsize': st.f_frsize}

    def tree_bytes(self, path):
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total

    def tree_counts(self, path, since=None):
        total = 0
        count = 0
        changed_bytes = 0
        changed_files = 0
        for root, _dirs, files in os.walk(path):
            if since is not None:
                try:
                    st = os.lstat(root)
                    if max(st.st_mtime, st.st_ctime) >= since:
                        changed_files += 1
                except OSError:
                    pass
            for name in files:
                count += 1
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                total += st.st_size
                if since is not None and max(st.st_mtime, st.st_ctime) >= since:
                    changed_files += 1
                    changed_bytes += st.st_size
        counts = {'bytes': total, 'files': count}
        if since is not None:
            counts.update(changed_bytes=changed_bytes, changed_files=changed_files)
        return counts

    # -- file attributes ---------------------------------------------------------------------
    def read_flags(self, path):
        return fileflags.read_carried(path)

    def set_flags(self, path, flags):
        fileflags.set_carried(path, flags)

    def flagged_entries(self, path, one_file_system=True):
        return fileflags.flagged_entries(path, stay_on=os.lstat(path).st_dev if one_file_system else None)

    def clear_flags_tree(self, path):
        return fileflags.clear_tree(path)

    def set_flags_tree(self, path, flags):
        return fileflags.set_tree(path, flags)

    # -- the share locks ---------------------------------------------------------------------
    def lock(self, path, create=True):
        for _attempt in range(100):
            if create:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            else:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        return None
                    raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (IOError, OSError) as exc:
                text = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise LockBusy(text)
                raise
            if names_inode(path, fd):
                return LocalLock(path, fd)
            # The holder before us removed the file after we opened it: lock the current one.
            os.close(fd)
        raise LockReplaced(path)

    # -- host-side inspections ---------------------------------------------------------------
    def open_writers(self, paths, whole_device=False):
        return openfiles.open_writers(paths, whole_device=whole_device)

    def users(self, paths):
        return openfiles.users(paths)

    def mount_table(self):
        return mounts.mount_table()

    def same_inode(self, a, b):
        return mounts.same_inode(a, b)

    def opens_direct(self, path):
        flag = getattr(os, 'O_DIRECT', 0)
        if not flag:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | flag)
        except OSError:
            return False
        os.close(fd)
        return True

    def mount_base_beneath(self, path, source, options):
        mounts.mount_base_beneath(path, source, options)

    def tree_seal(self, path, ignore):
        return tree_seal(path, ignore)

    def tree_seal_later(self, path, ignore):
        # A forked process walks the tree (one CPU), this one goes on.
        return seal_later(path, ignore)
