"""A seeded fault-injection campaign: kill the playbook, the module and the copy at random points,
rerun (or cancel and start again) until each migration ends, then check everything.

One test per mechanism, each on pools built once and used for many shares:

* ``host``: host-assisted, an ext4 pool to an xfs pool on loop devices, bind exports, with a
  data node (localhost) copying with the data mover;
* ``posix``: driver-assisted posix, two pools on one ext4 filesystem (a rename);
* ``btrfs``: driver-assisted btrfs, two btrfs filesystems, send/receive, shares with one or two
  snapshots and users writing while phase 1 is done.

Each test takes ``MOBILITY_FAULT_POINTS`` faults that really hit (default 20), drawn from the
seed ``MOBILITY_FAULT_SEED`` (default: a fresh random seed, printed first). Every point and its
result is printed as it runs; a failure names the seed and the points to replay it. What a point
is and what is checked after each share: see fault_campaign.py. Findings are collected for the
whole campaign and reported together, so one failure does not hide the others.

Needs root (loop devices, mounts); skipped with "needs root" otherwise (a failure under CI=true).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fault_campaign import (
    JOB_FOLDERS, Campaign, FaultLab, campaign_seed, cleanup_jobs_dir_locks, lanes_wanted, make_tree, members,
    only_cases, points_wanted, replay_hint, summary, tree_differences, walk)
from hostmig_lab import is_root

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not is_root(), reason="needs root: loop-mounted pools and bind exports")]

# One seed for the whole pytest run, so the three campaigns of a run replay together.
SEED = campaign_seed() if is_root() else 0


class JobFoldersLeftBehind(AssertionError):
    """data_copy job folders (or their lock files) that outlive their migration: the phase playbooks
    remove them when a migration ends."""


@pytest.fixture
def say(capsys):
    """Print a line at once, past pytest's capture: the seed and every point as they run."""
    def _say(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)
    return _say


def _campaign(mechanism: str, tmp_path: Path, collections_path: Path, say) -> None:
    wanted = points_wanted()
    say(f"\n{replay_hint(SEED, mechanism)}")
    only = only_cases(mechanism)
    lab = FaultLab(tmp_path / mechanism, collections_path, mechanism)
    campaign = None
    try:
        lab.open()
        campaign = Campaign(lab, SEED, wanted, say)
        campaign.run(lanes_wanted(), only)
    finally:
        problems = lab.close()
        cleanup_jobs_dir_locks(lab)
        if campaign is not None:
            (tmp_path / f"{mechanism}-campaign.log").write_text("\n".join(campaign.log) + "\n", encoding="utf-8")
    header = (f"{mechanism} fault campaign, seed {SEED}: {campaign.hits} faults hit of {wanted} wanted; "
              f"{replay_hint(SEED, mechanism)}; log {tmp_path / f'{mechanism}-campaign.log'}\n")
    findings = campaign.findings
    others = [f for f in findings if f["kind"] != JOB_FOLDERS]
    if others:
        raise AssertionError(header + f"{len(findings)} findings:\n" + summary(findings))
    assert only is not None or campaign.hits >= wanted, header
    assert not problems, f"cleaning up the lab: {problems}"
    if findings:
        raise JobFoldersLeftBehind(header + summary(findings))


def test_host_assisted_fault_campaign(tmp_path, collections_path, say):
    _campaign("host", tmp_path, collections_path, say)


def test_posix_rename_fault_campaign(tmp_path, collections_path, say):
    _campaign("posix", tmp_path, collections_path, say)


def test_btrfs_fault_campaign(tmp_path, collections_path, say):
    _campaign("btrfs", tmp_path, collections_path, say)


def test_a_session_id_given_to_a_later_process_is_not_the_killed_runs():
    """Killing a run goes on until none of its sessions has a process left. A session whose last
    process is gone gives its id to the next new process (a copy worker of another lane, say): that
    process is not the run's. Table rows are (state, ppid, session, start time)."""
    table = {100: ("S", 1, 100, 5000), 101: ("S", 100, 100, 5001),  # a worker session of the run
             200: ("S", 1, 200, 6000), 201: ("S", 200, 200, 6001),  # 200 was reused after the kill
             301: ("S", 1, 300, 4000), 302: ("Z", 1, 300, 4000)}  # leader 300 gone, one member left
    sessions = {100, 200, 300}
    assert members(table, sessions) == [100, 101, 200, 201, 301]
    assert members(table, sessions, {100: 5000, 200: 1000}) == [100, 101, 301]
    assert members(table, sessions, {100: 5000}) == [100, 101, 301]  # 200 had no process at the kill


def test_the_campaign_walk_sees_every_difference_that_matters(tmp_path):
    """The comparison the campaign relies on is not blind: an exact copy compares equal, and each
    kind of damage a migration could do is named (same size and mtime kept where that matters)."""
    tree = tmp_path / "tree"
    make_tree(tree, seed=1)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", "--sparse=always", str(tree), str(copy)], check=True)
    assert tree_differences(walk(tree), walk(copy), limit=100) == []

    def keep_times(path: Path, change) -> None:
        st = os.lstat(path)
        change(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def flip(path: Path) -> None:
        with open(path, "r+b") as handle:
            byte = handle.read(1)
            handle.seek(0)
            handle.write(bytes([byte[0] ^ 0xFF]))

    def fill_holes(path: Path) -> None:
        data = path.read_bytes()
        with open(path, "r+b") as handle:
            handle.write(data)  # the same bytes, but every block allocated

    def break_link(path: Path) -> None:
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
        os.setxattr(path, "user.mobility", b"kept")
        subprocess.run(["setfacl", "-m", "u:12345:rw,g:2345:r", str(path)], check=True)

    extras = copy / "extras"
    victim = sorted((copy / "d00").glob("sub*/f*.dat"), key=lambda p: -p.stat().st_size)[0]
    keep_times(victim, flip)
    keep_times(extras / "sparse.img", fill_holes)
    keep_times(extras / "hard-b", break_link)
    keep_times(extras / os.fsdecode(b"with space"), lambda p: os.removexattr(p, "user.binary"))
    keep_times(copy / "d05", lambda p: subprocess.run(["setfacl", "-k", str(p)], check=True))
    keep_times(extras / "link-relative",
               lambda p: (p.unlink(), p.symlink_to("hard-b"), os.lchown(p, 4242, 4343)))
    (extras / "empty-file").chmod(0o600)
    os.lchown(extras / os.fsdecode(b"new\nline"), 0, 0)
    os.utime(extras / "empty", ns=(1, 2))
    (extras / "fifo").unlink()
    (copy / "d01" / "extra").write_text("not in the source")
    differences = "\n".join(tree_differences(walk(tree), walk(copy), limit=100))
    rel = os.path.relpath(victim, copy).encode()
    for expected in (repr(rel) + " differs in sha256", "b'extras/sparse.img' differs in data_bytes",
                     "hard-link groups differ", "b'extras/with space' differs in xattrs",
                     "b'd05' differs in xattrs", "b'extras/link-relative' differs in target",
                     "b'extras/empty-file' differs in mode", "b'extras/new\\nline' differs in gid",
                     "b'extras/empty' differs in mtime_ns", "missing b'extras/fifo'", "extra b'd01/extra'"):
        assert expected in differences, f"{expected!r} not reported:\n{differences}"
