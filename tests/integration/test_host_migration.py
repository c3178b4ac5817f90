"""End-to-end host-assisted share migrations through the operator's playbooks.

Every test runs the real ``playbooks/migrate_share.yml``, ``complete_share_migration.yml`` and
``cancel_share_migration.yml`` with ``ansible-playbook`` against two pools of this machine (an
ext4 and an xfs filesystem when root, see hostmig_lab.py), with localhost as the data node.

Covered (the acceptance list of the host-assisted migration issue): kills at each step and
reruns, a killed ansible-playbook that a rerun attaches to, a corrupted destination, unverified
copies in phase 1, wait=false then a rerun, a cancel in the middle of a copy, two migrations of
two shares at once, and reruns that change nothing. The last section holds cancel edge cases.

Slow copies: the playbooks have no option for a rate limit; the data_mover role's
``data_mover_rsync_options`` (role default ``[]``, not set by playbooks/tasks/run_data_mover.yml)
is reached with an extra var, ``-e '{"data_mover_rsync_options": ["--bwlimit=2m"]}'``, and the
reruns pass the same value (it is part of the copy job's request).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appender import Appender, lost_writes
from hostmig_lab import (
    ALPHA, BETA, COMPLETE, CRASH_ENV, MIGRATE, Lab, alive, can_write, mount_options, opened_lab, processes_naming,
    read_json, tree_tool, wait_until)

pytestmark = pytest.mark.integration

# (glob of the event written just before the crash, task_state the record then holds)
PHASE1_CRASHES = (
    ("migration * requested*", "migration_starting"),
    ("source read-only, destination created", "data_copying_starting"),
    ("data node * copying*", "data_copying_in_progress"),
    ("copy verified", "data_copying_completing"),
)
PHASE2_CRASHES = (
    ("switchover started", "migration_completing"),
    ("final pass verified", "migration_completing"),
    ("destination available, source inactive", "migration_completing"),
    ("migration * completed: share now in *", "migration_success"),
)


def needs_root(lab: Lab, what: str) -> None:
    if not lab.root:
        pytest.skip(f"needs root: {what}")


@pytest.fixture
def lab(tmp_path, collections_path):
    with opened_lab(tmp_path, collections_path) as the_lab:
        yield the_lab


def slow(rate: str) -> dict:
    return {"data_mover_rsync_options": [f"--bwlimit={rate}"]}


def _crash(lab: Lab, action, share: str, event: str, task_state: str) -> dict:
    """Run ``action`` with the crash armed at ``event``; check it died there; return the record."""
    run = action(share, env={CRASH_ENV: event})
    # Exit code 70 of a module: the variable reached the module process (a local connection's
    # modules inherit ansible-playbook's environment) and it died right after writing the event.
    assert run.crashed, f"the run should have died at {event!r}\n{run}"
    record = lab.record(share)
    last = record["history"][-1]["event"]
    assert fnmatch.fnmatchcase(last, event), f"died after {last!r}, not after {event!r}"
    assert record["task_state"] == task_state, (event, record["task_state"])
    return record


def _assert_migrated(lab: Lab, share: str, before: dict) -> None:
    """migration_success, one record (in beta), source instance gone, the data as it was written."""
    records = lab.records(share)
    assert list(records) == ["beta"], f"records of {share} in {sorted(records)}"
    record = records["beta"]
    assert record["task_state"] == "migration_success"
    assert record["status"] == "available"
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(BETA, "available")]
    assert not lab.share_path(share, "alpha").exists(), "the source instance folder is still there"
    after = tree_tool.manifest(str(lab.export_path(share)))
    verdict = tree_tool.compare(before, after)
    assert verdict["equal"], verdict
    mig = record["migration"]["id"]
    for job in (mig, mig + "-final"):
        assert not lab.job_mounts(job), f"job {job} left mounts: {lab.job_mounts(job)}"
        assert not alive(lab.job_status(job).get("pid")), f"the worker of job {job} still runs"
        # The migration ended: nothing of its copy jobs stays on the data node.
        assert not lab.job_folder(job).exists(), f"the folder of job {job} was not removed"
        assert not processes_naming(lab.job_folder(job)), f"processes of job {job} are left"
    # ... while the record keeps their reports, small, with the end of their logs.
    for key in ("copy", "final_copy"):
        assert record["migration"][key]["log_tail"], (key, record["migration"][key])
        assert record["migration"][key]["ignored_count"] == 0


def _rerun_ok(run) -> None:
    assert run.rc == 0, run


# ---------------------------------------------------------------------------------------- 1. crashes


def test_crash_at_every_step_then_rerun_converges(lab):
    """A power cut after each recorded step of both phases; each rerun resumes the same migration.

    The crash points are chained to keep the run time down: the rerun after a crash at step k is
    armed with step k+1, so it has to resume from k and get to k+1; the last rerun of each phase is
    clean and must succeed.
    """
    lab.create_shares("crashy")
    before = lab.fill("crashy")
    mig = None

    for index, (event, task_state) in enumerate(PHASE1_CRASHES):
        record = _crash(lab, lab.migrate, "crashy", event, task_state)
        mig = mig or record["migration"]["id"]
        assert record["migration"]["id"] == mig, "a rerun started a new migration instead of resuming"
        assert record["migration"]["mechanism"] == "host"
        # As root nothing forces the host copy: the driver refuses to rename across filesystems.
        assert record["migration"]["requested"]["force_host_assisted_migration"] is (not lab.root)
        assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("crashy"))))["equal"], "source changed"
        if event == "data node * copying*":
            # The copy job is recorded before the data mover starts it.
            assert record["migration"]["copy_job"]["job_id"] == mig
            assert not lab.job_folder(mig).exists()
        if event == "copy verified":
            report = read_json(lab.job_folder(mig) / "report.json")
            assert report["verified"] is True and report["job_id"] == mig
            assert not lab.job_mounts(mig), "the data mover left its mounts"
        events = lab.events("crashy")
        for earlier, _state in PHASE1_CRASHES[:index + 1]:
            assert any(fnmatch.fnmatchcase(e, earlier) for e in events), (earlier, events)

    _rerun_ok(lab.migrate("crashy"))
    record = lab.record("crashy")
    assert record["task_state"] == "data_copying_completed" and record["migration"]["id"] == mig
    assert read_json(lab.job_folder(mig) / "status.json")["attempt"] == 1, "the verified copy was run again"

    for event, task_state in PHASE2_CRASHES:
        record = _crash(lab, lab.complete, "crashy", event, task_state)
        assert record["migration"]["id"] == mig
        if event == "final pass verified":
            assert record["migration"]["final_verified"] is True
            assert lab.share_path("crashy", "alpha").is_dir(), "the source went before the switch"
        if event == "destination available, source inactive":
            # The export was switched, the source is not deleted yet: the rerun must finish that.
            assert {i["pool"]: i["status"] for i in record["instances"]} == {ALPHA: "inactive", BETA: "available"}
            assert lab.share_path("crashy", "alpha").is_dir()
            if lab.root:
                assert os.stat(lab.export_path("crashy")).st_ino == os.stat(lab.share_path("crashy", "beta")).st_ino
        if event.startswith("migration * completed"):
            records = lab.records("crashy")
            assert sorted(records) == ["alpha", "beta"], "the stale record should still be there"
            assert records["beta"]["revision"] > records["alpha"]["revision"]
            # The switch is done: deleting the old instance is cleanup, noted before it runs,
            # which the rerun finishes.
            assert [e["pool"] for e in records["beta"]["cleanup_pending"]] == [ALPHA]
            assert lab.share_path("crashy", "alpha").is_dir()

    final = lab.complete("crashy")
    _rerun_ok(final)
    # The last crash came right after the completed record: this rerun deletes the old instance and
    # removes the two copy jobs from the data node, and changes nothing else.
    changed = re.findall(r"^TASK \[(.*)\] \*+\nchanged:", final.out, re.M)
    jobs = [task for task in changed if " : Remove copy job " in task]
    assert len(jobs) == 2, changed
    assert final.recap()["changed"] == 3, "the rerun did not report the deletion of the old instance: %s" % changed
    again = lab.complete("crashy")
    _rerun_ok(again)
    assert again.recap()["changed"] == 0, "completing a completed migration changed something"
    _assert_migrated(lab, "crashy", before)


# ---------------------------------------------------------------------------------------- kill -9


def test_killed_playbook_rerun_attaches_to_the_running_copy(lab):
    """SIGKILL to ansible-playbook's process group while the data mover waits: the detached copy
    goes on, and a rerun attaches to that same job (same worker, same attempt) and finishes."""
    lab.create_shares("killed")
    before = lab.fill_plain("killed", big_mb=32)
    # About 43 s of copying: on a loaded machine the first run's tasks after the start take many
    # seconds, and the copy must still run when it returns.
    extra = slow("768k")

    proc, log = lab.spawn(MIGRATE, lab.migrate_vars("killed", **extra))
    try:
        wait_until(lambda: "TASK [storage.mobility.data_mover : Wait for copy job" in log.read_text(errors="replace")
                   or proc.poll() is not None, "the data mover to wait for the copy", attempts=1200)
        assert proc.poll() is None, f"the playbook ended before the wait:\n{log.read_text(errors='replace')}"
        mig = lab.migration_id("killed")
        during = lab.job_status(mig)
        assert during["state"] == "running", during
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: not processes_naming(lab.inventory), "the killed run's processes to go")
    assert alive(during["pid"]), "the copy worker died with ansible-playbook"
    assert lab.record("killed")["task_state"] == "data_copying_in_progress"

    rerun = lab.migrate("killed", **extra)
    _rerun_ok(rerun)
    after = lab.job_status(mig)
    assert after["state"] == "completed"
    # The same job: no new attempt, the same worker, the same start; rsync was run once.
    assert after["attempt"] == during["attempt"] == 1, (during, after)
    assert (after["pid"], after["started_at"]) == (during["pid"], during["started_at"]), (during, after)
    rsync_log = (lab.job_folder(mig) / "rsync.log").read_text(errors="replace").splitlines()
    assert len([line for line in rsync_log if line.startswith("--- ") and " attempt " in line]) == 1, rsync_log
    assert lab.record("killed")["task_state"] == "data_copying_completed"
    assert not lab.job_mounts(mig), lab.job_mounts(mig)
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("killed", "beta"))))["equal"]


# ---------------------------------------------------------------------------------------- corruption


def _flip_byte(path: Path, offset: int = 10) -> None:
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


def test_corrupted_destination_fails_the_final_pass_and_switches_nothing(lab):
    """A byte flipped in the destination after phase 1 (same size, same mtime): the final pass must
    catch it, name the file and leave the share in data_copying_completed on its source. Then a
    cancel that crashes after 'cancel requested' is finished by a rerun."""
    lab.create_shares("rotten")
    before = lab.fill_plain("rotten")
    _rerun_ok(lab.migrate("rotten"))
    record = lab.record("rotten")
    assert record["task_state"] == "data_copying_completed"
    victim_rel = "dir1/file004.txt"
    victim = lab.share_path("rotten", "beta") / victim_rel
    assert victim.stat().st_size > 100
    _flip_byte(victim)

    run = lab.complete("rotten")
    assert run.rc != 0, run
    assert victim_rel in run.out, f"the failure should name {victim_rel}\n{run}"
    records = lab.records("rotten")
    assert list(records) == ["alpha"], sorted(records)
    record = records["alpha"]
    assert record["task_state"] == "data_copying_completed"
    assert victim_rel in (record["migration"].get("error") or "")
    active = [i for i in record["instances"] if i["role"] == "active"]
    assert [i["pool"] for i in active] == [ALPHA]
    assert lab.share_path("rotten", "beta").is_dir(), "the destination was deleted"
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("rotten"))))["equal"], "source touched"
    if lab.root:
        exported = lab.export_path("rotten")
        assert os.stat(exported).st_ino == os.stat(lab.share_path("rotten")).st_ino, "the export was switched"
        assert not can_write(exported)[0], "the source became writable while still migrating"

    # Roll back instead; the cancel dies right after recording its start, a rerun finishes it.
    _crash(lab, lab.cancel, "rotten", "cancel requested", "migration_cancel_in_progress")
    assert lab.share_path("rotten", "beta").is_dir()
    _rerun_ok(lab.cancel("rotten"))
    record = lab.record("rotten")
    assert record["task_state"] == "migration_cancelled"
    assert record["status"] == "available"
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(ALPHA, "available")]
    assert not lab.share_path("rotten", "beta").exists(), "the destination instance is still there"
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.export_path("rotten"))))["equal"]
    assert can_write(lab.export_path("rotten"))[0], "the share is not writable again after the cancel"


def test_a_stale_final_verification_is_not_switched(lab):
    """Phase 2 dies right after its verified final report was recorded (migration_completing,
    final_verified); a destination byte then changes with size and mtime kept. The rerun must not
    switch on the old verification: both instances are sealed again, the changed destination is
    named, a new final pass runs and finds the file, nothing is switched and the source stays the
    share. The run after that copies the file again and switches to an identical share."""
    lab.create_shares("stale")
    before = lab.fill_plain("stale")
    _rerun_ok(lab.migrate("stale"))
    record = _crash(lab, lab.complete, "stale", "final pass verified", "migration_completing")
    assert record["migration"]["final_verified"] is True
    assert record["migration"]["final_copy"]["destination_seal"].startswith("seal1:")
    victim_rel = "dir1/file004.txt"
    victim = lab.share_path("stale", "beta") / victim_rel
    _flip_byte(victim)

    run = lab.complete("stale")
    assert run.rc != 0, f"the rerun must not switch on the stale verification\n{run}"
    assert "the destination instance changed since the final pass verified it" in run.out, run
    assert victim_rel in run.out, f"the new final pass should name {victim_rel}\n{run}"
    records = lab.records("stale")
    assert list(records) == ["alpha"], sorted(records)
    record = records["alpha"]
    assert record["task_state"] == "data_copying_completed"
    assert [i["pool"] for i in record["instances"] if i["role"] == "active"] == [ALPHA]
    assert victim_rel in (record["migration"].get("error") or "")
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("stale"))))["equal"], "source touched"
    if lab.root:
        exported = lab.export_path("stale")
        assert os.stat(exported).st_ino == os.stat(lab.share_path("stale")).st_ino, "the export was switched"

    _rerun_ok(lab.complete("stale"))
    _assert_migrated(lab, "stale", before)


def test_a_hand_made_final_report_completes_nothing(lab):
    """share_migration state=completed with a hand-made report of the right job id, after the destination
    was emptied: refused before and after the final pass was asked for; nothing switched, source kept."""
    lab.create_shares("forged")
    before = lab.fill_plain("forged", files=10)
    _rerun_ok(lab.migrate("forged"))
    mig = lab.migration_id("forged")
    for entry in lab.share_path("forged", "beta").iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    forged = {"job_id": mig + "-final", "state": "completed", "verified": True}
    revision = lab.record("forged")["revision"]
    refused = lab.module("share_migration", {"share": "forged", "state": "completed", "copy_report": forged},
                         check=False)
    assert refused.get("failed") and "no final pass was handed out yet" in refused["msg"], refused
    assert lab.record("forged")["revision"] == revision, "a forged report changed the record"
    asked = lab.module("share_migration", {"share": "forged", "state": "completed"})
    assert asked["copy_required"] and asked["copy_plan"]["report_signing"]["pass_id"]
    binding = asked["copy_plan"]["report_signing"]
    named = dict(forged, migration_id=binding["migration_id"], pass_id=binding["pass_id"],
                 signature="hmac-sha256:" + "0" * 64)
    refused = lab.module("share_migration", {"share": "forged", "state": "completed", "copy_report": named},
                         check=False)
    assert refused.get("failed") and "its signature does not match its contents" in refused["msg"], refused
    record = lab.record("forged")
    assert list(lab.records("forged")) == ["alpha"] and record["task_state"] == "migration_completing"
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("forged"))))["equal"]
    info = lab.share_info("forged")
    assert binding["key"] not in json.dumps(info), "share_info shows the pass key"
    _rerun_ok(lab.cancel("forged"))


def test_unverified_copy_in_phase1_restores_the_source(lab):
    """The data mover's own verification fails (rsync told to leave one file out, through the
    role's data_mover_rsync_options): data_copying_error, the file named, the destination removed,
    the source available and untouched."""
    lab.create_shares("partial")
    victim = "left-out-by-rsync.txt"
    (lab.share_path("partial") / victim).write_text("only in the source\n")
    before = lab.fill_plain("partial")
    run = lab.migrate("partial", data_mover_rsync_options=["--exclude=/" + victim])
    assert run.rc != 0, run
    assert victim in run.out, f"the failure should name {victim}\n{run}"
    record = lab.record("partial")
    assert record["task_state"] == "data_copying_error"
    assert record["status"] == "available"
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(ALPHA, "available")]
    assert victim in record["migration"]["error"]
    assert not lab.share_path("partial", "beta").exists(), "the destination instance is still there"
    assert not lab.job_mounts(record["migration"]["id"])
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.export_path("partial"))))["equal"]
    if lab.root:
        assert can_write(lab.export_path("partial"))[0], "the share is not writable again"


def test_unverified_or_foreign_report_through_the_module(lab):
    """Phase 1 driven through share_migration with hand-made reports: a report of another job is
    refused and changes nothing; a completed but unverified report bound to the migration ends in
    data_copying_error with the destination removed and the source available, untouched."""
    lab.create_shares("handmade")
    before = lab.fill_plain("handmade")
    args = {"share": "handmade", "destination_pool": BETA}
    if not lab.root:
        args["force_host_assisted_migration"] = True
    started = lab.module("share_migration", args)
    plan = started["copy_plan"]
    assert started["task_state"] == "data_copying_starting" and plan["final_pass"] is False
    mig = plan["job_id"]
    lab.migration_ids.add(mig)
    assert lab.share_path("handmade", "beta").is_dir()

    revision = lab.record("handmade")["revision"]
    foreign = lab.module("share_migration", dict(args, copy_report={"job_id": mig + "-other", "state": "completed",
                                                                    "verified": True}), check=False)
    assert foreign.get("failed") and "Refusing the copy report" in foreign["msg"], foreign
    assert lab.record("handmade")["revision"] == revision, "a foreign report changed the record"

    report = {"job_id": mig, "state": "completed", "verified": False, "verification": "failed",
              "differ": [{"path": "dir1/file001.txt", "attributes": ["hash"]}], "differ_count": 1,
              "missing": [], "extra": []}
    failed = lab.module("share_migration", dict(args, copy_report=report), check=False)
    assert failed.get("failed"), failed
    assert "dir1/file001.txt" in failed["msg"] and "not verified" in failed["msg"], failed["msg"]
    record = lab.record("handmade")
    assert record["task_state"] == "data_copying_error"
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(ALPHA, "available")]
    assert not lab.share_path("handmade", "beta").exists()
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.export_path("handmade"))))["equal"]
    if lab.root:
        assert can_write(lab.export_path("handmade"))[0], "the share is not writable again"


# ---------------------------------------------------------------------------------------- wait=false


def test_wait_false_returns_while_copying_then_a_rerun_attaches(lab):
    needs_root(lab, "the bind export is what makes the source really read-only during the copy")
    lab.create_shares("nowait")
    before = lab.fill_plain("nowait", big_mb=32)
    # About 43 s of copying: on a loaded machine the first run's tasks after the start take many
    # seconds, and the copy must still run when it returns.
    extra = slow("768k")

    first = lab.migrate("nowait", wait=False, **extra)
    _rerun_ok(first)
    mig = lab.migration_id("nowait")
    during = lab.job_status(mig)
    assert during["state"] == "running", f"the playbook should return while the copy runs: {during}"
    assert lab.job_mounts(mig), "the running job's mounts should stay"
    info = lab.share_info("nowait")
    assert info["task_state"] == "data_copying_in_progress"
    progress = info.get("copy_progress")
    assert progress, f"share_info shows no copy_progress: {info}"
    assert progress["state"] in ("running", "completed") and 0 <= progress["percent"] <= 100
    assert progress["bytes_total"] >= 32 << 20, progress

    exported = lab.export_path("nowait")
    assert (exported / "dir1" / "file001.txt").read_bytes() == (lab.share_path("nowait") / "dir1" /
                                                                "file001.txt").read_bytes()
    writable, error = can_write(exported)
    assert not writable and "Read-only" in error, "the share accepted a write during the copy"
    assert "ro" in mount_options(exported), mount_options(exported)

    second = lab.migrate("nowait", **extra)
    _rerun_ok(second)
    after = lab.job_status(mig)
    assert after["state"] == "completed"
    assert (after["attempt"], after["pid"], after["started_at"]) == (1, during["pid"], during["started_at"]), \
        "the rerun did not attach to the running job"
    record = lab.record("nowait")
    assert record["task_state"] == "data_copying_completed" and record["migration"]["id"] == mig
    assert record["migration"]["copy"]["files"] == 31
    assert not lab.job_mounts(mig), lab.job_mounts(mig)
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("nowait", "beta"))))["equal"]


# ---------------------------------------------------------------------------------------- cancel


def test_cancel_in_the_middle_of_a_copy(lab):
    needs_root(lab, "the bind export shows whether the share is writable again")
    lab.create_shares("halted")
    before = lab.fill_plain("halted", big_mb=40)
    # About 40 s of copying: room for a slow cancel playbook on a loaded machine; the cancel
    # stops the copy, so the window costs nothing when the cancel comes early.
    first = lab.migrate("halted", wait=False, **slow("1m"))
    _rerun_ok(first)
    mig = lab.migration_id("halted")
    during = lab.job_status(mig)
    assert during["state"] == "running", during
    worker = during["pid"]
    assert lab.job_mounts(mig), "no mounts of the running job"

    run = lab.cancel("halted")
    _rerun_ok(run)
    wait_until(lambda: not alive(worker), f"the worker {worker} to be gone", attempts=100)
    # The migration ended: its copy jobs are gone from the data node, folders and lock files.
    assert not lab.job_folder(mig).exists() and not lab.job_folder(mig + "-final").exists()
    assert not (lab.job_folder(mig).parent / f".{mig}.lock").exists()
    assert not processes_naming(lab.job_folder(mig), "/tmp/" + mig), "processes of the job survived the cancel"
    assert not lab.job_mounts(mig), f"mounts left behind: {lab.job_mounts(mig)}"
    assert not lab.share_path("halted", "beta").exists(), "the destination instance is still there"
    record = lab.record("halted")
    assert record["task_state"] == "migration_cancelled"
    assert record["status"] == "available"
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(ALPHA, "available")]
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("halted"))))["equal"]
    writable, error = can_write(lab.export_path("halted"))
    assert writable, f"the share is not writable again through its export: {error}"


# ---------------------------------------------------------------------------------------- two at once


@pytest.fixture(scope="module")
def two_at_once(tmp_path_factory, collections_path):
    """Two shares migrated by concurrent playbook runs, with the reruns of test 7 in between."""
    the_lab = Lab(tmp_path_factory.mktemp("two"), collections_path)
    evidence = {}
    try:
        the_lab.open()
        the_lab.create_shares("left", "right")
        evidence["before"] = {s: the_lab.fill_plain(s, files=40, big_mb=4) for s in ("left", "right")}
        procs = [the_lab.spawn(MIGRATE, the_lab.migrate_vars(s)) for s in ("left", "right")]
        evidence["migrate"] = [the_lab.finish(p, log) for p, log in procs]
        evidence["phase1"] = {s: the_lab.record(s) for s in ("left", "right")}
        mig = evidence["phase1"]["left"]["migration"]["id"]
        evidence["job_before"] = _job_files(the_lab, mig)
        evidence["migrate_again"] = the_lab.migrate("left")
        evidence["job_after"] = _job_files(the_lab, mig)
        evidence["left_after_rerun"] = the_lab.record("left")
        evidence["final_job_exists_early"] = the_lab.job_folder(mig + "-final").exists()
        procs = [the_lab.spawn(COMPLETE, {"share": s, "mobility_poll_seconds": 1}) for s in ("left", "right")]
        evidence["complete"] = [the_lab.finish(p, log) for p, log in procs]
        evidence["phase2"] = {s: the_lab.record(s) for s in ("left", "right")}
        evidence["jobs_left_after_complete"] = [job for job in (mig, mig + "-final") if the_lab.job_folder(job).exists()]
        evidence["complete_again"] = the_lab.complete("left")
        evidence["jobs_left_after_rerun"] = [job for job in (mig, mig + "-final") if the_lab.job_folder(job).exists()]
        evidence["phase2_again"] = the_lab.record("left")
        evidence["records"] = {s: sorted(the_lab.records(s)) for s in ("left", "right")}
        evidence["after"] = {s: tree_tool.manifest(str(the_lab.export_path(s))) for s in ("left", "right")}
        evidence["source_left"] = {s: the_lab.share_path(s, "alpha").exists() for s in ("left", "right")}
        yield evidence
    finally:
        problems = the_lab.close()
    assert not problems, problems


def _job_files(lab: Lab, job: str) -> dict:
    """Modification times (ns) of a copy job's files: a job run or restarted again rewrites them."""
    folder = lab.job_folder(job)
    return {name: (folder / name).stat().st_mtime_ns for name in ("job.json", "status.json", "report.json")}


