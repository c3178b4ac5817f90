"""The parallel first copy (plugins/module_utils/data_copy/fastcopy.py): real files, real forked
copying processes, and rsync as the independent judge of what was copied; the worker's fallback
to rsync when the first copy cannot finish or does not verify.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fastcopy as fastcopy_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileread as fileread_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import job as job_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import worker as worker_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")

MiB = 1024 * 1024
ROOT = os.geteuid() == 0
NEEDS_ROOT = pytest.mark.skipif(not ROOT and os.environ.get("CI") != "true",
                                reason="needs root: other owners, setuid bits and device files")


def write(path, data, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mode is not None:
        os.chmod(path, mode)


def tree(root):
    """Many folders and files, hard-link groups spread over folders (and so over processes),
    symlinks, empty and sparse files, a read-only folder, names that are not UTF-8."""
    root = os.fsencode(root)
    for folder in range(12):
        for index in range(25):
            write(os.path.join(root, b"d%02d" % folder, b"f%02d" % index), os.urandom(index * 97))
    for group in range(10):
        first = os.path.join(root, b"d%02d" % group, b"f03")
        for copy in range(1, 3):
            os.link(first, os.path.join(root, b"d%02d" % ((group + copy) % 12), b"link-%d-%d" % (group, copy)))
    write(os.path.join(root, b"big.bin"), os.urandom(5 * MiB + 3))
    write(os.path.join(root, b"empty"), b"")
    with open(os.path.join(root, b"sparse.img"), "wb") as handle:
        handle.truncate(16 * MiB)
        handle.seek(3 * MiB)
        handle.write(b"data in the middle")
        handle.seek(16 * MiB - 5)
        handle.write(b"tail!")
    os.symlink(b"d00/f01", os.path.join(root, b"to-file"))
    os.symlink(b"/nowhere", os.path.join(root, b"d05", b"dangling"))
    write(os.path.join(root, b"caf\xe9", b"x"), b"latin-1 folder")
    os.setxattr(os.path.join(root, b"d01", b"f02"), "user.tag", b"\x00kept")
    os.utime(os.path.join(root, b"d02", b"f04"), ns=(1, 1_600_000_000_123_456_789))
    write(os.path.join(root, b"readonly", b"inside"), b"r", mode=0o444)
    os.chmod(os.path.join(root, b"readonly"), 0o555)
    os.mkdir(os.path.join(root, b"lost+found"))
    write(os.path.join(root, b"lost+found", b"skip"), b"ignored")
    return root


def rsync_differences(src, dst):
    """What rsync -aHAX, comparing contents (-c) at nanosecond times, would still change."""
    proc = subprocess.run(["rsync", "-aHAXc", "-n", "--delete", "--modify-window=-1", "--itemize-changes",
                           "--exclude=lost+found", os.fsencode(src) + b"/", os.fsencode(dst) + b"/"],
                          capture_output=True, check=True)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_first_copy_matches_the_source_for_rsync_and_the_verification(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)
    # Small batches, and a read-back round after each: files are read back while the copy goes on,
    # before the later paths of their inode are linked.
    monkeypatch.setattr(fastcopy_lib, "BATCH", 4)
    monkeypatch.setattr(fastcopy_lib, "ROUND_FILES", 1)
    engine = fastcopy_lib.ParallelCopy(str(src), str(dst), ["lost+found"], "xxh128", workers=3).run()
    assert (engine.errors, engine.error_count, engine.failures) == ([], 0, [])
    assert rsync_differences(src, dst) == []
    assert not (dst / "lost+found").exists()
    big = os.stat(dst / "big.bin")
    sparse = os.stat(dst / "sparse.img")
    assert sparse.st_size == 16 * MiB and sparse.st_blocks * 512 < MiB  # the holes stayed holes
    assert os.stat(dst / "d00" / "f03").st_nlink == 3
    assert stat.S_IMODE(os.stat(dst / "readonly").st_mode) == 0o555
    assert engine.totals["files"] == 12 * 25 + 20 + 5 and engine.totals["bytes"] > big.st_size

    # Every regular file got its hash while it was copied, on both sides, with the identity it has now;
    # the hash is the content's.
    for rel, (ident, digest) in engine.records["destination"].items():
        path = os.path.join(os.fsencode(dst), rel)
        assert ident == fileread_lib.identity(os.lstat(path)), rel
        hasher = hashing_lib.new_hasher("xxh128")
        with open(path, "rb") as handle:
            hasher.update(handle.read())
        assert digest == hasher.hexdigest(), rel
        assert engine.records["source"][rel][1] == digest
    assert len(engine.records["source"]) >= 12 * 25

    cache = hashcache_lib.HashCache("xxh128", {side: dict(records) for side, records in engine.records.items()})
    comparison = compare_lib.compare_trees(str(src), str(dst), ["lost+found"], "xxh128", cache=cache)
    assert comparison.matched, comparison.summary()
    # Nothing is read again: hard-linked files were read back after their later paths were linked (a
    # link changes the inode's ctime), and those later paths share the first path's hash.
    assert comparison.files_hashed == 0
    assert comparison.files_reused == len(engine.records["source"]) + len(engine.records["destination"])


def test_first_copy_without_hashing_copies_and_records_nothing(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)
    engine = fastcopy_lib.ParallelCopy(str(src), str(dst), ["lost+found"], None, workers=2).run()
    assert engine.error_count == 0
    assert engine.records == {"source": {}, "destination": {}}
    assert rsync_differences(src, dst) == []


@NEEDS_ROOT
def test_first_copy_keeps_owners_special_bits_and_devices(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    write(str(src / "owned" / "setuid"), b"#!/bin/true\n")
    os.chown(src / "owned" / "setuid", 54321, 54322)
    os.chmod(src / "owned" / "setuid", 0o4755)
    os.chown(src / "owned", 54321, 54322)
    os.chmod(src / "owned", 0o2770)
    os.mknod(src / "null-device", stat.S_IFCHR | 0o640, os.makedev(1, 3))
    os.symlink("owned/setuid", src / "link")
    os.lchown(src / "link", 54321, 54322)
    os.setxattr(src / "owned" / "setuid", "trusted.kept", b"root only")
    engine = fastcopy_lib.ParallelCopy(str(src), str(dst), [], "xxh128").run()
    assert engine.error_count == 0, engine.errors
    copied = os.stat(dst / "owned" / "setuid")
    assert (copied.st_uid, copied.st_gid, stat.S_IMODE(copied.st_mode)) == (54321, 54322, 0o4755)
    folder = os.stat(dst / "owned")
    assert (folder.st_uid, folder.st_gid, stat.S_IMODE(folder.st_mode)) == (54321, 54322, 0o2770)
    device = os.lstat(dst / "null-device")
    assert stat.S_ISCHR(device.st_mode) and device.st_rdev == os.makedev(1, 3)
    assert os.lstat(dst / "link").st_uid == 54321
    assert os.getxattr(dst / "owned" / "setuid", "trusted.kept") == b"root only"
    assert rsync_differences(src, dst) == []


def test_blockers_name_each_reason():
    base = {"copy_engine": "auto", "final_pass": False, "rsync_options": [], "bwlimit": None,
            "rsync_base_options": list(fastcopy_lib.rsync_lib.DEFAULT_BASE_OPTIONS)}
    assert fastcopy_lib.blockers(base, []) == []
    cases = {
        "copy_engine is rsync": dict(base, copy_engine="rsync"),
        "a final pass compares with the destination": dict(base, final_pass=True),
        "the request has rsync options": dict(base, rsync_options=["--no-whole-file"]),
        "the request limits the bandwidth": dict(base, bwlimit="10m"),
        "the request has its own rsync base options": dict(base, rsync_base_options=["-a"]),
    }
    for reason, job in cases.items():
        assert fastcopy_lib.blockers(job, []) == [reason]
    assert fastcopy_lib.blockers(base, [b"file"]) == ["the destination is not empty"]


def test_destination_entries_ignores_ignored_names(tmp_path):
    (tmp_path / "lost+found").mkdir()
    assert fastcopy_lib.destination_entries(str(tmp_path), ["lost+found"]) == []
    (tmp_path / "x").write_bytes(b"")
    assert fastcopy_lib.destination_entries(str(tmp_path), ["lost+found"]) == [b"x"]


def test_unknown_copy_engine_is_refused(tmp_path):
    jobs = job_lib.DataCopyJobs(str(tmp_path / "state"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(job_lib.InvalidRequest, match="unknown copy engine fast"):
        jobs.build_request("j", str(tmp_path / "a"), str(tmp_path / "b"), copy_engine="fast")


# --------------------------------------------------------------------------- the worker's fallback


def run_worker(tmp_path, job_id, src, dst, **kwargs):
    """One attempt of a job, in this process (so that a test can break a part of it)."""
    jobs = job_lib.DataCopyJobs(str(tmp_path / "state"))
    folder = jobs.folder(job_id)
    os.makedirs(folder, exist_ok=True)
    state_lib.write_json(os.path.join(folder, state_lib.JOB_FILE), jobs.build_request(job_id, str(src), str(dst),
                                                                                      **kwargs))
    worker = worker_lib.Worker(folder)
    rc = worker.run()
    return rc, state_lib.read_json(os.path.join(folder, state_lib.REPORT_FILE)), \
        state_lib.read_json(os.path.join(folder, state_lib.STATUS_FILE))


def test_the_hashes_of_the_first_copy_go_through_run_files_and_the_verification_reads_nothing_again(tmp_path,
                                                                                                    monkeypatch):
    """The worker keeps no map of every file: with runs of 7 records, the copy's hashes of both
    sides go through many sorted run files, merged for the verification, which then reads no file
    again; the job folder keeps the two side files of the cache and nothing else of it, also after
    an attempt that was killed left its files behind."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)
    monkeypatch.setattr(hashcache_lib, "SPILL_RECORDS", 7)
    writes = []
    real_write = hashcache_lib.write_side

    def counting(path, *args, **kwargs):
        writes.append(os.path.basename(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(hashcache_lib, "write_side", counting)
    folder = job_lib.DataCopyJobs(str(tmp_path / "state")).folder("spill")
    os.makedirs(folder)
    for name in ("hashes.cache.spill.run3.source", "hashes.cache.input.destination", "hashes.cache.new.source",
                 ".hashes.cache.source.tmp.99"):
        write(os.path.join(folder, name), b"left by a killed attempt")
    rc, report, status = run_worker(tmp_path, "spill", src, dst)
    assert rc == 0 and report["verified"] is True, status
    assert report["copy_engine"] == "parallel"
    hashing = report["hashing"]
    runs = [name for name in writes if ".spill.run" in name]
    assert len(runs) >= 2 * (hashing["files_hashed_during_copy"] // 2 // 7) - 2, writes
    assert hashing["files_hashed_during_copy"] >= 2 * 300
    assert hashing["files_hashed"] == 0 and hashing["files_reused"] >= hashing["files_hashed_during_copy"]
    kept = sorted(name for name in os.listdir(folder) if "hashes" in name)
    assert kept == ["hashes.cache.destination", "hashes.cache.source"]
    cache = hashcache_lib.HashCache.load(os.path.join(folder, "hashes.cache"), report["hash_algorithm"])
    assert len(cache.sides["source"]) >= 300 and b"d00/f03" in cache.sides["destination"]


def test_the_hashes_a_killed_attempt_left_are_used_by_the_next_one_then_removed(tmp_path, monkeypatch):
    """A verification killed after it wrote its input (or while its walks wrote their side files)
    leaves hashes that are as good as a kept cache: the next attempt merges them into its input and
    reads no file whose identity they hold; a leftover of no side, or damaged, is only removed."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)
    monkeypatch.setattr(hashcache_lib, "FRAME_RECORDS", 16)  # frames small enough to cut one off
    rc, report, status = run_worker(tmp_path, "salvage", src, dst)
    assert rc == 0 and report["verified"] is True, status
    first = report["hashing"]
    folder = job_lib.DataCopyJobs(str(tmp_path / "state")).folder("salvage")
    # As if killed in the verification: the input written, the walks' files half written, no kept cache.
    os.rename(os.path.join(folder, "hashes.cache.source"), os.path.join(folder, "hashes.cache.input.source"))
    os.rename(os.path.join(folder, "hashes.cache.destination"), os.path.join(folder, "hashes.cache.new.destination"))
    with open(os.path.join(folder, "hashes.cache.new.destination"), "r+b") as handle:
        handle.truncate(os.path.getsize(handle.name) * 2 // 3)
    write(os.path.join(folder, "hashes.cache.spill.run0.source"), b"damaged")
    write(os.path.join(folder, "hashes.cache.new.other"), b"of no side")
    # The rerun's rsync pass copies nothing; without the hashing beside it (which may or may not
    # finish before rsync does), only the verification reads, so what it reads is what it lacked.
    monkeypatch.setattr(worker_lib.Worker, "start_prehash", lambda self: None)
    rc, report, status = run_worker(tmp_path, "salvage", src, dst)
    assert rc == 0 and report["verified"] is True, status
    hashing = report["hashing"]
    assert hashing["files_hashed_during_copy"] == 0
    # The source's hashes were all there; about a third of the destination's were cut off.
    total = first["files_hashed"] + first["files_reused"]
    assert hashing["files_hashed"] + hashing["files_reused"] == total
    assert 0 < hashing["files_hashed"] < total // 4, hashing
    assert sorted(name for name in os.listdir(folder) if "hashes" in name) == [
        "hashes.cache.destination", "hashes.cache.source"]


def test_a_file_the_first_copy_cannot_copy_is_left_to_rsync(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)
    real = fastcopy_lib._Copier.copy_file

    def failing(self, rel):
        if rel == b"d03/f07":
            raise OSError(errno.EIO, "Input/output error")
        return real(self, rel)

    monkeypatch.setattr(fastcopy_lib._Copier, "copy_file", failing)
    rc, report, status = run_worker(tmp_path, "eio", src, dst)
    assert rc == 0 and status["state"] == "completed", status
    assert report["copy_engine"] == "parallel, then rsync"
    assert report["verified"] is True and report["rsync_rc"] == 0
    assert report["rsync_stats"]["transferred"] == 1  # rsync copied only what the first copy could not
    assert rsync_differences(src, dst) == []


def test_a_first_copy_that_does_not_verify_is_repaired_by_rsync(tmp_path, monkeypatch):
    """A copy that differs in content but not in size or times: rsync's quick check alone would skip
    it; the verification names it and the repair makes rsync copy it again."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)
    real = fastcopy_lib.ParallelCopy.run
    victim = dst / "d04" / "f20"

    def then_damage(self):
        result = real(self)
        before = os.stat(victim)
        with open(victim, "r+b") as handle:
            handle.write(b"\xff" * 16)
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
        return result

    monkeypatch.setattr(fastcopy_lib.ParallelCopy, "run", then_damage)
    rc, report, status = run_worker(tmp_path, "damaged", src, dst)
    assert rc == 0 and status["state"] == "completed", status
    assert report["copy_engine"] == "parallel, then rsync"
    assert report["verified"] is True
    assert victim.read_bytes() == (src / "d04" / "f20").read_bytes()
    assert rsync_differences(src, dst) == []


def test_a_first_copy_cut_short_is_finished_by_rsync_on_the_next_attempt(tmp_path, monkeypatch):
    """Cut after the files, before the folders got their modes and times (as a crash would): the next
    attempt finds a destination that is not empty and lets rsync compare and finish."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    tree(src)

    def cut(self, folders):
        raise worker_lib.Terminated("cut short")

    with monkeypatch.context() as patch:
        patch.setattr(fastcopy_lib.ParallelCopy, "_finish_folders", cut)
        rc, report, status = run_worker(tmp_path, "cut", src, dst)
    assert status["state"] == "cancelled" and report is None
    assert stat.S_IMODE(os.stat(dst / "readonly").st_mode) == 0o700  # not finished
    rc, report, status = run_worker(tmp_path, "cut", src, dst)
    assert rc == 0 and status["state"] == "completed", status
    assert report["copy_engine"] == "rsync" and report["verified"] is True
    assert stat.S_IMODE(os.stat(dst / "readonly").st_mode) == 0o555
    assert rsync_differences(src, dst) == []


def test_without_direct_io_the_copies_are_read_back_after_dropping_their_pages(tmp_path, monkeypatch):
    """A filesystem that refuses O_DIRECT (tmpfs does) still gets every copy read back and hashed:
    through the walker's other path, which drops the cached pages first."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    for index in range(30):
        write(os.path.join(src, "f%02d" % index), os.urandom(1000 + index))

    def refuse(self, target, size):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(fastcopy_lib._Copier, "_read_direct", refuse)
    engine = fastcopy_lib.ParallelCopy(str(src), str(dst), [], "xxh128", workers=2).run()
    assert engine.error_count == 0
    assert len(engine.records["destination"]) == 30
    for rel, (ident, digest) in engine.records["destination"].items():
        assert digest == engine.records["source"][rel][1]
        assert ident == fileread_lib.identity(os.lstat(os.path.join(os.fsencode(dst), rel)))


@NEEDS_ROOT
def test_a_setgid_destination_root_does_not_change_the_groups_copied(tmp_path):
    """Below a setgid folder new files and folders take the folder's group (and folders the bit):
    every copy must still end with its source's group, at any depth."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    os.chown(dst, 0, 54322)
    os.chmod(dst, 0o2775)
    write(str(src / "top"), b"top")
    write(str(src / "a" / "b" / "deep"), b"deep")
    os.chown(src / "a" / "b" / "deep", 0, 0)
    engine = fastcopy_lib.ParallelCopy(str(src), str(dst), [], "xxh128").run()
    assert engine.error_count == 0, engine.errors
    for rel in ("top", "a", "a/b", "a/b/deep"):
        assert os.lstat(dst / rel).st_gid == os.lstat(src / rel).st_gid == 0, rel
    assert rsync_differences(src, dst) == []


def test_a_file_replaced_by_a_fifo_after_the_listing_does_not_block_the_copy(tmp_path):
    """The copying process opens what was listed as a file; a FIFO there must not block it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    dst.mkdir()
    os.mkfifo(src / "sub" / "was-a-file")
    os.mkdir(dst / "sub")
    copier = fastcopy_lib._Copier(os.fsencode(src), os.fsencode(dst), "xxh128", conn=None)
    with pytest.raises(OSError, match="changed type"):
        copier.copy_file(b"sub/was-a-file")
    assert not (dst / "sub" / "was-a-file").exists()
