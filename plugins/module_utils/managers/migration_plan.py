# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration planner: a destination pool for every share of an evacuation or a rebalance.

Pure functions over plain data (no transport, no records): the caller reads the shares and the
pools and hands them over; the same input always gives the same plan, byte for byte.

A share is a dict: ``name``, ``pool`` (its ``host@backend#pool``), ``bytes``, ``files``,
``share_type`` (``extra_specs`` the destination must offer), ``replication_type`` (None when not
replicated), ``snapshots`` (names), and optionally ``driver_refusal`` (why the source's driver
cannot move this share itself although the pools would allow it: an immutable root, nested
subvolumes; the caller found it with the driver's own check).

A pool is a dict: ``address``, ``host``, ``backend``, ``driver``, ``filesystem`` (an id of the
filesystem that holds it: posix moves by rename only within one), ``capacity_bytes``,
``free_bytes``, ``headroom`` (a fraction of the capacity kept free, 0.1 = 10 %) or
``headroom_bytes``, ``capabilities`` (the extra specs it offers) and ``replication_domain``.

The mechanism follows the rules of ShareMigrationManager.plan_mechanism and of the drivers'
migration_check_compatibility: the driver moves the share when both pools use the same driver on
the same storage host (posix: on one filesystem as well) and nothing about the share refuses it;
otherwise a data node copies it, which cannot carry snapshots.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import check_extra_specs
from ansible_collections.storage.mobility.plugins.module_utils.states import MIGRATION_FLAGS

DRIVER = 'driver'
HOST = 'host'

# Drivers whose driver-assisted migration renames within one filesystem.
SAME_FILESYSTEM_DRIVERS = ('posix',)

# What a copy costs when the operator gives no rate and no earlier run measured one: a data
# node's copy and verification at 100 MiB/s plus 2 ms per file; a posix rename costs nothing per
# byte; a btrfs send/receive streams at 200 MiB/s.
DEFAULT_RATES = {
    HOST: {'bytes_per_second': 100 * 1024 * 1024, 'seconds_per_file': 0.002, 'fixed_seconds': 5.0},
    DRIVER: {'bytes_per_second': 200 * 1024 * 1024, 'seconds_per_file': 0.0, 'fixed_seconds': 1.0},
    DRIVER + '/posix': {'bytes_per_second': 0, 'seconds_per_file': 0.0, 'fixed_seconds': 1.0},
}


class RateModel(object):
    """The time a copy takes: ``fixed_seconds + bytes / bytes_per_second + files * seconds_per_file``.

    ``rates`` maps ``host``, ``driver`` or ``driver/<driver name>`` to those three figures; a key the
    operator leaves out keeps its default. ``bytes_per_second`` 0 means no cost per byte (a rename).
    """

    FIELDS = ('bytes_per_second', 'seconds_per_file', 'fixed_seconds')

    def __init__(self, rates=None):
        merged = dict((k, dict(v)) for k, v in DEFAULT_RATES.items())
        for key, value in sorted((rates or {}).items()):
            if key not in (HOST, DRIVER) and not key.startswith(DRIVER + '/'):
                raise InvalidRequest('Invalid rate model: key %r is not host, driver or driver/<driver name>' % (key,))
            if not isinstance(value, dict):
                raise InvalidRequest('Invalid rate model: %s must be a dict of %s' % (key, ', '.join(self.FIELDS)))
            entry = merged.setdefault(key, dict(merged[DRIVER] if key.startswith(DRIVER) else merged[HOST]))
            for field, figure in sorted(value.items()):
                if field not in self.FIELDS:
                    raise InvalidRequest('Invalid rate model: %s.%s is not one of %s' % (key, field, ', '.join(self.FIELDS)))
                if isinstance(figure, bool) or not isinstance(figure, (int, float)) or figure < 0:
                    raise InvalidRequest('Invalid rate model: %s.%s must be a number >= 0, got %r' % (key, field, figure))
                entry[field] = figure
        self.rates = merged

    def entry(self, mechanism, driver=None):
        if mechanism == DRIVER and driver and (DRIVER + '/' + driver) in self.rates:
            return self.rates[DRIVER + '/' + driver]
        return self.rates[mechanism]

    def seconds(self, nbytes, files, mechanism, driver=None):
        rate = self.entry(mechanism, driver)
        per_byte = (float(nbytes) / rate['bytes_per_second']) if rate['bytes_per_second'] else 0.0
        return rate['fixed_seconds'] + per_byte + files * rate['seconds_per_file']


def _number(obj, key, what):
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidRequest('Invalid %s: %s must be a number >= 0, got %r' % (what, key, value))
    return value


def usable_bytes(pool):
    """What may be written to the pool without eating its headroom."""
    if pool.get('headroom_bytes') is not None:
        headroom = pool['headroom_bytes']
    else:
        headroom = pool.get('headroom', 0.0) * pool['capacity_bytes']
    return pool['free_bytes'] - headroom


def check_pools(pools):
    seen = set()
    for pool in pools:
        what = 'pool %s' % pool.get('address')
        for key in ('address', 'host', 'backend', 'driver'):
            if not pool.get(key) or not isinstance(pool.get(key), str):
                raise InvalidRequest('Invalid %s: %s must be a non-empty string' % (what, key))
        if pool['address'] in seen:
            raise InvalidRequest('Invalid pools: %s is listed twice' % pool['address'])
        seen.add(pool['address'])
        _number(pool, 'capacity_bytes', what)
        _number(pool, 'free_bytes', what)
        if pool['free_bytes'] > pool['capacity_bytes']:
            raise InvalidRequest('Invalid %s: free_bytes %s is more than capacity_bytes %s'
                                 % (what, pool['free_bytes'], pool['capacity_bytes']))
        headroom = pool.get('headroom', 0.0)
        if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 0 <= headroom < 1:
            raise InvalidRequest('Invalid %s: headroom must be a fraction from 0 up to 1, got %r' % (what, headroom))
        if pool.get('headroom_bytes') is not None:
            _number(pool, 'headroom_bytes', what)


def check_shares(shares, pools_by_address):
    seen = set()
    for share in shares:
        what = 'share %s' % share.get('name')
        if not share.get('name') or not isinstance(share.get('name'), str):
            raise InvalidRequest('Invalid share %r: name must be a non-empty string' % (share,))
        if share['name'] in seen:
            raise InvalidRequest('Invalid shares: %s is listed twice' % share['name'])
        seen.add(share['name'])
        _number(share, 'bytes', what)
        _number(share, 'files', what)
        if share.get('pool') not in pools_by_address:
            raise InvalidRequest('Invalid %s: its pool %r is not among the pools given' % (what, share.get('pool')))


def mechanism_for(share, source, dest, flags=None):
    """('driver' or 'host', why not the driver or None) as plan_mechanism would decide, or
    (None, reason) when the move is refused (a flag the driver cannot honour, or snapshots that a
    host copy cannot carry)."""
    wanted = [f for f in MIGRATION_FLAGS if (flags or {}).get(f)]
    refusal = None
    if source['driver'] != dest['driver']:
        refusal = 'the destination uses driver %s, the source %s' % (dest['driver'], source['driver'])
    elif source['host'] != dest['host']:
        refusal = 'the pools are on different hosts (%s, %s)' % (source['host'], dest['host'])
    elif source['driver'] in SAME_FILESYSTEM_DRIVERS and source.get('filesystem') != dest.get('filesystem'):
        refusal = 'the pools are on different filesystems'
    elif share.get('driver_refusal'):
        refusal = share['driver_refusal']
    if refusal is None:
        return DRIVER, None
    # As plan_mechanism: writable alone, with a driver that cannot move the share at all, is a
    # writable host copy (the source is read-only only for phase 2's final pass).
    if wanted and wanted != ['writable']:
        return None, 'the driver cannot move it (%s) and %s need a driver-assisted move' % (
            refusal, ', '.join('%s=true' % f for f in wanted))
    if share.get('snapshots'):
        return None, ('the driver cannot move it (%s) and a host copy cannot carry its snapshots (%s)'
                      % (refusal, ', '.join(sorted(share['snapshots']))))
    return HOST, refusal


def fit_problem(share, source, dest, room):
    """Why the share cannot go to dest (None when it can), room being dest's usable bytes left."""
    if dest['address'] == source['address']:
        return 'it is the source pool'
    # The share type's capability specs, checked as share creation and migration check them.
    share_type = {'name': (share.get('share_type') or {}).get('name') or 'default',
                  'extra_specs': (share.get('share_type') or {}).get('extra_specs') or {}}
    try:
        check_extra_specs(share_type, dest.get('capabilities') or {}, dest['address'])
    except InvalidRequest as exc:
        return str(exc)
    if share.get('replication_type') and dest.get('replication_domain') != source.get('replication_domain'):
        return ('it is replicated (%s) in replication domain %s, the pool is in %s'
                % (share['replication_type'], source.get('replication_domain'), dest.get('replication_domain')))
    if share['bytes'] > room:
        return 'needs %d bytes, %d left above its headroom after earlier moves of this plan' % (share['bytes'], max(room, 0))
    return None


def plan_digest(shares, pools, allowed, rates, flags):
    """An id of the plan's input (in any order): a stored plan is followed only while it matches."""
    data = json.dumps({'shares': sorted(shares, key=lambda s: s['name']), 'pools': sorted(pools, key=lambda p: p['address']),
                       'allowed': sorted(allowed), 'rates': rates, 'flags': flags},
                      sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(data.encode('utf-8')).hexdigest()[:16]


def plan(shares, pools, allowed=None, rates=None, flags=None, prefer_driver=True):
    """Propose a destination for every share.

    ``allowed``: the pool addresses a share may go to (all pools but its own when None).
    ``flags``: the migration flags asked for every move (states.MIGRATION_FLAGS).
    Shares are placed largest first (then by name) and each goes to the pool that keeps the most
    usable room after it, as a fraction of its capacity, driver-assisted pools first
    (``prefer_driver``). Every placed move is counted against its pool before the next share.
    The freed room of a source pool is not counted: phase 1 keeps both copies until switchover.
    """
    check_pools(pools)
    by_address = dict((p['address'], p) for p in pools)
    check_shares(shares, by_address)
    allowed_list = sorted(allowed) if allowed is not None else sorted(by_address)
    for address in allowed_list:
        if address not in by_address:
            raise InvalidRequest('Invalid allowed destinations: %s is not among the pools given' % address)
    model = RateModel(rates)
    room = dict((a, usable_bytes(p)) for a, p in by_address.items())
    planned = dict((a, 0) for a in by_address)
    moves = []
    unplaced = []
    for share in sorted(shares, key=lambda s: (-s['bytes'], s['name'])):
        source = by_address[share['pool']]
        candidates = []
        reasons = []
        for address in allowed_list:
            dest = by_address[address]
            problem = fit_problem(share, source, dest, room[address])
            mechanism = None
            if problem is None:
                mechanism, why = mechanism_for(share, source, dest, flags)
                if mechanism is None:
                    problem = why
            if problem is not None:
                if address != source['address']:
                    reasons.append('%s: %s' % (address, problem))
                continue
            left = (room[address] - share['bytes']) / float(dest['capacity_bytes'] or 1)
            rank = (0 if (mechanism == DRIVER or not prefer_driver) else 1, -left, address)
            candidates.append((rank, address, mechanism, why))
        if not candidates:
            unplaced.append({'share': share['name'], 'pool': source['address'], 'bytes': share['bytes'],
                             'reason': '; '.join(reasons) or 'no destination pool is allowed'})
            continue
        rank, address, mechanism, why = min(candidates)
        dest = by_address[address]
        room[address] -= share['bytes']
        planned[address] += share['bytes']
        moves.append({
            'share': share['name'], 'source': source['address'], 'destination': address,
            'mechanism': mechanism, 'driver_refusal': why, 'bytes': share['bytes'], 'files': share['files'],
            'source_host': source['host'], 'destination_host': dest['host'],
            'estimated_copy_seconds': round(model.seconds(share['bytes'], share['files'], mechanism, source['driver']), 3),
        })
    moves.sort(key=lambda m: m['share'])
    unplaced.sort(key=lambda u: u['share'])
    pool_view = []
    for address in sorted(by_address):
        pool = by_address[address]
        pool_view.append({'address': address, 'capacity_bytes': pool['capacity_bytes'],
                          'free_bytes': pool['free_bytes'], 'usable_bytes': usable_bytes(pool),
                          'planned_bytes': planned[address], 'free_bytes_after': pool['free_bytes'] - planned[address]})
    return {
        'id': plan_digest(shares, pools, allowed_list, rates, flags),
        'moves': moves,
        'unplaced': unplaced,
        'pools': pool_view,
        'totals': {
            'shares': len(shares), 'placed': len(moves), 'unplaced': len(unplaced),
            'bytes': sum(m['bytes'] for m in moves),
            'driver_assisted': sum(1 for m in moves if m['mechanism'] == DRIVER),
            'host_assisted': sum(1 for m in moves if m['mechanism'] == HOST),
            'estimated_copy_seconds': round(sum(m['estimated_copy_seconds'] for m in moves), 3),
        },
    }


def overfilled(result):
    """The pools a plan would fill past their headroom (empty for every plan of plan())."""
    return [p['address'] for p in result['pools'] if p['planned_bytes'] > p['usable_bytes'] and p['planned_bytes'] > 0]
