"""Seeded random faults in btrfs migrations from one storage host of the ssh lab to another (as root).

Each share of ``stora@ab#one`` (btrfs on stora) moves to ``storb@bb#two`` (btrfs on storb),
driver-assisted, with ``data_path: direct`` or ``controller`` (drawn per share), through the
``share_migration`` module run as Ansible runs it on a target: phase 1 (``migrate``), users
writing and a rerun of phase 1 that sends an increment (``increment``), users writing again and
phase 2 (``complete``). Each share takes a few faults, each at a point drawn from a seeded stream
(``MOBILITY_FAULT_SEED``, printed; one stream per share, so ``MOBILITY_FAULT_CASES=f2`` replays
share ``f2`` alone with the same points). A point is a step and one of these kinds:

* ``module``: SIGKILL to the module process (the controller dies) a random part of the step's
  measured duration after it started;
* ``master``: SIGKILL to the shared ControlMaster ssh process of stora or storb (found by
  ``ControlMaster=yes`` and the host's address in /proc/*/cmdline), a random part of the step in;
* ``stream``: SIGKILL to the ssh session that carries the stream: on stora, the ``ssh storb btrfs
  receive`` of a direct stream; on the controller, the session running ``btrfs send`` or ``btrfs
  receive`` of a relayed one; a random delay after it appears;
* ``send`` / ``receive``: SIGKILL to ``btrfs send`` on stora or ``btrfs receive`` on storb (the lab
  hosts' processes are in this machine's /proc), a random delay after it appears;
* ``crash``: ``STORAGE_MOBILITY_CRASH_AFTER`` set to one of the crash points of the step.

A point that misses (the run ended before it came) is drawn again for the next phase 1 run. After
every run, faulted or not, the data must be whole somewhere: the source on stora, while it exists,
equals the reference entry by entry; once it is gone, the destination on storb does. After a fault
the step is run again until it succeeds, or (a draw) the migration is cancelled and started again.
At the end of each share: ``migration_success`` on ``storb@bb#two``; its tree and its snapshot equal
their references entry by entry, read on storb's own disk (over the lab's own ssh); on both hosts
no subvolume of the share but the share and its snapshot, no temporary snapshot, empty staging
folders, no ``btrfs send``/``receive`` process; no helper session of the collection left. Every
fault and its outcome is printed; a failure names the seed and the share.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

import sshlab
from sshlab import is_root, module_process, module_result, run_module
from test_ssh_storage import FLAGS, our_ssh_processes, remote_listing

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: sshd per lab host, mount namespaces, loop devices")

ssh_lab = sshlab.ssh_lab

SEED_ENV = "MOBILITY_FAULT_SEED"
CASES_ENV = "MOBILITY_FAULT_CASES"
SHARES = ("f1", "f2", "f3")
FAULTS_PER_SHARE = 2
KINDS = (("module", 3), ("master", 2), ("stream", 2), ("send", 1), ("receive", 1), ("crash", 3))
CRASHES = {
    "migrate": ("migration * requested", "destination instance created", "driver migration started",
                "btrfs sending snapshot *", "btrfs received snapshot *", "btrfs sending *", "btrfs received *",
                "phase 1 done"),
    "increment": ("btrfs sending increment *", "btrfs received increment *", "phase 1 refreshed*"),
    "complete": ("switchover started", "btrfs sending increment *", "btrfs received increment *",
                 "btrfs source read-only", "btrfs sending final", "btrfs received final", "btrfs destination placed",
                 "destination available, source inactive", "migration * completed: share now in *"),
}
STEPS = ("migrate", "increment", "complete")
CANCEL_CHANCE = 0.3
RERUNS = 6
# A point that missed is drawn again for a rerun of phase 1 this many times per share at most.
REDRAWS = 3
POLL = 0.01
# No migration running: a cancel has nothing to do (a failed phase ends in migration_error, undone).
IDLE = (None, "migration_error", "migration_cancelled")

# An independent walk of a tree, run with python3 ON the host that holds it: every entry (the root
# included) with type, mode, owner, size, nanosecond mtime, sha256, link target, link count; and
# the hard-link groups.
WALK = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
entries, inodes = {}, {}
for folder, dirs, names in os.walk(root):
    dirs.sort()
    for path in ([folder] if folder == root else []) + [os.path.join(folder, n) for n in sorted(dirs + names)]:
        rel = os.path.relpath(path, root)
        st = os.lstat(path)
        entry = [stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, st.st_mtime_ns]
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            entry += [st.st_size, digest.hexdigest(), st.st_nlink]
            if st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
        elif stat.S_ISLNK(st.st_mode):
            entry.append(os.readlink(path))
        entries[rel] = entry
print(json.dumps({"entries": entries, "hardlinks": sorted(sorted(g) for g in inodes.values())}))
"""
# A tree users might have: folders of small files, a big file, a symlink, a hard link, odd modes.
FILL = ('set -e; cd "$1"; i=0; while [ "$i" -lt "$2" ]; do mkdir -p "d$((i % 7))";'
        ' head -c $((i * 37 % 9000)) /dev/urandom > "d$((i % 7))/f$i"; i=$((i + 1)); done;'
        ' head -c "$3" /dev/urandom > big; ln -sf d1/f1 link; ln -f d2/f2 hard; chmod 0600 d3/f3;'
        ' mkdir -p "with space"; echo odd > "with space/$(printf "a\\tb")"; chmod 0750 "with space"')


