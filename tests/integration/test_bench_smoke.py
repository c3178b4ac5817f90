"""Smoke test of bench/run.py: tiny sizes, one run; checks the shape of the JSON, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
METHODS = ("cp_a", "tar_pipe", "copy_limit", "reference", "rsync_sha256sum", "ours")
DATASETS = ("D1", "D2", "D3")


def test_bench_quick_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    work.mkdir()
    argv = [
        sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--quick", "--runs", "1", "--out", str(out),
        "--work-dir", str(work), "--d1-files", "2", "--d1-mib", "1", "--d2-files", "100", "--d2-dirs", "4",
        "--d3-files", "100", "--sparse-mib", "4", "--ref-files", "20",
    ]
    env = dict(os.environ)
    env.setdefault("ANSIBLE_LOCAL_TEMP", str(tmp_path / "ansible-tmp"))
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = json.loads(out.read_text())

    rows = {(row["method"], row["dataset"]): row for row in result["results"]}
    for dataset in DATASETS:
        assert result["datasets"][dataset]["files"] > 0
        for method in METHODS:
            assert (method, dataset) in rows, (method, dataset)
            assert rows[(method, dataset)]["seconds"] > 0, (method, dataset)
        assert rows[("ours", dataset)]["verified"] is True

    cut = result["cutover"]
    assert cut["changed_files"] > 0
    assert cut["ours_final_verified"] is True
    assert cut["ours_missed_total"] == 0
    # The final pass was a changes pass: it read the changed files again (both sides) and no other.
    final = cut["runs"][0]
    assert 0 < final["ours_final_files_read"] < 2 * result["datasets"]["D3"]["files"], final["ours_final_hashing"]
    assert final["ours_final_changes_pass"]["incremental"] is True, final["ours_final_changes_pass"]
    assert final["changed_files"] <= final["ours_final_files_read"] <= 2 * final["changed_files"], final
    assert final["ours_final_copy_engine"] == "changes"
    assert final["ours_noop_changes_pass"]["entries_listed"] == 0, final["ours_noop_changes_pass"]
    for key in ("ours_final_seconds", "rsync_seconds", "ours_noop_seconds", "rsync_noop_seconds", "phase1_copy_seconds",
                "phase1_verify_seconds"):
        assert cut[key] > 0, key

    machine = result["machine"]
    for key in ("cpu_count", "memory_bytes", "kernel", "rsync", "python", "caches_dropped", "source_fs"):
        assert key in machine, key
    assert result["targets"], "no target evaluated"
    assert all(isinstance(target["pass"], bool) for target in result["targets"])
    # Each run's copy limit is the better of cp -a and the tar pipe in that run, and every target
    # gives its figure for each run beside the one judged on the medians.
    for dataset in DATASETS:
        pairs = zip(rows[("cp_a", dataset)]["runs"], rows[("tar_pipe", dataset)]["runs"])
        assert rows[("copy_limit", dataset)]["runs"] == [min(pair) for pair in pairs]
    for target in result["targets"]:
        assert len(target["per_run"]) == 1, target
    d1 = next(t for t in result["targets"] if t["target"] == "ours copy+verify / copy limit on D1")
    ours_runs = rows[("ours", "D1")]["runs"]
    limit_runs = rows[("copy_limit", "D1")]["runs"]
    assert d1["per_run"] == [round(a / b, 3) for a, b in zip(ours_runs, limit_runs)]
    assert "runs (s)" in proc.stdout
    # Every target on a ratio of times also says, in seconds, what ours took and what it allows.
    assert d1["ours_seconds"] == round(rows[("ours", "D1")]["seconds"], 3)
    assert d1["allowed_seconds"] == round(rows[("copy_limit", "D1")]["seconds"] * 1.3, 3)
    # Retired targets (the reference method's speed-ups; the final pass on a cutover set below D4)
    # are figures for information, never judged.
    judged = {t["target"] for t in result["targets"]}
    figures = {f["target"]: f for f in result["figures"]}
    for name in ("reference method / ours on D2 (speed-up)", "reference method / ours on D3 (speed-up)",
                 "ours final pass / plain incremental rsync"):
        assert name in figures and name not in judged, name
        assert "pass" not in figures[name] and "allowed_seconds" not in figures[name], figures[name]
    assert figures["reference method / ours on D2 (speed-up)"]["value"] == round(
        rows[("reference", "D2")]["seconds"] / rows[("ours", "D2")]["seconds"], 3)
    final_pass = figures["ours final pass / plain incremental rsync"]
    assert (final_pass["ours_seconds"], final_pass["retired_limit"]) == (round(cut["ours_final_seconds"], 3), 1.2)
    assert "For information (retired targets, not judged):" in proc.stdout
    missed = next(t for t in result["targets"] if t["unit"] == "files")
    assert "allowed_seconds" not in missed
    assert sum("the target allows" in line for line in proc.stdout.splitlines()) == len(result["targets"]) - 1
    # With the page cache dropped (root), each timed run was preceded by an untimed warm-up of the
    # method about to run (each baseline, ours, and plain rsync in the cutover); without, none.
    if machine["caches_dropped"]:
        assert result["programs_in_memory"] is True
        assert set(result["warmup_seconds"]) == {"cp_a", "tar_pipe", "reference", "rsync_sha256sum", "ours", "rsync"}
        assert all(seconds > 0 for seconds in result["warmup_seconds"].values())
        assert result["ours_startup_cold_seconds"] > 0
        assert "Programs: after each drop" in proc.stdout
    else:
        assert result["programs_in_memory"] is False
        assert result["warmup_seconds"] == {}
    # The work folder and any loop devices are gone.
    assert list(work.iterdir()) == []


def test_rsync_recursion_bench_tiny(tmp_path: Path) -> None:
    """bench/rsync_recursion.py both ways on 3,000 files in 100 folders: every run checks the
    whole tree (files, folders and the top) and the first copies copy; no timing is judged."""
    out = tmp_path / "rsync_recursion.json"
    argv = [sys.executable, str(REPO_ROOT / "bench" / "rsync_recursion.py"), "--files", "3000",
            "--per-folder", "30", "--work", str(tmp_path), "--out", str(out)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"incremental", "whole list"}
    for way, rounds in result["runs"].items():
        assert len(rounds) == 2, way
        for run in rounds:
            assert run["first_copy"]["entries_checked"] == 3000 + 100 + 1, (way, run)
            assert run["no_op_pass"]["entries_checked"] == 3000 + 100 + 1, (way, run)
            assert run["first_copy"]["first_file_after_seconds"] is not None, (way, run)
            assert run["first_copy"]["peak_rss_bytes"] > 0, (way, run)
    assert set(result["incremental_over_whole_list"]) == {"first_copy", "no_op_pass"}
    assert not list(tmp_path.glob("rsync-recursion-*")), "the work folder was left behind"


def test_replication_bench_tiny(tmp_path: Path, root_required) -> None:
    """bench/replication.py on 400 files: every figure is there, the posix updates of the rounds
    and the failback after the planned promotion copied the changed entries only (each after a
    verified update), the bytes sent are the changed bytes, and nothing is left behind."""
    out = tmp_path / "replication.json"
    work = tmp_path / "work"
    work.mkdir()
    argv = [sys.executable, str(REPO_ROOT / "bench" / "replication.py"), "--files", "400", "--work-dir", str(work),
            "--out", str(out)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = json.loads(out.read_text())
    posix = result["posix_update"]
    assert [(r["incremental"], r["full_send_reason"], r["passes"]) for r in posix["rounds"]] == [(True, None, 1)] * 2
    for r in posix["rounds"]:
        assert r["ours_bytes"] == r["changed_bytes"] and r["ours_seconds"] > 0 and r["rsync_seconds"] > 0, r
    failback = result["posix_failback"]
    assert (failback["incremental"], failback["full_send_reason"]) == (True, None)
    assert failback["bytes"] == failback["changed_bytes"]
    assert result["btrfs_failback"]["bytes"] >= result["btrfs_failback"]["changed_bytes"]
    assert list(work.iterdir()) == []


def test_window_bench_tiny(tmp_path: Path, root_required) -> None:
    """bench/window.py on 2,000 files: a writable migration through the playbooks whose phase 2 is a
    changes pass that misses none of the changed files (the same-size, same-second ones included,
    which the plain rsync misses), a read-only window measured by the record inside phase 2, and
    nothing left behind (loop devices, mounts, the work folder); no timing is judged."""
    out = tmp_path / "window.json"
    work = tmp_path / "work"
    work.mkdir()
    argv = [sys.executable, str(REPO_ROOT / "bench" / "window.py"), "--files", "2000", "--work-dir", str(work),
            "--out", str(out), "--poll-seconds", "1"]
    proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = json.loads(out.read_text())
    assert (result["files"], result["folders"], result["changed_files"]) == (2000, 20, 20), result
    assert (result["source_fs"], result["destination_fs"]) == ("ext4", "xfs"), result
    assert result["ours_missed"] == 0, result
    assert result["rsync_missed_same_second"] == result["changed_same_size_same_second"] == 10, result
    final = result["final_copy"]
    assert result["final_verified"] is True and final["verified_at"], result
    assert final["copy_engine"] == "changes", final
    assert final["changes_pass"]["incremental"] is True, final
    assert 0 < result["read_only_seconds"] < result["phase2_seconds"], result
    assert 0 <= result["switch_seal_seconds"] < result["read_only_seconds"], result
    assert result["ratio"] == result["read_only_seconds"] / result["rsync_seconds"], result
    assert isinstance(result["pass"], bool)
    assert any(line.startswith('"read-only   :') for line in result["playbook_summary"]), result["playbook_summary"]
    assert "window / rsync" in proc.stdout
    assert list(work.iterdir()) == []
    assert str(work) not in subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, text=True, check=False).stdout


def test_volume_bench_writer_through_the_nbd_hop(tmp_path: Path, root_required) -> None:
    """bench/volumes.py's writer through a FUSE export over an NBD hop (the path an attachment takes
    during a pull, without the pull): each write lands in the image at its offset, a latency is
    measured for each, and both storage daemons and the FUSE mount are gone afterwards."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import volumes  # bench/volumes.py
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    mib = 1024 * 1024
    image = tmp_path / "hop.raw"
    with open(image, "wb") as handle:
        handle.truncate(64 * mib)
    data = os.urandom(mib)
    latencies = volumes.writer_through_nbd_hop(image, tmp_path, count=4, data=data)
    assert len(latencies) == 4 and all(x > 0 for x in latencies), latencies
    content = image.read_bytes()
    for i in range(4):
        offset = (i * 7919 * mib) % (63 * mib)
        assert content[offset:offset + mib] == data, i
    assert content[60 * mib:61 * mib] == bytes(mib), "nothing else was written"
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts
    assert not (tmp_path / "hop.sock").exists() and not (tmp_path / "hop.attachment").exists()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path("/proc", pid, "cmdline").read_bytes()
        except OSError:
            continue
        assert str(tmp_path).encode() not in argv, "a storage daemon was left running: %r" % argv
