"""btrfs migrations between two storage hosts of the ssh lab with the data going DIRECT from one
host to the other (``data_path: direct``, the default): ``btrfs send`` on stora piped into ``ssh
storb btrfs receive`` run on stora. As root (tests/integration/sshlab).

* the operator's agent forwarded to stora for the stream (the lab's agent holds a key the
  controller's own connections never use: storb's sshd log shows it accepted), phase 1 with a
  snapshot, an increment, the switchover; the controller process read far fewer bytes than were
  sent (the kernel's ``rchar`` of the module process), the result, record and progress say direct;
* ``data_path: controller`` when asked: relayed, the controller read every byte;
* a host key mismatch (another machine answers at storb's direct address) and a refused key: an
  error naming both hosts and the cause, nothing changed on either host;
* the sending side killed in the middle of a direct stream (the helper on stora dies after
  passing on half of it): the partial receive on storb is cleaned up, a rerun converges and the
  trees compare equal entry by entry (made on each host's own disk);
* the controller killed (SIGKILL) while a direct stream runs: reruns converge, trees equal.

Run these with their own addresses while another lab runs: SSHLAB_ADDRESSES=127.0.0.21,127.0.0.22,127.0.0.23.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sshlab
from sshlab import MODULES, collections_tree, is_root, module_result, run_module
from sshlab.demo import MANIFEST
from test_ssh_storage import FLAGS, close_masters, fill, ok, rerun_phase1

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices")

ssh_lab = sshlab.ssh_lab

# Runs a module as Ansible does, then writes the kernel's I/O counters of this (the controller's)
# process: rchar counts every byte it read, from files, pipes and sockets.
IO_PROBE = ("import atexit, runpy, sys\n"
            "out = sys.argv.pop(1)\n"
            "atexit.register(lambda: open(out, 'w').write(open('/proc/self/io').read()))\n"
            "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n")
MIB = 1024 * 1024


def direct_folders(lab) -> set[str]:
    """The private known_hosts folders of direct streams to this lab's hosts: /tmp/mobility-direct-*
    holding one of their host keys. The lab hosts share this machine's /tmp, and the labs of other
    lanes make and remove such folders at the same time."""
    keys = {Path(f"{host.host_key}.pub").read_text(encoding="utf-8").split()[1] for host in lab.hosts.values()}
    found = set()
    for folder in glob.glob("/tmp/mobility-direct-*"):
        try:
            held = Path(folder, "known_hosts").read_text(encoding="utf-8").split()
        except OSError:
            continue  # another run's, being made or removed
        if keys.intersection(held):
            found.add(folder)
    return found


@pytest.fixture
def lab(ssh_lab):  # pylint: disable=redefined-outer-name
    before = direct_folders(ssh_lab)
    yield ssh_lab
    assert direct_folders(ssh_lab) == before, "a direct stream left its known_hosts folder"


def measured(lab, name: str, params: dict, env: dict | None = None) -> tuple[dict, int]:
    """Run module ``name``; its result and the bytes the controller's process read (rchar)."""
    args = lab.base / f"args-{name}-{time.monotonic_ns()}.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}), encoding="utf-8")
    counters = lab.base / f"io-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-B", "-c", IO_PROBE, str(counters), f"{MODULES}.{name}", str(args)],
                            env=dict(os.environ, PYTHONPATH=collections_tree(), **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = module_result(proc)
    io = dict(line.split(": ", 1) for line in counters.read_text().splitlines())
    return result, int(io["rchar"])


def manifest(lab, host: str, path: str) -> str:
    return lab.ssh(host, ["sh", "-c", MANIFEST, "sh", path]).stdout


def subvolumes(lab, host: str, path: str) -> str:
    return lab.ssh(host, ["btrfs", "subvolume", "list", "-o", path]).stdout


def accepted(lab, host: str, key) -> int:
    """How many logins with ``key`` the sshd of ``host`` accepted so far."""
    log = (lab.hosts[host].folder / "sshd.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "Accepted publickey" in line and lab.fingerprint(key) in line)


def stora_pool(lab) -> str:
    return str(lab.hosts["stora"].mounts["btrfs"] / "one")


def test_direct_with_the_forwarded_agent_never_passes_the_data_through_the_controller(lab):
    backends = [lab.btrfs_backend("stora", direct_key_file=None), lab.btrfs_backend("storb")]
    env = lab.agent_env()
    created = ok(run_module("share", {"backends": backends, "name": "dd1", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    fill(lab, "stora", source, 16)
    ok(run_module("share_snapshot", {"backends": backends, "share": "dd1", "name": "s1"}, lab.base))
    logins = accepted(lab, "storb", lab.agent_key)
    params = dict(backends=backends, share="dd1", destination_pool="storb@bb#two", state="started", **FLAGS)
    started, read = measured(lab, "share_migration", params, env)
    ok(started)
    mig = started["share"]["migration"]
    assert mig["btrfs"]["data_path"] == "direct"
    assert mig["btrfs"]["route"].startswith("direct from stora to storb: btrfs send on stora piped into ssh to storb "
                                            "(logging in with the operator's ssh agent forwarded to stora")
    progress = started["share"]["progress"]
    assert progress["route"] == mig["btrfs"]["route"]
    # The snapshot and the share went (two sends of the 16 MiB file's data at least once)...
    assert progress["bytes_sent"] > 16 * MIB
    # ...but not through the controller, which read less than one copy of it in all.
    print(f"direct: the controller read {read} bytes, {progress['bytes_sent']} were sent")
    assert read < 16 * MIB, f"the controller read {read} bytes"
    # stora logged in to storb with the forwarded agent's key (the controller never uses that key).
    assert accepted(lab, "storb", lab.agent_key) > logins
    # Users keep writing; the rerun sends an increment, direct again; then the switchover.
    lab.ssh("stora", ["sh", "-c", 'echo later > "$1/later"', "sh", source])
    again, read = measured(lab, "share_migration", params, env)
    assert ok(again)["changed"] is True and read < 16 * MIB
    expected = manifest(lab, "stora", source)
    done, read = measured(lab, "share_migration", {"backends": backends, "share": "dd1", "state": "completed"}, env)
    assert ok(done)["task_state"] == "migration_success" and read < 16 * MIB
    assert done["share"]["migration"]["btrfs"]["data_path"] == "direct"
    path = done["share"]["export_location"]
    assert path.startswith(lab.pools("storb")["two"] + "/")
    assert manifest(lab, "storb", path) == expected and expected.strip()
    assert "snapshots/dd1/s1" in subvolumes(lab, "storb", lab.pools("storb")["two"])
    assert subvolumes(lab, "stora", stora_pool(lab)) == ""


def test_the_controller_relays_the_data_only_when_asked(lab):
    backends = [lab.btrfs_backend("stora", data_path="controller"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "dd2", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    fill(lab, "stora", source, 16)
    params = dict(backends=backends, share="dd2", destination_pool="storb@bb#two", state="started", **FLAGS)
    started, read = measured(lab, "share_migration", params)
    mig = ok(started)["share"]["migration"]
    assert mig["btrfs"]["data_path"] == "controller"
    assert mig["btrfs"]["route"].startswith("relayed by the controller: btrfs send on stora, btrfs receive on storb")
    assert started["share"]["progress"]["route"] == mig["btrfs"]["route"]
    # The measure itself: relayed, every byte passed through the controller's process.
    print(f"relayed: the controller read {read} bytes, {started['share']['progress']['bytes_sent']} were sent")
    assert read > started["share"]["progress"]["bytes_sent"] > 16 * MIB
    expected = manifest(lab, "stora", source)
    done = ok(run_module("share_migration", {"backends": backends, "share": "dd2", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    assert manifest(lab, "storb", done["share"]["export_location"]) == expected


def test_a_direct_stream_that_cannot_log_in_is_refused_naming_both_hosts_and_changes_nothing(lab):
    plain = [lab.btrfs_backend("stora"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": plain, "name": "dd3", "pool": "stora@ab#one", "size": 1}, lab.base))
    fill(lab, "stora", created["share"]["export_location"], 1)
    before = ok(run_module("share_info", {"backends": plain, "name": "dd3"}, lab.base))["shares"][0]
    cases = [
        # Another machine (datac) answers at the address stora is told to reach storb at.
        ([lab.btrfs_backend("stora"), lab.btrfs_backend("storb", direct_address=lab.hosts["datac"].address)],
         "host key mismatch: the host key differs from the one in the controller's known_hosts entry for storb"),
        ([lab.btrfs_backend("stora", direct_key_file=str(lab.wrong_key)), lab.btrfs_backend("storb")],
         f"authentication refused (wrong or unauthorised key {lab.wrong_key} on stora for user root)"),
    ]
    for backends, reason in cases:
        params = dict(backends=backends, share="dd3", destination_pool="storb@bb#two", state="started", **FLAGS)
        failed = run_module("share_migration", params, lab.base)
        assert failed.get("failed"), failed
        assert "directly from storage host stora to storage host storb" in failed["msg"], failed["msg"]
        assert reason in failed["msg"], failed["msg"]
        # Nothing changed: nothing of the share on storb, no staging folder on either host.
        assert "dd3" not in subvolumes(lab, "storb", lab.pools("storb")["two"])
        for host, pool in (("storb", lab.pools("storb")["two"]), ("stora", stora_pool(lab))):
            assert lab.ssh(host, ["ls", "-A", pool + "/.mobility/btrfs"], check=False).stdout.strip() == ""
    # ...and the share's record is as it was on stora.
    assert ok(run_module("share_info", {"backends": plain, "name": "dd3"}, lab.base))["shares"][0] == before
    ok(run_module("share", {"backends": plain, "name": "dd3", "state": "absent"}, lab.base))


def test_the_send_killed_midway_then_a_rerun_converges_and_the_trees_compare_equal(lab):
    backends = [lab.btrfs_backend("stora"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "dd5", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    fill(lab, "stora", source, 8)
    ok(run_module("share_snapshot", {"backends": backends, "share": "dd5", "name": "s1"}, lab.base))
    params = dict(backends=backends, share="dd5", destination_pool="storb@bb#two", state="started", **FLAGS)
    # The helper on stora, which runs ``btrfs send | ssh storb btrfs receive``, dies after passing
    # on half of the first stream: storb's receive is cut in the middle.
    proc = sshlab.module_process("share_migration", params, lab.base, env={"STORAGE_MOBILITY_CRASH_AFTER": "btrfs sending *"})
    cut = module_result(proc)
    assert cut.get("failed") and "stora" in cut["msg"], cut
    assert "connection lost" in cut["msg"] or "helper process on the host ended" in cut["msg"], cut["msg"]
    # The failed phase 1 was undone: the half-received subvolume and the reserved instance are gone from storb.
    assert "dd5" not in subvolumes(lab, "storb", lab.pools("storb")["two"])
    started = rerun_phase1(params, lab.base)
    assert ok(started)["share"]["task_state"] == "migration_driver_phase1_done"
    assert started["share"]["migration"]["btrfs"]["data_path"] == "direct"
    expected = manifest(lab, "stora", source)
    done = ok(run_module("share_migration", {"backends": backends, "share": "dd5", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    assert manifest(lab, "storb", done["share"]["export_location"]) == expected and expected.strip()
    two = lab.pools("storb")["two"]
    assert manifest(lab, "storb", two + "/snapshots/dd5/s1") == manifest(lab, "storb", done["share"]["export_location"])
    listing = subvolumes(lab, "storb", two)
    assert "inc-" not in listing and "final" not in listing
    assert subvolumes(lab, "stora", stora_pool(lab)) == ""


def receiving(prefix: str) -> bool:
    """True while a ``btrfs receive`` into a folder below ``prefix`` runs (on any lab host)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") if a]
        except OSError:
            continue
        if argv[:2] == ["btrfs", "receive"] and any(a.startswith(prefix) for a in argv[2:]):
            return True
    return False


def test_the_controller_killed_during_a_direct_stream_then_reruns_converge(lab):
    backends = [lab.btrfs_backend("stora"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "dd6", "pool": "stora@ab#one", "size": 1}, lab.base))
    source = created["share"]["export_location"]
    fill(lab, "stora", source, 48)
    params = dict(backends=backends, share="dd6", destination_pool="storb@bb#two", state="started", **FLAGS)
    two = lab.pools("storb")["two"]
    folders = direct_folders(lab)
    proc = sshlab.module_process("share_migration", params, lab.base)
    deadline = time.monotonic() + 120
    while not receiving(two) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    hit = receiving(two)
    proc.kill()  # the controller, in the middle of the stream it does not carry
    proc.communicate()
    assert hit, "the direct stream was not seen running"
    close_masters(lab)  # what the killed controller could not close
    started = rerun_phase1(params, lab.base)
    # The killed run's private known_hosts folder stays (public keys only, mode 0700): removed here.
    for folder in direct_folders(lab) - folders:
        assert os.stat(folder).st_mode & 0o777 == 0o700
        lines = open(os.path.join(folder, "known_hosts"), encoding="utf-8").read().split()
        assert lines[0] == "mobility-destination" and lines[1] == "ssh-ed25519"
        shutil.rmtree(folder)
    assert ok(started)["share"]["task_state"] == "migration_driver_phase1_done"
    expected = manifest(lab, "stora", source)
    done = ok(run_module("share_migration", {"backends": backends, "share": "dd6", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    assert manifest(lab, "storb", done["share"]["export_location"]) == expected and expected.strip()
    assert not receiving(two)
    assert subvolumes(lab, "stora", stora_pool(lab)) == ""
