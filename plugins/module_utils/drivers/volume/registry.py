# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume driver registry: ``driver:`` names to volume driver classes (drivers/volume/base.py).

``file`` (drivers/volume/file.py): a sparse image file per volume in a pool folder. A new volume
driver is a module next to this one and one entry of VOLUME_DRIVERS; its name then becomes a
choice of ``driver:`` in backends, and managers/volume.py serves its backends.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.file import FileVolumeDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest

VOLUME_DRIVERS = {
    FileVolumeDriver.name: FileVolumeDriver,
}


def volume_driver_names():
    return sorted(VOLUME_DRIVERS)


def is_volume_backend(backend):
    """True for a backend whose driver is a volume driver (its pools hold volumes, not shares)."""
    return backend.driver in VOLUME_DRIVERS


def volume_driver(backend, transport):
    """The driver instance for ``backend``, reaching its host through ``transport``; an unknown
    driver names the choices."""
    try:
        return VOLUME_DRIVERS[backend.driver](backend, transport)
    except KeyError:
        raise InvalidRequest('Backend %s uses driver %r, which is not a volume driver: known volume drivers are %s'
                             % (backend.name, backend.driver, ', '.join(volume_driver_names()) or 'none yet'))
