# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The share driver registry: ``driver:`` names to driver classes.

Each entry loads its driver on first use: a module imports only the drivers of the backends its
request reaches (every module call compiles what it imports, so importing them all cost each call
about a third of its CPU). A new share driver is a module next to this one and one loader here.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest


def _btrfs():
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver
    return BtrfsShareDriver


def _posix():
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
    return PosixShareDriver


#: driver name -> a function that imports and returns its class
SHARE_DRIVERS = {
    'btrfs': _btrfs,
    'posix': _posix,
}


def share_driver_names():
    return sorted(SHARE_DRIVERS)


def share_driver(backend, transport):
    """The driver instance for ``backend``, reaching its host through ``transport``; an unknown
    driver names the choices."""
    load = SHARE_DRIVERS.get(backend.driver)
    if load is None:
        raise InvalidRequest('Backend %s uses driver %r, which is not available: known share drivers are %s'
                             % (backend.name, backend.driver, ', '.join(share_driver_names())))
    return load()(backend, transport)
