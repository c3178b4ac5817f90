# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Export helpers: how users on this machine reach a share.

``bind``: the share is bind-mounted at ``<export root>/<share>``, a path that never changes, read-only
or read-write as its access rules (or a read-only migration phase) say; no rule means not exported.
Under the bind mount lies a read-only base, so the path is never a writable folder of the export
root's filesystem, not even for the instant of a switchover.
``none``: the share is reached at its path inside the pool; access levels are recorded, not enforced.

Both reach the storage host through the backend's transport (mounts, the mount table, files).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles
from ansible_collections.storage.mobility.plugins.module_utils.transport.mounts import BaseUnsupported

RW = 'rw'
RO = 'ro'

# The read-only base under every bind export: an empty tmpfs, recognised by this source name.
BASE_SOURCE = 'storage-mobility-base'
BASE_OPTIONS = (('size', '4k'), ('mode', '0755'))


def access_mode(rules, read_only_phase=False):
    """The export mode the rules call for: ``rw``, ``ro`` or None (not exported)."""
    active = [r for r in rules or [] if r.get('state', 'active') != 'deleting']
    if not active:
        return None
    if read_only_phase:
        return RO
    return RW if any(r.get('access_level') == RW for r in active) else RO


class NoneExport(object):
    """Users reach the share at its path in the pool; nothing is mounted."""

    name = 'none'
    enforced = False

    def __init__(self, backend, transport):
        self.backend = backend
        self.transport = transport

    def location(self, share_name, instance_path):
        return instance_path

    def state(self, share_name, instance_path):
        return {'helper': self.name, 'path': instance_path, 'mode': None, 'enforced': False,
                'exported': self.transport.is_dir(instance_path)}

    def plan(self, share_name, instance_path, mode):
        return []

    def apply(self, share_name, instance_path, mode):
        return False

    def remove(self, share_name, instance_path):
        return False


def is_base(entry):
    """True for the read-only base this module mounts under every bind export."""
    return entry.get('fstype') == 'tmpfs' and entry.get('source') == BASE_SOURCE


def _mode_of(entry):
    return RO if 'ro' in entry.get('options', '').split(',') else RW


