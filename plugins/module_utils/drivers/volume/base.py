# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The abstract volume driver: what a local volume manager may ask of a block storage backend.

The hooks follow Cinder's volume driver (``create_volume``, ``delete_volume``, ``extend_volume``,
``initialize_connection`` / ``terminate_connection``, ``migrate_volume``, ``get_volume_stats``),
so that a volume behaves the same whether Cinder or the collection serves it. A volume lives in a
pool of the backend (config.py Pool); ``volume`` is the volume's record (a dict with at least
``name``, ``id`` and ``size`` in GiB). Drivers raise typed errors (errors.py) and never call
fail_json; every hook that changes storage is idempotent, so a rerun after a crash converges.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc


class VolumeDriver(abc.ABC):
    """One driver instance serves one backend."""

    #: name used in ``driver:`` and in drivers/volume/registry.py
    name = None

    def __init__(self, backend, transport):
        self.backend = backend
        #: the storage host of the backend (transport/base.py): the driver's only way to its storage
        self.transport = transport

    # -- pools -------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_pool_stats(self, pool):
        """Capacity and capabilities of ``pool`` in Cinder's names (total_capacity_gb,
        free_capacity_gb, thin_provisioning_support, ...)."""

    # -- volumes -----------------------------------------------------------------------------
    @abc.abstractmethod
    def create_volume(self, pool, volume):
        """Create the volume with ``volume['size']`` GiB; an existing volume of that size is not an error."""

    @abc.abstractmethod
    def delete_volume(self, pool, volume):
        """Delete the volume and its data; return False when already gone. Refuse an attached volume."""

    @abc.abstractmethod
    def extend_volume(self, pool, volume, new_size):
        """Grow the volume to ``new_size`` GiB (never shrink); return False when already that size."""

    @abc.abstractmethod
    def volume_info(self, pool, volume):
        """What the storage says of the volume (size, allocated bytes, path or device), or None when missing."""

    # -- attachments -------------------------------------------------------------------------
    @abc.abstractmethod
    def initialize_connection(self, pool, volume, connector):
        """Attach: make the volume reachable by ``connector`` (the host that uses it) and return the
        connection info (Cinder's ``driver_volume_type`` and ``data``)."""

    @abc.abstractmethod
    def terminate_connection(self, pool, volume, connector):
        """Detach: ``connector`` no longer reaches the volume; return False when it was not attached."""

    # -- migration ---------------------------------------------------------------------------
    def migrate_volume(self, source_pool, destination_pool, volume):
        """Move the volume's data to ``destination_pool`` with the storage's own means.

        Return True when the driver moved it, False when it cannot (the manager then copies
        through a host, as Cinder does with force_host_copy). The source is never removed before
        the destination holds the same data."""
        return False
