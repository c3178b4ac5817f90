"""No failure leaves a share stuck: full pools, the longest names, immutable files (issue "Data safety:
six ways a migration loses data or gets stuck", cases 4, 5 and 6, and a lock file per unknown name).

Through the operator's playbooks (hostmig_lab.py: an ext4 and an xfs pool on loop devices, bind
exports, as root) and, for btrfs, the driver-assisted path between two btrfs filesystems
(btrfs_lab.py). Each test failed on the code before the fix:

* a share larger than the free space of its xfs destination: the copy fails with ENOSPC; the share
  must end available, writable again, the error recorded, nothing left in the full pool, and a
  cancel and a rerun converge (before: stuck read-only in data_copying_in_progress, every rerun
  and cancel failing while creating a trash folder in the full pool);
* the longest accepted share name (250 bytes) created, snapshotted, migrated, switched and deleted,
  and one byte more refused with nothing created (before: 237 bytes migrated and then stuck in
  migration_completing, longer names left lock files behind);
* immutable and append-only files migrate with their attributes and the old instance is deleted
  (before: stuck in migration_completing on EPERM, attributes lost);
* a request naming an unknown share leaves no lock file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from btrfs_lab import BETA as BTRFS_BETA
from btrfs_lab import BtrfsLab, digest, fill
from hostmig_lab import ALPHA, BETA, Lab, can_write, opened_lab, tree_tool

pytestmark = pytest.mark.integration

LONGEST = 250  # plugins/module_utils/names.py SHARE_NAME_MAX


def needs_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {what}")


@pytest.fixture
def lab(tmp_path, collections_path):
    with opened_lab(tmp_path, collections_path) as the_lab:
        yield the_lab


def files_below(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def assert_nothing_left(pool: Path, before: list[str]) -> None:
    """Nothing of the failed copy left in the pool: at most the pool's own empty folders."""
    new = sorted(set(files_below(pool)) - set(before))
    assert set(new) <= {"shares", ".mobility/trash"}, f"the failed copy left {new} in {pool}"
    assert all(not os.listdir(pool / rel) for rel in new), f"not empty: {new}"


def lsattr(path: Path) -> str:
    return subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def assert_available_and_writable(lab: Lab, share: str) -> dict:
    record = lab.record(share)
    assert record["status"] == "available", record["status"]
    assert [(i["pool"], i["status"]) for i in record["instances"]] == [(ALPHA, "available")]
    assert record["migration"]["source_read_only"] is False
    writable, why = can_write(lab.export_path(share))
    assert writable, f"the export of {share} is not writable again: {why}"
    return record


# ---------------------------------------------------------------------------------------- case 4


def test_a_share_larger_than_its_destination_pool_ends_available_and_converges(lab):
    needs_root("an xfs destination pool on a loop device that fills up")
    lab.create_shares("big")
    before = lab.fill_plain("big", files=20, big_mb=120)
    beta = lab.pools["beta"]
    free = os.statvfs(beta).f_bavail * os.statvfs(beta).f_frsize
    filler = beta / "filler.bin"  # leaves 48 MiB free: the 120 MiB share cannot fit
    subprocess.run(["fallocate", "-l", str(free - 48 * (1 << 20)), str(filler)], check=True)
    # No reserve for metadata either (xfs keeps a few MiB by default, a small pool hardly any):
    # once the copy has filled the pool, even creating a folder in it fails with ENOSPC.
    subprocess.run(["xfs_io", "-x", "-c", "resblks 0", str(beta)], check=True, capture_output=True)
    beta_before = files_below(beta)

    run = lab.migrate("big")
    assert run.rc != 0, run
    assert "No space left on device" in run.out, run
    record = assert_available_and_writable(lab, "big")
    assert record["task_state"] == "data_copying_error"
    assert "No space left on device" in record["migration"]["error"]
    assert record.get("cleanup_pending") == [], record.get("cleanup_pending")
    assert_nothing_left(beta, beta_before)
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("big"))))["equal"]
    mig = record["migration"]["id"]

    # A cancel converges (nothing left to cancel) and changes nothing.
    run = lab.cancel("big")
    assert run.rc == 0, run
    assert lab.record("big")["task_state"] == "data_copying_error"
    # A rerun fails the same way and ends the same way: never stuck.
    run = lab.migrate("big")
    assert run.rc != 0 and "No space left on device" in run.out, run
    record = assert_available_and_writable(lab, "big")
    assert record["task_state"] == "data_copying_error" and record["migration"]["id"] != mig
    assert_nothing_left(beta, beta_before)

    # With room in the pool the same playbooks finish the job.
    filler.unlink()
    assert lab.migrate("big").rc == 0
    assert lab.complete("big").rc == 0
    record = lab.record("big")
    assert record["task_state"] == "migration_success" and record.get("cleanup_pending") == []
    assert not lab.share_path("big", "alpha").exists()
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.export_path("big"))))["equal"]


