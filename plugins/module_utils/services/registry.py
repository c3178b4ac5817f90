# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that picks which implementation serves a request, from the declared backends.

Each resource kind has an OpenStack implementation (used when a backend with that driver is
declared and the request does not name the collection's own storage) and a local one (the
collection's own drivers). The rule is Context.openstack_backend: a pool that names a declared
local backend, or a share found in the local records, goes to the local implementation; one
OpenStack backend per driver may be declared in a run. A new resource kind, or a new
implementation of one, is one row of IMPLEMENTATIONS.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

# Each implementation is imported when a request needs it: every module call compiles what it
# imports, and a run on local pools has no use for the OpenStack clients (nor a share run for the
# volume managers).


def _manila_shares():
    from ansible_collections.storage.mobility.plugins.module_utils.manila.shares import ManilaShareManager
    return ManilaShareManager


def _local_shares():
    from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
    return ShareManager


def _manila_migrations():
    from ansible_collections.storage.mobility.plugins.module_utils.services.share_migration import ManilaShareMigrations
    return ManilaShareMigrations


def _local_migrations():
    from ansible_collections.storage.mobility.plugins.module_utils.services.share_migration import LocalShareMigrations
    return LocalShareMigrations


def _manila_replicas():
    from ansible_collections.storage.mobility.plugins.module_utils.manila.replicas import ManilaReplicaManager
    return ManilaReplicaManager


def _local_replicas():
    from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager
    return LocalReplicaManager


def _cinder_volumes():
    from ansible_collections.storage.mobility.plugins.module_utils.cinder.volumes import CinderVolumeManager
    return CinderVolumeManager


def _local_volumes():
    from ansible_collections.storage.mobility.plugins.module_utils.managers.volume import LocalVolumeManager
    return LocalVolumeManager


#: resource kind -> (OpenStack driver, loader of its implementation, loader of the collection's own
#: implementation); a loader imports and returns the class.
IMPLEMENTATIONS = {
    'share': ('manila', _manila_shares, _local_shares),
    'share_migration': ('manila', _manila_migrations, _local_migrations),
    'replica': ('manila', _manila_replicas, _local_replicas),
    'volume': ('cinder', _cinder_volumes, _local_volumes),
    'volume_migration': ('cinder', _cinder_volumes, _local_volumes),
}


def service(ctx, kind, pool=None, share=None):
    """The implementation of ``kind`` that serves a request about ``pool`` and/or ``share``."""
    driver, openstack, local = IMPLEMENTATIONS[kind]
    backend = ctx.openstack_backend(driver, pool=pool, share=share)
    return local()(ctx) if backend is None else openstack()(ctx, backend)


def local_service(ctx, kind):
    """The collection's own implementation of ``kind``, whatever else is declared."""
    return IMPLEMENTATIONS[kind][2]()(ctx)


def share_info(ctx, name=None, pool=None):
    """Module share_info: the shares the serving implementation knows; without a filter, every one's."""
    chosen = service(ctx, 'share', pool=pool, share=name)
    shares = chosen.info(name, pool)
    if not isinstance(chosen, _local_shares()) and name is None and pool is None and ctx.backends.local():
        shares += local_service(ctx, 'share').info(name, pool)
    return {'changed': False, 'shares': shares}
