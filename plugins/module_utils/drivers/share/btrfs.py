# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The btrfs share driver: pools are btrfs filesystems (or subvolumes), shares are subvolumes.

Layout of a pool (the same paths as the posix driver)::

    <pool>/shares/<share>                   the share instance: a subvolume
    <pool>/snapshots/<share>/<snapshot>     share snapshots: read-only snapshots of it
    <pool>/.mobility/btrfs/<migration id>/  temporary snapshots of a running migration, progress.json

Driver-assisted migration between two btrfs pools (any two btrfs filesystems of one host, or of
two hosts: then every operation on the destination goes through the destination backend's own
driver and transport, ``_side``, and the stream goes from one host straight to the other, or is
relayed by this process when the source backend asks for it, ``data_path``):

* phase 1 sends the share's snapshots in creation order (each with ``-p`` the one before), then a
  read-only temporary snapshot of the share (``inc-000001``, ``-p`` the newest share snapshot)
  with ``btrfs send | btrfs receive``. Users keep writing. Each rerun of phase 1 sends an
  increment (``inc-000002`` with ``-p inc-000001``, ...) when the share changed;
* phase 2 sets the source subvolume read-only, refuses while a process still holds a file of it
  open for writing, sends the last increment (``final``), and makes the destination instance a
  writable snapshot of what arrived. That is the point of no return; the manager then switches the
  export and deletes the source, and ``migration_cleanup`` removes the temporary snapshots and the
  source's share snapshots (their copies are verified on the destination).

The stream is measured where it passes (this process, or the helper on the sending host), and a
``utimes`` of the received root folder with the sent root's times goes in there before its closing
``end`` (see root_utimes_command).

Everything this driver needs to resume is on the filesystems: temporary snapshots are named from
the migration id and a sequence number, and a received subvolume counts only when its
``Received UUID`` is the one the sent subvolume carries. A receive that was killed leaves a
subvolume without it: it is deleted and sent again.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import re
import time

from ansible_collections.storage.mobility.plugins.module_utils.crash import crash_point, crash_wanted
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs_cli import (
    increment_name, increment_seq, parse_du_total, parse_dump_data_bytes, parse_subvolume_list, parse_subvolume_show,
    send_argv)
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs_stream import root_times_edit
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import CTIME_MARGIN, PosixShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.store import META_DIR, now_iso
from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import ATOMIC_TMP_PREFIX
from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import DirectStream, relay_pipe

BTRFS = 'btrfs'
# btrfs gives the root folder of every subvolume this inode number (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_INODE = 256
STAGING = 'btrfs'
PROGRESS_FILE = 'progress.json'
FINAL = 'final'
MIGRATION_ID_RE = re.compile(r'^[0-9A-Za-z][0-9A-Za-z-]{0,63}$')
PROGRESS_INTERVAL = 1.0
POINT_RE = re.compile(r'^rep-(\d{6})$')


