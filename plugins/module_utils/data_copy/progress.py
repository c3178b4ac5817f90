# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress that tells the truth: the estimate of a phase, the time of each phase, the progress line.

A copy of many small files spends its time on files, a copy of a few big ones on bytes: a
percentage of the bytes alone jumps to 97% while most files are still to copy, and an ETA from the
byte rate says 0:00:00 with thousands of files left. ``Estimator`` learns, from the figures of the
running phase, what one file and what one byte cost (time = files x file cost + bytes x byte cost)
and gives the percentage and the ETA from both: the share of the whole work done, and the time the
work left costs. Until the totals are known (the source is still being counted) it gives neither.
While work remains the ETA is at least one second and the percentage at most 99.

``PhaseClock`` keeps each phase's own time, figures and rate, for the status and the report.
``progress_line`` renders a status as the one line the data_mover role prints.

This file is shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import math

# What a file and a byte cost before the run has taught anything: about 2,000 small files a second,
# bytes at 200 MiB/s (a local disk). The run's own figures replace them within seconds.
FILE_COST = 0.0005
BYTE_COST = 1.0 / (200 * 1024 * 1024)
# How strongly the fit keeps the priors' ratio of file cost to byte cost (squared seconds of the fit).
PRIOR_WEIGHT = 0.1
# Observations closer together than this are merged with the next one.
MIN_STEP = 0.5
# Older observations count less: each new one multiplies the weight of the earlier ones by this.
DECAY = 0.97
# The smallest cost factor a fit may give (against the priors): a cost is never taken as zero.
MIN_FACTOR = 0.001

# What verifying a file and a byte cost, as guessed for the verification still to come while the
# copy runs (the whole job's percentage, total_percent): reading both trees back at about 1 GiB/s.
VERIFY_FILE_COST = 0.0002
VERIFY_BYTE_COST = 1.0 / (1024 * 1024 * 1024)

# The phases of a job as status.json names them, and as the progress line names them.
PHASE_WORDS = {'scanning': 'counting', 'copying': 'copying', 'verifying': 'verifying', 'done': 'done'}


