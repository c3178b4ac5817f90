"""Data copy jobs end to end (plugins/module_utils/data_copy/{job,worker}.py): real rsync, real files,
real detached workers. Waiting is bounded polling, never a sleep whose length is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
from copied_trees import acl_xattr

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import job as job_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import layout as layout_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline as lifeline_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import seal as seal_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import worker as worker_lib
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")

POLL_LIMIT = 120.0
BAD = b"caf\xe9-latin1"  # not UTF-8
MiB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def poll(fetch, predicate, what, limit=POLL_LIMIT):
    """Call ``fetch`` until ``predicate(result)``; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = fetch()
        if predicate(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting for %s after %d s; last: %r" % (what, limit, result))
        time.sleep(0.05)


def finish(jobs, job_id):
    job = jobs.wait(job_id, POLL_LIMIT)
    assert job["state"] != "running", job
    return job


def group_alive(pgid):
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = lifeline_lib.proc_stat(int(name))
            if info and info[1] == pgid and info[0] not in ("Z", "X", "x"):
                return True
    return False


def write(path, data):
    path = os.fsencode(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def rich_tree(root):
    """Hard links, symlinks, xattrs, an ACL, a sparse file, empty folders, a FIFO and awkward names."""
    root = os.fsencode(root)
    write(os.path.join(root, b"docs", b"report.txt"), b"quarterly\n" * 1000)
    write(os.path.join(root, b"docs", b"with space.txt"), b"space")
    write(os.path.join(root, b"docs", b"new\nline.txt"), b"newline")
    write(os.path.join(root, BAD), b"latin-1 name")
    write(os.path.join(root, b"data", b"random.bin"), os.urandom(3 * MiB + 17))
    os.link(os.path.join(root, b"docs", b"report.txt"), os.path.join(root, b"data", b"report.hardlink"))
    os.symlink(b"../docs/report.txt", os.path.join(root, b"data", b"report.symlink"))
    os.symlink(b"/nonexistent/target", os.path.join(root, b"dangling"))
    os.makedirs(os.path.join(root, b"empty", b"nested-empty"))
    os.setxattr(os.path.join(root, b"docs", b"report.txt"), "user.checksum", b"\x00\x01binary")
    os.setxattr(os.path.join(root, b"docs"), "user.folder", b"yes")
    os.setxattr(os.path.join(root, b"docs", b"with space.txt"), "system.posix_acl_access",
                acl_xattr(0o640, [(4242, 6)]))
    with open(os.path.join(root, b"sparse.img"), "wb") as handle:
        handle.truncate(64 * MiB)
        handle.seek(32 * MiB)
        handle.write(b"island")
    os.mkfifo(os.path.join(root, b"pipe"))
    write(os.path.join(root, b"lost+found", b"fsck-leftover"), b"ignored")
    write(os.path.join(root, b"docs", b"lost+found", b"nested"), b"ignored too")
    return root


def slow_tree(root, small=5, big=12 * MiB):
    """Small files first (rsync sends in name order), then one big file that a bwlimit makes slow."""
    root = os.fsencode(root)
    for index in range(small):
        write(os.path.join(root, b"a-small-%d" % index), os.urandom(64 * 1024))
    write(os.path.join(root, b"z-big"), os.urandom(big))
    return root, small * 64 * 1024


def folders(tmp_path):
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir(exist_ok=True)
    dst.mkdir(exist_ok=True)
    return str(src), str(dst)


def wait_inside_big_file(jobs, job_id, small_bytes):
    return poll(lambda: jobs.view(job_id),
                lambda job: job["state"] != "running" or (
                    job["phase"] == "copying" and job["progress"]["bytes_done"] > small_bytes + MiB),
                "the copy to be inside the big file")


# --------------------------------------------------------------------------- copies


@pytest.mark.parametrize("engine", ["auto", "rsync"])
def test_rich_tree_is_copied_and_verified(jobs, tmp_path, engine):
    """The destination holds only an ignored name, so it counts as empty: with copy_engine auto the
    parallel first copy makes it, with rsync rsync does; both keep everything."""
    src, dst = folders(tmp_path)
    rich_tree(src)
    write(os.path.join(dst, "lost+found", "kept"), b"the destination's own")
    request = jobs.build_request("rich", src, dst, copy_engine=engine)
    result = jobs.start(request, wait_seconds=POLL_LIMIT)
    job = result["job"]
    assert result["changed"] is True
    assert job["state"] == "completed", job
    assert job["phase"] == "done"
    report = job["report"]
    assert report["verified"] is True and report["verification"] == "passed"
    assert report["hash_algorithm"] == "xxh128"
    assert report["source_digest"] == report["destination_digest"]
    assert (report["differ"], report["missing"], report["extra"]) == ([], [], [])
    assert report["files"] == 7 and report["symlinks"] == 2 and report["directories"] == 5
    # Both ignored folders hold files: each is named, and the one warning says so.
    assert sorted(report["ignored"]) == ["docs/lost+found/", "lost+found/"] and report["ignored_count"] == 2
    assert len(report["warnings"]) == 1 and "docs/lost+found/" in report["warnings"][0], report["warnings"]
    if engine == "auto":
        assert report["copy_engine"] == "parallel"
        assert report["rsync_rc"] is None and report["rsync_stats"] == {}
        # Every file was hashed while it was copied, the destination read back from the disk.
        assert report["hashing"]["files_hashed_during_copy"] > 0
    else:
        assert report["copy_engine"] == "rsync" and report["rsync_rc"] == 0
    assert job["progress"]["percent"] == 100

    d = os.fsencode(dst)
    a = os.stat(os.path.join(d, b"docs", b"report.txt"))
    assert a.st_ino == os.stat(os.path.join(d, b"data", b"report.hardlink")).st_ino
    assert os.readlink(os.path.join(d, b"data", b"report.symlink")) == b"../docs/report.txt"
    assert os.readlink(os.path.join(d, b"dangling")) == b"/nonexistent/target"
    assert os.getxattr(os.path.join(d, b"docs", b"report.txt"), "user.checksum") == b"\x00\x01binary"
    assert os.getxattr(os.path.join(d, b"docs", b"with space.txt"), "system.posix_acl_access") == \
        acl_xattr(0o640, [(4242, 6)])
    sparse = os.stat(os.path.join(d, b"sparse.img"))
    assert sparse.st_size == 64 * MiB and sparse.st_blocks * 512 < MiB
    assert os.path.isdir(os.path.join(d, b"empty", b"nested-empty"))
    assert stat.S_ISFIFO(os.lstat(os.path.join(d, b"pipe")).st_mode)
    assert open(os.path.join(d, BAD), "rb").read() == b"latin-1 name"
    assert open(os.path.join(d, b"docs", b"new\nline.txt"), "rb").read() == b"newline"
    assert not os.path.exists(os.path.join(d, b"lost+found", b"fsck-leftover"))
    assert not os.path.exists(os.path.join(d, b"docs", b"lost+found"))
    assert open(os.path.join(d, b"lost+found", b"kept"), "rb").read() == b"the destination's own"

    folder = job["folder"]
    for name in ("job.json", "status.json", "report.json"):
        with open(os.path.join(folder, name), "rb") as handle:
            json.loads(handle.read().decode("utf-8"))
    if engine == "rsync":
        assert os.path.getsize(os.path.join(folder, "rsync.log")) > 0

    again = jobs.start(request)
    assert again["changed"] is False
    assert again["job"]["report"] == report


def test_report_renders_non_utf8_names(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(os.fsencode(src), BAD), b"x")
    write(os.path.join(os.fsencode(dst), b"extra-" + BAD), b"?")
    request = jobs.build_request("names", src, dst, rsync_base_options=["-a"])  # no --delete: the extra stays
    job = finish(jobs, jobs.start(request)["job"]["id"])
    assert job["state"] == "failed"
    assert job["report"]["extra"] == ["extra-caf\\xe9-latin1"]
    assert "extra-caf\\xe9-latin1" in job["error"]
    json.dumps(job, ensure_ascii=False).encode("utf-8")


def test_same_second_same_size_change_is_copied_on_the_next_pass(jobs, tmp_path):
    src, dst = folders(tmp_path)
    path = os.path.join(src, "ledger")
    second = 1700000000 * 10**9
    write(path, b"balance=100")
    os.utime(path, ns=(second + 1000, second + 1000))
    first = jobs.start(jobs.build_request("pass1", src, dst), wait_seconds=POLL_LIMIT)["job"]
    assert first["report"]["verified"] is True

    write(path, b"balance=999")  # same size
    os.utime(path, ns=(second + 2000, second + 2000))  # same second
    second_pass = jobs.start(jobs.build_request("pass2", src, dst, final_pass=True), wait_seconds=POLL_LIMIT)["job"]
    assert second_pass["state"] == "completed", second_pass
    assert second_pass["report"]["verified"] is True
    # rsync itself copied it (not a repair after a failed verification).
    assert second_pass["report"]["attempt"] == 1
    assert second_pass["report"]["rsync_stats"]["transferred"] == 1
    assert open(os.path.join(dst, "ledger"), "rb").read() == b"balance=999"
    assert os.stat(os.path.join(dst, "ledger")).st_mtime_ns == second + 2000


def test_copy_of_300_mib_with_verification(jobs, tmp_path):
    """Also records the timings (written next to the job folder as timings.json)."""
    src, dst = folders(tmp_path)
    block = os.urandom(MiB)
    for index in range(3):
        with open(os.path.join(src, "big-%d.bin" % index), "wb") as handle:
            for step in range(100):
                handle.write(block[step:] + block[:step])
    for index in range(200):
        write(os.path.join(src, "small", "f%03d" % index), os.urandom(4096))
    started = time.monotonic()
    job = jobs.start(jobs.build_request("big", src, dst), wait_seconds=600)["job"]
    elapsed = time.monotonic() - started
    report = job["report"]
    assert job["state"] == "completed" and report["verified"] is True
    assert report["bytes"] == 300 * MiB + 200 * 4096
    timings = {"bytes": report["bytes"], "copy_seconds": report["copy_seconds"],
               "verify_seconds": report["verify_seconds"], "total_seconds": round(elapsed, 3),
               "hash_algorithm": report["hash_algorithm"]}
    with open(os.path.join(jobs.state_dir, "timings.json"), "w", encoding="utf-8") as handle:
        json.dump(timings, handle)
    print("300 MiB copy+verify timings: %s" % timings)


def test_check_hash_false_skips_verification(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    job = jobs.start(jobs.build_request("nohash", src, dst, check_hash=False), wait_seconds=POLL_LIMIT)["job"]
    assert job["state"] == "completed"
    assert job["report"]["verified"] is False
    assert job["report"]["verification"] == "skipped"
    assert job["report"]["hash_algorithm"] is None
    assert open(os.path.join(dst, "f"), "rb").read() == b"x"


def test_wait_seconds_returns_as_soon_as_the_job_ends(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    started = time.monotonic()
    job = jobs.start(jobs.build_request("quick", src, dst), wait_seconds=3600)["job"]
    assert job["state"] == "completed"
    assert time.monotonic() - started < 600  # far below the 3600 s it was allowed to wait


# --------------------------------------------------------------------------- detached jobs


def test_started_again_attaches_to_the_running_job(jobs, tmp_path):
    src, dst = folders(tmp_path)
    dummy, small = slow_tree(src)
    request = jobs.build_request("attach", src, dst, bwlimit="2m")
    first = jobs.start(request)
    assert first["changed"] is True and first["job"]["state"] == "running"
    again = jobs.start(request)
    assert again["changed"] is False
    assert again["job"]["state"] == "running"
    assert again["job"]["pid"] == first["job"]["pid"]
    assert again["actions"][0].startswith("attach to running job attach")
    other_options = jobs.start(jobs.build_request("attach", src, dst, bwlimit="3m"))
    assert other_options["changed"] is False
    assert "already running with other options" in other_options["warnings"][0]
    job = wait_inside_big_file(jobs, "attach", small)
    assert job["progress"]["bytes_total"] == small + 12 * MiB
    assert 0 < job["progress"]["percent"] < 100
    assert job["progress"]["files_total"] == 7  # ., five small files, the big one
    assert job["progress"]["rate_bytes_per_s"] > 0
    assert jobs.cancel("attach")["changed"] is True


def test_worker_killed_mid_copy_resumes_without_copying_again(jobs, tmp_path):
    src, dst = folders(tmp_path)
    dummy, small = slow_tree(src)
    request = jobs.build_request("resume", src, dst, bwlimit="2m")
    started = jobs.start(request)["job"]
    job = wait_inside_big_file(jobs, "resume", small)
    assert job["state"] == "running", job
    copied = dict((name, os.stat(os.path.join(dst, name))) for name in os.listdir(dst) if name.startswith("a-small"))
    assert len(copied) == 5

    os.killpg(started["pid"], signal.SIGKILL)  # the worker and its rsync, as a crash or reboot would
    poll(lambda: group_alive(started["pid"]), lambda alive: not alive, "the killed process group to end")
    interrupted = jobs.view("resume")
    assert interrupted["state"] == "failed" and interrupted["interrupted"] is True
    assert "start the job again (state=started" in interrupted["error"] and "it resumes" in interrupted["error"]

    resumed = jobs.start(request)
    assert resumed["changed"] is True
    assert resumed["actions"][0].startswith("resume job resume")
    job = finish(jobs, "resume")
    assert job["state"] == "completed", job
    assert job["report"]["verified"] is True
    assert job["report"]["attempt"] == 2
    assert job["report"]["rsync_stats"]["transferred"] == 1  # only the big file
    for name, before in copied.items():
        after = os.stat(os.path.join(dst, name))
        assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == \
            (before.st_ino, before.st_mtime_ns, before.st_ctime_ns), name
    assert sorted(os.listdir(dst)) == sorted(os.listdir(src))  # rsync's temporary file is gone


def test_cancel_mid_copy_stops_every_process(jobs, tmp_path):
    src, dst = folders(tmp_path)
    dummy, small = slow_tree(src)
    request = jobs.build_request("cancel", src, dst, bwlimit="2m")
    pid = jobs.start(request)["job"]["pid"]
    wait_inside_big_file(jobs, "cancel", small)
    check = job_lib.DataCopyJobs(jobs.state_dir, check_mode=True).cancel("cancel")
    assert check["changed"] is True and check["job"]["state"] == "cancelled"
    assert jobs.view("cancel")["state"] == "running"

    result = jobs.cancel("cancel")
    assert result["changed"] is True
    assert result["job"]["state"] == "cancelled"
    assert not group_alive(pid)
    assert not job_lib.worker_alive(result["job"]["folder"], pid)
    again = jobs.cancel("cancel")
    assert again["changed"] is False and again["job"]["state"] == "cancelled"

    restarted = jobs.start(request)
    assert restarted["changed"] is True and restarted["actions"][0].startswith("restart job cancel")
    job = finish(jobs, "cancel")
    assert job["state"] == "completed" and job["report"]["verified"] is True
    assert job["report"]["rsync_stats"]["transferred"] == 1


def test_cancel_of_a_job_whose_worker_was_killed_reports_a_change_once(jobs, tmp_path):
    """A job found gone keeps ``interrupted`` in its status: a second cancel reported a change again."""
    src, dst = folders(tmp_path)
    dummy, small = slow_tree(src)
    started = jobs.start(jobs.build_request("gone", src, dst, bwlimit="2m"))["job"]
    wait_inside_big_file(jobs, "gone", small)
    os.killpg(started["pid"], signal.SIGKILL)
    poll(lambda: group_alive(started["pid"]), lambda alive: not alive, "the killed process group to end")
    assert jobs.wait("gone", 0)["interrupted"] is True  # settled: the status says so
    first = jobs.cancel("gone")
    assert first["changed"] is True and first["job"]["state"] == "cancelled"
    again = jobs.cancel("gone")
    assert again["changed"] is False and again["job"]["state"] == "cancelled"
    check = job_lib.DataCopyJobs(jobs.state_dir, check_mode=True).cancel("gone")
    assert check["changed"] is False


def test_a_worker_gone_in_the_run_that_started_it_is_said_to_have_died_of_its_signal(jobs, tmp_path):
    """The run that started the worker is its parent: the error names the signal that ended it, and
    the interpreter's crash handler leaves the worker's stack in worker.log. Another run (which
    cannot know) keeps the general wording."""
    src, dst = folders(tmp_path)
    dummy, small = slow_tree(src)
    request = jobs.build_request("crashed", src, dst, bwlimit="2m")
    started = jobs.start(request)["job"]
    wait_inside_big_file(jobs, "crashed", small)
    os.kill(started["pid"], signal.SIGSEGV)  # as a crash of the interpreter would end it
    poll(lambda: group_alive(started["pid"]), lambda alive: not alive, "the crashed worker's group to end")
    other = job_lib.DataCopyJobs(jobs.state_dir).view("crashed")
    assert other["interrupted"] is True and "its process was killed or the data node restarted" in other["error"]
    gone = jobs.wait("crashed", 0)
    assert gone["state"] == "failed" and gone["interrupted"] is True, gone
    assert "its process was ended by signal 11 (SIGSEGV), sent by another process or the kernel, while it was " \
           "copying" in gone["error"], gone["error"]
    # settled: the status file keeps the cause for every later reader
    assert "signal 11 (SIGSEGV)" in job_lib.DataCopyJobs(jobs.state_dir).view("crashed")["error"]
    with open(os.path.join(gone["folder"], state_lib.WORKER_LOG), encoding="utf-8", errors="replace") as handle:
        log = handle.read()
    assert "Fatal Python error: Segmentation fault" in log, log[-2000:]
    resumed = jobs.start(request)
    assert resumed["actions"][0].startswith("resume job crashed")
    assert finish(jobs, "crashed")["report"]["verified"] is True


@pytest.mark.parametrize("returncode, described", [
    (-9, "signal 9 (SIGKILL)"), (-15, "signal 15 (SIGTERM)"), (1, "exit code 1"), (0, "exit code 0"), (None, None)])
def test_how_a_worker_ended_is_described(returncode, described):
    assert job_lib.exit_description(returncode) == described


def test_progress_log_and_line_of_a_copy(jobs, tmp_path):
    """progress.log has a line from the start (counting), then copying and verifying with stable
    totals, files done that never go back within a phase, and an ETA that is never 0 while files
    remain; the job's progress_line at the end names each phase with its own rate."""
    src, dst = folders(tmp_path)
    for index in range(300):
        write(os.path.join(src, "d%02d" % (index % 10), "f%03d" % index), os.urandom(4096))
    job = jobs.start(jobs.build_request("logged", src, dst), wait_seconds=POLL_LIMIT)["job"]
    assert job["state"] == "completed", job
    with open(os.path.join(job["folder"], "progress.log"), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines[0]["phase"] == "scanning" and lines[0]["percent"] is None and lines[0]["totals_known"] is False
    assert lines[0]["elapsed_seconds"] < 2
    phases = [line["phase"] for line in lines]
    assert "copying" in phases and "verifying" in phases and phases[-1] == "done"
    for line in lines:
        if line["state"] != "running":
            continue
        # A percentage only with the totals known, and then always one, with an ETA while files remain.
        assert (line["percent"] is not None) is line["totals_known"], line
        if line["totals_known"]:
            assert line["files_total"] == 311  # the root, 10 folders, 300 files
            if line["files_done"] < line["files_total"]:
                assert line["eta_seconds"] >= 1 and line["percent"] <= 99
    for phase in ("copying", "verifying"):
        done = [line["files_done"] for line in lines if line["phase"] == phase]
        assert done == sorted(done)
    whole = [line["total_percent"] for line in lines if line["total_percent"] is not None]
    assert whole == sorted(whole) and whole[-1] == 100  # the whole job's share never goes back
    report = job["report"]
    assert [item["phase"] for item in report["phases"]] == ["scanning", "copying", "verifying"]
    copying = report["phases"][1]
    assert copying["files"] == 311 and copying["bytes"] == 300 * 4096
    assert job["progress"]["rate_bytes_per_s"] == copying["rate_bytes_per_s"]  # the copy's, not the verification's
    assert job["progress_line"].startswith("completed: copying 1.2 MiB in 0:00:")
    assert "; verifying 1.2 MiB in 0:00:" in job["progress_line"]


def test_check_mode_start_says_what_would_happen(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    checked = job_lib.DataCopyJobs(jobs.state_dir, check_mode=True).start(jobs.build_request("planned", src, dst))
    assert checked["changed"] is True
    assert checked["job"]["progress_line"] == ("check mode: would start job planned: copy %s to %s; nothing is copied"
                                               % (src, dst))


def test_vanished_source_file_is_a_warning_except_on_the_final_pass(jobs, tmp_path):
    for final_pass in (False, True):
        base = tmp_path / ("final" if final_pass else "phase1")
        base.mkdir()
        src, dst = folders(base)
        write(os.path.join(src, "a-big"), os.urandom(4 * MiB))
        write(os.path.join(src, "z-later"), b"soon gone")
        job_id = "vanish-%s" % final_pass
        jobs.start(jobs.build_request(job_id, src, dst, bwlimit="2m", final_pass=final_pass))
        poll(lambda: jobs.view(job_id),
             lambda job: job["state"] != "running" or (job["phase"] == "copying" and job["progress"]["bytes_done"]),
             "the copy of a-big to start")
        folder_times = os.stat(src)
        os.unlink(os.path.join(src, "z-later"))
        # Only the vanished file is under test: the source folder keeps its time, so the verification
        # compares a source that did not otherwise change.
        os.utime(src, ns=(folder_times.st_atime_ns, folder_times.st_mtime_ns))
        job = finish(jobs, job_id)
        assert job["report"]["rsync_rc"] == 24
        if final_pass:
            assert job["state"] == "failed"
            assert "vanished" in job["error"] and "final pass" in job["error"]
        else:
            assert job["state"] == "completed" and job["report"]["verified"] is True
            assert any("vanished" in warning for warning in job["report"]["warnings"])


def test_failed_verification_then_started_again_repairs(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "a"), os.urandom(100000))
    write(os.path.join(src, "b"), b"b")
    assert jobs.start(jobs.build_request("one", src, dst), wait_seconds=POLL_LIMIT)["job"]["report"]["verified"]
    target = os.path.join(dst, "a")
    before = os.stat(target)
    with open(target, "r+b") as handle:
        handle.seek(5000)
        byte = handle.read(1)
        handle.seek(5000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))

    request = jobs.build_request("two", src, dst)
    job = jobs.start(request, wait_seconds=POLL_LIMIT)["job"]
    assert job["state"] == "failed"
    assert job["report"]["differ"] == [{"path": "a", "attributes": ["hash"]}]
    assert job["error"].startswith("Verification of %s against %s failed: 1 differ (first: a (hash))" % (dst, src))
    assert job["report"]["verified"] is False and job["report"]["verification"] == "failed"

    again = jobs.start(request, wait_seconds=POLL_LIMIT)
    assert again["changed"] is True
    assert again["job"]["state"] == "completed", again["job"]
    assert again["job"]["report"]["verified"] is True
    assert open(target, "rb").read() == open(os.path.join(src, "a"), "rb").read()


def test_a_worker_that_ends_while_its_status_is_read_is_not_called_gone(jobs, tmp_path, monkeypatch):
    """The worker writes its last status, then exits. A reader that read ``running`` just before
    and found the worker gone just after took the job for a killed one and returned "its worker is
    gone" instead of the job's own error (seen once in CI on a failed verification)."""
    src, dst = folders(tmp_path)
    write(os.path.join(src, "a"), b"source")
    write(os.path.join(dst, "a"), b"damage")
    os.utime(os.path.join(dst, "a"), ns=(0, os.stat(os.path.join(src, "a")).st_mtime_ns))
    job = jobs.start(jobs.build_request("race", src, dst), wait_seconds=POLL_LIMIT)["job"]
    assert job["state"] == "failed" and job["error"].startswith("Verification of")
    # The worker wrote its last status; under load it may still be exiting, and a worker this
    # object started counts as alive until it is reaped. Let it end, so that only the race of the
    # reader below (simulated) remains.
    deadline = time.monotonic() + 60
    while jobs.exit_status(job["pid"]) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.exit_status(job["pid"]) is not None, "the worker did not exit"
    status_path = os.path.join(job["folder"], state_lib.STATUS_FILE)
    final = state_lib.read_json(status_path)
    state_lib.write_json(status_path, dict(final, state="running", error=None))

    def ends_now(folder, pid):
        state_lib.write_json(status_path, final)  # the worker's last write, then its exit
        return False

    monkeypatch.setattr(job_lib, "worker_alive", ends_now)
    for seen in (jobs.wait("race", 0), jobs.view("race")):
        assert seen["state"] == "failed" and not seen.get("interrupted"), seen
        assert seen["error"] == final["error"]
    assert state_lib.read_json(status_path) == final  # nothing settled over the real end


def test_worker_reports_the_xxhash_fallback(tmp_path, monkeypatch):
    """Runs the worker in this process, with xxhash hidden."""
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"content")
    manager = job_lib.DataCopyJobs(str(tmp_path / "state"))
    request = manager.build_request("fallback", src, dst)
    folder = manager.folder("fallback")
    os.makedirs(folder)
    state_lib.write_json(os.path.join(folder, state_lib.JOB_FILE), request)
    monkeypatch.setattr(hashing_lib, "_xxhash", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    assert worker_lib.Worker(folder).run() == 0
    report = state_lib.read_json(os.path.join(folder, state_lib.REPORT_FILE))
    assert report["hash_algorithm"] == "blake2b"
    assert report["verified"] is True
    assert any("xxhash is not installed" in warning for warning in report["warnings"])


# --------------------------------------------------------------------------- requests and lifecycle


def test_status_cancel_and_absent_of_an_unknown_job(jobs):
    assert jobs.view("nope")["state"] == "absent"
    assert jobs.view("nope")["report"] is None
    assert jobs.cancel("nope")["changed"] is False
    assert jobs.remove("nope")["changed"] is False


def test_check_mode_starts_nothing(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    check = job_lib.DataCopyJobs(jobs.state_dir, check_mode=True)
    request = check.build_request("dry", src, dst)
    result = check.start(request, wait_seconds=60)
    assert result["changed"] is True
    assert result["job"]["state"] == "running"
    assert result["actions"] == ["start job dry: copy %s to %s" % (src, dst)]
    assert not os.path.exists(check.folder("dry"))
    assert os.listdir(dst) == []
    jobs.start(request, wait_seconds=POLL_LIMIT)
    assert check.start(request)["changed"] is False
    assert check.remove("dry")["changed"] is True
    assert os.path.isdir(check.folder("dry"))


def test_a_job_keeps_its_source_and_destination(jobs, tmp_path):
    src, dst = folders(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    jobs.start(jobs.build_request("fixed", src, dst), wait_seconds=POLL_LIMIT)
    with pytest.raises(InvalidRequest) as caught:
        jobs.start(jobs.build_request("fixed", str(other), dst))
    assert "already copies %s to %s" % (src, dst) in str(caught.value)
    assert "source %s" % other in str(caught.value)
    assert caught.value.details["differences"] == ["source"]


def test_completed_job_runs_again_when_the_request_changes(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    jobs.start(jobs.build_request("pass", src, dst), wait_seconds=POLL_LIMIT)
    result = jobs.start(jobs.build_request("pass", src, dst, final_pass=True), wait_seconds=POLL_LIMIT)
    assert result["changed"] is True
    assert result["actions"] == ["run job pass again: the request changed"]
    assert result["job"]["report"]["final_pass"] is True


def test_absent_removes_the_job_folder(jobs, tmp_path):
    src, dst = folders(tmp_path)
    dummy, small = slow_tree(src)
    request = jobs.build_request("gone", src, dst, bwlimit="2m")
    pid = jobs.start(request)["job"]["pid"]
    result = jobs.remove("gone")
    assert result["changed"] is True
    assert result["job"]["state"] == "absent"
    assert result["actions"][0].startswith("cancel job gone")
    assert not os.path.exists(jobs.folder("gone"))
    assert not group_alive(pid)
    assert jobs.remove("gone")["changed"] is False


def test_absent_leaves_a_folder_that_is_not_a_job_alone(jobs):
    folder = jobs.folder("precious")
    os.makedirs(folder)
    write(os.path.join(folder, "data"), b"keep me")
    with pytest.raises(InvalidRequest, match="not a data copy job folder"):
        jobs.remove("precious")
    assert os.path.exists(os.path.join(folder, "data"))


@pytest.mark.parametrize(
    "job_id, source, destination, kwargs, message",
    [
        ("../up", "src", "dst", {}, "contains '/'"),
        ("-rf", "src", "dst", {}, "starts with '-'"),
        ("ok", "relative", "dst", {}, "is not an absolute path"),
        ("ok", "missing", "dst", {}, "is not a folder"),
        ("ok", "src", "src", {}, "the same folder"),
        ("ok", "src", "src/inner", {}, "must not contain each other"),
        ("ok", "src/inner", "src", {}, "must not contain each other"),
        ("ok", "src", "dst", {"ignore_files": ["a/b"]}, "single name"),
        ("ok", "src", "dst", {"rsync_options": ["delete"]}, 'must start with "-"'),
        ("ok", "src", "dst", {"bwlimit": "fast"}, "Invalid bwlimit"),
        ("ok", "src", "dst", {"hash_algorithm": "md5"}, "unknown hash algorithm"),
    ],
)
def test_invalid_requests(jobs, tmp_path, job_id, source, destination, kwargs, message):
    (tmp_path / "src" / "inner").mkdir(parents=True)
    (tmp_path / "dst").mkdir()

    def place(path):
        if path == "relative":
            return "src"
        return str(tmp_path / path)

    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        jobs.build_request(job_id, place(source), place(destination), **kwargs)


def test_job_folders_may_not_live_in_the_trees(tmp_path):
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for inside in (src, dst):
        manager = job_lib.DataCopyJobs(str(inside / "jobs"))
        with pytest.raises(InvalidRequest, match="choose another state_dir"):
            manager.build_request("nested", str(src), str(dst))


def test_blake3_without_its_package_names_the_library(jobs, tmp_path, monkeypatch):
    src, dst = folders(tmp_path)
    monkeypatch.setattr(hashing_lib, "_blake3", lambda: None)
    with pytest.raises(job_lib.MissingLibrary) as caught:
        jobs.build_request("b3", src, dst, hash_algorithm="blake3")
    assert caught.value.library == "blake3"
    request = jobs.build_request("b3", src, dst, hash_algorithm="blake3", check_hash=False)
    assert request["hash_algorithm"] == "blake3"


def test_the_shipped_worker_is_self_contained(jobs, tmp_path):
    """The job folder holds everything the worker imports: it runs with the collection gone."""
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    folder = jobs.folder("shipped")
    os.makedirs(folder)
    script = job_lib.ship_worker(folder)
    lib = os.path.join(folder, "lib", "ansible_collections", "storage", "mobility", "plugins", "module_utils",
                       "data_copy")
    assert sorted(os.listdir(lib)) == ["__init__.py", "changes.py", "compare.py", "fastcopy.py", "fileflags.py", "fileread.py",
                                       "hashcache.py", "hashing.py", "lifeline.py", "manifest.py", "plumbing.py",
                                       "prehash.py", "progress.py", "remote.py", "rsync.py", "seal.py", "shipping.py",
                                       "ssh_masters.py", "state.py", "walk.py", "worker.py", "xattrs.py"]
    with open(script, encoding="utf-8") as handle:
        assert handle.read() == worker_lib.LAUNCHER
    state_lib.write_json(os.path.join(folder, state_lib.JOB_FILE), jobs.build_request("shipped", src, dst))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    outside = subprocess.run([sys.executable, "-c", "import ansible_collections.storage.mobility"],
                             capture_output=True, env=env, cwd=str(tmp_path), check=False)
    assert outside.returncode != 0  # without the job folder's lib/, the collection is not importable
    proc = subprocess.run([sys.executable, "-B", script, folder], capture_output=True, env=env, cwd=str(tmp_path),
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE))["state"] == "completed"


# --------------------------------------------------------------------------- hashes reused by a later pass


def test_final_pass_reads_only_what_changed_and_misses_nothing(jobs, tmp_path):
    src, dst = folders(tmp_path)
    second = 1700000000 * 10**9
    for index in range(20):
        path = os.path.join(src, "d%d" % (index % 3), "f%02d" % index)
        write(path, os.urandom(5000 + index))
        os.utime(path, ns=(second + index, second + index))
    key = "migration-42"
    first = jobs.start(jobs.build_request("p1", src, dst, hash_cache_key=key), wait_seconds=POLL_LIMIT)["job"]
    assert first["report"]["verified"] is True, first
    assert first["report"]["hashing"]["files_reused"] + first["report"]["hashing"]["files_hashed"] == 40
    assert os.path.isfile(os.path.join(jobs.state_dir, state_lib.HASH_INDEX_DIR,
                                       os.listdir(os.path.join(jobs.state_dir, state_lib.HASH_INDEX_DIR))[0]))

    changed = os.path.join(src, "d1", "f07")
    size = os.stat(changed).st_size
    write(changed, b"x" * size)  # same size ...
    os.utime(changed, ns=(second + 7 + 1, second + 7 + 1))  # ... and the same second
    final = jobs.start(jobs.build_request("p1-final", src, dst, final_pass=True, hash_cache_key=key),
                       wait_seconds=POLL_LIMIT)["job"]
    report = final["report"]
    assert final["state"] == "completed" and report["verified"] is True, final
    assert open(os.path.join(dst, "d1", "f07"), "rb").read() == b"x" * size
    # The changes pass: only the changed file (and the folders above it) listed, copied and compared;
    # it was read on both sides, no other file was.
    assert report["changes_pass"] == {"incremental": True, "full_pass_reason": None, "entries_listed": 1,
                                      "entries_compared": 3}, report["changes_pass"]
    assert report["copy_engine"] == "changes"
    hashing = report["hashing"]
    assert hashing["files_hashed"] == 2 and hashing["bytes_hashed"] == 2 * size, hashing
    assert report["files"] == 20 and report["directories"] == 4

    # The whole pass (here forced by the engine) reads the changed file on both sides (during the
    # copy or after it); every other file keeps its phase-1 hashes.
    write(changed, b"y" * size)
    os.utime(changed, ns=(second + 7 + 2, second + 7 + 2))
    whole = jobs.start(jobs.build_request("p1-final-whole", src, dst, final_pass=True, hash_cache_key=key,
                                          copy_engine="rsync"), wait_seconds=POLL_LIMIT)["job"]
    report = whole["report"]
    assert whole["state"] == "completed" and report["verified"] is True, whole
    assert report["changes_pass"] == {"incremental": False, "full_pass_reason": "copy_engine is rsync"}
    assert open(os.path.join(dst, "d1", "f07"), "rb").read() == b"y" * size
    hashing = report["hashing"]
    assert hashing["files_hashed"] + hashing["files_hashed_during_copy"] == 2, hashing
    assert hashing["files_hashed"] + hashing["files_reused"] == 40, hashing

    # Without reuse every file is read again.
    full = jobs.start(jobs.build_request("p1-full", src, dst, hash_cache_key=key, reuse_hashes=False),
                      wait_seconds=POLL_LIMIT)["job"]
    assert full["report"]["verified"] is True
    assert full["report"]["hashing"]["files_reused"] == 0
    assert full["report"]["hashing"]["files_hashed"] == 40
    assert full["report"]["hashing"]["files_hashed_during_copy"] == 0


def test_another_key_does_not_reuse_hashes(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "a"), os.urandom(1000))
    assert jobs.start(jobs.build_request("k1", src, dst, hash_cache_key="one"),
                      wait_seconds=POLL_LIMIT)["job"]["report"]["verified"]
    other = jobs.start(jobs.build_request("k2", src, dst, hash_cache_key="two"), wait_seconds=POLL_LIMIT)["job"]
    assert other["report"]["verified"] is True
    hashing = other["report"]["hashing"]
    assert hashing["files_hashed"] + hashing["files_hashed_during_copy"] == 2, hashing  # both sides read again


# --------------------------------------------------------------------------- seals and passes


@pytest.mark.parametrize("engine", ["auto", "rsync"])
def test_the_report_carries_the_seals_of_the_verified_trees(jobs, tmp_path, engine):
    """Both seals in the report are those of the trees as the job left them (what the manager compares
    just before a switch), whichever engine copied."""
    src, dst = folders(tmp_path)
    rich_tree(src)
    request = jobs.build_request("sealed-" + engine, src, dst, copy_engine=engine, migration_id="mig-1",
                                 pass_id="pass-1")
    report = jobs.start(request, wait_seconds=POLL_LIMIT)["job"]["report"]
    assert report["verified"] is True, report
    assert report["source_seal"] == seal_lib.tree_seal(src, ["lost+found"])
    assert report["destination_seal"] == seal_lib.tree_seal(dst, ["lost+found"])
    assert report["source_seal"] != report["destination_seal"]
    assert (report["migration_id"], report["pass_id"]) == ("mig-1", "pass-1")


def test_an_unverified_report_carries_no_seals(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    report = jobs.start(jobs.build_request("unsealed", src, dst, check_hash=False), wait_seconds=POLL_LIMIT)["job"]["report"]
    assert report["verified"] is False
    assert report["source_seal"] is None and report["destination_seal"] is None


def test_a_completed_job_of_another_pass_runs_again(jobs, tmp_path):
    """A new pass of a migration never gets the report of an earlier pass back."""
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"x")
    first = jobs.start(jobs.build_request("passes", src, dst, migration_id="m", pass_id="p1"), wait_seconds=POLL_LIMIT)
    assert first["job"]["report"]["pass_id"] == "p1"
    same = jobs.start(jobs.build_request("passes", src, dst, migration_id="m", pass_id="p1"), wait_seconds=POLL_LIMIT)
    assert same["changed"] is False
    result = jobs.start(jobs.build_request("passes", src, dst, migration_id="m", pass_id="p2"), wait_seconds=POLL_LIMIT)
    assert result["actions"] == ["run job passes again: the request changed"]
    assert result["job"]["report"]["pass_id"] == "p2" and result["job"]["report"]["verified"] is True


@pytest.mark.parametrize("bad", ["../x", "-x", "a/b", ""])
def test_pass_and_migration_ids_are_names(jobs, tmp_path, bad):
    src, dst = folders(tmp_path)
    with pytest.raises(InvalidRequest, match="Invalid pass id"):
        jobs.build_request("j", src, dst, migration_id="m", pass_id=bad or 5)


def in_process_worker(tmp_path, monkeypatch, job_id, src, dst):
    manager = job_lib.DataCopyJobs(str(tmp_path / "state"))
    folder = manager.folder(job_id)
    os.makedirs(folder)
    state_lib.write_json(os.path.join(folder, state_lib.JOB_FILE), manager.build_request(job_id, src, dst))
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    return worker_lib.Worker(folder), folder


def test_a_tree_that_changes_during_the_verification_is_verified_again(tmp_path, monkeypatch):
    """A change after an entry was hashed (here: the destination file's change time, as a write that
    restores everything else would leave it) makes the seals before and after differ: the verification
    runs again and its report's seals are those of the trees as they are now."""
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"content" * 100)
    worker, folder = in_process_worker(tmp_path, monkeypatch, "moving", src, dst)
    compare = worker.compare
    calls = []

    def compare_then_touch():
        result = compare()
        calls.append(result.matched)
        if len(calls) == 1:
            target = os.path.join(dst, "f")
            os.chmod(target, os.stat(target).st_mode)  # same mode: only the change time moves
        return result

    monkeypatch.setattr(worker, "compare", compare_then_touch)
    assert worker.run() == 0
    assert calls == [True, True]
    report = state_lib.read_json(os.path.join(folder, state_lib.REPORT_FILE))
    assert report["verified"] is True
    assert report["destination_seal"] == seal_lib.tree_seal(dst, ["lost+found"])


def test_a_tree_that_keeps_changing_fails_the_verification(tmp_path, monkeypatch):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "f"), b"content" * 100)
    worker, folder = in_process_worker(tmp_path, monkeypatch, "restless", src, dst)
    compare = worker.compare

    def compare_then_touch():
        result = compare()
        os.chmod(src, os.stat(src).st_mode)
        return result

    monkeypatch.setattr(worker, "compare", compare_then_touch)
    assert worker.run() == 1
    status = state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE))
    assert status["state"] == "failed"
    assert "the source changed while it was verified, %d times in a row" % (worker_lib.SEAL_RETRIES + 1) in status["error"]
    report = state_lib.read_json(os.path.join(folder, state_lib.REPORT_FILE))
    assert report["verified"] is False and report["source_seal"] is None


