# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume driver registry: ``driver:`` names to volume driver classes (drivers/volume/base.py).

Empty for now: the collection serves volumes through Cinder only (driver cinder). A local volume
driver (for example ``file``, a sparse file per volume in a pool) is a module next to this one
and one entry of VOLUME_DRIVERS; its name then becomes a choice of ``driver:`` in backends.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest

VOLUME_DRIVERS = {}


def volume_driver_names():
    return sorted(VOLUME_DRIVERS)


def volume_driver(backend, runner):
    """The driver instance for ``backend``; an unknown driver names the choices."""
    try:
        return VOLUME_DRIVERS[backend.driver](backend, runner)
    except KeyError:
        raise InvalidRequest('Backend %s uses driver %r, which is not a volume driver: known volume drivers are %s'
                             % (backend.name, backend.driver, ', '.join(volume_driver_names()) or 'none yet'))
