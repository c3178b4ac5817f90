# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event journal: each change of a watched state, one JSON line kept with the records.

Every pool's metadata folder (``.mobility/``, see store.py) holds ``events.jsonl``. A line is
appended, in one write and made durable, whenever a record of that pool changes one of the fields
in WATCHED (``task_state``, ``status``, ``replica_state``, ``migration_status``), and for named
events such as ``volume.migrate.progress``. The names and fields are a stable interface, listed in
docs/events.md. The journal never decides anything: the records stay the truth, and a journal
that cannot be written (a full pool) costs a warning, never a failed step or a blocked switchover.

An operator may also have every line POSTed to a webhook (``Webhook``; the modules' ``events``
option or ``MOBILITY_EVENTS_WEBHOOK``): each line is sent as it is written, with a short timeout and
a bounded number of retries, and a webhook that does not answer is given up for the rest of the run,
so it can never hold up or fail a step. The journal stays the complete record.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import time
import uuid
from urllib.parse import urlsplit


#: The fields whose every change is an event.
WATCHED = ('task_state', 'status', 'replica_state', 'migration_status')
JOURNAL_NAME = 'events.jsonl'
#: A journal that reaches this size is renamed to events.jsonl.1 (one older file is kept).
ROTATE_BYTES = 16 * 1024 * 1024

#: Environment variables an operator can set once instead of the modules' ``events`` option.
WEBHOOK_ENV = 'MOBILITY_EVENTS_WEBHOOK'
METRICS_DIR_ENV = 'MOBILITY_METRICS_DIR'
#: HTTP statuses worth another try; any other 4xx is the receiver refusing the line.
RETRY_STATUSES = (408, 429)

_PROCESS_RUN_ID = uuid.uuid4().hex
#: The webhook every journal of this process posts to (configure_webhook), or None.
_WEBHOOK = [None]


def run_id():
    """What ties the lines of one run together: ``MOBILITY_RUN_ID`` when the caller sets it (the
    playbooks pass one per play), AWX's ``JOB_ID`` when it runs in an AWX job, else one id per
    process."""
    return os.environ.get('MOBILITY_RUN_ID') or (
        'awx-%s' % os.environ['JOB_ID'] if os.environ.get('JOB_ID') else _PROCESS_RUN_ID)


def now_iso():
    t = time.time()
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t)) + '.%06dZ' % int((t % 1) * 1e6)


def watched(record):
    """The watched fields of ``record`` (a dict) that it has."""
    return dict((f, record.get(f)) for f in WATCHED if f in record)


def changes(before, after):
    """[(field, old, new)] of the watched fields that differ between two ``watched`` dicts; a
    field missing on one side counts as None."""
    found = []
    for field in WATCHED:
        if field not in before and field not in after:
            continue
        old, new = before.get(field), after.get(field)
        if old != new:
            found.append((field, old, new))
    return found


def safe_url(url):
    """``url`` without its user info, path and query (which may carry a token): for messages."""
    try:
        parts = urlsplit(url)
        return '%s://%s' % (parts.scheme, parts.hostname + (':%d' % parts.port if parts.port else ''))
    except (ValueError, TypeError):
        return '(an invalid URL)'


