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
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import time
import uuid

#: The fields whose every change is an event.
WATCHED = ('task_state', 'status', 'replica_state', 'migration_status')
JOURNAL_NAME = 'events.jsonl'
#: A journal that reaches this size is renamed to events.jsonl.1 (one older file is kept).
ROTATE_BYTES = 16 * 1024 * 1024

_PROCESS_RUN_ID = uuid.uuid4().hex


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
        try:
            self.transport.append_line(self.path, json.dumps(line, sort_keys=True), rotate_bytes=ROTATE_BYTES)
        except (OSError, IOError) as exc:
            self.failures.append((event, '%s: %s' % (self.path, getattr(exc, 'strerror', None) or exc)))
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
