# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The share migration service: what module share_migration asks of a backend.

Two implementations fit the two state machines to this one interface: LocalShareMigrations wraps
managers/share_migration.py ShareMigrationManager (the collection's own drivers, driver-assisted
or host-assisted), ManilaShareMigrations wraps manila/migration.py ManilaMigrationManager. Each
refuses the options its state machine cannot honour, naming itself; the wait options come from
ctx.waits.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import ShareMigrationManager
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.services.base import local_backends, refuse_options
from ansible_collections.storage.mobility.plugins.module_utils.states import MIGRATION_FLAGS

#: the migration flags as the module names them, in the order Manila documents them


class ShareMigrationService(abc.ABC):
    """Two-phase migration of one share; every method returns the module result."""

    def run(self, params):
        """Module share_migration: bring the migration of share to state."""
        name, state = params['share'], params['state']
        if state == 'reset':
            return self.reset(name, None if params['task_state'] == 'none' else params['task_state'])
        if state == 'completed':
            return self.complete(name, params['destination_pool'], copy_report=params['copy_report'],
                                 open_writers_wait=params['open_writers_wait'])
        if state == 'cancelled':
            return self.cancel(name)
        return self.start(name, params['destination_pool'], dict((f, params[f]) for f in MIGRATION_FLAGS),
                          force_host_assisted=params['force_host_assisted_migration'],
                          new_share_type=params['new_share_type'], new_share_network=params['new_share_network'],
                          copy_job=params['copy_job'], copy_report=params['copy_report'])

    @abc.abstractmethod
    def start(self, name, destination, flags, force_host_assisted=False, new_share_type=None,
              new_share_network=None, copy_job=None, copy_report=None):
        """Phase 1: start (or attach to) the migration of share name to pool destination."""

    @abc.abstractmethod
    def complete(self, name, destination=None, copy_report=None, open_writers_wait=0):
        """Phase 2: switch the share over to the destination."""

    @abc.abstractmethod
    def cancel(self, name):
        """Cancel a migration whose phase 2 has not begun; the source stays the share."""

    @abc.abstractmethod
    def reset(self, name, task_state):
        """Administrator reset of the share's task_state (None clears it)."""


class LocalShareMigrations(ShareMigrationService):
    """Migrations between pools of the collection's own drivers."""

    def __init__(self, ctx, manager=None):
        self.ctx = ctx
        self.manager = manager or ShareMigrationManager(ctx)

    def start(self, name, destination, flags, force_host_assisted=False, new_share_type=None,
              new_share_network=None, copy_job=None, copy_report=None):
        refuse_options('migrate share %s' % name, local_backends(self.ctx, PoolAddress.split(destination)),
                       [('new_share_network', new_share_network)], 'which has no share networks')
        waits = self.ctx.waits
        return self.manager.start(name, destination, flags, force_host_assisted, new_share_type,
                                  wait=waits.wait, timeout=waits.timeout, sleep=waits.sleep,
                                  copy_job=copy_job, copy_report=copy_report)

    def complete(self, name, destination=None, copy_report=None, open_writers_wait=0):
        return self.manager.complete(name, destination, copy_report=copy_report, open_writers_wait=open_writers_wait)

    def cancel(self, name):
        return self.manager.cancel(name)

    def reset(self, name, task_state):
        return self.manager.reset(name, task_state)


class ManilaShareMigrations(ShareMigrationService):
    """Migrations that Manila runs (backend with driver manila)."""

    def __init__(self, ctx, backend, manager=None):
        self.ctx = ctx
        self.backend = backend
        if manager is None:
            # Imported when a Manila backend serves the request: a run on local pools never needs it.
            from ansible_collections.storage.mobility.plugins.module_utils.manila.migration import ManilaMigrationManager
            manager = ManilaMigrationManager(ctx, backend)
        self.manager = manager

    def run(self, params):
        if params['copy_job'] or params['copy_report']:
            raise InvalidRequest('Cannot use copy_job or copy_report with share %s on backend %s: Manila copies '
                                 'host-assisted migrations with its own data service' % (params['share'], self.backend.name))
        return super(ManilaShareMigrations, self).run(params)

    def _waits(self):
        waits = self.ctx.waits
        return dict(wait=waits.wait, timeout=waits.timeout, sleep=waits.sleep)

    def start(self, name, destination, flags, force_host_assisted=False, new_share_type=None,
              new_share_network=None, copy_job=None, copy_report=None):
        refuse_options('migrate share %s' % name, 'backend %s with driver manila' % self.backend.name,
                       [('copy_job', copy_job), ('copy_report', copy_report)],
                       'Manila copies host-assisted migrations with its own data service')
        if new_share_type and new_share_type.get('extra_specs'):
            raise InvalidRequest('Cannot migrate share %s: in Manila new_share_type names an existing share type; '
                                 'its extra specs are defined there, not in new_share_type.extra_specs' % name)
        return self.manager.start(name, destination, flags, force_host_assisted,
                                  new_share_type['name'] if new_share_type else None, new_share_network,
                                  **self._waits())

    def complete(self, name, destination=None, copy_report=None, open_writers_wait=0):
        refuse_options('complete the migration of share %s' % name, 'backend %s with driver manila' % self.backend.name,
                       [('copy_report', copy_report)], 'Manila copies host-assisted migrations with its own data service')
        return self.manager.complete(name, destination, **self._waits())

    def cancel(self, name):
        return self.manager.cancel(name, **self._waits())

    def reset(self, name, task_state):
        return self.manager.reset(name, task_state)
