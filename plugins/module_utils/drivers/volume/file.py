# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``file`` volume driver: a volume is a sparse image file in a pool folder (docs/volumes.md).

A pool is a folder; volume ``<id>`` is the image ``<pool>/volume-<id>`` in format ``raw`` or
``qcow2``, made by ``qemu-img create`` (sparse: nothing is written on creation). An attachment is a
``qemu-storage-daemon`` exporting the image as a writable FUSE file, the path a consumer opens.
A driver-assisted migration renames the image within one filesystem; a host copy runs
``qemu-img convert -p -n -S 4k`` detached (holes kept, progress in its log) into a temporary
image in the destination pool, verified with ``qemu-img compare`` before it takes the volume's
place. Everything goes through the backend's transport (commands are argv lists).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import re
import time

from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume import qmp
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.base import VolumeDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError, StorageError

GIB = 1024 ** 3
FORMATS = ('raw', 'qcow2')
#: program -> the Debian package that ships it (named when it is missing)
TOOLS = {'qemu-img': 'qemu-utils', 'qemu-io': 'qemu-utils', 'qemu-storage-daemon': 'qemu-system-common',
         'fusermount3': 'fuse3', 'setsid': 'util-linux'}
#: Starts argv 3.. detached in its own session; its output goes to $1, its exit status to $2
#: (written atomically when it ends). A constant script: the argv travel as positional arguments.
DETACH_SCRIPT = ('log=$1; rc=$2; shift 2; echo $$; exec </dev/null >"$log" 2>&1; "$@"; '
                 'echo $? >"$rc.tmp" && mv -f "$rc.tmp" "$rc"')
_PROGRESS_RE = re.compile(r'\((\d+(?:\.\d+)?)/100%\)')
#: seconds the storage daemon gets to flush and exit on SIGTERM before it is killed
DAEMON_STOP_SECONDS = 30
#: where the pull daemon's sockets live (a unix socket path has at most 107 bytes, pool paths may be longer)
SOCKET_DIR = '/run/storage-mobility'
#: the block-stream job of an asynchronous migration
PULL_JOB = 'pull'
#: the cluster size of the qcow2 destination of a pull: block-stream copies a cluster at a time and allocates
#: each; with qemu-img's default (64 KiB) the job ran at about 0.6 of a bare copy's speed here, with 256 KiB
#: at about 1.2 (docs/performance.md). A write smaller than a cluster into one not pulled yet reads the rest
#: of it from the source first, so larger clusters cost the writer more.
PULL_CLUSTER = 256 * 1024
#: at most this many of the source's zero ranges (the largest) are marked in the destination before a pull
PULL_ZERO_RANGES = 4096


