"""The share modules on backends with ``transport: ssh``, against the ssh lab (tests/integration/sshlab).

Each module runs as Ansible runs it on a target (``python -m <module> ARGS.json``), with backends
whose pools are on the lab's storage hosts: ``stora`` (posix on ext4 and xfs) and ``storb``
(btrfs). What is checked, as root (skipped with "needs root" otherwise, a failure under CI=true):

* create, info, snapshot, delete on each pool, seen on the host itself (over the lab's own ssh)
  and NOT on the controller (each host has its own mount namespace);
* a btrfs driver-assisted migration between two pools of one remote host;
* a share lock held by one controller refuses a second controller's run, and is freed when the
  first controller is killed;
* a wrong key, an unreachable host, an unknown and a changed host key each fail naming the host
  and what failed, and change nothing; accept-new records the key of a new host;
* an ssh connection killed in the middle of a migration's transfer, then reruns that converge;
* no ssh process and no control socket folder is left after a module run.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import sshlab
from sshlab import collections_tree, is_root, module_process, module_result, run_module

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices")

FLAGS = {"writable": True, "preserve_metadata": True, "preserve_snapshots": True, "nondisruptive": False}


def our_ssh_processes(addresses=None) -> list[str]:
    """Command lines of ssh processes this collection started (their control sockets are in
    mobility-cm-<uid>, the shared masters' folder, or a run's own mobility-ssh-*); with
    ``addresses``, only those that name one of them (one lab's hosts)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == b"ssh" and any(b"mobility-ssh-" in a or b"mobility-cm-" in a for a in argv):
            line = " ".join(a.decode() for a in argv)
            if addresses is None or any(address in line for address in addresses):
                found.append(line)
    return found


def masters(address: str, port: int | None = None) -> list[int]:
    """Pids of our ControlMaster processes connected to ``address`` (and ``port``, when given)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == b"ssh" and b"ControlMaster=yes" in argv and address.encode() in argv:
            if port is None or str(port).encode() in argv:
                found.append(int(pid))
    return found


def sending(host) -> bool:
    """True when a ``btrfs send`` (not a --no-data estimate) runs on the lab ``host``."""
    for pid in host.pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"btrfs", b"send"] and b"--no-data" not in argv:
            return True
    return False


def remote_listing(lab, host: str, path: str) -> list[str]:
    proc = lab.ssh(host, ["ls", "-A", path], check=False)
    return sorted(proc.stdout.split()) if proc.returncode == 0 else []


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


ssh_lab = sshlab.ssh_lab  # the lab's session fixture, shared with test_ssh_transport.py


@pytest.fixture
def lab(ssh_lab):  # pylint: disable=redefined-outer-name
    return ssh_lab


def close_masters(lab, hosts=("stora", "storb")) -> None:
    """Stop the ControlMasters to ``hosts`` that a killed controller could not close."""
    for host in hosts:
        for pid in masters(lab.hosts[host].address, lab.port):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def rerun_phase1(params: dict, base, attempts: int = 3) -> dict:
    """Phase 1 run again after a fault, up to ``attempts`` times a second apart (the host may
    still be tearing down the cut connection): the last result."""
    for _attempt in range(attempts):
        started = run_module("share_migration", params, base)
        if not started.get("failed"):
            break
        time.sleep(1)
    return started


def sessions_left(lab) -> list[str]:
    """Our ssh processes of this lab's hosts other than the shared masters (which stay for
    ControlPersist after their last session): a helper session, a pipe, a master of a run's own."""
    port = f" -p {lab.port} "  # another lab (another pytest lane) may use the same addresses, never the same port
    return [line for line in our_ssh_processes([host.address for host in lab.hosts.values()])
            if port in line + " " and not ("ControlMaster=yes" in line and "mobility-cm-" in line)]


def stop_shared_masters(lab) -> None:
    """End the shared masters of this lab's hosts, as ControlPersist would a minute later."""
    for host in lab.hosts.values():
        for pid in masters(host.address, lab.port):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture
