# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The source text of the collection's own Python modules, for shipping them elsewhere.

The copy worker (data_copy/job.py) and the ssh helper (transport/ssh.py) run code of this
collection in another process or on another host. A module process started by Ansible imports
its module_utils from a zip (AnsiballZ), so a module's file may not exist on disk: the source is
asked from the module's loader first, and read from its file only when the loader has none.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type


def source_of(module):
    """The source text of the imported ``module``."""
    loader = getattr(module, '__loader__', None)
    source = None
    if loader is not None and hasattr(loader, 'get_source'):
        source = loader.get_source(module.__name__)
    if source is None:
        with open(module.__file__, 'rb') as handle:
            source = handle.read().decode('utf-8')
    return source
