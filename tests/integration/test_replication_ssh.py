"""Share replication on a storage host reached over ssh (the ssh lab, tests/integration/sshlab).

Each module runs as Ansible runs it on a target (``python -m <module> ARGS.json``) with a backend
whose transport is ssh: the replicas live in two pools of one remote host (storb's two btrfs
subvolume pools, stora's ext4 and xfs pools for posix), each host in its own mount namespace, so
that the controller sees none of their files. What is checked, as root (skipped with "needs root"
otherwise, a failure under CI=true): create a replicated share, add a replica, write on the host,
update (``state: resynced``: only the change travels), promote (planned), and ``share_info``
shows each replica's ``replica_state`` and ``last_sync``; after each step the active share and the
replica are compared entry by entry on the host itself. A btrfs replica on another host (storb to
stora) goes the same way, each send piped from one host to the other; a posix replica on another
host than the active replica is refused and nothing of it is created.
"""

from __future__ import annotations

import os

import pytest

import sshlab
from sshlab import is_root, run_module

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices")

RULE = {"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "rw"}
#: every entry below the folder: path, type, mode, owner, size (not of folders: ext4 and xfs count
#: them differently), nanosecond mtime, link target; then the sha256 of each file (run on the lab host)
LISTING = ('cd "$1" && find . -mindepth 1 \\( -type d -printf "%P %y %m %U:%G - %T@\\n" \\) -o '
           '-printf "%P %y %m %U:%G %s %T@ %l\\n" | LC_ALL=C sort && '
           'find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum')

ssh_lab = sshlab.ssh_lab  # the lab's session fixture, shared with the other ssh tests


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def tree(lab, host: str, path: str) -> str:
    out = lab.ssh(host, ["sh", "-c", LISTING, "sh", path]).stdout
    assert out.strip(), f"nothing listed in {path} on {host}"
    return out


def replicated_backend(lab, host: str) -> dict:
    backend = lab.backend(host)
    backend["replication_domain"] = "lab"
    return backend


@pytest.mark.parametrize("host, active, other, big_mb", [("storb", "one", "two", 8), ("stora", "ext4", "xfs", 8)],
                         ids=["btrfs-storb", "posix-stora-ext4-xfs"])
def test_a_replica_on_a_remote_host_is_created_updated_and_promoted(ssh_lab, host, active, other, big_mb):
    lab = ssh_lab
    backends = [replicated_backend(lab, host)]
    name = "rep-" + active
    backend = backends[0]["name"]
    pool_a, pool_b = f"{host}@{backend}#{active}", f"{host}@{backend}#{other}"
    created = ok(run_module("share", {"backends": backends, "name": name, "pool": pool_a, "size": 1,
                                      "share_type": "replicated", "extra_specs": {"replication_type": "readable"},
                                      "access_rules": [RULE]}, lab.base))
    path_a = created["share"]["export_location"]
    path_b = os.path.join(lab.pools(host)[other], "shares", name)
    try:
        lab.ssh(host, ["sh", "-c", 'head -c "$2" /dev/urandom > "$1/big" && mkdir "$1/dir" && echo small > "$1/dir/small"'
                       ' && ln -s dir/small "$1/link" && touch -d "2001-02-03 04:05:06.123456789" "$1/dir/small"',
                       "sh", path_a, str(big_mb * 1024 * 1024)])
        assert not os.path.exists(os.path.join(path_a, "big"))  # on the host, not on the controller

        added = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b}, lab.base))
        replica = added["replica"]
        assert added["changed"] is True and replica["pool"] == pool_b
        assert (replica["replica_state"], replica["status"]) == ("in_sync", "available")
        assert replica["last_update"]["bytes"] >= big_mb * 1024 * 1024
        assert tree(lab, host, path_b) == tree(lab, host, path_a)

        # a change on the host; the update carries only it
        lab.ssh(host, ["sh", "-c", 'echo changed > "$1/dir/small" && echo new > "$1/new"', "sh", path_a])
        updated = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                                  "state": "resynced"}, lab.base))
        last = updated["replica"]["last_update"]
        assert updated["replica"]["replica_state"] == "in_sync"
        assert last["bytes"] < 1024 * 1024, last
        if host == "storb":
            assert last["incremental"] is True
        else:
            assert last["files"] >= 2 and last["verified"] is True
        assert tree(lab, host, path_b) == tree(lab, host, path_a)
        assert "changed" in lab.ssh(host, ["cat", os.path.join(path_b, "dir", "small")]).stdout
        if host != "storb":
            # a change below the top folder: the posix update walks the change times on the host
            # and copies only what changed since the last update's point
            lab.ssh(host, ["sh", "-c", 'echo again > "$1/dir/small"', "sh", path_a])
            again = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                                    "state": "resynced"}, lab.base))["replica"]
            assert again["last_update"]["incremental"] is True, again["last_update"]
            assert again["last_update"]["files"] == 1 and again["replica_state"] == "in_sync"
            assert tree(lab, host, path_b) == tree(lab, host, path_a)
            updated["replica"] = again

        info = ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))
        [share] = info["shares"]
        states = dict((r["pool"], (r["replica_state"], r.get("last_sync"))) for r in share["replicas"])
        assert states[pool_a][0] == "active" and states[pool_b][0] == "in_sync"
        assert states[pool_b][1] == updated["replica"]["last_sync"]

        # planned promotion: the replica in the other pool becomes the share
        promoted = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                                   "state": "promoted"}, lab.base))
        assert promoted["changed"] is True and promoted["replica"]["replica_state"] == "active"
        assert tree(lab, host, path_b) == tree(lab, host, path_a)
        info = ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))
        [share] = info["shares"]
        states = dict((r["pool"], (r["replica_state"], r.get("last_sync"))) for r in share["replicas"])
        assert states[pool_b][0] == "active" and states[pool_a][0] == "in_sync" and states[pool_a][1]
        assert share["export_location"] == path_b
        # the record moved to the new active's pool on the host
        record = lab.ssh(host, ["cat", os.path.join(lab.pools(host)[other], ".mobility", "shares", name + ".json")])
        assert '"replica_state": "active"' in record.stdout or '"replica_state":"active"' in record.stdout

        # the old active is a secondary now: a write on the new one reaches it by an update
        lab.ssh(host, ["sh", "-c", 'echo after > "$1/after-promotion"', "sh", path_b])
        back = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_a,
                                               "state": "resynced"}, lab.base))
        assert back["replica"]["replica_state"] == "in_sync" and back["replica"]["last_update"]["bytes"] < 1024 * 1024
        assert tree(lab, host, path_a) == tree(lab, host, path_b)
    finally:
        run_module("share_replica", {"backends": backends, "share": name, "pool": pool_a, "state": "absent"}, lab.base)
        run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b, "state": "absent"}, lab.base)
        run_module("share", {"backends": backends, "name": name, "state": "absent"}, lab.base)


