# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every manager needs: the declared backends, their drivers, the records, check mode."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.registry import share_driver
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.registry import is_volume_backend
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress, validate_name
from ansible_collections.storage.mobility.plugins.module_utils.store import ShareRepository
from ansible_collections.storage.mobility.plugins.module_utils.transport.registry import transport_for
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits


class Context(object):
    """One run: the declared backends, their drivers, the records, check mode and the wait options.

    ``waits`` (wait.py Waits) is what every service waits with; make_context sets it from the
    module's options. openstack_backend is the rule services/registry.py picks a service by."""

    waits = Waits()

    def __init__(self, backends, runner=None, check_mode=False):
        self.backends = backends if isinstance(backends, Backends) else Backends(backends)
        self.runner = runner or CommandRunner()
        self.check_mode = check_mode
        # One transport per storage host (and kind), shared by its drivers, records and locks.
        self._transports = {}
        for backend in self.backends.local():
            key = (backend.host, backend.transport)
            if key not in self._transports:
                self._transports[key] = transport_for(backend, self.runner)
        self.repo = ShareRepository(self.backends, self.transport)
        self._drivers = {}
        for backend in self.backends.local():
            # A volume backend's driver is made by the volume manager (managers/volume.py).
            if not is_volume_backend(backend):
                self._drivers[(backend.host, backend.name)] = share_driver(backend, self.transport(backend))
        for driver in self._drivers.values():
            # A driver moving data between two hosts (btrfs host to host) reaches the other side
            # through that pool's own driver and transport.
            driver.peer_driver = self.driver

    def transport(self, backend):
        """The transport to the storage host of ``backend`` (one of the collection's own)."""
        return self._transports[(backend.host, backend.transport)]

    def close(self):
        """End what the run opened on its storage hosts (ssh: the helper, which frees its locks, and
        the master connection); a transport without connections has nothing to close."""
        for transport in self._transports.values():
            close = getattr(transport, 'close', None)
            if close is not None:
                close()

    def openstack_backend(self, driver, pool=None, share=None):
        """The backend with OpenStack driver ``driver`` that serves this request, or None.

        None means the request goes to the collection's own drivers: no such backend is declared,
        ``pool`` names a declared local backend, or (without ``pool``) the local records hold a
        share named ``share``. One OpenStack backend per driver may be declared in a run."""
        candidates = self.backends.openstack(driver)
        if not candidates:
            return None
        local = self.backends.local()
        if pool:
            address = pool if isinstance(pool, PoolAddress) else PoolAddress.split(pool)
            if any(b.host == address.host and b.name == address.backend for b in local):
                return None
        elif local and share:
            validate_name(share)
            if self.repo.find_all(share):
                return None
        if len(candidates) > 1:
            raise InvalidRequest('Backends %s all use driver %s: declare one %s backend per run (pass the one '
                                 'to use in backends)' % (', '.join(b.name for b in candidates), driver, driver))
        return candidates[0]

    def driver(self, pool):
        try:
            return self._drivers[(pool.backend.host, pool.backend.name)]
        except KeyError:
            raise InvalidRequest('Pool %s belongs to backend %s with driver %s, which holds volumes, not shares'
                                 % (pool, pool.backend.name, pool.backend.driver))

    def lock(self, name, purpose):
        """The share's lock in every pool; check mode writes no lock file."""
        return self.repo.lock(name, purpose, create=not self.check_mode)

    def pool(self, address, what='pool'):
        return self.backends.resolve(address, what)

    def load(self, name, required=True, cleanup=False):
        """(record, pool) of share ``name``, the record with the highest revision.

        With ``cleanup`` (only under the share's lock), stale copies left in another pool by an
        interrupted switchover are removed."""
        validate_name(name)
        found = self.repo.find_all(name)
        if not found:
            unreachable = self.repo.unreachable()
            if required and unreachable:
                # The share may be in a pool of the storage host that could not be reached.
                raise unreachable[0]
            if required:
                raise NotFound('Unknown share %r: no declared pool holds it (pools searched: %s)'
                               % (name, ', '.join(str(p) for p in self.backends.pools())))
            return None, None
        record, pool = found[0]
        for stale, stale_pool in found[1:]:
            if stale.get('id') != record.get('id'):
                raise StorageError('Share name %r is used by two different shares (id %s in %s, id %s in %s); '
                                   'resolve this by hand' % (name, record.get('id'), pool, stale.get('id'), stale_pool))
            if cleanup and not self.check_mode:
                self.repo.delete(name, stale_pool)
        return record, pool
