# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Manila calls the managers use, each with the microversion its feature needs.

Migration calls carry ``X-OpenStack-Manila-API-Experimental: True`` below 2.96 (where they left
the experimental API), replica calls below 2.56; the migration progress is a ``GET`` from 2.98
and a ``migration_get_progress`` action before.

Calls go through openstacksdk's shared-file-system proxy (``conn.shared_file_system``) at that
microversion (with that header) wherever the proxy has them; its resources are turned into the
REST dicts the managers read (``rest_fields``). Raw REST is left for what openstacksdk 4.22
lacks, each call saying what: share migration (start, complete, cancel, progress) and
``reset_task_state``, the instances of one share, a share created in a given pool (scheduler
hint), the access list before 2.45, reading and creating replicas (its ShareReplica has no
``availability_zone`` or ``scheduler_hints``) and a promotion with ``quiesce_wait_time``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from urllib.parse import urlencode

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.openstack import (
    OpenStackClient, is_uuid, one_by_name_or_id, parse_version, required, rest_fields)
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
    """Manila's calls through openstacksdk's shared-file-system proxy (raw REST where it lacks them);
    errors come back typed, with status and body."""

    def __init__(self, backend, client=None):
        self.backend = backend
        self.client = client or OpenStackClient(backend, SERVICE)

    # -------------------------------------------------------------------------- plumbing
    def call(self, method, path, doing, body=None, feature=None, minimum=BASE, maximum=None,
             experimental_below=None, not_found_ok=False):
        """A raw REST call, for what the SDK lacks (each caller says what)."""
        version = self.client.microversion(feature or doing, minimum, maximum)
        return self.client.request(method, path, doing, body=body, microversion=version,
                                   headers=self._headers(version, experimental_below), not_found_ok=not_found_ok)

    def sdk(self, method, path, doing, call, feature=None, minimum=BASE, maximum=None, experimental_below=None,
            not_found_ok=False):
        """``call(proxy)`` at the microversion of the feature; ``method`` and ``path`` name the REST call
        the proxy sends (for errors)."""
        version = self.client.microversion(feature or doing, minimum, maximum)
        return self.client.sdk(doing, method, path, call, microversion=version,
                               headers=self._headers(version, experimental_below), not_found_ok=not_found_ok)

    @staticmethod
    def _headers(version, experimental_below):
        if experimental_below is not None and parse_version(version) < experimental_below:
            return {EXPERIMENTAL_HEADER: 'True'}
        return {}

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
        return [rest_fields(s) for s in self.sdk('GET', path, 'list shares',
                                                 lambda proxy: proxy.shares(details=True, **query)) or []]

    def share(self, share_id):
        return rest_fields(self.sdk('GET', '/shares/%s' % _q(share_id), 'read share %s' % share_id,
                                    lambda proxy: proxy.get_share(share_id), not_found_ok=True))

    def find_share(self, ref):
        """The share named ``ref`` (or with id ``ref``); None when there is none."""
        found = [s for s in self.shares(name=ref) if s.get('name') == ref]
        return one_by_name_or_id('share', ref, found, self.share, 'Manila', self.backend)

    def require_share(self, ref):
        return required('share', ref, self.find_share(ref), 'Manila', self.backend)

    def create_share(self, body, only_host=None):
        doing = 'create share %s' % body.get('name')
        if only_host:
            # Raw REST: openstacksdk 4.22's Share declares no scheduler_hints, so create_share would
            # leave the only_host hint out of the request.
            body = dict(body, scheduler_hints={'only_host': only_host})
            return self.call('POST', '/shares', doing, body={'share': body},
                             feature='creating a share in a given pool (scheduler hint only_host)',
                             minimum=ONLY_HOST_HINT)['share']
        return rest_fields(self.sdk('POST', '/shares', doing, lambda proxy: proxy.create_share(**body)))

    def delete_share(self, share):
        self.sdk('DELETE', '/shares/%s' % _q(share['id']), 'delete share %s' % share.get('name'),
                 lambda proxy: proxy.delete_share(share['id'], ignore_missing=False), not_found_ok=True)

    def update_share(self, share, fields):
        return rest_fields(self.sdk('PUT', '/shares/%s' % _q(share['id']), 'update share %s' % share.get('name'),
                                    lambda proxy: proxy.update_share(share['id'], **fields)))

    def set_metadata(self, share, metadata):
        self.sdk('POST', '/shares/%s/metadata' % _q(share['id']), 'set metadata of share %s' % share.get('name'),
                 lambda proxy: proxy.set_share_metadata(share['id'], **metadata))

    def resize(self, share, new_size):
        # The proxy reads the share again and sends extend or shrink from its current size.
        action = 'extend' if new_size > int(share['size']) else 'shrink'
        self.sdk('POST', '/shares/%s/action' % _q(share['id']), '%s share %s to %d GiB' % (action, share.get('name'), new_size),
                 lambda proxy: proxy.resize_share(share['id'], new_size))

    def action(self, share, body, doing, **kwargs):
        """A raw share action (those the SDK lacks)."""
        return self.call('POST', '/shares/%s/action' % _q(share['id']), doing, body=body, **kwargs)

    def export_locations(self, share):
        found = self.sdk('GET', '/shares/%s/export_locations' % _q(share['id']),
                         'read export locations of share %s' % share.get('name'),
                         lambda proxy: proxy.export_locations(share['id']), minimum='2.14', not_found_ok=True)
        return [rest_fields(location) for location in found or []]

    def instances(self, share):
        """The share's instances (administrator call); [] when the policy forbids it."""
        try:
            # Raw REST: openstacksdk 4.22 lists every share's instances (share_instances(), with no
            # share filter) but has no call for GET /shares/{id}/instances.
            data = self.call('GET', '/shares/%s/instances' % _q(share['id']),
                             'list instances of share %s' % share.get('name'), not_found_ok=True)
        except InvalidRequest:
            return []
        return (data or {}).get('share_instances', [])

    # -------------------------------------------------------------------------- access rules
    def access_rules(self, share):
        doing = 'list access rules of share %s' % share.get('name')
        if self.supports(ACCESS_RULES_LIST):
            found = self.sdk('GET', '/share-access-rules?share_id=%s' % _q(share['id']), doing,
                             lambda proxy: proxy.access_rules(share['id']), minimum=ACCESS_RULES_LIST)
            return [rest_fields(rule) for rule in found or []]
        # Raw REST: openstacksdk 4.22 lists access rules only through /share-access-rules (2.45);
        # older clouds answer the access_list action.
        data = self.action(share, {'access_list': None}, doing)
        return data.get('access_list', [])

    def allow_access(self, share, rule):
        fields = {'access_type': rule['access_type'], 'access_to': rule['access_to'],
                  'access_level': rule['access_level']}
        self.sdk('POST', '/shares/%s/action' % _q(share['id']),
                 'allow %s access for %s to share %s' % (rule['access_level'], rule['access_to'], share.get('name')),
                 lambda proxy: proxy.create_access_rule(share['id'], **fields))

    def deny_access(self, share, rule):
        self.sdk('POST', '/shares/%s/action' % _q(share['id']),
                 'deny access for %s to share %s' % (rule.get('access_to'), share.get('name')),
                 lambda proxy: proxy.delete_access_rule(rule['id'], share['id'], ignore_missing=False))

    # -------------------------------------------------------------------------- lookups
    def share_types(self):
        found = self.sdk('GET', '/types?is_public=all', 'list share types',
                         lambda proxy: proxy.share_types(is_public='all'))
        return [rest_fields(t) for t in found or []]

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
            network = self.sdk('GET', '/share-networks/%s' % _q(ref), 'read share network %s' % ref,
                               lambda proxy: proxy.get_share_network(ref), not_found_ok=True)
            if network is not None:
                return rest_fields(network)
        networks = self.sdk('GET', '/share-networks/detail?%s' % urlencode({'name': ref}), 'list share networks',
                            lambda proxy: proxy.share_networks(details=True, name=ref))
        found = [n for n in (rest_fields(n) for n in networks or []) if n.get('name') == ref]
        if not found:
            raise NotFound('Unknown share network %r in Manila of backend %s' % (ref, self.backend.name))
        if len(found) > 1:
            raise InvalidRequest('Share network name %r is ambiguous in Manila of backend %s: use its id' % (ref, self.backend.name))
        return found[0]

    def pools(self):
        """Pool names the scheduler reports, or None when the call is not allowed.

        The scheduler answers from a cache, so a pool that is up may be missing for a while."""
        try:
            found = self.sdk('GET', '/scheduler-stats/pools', 'list pools', lambda proxy: proxy.storage_pools(details=False))
        except StorageError:
            return None
        return [p.get('name') for p in (rest_fields(p) for p in found or []) if p.get('name')]

    def services(self):
        try:
            found = self.sdk('GET', '/services?binary=manila-share', 'list share services',
                             lambda proxy: proxy.services(binary='manila-share'))
        except StorageError:
            return None
        return [rest_fields(s) for s in found or []]

    # -------------------------------------------------------------------------- migration
    # Raw REST: openstacksdk 4.22 has no share migration calls (migration_start, migration_complete,
    # migration_cancel, migration_get_progress / GET migration-progress) and no reset_task_state.
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

    def _replica_sdk(self, method, path, doing, call, feature='share replication', minimum=REPLICATION,
                     not_found_ok=False):
        return self.sdk(method, path, doing, call, feature=feature, minimum=minimum,
                        experimental_below=REPLICATION_GRADUATED, not_found_ok=not_found_ok)

    # Raw REST for reading and creating replicas: openstacksdk 4.22's ShareReplica declares no
    # availability_zone (which the modules return) and no scheduler_hints (the only_host hint),
    # so its share_replicas(), get_share_replica() and create_share_replica() would drop them.
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
        """A raw replica action (those the SDK lacks)."""
        return self._replica_call('POST', '/share-replicas/%s/action' % _q(replica['id']), doing, body=body,
                                  feature=feature, minimum=minimum)

    def _replica_sdk_action(self, replica, doing, call):
        return self._replica_sdk('POST', '/share-replicas/%s/action' % _q(replica['id']), doing, call)

    def delete_replica(self, replica, force=False):
        if force:
            self._replica_sdk_action(replica, 'force-delete replica %s' % replica['id'],
                                     lambda proxy: proxy.delete_share_replica(replica['id'], ignore_missing=False,
                                                                              force=True))
        else:
            self._replica_sdk('DELETE', '/share-replicas/%s' % _q(replica['id']), 'delete replica %s' % replica['id'],
                              lambda proxy: proxy.delete_share_replica(replica['id'], ignore_missing=False),
                              not_found_ok=True)

    def promote_replica(self, replica, quiesce_wait_time=None):
        doing = 'promote replica %s' % replica['id']
        if quiesce_wait_time is not None:
            # Raw REST: openstacksdk 4.22's promote_share_replica() sends no quiesce_wait_time.
            self.replica_action(replica, {'promote': {'quiesce_wait_time': quiesce_wait_time}}, doing,
                                feature='promotion with quiesce_wait_time', minimum=QUIESCE_WAIT_TIME)
        else:
            self._replica_sdk_action(replica, doing, lambda proxy: proxy.promote_share_replica(replica['id']))

    def resync_replica(self, replica):
        self._replica_sdk_action(replica, 'resync replica %s' % replica['id'],
                                 lambda proxy: proxy.resync_share_replica(replica['id']))

    def reset_replica_status(self, replica, status):
        self._replica_sdk_action(replica, 'reset status of replica %s' % replica['id'],
                                 lambda proxy: proxy.reset_share_replica_status(replica['id'], status))

    def reset_replica_state(self, replica, replica_state):
        self._replica_sdk_action(replica, 'reset replica_state of replica %s' % replica['id'],
                                 lambda proxy: proxy.reset_share_replica_state(replica['id'], replica_state))