#: the active pool on storb and the replica's pool on stora of the cross-host btrfs tests
STORB_ONE, STORA_ONE = "storb@bb#one", "stora@ab#one"


def cross_host_share(lab, name: str):
    """A dr share in storb's btrfs pool one, replicated to stora's btrfs pool one: (backends, its
    path on storb, the replica's path on stora)."""
    backends = [replicated_backend(lab, "storb"), dict(lab.btrfs_backend("stora"), replication_domain="lab")]
    created = ok(run_module("share", {"backends": backends, "name": name, "pool": STORB_ONE, "size": 1,
                                      "share_type": "replicated", "extra_specs": {"replication_type": "dr"}},
                            lab.base))
    return backends, created["share"]["export_location"], str(lab.hosts["stora"].mounts["btrfs"] / "one" / "shares" / name)


def remove_cross_host_share(lab, backends, name: str, snapshots=(), check=False) -> None:
    """Its snapshots, both replicas, then the share (``check``: the share's removal must succeed)."""
    for snapshot in snapshots:
        run_module("share_snapshot", {"backends": backends, "share": name, "name": snapshot, "state": "absent"}, lab.base)
    for pool in (STORB_ONE, STORA_ONE):
        run_module("share_replica", {"backends": backends, "share": name, "pool": pool, "state": "absent"}, lab.base)
    removed = run_module("share", {"backends": backends, "name": name, "state": "absent"}, lab.base)
    if check:
        ok(removed)