def no_leftovers(lab):
    """Nothing of the test's connections stays but the shared masters: no helper session, no
    pipe, no master of a run's own (which would hold a mobility-ssh-* folder). Only this lab's
    addresses count: another lab on other addresses may run beside this one."""
    yield
    assert sessions_left(lab) == []
    stop_shared_masters(lab)


@pytest.mark.parametrize("pool, host", [("stora@pa#ext4", "stora"), ("stora@pa#xfs", "stora"), ("storb@bb#one", "storb")])
def test_every_share_module_works_on_a_remote_pool(lab, pool, host, no_leftovers):
    backends = [lab.backend(host)]
    name = "life-" + pool.split("#")[1]
    created = ok(run_module("share", {"backends": backends, "name": name, "pool": pool, "size": 1}, lab.base))
    assert created["changed"] is True
    path = created["share"]["export_location"]
    pool_path = lab.pools(host)[pool.split("#")[1]]
    assert path.startswith(pool_path + "/")
    # The share is on the storage host's disk, not on the controller's.
    assert name in remote_listing(lab, host, os.path.dirname(path))
    assert not os.path.exists(path)
    other = "storb" if host == "stora" else "stora"
    assert remote_listing(lab, other, os.path.dirname(path)) == []
    # Both hosts declared: the share is found on its own host.
    assert ok(run_module("share_info", {"backends": lab.backends(), "name": name}, lab.base))["shares"][0]["host"] == pool
    again = ok(run_module("share", {"backends": backends, "name": name, "pool": pool, "size": 1}, lab.base))
    assert again["changed"] is False

    lab.ssh(host, ["sh", "-c", 'echo data > "$1/file"', "sh", path])
    snap = ok(run_module("share_snapshot", {"backends": backends, "share": name, "name": "snap1"}, lab.base))
    assert snap["changed"] is True
    assert lab.ssh(host, ["cat", snap["snapshot"]["path"] + "/file"]).stdout == "data\n"
    if host == "storb":
        subvolumes = lab.ssh(host, ["btrfs", "subvolume", "list", "-o", pool_path]).stdout
        assert f"snapshots/{name}/snap1" in subvolumes

    info = ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))
    [share] = info["shares"]
    assert share["host"] == pool and [s["name"] for s in share["snapshots"]] == ["snap1"]
    record = json.loads(lab.ssh(host, ["cat", f"{pool_path}/.mobility/shares/{name}.json"]).stdout)
    assert record["id"] == share["id"]
    events = lab.ssh(host, ["cat", f"{pool_path}/.mobility/events.jsonl"]).stdout
    assert share["id"] in events

    gone = ok(run_module("share_snapshot", {"backends": backends, "share": name, "name": "snap1", "state": "absent"},
                         lab.base))
    assert gone["changed"] is True and remote_listing(lab, host, snap["snapshot"]["path"]) == []
    deleted = ok(run_module("share", {"backends": backends, "name": name, "state": "absent"}, lab.base))
    assert deleted["changed"] is True
    assert name not in remote_listing(lab, host, os.path.dirname(path))
    assert ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))["shares"] == []


def fill(lab, host: str, path: str, megabytes: int) -> str:
    """Write a big random file and a small one into ``path`` on ``host``; their sha256 sums."""
    lab.ssh(host, ["sh", "-c", 'head -c "$2" /dev/urandom > "$1/big" && echo small > "$1/small"', "sh", path,
                   str(megabytes * 1024 * 1024)])
    return lab.ssh(host, ["sh", "-c", 'cd "$1" && sha256sum big small', "sh", path]).stdout