def test_two_migrations_of_two_shares_at_once(two_at_once):
    ev = two_at_once
    for run in ev["migrate"]:
        _rerun_ok(run)
    assert {s: r["task_state"] for s, r in ev["phase1"].items()} == {"left": "data_copying_completed",
                                                                     "right": "data_copying_completed"}
    assert ev["phase1"]["left"]["migration"]["id"] != ev["phase1"]["right"]["migration"]["id"]
    # The two phase 1 runs really overlapped: each started before the other had finished.
    spans = {}
    for share, record in ev["phase1"].items():
        times = [(h["at"], h["event"]) for h in record["history"]]
        start = [at for at, event in times if fnmatch.fnmatchcase(event, "migration * requested*")]
        end = [at for at, event in times if event.startswith("phase 1 done")]
        spans[share] = (start[-1], end[-1])
    assert max(s for s, _e in spans.values()) < min(e for _s, e in spans.values()), spans
    for run in ev["complete"]:
        _rerun_ok(run)
    assert {s: r["task_state"] for s, r in ev["phase2"].items()} == {"left": "migration_success",
                                                                     "right": "migration_success"}
    assert ev["records"] == {"left": ["beta"], "right": ["beta"]}
    assert ev["source_left"] == {"left": False, "right": False}
    for share in ("left", "right"):
        verdict = tree_tool.compare(ev["before"][share], ev["after"][share])
        assert verdict["equal"], (share, verdict)
    assert ev["before"]["left"]["digest"] != ev["before"]["right"]["digest"], "the two shares should differ"


