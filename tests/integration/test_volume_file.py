"""Volumes on the collection's own ``file`` driver, run through the real modules (docs/volumes.md).

Real parts: two loop-mounted filesystems (ext4 with two pools, xfs with one), qemu-img, a
qemu-storage-daemon FUSE export written by dd, a detached qemu-img convert killed mid-copy. Each
module runs as Ansible runs it (the module file with its JSON arguments, its own process), so a
call with ``wait: false`` really returns while the copy goes on. Contents are compared with
sha256 of the images read back by qemu-img, independently of the collection's own verification.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts, FUSE)"),
    pytest.mark.skipif(not all(shutil.which(p) for p in ("qemu-img", "qemu-storage-daemon", "fusermount3",
                                                         "mkfs.xfs", "mkfs.ext4")),
                       reason="needs qemu-utils, qemu-system-common, fuse3, xfsprogs, e2fsprogs (scripts/setup.sh)"),
]

MIB = 1024 * 1024


def _processes_under(base: Path) -> list[int]:
    """Pids of the processes this test's volumes started (their argv names a path under base)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            argv = Path("/proc", pid, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        program = argv[0].split(b"/")[-1]
        if any(str(base).encode() in a for a in argv) and program in (b"qemu-img", b"sh", b"qemu-storage-daemon"):
            found.append(int(pid))
    return found


def _mounts_under(base: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(str(base))]


@pytest.fixture
def lab(tmp_path, collections_path):
    """Pools e1, e2 on one ext4 filesystem and x1 on an xfs filesystem, both loop-mounted."""
    base = tmp_path / "lab"
    pools = {}
    mounted = []
    for fs, mkfs in (("ext4", ["mkfs.ext4", "-q", "-F"]), ("xfs", ["mkfs.xfs", "-q", "-f"])):
        image = tmp_path / f"{fs}.img"
        with open(image, "wb") as handle:
            handle.truncate(600 * MIB)
        subprocess.run(mkfs + [str(image)], check=True, capture_output=True)
        point = base / fs
        point.mkdir(parents=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True, capture_output=True)
        mounted.append(point)
    for pool, fs in (("e1", "ext4"), ("e2", "ext4"), ("x1", "xfs")):
        (base / fs / pool).mkdir()
        pools[pool] = {"path": str(base / fs / pool)}
    backends = [{"name": "blocks", "driver": "file", "pools": pools}]
    yield {"base": base, "backends": backends, "collections": collections_path, "work": tmp_path}
    for pid in _processes_under(base):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.2)
    for point in _mounts_under(base)[::-1]:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False, capture_output=True)


def run(lab, module: str, check: bool = False, crash_after: str | None = None, **args) -> dict:
    """Run storage.mobility.<module> with args (plus the lab's backends) as Ansible does; its JSON result.

    ``crash_after``: the run dies (exit 70, no cleanup) right after recording that step (crash.py)."""
    args = dict(args, backends=lab["backends"], _ansible_check_mode=check)
    path = lab["work"] / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(lab["collections"]))
    env.pop("STORAGE_MOBILITY_CRASH_AFTER", None)
    if crash_after:
        env["STORAGE_MOBILITY_CRASH_AFTER"] = crash_after
    proc = subprocess.run([sys.executable, "-m", f"ansible_collections.storage.mobility.plugins.modules.{module}",
                           str(path)], capture_output=True, text=True, env=env, cwd=str(lab["work"]), timeout=300, check=False)
    if crash_after:
        assert proc.returncode == 70, (crash_after, proc.stdout, proc.stderr)
        return {"rc": 70}
    result = json.loads(proc.stdout)
    result["rc"] = proc.returncode
    return result


def content_sha256(image: str, fmt: str) -> str:
    """sha256 of the volume's content (the guest view), read back with qemu-img into a raw file."""
    out = image + ".check.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", image, out], check=True)
    digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()
    os.unlink(out)
    return digest


def events(lab) -> list[dict]:
    lines = []
    for journal in lab["base"].glob("*/*/.mobility/events.jsonl"):
        lines += [json.loads(line) for line in journal.read_text().splitlines()]
    return sorted(lines, key=lambda e: e["time"])


