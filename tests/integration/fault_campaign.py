"""A seeded fault-injection campaign against the phase playbooks (used by test_fault_campaign.py).

The campaign migrates many small shares between two pools with the operator's playbooks
(``migrate_share.yml``, ``complete_share_migration.yml``, ``cancel_share_migration.yml``) and
injects one fault into most runs. A fault is a *point* drawn from a seeded random stream:

* ``group``: SIGKILL to the whole playbook run, after a random delay within the phase's measured
  duration: ``ansible-playbook``'s process group and the sessions of its workers (Ansible's worker
  processes call setsid(), so a kill of the process group alone would let the running task and
  its module finish), as a crash of the controller would;
* ``module``: SIGKILL to the AnsiballZ process of ``share_migration`` only (the playbook goes on
  and sees its task die), the first one alive at or after a random delay within the span in which
  that phase's ``share_migration`` calls ran;
* ``worker``: SIGKILL to the detached ``data_copy`` worker of the migration's copy job, a random
  part of its measured lifetime after it started (host-assisted only);
* ``copy``: SIGKILL to a ``btrfs send`` or ``btrfs receive`` process of the migration, the first
  alive at or after a random delay within the span in which they ran (btrfs only);
* ``crash``: the run is started with ``STORAGE_MOBILITY_CRASH_AFTER`` set to one of the crash
  points the code has for that phase (records in store.py, steps in drivers/share/btrfs.py): the
  module dies with exit code 70 right after that step, as in a power cut.

After a fault the campaign reruns the same playbook (the next point may kill the rerun too), or
sometimes cancels instead and starts again. Once a share has taken its points, clean runs finish
it. Then every check of :meth:`Campaign.check_case` must hold: the share is available in the
destination pool with ``task_state`` ``migration_success``, its tree is identical entry by entry
to the pristine reference (:func:`walk` is this module's own walk, independent of the collection),
and nothing is left behind. Between runs the data must be intact: the source, while it exists,
equals the reference; once it is gone, the destination does.

Which phase playbook a point hits follows from the share's ``task_state`` when the point comes;
the points themselves (targets, random fractions, follow-ups) come from a stream of their own per
share, seeded by ``MOBILITY_FAULT_SEED``, mechanism and share number, so a seed replays the same
points, also for one share alone (``MOBILITY_FAULT_CASES=host03``) and whatever ran beside it.
Shares run in ``MOBILITY_FAULT_LANES`` threads (default 2), one playbook per lane at a time.
Durations and spans are measured on a calibration share migrated without faults first, and
updated by every run that was not killed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import stat
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hostmig_lab import (
    CANCEL, COMPLETE, CRASH_ENV, MIGRATE, MOUNT_TMP, Lab, Run, alive, job_state_dir, mounts, mounts_below)

SEED_ENV = "MOBILITY_FAULT_SEED"
POINTS_ENV = "MOBILITY_FAULT_POINTS"
LANES_ENV = "MOBILITY_FAULT_LANES"
CASES_ENV = "MOBILITY_FAULT_CASES"
DEFAULT_POINTS = 20
DEFAULT_LANES = 2
HOST = "stor1"
POLL = 0.04
# A share that has taken its faults is finished by clean runs: this many in a row at most.
CLEAN_RUN_LIMIT = 4
# A case never takes more runs than this (a guard against a loop that does not converge).
RUN_LIMIT = 30
# Points drawn per share at most, as a multiple of its faults (a point that misses is drawn again).
DRAW_LIMIT = 4
FOLLOW_CANCEL = 0.25
# Faults per share (from, to): more per share means fewer clean runs to finish the shares.
CASE_FAULTS = (4, 6)

# Crash points of each phase (globs of STORAGE_MOBILITY_CRASH_AFTER), as the code has them.
CRASHES = {
    "host": {
        "migrate": ("migration * requested*", "source read-only, destination created", "data node * copying*",
                    "copy verified", "phase 1 done*"),
        "complete": ("switchover started", "final pass verified", "destination available, source inactive",
                     "migration * completed: share now in *"),
    },
    "posix": {
        "migrate": ("migration * requested", "destination instance created", "driver migration started",
                    "phase 1 done"),
        "complete": ("switchover started", "destination available, source inactive",
                     "migration * completed: share now in *"),
    },
    "btrfs": {
        "migrate": ("migration * requested", "destination instance created", "driver migration started",
                    "btrfs sending snapshot *", "btrfs received snapshot *", "btrfs sending increment *",
                    "btrfs received increment *", "phase 1 done", "phase 1 refreshed*"),
        "complete": ("switchover started", "btrfs sending increment *", "btrfs received increment *",
                     "btrfs source read-only", "btrfs sending final", "btrfs received final",
                     "btrfs destination placed", "destination available, source inactive",
                     "migration * completed: share now in *"),
    },
}
CANCEL_CRASHES = ("cancel requested", "migration cancelled")
# Kinds of fault per mechanism, with their weights.
TARGETS = {
    "host": (("group", 3), ("module", 3), ("worker", 3), ("crash", 4)),
    "posix": (("group", 1), ("module", 1), ("crash", 1)),
    "btrfs": (("group", 3), ("module", 3), ("copy", 2), ("crash", 4)),
}
IDLE = (None, "migration_cancelled", "migration_error", "data_copying_error", "data_copying_cancelled")
PHASE1_DONE = ("data_copying_completed", "migration_driver_phase1_done")
# Findings of this kind are job folders (and their lock files) that outlive their migration.
JOB_FOLDERS = "job folders left behind"


def campaign_seed() -> int:
    value = os.environ.get(SEED_ENV, "").strip()
    if value:
        try:
            return int(value)
        except ValueError:
            raise AssertionError(f"{SEED_ENV}={value!r} is not a whole number") from None
    return random.SystemRandom().randrange(1, 10 ** 9)


def _whole(name: str, default: int, least: int = 1) -> int:
    value = os.environ.get(name, "").strip()
    try:
        number = int(value) if value else default
    except ValueError:
        raise AssertionError(f"{name}={value!r} is not a whole number") from None
    if number < least:
        raise AssertionError(f"{name} must be at least {least}, not {number}")
    return number


def lanes_wanted() -> int:
    """Cases run side by side (each lane is one playbook at a time)."""
    return _whole(LANES_ENV, DEFAULT_LANES)


def only_cases(mechanism: str) -> list[int] | None:
    """MOBILITY_FAULT_CASES=host03,btrfs01: replay only these cases (after the calibration)."""
    value = os.environ.get(CASES_ENV, "").strip()
    if not value:
        return None
    picked = []
    for item in value.split(","):
        item = item.strip()
        if item.startswith(mechanism) and item[len(mechanism):].isdigit():
            picked.append(int(item[len(mechanism):]))
    return picked


def points_wanted() -> int:
    """Faults that must hit per mechanism."""
    return _whole(POINTS_ENV, DEFAULT_POINTS)


# ------------------------------------------------------------------------------------------ trees

ODD_NAMES = (b"with space", b"new\nline", b"caf\xe9-latin1", b"-leading-dash", b"\xf0\x9f\x93\x81 emoji",
             b"star*question?", b"back\\slash", b"'quote\"", b"x" * 200)


def make_tree(root: Path, seed: int, files: int = 240) -> None:
    """A small tree with what a migration must keep: contents, modes, owners, nanosecond times,
    hard links, symlinks (relative, absolute, dangling, to a folder), xattrs, ACLs, a sparse file,
    a fifo, a device node, empty folders and files, setgid and sticky folders, odd names."""
    rng = random.Random(seed)
    root = os.fsencode(root)
    os.makedirs(root, exist_ok=True)
    base_ns = 1_600_000_000_000_000_000 + seed * 1_000_003

    def write(path: bytes, size: int) -> None:
        with open(path, "wb") as handle:
            handle.write(rng.randbytes(size))

    folders = [os.path.join(root, b"d%02d" % (i % 6), b"sub%d" % (i % 3)) for i in range(18)]
    for index in range(files):
        folder = folders[index % len(folders)]
        os.makedirs(folder, exist_ok=True)
        size = rng.choice((0, 1, 100, 1000, 4096, 5000, 20000)) if index % 40 else rng.choice((65536, 300000))
        path = os.path.join(folder, b"f%04d.dat" % index)
        write(path, size)
        os.chmod(path, rng.choice((0o644, 0o600, 0o640, 0o755, 0o444, 0o700)))
    extras = os.path.join(root, b"extras")
    os.makedirs(os.path.join(extras, b"empty", b"nested-empty"), exist_ok=True)
    for name in ODD_NAMES:
        write(os.path.join(extras, name), 321)
    open(os.path.join(extras, b"empty-file"), "wb").close()
    write(os.path.join(extras, b"hard-a"), 5000)
    os.link(os.path.join(extras, b"hard-a"), os.path.join(extras, b"hard-b"))
    os.link(os.path.join(extras, b"hard-a"), os.path.join(root, b"d00", b"hard-c"))
    write(os.path.join(root, b"d01", b"pair-1"), 777)
    os.link(os.path.join(root, b"d01", b"pair-1"), os.path.join(root, b"d02", b"pair-2"))
    os.symlink(b"hard-a", os.path.join(extras, b"link-relative"))
    os.symlink(b"/nonexistent/target", os.path.join(extras, b"link-dangling"))
    os.symlink(b"../d03", os.path.join(extras, b"link-to-folder"))
    os.symlink(b"link-self", os.path.join(extras, b"link-self"))
    sparse = os.path.join(extras, b"sparse.img")
    with open(sparse, "wb") as handle:
        handle.write(b"head")
        handle.seek(3 << 20)
        handle.write(rng.randbytes(5000))
        handle.truncate(6 << 20)
    os.mkfifo(os.path.join(extras, b"fifo"), 0o640)
    os.mknod(os.path.join(extras, b"null-device"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.setxattr(os.path.join(extras, b"hard-a"), b"user.mobility", b"kept")
    os.setxattr(os.path.join(extras, ODD_NAMES[0]), b"user.binary", b"\x00\x01\xff")
    os.setxattr(os.path.join(root, b"d04"), b"user.folder", b"on a folder")
    for argv in (["setfacl", "-m", "u:12345:rw,g:2345:r", "--", os.path.join(extras, b"hard-a")],
                 ["setfacl", "-d", "-m", "g:2345:rx", "--", os.path.join(root, b"d05")]):
        subprocess.run(argv, check=True, capture_output=True)
    os.lchown(os.path.join(extras, ODD_NAMES[1]), 4242, 4343)
    os.lchown(os.path.join(extras, b"link-relative"), 4242, 4343)
    os.chown(os.path.join(root, b"d03"), 4242, 4343)
    setgid = os.path.join(extras, b"setgid")
    os.mkdir(setgid)
    os.chmod(setgid, 0o2775)
    sticky = os.path.join(extras, b"sticky")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    # Nanosecond times on everything, folders last (bottom-up), symlinks without following them.
    count = 0
    for folder, dirs, names in os.walk(root, topdown=False):
        for name in sorted(names) + sorted(dirs):
            count += 1
            os.utime(os.path.join(folder, name), ns=(base_ns + count * 7, base_ns + count * 1_000_001),
                     follow_symlinks=False)
    os.utime(root, ns=(base_ns, base_ns + 999))


def change_tree(root: Path, rng: random.Random, round_no: int) -> None:
    """A user's changes between two runs (btrfs, where the share stays writable in phase 1)."""
    root = Path(root)
    (root / "user").mkdir(exist_ok=True)
    (root / "user" / f"new-{round_no}.txt").write_bytes(rng.randbytes(rng.choice((10, 4000, 70000))))
    victims = sorted((root / "d00").glob("sub*/f*.dat"))
    if victims:
        victim = victims[rng.randrange(len(victims))]
        os.chmod(victim, 0o644)
        with open(victim, "ab") as handle:
            handle.write(b"changed in round %d\n" % round_no)
    gone = sorted((root / "d01").glob("sub*/f*.dat"))
    if gone:
        gone[rng.randrange(len(gone))].unlink()


