"""Unit tests for plugins/module_utils/drivers/share/posix.py against real folders in tmp_path.

The driver runs real ``cp`` and ``rm`` through the local transport (LocalTransport with the default CommandRunner).
"""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share import posix as posix_mod
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import changes as data_changes
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.base import MIGRATION_FLAGS, ShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.registry import share_driver, share_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

from mobility_helpers import backend_spec, fake_other_filesystem, populate_share, tree_state

SHARE = {"name": "s1"}


@pytest.fixture
def setup(tmp_path):
    backends = Backends([
        backend_spec(tmp_path, "be1", ("a", "b")),
        backend_spec(tmp_path, "be2", ("c",), helper="bind", export={"helper": "bind", "root": str(tmp_path / "exp")}),
        backend_spec(tmp_path, "be1", ("x",), host="node2"),
    ])
    runner = CommandRunner()
    drivers = dict((b.host + "@" + b.name, share_driver(b, LocalTransport(runner))) for b in backends.backends)
    pools = dict((str(p.ref), p) for p in backends.pools())
    return backends, drivers, pools


@pytest.fixture
def drv(setup):
    backends, drivers, pools = setup
    return drivers["localhost@be1"], pools["localhost@be1#a"], pools["localhost@be1#b"]


def test_registry():
    names = share_driver_names()
    assert {"posix", "btrfs"} <= set(names) and names == sorted(names)
    assert issubclass(PosixShareDriver, ShareDriver)
    incomplete = type("Incomplete", (ShareDriver,), {"name": "incomplete"})
    with pytest.raises(TypeError):
        # a driver that leaves an abstract method out cannot be built
        incomplete(None, None)  # pylint: disable=abstract-class-instantiated
    assert "migration_check_compatibility" in ShareDriver.__abstractmethods__


# --------------------------------------------------------------------------- seals


def test_tree_seal_of_an_instance(drv, tmp_path):
    """The driver's seal is the data mover's (data_copy/seal.py) of the same folder, ignore list applied;
    a path outside the pool or a missing instance is an error naming it."""
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import tree_seal
    driver, a, _b = drv
    path = driver.create_instance(a, "s1")
    populate_share(path)
    seal = driver.tree_seal(a, path, ["lost+found"])
    assert seal == tree_seal(path, ["lost+found"]) and seal.startswith("seal1:sha256:")
    os.makedirs(os.path.join(path, "lost+found"))
    assert driver.tree_seal(a, path, ["lost+found"]) != seal, "the share's own folder changed"
    with open(os.path.join(path, "plain.txt"), "r+b") as handle:
        handle.write(b"H")
    assert driver.tree_seal(a, path, ["lost+found"]) != seal
    with pytest.raises(StorageError, match="is not inside pool"):
        driver.tree_seal(a, str(tmp_path), [])
    with pytest.raises(StorageError, match="Failed to seal the tree of pool .*No such file"):
        driver.tree_seal(a, driver.instance_path(a, "missing"), [])
    assert "tree_seal" in ShareDriver.__abstractmethods__


def test_tree_seal_later_of_an_instance(drv, tmp_path):
    """Started now and collected later (the switch seals both instances at once): the same seal; a
    path outside the pool is refused at the start, a missing instance fails at the collection."""
    driver, a, _b = drv
    path = driver.create_instance(a, "s1")
    populate_share(path)
    first, second = driver.tree_seal_later(a, path, ["lost+found"]), driver.tree_seal_later(a, path, [])
    assert (first(), second()) == (driver.tree_seal(a, path, ["lost+found"]), driver.tree_seal(a, path, []))
    with pytest.raises(StorageError, match="is not inside pool"):
        driver.tree_seal_later(a, str(tmp_path), [])
    missing = driver.tree_seal_later(a, driver.instance_path(a, "missing"), [])
    with pytest.raises(StorageError, match="Failed to seal the tree of pool .*No such file"):
        missing()


# --------------------------------------------------------------------------- instances