def test_volume_lifecycle_attach_write_and_both_migrations(lab):
    pool = "localhost@blocks#e1"
    created = run(lab, "volume", name="db", size=1, pool=pool, format="qcow2")
    assert created["changed"] and created["volume"]["status"] == "available", created
    info = run(lab, "volume_info", name="db")["volumes"][0]
    image = info["path"]
    assert info["format"] == "qcow2" and info["host"] == pool and info["size"] == 1
    assert info["allocated_bytes"] < 2 * MIB, "a new volume is sparse"
    assert run(lab, "volume", name="db", size=1, pool=pool, format="qcow2")["changed"] is False

    planned = run(lab, "volume", check=True, name="other", size=1, pool=pool)
    assert planned["changed"] and planned["actions"] == ["create volume other (1 GiB, raw) in %s" % pool]
    assert run(lab, "volume_info", name="other")["volumes"] == []

    # attach: a real writer writes through the FUSE file the storage daemon exports
    attached = run(lab, "volume", name="db", state="attached")
    assert attached["changed"] and attached["volume"]["status"] == "in-use", attached
    path = attached["attachment"]["path"]
    assert path in _mounts_under(lab["base"])
    payload = os.urandom(24 * MIB)
    (lab["work"] / "payload").write_bytes(payload)
    subprocess.run(["dd", "if=%s" % (lab["work"] / "payload"), "of=%s" % path, "bs=1M", "seek=100",
                    "conv=notrunc,fsync", "status=none"], check=True)
    assert run(lab, "volume", name="db", state="attached")["changed"] is False
    # the storage daemon dies (its FUSE mount stays, disconnected): attach again restarts it on the same path
    os.kill(attached["attachment"]["pid"], signal.SIGKILL)
    time.sleep(0.3)
    revived = run(lab, "volume", name="db", state="attached")
    assert revived["changed"] and revived["actions"] == ["restart the attachment of volume db"], revived
    assert revived["attachment"]["path"] == path and revived["attachment"]["pid"] != attached["attachment"]["pid"]
    with open(path, "rb") as handle:
        handle.seek(100 * MIB)
        assert handle.read(MIB) == payload[:MIB], "the restarted attachment serves what was written"
    refused = run(lab, "volume", name="db", state="absent")
    assert refused["failed"] and "detach it first" in refused["msg"]
    moved_in_use = run(lab, "volume_migrate", volume="db", host="localhost@blocks#x1", force_host_copy=True)
    assert moved_in_use["failed"] and "in-use" in moved_in_use["msg"], moved_in_use
    detached = run(lab, "volume", name="db", state="detached")
    assert detached["changed"] and detached["volume"]["status"] == "available"
    assert sorted(_mounts_under(lab["base"])) == [str(lab["base"] / "ext4"), str(lab["base"] / "xfs")], \
        "no FUSE mount is left behind"
    assert not Path(path).exists()
    assert not _processes_under(lab["base"])

    expected = bytearray(1024 * MIB)
    expected[100 * MIB:124 * MIB] = payload
    want = hashlib.sha256(bytes(expected)).hexdigest()
    del expected
    assert content_sha256(image, "qcow2") == want, "what dd wrote through the attachment is in the image"

    # driver-assisted within one filesystem: the image is renamed (same inode)
    inode = os.stat(image).st_ino
    moved = run(lab, "volume_migrate", volume="db", host="localhost@blocks#e2")
    assert moved["changed"] and moved["migration"]["mechanism"] == "driver", moved
    assert moved["volume"]["host"] == "localhost@blocks#e2" and moved["volume"]["migration_status"] == "success"
    image = run(lab, "volume_info", name="db")["volumes"][0]["path"]
    assert os.stat(image).st_ino == inode and image.startswith(lab["backends"][0]["pools"]["e2"]["path"])
    assert run(lab, "volume_migrate", volume="db", host="localhost@blocks#e2")["changed"] is False

    # host copy to the xfs filesystem, locked: holes kept, verified, source released
    copied = run(lab, "volume_migrate", volume="db", host="localhost@blocks#x1", lock_volume=True, wait_sleep=1)
    assert copied["changed"] and copied["migration"]["mechanism"] == "host_copy", copied
    assert copied["volume"]["status"] == "available" and copied["migration"]["migration_status"] == "success"
    assert not os.path.exists(image), "the source image is released after the copy is verified"
    info = run(lab, "volume_info", name="db")["volumes"][0]
    assert info["host"] == "localhost@blocks#x1" and info["allocated_bytes"] < 40 * MIB, info
    assert content_sha256(info["path"], "qcow2") == want
    assert not list(Path(lab["backends"][0]["pools"]["e2"]["path"], ".mobility", "volumes").glob("*.json"))

    seen = [(e["event"], e.get("new")) for e in events(lab) if e["kind"] == "volume"]
    assert ("volume.status", "maintenance") in seen and ("volume.migration_status", "completing") in seen
    starts = [e for e in events(lab) if e["event"] == "volume.migrate.start"]
    ends = [e for e in events(lab) if e["event"] == "volume.migrate.end"]
    assert [e["mechanism"] for e in starts] == ["driver", "host_copy"] and [e["result"] for e in ends] == ["success"] * 2

    gone = run(lab, "volume", name="db", state="absent")
    assert gone["changed"] and not os.path.exists(info["path"])
    assert run(lab, "volume", name="db", state="absent")["changed"] is False


