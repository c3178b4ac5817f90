# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a copy report of a host-assisted migration must prove, and what the record keeps of it.

Each copy plan carries a *pass* (see data_copy/signing.py): an id and a key drawn for phase 1 and
for each final pass, kept in the record. A report proves a verified copy only when the data_copy
module signed it with the key of the pass the migration waits for; a report made by hand, edited,
or of another migration or pass is refused and changes nothing. A report that claims no success
needs no signature: it can only fail a pass, as a cancel could.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import layout
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.progress import phases_text
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.signing import new_pass, signature_valid
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.store import now_iso

PHASE1_PASS = 'phase1'
FINAL_PASS = 'final'

# The record keeps a copy report small: this many ignored paths (the count is always kept) and log lines.
SUMMARY_IGNORED = 20
SUMMARY_LOG_LINES = 12
SUMMARY_LOG_WIDTH = 240
# Why a copy job that did not complete did not, when its report gives no error.
JOB_STATE_TEXT = {
    'absent': 'the data node has no such job (it never started there, or its folder was removed)',
    'cancelled': 'it was cancelled before it completed',
    'running': 'it is still running',
    'failed': 'it failed without saying why',
}


def final_job_id(mig):
    """The job id of the final pass, ``<id>-final``. A final pass taken again (something may have
    written into the source after it) keeps the id and gets a new pass, which makes the data mover
    run the job again (see draw_pass)."""
    return layout.final_job_id(mig['id'])


def _listed(report, key, limit=10):
    items = report.get(key) or []
    names = [item if isinstance(item, str) else item.get('path', str(item)) for item in items[:limit]]
    more = len(items) - len(names)
    return ', '.join(names) + (' and %d more' % more if more > 0 else '')


# -- passes ------------------------------------------------------------------------------------
def current_pass(record, final):
    """The pass the migration waits for (phase 1 or the final pass), or None."""
    return ((record.get('migration') or {}).get('passes') or {}).get(FINAL_PASS if final else PHASE1_PASS)


def draw_pass(record, final):
    """A new pass for phase 1 or the final pass, in the record (the caller saves it)."""
    drawn = new_pass(final)
    drawn['issued_at'] = now_iso()
    record['migration'].setdefault('passes', {})[FINAL_PASS if final else PHASE1_PASS] = drawn
    return drawn


def forget_final_pass(record):
    """The next completion hands out a new final pass."""
    (record['migration'].get('passes') or {}).pop(FINAL_PASS, None)


# -- reports -----------------------------------------------------------------------------------
def check_report(record, report, final):
    """Refuse (InvalidRequest, nothing changed) a report that is not of this migration's job, and
    a report that claims a verified copy, or carries a signature, without a valid signature of
    the pass the migration waits for."""
    mig = record['migration']
    expected = final_job_id(mig) if final else mig['id']
    what = 'the final pass' if final else 'phase 1'
    if not isinstance(report, dict) or report.get('job_id') != expected:
        raise InvalidRequest('Refusing the copy report for share %s: it belongs to job %r, not to %s of migration %s; '
                             'a stale or foreign report cannot complete anything, nothing was changed'
                             % (record['name'], (report or {}).get('job_id') if isinstance(report, dict) else report,
                                what, mig['id']))
    if report_failure(report) is not None and 'signature' not in report:
        return  # a failure needs no proof: it completes nothing
    problem = signature_problem(record, report, final)
    if problem:
        raise InvalidRequest('Refusing the copy report for share %s: %s. Only the data mover\'s own report, signed '
                             'for the pass of %s that migration %s waits for, can prove a verified copy; nothing '
                             'was changed' % (record['name'], problem, what, mig['id']))


def signature_problem(record, report, final):
    """Why ``report`` is not signed for the current pass, or None."""
    mig = record['migration']
    current = current_pass(record, final)
    if current is None:
        return 'no %s pass was handed out yet' % ('final' if final else 'phase 1')
    if not any(report.get(name) for name in ('migration_id', 'pass_id', 'signature')):
        return 'it carries no signature and names no pass (it was not made by the data mover for this migration)'
    if report.get('migration_id') != mig['id']:
        return 'it was made for migration %s' % report.get('migration_id')
    if report.get('pass_id') != current['id']:
        return ('it was made for pass %s, not for the current pass %s (a report of an earlier or another pass)'
                % (report.get('pass_id'), current['id']))
    if not report.get('signature'):
        return 'it carries no signature'
    if not signature_valid(report, current.get('key')):
        return 'its signature does not match its contents (the report was changed after it was signed)'
    return None


def report_failure(report):
    """None when the report proves a verified copy, else why not."""
    state = report.get('state')
    if state not in (None, 'completed'):
        why = report.get('error') or JOB_STATE_TEXT.get(state) or 'no error given'
        return 'copy job %s %s: %s' % (report.get('job_id'), 'is still running' if state == 'running'
                                       else 'did not complete (%s)' % state, why)
    if report.get('verified') is not True:
        problems = []
        for key in ('differ', 'missing', 'extra'):
            if report.get(key):
                problems.append('%s: %s' % (key, _listed(report, key)))
        why = '; '.join(problems) or report.get('verification') or report.get('error') or 'no verification result'
        return 'the copy was not verified (%s)' % why
    return None


def copy_summary(report):
    """What the record keeps of a verified report. ``started_at`` (when the job's first attempt
    began reading the source) is where a maintenance window measures what changed since the copy."""
    keep = ('files', 'bytes', 'directories', 'symlinks', 'hash_algorithm', 'copy_engine', 'changes_pass',
            'copy_seconds', 'verify_seconds',
            'source_digest', 'destination_digest', 'source_seal', 'destination_seal', 'pass_id', 'warnings',
            'data_node', 'started_at')
    summary = dict((k, report.get(k)) for k in keep if report.get(k) is not None)
    # What the ignore list left out (the first names, always the count) and the end of the log:
    # the job folder that holds the whole report is removed when the migration ends.
    if isinstance(report.get('ignored_count'), int):
        summary['ignored_count'] = report['ignored_count']
        summary['ignored'] = [str(item) for item in (report.get('ignored') or [])[:SUMMARY_IGNORED]]
    # Each phase's own time and rate (the copy's rate is the copy's, not the verification's), and
    # the same in one line for the phase playbooks.
    if isinstance(report.get('phases'), list):
        summary['phases'] = [dict(item) for item in report['phases'] if isinstance(item, dict)]
        summary['timing'] = phases_text(summary['phases'])
    if isinstance(report.get('log_tail'), list):
        summary['log_tail'] = [str(line)[:SUMMARY_LOG_WIDTH] for line in report['log_tail'][-SUMMARY_LOG_LINES:]]
    summary['verified_at'] = now_iso()
    return summary
