# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Cinder calls the volume managers use, each with the microversion its feature needs.

Reads use the highest microversion both sides speak (the volume detail then carries every field
the cloud has); actions use the lowest one that has the feature: a migration to a cluster needs
3.16, user messages (why an asynchronous request failed) 3.3, cluster listing 3.7.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from urllib.parse import urlencode

from ansible_collections.storage.mobility.plugins.module_utils.errors import NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.openstack import (
    OpenStackClient, one_by_name_or_id, required)
from ansible_collections.storage.mobility.plugins.module_utils.openstack import path_segment as _q

SERVICE = 'block-storage'

BASE = '3.0'
MESSAGES = '3.3'
CLUSTERS = '3.7'
MIGRATE_TO_CLUSTER = '3.16'


def backend_of(address):
    """``host@backend#pool`` -> ``host@backend`` (Cinder's service host of a pool)."""
    return PoolAddress.split(address).host_backend


class CinderAPI(object):
    """Thin wrappers over Cinder's REST API; errors come back typed, with status and body."""

    def __init__(self, backend, client=None):
        self.backend = backend
        self.client = client or OpenStackClient(backend, SERVICE)

    # -------------------------------------------------------------------------- plumbing
    def call(self, method, path, doing, body=None, feature=None, minimum=BASE, maximum=None, not_found_ok=False):
        version = self.client.microversion(feature or doing, minimum, maximum)
        return self.client.request(method, path, doing, body=body, microversion=version, not_found_ok=not_found_ok)

    def require(self, feature, minimum):
        """The microversion for ``feature``; InvalidRequest naming both versions when the cloud is too old."""
        return self.client.microversion(feature, minimum)

    def supports(self, minimum):
        return self.client.supports(minimum)

    def max_version(self):
        return '%d.%d' % self.client.max_version()

    # -------------------------------------------------------------------------- volumes
    def volumes(self, name=None):
        path = '/volumes/detail' + ('?' + urlencode({'name': name}) if name is not None else '')
        return (self.call('GET', path, 'list volumes') or {}).get('volumes', [])

    def volume(self, volume_id):
        data = self.call('GET', '/volumes/%s' % _q(volume_id), 'read volume %s' % volume_id, not_found_ok=True)
        return data['volume'] if data else None

    def find_volume(self, ref):
        """The volume named ``ref`` (or with id ``ref``); None when there is none."""
        # A host copy creates a volume of the same name (migration_status target:<id>), which
        # takes the volume's place at the end; the record left behind is then being deleted
        # (migration_status deleting). Neither is the volume the user means.
        found = [v for v in self.volumes(name=ref) if v.get('name') == ref
                 and not str(v.get('migration_status') or '').startswith('target:')
                 and v.get('migration_status') != 'deleting']
        return one_by_name_or_id('volume', ref, sorted(found, key=lambda v: v['id']), self.volume, 'Cinder', self.backend)

    def require_volume(self, ref):
        return required('volume', ref, self.find_volume(ref), 'Cinder', self.backend)

    def create_volume(self, body):
        return self.call('POST', '/volumes', 'create volume %s' % body.get('name'), body={'volume': body})['volume']

    def update_volume(self, volume, fields):
        return self.call('PUT', '/volumes/%s' % _q(volume['id']), 'update volume %s' % volume.get('name'),
                         body={'volume': fields})['volume']

    def delete_volume(self, volume):
        self.call('DELETE', '/volumes/%s' % _q(volume['id']), 'delete volume %s' % volume.get('name'),
                  not_found_ok=True)

    def action(self, volume, body, doing, **kwargs):
        return self.call('POST', '/volumes/%s/action' % _q(volume['id']), doing, body=body, **kwargs)

    def extend(self, volume, new_size):
        self.action(volume, {'os-extend': {'new_size': new_size}},
                    'extend volume %s to %d GiB' % (volume.get('name'), new_size), maximum=BASE)

    def migrate(self, volume, doing, host=None, cluster=None, force_host_copy=False, lock_volume=False):
        body = {'force_host_copy': bool(force_host_copy), 'lock_volume': bool(lock_volume)}
        if cluster is not None:
            body['cluster'] = cluster
            return self.action(volume, {'os-migrate_volume': body}, doing, feature='a migration to a cluster',
                               minimum=MIGRATE_TO_CLUSTER, maximum=MIGRATE_TO_CLUSTER)
        body['host'] = host
        return self.action(volume, {'os-migrate_volume': body}, doing, maximum=BASE)

    def retype(self, volume, new_type, migration_policy, doing):
        body = {'os-retype': {'new_type': new_type, 'migration_policy': migration_policy}}
        return self.action(volume, body, doing, maximum=BASE)

    # -------------------------------------------------------------------------- lookups
    def volume_types(self):
        data = self.call('GET', '/types?is_public=None', 'list volume types')
        return (data or {}).get('volume_types', [])

    def volume_type(self, ref):
        """The volume type named ``ref`` (or with id ``ref``)."""
        types = self.volume_types()
        for item in types:
            if ref in (item.get('name'), item.get('id')):
                return item
        raise NotFound('Unknown volume type %r in Cinder of backend %s: known types are %s'
                       % (ref, self.backend.name, ', '.join(sorted(t.get('name') or t['id'] for t in types)) or 'none'))

    def availability_zones(self):
        data = self.call('GET', '/os-availability-zone', 'list availability zones')
        return [z.get('zoneName') for z in (data or {}).get('availabilityZoneInfo', []) if z.get('zoneName')]

    def pools(self):
        """Pool names (``host@backend#pool``) the scheduler reports (an administrator call).

        The scheduler answers from what the volume services last reported, so a backend that has
        just started may be missing for a few seconds."""
        data = self.call('GET', '/scheduler-stats/get_pools', 'list the pools of Cinder')
        return sorted(p.get('name') for p in (data or {}).get('pools', []) if p.get('name'))

    def pool_capabilities(self):
        """{pool name: capabilities} from the scheduler (an administrator call)."""
        data = self.call('GET', '/scheduler-stats/get_pools?detail=true', 'read the pools of Cinder')
        return dict((p['name'], p.get('capabilities') or {}) for p in (data or {}).get('pools', []) if p.get('name'))

    def clusters(self):
        """Names of the clusters of volume services (3.7)."""
        data = self.call('GET', '/clusters?binary=cinder-volume', 'list the clusters of Cinder',
                         feature='listing clusters', minimum=CLUSTERS)
        return sorted(c.get('name') for c in (data or {}).get('clusters', []) if c.get('name'))

    def messages(self, volume):
        """Cinder's user messages about ``volume``, newest first ([] when the cloud has none)."""
        if not self.supports(MESSAGES):
            return []
        try:
            data = self.call('GET', '/messages?%s' % urlencode({'resource_uuid': volume['id']}),
                             'read the messages about volume %s' % volume.get('name'), minimum=MESSAGES)
        except StorageError:
            return []
        found = [m for m in (data or {}).get('messages', []) if m.get('resource_uuid') == volume['id']]
        return sorted(found, key=lambda m: m.get('created_at') or '', reverse=True)
