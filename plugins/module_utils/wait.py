# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way to wait: named success, keep-waiting and failure states, one monotonic clock."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError, WaitTimeout


def wait_for(fetch, state_of, success, pending, failure, timeout, sleep, what,
             clock=time.monotonic, sleeper=time.sleep, on_poll=None):
    """Poll ``fetch()`` until ``state_of(result)`` is in ``success``.

    ``pending`` states keep waiting, ``failure`` states raise StorageError with the result, and any
    other state raises too (an unexpected state is never waited on). On timeout WaitTimeout
    carries the last result, the object (``what``) and the seconds waited.
    """
    start = clock()
    while True:
        result = fetch()
        state = state_of(result)
        if on_poll is not None:
            on_poll(result)
        if state in success:
            return result
        if state in failure:
            raise StorageError('%s reached %s while waiting for %s' % (what, state, ' or '.join(success)),
                               result=result)
        if state not in pending:
            raise StorageError('%s is in unexpected state %s while waiting for %s'
                               % (what, state, ' or '.join(success)), result=result)
        waited = clock() - start
        if waited >= timeout:
            raise WaitTimeout('Timed out after %d seconds waiting for %s to reach %s (last state %s)'
                              % (int(waited), what, ' or '.join(success), state), result=result)
        sleeper(max(0.0, min(sleep, timeout - waited)))