def test_a_btrfs_replica_on_another_host_is_sent_host_to_host_and_promoted(ssh_lab):
    """storb's pool one holds the share, stora's btrfs pool one the replica: each update is a
    btrfs send on storb piped over ssh into btrfs receive on stora (the migration's direct way)."""
    lab = ssh_lab
    name = "rep-far"
    pool_a, pool_b = STORB_ONE, STORA_ONE
    backends, path_a, path_b = cross_host_share(lab, name)
    try:
        lab.ssh("storb", ["sh", "-c", 'head -c 4194304 /dev/urandom > "$1/big" && mkdir "$1/dir" && '
                          'echo small > "$1/dir/small"', "sh", path_a])
        added = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b}, lab.base))
        assert added["replica"]["replica_state"] == "in_sync" and added["replica"]["last_update"]["bytes"] >= 4194304
        assert tree(lab, "stora", path_b) == tree(lab, "storb", path_a)
        lab.ssh("storb", ["sh", "-c", 'echo changed > "$1/dir/small"', "sh", path_a])
        updated = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                                  "state": "resynced"}, lab.base))["replica"]["last_update"]
        assert updated["incremental"] is True and updated["bytes"] < 1024 * 1024, updated
        assert tree(lab, "stora", path_b) == tree(lab, "storb", path_a)
        promoted = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                                   "state": "promoted"}, lab.base))
        assert promoted["replica"]["replica_state"] == "active"
        lab.ssh("stora", ["sh", "-c", 'echo on-stora > "$1/after"', "sh", path_b])
        back = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_a,
                                               "state": "resynced"}, lab.base))["replica"]
        assert back["replica_state"] == "in_sync" and back["last_update"]["incremental"] is True
        assert back["last_update"]["bytes"] < 1024 * 1024
        assert tree(lab, "storb", path_a) == tree(lab, "stora", path_b)
        [share] = ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))["shares"]
        states = dict((r["pool"], (r["replica_state"], r.get("last_sync"))) for r in share["replicas"])
        assert states[pool_b][0] == "active" and states[pool_a] == ("in_sync", back["last_sync"])
    finally:
        remove_cross_host_share(lab, backends, name)