def seed() -> int:
    value = os.environ.get(SEED_ENV, "").strip()
    if value:
        try:
            return int(value)
        except ValueError:
            raise AssertionError(f"{SEED_ENV}={value!r} is not a whole number") from None
    return random.SystemRandom().randrange(1, 10 ** 9)


SEED = seed()


def walk(lab, host: str, path: str) -> dict:
    return json.loads(lab.ssh(host, ["python3", "-c", WALK, path]).stdout)


def differences(expected: dict, found: dict) -> list[str]:
    """Entries that differ, as readable lines (empty: the trees are equal entry by entry)."""
    lines = []
    for rel in sorted(set(expected["entries"]) | set(found["entries"])):
        want, got = expected["entries"].get(rel), found["entries"].get(rel)
        if want != got:
            lines.append(f"{rel!r}: expected {want}, found {got}")
    if expected["hardlinks"] != found["hardlinks"]:
        lines.append(f"hard links: expected {expected['hardlinks']}, found {found['hardlinks']}")
    return lines


def exists(lab, host: str, path: str) -> bool:
    return lab.ssh(host, ["test", "-e", path], check=False).returncode == 0


def subvolumes(lab, host: str, path: str) -> list[str]:
    listing = lab.ssh(host, ["btrfs", "subvolume", "list", "-o", path]).stdout
    return [line.split(" path ", 1)[1] for line in listing.splitlines()]


def argv_of(pid) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def btrfs_processes(host) -> list[int]:
    """``btrfs send`` (not a --no-data estimate) and ``btrfs receive`` processes on the lab ``host``."""
    found = []
    for pid in host.pids():
        argv = argv_of(pid)
        if argv[:2] in (["btrfs", "send"], ["btrfs", "receive"]) and "--no-data" not in argv and "--dump" not in argv:
            found.append(pid)
    return found


def of_this_lab(lab, argv: list[str]) -> bool:
    """True for an ssh argv that reaches one of this lab's hosts: its address AND its port (another
    lab may run on the same addresses, on another port)."""
    addresses = {host.address for host in lab.hosts.values()}
    return bool(addresses & set(argv)) and any(a == "-p" and b == str(lab.port) for a, b in zip(argv, argv[1:]))


def lab_masters(lab, host: str) -> list[int]:
    """Pids of our ControlMaster processes connected to ``host`` of this lab."""
    found = []
    for pid in os.listdir("/proc"):
        argv = argv_of(pid) if pid.isdigit() else []
        if argv[:1] == ["ssh"] and "ControlMaster=yes" in argv and lab.hosts[host].address in argv \
                and of_this_lab(lab, argv):
            found.append(int(pid))
    return found


def lab_sessions(lab) -> list[str]:
    """Our ssh processes to this lab's hosts other than the shared masters (which stay for
    ControlPersist): a helper session, a stream, a master of a run's own."""
    return [line for line in our_ssh_processes([host.address for host in lab.hosts.values()])
            if of_this_lab(lab, line.split(" ")) and not ("ControlMaster=yes" in line and "mobility-cm-" in line)]


def stop_lab_masters(lab) -> None:
    """End this lab's shared masters, as ControlPersist would a minute later."""
    for host in lab.hosts:
        for pid in lab_masters(lab, host):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


