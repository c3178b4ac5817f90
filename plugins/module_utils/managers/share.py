# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Share lifecycle: create, update (size, access rules), delete, snapshots, and the public view."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import ipaddress
import time
import uuid

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.layout import read_live_progress
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import access_mode
from ansible_collections.storage.mobility.plugins.module_utils.managers import cleanup
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica_records import pending_replicas, replica_views
from ansible_collections.storage.mobility.plugins.module_utils.names import validate_name
from ansible_collections.storage.mobility.plugins.module_utils.services.share import ShareService
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso

PROTOCOLS = ('NFS', 'CIFS', 'CEPHFS', 'GLUSTERFS', 'HDFS', 'MAPRFS')
ACCESS_TYPES = ('ip', 'user', 'cert', 'cephx')
ACCESS_LEVELS = ('rw', 'ro')
# Extra specs that are matched against pool capabilities (the scheduler's capability filter).
CAPABILITY_SPECS = ('driver_handles_share_servers', 'snapshot_support', 'create_share_from_snapshot_support',
                    'revert_to_snapshot_support', 'mount_snapshot_support', 'thin_provisioning')


def live_copy_progress(migration):
    """Progress read from the copy job's status file when the data node is this machine."""
    return read_live_progress(((migration or {}).get('copy_job') or {}).get('status_file'))


def shown_copy_progress(migration):
    """The copy's progress as share_info shows it: read from the status file when the data node is
    this machine, else the figures the phase playbook handed on at its last poll (with ``reported_at``)."""
    live = live_copy_progress(migration)
    if live:
        return live
    reported = (migration or {}).get('reported_progress')
    return dict(reported) if isinstance(reported, dict) and reported else None


def _spec_bool(value):
    text = str(value).strip()
    if text.lower().startswith('<is>'):
        text = text[4:].strip()
    if text.lower() in ('true', '1', 'yes'):
        return True
    if text.lower() in ('false', '0', 'no'):
        return False
    return None


def normalize_share_type(share_type, extra_specs):
    """The share type as recorded: a name and string-valued extra specs."""
    specs = dict((str(k), str(v)) for k, v in (extra_specs or {}).items())
    if 'driver_handles_share_servers' not in specs:
        specs['driver_handles_share_servers'] = 'False'
    return {'name': share_type or 'default', 'extra_specs': specs}


def check_extra_specs(share_type, stats, pool):
    """Raise InvalidRequest when ``pool`` cannot serve the share type (capability specs only)."""
    for key in CAPABILITY_SPECS:
        if key not in share_type['extra_specs']:
            continue
        wanted = _spec_bool(share_type['extra_specs'][key])
        if wanted is None:
            raise InvalidRequest('Invalid extra spec %s=%r in share type %s: expected True or False'
                                 % (key, share_type['extra_specs'][key], share_type['name']))
        if key in stats and bool(stats[key]) != wanted:
            raise InvalidRequest('Pool %s cannot serve share type %s: it requires %s=%s and the pool has %s'
                                 % (pool, share_type['name'], key, wanted, stats[key]))


def normalize_rules(rules):
    """Validate access rules; return them sorted, each {access_type, access_to, access_level}."""
    result = {}
    for rule in rules or []:
        if not isinstance(rule, dict):
            raise InvalidRequest('Invalid access rule %r: expected access_type, access_to, access_level' % (rule,))
        access_type = rule.get('access_type') or 'ip'
        access_to = rule.get('access_to')
        level = rule.get('access_level') or 'rw'
        if access_type not in ACCESS_TYPES:
            raise InvalidRequest('Invalid access_type %r: choose one of %s' % (access_type, ', '.join(ACCESS_TYPES)))
        if level not in ACCESS_LEVELS:
            raise InvalidRequest('Invalid access_level %r for %s: choose rw or ro' % (level, access_to))
        if not isinstance(access_to, str) or not access_to or any(c in access_to for c in '\x00\n\r'):
            raise InvalidRequest('Invalid access_to %r: a non-empty single-line string is required' % (access_to,))
        if access_type == 'ip':
            try:
                access_to = str(ipaddress.ip_network(access_to, strict=False))
            except ValueError:
                raise InvalidRequest('Invalid access_to %r for access_type ip: not an IP address or network' % access_to)
        key = (access_type, access_to)
        if key in result:
            raise InvalidRequest('Access rule for %s %s is given twice' % key)
        result[key] = {'access_type': access_type, 'access_to': access_to, 'access_level': level}
    return [result[k] for k in sorted(result)]


