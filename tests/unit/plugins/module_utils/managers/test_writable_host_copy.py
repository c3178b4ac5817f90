"""Unit tests for the writable host copy of plugins/module_utils/managers/host_assisted.py (chosen by
ShareMigrationManager.plan_mechanism): ``writable: true`` between pools the driver cannot move a
share between keeps the source writable through phase 1, sends an increment on every rerun of
phase 1, and makes the source read-only only in phase 2, whose read-only window is measured.

The pools are told apart by a faked device number (mobility_helpers.fake_other_filesystem), so the
posix driver refuses to rename as it does between two filesystems. Where the figures of a pass
matter, a real data copy job (rsync, the hash verification, the detached worker) runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import NoneExport
from ansible_collections.storage.mobility.plugins.module_utils.managers import host_assisted, share_migration

from mobility_helpers import RULE, copy_like_a_data_node, data_mover, fake_other_filesystem, mover_report as report, populate_share, tree_state


@pytest.fixture
def share(env, monkeypatch):
    env.create_share("s1", rules=[RULE])
    path = env.share_path(env.A, "s1")
    populate_share(path)
    fake_other_filesystem(monkeypatch, env.pool_path(env.B))
    return path


@pytest.fixture
def modes(monkeypatch):
    """The access modes the export helper is asked to apply, in order."""
    seen = []
    real = NoneExport.apply
    monkeypatch.setattr(NoneExport, "apply", lambda self, n, p, m: seen.append(m) or real(self, n, p, m))
    return seen


def start(env, check_mode=False, flags=None, **kw):
    return env.migrations(check_mode=check_mode).start("s1", env.B, {"writable": True} if flags is None else flags, **kw)


def complete(env, **kw):
    return env.migrations().complete("s1", **kw)


def to_phase1_done(env, jobs):
    plan = start(env)["copy_plan"]
    result = start(env, copy_report=data_mover(jobs, plan))
    assert result["task_state"] == states.DATA_COPYING_COMPLETED
    return plan


# --------------------------------------------------------------------------- choosing it


def test_writable_between_filesystems_is_a_host_copy_that_leaves_the_source_writable(env, share, modes):
    plan_only = start(env, check_mode=True)
    assert any("keep the source writable during phase 1" in a for a in plan_only["actions"]), plan_only["actions"]
    result = start(env)
    assert result["task_state"] == states.DATA_COPYING_STARTING and result["copy_required"] is True
    assert modes == [], "phase 1 of a writable copy touched the source's export"
    mig = env.read_record(env.A, "s1")["migration"]
    assert mig["mechanism"] == "host" and mig["requested"]["writable"] is True
    assert "different filesystems" in mig["driver_refusal"]
    assert mig["source_read_only"] is False and "read_only_at" not in mig
    assert "source kept writable, destination created" in [h["event"] for h in env.read_record(env.A, "s1")["history"]]
    # The data node still reads the source through a read-only mount of it.
    assert result["copy_plan"]["source"]["read_only"] is True


def test_without_writable_the_host_copy_is_read_only_from_the_start(env, share, modes):
    start(env, flags={})
    mig = env.read_record(env.A, "s1")["migration"]
    assert modes == ["ro"] and mig["source_read_only"] is True and mig["read_only_epoch"]


def test_force_host_assisted_with_writable_is_still_the_invalid_combination(env, share):
    before = env.state()
    with pytest.raises(InvalidRequest, match="Invalid combination: force_host_assisted_migration cannot be used with "
                                             "writable=true"):
        start(env, force_host_assisted=True)
    assert env.state() == before


def test_writable_with_snapshots_between_filesystems_is_refused_and_changes_nothing(env, share):
    env.shares().snapshot_present("s1", "snap1")
    before = env.state()
    with pytest.raises(InvalidRequest, match="cannot carry its snapshots"):
        start(env)
    assert env.state() == before


# --------------------------------------------------------------------------- phase 1


def test_a_first_copy_that_users_outran_is_kept_unverified(env, share, modes):
    """The verification ran but the users' writes outran it: phase 1 is done, the copy unverified."""
    plan = start(env)["copy_plan"]
    copy_like_a_data_node(plan)
    with open(os.path.join(share, "written-meanwhile.txt"), "w") as handle:
        handle.write("new")
    outrun = report(plan, sign=False, state="failed", verified=False, verification="failed",
                    missing=["written-meanwhile.txt"], error="Verification failed",
                    phases=[{"phase": "copying"}, {"phase": "verifying"}])
    result = start(env, copy_report=outrun)
    assert result["task_state"] == states.DATA_COPYING_COMPLETED
    copy = env.read_record(env.A, "s1")["migration"]["copy"]
    assert copy["verified"] is False and "Verification failed" in copy["unverified"] and "verified_at" not in copy
    assert os.path.isdir(env.share_path(env.B, "s1")) and modes == []


