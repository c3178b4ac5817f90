"""Unit tests for plugins/module_utils/managers/replica.py: replicas on posix pools in tmp_path.

Every step compares the active share's tree with the replica's entry by entry (tree_state: type,
mode, owner, nanosecond mtime, content, xattrs, hard links).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from mobility_helpers import RULE, Env, backend_spec, lock_held_by_other_process, populate_share, tree_state

from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share import posix_changes
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, NotFound, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager

READABLE = {"replication_type": "readable"}


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path, [backend_spec(tmp_path / "pools", pools=("a", "b", "c"), replication_domain="d1")])


def make_share(env, specs=None, name="s1"):
    env.shares().present(name, env.A, 1, "NFS", "rep", dict(READABLE if specs is None else specs), [RULE])
    path = env.share_path(env.A, name)
    populate_share(path)
    return path


def manager(env, check_mode=False):
    return LocalReplicaManager(env.ctx(check_mode))


def journal(env, address):
    path = os.path.join(env.pool_path(address), ".mobility", "events.jsonl")
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def recording_runs(env, monkeypatch, mgr):
    """Record the argv of every command the active pool's transport runs (a list, filled as they run)."""
    transport = mgr.ctx.transport(mgr.ctx.pool(env.A).backend)
    real = transport.run
    argvs = []

    def recording(argv, *args, **kwargs):
        argvs.append(list(argv))
        return real(argv, *args, **kwargs)
    monkeypatch.setattr(transport, "run", recording)
    return argvs


def same(env, share="s1", left=Env.A, right=Env.B):
    return tree_state(env.share_path(left, share)) == tree_state(env.share_path(right, share))


# --------------------------------------------------------------------------- refusals


def test_without_local_backends_the_refusal_reads_as_before():
    ctx = Context([{"name": "blocks", "driver": "cinder", "cloud": "lab"}])
    mgr = LocalReplicaManager(ctx)
    for call in (lambda: mgr.present("s1"), lambda: mgr.absent("s1", pool="x@y#z"),
                 lambda: mgr.promoted("s1", pool="x@y#z"), lambda: mgr.resynced("s1", pool="x@y#z"),
                 lambda: mgr.info("s1")):
        with pytest.raises(InvalidRequest) as info:
            call()
        assert str(info.value) == ("Cannot manage replicas of share s1: replicas need a backend with driver manila "
                                   "(declared drivers: cinder)")


def test_a_share_without_replication_type_is_refused_and_nothing_changes(env):
    make_share(env, specs={})
    before = env.state()
    with pytest.raises(InvalidRequest, match="share type rep has no replication_type"):
        manager(env).present("s1", pool=env.B)
    assert env.state() == before


def test_writable_replication_is_refused_on_these_drivers(env):
    make_share(env, specs={"replication_type": "writable"})
    before = env.state()
    with pytest.raises(InvalidRequest, match="writable replicas need synchronous mirroring"):
        manager(env).present("s1", pool=env.B)
    assert env.state() == before


def test_a_pool_outside_the_replication_domain_is_refused(tmp_path):
    env = Env(tmp_path, [backend_spec(tmp_path / "p1", name="be1", replication_domain="d1"),
                         backend_spec(tmp_path / "p2", name="be2", replication_domain="d2")])
    make_share(env)
    before = env.state()
    with pytest.raises(InvalidRequest, match=r"backends be1 \(replication_domain d1\) and be2 \(replication_domain d2\)"):
        manager(env).present("s1", pool="localhost@be2#a")
    assert env.state() == before


def test_availability_zone_and_quiesce_wait_time_are_refused(env):
    make_share(env)
    with pytest.raises(InvalidRequest, match="availability_zone is not supported"):
        manager(env).present("s1", pool=env.B, availability_zone="nova")
    with pytest.raises(InvalidRequest, match="quiesce_wait_time is not supported"):
        manager(env).promoted("s1", pool=env.B, quiesce_wait_time=5)


# --------------------------------------------------------------------------- create, update, delete


def test_present_creates_an_in_sync_copy_and_journals_each_state(env):
    make_share(env)
    result = manager(env).present("s1", pool=env.B)
    assert result["changed"] is True
    replica = result["replica"]
    assert (replica["pool"], replica["status"], replica["replica_state"]) == (env.B, "available", "in_sync")
    assert replica["last_update"]["verified"] is True and replica["last_update"]["files"] > 0
    assert [(r["pool"], r["replica_state"]) for r in result["replicas"]] == [(env.A, "active"), (env.B, "in_sync")]
    assert same(env)
    # a second run changes nothing
    assert manager(env).present("s1", pool=env.B)["changed"] is False
    states = [(e["old"], e["new"]) for e in journal(env, env.A)
              if e["event"] == "replica.replica_state" and e["id"] == replica["id"]]
    assert states == [(None, "out_of_sync"), ("out_of_sync", "in_sync")]
    # the replica's pool keeps a copy of the record (for a promotion without the active pool)
    assert os.path.exists(os.path.join(env.pool_path(env.B), ".mobility", "replicas", "s1.json"))
    # share_info shows the replicas with their lag
    view = ShareManager(env.ctx()).info("s1")[0]
    assert [r["replica_state"] for r in view["replicas"]] == ["active", "in_sync"]
    assert view["replicas"][1]["lag_seconds"] >= 0