# --------------------------------------------------------------------------- nothing dropped silently


@pytest.mark.parametrize("engine", ["auto", "rsync"])
def test_a_deep_lost_and_found_is_named_in_the_report(jobs, tmp_path, engine):
    """The ignore list matches at any depth (as the reference does): what it leaves out is named, by
    path relative to the share, with the count of all of them and a warning; an empty top-level
    lost+found alone (a filesystem root's) is named but not warned about."""
    src, dst = folders(tmp_path)
    write(os.path.join(src, "projects", "a", "lost+found", "thesis.tex"), b"not fsck's")
    write(os.path.join(src, "projects", "keep.txt"), b"kept")
    for index in range(150):
        os.makedirs(os.path.join(src, "many", "%03d" % index, "lost+found"))
    os.makedirs(os.path.join(src, "lost+found"))
    job = jobs.start(jobs.build_request("deep", src, dst, copy_engine=engine), wait_seconds=POLL_LIMIT)["job"]
    report = job["report"]
    assert job["state"] == "completed" and report["verified"] is True, job
    assert report["ignored_count"] == 152
    assert len(report["ignored"]) == state_lib.IGNORED_LIMIT
    assert "projects/a/lost+found/" in report["ignored"] or report["ignored_count"] > len(report["ignored"])
    warning = [text for text in report["warnings"] if "ignore list" in text]
    assert len(warning) == 1 and "152 entries" in warning[0], report["warnings"]
    assert not os.path.exists(os.path.join(dst, "projects", "a", "lost+found"))
    assert os.path.exists(os.path.join(dst, "projects", "keep.txt"))
    assert report["log_tail"] and any("completed" in line or "attempt 1" in line for line in report["log_tail"])

    # Only an empty lost+found at the top: named, counted, no warning.
    src2, dst2 = str(tmp_path / "src2"), str(tmp_path / "dst2")
    os.makedirs(os.path.join(src2, "lost+found"))
    write(os.path.join(src2, "f"), b"f")
    os.makedirs(dst2)
    report = jobs.start(jobs.build_request("top", src2, dst2, copy_engine=engine), wait_seconds=POLL_LIMIT)["job"]["report"]
    assert (report["ignored"], report["ignored_count"], report["warnings"]) == (["lost+found/"], 1, [])