def test_create_and_delete_instance(drv):
    driver, a, _b = drv
    path = driver.instance_path(a, "s1")
    assert path == os.path.join(a.path, "shares", "s1")
    assert driver.instance_exists(a, "s1") is False
    assert driver.create_instance(a, "s1") == path
    assert driver.create_instance(a, "s1") == path  # an existing empty instance is fine
    assert driver.instance_exists(a, "s1") is True
    with open(os.path.join(path, "f"), "w") as handle:
        handle.write("data")
    os.makedirs(os.path.join(path, "d", "e"))
    assert driver.delete_instance(a, "s1") is True
    assert not os.path.exists(path)
    assert os.listdir(os.path.join(a.path, ".mobility", "trash")) == [], "the trash is emptied"
    assert driver.delete_instance(a, "s1") is False  # already gone: no change


def test_create_instance_refuses_a_folder_with_foreign_data(drv):
    driver, a, _b = drv
    path = driver.instance_path(a, "s1")
    os.makedirs(path)
    with open(os.path.join(path, "keep"), "w") as handle:
        handle.write("not ours")
    with pytest.raises(InvalidRequest, match="already exists and is not an empty folder"):
        driver.create_instance(a, "s1")
    assert open(os.path.join(path, "keep")).read() == "not ours"


def test_create_instance_in_a_missing_pool_fails_clearly(tmp_path):
    backend = Backends([{"name": "be1", "pools": {"gone": str(tmp_path / "gone")}}]).backends[0]
    driver = PosixShareDriver(backend, LocalTransport(CommandRunner()))
    with pytest.raises(StorageError, match="does not exist or is not a folder"):
        driver.create_instance(backend.pools["gone"], "s1")
    assert not (tmp_path / "gone").exists()


def test_delete_finishes_an_interrupted_delete_from_the_trash(drv):
    driver, a, _b = drv
    trash = os.path.join(a.path, ".mobility", "trash", posix_mod.trash_prefix("share", "s1") + "deadbeef")
    os.makedirs(os.path.join(trash, "left", "over"))
    other = os.path.join(a.path, ".mobility", "trash", "share-s10.cafe")
    os.makedirs(other)
    legacy = os.path.join(a.path, ".mobility", "trash", "share-s1.0123")  # named by an earlier version
    os.makedirs(legacy)
    assert driver.delete_instance(a, "s1") is True
    assert not os.path.exists(trash) and not os.path.exists(legacy)
    assert os.path.isdir(other), "only this share's trash entries are purged"


def test_delete_in_place_when_the_trash_cannot_be_used(drv):
    """A full pool cannot create the trash folder (or an entry in it): the instance is deleted
    where it is, which needs no free space."""
    driver, a, _b = drv
    path = driver.create_instance(a, "s1")
    populate_share(path)
    meta = os.path.join(a.path, ".mobility")
    os.makedirs(meta, exist_ok=True)
    with open(os.path.join(meta, "trash"), "w") as handle:  # makedirs and rename into it fail
        handle.write("not a folder")
    assert driver.delete_instance(a, "s1") is True
    assert not os.path.lexists(path)
    assert driver.delete_instance(a, "s1") is False


