# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rsync for the data mover: the argv (never a shell string), progress and statistics parsing.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

# -a: recursive, links, perms, times, group, owner, devices; -H hard links; -A ACLs; -X xattrs;
# -S sparse files. --modify-window=-1 compares timestamps to the nanosecond: with rsync's
# default (whole seconds) a same-size change made within the same second as the previous
# copy is skipped by the quick check and never copied.
# The xattr filters leave ACLs to -A alone. XFS shows root its own copy of the POSIX ACLs as
# trusted.SGI_ACL_*: on a second pass to xfs, rsync -X deleted that "extra" xattr and with it
# the ACL it had just set. Without root, rsync -X stores system.posix_acl_* as extra
# user.rsync.system.posix_acl_* xattrs on the destination. Both were seen here and caught by
# the verification.
XATTR_FILTERS = ('--filter=-x trusted.SGI_ACL_FILE', '--filter=-x trusted.SGI_ACL_DEFAULT',
                 '--filter=-x system.posix_acl_access', '--filter=-x system.posix_acl_default')
# rsync recurses incrementally (its default, no --no-inc-recursive): it lists one folder at a time,
# so it starts copying at once and its memory does not grow with the tree. Over 200,000 files a
# no-op pass peaked at 55 MiB with the whole list first and at 19 MiB incrementally (see
# docs/performance.md, bench/rsync_recursion.py). Its progress lines then say ir-chk=N/M, M
# growing while it lists; the count that runs beside it gives the job's totals (see
# ProgressReader.checked).
DEFAULT_BASE_OPTIONS = ('-aHAXS', '--numeric-ids', '--partial', '--delete', '--info=progress2,stats2',
                        '--modify-window=-1') + XATTR_FILTERS

WILDCARDS = '*?['

# Exit codes (rsync(1), "EXIT VALUES").
RC_OK = 0
RC_PARTIAL = 23
RC_VANISHED = 24
RC_SIGNAL = 20
EXIT_MEANINGS = {
    0: 'success',
    1: 'syntax or usage error',
    2: 'protocol incompatibility',
    3: 'errors selecting input/output files, dirs',
    4: 'requested action not supported',
    5: 'error starting client-server protocol',
    6: 'daemon unable to append to log-file',
    10: 'error in socket I/O',
    11: 'error in file I/O',
    12: 'error in rsync protocol data stream',
    13: 'errors with program diagnostics',
    14: 'error in IPC code',
    20: 'received SIGUSR1 or SIGINT',
    21: 'some error returned by waitpid()',
    22: 'error allocating core memory buffers',
    23: 'partial transfer due to error',
    24: 'partial transfer due to vanished source files',
    25: 'the --max-delete limit stopped deletions',
    30: 'timeout in data send/receive',
    35: 'timeout waiting for daemon connection',
}

_UNITS = {'': 1, 'k': 1024, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4, 'P': 1024 ** 5}
_PROGRESS_RE = re.compile(
    r'^\s*(?P<bytes>[\d,.]+)(?P<bunit>[KMGTP]?)\s+(?P<percent>\d+)%\s+'
    r'(?P<rate>[\d.,]+)(?P<runit>[kKMGTP]?)B/s\s+(?P<time>[\d:?]+)'
    r'(?:\s+\(xfr#(?P<xfr>\d+),\s+(?:to|ir)-chk=(?P<tochk>\d+)/(?P<total>\d+)\))?\s*$')
_STATS = (
    ('files', re.compile(r'^Number of files:\s+([\d,]+)')),
    ('created', re.compile(r'^Number of created files:\s+([\d,]+)')),
    ('deleted', re.compile(r'^Number of deleted files:\s+([\d,]+)')),
    ('transferred', re.compile(r'^Number of regular files transferred:\s+([\d,]+)')),
    ('total_size', re.compile(r'^Total file size:\s+([\d,]+) bytes')),
    ('transferred_size', re.compile(r'^Total transferred file size:\s+([\d,]+) bytes')),
    ('literal_data', re.compile(r'^Literal data:\s+([\d,]+) bytes')),
    ('matched_data', re.compile(r'^Matched data:\s+([\d,]+) bytes')),
)


class RsyncArgumentError(ValueError):
    """An ignored name or option cannot be turned into a safe rsync argument."""


def escape_pattern(name):
    """``name`` as an rsync pattern that matches only itself.

    rsync treats a backslash as an escape only when the pattern holds a wildcard (``*``, ``?``,
    ``[``); then every wildcard and backslash is escaped, otherwise the name is already literal.
    """
    if not any(char in name for char in WILDCARDS):
        return name
    return ''.join('\\' + char if char in WILDCARDS + '\\' else char for char in name)


def validate_ignore_name(name):
    """An ignored name is one path component: not empty, no ``/`` and no NUL."""
    if not isinstance(name, str) or name == '':
        raise RsyncArgumentError('Invalid ignored name %r: it must be a non-empty string' % (name,))
    if '/' in name or '\x00' in name:
        raise RsyncArgumentError("Invalid ignored name %r: it must be a single name (no '/' or NUL)" % (name,))
    if name in ('.', '..'):
        raise RsyncArgumentError('Invalid ignored name %r' % (name,))
    return name


def exclude_argument(name):
    """The rsync argument that skips entries called ``name`` at any depth.

    ``--exclude=PATTERN`` reads a leading ``+ ``/``- `` as a rule prefix and ``!`` as "clear the
    list"; such names go through ``--filter=- PATTERN``, where the pattern is the rest of the rule.
    """
    pattern = escape_pattern(validate_ignore_name(name))
    if name == '!' or name.startswith(('+ ', '- ')):
        return '--filter=- ' + pattern
    return '--exclude=' + pattern


