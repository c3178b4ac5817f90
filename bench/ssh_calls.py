# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a module call on a storage host reached with ssh costs over the same call on local pools
(issue 17: "about what a local one does plus one round trip"), in one run (as root).

    python bench/ssh_calls.py [--rounds N] [--out FILE]
    python bench/run.py --ssh-calls                     # the same, from the main bench

Starts the test lab's storage host ``stora`` (tests/integration/sshlab: an sshd in a mount
namespace on a loopback address, its pools loop-mounted ext4 and xfs) and times, alternating in
each round:

* ``share_info`` of one share, run as Ansible runs a module (``python -m`` with an args file), on a
  local posix pool of this machine and on stora's pool over ssh (the shared ControlMaster of the
  run already open: what every call but a run's first pays);
* the parts of the remote call: a bare session over the master running ``true`` (one round trip),
  ``python3 -c pass`` over it, a new transport's first operation (session + helper start + one
  request) and one more operation on a running helper;
* the first call of a run, which opens the master (a login).

The ratio is the remote call's median over the local one's; the difference is what ssh adds per
call. Writes a JSON file (default bench/results/ssh_calls.json). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))


def median_of(fn, rounds):
    times = []
    for _round in range(rounds):
        began = time.monotonic()
        fn()
        times.append(time.monotonic() - began)
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4), "max": round(max(times), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ssh_calls.json"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("ssh_calls: needs root (the lab's sshd, mount namespaces and loop-mounted pools)", file=sys.stderr)
        return 2
    # pylint: disable=import-outside-toplevel  # the lab and the collection come from this checkout
    import sshlab
    from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
    from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import (
        SshOptions, SshTransport, shared_folder)

    with sshlab.Lab() as lab, tempfile.TemporaryDirectory(prefix="mobility-bench-ssh-") as work:
        folder = Path(work)
        local_pool = folder / "pool"
        local_pool.mkdir()
        local = [{"name": "loc", "driver": "posix", "host": "localhost", "pools": {"p": str(local_pool)}}]
        remote = [lab.backend("stora")]
        for backends, pool in ((local, "localhost@loc#p"), (remote, "stora@pa#xfs")):
            created = sshlab.run_module("share", {"backends": backends, "name": "bench", "pool": pool, "size": 1}, folder)
            if created.get("failed"):
                print("ssh_calls: cannot create the share on %s: %s" % (pool, created.get("msg")), file=sys.stderr)
                return 1

        def info(backends):
            result = sshlab.run_module("share_info", {"backends": backends, "name": "bench"}, folder)
            if result.get("failed") or not result.get("shares"):
                raise SystemExit("ssh_calls: share_info failed: %s" % result.get("msg"))

        opts = SshOptions("stora", **lab.ssh_options("stora"))
        control = os.path.join(shared_folder(), opts.master_name())
        argv = SshTransport(CommandRunner(), opts).ssh_argv() + ["-o", "ControlPath=" + control]

        def stop_shared_masters():
            # What ControlPersist does a minute after the master's last session.
            subprocess.run(argv + ["-O", "exit", "--", opts.address], capture_output=True, check=False)
            deadline = time.monotonic() + 10
            while os.path.exists(control) and time.monotonic() < deadline:
                time.sleep(0.05)

        stop_shared_masters()
        first = median_of(lambda: (info(remote), stop_shared_masters()), 3)
        info(remote)  # the master is open from here on
        figures = {"local_call": [], "remote_call": []}
        for _round in range(args.rounds):  # alternating, so that a drift of the machine hits both
            for key, backends in (("local_call", local), ("remote_call", remote)):
                began = time.monotonic()
                info(backends)
                figures[key].append(time.monotonic() - began)
        calls = dict((k, {"median": round(statistics.median(v), 4), "min": round(min(v), 4), "max": round(max(v), 4)})
                     for k, v in figures.items())

        def new_transport_op():
            transport = SshTransport(CommandRunner(), opts)
            transport.is_dir(lab.pools("stora")["xfs"])
            transport.close()

        running = SshTransport(CommandRunner(), opts)
        running.is_dir(lab.pools("stora")["xfs"])
        bare = argv + ["--", opts.address]
        parts = {
            "session_true": median_of(lambda: subprocess.run(bare + ["true"], check=True), args.rounds),
            "session_python3_pass": median_of(lambda: subprocess.run(bare + ["python3", "-c", "pass"], check=True),
                                              args.rounds),
            "new_helper_and_one_op": median_of(new_transport_op, args.rounds),
            "op_on_running_helper": median_of(lambda: running.is_dir(lab.pools("stora")["xfs"]), 50),
            "local_python3_pass": median_of(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
                                            args.rounds),
        }
        running.close()
        stop_shared_masters()

    result = {"rounds": args.rounds, "calls": calls, "first_call_opening_the_master": first, "parts": parts,
              "ratio_remote_over_local": round(calls["remote_call"]["median"] / calls["local_call"]["median"], 3),
              "added_per_call_seconds": round(calls["remote_call"]["median"] - calls["local_call"]["median"], 4),
              "load_average": os.getloadavg(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("share_info, local pool      : %.3f s (median of %d)" % (calls["local_call"]["median"], args.rounds))
    print("share_info, pool over ssh   : %.3f s (median of %d), %.2fx, +%.3f s per call"
          % (calls["remote_call"]["median"], args.rounds, result["ratio_remote_over_local"], result["added_per_call_seconds"]))
    print("first call of a run (login) : %.3f s" % first["median"])
    for key, value in parts.items():
        print("%-28s: %.4f s" % (key.replace("_", " "), value["median"]))
    print("figures in %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
