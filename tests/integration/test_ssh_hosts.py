"""Migrations between two storage hosts of the ssh lab (tests/integration/sshlab), as root.

* btrfs host to host: a share of ``stora@ab#one`` (btrfs on stora) with a snapshot moves to
  ``storb@bb#two`` (btrfs on storb) driver-assisted: phase 1, writes while it stays writable and
  an increment, then the switchover. Each side is read on its own host: the files' sums on storb,
  the received snapshot, no temporary snapshot left on either host, the source gone from stora.
  The result and the record say which way the stream went (direct from stora to storb, the
  default; test_ssh_direct.py proves it does not pass through the controller).
* ``data_path: controller``: the controller killed in the middle of the relayed stream, then
  reruns that converge;
* the ``demo.sh --hosts`` scenario (sshlab/demo.py, with its own lab): its summary and its
  independent check (manifests made on each host's own disk).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sshlab
import test_ssh_storage
from sshlab import is_root, module_process, module_result, run_module
from test_ssh_storage import FLAGS, close_masters, fill, ok, remote_listing, rerun_phase1

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices")

ssh_lab = sshlab.ssh_lab
no_leftovers = test_ssh_storage.no_leftovers


@pytest.fixture
def lab(ssh_lab):  # pylint: disable=redefined-outer-name
    return ssh_lab


def sums_of(lab, host, path, names=("big", "small")):
    return lab.ssh(host, ["sh", "-c", 'cd "$1" && shift && sha256sum "$@"', "sh", path, *names]).stdout


def subvolumes(lab, host, path) -> str:
    return lab.ssh(host, ["btrfs", "subvolume", "list", "-o", path]).stdout


def test_btrfs_host_to_host_with_a_snapshot_and_an_increment(lab, no_leftovers):  # pylint: disable=redefined-outer-name
    backends = [lab.btrfs_backend("stora"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "hh1", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    assert source.startswith(lab.hosts["stora"].mounts["btrfs"].as_posix() + "/one/")
    fill(lab, "stora", source, 8)
    ok(run_module("share_snapshot", {"backends": backends, "share": "hh1", "name": "s1"}, lab.base))
    params = dict(backends=backends, share="hh1", destination_pool="storb@bb#two", state="started", **FLAGS)
    started = ok(run_module("share_migration", params, lab.base))
    assert started["share"]["task_state"] == "migration_driver_phase1_done"
    assert started["share"]["migration"]["mechanism"] == "driver"
    assert started["share"]["migration"]["btrfs"]["route"].startswith("direct from stora to storb")
    # Users keep writing on stora; a rerun of phase 1 sends an increment to storb.
    lab.ssh("stora", ["sh", "-c", 'echo later > "$1/later"', "sh", source])
    again = ok(run_module("share_migration", params, lab.base))
    assert again["changed"] is True
    staging = lab.pools("storb")["two"] + "/.mobility/btrfs"
    assert any("inc-" in line for line in subvolumes(lab, "storb", lab.pools("storb")["two"]).splitlines()), \
        "no increment arrived on storb"
    expected = sums_of(lab, "stora", source, ("big", "small", "later"))
    done = ok(run_module("share_migration", {"backends": backends, "share": "hh1", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    path = done["share"]["export_location"]
    assert path.startswith(lab.pools("storb")["two"] + "/")
    # Read on storb's own disk: the files, and the snapshot received as a snapshot.
    assert sums_of(lab, "storb", path, ("big", "small", "later")) == expected
    listing = subvolumes(lab, "storb", lab.pools("storb")["two"])
    assert "snapshots/hh1/s1" in listing
    assert lab.ssh("storb", ["cat", lab.pools("storb")["two"] + "/snapshots/hh1/s1/small"]).stdout == "small\n"
    # Nothing left behind: the source and its snapshots gone from stora, no temporary snapshot on either host.
    stora_pool = str(lab.hosts["stora"].mounts["btrfs"] / "one")
    assert subvolumes(lab, "stora", stora_pool) == ""
    assert "inc-" not in listing and "final" not in listing
    assert remote_listing(lab, "storb", staging) == [] and remote_listing(lab, "stora", stora_pool + "/.mobility/btrfs") == []
    info = ok(run_module("share_info", {"backends": backends, "name": "hh1"}, lab.base))
    assert info["shares"][0]["host"] == "storb@bb#two"


def test_controller_killed_in_the_middle_of_the_relayed_stream_then_reruns_converge(lab):
    backends = [lab.btrfs_backend("stora", data_path="controller"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "hh2", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    expected = fill(lab, "stora", source, 16)
    params = dict(backends=backends, share="hh2", destination_pool="storb@bb#two", state="started", **FLAGS)
    proc = module_process("share_migration", params, lab.base, env={"STORAGE_MOBILITY_CRASH_AFTER": "btrfs sending *"})
    result = module_result(proc)
    assert result.get("failed") and proc.returncode == 70, result
    close_masters(lab)  # what the killed controller could not close
    # The receive that was cut left a partial subvolume on storb; reruns converge anyway.
    started = rerun_phase1(params, lab.base)
    assert ok(started)["share"]["task_state"] == "migration_driver_phase1_done"
    done = ok(run_module("share_migration", {"backends": backends, "share": "hh2", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    assert sums_of(lab, "storb", done["share"]["export_location"]) == expected
    assert subvolumes(lab, "stora", str(lab.hosts["stora"].mounts["btrfs"] / "one")) == ""


def test_the_hosts_demo_moves_a_share_between_hosts_and_checks_it_on_each_host(tmp_path):
    """``scripts/demo.sh --hosts`` after its setup step: the same command line (its own lab): a share
    through the data node datac, then a btrfs share from host to host."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "tests" / "integration"), sshlab.collections_tree()]))
    proc = subprocess.run([sys.executable, "-m", "sshlab.demo", "--files", "40", "--size-mb", "4"], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    # Through the data node datac, with the phase playbooks and inventories/lab.
    assert "task_state migration_success: demo-dn now on storb@pb#ext4" in proc.stdout
    assert ("route       : data node datac: sshfs from stora, sshfs to storb; the data does not pass through the "
            "controller") in proc.stdout
    assert "complete_share_migration  : read-only   : " in proc.stdout
    # btrfs from host to host.
    assert "task_state migration_success: demo-hosts now on storb@bb#two" in proc.stdout
    assert "data path    : direct from stora to storb: btrfs send on stora piped into ssh to storb" in proc.stdout
    assert "read-only for: ?" not in proc.stdout
    # Both checked on each host's own disk, both sources gone.
    assert proc.stdout.count("independent check: identical") == 2
    assert proc.stdout.count("source on stora after the switch: gone") == 2


def test_a_cancelled_host_to_host_migration_leaves_storb_clean_and_stora_writable(lab, no_leftovers):  # pylint: disable=redefined-outer-name
    backends = [lab.btrfs_backend("stora"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "hh3", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    expected = fill(lab, "stora", source, 2)
    ok(run_module("share_snapshot", {"backends": backends, "share": "hh3", "name": "s1"}, lab.base))
    params = dict(backends=backends, share="hh3", destination_pool="storb@bb#two", state="started", **FLAGS)
    assert ok(run_module("share_migration", params, lab.base))["share"]["task_state"] == "migration_driver_phase1_done"
    two = lab.pools("storb")["two"]
    assert "hh3" in subvolumes(lab, "storb", two)
    cancelled = ok(run_module("share_migration", {"backends": backends, "share": "hh3", "state": "cancelled"}, lab.base))
    assert cancelled["task_state"] == "migration_cancelled"
    # What arrived on storb is gone (received snapshot, temporary snapshots, reserved instance).
    assert "hh3" not in subvolumes(lab, "storb", two)
    # The source on stora is whole and writable, its snapshot kept, no temporary snapshot left.
    stora_pool = str(lab.hosts["stora"].mounts["btrfs"] / "one")
    assert sums_of(lab, "stora", source) == expected
    lab.ssh("stora", ["sh", "-c", 'echo again > "$1/again"', "sh", source])
    listing = subvolumes(lab, "stora", stora_pool)
    assert "snapshots/hh3/s1" in listing and "inc-" not in listing
    ok(run_module("share_snapshot", {"backends": backends, "share": "hh3", "name": "s1", "state": "absent"}, lab.base))
    ok(run_module("share", {"backends": backends, "name": "hh3", "state": "absent"}, lab.base))
