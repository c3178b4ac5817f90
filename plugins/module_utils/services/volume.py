# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume service: what modules volume and volume_info ask of a backend.

Implementations: cinder/volumes.py CinderVolumeManager (driver cinder) and managers/volume.py
LocalVolumeManager (the collection's own drivers: no volume driver is registered yet in
drivers/volume/registry.py, so it refuses every request, naming itself and the backends).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc


class VolumeService(abc.ABC):
    """Block volumes; every method returns the module result (changed, volume, actions, diff)."""

    def run(self, params):
        """Module volume: bring volume name to state (present or absent)."""
        if params['state'] == 'absent':
            return self.absent(params['name'])
        return self.present(params['name'], size=params['size'], volume_type=params['volume_type'],
                            availability_zone=params['availability_zone'], description=params['description'])

    def run_info(self, params):
        """Module volume_info: the volumes (all, or the one named name) and the pools."""
        return {'changed': False, 'volumes': self.info(params['name']), 'pools': self.pools()}

    @abc.abstractmethod
    def present(self, name, size=None, volume_type=None, availability_zone=None, description=None):
        """Create the volume, or extend it and update its fields."""

    @abc.abstractmethod
    def absent(self, name):
        """Delete the volume; one that is gone is no change."""

    @abc.abstractmethod
    def info(self, name=None):
        """The views of the volumes (all, or the one named name)."""

    @abc.abstractmethod
    def pools(self):
        """The pools volumes can be placed in."""
