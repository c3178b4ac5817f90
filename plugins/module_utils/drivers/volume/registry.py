# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume driver registry: ``driver:`` names to volume driver classes (drivers/volume/base.py).

``file`` (drivers/volume/file.py): a sparse image file per volume in a pool folder. A new volume
driver is a module next to this one and one entry of VOLUME_DRIVERS (a function that imports and
returns its class, so that a module call imports only the drivers it uses); its name then becomes a
choice of ``driver:`` in backends, and managers/volume.py serves its backends.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest


def _file():
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.file import FileVolumeDriver
    return FileVolumeDriver


#: driver name -> a function that imports and returns its class
VOLUME_DRIVERS = {
    'file': _file,
}


def volume_driver_names():
    return sorted(VOLUME_DRIVERS)


def is_volume_backend(backend):
    """True for a backend whose driver is a volume driver (its pools hold volumes, not shares)."""
    return backend.driver in VOLUME_DRIVERS


def volume_driver(backend, transport):
    """The driver instance for ``backend``, reaching its host through ``transport``; an unknown
    driver names the choices."""
    load = VOLUME_DRIVERS.get(backend.driver)
    if load is None:
        raise InvalidRequest('Backend %s uses driver %r, which is not a volume driver: known volume drivers are %s'
                             % (backend.name, backend.driver, ', '.join(volume_driver_names()) or 'none yet'))
    return load()(backend, transport)
