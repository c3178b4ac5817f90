"""Simulation of the migration planner and the schedulers at a scale the test machines cannot run.

A seeded backend of heavy-tailed shares (Pareto sizes) on four source pools is evacuated to eight
destination pools by managers/migration_plan.py; the host-assisted copies are spread by
managers/migration_schedule.py over N = 1..64 simulated data nodes in lanes (``assign_lanes``, what
the evacuate_pool playbook runs without a storage host limit), and the makespan is compared with a
lower bound no schedule can beat. For information, the rounds the playbook runs with a storage host
limit (``assign_rounds``, --host-limit) are measured against their own lower bound (which counts
the limit); they wait for each round's longest copy and are not held to --max-ratio. The
maintenance-window scheduler then switches over
ready shares in windows of several lengths, with real durations that differ from the estimates,
deciding with the simulated clock as the playbook does with the real one.

Checks (printed PASS/FAIL, exit status 1 on a FAIL): no pool is filled past its headroom, every
makespan is within --max-ratio (1.15) of its lower bound, no switchover starts at or after the
window's end and none ends after it.

    source scripts/env.sh
    python bench/plan_sim.py                       # 10,000 shares, N = 1..64, writes bench/results/plan_sim.json
    python bench/plan_sim.py --markdown            # the table of docs/performance.md
    python bench/plan_sim.py --shares 500 --nodes 1,4,16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from ansible_collections.storage.mobility.plugins.module_utils.managers import migration_plan, migration_schedule

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


def make_backend(shares=10000, seed=22, alpha=1.3, min_bytes=64 * MiB):
    """Shares (Pareto sizes, capped at 8 TiB), four source pools, eight destination pools sized to
    hold about 1.25 times the data with 10 % headroom, so that some shares do not fit."""
    rng = random.Random(seed)
    sources = []
    for i in range(4):
        sources.append({'address': 'old%d@old#p%d' % (i, i), 'host': 'old%d' % i, 'backend': 'old', 'driver': 'posix',
                        'filesystem': 'old%d-fs' % i, 'capacity_bytes': 0, 'free_bytes': 0,
                        'capabilities': {'snapshot_support': True}, 'replication_domain': 'east' if i % 2 == 0 else 'west'})
    items = []
    for i in range(shares):
        size = int(min(min_bytes * rng.paretovariate(alpha), 8 * TiB))
        mean_file = int(rng.lognormvariate(13.5, 1.5)) + 1          # about 0.7 MiB, heavy tailed too
        files = max(1, size // mean_file)
        source = sources[i % 4]
        share = {'name': 's%05d' % i, 'pool': source['address'], 'bytes': size, 'files': files,
                 'share_type': {'extra_specs': {'snapshot_support': True} if i % 7 == 0 else {}},
                 'replication_type': 'readable' if i % 50 == 0 else None,
                 'snapshots': ['snap1'] if i % 997 == 0 else []}
        items.append(share)
    total = sum(s['bytes'] for s in items)
    for source in sources:
        used = sum(s['bytes'] for s in items if s['pool'] == source['address'])
        source['capacity_bytes'] = int(used * 1.2)
        source['free_bytes'] = source['capacity_bytes'] - used
    dests = []
    weights = [3, 3, 2, 2, 1, 1, 1, 1]
    for i, weight in enumerate(weights):
        capacity = int(total * 1.25 * weight / sum(weights) / 0.9)
        dests.append({'address': 'new%d@new#p%d' % (i % 4, i), 'host': 'new%d' % (i % 4), 'backend': 'new',
                      'driver': 'posix', 'filesystem': 'new%d-fs' % i, 'capacity_bytes': capacity,
                      'free_bytes': int(capacity * (0.95 if i % 3 else 0.6)), 'headroom': 0.1,
                      'capabilities': {'snapshot_support': i % 2 == 0},
                      'replication_domain': 'east' if i < 4 else 'west'})
    return items, sources, dests


def check_plan(result, pools):
    """No pool past its headroom, recomputed from the moves alone."""
    added = {}
    for move in result['moves']:
        added[move['destination']] = added.get(move['destination'], 0) + move['bytes']
    problems = []
    for pool in pools:
        if added.get(pool['address'], 0) > migration_plan.usable_bytes(pool):
            problems.append(pool['address'])
    return problems


def unplaced_kinds(unplaced):
    """How many shares fit nowhere, by the kind of reason every pool gave."""
    kinds = {}
    for entry in unplaced:
        reason = entry['reason']
        if 'cannot carry its snapshots' in reason:
            kind = 'snapshots need a driver-assisted move'
        elif 'left above its headroom' in reason:
            kind = 'no room above the headroom'
        else:
            kind = 'other'
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def make_nodes(count, slots=2, file_cost=True):
    """Data nodes of two kinds, alternating: 400 and 250 MiB/s per copy, 1 and 1.5 ms per file
    (no cost per file with file_cost False)."""
    nodes = []
    for i in range(count):
        fast = i % 2 == 0
        nodes.append({'name': 'dn%02d' % i, 'slots': slots, 'bytes_per_second': (400 if fast else 250) * MiB,
                      'seconds_per_file': (0.001 if fast else 0.0015) if file_cost else 0.0})
    return nodes


def run_window(ready, window_seconds, margin, parallel, seed):
    """The playbook's loop over a window: the real duration of each switchover is its estimate
    times a factor from 0.7 to 1.2; each decision uses the simulated clock at that moment."""
    rng = random.Random(seed)
    lanes = [0.0] * parallel
    started, left, overrun = [], [], []
    for share in migration_schedule.order_ready(ready):
        lane = min(range(parallel), key=lambda i: (lanes[i], i))
        now = lanes[lane]
        ok, reason = migration_schedule.window_decision(now, window_seconds, share['estimate'], margin)
        if not ok:
            left.append((share['name'], reason))
            continue
        if now >= window_seconds:
            raise AssertionError('started %s at or after the end' % share['name'])
        real = share['estimate'] * rng.uniform(0.7, 1.2)
        lanes[lane] = now + real
        started.append((share['name'], now, now + real))
        if now + real > window_seconds:
            overrun.append(share['name'])
    last_end = max([end for _n, _s, end in started] or [0.0])
    return {'window_seconds': window_seconds, 'parallel': parallel, 'started': len(started), 'left': len(left),
            'last_end': round(last_end, 1), 'overrun': len(overrun),
            'used': round(last_end / window_seconds, 3) if window_seconds else 0.0}


def simulate(shares=10000, nodes=None, seed=22, slots=2, host_limit=32, max_ratio=1.15,
             windows=(30, 60, 120, 240), ready_count=600, file_cost=True):
    nodes = list(nodes or range(1, 65))
    t0 = time.monotonic()
    items, sources, dests = make_backend(shares, seed)
    result = migration_plan.plan(items, sources + dests, allowed=[d['address'] for d in dests])
    overfilled = check_plan(result, sources + dests)
    plan_seconds = time.monotonic() - t0
    jobs = [dict(m) for m in result['moves'] if m['mechanism'] == migration_plan.HOST]
    for job in jobs:
        job.setdefault('share', job['share'])
    copies = []
    for count in nodes:
        data_nodes = make_nodes(count, slots, file_cost)
        t1 = time.monotonic()
        lanes = migration_schedule.assign_lanes(jobs, data_nodes)
        makespan = lanes['estimated_seconds']
        bound, which = migration_schedule.lower_bound(jobs, data_nodes)
        schedule_seconds = time.monotonic() - t1
        total_rate = sum(n['bytes_per_second'] * n['slots'] for n in data_nodes)
        bytes_bound = max(sum(j['bytes'] for j in jobs) / total_rate,
                          max(min(migration_schedule.copy_seconds(j, n) for n in data_nodes) for j in jobs))
        rounds = migration_schedule.assign_rounds(jobs, data_nodes, host_limit=host_limit)
        rounds_bound, _which = migration_schedule.lower_bound(jobs, data_nodes, host_limit=host_limit)
        copies.append({'data_nodes': count, 'slots': count * slots, 'makespan': round(makespan, 1),
                       'lower_bound': round(bound, 1), 'bound': which, 'ratio': round(makespan / bound, 4),
                       'bytes_only_bound': round(bytes_bound, 1), 'bytes_only_ratio': round(makespan / bytes_bound, 4),
                       'schedule_seconds': round(schedule_seconds, 2),
                       'rounds': len(rounds['rounds']), 'rounds_makespan': round(rounds['estimated_seconds'], 1),
                       'rounds_lower_bound': round(rounds_bound, 1),
                       'rounds_ratio': round(rounds['estimated_seconds'] / rounds_bound, 4)})
    # Phase 2: the largest ready shares with what changed since their last increment.
    rng = random.Random(seed + 1)
    rate = {'bytes_per_second': 300 * MiB, 'seconds_per_file': 0.0005, 'fixed_seconds': 5.0}
    ready = []
    for move in sorted(result['moves'], key=lambda m: m['share'])[:ready_count]:
        share = {'name': move['share'], 'changed_bytes': int(move['bytes'] * rng.uniform(0.0, 0.05)),
                 'changed_files': int(move['files'] * rng.uniform(0.0, 0.05)), 'switchover_seconds': 10.0}
        share['estimate'] = migration_schedule.final_pass_seconds(share, rate)
        share['ready'] = True
        ready.append(share)
    margin = {'seconds': 30.0, 'fraction': 0.25}
    window_runs = []
    for minutes in windows:
        for parallel in (1, 4):
            window_runs.append(dict(run_window(ready, minutes * 60.0, margin, parallel, seed + minutes),
                                    window_minutes=minutes))
    checks = {
        'no_pool_overfilled': not overfilled,
        'makespan_within_ratio': all(c['ratio'] <= max_ratio for c in copies),
        'window_never_past_end': all(w['overrun'] == 0 and w['last_end'] <= w['window_seconds'] for w in window_runs),
    }
    return {
        'parameters': {'shares': shares, 'seed': seed, 'slots_per_node': slots, 'host_limit': host_limit,
                       'max_ratio': max_ratio, 'file_cost': file_cost, 'ready_shares': len(ready), 'margin': margin},
        'plan': dict(result['totals'], overfilled=overfilled, seconds=round(plan_seconds, 2),
                     unplaced_by_reason=unplaced_kinds(result['unplaced'])),
        'copies': copies,
        'windows': window_runs,
        'checks': checks,
        'passed': all(checks.values()),
    }


def markdown(report):
    lines = ['| data nodes | copy slots | lanes: makespan (h) | lower bound (h) | bound | ratio | bytes/rate or largest (h) '
             '| ratio to it | rounds with a host limit: ratio to their bound |',
             '|---|---|---|---|---|---|---|---|---|']
    for c in report['copies']:
        if c['data_nodes'] in (1, 2, 4, 8, 16, 24, 32, 48, 64) or c['ratio'] == max(x['ratio'] for x in report['copies']):
            row = (c['data_nodes'], c['slots'], c['makespan'] / 3600, c['lower_bound'] / 3600, c['bound'], c['ratio'],
                   c['bytes_only_bound'] / 3600, c['bytes_only_ratio'], c['rounds_ratio'])
            lines.append('| %d | %d | %.2f | %.2f | %s | %.4f | %.2f | %.4f | %.4f |' % row)
    lines += ['', '| window (min) | switchovers at once | started | left | last end (min) | past the end |',
              '|---|---|---|---|---|---|']
    for w in report['windows']:
        lines.append('| %d | %d | %d | %d | %.1f | %d |' % (w['window_minutes'], w['parallel'], w['started'], w['left'],
                                                            w['last_end'] / 60, w['overrun']))
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--shares', type=int, default=10000)
    parser.add_argument('--nodes', default='1-64', help='data node counts: 1-64 or 1,2,4')
    parser.add_argument('--seed', type=int, default=22)
    parser.add_argument('--slots', type=int, default=2, help='copies at once per data node')
    parser.add_argument('--host-limit', type=int, default=32, help='copies at once per storage host (the rounds)')
    parser.add_argument('--max-ratio', type=float, default=1.15)
    parser.add_argument('--no-file-cost', action='store_true', help='data nodes with no cost per file (bytes only)')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'plan_sim.json'))
    parser.add_argument('--markdown', action='store_true', help='print the tables of docs/performance.md')
    args = parser.parse_args(argv)
    if '-' in args.nodes:
        low, high = args.nodes.split('-', 1)
        nodes = list(range(int(low), int(high) + 1))
    else:
        nodes = [int(n) for n in args.nodes.split(',')]
    report = simulate(args.shares, nodes, args.seed, args.slots, args.host_limit, args.max_ratio, file_cost=not args.no_file_cost)
    report['command'] = 'python bench/plan_sim.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
    print(json.dumps(report['plan'], sort_keys=True))
    print(markdown(report) if args.markdown else json.dumps(report['copies'][-1], sort_keys=True))
    for name, ok in sorted(report['checks'].items()):
        print('%s %s' % ('PASS' if ok else 'FAIL', name))
    print('figures written to %s' % args.out)
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
