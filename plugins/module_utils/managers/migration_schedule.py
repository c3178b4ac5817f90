# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduling of a plan's work: phase-1 copies over data nodes, switchovers inside a window.

Pure functions over plain data, deterministic: the evacuate and maintenance-window playbooks use
them, and bench/plan_sim.py runs them against simulated backends.

Phase 1 (``assign_copies``): every host-assisted copy goes to a copy slot of a data node. A data
node has ``slots`` (copies at once: the limit per data node) and, per slot, ``bytes_per_second``
and ``seconds_per_file``; a storage host takes at most ``host_limit`` copies at once (a copy
counts against its source host and its destination host). The schedule is list scheduling in
LPT order (longest first): whenever slots are free, the longest waiting copy whose storage hosts
have room goes to the free slot that finishes it first.

The evacuate_pool playbook runs one of two fixed assignments. Without a storage host limit,
``assign_lanes``: each copy slot of a data node is a lane that starts its next copy as soon as its
last one ended, which is the schedule above fixed in advance (no lane waits for another). With a
storage host limit, ``assign_rounds``: the copies run in rounds, and a round starts when every copy
of the one before ended, so that the limit holds whatever the copies really take; the rounds wait
for their longest copy.

Phase 2 (``window_decision`` and ``plan_window``): a ready share's switchover is started only when
its estimate (final pass from what changed since the last increment, plus the switchover itself)
ends before the window's end less a margin; never at or after the end. The order is largest
expected disruption first, or the operator's.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import heapq

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest


def _positive(obj, key, what, allow_zero=False):
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidRequest('Invalid %s: %s must be a number %s, got %r' % (what, key, '>= 0' if allow_zero else '> 0', value))
    return value


def check_data_nodes(data_nodes):
    if not data_nodes:
        raise InvalidRequest('Invalid data nodes: at least one data node is needed to copy')
    seen = set()
    for node in data_nodes:
        what = 'data node %s' % node.get('name')
        if not node.get('name') or node['name'] in seen:
            raise InvalidRequest('Invalid data nodes: every data node needs a name of its own (%r)' % (node.get('name'),))
        seen.add(node['name'])
        _positive(node, 'bytes_per_second', what)
        _positive(node, 'seconds_per_file', what, allow_zero=True)
        slots = node.get('slots', 1)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise InvalidRequest('Invalid %s: slots (copies at once) must be an integer >= 1, got %r' % (what, slots))


def _check_copies(jobs, data_nodes, host_limit):
    check_data_nodes(data_nodes)
    if host_limit is not None and (isinstance(host_limit, bool) or not isinstance(host_limit, int) or host_limit < 1):
        raise InvalidRequest('Invalid per storage host limit: must be an integer >= 1, got %r' % (host_limit,))
    names = set()
    for job in jobs:
        if job.get('share') in names:
            raise InvalidRequest('Invalid copies: share %s is listed twice' % job.get('share'))
        names.add(job.get('share'))
        _positive(job, 'bytes', 'copy of share %s' % job.get('share'), allow_zero=True)
        _positive(job, 'files', 'copy of share %s' % job.get('share'), allow_zero=True)


def _hosts_of(job):
    """The storage hosts a copy reads from or writes to (sorted, each once)."""
    return tuple(sorted(set(h for h in (job.get('source_host'), job.get('destination_host')) if h)))


def copy_seconds(job, node):
    """A copy's time on one slot of a data node."""
    return float(job['bytes']) / node['bytes_per_second'] + job['files'] * node['seconds_per_file']