class BtrfsShareDriver(PosixShareDriver):
    name = 'btrfs'
    # A replica instance is replaced by a snapshot of a complete point, never written in place.
    replica_updates_in_place = False
    # A replica pool on another host: its own driver works there, the stream goes as a migration's.
    replica_across_hosts = True
    # Set by context.py: pool -> the driver of its backend (the other side of a host-to-host move).
    peer_driver = None

    def _side(self, pool):
        """The btrfs driver that works on ``pool``'s host: this one when the pool is on this
        driver's host, else the driver of the pool's backend (its own transport)."""
        if pool.backend.host == self.backend.host:
            return self
        peer = self.peer_driver(pool) if self.peer_driver is not None else None
        if not isinstance(peer, BtrfsShareDriver):
            raise StorageError('the pool %s is on host %s, where this run has no btrfs driver' % (pool, pool.backend.host))
        return peer

    def reaches_host_of(self, pool):
        """True when a send from this driver's host can reach ``pool`` on another host: the run
        has a btrfs driver there and one of the two hosts is reached over ssh (two backends with
        transport local and different host names are not taken for two machines)."""
        transports = (getattr(self.backend, 'transport', None), getattr(pool.backend, 'transport', None))
        return self.peer_driver is not None and 'ssh' in transports

    def data_path(self, dst):
        """How a stream from this driver's host to the host of driver ``dst`` travels: ``same host``,
        ``direct`` (btrfs send here piped into ssh to the other host, DirectStream) or ``controller``
        (relayed by the controller, relay_pipe). ``data_path: direct`` (the default) of this
        (the source) backend takes the direct way when the destination host is reached over ssh; a
        destination on the controller's own machine receives what comes to the controller."""
        if dst is self:
            return 'same host'
        if getattr(self.backend, 'data_path', 'direct') == 'controller':
            return 'controller'
        if getattr(dst.backend, 'transport', None) == 'ssh':
            return 'direct'
        return 'to the controller'

    def route(self, destination_pool):
        """Which way the send stream goes to ``destination_pool`` (said in the progress and record)."""
        dst = self._side(destination_pool)
        how = self.data_path(dst)
        if how == 'same host':
            return 'on storage host %s (btrfs send | btrfs receive there)' % self.backend.host
        if how == 'direct':
            src, peer = self.backend.host, destination_pool.backend.host
            if getattr(self.backend, 'transport', None) != 'ssh':
                login = "this machine's ssh agent or default keys"
            elif (self.backend.ssh or {}).get('direct_key_file'):
                login = 'the key %s on %s' % (self.backend.ssh['direct_key_file'], src)
            else:
                login = "the operator's ssh agent forwarded to %s for the stream" % src
            return ('direct from %s to %s: btrfs send on %s piped into ssh to %s (logging in with %s), btrfs receive '
                    'on %s; the data does not pass through the controller' % (src, peer, src, peer, login, peer))
        if how == 'to the controller':
            return ('direct from %s to %s, the controller\'s own machine: btrfs send on %s over the run\'s ssh '
                    'connection, btrfs receive here' % (self.backend.host, destination_pool.backend.host,
                                                        self.backend.host))
        return ('relayed by the controller: btrfs send on %s, btrfs receive on %s, over the run\'s ssh connection '
                'to each' % (self.backend.host, destination_pool.backend.host))

    def route_facts(self, destination_pool):
        """What the record's ``migration.btrfs`` says of the way: ``route`` (a sentence) and
        ``data_path`` (``direct``, ``controller`` or ``same host``)."""
        how = self.data_path(self._side(destination_pool))
        return {'route': self.route(destination_pool), 'data_path': 'direct' if how == 'to the controller' else how}

    def check_direct(self, destination_pool, share_name):
        """Before anything changes: the source host can log in to the destination host (a direct
        stream), else an error naming both hosts and what failed."""
        dst = self._side(destination_pool)
        if self.data_path(dst) == 'direct':
            DirectStream(self.transport, dst.transport).probe(
                'check that share %s can be sent to %s' % (share_name, destination_pool))

    # -- basics ------------------------------------------------------------------------------
    def _btrfs(self, args, what, check=True):
        return self.transport.run(['btrfs'] + list(args), what, check=check)

    def _require_tool(self):
        if not self.transport.which('btrfs'):
            raise StorageError('The btrfs driver of backend %s needs the btrfs command: install btrfs-progs'
                               % self.backend.name)

    def _fs_problem(self, pool):
        """Why ``pool`` cannot be a btrfs pool, or None."""
        if not self.transport.is_dir(pool.path):
            return 'its path %s does not exist or is not a folder' % pool.path
        mount = self.transport.mount_of(pool.path)
        if mount['fstype'] != BTRFS:
            return ('its path %s is on a %s filesystem (%s mounted at %s), not btrfs; the btrfs driver needs '
                    'a btrfs filesystem or subvolume' % (pool.path, mount['fstype'], mount['source'], mount['mount_point']))
        return None

    def _require_pool(self, pool):
        self._require_tool()
        problem = self._fs_problem(pool)
        if problem:
            raise StorageError('Pool %s: %s' % (pool, problem))

    def is_subvolume(self, path):
        try:
            st = self.transport.lstat(path)
        except OSError:
            return False
        return self.transport.is_dir(path) and not self.transport.is_link(path) and st.ino == SUBVOLUME_INODE

    def show(self, path):
        """``btrfs subvolume show`` of ``path`` parsed, or None when it is not a subvolume."""
        if not self.is_subvolume(path):
            return None
        rc, out = self._btrfs(['subvolume', 'show', path], 'show subvolume %s' % path, check=False)[:2]
        if rc != 0:
            return None
        return parse_subvolume_show(out)

    def _delete_subvolume(self, path, what, commit=True):
        """Delete the subvolume ``path``; ``commit``: wait for the transaction that deletes it.
        Callers whose rerun deletes it again when a crash undid the deletion pass commit=False
        (the old points and the previous replica instance of a replica update)."""
        if not self.is_subvolume(path):
            return False
        args = ['subvolume', 'delete'] + (['--commit-after'] if commit else []) + [path]
        try:
            self._btrfs(args, 'delete %s (%s)' % (what, path))
        except CommandError:
            # Files inside do not stop a subvolume's deletion, but an immutable or append-only
            # attribute on its root folder does: clear it (a read-only snapshot first made
            # writable, it is being deleted anyway) and try again.
            if not self.transport.read_flags(path):
                raise
            if (self.show(path) or {}).get('readonly'):
                self._btrfs(['property', 'set', '-ts', path, 'ro', 'false'], 'make %s writable to delete it' % path)
            try:
                self.transport.set_flags(path, 0)
            except OSError as exc:
                raise StorageError('Failed to delete %s (%s): cannot clear its immutable or append-only attribute: %s'
                                   % (what, path, exc.strerror))
            self._btrfs(args, 'delete %s (%s)' % (what, path))
        return True

    def _makedirs(self, path, mode=0o755):
        try:
            self.transport.makedirs(path, mode)
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
        if self.transport.lexists(path):
            if self.is_subvolume(path) and not self.transport.listdir(path):
                return path
            raise InvalidRequest('Refusing to create share %s in pool %s: %s already exists and is not an empty '
                                 'btrfs subvolume (data not managed by this collection?)' % (share_name, pool, path))
        self._btrfs(['subvolume', 'create', path], 'create share %s in pool %s' % (share_name, pool))
        return path

    def delete_instance(self, pool, share_name):
        path = self.instance_path(pool, share_name)
        if not self.transport.lexists(path):
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
            if self.transport.lexists(final):
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
        if self.transport.lexists(path) and not self.is_subvolume(path):
            return super(BtrfsShareDriver, self).delete_snapshot(pool, share_name, snapshot_name)
        changed = self._delete_subvolume(path, 'snapshot %s of share %s' % (snapshot_name, share_name))
        self._rmdir_if_empty(self.snapshots_dir(pool, share_name))
        return changed

    def _rmdir_if_empty(self, path):
        try:
            if self.transport.is_dir(path) and not self.transport.listdir(path):
                self.transport.rmdir(path)
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
        if (destination_driver.name == self.name and source_pool.backend.host != destination_pool.backend.host
                and self.reaches_host_of(destination_pool)):
            # Two hosts: the stream goes from one to the other (see route).
            result = self.refused(None)
        else:
            result = self.refused(self.pair_problem(
                source_pool, destination_pool, destination_driver,
                '; btrfs send/receive needs btrfs pools on both sides',
                ' and both backends use transport local (declare the other host with transport ssh)'))
        if result['reason']:
            return result
        dst = self._side(destination_pool)
        for side in (self, dst):
            if not side.transport.which('btrfs'):
                result['reason'] = ('the btrfs command is missing on %s (install btrfs-progs)'
                                    % (side.transport.host if getattr(side.transport, 'host', None) else 'this machine'))
                return result
        for what, pool, side in (('source', source_pool, self), ('destination', destination_pool, dst)):
            problem = side._fs_problem(pool)
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
        flagged = self.transport.flagged_entries(source)
        if flagged:
            names = sorted(flagged)
            result['reason'] = ('share %s holds immutable or append-only entries, attributes that btrfs send does not '
                                'carry (a host copy does): %s%s'
                                % (share['name'], ', '.join('%s (%s)' % (fileflags.render(n), fileflags.describe(flagged[n]))
                                                            for n in names[:10]),
                                   ' and %d more' % (len(names) - 10) if len(names) > 10 else ''))
            return result
        # A direct stream: the source host must reach the destination host (refused here, before
        # anything changes, naming both hosts and the cause).
        self.check_direct(destination_pool, share['name'])
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
            names = self.transport.listdir(folder)
        except OSError:
            return []
        return sorted(s for s in (increment_seq(n) for n in names) if s is not None)

    @staticmethod
    def expected_received_uuid(info):
        """The UUID a receive of this subvolume records: its own received UUID when it has one."""
        return info.get('received_uuid') or info.get('uuid')

    def received_ok(self, sent_path, received_path, dst=None):
        """True when ``received_path`` (on the host of driver ``dst``, default this one) is a
        complete receive of ``sent_path``."""
        return self._received_info(sent_path, received_path, dst) is not None

    def _received_info(self, sent_path, received_path, dst=None):
        """The ``show`` of ``received_path`` when it is a complete receive of ``sent_path``, else None."""
        sent, got = self.show(sent_path), (dst or self).show(received_path)
        if (sent and got and got.get('received_uuid') and got['readonly']
                and got['received_uuid'] == self.expected_received_uuid(sent)):
            return got
        return None

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
    def _pipe(self, send_argv, recv_argv, what, on_chunk=None, capture=False, crash_event=None, edit=None, dst=None):
        """``send_argv | recv_argv`` through the transport (transport/base.py pipe), or from this
        host to the host of driver ``dst`` (ssh.py relay_pipe); return (bytes, receive stdout).
        Fault injection: when ``crash_event`` matches STORAGE_MOBILITY_CRASH_AFTER, the process
        dies after passing on half of the stream."""
        die = bool(crash_event and crash_wanted(crash_event))
        if dst is not None and dst is not self:
            if self.data_path(dst) == 'direct':
                return DirectStream(self.transport, dst.transport).pipe(
                    send_argv, recv_argv, what, on_chunk=on_chunk, capture=capture, edit=edit, die_midway=die)
            return relay_pipe(self.transport, dst.transport, send_argv, recv_argv, what, on_chunk=on_chunk,
                              capture=capture, edit=edit, die_midway=die)
        return self.transport.pipe(send_argv, recv_argv, what, on_chunk=on_chunk, capture=capture, edit=edit,
                                   die_midway=die)

    def estimate(self, path, parent=None):
        """Bytes of file data a send of ``path`` (against ``parent``) will carry: read from a
        ``--no-data`` send, which walks the metadata only."""
        out = self._pipe(send_argv(path, parent, no_data=True), ['btrfs', 'receive', '--dump'],
                         'estimate the send of %s' % path, capture=True)[1]
        return parse_dump_data_bytes(out)

    # -- progress ----------------------------------------------------------------------------
    def _read_progress(self, source_pool, share):
        try:
            data = json.loads(self.transport.read_bytes(self._progress_path(source_pool, share)).decode('utf-8'))
            return data if isinstance(data, dict) else None
        except (IOError, OSError, ValueError, StorageError):
            return None

    def _write_progress(self, source_pool, share, progress):
        path = self._progress_path(source_pool, share)
        if self.transport.is_dir(os.path.dirname(path)):
            progress['updated_at'] = now_iso()
            self.transport.write_json_atomic(path, progress)

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
    def _send(self, label, path, parent, dest_dir, progress, source_pool, share, dst=None):
        """Send ``path`` (``-p parent``) into ``dest_dir`` (on the host of driver ``dst``, default
        this one) unless a complete copy is already there; return the bytes sent."""
        dst = dst or self
        received = os.path.join(dest_dir, os.path.basename(path))
        if self.received_ok(path, received, dst):
            return 0
        if dst.transport.lexists(received):
            # A receive that was killed leaves a writable subvolume without a received UUID.
            if not dst.is_subvolume(received):
                raise StorageError('Failed to send %s: %s exists and is not a btrfs subvolume' % (label, received))
            got = dst.show(received) or {}
            sent = self.show(path) or {}
            if got.get('received_uuid') and got['received_uuid'] != self.expected_received_uuid(sent):
                raise StorageError('Failed to send %s: %s holds another subvolume (received UUID %s); remove it or '
                                   'cancel the migration' % (label, received, got['received_uuid']))
            dst._delete_subvolume(received, 'partial receive of %s' % label)
        dst._makedirs(dest_dir)
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
        sent = self._pipe(send_argv(path, parent), ['btrfs', 'receive', dest_dir], what, on_chunk,
                          crash_event='btrfs sending %s' % label, edit=root_times_edit(self.transport.lstat(path)),
                          dst=dst)[0]
        crash_point('btrfs received %s' % label)
        if not self.received_ok(path, received, dst):
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
        # Never 0 while bytes are still to send; unknown (None) once the estimate of the total is passed.
        progress['eta_seconds'] = (max(1.0, round((total - sent_total) / rate, 1)) if rate and total > sent_total
                                   else None)
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

    def stray_transfers(self, paths):
        """Pids of ``btrfs send`` / ``btrfs receive`` processes naming one of ``paths`` (exactly) in
        their arguments: left running by a run that died while they were joined to it."""
        return self.transport.pids_running('btrfs', ('send', 'receive'), paths)

    def stop_stray_transfers(self, source_pool, destination_pool, share):
        """Kill what a dead run of this migration left sending or receiving (we hold the share's
        lock, so no live run owns them) and wait until they are gone, before touching anything."""
        paths = self._transfer_paths(source_pool, destination_pool, share)
        sides = [self] + [d for d in (self._side(destination_pool),) if d is not self]
        pids = []
        for side in sides:
            found = side.stray_transfers(paths)
            for pid in found:
                side.transport.kill(pid)
            pids += found
        for _attempt in range(200):
            if not any(side.stray_transfers(paths) for side in sides):
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
        dst = self._side(destination_pool)
        self.stop_stray_transfers(source_pool, destination_pool, share)
        self._makedirs(src_stage, 0o700)
        dst._makedirs(dst_stage, 0o700)
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
        verified = [s for s in dst._increments(dst_stage)
                    if s in seqs and self.received_ok(os.path.join(src_stage, increment_name(s)),
                                                      os.path.join(dst_stage, increment_name(s)), dst)]
        for seq in seqs:
            older = [s for s in verified if s < seq]
            inc_parent = os.path.join(src_stage, increment_name(max(older))) if older else snapshot_parent
            steps.append(('increment %d' % seq, os.path.join(src_stage, increment_name(seq)), inc_parent, dst_stage))
        pending = [step for step in steps
                   if not self.received_ok(step[1], os.path.join(step[3], os.path.basename(step[1])), dst)]
        progress = self._read_progress(source_pool, share) or {}
        progress.update({'phase': phase, 'bytes_sent': 0, 'send_seconds': 0, 'started_at': now_iso(),
                         'objects_total': len(pending), 'total_progress': 0, 'route': self.route(destination_pool)})
        progress['bytes_total'] = sum(self.estimate(path, par) for label, path, par, dest_dir in pending)
        sent = 0
        for label, path, par, dest_dir in pending:
            sent += self._send(label, path, par, dest_dir, progress, source_pool, share, dst)
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
        dst = self._side(destination_pool)
        seqs = self._increments(src_stage)
        complete = [s for s in seqs
                    if self.received_ok(os.path.join(src_stage, increment_name(s)), os.path.join(dst_stage, increment_name(s)),
                                        dst)]
        if not complete:
            return
        keep = max(complete)
        for seq in sorted(set(seqs + dst._increments(dst_stage))):
            if seq < keep:
                dst._delete_subvolume(os.path.join(dst_stage, increment_name(seq)), 'temporary snapshot')
                self._delete_subvolume(os.path.join(src_stage, increment_name(seq)), 'temporary snapshot')

    # -- driver-assisted migration: phase 1 ---------------------------------------------------
    def migration_start(self, source_pool, destination_pool, share):
        dst = self._side(destination_pool)
        self._require_pool(source_pool)
        dst._require_pool(destination_pool)
        name = share['name']
        source = self.instance_path(source_pool, name)
        if not self.is_subvolume(source):
            raise StorageError('Failed to start migration of share %s: %s is not a btrfs subvolume' % (name, source))
        problems = []
        for label, path, dest_dir in self._snapshot_plan(source_pool, destination_pool, share):
            target = os.path.join(dest_dir, os.path.basename(path))
            if dst.transport.lexists(target) and not self.received_ok(path, target, dst):
                got = dst.show(target) or {}
                # A killed receive of this migration is redone; anything else is in the way.
                if got.get('received_uuid') or not dst.is_subvolume(target):
                    problems.append('%s already exists' % target)
        if problems:
            raise StorageError('Failed to start migration of share %s to %s: %s'
                               % (name, destination_pool, '; '.join(problems)))
        self._makedirs(self.staging_dir(source_pool, share), 0o700)
        dst._makedirs(self.staging_dir(destination_pool, share), 0o700)
        share['migration'].setdefault('btrfs', {}).update(self.route_facts(destination_pool))
        if self._read_progress(source_pool, share) is None:
            self._write_progress(source_pool, share, {'phase': 'initial', 'total_progress': 0, 'bytes_sent': 0,
                                                      'bytes_total': None, 'started_at': now_iso(),
                                                      'route': self.route(destination_pool)})

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
        self._side(destination_pool)._delete_subvolume(os.path.join(dst_stage, FINAL), 'temporary snapshot')
        self._delete_subvolume(os.path.join(src_stage, FINAL), 'temporary snapshot')
        self._set_source_read_only(source_pool, share, False)
        if self.source_changed(source_pool, share):
            seqs = self._increments(src_stage)
            self._new_increment(source_pool, share, (max(seqs) if seqs else 0) + 1)
        sent, any_sent = self._catch_up(source_pool, destination_pool, share, 'incremental')
        return any_sent

    # -- driver-assisted migration: phase 2 ---------------------------------------------------
    def open_writers(self, path):
        """Processes holding a file of the subvolume at ``path`` open for writing (or mapped shared
        and writable): a list of ``pid (command): file``. btrfs lets a descriptor opened before the
        subvolume became read-only keep writing, so the switchover must know about these. The
        subvolume has a device of its own, so every path into it counts (the export's too)."""
        return [openfiles.describe([item]) for item in self.transport.open_writers([path], whole_device=True)]

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
        dst = self._side(destination_pool)
        if not dst.is_subvolume(self.instance_path(destination_pool, name)):
            return False
        if not self.transport.lexists(self.instance_path(source_pool, name)):
            return True
        return dst._placed(destination_pool, share)

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
        dst = self._side(destination_pool)
        stats = share['migration'].setdefault('btrfs', {})
        stats.update(self.route_facts(destination_pool))
        self.stop_stray_transfers(source_pool, destination_pool, share)
        try:
            if self.transport.lexists(os.path.join(src_stage, FINAL)) and not (self.show(source) or {}).get('readonly'):
                # A final snapshot is only good while the source has stayed read-only since it
                # was taken; this one was not (a hand change?): take it again.
                dst._delete_subvolume(os.path.join(dst_stage, FINAL), 'temporary snapshot')
                self._delete_subvolume(os.path.join(src_stage, FINAL), 'temporary snapshot')
            # Most of the change since phase 1 goes while users can still write.
            if not self.transport.lexists(os.path.join(src_stage, FINAL)):
                if self.source_changed(source_pool, share):
                    seqs = self._increments(src_stage)
                    self._new_increment(source_pool, share, (max(seqs) if seqs else 0) + 1)
                self._catch_up(source_pool, destination_pool, share, 'switchover')
            if self._set_source_read_only(source_pool, share, True) or not stats.get('read_only_epoch'):
                stats['read_only_epoch'] = time.time()
                stats['read_only_at'] = now_iso()
            crash_point('btrfs source read-only')
            # Waits up to open_writers_wait seconds (0: refuses at once) for them to close.
            writers = openfiles.wait_closed(lambda: self.open_writers(source),
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
            flagged = self.transport.flagged_entries(final)
            if flagged:
                raise StorageError('share %s now holds immutable or append-only entries, attributes that btrfs send '
                                   'does not carry: %s; clear them (chattr -i -a) and complete again, or cancel and '
                                   'migrate host-assisted' % (name, ', '.join(sorted(fileflags.render(n) for n in flagged)[:10])))
            parent = os.path.join(src_stage, increment_name(max(seqs))) if seqs else None
            progress = self._read_progress(source_pool, share) or {}
            progress.update({'phase': 'final', 'bytes_sent': 0, 'send_seconds': 0, 'total_progress': 0})
            progress['bytes_total'] = self.estimate(final, parent)
            start = time.monotonic()
            sent = self._send('final', final, parent, dst_stage, progress, source_pool, share, dst)
            stats['final_bytes'] = sent
            stats['final_seconds'] = round(time.monotonic() - start, 3)
            dst._place(destination_pool, share)
        except Exception:
            if not self.migration_complete_done(source_pool, destination_pool, share):
                # Nothing switched: users get their writable share back at once.
                dst._delete_subvolume(os.path.join(dst_stage, FINAL), 'temporary snapshot')
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
        if self.transport.lexists(instance):
            info = self.show(instance)
            if info is None or info.get('parent_uuid') or self.transport.listdir(instance):
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
            names = self.transport.listdir(folder)
        except OSError:
            return False
        for entry in sorted(names):
            path = os.path.join(folder, entry)
            if self.is_subvolume(path):
                changed = self._delete_subvolume(path, 'temporary snapshot') or changed
            elif entry == PROGRESS_FILE or entry.startswith(('.%s' % PROGRESS_FILE, ATOMIC_TMP_PREFIX)):
                # The progress file, or what a writer killed while it wrote a file here left.
                self.transport.unlink(path)
        try:
            self.transport.rmdir(folder)
            changed = True
        except OSError as exc:
            raise StorageError('Failed to remove the staging folder %s: %s' % (folder, exc.strerror))
        return changed

    def migration_cleanup(self, source_pool, destination_pool, share):
        """After the switch and the deletion of the source: temporary snapshots and the source's
        share snapshots (each deleted only when its copy on the destination is complete)."""
        name = share['name']
        dst = self._side(destination_pool)
        changed = dst._remove_staging(destination_pool, share)
        changed = self._remove_staging(source_pool, share) or changed
        kept = []
        for snap in share.get('snapshots') or []:
            path = self.snapshot_path(source_pool, name, snap['name'])
            if not self.transport.lexists(path):
                continue
            if self.received_ok(path, self.snapshot_path(destination_pool, name, snap['name']), dst):
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
        dst = self._side(destination_pool)
        if (self.transport.lexists(self.instance_path(source_pool, name))
                and dst._placed(destination_pool, share)):
            raise StorageError('Cannot cancel the migration of share %s: the destination already serves it; '
                               'complete the migration' % name)
        self.stop_stray_transfers(source_pool, destination_pool, share)
        for snap in share.get('snapshots') or []:
            path = self.snapshot_path(destination_pool, name, snap['name'])
            if self.received_ok(self.snapshot_path(source_pool, name, snap['name']), path, dst):
                dst._delete_subvolume(path, 'received snapshot %s of share %s' % (snap['name'], name))
            elif dst.is_subvolume(path) and not (dst.show(path) or {}).get('received_uuid'):
                # A receive of this migration that was killed.
                if self.is_subvolume(self.snapshot_path(source_pool, name, snap['name'])):
                    dst._delete_subvolume(path, 'partial snapshot %s of share %s' % (snap['name'], name))
        if str(destination_pool.ref) != str(source_pool.ref):
            dst._rmdir_if_empty(self.snapshots_dir(destination_pool, name))
        dst._remove_staging(destination_pool, share)
        self._remove_staging(source_pool, share)
        self._set_source_read_only(source_pool, share, False)

    # -- replication (docs/replication.md) -----------------------------------------------------
    # Points are read-only snapshots ``<pool>/.mobility/replication/<share id>/rep-NNNNNN``: taken
    # on the active side, received on the replica's. A replica instance is a read-only snapshot of
    # the newest point it received; the next update sends ``-p`` the point both sides hold
    # (``replica['base']``), and so does the first update after a promotion, the other way.
    @staticmethod
    def point_name(seq):
        return 'rep-%06d' % seq

    def _points(self, folder):
        try:
            names = self.transport.listdir(folder)
        except OSError:
            return []
        return sorted(int(m.group(1)) for m in (POINT_RE.match(n) for n in names) if m)

    def replica_prepare(self, active_pool, replica_pool, share):
        self._require_pool(replica_pool)
        path = self.instance_path(replica_pool, share['name'])
        if self.transport.lexists(path):
            if not (self.is_subvolume(path) and not self.transport.listdir(path)):
                raise InvalidRequest('Cannot add a replica of share %s in pool %s: %s already exists and is not an '
                                     'empty subvolume' % (share['name'], replica_pool, path))
        return path

    def replica_update(self, active_pool, replica_pool, share, replica):
        """Snapshot the active instance read-only (the point), ``btrfs send -p <base>`` it into
        the replica pool, check its received UUID, and make the replica instance a read-only
        snapshot of it. A replica pool on another host is worked on by that host's driver
        (``_side``), and the stream goes as a migration's does (``data_path``)."""
        name = share['name']
        dst = self._side(replica_pool)
        self._require_pool(active_pool)
        dst._require_pool(replica_pool)
        if dst is not self:
            self.check_direct(replica_pool, name)
        self._recover_placement(active_pool, share)
        dst._recover_placement(replica_pool, share)
        source = self.instance_path(active_pool, name)
        if not self.is_subvolume(source):
            raise StorageError('Failed to update the replica of share %s: its active instance %s is not a subvolume'
                               % (name, source))
        here, there = self.replication_dir(active_pool, share), self.replication_dir(replica_pool, share)
        self._makedirs(here, 0o700)
        dst._makedirs(there, 0o700)
        start = time.monotonic()
        seq = max(self._points(here) + dst._points(there) + [int(replica.get('base') or 0)]) + 1
        point = os.path.join(here, self.point_name(seq))
        source_time = time.time()
        self._btrfs(['subvolume', 'snapshot', '-r', source, point], 'take replication point %d of share %s' % (seq, name))
        # What changed on the active after the point has a later change time than the start of
        # the snapshot command (which commits a transaction: a write can land after the snapshot
        # and before the command returns). What changed between that start and the snapshot is
        # in the point, and replica_divergence leaves out what the point holds as it is.
        quiet = source_time - CTIME_MARGIN
        # The newest point both sides hold: the replica's base, or after a forced promotion a
        # point that both the new active and this replica received from the old active.
        parent = self._common_point(here, there, exclude=seq, dst=dst)
        full_reason = None if parent else (
            'no replication point of share %s is held by both pool %s and pool %s' % (name, active_pool, replica_pool))
        # The bases of the other secondaries go first (each a small increment in the chain), so
        # that this replica holds them: after a forced promotion of one of them, the others'
        # next updates from it start from a point both hold. Then the share's snapshots the
        # replica lacks, each sent against the previous link; the new point follows them.
        sent, parent = self._carry_points_chain(active_pool, replica_pool, share, self._other_bases(share, replica),
                                                parent, dst)
        wanted = self.replica_snapshot_names(active_pool, share)
        more, parent = self._carry_snapshots_chain(active_pool, replica_pool, share, wanted, parent, dst)
        sent += more
        how = ' (from %s)' % os.path.basename(parent) if parent else ' (full)'
        what = 'send point %d of share %s to pool %s%s' % (seq, name, replica_pool, how)
        sent += self._pipe(send_argv(point, parent), ['btrfs', 'receive', there], what,
                           edit=root_times_edit(self.transport.lstat(point)),
                           crash_event='btrfs sending replica point', dst=dst)[0]
        received = os.path.join(there, self.point_name(seq))
        got = self._received_info(point, received, dst)
        if got is None:
            raise StorageError('Failed to %s: the receive ended but %s is not a complete copy' % (what, received))
        crash_point('btrfs received replica point')
        # The point was received just now under a new number: the instance is not a snapshot of
        # it yet (a rerun after a crash takes the next number), and its show is the one above.
        dst._place_replica(replica_pool, share, received, got=got)
        # The record that names this point as the replica's base is written next (an fsync'd file):
        # commit the receive and the placement first, so that a machine crash cannot leave a record
        # naming a point the filesystem lost.
        dst._btrfs(['filesystem', 'sync', replica_pool.path], 'sync pool %s after updating a replica of share %s'
                   % (replica_pool, name))
        replica['base'] = seq
        replica['base_time'] = time.time() + CTIME_MARGIN
        return {'bytes': sent, 'files': None, 'passes': 1, 'verified': True, 'incremental': not full_reason,
                'full_send_reason': full_reason,
                'source_time': source_time, 'source_quiet_until': quiet,
                'seconds': round(time.monotonic() - start, 3),
                'snapshots': dst.replica_prune_snapshots(replica_pool, share, wanted)}

    def replica_forward_points(self, active_pool, replica_pool, share, replica, seqs):
        """Send each point of ``seqs`` the replica lacks, ``-p`` its own base point: the received
        copy has the same received UUID as the other secondary's, so that after the promotion
        ``btrfs send -p`` it from the new active is an increment the other secondary can receive."""
        dst = self._side(replica_pool)
        here, there = self.replication_dir(active_pool, share), self.replication_dir(replica_pool, share)
        parent = os.path.join(here, self.point_name(int(replica['base']))) if replica.get('base') else None
        if parent and not self.is_subvolume(parent):
            parent = None
        changed = False
        for seq in seqs:
            source, received = os.path.join(here, self.point_name(seq)), os.path.join(there, self.point_name(seq))
            if not self.is_subvolume(source) or self.received_ok(source, received, dst):
                continue
            if dst.transport.lexists(received):
                dst._delete_subvolume(received, 'partial receive of point %d of share %s' % (seq, share['name']))
            what = 'send point %d of share %s to pool %s (the base of another replica)' % (
                seq, share['name'], replica_pool)
            self._pipe(send_argv(source, parent), ['btrfs', 'receive', there], what,
                       edit=root_times_edit(self.transport.lstat(source)), dst=dst)
            if not self.received_ok(source, received, dst):
                raise StorageError('Failed to %s: the receive ended but %s is not a complete copy' % (what, received))
            changed = True
        return changed

    @staticmethod
    def _identity(info):
        """What a point is known by on every filesystem it was sent to: the UUID of the subvolume
        first taken (a received copy's received UUID), or None for a receive cut short."""
        if not info or not info.get('readonly'):
            return None
        return info.get('received_uuid') or info.get('uuid')

    def _common_point(self, here, there, exclude=None, dst=None):
        """The newest point of ``here`` (this side's folder of points) whose copy in ``there``
        came from the same subvolume (same received UUID, or the received UUID of one is the
        UUID of the other), or None. A point named alike on both sides but of another origin
        (a point a promoted replica took after the old active took one of that number) is no
        parent: the receive would not find it, or find another. ``there`` is on the host of
        driver ``dst`` (default this one)."""
        dst = dst or self
        for seq in sorted(set(self._points(here)) & set(dst._points(there)), reverse=True):
            if seq == exclude:
                continue
            mine = self._identity(self.show(os.path.join(here, self.point_name(seq))))
            if mine and mine == self._identity(dst.show(os.path.join(there, self.point_name(seq)))):
                return os.path.join(here, self.point_name(seq))
        return None

    @staticmethod
    def _other_bases(share, replica):
        """The base points of the share's other secondaries, oldest first."""
        return sorted(set(int(r['base']) for r in share.get('replicas') or []
                          if r['id'] != replica['id'] and r.get('replica_state') != 'active' and r.get('base')))

    def _carry_points_chain(self, active_pool, replica_pool, share, seqs, parent, dst=None):
        """``btrfs send -p <parent>`` each point of ``seqs`` this side holds and the replica
        lacks into the replica's folder of points (on the host of driver ``dst``); returns (bytes
        sent, the parent for the next send). A point this side no longer holds is skipped."""
        dst = dst or self
        here, there = self.replication_dir(active_pool, share), self.replication_dir(replica_pool, share)
        sent = 0
        for seq in seqs:
            source, received = os.path.join(here, self.point_name(seq)), os.path.join(there, self.point_name(seq))
            if not self.is_subvolume(source) or not self._identity(self.show(source)):
                continue
            if self.received_ok(source, received, dst):
                continue
            if dst.transport.lexists(received):
                if self._identity(dst.show(received)):
                    # A complete point of another origin under that number: left alone (the
                    # replica's own chain may use it); this base is not carried.
                    continue
                dst._delete_subvolume(received, 'partial receive of point %d of share %s' % (seq, share['name']))
            what = 'send point %d of share %s to pool %s (the base of another replica)%s' % (
                seq, share['name'], replica_pool, ' (from %s)' % os.path.basename(parent) if parent else ' (full)')
            sent += self._pipe(send_argv(source, parent), ['btrfs', 'receive', there], what,
                               edit=root_times_edit(self.transport.lstat(source)),
                               crash_event='btrfs sending replica base point', dst=dst)[0]
            if not self.received_ok(source, received, dst):
                raise StorageError('Failed to %s: the receive ended but %s is not a complete copy' % (what, received))
            crash_point('btrfs received replica base point')
            parent = source
        return sent, parent

    def replica_holds_snapshot(self, pool, share_name, snapshot_name):
        # A receive cut short leaves a writable subvolume: only a read-only one is complete.
        info = self.show(self.snapshot_path(pool, share_name, snapshot_name))
        return bool(info and info['readonly'])

    def _carry_snapshots_chain(self, active_pool, replica_pool, share, wanted, parent, dst=None):
        """``btrfs send -p <parent>`` each snapshot the replica lacks into its snapshots folder
        (the received subvolume is the replica's snapshot, at the same path as on the active; on
        the host of driver ``dst``); returns (bytes sent, the parent for the next send)."""
        dst = dst or self
        name = share['name']
        sent = 0
        for snap in wanted:
            source = self.snapshot_path(active_pool, name, snap)
            received = self.snapshot_path(replica_pool, name, snap)
            if dst.replica_holds_snapshot(replica_pool, name, snap):
                continue
            if dst.transport.lexists(received):
                dst._delete_subvolume(received, 'partial receive of snapshot %s of share %s' % (snap, name))
            dst._makedirs(self.snapshots_dir(replica_pool, name))
            what = 'send snapshot %s of share %s to pool %s%s' % (
                snap, name, replica_pool, ' (from %s)' % os.path.basename(parent) if parent else ' (full)')
            sent += self._pipe(send_argv(source, parent), ['btrfs', 'receive', self.snapshots_dir(replica_pool, name)],
                               what, edit=root_times_edit(self.transport.lstat(source)),
                               crash_event='btrfs sending replica snapshot %s' % snap, dst=dst)[0]
            if not self.received_ok(source, received, dst):
                raise StorageError('Failed to %s: the receive ended but %s is not a complete copy' % (what, received))
            crash_point('btrfs received replica snapshot %s' % snap)
            parent = source
        return sent, parent

    def _recover_placement(self, pool, share):
        """A run killed while placing a replica (between moving the old instance aside and
        renaming the new one into place) left no instance: put the old one back, it is the point
        the record names. Every replica step on the pool starts with this."""
        instance = self.instance_path(pool, share['name'])
        old = os.path.join(os.path.dirname(instance), '.%s.replica-previous' % share['name'])
        if not self.transport.lexists(instance) and self.is_subvolume(old):
            self.transport.rename(old, instance)
            return True
        return False

    def _place_replica(self, pool, share, received, got=None):
        """Make the replica instance a read-only snapshot of ``received`` (the old one goes).
        ``got``: the ``show`` of a point received in this run (no instance can come from it
        yet: no check, one ``btrfs subvolume show`` fewer each); without it, an instance already
        taken from ``received`` is kept."""
        name = share['name']
        instance = self.instance_path(pool, name)
        if got is None:
            got = self.show(received) or {}
            current = self.show(instance)
            if current and got.get('uuid') and current.get('parent_uuid') == got['uuid']:
                return False
        # A read-only subvolume can be renamed within its folder only: both stay beside it.
        folder = os.path.dirname(instance)
        self._makedirs(folder)
        fresh = os.path.join(folder, '.%s.replica-next' % name)
        self._sweep_retired(folder, name)
        self._delete_subvolume(fresh, 'unplaced replica instance')
        self._btrfs(['subvolume', 'snapshot', '-r', received, fresh], 'make the next replica instance of share %s' % name)
        old = os.path.join(folder, '.%s.replica-previous' % name)
        # No commit wait for the old instance: a deletion a crash undoes leaves it beside the
        # instance, and the next placement deletes it first (or _recover_placement puts it back).
        self._delete_subvolume(old, 'previous replica instance', commit=False)
        if self.transport.lexists(instance):
            if not self.is_subvolume(instance):
                raise StorageError('Failed to place the replica of share %s: %s is not a subvolume' % (name, instance))
            self.transport.rename(instance, old)
            crash_point('btrfs replica instance moved aside')
        self.transport.rename(fresh, instance)
        self._retire(old, '.%s.replica-retired-%d' % (name, time.time_ns()))
        return True

    def _retired(self, folder, name):
        """The retired replica instances of share ``name`` left in ``folder`` (see _retire)."""
        prefix = '.%s.replica-retired-' % name
        try:
            names = self.transport.listdir(folder)
        except OSError:
            return []
        return [os.path.join(folder, entry) for entry in sorted(names) if entry.startswith(prefix)]

    def _retire(self, old, retired_name):
        """Delete the previous replica instance ``old`` in the background, once the new one is in place.

        Deleting a subvolume whose entries the kernel has cached (an old active share in use, a fully
        received first point) takes the time to drop them: 0.46 s for 50,000 files here, most of a
        failback's cost above an update's. The instance is renamed aside (``retired_name``, in its
        folder: a read-only subvolume can be renamed within its folder only) and a detached ``btrfs
        subvolume delete`` removes it. Nothing names it any more, so a deletion that did not happen (a
        crash, a failure) only leaves it there: the next placement and the replica's deletion delete
        what is left (_sweep_retired)."""
        if not self.is_subvolume(old):
            return
        folder = os.path.dirname(old)
        retired = os.path.join(folder, retired_name)
        self.transport.rename(old, retired)
        crash_point('btrfs replica instance retired')
        self.transport.run(['setsid', '-f', 'sh', '-c', 'exec btrfs subvolume delete -- "$1" </dev/null >/dev/null 2>&1',
                            'sh', retired], 'delete the retired replica instance %s in the background' % retired)

    def _sweep_retired(self, folder, name):
        """Delete what background deletions of retired instances left (a crash, a failure); True when any.
        One still being deleted in the background is skipped (its deletion fails here: it goes on there)."""
        changed = False
        for path in self._retired(folder, name):
            try:
                changed = self._delete_subvolume(path, 'retired replica instance', commit=False) or changed
            except (CommandError, StorageError, OSError):
                continue
        return changed

    def replica_retain(self, pool, share, keep):
        # An old point whose deletion a crash undoes is deleted by the next update's retain: no
        # commit wait (each one costs a transaction commit, most of an update's fixed cost).
        folder = self.replication_dir(pool, share)
        changed = False
        for seq in self._points(folder):
            if seq not in keep:
                changed = self._delete_subvolume(os.path.join(folder, self.point_name(seq)),
                                                 'replication point %d of share %s' % (seq, share['name']),
                                                 commit=False) or changed
        return changed

    def replica_delete(self, pool, share):
        changed = self.delete_instance(pool, share['name'])
        changed = self.replica_delete_snapshots(pool, share) or changed
        folder = os.path.dirname(self.instance_path(pool, share['name']))
        for leftover in ['.%s.replica-previous' % share['name'], '.%s.replica-next' % share['name']] \
                + self._retired(folder, share['name']):
            changed = self._delete_subvolume(os.path.join(folder, leftover), 'unplaced replica instance') or changed
        folder = self.replication_dir(pool, share)
        try:
            names = self.transport.listdir(folder)
        except OSError:
            names = []
        for entry in names:
            path = os.path.join(folder, entry)
            if self.is_subvolume(path):
                changed = self._delete_subvolume(path, 'replication point %s of share %s' % (entry, share['name'])) or changed
            else:
                self.remove_tree(path, 'delete %s' % path)
                changed = True
        self._rmdir_if_empty(folder)
        return changed

    def replica_set_read_only(self, pool, share, read_only):
        self._recover_placement(pool, share)
        path = self.instance_path(pool, share['name'])
        info = self.show(path)
        if info is None or info['readonly'] == read_only:
            return False
        self._btrfs(['property', 'set', '-f', '-ts', path, 'ro', 'true' if read_only else 'false'],
                    'make the instance of share %s in pool %s %s'
                    % (share['name'], pool, 'read-only' if read_only else 'writable'))
        return True

    # The fence is the subvolume's ``ro`` property (change times stay); a failback's update
    # replaces the instance with a read-only snapshot of the received point: nothing to lift.
    replica_fence_marks_entries = False

    def replica_fence(self, pool, share, fenced):
        if not fenced:
            return False
        return self.replica_set_read_only(pool, share, True)

    def replica_open_writers(self, pool, share):
        # A descriptor opened before the subvolume became read-only keeps writing (see open_writers).
        return self.open_writers(self.instance_path(pool, share['name']))

    def replica_divergence(self, pool, share, replica):
        """The posix answer (change time after the last replicated point, with a margin for the
        kernel's coarse clock), without the entries that are the same in the base point this
        pool holds: an entry written in the margin before the point has the point's change time."""
        self._recover_placement(pool, share)
        found = super(BtrfsShareDriver, self).replica_divergence(pool, share, replica)
        if not found or not replica.get('base'):
            return found
        point = os.path.join(self.replication_dir(pool, share), self.point_name(int(replica['base'])))
        if not self._identity(self.show(point)):
            return found
        instance = self.instance_path(pool, share['name'])
        kept = []
        for rel in found:
            try:
                now, then = self.transport.lstat(os.path.join(instance, rel)), self.transport.lstat(os.path.join(point, rel))
            except OSError:
                kept.append(rel)
                continue
            if now.ctime_ns != then.ctime_ns:
                kept.append(rel)
        return kept

    def replica_keep(self, pool, share, label):
        self._recover_placement(pool, share)
        folder = self.replication_dir(pool, share)
        final = os.path.join(folder, 'kept-%s' % label)
        if not self.is_subvolume(final):
            self._makedirs(folder, 0o700)
            self._btrfs(['subvolume', 'snapshot', '-r', self.instance_path(pool, share['name']), final],
                        'keep share %s in pool %s as %s' % (share['name'], pool, final))
        return final