def test_a_deep_lost_and_found_is_named_by_path(jobs, tmp_path):
    src, dst = folders(tmp_path)
    write(os.path.join(src, "x", "y", "lost+found", "z"), b"z")
    report = jobs.start(jobs.build_request("named", src, dst), wait_seconds=POLL_LIMIT)["job"]["report"]
    assert (report["ignored"], report["ignored_count"]) == (["x/y/lost+found/"], 1)


# --------------------------------------------------------------------------- job folders do not pile up


def finished_job(jobs, tmp_path, job_id, days_old=0.0):
    src, dst = str(tmp_path / ("src-" + job_id)), str(tmp_path / ("dst-" + job_id))
    write(os.path.join(src, "f"), os.urandom(4096))
    os.makedirs(dst, exist_ok=True)
    job = jobs.start(jobs.build_request(job_id, src, dst), wait_seconds=POLL_LIMIT)["job"]
    assert job["state"] == "completed", job
    if days_old:
        when = time.time() - days_old * 86400
        for name in os.listdir(jobs.folder(job_id)):
            path = os.path.join(jobs.folder(job_id), name)
            if os.path.isfile(path):
                os.utime(path, (when, when))
    return src, dst


def test_remove_leaves_nothing_of_the_job_and_returns_what_it_was(jobs, tmp_path):
    finished_job(jobs, tmp_path, "gone")
    index_dir = os.path.join(jobs.state_dir, state_lib.HASH_INDEX_DIR)
    assert os.listdir(index_dir), "the verified job is in the hash index"
    check = job_lib.DataCopyJobs(jobs.state_dir, check_mode=True).remove("gone")
    assert check["changed"] is True and os.path.isdir(jobs.folder("gone"))
    result = jobs.remove("gone")
    assert result["changed"] is True and result["job"]["state"] == "absent"
    assert result["removed"]["state"] == "completed" and result["removed"]["report"]["verified"] is True
    assert not os.path.exists(jobs.folder("gone"))
    assert not os.path.exists(os.path.join(jobs.state_dir, ".gone.lock"))
    assert os.listdir(index_dir) == []
    again = jobs.remove("gone")
    assert again["changed"] is False and not os.path.exists(os.path.join(jobs.state_dir, ".gone.lock"))


