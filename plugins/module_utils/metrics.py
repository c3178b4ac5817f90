# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-share, per-replica and per-volume figures for Prometheus, in node_exporter's textfile collector format.

When the operator names a folder (the modules' ``events.metrics_dir`` option or
``MOBILITY_METRICS_DIR``), every module run that is not in check mode rewrites, on each storage host,
one file per declared pool of the collection's own drivers: ``storage_mobility_<host>_<backend>_<pool>.prom``
in that folder, with the shares (and the replicas their records list) or the volumes whose
authoritative record is in that pool. Each file is replaced by
an atomic rename (transport ``write_text_atomic``), so the collector never reads half a file. The
figures come from the records and from the live progress that ``share_info`` shows; the names are a
stable interface, listed in docs/events.md. Like the journal, metrics never decide anything: a file
that cannot be written is a warning.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import os
import re
import time

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.managers import replica_records

PREFIX = 'storage_mobility_'
#: name -> (type, help). Every metric a file may hold; docs/events.md lists the same names.
METRICS = (
    ('share_info', 'gauge', 'A share whose record is in this pool (always 1), with its status and task_state as labels.'),
    ('share_busy', 'gauge', '1 while the share is busy with a task (other actions are refused), else 0.'),
    ('share_progress_percent', 'gauge', 'total_progress of the share\'s migration (0-100), as share_info reports it.'),
    ('share_bytes_done', 'gauge', 'Bytes copied (or sent) so far by the migration\'s copy.'),
    ('share_bytes_total', 'gauge', 'Bytes the migration\'s copy has to move in all.'),
    ('share_rate_bytes_per_second', 'gauge', 'Current rate of the migration\'s copy.'),
    ('share_last_success_timestamp_seconds', 'gauge',
     'When a migration of the share last reached migration_success (Unix time), within the record\'s history.'),
    ('share_failures', 'gauge', 'Times a migration of the share went to migration_error, within the record\'s history.'),
    ('share_replica_info', 'gauge',
     'A replica of the share (always 1), with its replica id, pool, status and replica_state as labels.'),
    ('share_replica_lag_seconds', 'gauge', 'Seconds since the point a secondary replica holds was taken.'),
    ('share_replica_last_sync_timestamp_seconds', 'gauge', 'The point a secondary replica holds (Unix time).'),
    ('share_replica_last_update_bytes', 'gauge', 'Bytes the last update of a secondary replica moved.'),
    ('share_replica_last_update_seconds', 'gauge', 'Seconds the last update of a secondary replica took.'),
    ('share_replica_past_rpo', 'gauge',
     '1 when a secondary\'s lag is beyond the share type\'s rpo_seconds (never updated counts), else 0.'),
    ('volume_info', 'gauge', 'A volume whose record is in this pool (always 1), with its status and migration_status as labels.'),
    ('volume_migration_bytes_done', 'gauge', 'Bytes copied so far by the volume\'s running migration.'),
    ('volume_migration_bytes_total', 'gauge', 'Bytes the volume\'s running migration has to copy in all.'),
    ('volume_migration_rate_bytes_per_second', 'gauge', 'Current rate of the volume\'s running migration copy.'),
    ('metrics_written_timestamp_seconds', 'gauge', 'When this file was written (Unix time): an old value means stale figures.'),
)

_UNSAFE = re.compile(r'[^A-Za-z0-9_.-]')


def file_name(pool_ref):
    """The file of one pool (``host@backend#pool``): only letters, digits, ``_``, ``.`` and ``-``."""
    return 'storage_mobility_%s.prom' % _UNSAFE.sub('_', '%s_%s_%s' % (pool_ref.host, pool_ref.backend, pool_ref.pool))