class BindExport(object):
    """A bind mount of the share instance at ``<export root>/<share>``; needs root.

    The bind mount sits on a read-only base, an empty tmpfs mounted at the same path first. The
    export path therefore never shows the export root's own (writable) folder: while one instance
    is unmounted and the next one mounted (a switchover), or while the share is not exported, a
    write through the export path fails with EROFS instead of landing in a folder that the next
    bind mount hides. An export made before the base existed gets one slid beneath its bind mount
    (Linux 6.5 and later) on its next apply; an older kernel gets the base stacked on top and the
    bind mount again above it, so that even then the path is never uncovered.
    """

    name = 'bind'
    enforced = True

    def __init__(self, backend, transport):
        self.backend = backend
        self.transport = transport
        self.root = backend.export_root

    def location(self, share_name, instance_path):
        return os.path.join(self.root, share_name)

    def _layers(self, path):
        """(below, base, above): the mounts stacked at ``path`` under the highest base, the base
        (or None), and the mounts above it, each lowest first. Without a base all are above."""
        stack = self.transport.stacked_mounts(path)
        bases = [i for i, entry in enumerate(stack) if is_base(entry)]
        if not bases:
            return [], None, stack
        top_base = bases[-1]
        return stack[:top_base], stack[top_base], stack[top_base + 1:]

    def _current(self, export_path, instance_path):
        """(mounted, serves_instance, mode, has_base) of the export path now: mounted and mode are
        those of the share mount on top, if any."""
        below, base, above = self._layers(export_path)
        if not above:
            return False, False, None, base is not None
        serves = len(above) == 1 and self.transport.same_inode(export_path, instance_path)
        return True, serves, _mode_of(above[-1]), base is not None

    def state(self, share_name, instance_path):
        path = self.location(share_name, instance_path)
        mounted, serves, mode, has_base = self._current(path, instance_path)
        below = self._layers(path)[0]
        return {'helper': self.name, 'path': path, 'mode': mode if serves else None, 'enforced': True,
                'exported': mounted and serves, 'read_only_base': has_base,
                'hidden_mounts': len(below)}

    def plan(self, share_name, instance_path, mode):
        """Actions needed to bring the export to ``mode`` (``rw``, ``ro`` or None)."""
        path = self.location(share_name, instance_path)
        mounted, serves, current, has_base = self._current(path, instance_path)
        actions = []
        if mounted and not has_base:
            actions.append('mount a read-only base beneath export %s' % path)
        if mounted and (not serves or mode is None):
            actions.append('unmount export %s' % path)
            mounted = False
        if mode is None:
            return actions
        if not mounted and not has_base and not actions:
            actions.append('mount a read-only base at %s' % path)
        if not mounted:
            actions.append('bind-mount %s at %s' % (instance_path, path))
            current = RW
        if current != mode:
            actions.append('remount export %s %s' % (path, 'read-only' if mode == RO else 'read-write'))
        return actions

    def _require_root(self, share_name):
        if not self.transport.is_root():
            raise StorageError('Cannot export share %s with the bind helper of backend %s: mounting needs root; '
                               'run as root (become: true) or use export helper none'
                               % (share_name, self.backend.name))

    def _mount_base(self, share_name, path):
        self.transport.run(['mount', '-t', 'tmpfs', '-o', ','.join(['ro'] + ['%s=%s' % kv for kv in BASE_OPTIONS]
                                                                   + ['nosuid', 'nodev', 'noexec']),
                            '--', BASE_SOURCE, path],
                           'mount the read-only base of export %s of share %s' % (path, share_name))

    def _add_base(self, share_name, path):
        """Give a mounted export without a base one, never uncovering the path."""
        try:
            self.transport.mount_base_beneath(path, BASE_SOURCE, BASE_OPTIONS)
        except BaseUnsupported:
            # Older kernels: the base goes on top (the share is briefly read-only and empty,
            # never writable), the share's bind mount above it again; the old bind mount stays
            # hidden below until the export is removed.
            self._mount_base(share_name, path)
        except OSError as exc:
            raise StorageError('Failed to mount the read-only base beneath export %s of share %s: %s'
                               % (path, share_name, exc.strerror))

    def _unmount_top(self, share_name, path, what):
        """Unmount the mount on top of ``path``; a busy export stays as it is and the error names
        the processes using it."""
        try:
            self.transport.run(['umount', path], '%s %s of share %s' % (what, path, share_name))
        except StorageError as exc:
            using = self.transport.users([path])
            if not using:
                raise
            raise StorageError('Failed to %s %s of share %s: it is busy, used by %s; the export still serves '
                               'what it served before: those processes must close their files there and leave the '
                               'folder, then run again (%s)'
                               % (what, path, share_name, openfiles.describe(using), exc), **exc.details)

    def apply(self, share_name, instance_path, mode):
        """Make the export serve ``instance_path`` in ``mode``; return whether anything changed.

        Order: the base exists before anything on top of it is unmounted, so unmounting the share
        uncovers the read-only base; the new instance is then mounted on the base."""
        path = self.location(share_name, instance_path)
        actions = self.plan(share_name, instance_path, mode)
        if not actions:
            return False
        self._require_root(share_name)
        mounted, serves, current, has_base = self._current(path, instance_path)
        if mounted and not has_base:
            self._add_base(share_name, path)
            mounted, serves, current, has_base = self._current(path, instance_path)
        if mounted and (not serves or mode is None):
            for _entry in self._layers(path)[2]:
                self._unmount_top(share_name, path, 'unmount export')
            mounted = False
        if mode is None:
            return True
        if not has_base:
            try:
                self.transport.makedirs(path, 0o755)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Failed to create export path %s of share %s: %s'
                                       % (path, share_name, exc.strerror))
            self._mount_base(share_name, path)
        if not mounted:
            self.transport.run(['mount', '--bind', '--', instance_path, path],
                               'bind-mount share %s at %s' % (share_name, path))
            current = RW
        if current != mode:
            self.transport.run(['mount', '-o', 'remount,bind,%s' % mode, '--', path],
                               'remount export %s of share %s %s' % (path, share_name, mode))
        return True

    def remove(self, share_name, instance_path):
        """Unmount every layer (the share, its base, anything hidden below) and remove the export
        path (only an empty, unmounted folder is removed)."""
        path = self.location(share_name, instance_path)
        stack = self.transport.stacked_mounts(path)
        changed = False
        if stack:
            self._require_root(share_name)
            for _entry in stack:
                self._unmount_top(share_name, path, 'unmount export')
                changed = True
        if self.transport.is_dir(path) and not self.transport.is_mount_point(path):
            try:
                self.transport.rmdir(path)
                changed = True
            except OSError:
                pass
        return changed


EXPORT_HELPERS = {'none': NoneExport, 'bind': BindExport}


def export_helper(backend, transport):
    """The export helper of ``backend``, reaching its host through ``transport``."""
    return EXPORT_HELPERS[backend.export_helper](backend, transport)