def lower_bound(jobs, data_nodes, host_limit=None):
    """A makespan no schedule can beat, with the bound that sets it.

    - throughput: a slot of rate r and per-file cost c works through B bytes and F files in time
      >= (B + r*c*F) / r; summed over slots, total time * total rate >= total bytes +
      min(r*c) * total files;
    - largest: the longest copy on the fastest slot for it;
    - host: a storage host with a limit L and the copies touching it, each at its fastest, / L.
    """
    if not jobs:
        return 0.0, 'none'
    slots = [(n['bytes_per_second'], n['seconds_per_file']) for n in data_nodes for _slot in range(n.get('slots', 1))]
    total_rate = sum(r for r, _cost in slots)
    k = min(r * c for r, c in slots)
    throughput = (sum(j['bytes'] for j in jobs) + k * sum(j['files'] for j in jobs)) / total_rate
    fastest = [min(copy_seconds(j, n) for n in data_nodes) for j in jobs]
    bounds = [(throughput, 'throughput'), (max(fastest), 'largest')]
    if host_limit:
        per_host = {}
        for job, seconds in zip(jobs, fastest):
            for host in set(h for h in (job.get('source_host'), job.get('destination_host')) if h):
                per_host[host] = per_host.get(host, 0.0) + seconds
        if per_host:
            bounds.append((max(per_host.values()) / host_limit, 'host'))
    return max(bounds)


def assign_copies(jobs, data_nodes, host_limit=None):
    """Assign phase-1 copies to data node slots.

    ``jobs``: dicts with ``share``, ``bytes``, ``files``, ``source_host``, ``destination_host``.
    Returns ``{'assignments': [...], 'makespan': seconds, 'per_node': {...}}``; an assignment names
    the share, the data node, the slot, the start and end in seconds from the start of phase 1.
    A rerun after the loss of a data node calls it again without that node and without the copies
    already done: the lost node's copies go to the others.
    """
    _check_copies(jobs, data_nodes, host_limit)
    # Longest first by the time on a reference slot (the fastest node's), then by name; kept in
    # one queue per pair of storage hosts so that a saturated host costs no scan of its copies.
    ref = max(data_nodes, key=lambda n: (n['bytes_per_second'], -n['seconds_per_file'], n['name']))

    def hosts_of(job):
        return tuple(sorted(set(h for h in (job.get('source_host'), job.get('destination_host')) if h)))

    queues = {}
    for job in sorted(jobs, key=lambda j: (-copy_seconds(j, ref), j['share'])):
        queues.setdefault(hosts_of(job), []).append(job)
    heads = dict((key, 0) for key in queues)
    waiting = len(jobs)
    nodes = sorted(data_nodes, key=lambda n: n['name'])
    free = dict((n['name'], list(range(n.get('slots', 1)))) for n in nodes)   # free slots per node
    by_name = dict((n['name'], n) for n in nodes)
    free_count = sum(len(v) for v in free.values())
    running = []                            # heap of (end, node name, slot, job)
    host_load = {}
    now = 0.0
    assignments = []
    busy = dict((n['name'], 0.0) for n in data_nodes)

    def next_job():
        """The longest waiting copy whose storage hosts have room, or None."""
        best = None
        for key, queue in queues.items():
            if heads[key] >= len(queue):
                continue
            if host_limit is not None and any(host_load.get(h, 0) >= host_limit for h in key):
                continue
            job = queue[heads[key]]
            rank = (-copy_seconds(job, ref), job['share'])
            if best is None or rank < best[0]:
                best = (rank, key, job)
        return best

    while waiting or running:
        while waiting and free_count:
            found = next_job()
            if found is None:
                break
            _rank, key, job = found
            heads[key] += 1
            waiting -= 1
            # The free slot that finishes this copy first (slots of one node are alike).
            node = min((by_name[name] for name in free if free[name]),
                       key=lambda n: (copy_seconds(job, n), n['name']))
            index = free[node['name']].pop(0)
            free_count -= 1
            seconds = copy_seconds(job, node)
            for host in key:
                host_load[host] = host_load.get(host, 0) + 1
            heapq.heappush(running, (now + seconds, node['name'], index, job))
            busy[node['name']] += seconds
            assignments.append({'share': job['share'], 'data_node': node['name'], 'slot': index,
                                'start': round(now, 3), 'end': round(now + seconds, 3),
                                'source_host': job.get('source_host'), 'destination_host': job.get('destination_host')})
        if not running:
            break
        now = running[0][0]
        while running and running[0][0] <= now:
            _end, name, index, job = heapq.heappop(running)
            free[name].append(index)
            free[name].sort()
            free_count += 1
            for host in hosts_of(job):
                host_load[host] -= 1
    makespan = max([a['end'] for a in assignments] or [0.0])
    assignments.sort(key=lambda a: (a['start'], a['share']))
    return {'assignments': assignments, 'makespan': makespan,
            'per_node': dict((k, round(v, 3)) for k, v in sorted(busy.items()))}