def tree_argument(path):
    """A folder as rsync source or destination, with the trailing slash that means "its contents"."""
    if not path:
        raise RsyncArgumentError('An empty path is not a folder')
    return path.rstrip('/') + '/'


def build_argv(source, destination, ignore_files=(), base_options=None, extra_options=(), bwlimit=None,
               rsync='rsync'):
    """The rsync argv copying the contents of ``source`` into ``destination``."""
    base = list(DEFAULT_BASE_OPTIONS if base_options is None else base_options)
    argv = [rsync] + base
    argv.extend(exclude_argument(name) for name in ignore_files or ())
    if bwlimit not in (None, ''):
        bwlimit = str(bwlimit)
        if not re.match(r'^[0-9]+(\.[0-9]+)?[A-Za-z]{0,3}([+-]1)?$', bwlimit):
            raise RsyncArgumentError('Invalid bwlimit %r: expected a rate such as 10m or 500k' % (bwlimit,))
        argv.append('--bwlimit=' + bwlimit)
    for option in extra_options or ():
        if not isinstance(option, str) or not option.startswith('-') or '\x00' in option:
            raise RsyncArgumentError('Invalid rsync option %r: every extra option must start with "-"' % (option,))
        argv.append(option)
    argv.extend(['--', tree_argument(source), tree_argument(destination)])
    return argv


def options_say(options, short, long_name):
    """True when an option list holds ``long_name`` or the single-letter flag ``short``."""
    for option in options:
        if option == long_name or option.startswith(long_name + '='):
            return True
        if short and len(option) > 1 and option[0] == '-' and option[1] != '-' and short in option[1:]:
            return True
    return False


def _number(text, unit=''):
    text = text.replace(',', '')
    try:
        value = float(text)
    except ValueError:
        return None
    return value * _UNITS.get(unit, 1)


def _seconds(text):
    if '?' in text:
        return None
    total = 0
    for part in text.split(':'):
        if not part.isdigit():
            return None
        total = total * 60 + int(part)
    return total


def parse_progress_line(line):
    """Parse one ``--info=progress2`` line; None when it is not one.

    Returns ``bytes_done``, ``percent``, ``rate_bytes_per_s``, ``time_seconds`` (rsync's estimate
    of the time left, or the time taken on a line that ends a file), ``xfr`` and, when present,
    ``to_check`` and ``entries_total`` from ``to-chk=N/M``.
    """
    match = _PROGRESS_RE.match(line)
    if not match:
        return None
    bytes_done = _number(match.group('bytes'), match.group('bunit'))
    rate = _number(match.group('rate'), match.group('runit'))
    if bytes_done is None or rate is None:
        return None
    result = {
        'bytes_done': int(bytes_done),
        'percent': min(100, int(match.group('percent'))),
        'rate_bytes_per_s': int(rate),
        'time_seconds': _seconds(match.group('time')),
        'end_of_file': match.group('xfr') is not None,
    }
    if match.group('xfr') is not None:
        result['xfr'] = int(match.group('xfr'))
        result['to_check'] = int(match.group('tochk'))
        result['entries_total'] = int(match.group('total'))
    return result


def parse_stats(lines):
    """The ``--info=stats2`` figures found in ``lines`` (numbers), by short name."""
    stats = {}
    for line in lines:
        line = line.strip()
        for key, regex in _STATS:
            match = regex.match(line)
            if match:
                stats[key] = int(match.group(1).replace(',', ''))
    return stats


def describe_exit(rc):
    """rsync's exit code in words, or a signal name for a negative code."""
    if rc is None:
        return 'did not finish'
    if rc < 0:
        return 'killed by signal %d' % -rc
    return EXIT_MEANINGS.get(rc, 'exit code %d' % rc)


class ProgressReader(object):
    """Splits rsync's output (``\\r`` and ``\\n`` separated) into progress and other lines.

    Feed it bytes as they arrive; ``latest`` is the last progress line parsed, ``entries_total``
    and ``to_check`` the latest ``to-chk`` (or ``ir-chk``) figures, ``checked`` the most entries
    seen checked so far; every other non-empty line goes to ``on_line`` (for the log and the
    statistics at the end).
    """

    def __init__(self, on_line=None):
        self._buffer = b''
        self.latest = None
        self.entries_total = None
        self.to_check = None
        # M - N of ir-chk=N/M steps back by a few entries now and then (rsync counts a folder's
        # entries as still to check when it lists them): the status keeps the highest value.
        self.checked = 0
        self.on_line = on_line
        self.lines = []

    def feed(self, data):
        self._buffer += data
        parts = re.split(b'[\r\n]', self._buffer)
        self._buffer = parts.pop()
        for part in parts:
            self._line(part)
        # rsync ends a progress line with the next one's carriage return, a second later: read
        # the pending line now (it is read again, unchanged, when its end arrives).
        pending = parse_progress_line(self._buffer.decode('utf-8', 'backslashreplace'))
        if pending is not None:
            self._progress(pending)

    def close(self):
        if self._buffer:
            self._line(self._buffer)
            self._buffer = b''

    def _line(self, raw):
        text = raw.decode('utf-8', 'backslashreplace')
        if not text.strip():
            return
        parsed = parse_progress_line(text)
        if parsed is None:
            self.lines.append(text)
            del self.lines[:-200]
            if self.on_line is not None:
                self.on_line(text)
            return
        self._progress(parsed)

    def _progress(self, parsed):
        self.latest = parsed
        if 'entries_total' in parsed:
            self.entries_total = parsed['entries_total']
            self.to_check = parsed['to_check']
            self.checked = max(self.checked, self.entries_total - self.to_check)
