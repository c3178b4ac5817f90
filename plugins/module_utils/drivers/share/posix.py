# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The posix share driver: pools are folders on any Linux filesystem, shares are folders in them.

Layout of a pool::

    <pool>/shares/<share>                 the share instance (what users see)
    <pool>/snapshots/<share>/<snapshot>   snapshots (copies, reflinked where the filesystem can)
    <pool>/.mobility/                     records and locks (store.py), trash being deleted

Driver-assisted migration moves a share by renaming it within one filesystem: atomic, instant,
everything preserved (hard links, xattrs, ACLs, sparse files, snapshots). Between filesystems the
driver says it is incompatible and the manager falls back to host-assisted copying.

Every file operation and command goes through the backend's transport (``self.transport``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import os
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils.crash import crash_point
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import SealError
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share import posix_changes as changes
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.base import ShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import export_helper
from ansible_collections.storage.mobility.plugins.module_utils.store import META_DIR
from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles

GIB = 1024 ** 3
REPLICATION_DIR = 'replication'
#: rsync passes an update makes at most while users keep changing the active instance
REPLICA_PASSES = 3
#: rsync exit codes an update pass accepts (24: files vanished while it ran; the seal tells)
REPLICA_RSYNC_OK = (rsync_lib.RC_OK, rsync_lib.RC_VANISHED)
#: rsync options of a readable replica's update: changes put in place at the end of the pass
REPLICA_READABLE_OPTIONS = ('--delay-updates', '--delete-delay')
#: seconds between a point in time and the change times the kernel stamps (its coarse clock)
CTIME_MARGIN = 0.05


def trash_prefix(kind, *names):
    """The prefix of the trash entries of one object: ``<kind>-<16 hex digits of a hash of its
    names>.``, a fixed length whatever the names' length (names.DERIVED_NAMES)."""
    digest = hashlib.sha256(b'\0'.join(n.encode('utf-8', 'surrogateescape') for n in names)).hexdigest()
    return '%s-%s.' % (kind, digest[:16])


