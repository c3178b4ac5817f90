"""Unit tests for plugins/module_utils/managers/host_assisted.py: the host-assisted path of
ShareMigrationManager, driven by copy plans and copy reports.

The data node is simulated: the test copies the plan's source into its destination with ``cp -a``
and hands back a report, as the data_mover role would: with the seals of both trees as they are and
signed with the plan's pass key (as the data_copy module signs). Where it matters, a real data copy
job (rsync, the hash verification, the detached worker) runs the pass instead.
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

from mobility_helpers import RULE, copy_like_a_data_node, data_mover, mover_report as report, populate_share, tree_state


@pytest.fixture
def share(env):
    env.create_share("s1", rules=[RULE])
    path = env.share_path(env.A, "s1")
    populate_share(path)
    return path


def start(env, check_mode=False, **kw):
    return env.migrations(check_mode=check_mode).start("s1", env.B, {}, force_host_assisted=True, **kw)


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
    assert plan["source_writable"] is False, "a copy of a read-only source"
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


def test_progress_handed_on_from_another_data_node_is_what_share_info_shows(env, share):
    """The status file is on the data node, not here: the figures the playbook hands on at each poll
    are kept in the record (no history entry, no change) and share_info shows them, with one total."""
    plan = start(env)["copy_plan"]
    job = {"job_id": plan["job_id"], "data_node": "node2", "status_file": "/elsewhere/status.json"}
    start(env, copy_job=job)
    assert "copy_progress" not in env.shares().info("s1")[0]
    history = len(env.read_record(env.A, "s1")["history"])
    progress = {"percent": 40, "total_percent": 31, "files_done": 400, "files_total": 1000, "totals_known": True,
                "eta_seconds": 12, "rate_files_per_s": 50, "unknown_key": "dropped"}
    result = start(env, copy_job=dict(job, progress={"state": "running", "phase": "copying", "progress": progress}))
    assert result["changed"] is False
    record = env.read_record(env.A, "s1")
    assert record["migration"]["copy_job"] == job
    assert len(record["history"]) == history
    view = env.shares().info("s1")[0]
    shown = view["copy_progress"]
    assert shown["percent"] == 40 and shown["phase"] == "copying" and shown["state"] == "running"
    assert "unknown_key" not in shown and shown["reported_at"]
    assert view["total_progress"] == view["progress"]["total_progress"] == 31
    # The verified report ends phase 1: the handed-on figures go.
    copy_like_a_data_node(plan)
    start(env, copy_report=report(plan))
    assert "reported_progress" not in env.read_record(env.A, "s1")["migration"]


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
    final_report = report(final)
    result = env.migrations().complete("s1", copy_report=final_report)
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
    assert env.migrations().complete("s1", copy_report=final_report)["changed"] is False


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


def test_share_info_shows_one_progress_and_the_whole_job_share(env, share, tmp_path):
    """share_info showed total_progress 100 next to progress.total_progress 0 (the record's), and the
    running phase's percent (a verification at 30% after the copy) as the migration's: one figure,
    the whole job's."""
    plan = start(env)["copy_plan"]
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"state": "running", "phase": "verifying", "percent": 30, "total_percent": 88,
                                "totals_known": True, "files_done": 3, "files_total": 10}))
    start(env, copy_job={"job_id": plan["job_id"], "data_node": "localhost", "status_file": str(path)})
    view = env.shares().info("s1")[0]
    assert view["total_progress"] == 88
    assert view["progress"]["total_progress"] == 88
    assert view["copy_progress"]["percent"] == 30 and view["copy_progress"]["phase"] == "verifying"
    path.write_text(json.dumps({"state": "completed", "phase": "done", "percent": 100, "total_percent": 100}))
    view = env.shares().info("s1")[0]
    assert view["total_progress"] == view["progress"]["total_progress"] == 100


def test_a_report_for_a_migration_that_is_not_copying_is_refused(env, share):
    with pytest.raises(InvalidRequest, match="no migration to %s is running" % env.B):
        start(env, copy_report={"job_id": "x"})
    plan = start(env)["copy_plan"]
    genuine = report(plan)
    env.migrations().cancel("s1")
    before = env.state()
    with pytest.raises(InvalidRequest, match="no longer copying"):
        start(env, copy_report=genuine)
    assert env.state() == before


def test_a_driver_assisted_migration_takes_no_copy_report(env, share):
    env.migrations().start("s1", env.B, {})
    before = env.state()
    with pytest.raises(InvalidRequest, match="its migration is driver-assisted"):
        env.migrations().start("s1", env.B, {}, copy_report={"job_id": "x"})
    assert env.state() == before


