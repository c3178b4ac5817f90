# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Share replicas in Manila (module share_replica): add, promote, resync, delete, reset by an admin.

The refusals of the reference come back before anything is sent: a share without
``replication_type``, the deletion of the last active replica, the promotion of an
``out_of_sync`` or ``error`` replica without ``force`` (administrator intent), a reset of the
active replica's ``replica_state``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.manila.api import QUIESCE_WAIT_TIME, ManilaAPI
from ansible_collections.storage.mobility.plugins.module_utils.services.replica import ReplicaService
from ansible_collections.storage.mobility.plugins.module_utils.wait import wait_for

ACTIVE = 'active'
IN_SYNC = 'in_sync'
OUT_OF_SYNC = 'out_of_sync'
GONE = 'deleted'
REPLICA_STATUSES = ('available', 'error', 'creating', 'deleting', 'error_deleting')
RESETTABLE_REPLICA_STATES = (ACTIVE, IN_SYNC, OUT_OF_SYNC, 'error')
# what waits read: the replica_state once the replica is available, its status before
PENDING = ('creating', 'replication_change', 'deleting', 'available', OUT_OF_SYNC, IN_SYNC, ACTIVE)
FAILED = ('error', 'error_deleting', 'replica_error', GONE)


def replica_view(replica):
    if not replica:
        return {}
    return {'id': replica.get('id'), 'share_id': replica.get('share_id'), 'pool': replica.get('host'),
            'status': replica.get('status'), 'replica_state': replica.get('replica_state'),
            'availability_zone': replica.get('availability_zone'),
            'share_network_id': replica.get('share_network_id'), 'created_at': replica.get('created_at'),
            'updated_at': replica.get('updated_at')}


def replica_condition(replica):
    """One word for a wait: the status while it is not ``available``, else the ``replica_state``."""
    if replica.get('status') == GONE:
        return GONE
    status = replica.get('status')
    if status != 'available':
        return status
    state = replica.get('replica_state')
    return 'replica_error' if state == 'error' else state


