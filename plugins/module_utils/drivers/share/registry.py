# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The share driver registry: ``driver:`` names to driver classes."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver

SHARE_DRIVERS = {
    BtrfsShareDriver.name: BtrfsShareDriver,
    PosixShareDriver.name: PosixShareDriver,
}


def share_driver_names():
    return sorted(SHARE_DRIVERS)


def share_driver(backend, transport):
    """The driver instance for ``backend``, reaching its host through ``transport``; an unknown
    driver names the choices."""
    cls = SHARE_DRIVERS.get(backend.driver)
    if cls is None:
        raise InvalidRequest('Backend %s uses driver %r, which is not available: known share drivers are %s'
                             % (backend.name, backend.driver, ', '.join(share_driver_names())))
    return cls(backend, transport)