def test_rerunning_the_playbooks_changes_nothing(two_at_once):
    ev = two_at_once
    rerun = ev["migrate_again"]
    _rerun_ok(rerun)
    assert rerun.recap()["changed"] == 0, f"migrate_share after data_copying_completed changed something\n{rerun}"
    assert ev["left_after_rerun"]["revision"] == ev["phase1"]["left"]["revision"]
    assert ev["left_after_rerun"]["task_state"] == "data_copying_completed"
    assert ev["job_after"] == ev["job_before"], "the copy job was touched by the rerun"
    assert ev["final_job_exists_early"] is False
    again = ev["complete_again"]
    _rerun_ok(again)
    assert again.recap()["changed"] == 0, f"complete_share_migration after success changed something\n{again}"
    assert ev["phase2_again"]["revision"] == ev["phase2"]["left"]["revision"]
    # The finished migration left no copy job on the data node, and the rerun started none.
    assert ev["jobs_left_after_complete"] == [] and ev["jobs_left_after_rerun"] == []
    assert ev["phase2_again"]["migration"]["final_copy"] == ev["phase2"]["left"]["migration"]["final_copy"]


# ---------------------------------------------------------------------------------------- cancel edge cases


def test_cancel_after_a_crash_while_starting_leaves_foreign_destination_data_alone(lab):
    """A folder at the destination path that the migration never created (foreign data: the start
    refuses to create the instance over it) must survive a cancel of a migration that died in
    migration_starting, as it survives the failure path of phase 1."""
    lab.create_shares("foreign")
    before = lab.fill_plain("foreign", files=10)
    foreign = lab.share_path("foreign", "beta")
    foreign.mkdir(parents=True)
    (foreign / "not-yours.txt").write_text("data this collection does not manage\n")
    record = _crash(lab, lab.migrate, "foreign", "migration * requested*", "migration_starting")
    assert [i["pool"] for i in record["instances"]] == [ALPHA], "no destination instance was created yet"

    _rerun_ok(lab.cancel("foreign"))
    record = lab.record("foreign")
    assert record["task_state"] == "migration_cancelled"
    assert (foreign / "not-yours.txt").is_file(), "the cancel deleted a folder the migration never created"
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("foreign"))))["equal"]


