"""Share replication on real filesystems: btrfs on two loop devices, posix on ext4 and xfs loops.

Each step compares the active share and every replica entry by entry (tests/unit/mobility_helpers
tree_state: type, mode, owner, nanosecond mtime, content, xattrs, hard links). The forced
promotion unmounts the active pool's filesystem; the failback is measured to send only the change.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from mobility_helpers import populate_share, tree_state, wait_for_btrfs_commands  # noqa: E402

from ansible_collections.storage.mobility.plugins.module_utils.context import Context  # noqa: E402
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver  # noqa: E402
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError  # noqa: E402
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager  # noqa: E402
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop-mounted filesystems and mounts need root")

IMAGE_MB = 320
RULE = {"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "rw"}
MKFS = {"btrfs": ["mkfs.btrfs", "-q", "-f"], "ext4": ["mkfs.ext4", "-q", "-F", "-I", "256"], "xfs": ["mkfs.xfs", "-q", "-f"]}


def run(argv, check=True):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise AssertionError(f"{argv} failed: {proc.stderr}")
    return proc


class Lab:
    """Two pools ``a`` and ``b``, each the root of its own loop-mounted filesystem, of one backend."""

    def __init__(self, base: Path, driver: str, filesystems: tuple[str, str], helper: str = "none"):
        self.base = base
        self.driver = driver
        self.filesystems = filesystems
        self.points = {"a": base / "mnt-a", "b": base / "mnt-b"}
        self.images = {"a": base / "a.img", "b": base / "b.img"}
        export = {"helper": helper}
        if helper == "bind":
            export["root"] = str(base / "exports")
            (base / "exports").mkdir(parents=True)
        self.backends = [{"name": "r1", "driver": driver, "host": "stor1", "replication_domain": "dom1",
                          "export": export,
                          "pools": dict((p, {"path": str(self.points[p])}) for p in ("a", "b"))}]

    A = "stor1@r1#a"
    B = "stor1@r1#b"

    def open(self):
        for (name, point), fs in zip(self.points.items(), self.filesystems):
            point.mkdir(parents=True)
            run(["truncate", "-s", f"{IMAGE_MB}M", self.images[name]])
            run(MKFS[fs] + [self.images[name]])
            self.mount(name)
        return self

    def mount(self, name):
        run(["mount", "-o", "loop", self.images[name], self.points[name]])

    def umount(self, name):
        # a replica update deletes the instance it replaced in the background: it holds the pool meanwhile
        wait_for_btrfs_commands(self.points[name])
        run(["umount", self.points[name]])

    def close(self):
        prefix = str(self.base).rstrip("/") + "/"
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            points = [line.split()[4].encode().decode("unicode_escape") for line in handle]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            if run(["umount", point], check=False).returncode:
                run(["umount", "-l", point], check=False)
        for image in self.images.values():
            for line in run(["losetup", "-j", image], check=False).stdout.splitlines():
                run(["losetup", "-d", line.split(":", 1)[0]], check=False)

    def ctx(self):
        return Context(self.backends)

    def replicas(self):
        return LocalReplicaManager(self.ctx())

    def path(self, pool, share="s1"):
        return self.points[pool] / "shares" / share

    def same(self, share="s1"):
        """Equal trees; block counts only where both pools are one kind of filesystem (ext4 and
        xfs allocate small files differently), and sparse files stay sparse."""
        left, right = tree_state(self.path("a", share)), tree_state(self.path("b", share))
        assert left is not None and right is not None
        for state in (left, right):
            assert state[b"sparse.img"]["blocks"] * 512 < state[b"sparse.img"]["size"] // 2
            if self.filesystems[0] != self.filesystems[1]:
                for entry in state.values():
                    entry.pop("blocks", None)
        return left == right


@pytest.fixture
def make_lab(tmp_path):
    labs = []

    def make(driver, filesystems, helper="none"):
        lab = Lab(tmp_path / ("lab%d" % len(labs)), driver, filesystems, helper)
        labs.append(lab)
        return lab.open()
    yield make
    for lab in labs:
        lab.close()


def fill(path: Path, files: int = 100):
    populate_share(path)
    folder = path / "many"
    folder.mkdir()
    for index in range(files):
        (folder / f"f{index:03d}").write_bytes(os.urandom(4096))


def change_one_percent(path: Path):
    (path / "many" / "f007").write_bytes(os.urandom(4096))


def create(lab, specs, rules=(RULE,)):
    ShareManager(lab.ctx()).present("s1", lab.A, 1, "NFS", "rep", specs, list(rules))
    fill(lab.path("a"))


@pytest.mark.parametrize("filesystems", [("ext4", "xfs")], ids=["ext4-xfs"])
def test_posix_replica_cycle_with_forced_promotion_and_failback(make_lab, filesystems):
    lab = make_lab("posix", filesystems)
    create(lab, {"replication_type": "dr"}, rules=())
    result = lab.replicas().present("s1", pool=lab.B)
    assert result["replica"]["replica_state"] == "in_sync"
    assert lab.same()
    change_one_percent(lab.path("a"))
    result = lab.replicas().resynced("s1", pool=lab.B)
    assert result["replica"]["last_update"]["files"] == 1
    assert lab.same()
    # planned promotion, then a change on the new active reaches the old one as a delta
    assert lab.replicas().promoted("s1", pool=lab.B)["changed"] is True
    assert lab.same()
    change_one_percent(lab.path("b"))
    assert lab.replicas().resynced("s1", pool=lab.A)["replica"]["last_update"]["files"] == 1
    assert lab.same()
    # the active pool b goes away after a write that never reached a
    (lab.path("b") / "unreplicated.txt").write_text("lost with b")
    lab.umount("b")
    result = lab.replicas().promoted("s1", pool=lab.A, force=True)
    assert [(r["pool"], r["replica_state"]) for r in result["replicas"]] == [(lab.A, "active"), (lab.B, "out_of_sync")]
    (lab.path("a") / "after-failover.txt").write_text("new active")
    lab.mount("b")
    with pytest.raises(InvalidRequest, match="unreplicated.txt"):
        lab.replicas().resynced("s1", pool=lab.B)
    result = lab.replicas().resynced("s1", pool=lab.B, force=True)
    assert result["replica"]["replica_state"] == "in_sync"
    assert result["replica"]["last_update"]["files"] == 2   # the new file in, the unreplicated one out
    assert lab.same()
    kept = result["replica"]["kept_divergence"]
    assert (Path(kept) / "unreplicated.txt").read_text() == "lost with b"


def write_as_another_process(path: Path, append: bool = True):
    """Write ``path`` from a separate process, as a client of the folder would; its errno or 0."""
    code = ("import errno, sys\ntry:\n    open(sys.argv[1], sys.argv[2]).write('x')\n"
            "except OSError as exc:\n    sys.exit(exc.errno)\n")
    return subprocess.run([sys.executable, "-c", code, str(path), "a" if append else "w"], check=False).returncode


@pytest.mark.parametrize("filesystems", [("ext4", "xfs"), ("xfs", "ext4")], ids=["ext4-xfs", "xfs-ext4"])
def test_posix_old_active_is_fenced_with_export_helper_none(make_lab, filesystems):
    lab = make_lab("posix", filesystems, helper="none")
    create(lab, {"replication_type": "readable"})
    lab.replicas().present("s1", pool=lab.B)
    assert lab.same()
    (lab.path("a") / "unreplicated.txt").write_text("only on a")
    lab.umount("a")
    result = lab.replicas().promoted("s1", pool=lab.B, force=True)
    old = [r for r in result["replicas"] if r["pool"] == lab.A][0]
    assert old["fence_pending"] is True and not old.get("fenced_at")
    (lab.path("b") / "after-failover.txt").write_text("new active")
    lab.mount("a")
    # before the next run the old active's folder still takes writes: that is what the fence stops
    assert write_as_another_process(lab.path("a") / "plain.txt") == 0
    # the next run on the share fences it
    result = lab.replicas().present("s1", pool=lab.B)
    old = [r for r in result["replicas"] if r["pool"] == lab.A][0]
    assert old["fence_pending"] is False and old["fenced_at"] and not old.get("fence_error")
    for target, append in ((lab.path("a") / "plain.txt", True), (lab.path("a") / "new-file.txt", False),
                           (lab.path("a") / "dir" / "sub" / "deep.bin", False), (lab.path("a") / "many" / "x", False)):
        assert write_as_another_process(target, append) == errno.EPERM, target
    with pytest.raises(OSError) as info:
        (lab.path("a") / "many" / "f001").unlink()
    assert info.value.errno == errno.EPERM
    # the failback names what the old active got after its last point (read before the fence)
    # and keeps the fence when it refuses
    with pytest.raises(InvalidRequest, match=r"unreplicated.txt") as refused:
        lab.replicas().resynced("s1", pool=lab.A)
    assert "plain.txt" in str(refused.value) and "f001" not in str(refused.value)
    assert write_as_another_process(lab.path("a") / "plain.txt") == errno.EPERM
    # failback: the fence is lifted for the update, the old active becomes a copy of the new one
    result = lab.replicas().resynced("s1", pool=lab.A, force=True)
    assert result["replica"]["replica_state"] == "in_sync"
    assert result["replica"]["fence_lifted_at"]
    assert lab.same()
    assert (Path(result["replica"]["kept_divergence"]) / "unreplicated.txt").read_text() == "only on a"
    assert lab.replicas().promoted("s1", pool=lab.A)["changed"] is True
    assert lab.same()
    assert write_as_another_process(lab.path("a") / "back-home.txt", append=False) == 0


def test_btrfs_replicas_incremental_updates_exports_and_failback(make_lab):
    lab = make_lab("btrfs", ("btrfs", "btrfs"), helper="bind")
    create(lab, {"replication_type": "readable"})
    result = lab.replicas().present("s1", pool=lab.B)
    replica = result["replica"]
    assert (replica["replica_state"], replica["last_update"]["incremental"]) == ("in_sync", False)
    assert lab.same()
    # a readable replica is exported read-only under its own name
    export = Path(replica["export_location"])
    assert export.name == "s1.replica-b" and (export / "plain.txt").exists()
    with pytest.raises(OSError) as info:
        (export / "x").write_text("no")
    assert info.value.errno == errno.EROFS
    full = replica["last_update"]["bytes"]
    change_one_percent(lab.path("a"))
    result = lab.replicas().resynced("s1", pool=lab.B)
    update = result["replica"]["last_update"]
    assert update["incremental"] is True and 4096 <= update["bytes"] < full / 10
    assert lab.same()
    # only the base point is kept on each side
    points = sorted(os.listdir(lab.points["b"] / ".mobility" / "replication"))
    assert len(points) == 1
    record, _pool = lab.ctx().load("s1")
    base = "rep-%06d" % record["replicas"][1]["base"]
    for side in ("a", "b"):
        assert sorted(os.listdir(lab.points[side] / ".mobility" / "replication" / record["id"])) == [base]
    # planned promotion: the old active is read-only, the export path serves the new one
    assert lab.replicas().promoted("s1", pool=lab.B)["changed"] is True
    assert lab.same()
    with pytest.raises(OSError) as info:
        (lab.path("a") / "x").write_text("fenced")
    assert info.value.errno == errno.EROFS
    (lab.path("b") / "written-on-b.txt").write_text("b")
    result = lab.replicas().resynced("s1", pool=lab.A)
    update = result["replica"]["last_update"]
    assert update["incremental"] is True and update["bytes"] < full / 10
    assert lab.same()


def test_btrfs_forced_promotion_with_the_active_filesystem_unmounted(make_lab):
    lab = make_lab("btrfs", ("btrfs", "btrfs"))
    create(lab, {"replication_type": "dr"}, rules=())
    full = lab.replicas().present("s1", pool=lab.B)["replica"]["last_update"]["bytes"]
    assert lab.same()
    (lab.path("a") / "unreplicated.txt").write_text("only on a")
    lab.umount("a")
    with pytest.raises(InvalidRequest, match="needs administrator intent"):
        lab.replicas().promoted("s1", pool=lab.B)
    result = lab.replicas().promoted("s1", pool=lab.B, force=True)
    assert result["replica"]["replica_state"] == "active"
    (lab.path("b") / "new.txt").write_text("on the new active")
    lab.mount("a")
    with pytest.raises(InvalidRequest, match="unreplicated.txt"):
        lab.replicas().resynced("s1", pool=lab.A)
    # fenced when it came back: the old active is read-only
    with pytest.raises(OSError) as info:
        (lab.path("a") / "x").write_text("fenced")
    assert info.value.errno == errno.EROFS
    result = lab.replicas().resynced("s1", pool=lab.A, force=True)
    update = result["replica"]["last_update"]
    # failback without a full copy: only the change since the common point
    assert update["incremental"] is True and update["bytes"] < full / 10
    assert lab.same()
    assert (Path(result["replica"]["kept_divergence"]) / "unreplicated.txt").read_text() == "only on a"
    assert lab.replicas().promoted("s1", pool=lab.A)["changed"] is True
    assert lab.same()
    (lab.path("a") / "back-home.txt").write_text("a writes again")


def test_btrfs_a_write_right_after_the_point_is_named_at_failback(make_lab, monkeypatch):
    """Taking the read-only point commits a transaction (0.1-0.2 s here): a write that lands after
    the snapshot but before the command returns is not in the replica, and a failback after a
    forced promotion must count it as the old active's own write."""
    lab = make_lab("btrfs", ("btrfs", "btrfs"))
    create(lab, {"replication_type": "dr"}, rules=())
    real = BtrfsShareDriver._btrfs
    written = []

    def snapshot_then_write(self, args, what, check=True):
        result = real(self, args, what, check=check)
        if list(args[:3]) == ["subvolume", "snapshot", "-r"] and not written:
            (lab.path("a") / "after-the-point.txt").write_text("written while the point was committed")
            written.append(args[3])
            time.sleep(0.1)
        return result
    monkeypatch.setattr(BtrfsShareDriver, "_btrfs", snapshot_then_write)
    lab.replicas().present("s1", pool=lab.B)
    monkeypatch.undo()
    assert written and not (lab.path("b") / "after-the-point.txt").exists()
    lab.umount("a")
    lab.replicas().promoted("s1", pool=lab.B, force=True)
    lab.mount("a")
    with pytest.raises(InvalidRequest, match="after-the-point.txt"):
        lab.replicas().resynced("s1", pool=lab.A)