def test_a_forced_promotion_with_the_active_host_down_then_failback_when_it_returns(ssh_lab):
    """storb holds the active btrfs share, stora the replica. storb goes down (its filesystems
    unmounted, its sshd gone) with a write it never replicated: the replica on stora is promoted with
    force. When storb comes back its old active copy is fenced (read-only), the failback refuses
    and names the unreplicated write, then, forced, sends only what changed and keeps that write
    in a snapshot on storb."""
    lab = ssh_lab
    name = "rep-down"
    pool_a, pool_b = STORB_ONE, STORA_ONE
    backends, path_a, path_b = cross_host_share(lab, name)
    storb = lab.hosts["storb"]
    try:
        lab.ssh("storb", ["sh", "-c", 'head -c 4194304 /dev/urandom > "$1/big" && echo small > "$1/small"', "sh", path_a])
        added = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b}, lab.base))
        full = added["replica"]["last_update"]["bytes"]
        assert added["replica"]["replica_state"] == "in_sync" and full >= 4194304
        lab.ssh("storb", ["sh", "-c", 'echo only-on-storb > "$1/unreplicated.txt" && sync', "sh", path_a])

        storb.down()
        refused = run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                               "state": "promoted"}, lab.base)
        assert refused.get("failed"), "a promotion with the active side unreachable needs force"
        promoted = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_b,
                                                   "state": "promoted", "force": True}, lab.base))["replica"]
        assert promoted["replica_state"] == "active", promoted
        # The data the promotion may miss: everything after the replica's last update (last_sync).
        info = ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))
        promotion = info["shares"][0]["replication"]["last_promotion"]
        assert promotion["forced"] is True and promotion["from_pool"] == pool_a, promotion
        assert promotion["replica_last_sync"] == added["replica"]["last_sync"], (promotion, added["replica"])
        # storb's pools were skipped with a warning that names it (ansible-core 2.19 gives warnings
        # as summaries with their message inside).
        assert "the pools of storage host storb were skipped in this run" in str(info.get("warnings")), info
        lab.ssh("stora", ["sh", "-c", 'echo on-stora > "$1/new.txt"', "sh", path_b])

        storb.up()
        refused = run_module("share_replica", {"backends": backends, "share": name, "pool": pool_a,
                                               "state": "resynced"}, lab.base)
        assert refused.get("failed") and "unreplicated.txt" in refused.get("msg", ""), refused
        # Fenced: the old active copy on storb takes no write as if it were still active.
        fenced = lab.ssh("storb", ["sh", "-c", 'echo fenced > "$1/x"', "sh", path_a], check=False)
        assert fenced.returncode != 0 and "Read-only file system" in fenced.stderr, fenced
        back = ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pool_a,
                                               "state": "resynced", "force": True}, lab.base))["replica"]
        update = back["last_update"]
        assert back["replica_state"] == "in_sync" and update["incremental"] is True, back
        assert update["bytes"] < full / 10, ("failback sent more than the change", update, full)
        assert tree(lab, "storb", path_a) == tree(lab, "stora", path_b)
        kept = back["kept_divergence"]
        assert lab.ssh("storb", ["cat", kept + "/unreplicated.txt"]).stdout == "only-on-storb\n"
    finally:
        if storb.proc is None or storb.proc.poll() is not None:
            storb.up()
        remove_cross_host_share(lab, backends, name)


#: the state share_replica is asked at each step, always of the replica's pool on stora
CROSS_HOST_STEPS = {"create": "present", "update": "resynced", "promote": "promoted"}
#: (step, crash point) for a btrfs replica on another host: every record the step writes, in the
#: middle of the host-to-host send, after each receive, the old point moved aside, the promotion's
#: records and exports.
CROSS_HOST_CRASHES = [
    ("create", "replica * in * requested"),
    ("create", "btrfs sending replica snapshot *"),
    ("create", "btrfs received replica snapshot *"),
    ("create", "btrfs sending replica point"),
    ("create", "btrfs received replica point"),
    ("update", "btrfs sending replica point"),
    ("update", "btrfs received replica point"),
    ("update", "btrfs replica instance moved aside"),
    ("update", "replica * updated*"),
    ("promote", "promotion of replica * started"),
    ("promote", "promoted (planned)"),
    ("promote", "old active replica * exported as a secondary"),
]


def replica_states(lab, backends, name) -> dict:
    [share] = ok(run_module("share_info", {"backends": backends, "name": name}, lab.base))["shares"]
    return dict((r["pool"], r["replica_state"]) for r in share.get("replicas") or [])


@pytest.mark.parametrize("step, point", CROSS_HOST_CRASHES,
                         ids=[f"{step}-{point.replace(' ', '_')}" for step, point in CROSS_HOST_CRASHES])
