# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The share service: what modules share, share_info, share_snapshot and pool_info ask of a backend.

Implementations: managers/share.py ShareManager (the collection's own drivers) and
manila/shares.py ManilaShareManager (driver manila). services/registry.py picks one.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc


class ShareService(abc.ABC):
    """Shares and their snapshots; every method returns the module result (changed, share, actions, diff)."""

    def run(self, params):
        """Module share: bring share name to state (present or absent)."""
        if params['state'] == 'absent':
            return self.absent(params['name'])
        return self.present(params['name'], params['pool'], params['size'], params['protocol'],
                            params['share_type'], params['extra_specs'], params['access_rules'],
                            params['description'], params['metadata'])

    def run_snapshot(self, params):
        """Module share_snapshot: bring snapshot name of share to state."""
        if params['state'] == 'absent':
            return self.snapshot_absent(params['share'], params['name'])
        return self.snapshot_present(params['share'], params['name'], params['description'])

    @abc.abstractmethod
    def present(self, name, pool_address, size, protocol, share_type, extra_specs, access_rules,
                description=None, metadata=None):
        """Create the share in pool_address or bring it to the declared size, rules and fields."""

    @abc.abstractmethod
    def absent(self, name):
        """Delete the share; a share that is gone is no change."""

    @abc.abstractmethod
    def info(self, name=None, pool_address=None):
        """The views of the shares named name and/or in pool_address (all without either)."""

    @abc.abstractmethod
    def pools(self, pool_address=None):
        """The pools this implementation serves, with capacity and capabilities."""

    @abc.abstractmethod
    def snapshot_present(self, share_name, snapshot_name, description=None):
        """Take snapshot snapshot_name of the share; an existing one is no change."""

    @abc.abstractmethod
    def snapshot_absent(self, share_name, snapshot_name):
        """Delete the snapshot; a snapshot that is gone is no change."""