# --------------------------------------------------------------------------- reports bound to their pass


def test_plans_carry_a_pass_of_their_own_whose_key_no_view_shows(env, share):
    plan = start(env)["copy_plan"]
    binding = plan["report_signing"]
    rec = env.read_record(env.A, "s1")
    phase1 = rec["migration"]["passes"]["phase1"]
    assert binding == {"migration_id": rec["migration"]["id"], "pass_id": phase1["id"], "key": phase1["key"]}
    assert start(env)["copy_plan"]["report_signing"] == binding, "a rerun hands out the same pass"
    start(env, copy_report=report(plan))
    final = env.migrations().complete("s1")["copy_plan"]["report_signing"]
    assert final["migration_id"] == binding["migration_id"]
    assert final["pass_id"] != binding["pass_id"] and final["key"] != binding["key"]
    view = env.shares().info("s1")[0]
    assert set(view["migration"]["passes"]) == {"phase1", "final"}
    assert all("key" not in drawn for drawn in view["migration"]["passes"].values())
    assert binding["key"] not in json.dumps(view) and final["key"] not in json.dumps(view)


def empty_the_destination(env):
    dst = env.share_path(env.B, "s1")
    for name in os.listdir(dst):
        subprocess.run(["rm", "-rf", "--", os.path.join(dst, name)], check=True)


def test_a_hand_made_report_completes_nothing(env, share):
    """The outside campaign's case: the destination emptied, then a hand-made report of the right job."""
    data = tree_state(share)
    plan = to_phase1_done(env)
    empty_the_destination(env)
    forged = {"job_id": plan["job_id"] + "-final", "state": "completed", "verified": True}
    before = env.state()
    # Straight from data_copying_completed, as in the campaign: refused before anything is recorded.
    with pytest.raises(InvalidRequest, match="no final pass was handed out yet"):
        env.migrations().complete("s1", copy_report=forged)
    assert env.state() == before
    # After the final pass was asked for: the report names no pass and carries no signature.
    final = env.migrations().complete("s1")["copy_plan"]
    before = env.state()
    with pytest.raises(InvalidRequest, match="carries no signature and names no pass"):
        env.migrations().complete("s1", copy_report=forged)
    # Naming the pass (it is in the plan) does not help without the key.
    with pytest.raises(InvalidRequest, match="carries no signature"):
        env.migrations().complete("s1", copy_report=report(final, sign=False))
    with pytest.raises(InvalidRequest, match="signature does not match"):
        env.migrations().complete("s1", copy_report=dict(report(final, sign=False), signature="hmac-sha256:" + "0" * 64))
    assert env.state() == before
    assert env.read_record(env.A, "s1")["task_state"] == states.MIGRATION_COMPLETING
    assert tree_state(share) == data, "the source must be untouched"


def test_a_hand_made_phase1_report_is_refused(env, share):
    plan = start(env)["copy_plan"]
    before = env.state()
    with pytest.raises(InvalidRequest, match="Refusing the copy report for share s1: it carries no signature"):
        start(env, copy_report={"job_id": plan["job_id"], "state": "completed", "verified": True})
    assert env.state() == before


@pytest.mark.parametrize("edit", [
    {"destination_seal": "seal1:sha256:" + "0" * 64},
    {"files": 11},
    {"verified": True, "missing_count": 0, "destination_digest": "sha256:other"},
])
def test_a_report_edited_after_signing_is_refused(env, share, edit):
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    edited = dict(report(final), **edit)
    before = env.state()
    with pytest.raises(InvalidRequest, match="its signature does not match its contents"):
        env.migrations().complete("s1", copy_report=edited)
    assert env.state() == before


def test_a_report_of_another_migration_is_refused(env, share):
    """Share s2's genuine final report, as it is and relabelled with s1's job id."""
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    env.create_share("s2", rules=[RULE])
    populate_share(env.share_path(env.A, "s2"))
    other_plan = env.migrations().start("s2", env.B, {}, force_host_assisted=True)["copy_plan"]
    copy_like_a_data_node(other_plan)
    env.migrations().start("s2", env.B, {}, copy_report=report(other_plan))
    other_final = env.migrations().complete("s2")["copy_plan"]
    theirs = report(other_final)
    before = env.state()
    with pytest.raises(InvalidRequest, match="not to the final pass of migration %s" % final["migration_id"]):
        env.migrations().complete("s1", copy_report=theirs)
    with pytest.raises(InvalidRequest, match="it was made for migration %s" % other_final["migration_id"]):
        env.migrations().complete("s1", copy_report=dict(theirs, job_id=final["job_id"]))
    resigned = report(dict(other_final, job_id=final["job_id"]))
    with pytest.raises(InvalidRequest, match="it was made for migration"):
        env.migrations().complete("s1", copy_report=resigned)
    assert env.state() == before


