# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shares in OpenStack Manila: create, update, delete and describe them (modules share, share_info)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.manila.api import REPLICATION, ManilaAPI
from ansible_collections.storage.mobility.plugins.module_utils.services.share import ShareService
from ansible_collections.storage.mobility.plugins.module_utils.wait import wait_for

GONE = 'deleted'
#: share statuses a wait passes through on its way to ``available``
SHARE_BUSY_STATUSES = ('creating', 'extending', 'shrinking', 'migrating', 'migrating_to', 'replication_change',
                       'manage_starting', 'reverting', 'restoring', 'backup_creating', 'backup_restoring',
                       'ensuring', 'deleting', 'awaiting_transfer')
SHARE_ERROR_STATUSES = ('error', 'error_deleting', 'extending_error', 'shrinking_error',
                        'shrinking_possible_data_loss_error', 'manage_error', 'unmanage_error', 'reverting_error',
                        'backup_restoring_error')
DEFAULT_PROTOCOL = 'NFS'


def wait_share(api, share, success, timeout, sleep, what, pending=SHARE_BUSY_STATUSES, failure=SHARE_ERROR_STATUSES,
               state_of=None, on_poll=None):
    """Poll share ``share`` until ``state_of(share)`` (its status by default) is in ``success``.

    A share that disappears has the state ``deleted``."""
    def fetch():
        return api.share(share['id']) or {'id': share['id'], 'name': share.get('name'), 'status': GONE}

    return wait_for(fetch, state_of or (lambda s: s.get('status')), success, pending, failure, timeout, sleep, what,
                    on_poll=on_poll)


def normalize_rules(rules):
    """Declared access rules as {(access_type, access_to): access_level}."""
    result = {}
    for rule in rules or []:
        key = (rule.get('access_type') or 'ip', rule['access_to'])
        if key in result:
            raise InvalidRequest('Access rule for %s %s is declared twice' % key)
        result[key] = rule.get('access_level') or 'rw'
    return result


def rule_view(rule):
    return {'id': rule.get('id'), 'access_type': rule.get('access_type'), 'access_to': rule.get('access_to'),
            'access_level': rule.get('access_level'), 'state': rule.get('state')}


