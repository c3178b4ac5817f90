"""``bash scripts/demo.sh --hosts`` (root): the ssh lab, and shares moved from one storage host to another.

Starts the lab (tests/integration/sshlab: stora, storb, datac, each an sshd in its own mount
namespace), then two migrations from stora to storb:

1. **through the data node datac** (host-assisted, a third machine): a posix share on stora's ext4
   pool (``stora@pa#ext4``) goes to storb's (``storb@pb#ext4``) with the phase playbooks
   (``migrate_share.yml``, ``complete_share_migration.yml``) and the lab's inventory
   (``inventories/lab``), as an operator runs them: datac mounts both sides with sshfs, copies, and
   verifies each side on its own host;
2. **btrfs host to host** (driver-assisted): a share on stora's btrfs pool (``stora@ab#one``) with a
   snapshot goes to ``storb@bb#two``: phase 1, users write, an increment, phase 2; the modules run as
   Ansible runs them on a target (``python -m <module> ARGS.json``).

Each summary says who copied and which way the data went, bytes, rate, the read-only window, and an
independent check: a manifest of the tree (path, type, mode, size, mtime, sha256 of each file) made
on stora's own disk before the switchover and one made on storb's own disk after it, compared. The
lab is stopped at the end.

Run: ``PYTHONPATH=tests/integration python -m sshlab.demo [--files N] [--size-mb M] [--only data-node|btrfs]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sshlab import Lab, collections_tree, is_root, run_module

FLAGS = {"writable": True, "preserve_metadata": True, "preserve_snapshots": True, "nondisruptive": False}
MANIFEST = ('cd "$1" && find . -mindepth 1 -printf "%P %y %m %s %T@\\n" | LC_ALL=C sort'
            ' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum')
FILL = ('i=0; while [ "$i" -lt "$2" ]; do mkdir -p "$1/d$((i % 10))"; head -c 4096 /dev/urandom > "$1/d$((i % 10))/f$i";'
        ' i=$((i + 1)); done; head -c "$3" /dev/urandom > "$1/big"')


# The lines of the phase playbooks' own summaries that the demo's summary repeats.
SUMMARY_LINE = re.compile(r"^(share|copy|route|writable|final pass|read-only|switchover|now in) +: ")


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def ok(result: dict, what: str) -> dict:
    if result.get("failed"):
        raise SystemExit(f"demo failed at: {what}: {result.get('msg')}")
    return result


def through_data_node(lab, args) -> int:
    """A posix share moved from stora to storb by the data node datac, with the phase playbooks and
    the lab's inventory, as an operator runs them (host-assisted: sshfs on datac, each side verified
    on its own host)."""
    repo = Path(__file__).resolve().parents[3]
    backends = [lab.posix_backend("stora"), lab.posix_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "demo-dn", "pool": "stora@pa#ext4", "size": 1},
                            lab.base), "create the share on stora")
    source = created["share"]["export_location"]
    size = min(args.size_mb, 16) * 1024 * 1024
    lab.ssh("stora", ["sh", "-c", FILL, "sh", source, str(min(args.files, 300)), str(size)])
    step(f"share demo-dn on stora@pa#ext4 ({source} on stora): {min(args.files, 300)} small files and "
         f"{size // 1048576} MiB; datac copies it to storb@pb#ext4")
    before = lab.ssh("stora", ["sh", "-c", MANIFEST, "sh", source]).stdout
    work = Path(tempfile.mkdtemp(prefix="demo-dn-", dir=lab.base))
    addresses = work / "addresses.yml"
    addresses.write_text(json.dumps({"all": {"children": {
        "storage_hosts": {"hosts": {n: {"ansible_host": lab.hosts[n].address} for n in ("stora", "storb")}},
        "data_nodes": {"hosts": {"datac": {"ansible_host": lab.hosts["datac"].address}}}}}}), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_tree(), ANSIBLE_NOCOLOR="1")
    summaries = []
    began = time.monotonic()
    for name, extra in (("migrate_share", ["-e", "destination_pool=storb@pb#ext4"]), ("complete_share_migration", [])):
        argv = ["ansible-playbook", "-i", str(repo / "inventories" / "lab"), "-i", str(addresses),
                str(repo / "playbooks" / f"{name}.yml"), "-e", "share=demo-dn", "-e", f"mobility_lab_dir={lab.base}",
                "-e", f"mobility_lab_port={lab.port}", *extra]
        step("ansible-playbook " + " ".join(argv[1:]))
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=repo)
        (work / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        lines = [line.strip().strip('",') for line in proc.stdout.splitlines()
                 if SUMMARY_LINE.match(line.strip().lstrip('"'))]
        summaries.append((name, lines))
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-2000:])
            raise SystemExit(f"demo failed at: {name} (log: {work / (name + '.log')})")
    elapsed = time.monotonic() - began
    info = ok(run_module("share_info", {"backends": backends, "name": "demo-dn"}, lab.base), "share_info")["shares"][0]
    after = lab.ssh("storb", ["sh", "-c", MANIFEST, "sh", info["export_location"]]).stdout
    gone = lab.ssh("stora", ["test", "-e", source], check=False).returncode != 0
    print("---- summary: host-assisted, stora -> storb through the data node datac ----")
    print(f"task_state {info['task_state']}: demo-dn now on {info.get('host')} ({info['export_location']} on storb)")
    for name, lines in summaries:
        for line in lines[-8:]:
            print(f"{name:26}: {line}")
    print(f"whole run    : {elapsed:.1f} s (two ansible-playbook runs)")
    print(f"source on stora after the switch: {'gone' if gone else 'STILL THERE'}")
    identical = before == after and before.strip() != ""
    print(f"independent check: {'identical' if identical else 'DIFFERENT'} "
          f"({len(before.splitlines())} manifest lines made on stora's disk and on storb's disk)")
    return 0 if identical and info["task_state"] == "migration_success" and gone else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size-mb", type=int, default=48)
    parser.add_argument("--only", choices=("data-node", "btrfs"), help="run one of the two migrations")
    args = parser.parse_args()
    if not is_root():
        print("demo --hosts needs root: an sshd per lab host, mount namespaces, loop-mounted pools", file=sys.stderr)
        return 2
    with Lab() as lab:
        step("lab up: " + ", ".join(f"{n} {h.address}:{lab.port}" for n, h in lab.hosts.items()))
        status = 0
        if args.only in (None, "data-node"):
            status |= through_data_node(lab, args)
        if args.only in (None, "btrfs"):
            status |= btrfs_host_to_host(lab, args)
        return status


def btrfs_host_to_host(lab, args) -> int:
    """The btrfs share moved from stora to storb, driver-assisted, with an increment."""
    backends = [lab.btrfs_backend("stora"), lab.btrfs_backend("storb")]
    created = ok(run_module("share", {"backends": backends, "name": "demo-hosts", "pool": "stora@ab#one",
                                      "size": 1}, lab.base), "create the share on stora")
    source = created["share"]["export_location"]
    lab.ssh("stora", ["sh", "-c", FILL, "sh", source, str(args.files), str(args.size_mb * 1024 * 1024)])
    step(f"share demo-hosts on stora@ab#one ({source} on stora): {args.files} small files and {args.size_mb} MiB")
    ok(run_module("share_snapshot", {"backends": backends, "share": "demo-hosts", "name": "before"}, lab.base),
       "snapshot")
    params = dict(backends=backends, share="demo-hosts", destination_pool="storb@bb#two", state="started", **FLAGS)
    began = time.monotonic()
    started = ok(run_module("share_migration", params, lab.base), "phase 1")
    mig = started["share"]["migration"]
    step(f"phase 1: task_state {started['share']['task_state']}, mechanism {mig['mechanism']}")
    step(f"route: {mig.get('btrfs', {}).get('route')}")
    lab.ssh("stora", ["sh", "-c", 'echo "written during phase 1" > "$1/later"', "sh", source])
    sent = [("phase 1", started["share"].get("progress") or {})]
    again = ok(run_module("share_migration", params, lab.base), "increment")
    sent.append(("increment", again["share"].get("progress") or {}))
    step("users kept writing on stora; the rerun of phase 1 sent an increment to storb")
    before = lab.ssh("stora", ["sh", "-c", MANIFEST, "sh", source]).stdout
    done = ok(run_module("share_migration", {"backends": backends, "share": "demo-hosts", "state": "completed"},
                         lab.base), "phase 2")
    elapsed = time.monotonic() - began
    share = done["share"]
    stats = share.get("migration", {}).get("btrfs", {})
    after = lab.ssh("storb", ["sh", "-c", MANIFEST, "sh", share["export_location"]]).stdout
    gone = lab.ssh("stora", ["btrfs", "subvolume", "list", "-o", str(lab.hosts["stora"].mounts["btrfs"] / "one")]).stdout
    print("---- summary: driver-assisted, btrfs from stora to storb ----")
    print(f"task_state {done['task_state']}: demo-hosts now on {share.get('host')} ({share['export_location']} on storb)")
    print("who copied   : btrfs send on stora, btrfs receive on storb")
    print(f"data path    : {stats.get('route')}")
    for label, progress in sent:
        print(f"bytes        : {label}: {progress.get('bytes_sent', '?')} B at {progress.get('rate_bytes_per_s') or '?'} B/s")
    print(f"bytes        : last send (source read-only): {stats.get('final_bytes', '?')} B in {stats.get('final_seconds', '?')} s")
    print(f"read-only for: {stats.get('read_only_seconds', '?')} s (source read-only until the switch)")
    print(f"whole run    : {elapsed:.1f} s")
    print(f"source on stora after the switch: {'gone' if not gone.strip() else 'STILL THERE'}")
    identical = before == after and before.strip() != ""
    print(f"independent check: {'identical' if identical else 'DIFFERENT'} "
          f"({len(before.splitlines())} manifest lines made on stora's disk and on storb's disk)")
    return 0 if identical and done["task_state"] == "migration_success" else 1


if __name__ == "__main__":
    sys.exit(main())
