# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mount table of this machine, read from /proc/self/mountinfo.

``os.path.ismount`` cannot see a bind mount of a folder of the same filesystem (same device),
so mount points are looked up here.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

_OCTAL = re.compile(r'\\([0-7]{3})')


def _unescape(field):
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_table():
    """A list of dicts: mount_point, root (path inside the filesystem), fstype, source, options
    (the mount's own, ``ro`` or ``rw`` first), mount_id and parent_id (to order mounts stacked on
    one mount point: the upper one's parent is the one beneath)."""
    table = []
    try:
        with open('/proc/self/mountinfo') as handle:
            for line in handle:
                fields = line.split()
                try:
                    sep = fields.index('-')
                except ValueError:
                    continue
                table.append({'mount_point': _unescape(fields[4]), 'root': _unescape(fields[3]),
                              'options': fields[5], 'fstype': fields[sep + 1], 'source': _unescape(fields[sep + 2]),
                              'mount_id': fields[0], 'parent_id': fields[1]})
    except IOError:
        pass
    return table


def same_inode(a, b):
    """True when both paths are the same folder: how a bind mount is recognised."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_mount_point(path):
    real = os.path.realpath(path)
    return any(entry['mount_point'] == real for entry in mount_table())


def mount_of(path):
    """The mount table entry of the filesystem holding ``path`` (the deepest mount point above it)."""
    real = os.path.realpath(path)
    best = {'mount_point': '/', 'root': '/', 'options': '', 'fstype': 'unknown', 'source': 'unknown'}
    for entry in mount_table():
        point = entry['mount_point']
        if (real == point or real.startswith(point.rstrip('/') + '/')) and len(point) >= len(best['mount_point']):
            best = entry
    return best


def stacked_mounts(path, table=None):
    """The mounts stacked on the mount point ``path``, lowest first (the last one is what ``path``
    shows); an empty list when nothing is mounted there."""
    real = os.path.realpath(path)
    here = [entry for entry in (mount_table() if table is None else table) if entry['mount_point'] == real]
    ids = set(entry.get('mount_id') for entry in here)
    above = dict((entry.get('parent_id'), entry) for entry in here)
    bottom = [entry for entry in here if entry.get('parent_id') not in ids]
    ordered = []
    current = bottom[0] if bottom else None
    while current is not None and current not in ordered:
        ordered.append(current)
        current = above.get(current.get('mount_id'))
    # Anything the parent links do not reach (should not happen) still counts as mounted.
    return ordered + [entry for entry in here if entry not in ordered]
