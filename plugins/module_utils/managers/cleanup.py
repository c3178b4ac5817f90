# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cleanup that may fail without leaving a share stuck: the ``cleanup_pending`` list of a record.

A failed, cancelled or completed migration leaves something to delete: the destination instance
of a migration that did not finish, the old instance after a switch, a driver's temporary copies.
The share's state never waits for that: the manager first records the outcome (the source
available with its access rules, or the switch done) together with an entry in the record's
``cleanup_pending`` list for each thing to delete, then deletes them. What succeeds is removed
from the list; what fails stays, with its error, and every later locked run on the share (a
rerun, a cancel, the next start, the share's deletion) tries again until it succeeds. share_info
shows the list.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso

INSTANCE = 'instance'
MIGRATION = 'migration'


def add_instance(record, pool, reason):
    """Note that the instance of the share in ``pool`` must be deleted (before it is tried)."""
    return _add(record, {'kind': INSTANCE, 'pool': str(pool.ref), 'reason': reason})


def add_migration(record, migration, reason):
    """Note that the driver's leftovers of ``migration`` (temporary copies) must be removed."""
    return _add(record, {'kind': MIGRATION, 'migration_id': migration['id'], 'source_pool': migration['source_pool'],
                         'destination_pool': migration['destination_pool'], 'reason': reason})


def _add(record, entry):
    pending = record.setdefault('cleanup_pending', [])
    for existing in pending:
        if all(existing.get(k) == v for k, v in entry.items() if k != 'reason'):
            return existing
    entry.update({'since': now_iso(), 'attempts': 0, 'error': None})
    pending.append(entry)
    return entry


def pending_in(record, pool):
    """The pending instance deletions in ``pool``."""
    return [e for e in record.get('cleanup_pending') or [] if e.get('kind') == INSTANCE and e.get('pool') == str(pool.ref)]


def describe(entries):
    return '; '.join('%s in %s (%s): %s' % (e.get('kind'), e.get('pool') or e.get('destination_pool'),
                                            e.get('reason'), e.get('error') or 'not tried yet') for e in entries)


def retry(ctx, record, pool):
    """What every locked run on a share does first: run_pending; True when something was removed
    (a run that had nothing else to do reports that as its change)."""
    count = len(record.get('cleanup_pending') or [])
    return len(run_pending(ctx, record, pool)) < count


def run_pending(ctx, record, pool, event='cleanup'):
    """Try every entry of ``record['cleanup_pending']`` (under the share's lock); save the record
    in ``pool`` when the list changed. Returns the entries still pending. Never raises for a
    failed deletion: the failure is recorded in its entry."""
    pending = record.get('cleanup_pending') or []
    if not pending or ctx.check_mode:
        return list(pending)
    in_use = set(inst.get('pool') for inst in record.get('instances') or [])
    remaining = []
    done = []
    for entry in pending:
        if entry.get('kind') == MIGRATION and remaining:
            # A driver's temporary copies go only after the instance they belong to.
            remaining.append(entry)
            continue
        try:
            if entry.get('kind') == INSTANCE:
                if entry['pool'] in in_use:
                    # The share uses that pool again: what is there is its data, never deleted.
                    done.append(entry)
                    continue
                target = ctx.pool(entry['pool'])
                ctx.driver(target).delete_instance(target, record['name'])
            elif entry.get('kind') == MIGRATION:
                source, dest = ctx.pool(entry['source_pool']), ctx.pool(entry['destination_pool'])
                share = record
                if (record.get('migration') or {}).get('id') != entry['migration_id']:
                    share = dict(record, migration={'id': entry['migration_id']})
                ctx.driver(source).migration_cleanup(source, dest, share)
            done.append(entry)
        except Exception as exc:  # pylint: disable=broad-except
            entry['error'] = str(exc)
            entry['attempts'] = int(entry.get('attempts') or 0) + 1
            entry['last_attempt_at'] = now_iso()
            remaining.append(entry)
    record['cleanup_pending'] = remaining
    if done or remaining:
        summary = ('%s: %d done, %d still pending' % (event, len(done), len(remaining)))
        ctx.repo.save(record, pool, summary)
    return remaining
