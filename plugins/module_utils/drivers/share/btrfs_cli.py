# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The btrfs command line as the btrfs driver uses it: argv builders and parsers of the output of
``btrfs subvolume show``, ``subvolume list``, ``receive --dump`` and ``filesystem du``, and the
names of a migration's temporary snapshots. Pure functions, unit-tested on recorded and real output.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

EMPTY_VALUES = ('', '-')
INCREMENT_RE = re.compile(r'^inc-(\d{6})$')


def parse_subvolume_show(text):
    """``btrfs subvolume show PATH`` as a dict with lower-case keys (``uuid``, ``parent_uuid``,
    ``received_uuid``, ``creation_time``, ``generation``, ``gen_at_creation``, ``flags``, ...),
    ``readonly`` and ``snapshots`` (names listed under ``Snapshot(s):``). Values shown as ``-`` are None."""
    result = {'snapshots': []}
    lines = text.splitlines()
    in_snapshots = False
    for index, line in enumerate(lines):
        if index == 0 and ':' not in line:
            result['path'] = line.strip()
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if in_snapshots and ':' not in stripped:
            result['snapshots'].append(stripped)
            continue
        key, sep, value = stripped.partition(':')
        if not sep:
            continue
        key = key.strip().lower().replace(' ', '_').replace('(s)', 's')
        value = value.strip()
        in_snapshots = key == 'snapshots'
        if in_snapshots:
            if value:
                result['snapshots'].append(value)
            continue
        if value in EMPTY_VALUES:
            value = None
        elif key in ('subvolume_id', 'generation', 'gen_at_creation', 'parent_id', 'top_level_id',
                     'send_transid', 'receive_transid'):
            try:
                value = int(value)
            except ValueError:
                pass
        result[key] = value
    result['readonly'] = 'readonly' in (result.get('flags') or '').split(',')
    return result


def parse_subvolume_list(text):
    """``btrfs subvolume list`` lines as dicts: id, gen, top_level, path."""
    result = []
    for line in text.splitlines():
        match = re.match(r'^ID (\d+) gen (\d+)(?: cgen \d+)? top level (\d+)(?: .*?)? path (.*)$', line.strip())
        if match:
            result.append({'id': int(match.group(1)), 'gen': int(match.group(2)),
                           'top_level': int(match.group(3)), 'path': match.group(4)})
    return result


def parse_dump_data_bytes(text):
    """Bytes of file data in a send stream, from ``btrfs receive --dump`` of a ``--no-data`` send:
    the sum of the ``len=`` of its ``update_extent`` commands."""
    total = 0
    for line in text.splitlines():
        if line.startswith('update_extent'):
            match = re.search(r'\blen=(\d+)', line)
            if match:
                total += int(match.group(1))
    return total


def parse_du_total(text):
    """The Total column (bytes) of ``btrfs filesystem du -s --raw``."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            return int(fields[0])
    return 0


def send_argv(path, parent=None, no_data=False):
    """``btrfs send`` of ``path`` (incremental against ``parent``; ``no_data``: metadata only)."""
    argv = ['btrfs', 'send', '-q']
    if no_data:
        argv.append('--no-data')
    if parent:
        argv += ['-p', parent]
    return argv + [path]


def increment_name(seq):
    return 'inc-%06d' % seq


def increment_seq(name):
    match = INCREMENT_RE.match(name)
    return int(match.group(1)) if match else None
