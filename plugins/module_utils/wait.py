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


class Waits(object):
    """The run's wait options (``wait``, ``wait_timeout``, ``wait_sleep``), one value for every service.

    The Context carries it, so local and OpenStack services share one method signature. Check
    mode never waits."""

    __slots__ = ('wait', 'timeout', 'sleep')

    def __init__(self, wait=True, timeout=3600, sleep=5):
        self.wait = bool(wait)
        self.timeout = timeout
        self.sleep = sleep

    @classmethod
    def from_params(cls, params, check_mode=False):
        """The module's wait options; a module without them waits with the defaults."""
        def option(name, default):
            value = params.get(name)
            return default if value is None else value
        return cls(wait=option('wait', True) and not check_mode, timeout=option('wait_timeout', 3600),
                   sleep=option('wait_sleep', 5))

    def __iter__(self):
        """``wait, timeout, sleep = ctx.waits``"""
        return iter((self.wait, self.timeout, self.sleep))

    def __repr__(self):
        return 'Waits(wait=%r, timeout=%r, sleep=%r)' % (self.wait, self.timeout, self.sleep)
