"""Host-assisted migrations between two storage hosts of the ssh lab (tests/integration/sshlab), as root.

A posix share goes from stora (``stora@pa#ext4``) to storb (``storb@pb#ext4``) with the phase
playbooks (migrate_share.yml, complete_share_migration.yml) and the lab's inventory
(inventories/lab), whose data node datac is reached with Ansible's own ssh connection:

* through datac, a third machine: it mounts both sides with sshfs, copies, carries what SFTP
  cannot (nanosecond times, xattrs, hard links) and verifies each side on its own host;
* with the source host stora as the data node (``-e data_node=stora``): the source is its own disk;
* a verification that reads each side on its host: the data node's view of both trees is a good
  copy (a "mount" that lies), the destination host's disk holds a corrupted file: it fails;
* the destination's sshfs killed in the middle of the copy, then reruns converge.

Each tree is compared entry by entry on each host's own disk (a manifest made there by a script of
this file, independent of the collection's code).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import sshlab
import test_ssh_storage
from sshlab import is_root, run_module
from test_ssh_storage import ok, remote_listing

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices, FUSE")

ssh_lab = sshlab.ssh_lab
no_leftovers = test_ssh_storage.no_leftovers
REPO = Path(__file__).resolve().parents[2]

# Run on a host: the manifest of the tree at argv[1], one entry per path (never following a link):
# type, mode, owner, size, mtime in ns, symlink target, xattrs, sha256, and the hard-link groups.
MANIFEST = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
entries, inodes = {}, {}
for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files) + ([] if folder != root else ['.']):
        full = root if name == '.' else os.path.join(folder, name)
        rel = os.path.relpath(full, root)
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        item = {'type': kind, 'mode': stat.S_IMODE(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid,
                'mtime_ns': st.st_mtime_ns,
                'xattrs': {n: os.getxattr(full, n, follow_symlinks=False).hex()
                           for n in sorted(os.listxattr(full, follow_symlinks=False)) if n.startswith('user.')}}
        if stat.S_ISREG(kind):
            item['size'] = st.st_size
            with open(full, 'rb') as handle:
                item['sha256'] = hashlib.sha256(handle.read()).hexdigest()
            inodes.setdefault(st.st_ino, []).append(rel)
        elif stat.S_ISLNK(kind):
            item['target'] = os.readlink(full)
        entries[rel] = item
links = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
print(json.dumps({'entries': entries, 'links': links}, sort_keys=True))
"""

# Run on stora: a tree with folders, a file with an exact nanosecond time, a hard link, a symlink,
# an xattr, another owner and mode, and some bulk (argv[1]: the share's folder, argv[2]: MiB of bulk).
FILL = r"""
set -e
cd "$1"
mkdir -p docs/deep/er 'with space'
echo hello > docs/a.txt
printf 'x%.0s' $(seq 1 5000) > docs/deep/b.bin
ln docs/a.txt docs/deep/a-hardlink.txt
ln -s ../a.txt docs/deep/a-symlink
echo spaced > 'with space/file $(name)'
setfattr -n user.origin -v stora docs/a.txt
chown 1234:4321 docs/deep/b.bin
chmod 640 docs/deep/b.bin
touch -d '2021-03-04 05:06:07.123456789' docs/deep/er
head -c "$(( $2 * 1048576 ))" /dev/urandom > bulk.bin
touch -h -d '2020-01-02 03:04:05.987654321' docs/deep/a-symlink
"""


@pytest.fixture
def lab(ssh_lab):  # pylint: disable=redefined-outer-name
    return ssh_lab


def backends(lab) -> list[dict]:
    return [lab.posix_backend("stora"), lab.posix_backend("storb")]


def manifest(lab, host: str, path: str) -> dict:
    return json.loads(lab.ssh(host, ["python3", "-c", MANIFEST, path]).stdout)


def create_share(lab, name: str, bulk_mb: int = 1) -> str:
    created = ok(run_module("share", {"backends": backends(lab), "name": name, "pool": "stora@pa#ext4", "size": 1},
                            lab.base))
    path = created["share"]["export_location"]
    lab.ssh("stora", ["sh", "-c", FILL, "sh", path, str(bulk_mb)])
    return path