def test_a_lock_whose_file_was_removed_meanwhile_is_taken_again(jobs, tmp_path):
    """remove() unlinks the lock file while holding it: a run that waited on the old file must not
    believe it holds the lock (it would act beside a run holding the new file)."""
    os.makedirs(jobs.state_dir, exist_ok=True)
    first = job_lib.JobLock(jobs.state_dir, "j", time.monotonic, time.sleep)
    first.__enter__()
    waiting = job_lib.JobLock(jobs.state_dir, "j", time.monotonic, time.sleep, timeout=5)
    waiting.fd = os.open(waiting.path, os.O_RDWR)  # opened the old file before the unlink
    first.unlink()
    first.__exit__(None, None, None)
    newcomer = job_lib.JobLock(jobs.state_dir, "j", time.monotonic, time.sleep)
    newcomer.__enter__()  # holds the new file
    os.close(waiting.fd)
    with pytest.raises(job_lib.Busy):
        job_lib.JobLock(jobs.state_dir, "j", time.monotonic, time.sleep, timeout=0.3).__enter__()
    newcomer.__exit__(None, None, None)


def test_starting_a_job_prunes_old_and_oversized_finished_job_folders(jobs, tmp_path):
    """The bound on a data node: finished folders older than keep_finished_days go, then the oldest
    while the rest take more than keep_finished_mb; never a running job, never the one starting."""
    unbounded = job_lib.DataCopyJobs(jobs.state_dir, keep_finished_days=0, keep_finished_mb=0)
    finished_job(unbounded, tmp_path, "ancient", days_old=40)
    finished_job(unbounded, tmp_path, "recent", days_old=1)
    src, dst = folders(tmp_path)
    slow_tree(src)
    running = unbounded.start(jobs.build_request("running", src, dst, bwlimit="1m"))["job"]
    assert running["state"] == "running"
    # Old enough to be pruned if it were finished: its files are 60 days old, its worker is alive.
    when = time.time() - 60 * 86400
    for name in ("job.json", "status.json"):
        os.utime(os.path.join(jobs.folder("running"), name), (when, when))

    bounded = job_lib.DataCopyJobs(jobs.state_dir, keep_finished_days=30, keep_finished_mb=0)
    plan = bounded.prune_plan(keep=("new",), max_days=30, max_mb=0)
    assert [name for name, why in plan] == ["ancient"]
    src_new, dst_new = str(tmp_path / "src-new"), str(tmp_path / "dst-new")
    write(os.path.join(src_new, "f"), b"new")
    os.makedirs(dst_new)
    predicted = job_lib.DataCopyJobs(jobs.state_dir, check_mode=True).start(bounded.build_request("new", src_new, dst_new))
    assert any(action.startswith("prune job folder ancient") for action in predicted["actions"])
    assert os.path.isdir(jobs.folder("ancient")), "check mode removed a folder"
    result = bounded.start(bounded.build_request("new", src_new, dst_new), wait_seconds=POLL_LIMIT)
    assert any(action.startswith("prune job folder ancient") for action in result["actions"]), result["actions"]
    assert not os.path.exists(jobs.folder("ancient"))
    assert os.path.isdir(jobs.folder("recent")) and os.path.isdir(jobs.folder("running"))
    assert jobs.view("running")["state"] == "running"

    # A size bound of 0 MiB... is no bound; a bound smaller than the finished folders removes the
    # oldest first ("recent", then "new" would go; "new" is kept as the job being started).
    tiny = job_lib.DataCopyJobs(jobs.state_dir, keep_finished_days=0, keep_finished_mb=0)
    assert tiny.prune_plan(max_days=0, max_mb=0) == []
    plan = tiny.prune_plan(keep=("new",), max_days=0, max_mb=1e-6)
    assert [name for name, why in plan] == ["recent"]
    assert "running" not in [name for name, why in tiny.prune_plan(max_days=0, max_mb=1e-6)]
    jobs.cancel("running")