class PosixShareDriver(ShareDriver):
    name = 'posix'
    replica_updates_in_place = True

    # -- paths -------------------------------------------------------------------------------
    def instance_path(self, pool, share_name):
        return os.path.join(pool.path, 'shares', share_name)

    def snapshots_dir(self, pool, share_name):
        return os.path.join(pool.path, 'snapshots', share_name)

    def snapshot_path(self, pool, share_name, snapshot_name):
        return os.path.join(self.snapshots_dir(pool, share_name), snapshot_name)

    def _trash(self, pool):
        return os.path.join(pool.path, META_DIR, 'trash')

    def _require_pool(self, pool):
        if not self.transport.is_dir(pool.path):
            raise StorageError('Pool %s: its path %s does not exist or is not a folder' % (pool, pool.path))

    # -- pools -------------------------------------------------------------------------------
    def pool_stats(self, pool):
        self._require_pool(pool)
        st = self.transport.statvfs(pool.path)
        mount = self.transport.mount_of(pool.path)
        return {
            'pool_name': pool.name,
            'total_capacity_gb': round(st['f_blocks'] * st['f_frsize'] / float(GIB), 2),
            'free_capacity_gb': round(st['f_bavail'] * st['f_frsize'] / float(GIB), 2),
            'reserved_percentage': 0,
            'thin_provisioning': True,
            'snapshot_support': True,
            'create_share_from_snapshot_support': False,
            'revert_to_snapshot_support': False,
            'mount_snapshot_support': False,
            'driver_handles_share_servers': False,
            'replication_type': None,
            'replication_domain': self.backend.replication_domain,
            'share_backend_name': self.backend.name,
            'storage_protocol': 'NFS_CIFS',
            'driver_version': '1.0',
            'vendor_name': 'storage.mobility',
            'filesystem': mount['fstype'],
            'mount_point': mount['mount_point'],
            'device': mount['source'],
            'fsid': self.transport.stat(pool.path).dev,
            'export_helper': self.backend.export_helper,
        }

    # -- instances ---------------------------------------------------------------------------
    def instance_exists(self, pool, share_name):
        return self.transport.is_dir(self.instance_path(pool, share_name))

    def create_instance(self, pool, share_name):
        self._require_pool(pool)
        path = self.instance_path(pool, share_name)
        try:
            self.transport.makedirs(os.path.dirname(path), 0o755)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Failed to create share folder of pool %s: %s' % (pool, exc.strerror))
        try:
            self.transport.mkdir(path, 0o755)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Failed to create share %s in pool %s: %s' % (share_name, pool, exc.strerror))
            if not self.transport.is_empty_dir(path):
                raise InvalidRequest('Refusing to create share %s in pool %s: %s already exists and is not an '
                                     'empty folder (data not managed by this collection?)' % (share_name, pool, path))
        return path

    def _purge_trash(self, pool, prefixes):
        trash = self._trash(pool)
        try:
            entries = [e for e in self.transport.listdir(trash) if e.startswith(tuple(prefixes))]
        except OSError:
            return False
        for entry in entries:
            self.remove_tree(os.path.join(trash, entry), 'delete %s from the trash of pool %s' % (entry, pool))
        return bool(entries)

    def remove_tree(self, path, what):
        """``rm -rf`` of ``path``; when that fails, clear the immutable and append-only attributes
        below it (fileflags) and try once more. Needs no free space in the filesystem."""
        try:
            self.transport.run(['rm', '-rf', '--one-file-system', '--', path], what)
            return
        except CommandError as exc:
            first = exc
        try:
            cleared = self.transport.clear_flags_tree(path)
        except OSError as exc:
            raise StorageError('Failed to %s: %s; clearing the immutable and append-only attributes failed too: %s'
                               % (what, first, exc), **first.details)
        if not cleared:
            raise first
        self.transport.run(['rm', '-rf', '--one-file-system', '--', path], what)

    def _delete_tree(self, pool, path, prefixes, what):
        """Move ``path`` into the pool's trash (atomic), then delete it; converge after a crash.

        Where the move is impossible (a full pool cannot create the trash folder, an immutable
        folder cannot be renamed) ``path`` is deleted where it is: that needs no free space, and a
        run that dies half way leaves the rest at the same path for the next run to delete."""
        changed = False
        if self.transport.lexists(path):
            trash = self._trash(pool)
            target = os.path.join(trash, '%s%s' % (prefixes[0], uuid.uuid4().hex))
            try:
                try:
                    self.transport.makedirs(trash, 0o700)
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
                self.transport.rename(path, target)
            except OSError:
                self.remove_tree(path, 'delete %s in place (it cannot be moved to the trash)' % what)
            changed = True
        return self._purge_trash(pool, prefixes) or changed

    def _instance_trash(self, share_name):
        # The second prefix finds what an earlier version put in the trash.
        return [trash_prefix('share', share_name), 'share-%s.' % share_name]

    def delete_instance(self, pool, share_name):
        return self._delete_tree(pool, self.instance_path(pool, share_name), self._instance_trash(share_name),
                                 'share %s in pool %s' % (share_name, pool))

    def tree_seal(self, pool, path, ignore):
        """The seal of the instance folder ``path`` of ``pool``, walked on the pool's host by its
        transport; the btrfs driver inherits it (a subvolume is walked as a folder)."""
        self._sealable(pool, path)
        try:
            return self.transport.tree_seal(path, ignore)
        except SealError as exc:
            raise StorageError('Failed to seal the tree of pool %s: %s' % (pool, exc))

    def tree_seal_later(self, pool, path, ignore):
        self._sealable(pool, path)
        try:
            wait = self.transport.tree_seal_later(path, ignore)
        except SealError as exc:
            raise StorageError('Failed to seal the tree of pool %s: %s' % (pool, exc))

        def collect():
            try:
                return wait()
            except SealError as exc:
                raise StorageError('Failed to seal the tree of pool %s: %s' % (pool, exc))
        return collect

    def _sealable(self, pool, path):
        real = self.transport.realpath(path)
        if not (real + '/').startswith(self.transport.realpath(pool.path).rstrip('/') + '/'):
            raise StorageError('Refusing to seal %s: it is not inside pool %s (%s)' % (path, pool, pool.path))

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot_exists(self, pool, share_name, snapshot_name):
        return self.transport.is_dir(self.snapshot_path(pool, share_name, snapshot_name))

    def create_snapshot(self, pool, share_name, snapshot_name):
        source = self.instance_path(pool, share_name)
        final = self.snapshot_path(pool, share_name, snapshot_name)
        if self.transport.is_dir(final):
            return self.transport.tree_bytes(final)
        folder = self.snapshots_dir(pool, share_name)
        try:
            self.transport.makedirs(folder, 0o755)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Failed to create snapshot %s of share %s: %s' % (snapshot_name, share_name, exc.strerror))
        tmp = os.path.join(folder, '.%s.partial' % snapshot_name)
        if self.transport.lexists(tmp):
            self.remove_tree(tmp, 'remove the partial snapshot %s of share %s' % (snapshot_name, share_name))
        self.transport.run(['cp', '-a', '--reflink=auto', '--', source, tmp],
                           'copy share %s into snapshot %s' % (share_name, snapshot_name))
        self.transport.rename(tmp, final)
        return self.transport.tree_bytes(final)

    def delete_snapshot(self, pool, share_name, snapshot_name):
        changed = self._delete_tree(pool, self.snapshot_path(pool, share_name, snapshot_name),
                                    [trash_prefix('snapshot', share_name, snapshot_name),
                                     'snapshot-%s-%s.' % (share_name, snapshot_name)],
                                    'snapshot %s of share %s' % (snapshot_name, share_name))
        folder = self.snapshots_dir(pool, share_name)
        if self.transport.is_empty_dir(folder):
            self.transport.rmdir(folder)
        return changed

    # -- exports -----------------------------------------------------------------------------
    def export(self):
        return export_helper(self.backend, self.transport)

    # -- driver-assisted migration -----------------------------------------------------------
    def migration_check_compatibility(self, source_pool, destination_pool, share, destination_driver):
        result = self.refused(self.pair_problem(
            source_pool, destination_pool, destination_driver,
            '; the posix driver moves shares only between posix pools',
            '; the posix driver moves shares only by renaming within one filesystem'))
        if result['reason']:
            return result
        try:
            src_dev = self.transport.stat(os.path.dirname(self.instance_path(source_pool, share['name']))).dev
            dst_parent = os.path.dirname(self.instance_path(destination_pool, share['name']))
            dst_dev = self.transport.stat(dst_parent if self.transport.is_dir(dst_parent) else destination_pool.path).dev
        except OSError as exc:
            result['reason'] = 'cannot read the pools: %s' % exc
            return result
        if src_dev != dst_dev:
            src_fs = self.transport.mount_of(source_pool.path)
            dst_fs = self.transport.mount_of(destination_pool.path)
            result['reason'] = ('the pools are on different filesystems (%s %s on %s, %s %s on %s); the posix '
                                'driver moves shares only by renaming within one filesystem'
                                % (src_fs['fstype'], src_fs['source'], src_fs['mount_point'],
                                   dst_fs['fstype'], dst_fs['source'], dst_fs['mount_point']))
            return result
        root_flags = self.transport.read_flags(self.instance_path(source_pool, share['name']))
        if root_flags:
            # rename(2) refuses to move a folder that is immutable or append-only itself.
            result['reason'] = ('the root folder of share %s is %s, which a rename cannot move (a host copy carries '
                                'the attribute)' % (share['name'], fileflags.describe(root_flags)))
            return result
        source_export = self.export().location(share['name'], self.instance_path(source_pool, share['name']))
        destination_export = destination_driver.export().location(
            share['name'], destination_driver.instance_path(destination_pool, share['name']))
        result.update({
            'compatible': True, 'writable': True, 'preserve_metadata': True, 'preserve_snapshots': True,
            # A bind mount follows the renamed folder: clients keep their mount when the export
            # path stays the same. With helper none the path users reach changes.
            'nondisruptive': (self.backend.export_helper == 'bind' and destination_pool.backend.export_helper == 'bind'
                              and source_export == destination_export),
        })
        return result

    def _conflicts(self, source_pool, destination_pool, share_name):
        problems = []
        dst = self.instance_path(destination_pool, share_name)
        if (self.transport.lexists(dst) and not self.transport.is_empty_dir(dst)
                and self.transport.is_dir(self.instance_path(source_pool, share_name))):
            problems.append('%s already holds data' % dst)
        dst_snaps = self.snapshots_dir(destination_pool, share_name)
        src_snaps = self.snapshots_dir(source_pool, share_name)
        if (self.transport.lexists(src_snaps) and self.transport.lexists(dst_snaps)
                and not self.transport.is_empty_dir(dst_snaps)):
            problems.append('%s already holds snapshots' % dst_snaps)
        return problems

    def migration_start(self, source_pool, destination_pool, share):
        problems = self._conflicts(source_pool, destination_pool, share['name'])
        if problems:
            raise StorageError('Failed to start migration of share %s to %s: %s'
                               % (share['name'], destination_pool, '; '.join(problems)))
        if not self.instance_exists(source_pool, share['name']):
            raise StorageError('Failed to start migration of share %s: its data %s is missing'
                               % (share['name'], self.instance_path(source_pool, share['name'])))

    def migration_continue(self, source_pool, destination_pool, share):
        # Nothing is copied: the rename in phase 2 moves everything at once.
        return True

    def migration_get_progress(self, source_pool, destination_pool, share):
        return {'total_progress': 100, 'detail': 'rename within one filesystem: nothing to copy before the switchover'}

    def migration_complete_done(self, source_pool, destination_pool, share):
        name = share['name']
        return (not self.transport.lexists(self.instance_path(source_pool, name))
                and self.transport.is_dir(self.instance_path(destination_pool, name)))

    def migration_complete(self, source_pool, destination_pool, share):
        name = share['name']
        src = self.instance_path(source_pool, name)
        dst = self.instance_path(destination_pool, name)
        if self.transport.is_dir(src):
            problems = self._conflicts(source_pool, destination_pool, name)
            if problems:
                raise StorageError('Failed to complete migration of share %s: %s' % (name, '; '.join(problems)))
            if not self.transport.is_dir(os.path.dirname(dst)):
                self.transport.makedirs(os.path.dirname(dst), 0o755)
            # The point of no return: rename(2) replaces the empty reserved folder atomically.
            try:
                self.transport.rename(src, dst)
            except OSError as exc:
                raise StorageError('Failed to complete migration of share %s: cannot rename %s to %s: %s'
                                   % (name, src, dst, exc.strerror))
        elif not self.transport.is_dir(dst):
            raise StorageError('Failed to complete migration of share %s: its data is in neither %s nor %s'
                               % (name, src, dst))
        self._move_snapshots(source_pool, destination_pool, name)

    def _move_snapshots(self, from_pool, to_pool, name):
        src = self.snapshots_dir(from_pool, name)
        dst = self.snapshots_dir(to_pool, name)
        if not self.transport.is_dir(src):
            return False
        if self.transport.is_empty_dir(dst):
            self.transport.rmdir(dst)
        if self.transport.lexists(dst):
            raise StorageError('Failed to move the snapshots of share %s: %s already exists' % (name, dst))
        if not self.transport.is_dir(os.path.dirname(dst)):
            self.transport.makedirs(os.path.dirname(dst), 0o755)
        self.transport.rename(src, dst)
        return True

    def migration_cancel(self, source_pool, destination_pool, share):
        """Put everything back in the source pool, then drop the reserved destination folder."""
        name = share['name']
        src = self.instance_path(source_pool, name)
        dst = self.instance_path(destination_pool, name)
        if not self.transport.lexists(src) and self.transport.is_dir(dst):
            # The data was switched (the switchover renames the share first, its snapshots
            # second): bring both back. Otherwise nothing of this share is in the destination
            # pool but the reserved empty folder, and anything else there is left alone.
            self.transport.rename(dst, src)
            if not self.transport.lexists(self.snapshots_dir(source_pool, name)):
                self._move_snapshots(destination_pool, source_pool, name)
        if self.transport.is_empty_dir(dst):
            self.transport.rmdir(dst)

    # -- replication (docs/replication.md) -----------------------------------------------------
    def replication_dir(self, pool, share):
        """Where the replication points of ``share`` live in ``pool`` (named by the share id)."""
        return os.path.join(pool.path, META_DIR, REPLICATION_DIR, share['id'])

    def replica_prepare(self, active_pool, replica_pool, share):
        self._require_pool(replica_pool)
        path = self.instance_path(replica_pool, share['name'])
        if self.transport.lexists(path) and not self.transport.is_empty_dir(path):
            raise InvalidRequest('Cannot add a replica of share %s in pool %s: %s already exists and is not an '
                                 'empty folder' % (share['name'], replica_pool, path))
        return self.create_instance(replica_pool, share['name'])

    def replica_update(self, active_pool, replica_pool, share, replica):
        """rsync with the data mover's options (nanosecond times, hard links, ACLs, xattrs,
        ``--delete``) from the active instance into the replica. The point is consistent when
        nothing in the active tree changed while a pass copied it. The first pass proves it with
        one walk after it: no entry's change time is past the pass's start (``_changed_since``).
        A tree that changed gets up to REPLICA_PASSES passes in all, each of the later ones
        between two equal seals (data_copy/seal.py), which need no clock; the result says
        ``verified: false`` when none was quiet."""
        name = share['name']
        self._require_pool(active_pool)
        self._require_pool(replica_pool)
        source = self.instance_path(active_pool, name)
        target = self.instance_path(replica_pool, name)
        if not self.transport.is_dir(target):
            self.create_instance(replica_pool, name)
        ignore = list(self.backend.migration_ignore_files)
        # A readable replica is read while it is updated: rsync keeps each new file aside (in a
        # .~tmp~ folder of its folder) and puts them all in place, then deletes, at the end of the
        # pass, so readers see the old point until then, not a mix of old and new files during
        # the whole transfer.
        readable = ((share.get('share_type') or {}).get('extra_specs') or {}).get('replication_type') == 'readable'
        extra = REPLICA_READABLE_OPTIONS if readable else ()
        argv = rsync_lib.build_argv(source, target, ignore, extra_options=extra)
        what = 'update the replica of share %s in pool %s' % (name, replica_pool)
        start = time.monotonic()
        result = {'bytes': 0, 'files': 0, 'passes': 0, 'verified': False, 'walks': 0}
        wanted = self.replica_snapshot_names(active_pool, share)
        result['bytes'] += self._carry_snapshots(active_pool, replica_pool, share, wanted)
        prior = replica.pop('change_marks', None) or {}
        folder = self.replication_dir(active_pool, share)
        # The marks other secondaries' next updates start from stay (one folder per share).
        kept = [((r.get('change_marks') or {}).get('source') or {}).get('name') for r in share.get('replicas') or []]
        mark = changes.make_mark(self.transport, folder, keep=kept + [(prior.get('source') or {}).get('name')])
        # The point: every change after it has a later change time than the mark (same clock).
        since = mark['ctime_ns'] - int(CTIME_MARGIN * 1e9)
        changed, reason = self._changes_since_update(active_pool, replica_pool, share, prior, mark, source, target,
                                                     ignore)
        result.update(incremental=changed is not None, full_send_reason=reason)
        for attempt in range(REPLICA_PASSES):
            before = None if attempt == 0 else self.tree_seal(active_pool, source, ignore)
            result['walks'] += 0 if before is None else 1
            point = time.time()
            pass_argv = argv
            if attempt == 0 and changed is not None:
                # Only what changed since the last update (folders among it whole, with --delete).
                pass_argv = rsync_lib.build_argv(source, target, ignore,
                                                 extra_options=extra + ('-r', '--from0', '--files-from=' + changed))
            rc, out, err = self.transport.run(pass_argv, what, check=False)
            copied = time.monotonic()
            if rc not in REPLICA_RSYNC_OK and not (pass_argv is not argv and rc == rsync_lib.RC_PARTIAL):
                raise StorageError('Failed to %s: rsync exited with %d (%s): %s'
                                   % (what, rc, rsync_lib.describe_exit(rc), (err or out).strip()[-2000:]),
                                   cmd=pass_argv, rc=rc, stderr=err)
            stats = rsync_lib.parse_stats(out.splitlines())
            result['bytes'] += stats.get('literal_data', stats.get('transferred_size', 0))
            result['files'] += stats.get('transferred', 0) + stats.get('deleted', 0)
            result['passes'] += 1
            crash_point('replica rsync pass')
            result['walks'] += 1
            if before is None:
                # An entry of the list removed before rsync read it (rc 23) changed its folder:
                # this walk sees it and the next pass copies the whole tree.
                quiet = not self._changed_since(active_pool, source, since / 1e9, ignore)
            else:
                quiet = before == self.tree_seal(active_pool, source, ignore)
            if rc == rsync_lib.RC_OK and quiet:
                result['verified'] = True
                break
        if changed is not None:
            self.transport.unlink(changed)
        result['source_time'] = point
        # The point the replica holds (when verified): a later change of the active has a later
        # change time. Not the end of the walk that proved it: an entry written after the walk
        # passed it is not in the replica, and a failback must count it as the old active's own.
        # A change after the mark has a change time of at least the mark's (one coarse clock); a
        # later pass (the tree changed during the first) copied it as it was at that pass's start,
        # so what changed before the mark is in the replica either way.
        quiet_ns = mark['ctime_ns'] - 1
        if attempt:
            quiet_ns = max(quiet_ns, int((point - CTIME_MARGIN) * 1e9))
        result['source_quiet_until'] = quiet_ns / 1e9
        result['seconds'] = round(time.monotonic() - start, 3)
        replica['base_time'] = time.time() + CTIME_MARGIN
        if result['verified']:
            # The replica holds the tree as it was at the mark or later (a later pass between
            # two equal seals): the next update copies what changed after the mark, if the
            # replica itself is left alone after its own mark.
            replica['change_marks'] = {
                'active': str(active_pool), 'source': mark,
                'replica': self._replica_mark(replica_pool, share, copied)}
        result['snapshots'] = self.replica_prune_snapshots(replica_pool, share, wanted)
        return result

    def _replica_mark(self, replica_pool, share, copied):
        """The replica's mark after a verified pass that ended at ``copied`` (monotonic): made at
        least posix_changes.MARK_GAP later, so that the replica's check (which reaches back by the clock's
        slack before the mark) does not take the pass's own last writes for a change."""
        wait = changes.MARK_GAP - (time.monotonic() - copied)
        if wait > 0:
            time.sleep(wait)
        mark = changes.make_mark(self.transport, self.replication_dir(replica_pool, share))
        mark['after_pass'] = True
        return mark

    def _changes_since_update(self, active_pool, replica_pool, share, prior, mark, source, target, ignore):
        """(the path on the host of the list of what changed in the active instance since the
        replica's last verified update, None) when posix_changes.py can tell it, else (None, why
        not): the update then copies the whole tree."""
        list_path = os.path.join(self.replication_dir(active_pool, share), changes.CHANGES_LIST)
        try:
            if not prior:
                raise changes.Unknown('no verified update of this replica to start from')
            if prior.get('active') != str(active_pool):
                raise changes.Unknown('the active replica moved since the last update')
            source_mark = prior.get('source')
            back = changes.check_mark(self.transport, self.replication_dir(active_pool, share), source_mark,
                                      mark, source, 'active replica')
            replica_folder = self.replication_dir(replica_pool, share)
            replica_mark = prior.get('replica')
            now = changes.make_mark(self.transport, replica_folder, keep=[(replica_mark or {}).get('name')])
            replica_back = changes.check_mark(self.transport, replica_folder, replica_mark, now, target, 'replica')
            # The replica's mark was made after its update ended: nothing changed it since.
            touched = changes.first_change(self.transport, target, changes.since(replica_mark, replica_back, CTIME_MARGIN),
                                           ignore, 'look for changes in the replica %s since its last update' % target)
            if touched:
                raise changes.Unknown('the replica changed since its last update (%s)' % touched)
            since = changes.since(source_mark, back, CTIME_MARGIN)
            changes.list_changes(self.transport, source, since, ignore, list_path,
                                 'list what changed in %s since the last replica update' % source)
        except changes.Unknown as exc:
            return None, str(exc)
        except OSError as exc:
            return None, 'the changes could not be told: %s' % (exc.strerror or exc)
        return list_path, None

    def replica_retain(self, pool, share, keep):
        """The posix driver keeps no points, only the marks of updates (posix_changes.py): those
        that no replica of ``share`` names any more are removed from ``pool``."""
        return changes.drop_marks(self.transport, self.replication_dir(pool, share),
                                  changes.marks_named(share.get('replicas')))

    def replica_reversed_marks(self, replica, new_active_pool):
        """The final update's marks, sides swapped: the promoted replica was as the old active at
        that update's point when its own mark was made after the pass, and the old active has not
        changed since its mark made before the pass (the walk after the pass proved it until then;
        a later change has a later change time, which the failback's check of the replica sees)."""
        marks = replica.get('change_marks')
        if not marks:
            return None
        return {'active': str(new_active_pool), 'source': marks['replica'], 'replica': marks['source']}

    def _changed_since(self, pool, path, since, ignore):
        """True when the instance folder ``path`` or an entry in it (names in ``ignore`` skipped at
        any depth, as rsync skips them) has a change time after ``since`` (epoch seconds): one
        ``find -newerct`` walk on the pool's host that stops at the first such entry.

        Why it proves that a pass started at ``since`` + CTIME_MARGIN copied the tree as it was
        then: every change to an entry (content, mode, owner, xattrs, ACLs, a link or rename of it)
        sets its change time to the kernel's clock, which no program can set back, and adding,
        removing or renaming an entry changes its folder; the margin covers the kernel's coarse
        clock. A clock stepped back during the pass could hide a change: the later passes use
        seals, which need no clock. An entry that vanishes while walked counts as a change."""
        path = path.rstrip('/') or '/'
        if not path.startswith(os.path.join(pool.path, '')):
            raise StorageError('Refusing to walk %s: it is not inside pool %s (%s)' % (path, pool, pool.path))
        try:
            if self.transport.lstat(path).ctime_ns > since * 1e9:
                return True
        except OSError as exc:
            raise StorageError('Failed to walk the tree of pool %s: %s: %s' % (pool, path, exc.strerror))
        argv = changes.changed_argv(path, int(since * 1e9), ignore, '-print', '-quit')
        rc, out, err = self.transport.run(argv, 'list what changed in %s during a replica update' % path,
                                          check=False)
        if rc != 0:
            problems = [line for line in (err or '').splitlines() if line.strip()]
            if problems and all('No such file or directory' in line for line in problems):
                return True  # removed while walked: a change
            raise StorageError('Failed to walk the tree of pool %s (%s): find exited with %d: %s'
                               % (pool, path, rc, (err or out).strip()[-2000:]), cmd=argv, rc=rc, stderr=err)
        return bool(out.strip())

    # Snapshots of a replicated share: each secondary keeps a copy of every snapshot of the active
    # at the same path (snapshots/<share>/<name>), so that a promoted replica has them.
    def replica_snapshot_names(self, active_pool, share):
        """The snapshots of ``share`` an update carries: taken on the active, in creation order."""
        return [s['name'] for s in share.get('snapshots') or []
                if s.get('status') in ('creating', 'available')
                and self.replica_holds_snapshot(active_pool, share['name'], s['name'])]

    def replica_holds_snapshot(self, pool, share_name, snapshot_name):
        """True when the pool holds a complete snapshot (a partial copy is named .<name>.partial)."""
        return self.snapshot_exists(pool, share_name, snapshot_name)

    def replica_prune_snapshots(self, pool, share, wanted):
        """Delete the snapshots of ``share`` in the replica pool that the active no longer has;
        return the names the pool holds, in the order of ``wanted``."""
        name = share['name']
        try:
            entries = self.transport.listdir(self.snapshots_dir(pool, name))
        except OSError:
            entries = []
        for entry in entries:
            if entry not in wanted and not entry.startswith('.'):
                self.delete_snapshot(pool, name, entry)
        return [n for n in wanted if self.replica_holds_snapshot(pool, name, n)]

    def _carry_snapshots(self, active_pool, replica_pool, share, wanted):
        """Copy each snapshot the replica lacks with rsync; files equal to the replica's previous
        snapshot are hard links to it (``--link-dest``: snapshots never change, the live replica
        does, so it is never a link source). Returns the bytes sent."""
        name = share['name']
        folder = self.snapshots_dir(replica_pool, name)
        previous = None
        sent = 0
        for snap in wanted:
            final = self.snapshot_path(replica_pool, name, snap)
            if self.replica_holds_snapshot(replica_pool, name, snap):
                previous = final
                continue
            if self.transport.lexists(final):
                raise StorageError('Failed to copy snapshot %s of share %s to pool %s: %s exists and is not a '
                                   'snapshot folder' % (snap, name, replica_pool, final))
            try:
                self.transport.makedirs(folder, 0o755)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Failed to create %s: %s' % (folder, exc.strerror))
            tmp = os.path.join(folder, '.%s.partial' % snap)
            if self.transport.lexists(tmp):
                self.remove_tree(tmp, 'remove the partial copy of snapshot %s of share %s' % (snap, name))
            extra = ['--link-dest=' + previous] if previous else []
            argv = rsync_lib.build_argv(self.snapshot_path(active_pool, name, snap), tmp, extra_options=extra)
            what = 'copy snapshot %s of share %s to pool %s' % (snap, name, replica_pool)
            rc, out, err = self.transport.run(argv, what, check=False)
            if rc != rsync_lib.RC_OK:
                raise StorageError('Failed to %s: rsync exited with %d (%s): %s'
                                   % (what, rc, rsync_lib.describe_exit(rc), (err or out).strip()[-2000:]),
                                   cmd=argv, rc=rc, stderr=err)
            stats = rsync_lib.parse_stats(out.splitlines())
            sent += stats.get('literal_data', stats.get('transferred_size', 0))
            crash_point('replica-snapshot-copied')
            self.transport.rename(tmp, final)
            previous = final
        return sent

    def replica_delete_snapshots(self, pool, share):
        changed = False
        folder = self.snapshots_dir(pool, share['name'])
        try:
            entries = self.transport.listdir(folder)
        except OSError:
            return False
        for entry in entries:
            if entry.startswith('.'):
                self.remove_tree(os.path.join(folder, entry), 'delete %s' % os.path.join(folder, entry))
            else:
                self.delete_snapshot(pool, share['name'], entry)
            changed = True
        if self.transport.is_empty_dir(folder):
            self.transport.rmdir(folder)
        return changed

    def replica_delete(self, pool, share):
        changed = self.delete_instance(pool, share['name'])
        changed = self.replica_delete_snapshots(pool, share) or changed
        folder = self.replication_dir(pool, share)
        if self.transport.lexists(folder):
            self.remove_tree(folder, 'delete the replication points of share %s in pool %s' % (share['name'], pool))
            changed = True
        return changed

    # The immutable attribute on every file and folder of the instance: clients that reach the
    # folder itself (export helper ``none``) and processes on the storage host get EPERM.
    replica_fence_marks_entries = True

    def replica_fence(self, pool, share, fenced):
        """Fence: the immutable attribute on the instance's root and on every file and folder in
        it (it changes their change times). Lift: clear the immutable and append-only attributes
        of the whole tree (the failback that follows makes it a copy of the active replica)."""
        path = self.instance_path(pool, share['name'])
        if not self.transport.is_dir(path):
            return False
        try:
            if fenced:
                return bool(self.transport.set_flags_tree(path, fileflags.ATTR_IMMUTABLE))
            return bool(self.transport.clear_flags_tree(path))
        except OSError as exc:
            raise StorageError('Failed to %s share %s in pool %s (%s): %s; the immutable attribute needs root '
                               '(CAP_LINUX_IMMUTABLE) and a filesystem that has it (ext4, xfs, btrfs)'
                               % ('fence' if fenced else 'lift the fence of', share['name'], pool, path,
                                  exc.strerror or exc))

    def replica_open_writers(self, pool, share):
        path = self.instance_path(pool, share['name'])
        return [openfiles.describe([item]) for item in self.transport.open_writers([path])]

    def replica_divergence(self, pool, share, replica):
        """Entries of the instance whose change time is after ``replica['base_time']`` (the
        last point it shared): ``find -newerct``. A deletion shows as its changed folder."""
        path = self.instance_path(pool, share['name'])
        since = replica.get('base_time')
        if since is None or not self.transport.is_dir(path):
            return None
        out = self.transport.run(['find', path, '-mindepth', '1', '-newerct', '@%.9f' % float(since), '-print0'],
                                 'list what changed in %s since its last replicated point' % path)[1]
        found = [os.path.relpath(p, path) for p in out.split('\0') if p]
        if self.transport.lstat(path).ctime_ns > float(since) * 1e9:
            found.insert(0, '.')
        return sorted(found)

    def replica_keep(self, pool, share, label):
        folder = self.replication_dir(pool, share)
        final = os.path.join(folder, 'kept-%s' % label)
        if self.transport.is_dir(final):
            return final
        try:
            self.transport.makedirs(folder, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Failed to create %s: %s' % (folder, exc.strerror))
        tmp = final + '.partial'
        if self.transport.lexists(tmp):
            self.remove_tree(tmp, 'remove the partial copy %s' % tmp)
        self.transport.run(['cp', '-a', '--reflink=auto', '--', self.instance_path(pool, share['name']), tmp],
                           'keep share %s in pool %s as %s' % (share['name'], pool, final))
        self.transport.rename(tmp, final)
        return final
