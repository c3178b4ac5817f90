# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Export helpers: how users on this machine reach a share.

``bind``: the share is bind-mounted at ``<export root>/<share>``, a path that never changes, read-only
or read-write as its access rules (or a read-only migration phase) say; no rule means not exported.
``none``: the share is reached at its path inside the pool; access levels are recorded, not enforced.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.mounts import is_mount_point, same_inode as _same_inode

RW = 'rw'
RO = 'ro'


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

    def __init__(self, backend, runner):
        self.backend = backend
        self.runner = runner

    def location(self, share_name, instance_path):
        return instance_path

    def state(self, share_name, instance_path):
        return {'helper': self.name, 'path': instance_path, 'mode': None, 'enforced': False,
                'exported': os.path.isdir(instance_path)}

    def plan(self, share_name, instance_path, mode):
        return []

    def apply(self, share_name, instance_path, mode):
        return False

    def remove(self, share_name, instance_path):
        return False


class BindExport(object):
    """A bind mount of the share instance at ``<export root>/<share>``; needs root."""

    name = 'bind'
    enforced = True

    def __init__(self, backend, runner):
        self.backend = backend
        self.runner = runner
        self.root = backend.export_root

    def location(self, share_name, instance_path):
        return os.path.join(self.root, share_name)

    def _current(self, export_path, instance_path):
        """(mounted, serves_instance, mode) of the export path now."""
        if not is_mount_point(export_path):
            return False, False, None
        mode = RO if os.statvfs(export_path).f_flag & os.ST_RDONLY else RW
        return True, _same_inode(export_path, instance_path), mode

    def state(self, share_name, instance_path):
        path = self.location(share_name, instance_path)
        mounted, serves, mode = self._current(path, instance_path)
        return {'helper': self.name, 'path': path, 'mode': mode if serves else None, 'enforced': True,
                'exported': mounted and serves}

    def plan(self, share_name, instance_path, mode):
        """Actions needed to bring the export to ``mode`` (``rw``, ``ro`` or None)."""
        path = self.location(share_name, instance_path)
        mounted, serves, current = self._current(path, instance_path)
        actions = []
        if mounted and (not serves or mode is None):
            actions.append('unmount export %s' % path)
            mounted = False
        if mode is None:
            return actions
        if not mounted:
            actions.append('bind-mount %s at %s' % (instance_path, path))
            current = RW
        if current != mode:
            actions.append('remount export %s %s' % (path, 'read-only' if mode == RO else 'read-write'))
        return actions

    def _require_root(self, share_name):
        if os.geteuid() != 0:
            raise StorageError('Cannot export share %s with the bind helper of backend %s: mounting needs root; '
                               'run as root (become: true) or use export helper none'
                               % (share_name, self.backend.name))

    def apply(self, share_name, instance_path, mode):
        """Make the export serve ``instance_path`` in ``mode``; return whether anything changed."""
        path = self.location(share_name, instance_path)
        actions = self.plan(share_name, instance_path, mode)
        if not actions:
            return False
        self._require_root(share_name)
        mounted, serves, current = self._current(path, instance_path)
        if mounted and (not serves or mode is None):
            self.runner.run(['umount', path], 'unmount export %s of share %s' % (path, share_name))
            mounted = False
        if mode is None:
            return True
        if not mounted:
            try:
                os.makedirs(path, 0o755)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Failed to create export path %s of share %s: %s'
                                       % (path, share_name, exc.strerror))
            self.runner.run(['mount', '--bind', '--', instance_path, path],
                            'bind-mount share %s at %s' % (share_name, path))
            current = RW
        if current != mode:
            self.runner.run(['mount', '-o', 'remount,bind,%s' % mode, '--', path],
                            'remount export %s of share %s %s' % (path, share_name, mode))
        return True

    def remove(self, share_name, instance_path):
        """Unmount and remove the export path (only an empty, unmounted folder is removed)."""
        path = self.location(share_name, instance_path)
        changed = self.apply(share_name, instance_path, None)
        if os.path.isdir(path) and not is_mount_point(path):
            try:
                os.rmdir(path)
                changed = True
            except OSError:
                pass
        return changed


EXPORT_HELPERS = {'none': NoneExport, 'bind': BindExport}


def export_helper(backend, runner):
    return EXPORT_HELPERS[backend.export_helper](backend, runner)
