# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module migration_plan: the planner (managers/migration_plan.py) over the collection's own pools.

Reads every share of a source (a pool ``host@backend#pool``, a backend ``host@backend`` or a
storage host ``host``) from the records, counts its bytes and files through the transport, reads
the pools' capacity and capabilities through their drivers, and stores the plan with the records:
``.mobility/plans/<name>.json`` in the first source pool (atomic, through the transport). A rerun
follows the stored plan unless ``new_plan`` is asked; a stored plan made for another request
(source, destinations, headroom, rates, flags) is refused with the reason rather than followed.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers import migration_plan
from ansible_collections.storage.mobility.plugins.module_utils.managers import migration_schedule
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica_records import replication_type
from ansible_collections.storage.mobility.plugins.module_utils.names import validate_name
from ansible_collections.storage.mobility.plugins.module_utils.store import META_DIR, now_iso
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.registry import is_volume_backend

PLANS_DIR = 'plans'
PLAN_FORMAT = 1
# task_state of a share whose phase 1 is over: a new assignment of the copies leaves it out.
PHASE1_DONE = ('data_copying_completed', 'migration_driver_phase1_done', 'migration_completing', 'migration_success')
# task_state of a share whose copy job may be running on the data node its record names.
COPYING = ('data_copying_starting', 'data_copying_in_progress')
LIMITS = (('copies_per_data_node', 'copies at once on one data node'),
          ('copies_per_storage_host', 'copies at once that read from or write to one storage host'))


def check_copy_options(params):
    """The data nodes and the limits of the copy assignment, validated: (names, per node, per host).

    names is None when no data node is given (no assignment is made)."""
    defaults = {'copies_per_data_node': 1, 'copies_per_storage_host': None}
    for key, what in LIMITS:
        value = params.get(key, defaults[key])
        if value is None and key == 'copies_per_storage_host':
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest('Invalid %s %r: a positive integer (%s)' % (key, value, what))
    names = params.get('data_nodes')
    if not names:
        return None, params.get('copies_per_data_node', 1), params.get('copies_per_storage_host')
    seen = set()
    for name in names:
        if not isinstance(name, str) or not name.strip() or name in seen:
            raise InvalidRequest('Invalid data_nodes: every data node needs a name of its own, got %r' % (name,))
        seen.add(name)
    return sorted(names), params.get('copies_per_data_node', 1), params.get('copies_per_storage_host')


def check_lost_nodes(params, nodes):
    """The data nodes the operator confirms lost (``lost_data_nodes``), validated: a sorted list.
    A node still given in ``data_nodes`` cannot be lost at the same time."""
    lost = params.get('lost_data_nodes') or []
    seen = set()
    for name in lost:
        if not isinstance(name, str) or not name.strip() or name in seen:
            raise InvalidRequest('Invalid lost_data_nodes: every lost data node needs a name of its own, got %r' % (name,))
        seen.add(name)
    both = sorted(seen & set(nodes or []))
    if both:
        raise InvalidRequest('Invalid lost_data_nodes: %s %s also in data_nodes; a data node the copies may go to '
                             'is not lost' % (', '.join(both), 'is' if len(both) == 1 else 'are'))
    return sorted(seen)


def held_reason(share, job, nodes):
    return ('its copy job %s may still be running on data node %s, which is not among the data nodes now (%s): '
            'if %s is down for good or its copy was stopped, rerun with lost_data_nodes: [%s] to copy %s elsewhere'
            % (job.get('job_id'), job.get('data_node'), ', '.join(nodes) or 'none', job.get('data_node'),
               job.get('data_node'), share))


def plan_path(pool, name):
    return os.path.join(pool.path, META_DIR, PLANS_DIR, validate_name(name, 'plan name') + '.json')


def measured_rates(records):
    """The host-assisted copy rate the records measured (verified copies of earlier runs), or None.

    Bytes over copy seconds summed over every record that kept a copy summary; a copy that took
    no measurable time does not count."""
    total_bytes = 0
    total_seconds = 0.0
    copies = 0
    for record in records:
        migration = record.get('migration') or {}
        for key in ('copy', 'final_copy'):
            summary = migration.get(key) or {}
            nbytes = summary.get('bytes')
            seconds = summary.get('copy_seconds')
            if isinstance(nbytes, int) and isinstance(seconds, (int, float)) and seconds > 0 and nbytes > 0:
                total_bytes += nbytes
                total_seconds += seconds
                copies += 1
    if not copies:
        return None
    return {'copies': copies, 'bytes': total_bytes, 'seconds': round(total_seconds, 3),
            'bytes_per_second': int(total_bytes / total_seconds)}


