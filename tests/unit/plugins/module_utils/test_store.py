"""Unit tests for plugins/module_utils/store.py: atomic records, the share lock, revisions."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, HostUnreachable, InvalidRequest, NotFound, StorageError)
from ansible_collections.storage.mobility.plugins.module_utils.store import (
    HISTORY_LIMIT, PoolStore, ShareLock, ShareRepository, now_iso)
from ansible_collections.storage.mobility.plugins.module_utils.transport import local as local_mod
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

from mobility_helpers import Env, backend_spec, lock_held_by_other_process


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture
def repo(env):
    return ShareRepository(Backends(env.backends))


def record(name="s1", rid="id-1", **extra):
    data = {"id": rid, "name": name, "task_state": None, "status": "available"}
    data.update(extra)
    return data


def test_now_iso_is_utc_with_microseconds():
    stamp = now_iso()
    assert len(stamp) == len("2024-01-01T00:00:00.000000Z") and stamp.endswith("Z") and stamp[10] == "T"


# --------------------------------------------------------------------------- PoolStore


def test_pool_store_reads_writes_lists_and_deletes(env, repo):
    store = repo.store(env.pool(env.A))
    assert store.read_share("s1") is None
    assert store.list_shares() == []
    store.write_share(record())
    store.write_share(record("s2", "id-2"))
    assert store.read_share("s1")["id"] == "id-1"
    assert store.list_shares() == ["s1", "s2"]
    assert store.delete_share("s1") is True
    assert store.delete_share("s1") is False  # already gone: not an error, not a change
    assert store.list_shares() == ["s2"]


def test_pool_store_refuses_unsafe_names(env, repo):
    store = repo.store(env.pool(env.A))
    for bad in ("../escape", "a/b", "-x", "a\nb"):
        with pytest.raises(InvalidRequest):
            store.share_path(bad)
        with pytest.raises(InvalidRequest):
            store.lock_path(bad)


def test_pool_store_reports_a_corrupt_record(env, repo):
    store = repo.store(env.pool(env.A))
    store.ensure()
    with open(store.share_path("s1"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(StorageError, match="is not valid JSON"):
        store.read_share("s1")


def test_pool_store_ensure_fails_clearly_when_the_pool_is_missing(tmp_path):
    backends = Backends([{"name": "be1", "pools": {"gone": str(tmp_path / "missing")}}])
    store = PoolStore(backends.pools()[0], LocalTransport(CommandRunner()))
    with pytest.raises(StorageError, match="does not exist or is not a folder"):
        store.ensure()
    assert not (tmp_path / "missing").exists()


def test_writing_a_record_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    """A run killed while it wrote a record leaves the atomic write's temporary file (its process id
    in the name) beside the records; the next write removes it, never one whose writer still runs."""
    (tmp_path / "pool").mkdir()
    backends = Backends([{"name": "be1", "pools": {"p": str(tmp_path / "pool")}}])
    store = PoolStore(backends.pools()[0], LocalTransport(CommandRunner()))
    store.ensure()
    folder = os.path.dirname(store.share_path("s1"))
    dead = 4194000
    while os.path.exists("/proc/%d" % dead):
        dead -= 1
    for name in (".tmp.%d.0123456789ab" % dead, ".tmp.%d.0123456789ab" % os.getpid(), ".tmp.notapid"):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write("{")
    store.write_share(record())
    assert sorted(os.listdir(folder)) == sorted([".tmp.%d.0123456789ab" % os.getpid(), ".tmp.notapid", "s1.json"])
    assert store.read_share("s1")["name"] == "s1"


# --------------------------------------------------------------------------- repository


def test_save_bumps_revision_stamps_host_and_keeps_bounded_history(env, repo):
    pool = env.pool(env.A)
    rec = record()
    repo.save(rec, pool, "first")
    repo.save(rec, pool)  # no event: no history entry
    assert rec["revision"] == 2 and rec["host"] == env.A and rec["updated_at"]
    on_disk = env.read_record(env.A, "s1")
    assert on_disk["revision"] == 2
    assert [h["event"] for h in on_disk["history"]] == ["first"]
    for i in range(HISTORY_LIMIT + 5):
        repo.save(rec, pool, "event %d" % i)
    history = env.read_record(env.A, "s1")["history"]
    assert len(history) == HISTORY_LIMIT
    assert history[-1]["event"] == "event %d" % (HISTORY_LIMIT + 4)


def test_the_highest_revision_wins(env, repo):
    a, b = env.pool(env.A), env.pool(env.B)
    repo.store(a).write_share(record(revision=7, where="a"))
    repo.store(b).write_share(record(revision=8, where="b"))
    found = repo.find_all("s1")
    assert [(r["where"], str(p.ref)) for r, p in found] == [("b", env.B), ("a", env.A)]
    rec, pool = repo.find("s1")
    assert rec["where"] == "b" and str(pool.ref) == env.B
    # and the other way round
    repo.store(a).write_share(record(revision=9, where="a"))
    assert repo.find("s1")[0]["where"] == "a"
    assert repo.find("nothing") == (None, None)
    assert repo.list_names() == ["s1"]


def test_stale_copy_is_removed_only_under_cleanup(env):
    ctx = env.ctx()
    a, b = ctx.pool(env.A), ctx.pool(env.B)
    ctx.repo.store(a).write_share(record(revision=3, where="a"))
    ctx.repo.store(b).write_share(record(revision=4, where="b"))
    rec, pool = ctx.load("s1")
    assert rec["where"] == "b" and str(pool.ref) == env.B
    assert env.record_pools("s1") == [env.A, env.B], "a plain load must not delete anything"
    check = env.ctx(check_mode=True)
    check.load("s1", cleanup=True)
    assert env.record_pools("s1") == [env.A, env.B], "check mode must not delete anything"
    rec, pool = ctx.load("s1", cleanup=True)
    assert rec["where"] == "b"
    assert env.record_pools("s1") == [env.B]


def test_a_different_share_under_the_same_name_is_an_error(env):
    ctx = env.ctx()
    ctx.repo.store(ctx.pool(env.A)).write_share(record(rid="id-1", revision=1))
    ctx.repo.store(ctx.pool(env.B)).write_share(record(rid="id-OTHER", revision=2))
    for cleanup in (False, True):
        with pytest.raises(StorageError) as info:
            ctx.load("s1", cleanup=cleanup)
        assert not isinstance(info.value, (NotFound, InvalidRequest))
        assert "two different shares" in str(info.value)
        assert "id-1" in str(info.value) and "id-OTHER" in str(info.value)
    assert env.record_pools("s1") == [env.A, env.B], "nothing is removed when the ids differ"


def test_load_of_an_unknown_share_names_it_and_the_pools(env):
    ctx = env.ctx()
    with pytest.raises(NotFound) as info:
        ctx.load("ghost")
    assert "Unknown share 'ghost'" in str(info.value)
    assert env.A in str(info.value) and env.B in str(info.value)
    assert ctx.load("ghost", required=False) == (None, None)


def test_pools_whose_folder_is_missing_are_skipped(tmp_path):
    spec = backend_spec(tmp_path, pools=("a",))
    spec["pools"]["gone"] = {"path": str(tmp_path / "nowhere")}
    repo = ShareRepository(Backends([spec]))
    assert [str(s.pool.ref) for s in repo.available_stores()] == ["localhost@be1#a"]
    assert repo.find_all("s1") == []
    with repo.lock("s1", "test"):
        pass
    assert not (tmp_path / "nowhere").exists()


class DownHost(LocalTransport):
    """This machine, but every call about ``down`` (a path prefix) fails as an unreachable host does."""

    def __init__(self, down):
        super().__init__(CommandRunner())
        self.down = down
        self.asked = 0

    def is_dir(self, path):
        if path.startswith(self.down):
            self.asked += 1
            raise HostUnreachable("Failed to connect on storage host far (10.9.0.9): unreachable (connection refused "
                                  "on port 22); ssh said: ...", host="far", failure="unreachable")
        return super().is_dir(path)


def test_the_pools_of_an_unreachable_host_are_skipped_once_and_a_step_that_needs_them_fails(tmp_path):
    spec = backend_spec(tmp_path, pools=("a",))
    far_spec = {"name": "be2", "driver": "posix", "host": "far", "pools": {"far": {"path": str(tmp_path / "far")}}}
    (tmp_path / "far").mkdir()
    transport = DownHost(str(tmp_path / "far"))
    repo = ShareRepository(Backends([spec, far_spec]), lambda backend: transport)
    assert [str(s.pool.ref) for s in repo.available_stores()] == ["localhost@be1#a"]
    assert repo.find_all("s1") == [] and transport.asked == 1, "the host is asked once per run"
    [error] = repo.unreachable()
    assert isinstance(error, HostUnreachable) and error.details["host"] == "far"
    far = [s for s in repo.stores.values() if s.pool.ref.pool == "far"][0]
    with pytest.raises(HostUnreachable, match="storage host far"):
        far.ensure()
    assert not (tmp_path / "far" / ".mobility").exists(), "nothing was written"


def test_load_of_a_share_found_nowhere_fails_with_the_unreachable_hosts_error(env, monkeypatch):
    ctx = env.ctx()
    down = HostUnreachable("Failed to connect on storage host far: unreachable", host="far")
    monkeypatch.setitem(ctx.repo.hosts_down, "far", down)
    with pytest.raises(HostUnreachable, match="storage host far"):
        ctx.load("ghost")
    assert ctx.load("ghost", required=False) == (None, None)


# --------------------------------------------------------------------------- ShareLock


def test_lock_held_by_another_process_raises_busy_naming_the_holder(env, repo):
    with lock_held_by_other_process(env.backends, "s1", "migration start") as holder:
        with pytest.raises(Busy) as info:
            repo.lock("s1", "second run").acquire()
        message = str(info.value)
        assert "Share s1 is busy" in message
        assert "pid %d" % holder.pid in message
        assert "migration start" in message
        # other shares are not affected
        with repo.lock("s2", "other share"):
            pass
    # released when the other process lets go
    with repo.lock("s1", "after"):
        pass


def test_a_failed_lock_releases_the_locks_already_taken(env, repo):
    # The holder locks s1 in every pool; make our first store free by locking only in pool b.
    backends_b_only = [dict(env.backends[0], pools={"b": env.backends[0]["pools"]["b"]})]
    with lock_held_by_other_process(backends_b_only, "s1", "holder of b"):
        lock = repo.lock("s1", "test")
        with pytest.raises(Busy, match="holder of b"):
            lock.acquire()
        assert lock.handles == []
    # our lock on pool a was released: another process can take both now
    with lock_held_by_other_process(env.backends, "s1", "again"):
        pass


def test_lock_records_its_holder_and_is_reentrant_after_release(env, repo):
    lock = repo.lock("s1", "purpose one")
    with lock:
        path = repo.store(env.pool(env.A)).lock_path("s1")
        info = json.loads(open(path).read())
        assert info["pid"] == os.getpid() and info["purpose"] == "purpose one"
    with repo.lock("s1", "purpose two"):
        pass


def test_a_second_lock_in_the_same_process_is_busy_too(env, repo):
    with repo.lock("s1", "first"):
        with pytest.raises(Busy):
            ShareLock(repo.available_stores(), "s1", "second").acquire()


def test_lock_refuses_unsafe_names(env, repo):
    with pytest.raises(InvalidRequest):
        repo.lock("../s1", "test")


def test_manager_refuses_while_another_process_holds_the_lock(env):
    env.create_share("s1")
    before = env.state()
    with lock_held_by_other_process(env.backends, "s1", "migration complete") as holder:
        for call in (lambda: env.migrations().start("s1", env.B, {}),
                     lambda: env.migrations().cancel("s1"),
                     lambda: env.migrations().complete("s1"),
                     lambda: env.migrations().reset("s1", None),
                     lambda: env.shares().absent("s1"),
                     lambda: env.create_share("s1", size=5)):
            with pytest.raises(Busy) as info:
                call()
            assert "pid %d" % holder.pid in str(info.value)
    assert env.state() == before
    # and once released the same call works
    assert env.migrations().start("s1", env.B, {})["changed"] is True


def test_context_rejects_an_unknown_driver(env):
    spec = dict(env.backends[0], driver="netapp")
    with pytest.raises(InvalidRequest, match="known share drivers are .*posix"):
        Context([spec])


# --------------------------------------------------------------------------- no lock file left by bad input


def _lock_files(env):
    found = []
    for pool in (env.A, env.B):
        folder = os.path.join(env.pool_path(pool), ".mobility", "locks")
        if os.path.isdir(folder):
            found += [os.path.join(pool, name) for name in os.listdir(folder)]
    return sorted(found)


def test_a_request_naming_an_unknown_share_leaves_no_lock_file(env):
    env.create_share("s1")
    assert _lock_files(env) == [os.path.join(env.A, "s1.lock"), os.path.join(env.B, "s1.lock")]
    for call in (lambda: env.migrations().start("ghost", env.B, {}),
                 lambda: env.migrations().complete("ghost"),
                 lambda: env.migrations().cancel("ghost"),
                 lambda: env.shares().snapshot_present("ghost", "snap1")):
        with pytest.raises(NotFound):
            call()
    assert env.shares().absent("ghost")["changed"] is False
    assert _lock_files(env) == [os.path.join(env.A, "s1.lock"), os.path.join(env.B, "s1.lock")]
    # a share that is deleted takes its lock files with it
    env.shares().absent("s1")
    assert _lock_files(env) == []


def test_a_lock_on_a_file_removed_meanwhile_is_taken_again_on_the_current_file(env, repo, monkeypatch):
    """A run that opened the lock file just before its holder removed it must not believe it
    holds the lock: it finds the path names another file and locks that one."""
    store = repo.store(env.pool(env.A))
    path = store.lock_path("s1")
    store.ensure()
    stale = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # opened by the holder, then removed
    os.unlink(path)
    real_open = os.open
    handed = []

    def open_once_stale(name, flags, *args):
        if name == path and not handed:
            handed.append(True)
            return os.dup(stale)
        return real_open(name, flags, *args)

    monkeypatch.setattr(local_mod.os, "open", open_once_stale)
    lock = ShareLock([store], "s1", "test")
    with lock:
        held = lock.handles[0][1].fd
        assert os.fstat(held).st_ino == os.stat(path).st_ino, "the lock is on the file at the path"
        assert os.fstat(held).st_ino != os.fstat(stale).st_ino
    os.close(stale)
