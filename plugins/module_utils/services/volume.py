# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume service: what modules volume and volume_info ask of a backend.

Implementations: cinder/volumes.py CinderVolumeManager (driver cinder) and managers/volume.py
LocalVolumeManager (the collection's own volume drivers, drivers/volume/: driver file). Only the
local one takes ``pool`` and ``format`` and attaches volumes (states attached and detached).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.services.base import refuse_options

#: options of module volume that only the collection's own volume drivers take
LOCAL_OPTIONS = ('pool', 'format')


class VolumeService(abc.ABC):
    """Block volumes; every method returns the module result (changed, volume, actions, diff)."""

    #: True for an implementation that takes LOCAL_OPTIONS and attaches volumes
    serves_local_options = False

    def run(self, params):
        """Module volume: bring volume name to state (present, absent, attached or detached)."""
        name, state = params['name'], params['state']
        local = dict((k, params.get(k)) for k in LOCAL_OPTIONS if params.get(k) is not None)
        if not self.serves_local_options:
            refuse_options('manage volume %s' % name, 'driver cinder', sorted(local.items()),
                           "which places volumes itself (volume_type); they apply to backends with driver file")
            if state in ('attached', 'detached'):
                raise InvalidRequest('Cannot %s volume %s: driver cinder attaches volumes to servers through Nova; '
                                     'state attached and detached apply to backends with driver file'
                                     % ('attach' if state == 'attached' else 'detach', name))
        if state == 'absent':
            return self.absent(name)
        if state == 'attached':
            return self.attach(name)
        if state == 'detached':
            return self.detach(name)
        return self.present(name, size=params['size'], volume_type=params['volume_type'],
                            availability_zone=params['availability_zone'], description=params['description'],
                            **local)

    def attach(self, name):
        """Attach volume name (status in-use); implementations that cannot are refused in run()."""
        raise NotImplementedError

    def detach(self, name):
        """Detach volume name (status available)."""
        raise NotImplementedError

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
