# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Volumes in OpenStack Cinder: create, delete, describe, migrate and retype them.

Modules ``volume``, ``volume_info`` and ``volume_migrate``. Cinder keeps the state: every call
reads the volume, decides, and acts only outside check mode. A migration is followed through
Cinder's ``migration_status`` (``starting`` -> ``migrating`` -> ``completing`` -> ``success`` or
``error``); the statuses seen while waiting are returned as the migration's history. Cinder
gives no progress figure for a migration: the history and the elapsed time are what there is.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.storage.mobility.plugins.module_utils.cinder.api import CinderAPI, backend_of
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    InvalidRequest, NotFound, StorageError, WaitTimeout)
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.services.volume import VolumeService
from ansible_collections.storage.mobility.plugins.module_utils.services.volume_migration import (
    VolumeMigrationService, check_request)
from ansible_collections.storage.mobility.plugins.module_utils.wait import wait_for

GONE = 'deleted'
#: volume statuses a wait passes through on its way to ``available``
BUSY_STATUSES = ('creating', 'downloading', 'extending', 'retyping', 'maintenance', 'attaching', 'detaching',
                 'reserved', 'uploading', 'backing-up', 'restoring-backup', 'awaiting-transfer')
ERROR_STATUSES = ('error', 'error_deleting', 'error_extending', 'error_restoring', 'error_managing')
#: statuses from which Cinder starts a migration or a retype
MOVABLE_STATUSES = ('available', 'in-use')
#: migration_status of a migration that is running
MIGRATION_RUNNING = ('starting', 'migrating', 'completing')
MIGRATION_DONE = ('success',)
MIGRATION_FAILED = ('error',)
#: seconds an empty migration_status counts as the end of a host copy (see _follow)
SWAP_GRACE = 30
#: the volume detail attributes an administrator sees (Cinder's names)
HOST_ATTR = 'os-vol-host-attr:host'
NAME_ID_ATTR = 'os-vol-mig-status-attr:name_id'
MIGSTAT_ATTR = 'os-vol-mig-status-attr:migstat'


def same_destination(current, destination):
    """True when a volume on ``current`` is already at ``destination``.

    ``destination`` is ``host@backend#pool`` or ``host@backend`` (any pool of that backend)."""
    if not current or not destination:
        return False
    if PoolAddress.split(destination).pool is not None:
        return current == destination
    return backend_of(current) == destination


