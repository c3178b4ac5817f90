"""Asynchronous volume migration on driver ``file`` (docs/volumes.md, "Asynchronous migration").

Real parts: loop-mounted ext4 and xfs pools (the lab of test_volume_file.py), a pull daemon
(qemu-storage-daemon: NBD export + block-stream job), a second daemon's writable FUSE export written
and read by this test while the data moves, SIGKILL of the pull daemon mid-pull. Contents are
checked with sha256 of regions read back by qemu-img, independently of the collection's checks.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import test_volume_file as lab_module
from test_volume_file import MIB, _mounts_under, _processes_under, run

#: the same skips (root, qemu tools) and the same lab (loop-mounted ext4 pools e1, e2 and xfs pool x1)
pytestmark = lab_module.pytestmark
lab = lab_module.lab

SRC_POOL = "localhost@blocks#e1"
DST_POOL = "localhost@blocks#x1"


def _read_region(image: str, fmt: str, offset: int, length: int) -> bytes:
    """Bytes of the volume's content (the guest view) read back with qemu-img, not through the collection."""
    out = image + ".check.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", image, out], check=True)
    try:
        with open(out, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    finally:
        os.unlink(out)


def _make_volume(lab) -> tuple[str, bytes]:
    created = run(lab, "volume", name="db", size=1, pool=SRC_POOL)
    assert created["changed"], created
    image = run(lab, "volume_info", name="db")["volumes"][0]["path"]
    data = os.urandom(64 * MIB)
    (lab["work"] / "data").write_bytes(data)
    subprocess.run(["dd", f"if={lab['work'] / 'data'}", f"of={image}", "bs=1M", "seek=512", "conv=notrunc,fsync",
                    "status=none"], check=True)
    return image, data


def _pull_pids(lab) -> list[int]:
    found = []
    for pid in _processes_under(lab["base"]):
        try:
            argv = Path("/proc", str(pid), "cmdline").read_bytes()
        except OSError:
            continue
        if b".pull.pid" in argv:
            found.append(pid)
    return found


def _wait_success(lab, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        result = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, wait=False)
        assert not result.get("failed"), result
        if result["volume"]["migration_status"] == "success":
            return result
        time.sleep(0.5)
    raise AssertionError("the pull did not end")


def test_async_migration_attachable_at_once_written_during_pull_then_released(lab):
    source_image, data = _make_volume(lab)
    started = time.time()
    # The pull skips the source's holes: it copies the 64 MiB of data only, so it is slowed to 1 MiB/s
    # to be still running while the steps below attach, read, write and kill it (a loaded machine
    # takes tens of seconds for them).
    result = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, wait=False,
                 rate_limit=1 * MIB)
    assert not result.get("failed"), result
    assert time.time() - started < 10
    assert result["volume"]["migration_status"] == "migrating_attachable", result
    assert result["migration"]["mechanism"] == "async"

    attached = run(lab, "volume", name="db", state="attached")
    assert attached["changed"] and attached["volume"]["status"] == "in-use", attached
    path = attached["attachment"]["path"]
    assert path.startswith(str(lab["base"] / "xfs")), "the attachment serves the destination"
    # a block not pulled yet (the pull runs at 1 MiB/s through the data from offset 512 MiB) reads the source's data
    with open(path, "rb") as handle:
        handle.seek(512 * MIB + 60 * MIB)
        assert handle.read(MIB) == data[60 * MIB:61 * MIB]
    progress = run(lab, "volume_info", name="db")["volumes"][0]["migration"]["progress"]
    assert progress["copier"] == "running" and 0 < progress["bytes_done"] < progress["bytes_total"], progress
    # counted over the source's 64 MiB of data (and the first 4 KiB block, which qemu-img create
    # allocates in a raw image), not over the 1 GiB the job walks (its holes are stepped over in a
    # moment): at 1 MiB/s most of the data is still to come, and the ETA says so
    assert 64 * MIB <= progress["bytes_total"] <= 64 * MIB + 64 * 1024, progress
    assert progress["eta_seconds"] > 20, progress
    # a writer writes during the pull, over both pulled and not-yet-pulled regions
    written = os.urandom(8 * MIB)
    (lab["work"] / "written").write_bytes(written)
    for seek in (1, 900):
        subprocess.run(["dd", f"if={lab['work'] / 'written'}", f"of={path}", "bs=1M", f"seek={seek}",
                        "conv=notrunc,fsync", "status=none"], check=True)
    # the pull daemon is killed mid-pull: the rerun starts it again and the attachment reconnects
    for pid in _pull_pids(lab):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    rerun = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, wait=False)
    assert not rerun.get("failed") and "restart the pull of volume db" in rerun["actions"], rerun
    with open(path, "rb") as handle:
        handle.seek(900 * MIB)
        assert handle.read(8 * MIB) == written, "the writes made before the kill are kept"

    # run to the end (the rest of the data at the same 1 MiB/s)
    done = _wait_success(lab, deadline=240)
    volume = done["volume"]
    assert volume["host"] == DST_POOL and volume["status"] == "in-use" and volume["format"] == "qcow2", volume
    assert not os.path.exists(source_image), "the source is released after the pull"
    with open(path, "rb") as handle:
        handle.seek(MIB)
        assert handle.read(8 * MIB) == written
        handle.seek(900 * MIB)
        assert handle.read(8 * MIB) == written
        handle.seek(512 * MIB)
        assert handle.read(64 * MIB) == data, "the source's data was pulled"
    detached = run(lab, "volume", name="db", state="detached")
    assert detached["changed"] and detached["volume"]["status"] == "available", detached
    assert _mounts_under(lab["base"]) == [str(lab["base"] / "ext4"), str(lab["base"] / "xfs")]
    assert _processes_under(lab["base"]) == []
    final = run(lab, "volume_info", name="db")["volumes"][0]
    info = subprocess.run(["qemu-img", "info", final["path"]], check=True, capture_output=True, text=True).stdout
    assert "backing file" not in info
    expected = bytearray(1024 * MIB)
    expected[512 * MIB:576 * MIB] = data
    expected[MIB:9 * MIB] = written
    expected[900 * MIB:908 * MIB] = written
    out = lab["work"] / "final.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", final["path"], str(out)], check=True)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_async_migration_without_writer_is_compared_and_cancel_keeps_the_source(lab):
    source_image, data = _make_volume(lab)
    before = hashlib.sha256(Path(source_image).read_bytes()).hexdigest()
    result = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, wait=False,
                 rate_limit=2 * MIB)
    assert result["volume"]["migration_status"] == "migrating_attachable", result
    attached = run(lab, "volume", name="db", state="attached")
    path = attached["attachment"]["path"]
    with open(path, "r+b") as handle:
        handle.seek(512 * MIB)
        handle.write(b"x" * MIB)
    cancelled = run(lab, "volume_migrate", volume="db", state="cancelled")
    assert cancelled["changed"] and cancelled["volume"]["status"] == "available", cancelled
    assert cancelled["volume"]["host"] == SRC_POOL and cancelled["volume"]["migration_status"] == "error"
    assert hashlib.sha256(Path(source_image).read_bytes()).hexdigest() == before, "the source is unchanged"
    assert _mounts_under(lab["base"]) == [str(lab["base"] / "ext4"), str(lab["base"] / "xfs")]
    assert _processes_under(lab["base"]) == []
    assert not list((lab["base"] / "xfs" / "x1").glob("*volume-*")), "no partial destination left"

    # again, without attaching: the pull is verified with a full compare, then the source released
    result = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True)
    assert not result.get("failed"), result
    assert result["volume"]["migration_status"] == "success" and result["migration"]["verified"] == "compare", result
    assert not os.path.exists(source_image)
    assert _processes_under(lab["base"]) == []
    final = run(lab, "volume_info", name="db")["volumes"][0]["path"]
    assert _read_region(final, "qcow2", 512 * MIB, 64 * MIB) == data, "the pulled data is the source's"