def test_a_cross_host_replication_step_killed_at_each_point_converges_when_run_again(ssh_lab, step, point):
    """The module is killed at the crash point (no cleanup, as a power cut of the controller)
    while it replicates from storb to stora. Right after: never two active replicas. Run again:
    the replica is in_sync (or active after a promotion) and both trees are equal entry by entry,
    read on each host."""
    lab = ssh_lab
    name = "rep-crash"
    pools = {"a": STORB_ONE, "b": STORA_ONE}
    backends, path_a, path_b = cross_host_share(lab, name)
    try:
        lab.ssh("storb", ["sh", "-c", 'head -c 2097152 /dev/urandom > "$1/big" && mkdir "$1/d" && echo one > "$1/d/f"',
                          "sh", path_a])
        # A snapshot, so that creating the replica sends it first (the "replica snapshot" points).
        ok(run_module("share_snapshot", {"backends": backends, "share": name, "name": "s1"}, lab.base))
        if step != "create":
            ok(run_module("share_replica", {"backends": backends, "share": name, "pool": pools["b"]}, lab.base))
            lab.ssh("storb", ["sh", "-c", 'echo two >> "$1/d/f" && head -c 65536 /dev/urandom > "$1/d/g"', "sh", path_a])
        params = {"backends": backends, "share": name, "pool": pools["b"], "state": CROSS_HOST_STEPS[step]}
        killed = sshlab.module_result(sshlab.module_process("share_replica", params, lab.base,
                                                            env={"STORAGE_MOBILITY_CRASH_AFTER": point}))
        # In the middle of a send the point is met by the helper on storb that runs the pipe: that
        # process dies (the host side of the stream cut), and the module fails naming it.
        died = killed.get("rc") == 70 or (killed.get("failed") and point.startswith("btrfs sending")
                                          and "the helper process on the host ended" in killed.get("msg", ""))
        assert died, f"the crash point {point!r} was not reached: {str(killed)[:2000]}"
        states = replica_states(lab, backends, name)
        assert list(states.values()).count("active") <= 1, states
        ok(run_module("share_replica", params, lab.base))
        states = replica_states(lab, backends, name)
        expected = {"a": "in_sync", "b": "active"} if step == "promote" else {"a": "active", "b": "in_sync"}
        assert states == dict((pools[k], v) for k, v in expected.items()), states
        assert tree(lab, "stora", path_b) == tree(lab, "storb", path_a)
    finally:
        remove_cross_host_share(lab, backends, name, snapshots=("s1",), check=True)


def test_a_posix_replica_on_another_host_than_the_active_is_refused_and_nothing_changes(ssh_lab):
    lab = ssh_lab
    far = str(lab.hosts["storb"].mounts["btrfs"] / "posix-pool")
    lab.ssh("storb", ["mkdir", "-p", far])
    storb_posix = {"name": "pb", "driver": "posix", "host": "storb", "transport": "ssh",
                   "ssh": lab.ssh_options("storb"), "pools": {"p": far}, "replication_domain": "lab"}
    backends = [replicated_backend(lab, "stora"), storb_posix]
    created = ok(run_module("share", {"backends": backends, "name": "rep-near", "pool": "stora@pa#ext4", "size": 1,
                                      "share_type": "replicated", "extra_specs": {"replication_type": "dr"}},
                            lab.base))
    try:
        refused = run_module("share_replica", {"backends": backends, "share": "rep-near", "pool": "storb@pb#p"},
                             lab.base)
        assert refused.get("failed") and "on host storb and the active replica on host stora" in refused["msg"]
        assert "not on another host yet" in refused["msg"]
        # (the run's lock files aside: .mobility/locks)
        assert lab.ssh("storb", ["ls", "-A", far]).stdout.split() in ([], [".mobility"])
        assert lab.ssh("storb", ["find", far, "-path", "*/.mobility/locks", "-prune", "-o", "-type", "f",
                                 "-print"]).stdout.split() == []
        [share] = ok(run_module("share_info", {"backends": backends, "name": "rep-near"}, lab.base))["shares"]
        assert [r["pool"] for r in share.get("replicas") or []] in ([], ["stora@pa#ext4"])
        assert share["export_location"] == created["share"]["export_location"]
    finally:
        run_module("share", {"backends": backends, "name": "rep-near", "state": "absent"}, lab.base)
        lab.ssh("storb", ["rm", "-rf", far])
