# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Cinder calls the volume managers use, each with the microversion its feature needs.

Reads use the highest microversion both sides speak (the volume detail then carries every field
the cloud has); actions use the lowest one that has the feature: a migration to a cluster needs
3.16, user messages (why an asynchronous request failed) 3.3, cluster listing 3.7.

Every call goes through openstacksdk's block-storage proxy (``conn.block_storage``) at that
microversion; the volumes and the other resources it returns are turned into the REST dicts the
managers read (``rest_fields``). Raw REST is left for what openstacksdk 4.22 lacks: the user
messages about one volume (its ``messages`` query has no ``resource_uuid`` filter) and the
service's version document (see openstack.py).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from urllib.parse import urlencode

from ansible_collections.storage.mobility.plugins.module_utils.errors import NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.openstack import (
    OpenStackClient, one_by_name_or_id, required, rest_fields)
from ansible_collections.storage.mobility.plugins.module_utils.openstack import path_segment as _q

SERVICE = 'block-storage'

BASE = '3.0'
MESSAGES = '3.3'
CLUSTERS = '3.7'
MIGRATE_TO_CLUSTER = '3.16'


#: REST fields of a volume that openstacksdk's Volume does not declare, and the declared field with
#: the same value (Cinder fills both from the volume's migration_status)
VOLUME_ALIASES = (('migration_status', 'os-vol-mig-status-attr:migstat'),)


def backend_of(address):
    """``host@backend#pool`` -> ``host@backend`` (Cinder's service host of a pool)."""
    return PoolAddress.split(address).host_backend