def test_a_waiting_run_sees_the_end_of_the_pull_at_once(lab):
    """With wait, the run asks the pull daemon whether its job ended between its wait_sleep polls: a pull
    of about 4 s (64 MiB of data at 16 MiB/s; the holes are not pulled) with wait_sleep 10 ends in far
    less than 10 s (it took at least 10 s when the run slept a whole poll)."""
    source_image, data = _make_volume(lab)
    started = time.monotonic()
    done = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, rate_limit=16 * MIB,
               wait_sleep=10)
    took = time.monotonic() - started
    assert not done.get("failed"), done
    assert done["volume"]["migration_status"] == "success" and done["migration"]["verified"] == "compare", done
    assert took < 8, took
    # the pull's own seconds (about 4 s at that rate) and the compare's, each within the run's
    assert 2.5 < done["migration"]["copy_seconds"] < took, done["migration"]
    assert 0 <= done["migration"]["verify_seconds"] < took - done["migration"]["copy_seconds"], done["migration"]
    assert not os.path.exists(source_image)
    final = run(lab, "volume_info", name="db")["volumes"][0]["path"]
    assert _read_region(final, "qcow2", 512 * MIB, 64 * MIB) == data


def test_a_volume_with_a_hole_larger_than_2_gib_migrates_asynchronously(lab):
    """The source's holes are marked as zero clusters in the destination before the pull; one hole of
    about 5 GiB (a large volume with little data, as most new volumes are) is marked as well: qemu-io
    refuses a zero write above 2 GiB unless it is told not to fall back to writing zeros."""
    created = run(lab, "volume", name="db", size=6, pool=SRC_POOL)
    assert created["changed"], created
    source_image = run(lab, "volume_info", name="db")["volumes"][0]["path"]
    head, tail = os.urandom(MIB), os.urandom(8 * MIB)
    with open(source_image, "r+b") as handle:
        handle.write(head)
        handle.seek(5 * 1024 * MIB + 512 * MIB)
        handle.write(tail)
    started = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, wait=False)
    assert not started.get("failed"), started
    assert started["volume"]["migration_status"] == "migrating_attachable", started
    done = _wait_success(lab)
    assert done["volume"]["host"] == DST_POOL and done["migration"]["verified"] == "compare", done
    assert not os.path.exists(source_image)
    final = run(lab, "volume_info", name="db")["volumes"][0]["path"]
    assert _read_region(final, "qcow2", 0, MIB) == head
    assert _read_region(final, "qcow2", 5 * 1024 * MIB + 512 * MIB, 8 * MIB) == tail
    assert _read_region(final, "qcow2", 3 * 1024 * MIB, MIB) == bytes(MIB), "the hole reads zeros"
    # the hole stayed a hole: the destination holds about the data, not 6 GiB
    assert os.stat(final).st_blocks * 512 < 256 * MIB


def test_async_migration_bad_requests_change_nothing(lab):
    _make_volume(lab)
    refused = run(lab, "volume_migrate", volume="db", host=DST_POOL, async_migration=True, lock_volume=True)
    assert refused["failed"] and "lock_volume" in refused["msg"], refused
    assert run(lab, "volume_info", name="db")["volumes"][0]["migration_status"] is None