# ---------------------------------------------------------------------------------------- case 5


def test_the_longest_share_name_works_end_to_end_and_one_byte_more_is_refused(lab):
    name = "long-" + "n" * (LONGEST - 5)
    assert len(name.encode()) == LONGEST
    watched = [lab.pools["alpha"], lab.pools["beta"], lab.exports]
    lab.create_shares(name)
    before = lab.fill(name, files=40, size_mb=1)
    snap = lab.module("share_snapshot", {"share": name, "name": "before-move"})
    assert snap["changed"] is True and Path(snap["snapshot"]["path"]).is_dir()
    assert lab.module("share_snapshot", {"share": name, "name": "before-move", "state": "absent"})["changed"] is True

    assert lab.migrate(name).rc == 0
    assert lab.complete(name).rc == 0
    record = lab.record(name)
    assert record["task_state"] == "migration_success" and record.get("cleanup_pending") == []
    assert not lab.share_path(name, "alpha").exists()
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.export_path(name))))["equal"]

    gone = lab.module("share", {"name": name, "state": "absent"})
    assert gone["changed"] is True
    assert not lab.records(name)
    leftovers = [p for root in watched for p in files_below(root) if name in p]
    assert leftovers == [], leftovers

    listing = dict((str(root), files_below(root)) for root in watched)
    refused = lab.module("share", {"name": name + "n", "pool": ALPHA, "size": 1}, check=False)
    assert refused.get("failed") is True
    assert "is 251 bytes long, more than the limit of 250 bytes for a share name" in refused["msg"]
    assert dict((str(root), files_below(root)) for root in watched) == listing, "the refusal created something"


def test_a_request_naming_an_unknown_share_leaves_no_lock_file(lab):
    lab.create_shares("known")
    listing = dict((name, files_below(path)) for name, path in lab.pools.items())
    for state in ("started", "completed", "cancelled"):
        args = {"share": "ghost", "state": state}
        if state == "started":
            args["destination_pool"] = BETA
        result = lab.module("share_migration", args, check=False)
        assert result.get("failed") is True and "Unknown share 'ghost'" in result["msg"], result
    assert dict((name, files_below(path)) for name, path in lab.pools.items()) == listing


# ---------------------------------------------------------------------------------------- case 6


