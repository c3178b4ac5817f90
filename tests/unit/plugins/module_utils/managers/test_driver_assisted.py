"""Unit tests for plugins/module_utils/managers/driver_assisted.py: what the driver-assisted
mechanism adds to the reference path (refreshing a finished phase 1, the driver's cleanup after the
switch, its live progress). The reference path itself, driven through the manager, is in
test_share_migration.py. Real shares in temporary pools (posix driver); driver calls are replaced
with monkeypatch where the test needs an answer the posix driver does not give.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError


def start(env, check_mode=False, **kw):
    return env.migrations(check_mode=check_mode).start("s1", env.B, {}, **kw)


def phase1_done(env):
    result = start(env)
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    return result


# =========================================================================== incremental drivers


def test_a_rerun_after_phase1_refreshes_through_the_driver(env, share, monkeypatch):
    phase1_done(env)
    calls = []

    def refresh(self, source, dest, record):
        calls.append((str(source), str(dest), record["migration"]["id"]))
        return True

    monkeypatch.setattr(PosixShareDriver, "migration_refresh", refresh)
    monkeypatch.setattr(PosixShareDriver, "migration_get_progress",
                        lambda self, *a: {"total_progress": 100, "bytes_sent": 12, "phase": "incremental"})
    result = start(env)
    assert result["changed"] is True
    assert result["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    rec = env.read_record(env.A, "s1")
    assert calls == [(env.A, env.B, rec["migration"]["id"])]
    assert rec["history"][-1]["event"] == "phase 1 refreshed: changes since the last copy sent"
    assert rec["progress"]["bytes_sent"] == 12 and rec["migration"]["refreshed_at"]
    # Nothing new to copy: no change, nothing written.
    monkeypatch.setattr(PosixShareDriver, "migration_refresh", lambda self, *a: False)
    before = env.state()
    assert start(env)["changed"] is False
    assert env.state() == before


def test_a_failed_refresh_keeps_phase1_done_and_the_destination(env, share, monkeypatch):
    phase1_done(env)

    def broken(self, *args):
        raise StorageError("btrfs receive exited with 1: no space left on device")

    monkeypatch.setattr(PosixShareDriver, "migration_refresh", broken)
    with pytest.raises(StorageError, match=r"Failed to refresh the copy of share s1 on .*no space left on device.*"
                                           r"stays in migration_driver_phase1_done"):
        start(env)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_DRIVER_PHASE1_DONE
    assert [i["role"] for i in rec["instances"]] == ["active", "destination"]
    assert env.migrations().complete("s1")["task_state"] == states.MIGRATION_SUCCESS


def test_refresh_is_predicted_but_not_run_in_check_mode(env, share, monkeypatch):
    phase1_done(env)
    monkeypatch.setattr(PosixShareDriver, "migration_refresh", lambda self, *a: pytest.fail("refreshed in check mode"))
    before = env.state()
    assert start(env, check_mode=True)["changed"] is False
    monkeypatch.setattr(PosixShareDriver, "migration_refresh_pending", lambda self, *a: True)
    result = start(env, check_mode=True)
    expected = ["copy the changes to share s1 since the last copy to %s" % env.B]
    assert result["changed"] is True and result["actions"] == expected
    assert env.state() == before


def test_driver_cleanup_runs_after_the_source_is_deleted(env, share, monkeypatch):
    phase1_done(env)
    seen = []

    def cleanup(self, source, dest, record):
        seen.append((os.path.exists(env.share_path(env.A, "s1")), record["task_state"]))
        return True

    monkeypatch.setattr(PosixShareDriver, "migration_cleanup", cleanup)
    assert env.migrations().complete("s1")["task_state"] == states.MIGRATION_SUCCESS
    # Cleanup after the switch: the migration is already a success, the source already gone.
    assert seen == [(False, states.MIGRATION_SUCCESS)]


def test_live_driver_progress_shows_in_the_share_view(env, share, monkeypatch):
    monkeypatch.setattr(PosixShareDriver, "migration_continue", lambda self, *a: False)
    monkeypatch.setattr(PosixShareDriver, "migration_get_progress", lambda self, *a: {"total_progress": 10})
    start(env, wait=False)
    live = {"total_progress": 55, "bytes_sent": 55, "bytes_total": 100, "rate_bytes_per_s": 5, "eta_seconds": 9}
    monkeypatch.setattr(PosixShareDriver, "migration_live_progress", lambda self, pool, record: live)
    view = env.shares().info("s1")[0]
    assert view["copy_progress"] == live and view["total_progress"] == 55