def test_cancel_after_a_crash_in_the_switchover_before_the_switch(lab):
    """docs/share_migration.md, 'Crashes and reruns': died in the switchover before the data was
    switched -> 'completed again, or cancel'. Nothing was switched, so the cancel must roll back."""
    lab.create_shares("undecided")
    before = lab.fill_plain("undecided", files=10)
    _rerun_ok(lab.migrate("undecided"))
    _crash(lab, lab.complete, "undecided", "switchover started", "migration_completing")
    run = lab.cancel("undecided")
    assert run.rc == 0, run
    record = lab.record("undecided")
    assert record["task_state"] == "migration_cancelled"
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(ALPHA, "available")]
    assert not lab.share_path("undecided", "beta").exists()
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.export_path("undecided"))))["equal"]


def test_cancel_during_the_final_pass_rolls_everything_back(lab):
    """cancel_share_migration while the switchover's final pass copies (migration_completing,
    nothing switched yet): the final pass is stopped, the destination removed, the source is the
    share again, intact and writable, and the waiting switchover fails without switching."""
    lab.create_shares("late")
    lab.fill_plain("late", files=10)
    _rerun_ok(lab.migrate("late"))
    # Something for the final pass to copy (slowly): data added to the source in its pool.
    lab.fill_plain("late", files=0, big_mb=48)
    before = tree_tool.manifest(str(lab.share_path("late")))
    final = lab.migration_id("late") + "-final"
    # About 96 s of final pass (the cancel stops it, so the window costs nothing when the cancel
    # comes early): room for the cancel playbook on a machine loaded by parallel test lanes.
    proc, log = lab.spawn(COMPLETE, dict({"share": "late", "mobility_poll_seconds": 1}, **slow("512k")))
    try:
        wait_until(lambda: lab.job_status(final).get("phase") == "copying" or proc.poll() is not None,
                   "the final pass to copy", attempts=1200)
        assert lab.job_status(final)["state"] == "running", lab.job_status(final)
        cancel = lab.cancel("late")
        assert cancel.rc == 0, cancel
        # Cancelled, then removed with the migration's end.
        assert not lab.job_folder(final).exists()
    finally:
        done = lab.finish(proc, log)
    assert done.rc != 0, "the switchover went on after its final pass was cancelled"
    records = lab.records("late")
    assert list(records) == ["alpha"], sorted(records)
    assert records["alpha"]["task_state"] == "migration_cancelled"
    assert [(i["pool"], i["status"]) for i in records["alpha"]["instances"]] == [(ALPHA, "available")]
    assert not lab.share_path("late", "beta").exists()
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("late"))))["equal"]