class Webhook(object):
    """Where journal lines are POSTed (``Content-Type: application/json``, one line per request).

    Each line gets at most ``retries + 1`` attempts of ``timeout`` seconds each, ``backoff``,
    ``2 * backoff``, ... apart; a 2xx answer delivers it, a 4xx other than 408 and 429 refuses it
    (no retry). When a line's attempts are used up the webhook counts as down for the rest of the
    run and later lines are not sent (``skipped``): a receiver that hangs costs one line's attempts
    per run, never a step. Nothing here raises."""

    def __init__(self, url, timeout=2.0, retries=2, backoff=0.25, validate_certs=True):
        self.url = url
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.validate_certs = validate_certs
        self.delivered = 0
        self.skipped = 0
        #: (event, error) of each line not delivered, in order.
        self.failures = []
        #: Why the webhook was given up, once it was.
        self.down = None

    def post(self, event, text):
        """POST one line (``text``, JSON); True when the receiver took it."""
        if self.down is not None:
            self.skipped += 1
            return False
        # Imported here, not at the top: ansible.module_utils.urls (with ssl, email and cryptography)
        # costs every module call about 0.15 s of CPU, and only a run with a webhook needs it.
        from ansible.module_utils.urls import open_url
        error = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                response = open_url(self.url, data=text.encode('utf-8'), method='POST', timeout=self.timeout,
                                    headers={'Content-Type': 'application/json'},
                                    validate_certs=self.validate_certs, follow_redirects='none')
                response.read()
                self.delivered += 1
                return True
            except Exception as exc:  # any failure of the receiver is a warning, never the step's failure
                status = getattr(exc, 'code', None)
                error = 'HTTP %s' % status if isinstance(status, int) else (
                    '%s: %s' % (type(exc).__name__, getattr(exc, 'reason', None) or exc))
                if isinstance(status, int) and 400 <= status < 500 and status not in RETRY_STATUSES:
                    self.failures.append((event, error))
                    return False
        self.down = error
        self.failures.append((event, error))
        return False

    def warnings(self):
        """What the run reports about this webhook: nothing when every line was delivered."""
        if not self.failures and not self.skipped:
            return []
        found = ['Event %s was not delivered to the webhook %s: %s (it is in the event journal)'
                 % (event, safe_url(self.url), error) for event, error in self.failures[:5]]
        if len(self.failures) > 5:
            found.append('%d more events were refused by the webhook %s' % (len(self.failures) - 5, safe_url(self.url)))
        if self.skipped:
            found.append('The webhook %s was given up after %s; %d later events of this run were not sent to it '
                         '(they are in the event journal)' % (safe_url(self.url), self.down, self.skipped))
        return found


def configure_webhook(webhook):
    """Make ``webhook`` (a Webhook, or None) the one every journal of this process posts to."""
    _WEBHOOK[0] = webhook


def current_webhook():
    return _WEBHOOK[0]


class Journal(object):
    """The journal of one pool: ``meta_root`` is its ``.mobility`` folder on the pool's host,
    reached through ``transport`` (transport/base.py append_line)."""

    def __init__(self, transport, meta_root):
        self.transport = transport
        self.path = os.path.join(meta_root, JOURNAL_NAME)
        #: Lines that could not be written: (event, error text); the caller reports them as warnings.
        self.failures = []

    def emit(self, event, kind, object_id, **fields):
        """Append one line: ``time``, ``event``, ``kind``, ``id``, ``run_id`` and ``fields``
        (plain JSON values: names, states, the numbers of the moment). Returns the line's dict."""
        line = dict(fields)
        line.update({'time': now_iso(), 'event': event, 'kind': kind, 'id': object_id, 'run_id': run_id()})
        text = json.dumps(line, sort_keys=True)
        try:
            self.transport.append_line(self.path, text, rotate_bytes=ROTATE_BYTES)
        except (OSError, IOError) as exc:
            self.failures.append((event, '%s: %s' % (self.path, getattr(exc, 'strerror', None) or exc)))
        # After the journal (the durable record): a receiver that is slow or down costs at most one
        # line's bounded attempts per run.
        webhook = current_webhook()
        if webhook is not None:
            webhook.post(event, text)
        return line

    def state_changes(self, kind, object_id, before, after, **fields):
        """One ``<kind>.<field>`` event per watched field that changed from ``before`` to ``after``
        (``watched`` dicts), with ``old`` and ``new``; the lines written."""
        return [self.emit('%s.%s' % (kind, field), kind, object_id, field=field, old=old, new=new, **fields)
                for field, old, new in changes(before, after)]

    def read(self):
        """Every line of the journal (the rotated file first), parsed; a torn last line is skipped."""
        lines = []
        for path in (self.path + '.1', self.path):
            try:
                text = self.transport.read_bytes(path).decode('utf-8')
            except (OSError, IOError):
                continue
            for raw in text.splitlines():
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        return lines
