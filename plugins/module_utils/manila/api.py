# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Manila calls the managers use, each with the microversion its feature needs.

Migration calls carry ``X-OpenStack-Manila-API-Experimental: True`` below 2.96 (where they left
the experimental API), replica calls below 2.56; the migration progress is a ``GET`` from 2.98
and a ``migration_get_progress`` action before.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from urllib.parse import urlencode

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.openstack import (
    OpenStackClient, is_uuid, one_by_name_or_id, parse_version, required)
from ansible_collections.storage.mobility.plugins.module_utils.openstack import path_segment as _q

EXPERIMENTAL_HEADER = 'X-OpenStack-Manila-API-Experimental'
SERVICE = 'shared-file-system'

#: feature -> (minimum microversion, experimental below this version or None)
BASE = '2.7'
MIGRATION_START = '2.29'
MIGRATION_ACTIONS = '2.22'
MIGRATION_GRADUATED = (2, 96)
MIGRATION_PROGRESS_GET = '2.98'
REPLICATION = '2.11'
REPLICATION_GRADUATED = (2, 56)
ONLY_HOST_HINT = '2.67'
QUIESCE_WAIT_TIME = '2.75'
ACCESS_RULES_LIST = '2.45'


class ManilaAPI(object):
    """Thin wrappers over Manila's REST API; errors come back typed, with status and body."""

    def __init__(self, backend, client=None):
        self.backend = backend
        self.client = client or OpenStackClient(backend, SERVICE)

    # -------------------------------------------------------------------------- plumbing
    def call(self, method, path, doing, body=None, feature=None, minimum=BASE, maximum=None,
             experimental_below=None, not_found_ok=False):
        version = self.client.microversion(feature or doing, minimum, maximum)
        headers = {}
        if experimental_below is not None and parse_version(version) < experimental_below:
            headers[EXPERIMENTAL_HEADER] = 'True'
        return self.client.request(method, path, doing, body=body, microversion=version, headers=headers,
                                   not_found_ok=not_found_ok)

    def supports(self, minimum):
        return self.client.supports(minimum)

    def max_version(self):
        return '%d.%d' % self.client.max_version()

    # -------------------------------------------------------------------------- shares
    def shares(self, name=None, host=None):
        query = {}
        if name is not None:
            query['name'] = name
        if host is not None:
            query['host'] = host
        path = '/shares/detail' + ('?' + urlencode(sorted(query.items())) if query else '')
        return (self.call('GET', path, 'list shares') or {}).get('shares', [])

    def share(self, share_id):
        data = self.call('GET', '/shares/%s' % _q(share_id), 'read share %s' % share_id, not_found_ok=True)
        return data['share'] if data else None

    def find_share(self, ref):
        """The share named ``ref`` (or with id ``ref``); None when there is none."""
        found = [s for s in self.shares(name=ref) if s.get('name') == ref]
        return one_by_name_or_id('share', ref, found, self.share, 'Manila', self.backend)

    def require_share(self, ref):
        return required('share', ref, self.find_share(ref), 'Manila', self.backend)

    def create_share(self, body, only_host=None):
        minimum = BASE
        if only_host:
            body = dict(body, scheduler_hints={'only_host': only_host})
            minimum = ONLY_HOST_HINT
        return self.call('POST', '/shares', 'create share %s' % body.get('name'), body={'share': body},
                         feature='creating a share in a given pool (scheduler hint only_host)' if only_host else None,
                         minimum=minimum)['share']

    def delete_share(self, share):
        self.call('DELETE', '/shares/%s' % _q(share['id']), 'delete share %s' % share.get('name'), not_found_ok=True)

    def update_share(self, share, fields):
        return self.call('PUT', '/shares/%s' % _q(share['id']), 'update share %s' % share.get('name'),
                         body={'share': fields})['share']

    def set_metadata(self, share, metadata):
        self.call('POST', '/shares/%s/metadata' % _q(share['id']), 'set metadata of share %s' % share.get('name'),
                  body={'metadata': metadata})

    def resize(self, share, new_size):
        action = 'extend' if new_size > int(share['size']) else 'shrink'
        self.action(share, {action: {'new_size': new_size}}, '%s share %s to %d GiB' % (action, share.get('name'), new_size))

    def action(self, share, body, doing, **kwargs):
        return self.call('POST', '/shares/%s/action' % _q(share['id']), doing, body=body, **kwargs)

    def export_locations(self, share):
        data = self.call('GET', '/shares/%s/export_locations' % _q(share['id']),
                         'read export locations of share %s' % share.get('name'), minimum='2.14', not_found_ok=True)
        return (data or {}).get('export_locations', [])

    def instances(self, share):
        """The share's instances (administrator call); [] when the policy forbids it."""
        try:
            data = self.call('GET', '/shares/%s/instances' % _q(share['id']),
                             'list instances of share %s' % share.get('name'), not_found_ok=True)
        except InvalidRequest:
            return []
        return (data or {}).get('share_instances', [])

    # -------------------------------------------------------------------------- access rules
    def access_rules(self, share):
        if self.supports(ACCESS_RULES_LIST):
            data = self.call('GET', '/share-access-rules?share_id=%s' % _q(share['id']),
                             'list access rules of share %s' % share.get('name'), minimum=ACCESS_RULES_LIST)
            return data.get('access_list', [])
        data = self.action(share, {'access_list': None}, 'list access rules of share %s' % share.get('name'))
        return data.get('access_list', [])

    def allow_access(self, share, rule):
        body = {'allow_access': {'access_type': rule['access_type'], 'access_to': rule['access_to'],
                                 'access_level': rule['access_level']}}
        self.action(share, body, 'allow %s access for %s to share %s'
                    % (rule['access_level'], rule['access_to'], share.get('name')))

    def deny_access(self, share, rule):
        self.action(share, {'deny_access': {'access_id': rule['id']}},
                    'deny access for %s to share %s' % (rule.get('access_to'), share.get('name')))

    # -------------------------------------------------------------------------- lookups
    def share_types(self):
        data = self.call('GET', '/types?is_public=all', 'list share types')
        return data.get('share_types', [])

    def share_type(self, ref):
        """The share type named ``ref`` (or with id ``ref``)."""
        types = self.share_types()
        for item in types:
            if ref in (item.get('name'), item.get('id')):
                return item
        raise NotFound('Unknown share type %r in Manila of backend %s: known types are %s'
                       % (ref, self.backend.name, ', '.join(sorted(t.get('name') or t['id'] for t in types)) or 'none'))

    def share_network(self, ref):
        if is_uuid(ref):
            data = self.call('GET', '/share-networks/%s' % _q(ref), 'read share network %s' % ref, not_found_ok=True)
            if data:
                return data['share_network']
        data = self.call('GET', '/share-networks/detail?%s' % urlencode({'name': ref}), 'list share networks')
        found = [n for n in data.get('share_networks', []) if n.get('name') == ref]
        if not found:
            raise NotFound('Unknown share network %r in Manila of backend %s' % (ref, self.backend.name))
        if len(found) > 1:
            raise InvalidRequest('Share network name %r is ambiguous in Manila of backend %s: use its id' % (ref, self.backend.name))
        return found[0]

    def pools(self):
        """Pool names the scheduler reports, or None when the call is not allowed.

        The scheduler answers from a cache, so a pool that is up may be missing for a while."""
        try:
            data = self.call('GET', '/scheduler-stats/pools', 'list pools')
        except StorageError:
            return None
        return [p.get('name') for p in (data or {}).get('pools', []) if p.get('name')]

    def services(self):
        try:
            data = self.call('GET', '/services?binary=manila-share', 'list share services')
        except StorageError:
            return None
        return (data or {}).get('services', [])

    # -------------------------------------------------------------------------- migration
    def migration_start(self, share, body):
        self.action(share, {'migration_start': body}, 'start migration of share %s to %s' % (share.get('name'), body['host']),
                    feature='share migration', minimum=MIGRATION_START, experimental_below=MIGRATION_GRADUATED)

    def migration_complete(self, share):
        self.action(share, {'migration_complete': None}, 'complete migration of share %s' % share.get('name'),
                    feature='share migration', minimum=MIGRATION_ACTIONS, experimental_below=MIGRATION_GRADUATED)

    def migration_cancel(self, share):
        self.action(share, {'migration_cancel': None}, 'cancel migration of share %s' % share.get('name'),
                    feature='share migration', minimum=MIGRATION_ACTIONS, experimental_below=MIGRATION_GRADUATED)

    def migration_progress(self, share):
        """``{'task_state': ..., 'total_progress': ...}`` from the progress call of this microversion."""
        doing = 'read migration progress of share %s' % share.get('name')
        if self.supports(MIGRATION_PROGRESS_GET):
            return self.call('GET', '/shares/%s/migration-progress' % _q(share['id']), doing,
                             minimum=MIGRATION_PROGRESS_GET)
        return self.action(share, {'migration_get_progress': None}, doing, feature='share migration',
                           minimum=MIGRATION_ACTIONS, experimental_below=MIGRATION_GRADUATED)

    def reset_task_state(self, share, task_state):
        self.action(share, {'reset_task_state': {'task_state': task_state}},
                    'reset task_state of share %s' % share.get('name'), feature='resetting task_state',
                    minimum=MIGRATION_ACTIONS, experimental_below=MIGRATION_GRADUATED)

    # -------------------------------------------------------------------------- replicas
    def _replica_call(self, method, path, doing, body=None, feature='share replication', minimum=REPLICATION,
                      not_found_ok=False):
        return self.call(method, path, doing, body=body, feature=feature, minimum=minimum,
                         experimental_below=REPLICATION_GRADUATED, not_found_ok=not_found_ok)

    def replicas(self, share):
        data = self._replica_call('GET', '/share-replicas/detail?share_id=%s' % _q(share['id']),
                                  'list replicas of share %s' % share.get('name'))
        return data.get('share_replicas', [])

    def replica(self, replica_id):
        data = self._replica_call('GET', '/share-replicas/%s' % _q(replica_id), 'read share replica %s' % replica_id,
                                  not_found_ok=True)
        return data['share_replica'] if data else None

    def create_replica(self, share, host=None, availability_zone=None):
        body = {'share_id': share['id']}
        minimum, feature = REPLICATION, 'share replication'
        if availability_zone:
            body['availability_zone'] = availability_zone
        if host:
            body['scheduler_hints'] = {'only_host': host}
            minimum, feature = ONLY_HOST_HINT, 'creating a replica in a given pool (scheduler hint only_host)'
        doing = 'create a replica of share %s%s' % (share.get('name'), ' in %s' % host if host else '')
        return self._replica_call('POST', '/share-replicas', doing, body={'share_replica': body},
                                  feature=feature, minimum=minimum)['share_replica']

    def replica_action(self, replica, body, doing, feature='share replication', minimum=REPLICATION):
        return self._replica_call('POST', '/share-replicas/%s/action' % _q(replica['id']), doing, body=body,
                                  feature=feature, minimum=minimum)

    def delete_replica(self, replica, force=False):
        doing = 'delete replica %s' % replica['id']
        if force:
            self.replica_action(replica, {'force_delete': None}, 'force-delete replica %s' % replica['id'])
        else:
            self._replica_call('DELETE', '/share-replicas/%s' % _q(replica['id']), doing, not_found_ok=True)

    def promote_replica(self, replica, quiesce_wait_time=None):
        doing = 'promote replica %s' % replica['id']
        if quiesce_wait_time is not None:
            self.replica_action(replica, {'promote': {'quiesce_wait_time': quiesce_wait_time}}, doing,
                                feature='promotion with quiesce_wait_time', minimum=QUIESCE_WAIT_TIME)
        else:
            self.replica_action(replica, {'promote': None}, doing)

    def resync_replica(self, replica):
        self.replica_action(replica, {'resync': None}, 'resync replica %s' % replica['id'])

    def reset_replica_status(self, replica, status):
        self.replica_action(replica, {'reset_status': {'status': status}},
                            'reset status of replica %s' % replica['id'])

    def reset_replica_state(self, replica, replica_state):
        self.replica_action(replica, {'reset_replica_state': {'replica_state': replica_state}},
                            'reset replica_state of replica %s' % replica['id'])
