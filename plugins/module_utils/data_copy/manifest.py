# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a manifest entry is: the values that describe one path of a tree, and how two entries differ.

A manifest entry describes one path below a root (the root itself is ``.``): its type, mode,
owner, group, size, modification time in nanoseconds, symlink target (never followed), device
number, extended attributes (ACLs included), hard-link structure and, for regular files, a hash
of the content. A walk (walk.py) makes the entries of a tree, a comparison (compare.py) compares
those of two trees as they come.

Paths are bytes throughout: a name that is not UTF-8 is compared exactly and only rendered
(``\\xNN``) for the report. Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type


# ``flags``: the immutable and append-only attributes (see fileflags), absent when neither is set.
ATTRIBUTES = ('type', 'mode', 'uid', 'gid', 'size', 'mtime_ns', 'target', 'rdev', 'xattrs', 'link', 'hash',
              'flags', 'error')


def entry_from_values(path, values):
    """The entry (dict) of ``path`` from its values: a tuple of the ATTRIBUTES in their order, None
    where absent (xattrs as sorted ``(name, value)`` pairs). The values are what a walking process
    sends and what the manifest digest holds: a line per entry, the path, a NUL byte, the ``repr``
    of the values and a newline."""
    entry = {'path': path}
    for name, value in zip(ATTRIBUTES, values):
        if value is not None:
            entry[name] = dict(value) if name == 'xattrs' else value
    return entry


def differing_attributes(source, destination):
    """Names of the attributes in which two entries of the same path differ."""
    names = []
    for name in ATTRIBUTES:
        if name == 'error':
            if 'error' in source or 'error' in destination:
                names.append('error')
            continue
        if source.get(name) != destination.get(name):
            names.append(name)
    return names
