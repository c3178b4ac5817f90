# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The btrfs share driver: pools are btrfs filesystems (or subvolumes), shares are subvolumes.

Layout of a pool (the same paths as the posix driver)::

    <pool>/shares/<share>                   the share instance: a subvolume
    <pool>/snapshots/<share>/<snapshot>     share snapshots: read-only snapshots of it
    <pool>/.mobility/btrfs/<migration id>/  temporary snapshots of a running migration, progress.json

Driver-assisted migration between two btrfs pools (any two btrfs filesystems of this machine):

* phase 1 sends the share's snapshots in creation order (each with ``-p`` the one before), then a
  read-only temporary snapshot of the share (``inc-000001``, ``-p`` the newest share snapshot)
  with ``btrfs send | btrfs receive``. Users keep writing. Each rerun of phase 1 sends an
  increment (``inc-000002`` with ``-p inc-000001``, ...) when the share changed;
* phase 2 sets the source subvolume read-only, refuses while a process still holds a file of it
  open for writing, sends the last increment (``final``), and makes the destination instance a
  writable snapshot of what arrived. That is the point of no return; the manager then switches the
  export and deletes the source, and ``migration_cleanup`` removes the temporary snapshots and the
  source's share snapshots (their copies are verified on the destination).

The stream passes through this process: it is measured, and a ``utimes`` of the received root
folder with the sent root's times goes in before its closing ``end`` (see root_utimes_command).

Everything this driver needs to resume is on the filesystems: temporary snapshots are named from
the migration id and a sequence number, and a received subvolume counts only when its
``Received UUID`` is the one the sent subvolume carries. A receive that was killed leaves a
subvolume without it: it is deleted and sent again.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fnmatch
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time

from ansible_collections.storage.mobility.plugins.module_utils import openfiles
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags
from ansible_collections.storage.mobility.plugins.module_utils.drivers.posix import PosixShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.mounts import mount_of
from ansible_collections.storage.mobility.plugins.module_utils.store import (
    CRASH_AFTER_ENV, META_DIR, atomic_write_json, now_iso)

BTRFS = 'btrfs'
# btrfs gives the root folder of every subvolume this inode number (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_INODE = 256
STAGING = 'btrfs'
PROGRESS_FILE = 'progress.json'
FINAL = 'final'
INCREMENT_RE = re.compile(r'^inc-(\d{6})$')
MIGRATION_ID_RE = re.compile(r'^[0-9A-Za-z][0-9A-Za-z-]{0,63}$')
CHUNK = 1024 * 1024
PROGRESS_INTERVAL = 1.0
EMPTY_VALUES = ('', '-')
# The send stream (btrfs-progs' send.h): commands are a little-endian header (payload length u32,
# command u16, CRC32C u32 of header and payload with the CRC field zero) and TLV attributes.
SEND_C_UTIMES = 20
SEND_C_END = 21
SEND_A_CTIME = 9
SEND_A_MTIME = 10
SEND_A_ATIME = 11
SEND_A_PATH = 15
SEND_HEADER = struct.Struct('<IHI')


# -- parsing (pure functions, unit-tested on recorded and real output) ---------------------------
def parse_subvolume_show(text):
    """``btrfs subvolume show PATH`` as a dict with lower-case keys (``uuid``, ``parent_uuid``,
    ``received_uuid``, ``creation_time``, ``generation``, ``gen_at_creation``, ``flags``, ...),
    ``readonly`` and ``snapshots`` (names listed under ``Snapshot(s):``). Values shown as ``-`` are None."""
    result = {'snapshots': []}
    lines = text.splitlines()
    in_snapshots = False
    for index, line in enumerate(lines):
        if index == 0 and ':' not in line:
            result['path'] = line.strip()
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if in_snapshots and ':' not in stripped:
            result['snapshots'].append(stripped)
            continue
        key, sep, value = stripped.partition(':')
        if not sep:
            continue
        key = key.strip().lower().replace(' ', '_').replace('(s)', 's')
        value = value.strip()
        in_snapshots = key == 'snapshots'
        if in_snapshots:
            if value:
                result['snapshots'].append(value)
            continue
        if value in EMPTY_VALUES:
            value = None
        elif key in ('subvolume_id', 'generation', 'gen_at_creation', 'parent_id', 'top_level_id',
                     'send_transid', 'receive_transid'):
            try:
                value = int(value)
            except ValueError:
                pass
        result[key] = value
    result['readonly'] = 'readonly' in (result.get('flags') or '').split(',')
    return result


def parse_subvolume_list(text):
    """``btrfs subvolume list`` lines as dicts: id, gen, top_level, path."""
    result = []
    for line in text.splitlines():
        match = re.match(r'^ID (\d+) gen (\d+)(?: cgen \d+)? top level (\d+)(?: .*?)? path (.*)$', line.strip())
        if match:
            result.append({'id': int(match.group(1)), 'gen': int(match.group(2)),
                           'top_level': int(match.group(3)), 'path': match.group(4)})
    return result


def parse_dump_data_bytes(text):
    """Bytes of file data in a send stream, from ``btrfs receive --dump`` of a ``--no-data`` send:
    the sum of the ``len=`` of its ``update_extent`` commands."""
    total = 0
    for line in text.splitlines():
        if line.startswith('update_extent'):
            match = re.search(r'\blen=(\d+)', line)
            if match:
                total += int(match.group(1))
    return total