def test_a_report_of_an_earlier_pass_is_refused(env, share):
    """A genuine final report whose pass was replaced (the destination changed after it) completes nothing."""
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    earlier = report(final)
    with open(os.path.join(env.share_path(env.B, "s1"), "plain.txt"), "ab") as handle:
        handle.write(b"changed after the final pass")
    result = env.migrations().complete("s1", copy_report=earlier)
    assert result["copy_required"] is True, "the seals differ: a new final pass is asked for"
    current = result["copy_plan"]["report_signing"]["pass_id"]
    assert current != final["report_signing"]["pass_id"]
    before = env.state()
    with pytest.raises(InvalidRequest, match="made for pass %s, not for the current pass %s"
                       % (final["report_signing"]["pass_id"], current)):
        env.migrations().complete("s1", copy_report=earlier)
    assert env.state() == before


def test_a_failure_report_needs_no_signature_and_switches_nothing(env, share):
    """The data mover's rescue path reports a failure it could not sign (a mount that failed): taken
    as a failure, which only ever keeps the source."""
    data = tree_state(share)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    with pytest.raises(StorageError, match=r"did not complete \(failed\): mount failed"):
        env.migrations().complete("s1", copy_report={"job_id": final["job_id"], "state": "failed", "verified": False,
                                                     "error": "mount failed"})
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED
    assert "final" not in rec["migration"]["passes"], "the next completion hands out a new final pass"
    assert tree_state(share) == data
    again = env.migrations().complete("s1")["copy_plan"]
    assert again["report_signing"]["pass_id"] != final["report_signing"]["pass_id"]


# --------------------------------------------------------------------------- the seal check before the switch


class Crash(BaseException):
    """The process dies here (raised from inside the manager by the test)."""


def crash_before_the_seal_check(monkeypatch):
    """The run dies right after 'final pass verified' is written, before anything else."""
    from ansible_collections.storage.mobility.plugins.module_utils.managers.host_assisted import HostAssisted

    def die(self, *args):
        raise Crash()
    monkeypatch.setattr(HostAssisted, "_sealed_for_switch", die)


def flip_byte(path, offset=10):
    """Change one byte, keeping the size and both timestamps to the nanosecond."""
    st = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_crash_after_the_final_report_then_a_changed_destination_byte_is_not_switched(
        env, share, jobs, monkeypatch):
    """The outside campaign's case 2, with a real data mover: phase 2 dies right after its verified
    final report was recorded; a destination byte then changes with size and mtime kept. The rerun
    must not switch: it asks for a new final pass, which finds the byte, and the run after that repairs
    it and switches to a share identical to the source."""
    data = tree_state(share)
    plan = start(env)["copy_plan"]
    start(env, copy_report=data_mover(jobs, plan))
    final = env.migrations().complete("s1")["copy_plan"]
    verified = data_mover(jobs, final)
    assert verified["verified"] is True and verified["signature"]
    with monkeypatch.context() as patch:
        crash_before_the_seal_check(patch)
        with pytest.raises(Crash):
            env.migrations().complete("s1", copy_report=verified)
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.MIGRATION_COMPLETING and rec["migration"]["final_verified"] is True
    victim = os.path.join(env.share_path(env.B, "s1"), "dir", "sub", "deep.bin")
    flip_byte(victim)

    rerun = env.migrations().complete("s1")
    assert rerun["copy_required"] is True and rerun["copy_plan"]["final_pass"] is True
    assert "the destination instance changed since the final pass verified it" in rerun["msg"]
    assert rerun["warnings"] == [rerun["msg"]]
    assert rerun["copy_plan"]["report_signing"]["pass_id"] != final["report_signing"]["pass_id"]
    rec = env.read_record(env.A, "s1")
    assert env.record_pools("s1") == [env.A], "nothing was switched"
    assert rec["task_state"] == states.MIGRATION_COMPLETING and rec["migration"]["final_verified"] is False
    assert "final_copy" not in rec["migration"] and rec["migration"]["stale_final_copy"]["destination_seal"]
    assert tree_state(share) == data, "the source is kept"
    with pytest.raises(InvalidRequest, match="made for pass"):
        env.migrations().complete("s1", copy_report=verified)

    # The new final pass re-reads the file whose change time moved although rsync skipped it.
    found = data_mover(jobs, rerun["copy_plan"])
    assert found["verified"] is False and "signature" not in found
    assert "dir/sub/deep.bin" in found["error"]
    with pytest.raises(StorageError, match="Nothing was switched"):
        env.migrations().complete("s1", copy_report=found)
    assert env.read_record(env.A, "s1")["task_state"] == states.DATA_COPYING_COMPLETED

    # Completing again: the final pass copies the file again, verifies, and the switch goes through.
    again = env.migrations().complete("s1")["copy_plan"]
    repaired = data_mover(jobs, again)
    assert repaired["verified"] is True, repaired
    result = env.migrations().complete("s1", copy_report=repaired)
    assert result["task_state"] == states.MIGRATION_SUCCESS
    assert env.record_pools("s1") == [env.B]
    assert not os.path.lexists(share)
    assert tree_state(env.share_path(env.B, "s1"), mtimes=True) == data