class Recorder(object):
    """The (status, migration_status) pairs a wait went through, with the seconds since it began."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.start = clock()
        self.history = []

    def __call__(self, volume):
        entry = {'status': volume.get('status'), 'migration_status': volume.get('migration_status')}
        last = self.history[-1] if self.history else None
        if last is None or (last['status'], last['migration_status']) != (entry['status'], entry['migration_status']):
            entry['seconds'] = round(self.clock() - self.start, 1)
            self.history.append(entry)

    def seconds(self):
        return round(self.clock() - self.start, 1)


class CinderVolumeManager(VolumeService, VolumeMigrationService):
    """The volume and volume migration services for a backend with driver cinder."""

    #: the options checks every volume migration service makes (services/volume_migration.py)
    check_request = staticmethod(check_request)

    def __init__(self, ctx, backend, api=None, clock=time.monotonic, sleeper=time.sleep):
        self.ctx = ctx
        self.backend = backend
        self.api = api or CinderAPI(backend)
        self.clock = clock
        self.sleeper = sleeper

    # -------------------------------------------------------------------------- views
    def view(self, volume):
        """What the modules return for a Cinder volume (Cinder's own attribute names kept as well)."""
        if not volume or volume.get('status') == GONE:
            return {}
        view = {
            'id': volume.get('id'), 'name': volume.get('name'), 'status': volume.get('status'),
            'size': volume.get('size'), 'volume_type': volume.get('volume_type'),
            'availability_zone': volume.get('availability_zone'), 'description': volume.get('description'),
            'host': volume.get(HOST_ATTR), 'cluster_name': volume.get('cluster_name'),
            'migration_status': volume.get('migration_status'), 'name_id': volume.get(NAME_ID_ATTR),
            'bootable': volume.get('bootable'), 'multiattach': volume.get('multiattach'),
            'attachments': [a.get('server_id') or a.get('attachment_id') for a in volume.get('attachments') or []],
            'replication_status': volume.get('replication_status'), 'metadata': volume.get('metadata') or {},
            'created_at': volume.get('created_at'), 'updated_at': volume.get('updated_at'),
            'backend': self.backend.name, 'driver': 'cinder',
        }
        for attribute in (HOST_ATTR, NAME_ID_ATTR, MIGSTAT_ATTR):
            view[attribute] = volume.get(attribute)
        return view

    def info(self, name=None):
        if name is not None:
            volume = self.api.find_volume(name)
            return [self.view(volume)] if volume else []
        return [self.view(v) for v in sorted(self.api.volumes(), key=lambda v: (v.get('name') or '', v['id']))]

    def pools(self):
        """The pools Cinder reports, or [] when the policy does not let this user list them."""
        try:
            return self.api.pools()
        except StorageError:
            return []

    # -------------------------------------------------------------------------- waiting
    def _wait(self, volume, success, pending, failure, timeout, sleep, what, state_of=None, on_poll=None):
        def fetch():
            return self.api.volume(volume['id']) or {'id': volume['id'], 'name': volume.get('name'), 'status': GONE}

        try:
            return wait_for(fetch, state_of or (lambda v: v.get('status')), success, pending, failure, timeout, sleep,
                            what, clock=self.clock, sleeper=self.sleeper, on_poll=on_poll)
        except StorageError as exc:
            last = exc.details.pop('result', None)
            exc.details['volume'] = self.view(last)
            raise

    def _wait_status(self, volume, doing, success, pending, failure, timeout, sleep, state_of=None):
        """Wait for a volume status; when Cinder sets an error status, say so with its user message."""
        try:
            return self._wait(volume, success, pending, failure, timeout, sleep,
                              'volume %s' % (volume.get('name') or volume['id']), state_of=state_of)
        except WaitTimeout:
            raise
        except StorageError as exc:
            last = exc.details.get('volume') or {}
            if last.get('status') in failure:
                raise StorageError('Failed to %s: Cinder set its status to %s.%s'
                                   % (doing, last.get('status'), self._why(volume)), volume=last)
            raise

    def _why(self, volume):
        """Cinder's newest user message about ``volume`` (why an asynchronous request failed), or ''."""
        messages = self.api.messages(volume)
        if not messages:
            return ''
        message = messages[0]
        return ' Cinder says: %s' % (message.get('user_message') or message.get('event_id'))

    # -------------------------------------------------------------------------- volume: present / absent
    def present(self, name, size=None, volume_type=None, availability_zone=None, description=None):
        wait, timeout, sleep = self.ctx.waits
        volume = self.api.find_volume(name)
        if volume is None:
            return self._create(name, size, volume_type, availability_zone, description, wait, timeout, sleep)
        return self._update(volume, size, volume_type, availability_zone, description, wait, timeout, sleep)

    def _create(self, name, size, volume_type, availability_zone, description, wait, timeout, sleep):
        if not size:
            raise InvalidRequest('Cannot create volume %s: size (GiB) is required to create a volume' % name)
        body = {'name': name, 'size': size}
        if volume_type:
            body['volume_type'] = self.api.volume_type(volume_type)['name']
        if availability_zone:
            zones = self.api.availability_zones()
            if availability_zone not in zones:
                raise NotFound('Cannot create volume %s: unknown availability zone %r in Cinder of backend %s '
                               '(zones: %s)' % (name, availability_zone, self.backend.name, ', '.join(zones) or 'none'))
            body['availability_zone'] = availability_zone
        if description is not None:
            body['description'] = description
        predicted = dict(body, status='available', volume_type=body.get('volume_type'))
        if self.ctx.check_mode:
            return {'changed': True, 'actions': ['create volume %s (%d GiB)' % (name, size)],
                    'volume': self.view(predicted), 'diff': {'before': {}, 'after': self.view(predicted)}}
        volume = self.api.create_volume(body)
        if wait:
            volume = self._wait_status(volume, 'create volume %s' % name, ('available',), ('creating', 'downloading'),
                                       ERROR_STATUSES, timeout, sleep)
        else:
            volume = self.api.volume(volume['id']) or volume
        return {'changed': True, 'actions': ['create volume %s (%d GiB)' % (name, size)], 'volume': self.view(volume),
                'diff': {'before': {}, 'after': self.view(volume)}}

    def _update(self, volume, size, volume_type, availability_zone, description, wait, timeout, sleep):
        name = volume.get('name') or volume['id']
        if volume_type and volume_type not in (volume.get('volume_type'), volume.get('volume_type_id')):
            wanted = self.api.volume_type(volume_type)
            if wanted.get('name') != volume.get('volume_type'):
                raise InvalidRequest('Volume %s exists with volume type %s, not %s: retype it with '
                                     'storage.mobility.volume_migrate (new_type)'
                                     % (name, volume.get('volume_type'), volume_type))
        if availability_zone and availability_zone != volume.get('availability_zone'):
            raise InvalidRequest('Volume %s exists in availability zone %s, not %s: Cinder does not move a volume '
                                 'between availability zones' % (name, volume.get('availability_zone'), availability_zone))
        if volume.get('status') in ERROR_STATUSES:
            raise StorageError('Volume %s is in status %s: delete it (state=absent) and create it again'
                               % (name, volume.get('status')), volume=self.view(volume))
        actions = []
        if size and size < int(volume.get('size') or 0):
            raise InvalidRequest('Cannot shrink volume %s from %s to %d GiB: Cinder only extends volumes'
                                 % (name, volume.get('size'), size))
        if size and size > int(volume.get('size') or 0):
            actions.append('extend volume %s from %s to %d GiB' % (name, volume.get('size'), size))
        if description is not None and description != (volume.get('description') or ''):
            actions.append('set the description of volume %s' % name)
        before = self.view(volume)
        if not actions:
            if wait and volume.get('status') in ('creating', 'downloading') and not self.ctx.check_mode:
                volume = self._wait(volume, ('available',), ('creating', 'downloading'), ERROR_STATUSES, timeout, sleep,
                                    'volume %s' % name)
            return {'changed': False, 'actions': [], 'volume': self.view(volume)}
        if self.ctx.check_mode:
            after = dict(before, size=max(size or 0, int(volume.get('size') or 0)))
            if description is not None:
                after['description'] = description
            return {'changed': True, 'actions': actions, 'volume': after, 'diff': {'before': before, 'after': after}}
        if description is not None and description != (volume.get('description') or ''):
            volume = self.api.update_volume(volume, {'description': description})
        if size and size > int(volume.get('size') or 0):
            if volume.get('status') != 'available':
                raise InvalidRequest('Cannot extend volume %s: its status is %s; Cinder extends available volumes'
                                     % (name, volume.get('status')))
            self.api.extend(volume, size)
            if wait:
                volume = self._wait_status(volume, 'extend volume %s to %d GiB' % (name, size), ('available',),
                                           ('extending',), ERROR_STATUSES, timeout, sleep,
                                           state_of=lambda v: v.get('status') if int(v.get('size') or 0) >= size or
                                           v.get('status') != 'available' else 'extending')
        volume = self.api.volume(volume['id']) or volume
        return {'changed': True, 'actions': actions, 'volume': self.view(volume),
                'diff': {'before': before, 'after': self.view(volume)}}

    def absent(self, name):
        wait, timeout, sleep = self.ctx.waits
        volume = self.api.find_volume(name)
        if volume is None:
            return {'changed': False, 'actions': [], 'volume': {}}
        before = self.view(volume)
        if volume.get('status') == 'deleting':
            if wait and not self.ctx.check_mode:
                self._wait(volume, (GONE,), ('deleting',), ('error_deleting',), timeout, sleep, 'volume %s' % name)
            return {'changed': False, 'actions': [], 'volume': {}}
        actions = ['delete volume %s' % name]
        if self.ctx.check_mode:
            return {'changed': True, 'actions': actions, 'volume': {}, 'diff': {'before': before, 'after': {}}}
        self.api.delete_volume(volume)
        if wait:
            self._wait_status(volume, 'delete volume %s' % name, (GONE,), ('deleting', 'available', 'error'),
                              ('error_deleting',), timeout, sleep)
        return {'changed': True, 'actions': actions, 'volume': {}, 'diff': {'before': before, 'after': {}}}

    # -------------------------------------------------------------------------- volume_migrate
    def migrate(self, name, host=None, cluster=None, force_host_copy=False, lock_volume=False):
        wait, timeout, sleep = self.ctx.waits
        self.check_request(name, host=host, cluster=cluster, force_host_copy=force_host_copy, lock_volume=lock_volume)
        destination = cluster or host
        what = 'migrate volume %s to %s %s' % (name, 'cluster' if cluster else 'host', destination)
        if cluster:
            try:
                self.api.require('a migration to a cluster', '3.16')
            except InvalidRequest as exc:
                raise InvalidRequest('Failed to %s: %s' % (what, exc.message), **exc.details)
        volume = self.api.require_volume(name)
        name = volume.get('name') or volume['id']
        before = self.view(volume)
        self._check_destination(what, host, cluster)

        running = volume.get('migration_status') in MIGRATION_RUNNING
        if running:
            # A migration runs (perhaps the one a previous run started with wait=false). Cinder does
            # not say where it goes: wait for it when asked, then decide.
            if not wait or self.ctx.check_mode:
                return {'changed': False, 'actions': [], 'volume': before, 'migration': self._migration(
                    volume, destination, force_host_copy, None, before),
                    'warnings': ['Volume %s is already migrating (migration_status %s); Cinder does not report the '
                                 'destination of a running migration: run again with wait=true to follow it'
                                 % (name, volume.get('migration_status'))]}
            recorder = Recorder(self.clock)
            volume = self._follow(volume, what, timeout, sleep, recorder)
            if self._at(volume, host, cluster):
                return {'changed': False, 'actions': [], 'volume': self.view(volume),
                        'migration': self._migration(volume, destination, force_host_copy, recorder, before)}
        if self._at(volume, host, cluster):
            return {'changed': False, 'actions': [], 'volume': self.view(volume),
                    'migration': self._migration(volume, destination, force_host_copy, None, before)}
        if volume.get('status') not in MOVABLE_STATUSES:
            raise InvalidRequest('Failed to %s: its status is %s; Cinder migrates volumes that are %s'
                                 % (what, volume.get('status'), ' or '.join(MOVABLE_STATUSES)), volume=before)
        actions = ['%s%s%s' % (what, ' with a host copy' if force_host_copy else '',
                               ', locked' if lock_volume else '')]
        if self.ctx.check_mode:
            after = dict(before, migration_status='success')
            if host:
                after['host'] = after[HOST_ATTR] = host
            else:
                after['cluster_name'] = cluster
            return {'changed': True, 'actions': actions, 'volume': after, 'diff': {'before': before, 'after': after},
                    'migration': self._migration(volume, destination, force_host_copy, None, before, predicted=True)}
        self.api.migrate(volume, what, host=host, cluster=cluster, force_host_copy=force_host_copy,
                         lock_volume=lock_volume)
        recorder = Recorder(self.clock)
        if not wait:
            volume = self.api.volume(volume['id']) or volume
            recorder(volume)
            return {'changed': True, 'actions': actions, 'volume': self.view(volume),
                    'migration': self._migration(volume, destination, force_host_copy, recorder, before)}
        volume = self._follow(volume, what, timeout, sleep, recorder)
        if not self._at(volume, host, cluster):
            raise StorageError('Failed to %s: Cinder reported success but the volume is on %s'
                               % (what, volume.get(HOST_ATTR)), volume=self.view(volume))
        return {'changed': True, 'actions': actions, 'volume': self.view(volume),
                'diff': {'before': before, 'after': self.view(volume)},
                'migration': self._migration(volume, destination, force_host_copy, recorder, before)}

    def _follow(self, volume, what, timeout, sleep, recorder):
        """Wait until the migration of ``volume`` ends; StorageError with Cinder's reason when it failed."""
        cleared = []

        def state_of(current):
            # At the end of a host copy Cinder swaps the two volume records, which clears
            # migration_status, and sets success right after: a read in between sees none.
            # Only a migration_status that stays empty is a reset (by an administrator).
            status = current.get('migration_status')
            if status is not None:
                cleared[:] = []
                return status
            if not cleared:
                cleared.append(self.clock())
            return 'completing' if self.clock() - cleared[0] < SWAP_GRACE else None

        try:
            return self._wait(volume, MIGRATION_DONE, MIGRATION_RUNNING, MIGRATION_FAILED, timeout, sleep,
                              'the migration of volume %s' % (volume.get('name') or volume['id']),
                              state_of=state_of, on_poll=recorder)
        except StorageError as exc:
            last = exc.details.get('volume') or {}
            if last.get('migration_status') in MIGRATION_FAILED:
                raise StorageError('Failed to %s: Cinder set migration_status to error after %.1f s.%s'
                                   % (what, recorder.seconds(), self._why(volume)),
                                   volume=last, history=recorder.history)
            if last and last.get('migration_status') is None and not isinstance(exc, WaitTimeout):
                raise StorageError('Failed to %s: the migration_status of the volume was cleared while it migrated '
                                   '(reset by an administrator?); the volume is on %s'
                                   % (what, last.get('host')), volume=last, history=recorder.history)
            exc.details['history'] = recorder.history
            raise

    def _check_destination(self, what, host, cluster):
        """The destination must be one Cinder reports; say which ones it does."""
        if cluster:
            clusters = self.api.clusters()
            if cluster not in clusters and backend_of(cluster) not in [backend_of(c) for c in clusters]:
                raise NotFound('Failed to %s: Cinder of backend %s has no such cluster (clusters: %s)'
                               % (what, self.backend.name, ', '.join(clusters) or 'none'))
            return
        if host.count('@') != 1 or host.startswith('@') or host.endswith(('@', '#')):
            raise InvalidRequest('Failed to %s: the host must read host@backend#pool or host@backend' % what)
        in_pool = PoolAddress.split(host).pool is not None
        pools = self.api.pools()
        known = pools if in_pool else sorted(set(backend_of(p) for p in pools))
        if host not in known:
            raise NotFound('Failed to %s: Cinder of backend %s reports no such %s (pools: %s)'
                           % (what, self.backend.name, 'pool' if in_pool else 'backend', ', '.join(pools) or 'none'))

    @staticmethod
    def _at(volume, host, cluster):
        if cluster:
            return bool(volume.get('cluster_name')) and same_destination(volume.get('cluster_name'), cluster)
        return same_destination(volume.get(HOST_ATTR), host)

    @staticmethod
    def _migration(volume, destination, force_host_copy, recorder, before, predicted=False):
        """What the module reports about the migration: where, how, the statuses seen, how long."""
        moved_by = None
        if volume.get(HOST_ATTR) != before.get('host') and not predicted:
            # A host copy gives the volume the id of the new copy as its name id; a driver move keeps it.
            moved_by = 'host_copy' if volume.get(NAME_ID_ATTR) != before.get('name_id') else 'driver'
        return {
            'destination': destination, 'source': before.get('host'), 'force_host_copy': bool(force_host_copy),
            'migration_status': volume.get('migration_status') if not predicted else 'success',
            'mechanism': moved_by, 'history': recorder.history if recorder else [],
            'seconds': recorder.seconds() if recorder else None,
        }

    # -------------------------------------------------------------------------- retype
    def retype(self, name, new_type, migration_policy=None):
        wait, timeout, sleep = self.ctx.waits
        self.check_request(name, new_type=new_type, migration_policy=migration_policy)
        policy = migration_policy or 'never'
        volume = self.api.require_volume(name)
        name = volume.get('name') or volume['id']
        wanted = self.api.volume_type(new_type)
        what = 'retype volume %s to %s (migration_policy %s)' % (name, wanted.get('name'), policy)
        before = self.view(volume)
        if volume.get('status') == 'retyping':
            if not wait or self.ctx.check_mode:
                return {'changed': False, 'actions': [], 'volume': before, 'retype': self._retype_view(volume, wanted, policy, None),
                        'warnings': ['Volume %s is being retyped; run again with wait=true to follow it' % name]}
            recorder = Recorder(self.clock)
            volume = self._follow_retype(volume, wanted, what, timeout, sleep, recorder, require=False)
        if volume.get('volume_type') == wanted.get('name'):
            return {'changed': False, 'actions': [], 'volume': self.view(volume),
                    'retype': self._retype_view(volume, wanted, policy, None)}
        if volume.get('status') not in MOVABLE_STATUSES:
            raise InvalidRequest('Failed to %s: its status is %s; Cinder retypes volumes that are %s'
                                 % (what, volume.get('status'), ' or '.join(MOVABLE_STATUSES)), volume=before)
        if volume.get('migration_status') in MIGRATION_RUNNING:
            raise InvalidRequest('Failed to %s: a migration of the volume is running (migration_status %s)'
                                 % (what, volume.get('migration_status')), volume=before)
        if policy == 'never':
            self._refuse_move(volume, wanted, what)
        actions = [what]
        if self.ctx.check_mode:
            after = dict(before, volume_type=wanted.get('name'))
            return {'changed': True, 'actions': actions, 'volume': after, 'diff': {'before': before, 'after': after},
                    'retype': self._retype_view(volume, wanted, policy, None)}
        self.api.retype(volume, wanted.get('name'), policy, what)
        recorder = Recorder(self.clock)
        if not wait:
            volume = self.api.volume(volume['id']) or volume
            recorder(volume)
            return {'changed': True, 'actions': actions, 'volume': self.view(volume),
                    'retype': self._retype_view(volume, wanted, policy, recorder)}
        volume = self._follow_retype(volume, wanted, what, timeout, sleep, recorder, require=True)
        return {'changed': True, 'actions': actions, 'volume': self.view(volume),
                'diff': {'before': before, 'after': self.view(volume)},
                'retype': self._retype_view(volume, wanted, policy, recorder, before)}

    def _refuse_move(self, volume, wanted, what):
        """With migration_policy never, refuse up front a retype whose type pins another backend.

        Cinder would accept the request and refuse it later, leaving only a line in its log."""
        pinned = (wanted.get('extra_specs') or {}).get('volume_backend_name')
        if not pinned:
            return
        try:
            capabilities = self.api.pool_capabilities().get(volume.get(HOST_ATTR))
        except StorageError:
            return
        current = (capabilities or {}).get('volume_backend_name')
        if current and current != pinned:
            raise InvalidRequest('Failed to %s: the type asks for volume_backend_name %s and the volume is on %s '
                                 '(volume_backend_name %s), so the retype needs a migration, which migration_policy '
                                 'never forbids; use migration_policy on-demand to let Cinder move it'
                                 % (what, pinned, volume.get(HOST_ATTR), current), volume=self.view(volume))

    def _follow_retype(self, volume, wanted, what, timeout, sleep, recorder, require):
        """Wait until Cinder is done with the retype (and the migration it may need).

        Cinder refuses a retype asynchronously: the volume goes back to its former status with
        its old type, and a user message says why."""
        def state_of(current):
            if current.get('status') == 'retyping' or current.get('migration_status') in MIGRATION_RUNNING:
                return 'retyping'
            if current.get('status') == GONE:
                return GONE
            return 'done'

        volume = self._wait(volume, ('done',), ('retyping',), (GONE,), timeout, sleep,
                            'the retype of volume %s' % (volume.get('name') or volume['id']), state_of=state_of,
                            on_poll=recorder)
        if require and volume.get('volume_type') != wanted.get('name'):
            reason = ''
            if volume.get('migration_status') in MIGRATION_FAILED:
                reason = ' The migration it needed failed (migration_status error).'
            raise StorageError('Failed to %s: Cinder left the volume with type %s after %.1f s.%s%s%s'
                               % (what, volume.get('volume_type'), recorder.seconds(), reason, self._why(volume),
                                  ' Cinder refuses a retype that needs a migration under migration_policy never; its '
                                  'scheduler log says which backends it tried.' if 'policy never' in what else ''),
                               volume=self.view(volume), history=recorder.history)
        return volume

    @staticmethod
    def _retype_view(volume, wanted, policy, recorder, before=None):
        moved = bool(before) and volume.get(HOST_ATTR) != before.get('host')
        return {'new_type': wanted.get('name'), 'migration_policy': policy, 'moved': moved,
                'migration_status': volume.get('migration_status') if moved else None,
                'history': recorder.history if recorder else [], 'seconds': recorder.seconds() if recorder else None}