class ManilaReplicaManager(ReplicaService):

    def __init__(self, ctx, backend, api=None):
        self.ctx = ctx
        self.backend = backend
        self.api = api or ManilaAPI(backend)

    # -------------------------------------------------------------------------- helpers
    def _share(self, name, need_replication=True):
        share = self.api.require_share(name)
        if need_replication and not share.get('replication_type'):
            raise InvalidRequest('Share %s cannot have replicas: its share type %s has no replication_type '
                                 '(readable, writable or dr); migrate it to a replicated share type first'
                                 % (name, share.get('share_type_name') or share.get('share_type')))
        return share

    @staticmethod
    def _target(replicas, pool, replica_id):
        if replica_id:
            return [r for r in replicas if r.get('id') == replica_id]
        if pool:
            return [r for r in replicas if r.get('host') == pool]
        return []

    @staticmethod
    def _need_target(name, state, pool, replica_id):
        if not pool and not replica_id:
            raise InvalidRequest('Cannot make a replica of share %s %s: name it with pool (host@backend#pool) '
                                 'or replica_id' % (name, state))

    def _existing_target(self, name, state, verb, pool, replica_id):
        """``(share, replicas, replica)`` for the replica named by ``pool`` or ``replica_id``; NotFound
        (listing the replicas there are) when the share has no such replica."""
        self._need_target(name, state, pool, replica_id)
        share = self._share(name)
        replicas = self.api.replicas(share)
        found = self._target(replicas, pool, replica_id)
        if not found:
            raise NotFound('Cannot %s a replica of share %s: it has no replica %s (replicas: %s)'
                           % (verb, name, replica_id or 'in %s' % pool,
                              ', '.join('%s in %s' % (r['id'], r.get('host')) for r in replicas) or 'none'))
        return share, replicas, found[0]

    def _wait(self, replica, success, timeout, sleep, what):
        def fetch():
            return self.api.replica(replica['id']) or dict(replica, status=GONE)

        return wait_for(fetch, replica_condition, success, PENDING, FAILED, timeout, sleep, what)

    def _result(self, changed, share, replica, actions, before=None, after=None):
        replicas = [] if self.ctx.check_mode and changed else self.api.replicas(share)
        view = after if after is not None else replica_view(replica)
        return {'changed': changed, 'replica': view, 'replicas': [replica_view(r) for r in replicas] or None,
                'share': {'name': share.get('name'), 'id': share.get('id'),
                          'replication_type': share.get('replication_type')},
                'actions': actions,
                'diff': {'before': before if before is not None else view, 'after': view}}

    # -------------------------------------------------------------------------- states
    def present(self, name, pool=None, replica_id=None, availability_zone=None, status=None, replica_state=None):
        wait, timeout, sleep = self.ctx.waits
        share = self._share(name)
        replicas = self.api.replicas(share)
        found = self._target(replicas, pool, replica_id)
        if not found and not pool and not replica_id:
            found = [r for r in replicas if r.get('replica_state') != ACTIVE]
        if found:
            return self._existing(share, found[0], status, replica_state, wait, timeout, sleep)
        if replica_id:
            raise NotFound('Unknown replica %s of share %s: its replicas are %s'
                           % (replica_id, name, ', '.join(r['id'] for r in replicas) or 'none'))
        if status or replica_state:
            raise InvalidRequest('Cannot reset the status or replica_state of a replica of share %s in %s: there is '
                                 'no such replica' % (name, pool or 'any pool'))
        if share.get('status') != 'available':
            raise InvalidRequest('Cannot add a replica to share %s: its status is %s, not available'
                                 % (name, share.get('status')))
        actions = ['create a replica of share %s%s' % (name, ' in %s' % pool if pool else '')]
        if self.ctx.check_mode:
            if pool:
                self.api.client.microversion('creating a replica in a given pool (scheduler hint only_host)', '2.67')
            after = {'id': None, 'share_id': share['id'], 'pool': pool, 'status': 'available', 'replica_state': IN_SYNC}
            return self._result(True, share, None, actions, before={}, after=after)
        replica = self.api.create_replica(share, host=pool, availability_zone=availability_zone)
        if wait:
            replica = self._wait(replica, (IN_SYNC,), timeout, sleep, 'replica %s of share %s' % (replica['id'], name))
        return self._result(True, share, replica, actions, before={})

    def _existing(self, share, replica, status, replica_state, wait, timeout, sleep):
        actions = []
        if replica_state and replica_state != replica.get('replica_state'):
            if replica.get('replica_state') == ACTIVE:
                raise InvalidRequest('Cannot reset the replica_state of replica %s of share %s: it is the active '
                                     'replica (promote another replica instead)' % (replica['id'], share['name']))
            actions.append('reset replica_state of replica %s from %s to %s'
                           % (replica['id'], replica.get('replica_state'), replica_state))
        if status and status != replica.get('status'):
            actions.append('reset status of replica %s from %s to %s' % (replica['id'], replica.get('status'), status))
        before = replica_view(replica)
        if not actions:
            if wait and not self.ctx.check_mode and replica.get('status') == 'creating':
                replica = self._wait(replica, (IN_SYNC, ACTIVE), timeout, sleep,
                                     'replica %s of share %s' % (replica['id'], share['name']))
            return self._result(False, share, replica, [])
        if self.ctx.check_mode:
            after = dict(before, status=status or before['status'], replica_state=replica_state or before['replica_state'])
            return self._result(True, share, replica, actions, before=before, after=after)
        if status and status != replica.get('status'):
            self.api.reset_replica_status(replica, status)
        if replica_state and replica_state != replica.get('replica_state'):
            self.api.reset_replica_state(replica, replica_state)
        return self._result(True, share, self.api.replica(replica['id']), actions, before=before)

    def promoted(self, name, pool=None, replica_id=None, force=False, quiesce_wait_time=None):
        wait, timeout, sleep = self.ctx.waits
        share, replicas, replica = self._existing_target(name, 'promoted', 'promote', pool, replica_id)
        if replica.get('replica_state') == ACTIVE:
            if replica.get('status') == 'replication_change' and wait and not self.ctx.check_mode:
                replica = self._wait(replica, (ACTIVE,), timeout, sleep, 'promotion of replica %s' % replica['id'])
            return self._result(False, share, replica, [])
        if replica.get('status') != 'available':
            raise InvalidRequest('Cannot promote replica %s of share %s: its status is %s, not available'
                                 % (replica['id'], name, replica.get('status')))
        if replica.get('replica_state') in (OUT_OF_SYNC, 'error') and not force:
            raise InvalidRequest('Cannot promote replica %s of share %s: its replica_state is %s; promoting a replica '
                                 'that is not in_sync may lose data and needs administrator intent (force=true)'
                                 % (replica['id'], name, replica.get('replica_state')))
        if quiesce_wait_time is not None:
            self.api.client.microversion('promotion with quiesce_wait_time', QUIESCE_WAIT_TIME)
        active = [r for r in replicas if r.get('replica_state') == ACTIVE]
        actions = ['promote replica %s of share %s in %s%s' % (
            replica['id'], name, replica.get('host'),
            ' (the active replica in %s becomes a secondary)' % active[0].get('host') if active else '')]
        before = replica_view(replica)
        if self.ctx.check_mode:
            return self._result(True, share, replica, actions, before=before, after=dict(before, replica_state=ACTIVE))
        self.api.promote_replica(replica, quiesce_wait_time)
        if wait:
            replica = self._wait(replica, (ACTIVE,), timeout, sleep, 'promotion of replica %s' % replica['id'])
        else:
            replica = self.api.replica(replica['id']) or replica
        return self._result(True, share, replica, actions, before=before)

    def resynced(self, name, pool=None, replica_id=None, force=False):
        wait, timeout, sleep = self.ctx.waits
        if force:
            raise InvalidRequest('Cannot resync a replica of share %s with force=true: Manila resyncs without it '
                                 '(force applies to promoted and absent there)' % name)
        share, dummy, replica = self._existing_target(name, 'resynced', 'resync', pool, replica_id)
        if replica.get('replica_state') == ACTIVE:
            raise InvalidRequest('Cannot resync replica %s of share %s: it is the active replica; resync brings a '
                                 'secondary replica up to date with it' % (replica['id'], name))
        if replica.get('replica_state') == IN_SYNC and replica.get('status') == 'available':
            return self._result(False, share, replica, [])
        actions = ['resync replica %s of share %s in %s (now %s)'
                   % (replica['id'], name, replica.get('host'), replica.get('replica_state'))]
        before = replica_view(replica)
        if self.ctx.check_mode:
            return self._result(True, share, replica, actions, before=before, after=dict(before, replica_state=IN_SYNC))
        self.api.resync_replica(replica)
        if wait:
            replica = self._wait(replica, (IN_SYNC,), timeout, sleep, 'resync of replica %s' % replica['id'])
        else:
            replica = self.api.replica(replica['id']) or replica
        return self._result(True, share, replica, actions, before=before)

    def absent(self, name, pool=None, replica_id=None, force=False):
        wait, timeout, sleep = self.ctx.waits
        self._need_target(name, 'absent', pool, replica_id)
        share = self.api.find_share(name)
        if share is None:
            return {'changed': False, 'replica': {}, 'replicas': None, 'share': {}, 'actions': [],
                    'diff': {'before': {}, 'after': {}}}
        replicas = self.api.replicas(share) if share.get('replication_type') else []
        found = self._target(replicas, pool, replica_id)
        if not found:
            return self._result(False, share, None, [], before={}, after={})
        replica = found[0]
        if replica.get('replica_state') == ACTIVE and len([r for r in replicas if r.get('replica_state') == ACTIVE]) < 2:
            raise InvalidRequest('Cannot delete replica %s of share %s: it is the last active replica; promote another '
                                 'replica first, or delete the share' % (replica['id'], name))
        prefix = 'force-' if force else ''
        actions = ['%sdelete replica %s of share %s in %s' % (prefix, replica['id'], name, replica.get('host'))]
        before = replica_view(replica)
        if self.ctx.check_mode:
            return self._result(True, share, None, actions, before=before, after={})
        if replica.get('status') != 'deleting':
            self.api.delete_replica(replica, force=force)
        if wait:
            self._wait(replica, (GONE,), timeout, sleep, 'deletion of replica %s' % replica['id'])
        return self._result(True, share, None, actions, before=before, after={})

    def info(self, name):
        share = self._share(name)
        return [replica_view(r) for r in self.api.replicas(share)]