class CinderAPI(object):
    """Cinder's calls through openstacksdk's block-storage proxy; errors come back typed, with status and body."""

    def __init__(self, backend, client=None):
        self.backend = backend
        self.client = client or OpenStackClient(backend, SERVICE)

    # -------------------------------------------------------------------------- plumbing
    def call(self, method, path, doing, body=None, feature=None, minimum=BASE, maximum=None, not_found_ok=False):
        """A raw REST call, for what the SDK lacks (each caller says what)."""
        version = self.client.microversion(feature or doing, minimum, maximum)
        return self.client.request(method, path, doing, body=body, microversion=version, not_found_ok=not_found_ok)

    def sdk(self, method, path, doing, call, feature=None, minimum=BASE, maximum=None, not_found_ok=False):
        """``call(proxy)`` at the microversion of the feature; ``method`` and ``path`` name the REST call
        the proxy sends (for errors)."""
        version = self.client.microversion(feature or doing, minimum, maximum)
        return self.client.sdk(doing, method, path, call, microversion=version, not_found_ok=not_found_ok)

    def require(self, feature, minimum):
        """The microversion for ``feature``; InvalidRequest naming both versions when the cloud is too old."""
        return self.client.microversion(feature, minimum)

    def supports(self, minimum):
        return self.client.supports(minimum)

    def max_version(self):
        return '%d.%d' % self.client.max_version()

    @staticmethod
    def _volume(resource):
        return rest_fields(resource, VOLUME_ALIASES)

    # -------------------------------------------------------------------------- volumes
    def volumes(self, name=None):
        query = {'name': name} if name is not None else {}
        path = '/volumes/detail' + ('?' + urlencode(query) if query else '')
        found = self.sdk('GET', path, 'list volumes', lambda proxy: proxy.volumes(details=True, **query))
        return [self._volume(v) for v in found or []]

    def volume(self, volume_id):
        found = self.sdk('GET', '/volumes/%s' % _q(volume_id), 'read volume %s' % volume_id,
                         lambda proxy: proxy.get_volume(volume_id), not_found_ok=True)
        return self._volume(found)

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
        return self._volume(self.sdk('POST', '/volumes', 'create volume %s' % body.get('name'),
                                     lambda proxy: proxy.create_volume(**body)))

    def update_volume(self, volume, fields):
        return self._volume(self.sdk('PUT', '/volumes/%s' % _q(volume['id']), 'update volume %s' % volume.get('name'),
                                     lambda proxy: proxy.update_volume(volume['id'], **fields)))

    def delete_volume(self, volume):
        self.sdk('DELETE', '/volumes/%s' % _q(volume['id']), 'delete volume %s' % volume.get('name'),
                 lambda proxy: proxy.delete_volume(volume['id'], ignore_missing=False), not_found_ok=True)

    def _action(self, volume, doing, call, **kwargs):
        return self.sdk('POST', '/volumes/%s/action' % _q(volume['id']), doing, call, **kwargs)

    def extend(self, volume, new_size):
        self._action(volume, 'extend volume %s to %d GiB' % (volume.get('name'), new_size),
                     lambda proxy: proxy.extend_volume(volume['id'], new_size), maximum=BASE)

    def migrate(self, volume, doing, host=None, cluster=None, force_host_copy=False, lock_volume=False):
        options = {'force_host_copy': bool(force_host_copy), 'lock_volume': bool(lock_volume)}
        if cluster is not None:
            return self._action(volume, doing, lambda proxy: proxy.migrate_volume(volume['id'], cluster=cluster, **options),
                                feature='a migration to a cluster', minimum=MIGRATE_TO_CLUSTER, maximum=MIGRATE_TO_CLUSTER)
        return self._action(volume, doing, lambda proxy: proxy.migrate_volume(volume['id'], host=host, **options),
                            maximum=BASE)

    def retype(self, volume, new_type, migration_policy, doing):
        return self._action(volume, doing, lambda proxy: proxy.retype_volume(volume['id'], new_type,
                                                                             migration_policy=migration_policy),
                            maximum=BASE)

    # -------------------------------------------------------------------------- lookups
    def volume_types(self):
        # is_public=None: every type an administrator may see, public or not
        found = self.sdk('GET', '/types?is_public=None', 'list volume types',
                         lambda proxy: proxy.types(is_public='None'))
        return [rest_fields(t) for t in found or []]

    def volume_type(self, ref):
        """The volume type named ``ref`` (or with id ``ref``)."""
        types = self.volume_types()
        for item in types:
            if ref in (item.get('name'), item.get('id')):
                return item
        raise NotFound('Unknown volume type %r in Cinder of backend %s: known types are %s'
                       % (ref, self.backend.name, ', '.join(sorted(t.get('name') or t['id'] for t in types)) or 'none'))

    def availability_zones(self):
        found = self.sdk('GET', '/os-availability-zone', 'list availability zones',
                         lambda proxy: proxy.availability_zones())
        return [z.get('zoneName') for z in (rest_fields(z) for z in found or []) if z.get('zoneName')]

    def _pools(self, doing):
        found = self.sdk('GET', '/scheduler-stats/get_pools?detail=True', doing, lambda proxy: proxy.backend_pools())
        return [rest_fields(p) for p in found or []]

    def pools(self):
        """Pool names (``host@backend#pool``) the scheduler reports (an administrator call).

        The scheduler answers from what the volume services last reported, so a backend that has
        just started may be missing for a few seconds."""
        return sorted(p.get('name') for p in self._pools('list the pools of Cinder') if p.get('name'))

    def pool_capabilities(self):
        """{pool name: capabilities} from the scheduler (an administrator call)."""
        return dict((p['name'], p.get('capabilities') or {}) for p in self._pools('read the pools of Cinder')
                    if p.get('name'))

    def clusters(self):
        """Names of the clusters of volume services (3.7)."""
        found = self.sdk('GET', '/clusters?binary=cinder-volume', 'list the clusters of Cinder',
                         lambda proxy: proxy.clusters(details=False, binary='cinder-volume'),
                         feature='listing clusters', minimum=CLUSTERS)
        return sorted(c.get('name') for c in (rest_fields(c) for c in found or []) if c.get('name'))

    def messages(self, volume):
        """Cinder's user messages about ``volume``, newest first ([] when the cloud has none)."""
        if not self.supports(MESSAGES):
            return []
        try:
            # Raw REST: openstacksdk 4.22's block_storage.messages() refuses a resource_uuid filter
            # (its Message query parameters are project_id, sort, limit, offset and marker only).
            data = self.call('GET', '/messages?%s' % urlencode({'resource_uuid': volume['id']}),
                             'read the messages about volume %s' % volume.get('name'), minimum=MESSAGES)
        except StorageError:
            return []
        found = [m for m in (data or {}).get('messages', []) if m.get('resource_uuid') == volume['id']]
        return sorted(found, key=lambda m: m.get('created_at') or '', reverse=True)
