"""Unit tests for plugins/module_utils/managers/host_assisted.py: the host-assisted path of
ShareMigrationManager, driven by copy plans and copy reports.

The data node is simulated: the test copies the plan's source into its destination with ``cp -a``
and hands back a report, as the data_mover role would.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.exports import NoneExport

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
    ({"state": "failed", "error": "disk full"}, "did not complete (failed): disk full"),
    # The role's own report when the job never got a folder: said as such, not "no error given".
    ({"state": "absent", "error": None}, "did not complete (absent): the data node has no such job"),
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


def test_a_killed_final_pass_worker_is_named_in_the_error_and_nothing_is_switched(env, share):
    """What the data mover reports for a final pass whose worker was killed: the manager's error says
    which job, that it did not complete and the job's own words (its pass, where it was, how to resume)."""
    data = tree_state(share)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    gone = ("The worker of data copy job %s (the final pass, attempt 1) is gone without a final status: its process "
            "was killed or the data node restarted while it was copying." % final["job_id"])
    with pytest.raises(StorageError) as info:
        env.migrations().complete("s1", copy_report={"job_id": final["job_id"], "state": "failed", "verified": False,
                                                     "error": gone})
    message = str(info.value)
    assert "copy job %s did not complete (failed): The worker of data copy job" % final["job_id"] in message
    assert "the final pass" in message and "Nothing was switched" in message
    assert "no error given" not in message
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED and "is gone without a final status" in rec["migration"]["error"]
    assert tree_state(share) == data


def test_the_record_keeps_what_the_ignore_list_left_out_and_the_log_tail_small(env, share):
    """The copy summary keeps the count of ignored entries, the first 20 names and the end of the log,
    since the job folder with the whole report goes when the migration ends."""
    plan = start(env)["copy_plan"]
    copy_like_a_data_node(plan)
    ignored = ["deep/%d/lost+found/" % index for index in range(100)]
    log = ["line %d %s" % (index, "x" * 500) for index in range(40)]
    start(env, copy_report=report(plan, ignored=ignored, ignored_count=250, log_tail=log))
    summary = env.read_record(env.A, "s1")["migration"]["copy"]
    assert summary["ignored_count"] == 250
    assert summary["ignored"] == ignored[:20]
    assert len(summary["log_tail"]) == 12 and summary["log_tail"][0].startswith("line 28 ")
    assert all(len(line) <= 240 for line in summary["log_tail"])
    # share_info shows the record's migration: the same summary.
    view = env.shares().view(*env.load("s1"))
    assert view["migration"]["copy"]["ignored"] == ignored[:20] and view["migration"]["copy"]["ignored_count"] == 250


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
