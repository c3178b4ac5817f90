"""``bash scripts/demo.sh --hosts`` (root): the ssh lab, and a share moved from one storage host to another.

Starts the lab (tests/integration/sshlab: stora, storb, datac, each an sshd in its own mount
namespace), creates a share on stora's btrfs pool (``stora@ab#one``), fills it, takes a snapshot,
and migrates it driver-assisted to storb (``storb@bb#two``): phase 1, users write, an increment,
phase 2. The modules run as Ansible runs them on a target (``python -m <module> ARGS.json``) with
``transport: ssh`` backends. The summary says which host sent and which received and how the
stream went, bytes, rate, the read-only window, and an independent check: a manifest of the tree
(path, type, mode, size, mtime, sha256 of each file) made on stora's own disk just before the
switchover and one made on storb's own disk after it, compared. The lab is stopped at the end.

Run: ``PYTHONPATH=tests/integration python -m sshlab.demo [--files N] [--size-mb M]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from sshlab import Lab, is_root, run_module

FLAGS = {"writable": True, "preserve_metadata": True, "preserve_snapshots": True, "nondisruptive": False}
MANIFEST = ('cd "$1" && find . -mindepth 1 -printf "%P %y %m %s %T@\\n" | LC_ALL=C sort'
            ' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum')
FILL = ('i=0; while [ "$i" -lt "$2" ]; do mkdir -p "$1/d$((i % 10))"; head -c 4096 /dev/urandom > "$1/d$((i % 10))/f$i";'
        ' i=$((i + 1)); done; head -c "$3" /dev/urandom > "$1/big"')


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def ok(result: dict, what: str) -> dict:
    if result.get("failed"):
        raise SystemExit(f"demo failed at: {what}: {result.get('msg')}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size-mb", type=int, default=48)
    args = parser.parse_args()
    if not is_root():
        print("demo --hosts needs root: an sshd per lab host, mount namespaces, loop-mounted pools", file=sys.stderr)
        return 2
    with Lab() as lab:
        step("lab up: " + ", ".join(f"{n} {h.address}:{lab.port}" for n, h in lab.hosts.items()))
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
        print("---- summary ----")
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