def test_the_file_attribute_ledger_goes_with_its_hash_index_entry(jobs, tmp_path):
    """Removing a job removes its hash index entry and the attribute ledger beside it, and only
    those; a job folder that is gone takes both of its entries with it when the index is pruned."""
    index = os.path.join(jobs.state_dir, state_lib.HASH_INDEX_DIR)
    os.makedirs(index)
    entries = {"mine": "gone-job", "theirs": "kept-job"}
    for key, job_id in entries.items():
        state_lib.write_json(os.path.join(index, key + ".json"), {"job_id": job_id})
        state_lib.write_json(os.path.join(index, key + state_lib.FLAGS_LEDGER_SUFFIX), {"set": ["a"]})
    os.makedirs(os.path.join(jobs.state_dir, "kept-job"))
    jobs._forget_hashes("gone-job")
    assert sorted(os.listdir(index)) == ["theirs" + state_lib.FLAGS_LEDGER_SUFFIX, "theirs.json"]
    jobs._forget_hashes(None)
    assert sorted(os.listdir(index)) == ["theirs" + state_lib.FLAGS_LEDGER_SUFFIX, "theirs.json"], \
        "a job that still has its folder keeps its entry and ledger"
    os.rmdir(os.path.join(jobs.state_dir, "kept-job"))
    jobs._forget_hashes(None)
    assert os.listdir(index) == []