class Estimator(object):
    """Percentage and ETA of one phase from files and bytes, with the costs learnt from the phase.

    Call ``observe(now, files_done, bytes_done)`` with the figures as they grow (from a monotonic
    clock), then ``estimate(files_done, bytes_done, files_total, bytes_total)``.
    """

    def __init__(self, started, file_cost=FILE_COST, byte_cost=BYTE_COST):
        self.started = started
        self.file_cost = file_cost
        self.byte_cost = byte_cost
        self._last = (started, 0, 0)
        # Sums of the weighted least squares fit of seconds = m_f * x_f + m_b * x_b, where x_f and
        # x_b are the seconds the priors give to the files and bytes of one step.
        self._sff = self._sfb = self._sbb = self._sft = self._sbt = 0.0
        self.factors = (1.0, 1.0)
        self.steps = 0

    def observe(self, now, files_done, bytes_done):
        """Learn from the work done since the last observation."""
        last_time, last_files, last_bytes = self._last
        seconds = now - last_time
        if seconds < MIN_STEP:
            return
        files = max(0, files_done - last_files)
        size = max(0, bytes_done - last_bytes)
        self._last = (now, max(files_done, last_files), max(bytes_done, last_bytes))
        x_f = files * self.file_cost
        x_b = size * self.byte_cost
        if x_f == 0 and x_b == 0:
            # Time passed with nothing to show (a big file's middle, a pause): it belongs to the
            # next step that shows work, so keep its start.
            self._last = (last_time, last_files, last_bytes)
            return
        for name in ('_sff', '_sfb', '_sbb', '_sft', '_sbt'):
            setattr(self, name, getattr(self, name) * DECAY)
        self._sff += x_f * x_f
        self._sfb += x_f * x_b
        self._sbb += x_b * x_b
        self._sft += x_f * seconds
        self._sbt += x_b * seconds
        self.steps += 1
        self.factors = self._fit()

    def _fit(self):
        # Least squares of the steps' seconds, plus a penalty on the two factors drifting apart:
        # while the run cannot tell files from bytes (both grow together) the priors' ratio holds
        # and the run sets the scale; once it can, the penalty is soon outweighed.
        weight = PRIOR_WEIGHT
        a11, a12, a22 = self._sff + weight, self._sfb - weight, self._sbb + weight
        r1, r2 = self._sft, self._sbt
        det = a11 * a22 - a12 * a12
        if det <= 1e-12:
            return self.factors
        m_f = (r1 * a22 - r2 * a12) / det
        m_b = (a11 * r2 - a12 * r1) / det
        if m_f < MIN_FACTOR:
            m_f = MIN_FACTOR
            m_b = max(MIN_FACTOR, (r2 - a12 * m_f) / a22)
        elif m_b < MIN_FACTOR:
            m_b = MIN_FACTOR
            m_f = max(MIN_FACTOR, (r1 - a12 * m_b) / a11)
        return (m_f, m_b)

    def costs(self):
        """The seconds one file and one byte cost, as learnt so far."""
        return (self.file_cost * self.factors[0], self.byte_cost * self.factors[1])

    def estimate(self, files_done, bytes_done, files_total, bytes_total):
        """``percent`` (0-100, at most 99 while work remains) and ``eta_seconds`` (at least 1 while
        work remains; 0 when none does); both None when a total is not known."""
        if files_total is None or bytes_total is None:
            return {'percent': None, 'eta_seconds': None}
        file_cost, byte_cost = self.costs()
        files_left = max(0, files_total - files_done)
        bytes_left = max(0, bytes_total - bytes_done)
        total = files_total * file_cost + bytes_total * byte_cost
        left = files_left * file_cost + bytes_left * byte_cost
        if not files_left and not bytes_left:
            return {'percent': 100, 'eta_seconds': 0}
        percent = int(100 * (total - left) / total) if total > 0 else 0
        return {'percent': max(0, min(99, percent)), 'eta_seconds': max(1, int(math.ceil(left)))}


def total_percent(spent, eta_seconds, later_seconds):
    """The whole job's percentage: the seconds its phases took and take so far (``spent``) against
    those plus the running phase's ETA and the phases still to come (``later_seconds``); None without
    an ETA; at most 99 while work remains."""
    if eta_seconds is None:
        return None
    left = eta_seconds + later_seconds
    if left <= 0:
        return 100
    whole = spent + left
    return max(0, min(99, int(100 * spent / whole))) if whole > 0 else 0


def rate(amount, seconds):
    """``amount`` per second over ``seconds`` (0 before any time passed), as an integer."""
    return int(amount / seconds) if seconds > 0 else 0


class PhaseClock(object):
    """The phases of one job attempt, each with its own time, figures and rates.

    ``begin(name, now)`` ends the running phase (with its last figures) and starts the next one;
    ``figures(files, bytes)`` keeps the running phase's latest figures; ``ended`` lists the
    phases that ended, in order, as dicts: ``phase``, ``seconds``, ``files``, ``bytes``,
    ``rate_bytes_per_s``, ``rate_files_per_s``.
    """

    def __init__(self):
        self.ended = []
        self.current = None
        self.started = None
        self.files = 0
        self.bytes = 0

    def begin(self, name, now):
        self.end(now)
        self.current = name
        self.started = now
        self.files = 0
        self.bytes = 0

    def figures(self, files, size):
        self.files = files
        self.bytes = size

    def elapsed(self, now):
        return max(0.0, now - self.started) if self.started is not None else 0.0

    def end(self, now):
        if self.current is None:
            return
        seconds = self.elapsed(now)
        self.ended.append({'phase': self.current, 'seconds': round(seconds, 3), 'files': self.files,
                           'bytes': self.bytes, 'rate_bytes_per_s': rate(self.bytes, seconds),
                           'rate_files_per_s': rate(self.files, seconds)})
        self.current = None
        self.started = None

    def summary(self):
        """The ended phases, merged by name (a copy run twice counts once, with both times)."""
        merged = []
        by_name = {}
        for item in self.ended:
            if item['phase'] in by_name:
                entry = by_name[item['phase']]
                for key in ('seconds', 'files', 'bytes'):
                    entry[key] += item[key]
                entry['seconds'] = round(entry['seconds'], 3)
                entry['rate_bytes_per_s'] = rate(entry['bytes'], entry['seconds'])
                entry['rate_files_per_s'] = rate(entry['files'], entry['seconds'])
            else:
                entry = dict(item)
                by_name[item['phase']] = entry
                merged.append(entry)
        return merged


