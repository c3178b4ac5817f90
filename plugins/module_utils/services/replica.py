# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replica service: what module share_replica asks of a backend.

Implementations: manila/replicas.py ManilaReplicaManager (driver manila) and
managers/replica.py LocalReplicaManager (the collection's own drivers posix and btrfs).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest

#: the options of share_replica that only some states use, and those states
STATE_OPTIONS = (('quiesce_wait_time', ('promoted',)), ('availability_zone', ('present',)))


def check_state_options(params):
    """Refuse options that the requested state does not use, before anything is read or changed."""
    state = params['state']
    misplaced = [o for o in ('status', 'replica_state') if params[o] and state != 'present']
    misplaced += [o for o, used in STATE_OPTIONS if params[o] is not None and state not in used]
    if misplaced:
        raise InvalidRequest('Cannot make a replica of share %s %s: %s apply to other states (see the module '
                             'documentation)' % (params['share'], state, ', '.join(misplaced)))


class ReplicaService(abc.ABC):
    """Replicas of one share; every method returns the module result (changed, replica, replicas, share, actions)."""

    def run(self, params):
        """Module share_replica: bring the replica (pool or replica_id) of share to state."""
        check_state_options(params)
        state, share = params['state'], params['share']
        target = dict(pool=params['pool'], replica_id=params['replica_id'])
        if state == 'absent':
            return self.absent(share, force=params['force'], **target)
        if state == 'promoted':
            return self.promoted(share, force=params['force'], quiesce_wait_time=params['quiesce_wait_time'], **target)
        if state == 'resynced':
            return self.resynced(share, force=params['force'], **target)
        return self.present(share, availability_zone=params['availability_zone'], status=params['status'],
                            replica_state=params['replica_state'], **target)

    @abc.abstractmethod
    def present(self, name, pool=None, replica_id=None, availability_zone=None, status=None, replica_state=None):
        """A replica of share name in pool (or the one with replica_id); reset its status/state if asked."""

    @abc.abstractmethod
    def absent(self, name, pool=None, replica_id=None, force=False):
        """Delete the replica; one that is gone is no change."""

    @abc.abstractmethod
    def promoted(self, name, pool=None, replica_id=None, force=False, quiesce_wait_time=None):
        """Make the replica the active one."""

    @abc.abstractmethod
    def resynced(self, name, pool=None, replica_id=None, force=False):
        """Bring a secondary replica up to date with the active one (``force``: replace what an
        old active replica got after its last replicated point; where that is supported)."""

    @abc.abstractmethod
    def info(self, name):
        """The views of the replicas of share name."""