class Share:
    """One share's run: its stream of points, its references, its log of faults."""

    def __init__(self, lab, name: str):
        self.lab = lab
        self.name = name
        self.rng = random.Random(f"{SEED}:{name}")
        self.data_path = self.rng.choice(("direct", "controller"))
        self.backends = [lab.btrfs_backend("stora", data_path=self.data_path), lab.btrfs_backend("storb")]
        self.start = dict(backends=self.backends, share=name, destination_pool="storb@bb#two", state="started", **FLAGS)
        self.complete = {"backends": self.backends, "share": name, "state": "completed"}
        self.cancel = {"backends": self.backends, "share": name, "state": "cancelled"}
        self.faults_left = FAULTS_PER_SHARE
        self.hits = 0
        self.log: list[str] = []
        self.source = ""
        self.reference: dict = {}
        self.snapshot_reference: dict = {}
        self.durations = {"migrate": 6.0, "increment": 4.0, "complete": 5.0}
        self.redraws = 0
        self.elapsed = 0.0

    # -- reporting ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        line = f"[seed {SEED} share {self.name} ({self.data_path})] {text}"
        self.log.append(line)
        print(line, flush=True)

    def fail(self, text: str) -> None:
        raise AssertionError(f"{text}\nreplay: {SEED_ENV}={SEED} {CASES_ENV}={self.name}\n" + "\n".join(self.log))

    def check(self, condition, text: str) -> None:
        if not condition:
            self.fail(text)

    def write(self, name: str, megabytes: int) -> None:
        """Users write a new file into the source while it is writable; the reference follows."""
        self.lab.ssh("stora", ["sh", "-c", 'head -c "$2" /dev/urandom > "$1/$3"', "sh", self.source,
                               str(megabytes * 1024 * 1024), name])
        self.reference = walk(self.lab, "stora", self.source)

    # -- points ------------------------------------------------------------------------------
    def draw(self, step: str) -> dict:
        kinds, weights = zip(*KINDS)
        kind = self.rng.choices(kinds, weights)[0]
        point = {"kind": kind, "step": step, "fraction": round(self.rng.uniform(0.05, 0.9), 3),
                 "delay": round(self.rng.uniform(0.0, 0.4), 3), "host": self.rng.choice(("stora", "storb"))}
        if kind == "crash":
            point["crash"] = self.rng.choice(CRASHES[step])
        return point

    def describe(self, point: dict) -> str:
        kind = point["kind"]
        if kind == "crash":
            return f"crash after {point['crash']!r}"
        if kind == "module":
            return f"SIGKILL the module at {point['fraction']:.0%} of ~{self.durations[point['step']]:.1f} s"
        if kind == "master":
            return (f"SIGKILL the ControlMaster to {point['host']} at {point['fraction']:.0%}"
                    f" of ~{self.durations[point['step']]:.1f} s")
        if kind == "stream":
            return f"SIGKILL the ssh session carrying the stream {point['delay']} s after it appears"
        return f"SIGKILL btrfs {kind} on {'stora' if kind == 'send' else 'storb'} {point['delay']} s after it appears"

    # -- running -----------------------------------------------------------------------------
    def stream_sessions(self) -> list[int]:
        """ssh processes carrying the stream: on stora, ``ssh storb btrfs receive`` (direct); on the
        controller, sessions running ``btrfs send``/``receive`` over the shared masters (relayed)."""
        found = []
        if self.data_path == "direct":
            for pid in self.lab.hosts["stora"].pids():
                argv = argv_of(pid)
                if argv[:1] == ["ssh"] and "HostKeyAlias=mobility-destination" in argv and "btrfs receive" in argv[-1] \
                        and "--dump" not in argv[-1]:
                    found.append(pid)
            return found
        for pid in os.listdir("/proc"):
            argv = argv_of(pid) if pid.isdigit() else []
            if argv[:1] == ["ssh"] and "ControlMaster=no" in argv and of_this_lab(self.lab, argv) \
                    and argv[-1].startswith(("btrfs send", "btrfs receive")) and "--no-data" not in argv[-1] \
                    and "--dump" not in argv[-1]:
                found.append(int(pid))
        return found

    def targets(self, point: dict) -> list[int]:
        kind = point["kind"]
        if kind == "master":
            return lab_masters(self.lab, point["host"])
        if kind == "stream":
            return self.stream_sessions()
        host = self.lab.hosts["stora" if kind == "send" else "storb"]
        want = ["btrfs", kind]
        return [pid for pid in btrfs_processes(host) if argv_of(pid)[:2] == want]

    def run(self, step: str, params: dict, point: dict | None = None) -> tuple[dict, bool]:
        """Run the module for ``step`` with ``point`` (or none): its result, and whether the fault hit."""
        env = {"STORAGE_MOBILITY_CRASH_AFTER": point["crash"]} if point and point["kind"] == "crash" else None
        began = time.monotonic()
        proc = module_process("share_migration", params, self.lab.base, env=env)
        hit = False
        if point and point["kind"] in ("module", "master"):
            at = began + point["fraction"] * self.durations[step]
            while proc.poll() is None and time.monotonic() < at:
                time.sleep(POLL)
            while proc.poll() is None and not hit:
                if point["kind"] == "module":
                    proc.kill()
                    hit = True
                else:
                    for pid in self.targets(point):
                        try:
                            os.kill(pid, signal.SIGKILL)
                            hit = True
                        except ProcessLookupError:
                            pass
                    time.sleep(POLL)
        elif point and point["kind"] != "crash":
            while proc.poll() is None and not hit:
                if self.targets(point):
                    time.sleep(point["delay"])
                    for pid in self.targets(point):  # the one seen, or the next one alive after the delay
                        try:
                            os.kill(pid, signal.SIGKILL)
                            hit = True
                        except ProcessLookupError:
                            pass
                        break
                time.sleep(POLL)
        result = module_result(proc, timeout=300)
        if point and point["kind"] == "crash":
            # A "btrfs sending" point of a direct stream is reached by the helper on stora, which
            # runs the pipe and dies there midway: the controller sees its helper end.
            msg = result.get("msg", "")
            midway = self.data_path == "direct" and point["crash"].startswith("btrfs sending") and result.get("failed") \
                and ("helper process on the host ended" in msg or "connection lost" in msg)
            hit = proc.returncode == 70 or bool(midway)
        if point and point["kind"] == "module":
            hit = hit and proc.returncode == -signal.SIGKILL
        self.elapsed = time.monotonic() - began
        if (not point or not hit) and not result.get("failed"):
            self.durations[step] = self.elapsed
        return result, hit

    def state(self) -> tuple[str | None, str | None]:
        info = run_module("share_info", {"backends": self.backends, "name": self.name}, self.lab.base)
        if info.get("failed") or not info.get("shares"):
            return None, None
        return info["shares"][0].get("task_state"), info["shares"][0].get("host")

    def whole_somewhere(self, when: str) -> None:
        """The data is whole on one side: the source while it exists, else the destination."""
        if exists(self.lab, "stora", self.source):
            diff = differences(self.reference, walk(self.lab, "stora", self.source))
            self.check(not diff, f"{when}: the source on stora differs from the reference: {diff[:5]}")
            return
        info = ok(run_module("share_info", {"backends": self.backends, "name": self.name}, self.lab.base), self)
        share = info["shares"][0]
        self.check(share["host"] == "storb@bb#two",
                   f"{when}: the source is gone from stora but the share is at {share['host']} ({share.get('task_state')})")
        diff = differences(self.reference, walk(self.lab, "storb", share["export_location"]))
        self.check(not diff, f"{when}: the source is gone and the destination differs from the reference: {diff[:5]}")

    def step(self, step: str, params: dict, redraw: bool = False) -> None:
        """Run ``step``, with a fault while the share still has some to take; rerun until it succeeds
        (or cancel and start again, a draw); the data checked whole after every run."""
        point = None
        chance = {"migrate": 0.6, "increment": 1.0 if self.faults_left == FAULTS_PER_SHARE else 0.3, "complete": 1.0}
        if self.faults_left and (redraw or self.rng.random() < chance[step]):
            point = self.draw(step)
        what = self.describe(point) if point else ""
        result, hit = self.run(step, params, point)
        if point:
            outcome = "hit" if hit else "missed (the run ended first)"
            ended = "failed: " + result.get("msg", "")[:160] if result.get("failed") else "succeeded"
            self.say(f"{step}: {what}: {outcome} after {self.elapsed:.1f} s; the run {ended}")
        self.whole_somewhere(f"after {step}")
        if hit:
            self.faults_left -= 1
            self.hits += 1
        if not result.get("failed"):
            if step == "complete" and any("cleanup is pending" in w for w in result.get("warnings") or []):
                self.converge_cleanup(params)
            if point and not hit and step != "complete" and self.faults_left and self.redraws < REDRAWS:
                self.redraws += 1
                self.say("point missed: users write more, another point for a rerun of phase 1")
                self.write(f"more{self.redraws}", 2)
                self.step("increment", self.start, redraw=True)
            return
        if step != "complete" and self.rng.random() < CANCEL_CHANCE:
            self.cancel_and_restart()
            return
        self.converge(step, params)

    def converge(self, step: str, params: dict) -> None:
        last = None
        for attempt in range(1, RERUNS + 1):
            time.sleep(0.5 * attempt)  # the hosts may still be tearing the cut connection down
            if step == "complete":
                task_state, host = self.state()
                if task_state == "migration_success":
                    self.say(f"{step}: already done before the rerun ({host})")
                    return
                if task_state in IDLE:  # the failed phase 2 was undone: the source is in use again
                    self.say(f"{step}: the migration ended ({task_state}): starting again")
                    self.step("migrate", self.start)
                    self.step("complete", self.complete)
                    return
            last = run_module("share_migration", params, self.lab.base)
            self.whole_somewhere(f"after rerun {attempt} of {step}")
            if not last.get("failed"):
                self.say(f"{step}: rerun {attempt} converged")
                return
            self.say(f"{step}: rerun {attempt} failed: {last.get('msg', '')[:200]}")
        self.fail(f"{step} did not converge in {RERUNS} reruns: {last.get('msg') if last else ''}")

    def converge_cleanup(self, params: dict) -> None:
        """The switch succeeded but a deletion after it was cut off (the connection to a host killed
        while it deleted): the run says so in a warning and keeps what is left in the record's
        cleanup_pending, which every later run on the share retries (docs/share_migration.md). The
        reruns an operator would make, until the list is empty."""
        for attempt in range(1, RERUNS + 1):
            info = ok(run_module("share_info", {"backends": self.backends, "name": self.name}, self.lab.base), self)
            pending = info["shares"][0].get("cleanup_pending") or []
            if not pending:
                self.say(f"complete: the pending cleanup converged after {attempt - 1} rerun(s)")
                return
            self.say(f"complete: succeeded with {len(pending)} cleanup entries pending; rerun {attempt}")
            time.sleep(0.5 * attempt)
            rerun = run_module("share_migration", params, self.lab.base)
            self.check(not rerun.get("failed"), f"a rerun after the switch failed: {rerun.get('msg', '')[:200]}")
        self.fail(f"the pending cleanup did not converge in {RERUNS} reruns")

    def cancel_and_restart(self) -> None:
        task_state, _host = self.state()
        if task_state in IDLE:  # the fault came before the migration was recorded, or ended it: nothing to cancel
            self.say(f"nothing to cancel ({task_state}): starting again")
            self.step("migrate", self.start)
            return
        self.say(f"cancelling ({task_state}), then starting again")
        for attempt in range(1, RERUNS + 1):
            time.sleep(0.5 * attempt)
            cancelled = run_module("share_migration", self.cancel, self.lab.base)
            if not cancelled.get("failed"):
                break
            self.say(f"cancel {attempt} failed: {cancelled.get('msg', '')[:200]}")
        else:
            self.fail("the cancel did not converge")
        self.check(cancelled["task_state"] == "migration_cancelled", f"cancel gave {cancelled['task_state']}")
        left = [p for p in subvolumes(self.lab, "storb", self.lab.pools("storb")["two"]) if self.name in p]
        self.check(left == [], f"the cancel left subvolumes of the share on storb: {left}")
        self.whole_somewhere("after the cancel")
        self.step("migrate", self.start)