def test_check_mode_plans_and_changes_nothing(env):
    make_share(env)
    before = env.state()
    result = manager(env, check_mode=True).present("s1", pool=env.B)
    assert result["changed"] is True and result["replica"]["replica_state"] == "in_sync"
    assert env.state() == before


def test_resynced_copies_a_same_second_same_size_change(env):
    path = make_share(env)
    manager(env).present("s1", pool=env.B)
    target = os.path.join(path, "plain.txt")
    st = os.stat(target)
    with open(target, "r+b") as handle:
        handle.write(b"J")   # same size
    # the same second as before, another nanosecond: rsync's default one-second window misses it
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not same(env)
    result = manager(env).resynced("s1", pool=env.B)
    assert result["changed"] is True and result["replica"]["last_update"]["files"] >= 1
    assert same(env)
    with open(env.share_path(env.B, "s1") + "/plain.txt", "rb") as handle:
        assert handle.read(1) == b"J"


def test_resync_of_the_active_is_refused(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    with pytest.raises(InvalidRequest, match="it is the active replica"):
        manager(env).resynced("s1", pool=env.A)


def test_absent_never_the_last_active_then_deletes_a_secondary(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    with pytest.raises(InvalidRequest, match="it is the last active replica"):
        manager(env).absent("s1", pool=env.A)
    result = manager(env).absent("s1", pool=env.B)
    assert result["changed"] is True
    assert not os.path.exists(env.share_path(env.B, "s1"))
    assert not os.path.exists(os.path.join(env.pool_path(env.B), ".mobility", "replicas", "s1.json"))
    record, _pool = env.load("s1")
    assert record["replicas"] == []
    assert manager(env).absent("s1", pool=env.B)["changed"] is False
    # without replicas the share can be deleted again
    assert ShareManager(env.ctx()).absent("s1")["changed"] is True


def test_admin_resets_and_their_refusals(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    with pytest.raises(InvalidRequest, match="it is the active replica"):
        manager(env).present("s1", pool=env.A, replica_state="out_of_sync")
    result = manager(env).present("s1", pool=env.B, status="error", replica_state="error")
    assert result["changed"] is True and (result["replica"]["status"], result["replica"]["replica_state"]) == ("error", "error")
    with pytest.raises(InvalidRequest, match="not available"):
        manager(env).promoted("s1", pool=env.B)


def test_rpo_turns_a_stale_replica_out_of_sync(env):
    make_share(env, specs=dict(READABLE, rpo_seconds="60"))
    rid = manager(env).present("s1", pool=env.B)["replica"]["id"]

    def age(record):
        for replica in record["replicas"]:
            if replica["id"] == rid:
                replica["last_sync_epoch"] -= 120
    env.edit("s1", **{"_": age})
    view = ShareManager(env.ctx()).info("s1")[0]["replicas"][1]
    assert view["past_rpo"] is True and view["lag_seconds"] >= 120
    # the next run under the lock records it
    result = manager(env).present("s1", pool=env.B)
    assert result["replica"]["replica_state"] == "out_of_sync"
    assert any(e["event"] == "replica.replica_state" and e["new"] == "out_of_sync" for e in journal(env, env.A))
    # an update brings it back
    assert manager(env).resynced("s1", pool=env.B)["replica"]["replica_state"] == "in_sync"


# --------------------------------------------------------------------------- promotion and failback


def test_planned_promotion_switches_roles_without_a_full_copy(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    with open(env.share_path(env.A, "s1") + "/late.txt", "w") as handle:
        handle.write("written before the promotion")
    result = manager(env).promoted("s1", pool=env.B)
    assert result["changed"] is True
    assert (result["replica"]["pool"], result["replica"]["replica_state"]) == (env.B, "active")
    assert [(r["pool"], r["replica_state"]) for r in result["replicas"]] == [(env.B, "active"), (env.A, "in_sync")]
    assert same(env)   # the final update carried late.txt
    assert env.record_pools("s1") == [env.B]
    record, pool = env.load("s1")
    assert str(pool.ref) == env.B and record["instances"][0]["pool"] == env.B
    # promoting the active replica is no change
    assert manager(env).promoted("s1", pool=env.B)["changed"] is False
    # the old active is a replica now: a change on the new active reaches it as a delta
    with open(env.share_path(env.B, "s1") + "/new.txt", "w") as handle:
        handle.write("new side")
    result = manager(env).resynced("s1", pool=env.A)
    assert result["replica"]["last_update"]["files"] == 1
    assert same(env)


def test_promoting_an_out_of_sync_replica_needs_force(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    manager(env).present("s1", pool=env.B, replica_state="out_of_sync")
    before = env.state()
    with pytest.raises(InvalidRequest, match=r"needs administrator intent \(force=true\)"):
        manager(env).promoted("s1", pool=env.B)
    assert env.state() == before
    assert manager(env).promoted("s1", pool=env.B, force=True)["changed"] is True


def test_forced_promotion_with_the_active_pool_gone_then_failback(env, tmp_path):
    path_a = make_share(env)
    manager(env).present("s1", pool=env.B)
    pool_a = env.pool_path(env.A)
    # the active pool disappears (as an unmounted pool does: its path is no folder)
    with open(os.path.join(path_a, "after-last-sync.txt"), "w") as handle:
        handle.write("only on the old active")
    hidden = str(tmp_path / "pool-a-away")
    shutil.move(pool_a, hidden)
    with pytest.raises(InvalidRequest, match="not reachable; promoting now loses what was written there after"):
        manager(env).promoted("s1", pool=env.B)
    result = manager(env).promoted("s1", pool=env.B, force=True)
    assert result["changed"] is True and result["replica"]["replica_state"] == "active"
    assert [(r["pool"], r["replica_state"], r["status"]) for r in result["replicas"]] == [
        (env.B, "active", "available"), (env.A, "out_of_sync", "error")]
    assert result["replicas"][1]["fence_pending"] is True
    record, pool = env.load("s1")
    assert str(pool.ref) == env.B and record["replication"]["last_promotion"]["forced"] is True
    # the old active comes back with its old record: the new one wins and the old one is removed
    shutil.move(hidden, pool_a)
    assert env.record_pools("s1") == [env.A, env.B]
    with open(os.path.join(env.share_path(env.B, "s1"), "on-new-active.txt"), "w") as handle:
        handle.write("new active")
    # present on it (what update_replicas does for such a replica) fences it and changes nothing else
    # (the immutable attribute needs root: without it the fence is recorded as failed)
    result = manager(env).present("s1", pool=env.A)
    if os.geteuid() == 0:
        assert result["replica"]["fenced_at"] and not result["replica"]["fence_pending"]
    else:
        assert "CAP_LINUX_IMMUTABLE" in result["replica"]["fence_error"] and result["replica"]["fence_pending"]
    assert result["replica"]["replica_state"] == "out_of_sync"
    with pytest.raises(InvalidRequest) as info:
        manager(env).resynced("s1", pool=env.A)
    message = str(info.value)
    assert "after-last-sync.txt" in message and "force=true" in message
    assert env.record_pools("s1") == [env.B]
    record, _pool = env.load("s1")
    old = [r for r in record["replicas"] if r["pool"] == env.A][0]
    assert bool(old.get("fenced_at")) is (os.geteuid() == 0)
    kept = old["kept_divergence"]
    assert os.path.exists(os.path.join(kept, "after-last-sync.txt"))
    # with force the old active becomes a copy of the new one; what it had stays kept
    result = manager(env).resynced("s1", pool=env.A, force=True)
    assert result["replica"]["replica_state"] == "in_sync" and not result["replica"]["fence_pending"]
    assert same(env)
    assert os.path.exists(os.path.join(kept, "after-last-sync.txt"))
    # and fails back: a planned promotion
    assert manager(env).promoted("s1", pool=env.A)["changed"] is True
    assert env.record_pools("s1") == [env.A]
    assert same(env)


def test_a_write_during_the_last_updates_proof_walk_is_named_at_failback(env, tmp_path, monkeypatch):
    """The walk after a pass proves the point; an entry written after the walk passed it (a long
    walk: here 0.1 s before it ends) is not in the replica, and a failback after a forced
    promotion must count it as the old active's own write, not overwrite it unnamed."""
    path_a = make_share(env)
    time.sleep(0.1)
    mgr = manager(env)
    driver = mgr.ctx.driver(mgr.ctx.pool(env.A))
    real = driver._changed_since

    def written_behind_the_walk(*args):
        quiet = real(*args)
        with open(os.path.join(path_a, "dir", "behind-the-walk.txt"), "w") as handle:
            handle.write("written while the walk ran")
        time.sleep(0.1)
        return quiet
    monkeypatch.setattr(driver, "_changed_since", written_behind_the_walk)
    assert mgr.present("s1", pool=env.B)["replica"]["replica_state"] == "in_sync"
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(env.share_path(env.B, "s1"), "dir", "behind-the-walk.txt"))
    pool_a = env.pool_path(env.A)
    hidden = str(tmp_path / "pool-a-away")
    shutil.move(pool_a, hidden)
    manager(env).promoted("s1", pool=env.B, force=True)
    shutil.move(hidden, pool_a)
    manager(env).present("s1", pool=env.A)  # fences the old active
    with pytest.raises(InvalidRequest, match=r"it was written after its last replicated point.*behind-the-walk\.txt"):
        manager(env).resynced("s1", pool=env.A)
    kept = manager(env).resynced("s1", pool=env.A, force=True)["replica"]["kept_divergence"]
    assert os.path.exists(os.path.join(kept, "dir", "behind-the-walk.txt")) and same(env)


def test_a_fence_that_fails_is_recorded_and_tried_again_without_stopping_the_run(env, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root: only root (CAP_LINUX_IMMUTABLE) sets the immutable attribute of the fence")
    make_share(env)
    manager(env).present("s1", pool=env.B)
    pool_a = env.pool_path(env.A)
    hidden = str(tmp_path / "pool-a-away")
    shutil.move(pool_a, hidden)
    manager(env).promoted("s1", pool=env.B, force=True)
    shutil.move(hidden, pool_a)
    from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport

    def no_flags(self, path, flags):
        raise OSError(95, "Operation not supported")
    monkeypatch.setattr(LocalTransport, "set_flags_tree", no_flags)
    result = manager(env).present("s1", pool=env.A)
    old = result["replica"]
    assert old["fence_pending"] is True and not old.get("fenced_at")
    assert "Operation not supported" in old["fence_error"] and "fence share s1" in old["fence_error"]
    monkeypatch.undo()
    result = manager(env).present("s1", pool=env.A)
    assert result["replica"]["fenced_at"] and not result["replica"].get("fence_error")
    with pytest.raises(PermissionError):
        open(os.path.join(env.share_path(env.A, "s1"), "plain.txt"), "a")
    result = manager(env).resynced("s1", pool=env.A, force=True)
    assert result["replica"]["replica_state"] == "in_sync" and result["replica"]["fence_lifted_at"]
    assert same(env)


def test_a_fenced_old_active_can_be_deleted(env, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: only root (CAP_LINUX_IMMUTABLE) sets the immutable attribute of the fence")
    make_share(env)
    manager(env).present("s1", pool=env.B)
    pool_a = env.pool_path(env.A)
    hidden = str(tmp_path / "pool-a-away")
    shutil.move(pool_a, hidden)
    manager(env).promoted("s1", pool=env.B, force=True)
    shutil.move(hidden, pool_a)
    assert manager(env).present("s1", pool=env.A)["replica"]["fenced_at"]
    path = env.share_path(env.A, "s1")
    with pytest.raises(PermissionError):
        os.unlink(os.path.join(path, "plain.txt"))
    assert manager(env).absent("s1", pool=env.A)["changed"] is True
    assert not os.path.exists(path)
    assert [r["pool"] for r in env.load("s1")[0]["replicas"]] in ([], [env.B])


def test_promotion_and_resync_need_a_named_replica(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    with pytest.raises(InvalidRequest, match="name it with pool"):
        manager(env).promoted("s1")
    with pytest.raises(NotFound, match="it has no replica in localhost@be1#c"):
        manager(env).resynced("s1", pool="localhost@be1#c")


def test_a_failed_update_records_error_and_names_the_cause(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    record, _pool = env.load("s1")
    replica = record["replicas"][1]
    target = env.share_path(env.B, "s1")
    shutil.rmtree(target)
    with open(target, "w") as handle:     # a file where the replica's folder was
        handle.write("not a folder")
    with pytest.raises(StorageError):
        manager(env).resynced("s1", replica_id=replica["id"])
    record, _pool = env.load("s1")
    assert record["replicas"][1]["replica_state"] == "error" and record["replicas"][1]["sync_error"]


class Killed(BaseException):
    """Stands for the run being killed: no except clause of the manager catches it."""


def test_a_posix_replica_never_claims_in_sync_while_its_update_runs(env, monkeypatch):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    seen = []
    mgr = manager(env)
    driver = mgr.ctx.driver(mgr.ctx.pool(env.A))
    real = driver.replica_update

    def watching(*args):
        seen.append(env.read_record(env.A, "s1")["replicas"][1]["replica_state"])
        raise Killed()
    monkeypatch.setattr(driver, "replica_update", watching)
    with pytest.raises(Killed):
        mgr.resynced("s1", pool=env.B)
    assert seen == ["out_of_sync"]
    assert env.read_record(env.A, "s1")["replicas"][1]["replica_state"] == "out_of_sync"
    monkeypatch.setattr(driver, "replica_update", real)
    assert manager(env).resynced("s1", pool=env.B)["replica"]["replica_state"] == "in_sync"


@pytest.mark.parametrize("specs, delayed", [(READABLE, True), ({"replication_type": "dr"}, False)],
                         ids=["readable", "dr"])
def test_a_readable_replica_gets_the_changes_of_an_update_at_the_end_of_its_pass(env, monkeypatch, specs, delayed):
    """Readers of a readable replica must not see a mix of two points for the whole transfer: its
    rsync keeps new files aside and deletes at the end (--delay-updates, --delete-delay). A dr
    replica, read by nobody, is updated in place."""
    path = make_share(env, specs=specs)
    manager(env).present("s1", pool=env.B)
    with open(os.path.join(path, "new.txt"), "w") as handle:
        handle.write("new\n")
    os.unlink(os.path.join(path, sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))[0]))
    mgr = manager(env)
    argvs = recording_runs(env, monkeypatch, mgr)
    assert mgr.resynced("s1", pool=env.B)["replica"]["replica_state"] == "in_sync"
    target = env.share_path(env.B, "s1")
    passes = [a for a in argvs if a[0] == "rsync" and a[-1].rstrip("/") == target]
    assert passes, argvs
    for rsync in passes:
        assert ("--delay-updates" in rsync and "--delete-delay" in rsync) is delayed, rsync
    assert same(env), "the update did not bring the replica to the active's tree"
    assert not [d for d, _sub, _files in os.walk(env.share_path(env.B, "s1")) if d.endswith(".~tmp~")]


def test_a_promotion_killed_during_its_final_update_is_finished_by_a_rerun(env, monkeypatch):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    mgr = manager(env)
    driver = mgr.ctx.driver(mgr.ctx.pool(env.A))

    def killed(*args):
        raise Killed()
    monkeypatch.setattr(driver, "replica_update", killed)
    with pytest.raises(Killed):
        mgr.promoted("s1", pool=env.B)
    record = env.read_record(env.A, "s1")
    assert record["replicas"][1]["status"] == "replication_change"
    assert [r["replica_state"] for r in record["replicas"]].count("active") == 1
    result = manager(env).promoted("s1", pool=env.B)
    assert result["replica"]["replica_state"] == "active" and env.record_pools("s1") == [env.B]
    assert same(env)


def test_a_promotion_or_resync_while_another_run_holds_the_share_is_refused_as_busy(env):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    before = env.state()
    with lock_held_by_other_process(env.backends, "s1", "replica promoted"):
        for call in (lambda: manager(env).promoted("s1", pool=env.B),
                     lambda: manager(env).resynced("s1", pool=env.B)):
            with pytest.raises(Busy, match="another run holds its lock"):
                call()
    assert env.state() == before


HOLDER = """
import sys
f = open(sys.argv[1], 'a')
print('ready', flush=True)
sys.stdin.readline()
f.write('still the active replica')
f.close()
"""


def test_a_planned_promotion_refuses_while_a_file_of_the_active_is_open_for_writing(env):
    path = make_share(env)
    manager(env).present("s1", pool=env.B)
    # another process (the scan leaves out its own) holds a file open for writing
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, os.path.join(path, "plain.txt")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(StorageError, match=r"open for writing and could change it after the final update: \d+ \(python\): \S*/plain.txt"):
            manager(env).promoted("s1", pool=env.B)
    finally:
        holder.communicate("go\n", timeout=30)
    record, pool = env.load("s1")
    assert str(pool.ref) == env.A
    assert [(r["pool"], r["replica_state"], r["status"]) for r in record["replicas"]] == [
        (env.A, "active", "available"), (env.B, "in_sync", "available")]
    assert manager(env).promoted("s1", pool=env.B)["changed"] is True
    assert same(env)


def test_a_posix_update_while_the_share_keeps_changing_is_not_claimed_in_sync(env):
    import threading

    path = make_share(env)
    manager(env).present("s1", pool=env.B)
    stop = threading.Event()

    def writer():
        count = 0
        while not stop.is_set():
            with open(os.path.join(path, "busy.log"), "a") as handle:
                handle.write("line %d\n" % count)
            count += 1
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = manager(env).resynced("s1", pool=env.B)
    finally:
        stop.set()
        thread.join()
    update = result["replica"]["last_update"]
    assert update["verified"] is False and update["passes"] == 3
    assert result["replica"]["replica_state"] == "out_of_sync"
    # once quiet, the next update is verified and the trees are equal
    result = manager(env).resynced("s1", pool=env.B)
    assert result["replica"]["replica_state"] == "in_sync" and result["replica"]["last_update"]["verified"] is True
    assert same(env)


# --------------------------------------------------------------------------- updates that copy what changed


def quiet_share(env, settle=0.1, **kwargs):
    """A share with a replica whose first update is verified, left quiet for ``settle`` seconds
    (more than the change-time margin, 0.05 s) so that the next update starts from its point."""
    path = make_share(env, **kwargs)
    time.sleep(settle)
    manager(env).present("s1", pool=env.B)
    return path


def update(env, monkeypatch, pool=Env.B):
    """resynced after 0.1 s without writes (a change within the change-time margin of the start
    costs a second pass); (last_update, the argv of every rsync pass into the replica)."""
    time.sleep(0.1)
    mgr = manager(env)
    argvs = recording_runs(env, monkeypatch, mgr)
    replica = mgr.resynced("s1", pool=pool)["replica"]
    target = env.share_path(pool, "s1")
    return replica["last_update"], [a for a in argvs if a[0] == "rsync" and a[-1].rstrip("/") == target]


def files_from(argv):
    """The entries of the --files-from list of an rsync argv (read back from the test's copy)."""
    return [a for a in argv if a.startswith("--files-from=")]


def test_an_update_after_a_verified_one_copies_only_what_changed(env, monkeypatch):
    path = quiet_share(env)
    # content, mode, an xattr, a new file and a removed one in a nested folder, a new hard link
    # (its inode's other name is at the top), a folder renamed into another one
    with open(os.path.join(path, "dir", "sub", "deep.bin"), "r+b") as handle:
        handle.write(b"changed")
    os.chmod(os.path.join(path, "with space"), 0o600)
    os.setxattr(os.path.join(path, "dir", "sub", "deep.bin"), "user.mobility.later", b"v")
    with open(os.path.join(path, "empty", "nested-empty", "new.txt"), "w") as handle:
        handle.write("new\n")
    os.link(os.path.join(path, "plain.txt"), os.path.join(path, "dir", "sub", "second-link"))
    os.rename(os.path.join(path, "dir", "sub"), os.path.join(path, "empty", "moved"))
    lists = []
    real_list = posix_changes.list_changes

    def keeping(transport, where, since_ns, ignore, list_path, *args):
        real_list(transport, where, since_ns, ignore, list_path, *args)
        with open(list_path, "rb") as handle:
            lists.append(sorted(e for e in handle.read().split(b"\0") if e))
    monkeypatch.setattr(posix_changes, "list_changes", keeping)
    last, passes = update(env, monkeypatch)
    assert (last["incremental"], last["full_send_reason"], last["verified"]) == (True, None, True)
    assert len(passes) == 1 and files_from(passes[0]) and "-r" in passes[0], passes
    # the walk listed what changed, not the whole tree
    assert lists == [[b"dir", b"dir/hardlink-to-plain", b"empty", b"empty/moved", b"empty/moved/deep.bin", b"empty/moved/second-link",
                      b"empty/nested-empty", b"empty/nested-empty/new.txt", b"plain.txt", b"with space"]]
    assert same(env)
    # the list is not left behind; the next update also starts from its point
    folder = os.path.join(env.pool_path(env.A), ".mobility", "replication", env.read_record(env.A, "s1")["id"])
    assert os.listdir(folder) == [env.read_record(env.A, "s1")["replicas"][1]["change_marks"]["source"]["name"]]
    os.unlink(os.path.join(path, "empty", "nested-empty", "new.txt"))
    last, passes = update(env, monkeypatch)
    assert last["incremental"] is True and same(env)


def test_a_swapped_pair_of_folders_is_copied_whole(env, monkeypatch):
    """renameat2(RENAME_EXCHANGE): both folders keep their names and their files keep their change
    times; each folder's own change time moves, and a changed folder is copied with all it holds."""
    path = make_share(env)
    for name, count in (("left", 3), ("right", 5)):
        os.makedirs(os.path.join(path, "pair", name, "inner"))
        for index in range(count):
            with open(os.path.join(path, "pair", name, "inner", "f%d" % index), "w") as handle:
                handle.write("%s %d\n" % (name, index))
    time.sleep(0.1)
    manager(env).present("s1", pool=env.B)
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    left, right = (os.fsencode(os.path.join(path, "pair", n)) for n in ("left", "right"))
    if libc.renameat2(at_fdcwd, left, at_fdcwd, right, rename_exchange) != 0:
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here: errno %d" % ctypes.get_errno())
    assert sorted(os.listdir(os.path.join(path, "pair", "left", "inner"))) == ["f%d" % i for i in range(5)]
    last, _passes = update(env, monkeypatch)
    assert last["incremental"] is True
    assert same(env)


def test_a_change_to_the_replica_itself_makes_the_update_copy_the_whole_tree(env, monkeypatch):
    quiet_share(env)
    with open(os.path.join(env.share_path(env.B, "s1"), "dir", "sub", "deep.bin"), "ab") as handle:
        handle.write(b"written on the replica")
    last, passes = update(env, monkeypatch)
    assert last["incremental"] is False
    assert last["full_send_reason"].startswith("the replica changed since its last update (")
    assert "deep.bin" in last["full_send_reason"]
    assert not files_from(passes[0])
    assert same(env)
    # with the replica repaired, the next update copies what changed again
    assert update(env, monkeypatch)[0]["incremental"] is True


def test_a_lost_mark_makes_the_update_copy_the_whole_tree(env, monkeypatch):
    """A filesystem restored from a backup, or another one mounted at the pool, lacks the mark of
    the last update: change times tell nothing about it."""
    path = quiet_share(env)
    marks = env.read_record(env.A, "s1")["replicas"][1]["change_marks"]
    folder = os.path.join(env.pool_path(env.A), ".mobility", "replication", env.read_record(env.A, "s1")["id"])
    os.rmdir(os.path.join(folder, marks["source"]["name"]))
    os.makedirs(os.path.join(folder, marks["source"]["name"]))  # the same name, another inode
    with open(os.path.join(path, "plain.txt"), "a") as handle:
        handle.write("more\n")
    last, passes = update(env, monkeypatch)
    assert last["incremental"] is False and not files_from(passes[0])
    assert last["full_send_reason"] == ("the mark of the last update on the active replica is not the one recorded "
                                        "(another filesystem)")
    assert same(env)


@pytest.mark.parametrize("edit, reason", [
    (lambda mark: mark.update(offset=mark["offset"] + 5), "the clock of the host of the active replica was set back by 5.0 s since the last update"),
    (lambda mark: mark.update(offset=mark["offset"] - 90), "the clock of the host of the active replica was set forward by 90.0 s since the last update"),
    (lambda mark: mark.update(boot_id="another-boot"), "the host of the active replica restarted since the last update"),
], ids=["set-back", "set-forward", "restart"])
def test_a_clock_that_was_set_or_a_restart_makes_the_update_copy_the_whole_tree(env, monkeypatch, edit, reason):
    path = quiet_share(env)

    def edited(record):
        edit(record["replicas"][1]["change_marks"]["source"])
    env.edit("s1", _=edited)
    with open(os.path.join(path, "plain.txt"), "a") as handle:
        handle.write("more\n")
    last, _passes = update(env, monkeypatch)
    assert (last["incremental"], last["full_send_reason"]) == (False, reason)
    assert same(env)


def test_small_clock_drift_backwards_widens_the_walk_instead(env, monkeypatch):
    quiet_share(env, settle=0.7)  # the widened walk must not reach back to the share's creation
    since = []
    real_list = posix_changes.list_changes

    def watching(transport, where, since_ns, *args):
        since.append(since_ns)
        return real_list(transport, where, since_ns, *args)
    monkeypatch.setattr(posix_changes, "list_changes", watching)
    marks = env.read_record(env.A, "s1")["replicas"][1]["change_marks"]

    def edited(record):
        record["replicas"][1]["change_marks"]["source"]["offset"] += 0.5
    env.edit("s1", _=edited)
    last, _passes = update(env, monkeypatch)
    assert last["incremental"] is True, last["full_send_reason"]
    # the mark less the margin, the drift back (0.5 s, less what the clock moved between the two
    # marks) and the slack of /proc/uptime
    widened = marks["source"]["ctime_ns"] - since[0]
    assert 0.05e9 + 0.45e9 <= widened <= 0.05e9 + 0.5e9 + 0.02e9 + 0.05e9, widened


def test_an_entry_removed_after_the_walk_costs_a_whole_pass_not_a_missed_change(env, monkeypatch):
    path = quiet_share(env)
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(path, "dir", name), "w") as handle:
            handle.write(name)
    real_list = posix_changes.list_changes

    def then_removed(*args):
        real_list(*args)
        os.unlink(os.path.join(path, "dir", "a.txt"))  # after the walk listed it, before rsync
    monkeypatch.setattr(posix_changes, "list_changes", then_removed)
    last, passes = update(env, monkeypatch)
    assert last["incremental"] is True and last["verified"] is True
    assert [bool(files_from(a)) for a in passes] == [True, False]
    assert same(env)


def test_each_secondary_updates_from_its_own_point(env, monkeypatch):
    path = quiet_share(env)
    third = Env.A.replace("#a", "#c")
    manager(env).present("s1", pool=third)
    for round_ in range(2):
        for pool in (env.B, third):
            with open(os.path.join(path, "dir", "sub", "deep.bin"), "ab") as handle:
                handle.write(b"round %d %s" % (round_, pool.encode()))
            last, _passes = update(env, monkeypatch, pool)
            assert last["incremental"] is True, (round_, pool, last["full_send_reason"])
            assert same(env, right=pool)


def test_the_marks_of_updates_go_with_the_replicas_that_named_them(env, monkeypatch):
    quiet_share(env)
    update(env, monkeypatch)
    share_id = env.read_record(env.A, "s1")["id"]
    active = os.path.join(env.pool_path(env.A), ".mobility", "replication", share_id)
    replica = os.path.join(env.pool_path(env.B), ".mobility", "replication", share_id)
    marks = env.read_record(env.A, "s1")["replicas"][1]["change_marks"]
    # one mark on each side: the point the next update starts from, the replica's own
    assert os.listdir(active) == [marks["source"]["name"]]
    assert os.listdir(replica) == [marks["replica"]["name"]]
    manager(env).absent("s1", pool=env.B)
    assert not os.path.exists(active) and not os.path.exists(replica)


def test_a_failback_after_a_planned_promotion_copies_only_what_changed_on_the_new_active(env, monkeypatch):
    path = quiet_share(env)
    manager(env).promoted("s1", pool=env.B)
    new_active = env.share_path(env.B, "s1")
    with open(os.path.join(new_active, "dir", "sub", "deep.bin"), "ab") as handle:
        handle.write(b"written on the new active")
    last, passes = update(env, monkeypatch, pool=env.A)
    assert (last["incremental"], last["full_send_reason"], last["files"]) == (True, None, 1)
    assert files_from(passes[0])
    assert same(env)
    # a write on the old active (a secondary after a planned promotion, as any other) is seen
    # after its mark: the failback copies the whole tree and the write is replaced
    manager(env).promoted("s1", pool=env.A)
    with open(os.path.join(env.share_path(env.B, "s1"), "dir", "sub", "deep.bin"), "ab") as handle:
        handle.write(b"written on the old active")
    last = manager(env).resynced("s1", pool=env.B)["replica"]["last_update"]
    assert last["incremental"] is False and last["full_send_reason"].startswith("the replica changed")
    assert same(env, left=env.B, right=env.A) and b"written on the old active" not in open(
        os.path.join(env.share_path(env.B, "s1"), "dir", "sub", "deep.bin"), "rb").read()


# --------------------------------------------------------------------------- snapshots


def test_an_update_that_leaves_a_snapshot_behind_does_not_claim_in_sync(env, monkeypatch):
    make_share(env)
    replica = manager(env).present("s1", pool=env.B)["replica"]
    snap = env.shares().snapshot_present("s1", "one")["snapshot"]
    assert (snap["status"], snap["replicas_pending"]) == ("creating", [replica["id"]])
    mgr = manager(env)
    driver = mgr.ctx.driver(mgr.ctx.pool(env.A))
    real = driver.replica_update

    def forgetful(*args):
        stats = real(*args)
        stats["snapshots"] = []
        return stats
    monkeypatch.setattr(driver, "replica_update", forgetful)
    result = mgr.resynced("s1", pool=env.B)["replica"]
    assert result["replica_state"] == "out_of_sync" and "lacks snapshots one" in result["sync_error"]
    # no in_sync replica lacks it any more: the snapshot is available
    record = env.read_record(env.A, "s1")
    assert record["snapshots"][0]["status"] == "available" and "replicas_pending" not in record["snapshots"][0]
    monkeypatch.setattr(driver, "replica_update", real)
    result = manager(env).resynced("s1", pool=env.B)["replica"]
    assert (result["replica_state"], result["snapshots"], result["sync_error"]) == ("in_sync", ["one"], None)
    assert tree_state(os.path.join(env.pool_path(env.A), "snapshots", "s1", "one")) == tree_state(
        os.path.join(env.pool_path(env.B), "snapshots", "s1", "one"))


def test_a_forced_promotion_marks_a_snapshot_the_replica_never_got_as_error(env, tmp_path):
    make_share(env)
    manager(env).present("s1", pool=env.B)
    env.shares().snapshot_present("s1", "carried")
    manager(env).resynced("s1", pool=env.B)
    env.shares().snapshot_present("s1", "late")
    # the replica's record copy must list the late snapshot: a replica run that saves writes it everywhere
    manager(env).present("s1", pool=env.B, replica_state="out_of_sync")
    hidden = str(tmp_path / "pool-a-away")
    shutil.move(env.pool_path(env.A), hidden)
    manager(env).promoted("s1", pool=env.B, force=True)
    record, pool = env.load("s1")
    got = dict((s["name"], (s["status"], s["path"])) for s in record["snapshots"])
    assert got["carried"] == ("available", os.path.join(env.pool_path(env.B), "snapshots", "s1", "carried"))
    assert got["late"][0] == "error"
    assert "not on the replica promoted" in [s for s in record["snapshots"] if s["name"] == "late"][0]["error"]
