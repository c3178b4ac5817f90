"""Unit tests for plugins/module_utils/managers/host_assisted.py: the host-assisted path of
ShareMigrationManager, driven by copy plans and copy reports.

The data node is simulated: the test copies the plan's source into its destination with ``cp -a``
and hands back a report, as the data_mover role would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import NoneExport
from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import ShareMigrationManager

from mobility_helpers import Env, populate_share, tree_state

RULE = {"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "rw"}


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture
def share(env):
    env.create_share("s1", rules=[RULE])
    path = env.share_path(env.A, "s1")
    populate_share(path)
    return path


def start(env, check_mode=False, **kw):
    return env.migrations(check_mode=check_mode).start("s1", env.B, {}, force_host_assisted=True, **kw)


def copy_like_a_data_node(plan):
    subprocess.run(["cp", "-a", "--", plan["source"]["export"] + "/.", plan["destination"]["export"]], check=True)


def report(plan, **over):
    data = {"job_id": plan["job_id"], "state": "completed", "verified": True, "files": 10, "bytes": 1234,
            "hash_algorithm": plan["hash_algorithm"]}
    data.update(over)
    return data


def to_phase1_done(env):
    plan = start(env)["copy_plan"]
    copy_like_a_data_node(plan)
    result = start(env, copy_report=report(plan))
    assert result["task_state"] == states.DATA_COPYING_COMPLETED
    return plan


def assert_restored(env, data):
    rec = env.read_record(env.A, "s1")
    assert not os.path.lexists(env.share_path(env.B, "s1"))
    assert tree_state(env.share_path(env.A, "s1")) == data
    assert rec["status"] == states.AVAILABLE
    assert [(i["pool"], i["status"]) for i in rec["instances"]] == [(env.A, states.AVAILABLE)]
    assert rec["access_rules"][0]["access_to"] == "10.0.0.0/24"
    assert rec["migration"]["source_read_only"] is False
    return rec


# --------------------------------------------------------------------------- phase 1


def test_start_makes_the_source_read_only_creates_the_destination_and_hands_out_a_plan(env, share, monkeypatch):
    modes = []
    real = NoneExport.apply
    monkeypatch.setattr(NoneExport, "apply", lambda self, n, p, m: modes.append(m) or real(self, n, p, m))
    result = start(env)
    assert result["changed"] is True and result["copy_required"] is True
    assert result["task_state"] == states.DATA_COPYING_STARTING and result["total_progress"] == 0
    assert modes == ["ro"]
    plan = result["copy_plan"]
    rec = env.read_record(env.A, "s1")
    assert plan["migration_id"] == plan["job_id"] == rec["migration"]["id"]
    assert plan["final_pass"] is False and plan["check_hash"] is True
    assert plan["source"] == {"helper": "local", "export": share, "read_only": True, "pool": env.A,
                              "host": "localhost"}
    assert plan["destination"]["export"] == env.share_path(env.B, "s1")
    assert plan["ignore_files"] == ["lost+found"]
    assert rec["migration"]["mechanism"] == "host" and rec["migration"]["source_read_only"] is True
    assert [(i["pool"], i["status"], i["role"]) for i in rec["instances"]] == [
        (env.A, states.MIGRATING, "active"), (env.B, states.MIGRATING_TO, "destination")]
    assert os.listdir(env.share_path(env.B, "s1")) == [], "the manager never copies data itself"
    assert [h["task_state"] for h in rec["history"]][-2:] == [states.MIGRATION_STARTING, states.DATA_COPYING_STARTING]


def test_start_in_check_mode_changes_nothing(env, share):
    before = env.state()
    result = start(env, check_mode=True)
    assert result["changed"] is True and result["actions"]
    assert result["task_state"] == states.DATA_COPYING_STARTING
    assert env.state() == before


def test_rerun_is_no_change_then_records_the_running_copy(env, share):
    plan = start(env)["copy_plan"]
    before = env.state()
    again = start(env)
    assert again["changed"] is False and again["copy_plan"] == plan
    assert env.state() == before
    job = {"job_id": plan["job_id"], "data_node": "localhost", "status_file": "/nonexistent/status.json"}
    running = start(env, copy_job=job)
    assert running["changed"] is True and running["task_state"] == states.DATA_COPYING_IN_PROGRESS
    assert env.read_record(env.A, "s1")["migration"]["copy_job"] == job
    assert start(env, copy_job=job)["changed"] is False


def test_a_verified_report_ends_phase1(env, share):
    data = tree_state(share)
    plan = start(env)["copy_plan"]
    copy_like_a_data_node(plan)
    result = start(env, copy_report=report(plan))
    assert result["changed"] is True and result["task_state"] == states.DATA_COPYING_COMPLETED
    assert result["total_progress"] == 100
    rec = env.read_record(env.A, "s1")
    assert [h["task_state"] for h in rec["history"]][-2:] == [states.DATA_COPYING_COMPLETING,
                                                              states.DATA_COPYING_COMPLETED]
    assert rec["migration"]["copy"]["files"] == 10 and rec["migration"]["copy"]["verified_at"]
    assert tree_state(share) == data
    assert start(env, copy_report=report(plan))["changed"] is False


@pytest.mark.parametrize("bad", [{"job_id": "someone-else"}, {"job_id": None}, "not a dict"])
def test_a_foreign_or_stale_report_is_refused_and_changes_nothing(env, share, bad):
    plan = start(env)["copy_plan"]
    before = env.state()
    with pytest.raises(InvalidRequest, match="Refusing the copy report for share s1"):
        start(env, copy_report=dict(report(plan), **bad) if isinstance(bad, dict) else bad)
    assert env.state() == before


@pytest.mark.parametrize("over, reason", [
    ({"verified": False, "differ": ["a.txt"], "missing": ["b"]}, "the copy was not verified (differ: a.txt; missing: b)"),
    ({"state": "failed", "error": "disk full"}, "the copy job ended failed: disk full"),
])
def test_a_failed_copy_ends_in_data_copying_error_with_cleanup(env, share, over, reason):
    data = tree_state(share)
    plan = start(env)["copy_plan"]
    copy_like_a_data_node(plan)
    with pytest.raises(StorageError) as info:
        start(env, copy_report=report(plan, **over))
    assert reason in str(info.value)
    assert info.value.details["copy_report"]["job_id"] == plan["job_id"]
    rec = assert_restored(env, data)
    assert rec["task_state"] == states.DATA_COPYING_ERROR
    assert reason in rec["migration"]["error"]
    assert states.is_busy(rec["task_state"]) is False


# --------------------------------------------------------------------------- phase 2


def test_complete_asks_for_a_verified_final_pass_before_switching(env, share):
    data = tree_state(share)
    to_phase1_done(env)
    result = env.migrations().complete("s1")
    assert result["copy_required"] is True
    final = result["copy_plan"]
    assert final["final_pass"] is True and final["job_id"].endswith("-final")
    assert result["task_state"] == states.MIGRATION_COMPLETING
    assert tree_state(share) == data, "nothing is switched before the final pass is verified"
    before = env.state()
    again = env.migrations().complete("s1")
    assert again["changed"] is False and again["copy_plan"] == final
    assert env.state() == before
    # the phase-1 report cannot stand in for the final pass
    with pytest.raises(InvalidRequest, match="not to the final pass"):
        env.migrations().complete("s1", copy_report={"job_id": final["migration_id"], "verified": True})
    assert env.state() == before


def test_a_failed_final_pass_goes_back_to_data_copying_completed(env, share):
    data = tree_state(share)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    with pytest.raises(StorageError, match="Nothing was switched"):
        env.migrations().complete("s1", copy_report=report(final, verified=False, extra=["x"]))
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED
    assert "Final pass failed" in rec["migration"]["error"]
    assert tree_state(share) == data
    assert env.record_pools("s1") == [env.A]


def test_a_verified_final_pass_switches_the_share(env, share):
    data = tree_state(share)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    result = env.migrations().complete("s1", copy_report=report(final))
    assert result["changed"] is True and result["task_state"] == states.MIGRATION_SUCCESS
    assert env.record_pools("s1") == [env.B]
    assert not os.path.lexists(share)
    dst = env.share_path(env.B, "s1")
    copied = tree_state(dst)
    assert set(copied) == set(data)
    assert all(copied[k]["sha256"] == data[k]["sha256"] for k in data if "sha256" in data[k])
    rec = env.read_record(env.B, "s1")
    assert rec["migration"]["final_copy"]["files"] == 10
    assert [(i["pool"], i["status"]) for i in rec["instances"]] == [(env.B, states.AVAILABLE)]
    assert env.migrations().complete("s1", copy_report=report(final))["changed"] is False


# --------------------------------------------------------------------------- cancel and reports out of place


def write_status(tmp_path, state, percent):
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"state": state, "progress": {"percent": percent, "bytes_done": 5}}))
    return str(path)


def test_cancel_waits_for_a_running_local_copy_job(env, share, tmp_path):
    data = tree_state(share)
    plan = start(env)["copy_plan"]
    status = write_status(tmp_path, "running", 42)
    start(env, copy_job={"job_id": plan["job_id"], "data_node": "localhost", "status_file": status})
    view = env.shares().info("s1")[0]
    assert view["total_progress"] == 42 and view["copy_progress"]["percent"] == 42
    before = env.state()
    with pytest.raises(StorageError, match="copy job .* is still running"):
        env.migrations().cancel("s1")
    assert env.state() == before
    write_status(tmp_path, "cancelled", 42)
    result = env.migrations().cancel("s1")
    assert result["task_state"] == states.MIGRATION_CANCELLED
    assert_restored(env, data)


def test_a_report_for_a_migration_that_is_not_copying_is_refused(env, share):
    with pytest.raises(InvalidRequest, match="no migration to %s is running" % env.B):
        start(env, copy_report={"job_id": "x"})
    plan = start(env)["copy_plan"]
    env.migrations().cancel("s1")
    before = env.state()
    with pytest.raises(InvalidRequest, match="no longer copying"):
        start(env, copy_report=report(plan))
    assert env.state() == before


def test_a_driver_assisted_migration_takes_no_copy_report(env, share):
    env.migrations().start("s1", env.B, {})
    before = env.state()
    with pytest.raises(InvalidRequest, match="its migration is driver-assisted"):
        env.migrations().start("s1", env.B, {}, copy_report={"job_id": "x"})
    assert env.state() == before


# --------------------------------------------------------------------------- open writers in phase 2


class Writer:
    """A process that appends to a file of the source through its path in the pool and holds it
    open until told to close it: what a user's program does."""

    def __init__(self, path):
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys\nf = open(sys.argv[1], 'a')\nf.write('before\\n'); f.flush()\nprint('open', flush=True)\n"
             "sys.stdin.readline()\nf.write('late write\\n'); f.close()\nprint('closed', flush=True)\n"
             "sys.stdin.readline()\n", path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "open"

    def write_and_close(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "closed"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def writers():
    started = []

    def make(path):
        started.append(Writer(path))
        return started[-1]
    yield make
    for writer in started:
        writer.stop()


def manager_with_sleeper(env, on_sleep):
    def sleeper(seconds):
        on_sleep()
        env.clock.sleep(seconds)
    return ShareMigrationManager(env.ctx(), clock=env.clock.clock, sleeper=sleeper)


def test_an_open_writer_before_the_final_pass_is_named_and_refused(env, share, writers):
    to_phase1_done(env)
    target = os.path.join(share, "held.log")
    writer = writers(target)
    with pytest.raises(StorageError) as info:
        env.migrations().complete("s1")
    message = str(info.value)
    assert "%d (python" % writer.proc.pid in message and target in message
    assert "Nothing was switched" in message and "before the final pass" in message
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED
    assert rec["migration"]["open_writers"][0]["pid"] == writer.proc.pid
    assert "Switchover refused" in rec["migration"]["error"]
    assert env.record_pools("s1") == [env.A] and os.path.isdir(share)
    writer.write_and_close()
    plan = env.migrations().complete("s1")["copy_plan"]
    assert plan["job_id"] == plan["migration_id"] + "-final"


def test_a_reader_is_no_writer(env, share):
    with open(os.path.join(share, "read-me"), "w") as handle:
        handle.write("data")
    to_phase1_done(env)
    reader = subprocess.Popen([sys.executable, "-c", "import sys,time; f = open(sys.argv[1], 'rb'); "
                               "print('open', flush=True); time.sleep(60)", os.path.join(share, "read-me")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        assert env.migrations().complete("s1")["copy_required"] is True
    finally:
        reader.kill()
        reader.wait()


def test_open_writers_wait_waits_for_a_writer_to_close(env, share, writers):
    to_phase1_done(env)
    writer = writers(os.path.join(share, "held.log"))
    manager = manager_with_sleeper(env, writer.write_and_close)
    result = manager.complete("s1", open_writers_wait=30)
    assert result["copy_required"] is True and result["task_state"] == states.MIGRATION_COMPLETING
    assert env.clock.sleeps, "it waited"


def test_open_writers_wait_refuses_when_the_writer_stays(env, share, writers):
    to_phase1_done(env)
    writer = writers(os.path.join(share, "held.log"))
    with pytest.raises(StorageError, match=r"still open after waiting 5 s, open_writers_wait"):
        env.migrations().complete("s1", open_writers_wait=5)
    assert 5 <= sum(env.clock.sleeps) < 6
    assert env.read_record(env.A, "s1")["task_state"] == states.DATA_COPYING_COMPLETED
    assert writer.proc.poll() is None


def test_a_writer_after_the_final_pass_forces_a_new_pass_and_no_write_is_lost(env, share, writers):
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    copy_like_a_data_node(final)
    target = os.path.join(share, "held.log")
    writer = writers(target)  # opened after the final pass read the source
    with pytest.raises(StorageError) as info:
        env.migrations().complete("s1", copy_report=report(final))
    assert "after the final pass" in str(info.value) and final["job_id"] + "-2" in str(info.value)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED and "final_verified" not in rec["migration"]
    assert rec["migration"]["final_job_ids"] == [final["job_id"], final["job_id"] + "-2"]
    assert env.record_pools("s1") == [env.A]
    writer.write_and_close()
    # The old final pass no longer proves anything.
    with pytest.raises(InvalidRequest, match="not to the final pass"):
        env.migrations().complete("s1", copy_report=report(final))
    again = env.migrations().complete("s1")["copy_plan"]
    assert again["job_id"] == final["job_id"] + "-2"
    copy_like_a_data_node(again)
    result = env.migrations().complete("s1", copy_report=report(again))
    assert result["task_state"] == states.MIGRATION_SUCCESS
    with open(os.path.join(env.share_path(env.B, "s1"), "held.log")) as handle:
        assert handle.read() == "before\nlate write\n"


def test_a_writer_that_closed_while_waiting_after_the_final_pass_still_needs_a_new_pass(env, share, writers):
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    copy_like_a_data_node(final)
    writer = writers(os.path.join(share, "held.log"))
    manager = manager_with_sleeper(env, writer.write_and_close)
    with pytest.raises(StorageError, match="processes held files .* after the final pass; a new final pass"):
        manager.complete("s1", copy_report=report(final), open_writers_wait=30)
    assert env.read_record(env.A, "s1")["migration"]["final_pass_number"] == 2
