# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Share migration through Manila's own API (module share_migration, backends with driver manila).

Manila keeps the state (``task_state`` and the share instances); this manager validates what it
can before calling (conflicting flags, unknown pool, busy share), makes every state idempotent
(a completed migration to the same pool, a finished phase 1, a finished cancel are no change;
a rerun attaches to a running step), predicts in check mode and waits with progress.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.manila.api import ManilaAPI
from ansible_collections.storage.mobility.plugins.module_utils.manila.shares import ManilaShareManager, wait_share
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress

# The flags, phase sets and transitions are those of states.py; Manila allows the reference's own
# transitions only (states.may_transition(..., reference=True)).
FLAGS = states.MIGRATION_FLAGS
PHASE1_DONE = states.PHASE1_DONE
PHASE1_PENDING = states.PHASE1_PENDING
PHASE1_FAILED = states.PHASE1_FAILED
#: task states in which Manila answers the progress call with a figure from the driver or data service
LIVE_PROGRESS_STATES = states.LIVE_PROGRESS_STATES
# What a wait sees while Manila completes or cancels: the step's own states, then its goal with the
# share not yet available again (see _settled).
COMPLETE_PENDING = states.sources_of(states.MIGRATION_COMPLETING, reference=True) + (
    states.MIGRATION_COMPLETING, 'migration_success_pending')
CANCEL_PENDING = states.sources_of(states.MIGRATION_CANCEL_IN_PROGRESS, reference=True) + (
    states.MIGRATION_CANCEL_IN_PROGRESS, 'migration_cancelled_pending')


def _settled(goal):
    """A state reader for waits: ``goal`` counts only once the share is ``available`` again."""
    def state_of(share):
        task_state = share.get('task_state')
        if task_state == goal and share.get('status') != 'available':
            return goal + '_pending'
        return task_state
    return state_of


def _destination(address):
    return PoolAddress.service(address, 'destination pool', 'Manila', 'devhost@alpha#pool1')