def assign_lanes(jobs, data_nodes, pinned=None):
    """Phase-1 copies in lanes, as the evacuate_pool playbook runs them without a storage host limit.

    A lane is one copy slot of a data node: it runs its copies one after another, each as soon as
    the one before it ended, whatever the other lanes do (the playbook runs every lane as a host of
    its own under the free strategy). This is list scheduling fixed in advance: in LPT order
    (longest first, then by name), each copy joins the lane that would end it first (then the lane
    with less work so far, then by data node and slot). Copies ``pinned`` to a data node (a copy
    already running there: ``{share: data node}``) come first, each on that node's lane that is
    free first.

    Returns ``{'lanes': [{'data_node', 'slot', 'shares'}, ...], 'assignments': [...],
    'estimated_seconds': s}``; an assignment names the share, the data node, the slot (from 1), its
    position in the lane (from 1), its estimated start, end and seconds, and the storage hosts.
    Lanes without copies are left out. The same input gives the same lanes.
    """
    _check_copies(jobs, data_nodes, None)
    by_name = dict((n['name'], n) for n in data_nodes)
    pinned = dict(pinned or {})
    for share, name in sorted(pinned.items()):
        if name not in by_name and share in set(j['share'] for j in jobs):
            raise InvalidRequest('Invalid copies: share %s is pinned to data node %s, which is not given' % (share, name))
    ref = max(data_nodes, key=lambda n: (n['bytes_per_second'], -n['seconds_per_file'], n['name']))
    order = sorted(jobs, key=lambda j: (j['share'] not in pinned, -copy_seconds(j, ref), j['share']))
    lanes = [(name, slot) for name in sorted(by_name) for slot in range(1, by_name[name].get('slots', 1) + 1)]
    free_at = dict((lane, 0.0) for lane in lanes)
    queued = dict((lane, []) for lane in lanes)
    assignments = []
    for job in order:
        allowed = [lane for lane in lanes if lane[0] == pinned[job['share']]] if job['share'] in pinned else lanes
        lane = min(allowed, key=lambda ln: (free_at[ln] + copy_seconds(job, by_name[ln[0]]), free_at[ln], ln))
        seconds = copy_seconds(job, by_name[lane[0]])
        start = free_at[lane]
        free_at[lane] = start + seconds
        queued[lane].append(job['share'])
        assignments.append({'share': job['share'], 'data_node': lane[0], 'slot': lane[1],
                            'position': len(queued[lane]), 'start': round(start, 3), 'end': round(start + seconds, 3),
                            'seconds': round(seconds, 3), 'source_host': job.get('source_host'),
                            'destination_host': job.get('destination_host')})
    assignments.sort(key=lambda a: (a['data_node'], a['slot'], a['position']))
    return {'lanes': [{'data_node': lane[0], 'slot': lane[1], 'shares': queued[lane]} for lane in lanes if queued[lane]],
            'assignments': assignments,
            'estimated_seconds': round(max([a['end'] for a in assignments] or [0.0]), 3)}