# --------------------------------------------------------------------------- snapshots of a replicated share

def snapshot_tree(lab, pool, snap, drop_blocks):
    state = tree_state(lab.points[pool] / "snapshots" / "s1" / snap)
    assert state is not None, f"no snapshot {snap} in pool {pool}"
    if drop_blocks:
        for entry in state.values():
            entry.pop("blocks", None)
    return state


def snapshot_status(lab, snap):
    record, _pool = lab.ctx().load("s1")
    return [s for s in record["snapshots"] if s["name"] == snap][0]


@pytest.mark.parametrize("driver, filesystems", [("btrfs", ("btrfs", "btrfs")), ("posix", ("ext4", "xfs"))],
                         ids=["btrfs", "posix-ext4-xfs"])
def test_snapshots_reach_in_sync_replicas_before_they_are_available(make_lab, driver, filesystems):
    lab = make_lab(driver, filesystems)
    drop_blocks = filesystems[0] != filesystems[1]
    create(lab, {"replication_type": "dr"}, rules=())
    shares = ShareManager(lab.ctx())
    # a snapshot taken before the replica exists is carried by its first update
    assert shares.snapshot_present("s1", "before")["snapshot"]["status"] == "available"
    replica = lab.replicas().present("s1", pool=lab.B)["replica"]
    assert replica["replica_state"] == "in_sync" and replica["snapshots"] == ["before"]
    assert snapshot_tree(lab, "a", "before", drop_blocks) == snapshot_tree(lab, "b", "before", drop_blocks)
    full = replica["last_update"]["bytes"]
    # taken on the active with an in_sync replica: creating until the replica holds it
    change_one_percent(lab.path("a"))
    snap = ShareManager(lab.ctx()).snapshot_present("s1", "one")["snapshot"]
    assert (snap["status"], snap["replicas_pending"]) == ("creating", [replica["id"]])
    assert ShareManager(lab.ctx()).snapshot_present("s1", "one")["changed"] is False
    assert not (lab.points["b"] / "snapshots" / "s1" / "one").exists()
    update = lab.replicas().resynced("s1", pool=lab.B)["replica"]
    assert update["replica_state"] == "in_sync" and update["snapshots"] == ["before", "one"]
    assert snapshot_status(lab, "one")["status"] == "available"
    assert "replicas_pending" not in snapshot_status(lab, "one")
    assert snapshot_tree(lab, "a", "one", drop_blocks) == snapshot_tree(lab, "b", "one", drop_blocks)
    assert lab.same()
    # only the change travels: btrfs sends it in the -p chain, posix hard-links unchanged files
    assert update["last_update"]["bytes"] < full / 10
    if driver == "btrfs":
        assert update["last_update"]["incremental"] is True
        for snap_name in ("before", "one"):
            info = run(["btrfs", "subvolume", "show", lab.points["b"] / "snapshots" / "s1" / snap_name]).stdout
            assert "Received UUID" in info and "readonly" in info
    else:
        before = lab.points["b"] / "snapshots" / "s1" / "before" / "many"
        one = lab.points["b"] / "snapshots" / "s1" / "one" / "many"
        assert (before / "f001").stat().st_ino == (one / "f001").stat().st_ino
        assert (before / "f007").stat().st_ino != (one / "f007").stat().st_ino
    # a snapshot deleted on the active goes from the replica at its next update, which stays incremental
    ShareManager(lab.ctx()).snapshot_absent("s1", "before")
    change_one_percent(lab.path("a"))
    update = lab.replicas().resynced("s1", pool=lab.B)["replica"]
    assert update["snapshots"] == ["one"] and update["last_update"]["bytes"] < full / 10
    assert sorted(os.listdir(lab.points["b"] / "snapshots" / "s1")) == ["one"]
    if driver == "btrfs":
        assert update["last_update"]["incremental"] is True
    # a planned promotion: the snapshot is the new active's copy; the old active keeps its own
    ShareManager(lab.ctx()).snapshot_present("s1", "two")
    result = lab.replicas().promoted("s1", pool=lab.B)
    assert [(r["pool"], r["replica_state"]) for r in result["replicas"]] == [(lab.B, "active"), (lab.A, "in_sync")]
    for snap_name in ("one", "two"):
        got = snapshot_status(lab, snap_name)
        assert got["status"] == "available" and got["path"] == str(lab.points["b"] / "snapshots" / "s1" / snap_name)
        assert snapshot_tree(lab, "a", snap_name, drop_blocks) == snapshot_tree(lab, "b", snap_name, drop_blocks)
    # deleting the replica removes its snapshot copies, not the active's
    lab.replicas().absent("s1", pool=lab.A)
    assert not (lab.points["a"] / "snapshots" / "s1").exists()
    assert sorted(os.listdir(lab.points["b"] / "snapshots" / "s1")) == ["one", "two"]


