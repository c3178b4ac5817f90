# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume migration service: what module volume_migrate asks of a backend.

Implementations: cinder/volumes.py CinderVolumeManager (driver cinder: a migration to a host or
cluster, or a retype) and managers/volume.py LocalVolumeManager (driver file: a migration to a
pool with progress, ``rate_limit``, and ``state: cancelled``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.services.base import refuse_options

#: what a retype may do with the volume's data (Cinder's migration_policy)
MIGRATION_POLICIES = ('never', 'on-demand')


def check_request(name, host=None, cluster=None, force_host_copy=False, lock_volume=False, new_type=None,
                  migration_policy=None):
    """Refuse conflicting or missing options before anything is read or changed (every implementation)."""
    if host and cluster:
        raise InvalidRequest('Cannot migrate volume %s: give host or cluster, not both' % name)
    if new_type and (host or cluster):
        raise InvalidRequest('Cannot migrate volume %s: new_type (a retype) and %s (a migration) are two '
                             'requests; run them one after the other' % (name, 'host' if host else 'cluster'))
    if new_type and (force_host_copy or lock_volume):
        raise InvalidRequest('Cannot retype volume %s: %s belong to a migration to a host or cluster; a retype '
                             'moves the volume as migration_policy says'
                             % (name, ' and '.join(o for o, v in (('force_host_copy', force_host_copy),
                                                                  ('lock_volume', lock_volume)) if v)))
    if migration_policy and not new_type:
        raise InvalidRequest('Cannot migrate volume %s: migration_policy applies to a retype (new_type)' % name)
    if migration_policy and migration_policy not in MIGRATION_POLICIES:
        raise InvalidRequest('Invalid migration_policy %r: choose one of %s'
                             % (migration_policy, ', '.join(MIGRATION_POLICIES)))
    if not (host or cluster or new_type):
        raise InvalidRequest('Cannot migrate volume %s: give a destination (host or cluster) or a new_type' % name)


class VolumeMigrationService(abc.ABC):
    """Moving a volume: to another host or cluster (migrate), or to another volume type (retype)."""

    #: True for an implementation that takes rate_limit and state cancelled
    serves_local_migration_options = False

    def run_migrate(self, params):
        """Module volume_migrate: the options are checked first, then the volume moves (or its
        running migration is cancelled)."""
        name = params['volume']
        if not self.serves_local_migration_options:
            refuse_options('migrate volume %s' % name, 'driver cinder', [('rate_limit', params.get('rate_limit')),
                                                                         ('async_migration', params.get('async_migration'))],
                           'which copies at its own pace; it applies to backends with driver file')
            if params.get('state') == 'cancelled':
                raise InvalidRequest('Cannot cancel the migration of volume %s: Cinder has no way to cancel a '
                                     'migration; state cancelled applies to backends with driver file' % name)
        if params.get('state') == 'cancelled':
            given = [o for o in ('host', 'cluster', 'new_type', 'migration_policy') if params.get(o)]
            if given:
                raise InvalidRequest('Cannot cancel the migration of volume %s: %s belong to starting a migration'
                                     % (name, ', '.join(given)))
            return self.cancel(name)
        check_request(name, host=params['host'], cluster=params['cluster'], force_host_copy=params['force_host_copy'],
                      lock_volume=params['lock_volume'], new_type=params['new_type'],
                      migration_policy=params['migration_policy'])
        if params['new_type']:
            return self.retype(name, params['new_type'], migration_policy=params['migration_policy'])
        extra = {}
        if params.get('rate_limit'):
            extra['rate_limit'] = params['rate_limit']
        if params.get('async_migration'):
            extra['async_migration'] = True
        return self.migrate(name, host=params['host'], cluster=params['cluster'],
                            force_host_copy=params['force_host_copy'], lock_volume=params['lock_volume'], **extra)

    def cancel(self, name):
        """Stop the running migration of volume name; the source stays the volume (refused in run_migrate
        for implementations that cannot)."""
        raise NotImplementedError

    @abc.abstractmethod
    def migrate(self, name, host=None, cluster=None, force_host_copy=False, lock_volume=False):
        """Move volume name to host (host@backend[#pool]) or cluster."""

    @abc.abstractmethod
    def retype(self, name, new_type, migration_policy=None):
        """Give volume name the type new_type, moving it if migration_policy allows."""