def parse_du_total(text):
    """The Total column (bytes) of ``btrfs filesystem du -s --raw``."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            return int(fields[0])
    return 0


def _crc32c_table():
    table = []
    for index in range(256):
        crc = index
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC32C as the send stream uses it: seed 0, no final inversion."""
    for byte in bytearray(data):
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def send_command(command, attributes=()):
    """One send stream command: ``attributes`` are (type, bytes) pairs."""
    payload = b''.join(struct.pack('<HH', kind, len(value)) + value for kind, value in attributes)
    crc = crc32c(SEND_HEADER.pack(len(payload), command, 0) + payload)
    return SEND_HEADER.pack(len(payload), command, crc) + payload


END_COMMAND = send_command(SEND_C_END)


def root_utimes_command(st):
    """A ``utimes`` command for the root folder of the received subvolume (the empty path) with
    the times of ``st`` (a stat result of the sent subvolume's root).

    An incremental send creates every new inode under a temporary name in the subvolume's root
    folder and then renames it into place, but it sends the root's times only when the root
    itself changed: a receive of new files in subfolders leaves the received root with the time
    of the receive. Appended before the stream's end, this command puts the source's times back."""
    def stamp(ns):
        return struct.pack('<QI', ns // 1000000000, ns % 1000000000)
    return send_command(SEND_C_UTIMES, [(SEND_A_PATH, b''), (SEND_A_ATIME, stamp(st.st_atime_ns)),
                                        (SEND_A_MTIME, stamp(st.st_mtime_ns)), (SEND_A_CTIME, stamp(st.st_ctime_ns))])


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


def increment_name(seq):
    return 'inc-%06d' % seq


def increment_seq(name):
    match = INCREMENT_RE.match(name)
    return int(match.group(1)) if match else None


def crash_wanted(event):
    pattern = os.environ.get(CRASH_AFTER_ENV)
    return bool(pattern and fnmatch.fnmatchcase(event, pattern))


def crash_point(event):
    """Fault injection for the crash tests, like the records' (store.py): die when the pattern in
    STORAGE_MOBILITY_CRASH_AFTER matches ``event``."""
    if crash_wanted(event):
        os._exit(70)


def open_writers(path):
    """Processes holding a file of the subvolume at ``path`` open for writing (or mapped shared
    and writable): a list of ``pid (command): file``. btrfs lets a descriptor opened before the
    subvolume became read-only keep writing, so the switchover must know about these. The
    subvolume has a device of its own, so every path into it counts (the export's too)."""
    return [openfiles.describe([item]) for item in openfiles.open_writers([path], whole_device=True)]


def stray_transfers(paths, proc='/proc'):
    """Pids of ``btrfs send`` / ``btrfs receive`` processes naming one of ``paths`` (exactly) in
    their arguments: left running by a run that died while they were joined to it."""
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
        if (len(argv) > 2 and os.path.basename(argv[0]) == 'btrfs' and argv[1] in ('send', 'receive')
                and wanted.intersection(argv[2:])):
            found.append(int(pid))
    return sorted(found)


class BtrfsShareDriver(PosixShareDriver):
    name = 'btrfs'

    # -- basics ------------------------------------------------------------------------------
    def _btrfs(self, args, what, check=True):
        return self.runner.run(['btrfs'] + list(args), what, check=check)

    def _require_tool(self):
        if shutil.which('btrfs') is None:
            raise StorageError('The btrfs driver of backend %s needs the btrfs command: install btrfs-progs'
                               % self.backend.name)

    def _fs_problem(self, pool):
        """Why ``pool`` cannot be a btrfs pool, or None."""
        if not os.path.isdir(pool.path):
            return 'its path %s does not exist or is not a folder' % pool.path
        mount = mount_of(pool.path)
        if mount['fstype'] != BTRFS:
            return ('its path %s is on a %s filesystem (%s mounted at %s), not btrfs; the btrfs driver needs '
                    'a btrfs filesystem or subvolume' % (pool.path, mount['fstype'], mount['source'], mount['mount_point']))
        return None

    def _require_pool(self, pool):
        self._require_tool()
        problem = self._fs_problem(pool)
        if problem:
            raise StorageError('Pool %s: %s' % (pool, problem))

    @staticmethod
    def is_subvolume(path):
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return os.path.isdir(path) and not os.path.islink(path) and st.st_ino == SUBVOLUME_INODE

    def show(self, path):
        """``btrfs subvolume show`` of ``path`` parsed, or None when it is not a subvolume."""
        if not self.is_subvolume(path):
            return None
        rc, out = self._btrfs(['subvolume', 'show', path], 'show subvolume %s' % path, check=False)[:2]
        if rc != 0:
            return None
        return parse_subvolume_show(out)

    def _delete_subvolume(self, path, what):
        if not self.is_subvolume(path):
            return False
        args = ['subvolume', 'delete', '--commit-after', path]
        try:
            self._btrfs(args, 'delete %s (%s)' % (what, path))
        except CommandError:
            # Files inside do not stop a subvolume's deletion, but an immutable or append-only
            # attribute on its root folder does: clear it (a read-only snapshot first made
            # writable, it is being deleted anyway) and try again.
            if not fileflags.read_carried(path):
                raise
            if (self.show(path) or {}).get('readonly'):
                self._btrfs(['property', 'set', '-ts', path, 'ro', 'false'], 'make %s writable to delete it' % path)
            try:
                fileflags.set_carried(path, 0)
            except OSError as exc:
                raise StorageError('Failed to delete %s (%s): cannot clear its immutable or append-only attribute: %s'
                                   % (what, path, exc.strerror))
            self._btrfs(args, 'delete %s (%s)' % (what, path))
        return True

    @staticmethod
    def _makedirs(path, mode=0o755):
        try:
            os.makedirs(path, mode)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Failed to create folder %s: %s' % (path, exc.strerror))

    def size_of(self, path):
        rc, out = self._btrfs(['filesystem', 'du', '-s', '--raw', path], 'measure %s' % path, check=False)[:2]
        return parse_du_total(out) if rc == 0 else 0

    # -- pools -------------------------------------------------------------------------------
    def pool_stats(self, pool):
        self._require_pool(pool)
        stats = super(BtrfsShareDriver, self).pool_stats(pool)
        stats.update({'driver_version': '1.0', 'snapshot_support': True,
                      'storage_protocol': 'NFS_CIFS', 'filesystem': BTRFS})
        return stats

    # -- instances ---------------------------------------------------------------------------
    def create_instance(self, pool, share_name):
        self._require_pool(pool)
        path = self.instance_path(pool, share_name)
        self._makedirs(os.path.dirname(path))
        if os.path.lexists(path):
            if self.is_subvolume(path) and not os.listdir(path):
                return path
            raise InvalidRequest('Refusing to create share %s in pool %s: %s already exists and is not an empty '
                                 'btrfs subvolume (data not managed by this collection?)' % (share_name, pool, path))
        self._btrfs(['subvolume', 'create', path], 'create share %s in pool %s' % (share_name, pool))
        return path

    def delete_instance(self, pool, share_name):
        path = self.instance_path(pool, share_name)
        if not os.path.lexists(path):
            return False
        if self.is_subvolume(path):
            return self._delete_subvolume(path, 'share %s in pool %s' % (share_name, pool))
        # A folder left by another driver or by hand: delete it the posix way.
        return super(BtrfsShareDriver, self).delete_instance(pool, share_name)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot_exists(self, pool, share_name, snapshot_name):
        return self.is_subvolume(self.snapshot_path(pool, share_name, snapshot_name))

    def create_snapshot(self, pool, share_name, snapshot_name):
        self._require_pool(pool)
        source = self.instance_path(pool, share_name)
        final = self.snapshot_path(pool, share_name, snapshot_name)
        if not self.is_subvolume(final):
            if os.path.lexists(final):
                raise StorageError('Failed to create snapshot %s of share %s: %s exists and is not a btrfs subvolume'
                                   % (snapshot_name, share_name, final))
            if not self.is_subvolume(source):
                raise StorageError('Failed to create snapshot %s of share %s: %s is not a btrfs subvolume'
                                   % (snapshot_name, share_name, source))
            self._makedirs(os.path.dirname(final))
            # A read-only snapshot appears atomically: there is no partial state to clean up.
            self._btrfs(['subvolume', 'snapshot', '-r', source, final],
                        'snapshot share %s as %s' % (share_name, snapshot_name))
        return self.size_of(final)

    def delete_snapshot(self, pool, share_name, snapshot_name):
        path = self.snapshot_path(pool, share_name, snapshot_name)
        if os.path.lexists(path) and not self.is_subvolume(path):
            return super(BtrfsShareDriver, self).delete_snapshot(pool, share_name, snapshot_name)
        changed = self._delete_subvolume(path, 'snapshot %s of share %s' % (snapshot_name, share_name))
        self._rmdir_if_empty(self.snapshots_dir(pool, share_name))
        return changed

    @staticmethod
    def _rmdir_if_empty(path):
        try:
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
                return True
        except OSError:
            pass
        return False

    # -- driver-assisted migration: compatibility ---------------------------------------------
    def nested_subvolumes(self, path):
        """Subvolumes below ``path`` (btrfs send does not carry them)."""
        rc, out = self._btrfs(['subvolume', 'list', '-o', path], 'list subvolumes below %s' % path, check=False)[:2]
        return [entry['path'] for entry in parse_subvolume_list(out)] if rc == 0 else []

    def migration_check_compatibility(self, source_pool, destination_pool, share, destination_driver):
        result = {'compatible': False, 'writable': False, 'preserve_metadata': False,
                  'nondisruptive': False, 'preserve_snapshots': False, 'reason': None}
        if destination_driver.name != self.name:
            result['reason'] = ('the destination backend %s uses driver %s; btrfs send/receive needs btrfs pools on '
                                'both sides' % (destination_pool.backend.name, destination_driver.name))
            return result
        if source_pool.backend.host != destination_pool.backend.host:
            result['reason'] = ('the pools are on different hosts (%s, %s) and the btrfs driver reaches only this '
                                'machine (transport local)' % (source_pool.backend.host, destination_pool.backend.host))
            return result
        if shutil.which('btrfs') is None:
            result['reason'] = 'the btrfs command is missing on this machine (install btrfs-progs)'
            return result
        for what, pool in (('source', source_pool), ('destination', destination_pool)):
            problem = self._fs_problem(pool)
            if problem:
                result['reason'] = 'the %s pool %s is not usable: %s' % (what, pool, problem)
                return result
        source = self.instance_path(source_pool, share['name'])
        if not self.is_subvolume(source):
            result['reason'] = 'the share %s is not a btrfs subvolume (%s)' % (share['name'], source)
            return result
        nested = self.nested_subvolumes(source)
        if nested:
            result['reason'] = ('share %s holds nested subvolumes (%s), which btrfs send does not carry'
                                % (share['name'], ', '.join(nested)))
            return result
        flagged = fileflags.flagged_entries(source, stay_on=os.lstat(source).st_dev)
        if flagged:
            names = sorted(flagged)
            result['reason'] = ('share %s holds immutable or append-only entries, attributes that btrfs send does not '
                                'carry (a host copy does): %s%s'
                                % (share['name'], ', '.join('%s (%s)' % (fileflags.render(n), fileflags.describe(flagged[n]))
                                                            for n in names[:10]),
                                   ' and %d more' % (len(names) - 10) if len(names) > 10 else ''))
            return result
        result.update({
            'compatible': True, 'writable': True, 'preserve_metadata': True, 'preserve_snapshots': True,
            # The switchover swaps the subvolume behind the export: open files and mounts of the
            # old one do not follow, so it is never nondisruptive.
            'nondisruptive': False,
        })
        return result

    # -- driver-assisted migration: paths and state on disk -----------------------------------
    @staticmethod
    def _migration_id(share):
        mig_id = str((share.get('migration') or {}).get('id') or '')
        if not MIGRATION_ID_RE.match(mig_id):
            raise StorageError('Share %s has no valid migration id (%r)' % (share.get('name'), mig_id))
        return mig_id

    def staging_dir(self, pool, share):
        return os.path.join(pool.path, META_DIR, STAGING, self._migration_id(share))

    def _progress_path(self, source_pool, share):
        return os.path.join(self.staging_dir(source_pool, share), PROGRESS_FILE)

    def _increments(self, folder):
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return sorted(s for s in (increment_seq(n) for n in names) if s is not None)

    @staticmethod
    def expected_received_uuid(info):
        """The UUID a receive of this subvolume records: its own received UUID when it has one."""
        return info.get('received_uuid') or info.get('uuid')

    def received_ok(self, sent_path, received_path):
        """True when ``received_path`` is a complete receive of ``sent_path``."""
        sent, got = self.show(sent_path), self.show(received_path)
        return bool(sent and got and got.get('received_uuid') and got['readonly']
                    and got['received_uuid'] == self.expected_received_uuid(sent))

    def _snapshot_plan(self, source_pool, destination_pool, share):
        """(label, source path, destination folder) of each share snapshot, in creation order."""
        name = share['name']
        plan = []
        for snap in share.get('snapshots') or []:
            if snap.get('status') not in (None, 'available'):
                continue
            plan.append(('snapshot %s' % snap['name'], self.snapshot_path(source_pool, name, snap['name']),
                         self.snapshots_dir(destination_pool, name)))
        return plan

    # -- the pipe ----------------------------------------------------------------------------
    def _pipe(self, send_argv, recv_argv, what, on_chunk=None, capture=False, crash_event=None, before_end=None):
        """Run ``send_argv | recv_argv`` as two processes joined by a pipe that passes through this
        process (so the stream is measured); return (bytes, receive stdout).

        ``before_end``: bytes (whole send stream commands) passed on just before the stream's
        closing ``end`` command; a stream that does not close with one is passed on unchanged.

        Fault injection: when ``crash_event`` matches STORAGE_MOBILITY_CRASH_AFTER, the process
        dies after passing on half of the stream, as a run killed in the middle of a send."""
        err_send = tempfile.TemporaryFile()
        err_recv = tempfile.TemporaryFile()
        out_recv = tempfile.TemporaryFile() if capture else subprocess.DEVNULL
        send = subprocess.Popen(send_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_send)
        try:
            recv = subprocess.Popen(recv_argv, stdin=subprocess.PIPE, stdout=out_recv, stderr=err_recv)
        except OSError:
            send.kill()
            send.wait()
            raise
        done = 0
        broken = False
        # The last bytes read are held back until the next read or the end: they may be the
        # closing command, which ``before_end`` goes in front of.
        held = b''
        hold = len(END_COMMAND) if before_end else 0
        try:
            src, dst = send.stdout.fileno(), recv.stdin.fileno()
            if crash_event and crash_wanted(crash_event):
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
                broken = not _write_all(dst, before_end + held if held == END_COMMAND else held)
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
            failed = 'btrfs receive' if recv_rc != 0 else 'btrfs send'
            raise StorageError('Failed to %s: %s exited with %d: %s'
                               % (what, failed, recv_rc if recv_rc != 0 else send_rc,
                                  (recv_err if recv_rc != 0 else send_err) or 'no message'),
                               cmd=send_argv + ['|'] + recv_argv, rc=recv_rc or send_rc,
                               stderr='%s\n%s' % (send_err, recv_err))
        return done, output

    @staticmethod
    def _send_argv(path, parent=None, no_data=False):
        argv = ['btrfs', 'send', '-q']
        if no_data:
            argv.append('--no-data')
        if parent:
            argv += ['-p', parent]
        return argv + [path]

    def estimate(self, path, parent=None):
        """Bytes of file data a send of ``path`` (against ``parent``) will carry: read from a
        ``--no-data`` send, which walks the metadata only."""
        out = self._pipe(self._send_argv(path, parent, no_data=True), ['btrfs', 'receive', '--dump'],
                         'estimate the send of %s' % path, capture=True)[1]
        return parse_dump_data_bytes(out)

    # -- progress ----------------------------------------------------------------------------
    def _read_progress(self, source_pool, share):
        try:
            with open(self._progress_path(source_pool, share)) as handle:
                data = json.load(handle)
            return data if isinstance(data, dict) else None
        except (IOError, OSError, ValueError, StorageError):
            return None

    def _write_progress(self, source_pool, share, progress):
        path = self._progress_path(source_pool, share)
        if os.path.isdir(os.path.dirname(path)):
            progress['updated_at'] = now_iso()
            atomic_write_json(path, progress)

    def migration_get_progress(self, source_pool, destination_pool, share):
        progress = self._read_progress(source_pool, share) or {}
        result = dict(progress)
        result.setdefault('total_progress', 0)
        return result

    def migration_live_progress(self, pool, share):
        if not (share.get('migration') or {}).get('id'):
            return None
        return self._read_progress(pool, share)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, label, path, parent, dest_dir, progress, source_pool, share):
        """Send ``path`` (``-p parent``) into ``dest_dir`` unless a complete copy is already there;
        return the bytes sent."""
        received = os.path.join(dest_dir, os.path.basename(path))
        if self.received_ok(path, received):
            return 0
        if os.path.lexists(received):
            # A receive that was killed leaves a writable subvolume without a received UUID.
            if not self.is_subvolume(received):
                raise StorageError('Failed to send %s: %s exists and is not a btrfs subvolume' % (label, received))
            got = self.show(received) or {}
            sent = self.show(path) or {}
            if got.get('received_uuid') and got['received_uuid'] != self.expected_received_uuid(sent):
                raise StorageError('Failed to send %s: %s holds another subvolume (received UUID %s); remove it or '
                                   'cancel the migration' % (label, received, got['received_uuid']))
            self._delete_subvolume(received, 'partial receive of %s' % label)
        self._makedirs(dest_dir)
        start = time.monotonic()
        base = progress.get('bytes_sent', 0)
        state = {'last': 0.0}
        progress['current'] = label

        def on_chunk(done):
            now = time.monotonic()
            if now - state['last'] < PROGRESS_INTERVAL:
                return
            state['last'] = now
            self._update_rate(progress, base + done, now - start, done)
            self._write_progress(source_pool, share, progress)

        what = 'send %s of share %s to %s' % (label, share['name'], dest_dir)
        # The sent subvolume is read-only: its root's times stay as read here.
        sent = self._pipe(self._send_argv(path, parent), ['btrfs', 'receive', dest_dir], what, on_chunk,
                          crash_event='btrfs sending %s' % label, before_end=root_utimes_command(os.lstat(path)))[0]
        crash_point('btrfs received %s' % label)
        if not self.received_ok(path, received):
            raise StorageError('Failed to %s: the receive ended but %s is not a complete copy (no matching '
                               'received UUID)' % (what, received))
        elapsed = time.monotonic() - start
        progress['bytes_sent'] = base + sent
        progress['send_seconds'] = round(progress.get('send_seconds', 0) + elapsed, 3)
        self._update_rate(progress, base + sent, progress['send_seconds'], base + sent)
        progress['last_send'] = {'label': label, 'bytes': sent, 'seconds': round(elapsed, 3), 'at': now_iso()}
        self._write_progress(source_pool, share, progress)
        return sent

    @staticmethod
    def _update_rate(progress, sent_total, elapsed, sent_now):
        total = max(progress.get('bytes_total') or 0, sent_total)
        rate = sent_now / elapsed if elapsed > 0 else None
        progress['bytes_sent'] = sent_total
        progress['rate_bytes_per_s'] = int(rate) if rate else None
        progress['eta_seconds'] = (round((total - sent_total) / rate, 1) if rate and total >= sent_total else None)
        percent = int(100 * sent_total / total) if total else 0
        progress['total_progress'] = min(99, percent)
        progress['percent'] = progress['total_progress']

    def _new_increment(self, source_pool, share, seq):
        src_stage = self.staging_dir(source_pool, share)
        path = os.path.join(src_stage, increment_name(seq))
        if not self.is_subvolume(path):
            self._btrfs(['subvolume', 'snapshot', '-r', self.instance_path(source_pool, share['name']), path],
                        'take temporary snapshot %s of share %s' % (increment_name(seq), share['name']))
        return path

    def _transfer_paths(self, source_pool, destination_pool, share):
        name = share['name']
        paths = [self.staging_dir(destination_pool, share), self.snapshots_dir(destination_pool, name)]
        src_stage = self.staging_dir(source_pool, share)
        paths += [os.path.join(src_stage, increment_name(s)) for s in self._increments(src_stage)]
        paths.append(os.path.join(src_stage, FINAL))
        paths += [self.snapshot_path(source_pool, name, s['name']) for s in share.get('snapshots') or []]
        return paths

    def stop_stray_transfers(self, source_pool, destination_pool, share):
        """Kill what a dead run of this migration left sending or receiving (we hold the share's
        lock, so no live run owns them) and wait until they are gone, before touching anything."""
        paths = self._transfer_paths(source_pool, destination_pool, share)
        pids = stray_transfers(paths)
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        for _attempt in range(200):
            if not stray_transfers(paths):
                return pids
            time.sleep(0.05)
        raise StorageError('Failed to stop the btrfs send/receive processes %s left by an earlier run of the '
                           'migration of share %s' % (', '.join(str(p) for p in pids), share['name']))

    def _catch_up(self, source_pool, destination_pool, share, phase):
        """Send whatever the destination lacks: share snapshots, then temporary increments; keep
        only the newest increment on both sides. Returns (bytes sent, whether anything was sent)."""
        name = share['name']
        src_stage = self.staging_dir(source_pool, share)
        dst_stage = self.staging_dir(destination_pool, share)
        self.stop_stray_transfers(source_pool, destination_pool, share)
        self._makedirs(src_stage, 0o700)
        self._makedirs(dst_stage, 0o700)
        steps = []
        parent = None
        for label, path, dest_dir in self._snapshot_plan(source_pool, destination_pool, share):
            if not self.is_subvolume(path):
                raise StorageError('Failed to send snapshot of share %s: %s is missing or not a subvolume' % (name, path))
            steps.append((label, path, parent, dest_dir))
            parent = path
        snapshot_parent = parent
        seqs = self._increments(src_stage)
        if not seqs:
            self._new_increment(source_pool, share, 1)
            seqs = [1]
        verified = [s for s in self._increments(dst_stage)
                    if s in seqs and self.received_ok(os.path.join(src_stage, increment_name(s)),
                                                      os.path.join(dst_stage, increment_name(s)))]
        for seq in seqs:
            older = [s for s in verified if s < seq]
            inc_parent = os.path.join(src_stage, increment_name(max(older))) if older else snapshot_parent
            steps.append(('increment %d' % seq, os.path.join(src_stage, increment_name(seq)), inc_parent, dst_stage))
        pending = [step for step in steps
                   if not self.received_ok(step[1], os.path.join(step[3], os.path.basename(step[1])))]
        progress = self._read_progress(source_pool, share) or {}
        progress.update({'phase': phase, 'bytes_sent': 0, 'send_seconds': 0, 'started_at': now_iso(),
                         'objects_total': len(pending), 'total_progress': 0})
        progress['bytes_total'] = sum(self.estimate(path, par) for label, path, par, dest_dir in pending)
        sent = 0
        for label, path, par, dest_dir in pending:
            sent += self._send(label, path, par, dest_dir, progress, source_pool, share)
        self._prune(source_pool, destination_pool, share)
        seconds = progress.get('send_seconds') or 0
        progress.update({'total_progress': 100, 'percent': 100, 'current': None, 'eta_seconds': 0,
                         'bytes_sent': sent, 'bytes_total': max(sent, progress.get('bytes_total') or 0),
                         'rate_bytes_per_s': int(sent / seconds) if sent and seconds else None})
        if pending:
            progress['increments'] = max(seqs)
            progress['last_increment_at'] = now_iso()
        self._write_progress(source_pool, share, progress)
        return sent, bool(pending)

    def _prune(self, source_pool, destination_pool, share):
        """Keep only the newest increment that arrived complete (the parent of the next one)."""
        src_stage = self.staging_dir(source_pool, share)
        dst_stage = self.staging_dir(destination_pool, share)
        seqs = self._increments(src_stage)
        complete = [s for s in seqs
                    if self.received_ok(os.path.join(src_stage, increment_name(s)), os.path.join(dst_stage, increment_name(s)))]
        if not complete:
            return
        keep = max(complete)
        for seq in sorted(set(seqs + self._increments(dst_stage))):
            if seq < keep:
                self._delete_subvolume(os.path.join(dst_stage, increment_name(seq)), 'temporary snapshot')
                self._delete_subvolume(os.path.join(src_stage, increment_name(seq)), 'temporary snapshot')

    # -- driver-assisted migration: phase 1 ---------------------------------------------------
    def migration_start(self, source_pool, destination_pool, share):
        self._require_pool(source_pool)
        self._require_pool(destination_pool)
        name = share['name']
        source = self.instance_path(source_pool, name)
        if not self.is_subvolume(source):
            raise StorageError('Failed to start migration of share %s: %s is not a btrfs subvolume' % (name, source))
        problems = []
        for label, path, dest_dir in self._snapshot_plan(source_pool, destination_pool, share):
            target = os.path.join(dest_dir, os.path.basename(path))
            if os.path.lexists(target) and not self.received_ok(path, target):
                got = self.show(target) or {}
                # A killed receive of this migration is redone; anything else is in the way.
                if got.get('received_uuid') or not self.is_subvolume(target):
                    problems.append('%s already exists' % target)
        if problems:
            raise StorageError('Failed to start migration of share %s to %s: %s'
                               % (name, destination_pool, '; '.join(problems)))
        self._makedirs(self.staging_dir(source_pool, share), 0o700)
        self._makedirs(self.staging_dir(destination_pool, share), 0o700)
        if self._read_progress(source_pool, share) is None:
            self._write_progress(source_pool, share, {'phase': 'initial', 'total_progress': 0, 'bytes_sent': 0,
                                                      'bytes_total': None, 'started_at': now_iso()})

    def migration_continue(self, source_pool, destination_pool, share):
        """The initial copy: every share snapshot and a first temporary snapshot of the share."""
        self._catch_up(source_pool, destination_pool, share, 'initial')
        return True

    def source_changed(self, source_pool, share):
        """True when the share changed since its newest temporary snapshot (or has none)."""
        src_stage = self.staging_dir(source_pool, share)
        seqs = self._increments(src_stage)
        if not seqs:
            return True
        source = self.instance_path(source_pool, share['name'])
        # Commit the running transaction so that the subvolume's generation shows every write.
        self._btrfs(['filesystem', 'sync', source], 'sync share %s' % share['name'])
        now, last = self.show(source), self.show(os.path.join(src_stage, increment_name(seqs[-1])))
        if not now or not last:
            return True
        return int(now.get('generation') or 0) > int(last.get('gen_at_creation') or 0)

    def migration_refresh_pending(self, source_pool, destination_pool, share):
        return self.source_changed(source_pool, share)

    def migration_refresh(self, source_pool, destination_pool, share):
        """Phase 1 done and users still writing: send one increment when the share changed."""
        src_stage = self.staging_dir(source_pool, share)
        dst_stage = self.staging_dir(destination_pool, share)
        self.stop_stray_transfers(source_pool, destination_pool, share)
        # Leftovers of a switchover that failed before the switch belong to no increment chain.
        self._delete_subvolume(os.path.join(dst_stage, FINAL), 'temporary snapshot')
        self._delete_subvolume(os.path.join(src_stage, FINAL), 'temporary snapshot')
        self._set_source_read_only(source_pool, share, False)
        if self.source_changed(source_pool, share):
            seqs = self._increments(src_stage)
            self._new_increment(source_pool, share, (max(seqs) if seqs else 0) + 1)
        sent, any_sent = self._catch_up(source_pool, destination_pool, share, 'incremental')
        return any_sent

    # -- driver-assisted migration: phase 2 ---------------------------------------------------
    def _set_source_read_only(self, source_pool, share, read_only):
        path = self.instance_path(source_pool, share['name'])
        info = self.show(path)
        if info is None or info['readonly'] == read_only:
            return False
        self._btrfs(['property', 'set', '-ts', path, 'ro', 'true' if read_only else 'false'],
                    'make share %s %s' % (share['name'], 'read-only' if read_only else 'writable'))
        return True

    def _placed(self, destination_pool, share):
        """True when the destination instance is the writable snapshot of the final increment."""
        final = self.show(os.path.join(self.staging_dir(destination_pool, share), FINAL))
        instance = self.show(self.instance_path(destination_pool, share['name']))
        return bool(final and instance and instance.get('parent_uuid') == final.get('uuid'))

    def migration_complete_done(self, source_pool, destination_pool, share):
        name = share['name']
        if not self.is_subvolume(self.instance_path(destination_pool, name)):
            return False
        if not os.path.lexists(self.instance_path(source_pool, name)):
            return True
        return self._placed(destination_pool, share)

    def migration_complete(self, source_pool, destination_pool, share):
        name = share['name']
        if self.migration_complete_done(source_pool, destination_pool, share):
            return
        source = self.instance_path(source_pool, name)
        if not self.is_subvolume(source):
            raise StorageError('Failed to complete migration of share %s: its source %s is missing or not a subvolume'
                               % (name, source))
        src_stage = self.staging_dir(source_pool, share)
        dst_stage = self.staging_dir(destination_pool, share)
        stats = share['migration'].setdefault('btrfs', {})
        self.stop_stray_transfers(source_pool, destination_pool, share)
        try:
            if os.path.lexists(os.path.join(src_stage, FINAL)) and not (self.show(source) or {}).get('readonly'):
                # A final snapshot is only good while the source has stayed read-only since it
                # was taken; this one was not (a hand change?): take it again.
                self._delete_subvolume(os.path.join(dst_stage, FINAL), 'temporary snapshot')
                self._delete_subvolume(os.path.join(src_stage, FINAL), 'temporary snapshot')
            # Most of the change since phase 1 goes while users can still write.
            if not os.path.lexists(os.path.join(src_stage, FINAL)):
                if self.source_changed(source_pool, share):
                    seqs = self._increments(src_stage)
                    self._new_increment(source_pool, share, (max(seqs) if seqs else 0) + 1)
                self._catch_up(source_pool, destination_pool, share, 'switchover')
            if self._set_source_read_only(source_pool, share, True) or not stats.get('read_only_epoch'):
                stats['read_only_epoch'] = time.time()
                stats['read_only_at'] = now_iso()
            crash_point('btrfs source read-only')
            # Waits up to open_writers_wait seconds (0: refuses at once) for them to close.
            writers = openfiles.wait_closed(lambda: open_writers(source),
                                            share['migration'].get('open_writers_wait') or 0)
            if writers:
                raise StorageError('share %s is read-only now, but processes still hold its files open for writing '
                                   'and could change it after the last send: %s; stop them and complete again'
                                   % (name, '; '.join(writers)))
            seqs = self._increments(src_stage)
            final = os.path.join(src_stage, FINAL)
            if not self.is_subvolume(final):
                self._btrfs(['subvolume', 'snapshot', '-r', source, final],
                            'take the final snapshot of share %s' % name)
            flagged = fileflags.flagged_entries(final, stay_on=os.lstat(final).st_dev)
            if flagged:
                raise StorageError('share %s now holds immutable or append-only entries, attributes that btrfs send '
                                   'does not carry: %s; clear them (chattr -i -a) and complete again, or cancel and '
                                   'migrate host-assisted' % (name, ', '.join(sorted(fileflags.render(n) for n in flagged)[:10])))
            parent = os.path.join(src_stage, increment_name(max(seqs))) if seqs else None
            progress = self._read_progress(source_pool, share) or {}
            progress.update({'phase': 'final', 'bytes_sent': 0, 'send_seconds': 0, 'total_progress': 0})
            progress['bytes_total'] = self.estimate(final, parent)
            start = time.monotonic()
            sent = self._send('final', final, parent, dst_stage, progress, source_pool, share)
            stats['final_bytes'] = sent
            stats['final_seconds'] = round(time.monotonic() - start, 3)
            self._place(destination_pool, share)
        except Exception:
            if not self.migration_complete_done(source_pool, destination_pool, share):
                # Nothing switched: users get their writable share back at once.
                self._delete_subvolume(os.path.join(dst_stage, FINAL), 'temporary snapshot')
                self._delete_subvolume(os.path.join(src_stage, FINAL), 'temporary snapshot')
                self._set_source_read_only(source_pool, share, False)
                stats.pop('read_only_epoch', None)
            raise
        stats['read_only_seconds'] = round(time.time() - stats['read_only_epoch'], 3)
        stats['placed_at'] = now_iso()

    def _place(self, destination_pool, share):
        """Make the destination instance a writable snapshot of the final increment."""
        name = share['name']
        instance = self.instance_path(destination_pool, name)
        final = os.path.join(self.staging_dir(destination_pool, share), FINAL)
        if self._placed(destination_pool, share):
            return
        if os.path.lexists(instance):
            info = self.show(instance)
            if info is None or info.get('parent_uuid') or os.listdir(instance):
                raise StorageError('Failed to switch share %s: %s is not the empty instance this migration reserved'
                                   % (name, instance))
            self._delete_subvolume(instance, 'reserved instance of share %s' % name)
        self._makedirs(os.path.dirname(instance))
        self._btrfs(['subvolume', 'snapshot', final, instance],
                    'make %s the instance of share %s' % (instance, name))
        crash_point('btrfs destination placed')

    # -- cleanup and cancel ------------------------------------------------------------------
    def _remove_staging(self, pool, share):
        folder = self.staging_dir(pool, share)
        changed = False
        try:
            names = os.listdir(folder)
        except OSError:
            return False
        for entry in sorted(names):
            path = os.path.join(folder, entry)
            if self.is_subvolume(path):
                changed = self._delete_subvolume(path, 'temporary snapshot') or changed
            elif entry == PROGRESS_FILE or entry.startswith('.%s' % PROGRESS_FILE):
                os.unlink(path)
        try:
            os.rmdir(folder)
            changed = True
        except OSError as exc:
            raise StorageError('Failed to remove the staging folder %s: %s' % (folder, exc.strerror))
        return changed

    def migration_cleanup(self, source_pool, destination_pool, share):
        """After the switch and the deletion of the source: temporary snapshots and the source's
        share snapshots (each deleted only when its copy on the destination is complete)."""
        name = share['name']
        changed = self._remove_staging(destination_pool, share)
        changed = self._remove_staging(source_pool, share) or changed
        kept = []
        for snap in share.get('snapshots') or []:
            path = self.snapshot_path(source_pool, name, snap['name'])
            if not os.path.lexists(path):
                continue
            if self.received_ok(path, self.snapshot_path(destination_pool, name, snap['name'])):
                changed = self._delete_subvolume(path, 'snapshot %s of share %s' % (snap['name'], name)) or changed
            else:
                kept.append(path)
        self._rmdir_if_empty(self.snapshots_dir(source_pool, name))
        if kept:
            share['migration'].setdefault('btrfs', {})['kept_source_snapshots'] = kept
        return changed

    def migration_cancel(self, source_pool, destination_pool, share):
        """Remove what this migration received and every temporary snapshot; the source ends
        writable as it was (the manager removes the reserved destination instance)."""
        name = share['name']
        if (os.path.lexists(self.instance_path(source_pool, name))
                and self._placed(destination_pool, share)):
            raise StorageError('Cannot cancel the migration of share %s: the destination already serves it; '
                               'complete the migration' % name)
        self.stop_stray_transfers(source_pool, destination_pool, share)
        for snap in share.get('snapshots') or []:
            path = self.snapshot_path(destination_pool, name, snap['name'])
            if self.received_ok(self.snapshot_path(source_pool, name, snap['name']), path):
                self._delete_subvolume(path, 'received snapshot %s of share %s' % (snap['name'], name))
            elif self.is_subvolume(path) and not (self.show(path) or {}).get('received_uuid'):
                # A receive of this migration that was killed.
                if self.is_subvolume(self.snapshot_path(source_pool, name, snap['name'])):
                    self._delete_subvolume(path, 'partial snapshot %s of share %s' % (snap['name'], name))
        if str(destination_pool.ref) != str(source_pool.ref):
            self._rmdir_if_empty(self.snapshots_dir(destination_pool, name))
        self._remove_staging(destination_pool, share)
        self._remove_staging(source_pool, share)
        self._set_source_read_only(source_pool, share, False)