def test_a_replica_that_stops_being_in_sync_releases_its_pending_snapshot(make_lab):
    lab = make_lab("posix", ("ext4", "ext4"))
    create(lab, {"replication_type": "dr"}, rules=())
    replica = lab.replicas().present("s1", pool=lab.B)["replica"]
    assert ShareManager(lab.ctx()).snapshot_present("s1", "one")["snapshot"]["status"] == "creating"
    lab.replicas().present("s1", pool=lab.B, replica_state="out_of_sync")
    got = snapshot_status(lab, "one")
    assert got["status"] == "available" and "replicas_pending" not in got
    # an update that could not copy a snapshot does not claim in_sync
    (lab.points["b"] / "snapshots" / "s1").mkdir(parents=True)
    (lab.points["b"] / "snapshots" / "s1" / "one").write_text("a file where the copy goes")
    with pytest.raises(StorageError, match="exists and is not a snapshot folder"):
        lab.replicas().resynced("s1", pool=lab.B)
    record, _pool = lab.ctx().load("s1")
    assert [r["replica_state"] for r in record["replicas"] if r["id"] == replica["id"]] == ["error"]


# --------------------------------------------------------------------------- after a promotion

class ThreeLab(Lab):
    """Pools a, b and c, each the root of its own loop-mounted btrfs filesystem."""

    C = "stor1@r1#c"

    def __init__(self, base: Path):
        super().__init__(base, "btrfs", ("btrfs", "btrfs", "btrfs"))
        self.points["c"] = base / "mnt-c"
        self.images["c"] = base / "c.img"
        self.backends[0]["pools"]["c"] = {"path": str(self.points["c"])}