def test_btrfs_driver_assisted_migration_between_pools_of_one_remote_host(lab, no_leftovers):
    backends = [lab.backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "mig1", "pool": "storb@bb#one", "size": 1}, lab.base))
    sums = fill(lab, "storb", created["share"]["export_location"], 8)
    started = ok(run_module("share_migration", dict(backends=backends, share="mig1", destination_pool="storb@bb#two",
                                                    state="started", **FLAGS), lab.base))
    assert started["share"]["task_state"] == "migration_driver_phase1_done"
    assert started["share"]["migration"]["mechanism"] == "driver"
    done = ok(run_module("share_migration", {"backends": backends, "share": "mig1", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    path = done["share"]["export_location"]
    assert path.startswith(lab.pools("storb")["two"] + "/")
    assert lab.ssh("storb", ["sh", "-c", 'cd "$1" && sha256sum big small', "sh", path]).stdout == sums
    assert "mig1" not in remote_listing(lab, "storb", lab.pools("storb")["one"] + "/shares")


HOLDER = """
import json, sys, time
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
ctx = Context(json.loads(sys.argv[1]))
lock = ctx.lock(sys.argv[2], "held by the test's first controller").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_held_by_one_controller_refuses_another_until_the_first_dies(lab):
    before = set(glob.glob("/tmp/mobility-ssh-*"))
    backends = lab.backends()
    ok(run_module("share", {"backends": backends, "name": "locked", "pool": "stora@pa#ext4", "size": 1}, lab.base))
    env = dict(os.environ, PYTHONPATH=collections_tree())
    # The first controller: another process (own ssh connections, own helpers) holding the share's lock.
    first = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(backends), "locked"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held", first.stderr.read()
        refused = run_module("share_snapshot", {"backends": backends, "share": "locked", "name": "s1"}, lab.base)
        assert refused.get("failed") and refused["error_type"] == "busy"
        assert "held by the test's first controller" in refused["msg"]
        assert "snapshots" not in remote_listing(lab, "stora", lab.pools("stora")["ext4"]) or \
            "locked" not in remote_listing(lab, "stora", lab.pools("stora")["ext4"] + "/snapshots")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Killed without releasing: its helpers' stdin closes with the connection and the locks end.
    deadline = time.monotonic() + 30
    while True:
        result = run_module("share_snapshot", {"backends": backends, "share": "locked", "name": "s1"}, lab.base)
        if not result.get("failed") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert ok(result)["changed"] is True
    # What the killed controller could not close: its masters (ControlPersist would end them) and
    # their socket folders.
    for pid in masters(lab.hosts["stora"].address, lab.port) + masters(lab.hosts["storb"].address, lab.port):
        os.kill(pid, signal.SIGKILL)
    for folder in glob.glob("/tmp/mobility-ssh-*"):
        if folder not in before:
            shutil.rmtree(folder, ignore_errors=True)


def test_connection_failures_name_the_host_and_change_nothing(lab, tmp_path, no_leftovers):
    pool_path = lab.pools("stora")["ext4"]
    before = remote_listing(lab, "stora", pool_path + "/shares")
    wrong_host_key = tmp_path / "wrong_known_hosts"
    storb_key = Path(f"{lab.hosts['storb'].host_key}.pub").read_text().split()[:2]
    wrong_host_key.write_text(f"[{lab.hosts['stora'].address}]:{lab.port} {' '.join(storb_key)}\n")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    cases = [
        (dict(private_key_file=str(lab.wrong_key)), "authentication refused (wrong or unauthorised key"),
        (dict(address="127.0.0.19"), "unreachable (connection refused"),
        (dict(known_hosts_file=str(empty)), "unknown host key"),
        (dict(known_hosts_file=str(wrong_host_key)), "host key mismatch"),
    ]
    for overrides, reason in cases:
        backend = lab.backend("stora", **overrides)
        result = run_module("share", {"backends": [backend], "name": "never", "pool": "stora@pa#ext4", "size": 1},
                            lab.base)
        assert result.get("failed"), overrides
        assert f"on storage host stora ({backend['ssh']['address']}): {reason}" in result["msg"], result["msg"]
        assert result["host"] == "stora"
    assert empty.read_text() == ""  # strict checking never adds a key
    assert remote_listing(lab, "stora", pool_path + "/shares") == before
    assert "never.json" not in remote_listing(lab, "stora", pool_path + "/.mobility/shares")


def test_accept_new_records_the_key_of_a_new_host_and_then_checks_it(lab, tmp_path, no_leftovers):
    known = tmp_path / "known_hosts"
    backend = lab.backend("stora", known_hosts_file=str(known), host_key_checking="accept-new")
    ok(run_module("share_info", {"backends": [backend]}, lab.base))
    key = Path(f"{lab.hosts['stora'].host_key}.pub").read_text().split()[1]
    assert key in known.read_text()
    strict = lab.backend("stora", known_hosts_file=str(known))
    ok(run_module("share_info", {"backends": [strict]}, lab.base))


def test_an_ssh_connection_killed_during_a_transfer_then_reruns_converge(lab, no_leftovers):
    backends = [lab.backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "cut1", "pool": "storb@bb#one", "size": 1},
                            lab.base))
    # 192 MiB: the send must still run when the cut comes. 64 MiB was sent before the cut once module
    # calls got cheaper (the run went on); storb's 640 MiB btrfs holds the file and its received copy.
    sums = fill(lab, "storb", created["share"]["export_location"], 192)
    params = dict(backends=backends, share="cut1", destination_pool="storb@bb#two", state="started", **FLAGS)
    proc = module_process("share_migration", params, lab.base)
    # Wait for the btrfs send to run on the host, then cut the run's connection to it.
    address = lab.hosts["storb"].address
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if sending(lab.hosts["storb"]):
            break
        time.sleep(0.05)
    cut = masters(address, lab.port)
    assert cut, "the migration's transfer did not start"
    for pid in cut:
        os.kill(pid, signal.SIGKILL)
    result = module_result(proc)
    assert result.get("failed"), "the run went on although its connection was cut"
    assert "storb" in result["msg"]
    # Reruns converge: start again (the driver resumes or restarts phase 1), then complete.
    started = rerun_phase1(params, lab.base)
    assert ok(started)["share"]["task_state"] == "migration_driver_phase1_done"
    done = ok(run_module("share_migration", {"backends": backends, "share": "cut1", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    assert lab.ssh("storb", ["sh", "-c", 'cd "$1" && sha256sum big small', "sh",
                             done["share"]["export_location"]]).stdout == sums
    listing = lab.ssh("storb", ["btrfs", "subvolume", "list", "-o", lab.pools("storb")["one"]]).stdout
    assert "cut1" not in listing


PLAYBOOK = """
- name: The data node is reached with Ansible's own ssh connection and sees only its own mounts
  hosts: data_nodes
  gather_facts: false
  tasks:
    - name: Ping over ssh
      ansible.builtin.ping:
    - name: The ext4 pool of stora is not mounted on the data node
      ansible.builtin.stat:
        path: "{{ mobility_lab_dir }}/stora/ext4/lost+found"
      register: on_datac
    - name: Check
      ansible.builtin.assert:
        that: not on_datac.stat.exists

- name: The modules reach the storage hosts the inventory declares
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ mobility_backends }}"
  tasks:
    - name: Create a share on stora
      storage.mobility.share:
        name: inv1
        pool: stora@pa#ext4
        size: 1
    - name: Snapshot it
      storage.mobility.share_snapshot:
        share: inv1
        name: first
    - name: Read it back
      storage.mobility.share_info:
        name: inv1
      register: info
    - name: Check
      ansible.builtin.assert:
        that:
          - info.shares[0].host == 'stora@pa#ext4'
          - info.shares[0].snapshots | map(attribute='name') | list == ['first']
    - name: Delete the snapshot
      storage.mobility.share_snapshot:
        share: inv1
        name: first
        state: absent
    - name: Delete the share
      storage.mobility.share:
        name: inv1
        state: absent
"""


def test_the_lab_inventory_drives_the_modules_and_reaches_the_data_node(lab, tmp_path, collections_path, no_leftovers):
    playbook = tmp_path / "lab.yml"
    playbook.write_text(PLAYBOOK)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_NOCOLOR="1")
    # The lab's addresses (SSHLAB_ADDRESSES may move them): a second inventory, read last, sets them.
    addresses = tmp_path / "addresses.yml"
    addresses.write_text(json.dumps({"all": {"children": {
        "storage_hosts": {"hosts": {n: {"ansible_host": lab.hosts[n].address} for n in ("stora", "storb")}},
        "data_nodes": {"hosts": {"datac": {"ansible_host": lab.hosts["datac"].address}}}}}}))
    proc = subprocess.run(["ansible-playbook", "-i", str(repo / "inventories" / "lab"), "-i", str(addresses), str(playbook),
                           "-e", f"mobility_lab_dir={lab.base}", "-e", f"mobility_lab_port={lab.port}"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "datac" in proc.stdout and "failed=0" in proc.stdout
    assert "inv1" not in remote_listing(lab, "stora", lab.pools("stora")["ext4"] + "/shares")
    assert "inv1.json" not in remote_listing(lab, "stora", lab.pools("stora")["ext4"] + "/.mobility/shares")


def test_become_runs_the_helper_under_sudo_and_a_refused_sudo_names_the_host(lab, no_leftovers):
    """The lab hosts have no sudo: a stand-in (sshlab.FAKE_SUDO) logs its argv and refuses as
    ``sudo -n`` does without a passwordless rule, so the argv and the refusal path are real."""
    backend = lab.backend("stora", become=True)
    lab.sudo_log.write_text("")
    created = ok(run_module("share", {"backends": [backend], "name": "bec1", "pool": "stora@pa#ext4", "size": 1},
                            lab.base))
    assert created["changed"] is True
    assert lab.sudo_log.read_text().startswith("-n -- python3 -c ")  # the helper went through sudo -n
    lab.sudo_refuses.write_text("")
    try:
        refused = run_module("share", {"backends": [backend], "name": "bec2", "pool": "stora@pa#ext4", "size": 1},
                             lab.base)
    finally:
        lab.sudo_refuses.unlink()
    assert refused.get("failed")
    assert (f"on storage host stora ({lab.hosts['stora'].address}): sudo refused (become needs passwordless sudo -n "
            "for user root)") in refused["msg"], refused["msg"]
    assert "bec2" not in remote_listing(lab, "stora", lab.pools("stora")["ext4"] + "/shares")
    ok(run_module("share", {"backends": [backend], "name": "bec1", "state": "absent"}, lab.base))


def test_a_controller_killed_in_the_middle_of_a_transfer_then_reruns_converge(lab):
    """The crash point kills the module process after it passed on half of the btrfs stream (the
    stream then goes through the controller, over two ssh sessions, so that the controller is what
    dies): its helper ends with its connection, the lock with it, and reruns converge."""
    before = set(glob.glob("/tmp/mobility-ssh-*"))
    backends = [lab.backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "crash1", "pool": "storb@bb#one", "size": 1},
                            lab.base))
    sums = fill(lab, "storb", created["share"]["export_location"], 16)
    params = dict(backends=backends, share="crash1", destination_pool="storb@bb#two", state="started", **FLAGS)
    proc = module_process("share_migration", params, lab.base, env={"STORAGE_MOBILITY_CRASH_AFTER": "btrfs sending *"})
    proc.communicate(timeout=300)
    assert proc.returncode == 70, "the crash point was not reached"
    for pid in masters(lab.hosts["storb"].address, lab.port):  # what the killed controller could not close
        os.kill(pid, signal.SIGKILL)
    for folder in set(glob.glob("/tmp/mobility-ssh-*")) - before:
        shutil.rmtree(folder, ignore_errors=True)
    deadline = time.monotonic() + 60
    while True:
        started = run_module("share_migration", params, lab.base)
        if not started.get("failed") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert ok(started)["share"]["task_state"] == "migration_driver_phase1_done"
    done = ok(run_module("share_migration", {"backends": backends, "share": "crash1", "state": "completed"}, lab.base))
    assert done["task_state"] == "migration_success"
    assert lab.ssh("storb", ["sh", "-c", 'cd "$1" && sha256sum big small', "sh",
                             done["share"]["export_location"]]).stdout == sums
    assert sessions_left(lab) == []


INVENTORY_PLAYBOOK = """
- name: Backends that take their ssh options from the inventory
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends:
        - name: pa
          driver: posix
          host: stora
          transport: ssh
          ssh:
            inventory_host: stora
          pools: "{{ pools }}"
  tasks:
    - name: Create a share on stora
      storage.mobility.share:
        name: inv2
        pool: stora@pa#ext4
        size: 1
      register: created
    - name: Say where it is
      ansible.builtin.debug:
        msg: "created at {{ created.share.export_location }}"
"""


def test_ssh_options_come_from_the_inventory_host_a_backend_names(lab, tmp_path, collections_path, no_leftovers):
    """``ssh.inventory_host``: the address, port, user, key and known_hosts of Ansible's own connection
    to the host (from the inventory, templated there), through a real sshd; passwords are refused in
    words and never used; an unknown host and a become method other than sudo change nothing."""
    inventory = tmp_path / "inventory.yml"
    stora = {"ansible_host": lab.hosts["stora"].address, "ansible_port": "{{ lab_port }}", "ansible_user": "root",
             "ansible_ssh_private_key_file": str(lab.key), "ansible_password": "never-used-9f3",
             "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes",
             "lab_port": lab.port}
    inventory.write_text(json.dumps({"all": {"hosts": {
        "localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "stora": stora,
        "storsu": dict(stora, ansible_become=True, ansible_become_method="su")}}}))
    playbook = tmp_path / "inventory_host.yml"
    playbook.write_text(INVENTORY_PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_NOCOLOR="1")

    def play(*extra):
        return subprocess.run(["ansible-playbook", "-i", str(inventory), str(playbook), "-e",
                               json.dumps({"pools": lab.pools("stora")}), *extra],
                              capture_output=True, text=True, env=env, timeout=600, check=False)

    proc = play()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "never uses passwords" in proc.stdout + proc.stderr
    assert "never-used-9f3" not in proc.stdout + proc.stderr
    shares = lab.pools("stora")["ext4"] + "/shares"
    assert "inv2" in remote_listing(lab, "stora", shares)
    assert f"created at {shares}/inv2" in proc.stdout

    # A backend that names an unknown host, or one whose become is not sudo: refused before any module runs.
    for host, words in (("nosuch", "ssh inventory_host nosuch is not in the inventory"),
                        ("storsu", "ansible_become_method is su")):
        playbook.write_text(INVENTORY_PLAYBOOK.replace("inventory_host: stora", f"inventory_host: {host}")
                            .replace("name: inv2", "name: inv3"))
        refused = play()
        assert refused.returncode != 0
        assert words in refused.stdout + refused.stderr and "Backend pa" in refused.stdout + refused.stderr
        assert "inv3" not in remote_listing(lab, "stora", shares)
    ok(run_module("share", {"backends": [lab.backend("stora")], "name": "inv2", "state": "absent"}, lab.base))
    assert "inv2" not in remote_listing(lab, "stora", shares)


def test_one_master_per_host_serves_every_module_call_until_it_goes(lab, no_leftovers):
    """Each module call is its own process: they reuse one shared ControlMaster per host (no new
    login per call), whose socket is in a private folder; a master that died is replaced."""
    stop_shared_masters(lab)
    address = lab.hosts["stora"].address
    deadline = time.monotonic() + 10
    while masters(address, lab.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    backends = [lab.backend("stora")]
    ok(run_module("share_info", {"backends": backends}, lab.base))
    first = masters(address, lab.port)
    assert len(first) == 1
    ok(run_module("share", {"backends": backends, "name": "reuse1", "pool": "stora@pa#ext4", "size": 1}, lab.base))
    ok(run_module("share_info", {"backends": backends, "name": "reuse1"}, lab.base))
    assert masters(address, lab.port) == first
    folder = Path(tempfile.gettempdir()) / f"mobility-cm-{os.geteuid()}"
    info = folder.lstat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    argv = Path(f"/proc/{first[0]}/cmdline").read_bytes().split(b"\0")
    assert f"ControlPath={folder}/".encode() in b" ".join(argv)
    # Another key file is another connection: never a master made with other options.
    other = [lab.backend("stora", private_key_file=str(lab.agent_key))]
    ok(run_module("share_info", {"backends": other}, lab.base))
    assert len(masters(address, lab.port)) == 2
    # The master dies (a host reboot, a kill): the next call starts a new one over its stale socket.
    for pid in masters(address, lab.port):
        os.kill(pid, signal.SIGKILL)
    ok(run_module("share", {"backends": backends, "name": "reuse1", "state": "absent"}, lab.base))
    assert len(masters(address, lab.port)) == 1 and masters(address, lab.port) != first
    assert "reuse1" not in remote_listing(lab, "stora", lab.pools("stora")["ext4"] + "/shares")
