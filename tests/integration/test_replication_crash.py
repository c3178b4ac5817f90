"""Crash tests of replication: a child process runs one step of create, update, promote or
resync and is killed (STORAGE_MOBILITY_CRASH_AFTER, plugins/module_utils/crash.py) at each of its
crash points: after each record the step writes, in the middle of a btrfs send, after each
receive, between rsync passes, after a snapshot copy. Then:

* right after the kill: never two active replicas, and an ``in_sync`` replica holds a complete
  point (its tree is the active's tree before or after the change, entry by entry) and every
  snapshot it lists;
* the same step run again converges: one active replica, the target replica ``in_sync`` (or
  active), its tree and snapshots equal to the active's entry by entry.

Real loop-mounted filesystems: btrfs to btrfs, posix from ext4 to xfs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_replication import Lab, ThreeLab, change_one_percent, fill, tree_state, wait_for_btrfs_commands

from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop-mounted filesystems and mounts need root")

HERE = Path(__file__).resolve().parent
CRASH_ENV = "STORAGE_MOBILITY_CRASH_AFTER"

UPDATE_POINTS = {
    "btrfs": ["btrfs sending replica snapshot *", "btrfs received replica snapshot *", "btrfs sending replica point",
              "btrfs received replica point", "btrfs replica instance moved aside", "btrfs replica instance retired",
              "replica * updated*"],
    "posix": ["replica * update started*", "replica-snapshot-copied", "replica rsync pass", "replica * updated*"],
}
#: (step, the op the child runs, the pool it names, crash points besides the update's)
STEPS = {
    "create": ("present", "B", ["replica * in * requested"]),
    "update": ("resynced", "B", []),
    "promote": ("promoted", "B", ["promotion of replica * started", "promoted (planned)",
                                  "old active replica * exported as a secondary"]),
    "resync": ("resynced", "A", []),
}
LABS = {"btrfs": ("btrfs", "btrfs"), "posix": ("ext4", "xfs")}


def cases():
    for driver in LABS:
        for step, (_op, _pool, points) in STEPS.items():
            # A replica being created has no old instance to move aside and no in_sync state to leave.
            skip = ("update started", "moved aside", "retired") if step == "create" else ()
            for point in points + [p for p in UPDATE_POINTS[driver] if not any(s in p for s in skip)]:
                yield pytest.param(driver, step, point, id=f"{driver}-{step}-{point.replace(' ', '_')}")


def child(lab, config, op, pool, crash=None):
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    proc = subprocess.run([sys.executable, "-B", str(HERE / "replica_child.py"), str(config), op, "s1",
                           getattr(lab, pool)], capture_output=True, text=True, env=env, check=False, timeout=300)
    wait_for_btrfs_commands(lab.base)
    return proc


def comparable(state, drop_blocks):
    if state is not None and drop_blocks:
        for entry in state.values():
            entry.pop("blocks", None)
    return state


def snapshots_of(lab, pool, names, drop_blocks):
    return dict((n, comparable(tree_state(lab.points[pool] / "snapshots" / "s1" / n), drop_blocks)) for n in names)


def check_invariants(lab, trees, drop_blocks):
    """Never two active replicas; an in_sync replica holds a complete point and its snapshots."""
    record, _pool = lab.ctx().load("s1")
    replicas = record.get("replicas") or []
    assert [r["replica_state"] for r in replicas].count("active") <= 1, replicas
    records = [p for p in ("a", "b") if (lab.points[p] / ".mobility" / "shares" / "s1.json").exists()]
    active_pools = set()
    for p in records:
        data = json.loads((lab.points[p] / ".mobility" / "shares" / "s1.json").read_text())
        if data["revision"] == record["revision"]:
            active_pools.update(r["pool"] for r in data.get("replicas") or [] if r["replica_state"] == "active")
    assert len(active_pools) <= 1, active_pools
    source = "a" if [r for r in replicas if r["replica_state"] == "active"][0]["pool"] == lab.A else "b"
    for replica in replicas:
        if replica["replica_state"] != "in_sync":
            continue
        side = "a" if replica["pool"] == lab.A else "b"
        got = comparable(tree_state(lab.path(side)), drop_blocks)
        if got is None and lab.driver == "btrfs":
            # Killed while placing the next point: the old one waits beside the instance; the
            # next step on the pool puts it back (BtrfsShareDriver._recover_placement).
            got = comparable(tree_state(lab.path(side).parent / ".s1.replica-previous"), drop_blocks)
        assert got is not None and got in trees, f"in_sync replica in {replica['pool']} holds no complete point"
        names = replica.get("snapshots") or []
        assert snapshots_of(lab, side, names, drop_blocks) == snapshots_of(lab, source, names, drop_blocks)
    return record


def prepare(lab, step):
    """The share before the step, and the trees an in_sync replica may hold during it."""
    ShareManager(lab.ctx()).present("s1", lab.A, 1, "NFS", "rep", {"replication_type": "dr"}, [])
    fill(lab.path("a"))
    ShareManager(lab.ctx()).snapshot_present("s1", "snap1")
    if step == "create":
        return "a"
    lab.replicas().present("s1", pool=lab.B)
    if step == "resync":
        lab.replicas().promoted("s1", pool=lab.B)
        return "b"
    return "a"


@pytest.mark.parametrize("driver, step, point", list(cases()))
def test_a_replication_step_killed_at_each_point_converges_when_run_again(tmp_path, driver, step, point):
    op, pool, _points = STEPS[step]
    lab = Lab(tmp_path / "lab", driver, LABS[driver])
    try:
        lab.open()
        config = tmp_path / "backends.json"
        config.write_text(json.dumps(lab.backends))
        drop_blocks = LABS[driver][0] != LABS[driver][1]
        source = prepare(lab, step)
        before = comparable(tree_state(lab.path(source)), drop_blocks)
        change_one_percent(lab.path(source))
        ShareManager(lab.ctx()).snapshot_present("s1", "snap2")
        after = comparable(tree_state(lab.path(source)), drop_blocks)
        killed = child(lab, config, op, pool, crash=point)
        assert killed.returncode == 70, f"the crash point {point!r} was not reached: {killed.stdout}{killed.stderr}"
        check_invariants(lab, [before, after], drop_blocks)
        again = child(lab, config, op, pool)
        assert again.returncode == 0, again.stdout + again.stderr
        record = check_invariants(lab, [after], drop_blocks)
        states = dict((r["pool"], r["replica_state"]) for r in record["replicas"])
        active = "b" if step == "promote" else source
        target = {"a": lab.A, "b": lab.B}["b" if step in ("create", "update", "promote") else "a"]
        assert states[target] in ("in_sync", "active") and list(states.values()).count("active") == 1
        assert states[{"a": lab.A, "b": lab.B}[active]] == "active"
        assert comparable(tree_state(lab.path("a")), drop_blocks) == comparable(tree_state(lab.path("b")), drop_blocks)
        names = ["snap1", "snap2"]
        assert snapshots_of(lab, "a", names, drop_blocks) == snapshots_of(lab, "b", names, drop_blocks)
        assert all(s["status"] == "available" for s in record["snapshots"]), record["snapshots"]
        # no retired replica instance left: its background deletion ended, or the rerun deleted it
        assert not [p for side in ("a", "b") for p in lab.path(side).parent.glob(".s1.replica-*")]
    finally:
        lab.close()


def test_a_forced_promotion_right_after_a_kill_while_placing_a_btrfs_point_has_the_data(tmp_path):
    """Killed between moving the old instance aside and renaming the new one in, then the active
    pool is lost: the promoted replica must serve the point its record names."""
    lab = Lab(tmp_path / "lab", "btrfs", LABS["btrfs"])
    try:
        lab.open()
        config = tmp_path / "backends.json"
        config.write_text(json.dumps(lab.backends))
        prepare(lab, "update")
        held = tree_state(lab.path("b"))
        change_one_percent(lab.path("a"))
        killed = child(lab, config, "resynced", "B", crash="btrfs replica instance moved aside")
        assert killed.returncode == 70, killed.stdout + killed.stderr
        assert not lab.path("b").exists()
        lab.umount("a")
        result = subprocess.run([sys.executable, "-B", str(HERE / "replica_child.py"), str(config), "promoted", "s1",
                                 lab.B, "force"], capture_output=True, text=True, check=False, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert tree_state(lab.path("b")) == held
        (lab.path("b") / "written-after-failover").write_text("the promoted replica is writable")
    finally:
        lab.close()


@pytest.mark.parametrize("point", ["btrfs sending replica base point", "btrfs received replica base point"])
def test_a_btrfs_update_killed_while_carrying_another_replicas_base_converges(tmp_path, point):
    """b's update first carries c's base point (so that c can continue from b after a forced
    promotion): killed there, b still holds its complete point; the rerun converges, and after the
    active pool is lost c's next update from the promoted b is an increment."""
    lab = ThreeLab(tmp_path / "lab")
    try:
        lab.open()
        config = tmp_path / "backends.json"
        config.write_text(json.dumps(lab.backends))
        ShareManager(lab.ctx()).present("s1", lab.A, 1, "NFS", "rep", {"replication_type": "dr"}, [])
        fill(lab.path("a"))
        (lab.path("a") / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
        lab.replicas().present("s1", pool=lab.B)
        lab.replicas().present("s1", pool=lab.C)
        before = tree_state(lab.path("a"))
        change_one_percent(lab.path("a"))
        after = tree_state(lab.path("a"))
        killed = child(lab, config, "resynced", "B", crash=point)
        assert killed.returncode == 70, killed.stdout + killed.stderr
        record, _pool = lab.ctx().load("s1")
        replica = [r for r in record["replicas"] if r["pool"] == lab.B][0]
        assert replica["replica_state"] == "in_sync" and tree_state(lab.path("b")) == before
        again = child(lab, config, "resynced", "B")
        assert again.returncode == 0, again.stdout + again.stderr
        assert tree_state(lab.path("b")) == after
        lab.umount("a")
        lab.replicas().promoted("s1", pool=lab.B, force=True)
        (lab.path("b") / "on-b.txt").write_text("written on the new active")
        update = lab.replicas().resynced("s1", pool=lab.C)["replica"]["last_update"]
        assert update["incremental"] is True and update["bytes"] < 1024 * 1024, update
        assert tree_state(lab.path("c")) == tree_state(lab.path("b"))
    finally:
        lab.close()