def test_a_run_on_a_job_that_does_not_exist_leaves_no_lock_file(jobs):
    """A cancel of a final pass that never ran, or a look at a job already removed, must not leave
    a lock file in the state folder (a migration that ended leaves nothing on the data node)."""
    jobs.cancel("never-ran")
    assert [name for name in os.listdir(jobs.state_dir) if name.endswith(".lock")] == []


def test_every_action_returns_the_job_paths(jobs, tmp_path):
    """The module's result names where the job keeps its files (the playbooks hand status_file to
    share_migration): for a job that does not exist yet, a running one, a cancelled one and a removed
    one, and the status file named is the one the worker writes."""
    src, dst = folders(tmp_path)
    slow_tree(src)
    state_dir = jobs.state_dir

    def assert_paths(job):
        assert job["state_dir"] == state_dir
        assert job["folder"] == os.path.join(state_dir, "where")
        assert job["status_file"] == os.path.join(state_dir, "where", "status.json")
        assert job["report_file"] == os.path.join(state_dir, "where", "report.json")
        assert job["worker_log"] == os.path.join(state_dir, "where", "worker.log")
        assert job["rsync_log"] == os.path.join(state_dir, "where", "rsync.log")
        assert job["final_job_id"] == "where-final"

    assert_paths(jobs.view("where"))
    started = jobs.start(jobs.build_request("where", src, dst, bwlimit="2m"))["job"]
    assert_paths(started)
    assert state_lib.read_json(started["status_file"])["job_id"] == "where"
    live = layout_lib.read_live_progress(started["status_file"])
    assert live["state"] == "running" and "totals_known" in live
    cancelled = jobs.cancel("where")["job"]
    assert_paths(cancelled)
    assert layout_lib.read_live_progress(cancelled["status_file"])["state"] == "cancelled"
    removed = jobs.remove("where")
    assert_paths(removed["job"])
    assert_paths(removed["removed"])
    assert not os.path.exists(removed["job"]["status_file"])


def test_a_worker_just_started_is_alive_while_the_kernel_shows_no_command_line_yet(jobs, tmp_path, monkeypatch):
    """Right after its exec a process can show an empty /proc/<pid>/cmdline for a moment. The run
    that started the worker knows it is its running child: it is not taken for gone. Another run,
    which cannot know, still judges by the command line."""
    src, dst = folders(tmp_path)
    slow_tree(src)
    real = job_lib._cmdline
    started = {}

    def blank_for_the_new_worker(pid):
        return [] if pid == started.get("pid") else real(pid)

    launch = jobs._launch

    def launch_and_blank(*args):
        started["pid"] = launch(*args)
        return started["pid"]

    monkeypatch.setattr(jobs, "_launch", launch_and_blank)
    monkeypatch.setattr(job_lib, "_cmdline", blank_for_the_new_worker)
    job = jobs.start(jobs.build_request("fresh", src, dst, bwlimit="2m"))["job"]
    assert job["state"] == "running" and job["alive"] is True and not job.get("interrupted"), job
    assert job_lib.DataCopyJobs(jobs.state_dir).view("fresh")["alive"] is False
    monkeypatch.setattr(job_lib, "_cmdline", real)
    jobs.cancel("fresh")