def test_detached_copy_progress_kill_rerun_cancel_and_finish(lab):
    pool = "localhost@blocks#x1"
    assert run(lab, "volume", name="big", size=1, pool=pool)["changed"]
    image = run(lab, "volume_info", name="big")["volumes"][0]["path"]
    with open(image, "r+b") as handle:  # 48 MiB of data in two extents, the rest holes
        handle.seek(10 * MIB)
        handle.write(os.urandom(24 * MIB))
        handle.seek(700 * MIB)
        handle.write(os.urandom(24 * MIB))
    before = content_sha256(image, "raw")

    started = time.monotonic()
    result = run(lab, "volume_migrate", volume="big", host="localhost@blocks#e1", rate_limit=4 * MIB, wait=False)
    assert time.monotonic() - started < 8, "wait=false returns while the copy goes on"
    assert result["changed"] and result["volume"]["migration_status"] == "migrating", result
    time.sleep(3)
    progress = run(lab, "volume_info", name="big")["volumes"][0]["migration"]["progress"]
    assert progress["copier"] == "running" and 0 < progress["percent"] < 100, progress
    # counted over the 48 MiB of data (and the first 4 KiB block, which qemu-img create allocates in a
    # raw image), and rate_limit holds the data to 4 MiB/s (after a first burst of the copier's
    # parallel requests, at most 16 MiB): convert's -r, which also counts the holes, would take about
    # four minutes for the 1 GiB, this copy about 10 s
    assert 48 * MIB <= progress["bytes_total"] <= 48 * MIB + 64 * 1024, progress
    assert 0 < progress["rate_bytes_per_second"] < 16 * MIB, progress
    assert progress["eta_seconds"] < 60, progress
    assert progress["eta_seconds"] is not None and progress["eta_seconds"] > 0

    # the copier is killed: volume_info says so, a rerun copies again
    for pid in _processes_under(lab["base"]):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    stopped = run(lab, "volume_info", name="big")["volumes"][0]
    assert stopped["migration"]["progress"]["copier"] == "stopped" and stopped["migration_status"] == "migrating"
    rerun = run(lab, "volume_migrate", volume="big", host="localhost@blocks#e1", rate_limit=4 * MIB, wait=False)
    assert "restart the copy of volume big" in rerun["actions"], rerun
    assert run(lab, "volume_info", name="big")["volumes"][0]["migration"]["progress"]["copier"] == "running"
    other = run(lab, "volume_migrate", volume="big", host="localhost@blocks#e2", wait=False)
    assert other["failed"] and other["error_type"] == "busy" and "migrating to localhost@blocks#e1" in other["msg"]

    cancelled = run(lab, "volume_migrate", volume="big", state="cancelled")
    assert cancelled["changed"] and cancelled["volume"]["migration_status"] == "error", cancelled
    assert cancelled["migration"]["result"] == "cancelled" and cancelled["volume"]["host"] == pool
    assert not _processes_under(lab["base"])
    assert not [p for p in Path(lab["backends"][0]["pools"]["e1"]["path"]).iterdir() if p.name != ".mobility"]
    assert content_sha256(image, "raw") == before
    assert run(lab, "volume_migrate", volume="big", state="cancelled")["changed"] is False
    ends = [e for e in events(lab) if e["event"] == "volume.migrate.end"]
    assert [e["result"] for e in ends] == ["cancelled"]

    done = run(lab, "volume_migrate", volume="big", host="localhost@blocks#e1", wait_sleep=1)
    assert done["changed"] and done["volume"]["migration_status"] == "success", done
    info = run(lab, "volume_info", name="big")["volumes"][0]
    assert content_sha256(info["path"], "raw") == before and not os.path.exists(image)
    assert info["allocated_bytes"] < 100 * MIB, "holes are kept"
    assert [e for e in events(lab) if e["event"] == "volume.migrate.progress"]