def inventory_addresses(lab, tmp_path: Path) -> Path:
    """The lab's addresses (SSHLAB_ADDRESSES may move them): an inventory read after inventories/lab."""
    addresses = tmp_path / "addresses.yml"
    addresses.write_text(json.dumps({"all": {"children": {
        "storage_hosts": {"hosts": {n: {"ansible_host": lab.hosts[n].address} for n in ("stora", "storb")}},
        "data_nodes": {"hosts": {"datac": {"ansible_host": lab.hosts["datac"].address}}}}}}))
    return addresses


def playbook_argv(lab, tmp_path: Path, name: str, *extra: str) -> list[str]:
    return ["ansible-playbook", "-i", str(REPO / "inventories" / "lab"), "-i", str(inventory_addresses(lab, tmp_path)),
            str(REPO / "playbooks" / f"{name}.yml"), "-e", f"mobility_lab_dir={lab.base}",
            "-e", f"mobility_lab_port={lab.port}", "-e", "mobility_poll_seconds=1", *extra]


def playbook_env(collections_path: Path) -> dict:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_NOCOLOR="1",
                ANSIBLE_FORCE_COLOR="0")


def playbook(lab, tmp_path: Path, collections_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(playbook_argv(lab, tmp_path, name, *extra), capture_output=True, text=True,
                          env=playbook_env(collections_path), timeout=900, check=False)


def passed(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def share_info(lab, name: str) -> dict:
    return ok(run_module("share_info", {"backends": backends(lab), "name": name}, lab.base))["shares"][0]


def sshfs_mounts(lab, host: str) -> list[str]:
    """The sshfs mounts the lab ``host`` sees (its own mount namespace)."""
    table = lab.hosts[host].nsenter(["cat", "/proc/self/mounts"]).stdout
    return [line for line in table.splitlines() if " fuse.sshfs " in line]


def sshfs_pids(lab, host: str, mount_point_suffix: str) -> list[int]:
    """The sshfs processes on the lab ``host`` whose mount point ends with ``mount_point_suffix``."""
    found = []
    for pid in lab.hosts[host].pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a for a in argv if a]
        if argv and os.path.basename(argv[0]) == b"sshfs" and argv[-1].endswith(mount_point_suffix.encode()):
            found.append(pid)
    return found


def assert_migrated(lab, name: str, before: dict, source_path: str) -> None:
    """migration_success on storb; the tree on storb's disk is the one stora's disk held, entry by
    entry (times to the nanosecond, xattrs, hard links); the source is gone from stora."""
    info = share_info(lab, name)
    assert info["task_state"] == "migration_success", info
    assert info["host"] == "storb@pb#ext4"
    path = info["export_location"]
    assert path.startswith(str(lab.hosts["storb"].mounts["ext4"]) + "/")
    after = manifest(lab, "storb", path)
    differ = sorted(rel for rel in set(before["entries"]) | set(after["entries"])
                    if before["entries"].get(rel) != after["entries"].get(rel))
    assert not differ, {rel: (before["entries"].get(rel), after["entries"].get(rel)) for rel in differ[:5]}
    assert after["links"] == before["links"] == [["docs/a.txt", "docs/deep/a-hardlink.txt"]]
    assert after["entries"]["docs/deep/er"]["mtime_ns"] % 10**9 == 123456789
    assert after["entries"]["docs/a.txt"]["xattrs"] == {"user.origin": b"stora".hex()}
    assert lab.ssh("stora", ["test", "-e", source_path], check=False).returncode != 0, "the source is still on stora"
    assert sshfs_mounts(lab, "datac") == [] and sshfs_mounts(lab, "stora") == []


def test_a_share_goes_from_stora_to_storb_through_the_data_node_datac(lab, tmp_path, collections_path, no_leftovers):
    source = create_share(lab, "dn1")
    before = manifest(lab, "stora", source)
    out = passed(playbook(lab, tmp_path, collections_path, "migrate_share", "-e", "share=dn1",
                          "-e", "destination_pool=storb@pb#ext4"))
    assert "task_state data_copying_completed" in out
    assert ("route       : data node datac: sshfs from stora, sshfs to storb; the data does not pass through "
            "the controller") in out, out[-3000:]
    info = share_info(lab, "dn1")
    copy = info["migration"]["copy"]
    assert copy["hash_algorithm"] == "blake2b"  # both hosts hash with the standard library
    assert sshfs_mounts(lab, "datac") == []  # unmounted after the copy
    out = passed(playbook(lab, tmp_path, collections_path, "complete_share_migration", "-e", "share=dn1"))
    assert "route       : data node datac: sshfs from stora, sshfs to storb" in out, out[-3000:]
    assert_migrated(lab, "dn1", before, source)


def test_the_source_host_is_the_data_node(lab, tmp_path, collections_path, no_leftovers):
    source = create_share(lab, "dn2")
    before = manifest(lab, "stora", source)
    out = passed(playbook(lab, tmp_path, collections_path, "migrate_share", "-e", "share=dn2",
                          "-e", "destination_pool=storb@pb#ext4", "-e", "data_node=stora"))
    assert ("route       : data node stora: its own disk on stora, sshfs to storb; the data does not pass "
            "through the controller") in out, out[-3000:]
    out = passed(playbook(lab, tmp_path, collections_path, "complete_share_migration", "-e", "share=dn2",
                          "-e", "data_node=stora"))
    assert "task_state migration_success" in out or "migration_success" in out
    assert_migrated(lab, "dn2", before, source)
    # datac took no part: it never mounted anything.
    assert sshfs_mounts(lab, "datac") == []


def side(lab, host: str, path: str) -> dict:
    """How a data node reaches ``path`` on ``host`` (data_copy hosts), with the host's key."""
    address = lab.hosts[host].address
    keys = [line.split(None, 1)[1].strip() for line in lab.known_hosts.read_text().splitlines()
            if line.startswith(f"[{address}]:{lab.port} ")]
    return {"host": host, "address": address, "port": lab.port, "user": "root", "key_file": str(lab.key),
            "host_keys": [f"mobility-storage-host {key}" for key in keys], "path": path}


def test_the_verification_reads_each_side_on_its_host_not_through_the_mount(lab, tmp_path, no_leftovers):
    """The data node's view of both sides is a good copy (two folders here that stand for mounts that
    lie); the destination host's disk holds the same tree but for one byte of one file, with its size
    and time put back. The verification reads storb's disk and fails naming that file; with the
    destination host's disk intact it passes (the same job run again)."""
    stora_tree = lab.hosts["stora"].mounts["ext4"] / "lying-source"
    storb_tree = lab.hosts["storb"].mounts["ext4"] / "lying-destination"
    for host, tree in (("stora", stora_tree), ("storb", storb_tree)):
        lab.ssh(host, ["mkdir", "-p", str(tree)])
        lab.ssh(host, ["sh", "-c", 'cd "$1" && printf good > f && touch -d "2022-02-02 02:02:02.5" f . && '
                                   'echo same > g && touch -d "2022-02-02 02:02:02.5" g .', "sh", str(tree)])
    # The destination host's disk: one byte of f differs, its size and time as before.
    lab.ssh("storb", ["sh", "-c", 'cd "$1" && printf gooD > f && touch -d "2022-02-02 02:02:02.5" f .', "sh",
                      str(storb_tree)])
    seen = {}
    for name in ("source", "destination"):
        seen[name] = tmp_path / name
        seen[name].mkdir()
        (seen[name] / "f").write_text("good")
        (seen[name] / "g").write_text("same\n")
        for entry in ("f", "g", "."):
            os.utime(seen[name] / entry, ns=(0, 1643767322_500000000))
    params = {"job_id": "lying1", "state": "started", "source": str(seen["source"]),
              "destination": str(seen["destination"]), "state_dir": str(tmp_path / "jobs"), "wait_seconds": 120,
              "hosts": {"source": side(lab, "stora", str(stora_tree)),
                        "destination": side(lab, "storb", str(storb_tree))}}
    failed = run_module("data_copy", params, lab.base, timeout=300)
    report = failed["job"]["report"]
    assert failed.get("failed") and report["verification"] == "failed", failed.get("msg")
    assert [item["path"] for item in report["differ"]] == ["f"] and "hash" in report["differ"][0]["attributes"]
    # The same trees, the destination host's disk repaired: the verification passes.
    lab.ssh("storb", ["sh", "-c", 'cd "$1" && printf good > f && touch -d "2022-02-02 02:02:02.5" f .', "sh",
                      str(storb_tree)])
    logs = dict((host, lab.hosts[host].folder / "sshd.log") for host in ("stora", "storb"))
    before = dict((host, log.read_text(errors="replace")) for host, log in logs.items())
    again = ok(run_module("data_copy", dict(params, job_id="lying2"), lab.base, timeout=300))
    assert again["job"]["report"]["verified"] is True
    # The job's sessions to each host (its walk, seal and carry) went over one master per host:
    # one login each, several sessions on it.
    for host, log in logs.items():
        during = log.read_text(errors="replace")[len(before[host]):]
        logins, sessions = during.count("Accepted publickey"), during.count("Starting session")
        assert logins == 1 and sessions >= 2, (host, logins, sessions, during[-3000:])
    for host, tree in (("stora", stora_tree), ("storb", storb_tree)):
        lab.ssh(host, ["rm", "-rf", str(tree)])


def test_the_destination_sshfs_killed_in_the_middle_of_the_copy_then_reruns_converge(
        lab, tmp_path, collections_path, no_leftovers):
    source = create_share(lab, "dn3", bulk_mb=24)
    before = manifest(lab, "stora", source)
    argv = playbook_argv(lab, tmp_path, "migrate_share", "-e", "share=dn3", "-e", "destination_pool=storb@pb#ext4",
                         "-e", '{"data_mover_rsync_options": ["--bwlimit=4m"]}')
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=playbook_env(collections_path), start_new_session=True)
    killed = []
    try:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline and run.poll() is None:
            if any("/destination fuse.sshfs" in line for line in sshfs_mounts(lab, "datac")):
                # Mounted (the sshfs that mounted it has gone to the background): let some of the copy
                # go through the mount, then kill the sshfs that serves it.
                time.sleep(3)
                for pid in sshfs_pids(lab, "datac", "/destination"):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.2)
        out, dummy = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert killed, "the destination was never mounted on datac\n" + out[-4000:]
    assert run.returncode != 0, "phase 1 passed although its destination mount died\n" + out[-4000:]
    info = share_info(lab, "dn3")
    assert info["task_state"] in ("data_copying_error", "data_copying_in_progress"), info["task_state"]
    assert sshfs_mounts(lab, "datac") == []  # the role's cleanup removed the dead mount
    # Reruns converge: phase 1 again (a new copy), then phase 2.
    passed(playbook(lab, tmp_path, collections_path, "migrate_share", "-e", "share=dn3",
                    "-e", "destination_pool=storb@pb#ext4"))
    passed(playbook(lab, tmp_path, collections_path, "complete_share_migration", "-e", "share=dn3"))
    assert_migrated(lab, "dn3", before, source)
    assert "dn3" in remote_listing(lab, "storb", str(lab.hosts["storb"].mounts["ext4"] / "shares"))


