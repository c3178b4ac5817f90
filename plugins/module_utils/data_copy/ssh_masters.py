# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the ssh ControlMasters shared by many sessions keep their sockets.

The controller's ssh transport (transport/ssh.py) keeps one master per storage host for every
module call of a run; a data node's copy job (remote.py) one per storage host for the sessions of
its verification and carry. Both put their sockets in ``<tmp>/mobility-cm-<uid>``, used only when
it is a real folder of this user that nobody else can enter: a socket there lets its owner run
commands on the host as the connection's user.

Here, below data_copy/, because the copy worker ships only this folder (job.py): standard library
only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import stat
import tempfile

#: the shared masters' folder: ``<tmp>/mobility-cm-<uid>`` (never under a per-run folder)
FOLDER_PREFIX = 'mobility-cm-'


def shared_folder():
    """``<tmp>/mobility-cm-<uid>``, made 0700 when missing; None unless it is a real folder (not a
    link) of this user that nobody else can enter."""
    uid = os.geteuid()
    folder = os.path.join(tempfile.gettempdir(), '%s%d' % (FOLDER_PREFIX, uid))
    try:
        os.mkdir(folder, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            return None
    try:
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        return None
    return folder