def test_a_source_changed_after_the_final_pass_is_named(env, share, monkeypatch):
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    with monkeypatch.context() as patch:
        crash_before_the_seal_check(patch)
        with pytest.raises(Crash):
            env.migrations().complete("s1", copy_report=report(final))
    # Written through the pool path, which the read-only export does not cover.
    os.chmod(os.path.join(share, "plain.txt"), 0o644)
    result = env.migrations().complete("s1")
    assert result["copy_required"] is True
    assert "the source instance changed" in result["msg"] and share in result["msg"]
    assert env.record_pools("s1") == [env.A] and os.path.isdir(share)


def test_an_unchanged_share_switches_on_the_rerun(env, share, monkeypatch):
    data = tree_state(share)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    with monkeypatch.context() as patch:
        crash_before_the_seal_check(patch)
        with pytest.raises(Crash):
            env.migrations().complete("s1", copy_report=report(final))
    result = env.migrations().complete("s1")
    assert result["task_state"] == states.MIGRATION_SUCCESS and "copy_required" not in result
    events = [h["event"] for h in env.read_record(env.B, "s1")["history"]]
    assert "both instances sealed as the final pass verified them: switching" in events
    assert tree_state(env.share_path(env.B, "s1")) == data


def test_the_switch_seals_both_instances_at_once(env, share, monkeypatch):
    """Both walks are started before either is collected (each walk takes seconds at a million
    entries while the share is read-only), and the switch goes on with their seals."""
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
    calls = []
    real = PosixShareDriver.tree_seal_later

    def logged(self, pool, path, ignore):
        calls.append(("start", path))
        wait = real(self, pool, path, ignore)

        def collect():
            calls.append(("collect", path))
            return wait()
        return collect
    monkeypatch.setattr(PosixShareDriver, "tree_seal_later", logged)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    result = env.migrations().complete("s1", copy_report=report(final))
    assert result["task_state"] == states.MIGRATION_SUCCESS
    source, destination = share, env.share_path(env.B, "s1")
    assert calls == [("start", source), ("start", destination), ("collect", source), ("collect", destination)]


def test_a_destination_that_cannot_be_sealed_stops_the_switch_and_leaves_no_walk_behind(env, share, monkeypatch):
    import multiprocessing
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
    real = PosixShareDriver.tree_seal_later

    def refuse_destination(self, pool, path, ignore):
        if pool.name == "b":
            raise StorageError("Failed to seal the tree of pool %s: injected" % pool)
        return real(self, pool, path, ignore)
    monkeypatch.setattr(PosixShareDriver, "tree_seal_later", refuse_destination)
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    with pytest.raises(StorageError, match="cannot seal its destination instance .*injected. Nothing was switched"):
        env.migrations().complete("s1", copy_report=report(final))
    assert multiprocessing.active_children() == [], "the source's walk was left running"
    assert env.record_pools("s1") == [env.A] and os.path.isdir(share)


def test_a_verified_final_pass_without_seals_is_done_again(env, share):
    """A record verified before seals existed (an upgrade in the middle of phase 2) is not trusted."""
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    old_style = report(final, source_seal=None, destination_seal=None)
    result = env.migrations().complete("s1", copy_report=old_style)
    assert result["copy_required"] is True
    assert "carries no seals" in result["msg"]
    assert env.record_pools("s1") == [env.A]