def size_text(count):
    """A byte count as people read it: 512 B, 1.5 KiB, 2.0 GiB."""
    count = float(count or 0)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if count < 1024 or unit == 'TiB':
            break
        count /= 1024
    return ('%d %s' if unit == 'B' else '%.1f %s') % (count, unit)


def duration_text(seconds):
    """Seconds as H:MM:SS; ``?`` when unknown."""
    if seconds is None:
        return '?'
    seconds = int(seconds)
    return '%d:%02d:%02d' % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def _count(value):
    return '?' if value is None else str(value)


def phases_text(phases):
    """Each phase with its own figures, time and rates (the short start before the copy left out):
    ``copying 2.0 GiB in 0:00:20 (102.4 MiB/s, 3000 files/s); verifying 2.0 GiB in 0:00:01 (...)``."""
    return '; '.join('%s %s in %s (%s/s, %s files/s)' % (
        PHASE_WORDS.get(item.get('phase'), item.get('phase')), size_text(item.get('bytes')),
        duration_text(item.get('seconds')), size_text(item.get('rate_bytes_per_s')),
        item.get('rate_files_per_s') or 0) for item in phases or () if item.get('phase') != 'scanning')


def progress_line(status, final_pass=False):
    """One line that says where a job is, from its status (as ``status.json`` holds it).

    ``copying 42% (ETA 0:01:10), 1.2 GiB of 2.0 GiB, 25000 of 60000 files, 85.0 MiB/s, 410 files/s``;
    while the source is still being counted: ``copying, still counting the source: 1.2 GiB, 25000
    files so far, ...``; at the end, each phase with its own time and rate.
    """
    state = status.get('state') or 'running'
    phase = status.get('phase') or 'scanning'
    words = PHASE_WORDS.get(phase, phase)
    if final_pass and phase not in ('done',):
        words = 'final pass: ' + words
    if phase == 'done' or state != 'running':
        text = ('final pass ' if final_pass else '') + state
        timing = phases_text(status.get('phases'))
        if timing:
            text += ': ' + timing
        if state != 'completed' and phase != 'done':
            text += ' (while %s: %s of %s files)' % (words, _count(status.get('files_done')),
                                                     _count(status.get('files_total')))
        return text
    rates = '%s/s, %s files/s' % (size_text(status.get('rate_bytes_per_s')), status.get('rate_files_per_s') or 0)
    if not status.get('totals_known', status.get('percent') is not None):
        counted = status.get('files_counted')
        return '%s, still counting the source (%s files so far): %s and %s files %s, %s' % (
            words, _count(counted), size_text(status.get('bytes_done')), _count(status.get('files_done')),
            'copied' if phase == 'copying' else 'done', rates)
    eta = status.get('eta_seconds')
    return '%s %s%% (ETA %s), %s of %s, %s of %s files, %s' % (
        words, _count(status.get('percent')), duration_text(eta), size_text(status.get('bytes_done')),
        size_text(status.get('bytes_total')), _count(status.get('files_done')), _count(status.get('files_total')),
        rates)