def test_btrfs_other_replicas_continue_incrementally_after_a_planned_promotion(tmp_path):
    lab = ThreeLab(tmp_path / "lab")
    try:
        lab.open()
        create(lab, {"replication_type": "dr"}, rules=())
        full = lab.replicas().present("s1", pool=lab.B)["replica"]["last_update"]["bytes"]
        lab.replicas().present("s1", pool=lab.C)
        # b gets one more update than c: their bases differ, and b never held c's
        change_one_percent(lab.path("a"))
        lab.replicas().resynced("s1", pool=lab.B)
        record, _pool = lab.ctx().load("s1")
        bases = dict((r["pool"], r.get("base")) for r in record["replicas"])
        assert bases[lab.B] != bases[lab.C]
        lab.replicas().promoted("s1", pool=lab.B)
        (lab.path("b") / "on-b.txt").write_text("written on the new active")
        update = lab.replicas().resynced("s1", pool=lab.C)["replica"]
        assert update["replica_state"] == "in_sync"
        assert update["last_update"]["incremental"] is True and update["last_update"]["bytes"] < full / 10
        assert tree_state(lab.path("b")) == tree_state(lab.path("c"))
        # the old active continues incrementally too, and the forwarded point is not kept once used
        update = lab.replicas().resynced("s1", pool=lab.A)["replica"]
        assert update["last_update"]["incremental"] is True and update["last_update"]["bytes"] < full / 10
        record, _pool = lab.ctx().load("s1")
        kept = sorted(os.listdir(lab.points["b"] / ".mobility" / "replication" / record["id"]))
        assert kept == sorted(set("rep-%06d" % r["base"] for r in record["replicas"] if r.get("base")))
    finally:
        lab.close()