def _xattrs(path: bytes) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in sorted(names):
        if name.startswith("trusted.SGI_ACL_"):
            continue  # XFS's own copy of the POSIX ACLs, which are compared as system.posix_acl_*
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=False).hex()
        except OSError as exc:
            found[name] = f"unreadable: {exc.strerror}"
    return found


def _content(path: bytes) -> tuple[str, list]:
    """SHA-256 of the content and the data extents (SEEK_DATA/SEEK_HOLE), so lost holes show."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        size = os.fstat(handle.fileno()).st_size
        extents = []
        offset = 0
        while offset < size:
            try:
                start = os.lseek(handle.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(handle.fileno(), start, os.SEEK_HOLE)
            extents.append((start, end))
            offset = end
    return digest.hexdigest(), extents


def walk(root: Path) -> dict:
    """Every entry of a tree (the root included, as ``.``) with its type, mode, owner, size,
    nanosecond mtime, content hash, holes, symlink target, device number, xattrs (ACLs too),
    plus the hard-link groups. Independent of the collection's own tree tools."""
    root = os.fsencode(root)
    entries = {}
    inodes = {}
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for path in ([folder] if folder == root else []) + [os.path.join(folder, n) for n in sorted(dirs + names)]:
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            entry = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid,
                     "mtime_ns": st.st_mtime_ns, "xattrs": _xattrs(path)}
            if stat.S_ISREG(kind):
                entry["size"] = st.st_size
                entry["sha256"], extents = _content(path)
                # Holes: the same amount of data allocated within a few blocks (file systems round).
                entry["data_bytes"] = sum(end - start for start, end in extents) // 65536
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
                entry["nlink"] = st.st_nlink
            elif stat.S_ISLNK(kind):
                entry["target"] = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                entry["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            entries[rel] = entry
    return {"entries": entries, "hardlinks": sorted(sorted(group) for group in inodes.values())}


def tree_differences(expected: dict, actual: dict, limit: int = 12) -> list[str]:
    """What differs between two walks, entry by entry (empty when identical)."""
    problems = []
    left, right = expected["entries"], actual["entries"]
    for rel in sorted(set(left) - set(right)):
        problems.append(f"missing {rel!r}")
    for rel in sorted(set(right) - set(left)):
        problems.append(f"extra {rel!r}")
    for rel in sorted(set(left) & set(right)):
        if left[rel] != right[rel]:
            keys = sorted(k for k in set(left[rel]) | set(right[rel]) if left[rel].get(k) != right[rel].get(k))
            problems.append(f"{rel!r} differs in " + ", ".join(
                f"{k} ({left[rel].get(k)!r} -> {right[rel].get(k)!r})" for k in keys))
    if expected["hardlinks"] != actual["hardlinks"]:
        problems.append(f"hard-link groups differ: {expected['hardlinks']} -> {actual['hardlinks']}")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems


# ------------------------------------------------------------------------------------------ processes


def process_table() -> dict:
    """{pid: (state, ppid, session, start time)} of every process, from one pass over /proc (the
    start time, in clock ticks since boot, tells a process from a later one that got its pid)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
        except OSError:
            continue
        try:
            data = os.read(fd, 1024)
        except OSError:
            continue
        finally:
            os.close(fd)
        fields = data[data.rfind(b")") + 2:].split()
        try:
            table[int(name)] = (fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19]))
        except (IndexError, ValueError):
            continue
    return table


def run_sessions(table: dict, playbook_pid: int) -> set:
    """The sessions of a playbook run: its own, and those of its workers (Ansible's worker
    processes call setsid(), so the task they run is not in the playbook's process group)."""
    return {playbook_pid} | {pid for pid, (_state, ppid, _sid, _start) in table.items() if ppid == playbook_pid}


def members(table: dict, sessions: set, leaders: dict | None = None) -> list[int]:
    """The live processes of ``sessions``. With ``leaders`` ({session id: its leader's start time}
    when the sessions were found), a session whose id now belongs to a later process is not one of
    them: once every process of a session is gone, Linux gives its id to the next new process, and
    the pid space here is small (32768), so that process may be a copy worker of another test."""
    leaders = leaders or {}
    return sorted(pid for pid, (state, _ppid, sid, _start) in table.items()
                  if sid in sessions and state not in "ZXx"
                  and not (leaders and sid in table and table[sid][3] != leaders.get(sid)))


def cmdline(pid: int) -> list[bytes]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def live_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def kill_run(playbook_pid: int, sessions: set) -> int:
    """SIGKILL every process of a playbook run (its group and its workers' sessions) until none is
    left, as a crash of the controller would; returns how many were killed besides the group."""
    killed = set()
    leaders = {pid: entry[3] for pid, entry in process_table().items() if pid in sessions}
    try:
        os.killpg(playbook_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while True:
        left = members(process_table(), sessions, leaders)
        if not left:
            return len(killed)
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of a killed playbook run survive SIGKILL: {left}")
        for pid in left:
            if _kill(pid):
                killed.add(pid)
        time.sleep(0.02)


def is_module(argv: list[bytes]) -> bool:
    return any(a.endswith(b"AnsiballZ_share_migration.py") for a in argv)


def is_btrfs_copy(argv: list[bytes], base: Path) -> bool:
    return (len(argv) > 2 and argv[0].endswith(b"btrfs") and argv[1] in (b"send", b"receive")
            and any(os.fsencode(str(base)) in a for a in argv))


def processes_mentioning(*needles) -> list[str]:
    """Live processes whose command line contains one of ``needles``: ``pid: argv``."""
    wanted = [os.fsencode(str(n)) for n in needles if n]
    found = []
    me = os.getpid()
    for pid in live_pids():
        if pid == me:
            continue
        argv = cmdline(pid)
        if argv and any(w in a for a in argv for w in wanted) and alive(pid):
            found.append(f"{pid}: {b' '.join(argv)[:200].decode(errors='replace')}")
    return found


def worker_pid(job: str) -> int | None:
    """The live worker of a data_copy job, from its pid file, checked against its command line."""
    folder = job_state_dir() / job
    try:
        pid = int((folder / "worker.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if alive(pid) and any(os.fsencode(str(folder)) in a for a in cmdline(pid)):
        return pid
    return None


# ------------------------------------------------------------------------------------------ points


@dataclass
class Point:
    """One draw of the stream. Its phase (and with it the delay and the crash event) is resolved
    when it is used, from the share's state."""
    index: int
    target: str
    fraction: float
    pick: float
    then: str

    def crash_event(self, events: tuple) -> str:
        return events[min(int(self.pick * len(events)), len(events) - 1)]


def draw_point(rng: random.Random, mechanism: str, index: int) -> Point:
    kinds = TARGETS[mechanism]
    target = rng.choices([k for k, _w in kinds], weights=[w for _k, w in kinds])[0]
    return Point(index, target, rng.random(), rng.random(), "cancel" if rng.random() < FOLLOW_CANCEL else "rerun")


@dataclass
class Span:
    """When something was seen during a run, in seconds from the run's start."""
    first: float | None = None
    last: float | None = None

    def see(self, at: float) -> None:
        self.first = at if self.first is None else min(self.first, at)
        self.last = at if self.last is None else max(self.last, at)


@dataclass
class Timing:
    """Measured durations and spans of one phase of one mechanism: the median of the runs that
    were not killed (the machine's load moves them; a median follows it without the outliers)."""
    durations: list = field(default_factory=list)
    seen: dict = field(default_factory=lambda: {"module": [], "copy": []})
    worker_lives: list = field(default_factory=list)

    @property
    def duration(self) -> float:
        return statistics.median(self.durations) if self.durations else 0.0

    @property
    def worker_life(self) -> float:
        return statistics.median(self.worker_lives) if self.worker_lives else 0.0

    def span(self, kind: str) -> Span:
        seen = self.seen[kind]
        if not seen:
            return Span()
        return Span(statistics.median(s.first for s in seen), statistics.median(s.last for s in seen))

    def learn(self, duration: float, spans: dict, worker_life: float) -> None:
        self.durations.append(duration)
        for kind, span in spans.items():
            if span.first is not None:
                self.seen[kind].append(span)
        if worker_life:
            self.worker_lives.append(worker_life)


@dataclass
class Outcome:
    run: Run
    hit: bool
    detail: str
    seconds: float
    target: str | None


# ------------------------------------------------------------------------------------------ labs


class FaultLab(Lab):
    """The pools of one mechanism, built once and used for many shares.

    * ``host``: an ext4 and an xfs filesystem (hostmig_lab's layout): host-assisted copies.
    * ``posix``: two pools as folders of one ext4 filesystem: driver-assisted, by rename.
    * ``btrfs``: two btrfs filesystems: driver-assisted, send/receive, with snapshots.
    All export with the ``bind`` helper below ``<base>/exports``.
    """

    IMAGE_MB = {"host": 300, "posix": 300, "btrfs": 256}

    def __init__(self, tmp_path: Path, collections: Path, mechanism: str):
        super().__init__(tmp_path, collections)
        self.mechanism = mechanism
        self.backend_name = {"host": "generic1", "posix": "rename1", "btrfs": "bt1"}[mechanism]
        self.alpha = f"{HOST}@{self.backend_name}#alpha"
        self.beta = f"{HOST}@{self.backend_name}#beta"
        if mechanism == "posix":
            self.pools = {"alpha": tmp_path / "fs" / "alpha", "beta": tmp_path / "fs" / "beta"}
        elif mechanism == "btrfs":
            self.pools = {"alpha": tmp_path / "mnt" / "a" / "alpha", "beta": tmp_path / "mnt" / "b"}
        self.log_lock = threading.Lock()
        self.flags = {} if mechanism == "host" else {"writable": True, "preserve_metadata": True,
                                                     "preserve_snapshots": True}

    def open(self) -> "FaultLab":
        if self.mechanism == "host":
            super().open()
            assert self.root, "the campaign needs root (loop devices, bind exports)"
            return self
        disks = self.base / "disks"
        disks.mkdir(parents=True)
        self.exports.mkdir(parents=True)
        self.work.mkdir(parents=True)
        if self.mechanism == "posix":
            layout = [("fs", ["mkfs.ext4", "-q", "-F", "-I", "256"], self.base / "fs")]
        else:
            layout = [(tag, ["mkfs.btrfs", "-q", "-f"], self.base / "mnt" / tag) for tag in ("a", "b")]
        for tag, mkfs, point in layout:
            image = disks / f"{tag}.img"
            point.mkdir(parents=True)
            subprocess.run(["truncate", "-s", f"{self.IMAGE_MB[self.mechanism]}M", str(image)], check=True)
            subprocess.run(mkfs + [str(image)], check=True, capture_output=True)
            self.images.append(image)
            subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True)
        if self.mechanism == "posix":
            for path in self.pools.values():
                path.mkdir()
        else:
            subprocess.run(["btrfs", "subvolume", "create", str(self.pools["alpha"])], check=True, capture_output=True)
        backend = {"name": self.backend_name, "driver": "btrfs" if self.mechanism == "btrfs" else "posix",
                   "host": HOST, "pools": dict((n, {"path": str(p)}) for n, p in self.pools.items()),
                   "export": {"helper": "bind", "root": str(self.exports)}}
        self.backends = [backend]
        inventory = {"all": {
            "hosts": {"localhost": {"ansible_connection": "local",
                                    "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
            "vars": {"mobility_backends": self.backends},
            "children": {"data_nodes": {"hosts": {"localhost": {}}}}}}
        self.inventory.write_text(json.dumps(inventory, indent=2) + "\n", encoding="utf-8")
        return self

    def _log(self, playbook: Path) -> Path:
        with self.log_lock:
            return super()._log(playbook)

    # -- shares, in-process (creating shares is not what the campaign tests) ----------------------
    def manager(self):
        from ansible_collections.storage.mobility.plugins.module_utils.context import Context
        from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
        return ShareManager(Context(self.backends))

    def create_share(self, name: str) -> None:
        self.manager().present(name, self.alpha, 1, None, None, None,
                               [{"access_to": "127.0.0.1", "access_level": "rw"}])
        self.shares.add(name)

    def snapshot(self, share: str, snapshot: str) -> None:
        self.manager().snapshot_present(share, snapshot)

    def snapshot_path(self, share: str, snapshot: str, pool: str) -> Path:
        return self.pools[pool] / "snapshots" / share / snapshot

    # -- playbooks -----------------------------------------------------------------------------
    def playbook_vars(self, phase: str, share: str) -> tuple[Path, dict]:
        if phase == "migrate":
            return MIGRATE, dict({"share": share, "destination_pool": self.beta, "mobility_poll_seconds": 1},
                                 **self.flags)
        if phase == "complete":
            return COMPLETE, {"share": share, "mobility_poll_seconds": 1}
        return CANCEL, {"share": share}

    def subvolumes(self) -> list[str]:
        found = []
        for tag, point in (("a", self.base / "mnt" / "a"), ("b", self.base / "mnt" / "b")):
            out = subprocess.run(["btrfs", "subvolume", "list", str(point)], capture_output=True, text=True,
                                 check=True).stdout
            found += [f"{tag}:{line.split(' path ', 1)[1]}" for line in out.splitlines() if " path " in line]
        return sorted(found)


# ------------------------------------------------------------------------------------------ campaign


@dataclass
class Case:
    number: int
    share: str
    wanted: int
    points: random.Random
    changes_rng: random.Random
    reference: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)
    migrations: list = field(default_factory=list)
    hits: int = 0
    runs: int = 0
    drawn: int = 0
    changes: int = 0
    refreshes: int = 0


class Campaign:
    """Runs the points of one mechanism against one lab and collects findings."""

    def __init__(self, lab: FaultLab, seed: int, wanted: int, say):
        self.lab = lab
        self.mechanism = lab.mechanism
        self.seed = seed
        self.wanted = wanted
        self.say = say
        self.drawn = 0
        self.hits = 0
        self.lock = threading.Lock()
        self.timing = {phase: Timing() for phase in ("migrate", "complete", "cancel")}
        self.findings: list[dict] = []
        self.log: list[str] = []
        self.cases: list[Case] = []
        self.kinds_hit: dict = {}

    # -- reporting -------------------------------------------------------------------------------
    def note(self, line: str) -> None:
        with self.lock:
            self.log.append(line)
            self.say(line)

    def find(self, case: Case | None, kind: str, detail: str, point: str = "") -> None:
        finding = {"mechanism": self.mechanism, "seed": self.seed, "share": case.share if case else None,
                   "kind": kind, "detail": detail, "point": point}
        with self.lock:
            self.findings.append(finding)
        self.note(f"  FINDING [{kind}] {detail}" + (f" (after {point})" if point else ""))

    # -- records ---------------------------------------------------------------------------------
    def record(self, share: str) -> dict:
        found = self.lab.records(share)
        if not found:
            return {}
        return max(found.values(), key=lambda r: int(r.get("revision", 0)))

    def remember_migration(self, case: Case) -> str | None:
        mig = (self.record(case.share).get("migration") or {}).get("id")
        if mig and mig not in case.migrations:
            case.migrations.append(mig)
            self.lab.migration_ids.add(mig)
        return mig

    def next_phase(self, record: dict) -> str | None:
        ts = record.get("task_state")
        mig = record.get("migration") or {}
        if ts == "migration_success" and record.get("host") == self.lab.beta:
            return None
        if ts == "migration_cancel_in_progress":
            return "cancel"
        if ts in PHASE1_DONE or ts == "migration_completing":
            return "complete"
        if ts in IDLE or ts == "migration_success" or not mig:
            return "migrate"
        return "migrate"  # phase 1 pending: a rerun attaches

    # -- one playbook run, with or without a fault -----------------------------------------------
    def execute(self, case: Case, phase: str, point: Point | None) -> tuple[Outcome, str]:
        lab = self.lab
        timing = self.timing[phase]
        playbook, extra = lab.playbook_vars(phase, case.share)
        env = {}
        target = point.target if point else None
        if phase == "cancel" and target in ("worker", "copy"):
            target = "group"  # a cancel copies nothing: its run is killed instead
        kill_at = None
        describe = "clean"
        if target == "crash":
            events = CANCEL_CRASHES if phase == "cancel" else CRASHES[self.mechanism][phase]
            event = point.crash_event(events)
            env[CRASH_ENV] = event
            describe = f"crash after {event!r}"
        elif target == "group":
            estimate = timing.duration or self.timing["migrate"].duration * 0.6
            kill_at = point.fraction * estimate
            describe = f"SIGKILL the whole playbook run at {kill_at:.2f}s of {estimate:.1f}s"
        elif target in ("module", "copy"):
            span = timing.span(target)
            if span.first is None:
                estimate = timing.duration or self.timing["migrate"].duration * 0.6
                kill_at = point.fraction * estimate
                describe = f"SIGKILL the first {target} process alive at or after {kill_at:.2f}s of {estimate:.1f}s"
            else:
                kill_at = span.first + point.fraction * (span.last - span.first)
                describe = (f"SIGKILL the first {target} process alive at or after {kill_at:.2f}s "
                            f"(span {span.first:.2f}-{span.last:.2f}s)")
        elif target == "worker":
            kill_at = point.fraction * max(timing.worker_life, 0.3)
            describe = f"SIGKILL the copy worker {kill_at:.2f}s after it started (lifetime {timing.worker_life:.2f}s)"
        label = f"[{case.share} " + (f"#{point.index}]" if point else "clean]") + f" {phase}: {describe}"

        proc, log = lab.spawn(playbook, extra, env)
        sid = proc.pid
        start = time.monotonic()
        spans = {"module": Span(), "copy": Span()}
        worker_seen: dict = {}
        hit = False
        detail = ""
        mig_id = None
        next_record_read = 0.0
        while proc.poll() is None:
            now = time.monotonic() - start
            table = process_table()
            sessions = run_sessions(table, sid)
            modules, copies = [], []
            for pid in members(table, sessions):
                if pid == sid:
                    continue
                argv = cmdline(pid)
                if is_module(argv):
                    modules.append(pid)
                elif self.mechanism == "btrfs" and is_btrfs_copy(argv, lab.base):
                    copies.append((pid, argv[1].decode()))
            if modules:
                spans["module"].see(now)
            if copies:
                spans["copy"].see(now)
            if self.mechanism == "host":
                if now >= next_record_read:
                    mig_id = (self.record(case.share).get("migration") or {}).get("id") or mig_id
                    next_record_read = now + 0.1
                if mig_id:
                    for job in (mig_id, mig_id + "-final"):
                        pid = worker_pid(job)
                        if pid:
                            seen = worker_seen.setdefault(pid, [now, now, job])
                            seen[1] = now
            if not hit and kill_at is not None and now >= kill_at:
                if target == "group":
                    count = kill_run(sid, sessions)
                    hit, detail = True, f"killed the run (its process group and {count} more processes) at {now:.2f}s"
                    break
                elif target == "module" and modules:
                    victim = modules[0]
                    if _kill(victim):
                        hit, detail = True, f"killed share_migration pid {victim} at {now:.2f}s"
                elif target == "copy" and copies:
                    victim, which = copies[int(point.pick * len(copies)) % len(copies)]
                    if _kill(victim):
                        hit, detail = True, f"killed btrfs {which} pid {victim} at {now:.2f}s"
            if not hit and target == "worker":
                for pid, (first, _last, job) in worker_seen.items():
                    # Still that job's worker: a pid seen earlier may since belong to another process.
                    if now - first >= kill_at and worker_pid(job) == pid and _kill(pid):
                        hit, detail = True, f"killed worker pid {pid} of job {job} {now - first:.2f}s after it started"
                        break
            time.sleep(POLL)
        seconds = time.monotonic() - start
        run = lab.finish(proc, log)
        if target == "crash":
            hit = run.crashed
            detail = "died at the crash point (exit 70)" if hit else "the crash point was not reached"
        elif target and not hit:
            detail = "missed: nothing to kill before the run ended"
        worker_life = max((last - first for first, last, _job in worker_seen.values()), default=0.0)
        if not hit:
            timing.learn(seconds, spans, worker_life)
        line = f"{label} -> {'HIT: ' + detail if hit else (detail or 'done')}; rc {run.rc} in {seconds:.1f}s"
        return Outcome(run, hit, detail, seconds, target), line

    # -- checks ------------------------------------------------------------------------------------
    def check_data(self, case: Case, after: str) -> None:
        """The data is never lost or changed: the source while it exists, else the destination."""
        source = self.lab.share_path(case.share, "alpha")
        destination = self.lab.share_path(case.share, "beta")
        if source.exists():
            differences = tree_differences(case.reference, walk(source))
            if differences:
                self.find(case, "source changed", f"{source}: {'; '.join(differences)}", after)
        elif destination.exists():
            record = self.record(case.share)
            dst_inst = [i for i in record.get("instances", []) if i.get("pool") == self.lab.beta]
            differences = tree_differences(case.reference, walk(destination))
            if differences:
                self.find(case, "destination differs, source gone",
                          f"the source was deleted and the destination differs (record: "
                          f"{record.get('task_state')}, destination instance {dst_inst}): {'; '.join(differences)}",
                          after)
        else:
            self.find(case, "data lost", "neither the source nor the destination instance exists", after)

    def check_cancelled(self, case: Case, after: str) -> None:
        lab = self.lab
        record = self.record(case.share)
        problems = []
        if record.get("task_state") != "migration_cancelled":
            problems.append(f"task_state {record.get('task_state')}")
        if record.get("status") != "available":
            problems.append(f"status {record.get('status')}")
        instances = [(i.get("pool"), i.get("status")) for i in record.get("instances", [])]
        if instances != [(lab.alpha, "available")]:
            problems.append(f"instances {instances}")
        if sorted(lab.records(case.share)) != ["alpha"]:
            problems.append(f"records in {sorted(lab.records(case.share))}")
        if lab.share_path(case.share, "beta").exists():
            problems.append("the destination instance is still there")
        problems += self._export_problems(case.share, lab.share_path(case.share, "alpha"))
        source = lab.share_path(case.share, "alpha")
        if source.exists():
            problems += tree_differences(case.reference, walk(source))
        else:
            problems.append("the source instance is missing")
        if problems:
            self.find(case, "cancel", "after a cancel: " + "; ".join(problems), after)

    def _export_problems(self, share: str, instance: Path) -> list[str]:
        export = self.lab.exports / share
        stack = [m for m in mounts() if m["point"] == str(export)]
        problems = []
        # An export is the read-only base (a small tmpfs named storage-mobility-base, so that the
        # path never shows a writable folder) with the share's bind mount on it, and nothing else.
        base = [m for m in stack[:1] if m["fstype"] == "tmpfs" and m["source"] == "storage-mobility-base"
                and "ro" in m["options"].split(",")]
        if not base or len(stack) != 2:
            problems.append(f"mounts at the export {export} are {[(m['fstype'], m['source']) for m in stack]}, "
                            "not the read-only base and the share")
        if stack and "rw" not in stack[-1]["options"].split(","):
            problems.append(f"the export is mounted {stack[-1]['options']}, not rw")
        try:
            served, wanted = os.stat(export), os.stat(instance)
            same = (served.st_dev, served.st_ino) == (wanted.st_dev, wanted.st_ino)
        except OSError as exc:
            same = False
            problems.append(f"cannot compare the export with {instance}: {exc}")
        if not same:
            problems.append(f"the export does not serve {instance}")
        return problems

    def check_case(self, case: Case, after: str) -> None:
        """The share is migrated, identical, and nothing is left behind."""
        lab = self.lab
        share = case.share
        record = self.record(share)
        problems = []
        if record.get("task_state") != "migration_success" or record.get("host") != lab.beta:
            problems.append(f"task_state {record.get('task_state')} in {record.get('host')}")
        if record.get("status") != "available":
            problems.append(f"status {record.get('status')}")
        instances = [(i.get("pool"), i.get("status")) for i in record.get("instances", [])]
        if instances != [(lab.beta, "available")]:
            problems.append(f"instances {instances}")
        if sorted(lab.records(share)) != ["beta"]:
            problems.append(f"records of the share in pools {sorted(lab.records(share))}")
        if problems:
            self.find(case, "not migrated", "; ".join(problems), after)
        destination = lab.share_path(share, "beta")
        if destination.exists():
            differences = tree_differences(case.reference, walk(destination))
            if differences:
                self.find(case, "tree differs", "; ".join(differences), after)
        else:
            self.find(case, "not migrated", f"{destination} does not exist", after)
        for snapshot, reference in case.snapshots.items():
            path = lab.snapshot_path(share, snapshot, "beta")
            differences = tree_differences(reference, walk(path)) if path.exists() else [f"{path} is missing"]
            if differences:
                self.find(case, "snapshot differs", f"snapshot {snapshot}: {'; '.join(differences)}", after)
        left = []
        if lab.share_path(share, "alpha").exists() or os.path.lexists(lab.share_path(share, "alpha")):
            left.append(f"a second instance {lab.share_path(share, 'alpha')}")
        if (lab.pools["alpha"] / "snapshots" / share).exists():
            left.append(f"snapshots in the source pool: {sorted(os.listdir(lab.pools['alpha'] / 'snapshots' / share))}")
        left += self._export_problems(share, destination)
        for mig in case.migrations:
            for job in (mig, mig + "-final"):
                points = mounts_below(MOUNT_TMP / job)
                if points:
                    left.append(f"mounts of job {job}: {points}")
                if (MOUNT_TMP / job).exists():
                    left.append(f"mount folder {MOUNT_TMP / job} ({sorted(os.listdir(MOUNT_TMP / job))})")
        needles = [lab.share_path(share, "alpha"), lab.share_path(share, "beta")]
        needles += [job_state_dir() / m for m in case.migrations] + [MOUNT_TMP / m for m in case.migrations]
        procs = processes_mentioning(*needles)
        if procs:
            left.append(f"processes: {procs}")
        for name, pool in lab.pools.items():
            meta = pool / ".mobility"
            for sub, kept in (("shares", f"{share}.json"), ("locks", f"{share}.lock")):
                for entry in sorted(os.listdir(meta / sub)) if (meta / sub).is_dir() else []:
                    if entry != kept and entry.lstrip(".").startswith(f"{share}."):
                        left.append(f"{meta / sub / entry}")
            trash = meta / "trash"
            mine = [e for e in sorted(os.listdir(trash)) if e.startswith((f"share-{share}.", f"snapshot-{share}-"))] \
                if trash.is_dir() else []
            if mine:
                left.append(f"trash in pool {name}: {mine}")
            for mig in case.migrations:
                staging = meta / "btrfs" / mig
                if os.path.lexists(staging):
                    left.append(f"staging folder {staging}: {sorted(os.listdir(staging)) if staging.is_dir() else ''}")
        if self.mechanism == "btrfs":
            temporary = [s for s in lab.subvolumes() if any(f".mobility/btrfs/{mig}/" in s for mig in case.migrations)]
            if temporary:
                left.append(f"temporary subvolumes {temporary}")
        if left:
            self.find(case, "left behind", "; ".join(left), after)
        jobs = []
        for mig in case.migrations:
            for job in (mig, mig + "-final"):
                if (job_state_dir() / job).exists():
                    jobs.append(str(job_state_dir() / job))
                if (job_state_dir() / f".{job}.lock").exists():
                    jobs.append(str(job_state_dir() / f".{job}.lock"))
        if jobs:
            self.find(case, JOB_FOLDERS, f"{len(jobs)} after migration_success: {jobs}", after)

    def check_lab(self) -> None:
        """At the end: one export mount per share, no playbook left running, no btrfs copy left."""
        lab = self.lab
        exports = sorted(m["point"] for m in mounts() if m["point"].startswith(str(lab.exports) + "/"))
        # Two mounts per exported share: its read-only base and the share on it (_export_problems).
        expected = sorted(str(lab.exports / s) for s in lab.shares for _layer in range(2))
        if exports != expected:
            self.find(None, "left behind", f"mounts under the export root {exports}, expected {expected}")
        for name, pool in lab.pools.items():
            meta = pool / ".mobility"
            for sub, suffix in (("shares", ".json"), ("locks", ".lock")):
                for entry in sorted(os.listdir(meta / sub)) if (meta / sub).is_dir() else []:
                    if not (entry.endswith(suffix) and entry[:-len(suffix)] in lab.shares):
                        self.find(None, "left behind", f"{meta / sub / entry} (a file for no share of the lab)")
            trash = meta / "trash"
            if trash.is_dir() and os.listdir(trash):
                self.find(None, "left behind", f"trash in pool {name}: {sorted(os.listdir(trash))}")
        procs = processes_mentioning(lab.inventory)
        if procs:
            self.find(None, "left behind", f"playbook processes still running: {procs}")
        if self.mechanism == "btrfs":
            copies = [p for p in live_pids() if alive(p) and is_btrfs_copy(cmdline(p), lab.base)]
            if copies:
                self.find(None, "left behind", f"btrfs send/receive processes still running: {copies}")
            temporary = [s for s in lab.subvolumes() if ".mobility" in s]
            if temporary:
                self.find(None, "left behind", f"temporary subvolumes {temporary}")
            expected = sorted(["a:alpha"] + [f"b:shares/{c.share}" for c in self.cases]
                              + [f"b:snapshots/{c.share}/{s}" for c in self.cases for s in c.snapshots])
            if lab.subvolumes() != expected:
                self.find(None, "left behind", f"subvolumes {lab.subvolumes()}, expected {expected}")
        for name, pool in lab.pools.items():
            staging = pool / ".mobility" / "btrfs"
            if staging.is_dir() and os.listdir(staging):
                self.find(None, "left behind", f"staging folders in pool {name}: {sorted(os.listdir(staging))}")

    # -- the cases ---------------------------------------------------------------------------------
    def new_case(self, number: int) -> Case:
        """Share ``<mechanism><number>`` with a fresh tree; its faults come from its own stream, so
        a case replays alone (MOBILITY_FAULT_CASES) and whatever ran beside it."""
        lab = self.lab
        stream = case_rng(self.seed, self.mechanism, number)
        case = Case(number=number, share=f"{self.mechanism}{number:02d}",
                    wanted=stream.randint(*CASE_FAULTS) if number else 0, points=stream,
                    changes_rng=random.Random(f"{self.seed}/{self.mechanism}/{number}/changes"))
        lab.create_share(case.share)
        source = lab.share_path(case.share, "alpha")
        make_tree(source, seed=self.seed % 100000 * 100 + number)
        if self.mechanism == "btrfs":
            for round_no, snapshot in enumerate(("s1", "s2")[:1 + number % 2]):
                lab.snapshot(case.share, snapshot)
                case.snapshots[snapshot] = walk(lab.snapshot_path(case.share, snapshot, "alpha"))
                change_tree(source, case.changes_rng, 100 + round_no)
        case.reference = walk(source)
        with self.lock:
            self.cases.append(case)
        return case

    def calibrate(self) -> None:
        """A share migrated without faults: the durations and spans of both phases, and a baseline
        (a clean migration must pass every check)."""
        case = self.new_case(0)
        for phase in ("migrate", "complete"):
            outcome, line = self.execute(case, phase, None)
            self.note(line)
            self.remember_migration(case)
            if outcome.run.rc != 0:
                self.find(case, "clean run failed", f"{phase}: {_tail(outcome.run)}", "calibration")
                return
        self.check_case(case, "calibration")
        for phase in ("migrate", "complete"):
            t = self.timing[phase]
            self.note(f"  measured {phase}: {t.duration:.1f}s, share_migration seen "
                      f"{_span(t.span('module'))}, btrfs copies {_span(t.span('copy'))}, "
                      f"copy worker lived {t.worker_life:.2f}s")

    def next_point(self, case: Case) -> Point | None:
        if case.drawn >= case.wanted * DRAW_LIMIT:
            return None
        case.drawn += 1
        with self.lock:
            self.drawn += 1
        return draw_point(case.points, self.mechanism, case.drawn)

    def run_case(self, case: Case) -> None:
        follow = None
        clean_in_a_row = 0
        last = "start"
        failed = False  # the last run failed (or was killed): an operator runs it again
        while case.runs < RUN_LIMIT:
            record = self.record(case.share)
            phase = "cancel" if follow == "cancel" else self.next_phase(record)
            if phase is None and failed:
                phase = "complete"  # the migration has ended, but the run that ended it failed
            if phase is None:
                break
            if self.mechanism == "btrfs" and phase != "cancel" and record.get("task_state") in PHASE1_DONE:
                # The share stays writable while the migration waits in phase 1 done: users write,
                # and phase 1 may be run again to send an increment before the switchover.
                if case.changes < 3 and case.changes_rng.random() < 0.5:
                    case.changes += 1
                    change_tree(self.lab.exports / case.share, case.changes_rng, case.changes)
                    case.reference = walk(self.lab.share_path(case.share, "alpha"))
                    self.note(f"[{case.share}] a user changed the share through its export (change {case.changes})")
                if case.refreshes < 2 and case.changes_rng.random() < 0.4:
                    case.refreshes += 1
                    phase = "migrate"
            point = self.next_point(case) if case.hits < case.wanted else None
            if point is None:
                clean_in_a_row += 1
                if clean_in_a_row > CLEAN_RUN_LIMIT:
                    self.find(case, "did not converge", f"{CLEAN_RUN_LIMIT} clean runs in a row did not end the "
                              f"migration: task_state {record.get('task_state')}, error "
                              f"{(record.get('migration') or {}).get('error')}", last)
                    return
            else:
                clean_in_a_row = 0
            outcome, line = self.execute(case, phase, point)
            case.runs += 1
            failed = outcome.hit or outcome.run.rc != 0
            self.note(line)
            self.remember_migration(case)
            if outcome.hit:
                case.hits += 1
                with self.lock:
                    self.hits += 1
                    key = (phase, outcome.target)
                    self.kinds_hit[key] = self.kinds_hit.get(key, 0) + 1
                last = line.split(" -> ", 1)[0]
            after = last if outcome.hit else f"a {'clean ' if point is None else 'missed '}{phase} run after {last}"
            self.check_data(case, after)
            record = self.record(case.share)
            if phase == "cancel":
                if record.get("task_state") == "migration_cancelled" and failed:
                    # A cancel whose run failed is run again before it is judged, as an operator
                    # would: a run killed after recording the cancel leaves the destination's
                    # removal as pending cleanup, which the next run on the share does.
                    _again, line = self.execute(case, "cancel", None)
                    case.runs += 1
                    self.note(line)
                    after = f"a clean cancel run after {last}"
                    record = self.record(case.share)
                if record.get("task_state") == "migration_cancelled":
                    self.check_cancelled(case, after)
                    follow = None
                elif outcome.run.rc != 0 and not outcome.hit and _switched(record, self.lab.beta):
                    follow = None  # refused: the switchover already switched; the completion finishes it
                elif record.get("task_state") == "migration_success" or record.get("task_state") in IDLE:
                    follow = None
                else:
                    follow = "cancel"
                    if not outcome.hit and outcome.run.rc != 0:
                        self.find(case, "clean run failed", f"cancel failed and left task_state "
                                  f"{record.get('task_state')}: {_tail(outcome.run)}", after)
            elif outcome.hit:
                follow = point.then
            else:
                follow = None
                if outcome.run.rc != 0:
                    self.find(case, "clean run failed", f"{phase} failed (task_state {record.get('task_state')}, "
                              f"error {(record.get('migration') or {}).get('error')}): {_tail(outcome.run)}", after)
        else:
            self.find(case, "did not converge", f"{RUN_LIMIT} runs without reaching migration_success", last)
            return
        self.check_case(case, last)

    def _lane(self, numbers: list, errors: list) -> None:
        while True:
            with self.lock:
                if not numbers:
                    return
                number = numbers.pop(0)
            try:
                case = self.new_case(number)
                self.note(f"[{self.mechanism} {case.share}] case {number}: {case.wanted} faults")
                self.run_case(case)
            except BaseException as exc:  # a flaw of the campaign itself: stop every lane
                with self.lock:
                    errors.append((number, exc))
                    numbers.clear()
                return

    def run(self, lanes: int = 1, only: list | None = None) -> None:
        """Calibrate, then run cases in ``lanes`` threads until the faults wanted have hit."""
        self.note(f"[{self.mechanism}] fault campaign: {SEED_ENV}={self.seed}, {self.wanted} faults wanted, "
                  f"{lanes} lane(s)")
        self.calibrate()
        if self.findings and any(f["kind"] == "clean run failed" for f in self.findings):
            return
        numbers = list(only) if only is not None else planned_cases(self.seed, self.mechanism, self.wanted)
        errors: list = []
        next_number = max(numbers, default=0) + 1
        while numbers:
            threads = [threading.Thread(target=self._lane, args=(numbers, errors), daemon=True) for _lane in range(lanes)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                number, exc = errors[0]
                raise AssertionError(f"the campaign itself failed in case {number}: {exc!r}") from exc
            if only is None and self.hits < self.wanted and next_number <= 99:
                numbers = [next_number]  # some cases ended with fewer faults than they drew: one more
                next_number += 1
        if only is None and self.hits < self.wanted:
            self.find(None, "too few faults",
                      f"only {self.hits} of {self.wanted} faults hit; {self.drawn} points drawn")
        self.check_lab()
        kinds = ", ".join(f"{phase}/{target}: {n}" for (phase, target), n in sorted(self.kinds_hit.items()))
        self.note(f"[{self.mechanism}] {self.hits} faults hit ({kinds}) in {len(self.cases) - 1} shares, "
                  f"{self.drawn} points drawn, {len(self.findings)} findings")


def case_rng(seed: int, mechanism: str, number: int) -> random.Random:
    return random.Random(f"{seed}/{mechanism}/{number}")


def planned_cases(seed: int, mechanism: str, wanted: int) -> list[int]:
    """Case numbers whose fault counts (CASE_FAULTS, from their own streams) add up to ``wanted``."""
    numbers, total = [], 0
    while total < wanted:
        number = len(numbers) + 1
        numbers.append(number)
        total += case_rng(seed, mechanism, number).randint(*CASE_FAULTS)
    return numbers


def _span(span: Span) -> str:
    return "never" if span.first is None else f"{span.first:.2f}-{span.last:.2f}s"


def _switched(record: dict, destination: str) -> bool:
    return any(i.get("pool") == destination and i.get("status") == "available" for i in record.get("instances", []))


def _tail(run: Run, lines: int = 6) -> str:
    picked = [ln.strip() for ln in run.out.splitlines() if "fatal:" in ln or '"msg"' in ln or "msg:" in ln]
    return " | ".join((picked or run.out.splitlines())[-lines:])[:1500] + f" (log {run.log})"


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def cleanup_jobs_dir_locks(lab: FaultLab) -> None:
    """Remove the jobs' lock files of the lab's migrations (Lab.close removes their folders)."""
    for mig in lab.migration_ids:
        for job in (mig, mig + "-final"):
            try:
                (job_state_dir() / f".{job}.lock").unlink()
            except OSError:
                pass


def summary(findings: list[dict]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"- [{finding['mechanism']}] {finding['share'] or '(lab)'} {finding['kind']}: "
                     f"{finding['detail'][:1500]}" + (f"\n    after {finding['point']}" if finding["point"] else "")
                     + (f"\n    replay this share: {SEED_ENV}={finding['seed']} {CASES_ENV}={finding['share']}"
                        if finding["share"] else ""))
    return "\n".join(lines)


def replay_hint(seed: int, mechanism: str) -> str:
    return (f"replay: {SEED_ENV}={seed} python -m pytest -q tests/integration/test_fault_campaign.py -k {mechanism}"
            + (f" (with {POINTS_ENV}={os.environ[POINTS_ENV]})" if os.environ.get(POINTS_ENV) else ""))