# ---------------------------------------------------------------------------------------- killed worker


def test_a_killed_final_pass_worker_is_reported_leaves_nothing_and_a_rerun_finishes(lab):
    """kill -9 of the final pass's worker while the playbook waits: none of its processes stay, the
    run fails with the job's own words (the final pass, gone without a final status, how to resume)
    and switches nothing; the rerun finishes, removes both copy jobs, and a deep lost+found that the
    ignore list left out is named in the phase 1 summary and in the record."""
    lab.create_shares("stopped")
    lab.fill_plain("stopped", files=10)
    deep = lab.share_path("stopped") / "dir0" / "lost+found"
    deep.mkdir()
    (deep / "notes.txt").write_bytes(b"a user's file in a folder the reference ignores")
    first = lab.migrate("stopped")
    _rerun_ok(first)
    assert "left out    : 1 entries by the ignore list: dir0/lost+found/" in first.out, first
    record = lab.record("stopped")
    assert record["migration"]["copy"]["ignored"] == ["dir0/lost+found/"]
    assert record["migration"]["copy"]["ignored_count"] == 1
    lab.fill_plain("stopped", files=0, big_mb=24)
    final = lab.migration_id("stopped") + "-final"
    proc, log = lab.spawn(COMPLETE, dict({"share": "stopped", "mobility_poll_seconds": 1}, **slow("2m")))
    try:
        wait_until(lambda: lab.job_status(final).get("phase") == "copying" or proc.poll() is not None,
                   "the final pass to copy", attempts=1200)
        status = lab.job_status(final)
        assert status["state"] == "running", status
        folder = lab.job_folder(final)
        # The worker, its hashing process and rsync (which names the job's mount point).
        wait_until(lambda: len(processes_naming(folder, "/tmp/" + final)) >= 3 or proc.poll() is not None,
                   "the worker's helpers to run", attempts=600)
        assert proc.poll() is None and len(processes_naming(folder)) >= 2, processes_naming(folder)
        os.kill(status["pid"], signal.SIGKILL)
        wait_until(lambda: not processes_naming(folder, "/tmp/" + final), "the job's processes to go", attempts=100)
    finally:
        done = lab.finish(proc, log)
    assert done.rc != 0, done
    assert "is gone without a final status" in done.out and "the final pass" in done.out, done
    assert "no error given" not in done.out and "ended absent" not in done.out, done
    record = lab.record("stopped")
    assert record["task_state"] == "data_copying_completed", record["task_state"]
    assert "is gone without a final status" in record["migration"]["error"]
    assert lab.share_path("stopped", "alpha").is_dir(), "the source went without a verified final pass"
    assert not lab.job_mounts(final), lab.job_mounts(final)

    before = tree_tool.manifest(str(lab.share_path("stopped")))
    rerun = lab.complete("stopped")
    _rerun_ok(rerun)
    assert "left out    : 1 entries by the ignore list" in rerun.out, rerun
    records = lab.records("stopped")
    assert records["beta"]["migration"]["final_copy"]["ignored"] == ["dir0/lost+found/"]
    for job in (lab.migration_id("stopped"), final):
        assert not lab.job_folder(job).exists(), f"job {job} was not removed"
    after = tree_tool.manifest(str(lab.export_path("stopped")))
    verdict = tree_tool.compare(before, after)
    # Everything moved, except what the ignore list left out (and named, above).
    assert (verdict["missing"], verdict["extra"], verdict["differ"]) == (
        ["dir0/lost+found", "dir0/lost+found/notes.txt"], [], []), verdict