def ok(result: dict, share: Share) -> dict:
    if result.get("failed"):
        share.fail(result.get("msg", "failed"))
    return result


def wait_for_no_sessions(lab, timeout=60) -> list[str]:
    deadline = time.monotonic() + timeout
    while lab_sessions(lab) and time.monotonic() < deadline:
        time.sleep(0.2)
    return lab_sessions(lab)


@pytest.mark.parametrize("name", SHARES)
def test_random_faults_in_btrfs_migrations_from_stora_to_storb_converge(ssh_lab, name):  # pylint: disable=redefined-outer-name
    lab = ssh_lab
    cases = [c.strip() for c in os.environ.get(CASES_ENV, "").split(",") if c.strip()]
    if cases and name not in cases:
        pytest.skip(f"{CASES_ENV} names {cases}")  # pylint: disable=not-callable
    share = Share(lab, name)
    share.say(f"{SEED_ENV}={SEED}: {FAULTS_PER_SHARE} faults, data_path {share.data_path}")
    direct_folders = set(glob.glob("/tmp/mobility-direct-*"))
    created = ok(run_module("share", {"backends": share.backends, "name": name, "pool": "stora@ab#one", "size": 1},
                            lab.base), share)
    share.source = created["share"]["export_location"]
    lab.ssh("stora", ["sh", "-c", FILL, "sh", share.source, "60", str(8 * 1024 * 1024)])
    ok(run_module("share_snapshot", {"backends": share.backends, "share": name, "name": "s1"}, lab.base), share)
    share.snapshot_reference = share.reference = walk(lab, "stora", share.source)

    share.step("migrate", share.start)
    # Users keep writing while the share stays writable: a rerun of phase 1 sends an increment.
    lab.ssh("stora", ["sh", "-c", 'head -c 4194304 /dev/urandom > "$1/later" && rm "$1/d0/f0"', "sh", share.source])
    share.reference = walk(lab, "stora", share.source)
    share.step("increment", share.start)
    # ...and until the window: phase 2 sends one more increment, then the last one read-only.
    lab.ssh("stora", ["sh", "-c", 'head -c 8388608 /dev/urandom > "$1/late" && echo more >> "$1/d4/f4"', "sh",
                      share.source])
    share.reference = walk(lab, "stora", share.source)
    share.step("complete", share.complete)

    # The share is on storb, its tree and its snapshot equal to the references, read on storb's disk.
    info = ok(run_module("share_info", {"backends": share.backends, "name": name}, lab.base), share)["shares"][0]
    share.check(info["task_state"] == "migration_success" and info["host"] == "storb@bb#two",
                f"the share ended {info['task_state']} at {info['host']}")
    two = lab.pools("storb")["two"]
    path = info["export_location"]
    share.check(path.startswith(two + "/"), f"the share is at {path}")
    diff = differences(share.reference, walk(lab, "storb", path))
    share.check(not diff, f"the share on storb differs from the reference: {diff[:5]}")
    diff = differences(share.snapshot_reference, walk(lab, "storb", f"{two}/snapshots/{name}/s1"))
    share.check(not diff, f"the snapshot on storb differs from its reference: {diff[:5]}")
    # Nothing left on either host: the source and its snapshot gone from stora; on storb, of this
    # share only the share and its snapshot (no half-received subvolume, no temporary snapshot).
    stora_pool = str(lab.hosts["stora"].mounts["btrfs"] / "one")
    share.check(subvolumes(lab, "stora", stora_pool) == [], f"left on stora: {subvolumes(lab, 'stora', stora_pool)}")
    mine = sorted(p for p in subvolumes(lab, "storb", two) if name in p)
    share.check(mine == sorted([os.path.relpath(path, lab.hosts["storb"].mounts["btrfs"]),
                                f"two/snapshots/{name}/s1"]), f"subvolumes of the share on storb: {mine}")
    listing = subvolumes(lab, "storb", two)
    share.check(not [p for p in listing if "/.mobility/" in p or "inc-" in p or "final" in p],
                f"temporary subvolumes on storb: {listing}")
    for host, pool in (("storb", two), ("stora", stora_pool)):
        share.check(remote_listing(lab, host, pool + "/.mobility/btrfs") == [],
                    f"staging left on {host}: {remote_listing(lab, host, pool + '/.mobility/btrfs')}")
        running = [argv_of(pid) for pid in btrfs_processes(lab.hosts[host])]
        share.check(running == [], f"btrfs processes left on {host}: {running}")
    left = wait_for_no_sessions(lab)
    share.check(left == [], f"ssh sessions left: {left}")
    streams = [argv_of(pid) for pid in lab.hosts["stora"].pids() if argv_of(pid)[:1] == ["ssh"]]
    share.check(streams == [], f"ssh to storb left running on stora: {streams}")
    # A killed controller leaves the private known_hosts folder of its direct stream (public keys
    # only, mode 0700; docs/hosts.md): removed here, only those holding this lab's storb key (other
    # runs on this machine may have theirs in /tmp at the same time).
    storb_key = Path(f"{lab.hosts['storb'].host_key}.pub").read_text(encoding="utf-8").split()[1]
    for folder in set(glob.glob("/tmp/mobility-direct-*")) - direct_folders:
        try:
            held = Path(folder, "known_hosts").read_text(encoding="utf-8").split()
        except OSError:
            continue
        if storb_key in held:
            share.check(os.stat(folder).st_mode & 0o777 == 0o700, f"{folder} is open to others")
            shutil.rmtree(folder)
    stop_lab_masters(lab)
    share.say(f"converged: {share.hits} faults hit, the trees equal entry by entry on storb, nothing left")
    share.check(share.hits >= 1, "no fault hit this share")