def parse_time(text):
    """Unix time of a record's ISO 8601 UTC time (``2026-12-01T23:36:33.412377Z``), or None."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        whole = calendar.timegm(time.strptime(text[:19], '%Y-%m-%dT%H:%M:%S'))
    except ValueError:
        return None
    fraction = text[19:].rstrip('Z')
    try:
        return whole + (float(fraction) if fraction.startswith('.') else 0.0)
    except ValueError:
        return whole


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def share_figures(view, record):
    """{metric name: value} for one share: ``view`` is what share_info returns for it (progress,
    live copy progress), ``record`` the stored record (its history)."""
    figures = {'share_info': 1, 'share_busy': 1 if states.is_busy(record.get('task_state')) else 0}
    if view.get('total_progress') is not None:
        figures['share_progress_percent'] = view['total_progress']
    # The live copy (data_copy's status, a btrfs send), then what the record keeps, then a verified copy.
    sources = [view.get('copy_progress') or {}, record.get('progress') or {}]
    copy = ((record.get('migration') or {}).get('copy')) or {}
    if _number(copy.get('bytes')) is not None:
        sources.append({'bytes_done': copy['bytes'], 'bytes_total': copy['bytes']})
    for source in sources:
        done = _number(source.get('bytes_done', source.get('bytes_sent')))
        if done is not None:
            figures['share_bytes_done'] = done
            total = _number(source.get('bytes_total'))
            if total is not None:
                figures['share_bytes_total'] = max(total, done)
            rate = _number(source.get('rate_bytes_per_s'))
            if rate is not None:
                figures['share_rate_bytes_per_second'] = rate
            break
    history = record.get('history') or []
    successes = [parse_time(h.get('at')) for h in history if h.get('task_state') == states.MIGRATION_SUCCESS]
    successes = [t for t in successes if t is not None]
    if successes:
        figures['share_last_success_timestamp_seconds'] = max(successes)
    failures, previous = 0, None
    for step in history:
        if step.get('task_state') == states.MIGRATION_ERROR and previous != states.MIGRATION_ERROR:
            failures += 1
        previous = step.get('task_state')
    figures['share_failures'] = failures
    return figures


def replica_rows(record, labels, now=None):
    """(labels, info labels, figures) of each replica a share record lists: the active one carries
    only ``share_replica_info``; a secondary its lag, last sync, last update and RPO figures."""
    rows = []
    for replica in record.get('replicas') or []:
        view = replica_records.replica_view(record, replica, now)
        figures = {'share_replica_info': 1}
        if replica.get('replica_state') != states.REPLICA_ACTIVE:
            if _number(view.get('lag_seconds')) is not None:
                figures['share_replica_lag_seconds'] = view['lag_seconds']
            if _number(replica.get('last_sync_epoch')) is not None:
                figures['share_replica_last_sync_timestamp_seconds'] = replica['last_sync_epoch']
            update = replica.get('last_update') or {}
            if _number(update.get('bytes')) is not None:
                figures['share_replica_last_update_bytes'] = update['bytes']
            if _number(update.get('seconds')) is not None:
                figures['share_replica_last_update_seconds'] = update['seconds']
            figures['share_replica_past_rpo'] = 1 if view.get('past_rpo') else 0
        rows.append((dict(labels, replica=replica.get('id'), replica_host=replica.get('pool')),
                     {'status': replica.get('status'), 'replica_state': replica.get('replica_state')}, figures))
    return rows


def volume_figures(record, progress):
    """{metric name: value} for one volume: ``progress`` is the running migration's progress
    (LocalVolumeManager.progress) or None."""
    figures = {'volume_info': 1}
    progress = progress or {}
    done = _number(progress.get('bytes_done'))
    if done is not None:
        figures['volume_migration_bytes_done'] = done
        total = _number(progress.get('bytes_total'))
        if total is not None:
            figures['volume_migration_bytes_total'] = max(total, done)
        rate = _number(progress.get('rate_bytes_per_second'))
        if rate is not None:
            figures['volume_migration_rate_bytes_per_second'] = rate
    return figures


def _label_value(value):
    return ('' if value is None else str(value)).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def _labels(labels):
    return '{%s}' % ','.join('%s="%s"' % (k, _label_value(v)) for k, v in sorted(labels.items()))


def _format(value):
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render(shares, now=None):
    """The text of one file: ``shares`` is a list of (labels, info labels, figures) per share, where
    ``labels`` (share, id, host) mark every series of the share and ``info labels`` are added to
    its ``*_info`` metric (rows of replicas and volumes have the same shape). Metrics are grouped under their HELP and TYPE lines, as the format wants."""
    lines = []
    for name, kind, help_text in METRICS:
        if name == 'metrics_written_timestamp_seconds':
            continue
        series = []
        for labels, info, figures in shares:
            if name in figures:
                series.append('%s%s%s %s' % (PREFIX, name, _labels(dict(labels, **(info if name.endswith('_info') else {}))),
                                             _format(figures[name])))
        if series:
            lines.append('# HELP %s%s %s' % (PREFIX, name, help_text))
            lines.append('# TYPE %s%s %s' % (PREFIX, name, kind))
            lines.extend(series)
    name = 'metrics_written_timestamp_seconds'
    lines.append('# HELP %s%s %s' % (PREFIX, name, dict((m[0], m[2]) for m in METRICS)[name]))
    lines.append('# TYPE %s%s gauge' % (PREFIX, name))
    lines.append('%s%s %s' % (PREFIX, name, _format(round(time.time() if now is None else now, 3))))
    return '\n'.join(lines) + '\n'


def write_pool_metrics(ctx, folder, view):
    """Rewrite the file of every available pool of the run in ``folder`` on the pool's host.

    ``view(record, pool)`` is what share_info returns for a share (ShareManager.view). Returns the
    warnings: a pool whose file could not be written, a share whose figures could not be read."""
    warnings = []
    for store in ctx.repo.available_stores():
        rows = []
        for name in store.list_shares():
            try:
                record, pool = ctx.repo.find(name)
                if record is None or str(pool.ref) != str(store.pool.ref):
                    continue  # a stale copy of a record whose authoritative one is in another pool
                figures = share_figures(view(record, pool), record)
            except Exception as exc:  # figures are never worth a failed step
                warnings.append('Metrics of share %s in pool %s were left out: %s' % (name, store.pool.ref, exc))
                continue
            labels = {'share': name, 'id': record.get('id'), 'host': str(pool.ref)}
            rows.append((labels, {'status': record.get('status'), 'task_state': record.get('task_state')}, figures))
            rows.extend(replica_rows(record, labels))
        path = os.path.join(folder, file_name(store.pool.ref))
        try:
            store.transport.write_text_atomic(path, render(rows), mode=0o644)
        except (OSError, IOError) as exc:
            warnings.append('The metrics file %s of pool %s was not written: %s'
                            % (path, store.pool.ref, getattr(exc, 'strerror', None) or exc))
    return warnings


def write_volume_metrics(folder, volumes):
    """Rewrite the file of every available pool of the volume backends in ``folder`` on the pool's
    host: ``volumes`` is a LocalVolumeManager with volume backends. Returns the warnings."""
    warnings = []
    repo = volumes.repo
    for store in repo.available_stores():
        rows = []
        try:
            names = [n[:-5] for n in store.transport.listdir(os.path.join(store.root, 'volumes'))
                     if n.endswith('.json') and not n.startswith('.')]
        except OSError:
            names = []  # no volume was ever created in this pool: its file lists none
        for name in sorted(names):
            try:
                found = repo.find_all(name)
                if not found or str(found[0][1].ref) != str(store.pool.ref):
                    continue  # a stale copy of a record whose authoritative one is in another pool
                record = found[0][0]
                progress = None
                if record.get('migration_status') in states.VOLUME_MIGRATION_RUNNING:
                    progress = volumes.progress(record, store.pool)
                figures = volume_figures(record, progress)
            except Exception as exc:  # figures are never worth a failed step
                warnings.append('Metrics of volume %s in pool %s were left out: %s' % (name, store.pool.ref, exc))
                continue
            rows.append(({'volume': name, 'id': record.get('id'), 'host': str(store.pool.ref)},
                         {'status': record.get('status'), 'migration_status': record.get('migration_status')},
                         figures))
        path = os.path.join(folder, file_name(store.pool.ref))
        try:
            store.transport.write_text_atomic(path, render(rows), mode=0o644)
        except (OSError, IOError) as exc:
            warnings.append('The metrics file %s of pool %s was not written: %s'
                            % (path, store.pool.ref, getattr(exc, 'strerror', None) or exc))
    return warnings