class ManilaShareManager(ShareService):
    """The share service for a backend with driver manila."""

    def __init__(self, ctx, backend, api=None):
        self.ctx = ctx
        self.backend = backend
        self.api = api or ManilaAPI(backend)

    # -------------------------------------------------------------------------- views
    def view(self, share, detail=True):
        """What the modules return for a Manila share."""
        if not share or share.get('status') == GONE:
            return {}
        task_state = share.get('task_state')
        view = {
            'name': share.get('name'), 'id': share.get('id'), 'host': share.get('host'),
            'status': share.get('status'), 'size': share.get('size'), 'share_proto': share.get('share_proto'),
            'share_type': share.get('share_type_name') or share.get('share_type'),
            'share_type_id': share.get('share_type'), 'task_state': task_state,
            'total_progress': states.total_progress(task_state),
            'replication_type': share.get('replication_type'), 'has_replicas': bool(share.get('has_replicas')),
            'availability_zone': share.get('availability_zone'), 'description': share.get('description'),
            'metadata': share.get('metadata') or {}, 'share_network_id': share.get('share_network_id'),
            'created_at': share.get('created_at'), 'backend': self.backend.name, 'driver': 'manila',
        }
        if not detail or share.get('id') is None:
            return view
        locations = self.api.export_locations(share)
        view['export_locations'] = [dict((k, loc.get(k)) for k in ('path', 'preferred', 'is_admin_only'))
                                    for loc in locations]
        preferred = [loc for loc in locations if loc.get('preferred')] or locations
        view['export_location'] = preferred[0].get('path') if preferred else None
        view['access_rules'] = [rule_view(r) for r in self.api.access_rules(share)]
        instances = self.api.instances(share)
        view['instances'] = [{'id': i.get('id'), 'pool': i.get('host'), 'status': i.get('status'),
                              'replica_state': i.get('replica_state')} for i in instances]
        view['migration'] = self.migration_view(share, instances)
        if task_state and task_state not in states.PROGRESS_FULL_STATES + states.PROGRESS_ZERO_STATES:
            try:
                progress = self.api.migration_progress(share)
            except StorageError:
                progress = None
            if progress:
                view['total_progress'] = states.total_progress(progress.get('task_state') or task_state,
                                                               progress.get('total_progress'))
                view['task_state'] = progress.get('task_state') or task_state
        if share.get('replication_type') and self.api.supports(REPLICATION):
            view['replicas'] = [{'id': r.get('id'), 'pool': r.get('host'), 'status': r.get('status'),
                                 'replica_state': r.get('replica_state')} for r in self.api.replicas(share)]
        return view

    @staticmethod
    def migration_view(share, instances):
        """Where a running migration goes, read from the share's instances; None without one."""
        task_state = share.get('task_state')
        if not task_state:
            return None
        source = [i.get('host') for i in instances if i.get('status') == states.MIGRATING]
        destination = [i.get('host') for i in instances if i.get('status') == states.MIGRATING_TO]
        if task_state.startswith('migration_driver'):
            mechanism = 'driver'
        elif task_state.startswith('data_copying'):
            mechanism = 'host'
        else:
            mechanism = None
        return {'task_state': task_state, 'source_pool': source[0] if source else None,
                'destination_pool': destination[0] if destination else None, 'mechanism': mechanism}

    # -------------------------------------------------------------------------- share: present / absent
    def present(self, name, pool_address, size, protocol, share_type, extra_specs, access_rules,
                description=None, metadata=None):
        pool = None if pool_address is None else str(pool_address)
        wait, timeout, sleep = self.ctx.waits
        if extra_specs:
            raise InvalidRequest('Cannot use extra_specs with share %s on backend %s: in Manila the extra specs '
                                 'belong to the share type; pick a share_type that has them' % (name, self.backend.name))
        share = self.api.find_share(name)
        if share is None:
            return self._create(name, pool, size, protocol, share_type, access_rules, description, metadata,
                                wait, timeout, sleep)
        return self._update(share, pool, size, protocol, share_type, access_rules, description, metadata,
                            wait, timeout, sleep)

    def _create(self, name, pool, size, protocol, share_type, access_rules, description, metadata, wait, timeout, sleep):
        if not size:
            raise InvalidRequest('Cannot create share %s: size (GiB) is required to create a share' % name)
        rules = normalize_rules(access_rules)
        body = {'name': name, 'size': size, 'share_proto': protocol or DEFAULT_PROTOCOL}
        if share_type:
            body['share_type'] = self.api.share_type(share_type)['id']
        if description is not None:
            body['description'] = description
        if metadata:
            body['metadata'] = dict((k, str(v)) for k, v in metadata.items())
        actions = ['create share %s (%d GiB, %s)%s in Manila of backend %s'
                   % (name, size, body['share_proto'], ' in pool %s' % pool if pool else '', self.backend.name)]
        actions += ['allow %s access for %s %s' % (level, kind, to) for (kind, to), level in sorted(rules.items())]
        if self.ctx.check_mode:
            predicted = dict(body, status='available', host=pool, share_type_name=share_type, id=None)
            predicted['access_rules'] = [{'access_type': k, 'access_to': t, 'access_level': lv}
                                         for (k, t), lv in sorted(rules.items())]
            view = self.view(predicted, detail=False)
            view['access_rules'] = predicted['access_rules']
            return self._result(True, {}, view, actions)
        share = self.api.create_share(body, only_host=pool)
        if wait or rules:
            share = wait_share(self.api, share, ('available',), timeout, sleep, 'share %s' % name)
        for (kind, to), level in sorted(rules.items()):
            self.api.allow_access(share, {'access_type': kind, 'access_to': to, 'access_level': level})
        return self._result(True, {}, self.view(self.api.share(share['id'])), actions)

    def _update(self, share, pool, size, protocol, share_type, access_rules, description, metadata,
                wait, timeout, sleep):
        name = share['name']
        before = self.view(share)
        actions, warnings = [], []
        if pool and share.get('host') != pool:
            warnings.append('Share %s lives in %s, not in %s: the share module does not move shares '
                            '(use share_migration)' % (name, share.get('host'), pool))
        if protocol and protocol != share.get('share_proto'):
            raise InvalidRequest('Cannot change the protocol of share %s from %s to %s: it is fixed at creation'
                                 % (name, share.get('share_proto'), protocol))
        if share_type and share_type not in (share.get('share_type_name'), share.get('share_type')):
            warnings.append('Share %s has share type %s, not %s: change it with share_migration and new_share_type'
                            % (name, share.get('share_type_name'), share_type))
        resize = size is not None and int(size) != int(share['size'])
        if resize:
            verb = 'extend' if size > share['size'] else 'shrink'
            actions.append('%s share %s from %s to %d GiB' % (verb, name, share['size'], size))
        if description is not None and description != (share.get('description') or ''):
            actions.append('set the description of share %s' % name)
        meta = dict((k, str(v)) for k, v in (metadata or {}).items())
        current_meta = share.get('metadata') or {}
        if any(current_meta.get(k) != v for k, v in meta.items()):
            actions.append('set metadata %s of share %s' % (', '.join(sorted(meta)), name))
        deny, allow = [], []
        if access_rules is not None:
            wanted = normalize_rules(access_rules)
            current = self.api.access_rules(share)
            for rule in current:
                key = (rule.get('access_type'), rule.get('access_to'))
                if wanted.get(key) != rule.get('access_level'):
                    deny.append(rule)
            kept = set((r.get('access_type'), r.get('access_to')) for r in current if r not in deny)
            allow = [{'access_type': k, 'access_to': t, 'access_level': lv}
                     for (k, t), lv in sorted(wanted.items()) if (k, t) not in kept]
            actions += ['deny %s access for %s %s' % (r.get('access_level'), r.get('access_type'), r.get('access_to'))
                        for r in deny]
            actions += ['allow %s access for %s %s' % (r['access_level'], r['access_type'], r['access_to']) for r in allow]
        if not actions:
            return self._result(False, before, before, [], warnings)
        if (resize or deny or allow) and states.is_busy(share.get('task_state')):
            raise Busy('Cannot change share %s: it is busy with task %s' % (name, share.get('task_state')))
        if self.ctx.check_mode:
            after = dict(before)
            if resize:
                after['size'] = size
            if description is not None:
                after['description'] = description
            after['metadata'] = dict(current_meta, **meta)
            if access_rules is not None:
                after['access_rules'] = [r for r in before.get('access_rules', []) if r['id'] not in
                                         [d.get('id') for d in deny]] + allow
            return self._result(True, before, after, actions, warnings)
        if resize:
            self.api.resize(share, int(size))
            if wait:
                wait_share(self.api, share, ('available',), timeout, sleep, 'share %s' % name)
        if description is not None and description != (share.get('description') or ''):
            self.api.update_share(share, {'display_description': description})
        if any(current_meta.get(k) != v for k, v in meta.items()):
            self.api.set_metadata(share, meta)
        for rule in deny:
            self.api.deny_access(share, rule)
        if deny and allow:
            # Manila refuses a second rule for the same client until the denied one is gone
            self._wait_rules_gone(share, [r['id'] for r in deny], timeout, sleep)
        for rule in allow:
            self.api.allow_access(share, rule)
        return self._result(True, before, self.view(self.api.share(share['id'])), actions, warnings)

    def _wait_rules_gone(self, share, rule_ids, timeout, sleep):
        def fetch():
            return [r for r in self.api.access_rules(share) if r.get('id') in rule_ids]

        wait_for(fetch, lambda left: 'denying' if left else 'denied', ('denied',), ('denying',), (), timeout,
                 min(sleep, 1), 'the denied access rules of share %s' % share.get('name'))

    def absent(self, name):
        wait, timeout, sleep = self.ctx.waits
        share = self.api.find_share(name)
        if share is None:
            return self._result(False, {}, {}, [])
        before = self.view(share)
        if states.is_busy(share.get('task_state')):
            raise Busy('Cannot delete share %s: it is busy with task %s' % (name, share.get('task_state')))
        if share.get('has_replicas'):
            raise InvalidRequest('Cannot delete share %s: it has replicas; delete them first with share_replica '
                                 'state=absent' % name)
        actions = ['delete share %s (%s) from %s' % (name, share['id'], share.get('host'))]
        if self.ctx.check_mode:
            return self._result(True, before, {}, actions)
        if share.get('status') != 'deleting':
            self.api.delete_share(share)
        if wait:
            wait_share(self.api, share, (GONE,), timeout, sleep, 'share %s' % name, pending=('deleting', 'available'))
        return self._result(True, before, {}, actions)

    def info(self, name=None, pool_address=None):
        pool = None if pool_address is None else str(pool_address)
        if name is not None:
            share = self.api.find_share(name)
            shares = [share] if share is not None and (pool is None or share.get('host') == pool) else []
        else:
            shares = self.api.shares(host=pool)
        return [self.view(s) for s in shares]

    def pools(self, pool_address=None):
        """The pools Manila's scheduler reports (all, or the one ``pool_address`` names); [] when not allowed."""
        wanted = None if pool_address is None else str(pool_address)
        return [{'pool': name, 'backend': self.backend.name, 'driver': 'manila'}
                for name in self.api.pools() or [] if wanted is None or name == wanted]

    def snapshot_present(self, share_name, snapshot_name, description=None):
        raise self._no_snapshots(share_name, snapshot_name)

    def snapshot_absent(self, share_name, snapshot_name):
        raise self._no_snapshots(share_name, snapshot_name)

    def _no_snapshots(self, share_name, snapshot_name):
        return InvalidRequest('Cannot manage snapshot %s of share %s: snapshots of shares on backend %s (driver manila) '
                              'are not managed by this collection yet' % (snapshot_name, share_name, self.backend.name))

    @staticmethod
    def _result(changed, before, after, actions, warnings=None):
        result = {'changed': changed, 'share': after, 'actions': actions, 'diff': {'before': before, 'after': after}}
        if warnings:
            result['warnings'] = warnings
        return result