def test_the_longest_share_name_works_end_to_end(drv):
    """Create, snapshot, delete the snapshot and the share with a name of the limit: every path
    component the driver derives from it (trash entries included) fits."""
    from ansible_collections.storage.mobility.plugins.module_utils.names import SHARE_NAME_MAX, SNAPSHOT_NAME_MAX
    driver, a, _b = drv
    name, snap = "s" * SHARE_NAME_MAX, "p" * SNAPSHOT_NAME_MAX
    path = driver.create_instance(a, name)
    populate_share(path)
    driver.create_snapshot(a, name, snap)
    assert driver.snapshot_exists(a, name, snap)
    assert driver.delete_snapshot(a, name, snap) is True
    assert driver.delete_instance(a, name) is True
    assert not os.path.lexists(path)
    assert os.listdir(os.path.join(a.path, ".mobility", "trash")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only root sets immutable and append-only attributes")
def test_immutable_and_append_only_files_do_not_block_the_deletion(drv):
    import subprocess
    driver, a, _b = drv
    path = driver.create_instance(a, "s1")
    os.makedirs(os.path.join(path, "d"))
    for rel in ("d/frozen", "log"):
        with open(os.path.join(path, rel), "w") as handle:
            handle.write("x")
    flagged = [["+i", os.path.join(path, "d", "frozen")], ["+a", os.path.join(path, "log")],
               ["+i", os.path.join(path, "d")], ["+i", path]]
    for flag, target in flagged:
        subprocess.run(["chattr", flag, target], check=True)
    try:
        assert driver.delete_instance(a, "s1") is True
        assert not os.path.lexists(path)
        assert os.listdir(os.path.join(a.path, ".mobility", "trash")) == []
    finally:
        if os.path.lexists(path):
            subprocess.run(["chattr", "-R", "-i", "-a", path], check=False)


# --------------------------------------------------------------------------- snapshots


def test_snapshot_is_a_full_copy_and_idempotent(drv):
    driver, a, _b = drv
    path = driver.create_instance(a, "s1")
    populate_share(path)
    size = driver.create_snapshot(a, "s1", "snap1")
    snap = driver.snapshot_path(a, "s1", "snap1")
    assert driver.snapshot_exists(a, "s1", "snap1")
    assert size > 0
    assert tree_state(snap) == tree_state(path)
    # changing the share does not change the snapshot, and a second create is a no-op
    with open(os.path.join(path, "plain.txt"), "w") as handle:
        handle.write("changed")
    assert driver.create_snapshot(a, "s1", "snap1") == size
    assert open(os.path.join(snap, "plain.txt"), "rb").read().startswith(b"hello")


def test_snapshot_replaces_a_partial_copy_left_by_a_crash(drv):
    driver, a, _b = drv
    path = driver.create_instance(a, "s1")
    with open(os.path.join(path, "f"), "w") as handle:
        handle.write("x")
    partial = os.path.join(driver.snapshots_dir(a, "s1"), ".snap1.partial")
    os.makedirs(os.path.join(partial, "junk"))
    driver.create_snapshot(a, "s1", "snap1")
    assert not os.path.exists(partial)
    assert sorted(os.listdir(driver.snapshot_path(a, "s1", "snap1"))) == ["f"]


def test_delete_snapshot_removes_the_empty_snapshot_folder(drv):
    driver, a, _b = drv
    driver.create_instance(a, "s1")
    driver.create_snapshot(a, "s1", "snap1")
    driver.create_snapshot(a, "s1", "snap2")
    assert driver.delete_snapshot(a, "s1", "snap1") is True
    assert os.path.isdir(driver.snapshots_dir(a, "s1"))
    assert driver.delete_snapshot(a, "s1", "snap2") is True
    assert not os.path.exists(driver.snapshots_dir(a, "s1"))
    assert driver.delete_snapshot(a, "s1", "snap2") is False


# --------------------------------------------------------------------------- pools


def test_pool_stats(drv):
    driver, a, _b = drv
    stats = driver.pool_stats(a)
    assert stats["pool_name"] == "a"
    assert stats["share_backend_name"] == "be1"
    assert stats["snapshot_support"] is True and stats["driver_handles_share_servers"] is False
    assert stats["total_capacity_gb"] >= stats["free_capacity_gb"] >= 0
    assert stats["fsid"] == os.stat(a.path).st_dev
    assert stats["export_helper"] == "none"


# --------------------------------------------------------------------------- compatibility


def test_same_filesystem_is_compatible_but_not_nondisruptive_with_helper_none(drv):
    driver, a, b = drv
    driver.create_instance(a, "s1")
    compat = driver.migration_check_compatibility(a, b, SHARE, driver)
    assert compat == {"compatible": True, "writable": True, "preserve_metadata": True,
                      "preserve_snapshots": True, "nondisruptive": False, "reason": None}
    assert set(MIGRATION_FLAGS) <= set(compat)


def test_bind_exports_at_the_same_path_are_nondisruptive(tmp_path):
    exp = {"helper": "bind", "root": str(tmp_path / "exp")}
    backends = Backends([backend_spec(tmp_path, "be1", ("a", "b"), export=exp)])
    driver = share_driver(backends.backends[0], LocalTransport(CommandRunner()))
    a, b = backends.pools()
    driver.create_instance(a, "s1")
    assert driver.migration_check_compatibility(a, b, SHARE, driver)["nondisruptive"] is True


def test_bind_exports_at_different_paths_are_disruptive(setup):
    backends, drivers, pools = setup
    drivers["localhost@be1"].create_instance(pools["localhost@be1#a"], "s1")
    # be1 exports with none, be2 with bind: the path users reach changes
    compat = drivers["localhost@be1"].migration_check_compatibility(
        pools["localhost@be1#a"], pools["localhost@be2#c"], SHARE, drivers["localhost@be2"])
    assert compat["compatible"] is True and compat["nondisruptive"] is False


def test_other_driver_is_incompatible(drv):
    driver, a, b = drv
    driver.create_instance(a, "s1")

    class Other:
        name = "netapp"
    compat = driver.migration_check_compatibility(a, b, SHARE, Other())
    assert compat["compatible"] is False
    assert "uses driver netapp" in compat["reason"]
    assert not any(compat[f] for f in MIGRATION_FLAGS)


def test_other_host_is_incompatible(setup):
    backends, drivers, pools = setup
    drivers["localhost@be1"].create_instance(pools["localhost@be1#a"], "s1")
    compat = drivers["localhost@be1"].migration_check_compatibility(
        pools["localhost@be1#a"], pools["node2@be1#x"], SHARE, drivers["node2@be1"])
    assert compat["compatible"] is False
    assert "different hosts (localhost, node2)" in compat["reason"]


def test_different_filesystems_are_incompatible(drv, monkeypatch):
    driver, a, b = drv
    driver.create_instance(a, "s1")
    fake_other_filesystem(monkeypatch, b.path)
    compat = driver.migration_check_compatibility(a, b, SHARE, driver)
    assert compat["compatible"] is False
    assert "different filesystems" in compat["reason"]
    assert not any(compat[f] for f in MIGRATION_FLAGS)


def test_unreadable_pool_is_incompatible_with_the_reason(drv, tmp_path):
    driver, a, _b = drv
    driver.create_instance(a, "s1")
    backend = Backends([{"name": "bx", "pools": {"gone": str(tmp_path / "gone")}}]).backends[0]
    compat = driver.migration_check_compatibility(a, backend.pools["gone"], SHARE, driver)
    assert compat["compatible"] is False and "cannot read the pools" in compat["reason"]


# --------------------------------------------------------------------------- driver-assisted migration


def test_start_refuses_when_the_destination_already_holds_snapshots(drv):
    driver, a, b = drv
    driver.create_instance(a, "s1")
    driver.create_snapshot(a, "s1", "snap1")
    os.makedirs(os.path.join(driver.snapshots_dir(b, "s1"), "old"))
    with pytest.raises(StorageError, match="already holds snapshots"):
        driver.migration_start(a, b, SHARE)


def test_start_refuses_when_the_destination_already_holds_data(drv):
    driver, a, b = drv
    driver.create_instance(a, "s1")
    dst = driver.create_instance(b, "s1")
    with open(os.path.join(dst, "foreign"), "w") as handle:
        handle.write("x")
    with pytest.raises(StorageError, match="already holds data"):
        driver.migration_start(a, b, SHARE)


def test_start_refuses_when_the_source_data_is_missing(drv):
    driver, a, b = drv
    with pytest.raises(StorageError, match="its data .* is missing"):
        driver.migration_start(a, b, SHARE)


def test_phase1_reports_done_with_full_progress(drv):
    driver, a, b = drv
    driver.create_instance(a, "s1")
    driver.create_instance(b, "s1")
    driver.migration_start(a, b, SHARE)
    assert driver.migration_continue(a, b, SHARE) is True
    assert driver.migration_get_progress(a, b, SHARE)["total_progress"] == 100
    assert driver.migration_complete_done(a, b, SHARE) is False


def test_complete_moves_everything_and_is_idempotent(drv):
    driver, a, b = drv
    src = driver.create_instance(a, "s1")
    xattr_ok = populate_share(src)
    driver.create_snapshot(a, "s1", "snap1")
    before = tree_state(src)
    snap_before = tree_state(driver.snapshot_path(a, "s1", "snap1"))
    driver.create_instance(b, "s1")
    driver.migration_start(a, b, SHARE)
    driver.migration_complete(a, b, SHARE)
    dst = driver.instance_path(b, "s1")
    assert driver.migration_complete_done(a, b, SHARE) is True
    assert not os.path.lexists(src)
    assert not os.path.lexists(driver.snapshots_dir(a, "s1"))
    assert tree_state(dst) == before
    assert tree_state(driver.snapshot_path(b, "s1", "snap1")) == snap_before
    if xattr_ok:
        assert os.getxattr(os.path.join(dst, "plain.txt"), "user.mobility.test") == b"kept"
    driver.migration_complete(a, b, SHARE)  # rerun after a crash: converges, changes nothing
    assert tree_state(dst) == before


def test_complete_with_the_data_nowhere_fails(drv):
    driver, a, b = drv
    with pytest.raises(StorageError, match="its data is in neither"):
        driver.migration_complete(a, b, SHARE)


def test_cancel_before_the_switch_drops_the_reserved_destination(drv):
    driver, a, b = drv
    src = driver.create_instance(a, "s1")
    populate_share(src)
    before = tree_state(src)
    driver.create_instance(b, "s1")
    driver.migration_cancel(a, b, SHARE)
    assert not os.path.lexists(driver.instance_path(b, "s1"))
    assert tree_state(src) == before
    driver.migration_cancel(a, b, SHARE)  # idempotent
    assert tree_state(src) == before


def test_cancel_after_the_switch_puts_data_and_snapshots_back(drv):
    driver, a, b = drv
    src = driver.create_instance(a, "s1")
    populate_share(src)
    driver.create_snapshot(a, "s1", "snap1")
    before = tree_state(src)
    driver.create_instance(b, "s1")
    driver.migration_complete(a, b, SHARE)
    driver.migration_cancel(a, b, SHARE)
    assert tree_state(src) == before
    assert driver.snapshot_exists(a, "s1", "snap1")
    assert not os.path.lexists(driver.instance_path(b, "s1"))
    assert not os.path.lexists(driver.snapshots_dir(b, "s1"))


def test_cancel_leaves_foreign_snapshot_folders_of_the_destination_alone(drv):
    """Data in the destination pool that the migration did not bring must stay where it is."""
    driver, a, b = drv
    driver.create_instance(a, "s1")
    foreign = os.path.join(driver.snapshots_dir(b, "s1"), "old")
    os.makedirs(foreign)
    with open(os.path.join(foreign, "f"), "w") as handle:
        handle.write("not moved by this migration")
    driver.create_instance(b, "s1")
    driver.migration_start(a, b, SHARE)  # the source has no snapshots, so this is accepted
    driver.migration_cancel(a, b, SHARE)
    assert os.path.isfile(os.path.join(foreign, "f")), "foreign data was moved out of the destination pool"
    assert not os.path.lexists(driver.snapshots_dir(a, "s1")), "foreign data was moved into the source pool"


# --------------------------------------------------------------------------- replica updates: one walk


REPLICA_SHARE = {"name": "s1", "id": "0f6b1d4e-3c55-4e7a-9a57-4d1e2b9f0a11", "snapshots": []}


def _replica_pair(drv):
    driver, a, b = drv
    path = driver.create_instance(a, "s1")
    populate_share(path)
    # Written just now: an entry changed within CTIME_MARGIN before a pass starts counts as
    # changed during it (the kernel's coarse clock); these tests start later than that.
    time.sleep(2 * posix_mod.CTIME_MARGIN)
    return driver, a, b, path


def test_changed_since_sees_every_kind_of_change_and_skips_ignored_names(drv):
    driver, a, b, path = _replica_pair(drv)
    os.makedirs(os.path.join(path, "sub", "deep"))
    for rel in ("sub/deep/f", "sub/g", "sub/deep/lost+found"):
        with open(os.path.join(path, rel), "w") as handle:
            handle.write("x")
    ignore = ["lost+found"]

    def changed(action):
        time.sleep(2 * posix_mod.CTIME_MARGIN)  # the previous change well before ``since``
        since = time.time() - 0.01  # anything after this moment counts
        assert not driver._changed_since(a, path, since, ignore), "nothing changed yet"
        action()
        return driver._changed_since(a, path, since, ignore)

    def rewrite_same_size_and_mtime():
        target = os.path.join(path, "sub", "deep", "f")
        st = os.stat(target)
        with open(target, "r+") as handle:
            handle.write("y")
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # a copier that keeps the old time

    assert changed(rewrite_same_size_and_mtime), "content rewritten with the old mtime: its ctime says"
    assert changed(lambda: os.chmod(os.path.join(path, "sub", "g"), 0o600))
    assert changed(lambda: os.unlink(os.path.join(path, "sub", "g")))
    assert changed(lambda: os.rename(os.path.join(path, "sub", "deep"), os.path.join(path, "sub", "deeper")))
    assert changed(lambda: open(os.path.join(path, "new"), "w").close()), "a new entry in the root"
    # an entry called like an ignored name is skipped at any depth, as rsync skips it
    ignored = os.path.join(path, "sub", "deeper", "lost+found")
    assert not changed(lambda: os.chmod(ignored, 0o600))
    with pytest.raises(StorageError, match="not inside pool"):
        driver._changed_since(a, str(b.path), 0, ignore)


def test_find_name_pattern_matches_the_name_only():
    assert data_changes.find_name_pattern("a*b?[c]\\d") == "a\\*b\\?\\[c]\\\\d"
    assert data_changes.find_name_pattern("lost+found") == "lost+found"


def test_a_quiet_update_walks_the_active_tree_once_and_seals_nothing(drv, monkeypatch):
    driver, a, b, path = _replica_pair(drv)
    sealed = []
    real_seal = driver.tree_seal
    monkeypatch.setattr(driver, "tree_seal", lambda *args: sealed.append(args) or real_seal(*args))
    result = driver.replica_update(a, b, dict(REPLICA_SHARE), {})
    assert result["verified"] is True and result["passes"] == 1 and result["walks"] == 1
    assert sealed == []
    assert tree_state(path) == tree_state(driver.instance_path(b, "s1"))


def test_a_change_during_the_first_pass_falls_back_to_sealed_passes(drv, monkeypatch):
    """A file changed while the first pass runs (after rsync read it, its old mtime put back, so
    rsync's quick check alone could not tell): the walk after the pass sees its change time, a
    second pass between two seals copies it, and the update is verified."""
    driver, a, b, path = _replica_pair(drv)
    target = os.path.join(path, "plain.txt")
    real_run = driver.transport.run
    passes = []

    def run(argv, what, check=True):
        out = real_run(argv, what, check=check)
        if argv[0] == "rsync" and not passes:
            passes.append(argv)
            st = os.stat(target)
            with open(target, "r+b") as handle:
                handle.write(b"Z")
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        return out
    monkeypatch.setattr(driver.transport, "run", run)
    result = driver.replica_update(a, b, dict(REPLICA_SHARE), {})
    assert result["verified"] is True and result["passes"] == 2 and result["walks"] == 3
    assert tree_state(path) == tree_state(driver.instance_path(b, "s1"))
    with open(os.path.join(driver.instance_path(b, "s1"), "plain.txt"), "rb") as handle:
        assert handle.read(1) == b"Z"


def test_the_walk_fails_clearly_when_find_cannot_read_the_tree(drv, monkeypatch):
    driver, a, b, path = _replica_pair(drv)
    real_run = driver.transport.run

    def run(argv, what, check=True):
        if argv[0] == "find":
            return 1, "", "find: '%s/x': Permission denied\n" % path
        return real_run(argv, what, check=check)
    monkeypatch.setattr(driver.transport, "run", run)
    with pytest.raises(StorageError, match="find exited with 1: .*Permission denied"):
        driver.replica_update(a, b, dict(REPLICA_SHARE), {})

    def vanished(argv, what, check=True):
        if argv[0] == "find":
            return 1, "", "find: '%s/x': No such file or directory\n" % path
        return real_run(argv, what, check=check)
    monkeypatch.setattr(driver.transport, "run", vanished)
    result = driver.replica_update(a, b, dict(REPLICA_SHARE), {})
    assert result["walks"] == 3 and result["passes"] == 2 and result["verified"] is True