class MigrationPlanManager(object):
    """Make, store and follow the plan of an evacuation or a rebalance over the local pools."""

    def __init__(self, ctx):
        self.ctx = ctx

    def share_pools(self):
        return [p for p in self.ctx.backends.pools() if not is_volume_backend(p.backend) and not p.backend.is_openstack]

    def source_pools(self, source):
        """The pools a source names: ``host@backend#pool``, ``host@backend`` or ``host``."""
        pools = self.share_pools()
        if '#' in source:
            pool = self.ctx.pool(source, 'source pool')
            return [pool]
        if '@' in source:
            host, _sep, backend = source.partition('@')
            found = [p for p in pools if p.backend.host == host and p.backend.name == backend]
        else:
            found = [p for p in pools if p.backend.host == source]
        if not found:
            raise InvalidRequest('Invalid source %r: no declared share pool is on it (a source is host@backend#pool, '
                                 'host@backend or host; pools declared: %s)'
                                 % (source, ', '.join(str(p.ref) for p in pools) or 'none'))
        return found

    def pool_input(self, pool, headroom):
        ctx = self.ctx
        transport = ctx.transport(pool.backend)
        try:
            st = transport.statvfs(pool.path)
            dev = transport.stat(pool.path).dev
        except OSError as exc:
            raise StorageError('Pool %s: cannot read its filesystem at %s: %s' % (pool.ref, pool.path, exc))
        caps = ctx.driver(pool).pool_stats(pool)
        capacity = st['f_blocks'] * st['f_frsize']
        return {'address': str(pool.ref), 'host': pool.backend.host, 'backend': pool.backend.name,
                'driver': pool.backend.driver, 'filesystem': '%s:%s' % (pool.backend.host, dev),
                'capacity_bytes': capacity, 'free_bytes': min(st['f_bavail'] * st['f_frsize'], capacity),
                'headroom': headroom, 'capabilities': caps,
                'replication_domain': getattr(pool.backend, 'replication_domain', None)}

    def share_input(self, record, pool):
        ctx = self.ctx
        path = ctx.driver(pool).instance_path(pool, record['name'])
        try:
            counts = ctx.transport(pool.backend).tree_counts(path)
        except OSError as exc:
            raise StorageError('Share %s: cannot count its files at %s: %s' % (record['name'], path, exc))
        return {'name': record['name'], 'pool': str(pool.ref), 'bytes': counts['bytes'], 'files': counts['files'],
                'share_type': record.get('share_type') or {}, 'replication_type': replication_type(record),
                'snapshots': sorted(s['name'] for s in record.get('snapshots') or [])}

    def read_stored(self, pool, name):
        transport = self.ctx.transport(pool.backend)
        path = plan_path(pool, name)
        try:
            stored = json.loads(transport.read_bytes(path).decode('utf-8'))
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise StorageError('Plan %s: cannot read %s: %s' % (name, path, exc))
        except ValueError as exc:
            raise StorageError('Plan %s: %s is not valid JSON (%s); remove it or pass new_plan: true' % (name, path, exc))
        if not isinstance(stored, dict) or not isinstance(stored.get('plan'), dict):
            raise StorageError('Plan %s: %s holds no plan; remove it or pass new_plan: true' % (name, path))
        return stored

    def assign(self, plan, rates, host_rate, nodes, per_node, per_host, stored_copies, lost_nodes=()):
        """The assignment of the plan's host-assisted copies to the data nodes: in lanes (one per
        copy slot, each running its copies back to back), or in rounds when a storage host limit is
        given (see migration_schedule).

        Shares whose phase 1 is over are left out; a share whose copy job runs on a data node that
        is still given stays there (pinned). The copies of a data node no longer given go to the
        others only when the operator confirms that node lost (``lost_nodes``): until then its
        copy may still be running there (the node was only cut off from the controller, or taken
        out of the inventory while it copied), and a second copy into the same destination would
        race it. Such shares are *held*: assigned nowhere, each with the reason."""
        ctx = self.ctx
        model = migration_plan.RateModel(rates).entry(migration_plan.HOST)
        # The plan's rate for a data node copy (given, measured or the default), the same on every slot.
        rate = {'bytes_per_second': host_rate or model['bytes_per_second']
                or migration_plan.DEFAULT_RATES[migration_plan.HOST]['bytes_per_second'],
                'seconds_per_file': model['seconds_per_file']}
        data_nodes = [dict(rate, name=n, slots=per_node) for n in nodes]
        jobs = []
        pinned = {}
        done = []
        held = []
        for move in plan.get('moves') or []:
            if move.get('mechanism') != migration_plan.HOST:
                continue
            record, _pool = ctx.load(move['share'], required=False)
            state = (record or {}).get('task_state')
            if state in PHASE1_DONE:
                done.append(move['share'])
                continue
            job = ((record or {}).get('migration') or {}).get('copy_job') or {}
            if state in COPYING and job.get('data_node') in nodes:
                pinned[move['share']] = job['data_node']
            elif state in COPYING and job.get('data_node') and job['data_node'] not in lost_nodes:
                held.append({'share': move['share'], 'data_node': job['data_node'], 'job_id': job.get('job_id'),
                             'reason': held_reason(move['share'], job, nodes)})
                continue
            jobs.append({'share': move['share'], 'bytes': move['bytes'], 'files': move['files'],
                         'source_host': move.get('source_host'), 'destination_host': move.get('destination_host')})
        if per_host is None:
            # No storage host limit: every copy slot works through its own lane, never waiting for
            # another's copies.
            schedule = dict(migration_schedule.assign_lanes(jobs, data_nodes, pinned=pinned), mode='lanes', rounds=[])
        else:
            # A storage host limit holds whatever the copies take only if a round waits for the last.
            schedule = dict(migration_schedule.assign_rounds(jobs, data_nodes, host_limit=per_host, pinned=pinned),
                            mode='rounds', lanes=[])
        if stored_copies is None:
            reason = 'first assignment'
        else:
            lost = sorted(set(stored_copies.get('data_nodes') or []) - set(nodes))
            added = sorted(set(nodes) - set(stored_copies.get('data_nodes') or []))
            reasons = []
            if lost:
                reasons.append('data nodes gone: %s' % ', '.join(lost))
            if set(stored_copies.get('lost_data_nodes') or []) != set(lost_nodes):
                reasons.append('lost data nodes confirmed: %s' % ', '.join(sorted(lost_nodes)) if lost_nodes
                               else 'no data node confirmed lost')
            if added:
                reasons.append('data nodes added: %s' % ', '.join(added))
            for key, _what in LIMITS:
                if stored_copies.get(key) != {'copies_per_data_node': per_node, 'copies_per_storage_host': per_host}[key]:
                    reasons.append('%s %s -> %s' % (key, stored_copies.get(key), {'copies_per_data_node': per_node,
                                                                                  'copies_per_storage_host': per_host}[key]))
            reason = '; '.join(reasons) or 'reassigned'
        return {'data_nodes': nodes, 'copies_per_data_node': per_node, 'copies_per_storage_host': per_host,
                'rate': rate, 'mode': schedule['mode'], 'lanes': schedule['lanes'], 'rounds': schedule['rounds'],
                'assignments': schedule['assignments'],
                'estimated_seconds': schedule['estimated_seconds'], 'pinned': dict(sorted(pinned.items())),
                'held': held, 'lost_data_nodes': list(lost_nodes),
                'phase1_done': sorted(done), 'made_at': now_iso(), 'reason': reason}

    def run(self, params):
        ctx = self.ctx
        nodes, per_node, per_host = check_copy_options(params)
        lost_nodes = check_lost_nodes(params, nodes)
        result = self.plan_run(params)
        stored_copies = result.pop('stored_copies', None)
        document = result.pop('document')
        if nodes is None:
            result['copies'] = stored_copies
            return result
        # A stored assignment that held shares is made again: a held copy may have ended since, or
        # its data node been confirmed lost.
        if stored_copies is not None and not stored_copies.get('held') and (
                stored_copies.get('data_nodes'), stored_copies.get('copies_per_data_node'),
                stored_copies.get('copies_per_storage_host'),
                stored_copies.get('lost_data_nodes') or []) == (nodes, per_node, per_host, lost_nodes):
            result['copies'] = dict(stored_copies, followed=True)
            return result
        host_rate = (result.get('rates') or {}).get('host_bytes_per_second')
        copies = self.assign(result['plan'], document['request']['rates'], host_rate, nodes, per_node, per_host, stored_copies,
                             lost_nodes)
        result['copies'] = dict(copies, followed=False)
        result['changed'] = True
        if ctx.check_mode:
            return result
        document['copies'] = copies
        self.store(result['path'], document)
        result['stored'] = True
        return result

    def store(self, path, document):
        transport = self.ctx.transport(self.home.backend)
        try:
            transport.makedirs(os.path.dirname(path), 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StorageError('Plan %s: cannot create %s: %s' % (document['name'], os.path.dirname(path), exc))
        transport.write_json_atomic(path, document)

    def plan_run(self, params):
        """The plan: the stored one when the request matches, else a new one (stored unless in check
        mode). Returns the module's result with the stored document and its copy assignment."""
        ctx = self.ctx
        name = validate_name(params['name'], 'plan name')
        headroom = params['headroom']
        if isinstance(headroom, bool) or not 0 <= headroom < 1:
            raise InvalidRequest('Invalid headroom %r: a fraction of the capacity from 0 up to 1' % (headroom,))
        sources = self.source_pools(params['source'])
        source_refs = sorted(str(p.ref) for p in sources)
        all_pools = self.share_pools()
        if params['destinations']:
            allowed = sorted(set(str(ctx.pool(a, 'destination pool').ref) for a in params['destinations']))
            for address in allowed:
                if address in source_refs:
                    raise InvalidRequest('Invalid destinations: %s is a source pool of this plan' % address)
        else:
            allowed = sorted(str(p.ref) for p in all_pools if str(p.ref) not in source_refs)
        flags = dict((k, v) for k, v in sorted((params.get('flags') or {}).items()))
        request = {'source': params['source'], 'sources': source_refs, 'destinations': allowed, 'headroom': headroom,
                   'rates': params['rates'] or {}, 'flags': flags}
        home = sorted(sources, key=lambda p: str(p.ref))[0]
        self.home = home
        stored = self.read_stored(home, name)
        result = {'changed': False, 'path': plan_path(home, name), 'name': name}
        if stored is not None and not params['new_plan']:
            if stored.get('request') != request:
                raise InvalidRequest('Plan %s stored in %s was made for another request (%s); pass new_plan: true to '
                                     'replace it or use another name'
                                     % (name, result['path'], json.dumps(stored.get('request'), sort_keys=True)))
            result.update(plan=stored['plan'], stored=True, created_at=stored.get('created_at'),
                          rates=stored.get('rates'), document=stored, stored_copies=stored.get('copies'))
            return result

        records = []
        shares = []
        for share_name in ctx.repo.list_names():
            record, pool = ctx.load(share_name, required=False)
            if record is None:
                continue
            records.append(record)
            if str(pool.ref) in source_refs:
                shares.append(self.share_input(record, pool))
        rates = dict((k, dict(v)) for k, v in (params['rates'] or {}).items())
        measured = measured_rates(records)
        rates_source = 'given' if rates.get(migration_plan.HOST, {}).get('bytes_per_second') is not None else 'default'
        if measured and rates_source == 'default':
            rates.setdefault(migration_plan.HOST, {})['bytes_per_second'] = measured['bytes_per_second']
            rates_source = 'measured'
        pools = [self.pool_input(p, headroom) for p in all_pools]
        plan = migration_plan.plan(shares, pools, allowed=allowed, rates=rates, flags=flags or None)
        rate_view = {'host_bytes_per_second': migration_plan.RateModel(rates).entry(migration_plan.HOST)['bytes_per_second'],
                     'source': rates_source, 'measured': measured}
        document = {'format': PLAN_FORMAT, 'name': name, 'created_at': now_iso(), 'request': request,
                    'rates': rate_view, 'plan': plan}
        result.update(plan=plan, stored=False, created_at=document['created_at'], rates=rate_view, changed=True,
                      diff={'before': (stored or {}).get('plan') or {}, 'after': plan}, document=document)
        if ctx.check_mode:
            return result
        self.store(result['path'], document)
        result['stored'] = True
        return result