@pytest.mark.parametrize("over", [
    {"state": "failed", "error": "rsync exited with 11 (error in file I/O)", "phases": [{"phase": "copying"}]},
    {"state": "cancelled", "verified": False},
    # A verification of another pass proves nothing about this one.
    {"state": "failed", "verification": "failed", "pass_id": "someone-elses-pass"},
])
def test_a_copy_that_failed_before_its_verification_fails_phase1(env, share, over):
    data = tree_state(share)
    plan = start(env)["copy_plan"]
    with pytest.raises(StorageError, match="Failed to copy share s1"):
        start(env, copy_report=report(plan, sign=False, **dict({"verified": False}, **over)))
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_ERROR
    assert not os.path.lexists(env.share_path(env.B, "s1")) and tree_state(share) == data


def test_every_rerun_of_phase1_sends_an_increment_and_says_how_much_changed(env, share, jobs, modes):
    first = to_phase1_done(env, jobs)
    history = len(env.read_record(env.A, "s1")["history"])
    # Users keep writing: 2 new files of 3000 and 5000 bytes.
    for name, size in (("new1.bin", 3000), ("new2.bin", 5000)):
        with open(os.path.join(share, name), "wb") as handle:
            handle.write(os.urandom(size))
    checked = start(env, check_mode=True)
    assert checked["changed"] is True and "an increment" in checked["actions"][0]
    assert len(env.read_record(env.A, "s1")["history"]) == history, "check mode recorded something"
    handed = start(env)
    plan = handed["copy_plan"]
    assert handed["changed"] is True and handed["copy_required"] is True
    assert plan["job_id"] == first["job_id"] and plan["final_pass"] is False
    assert plan["source_writable"] is True and first["source_writable"] is True, "users write while it copies"
    assert plan["report_signing"]["pass_id"] != first["report_signing"]["pass_id"], "an increment needs a pass of its own"
    again = start(env)
    assert again["changed"] is False and again["copy_plan"] == plan, "a rerun before the report drew another pass"
    # The report of the pass before is not the increment's, signed or not (a failure needs no signature).
    with pytest.raises(InvalidRequest, match="Refusing the copy report"):
        start(env, copy_report=report(first))
    revision = env.read_record(env.A, "s1")["revision"]
    with pytest.raises(InvalidRequest, match="not for the increment"):
        start(env, copy_report=report(first, sign=False, state="failed", verified=False, error="old"))
    assert env.read_record(env.A, "s1")["revision"] == revision

    taken = start(env, copy_report=data_mover(jobs, plan))
    increment = taken["increment"]
    assert taken["changed"] is True and taken["task_state"] == states.DATA_COPYING_COMPLETED
    assert (increment["number"], increment["files"], increment["bytes"], increment["verified"]) == (1, 2, 8000, True)
    mig = env.read_record(env.A, "s1")["migration"]
    assert mig["increment_count"] == 1 and mig["increments"][-1]["files"] == 2 and "increment_pass" not in mig
    assert tree_state(env.share_path(env.B, "s1")) == tree_state(share)
    assert start(env, copy_report=data_mover(jobs, plan))["changed"] is False
    assert modes == [] and mig["source_read_only"] is False

    # Nothing changed: the next increment copies nothing, and says so.
    second = start(env)["copy_plan"]
    nothing = start(env, copy_report=data_mover(jobs, second))["increment"]
    assert (nothing["number"], nothing["files"], nothing["bytes"]) == (2, 0, 0)


def test_a_failed_increment_keeps_phase1_done_and_the_next_rerun_sends_a_new_one(env, share, jobs):
    to_phase1_done(env, jobs)
    plan = start(env)["copy_plan"]
    failed = report(plan, sign=False, state="failed", verified=False, error="No space left on device",
                    phases=[{"phase": "copying"}])
    with pytest.raises(StorageError, match="Failed to copy the changes to share s1 since the last pass: .*No space"):
        start(env, copy_report=failed)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED and os.path.isdir(env.share_path(env.B, "s1"))
    assert "No space" in rec["migration"]["increment_error"]
    retry = start(env)["copy_plan"]
    assert retry["report_signing"]["pass_id"] != plan["report_signing"]["pass_id"]
    assert start(env, copy_report=data_mover(jobs, retry))["increment"]["number"] == 1
    assert "increment_error" not in env.read_record(env.A, "s1")["migration"]


# --------------------------------------------------------------------------- phase 2