def test_evacuate_pool_runs_its_lanes_on_the_data_node_datac_over_ssh(lab, tmp_path, collections_path, no_leftovers):
    """evacuate_pool gives each copy slot a lane host delegated to its data node: over ssh both lanes
    of datac copy there (datac's own connection), and the records and routes name datac."""
    sources = {name: create_share(lab, name) for name in ("ev-a", "ev-b")}
    before = {name: manifest(lab, "stora", path) for name, path in sources.items()}
    out = passed(playbook(lab, tmp_path, collections_path, "evacuate_pool", "-e", "source=stora@pa#ext4",
                          "-e", '{"destinations": ["storb@pb#ext4"]}', "-e", "headroom=0",
                          "-e", "plan_name=ssh-lanes", "-e", "copies_per_data_node=2"))
    assert "mobility-lane-datac-1" in out and "mobility-lane-datac-2" in out, out[-4000:]
    # The summary's data node and lane columns: one copy in each of datac's two lanes.
    assert sorted(re.findall(r"\| (\S+) \| (slot \d, copy \d) \|", out)) == [
        ("datac", "slot 1, copy 1"), ("datac", "slot 2, copy 1")], out[-3000:]
    for name in sources:
        info = share_info(lab, name)
        assert info["task_state"] == "data_copying_completed", (name, info["task_state"])
        assert info["migration"]["copy_job"]["data_node"] == "datac", info["migration"]["copy_job"]
        assert info["migration"]["copy"]["verified_at"], info["migration"]["copy"]
    assert sshfs_mounts(lab, "datac") == []
    for name, source in sources.items():
        passed(playbook(lab, tmp_path, collections_path, "complete_share_migration", "-e", f"share={name}"))
        assert_migrated(lab, name, before[name], source)