# ---------------------------------------------------------------------------- writers at the switchover

HOLDER = """
import sys
f = open(sys.argv[1], 'a')
f.write('before\\n'); f.flush()
print('ready', flush=True)
sys.stdin.readline()
f.write('late\\n'); f.close()
print('closed', flush=True)
sys.stdin.readline()
"""


def _raw_folder(lab: Lab, share: str, peek: Path) -> list[str]:
    """What the export root's own folder of the share holds under the mounts (seen through a
    non-recursive bind mount of the export root)."""
    peek.mkdir()
    subprocess.run(["mount", "--bind", str(lab.exports), str(peek)], check=True)
    try:
        return sorted(os.listdir(peek / share))
    finally:
        subprocess.run(["umount", str(peek)], check=True)


def test_writes_through_the_export_during_phase2_are_never_lost(lab):
    """A program appending through the export path for the whole of phase 2 (ext4 -> xfs, bind
    export): writes fail while the share is read-only, succeed into the destination after the
    switch, and no write it saw succeed is missing from the share; nothing is left in the export
    root's own folder under the mounts."""
    needs_root(lab, "bind exports over loop-mounted pools")
    lab.create_shares("busy")
    lab.fill_plain("busy", files=20)
    _rerun_ok(lab.migrate("busy"))
    export = lab.export_path("busy")
    appender = Appender(export / "appended.log", lab.work)
    try:
        run = lab.complete("busy")
        assert run.rc == 0, run
        result = appender.stop_after_successes(300)
    finally:
        appender.kill()
    assert result["failed"] > 0, "the read-only phase should have refused writes"
    assert len(result["accepted"]) >= 300, "the writer should have written into the share after the switch"
    assert lost_writes(result, lab.share_path("busy", "beta") / "appended.log") == []
    assert lab.record("busy")["task_state"] == "migration_success"
    assert _raw_folder(lab, "busy", lab.work / "peek") == []