def test_phase2_makes_the_source_read_only_first_and_measures_the_window(env, share, jobs, modes):
    to_phase1_done(env, jobs)
    assert modes == []
    assert "set the source read-only for the final pass" in env.migrations(check_mode=True).complete("s1")["actions"][0]
    asked = complete(env)
    assert modes == ["ro"], "phase 2 must make the source read-only before the final pass"
    mig = env.read_record(env.A, "s1")["migration"]
    assert mig["source_read_only"] is True and mig["read_only_at"] and mig["read_only_epoch"]
    assert asked["copy_plan"]["final_pass"] is True
    assert asked["copy_plan"]["source_writable"] is False, "the final pass reads a read-only source"
    shown = env.shares().info("s1")[0]["migration"]
    assert shown["read_only_seconds"] >= 0, "share_info shows the window so far"
    # A rerun of phase 2 keeps the first read-only point.
    again = complete(env)
    assert again["copy_plan"] == asked["copy_plan"] and modes == ["ro"]
    assert env.read_record(env.A, "s1")["migration"]["read_only_epoch"] == mig["read_only_epoch"]
    done = complete(env, copy_report=data_mover(jobs, asked["copy_plan"]))
    assert done["task_state"] == states.MIGRATION_SUCCESS
    final = env.read_record(env.B, "s1")["migration"]
    window = final["read_only_seconds"]
    assert 0 <= window < 60 and final["read_only_epoch"] > final["started_epoch"], final
    assert env.shares().info("s1")[0]["migration"]["read_only_seconds"] == window


def fake_wall_clock(monkeypatch, clock):
    """time.time() of the migration managers reads ``clock[0]`` (the data copy job keeps the real one)."""
    fake = types.SimpleNamespace(time=lambda: clock[0], monotonic=time.monotonic, sleep=time.sleep)
    for module in (host_assisted, share_migration):
        monkeypatch.setattr(module, "time", fake)


def test_the_window_of_a_non_writable_copy_runs_from_phase1(env, share, jobs, monkeypatch):
    clock = [1000.0]
    fake_wall_clock(monkeypatch, clock)
    plan = start(env, flags={})["copy_plan"]
    clock[0] += 40
    start(env, flags={}, copy_report=data_mover(jobs, plan))
    clock[0] += 10
    asked = complete(env)
    clock[0] += 5
    complete(env, copy_report=data_mover(jobs, asked["copy_plan"]))
    assert env.read_record(env.B, "s1")["migration"]["read_only_seconds"] == 55.0


def test_writable_window_counts_from_phase2_only(env, share, jobs, monkeypatch):
    clock = [1000.0]
    fake_wall_clock(monkeypatch, clock)
    plan = start(env)["copy_plan"]
    clock[0] += 40
    start(env, copy_report=data_mover(jobs, plan))
    clock[0] += 10
    asked = complete(env)
    clock[0] += 5
    complete(env, copy_report=data_mover(jobs, asked["copy_plan"]))
    mig = env.read_record(env.B, "s1")["migration"]
    assert mig["read_only_seconds"] == 5.0 and mig["read_only_epoch"] == 1050.0


def test_a_refused_phase2_gives_the_source_back_writable(env, share, jobs, modes):
    to_phase1_done(env, jobs)
    # A user's program holding a file of the source open for writing (the scan skips this process).
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nf = open(sys.argv[1], 'a')\nprint('open', flush=True)\n"
                               "sys.stdin.readline()\n", os.path.join(share, "held.log")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StorageError, match="open for writing"):
            complete(env)
    finally:
        holder.kill()
        holder.wait()
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED
    assert modes == ["ro", "rw"], modes
    assert rec["migration"]["source_read_only"] is False and "read_only_at" not in rec["migration"]
    # Phase 1 again sends an increment; phase 2 then takes a new read-only point.
    plan = start(env)["copy_plan"]
    start(env, copy_report=data_mover(jobs, plan))
    asked = complete(env)
    assert modes == ["ro", "rw", "ro"]
    assert complete(env, copy_report=data_mover(jobs, asked["copy_plan"]))["task_state"] == states.MIGRATION_SUCCESS
    assert tree_state(env.share_path(env.B, "s1")) is not None


def test_phase2_waits_for_an_increment_that_still_copies(env, share, jobs, modes, tmp_path):
    to_phase1_done(env, jobs)
    start(env)  # an increment handed out; its job copies (its status file says running)
    status = tmp_path / "status.json"
    status.write_text('{"state": "running", "phase": "copying"}')
    env.edit("s1", migration=lambda rec: rec["migration"].update(copy_job={"job_id": "j", "status_file": str(status)}))
    with pytest.raises(StorageError, match="its increment \\(copy job j\\) is still copying"):
        complete(env)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED and rec["migration"]["source_read_only"] is False
    assert modes == [], "the source became read-only although phase 2 did not start"
    status.write_text('{"state": "completed", "phase": "done"}')
    assert complete(env)["copy_plan"]["final_pass"] is True and modes == ["ro"]