class FileVolumeDriver(VolumeDriver):
    """Volumes as image files in pool folders."""

    name = 'file'

    def __init__(self, backend, transport):
        super(FileVolumeDriver, self).__init__(backend, transport)
        #: (image, size, modification time) -> the image's holes (source_holes)
        self._holes = {}

    # -- helpers -----------------------------------------------------------------------------
    def require(self, *programs):
        """Refuse, naming the package, when a program the request needs is not installed."""
        missing = [p for p in programs if not self.transport.which(p)]
        if missing:
            raise StorageError('Backend %s (driver file) needs %s on host %s: install %s (as root: apt-get install %s)'
                               % (self.backend.name, ', '.join(missing), self.backend.host,
                                  ', '.join(TOOLS[p] for p in missing), ' '.join(TOOLS[p] for p in missing)))

    def image_path(self, pool, volume):
        return os.path.join(pool.path, 'volume-%s' % volume['id'])

    def copy_target_path(self, pool, volume):
        """The image a host copy writes into, in the destination pool, until it is verified."""
        return os.path.join(pool.path, '.volume-%s.migrating' % volume['id'])

    def _img(self, argv, what, check=True):
        self.require('qemu-img')
        return self.transport.run(['qemu-img'] + argv, what, check=check)

    def image_info(self, path):
        """qemu-img info of ``path`` (the ``-U`` share mode reads an image that a daemon holds)."""
        _rc, out, _err = self._img(['info', '-U', '--output=json', path], 'read image %s' % path)
        return json.loads(out)

    # -- pools -------------------------------------------------------------------------------
    def get_pool_stats(self, pool):
        st = self.transport.statvfs(pool.path)
        return {'pool_name': str(pool.ref), 'total_capacity_gb': st['f_blocks'] * st['f_frsize'] // GIB,
                'free_capacity_gb': st['f_bavail'] * st['f_frsize'] // GIB, 'thin_provisioning_support': True,
                'thick_provisioning_support': False, 'formats': list(FORMATS)}

    def same_filesystem(self, source_pool, destination_pool):
        """True when both pools' folders are on one filesystem (a rename moves an image)."""
        return self.transport.stat(source_pool.path).dev == self.transport.stat(destination_pool.path).dev

    # -- volumes -----------------------------------------------------------------------------
    def create_volume(self, pool, volume):
        path = self.image_path(pool, volume)
        if self.transport.exists(path):
            return False
        partial = os.path.join(pool.path, '.volume-%s.creating' % volume['id'])
        self._img(['create', '-q', '-f', volume['format'], partial, '%dG' % volume['size']],
                  'create volume %s' % volume['name'])
        self.transport.rename(partial, path)
        self.transport.fsync_dir(pool.path)
        return True

    def delete_volume(self, pool, volume):
        removed = False
        for path in (self.image_path(pool, volume), os.path.join(pool.path, '.volume-%s.creating' % volume['id'])):
            removed = self.remove_file(path) or removed
        return removed

    def remove_file(self, path):
        """Remove ``path``; False when it was already gone."""
        try:
            self.transport.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise StorageError('Failed to remove %s: %s' % (path, exc.strerror))
            return False
        self.transport.fsync_dir(os.path.dirname(path))
        return True

    def extend_volume(self, pool, volume, new_size):
        path = self.image_path(pool, volume)
        if self.image_info(path)['virtual-size'] >= new_size * GIB:
            return False
        self._img(['resize', '-q', '-f', volume['format'], path, '%dG' % new_size],
                  'extend volume %s to %d GiB' % (volume['name'], new_size))
        return True

    def volume_info(self, pool, volume):
        path = self.image_path(pool, volume)
        if not self.transport.exists(path):
            return None
        info = self.image_info(path)
        return {'path': path, 'virtual_size': info.get('virtual-size'), 'allocated_bytes': info.get('actual-size'),
                'format': info.get('format')}

    # -- attachments -------------------------------------------------------------------------
    def attachment_paths(self, pool, volume):
        folder = os.path.join(pool.path, '.mobility', 'attachments')
        return folder, os.path.join(folder, 'volume-%s' % volume['id']), os.path.join(folder, 'volume-%s.pid' % volume['id'])

    def daemon_pids(self, pidfile):
        """The storage daemons started for this attachment (found by their --pidfile argument)."""
        return self.transport.pids_running('qemu-storage-daemon', ('--pidfile',), [pidfile])

    def initialize_connection(self, pool, volume, connector, via_pull=False):
        """Start a qemu-storage-daemon that exports the image as a writable FUSE file; return its path.

        A rerun finds the daemon running and returns the same path; a FUSE mount left by a daemon
        that died is unmounted first. ``via_pull``: the volume is being pulled into ``pool`` (an
        asynchronous migration): the FUSE export reads and writes the pull daemon's NBD export (which
        reconnects when the pull daemon restarts), not the image."""
        self.require('qemu-storage-daemon', 'fusermount3')
        folder, path, pidfile = self.attachment_paths(pool, volume)
        if not self.daemon_pids(pidfile):
            self.unmount(path)
            try:
                self.transport.makedirs(folder, 0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Failed to create %s: %s' % (folder, exc.strerror))
            self.transport.write_text_atomic(path, '', 0o600)
            image = self.image_path(pool, volume)
            if via_pull:
                nodes = ['--blockdev', json.dumps({'driver': 'nbd', 'node-name': 'vol', 'export': 'vol',
                                                   'server': {'type': 'unix', 'path': self.pull_sockets(volume)[0]},
                                                   'reconnect-delay': 30})]
            else:
                nodes = ['--blockdev', json.dumps({'driver': 'file', 'node-name': 'file0', 'filename': image,
                                                   'cache': {'direct': False}}),
                         '--blockdev', json.dumps({'driver': volume['format'], 'node-name': 'vol', 'file': 'file0'})]
            export = {'type': 'fuse', 'id': 'attachment', 'node-name': 'vol', 'mountpoint': path, 'writable': True}
            argv = ['qemu-storage-daemon', '--pidfile', pidfile] + nodes + ['--export', json.dumps(export), '--daemonize']
            try:
                self.transport.run(argv, 'attach volume %s' % volume['name'])
            except CommandError:
                self.unmount(path)
                self.remove_file(path)
                raise
        pids = self.daemon_pids(pidfile)
        return {'driver_volume_type': 'local', 'data': {'device_path': path, 'pid': pids[0] if pids else None,
                                                        'connector': connector}}

    def is_mounted(self, path):
        return any(entry['mount_point'] == path for entry in self.transport.mount_table())

    def unmount(self, path):
        """Unmount a FUSE export left at ``path`` (a daemon that died keeps it until then)."""
        if self.is_mounted(path):
            self.transport.run(['umount', path], 'unmount the attachment %s' % path)
            return True
        return False

    def terminate_connection(self, pool, volume, connector, stop_pull=True):
        """Stop the daemon (SIGTERM: it flushes the image and unmounts), then make sure nothing is mounted.

        With ``stop_pull`` a pull daemon left serving the attachment after an asynchronous migration
        is stopped too (after the FUSE daemon, which writes through it)."""
        _folder, path, pidfile = self.attachment_paths(pool, volume)
        found = self.stop_daemon(pidfile, volume) or self.transport.exists(path)
        self.unmount(path)
        self.remove_file(path)
        self.remove_file(pidfile)
        if stop_pull:
            found = self.stop_pull(pool, volume) or found
        return found

    def stop_daemon(self, pidfile, volume):
        """SIGTERM the daemons of ``pidfile`` (they flush), SIGKILL them after DAEMON_STOP_SECONDS; True when one ran."""
        pids = self.daemon_pids(pidfile)
        for pid in pids:
            self.transport.run(['kill', '-TERM', str(pid)], 'stop the storage daemon of volume %s' % volume['name'],
                               check=False)
        if pids and not self.wait_gone(pidfile, DAEMON_STOP_SECONDS):
            for pid in self.daemon_pids(pidfile):
                self.transport.kill(pid)
            self.wait_gone(pidfile, 5)
        return bool(pids)

    def wait_gone(self, pidfile, seconds):
        """True once no daemon of ``pidfile`` runs, within ``seconds`` (polled through the transport).

        The first looks come every 20 ms, then less often (up to 0.2 s): a daemon usually ends within tens
        of milliseconds of its SIGTERM, and every asynchronous migration and detach waits for one."""
        deadline = time.monotonic() + seconds
        pause = 0.02
        while self.daemon_pids(pidfile):
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        return True

    # -- migration ---------------------------------------------------------------------------
    def migrate_volume(self, source_pool, destination_pool, volume):
        """Rename the image into the destination pool when both are on one filesystem.

        A rerun after the rename (source gone, destination there) is True too."""
        source = self.image_path(source_pool, volume)
        target = self.image_path(destination_pool, volume)
        if not self.transport.exists(source) and self.transport.exists(target):
            return True
        if not self.same_filesystem(source_pool, destination_pool):
            return False
        try:
            self.transport.rename(source, target)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return False  # one filesystem, two mounts (a bind mount): only a copy moves it
            raise StorageError('Failed to move volume %s to %s: %s' % (volume['name'], destination_pool, exc.strerror))
        self.transport.fsync_dir(destination_pool.path)
        self.transport.fsync_dir(source_pool.path)
        return True

    def copy_files(self, source_pool, volume):
        """(log, exit status file) of the host copy of ``volume`` (kept in the source pool)."""
        folder = os.path.join(source_pool.path, '.mobility', 'volume-copies')
        return folder, os.path.join(folder, '%s.log' % volume['id']), os.path.join(folder, '%s.rc' % volume['id'])

    def start_copy(self, source_pool, destination_pool, volume, rate_limit=None):
        """Start ``qemu-img convert`` detached into the destination pool's temporary image.

        Returns the copier's pid. A stale exit status of an earlier copy is removed first; the
        temporary image is created (sparse, the volume's size) when missing; ``-n`` writes into it."""
        self.require('qemu-img', 'setsid')
        folder, log, rc = self.copy_files(source_pool, volume)
        try:
            self.transport.makedirs(folder, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Failed to create %s: %s' % (folder, exc.strerror))
        self.remove_file(rc)
        source = self.image_path(source_pool, volume)
        target = self.copy_target_path(destination_pool, volume)
        size = self.image_info(source)['virtual-size']
        if not self.transport.exists(target):
            self._img(['create', '-q', '-f', volume['format'], target, str(size)],
                      'create the copy of volume %s in %s' % (volume['name'], destination_pool))
        # -t writeback: the copy is flushed to disk when convert ends (its default, unsafe, never flushes),
        # so that the source is released only after the copy is on disk
        argv = ['qemu-img', 'convert', '-p', '-n', '-S', '4k', '-t', 'writeback']
        if rate_limit:
            # A throttle on the source counts the bytes read, that is the data: convert's own -r also
            # counts the holes it skips before the last data (16 MiB after a 50 MiB hole at 1 MiB/s
            # took 66 s with -r, 16 s this way). The image is named inside the JSON (no shell, no
            # options string to escape).
            argv += ['--object', json.dumps({'qom-type': 'throttle-group', 'id': 'rate',
                                             'limits': {'bps-read': int(rate_limit)}}),
                     '-O', volume['format'],
                     'json:' + json.dumps({'driver': 'throttle', 'throttle-group': 'rate',
                                           'file': {'driver': volume['format'],
                                                    'file': {'driver': 'file', 'filename': source}}}), target]
        else:
            argv += ['-f', volume['format'], '-O', volume['format'], source, target]
        _rc, out, _err = self.transport.run(['setsid', '-f', 'sh', '-c', DETACH_SCRIPT, 'sh', log, rc] + argv,
                                            'start the copy of volume %s' % volume['name'])
        pid = out.strip().splitlines()[0] if out.strip() else ''
        # convert's progress counts the data it copies, not the holes: so does bytes_total
        return {'pid': int(pid) if pid.isdigit() else None, 'bytes_total': self.data_bytes(source, volume, 0, size)[1],
                'target': target}

    def copy_state(self, source_pool, destination_pool, volume):
        """Where the host copy is: ``state`` (``running``, ``done``, ``failed`` or ``stopped``: no
        copier and no exit status, after a crash or a kill), ``percent`` from the copier's own
        progress lines, and the last lines of its output when it failed."""
        _folder, log, rc = self.copy_files(source_pool, volume)
        # The exit status first: once it is written the copy is over (no scan of the processes); without it
        # the processes, then the exit status again: a copier that ends between the two is seen done.
        status = self._copy_status(rc)
        running = False
        if status is None:
            running = bool(self.copier_pids(source_pool, destination_pool, volume))
            if not running:
                status = self._copy_status(rc)
        result = {'percent': 0.0}
        try:
            text = self.transport.read_bytes(log).decode('utf-8', 'replace')
        except (IOError, OSError):
            text = ''
        found = _PROGRESS_RE.findall(text)
        if found:
            result['percent'] = float(found[-1])
        if running:
            result['state'] = 'running'
        elif status is not None:
            result['state'] = 'done' if status == '0' else 'failed'
            result['rc'] = int(status) if status.lstrip('-').isdigit() else None
            result['output'] = _PROGRESS_RE.sub('', text).strip()[-2000:]
        else:
            result['state'] = 'stopped'
        return result

    def wait_copy(self, source_pool, volume, seconds, sleep, step=0.1):
        """Wait up to ``seconds`` for the host copy's exit status (in ``step`` slices): True once it is written.

        A run that waits for a copy sees its end at once instead of at the next poll."""
        _folder, _log, rc = self.copy_files(source_pool, volume)
        for _attempt in range(max(1, int(seconds / step))):
            if self.transport.exists(rc):
                return True
            sleep(step)
        return self.transport.exists(rc)

    def _copy_status(self, rc):
        try:
            return self.transport.read_bytes(rc).decode('utf-8').strip()
        except (IOError, OSError):
            return None

    def copier_pids(self, source_pool, destination_pool, volume):
        """The copy's processes: its wrapper (sh, found by the exit status path it names, alive from
        before start_copy returns until the status is written) and qemu-img convert (by its target)."""
        _folder, _log, rc = self.copy_files(source_pool, volume)
        target = self.copy_target_path(destination_pool, volume)
        return (self.transport.pids_running('sh', ('-c',), [rc])
                + self.transport.pids_running('qemu-img', ('convert',), [target]))

    def stop_copy(self, source_pool, destination_pool, volume):
        """Kill the copier and remove the temporary image, its log and exit status."""
        target = self.copy_target_path(destination_pool, volume)
        for _attempt in range(3):
            pids = self.copier_pids(source_pool, destination_pool, volume)
            if not pids:
                break
            for pid in pids:
                self.transport.kill(pid)
            self.transport.run(['sleep', '0.1'], 'wait for the copier to stop')
        _folder, log, rc = self.copy_files(source_pool, volume)
        for path in (target, log, rc):
            self.remove_file(path)

    def verify_copy(self, source_pool, destination_pool, volume):
        """``qemu-img compare`` of the source image and the copy: True when identical.

        Both are read through the page cache: right after the copy mostly from memory (the copier read
        the source and flushed the copy to disk, -t writeback), so the check costs little more than a
        memory compare; a block that differs in the copy, wherever it came from, fails it."""
        source = self.image_path(source_pool, volume)
        target = self.copy_target_path(destination_pool, volume)
        if not self.transport.exists(target):
            target = self.image_path(destination_pool, volume)
        rc, out, err = self._img(['compare', '-q', '-f', volume['format'], '-F', volume['format'], source, target],
                                 'verify the copy of volume %s' % volume['name'], check=False)
        if rc not in (0, 1):
            raise CommandError('Failed to verify the copy of volume %s: qemu-img compare exited with %d: %s'
                               % (volume['name'], rc, (err or out).strip()), rc=rc, stdout=out, stderr=err)
        return rc == 0

    def place_copy(self, destination_pool, volume):
        """The verified copy becomes the volume's image in the destination pool (a rerun finds it done)."""
        target = self.copy_target_path(destination_pool, volume)
        final = self.image_path(destination_pool, volume)
        if self.transport.exists(target):
            self.transport.rename(target, final)
            self.transport.fsync_dir(destination_pool.path)
        elif not self.transport.exists(final):
            raise StorageError('The copy of volume %s is missing from pool %s (%s)'
                               % (volume['name'], destination_pool, target))

    # -- asynchronous migration (the volume attachable on the destination while its data is pulled) --
    def pull_sockets(self, volume):
        """(NBD socket, QMP monitor socket) of the pull daemon of ``volume``."""
        return (os.path.join(SOCKET_DIR, '%s.nbd' % volume['id']), os.path.join(SOCKET_DIR, '%s.qmp' % volume['id']))

    def pull_pidfile(self, destination_pool, volume):
        return os.path.join(destination_pool.path, '.mobility', 'attachments', 'volume-%s.pull.pid' % volume['id'])

    def pull_running(self, destination_pool, volume):
        """True while the pull daemon runs: the pid in its pid file when that process is the daemon of this
        pid file (one read of its command line, the common case while it pulls), else a scan of the processes."""
        pidfile = self.pull_pidfile(destination_pool, volume)
        try:
            pid = int(self.transport.read_bytes(pidfile).decode('utf-8').strip())
            argv = self.transport.read_bytes('/proc/%d/cmdline' % pid).split(b'\0')
        except (IOError, OSError, ValueError):
            argv = []
        if len(argv) > 2 and os.path.basename(argv[0]) == b'qemu-storage-daemon' and argv[1] == b'--pidfile' \
                and argv[2] == pidfile.encode('utf-8'):
            return True
        return bool(self.daemon_pids(pidfile))

    def _qmp(self, volume, command, arguments=None):
        return qmp.execute(self.pull_sockets(volume)[1], command, arguments)

    def start_pull(self, source_pool, destination_pool, volume, rate_limit=None):
        """Start (or continue after a crash) pulling the volume into the destination pool.

        The destination is a qcow2 overlay ``.volume-<id>.migrating`` whose backing file is the
        source image. A storage daemon opens the source read-only and the overlay writable, exports
        the overlay over NBD on a unix socket (what an attachment reads and writes) and runs a
        block-stream job that copies into the overlay every cluster it does not hold yet. A rerun
        after the daemon died starts it again: the clusters already pulled or written stay, the job
        pulls the rest. Returns ``bytes_total``, the source's data bytes (its holes are not pulled)."""
        self.require('qemu-img', 'qemu-storage-daemon')
        if type(self.transport).__name__ != 'LocalTransport':
            raise StorageError('Cannot migrate volume %s asynchronously on host %s: the pull daemon is driven through '
                               'a local monitor socket; use a host copy (async_migration: false)'
                               % (volume['name'], self.backend.host))
        source = self.image_path(source_pool, volume)
        target = self.copy_target_path(destination_pool, volume)
        size = self.image_info(source)['virtual-size']
        if not self.transport.exists(target):
            partial = target + '.creating'
            self._img(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % PULL_CLUSTER, '-b', source,
                       '-F', volume['format'], partial, str(size)],
                      'create the destination of volume %s in %s' % (volume['name'], destination_pool))
            self.mark_zero_ranges(source, partial, volume)
            self.transport.rename(partial, target)
            self.transport.fsync_dir(destination_pool.path)
        pidfile = self.pull_pidfile(destination_pool, volume)
        nbd, monitor = self.pull_sockets(volume)
        if not self.daemon_pids(pidfile):
            for folder in (os.path.dirname(pidfile), SOCKET_DIR):
                try:
                    self.transport.makedirs(folder, 0o700)
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise StorageError('Failed to create %s: %s' % (folder, exc.strerror))
            for stale in (nbd, monitor):
                self.remove_file(stale)
            argv = ['qemu-storage-daemon', '--pidfile', pidfile,
                    '--blockdev', json.dumps({'driver': 'file', 'node-name': 'src-file', 'filename': source,
                                              'read-only': True}),
                    '--blockdev', json.dumps({'driver': volume['format'], 'node-name': 'src', 'file': 'src-file',
                                              'read-only': True}),
                    # Direct I/O where the filesystem has it: the job's writes reach the disk as they are
                    # made instead of filling the page cache, so an attached writer's flush does not flush
                    # them too, and the verification reads the destination back from the disk (here the
                    # pull ran at the bare copy's speed that way, against 0.6 of it through the page
                    # cache, and the writer's latency halved: docs/performance.md).
                    '--blockdev', json.dumps({'driver': 'file', 'node-name': 'tgt-file', 'filename': target,
                                              'cache': {'direct': self.transport.opens_direct(target)}}),
                    '--blockdev', json.dumps({'driver': 'qcow2', 'node-name': 'tgt', 'file': 'tgt-file',
                                              'backing': 'src'}),
                    '--nbd-server', json.dumps({'addr': {'type': 'unix', 'path': nbd}}),
                    '--export', json.dumps({'type': 'nbd', 'id': 'pull', 'node-name': 'tgt', 'name': 'vol',
                                            'writable': True}),
                    '--chardev', 'socket,id=qmp,path=%s,server=on,wait=off' % monitor,
                    '--monitor', 'chardev=qmp', '--daemonize']
            self.transport.run(argv, 'start pulling volume %s into %s' % (volume['name'], destination_pool))
        if not self._qmp(volume, 'query-jobs'):
            args = {'job-id': PULL_JOB, 'device': 'tgt', 'auto-dismiss': False}
            if rate_limit:
                args['speed'] = int(rate_limit)
            self._qmp(volume, 'block-stream', args)
        return {'bytes_total': self.data_bytes(source, volume, 0, size)[1], 'target': target}

    def source_holes(self, source, volume):
        """The ranges of the source image that read as zeros: [(offset, length)] in order, from
        ``qemu-img map`` (which asks the filesystem where the holes are, without reading them).
        Kept for the driver's life per image, size and modification time: a source does not change
        while it migrates, and a waiting run asks for the pull's progress at every poll."""
        st = self.transport.stat(source)
        key = (source, st.size, st.mtime_ns)
        if key not in self._holes:
            _rc, out, _err = self._img(['map', '-U', '--output=json', '-f', volume['format'], source],
                                       'map the holes of volume %s' % volume['name'])
            self._holes.clear()
            self._holes[key] = [(e['start'], e['length']) for e in json.loads(out) if e.get('zero')]
        return self._holes[key]

    def data_bytes(self, source, volume, position, length):
        """(data bytes before ``position``, data bytes in all) of the first ``length`` bytes of the
        source image: its bytes outside its holes. A copy's progress is counted over them: a pull's
        job offset counts the holes it steps over in a moment, and a large volume with little data
        would otherwise show a rate and an ETA that have nothing to do with the data still to move
        (convert's own percent already counts the data only)."""
        before = holes = 0
        for start, size in self.source_holes(source, volume):
            end = min(start + size, length)
            if end <= start:
                continue
            holes += end - start
            before += max(0, min(end, position) - start)
        return max(0, min(position, length) - before), max(0, length - holes)

    def zero_ranges(self, source, volume):
        """The ranges of the source image that read as zeros (holes), cut to whole PULL_CLUSTER clusters:
        [(offset, length)], the largest PULL_ZERO_RANGES of them."""
        ranges = []
        for offset, length in self.source_holes(source, volume):
            start = -(-offset // PULL_CLUSTER) * PULL_CLUSTER
            end = (offset + length) // PULL_CLUSTER * PULL_CLUSTER
            if end > start:
                ranges.append((start, end - start))
        ranges.sort(key=lambda r: -r[1])
        return sorted(ranges[:PULL_ZERO_RANGES])

    def mark_zero_ranges(self, source, overlay, volume):
        """Mark the source's holes as zero clusters in the new destination overlay (before any daemon opens it).

        QEMU's block-stream copies every range the backing chain reports as allocated, and a raw image
        reports its holes as allocated: without this the pull would read the whole virtual size and
        write it as zeros. A zero cluster in the overlay is its own (reads zeros, as the source's hole
        does), so the job skips it. The source must not change during the migration (its signature is
        taken before this map and checked at the end), so the holes stay holes."""
        ranges = self.zero_ranges(source, volume)
        if not ranges:
            return 0
        self.require('qemu-io')
        argv = ['qemu-io', '-f', 'qcow2', overlay]
        for offset, length in ranges:
            # -n: no fallback to writing zero-filled buffers. The ranges are whole clusters, which qcow2
            # marks zero in its tables alone; without -n qemu-io refuses a range above 2 GiB (the
            # size of a buffer it might need), the common hole of a large volume with little data.
            argv += ['-c', 'write -z -n %d %d' % (offset, length)]
        self.transport.run(argv, 'mark the holes of volume %s in its destination' % volume['name'])
        return len(ranges)

    def pull_state(self, destination_pool, volume, source_pool=None):
        """Where the pull is: ``state`` ``running``, ``done`` (the job concluded without error),
        ``failed`` (with ``error``) or ``stopped`` (no daemon: killed, host restarted); ``position``
        and ``length`` from query-block-jobs (offset/len, holes included) while it runs, and
        ``bytes_done`` and ``bytes_total``: the same, or with ``source_pool`` the source's data
        bytes before the position and in all (``data_bytes``)."""
        job = self._pull_job(destination_pool, volume)
        if job is None:
            return {'state': 'stopped', 'bytes_done': 0, 'bytes_total': None}
        result = {'position': job.get('current-progress', 0), 'length': job.get('total-progress')}
        for block in self._qmp(volume, 'query-block-jobs'):
            if block.get('device') == PULL_JOB:
                result.update(position=block['offset'], length=block['len'])
        result.update(bytes_done=result['position'], bytes_total=result['length'])
        if source_pool is not None and result['length']:
            result['bytes_done'], result['bytes_total'] = self.data_bytes(
                self.image_path(source_pool, volume), volume, result['position'], result['length'])
        if job['status'] == 'concluded':
            result['state'] = 'failed' if job.get('error') else 'done'
            if job.get('error'):
                result['error'] = job['error']
        else:
            result['state'] = 'running'
        return result

    def _pull_job(self, destination_pool, volume):
        """The pull's job as query-jobs gives it, or None when no daemon runs it (killed, host restarted)."""
        if not self.pull_running(destination_pool, volume):
            return None
        return dict((j['id'], j) for j in self._qmp(volume, 'query-jobs')).get(PULL_JOB)

    def _pull_ended(self, destination_pool, volume):
        job = self._pull_job(destination_pool, volume)
        return job is None or job['status'] == 'concluded'

    def wait_pull(self, destination_pool, volume, seconds, sleep, step=0.1):
        """Wait up to ``seconds`` for the pull to end (its job concluded, or no daemon), asking the
        daemon every ``step`` seconds: True once it has ended.

        A run that waits for the pull sees its end at once instead of at its next poll: each look is a
        read of the pid file and one monitor command, not a step of the migration with its records."""
        for _attempt in range(max(1, int(seconds / step))):
            if self._pull_ended(destination_pool, volume):
                return True
            sleep(step)
        return self._pull_ended(destination_pool, volume)

    def finish_pull(self, source_pool, destination_pool, volume, expected_source):
        """After the job concluded: dismiss it, close the source in the daemon, and verify.

        Verified, each read from disk or from QEMU: the overlay has no backing file left (every
        cluster is in the destination), the source image is the one the pull started from (same
        size and modification time: the daemon opened it read-only, nothing else may write it
        while it migrates) and, when nothing was attached during the pull (``compare``), the
        destination's content equals the source's (``qemu-img compare``). With an attachment the
        destination holds the writes made during the pull as well, so a full compare cannot match;
        the job's own success and the two checks above stand for it. Returns None or the reason."""
        if self.pull_running(destination_pool, volume):
            if any(j['id'] == PULL_JOB for j in self._qmp(volume, 'query-jobs')):
                self._qmp(volume, 'job-dismiss', {'id': PULL_JOB})
            names = [n.get('node-name') for n in self._qmp(volume, 'query-named-block-nodes', {'flat': True})]
            for node in ('src', 'src-file'):
                if node in names:
                    self._qmp(volume, 'blockdev-del', {'node-name': node})
        target = self.copy_target_path(destination_pool, volume)
        if not self.transport.exists(target):
            target = self.image_path(destination_pool, volume)
        info = self.image_info(target)
        if info.get('backing-filename'):
            return 'the destination still has a backing file (%s): the pull did not complete' % info['backing-filename']
        source = self.image_path(source_pool, volume)
        st = self.transport.stat(source)
        if expected_source and [st.size, st.mtime_ns] != list(expected_source):
            return 'the source image changed during the pull (size, modification time %s, expected %s)' \
                % ([st.size, st.mtime_ns], list(expected_source))
        return None

    def source_signature(self, source_pool, volume):
        st = self.transport.stat(self.image_path(source_pool, volume))
        return [st.size, st.mtime_ns]

    def compare_pull(self, source_pool, destination_pool, volume):
        """qemu-img compare of the source and the pulled destination (qcow2), read from disk."""
        source = self.image_path(source_pool, volume)
        target = self.copy_target_path(destination_pool, volume)
        if not self.transport.exists(target):
            target = self.image_path(destination_pool, volume)
        rc, out, err = self._img(['compare', '-U', '-q', '-f', volume['format'], '-F', 'qcow2', source, target],
                                 'verify the pull of volume %s' % volume['name'], check=False)
        if rc not in (0, 1):
            raise CommandError('Failed to verify the pull of volume %s: qemu-img compare exited with %d: %s'
                               % (volume['name'], rc, (err or out).strip()), rc=rc, stdout=out, stderr=err)
        return rc == 0

    def stop_pull(self, destination_pool, volume):
        """Stop the pull daemon (SIGTERM: it flushes the overlay) and remove its sockets; True when it ran."""
        pidfile = self.pull_pidfile(destination_pool, volume)
        ran = self.stop_daemon(pidfile, volume)
        for path in self.pull_sockets(volume) + (pidfile,):
            self.remove_file(path)
        return ran

    def cancel_pull(self, source_pool, destination_pool, volume):
        """Stop the attachment on the destination, the pull daemon, and remove the overlay (the source stays)."""
        self.terminate_connection(destination_pool, volume, None, stop_pull=True)
        target = self.copy_target_path(destination_pool, volume)
        for path in (target, target + '.creating'):
            self.remove_file(path)