def test_a_writer_through_the_pool_path_is_named_and_the_switch_refuses_or_waits(lab):
    """A process holding a source file open for writing through the pool path (not the export):
    phase 2 refuses, naming it, and switches nothing; with open_writers_wait it waits for the
    file to be closed, and what was written before the close is in the share."""
    lab.create_shares("held")
    before = lab.fill_plain("held", files=10)
    _rerun_ok(lab.migrate("held"))
    held = lab.share_path("held") / "held.log"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    timer = None
    try:
        assert holder.stdout.readline().strip() == "ready"
        run = lab.complete("held")
        assert run.rc != 0, run
        assert f"{holder.pid} (python" in run.out and "open for writing" in run.out, run
        record = lab.record("held")
        assert record["task_state"] == "data_copying_completed"
        assert list(lab.records("held")) == ["alpha"]
        assert "Switchover refused" in record["migration"]["error"]

        def close_it():
            holder.stdin.write("\n")
            holder.stdin.flush()
        timer = threading.Timer(3.0, close_it)
        timer.start()
        run = lab.complete("held", open_writers_wait=120)
        assert run.rc == 0, run
        assert holder.stdout.readline().strip() == "closed"
    finally:
        if timer is not None:
            timer.cancel()
        holder.kill()
        holder.wait()
    assert lab.record("held")["task_state"] == "migration_success"
    assert (lab.share_path("held", "beta") / "held.log").read_text() == "before\nlate\n"
    verdict = tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("held", "beta"))))
    assert (verdict["missing"], verdict["differ"], verdict["extra"]) == ([], [], ["held.log"]), verdict