def test_evacuate_pool_over_two_data_nodes_survives_one_going_down(lab, tmp_path, collections_path, no_leftovers):
    """Six shares leave stora for storb through two data nodes, datac and stora itself. In the middle
    datac goes down (its sshd, its sessions and its copy worker gone). The run fails for datac's
    shares only; a rerun leaves datac out (it does not answer), gives the copies it had not started
    to stora and holds the one it was running; a rerun that confirms datac lost finishes every share.
    Then every share is completed and its tree on storb compared with stora's, entry by entry."""
    names = [f"evd-{index}" for index in range(6)]
    sources = {name: create_share(lab, name, bulk_mb=2) for name in names}
    before = {name: manifest(lab, "stora", path) for name, path in sources.items()}
    inventory = tmp_path / "two-data-nodes.yml"
    inventory.write_text(json.dumps({"all": {"children": {
        "storage_hosts": {"hosts": {n: {"ansible_host": lab.hosts[n].address} for n in ("stora", "storb")}},
        "data_nodes": {"hosts": {n: {"ansible_host": lab.hosts[n].address} for n in ("datac", "stora")}}}}}))
    argv = ["ansible-playbook", "-i", str(REPO / "inventories" / "lab"), "-i", str(inventory),
            str(REPO / "playbooks" / "evacuate_pool.yml"), "-e", f"mobility_lab_dir={lab.base}",
            "-e", f"mobility_lab_port={lab.port}", "-e", "mobility_poll_seconds=1", "-e", "source=stora@pa#ext4",
            "-e", '{"destinations": ["storb@pb#ext4"], "data_mover_rsync_options": ["--bwlimit=256k"]}',
            "-e", "headroom=0", "-e", "plan_name=two-nodes"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv + list(extra), capture_output=True, text=True, env=playbook_env(collections_path),
                              timeout=900, check=False)

    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=playbook_env(collections_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        running_on_datac = None
        while running_on_datac is None and time.monotonic() < deadline and first.poll() is None:
            for name in names:
                info = share_info(lab, name)
                job = ((info.get("migration") or {}).get("copy_job") or {})
                if info["task_state"] == "data_copying_in_progress" and job.get("data_node") == "datac":
                    running_on_datac = name
            time.sleep(0.5)
        assert running_on_datac, "no copy ever ran on datac"
        time.sleep(2)
        lab.hosts["datac"].down()
        out, _err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    try:
        assert first.returncode != 0, out[-4000:]
        assert "UNREACHABLE" in out, out[-4000:]
        done = [n for n in names if share_info(lab, n)["task_state"] == "data_copying_completed"]
        assert running_on_datac not in done

        held = run()
        assert held.returncode != 0, held.stdout[-4000:]
        assert "Data nodes that cannot be reached, left out of this run: datac" in held.stdout, held.stdout[-4000:]
        assert f"Held: {running_on_datac}" in held.stdout, held.stdout[-4000:]
        for name in names:
            state = share_info(lab, name)["task_state"]
            assert (state == "data_copying_completed") == (name != running_on_datac), (name, state)

        confirmed = run("-e", '{"lost_data_nodes": ["datac"]}')
        assert confirmed.returncode == 0, confirmed.stdout[-4000:]
        for name in names:
            assert share_info(lab, name)["task_state"] == "data_copying_completed", name
        assert share_info(lab, running_on_datac)["migration"]["copy_job"]["data_node"] == "stora"
    finally:
        lab.hosts["datac"].up()
    for name, source in sources.items():
        passed(playbook(lab, tmp_path, collections_path, "complete_share_migration", "-e", f"share={name}",
                        "-e", "data_node=stora"))
        assert_migrated(lab, name, before[name], source)