def assign_rounds(jobs, data_nodes, host_limit=None, pinned=None):
    """Phase-1 copies in rounds, as the evacuate_pool playbook runs them.

    A round is a set of copies that run at the same time; the next round starts when every copy of
    the round has ended (the playbook's data nodes wait for each other between rounds). In a round a
    data node runs at most ``slots`` copies (one per slot) and a storage host takes part in at most
    ``host_limit`` copies (a copy counts against its source host and its destination host), so the
    limits hold at every moment whatever the copies really take: no clock and no estimate is
    trusted for them.

    Rounds are filled longest first (next fit decreasing): each round takes, in that order, every
    waiting copy for which a data node has a free slot on which it ends within the round's first
    (longest) copy and whose storage hosts have room, on the
    free node that copies it fastest (then the one with most free slots in the round, then the one
    given the fewest seconds of copies so far, then by name). Copies of
    like size share a round, so little time is lost waiting for the round's longest copy.

    ``pinned``: ``{share: data node}``, copies that must stay on their data node (a copy running
    there). ``jobs`` and ``data_nodes`` as for assign_copies.

    Returns ``{'rounds': [[assignment, ...], ...], 'assignments': [...], 'estimated_seconds': s}``;
    an assignment names the share, the data node, the round and the slot (both from 1), the
    estimated seconds and the storage hosts. The same input gives the same rounds.
    """
    _check_copies(jobs, data_nodes, host_limit)
    by_name = dict((n['name'], n) for n in data_nodes)
    pinned = dict(pinned or {})
    shares = set(j['share'] for j in jobs)
    for share, name in sorted(pinned.items()):
        if share in shares and name not in by_name:
            raise InvalidRequest('Invalid copies: share %s is pinned to data node %s, which is not given' % (share, name))
    names = sorted(by_name)
    ref = max(data_nodes, key=lambda n: (n['bytes_per_second'], -n['seconds_per_file'], n['name']))
    waiting = sorted(jobs, key=lambda j: (-copy_seconds(j, ref), j['share']))
    rounds = []
    total = 0.0
    busy = dict((name, 0.0) for name in names)     # seconds of copies given to each node so far
    while waiting:
        free = dict((name, by_name[name].get('slots', 1)) for name in names)
        free_count = sum(free.values())
        host_load = {}
        this = []
        left = []
        length = None
        for index, job in enumerate(waiting):
            if not free_count:
                left.extend(waiting[index:])      # every slot of the round is taken
                break
            hosts = _hosts_of(job)
            allowed = [pinned[job['share']]] if job['share'] in pinned else names
            # A copy joins the round only on a node where it ends within the round's first (longest)
            # copy: a slow node takes a smaller copy rather than stretch the round.
            candidates = [name for name in allowed if free[name]
                          and (length is None or copy_seconds(job, by_name[name]) <= length)]
            if not candidates or (
                    host_limit is not None and any(host_load.get(h, 0) >= host_limit for h in hosts)):
                left.append(job)
                continue
            name = min(candidates, key=lambda n: (copy_seconds(job, by_name[n]), -free[n], busy[n], n))
            slot = by_name[name].get('slots', 1) - free[name] + 1
            free[name] -= 1
            free_count -= 1
            busy[name] += copy_seconds(job, by_name[name])
            if length is None:
                length = copy_seconds(job, by_name[name])
            for host in hosts:
                host_load[host] = host_load.get(host, 0) + 1
            this.append({'share': job['share'], 'data_node': name, 'round': len(rounds) + 1, 'slot': slot,
                         'seconds': round(copy_seconds(job, by_name[name]), 3),
                         'source_host': job.get('source_host'), 'destination_host': job.get('destination_host')})
        # The first waiting copy always fits an empty round (its pinned node is given): no endless loop.
        this.sort(key=lambda a: (a['data_node'], a['slot']))
        rounds.append(this)
        total += max(a['seconds'] for a in this)
        waiting = left
    return {'rounds': rounds, 'assignments': [a for r in rounds for a in r], 'estimated_seconds': round(total, 3)}


def round_limits_hold(rounds, data_nodes, host_limit=None):
    """(True, None) when no round puts more copies on a data node than its slots or on a storage
    host than host_limit, else (False, what is exceeded). For tests and for a stored assignment."""
    slots = dict((n['name'], n.get('slots', 1)) for n in data_nodes)
    for index, this in enumerate(rounds):
        per_node = {}
        per_host = {}
        for a in this:
            per_node[a['data_node']] = per_node.get(a['data_node'], 0) + 1
            for host in _hosts_of(a):
                per_host[host] = per_host.get(host, 0) + 1
        for name, count in sorted(per_node.items()):
            if count > slots.get(name, 0):
                return False, 'round %d: %d copies on data node %s' % (index + 1, count, name)
        for host, count in sorted(per_host.items()):
            if host_limit is not None and count > host_limit:
                return False, 'round %d: %d copies on storage host %s' % (index + 1, count, host)
    return True, None