def test_btrfs_other_replicas_continue_incrementally_after_a_forced_promotion(tmp_path):
    lab = ThreeLab(tmp_path / "lab")
    try:
        lab.open()
        create(lab, {"replication_type": "dr"}, rules=())
        # bigger than the change by far: a full send would carry all of it
        (lab.path("a") / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
        full = lab.replicas().present("s1", pool=lab.B)["replica"]["last_update"]["bytes"]
        assert full > 8 * 1024 * 1024
        lab.replicas().present("s1", pool=lab.C)
        # b gets one more update than c: their bases differ
        change_one_percent(lab.path("a"))
        lab.replicas().resynced("s1", pool=lab.B)
        record, _pool = lab.ctx().load("s1")
        bases = dict((r["pool"], r.get("base")) for r in record["replicas"])
        assert bases[lab.B] != bases[lab.C]
        lab.umount("a")
        lab.replicas().promoted("s1", pool=lab.B, force=True)
        (lab.path("b") / "on-b.txt").write_text("written on the new active")
        change_one_percent(lab.path("b"))
        update = lab.replicas().resynced("s1", pool=lab.C)["replica"]
        assert update["replica_state"] == "in_sync"
        last = update["last_update"]
        assert last["incremental"] is True and last["full_send_reason"] is None
        # roughly the change (one 4 KiB file and a small one), not the share's 8 MiB
        assert 4096 <= last["bytes"] < 256 * 1024, last
        assert tree_state(lab.path("b")) == tree_state(lab.path("c"))
        # without a common point the update falls back to a full send and says why
        record, _pool = lab.ctx().load("s1")
        folder = lab.points["c"] / ".mobility" / "replication" / record["id"]
        for point in os.listdir(folder):
            run(["btrfs", "subvolume", "delete", folder / point])
        (lab.path("b") / "on-b.txt").write_text("again")
        last = lab.replicas().resynced("s1", pool=lab.C)["replica"]["last_update"]
        assert last["incremental"] is False and "held by both" in last["full_send_reason"]
        assert last["bytes"] > 8 * 1024 * 1024
        assert tree_state(lab.path("b")) == tree_state(lab.path("c"))
    finally:
        lab.close()


# --------------------------------------------------------------------------- the update_replicas playbook

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "update_replicas.yml"


# None: what some AWX versions pass for the job template's optional survey question left empty
@pytest.mark.parametrize("backend", ["r1", None])
def test_update_replicas_playbook_updates_each_replica_and_names_failures_past_rpo(tmp_path, collections_path, backend):
    from test_targets import _ansible_playbook, _environment

    pools = dict((p, tmp_path / "pools" / p) for p in ("a", "b", "c"))
    for path in pools.values():
        path.mkdir(parents=True)
    backends = [{"name": "r1", "driver": "posix", "host": "stor1", "replication_domain": "dom1",
                 "pools": dict((p, {"path": str(path)}) for p, path in pools.items())}]
    ctx = Context(backends)
    specs = {"replication_type": "readable", "rpo_seconds": "60"}
    for share, pool in (("s1", "b"), ("s2", "c")):
        ShareManager(ctx).present(share, "stor1@r1#a", 1, "NFS", "rep", specs, [RULE])
        (pools["a"] / "shares" / share / "data").write_text("first")
        LocalReplicaManager(Context(backends)).present(share, pool="stor1@r1#" + pool)
        (pools["a"] / "shares" / share / "data").write_text("second")

    def age(record):
        record["replicas"][1]["last_sync_epoch"] -= 3600
    ctx = Context(backends)
    record, pool = ctx.load("s2")
    age(record)
    ctx.repo.save(record, pool, "aged by the test")
    # s2's replica cannot be written: its update fails and it stays past its RPO
    broken = pools["c"] / "shares" / "s2"
    for entry in broken.iterdir():
        entry.unlink()
    broken.rmdir()
    broken.write_text("a file where the replica's folder was")
    work = tmp_path / "ansible"
    work.mkdir()
    (work / "vars.json").write_text(json.dumps({"mobility_backends": backends, "backend": backend}))
    proc = subprocess.run([_ansible_playbook(), "-i", "localhost,", "-c", "local", str(PLAYBOOK),
                           "-e", "@" + str(work / "vars.json"), "-e", f"ansible_python_interpreter={sys.executable}"],
                          env=dict(_environment(collections_path, work), ANSIBLE_CALLBACK_RESULT_FORMAT="json"),
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 2, proc.stdout[-4000:] + proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if '"msg": "REPLICAS ' in ln]
    assert line, proc.stdout[-4000:]
    got = json.loads(json.loads("{" + line[0].strip() + "}")["msg"][len("REPLICAS "):])
    assert got["updated"] == 1
    assert [(f["share"], f["pool"]) for f in got["failed"]] == [("s2", "stor1@r1#c")]
    assert [(p["share"], p["pool"], p["replica_state"]) for p in got["past_rpo"]] == [("s2", "stor1@r1#c", "error")]
    assert (pools["b"] / "shares" / "s1" / "data").read_text() == "second"
    assert tree_state(pools["a"] / "shares" / "s1") == tree_state(pools["b"] / "shares" / "s1")


# --------------------------------------------------------------------------- the replica_timer role

ROLE_PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: storage.mobility.replica_timer
      vars:
        replica_timer_inventory: %(inventory)s
        replica_timer_backend: r1
        replica_timer_unit_dir: %(units)s
        replica_timer_ansible_playbook: %(ansible_playbook)s
        replica_timer_manage_service: false
"""


def systemd_unescape(text):
    return text.replace("$$", "$").replace("%%", "%")


def test_replica_timer_units_verify_and_their_command_updates_the_replicas(tmp_path, collections_path):
    import shlex
    import shutil as _shutil

    from test_targets import _ansible_playbook, _environment

    pools = dict((p, tmp_path / "pools" / p) for p in ("a", "b"))
    for path in pools.values():
        path.mkdir(parents=True)
    backends = [{"name": "r1", "driver": "posix", "host": "stor1", "replication_domain": "dom1",
                 "pools": dict((p, {"path": str(path)}) for p, path in pools.items())}]
    ShareManager(Context(backends)).present("s1", "stor1@r1#a", 1, "NFS", "rep", {"replication_type": "dr"}, [RULE])
    LocalReplicaManager(Context(backends)).present("s1", pool="stor1@r1#b")
    (pools["a"] / "shares" / "s1" / "new").write_text("changed after the first update")
    work = tmp_path / "ansible"
    units = tmp_path / "units"
    work.mkdir()
    units.mkdir()
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "mobility_backends": backends}}}}))
    play = work / "role.yml"
    play.write_text(ROLE_PLAY % {"inventory": inventory, "units": units, "ansible_playbook": _ansible_playbook()})
    env = _environment(collections_path, work)
    proc = subprocess.run([_ansible_playbook(), "-i", str(inventory), str(play)], env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    service = units / "storage-mobility-update-replicas.service"
    timer = units / "storage-mobility-update-replicas.timer"
    if _shutil.which("systemd-analyze"):
        check = subprocess.run(["systemd-analyze", "verify", str(service), str(timer)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
    # what the service runs, as systemd would run it
    line = [ln for ln in service.read_text().splitlines() if ln.startswith("ExecStart=")][0]
    argv = shlex.split(systemd_unescape(line[len("ExecStart="):]))
    proc = subprocess.run(argv, env=dict(env, ANSIBLE_CALLBACK_RESULT_FORMAT="json"), capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert '"msg": "REPLICAS {\\"updated\\": 1' in proc.stdout, proc.stdout[-3000:]
    assert (pools["b"] / "shares" / "s1" / "new").read_text() == "changed after the first update"
    # the run id comes from the unit's command
    events = [json.loads(x) for x in (pools["a"] / ".mobility" / "events.jsonl").read_text().splitlines()]
    assert any(e["run_id"].startswith("replicas-") for e in events)
