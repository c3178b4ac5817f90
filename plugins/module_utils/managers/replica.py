# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replica service on the collection's own drivers: none of them replicates yet.

LocalReplicaManager refuses every request before anything is read, naming the backends that
would have served it; a local replica manager (snapshots shipped between pools) replaces it here.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.services.base import not_served
from ansible_collections.storage.mobility.plugins.module_utils.services.replica import ReplicaService


class LocalReplicaManager(ReplicaService):

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, params):
        raise self._refusal(params['share'], params.get('pool'))

    def _refusal(self, name, pool=None):
        return not_served(self.ctx, 'manage replicas of share %s' % name, 'replicas', 'manila',
                          None if pool is None else PoolAddress.split(pool))

    def present(self, name, pool=None, replica_id=None, availability_zone=None, status=None, replica_state=None):
        raise self._refusal(name, pool)

    def absent(self, name, pool=None, replica_id=None, force=False):
        raise self._refusal(name, pool)

    def promoted(self, name, pool=None, replica_id=None, force=False, quiesce_wait_time=None):
        raise self._refusal(name, pool)

    def resynced(self, name, pool=None, replica_id=None):
        raise self._refusal(name, pool)

    def info(self, name):
        raise self._refusal(name)