def test_bad_requests_change_nothing(lab):
    assert run(lab, "volume", name="v", size=1, pool="localhost@blocks#e1")["changed"]
    state = sorted(p.name for p in Path(lab["backends"][0]["pools"]["e1"]["path"]).iterdir())
    cases = [
        (dict(host="localhost@blocks#nope"), "Unknown pool 'nope'"),
        (dict(host="otherhost@blocks#e1"), "Unknown host 'otherhost'"),
        (dict(host="localhost@blocks#e1"), "it is already there"),
        (dict(new_type="gold"), "driver file has no volume types"),
        (dict(host="localhost@blocks#e2", cluster="c1"), "give host or cluster, not both"),
    ]
    for args, message in cases:
        result = run(lab, "volume_migrate", volume="v", **args)
        assert result.get("failed") and message in result["msg"], (args, result)
    shrink = run(lab, "volume", name="v", size=1, pool="localhost@blocks#e2")
    assert shrink["failed"] and "use volume_migrate" in shrink["msg"]
    missing = run(lab, "volume", name="w", pool="localhost@blocks#e1")
    assert missing["failed"] and "give its size" in missing["msg"]
    assert sorted(p.name for p in Path(lab["backends"][0]["pools"]["e1"]["path"]).iterdir()) == state
    assert run(lab, "volume_info", name="v")["volumes"][0]["migration_status"] is None


def test_a_corrupted_block_in_the_copy_fails_the_verification_and_keeps_the_source(lab):
    """The verification is real: one 4 KiB block changed in the finished copy, before the run that verifies
    it, ends the migration in error with the source unchanged and the copy removed."""
    assert run(lab, "volume", name="k", size=1, pool="localhost@blocks#e1")["changed"]
    image = run(lab, "volume_info", name="k")["volumes"][0]["path"]
    with open(image, "r+b") as handle:
        handle.seek(200 * MIB)
        handle.write(os.urandom(16 * MIB))
    before = content_sha256(image, "raw")
    # A copy of about 4 s (16 MiB of data at 4 MiB/s): without a rate limit it can end before this run
    # returns, and the run then verifies and switches at once, leaving nothing to corrupt.
    started = run(lab, "volume_migrate", volume="k", host="localhost@blocks#x1", rate_limit=4 * MIB, wait=False)
    assert started["volume"]["migration_status"] == "migrating", started
    for _attempt in range(100):
        progress = run(lab, "volume_info", name="k")["volumes"][0]["migration"]["progress"]
        if progress["copier"] != "running":
            break
        time.sleep(0.2)
    assert progress["copier"] == "done", progress
    copies = list(lab["base"].glob("*/x1/.volume-*.migrating"))
    assert len(copies) == 1, copies
    with open(copies[0], "r+b") as handle:  # inside the data the copier wrote
        handle.seek(208 * MIB)
        handle.write(os.urandom(4096))
    failed = run(lab, "volume_migrate", volume="k", host="localhost@blocks#x1", wait_sleep=1)
    assert failed.get("failed") and "the copy differs from the source" in failed["msg"], failed
    info = run(lab, "volume_info", name="k")["volumes"][0]
    assert info["migration_status"] == "error" and info["host"] == "localhost@blocks#e1", info
    assert info["path"] == image and content_sha256(image, "raw") == before
    assert not list(lab["base"].glob("*/x1/.volume-*")) and not list(lab["base"].glob("*/x1/volume-*"))