def _crash_in_the_switch(env, monkeypatch):
    """Phase 2 with a verified final pass whose seals matched, dying as the switch begins."""
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import ShareMigrationManager

    def die(self, *args):
        raise Crash()
    with monkeypatch.context() as patch:
        patch.setattr(ShareMigrationManager, "_switch", die)
        with pytest.raises(Crash):
            env.migrations().complete("s1", copy_report=report(final))
    rec = env.read_record(env.A, "s1")
    assert rec["migration"]["switch_sealed"] == final["report_signing"]["pass_id"]
    users_write = os.path.join(env.share_path(env.B, "s1"), "written-by-a-user.txt")
    with open(users_write, "w") as handle:
        handle.write("kept")
    return final, users_write


def test_a_rerun_after_a_crash_once_the_export_serves_the_destination_finishes_it(env, share, monkeypatch):
    """Once the seals matched and an enforcing export serves the destination (stood for here by
    _switch_begun: the export tests cover the real mounts), a rerun finishes the switch without
    sealing again: the destination's writes are the users' own."""
    from ansible_collections.storage.mobility.plugins.module_utils.managers.host_assisted import HostAssisted
    final, users_write = _crash_in_the_switch(env, monkeypatch)
    monkeypatch.setattr(HostAssisted, "_switch_begun", lambda self, record, dest: True)
    result = env.migrations().complete("s1")
    assert result["task_state"] == states.MIGRATION_SUCCESS
    assert open(users_write).read() == "kept"


def test_a_rerun_after_a_crash_before_the_export_serves_the_destination_seals_again(env, share, monkeypatch):
    """A switch that stopped before the destination was exported or available switched nothing
    users can see: a destination changed since (here through its pool path) is not switched to."""
    final, users_write = _crash_in_the_switch(env, monkeypatch)
    result = env.migrations().complete("s1")
    assert result["copy_required"] is True and "the destination instance changed" in result["msg"]
    assert result["copy_plan"]["report_signing"]["pass_id"] != final["report_signing"]["pass_id"]
    assert env.record_pools("s1") == [env.A], "nothing was switched"


# --------------------------------------------------------------------------- cleanup that fails never leaves a share stuck


def _failing_deletion(monkeypatch, pool_name, error="No space left on device"):
    """delete_instance in pool ``pool_name`` fails (a full pool, EIO, ...) until the returned switch is off."""
    from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
    real = PosixShareDriver.delete_instance
    state = {"on": True, "calls": 0}

    def delete_instance(self, pool, name):
        if state["on"] and pool.name == pool_name:
            state["calls"] += 1
            raise StorageError("Failed to delete share %s in pool %s: %s" % (name, pool, error))
        return real(self, pool, name)

    monkeypatch.setattr(PosixShareDriver, "delete_instance", delete_instance)
    return state


def test_a_failed_copy_whose_cleanup_fails_still_restores_the_source_and_records_the_error(env, share, monkeypatch):
    """Case 4 of the data safety issue: ENOSPC in the destination, and the cleanup fails too. The
    share must end available, not busy, with its rules restored and the error recorded; the
    leftover is retried by the next runs until it is gone."""
    data = tree_state(share)
    modes = []
    real_apply = NoneExport.apply
    monkeypatch.setattr(NoneExport, "apply",
                        lambda self, name, path, mode: modes.append(mode) or real_apply(self, name, path, mode))
    plan = start(env)["copy_plan"]
    copy_like_a_data_node(plan)
    failing = _failing_deletion(monkeypatch, "b")
    with pytest.raises(StorageError) as info:
        start(env, copy_report=report(plan, state="failed", error="rsync: write failed: No space left on device (28)"))
    message = str(info.value)
    assert "No space left on device (28)" in message and "cleanup pending" in message
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_ERROR and not states.is_busy(rec["task_state"])
    assert "No space left on device (28)" in rec["migration"]["error"]
    assert rec["status"] == states.AVAILABLE and rec["migration"]["source_read_only"] is False
    assert modes == ["ro", "rw"], "read-only for the copy, then the rules restored"
    assert [(e["kind"], e["pool"], e["attempts"]) for e in rec["cleanup_pending"]] == [("instance", env.B, 1)]
    assert "No space left on device" in rec["cleanup_pending"][0]["error"]
    assert env.shares().info("s1")[0]["cleanup_pending"] == rec["cleanup_pending"], "share_info shows it"
    assert tree_state(share) == data
    # A new start to the same pool retries, and refuses while the leftover is still there.
    before_calls = failing["calls"]
    with pytest.raises(StorageError, match="could not be\\s+removed yet"):
        start(env)
    assert failing["calls"] == before_calls + 1
    rec = env.read_record(env.A, "s1")
    assert rec["task_state"] == states.DATA_COPYING_ERROR and rec["cleanup_pending"][0]["attempts"] == 2
    # Once deleting works again, the next run removes it and the migration starts.
    failing["on"] = False
    result = start(env)
    assert result["task_state"] == states.DATA_COPYING_STARTING
    assert env.read_record(env.A, "s1").get("cleanup_pending") == []