# -- phase 2: the maintenance window -------------------------------------------------------------

def final_pass_seconds(share, rate):
    """The estimate of a share's switchover: a final pass over what changed since the last
    increment (``changed_bytes``, ``changed_files``, at ``rate``) plus ``switchover_seconds``."""
    per_byte = (float(share.get('changed_bytes', 0)) / rate['bytes_per_second']) if rate.get('bytes_per_second') else 0.0
    return (rate.get('fixed_seconds', 0.0) + per_byte + share.get('changed_files', 0) * rate.get('seconds_per_file', 0.0)
            + share.get('switchover_seconds', 0.0))


def margin_seconds(estimate, margin):
    """``margin``: ``{'seconds': s, 'fraction': f}``; the time kept free after an estimate."""
    return (margin or {}).get('seconds', 0.0) + (margin or {}).get('fraction', 0.0) * estimate


def order_ready(shares, order=None):
    """The order of switchovers: the operator's ``order`` (share names; shares it leaves out come
    after it, largest first) or largest expected disruption (``estimate``) first, then by name."""
    by_size = sorted(shares, key=lambda s: (-s['estimate'], s['name']))
    if not order:
        return by_size
    names = set(s['name'] for s in shares)
    unknown = [n for n in order if n not in names]
    if unknown:
        raise InvalidRequest('Invalid order: %s %s not among the ready shares' % (', '.join(unknown), 'is' if len(unknown) == 1 else 'are'))
    position = dict((n, i) for i, n in enumerate(order))
    return sorted(by_size, key=lambda s: (position.get(s['name'], len(order)),))


def window_decision(now, window_end, estimate, margin):
    """(start, reason): start a switchover estimated at ``estimate`` seconds at ``now`` only if it
    ends by ``window_end`` less the margin; never at or after the end."""
    if now >= window_end:
        return False, 'the window ended %.0f s ago' % (now - window_end)
    need = estimate + margin_seconds(estimate, margin)
    left = window_end - now
    if need > left:
        return False, 'needs %.0f s with the margin (estimate %.0f s), %.0f s left in the window' % (need, estimate, left)
    return True, None


def plan_window(shares, now, window_end, margin=None, order=None, parallel=1):
    """Which ready shares to switch over inside the window, and when (by estimates).

    ``shares``: dicts with ``name``, ``ready`` (phase 1 done), ``estimate`` (seconds, from
    final_pass_seconds), optionally ``not_ready_reason``. ``parallel`` switchovers run at once.
    Returns ``{'started': [{'name', 'start', 'end'}], 'left': [{'name', 'reason'}]}``. The
    playbook calls window_decision again with the real clock before each switchover.
    """
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise InvalidRequest('Invalid parallel switchovers: must be an integer >= 1, got %r' % (parallel,))
    left = []
    ready = []
    for share in shares:
        if share.get('ready'):
            ready.append(share)
        else:
            left.append({'name': share['name'], 'reason': share.get('not_ready_reason') or 'phase 1 is not done'})
    lanes = [now] * parallel
    started = []
    for share in order_ready(ready, order):
        lane = min(range(parallel), key=lambda i: (lanes[i], i))
        at = lanes[lane]
        ok, reason = window_decision(at, window_end, share['estimate'], margin)
        if not ok:
            # A later lane frees no earlier: the share waits for the next window.
            left.append({'name': share['name'], 'reason': reason})
            continue
        lanes[lane] = at + share['estimate']
        started.append({'name': share['name'], 'start': at, 'end': at + share['estimate']})
    left.sort(key=lambda x: x['name'])
    return {'started': started, 'left': left}