def test_a_waiting_run_sees_the_end_of_the_copy_at_once(lab):
    """With wait, the run follows the copier's exit status, not only its wait_sleep polls: a copy of about
    3 s (24 MiB of data at rate_limit 8 MiB/s; the holes do not count) with wait_sleep 10 ends in far less
    than 10 s (it took at least 10 s when the run slept a whole poll)."""
    assert run(lab, "volume", name="q", size=1, pool="localhost@blocks#e1")["changed"]
    image = run(lab, "volume_info", name="q")["volumes"][0]["path"]
    with open(image, "r+b") as handle:
        handle.seek(100 * MIB)
        handle.write(os.urandom(24 * MIB))
    before = content_sha256(image, "raw")
    started = time.monotonic()
    done = run(lab, "volume_migrate", volume="q", host="localhost@blocks#x1", rate_limit=8 * MIB, wait_sleep=10)
    took = time.monotonic() - started
    assert done["volume"]["migration_status"] == "success", done
    assert took < 8, took
    assert 1 < done["migration"]["copy_seconds"] < took, done["migration"]
    assert 0 <= done["migration"]["verify_seconds"] < took - done["migration"]["copy_seconds"], done["migration"]
    assert content_sha256(run(lab, "volume_info", name="q")["volumes"][0]["path"], "raw") == before


@pytest.mark.parametrize("crash_after", ["migration_start", "migration_copy", "migration_completing",
                                         "migration_success", "migration_released"])
def test_a_host_copy_killed_after_each_step_converges_on_rerun(lab, crash_after):
    """The run dies right after recording each step; the rerun ends with one verified volume."""
    assert run(lab, "volume", name="c", size=1, pool="localhost@blocks#e1")["changed"]
    image = run(lab, "volume_info", name="c")["volumes"][0]["path"]
    with open(image, "r+b") as handle:
        handle.seek(300 * MIB)
        handle.write(os.urandom(8 * MIB))
    before = content_sha256(image, "raw")
    run(lab, "volume_migrate", crash_after=crash_after, volume="c", host="localhost@blocks#x1", lock_volume=True,
        wait_sleep=1)
    again = run(lab, "volume_migrate", volume="c", host="localhost@blocks#x1", lock_volume=True, wait_sleep=1)
    assert again["rc"] == 0 and again["volume"]["host"] == "localhost@blocks#x1", again
    assert again["volume"]["status"] == "available" and again["volume"]["migration_status"] == "success"
    info = run(lab, "volume_info", name="c")["volumes"][0]
    assert content_sha256(info["path"], "raw") == before and not os.path.exists(image)
    records = list(lab["base"].glob("*/*/.mobility/volumes/c.json"))
    assert [r.parent.parent.parent.name for r in records] == ["x1"]
    leftovers = [p.name for p in lab["base"].glob("*/*/.volume-*")] + [p.name for p in lab["base"].glob("*/*/.mobility/volume-copies/*")]
    assert leftovers == [] and not _processes_under(lab["base"])


def test_migrate_volume_playbook_prints_progress_and_finishes(lab):
    """playbooks/migrate_volume.yml as an operator runs it: progress lines while it copies, then the summary."""
    from test_targets import _ansible_playbook, _environment

    assert run(lab, "volume", name="pb", size=1, pool="localhost@blocks#x1")["changed"]
    image = run(lab, "volume_info", name="pb")["volumes"][0]["path"]
    with open(image, "r+b") as handle:
        handle.seek(50 * MIB)
        handle.write(os.urandom(16 * MIB))
    before = content_sha256(image, "raw")
    extra = lab["work"] / "extra.json"
    extra.write_text(json.dumps({"mobility_volume_backends": lab["backends"], "volume": "pb",
                                 "host": "localhost@blocks#e1", "rate_limit": MIB, "poll_seconds": 1,
                                 "ansible_python_interpreter": sys.executable}))
    proc = subprocess.run([_ansible_playbook(), "-i", "localhost,", "-c", "local", "-e", "@%s" % extra,
                           str(Path(__file__).resolve().parents[2] / "playbooks" / "migrate_volume.yml")],
                          env=_environment(lab["collections"], lab["work"]), cwd=str(lab["work"]),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    progress = [line for line in proc.stdout.splitlines() if "MiB/s" in line]
    assert len(progress) >= 2 and "migrating: " in progress[0], proc.stdout[-4000:]
    assert "migration_status success" in proc.stdout and "now on      : localhost@blocks#e1" in proc.stdout
    info = run(lab, "volume_info", name="pb")["volumes"][0]
    assert content_sha256(info["path"], "raw") == before and not os.path.exists(image)