# ---------------------------------------------------------------------------- a writable copy (issue 20)

# A user's program creating one numbered file after another in a folder of the share, through the
# export path; the numbers of the files it saw written go to a file outside the share when it stops.
FILE_WRITER = """
import json, os, sys, time
folder, stop, result = sys.argv[1], sys.argv[2], sys.argv[3]
accepted, failed, n = [], 0, 0
while not os.path.exists(stop):
    try:
        with open(os.path.join(folder, 'f%06d' % n), 'x') as handle:
            handle.write('%d\\n' % n)
        accepted.append(n)
    except OSError:
        failed += 1
    n += 1
    time.sleep(0.05)
with open(result, 'w') as handle:
    json.dump({'accepted': accepted, 'failed': failed}, handle)
"""


def flat(text: str) -> str:
    """Playbook output with every run of whitespace as one space (the yaml callback wraps long lines)."""
    return " ".join(text.split())


def test_a_writable_copy_keeps_the_share_writable_in_phase1_and_loses_no_write(lab):
    """writable=true between ext4 and xfs: users write through phase 1 (a writer creating files the
    whole time, also between two runs of phase 1, the second of which sends an increment); phase 2
    makes the source read-only, runs the final pass and switches. Every file the writer saw written
    is on the destination, the rest of the tree is as it was, and the read-only window is reported
    and lies inside phase 2."""
    needs_root(lab, "a bind export over loop-mounted ext4 and xfs pools")
    lab.create_shares("live")
    before = lab.fill_plain("live", files=20, big_mb=40)
    export = lab.export_path("live")
    incoming = export / "incoming"
    incoming.mkdir()
    stop, result_file = lab.work / "writer.stop", lab.work / "writer.json"
    writer = subprocess.Popen([sys.executable, "-c", FILE_WRITER, str(incoming), str(stop), str(result_file)])
    try:
        wait_until(lambda: len(os.listdir(incoming)) >= 5, "the writer's first files")
        # About 40 s of copying (40 MiB at 1 MiB/s) while the writer goes on.
        began = time.monotonic()
        first = lab.migrate("live", writable=True, **slow("1m"))
        phase1_seconds = time.monotonic() - began
        _rerun_ok(first)
        record = lab.record("live")
        mig = record["migration"]
        assert record["task_state"] == "data_copying_completed", record["task_state"]
        assert mig["mechanism"] == "host" and mig["requested"]["writable"] is True
        assert "different filesystems" in mig["driver_refusal"]
        assert mig["source_read_only"] is False and "read_only_at" not in mig
        assert "ro" not in mount_options(export) and can_write(export)[0], "phase 1 made the share read-only"
        assert "writable : yes: users write during phase 1" in flat(first.out), first
        # The writer's files made the first verification differ: expected on a writable source, so
        # the data mover says so and fails nothing (no failed task, nothing rescued).
        assert "The source stayed writable and changed while copy job" in flat(first.out), first
        assert "rescued=1" not in first.out and "fatal:" not in first.out, first

        written = len(os.listdir(incoming))
        wait_until(lambda: len(os.listdir(incoming)) >= written + 10, "the writer's files between the two runs")
        second = lab.migrate("live", writable=True, **slow("1m"))
        _rerun_ok(second)
        increment = lab.record("live")["migration"]["increments"][-1]
        assert increment["number"] == 1 and increment["files"] >= 10 and increment["bytes"] > 0, increment
        assert f"increment 1: {increment['files']} files, {increment['bytes']} bytes changed" in flat(second.out), second
        assert can_write(export)[0], "the increment made the share read-only"

        began = time.monotonic()
        completed = lab.complete("live", open_writers_wait=30)
        phase2_seconds = time.monotonic() - began
        assert completed.rc == 0, completed
        # A few files more after the switch, into the destination.
        switched = len(os.listdir(export / "incoming"))
        wait_until(lambda: len(os.listdir(export / "incoming")) >= switched + 5, "the writer's files after the switch")
        stop.write_text("stop")
        writer.wait(timeout=60)
        result = json.loads(result_file.read_text())
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    record = lab.record("live")
    mig = record["migration"]
    assert record["task_state"] == "migration_success" and list(lab.records("live")) == ["beta"]
    destination = lab.share_path("live", "beta")
    on_destination = sorted(os.listdir(destination / "incoming"))
    lost = [n for n in result["accepted"] if f"f{n:06d}" not in on_destination]
    assert lost == [], f"{len(lost)} files the writer saw written are not on the destination: {lost[:10]}"
    assert on_destination == [f"f{n:06d}" for n in result["accepted"]], "files the writer never saw written"
    assert all((destination / "incoming" / f"f{n:06d}").read_text() == f"{n}\n" for n in result["accepted"])
    assert result["failed"] > 0, "phase 2 should have refused writes while the source was read-only"
    verdict = tree_tool.compare(before, tree_tool.manifest(str(destination)))
    assert (verdict["missing"], verdict["differ"]) == ([], []), verdict
    assert all(path == "incoming" or path.startswith("incoming/") for path in verdict["extra"]), verdict["extra"]

    window = mig["read_only_seconds"]
    assert mig["read_only_at"] > mig["phase1_done_at"], "the source became read-only before phase 2"
    # The window lies inside the phase-2 run: none of phase 1's copying (about 40 s) is in it.
    assert 0 < window <= phase2_seconds + 1, (window, phase2_seconds, phase1_seconds, mig["copy"])
    assert lab.share_info("live")["migration"]["read_only_seconds"] == window
    assert f"read-only : {window} s (users could not write from {mig['read_only_at']} (phase 2" in flat(completed.out), completed
