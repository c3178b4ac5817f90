# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume and volume migration services on the collection's own drivers.

No local volume driver is registered yet (drivers/volume/registry.py), so LocalVolumeManager
refuses every request before anything is read, naming itself and the declared drivers. A local
volume manager that drives drivers/volume/ drivers replaces it here.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.services.base import not_served
from ansible_collections.storage.mobility.plugins.module_utils.services.volume import VolumeService
from ansible_collections.storage.mobility.plugins.module_utils.services.volume_migration import VolumeMigrationService


class LocalVolumeManager(VolumeService, VolumeMigrationService):

    def __init__(self, ctx):
        self.ctx = ctx

    def _refusal(self, what):
        return not_served(self.ctx, what, 'volumes', 'cinder')

    def run_info(self, params):
        raise self._refusal('list volumes')

    def present(self, name, size=None, volume_type=None, availability_zone=None, description=None):
        raise self._refusal('manage volume %s' % name)

    def absent(self, name):
        raise self._refusal('manage volume %s' % name)

    def info(self, name=None):
        raise self._refusal('list volumes')

    def pools(self):
        raise self._refusal('list volumes')

    def migrate(self, name, host=None, cluster=None, force_host_copy=False, lock_volume=False):
        raise self._refusal('migrate volume %s' % name)

    def retype(self, name, new_type, migration_policy=None):
        raise self._refusal('migrate volume %s' % name)
