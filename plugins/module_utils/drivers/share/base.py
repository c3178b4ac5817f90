# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The abstract share driver: what a manager may ask of any storage backend.

A driver reaches its storage host only through its transport (transport/base.py): it runs argv
lists and file operations there and never calls os, subprocess or fcntl on storage paths itself.
Drivers raise typed errors (errors.py) and never call fail_json. Every method that changes
storage is idempotent: called again after a crash it converges instead of failing.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.states import MIGRATION_FLAGS


class ShareDriver(abc.ABC):
    """One driver instance serves one backend."""

    #: name used in ``driver:`` and in the registry
    name = None

    def __init__(self, backend, transport):
        self.backend = backend
        self.transport = transport

    # -- pools -------------------------------------------------------------------------------
    @abc.abstractmethod
    def pool_stats(self, pool):
        """Capacity and capabilities of ``pool`` in the reference's names."""

    # -- share instances ---------------------------------------------------------------------
    @abc.abstractmethod
    def instance_path(self, pool, share_name):
        """Where the instance of ``share_name`` lives (or would live) in ``pool``."""

    @abc.abstractmethod
    def instance_exists(self, pool, share_name):
        """True when the instance's data exists in ``pool``."""

    @abc.abstractmethod
    def create_instance(self, pool, share_name):
        """Create an empty instance; an existing empty instance is not an error."""

    @abc.abstractmethod
    def delete_instance(self, pool, share_name):
        """Delete the instance and its data; return False when already gone."""

    @abc.abstractmethod
    def tree_seal(self, pool, path, ignore):
        """The seal (data_copy/seal.py) of the tree at ``path``, an instance folder of ``pool``, with the
        names in ``ignore`` skipped at any depth, computed where the pool's storage is (a transport to
        a storage host runs it there). Equal to the seal the data mover computes of the same tree.
        Raise StorageError when the tree cannot be sealed."""

    def tree_seal_later(self, pool, path, ignore):
        """tree_seal started now and collected later (the switch seals both instances at once): a
        function that returns the seal or raises StorageError. Here the seal is computed now."""
        seal = self.tree_seal(pool, path, ignore)
        return lambda: seal

    # -- snapshots ---------------------------------------------------------------------------
    @abc.abstractmethod
    def create_snapshot(self, pool, share_name, snapshot_name):
        """Take a snapshot; return its size in bytes."""

    @abc.abstractmethod
    def delete_snapshot(self, pool, share_name, snapshot_name):
        """Delete a snapshot; return False when already gone."""

    @abc.abstractmethod
    def snapshot_path(self, pool, share_name, snapshot_name):
        """Where users can read the snapshot, or None when it is not reachable as a path."""

    @abc.abstractmethod
    def snapshot_exists(self, pool, share_name, snapshot_name):
        """True when the snapshot's data exists."""

    # -- exports -----------------------------------------------------------------------------
    @abc.abstractmethod
    def export(self):
        """The export helper (exports.py) of this backend."""

    # -- driver-assisted migration -----------------------------------------------------------
    @abc.abstractmethod
    def migration_check_compatibility(self, source_pool, destination_pool, share, destination_driver):
        """What this driver can do for the move: a dict with ``compatible`` and each flag of
        states.MIGRATION_FLAGS (True when supported) plus ``reason`` when not compatible."""

    @staticmethod
    def refused(reason):
        """An answer of migration_check_compatibility: not compatible, no flag, ``reason``
        (drivers start from it and fill it in when they can make the move)."""
        result = dict((flag, False) for flag in MIGRATION_FLAGS)
        result.update({'compatible': False, 'reason': reason})
        return result

    def pair_problem(self, source_pool, destination_pool, destination_driver, other_driver, other_host):
        """Why this driver cannot move a share between these pools at all, or None: the
        destination uses another driver (``other_driver`` ends the message) or is on another
        host (``other_host`` ends it)."""
        if destination_driver.name != self.name:
            return 'the destination backend %s uses driver %s%s' % (
                destination_pool.backend.name, destination_driver.name, other_driver)
        if source_pool.backend.host != destination_pool.backend.host:
            return 'the pools are on different hosts (%s, %s)%s' % (
                source_pool.backend.host, destination_pool.backend.host, other_host)
        return None

    @abc.abstractmethod
    def migration_start(self, source_pool, destination_pool, share):
        """Start phase 1 of a driver-assisted migration."""

    @abc.abstractmethod
    def migration_continue(self, source_pool, destination_pool, share):
        """Advance phase 1; return True when phase 1 is done."""

    @abc.abstractmethod
    def migration_get_progress(self, source_pool, destination_pool, share):
        """A dict with ``total_progress`` (0-100) and whatever detail the driver has."""

    @abc.abstractmethod
    def migration_complete(self, source_pool, destination_pool, share):
        """Phase 2: move the remaining data so the destination instance holds the share.
        Must be idempotent: rerun after a crash, it finishes what is left."""

    @abc.abstractmethod
    def migration_complete_done(self, source_pool, destination_pool, share):
        """True when the data has been switched to the destination (the point of no return)."""

    @abc.abstractmethod
    def migration_cancel(self, source_pool, destination_pool, share):
        """Undo phase 1; the source must end as it was."""

    # Optional steps: the defaults suit a driver that copies nothing before the switchover.
    def migration_refresh(self, source_pool, destination_pool, share):
        """Phase 1 is done and users keep writing: bring the destination closer to the source (an
        incremental copy) when the operator runs phase 1 again. Return True when something was
        copied, False when the destination was already current."""
        return False

    def migration_refresh_pending(self, source_pool, destination_pool, share):
        """True when migration_refresh would copy something (check mode asks this)."""
        return False

    def migration_cleanup(self, source_pool, destination_pool, share):
        """After the switchover deleted the source instance: remove what the migration kept on
        the side (temporary snapshots, the source's snapshots). Idempotent; return True when
        something was removed."""
        return False

    def migration_live_progress(self, pool, share):
        """Progress of a copy running right now in another process (read by share_info without
        the share's lock), or None."""
        return None

    # -- replication (managers/replica.py; docs/replication.md) ---------------------------------
    # A driver that replicates implements these; the defaults refuse, naming the driver.
    #: True when an update changes the replica's files where readers see them (not atomically)
    replica_updates_in_place = False
    #: True when a replica may be in a pool of another host than the active replica's
    replica_across_hosts = False

    def _no_replication(self):
        return InvalidRequest('Driver %s of backend %s does not replicate shares' % (self.name, self.backend.name))

    def replica_prepare(self, active_pool, replica_pool, share):
        """Check that ``replica_pool`` can hold a replica of ``share`` (nothing of it there yet) and
        reserve its place; idempotent."""
        raise self._no_replication()

    def replica_update(self, active_pool, replica_pool, share, replica):
        """Bring the replica up to date with the active instance from one consistent point.

        ``replica`` (the record's entry) keeps what the next update needs (``base``). Returns
        ``source_time`` (epoch seconds of the point the replica now holds), ``bytes``, ``files``,
        ``seconds`` and ``verified`` (True when the replica was checked equal to the point)."""
        raise self._no_replication()

    def replica_retain(self, pool, share, keep):
        """Delete the replication points of ``share`` in ``pool`` that are not in ``keep``."""
        return False

    def replica_delete(self, pool, share):
        """Delete the replica instance of ``share`` in ``pool`` and its replication points."""
        raise self._no_replication()

    def replica_set_read_only(self, pool, share, read_only):
        """Make the instance of ``share`` in ``pool`` read-only (a fence) or writable again where the
        storage can enforce it; return True when something changed."""
        return False

    #: True when replica_fence changes the change time of the instance's entries (so that what
    #: changed there before the fence is read before it, replica_divergence)
    replica_fence_marks_entries = False

    def replica_fence(self, pool, share, fenced):
        """Fence the instance of ``share`` in ``pool`` (an old active replica that came back after
        a forced promotion) so that nothing writes to it, or lift the fence (a failback about to
        update it); return True when something changed. By default: replica_set_read_only."""
        return self.replica_set_read_only(pool, share, fenced)

    def replica_open_writers(self, pool, share):
        """Processes that hold a file of the instance of ``share`` in ``pool`` open for writing,
        described for a message (a promotion refuses while the active has any)."""
        return []

    def replica_divergence(self, pool, share, replica):
        """What changed in the instance of ``share`` in ``pool`` since the last point it shared
        with the other replicas (``replica['base']``): a list of paths, or None when unknown."""
        raise self._no_replication()

    def replica_forward_points(self, active_pool, replica_pool, share, replica, seqs):
        """Before a planned promotion of ``replica``: give it the replication points ``seqs`` (the
        other secondaries' bases), so that they continue incrementally from it. Drivers whose
        updates need no common point do nothing."""
        return False

    def replica_reversed_marks(self, replica, new_active_pool):
        """After the verified final update of ``replica`` in a planned promotion: what the old
        active's entry records so that its first update from the new active (the failback) starts
        from the point both hold; None when the driver's updates need nothing of the kind."""
        return None

    def replica_keep(self, pool, share, label):
        """Keep the instance of ``share`` in ``pool`` as it is now, under ``label``; return its path."""
        raise self._no_replication()