def test_immutable_and_append_only_files_migrate_with_their_attributes(lab):
    needs_root("setting immutable and append-only attributes, loop-mounted ext4 and xfs pools")
    lab.create_shares("frozen")
    src = lab.share_path("frozen")
    before = lab.fill_plain("frozen", files=12)
    (src / "audit").mkdir()
    (src / "audit" / "journal.log").write_text("entry 1\n")
    (src / "contract.pdf").write_bytes(os.urandom(4096))
    (src / "sealed").mkdir()
    (src / "sealed" / "inside.txt").write_text("sealed")
    subprocess.run(["chattr", "+a", str(src / "audit" / "journal.log")], check=True)
    subprocess.run(["chattr", "+i", str(src / "contract.pdf")], check=True)
    subprocess.run(["chattr", "+i", str(src / "sealed")], check=True)
    before = tree_tool.manifest(str(src))

    assert lab.migrate("frozen").rc == 0
    # The destination holds the attributes as soon as phase 1 is done (the final pass must clear
    # and set them again, since the source may change in between).
    with open(src / "audit" / "journal.log", "a") as handle:
        handle.write("entry 2 (appended while in phase 1)\n")
    run = lab.complete("frozen")
    assert run.rc == 0, run
    record = lab.record("frozen")
    assert record["task_state"] == "migration_success"
    assert record.get("cleanup_pending") == [], record.get("cleanup_pending")
    assert not lab.share_path("frozen", "alpha").exists(), "the old instance was not deleted"
    dst = lab.share_path("frozen", "beta")
    assert "a" in lsattr(dst / "audit" / "journal.log")
    assert "i" in lsattr(dst / "contract.pdf") and "i" in lsattr(dst / "sealed")
    assert "i" not in lsattr(dst / "sealed" / "inside.txt")
    assert (dst / "audit" / "journal.log").read_text().endswith("entry 2 (appended while in phase 1)\n")
    after = tree_tool.manifest(str(lab.export_path("frozen")))
    assert set(after) == set(before)
    # So that the teardown can remove the pools' contents
    subprocess.run(["chattr", "-R", "-i", "-a", str(dst)], check=False)


# ---------------------------------------------------------------------------------------- btrfs


@pytest.fixture
def btrfs(tmp_path):
    needs_root("loop-mounted btrfs filesystems and bind mounts")
    the_lab = BtrfsLab(tmp_path / "btrfs")
    the_lab.base.mkdir()
    try:
        yield the_lab.open()
    finally:
        problems = the_lab.close()
    assert not problems, problems


def test_the_longest_share_name_works_end_to_end_with_btrfs(btrfs):
    name = "b" * LONGEST
    btrfs.create_share(name)
    inst = btrfs.instance(name)
    fill(inst, seed=3)
    btrfs.shares().snapshot_present(name, "s1")
    fill(inst, seed=4, files=10)
    expected = digest(inst)
    snap = digest(btrfs.snapshot(name, "s1"))
    rc, res = btrfs.op("start", name, BTRFS_BETA)
    assert rc == 0 and res["task_state"] == "migration_driver_phase1_done", res
    rc, res = btrfs.op("complete", name)
    assert rc == 0 and res["task_state"] == "migration_success", res
    assert digest(btrfs.instance(name, "beta")) == expected
    assert digest(btrfs.snapshot(name, "s1", "beta")) == snap
    assert not btrfs.instance(name).exists() and btrfs.temporary_subvolumes() == []
    btrfs.shares().snapshot_absent(name, "s1")
    assert btrfs.shares().absent(name)["changed"] is True
    leftovers = [p for root in btrfs.pools.values() for p in files_below(root) if name in p]
    assert leftovers == [], leftovers


def test_btrfs_refuses_to_drop_immutable_attributes_and_deletes_flagged_subvolumes(btrfs):
    btrfs.create_share("sealed")
    inst = btrfs.instance("sealed")
    fill(inst, seed=5, files=5)
    (inst / "contract.pdf").write_bytes(b"signed")
    subprocess.run(["chattr", "+i", str(inst / "contract.pdf"), str(inst)], check=True)
    rc, res = btrfs.op("start", "sealed", BTRFS_BETA)
    # btrfs send would lose the attributes and the writable flags rule out a host copy: refused,
    # naming the entries, the share unchanged and available.
    assert rc == 1 and "contract.pdf (immutable)" in res["msg"] and "btrfs send does not carry" in res["msg"], res
    assert btrfs.info("sealed")["status"] == "available" and btrfs.instance("sealed").is_dir()
    assert not btrfs.instance("sealed", "beta").exists()
    # The immutable root folder of the subvolume does not stop the share's deletion.
    assert btrfs.shares().absent("sealed")["changed"] is True
    assert not inst.exists()
