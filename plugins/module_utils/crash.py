# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fault injection for the crash tests: named crash points where a run dies as a power cut would.

When STORAGE_MOBILITY_CRASH_AFTER holds a glob pattern, the process exits (70, no cleanup) at the
first crash point whose event matches it: after a record whose event matches has been written
(store.py), and at the btrfs driver's points (``btrfs source read-only``, ``btrfs received ...``,
in the middle of ``btrfs sending ...``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import fnmatch
import os

CRASH_AFTER_ENV = 'STORAGE_MOBILITY_CRASH_AFTER'


def crash_wanted(event):
    """True when the pattern in STORAGE_MOBILITY_CRASH_AFTER matches ``event``."""
    pattern = os.environ.get(CRASH_AFTER_ENV)
    return bool(pattern and event and fnmatch.fnmatchcase(event, pattern))


def crash_point(event):
    """Die (exit 70, no cleanup) when crash_wanted(``event``)."""
    if crash_wanted(event):
        os._exit(70)