def _rule_key(rule):
    return (rule['access_type'], rule['access_to'], rule['access_level'])


def active_instance(record):
    for inst in record.get('instances', []):
        if inst.get('role', 'active') == 'active':
            return inst
    return None


class ShareManager(ShareService):
    """The share service for the collection's own drivers: records in the pools, data through the drivers."""

    def __init__(self, ctx):
        self.ctx = ctx

    # -- the public view ---------------------------------------------------------------------
    def view(self, record, pool):
        """What modules return for a share: the record plus export locations and progress."""
        if record is None:
            return {}
        result = copy.deepcopy(record)
        result.pop('history', None)
        for drawn in (((result.get('migration') or {}).get('passes')) or {}).values():
            # A pass's signing key goes to the data mover in the copy plan only (see data_copy/signing.py).
            drawn.pop('key', None)
        driver = self.ctx.driver(pool)
        path = driver.instance_path(pool, record['name'])
        export = driver.export().state(record['name'], path)
        result['export_location'] = export['path']
        result['export_locations'] = [dict(export, preferred=True, is_admin_only=False)]
        reported = (record.get('progress') or {}).get('total_progress')
        if record.get('task_state') == states.DATA_COPYING_IN_PROGRESS:
            live = shown_copy_progress(record.get('migration'))
            if live:
                result['copy_progress'] = live
                # The whole job's share (copy and verification), not the running phase's.
                reported = live.get('total_percent', live.get('percent', reported))
        elif record.get('task_state') in (states.MIGRATION_DRIVER_IN_PROGRESS, states.MIGRATION_DRIVER_PHASE1_DONE,
                                          states.MIGRATION_COMPLETING):
            # A driver that copies in the module's own process (btrfs send) keeps its progress
            # on disk while it runs, where another run of share_info can read it.
            reader = getattr(driver, 'migration_live_progress', None)
            live = reader(pool, record) if reader is not None else None
            if live:
                result['copy_progress'] = live
                if record.get('task_state') == states.MIGRATION_DRIVER_IN_PROGRESS:
                    reported = live.get('total_progress', reported)
        if record.get('replicas'):
            # Each with its replica_state, last_sync, lag_seconds and whether it is past the RPO.
            result['replicas'] = replica_views(record)
        result['total_progress'] = states.total_progress(record.get('task_state'), reported)
        if result['total_progress'] is not None:
            # One truth: the progress the record keeps says what total_progress says.
            result['progress'] = dict(result.get('progress') or {}, total_progress=result['total_progress'])
        result['busy'] = states.is_busy(record.get('task_state'))
        mig = result.get('migration')
        if (isinstance(mig, dict) and mig.get('source_read_only') and mig.get('read_only_epoch')
                and mig.get('read_only_seconds') is None and result['busy']):
            # The read-only window so far (the switch records the whole of it).
            mig['read_only_seconds'] = round(max(0.0, time.time() - mig['read_only_epoch']), 3)
        return result

    # -- create / update ---------------------------------------------------------------------
    def present(self, name, pool_address, size, protocol, share_type, extra_specs, access_rules,
                description=None, metadata=None):
        validate_name(name)
        if size is not None and (not isinstance(size, int) or size < 1):
            raise InvalidRequest('Invalid size %r for share %s: a whole number of GiB, at least 1' % (size, name))
        if protocol is not None and protocol.upper() not in PROTOCOLS:
            raise InvalidRequest('Invalid protocol %r: choose one of %s' % (protocol, ', '.join(PROTOCOLS)))
        rules = normalize_rules(access_rules) if access_rules is not None else None
        ctx = self.ctx
        warnings = []
        with ctx.lock(name, 'share present'):
            record, pool = ctx.load(name, required=False, cleanup=True)
            if record is None:
                return self._create(name, pool_address, size, protocol, share_type, extra_specs, rules or [],
                                    description, metadata or {})
            if pool_address is not None and str(ctx.pool(pool_address).ref) != str(pool.ref):
                warnings.append('Share %s lives in pool %s, not %s as requested; this module does not move shares '
                                '(use storage.mobility.share_migration)' % (name, pool, pool_address))
            return self._update(record, pool, size, protocol, share_type, extra_specs, rules, description,
                                metadata, warnings)

    def _create(self, name, pool_address, size, protocol, share_type, extra_specs, rules, description, metadata):
        ctx = self.ctx
        if pool_address is None:
            raise InvalidRequest('Share %s does not exist; pool (host@backend#pool) is required to create it' % name)
        if size is None:
            raise InvalidRequest('Share %s does not exist; size (GiB) is required to create it' % name)
        pool = ctx.pool(pool_address)
        driver = ctx.driver(pool)
        stype = normalize_share_type(share_type, extra_specs)
        check_extra_specs(stype, driver.pool_stats(pool), pool)
        path = driver.instance_path(pool, name)
        mode = access_mode(rules)
        actions = ['create share %s (%d GiB) in pool %s at %s' % (name, size, pool, path)]
        actions += driver.export().plan(name, path, mode)
        stamp = now_iso()
        record = {
            'id': str(uuid.uuid4()), 'name': name, 'size': size, 'share_proto': (protocol or 'NFS').upper(),
            'share_type': stype, 'description': description, 'metadata': metadata,
            'status': states.CREATING, 'task_state': None, 'progress': None,
            'instances': [{'id': str(uuid.uuid4()), 'pool': str(pool.ref), 'status': states.CREATING,
                           'role': 'active', 'path': path, 'created_at': stamp}],
            'access_rules': [dict(r, id=str(uuid.uuid4()), state='active') for r in rules],
            'snapshots': [], 'replicas': [], 'migration': None, 'created_at': stamp, 'revision': 0,
        }
        after = copy.deepcopy(record)
        after['status'] = after['instances'][0]['status'] = states.AVAILABLE
        if ctx.check_mode:
            after['host'] = str(pool.ref)
            return self._result(True, None, after, pool, actions)
        # Record first (status creating), so a crash leaves a record that a rerun can finish.
        ctx.repo.save(record, pool, 'create requested')
        driver.create_instance(pool, name)
        driver.export().apply(name, path, mode)
        record['status'] = record['instances'][0]['status'] = states.AVAILABLE
        ctx.repo.save(record, pool, 'created')
        return self._result(True, None, record, pool, actions)

    def _update(self, record, pool, size, protocol, share_type, extra_specs, rules, description, metadata, warnings):
        ctx = self.ctx
        driver = ctx.driver(pool)
        before = copy.deepcopy(record)
        after = copy.deepcopy(record)
        actions = []
        if record['status'] == states.CREATING:
            actions.append('finish creating share %s' % record['name'])
            after['status'] = states.AVAILABLE
            after['instances'][0]['status'] = states.AVAILABLE
        if protocol is not None and protocol.upper() != record['share_proto']:
            raise InvalidRequest('Share %s has protocol %s; the protocol of an existing share cannot change'
                                 % (record['name'], record['share_proto']))
        if share_type is not None or extra_specs is not None:
            wanted = normalize_share_type(share_type or record['share_type']['name'],
                                          extra_specs if extra_specs is not None else record['share_type']['extra_specs'])
            if wanted != record['share_type']:
                raise InvalidRequest('Share %s has share type %s with other extra specs; change the type with '
                                     'storage.mobility.share_migration new_share_type' % (record['name'], record['share_type']['name']))
        if size is not None and size != record['size']:
            actions.append('record size %d GiB (was %d GiB)' % (size, record['size']))
            after['size'] = size
        if description is not None and description != record.get('description'):
            actions.append('set description')
            after['description'] = description
        if metadata is not None and metadata != record.get('metadata'):
            actions.append('set metadata')
            after['metadata'] = metadata
        if rules is not None:
            current = dict((_rule_key(r), r) for r in record['access_rules'])
            wanted = dict((_rule_key(r), r) for r in rules)
            if set(current) != set(wanted):
                for key in sorted(set(wanted) - set(current)):
                    actions.append('allow %s %s %s' % key)
                for key in sorted(set(current) - set(wanted)):
                    actions.append('deny %s %s %s' % key)
                after['access_rules'] = [current.get(k) or dict(wanted[k], id=str(uuid.uuid4()), state='active')
                                         for k in sorted(wanted)]
        inst = active_instance(after)
        path = driver.instance_path(pool, record['name'])
        read_only = bool(((record.get('migration') or {}).get('source_read_only'))) and states.is_busy(record.get('task_state'))
        mode = access_mode(after['access_rules'], read_only)
        export_actions = driver.export().plan(record['name'], path, mode)
        if actions and states.is_busy(record.get('task_state')):
            raise Busy('Cannot change share %s: it is busy with task_state %s' % (record['name'], record['task_state']))
        actions += export_actions
        if not actions:
            return self._result(False, before, record, pool, [], warnings)
        if ctx.check_mode:
            return self._result(True, before, after, pool, actions, warnings)
        if inst is not None and after['status'] == states.AVAILABLE and record['status'] == states.CREATING:
            driver.create_instance(pool, record['name'])
        driver.export().apply(record['name'], path, mode)
        ctx.repo.save(after, pool, 'updated: ' + '; '.join(actions))
        return self._result(True, before, after, pool, actions, warnings)

    # -- delete ------------------------------------------------------------------------------
    def absent(self, name):
        ctx = self.ctx
        validate_name(name)
        with ctx.lock(name, 'share absent'):
            record, pool = ctx.load(name, required=False, cleanup=True)
            if record is None:
                return self._result(False, None, None, None, [])
            if states.is_busy(record.get('task_state')):
                raise Busy('Cannot delete share %s: it is busy with task_state %s; complete or cancel that first'
                           % (name, record['task_state']))
            if record.get('snapshots'):
                raise InvalidRequest('Cannot delete share %s: it has snapshots (%s); delete them first'
                                     % (name, ', '.join(s['name'] for s in record['snapshots'])))
            if record.get('replicas'):
                raise InvalidRequest('Cannot delete share %s: it has replicas; delete them first' % name)
            # Leftovers of its migrations go first: once the record is gone nothing would retry them.
            left = cleanup.run_pending(ctx, record, pool)
            if left:
                raise StorageError('Cannot delete share %s yet: what its migrations left could not be removed (%s); '
                                   'the share is unchanged: fix the cause and delete it again'
                                   % (name, cleanup.describe(left)))
            driver = ctx.driver(pool)
            path = driver.instance_path(pool, name)
            actions = driver.export().plan(name, path, None) + ['delete share %s from pool %s (%s)' % (name, pool, path)]
            before = copy.deepcopy(record)
            if ctx.check_mode:
                return self._result(True, before, None, pool, actions)
            record['status'] = states.DELETING
            ctx.repo.save(record, pool, 'delete requested')
            driver.export().remove(name, path)
            driver.delete_instance(pool, name)
            ctx.repo.delete(name, pool)
            return self._result(True, before, None, pool, actions)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot_present(self, share_name, snapshot_name, description=None):
        ctx = self.ctx
        validate_name(snapshot_name, 'snapshot name')
        with ctx.lock(share_name, 'snapshot present'):
            record, pool = ctx.load(share_name, cleanup=True)
            existing = [s for s in record['snapshots'] if s['name'] == snapshot_name]
            driver = ctx.driver(pool)
            if existing and existing[0]['status'] == states.AVAILABLE:
                return {'changed': False, 'snapshot': existing[0], 'actions': []}
            if existing and existing[0].get('replicas_pending') and driver.snapshot_exists(pool, share_name, snapshot_name):
                # Taken; waiting for the next update of its replicas (docs/replication.md).
                return {'changed': False, 'snapshot': existing[0], 'actions': []}
            if states.is_busy(record.get('task_state')):
                raise Busy('Cannot snapshot share %s: it is busy with task_state %s' % (share_name, record['task_state']))
            if record['status'] != states.AVAILABLE:
                raise InvalidRequest('Cannot snapshot share %s: its status is %s, not available' % (share_name, record['status']))
            actions = ['snapshot share %s as %s' % (share_name, snapshot_name)]
            snap = existing[0] if existing else {
                'id': str(uuid.uuid4()), 'name': snapshot_name, 'share_id': record['id'], 'description': description,
                'status': states.CREATING, 'created_at': now_iso(), 'size': record['size'],
                'path': driver.snapshot_path(pool, share_name, snapshot_name)}
            if ctx.check_mode:
                return {'changed': True, 'snapshot': dict(snap, status=states.AVAILABLE), 'actions': actions}
            if not existing:
                record['snapshots'].append(snap)
                ctx.repo.save(record, pool, 'snapshot %s requested' % snapshot_name)
            snap['used_bytes'] = driver.create_snapshot(pool, share_name, snapshot_name)
            # A replicated share's snapshot is available once its in_sync replicas hold it too.
            pending = pending_replicas(record, snapshot_name)
            snap['status'] = states.CREATING if pending else states.AVAILABLE
            if pending:
                snap['replicas_pending'] = pending
            ctx.repo.save(record, pool, 'snapshot %s %s' % (snapshot_name, 'taken; waiting for the replicas %s'
                                                            % ', '.join(pending) if pending else 'available'))
            return {'changed': True, 'snapshot': snap, 'actions': actions}

    def snapshot_absent(self, share_name, snapshot_name):
        ctx = self.ctx
        validate_name(snapshot_name, 'snapshot name')
        with ctx.lock(share_name, 'snapshot absent'):
            record, pool = ctx.load(share_name, required=False, cleanup=True)
            if record is None:
                return {'changed': False, 'snapshot': {}, 'actions': []}
            existing = [s for s in record['snapshots'] if s['name'] == snapshot_name]
            if not existing:
                return {'changed': False, 'snapshot': {}, 'actions': []}
            if states.is_busy(record.get('task_state')):
                raise Busy('Cannot delete snapshot %s of share %s: the share is busy with task_state %s'
                           % (snapshot_name, share_name, record['task_state']))
            actions = ['delete snapshot %s of share %s' % (snapshot_name, share_name)]
            if ctx.check_mode:
                return {'changed': True, 'snapshot': existing[0], 'actions': actions}
            existing[0]['status'] = states.DELETING
            ctx.repo.save(record, pool, 'snapshot %s delete requested' % snapshot_name)
            ctx.driver(pool).delete_snapshot(pool, share_name, snapshot_name)
            record['snapshots'] = [s for s in record['snapshots'] if s['name'] != snapshot_name]
            ctx.repo.save(record, pool, 'snapshot %s deleted' % snapshot_name)
            return {'changed': True, 'snapshot': existing[0], 'actions': actions}

    # -- queries -----------------------------------------------------------------------------
    def info(self, name=None, pool_address=None):
        ctx = self.ctx
        names = [validate_name(name)] if name else ctx.repo.list_names()
        wanted_pool = str(ctx.pool(pool_address).ref) if pool_address else None
        result = []
        for share_name in names:
            record, pool = ctx.load(share_name, required=False)
            if record is None:
                continue
            if wanted_pool and str(pool.ref) != wanted_pool:
                continue
            result.append(self.view(record, pool))
        return result

    def pools(self, pool_address=None):
        """Every pool (or one) with capacity, capabilities and the shares it holds."""
        ctx = self.ctx
        pools = [ctx.pool(pool_address)] if pool_address else ctx.backends.pools()
        by_pool = {}
        for share_name in ctx.repo.list_names():
            record, pool = ctx.load(share_name, required=False)
            if record is not None:
                by_pool.setdefault(str(pool.ref), []).append(record)
        result = []
        for pool in pools:
            records = by_pool.get(str(pool.ref), [])
            caps = ctx.driver(pool).pool_stats(pool)
            caps['allocated_capacity_gb'] = sum(int(r.get('size') or 0) for r in records)
            result.append({'name': str(pool.ref), 'host': pool.backend.host, 'backend': pool.backend.name,
                           'pool': pool.name, 'path': pool.path, 'driver': pool.backend.driver,
                           'capabilities': caps, 'shares': sorted(r['name'] for r in records)})
        return result

    def _result(self, changed, before, after, pool, actions, warnings=None):
        result = {'changed': changed, 'actions': actions,
                  'share': self.view(after, pool) if after is not None else {},
                  'diff': {'before': self._diffable(before, pool), 'after': self._diffable(after, pool)}}
        if warnings:
            result['warnings'] = warnings
        return result

    def _diffable(self, record, pool):
        if record is None:
            return {}
        view = self.view(record, pool)
        for key in ('revision', 'updated_at', 'export_locations', 'busy'):
            view.pop(key, None)
        return view