def test_a_cancel_whose_cleanup_fails_is_cancelled_and_retried(env, share, monkeypatch):
    data = tree_state(share)
    to_phase1_done(env)
    failing = _failing_deletion(monkeypatch, "b", "Input/output error")
    result = env.migrations().cancel("s1")
    assert result["task_state"] == states.MIGRATION_CANCELLED
    assert "cleanup is pending" in result["warnings"][0] and "Input/output error" in result["warnings"][0]
    rec = env.read_record(env.A, "s1")
    assert rec["status"] == states.AVAILABLE and rec["migration"]["source_read_only"] is False
    assert [e["pool"] for e in rec["cleanup_pending"]] == [env.B]
    assert tree_state(share) == data
    failing["on"] = False
    assert env.migrations().cancel("s1")["changed"] is True  # a rerun retries the cleanup, which is a change
    assert env.read_record(env.A, "s1")["cleanup_pending"] == []
    assert not os.path.lexists(env.share_path(env.B, "s1"))


def test_after_the_switch_a_failed_deletion_of_the_old_instance_is_success_with_cleanup_pending(env, share, monkeypatch):
    """Case 5 and 6 of the data safety issue ended stuck in migration_completing when the old
    instance could not be deleted. The switch is the point of no return: success, and the
    deletion is retried by later runs, including the share's deletion."""
    to_phase1_done(env)
    final = env.migrations().complete("s1")["copy_plan"]
    failing = _failing_deletion(monkeypatch, "a", "Operation not permitted")
    result = env.migrations().complete("s1", copy_report=report(final))
    assert result["task_state"] == states.MIGRATION_SUCCESS
    assert "cleanup is pending" in result["warnings"][0]
    rec = env.read_record(env.B, "s1")
    assert rec["task_state"] == states.MIGRATION_SUCCESS and env.record_pools("s1") == [env.B]
    assert [(e["pool"], e["reason"].startswith("old instance")) for e in rec["cleanup_pending"]] == [(env.A, True)]
    assert os.path.isdir(share), "the old instance is still there"
    # A rerun of the completion retries (and still reports success).
    again = env.migrations().complete("s1", copy_report=report(final))
    assert again["changed"] is False and again["task_state"] == states.MIGRATION_SUCCESS
    assert env.read_record(env.B, "s1")["cleanup_pending"][0]["attempts"] == 2
    # Deleting the share refuses while its leftover cannot be removed, and changes nothing.
    with pytest.raises(StorageError, match="Cannot delete share s1 yet"):
        env.shares().absent("s1")
    assert env.read_record(env.B, "s1")["status"] == states.AVAILABLE
    failing["on"] = False
    assert env.migrations().complete("s1")["changed"] is True, "the deletion of the old instance is a change"
    assert env.migrations().complete("s1")["changed"] is False
    assert not os.path.lexists(share)
    assert env.read_record(env.B, "s1")["cleanup_pending"] == []
    assert env.shares().absent("s1")["changed"] is True


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
    rec = env.read_record(env.A, "s1")
    drawn = rec["migration"]["passes"]["final"]["id"]
    assert drawn != final["report_signing"]["pass_id"], "a new final pass was drawn"
    assert "after the final pass" in str(info.value) and drawn in str(info.value)
    assert rec["task_state"] == states.DATA_COPYING_COMPLETED and rec["migration"]["final_verified"] is False
    assert env.record_pools("s1") == [env.A]
    writer.write_and_close()
    # The old final pass no longer proves anything.
    with pytest.raises(InvalidRequest, match="made for pass"):
        env.migrations().complete("s1", copy_report=report(final))
    again = env.migrations().complete("s1")["copy_plan"]
    assert again["job_id"] == final["job_id"] and again["report_signing"]["pass_id"] == drawn
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
    passes = env.read_record(env.A, "s1")["migration"]["passes"]
    assert passes["final"]["id"] != final["report_signing"]["pass_id"], "a new final pass was drawn"
