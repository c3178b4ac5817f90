# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replicas a share record lists, and how modules show them (share_replica, share_info).

A replicated share's record holds ``replicas``: the active replica (the share's active instance,
same id, ``replica_state`` active) and each secondary, with its pool, ``status``,
``replica_state``, ``last_sync`` and the figures of its last update. A share without secondaries
has an empty list. Pure functions: no storage is touched here.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.storage.mobility.plugins.module_utils import states

#: what a replica view carries besides the computed lag
VIEW_KEYS = ('id', 'pool', 'status', 'replica_state', 'created_at', 'updated_at', 'last_sync', 'last_update',
             'sync_error', 'fenced_at', 'fence_pending', 'fence_error', 'fence_lifted_at', 'kept_divergence',
             'export_location', 'snapshots')


def replication_type(record):
    return ((record.get('share_type') or {}).get('extra_specs') or {}).get('replication_type')


def rpo_seconds(record):
    """The share type's ``rpo_seconds`` extra spec as a number, or None."""
    value = ((record.get('share_type') or {}).get('extra_specs') or {}).get('rpo_seconds')
    if value in (None, ''):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def secondaries(record):
    return [r for r in record.get('replicas') or [] if r.get('replica_state') != states.REPLICA_ACTIVE]


def lag_seconds(replica, now=None):
    """Seconds since the point the replica holds was taken (None for the active or a replica
    never updated)."""
    if replica.get('replica_state') == states.REPLICA_ACTIVE or replica.get('last_sync_epoch') is None:
        return None
    return round(max(0.0, (time.time() if now is None else now) - float(replica['last_sync_epoch'])), 3)


def past_rpo(record, replica, now=None):
    """True when a secondary's lag is beyond the share type's rpo_seconds (never updated counts)."""
    rpo = rpo_seconds(record)
    if rpo is None or replica.get('replica_state') == states.REPLICA_ACTIVE:
        return False
    lag = lag_seconds(replica, now)
    return lag is None or lag > rpo


def replica_view(record, replica, now=None):
    if not replica:
        return {}
    view = dict((k, replica.get(k)) for k in VIEW_KEYS if k in replica)
    view.update({'share_id': record.get('id'), 'lag_seconds': lag_seconds(replica, now),
                 'rpo_seconds': rpo_seconds(record), 'past_rpo': past_rpo(record, replica, now)})
    return view


def replica_views(record, now=None):
    return [replica_view(record, r, now) for r in record.get('replicas') or []]


# -- snapshots of a replicated share (docs/replication.md "Snapshots") ---------------------------
def replicated_snapshot_names(record):
    """The snapshots every secondary must hold, in creation order (taken or being taken on the active)."""
    return [s['name'] for s in record.get('snapshots') or []
            if s.get('status') in (states.CREATING, states.AVAILABLE)]


def missing_snapshots(record, replica):
    held = set(replica.get('snapshots') or [])
    return [n for n in replicated_snapshot_names(record) if n not in held]


def pending_replicas(record, snapshot_name):
    """The in_sync secondaries that do not hold snapshot ``snapshot_name`` yet."""
    return [r['id'] for r in secondaries(record)
            if r.get('replica_state') == states.REPLICA_IN_SYNC and snapshot_name not in (r.get('snapshots') or [])]


def settle_snapshots(record):
    """The reference's rule: a snapshot of a replicated share is ``available`` only once it is on
    the active replica and on every in_sync secondary. A snapshot waiting for replicas carries
    ``replicas_pending``; it becomes available when the last of them holds it (or stops being
    in_sync, or is deleted). Returns the names that became available."""
    done = []
    for snap in record.get('snapshots') or []:
        if snap.get('status') != states.CREATING or 'replicas_pending' not in snap:
            continue
        pending = pending_replicas(record, snap['name'])
        if pending:
            snap['replicas_pending'] = pending
            continue
        snap.pop('replicas_pending')
        snap['status'] = states.AVAILABLE
        done.append(snap['name'])
    return done
