# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running external commands on this machine: always argv lists, never a shell string.

The local transport (local.py) runs its commands with it; the data node's mounts (data_mount.py) too.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import subprocess

from ansible_collections.storage.mobility.plugins.module_utils.errors import CommandError


class CommandRunner(object):
    """Runs argv lists locally. Modules pass ``module.run_command``; tests use subprocess."""

    def __init__(self, run_command=None):
        self._run_command = run_command

    def run(self, argv, what, check=True):
        """Run ``argv``; raise CommandError naming ``what`` with cmd/rc/stderr when it fails."""
        if not isinstance(argv, (list, tuple)):
            raise TypeError('commands must be argv lists')
        argv = [str(a) for a in argv]
        if self._run_command is not None:
            rc, out, err = self._run_command(argv)
        else:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = proc.communicate()
            rc = proc.returncode
            out = out.decode('utf-8', 'replace')
            err = err.decode('utf-8', 'replace')
        if check and rc != 0:
            raise CommandError('Failed to %s: %s exited with %d: %s' % (what, argv[0], rc, (err or out).strip()),
                               cmd=argv, rc=rc, stdout=out, stderr=err)
        return rc, out, err
