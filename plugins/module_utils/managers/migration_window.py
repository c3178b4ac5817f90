# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module migration_window: which ready share to switch over now inside a maintenance window.

Reads each share's record (a stored plan's shares or a list), measures what changed in its source
since its last copy began (the transport's ``tree_counts`` with ``since``), estimates the final pass
and the switchover (``migration_schedule.final_pass_seconds``) and asks
``migration_schedule.window_decision`` with the real clock. A window given as ``window_minutes`` is
opened by the first call and stored with the plan (``.mobility/windows/<name>.json``), so a rerun
after a crash keeps the same end. Nothing here switches anything: the complete_ready_migrations
playbook completes the share this returns, then asks again.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import math
import os
import re
import time

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers import migration_plan
from ansible_collections.storage.mobility.plugins.module_utils.managers import migration_schedule
from ansible_collections.storage.mobility.plugins.module_utils.managers.evacuation import (
    MigrationPlanManager, measured_rates)
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import active_instance
from ansible_collections.storage.mobility.plugins.module_utils.metrics import parse_time
from ansible_collections.storage.mobility.plugins.module_utils.names import validate_name
from ansible_collections.storage.mobility.plugins.module_utils.store import META_DIR

WINDOWS_DIR = 'windows'
WINDOW_FORMAT = 1
DEFAULT_WINDOW_NAME = 'window'
# A change this long before the copy began still counts as changed: the copy's start comes from the
# data node's clock, a file's times from the storage host's.
CLOCK_SKEW_SECONDS = 5.0
# The switchover besides copying what changed (final pass start, scan and verification, the switch
# and its module calls) when no earlier switchover measured it and the operator gives no figure.
DEFAULT_SWITCHOVER_SECONDS = {migration_plan.HOST: 30.0, migration_plan.DRIVER: 5.0}
# The measured figure is the median of this many most recent switchovers of the mechanism.
MEASURED_SWITCHOVERS = 5
RESUMING = states.MIGRATION_COMPLETING
_ISO = re.compile(r'^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$')


def parse_window_end(text):
    """Unix time of an ISO 8601 time with its zone (``2026-12-02T05:00:00Z``, ``...+01:00``)."""
    match = _ISO.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise InvalidRequest('Invalid window_end %r: give an ISO 8601 time with its time zone, for example '
                             '2026-12-02T05:00:00Z or 2026-12-02T06:00:00+01:00' % (text,))
    year, month, day, hour, minute = [int(g) for g in match.groups()[:5]]
    second = int(match.group(6) or 0)
    fraction = float(match.group(7) or 0)
    zone = match.group(8)
    try:
        # calendar.timegm checks nothing: strptime does (a 31st of November is refused).
        base = parse_time(time.strftime('%Y-%m-%dT%H:%M:%S', time.strptime(
            '%04d-%02d-%02dT%02d:%02d:%02d' % (year, month, day, hour, minute, second), '%Y-%m-%dT%H:%M:%S')))
    except ValueError as exc:
        raise InvalidRequest('Invalid window_end %r: %s' % (text, exc))
    offset = 0
    if zone != 'Z':
        digits = zone[1:].replace(':', '')
        offset = (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * (1 if zone[0] == '+' else -1)
    return base + fraction - offset


def iso(when):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(when))


def iso_or_none(when):
    return None if when is None else iso(when)


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def measured_switchovers(records):
    """{mechanism: seconds}: what earlier switchovers took besides their final pass's copy (the
    median of the most recent ones per mechanism), from the records of completed migrations."""
    seen = {}
    for record in records:
        mig = record.get('migration') or {}
        total = mig.get('switchover_seconds')
        if record.get('task_state') != states.MIGRATION_SUCCESS or not isinstance(total, (int, float)):
            continue
        copied = (mig.get('final_copy') or {}).get('copy_seconds') or 0.0
        mechanism = migration_plan.HOST if mig.get('mechanism') == 'host' else migration_plan.DRIVER
        seen.setdefault(mechanism, []).append((mig.get('completed_at') or '', max(float(total) - copied, 0.0)))
    return dict((mechanism, round(median([s for _at, s in sorted(found)[-MEASURED_SWITCHOVERS:]]), 3))
                for mechanism, found in seen.items())


def changed_since(record):
    """When the share's last copy began reading its source (Unix time), or None: the verified final
    pass's start when there is one, else phase 1's copy, else the migration's start."""
    mig = record.get('migration') or {}
    candidates = []
    if mig.get('final_verified'):
        candidates.append((mig.get('final_copy') or {}).get('started_at'))
    candidates += [(mig.get('copy') or {}).get('started_at'), (record.get('progress') or {}).get('last_increment_at'),
                   mig.get('started_at')]
    for text in candidates:
        when = parse_time(text)
        if when is not None:
            return when - CLOCK_SKEW_SECONDS
    return None


class MigrationWindowManager(object):
    """Decide the next switchover of a maintenance window over the collection's own pools."""

    def __init__(self, ctx, clock=time.time):
        self.ctx = ctx
        self.clock = clock

    # -- input ---------------------------------------------------------------------------------
    def plan_shares(self, name):
        """(share names, the pool holding the plan, the shares the plan could not place) of the plan
        stored under ``name``; each unplaced share as ``{'name', 'reason'}``."""
        planner = MigrationPlanManager(self.ctx)
        pools = sorted(planner.share_pools(), key=lambda p: str(p.ref))
        for pool in pools:
            stored = planner.read_stored(pool, name)
            if stored is not None:
                unplaced = [{'name': u.get('share'), 'reason': 'not in the plan: %s' % (u.get('reason') or 'no reason given')}
                            for u in stored['plan'].get('unplaced') or []]
                return [m['share'] for m in stored['plan'].get('moves') or []], pool, unplaced
        raise NotFound('Unknown plan %r: no declared share pool holds .mobility/plans/%s.json (pools searched: %s); '
                       'make it with storage.mobility.migration_plan or pass shares'
                       % (name, name, ', '.join(str(p.ref) for p in pools) or 'none'))

    def window_path(self, pool, name):
        return os.path.join(pool.path, META_DIR, WINDOWS_DIR, validate_name(name, 'window name') + '.json')

    def read_window(self, pool, path):
        try:
            stored = json.loads(self.ctx.transport(pool.backend).read_bytes(path).decode('utf-8'))
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise StorageError('Maintenance window: cannot read %s: %s' % (path, exc))
        except ValueError as exc:
            raise StorageError('Maintenance window: %s is not valid JSON (%s); remove it or pass new_window: true'
                               % (path, exc))
        if not isinstance(stored, dict) or not isinstance(stored.get('ends_epoch'), (int, float)):
            raise StorageError('Maintenance window: %s holds no window end; remove it or pass new_window: true' % path)
        return stored

    def resolve_window(self, params, now, stored, path):
        """(window document, how: given, opened or stored, whether to store it)."""
        end_text, minutes = params.get('window_end'), params.get('window_minutes')
        if (end_text is None) == (minutes is None):
            raise InvalidRequest('Give either window_end (an ISO 8601 time) or window_minutes (the window opens now), '
                                 'not %s' % ('both' if end_text is not None else 'neither'))
        if end_text is not None:
            # Whole seconds, as ends_at shows it: the playbook passes ends_at back to follow the window.
            end = float(math.floor(parse_window_end(end_text)))
            if stored is not None and abs(stored['ends_epoch'] - end) < 0.001:
                return stored, 'stored', False
            if end <= now:
                raise InvalidRequest('Invalid window_end %s: it is %.0f s in the past (now %s); nothing was changed'
                                     % (end_text, now - end, iso(now)))
            return {'format': WINDOW_FORMAT, 'opened_at': iso(now), 'opened_epoch': now, 'ends_at': iso(end),
                    'ends_epoch': end, 'window_minutes': None, 'given_end': end_text}, 'given', True
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
            raise InvalidRequest('Invalid window_minutes %r: a number of minutes above 0' % (minutes,))
        if stored is not None and not params.get('new_window'):
            if stored['ends_epoch'] <= now or stored.get('window_minutes') == minutes:
                return stored, 'stored', False
            raise InvalidRequest('A maintenance window of %s minutes is open until %s (stored in %s); pass '
                                 'new_window: true to replace it, or the same window_minutes to follow it'
                                 % (stored.get('window_minutes'), stored.get('ends_at'), path))
        end = float(math.floor(now + minutes * 60.0))
        return {'format': WINDOW_FORMAT, 'opened_at': iso(now), 'opened_epoch': now, 'ends_at': iso(end),
                'ends_epoch': end, 'window_minutes': minutes}, 'opened', True

    def rates(self, params, records):
        given = dict((k, dict(v)) for k, v in (params.get('rates') or {}).items())
        model_rates = dict(given)
        source = 'given' if given.get(migration_plan.HOST, {}).get('bytes_per_second') is not None else 'default'
        measured = measured_rates(records)
        if measured and source == 'default':
            model_rates.setdefault(migration_plan.HOST, {})['bytes_per_second'] = measured['bytes_per_second']
            source = 'measured'
        return migration_plan.RateModel(model_rates), source

    # -- one share -----------------------------------------------------------------------------
    def share_view(self, name, record, model, switchovers, switchover_given):
        """What the decision needs of one share: ready or why not, and its estimate."""
        view = {'name': name, 'task_state': None, 'ready': False, 'estimate': None}
        if record is None:
            view['reason'] = 'no record of the share in any declared pool'
            return view
        ts = record.get('task_state')
        mig = record.get('migration') or {}
        view.update(task_state=ts, mechanism=mig.get('mechanism'), destination_pool=mig.get('destination_pool'))
        if ts == states.MIGRATION_SUCCESS:
            view['reason'] = 'already completed (migration_success)'
            return view
        if ts not in states.COMPLETABLE_TASK_STATES and ts != RESUMING:
            view['reason'] = ('phase 1 is not done (task_state %s)' % ts if ts in states.PHASE1_PENDING
                              else 'no migration ready to complete (task_state %s)' % ts)
            return view
        inst = active_instance(record)
        if inst is None:
            view['reason'] = 'its record names no active instance (task_state %s)' % ts
            return view
        pool = self.ctx.pool(inst['pool'], 'pool of share %s' % name)
        since = changed_since(record)
        try:
            counts = self.ctx.transport(pool.backend).tree_counts(inst['path'], since)
        except OSError as exc:
            raise StorageError('Share %s: cannot measure what changed in its source %s: %s' % (name, inst['path'], exc))
        mechanism = migration_plan.HOST if mig.get('mechanism') == 'host' else migration_plan.DRIVER
        rate = model.entry(mechanism, pool.backend.driver)
        if switchover_given is not None:
            switch, switch_source = switchover_given, 'given'
        elif mechanism in switchovers:
            switch, switch_source = switchovers[mechanism], 'measured'
        else:
            switch, switch_source = DEFAULT_SWITCHOVER_SECONDS[mechanism], 'default'
        figures = {'changed_bytes': counts.get('changed_bytes', counts['bytes']),
                   'changed_files': counts.get('changed_files', counts['files']), 'switchover_seconds': switch}
        view.update(figures, ready=True, since=iso_or_none(since), bytes=counts['bytes'],
                    files=counts['files'], switchover_source=switch_source,
                    estimate=round(migration_schedule.final_pass_seconds(figures, rate), 3))
        if ts == RESUMING:
            view['resuming'] = True
        return view

    # -- the decision --------------------------------------------------------------------------
    def run(self, params):
        ctx = self.ctx
        now = self.clock()
        margin = dict(params.get('margin') or {})
        for key in ('seconds', 'fraction'):
            value = margin.get(key) or 0.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidRequest('Invalid margin.%s %r: a number >= 0' % (key, value))
            margin[key] = value
        switchover_given = params.get('switchover_seconds')
        if switchover_given is not None and switchover_given < 0:
            raise InvalidRequest('Invalid switchover_seconds %r: a number of seconds >= 0' % (switchover_given,))
        if (params.get('plan_name') is None) == (params.get('shares') is None):
            raise InvalidRequest('Give either plan_name (a plan stored by storage.mobility.migration_plan) or shares, '
                                 'not %s' % ('both' if params.get('plan_name') is not None else 'neither'))
        if params.get('plan_name') is not None:
            names, home, unplaced = self.plan_shares(validate_name(params['plan_name'], 'plan name'))
            window_name = params.get('name') or params['plan_name']
        else:
            names, unplaced = list(params['shares']), []
            if not names:
                raise InvalidRequest('Invalid shares: the list is empty')
            pools = sorted(MigrationPlanManager(ctx).share_pools(), key=lambda p: str(p.ref))
            if not pools:
                raise InvalidRequest('No share pool of the collection\'s own is declared: a maintenance window is kept '
                                     'with the records of such a pool')
            home = pools[0]
            window_name = params.get('name') or DEFAULT_WINDOW_NAME
        if len(set(names)) != len(names):
            raise InvalidRequest('Invalid shares: %s listed twice' % ', '.join(sorted(set(n for n in names if names.count(n) > 1))))
        order = list(params.get('order') or [])
        skip = set(params.get('skip') or [])
        for what, listed in (('order', order), ('skip', sorted(skip))):
            unknown = [n for n in listed if n not in names]
            if unknown:
                raise InvalidRequest('Invalid %s: %s %s not among the shares of this window (%s)'
                                     % (what, ', '.join(unknown), 'is' if len(unknown) == 1 else 'are', ', '.join(names)))
        loaded = {}
        for name in names:
            validate_name(name)
            record, _pool = ctx.load(name, required=params.get('plan_name') is None)
            loaded[name] = record
        path = self.window_path(home, window_name)
        stored = self.read_window(home, path)
        window, how, store = self.resolve_window(params, now, stored, path)
        all_records = [r for r in (ctx.load(n, required=False)[0] for n in ctx.repo.list_names()) if r is not None]
        model, rate_source = self.rates(params, all_records)
        switchovers = measured_switchovers(all_records)
        views = [self.share_view(n, loaded[n], model, switchovers, switchover_given) for n in names]
        for view in views:
            if view['name'] in skip and view['ready']:
                view.update(ready=False, reason='left out by the caller (skip): its switchover failed in this run')
        end = window['ends_epoch']
        ready = [v for v in views if v['ready']]
        # An interrupted switchover comes first: its users already wait for it.
        resuming = sorted([v for v in ready if v.get('resuming')], key=lambda v: v['name'])
        ready_names = set(v['name'] for v in ready)
        ordered = resuming + list(migration_schedule.order_ready(
            [v for v in ready if not v.get('resuming')], [n for n in order if n in ready_names]))
        chosen = None
        for view in ordered:
            fits, why = migration_schedule.window_decision(now, end, view['estimate'], margin)
            view['needs_seconds'] = round(view['estimate'] + migration_schedule.margin_seconds(view['estimate'], margin), 3)
            if not fits:
                view['reason'] = why
            elif chosen is None:
                chosen = view
                view['reason'] = ('resumes the switchover interrupted earlier; ' if view.get('resuming') else '') + (
                    'fits: needs %.0f s with the margin, %.0f s left in the window' % (view['needs_seconds'], end - now))
            else:
                view['reason'] = 'fits now (needs %.0f s with the margin); waits for %s' % (view['needs_seconds'], chosen['name'])
        plan = migration_schedule.plan_window(
            [dict(v, estimate=v['estimate'] or 0.0, not_ready_reason=v.get('reason')) for v in views], now, end,
            margin, [v['name'] for v in ordered])
        window_view = dict((k, window.get(k)) for k in ('opened_at', 'ends_at', 'window_minutes'))
        window_view.update(name=window_name, path=path, source=how, now=iso(now), seconds_left=round(max(end - now, 0.0), 3),
                           ended=now >= end, length_seconds=round(end - window.get('opened_epoch', now), 3),
                           elapsed_seconds=round(now - window.get('opened_epoch', now), 3))
        if now >= end and how == 'stored' and params.get('window_minutes') is not None:
            window_view['note'] = 'the stored window has ended; pass new_window: true to open a new one'
        result = {'changed': False, 'window': window_view, 'next': chosen, 'shares': views,
                  # The plan's shares it could not place have no move to complete: left, with its reason.
                  'left': [{'name': v['name'], 'reason': v['reason']} for v in views if v is not chosen] + unplaced,
                  'plan': plan, 'margin': margin,
                  'rates': {'host_bytes_per_second': model.entry(migration_plan.HOST)['bytes_per_second'],
                            'source': rate_source, 'measured_switchover_seconds': switchovers}}
        if store:
            result['changed'] = True
            result['diff'] = {'before': stored or {}, 'after': window}
            if not ctx.check_mode:
                transport = ctx.transport(home.backend)
                try:
                    transport.makedirs(os.path.dirname(path), 0o700)
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise StorageError('Maintenance window: cannot create %s: %s' % (os.path.dirname(path), exc))
                transport.write_json_atomic(path, dict(window, name=window_name))
        return result