class ManilaMigrationManager(object):
    """share_migration's states for a share in Manila."""

    def __init__(self, ctx, backend, api=None):
        self.ctx = ctx
        self.backend = backend
        self.api = api or ManilaAPI(backend)
        self.shares = ManilaShareManager(ctx, backend, self.api)

    # -------------------------------------------------------------------------- helpers
    def _result(self, changed, share, actions, before=None, progress=None, migration=None, predicted=False):
        """The module result; ``share`` is a Manila share, or with ``predicted`` an already built view."""
        view = share if predicted else self.shares.view(share)
        if migration is None:
            migration = view.get('migration')
        result = {'changed': changed, 'task_state': view.get('task_state'),
                  'total_progress': view.get('total_progress'), 'migration': migration or {},
                  'share': view, 'actions': actions,
                  'diff': {'before': before if before is not None else view, 'after': view}}
        if progress:
            result['progress'] = progress
        return result

    def _joined(self, share, waiter, wait, timeout, sleep):
        """A rerun while Manila is at the step already: no change, its end waited for when asked."""
        if wait and not self.ctx.check_mode:
            share = waiter(share, timeout, sleep)
        return self._result(False, share, [])

    def _step(self, share, actions, running, call, waiter, wait, timeout, sleep, **predicted):
        """Phase 2 or a cancel: predicted in check mode (``predicted`` holds the share's values it
        would end with), else asked of Manila and waited for with ``waiter`` when ``wait``."""
        before = self.shares.view(share)
        if self.ctx.check_mode:
            after = dict(before, total_progress=100, **predicted)
            return dict(self._result(True, after, actions, before=before, migration=running, predicted=True),
                        task_state=predicted['task_state'], total_progress=100)
        call(share)
        if wait:
            share = waiter(share, timeout, sleep)
        else:
            share = self.api.share(share['id']) or share
        return self._result(True, share, actions, before=before, migration=running)

    def _running(self, share):
        return ManilaShareManager.migration_view(share, self.api.instances(share)) or {}

    def check_destination(self, destination):
        """Refuse an unknown destination before Manila accepts it and fails later in the scheduler."""
        address = _destination(destination)
        host_backend, pool = address.host_backend, address.pool
        pools = self.api.pools()
        if pools:
            if destination in pools:
                return
            same_backend = sorted(p for p in pools if PoolAddress.split(p).host_backend == host_backend)
            if same_backend:
                raise NotFound('Unknown pool %r of backend %s in destination pool %s: Manila reports the pools %s'
                               % (pool, host_backend, destination, ', '.join(same_backend)))
        services = self.api.services()
        if services is None:
            return
        known = sorted(set(s.get('host') for s in services if s.get('host')))
        if host_backend not in known:
            raise NotFound('Unknown host@backend %r in destination pool %s: Manila runs share services on %s'
                           % (host_backend, destination, ', '.join(known) or 'no host'))

    def _wait_phase1(self, share, timeout, sleep):
        """Wait until phase 1 is done; returns (share, progress seen)."""
        seen = []

        def on_poll(current):
            task_state = current.get('task_state')
            figure = states.total_progress(task_state)
            if task_state in LIVE_PROGRESS_STATES:
                try:
                    figure = states.total_progress(task_state, self.api.migration_progress(current).get('total_progress'))
                except (InvalidRequest, NotFound):
                    pass  # the step ended between the two reads
            entry = {'task_state': task_state, 'total_progress': figure}
            if not seen or seen[-1] != entry:
                seen.append(entry)

        done = wait_share(self.api, share, PHASE1_DONE, timeout, sleep,
                          'phase 1 of the migration of share %s' % share.get('name'),
                          pending=PHASE1_PENDING, failure=PHASE1_FAILED,
                          state_of=lambda s: s.get('task_state'), on_poll=on_poll)
        return done, seen

    # -------------------------------------------------------------------------- started
    def start(self, name, destination, flags, force_host_assisted_migration=False, new_share_type=None,
              new_share_network=None, wait=True, timeout=3600, sleep=5):
        asked = [f for f in FLAGS if flags.get(f)]
        if force_host_assisted_migration and asked:
            raise InvalidRequest('Cannot migrate share %s: force_host_assisted_migration cannot be combined with %s '
                                 '(a host-assisted migration keeps none of them)' % (name, ', '.join(asked)))
        _destination(destination)
        share = self.api.require_share(name)
        task_state = share.get('task_state')
        running = self._running(share) if task_state else {}
        target = running.get('destination_pool')
        type_id = self.api.share_type(new_share_type)['id'] if new_share_type else None
        network_id = self.api.share_network(new_share_network)['id'] if new_share_network else None
        if task_state == states.MIGRATION_SUCCESS and share.get('host') == destination:
            return self._result(False, share, [])
        if task_state in PHASE1_DONE + PHASE1_PENDING + (states.MIGRATION_COMPLETING,):
            if target not in (None, destination):
                raise Busy('Cannot migrate share %s to %s: it is busy with task %s of a migration to %s'
                           % (name, destination, task_state, target))
            if task_state in PHASE1_PENDING and wait and not self.ctx.check_mode:
                share, seen = self._wait_phase1(share, timeout, sleep)
                return self._result(False, share, [], progress=seen)
            return self._result(False, share, [])
        if states.is_busy(task_state):
            raise Busy('Cannot migrate share %s: it is busy with task %s' % (name, task_state))
        if share.get('has_replicas'):
            raise InvalidRequest('Cannot migrate share %s: it has replicas; delete them first (share_replica '
                                 'state=absent)' % name)
        if share.get('status') != 'available':
            raise InvalidRequest('Cannot migrate share %s: its status is %s, not available' % (name, share.get('status')))
        if share.get('host') == destination and not type_id and not network_id:
            raise InvalidRequest('Cannot migrate share %s to %s: it already lives there and neither new_share_type '
                                 'nor new_share_network is given; nothing to migrate' % (name, destination))
        self.check_destination(destination)
        body = {'host': destination, 'force_host_assisted_migration': bool(force_host_assisted_migration),
                'new_share_type_id': type_id, 'new_share_network_id': network_id}
        body.update((f, bool(flags.get(f))) for f in FLAGS)
        # the cloud must speak the migration API before anything is predicted or sent
        self.api.client.microversion('share migration', '2.29')
        actions = ['start migration of share %s from %s to %s%s' % (
            name, share.get('host'), destination, ' (host-assisted forced)' if force_host_assisted_migration else '')]
        migration = {'source_pool': share.get('host'), 'destination_pool': destination,
                     'force_host_assisted_migration': bool(force_host_assisted_migration),
                     'new_share_type_id': type_id, 'new_share_network_id': network_id}
        migration.update((f, bool(flags.get(f))) for f in FLAGS)
        before = self.shares.view(share)
        if self.ctx.check_mode:
            after = dict(before, task_state=states.MIGRATION_STARTING, total_progress=0)
            return dict(self._result(True, after, actions, before=before, migration=migration, predicted=True),
                        task_state=states.MIGRATION_STARTING, total_progress=0)
        self.api.migration_start(share, body)
        seen = None
        if wait:
            share, seen = self._wait_phase1(share, timeout, sleep)
        else:
            share = self.api.share(share['id']) or share
        result = self._result(True, share, actions, before=before, progress=seen)
        result['migration'] = dict(migration, **dict((k, v) for k, v in result['migration'].items() if v is not None))
        return result

    # -------------------------------------------------------------------------- completed
    def complete(self, name, destination=None, wait=True, timeout=3600, sleep=5):
        share = self.api.require_share(name)
        task_state = share.get('task_state')
        if task_state == states.MIGRATION_SUCCESS:
            if destination and share.get('host') != destination:
                raise InvalidRequest('Cannot complete the migration of share %s to %s: its last migration ended '
                                     '(migration_success) in %s' % (name, destination, share.get('host')))
            return self._result(False, share, [])
        running = self._running(share)
        target = running.get('destination_pool')
        if destination and target and target != destination:
            raise InvalidRequest('Cannot complete the migration of share %s to %s: it is migrating to %s'
                                 % (name, destination, target))
        if task_state == states.MIGRATION_COMPLETING:
            return self._joined(share, self._wait_complete, wait, timeout, sleep)
        if not states.may_transition(task_state, states.MIGRATION_COMPLETING, reference=True):
            raise InvalidRequest('Cannot complete the migration of share %s: its task_state is %s; phase 2 starts '
                                 'only from %s' % (name, task_state, ' or '.join(states.COMPLETABLE_TASK_STATES)))
        actions = ['complete migration of share %s: switch from %s to %s' % (name, share.get('host'), target)]
        return self._step(share, actions, running, self.api.migration_complete, self._wait_complete, wait, timeout, sleep,
                          task_state=states.MIGRATION_SUCCESS, host=target or destination)

    def _wait_complete(self, share, timeout, sleep):
        return wait_share(self.api, share, (states.MIGRATION_SUCCESS,), timeout, sleep,
                          'phase 2 of the migration of share %s' % share.get('name'), pending=COMPLETE_PENDING,
                          failure=(states.MIGRATION_ERROR,), state_of=_settled(states.MIGRATION_SUCCESS))

    # -------------------------------------------------------------------------- cancelled
    def cancel(self, name, wait=True, timeout=3600, sleep=5):
        share = self.api.require_share(name)
        task_state = share.get('task_state')
        if task_state == states.MIGRATION_CANCELLED:
            return self._result(False, share, [])
        if task_state == states.MIGRATION_CANCEL_IN_PROGRESS:
            return self._joined(share, self._wait_cancel, wait, timeout, sleep)
        if not states.may_transition(task_state, states.MIGRATION_CANCEL_IN_PROGRESS, reference=True):
            raise InvalidRequest('Cannot cancel the migration of share %s: its task_state is %s; a migration can be '
                                 'cancelled only in %s' % (name, task_state, ', '.join(states.CANCELLABLE_TASK_STATES)))
        running = self._running(share)
        actions = ['cancel migration of share %s to %s' % (name, running.get('destination_pool'))]
        return self._step(share, actions, running, self.api.migration_cancel, self._wait_cancel, wait, timeout, sleep,
                          task_state=states.MIGRATION_CANCELLED)

    def _wait_cancel(self, share, timeout, sleep):
        return wait_share(self.api, share, (states.MIGRATION_CANCELLED,), timeout, sleep,
                          'the cancel of the migration of share %s' % share.get('name'), pending=CANCEL_PENDING,
                          failure=(states.MIGRATION_ERROR,), state_of=_settled(states.MIGRATION_CANCELLED))

    # -------------------------------------------------------------------------- reset
    def reset(self, name, task_state):
        share = self.api.require_share(name)
        if share.get('task_state') == task_state:
            return self._result(False, share, [])
        actions = ['reset task_state of share %s from %s to %s' % (name, share.get('task_state'), task_state)]
        before = self.shares.view(share)
        self.api.client.microversion('resetting task_state', '2.22')
        if self.ctx.check_mode:
            after = dict(before, task_state=task_state, total_progress=states.total_progress(task_state))
            return dict(self._result(True, after, actions, before=before, predicted=True),
                        task_state=task_state, total_progress=after['total_progress'])
        self.api.reset_task_state(share, task_state)
        return self._result(True, self.api.share(share['id']) or share, actions, before=before)
