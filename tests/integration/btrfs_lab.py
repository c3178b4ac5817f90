"""A lab for driver-assisted btrfs share migrations: two btrfs filesystems on loop devices.

Pools (backend ``bt1`` of host ``stor1``, driver btrfs, bind exports):

* ``alpha``: a subvolume of the first filesystem (``<base>/mnt/a/alpha``);
* ``beta``: the root of the second filesystem (``<base>/mnt/b``).

and ``plain`` (backend ``px1``, driver posix) on the test's own filesystem, for the fallbacks.

Steps that must be killable run in a child process (``python btrfs_lab.py CONFIG OP SHARE ...``),
so the crash injection (``STORAGE_MOBILITY_CRASH_AFTER``) kills that child, not pytest.
``close()`` unmounts everything below the lab and detaches its loop devices, even after a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "stor1"
ALPHA = f"{HOST}@bt1#alpha"
BETA = f"{HOST}@bt1#beta"
PLAIN = f"{HOST}@px1#plain"
CRASH_ENV = "STORAGE_MOBILITY_CRASH_AFTER"
IMAGE_MB = 256
FLAGS = {"writable": True, "preserve_metadata": True, "preserve_snapshots": True, "nondisruptive": False}


def is_root() -> bool:
    return os.geteuid() == 0


def _run(argv, check=True):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise AssertionError(f"{argv} failed: {proc.stderr}")
    return proc


def mount_points_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    return points


class BtrfsLab:
    def __init__(self, base: Path):
        self.base = base
        self.images = [base / "a.img", base / "b.img"]
        self.mounts = [base / "mnt" / "a", base / "mnt" / "b"]
        self.exports = base / "exports"
        self.pools = {"alpha": self.mounts[0] / "alpha", "beta": self.mounts[1], "plain": base / "plain"}
        self.config = base / "backends.json"
        self.backends = []

    # ------------------------------------------------------------------ setup / teardown
    def open(self) -> "BtrfsLab":
        for image, point in zip(self.images, self.mounts):
            point.mkdir(parents=True)
            _run(["truncate", "-s", f"{IMAGE_MB}M", image])
            _run(["mkfs.btrfs", "-q", "-f", image])
            _run(["mount", "-o", "loop", image, point])
        _run(["btrfs", "subvolume", "create", self.pools["alpha"]])
        self.pools["plain"].mkdir()
        self.exports.mkdir()
        export = {"helper": "bind", "root": str(self.exports)}
        self.backends = [
            {"name": "bt1", "driver": "btrfs", "host": HOST, "export": export,
             "pools": {"alpha": {"path": str(self.pools["alpha"])}, "beta": {"path": str(self.pools["beta"])}}},
            {"name": "px1", "driver": "posix", "host": HOST, "export": export,
             "pools": {"plain": {"path": str(self.pools["plain"])}}},
        ]
        self.config.write_text(json.dumps(self.backends), encoding="utf-8")
        return self

    def close(self) -> list[str]:
        problems = []
        for point in sorted(mount_points_below(self.base), key=len, reverse=True):
            if _run(["umount", point], check=False).returncode:
                _run(["umount", "-l", point], check=False)
                problems.append(f"lazy unmount of {point}")
        for image in self.images:
            found = _run(["losetup", "-j", image], check=False)
            for line in found.stdout.splitlines():
                _run(["losetup", "-d", line.split(":", 1)[0]], check=False)
        return problems

    # ------------------------------------------------------------------ managers
    def context(self, check_mode=False):
        from ansible_collections.storage.mobility.plugins.module_utils.context import Context
        return Context(self.backends, check_mode=check_mode)

    def shares(self):
        from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
        return ShareManager(self.context())

    def migrations(self):
        from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import (
            ShareMigrationManager)
        return ShareMigrationManager(self.context())

    def create_share(self, name, pool=ALPHA, rules=None):
        rules = rules if rules is not None else [{"access_to": "10.0.0.0/24", "access_level": "rw"}]
        return self.shares().present(name, pool, 1, None, None, None, rules)

    def info(self, name) -> dict:
        found = self.shares().info(name)
        return found[0] if found else {}

    def op(self, op: str, share: str, *args: str, crash: str | None = None) -> tuple[int, dict]:
        """Run one manager call in a child process; return (exit code, result or error)."""
        env = dict(os.environ)
        env.pop(CRASH_ENV, None)
        if crash:
            env[CRASH_ENV] = crash
        proc = subprocess.run([sys.executable, "-B", str(HERE / "btrfs_lab.py"), str(self.config), op, share, *args],
                              capture_output=True, text=True, env=env, check=False, timeout=300)
        if proc.returncode == 70:
            self.settle()
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        data = json.loads(lines[-1]) if lines else {"stderr": proc.stderr}
        return proc.returncode, data

    def settle(self) -> None:
        """Wait until the send/receive processes a killed run left behind have ended (a receive
        reads what is still in the pipe, then fails on the cut stream)."""
        prefix = str(self.base)
        for _poll in range(600):
            busy = []
            for pid in os.listdir("/proc"):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if argv and argv[0].endswith(b"btrfs") and any(a.startswith(prefix.encode()) for a in argv):
                    busy.append(pid)
            if not busy:
                return
            time.sleep(0.05)
        raise AssertionError(f"btrfs processes of the lab still running: {busy}")

    # ------------------------------------------------------------------ looking at btrfs
    def instance(self, share: str, pool: str = "alpha") -> Path:
        return self.pools[pool] / "shares" / share

    def snapshot(self, share: str, snap: str, pool: str = "alpha") -> Path:
        return self.pools[pool] / "snapshots" / share / snap

    def subvolumes(self) -> list[str]:
        """Every subvolume of both filesystems, as ``a:<path>`` / ``b:<path>``."""
        found = []
        for tag, point in zip("ab", self.mounts):
            out = _run(["btrfs", "subvolume", "list", point]).stdout
            found += [f"{tag}:{line.split(' path ', 1)[1]}" for line in out.splitlines() if " path " in line]
        return sorted(found)

    def temporary_subvolumes(self) -> list[str]:
        return [s for s in self.subvolumes() if ".mobility/btrfs" in s]

    def show(self, path: Path) -> dict:
        from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs_cli import parse_subvolume_show
        return parse_subvolume_show(_run(["btrfs", "subvolume", "show", path]).stdout)


# ---------------------------------------------------------------------- trees


def fill(root: Path, seed: int = 1, files: int = 40, big_mb: int = 0) -> None:
    """Files of several sizes, a hard link, a symlink, an xattr, a sparse file, odd modes."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        folder = root / f"d{index % 4}"
        folder.mkdir(exist_ok=True)
        data = hashlib.sha256(f"{seed}-{index}".encode()).digest() * (1 + index * 13)
        (folder / f"f{index}.bin").write_bytes(data)
    (root / "d0" / "mode640").write_text(f"seed {seed}\n")
    os.chmod(root / "d0" / "mode640", 0o640)
    if not (root / "hard").exists():
        os.link(root / "d0" / "f0.bin", root / "hard")
    if not (root / "link").is_symlink():
        (root / "link").symlink_to("d1/f1.bin")
    os.setxattr(root / "d0" / "mode640", "user.mobility", f"x{seed}".encode())
    with open(root / "sparse", "wb") as handle:
        handle.seek(8 * 1024 * 1024)
        handle.write(b"end")
    if big_mb:
        with open(root / "big.bin", "wb") as handle:
            for block in range(big_mb):
                handle.write(hashlib.sha512(f"{seed}-{block}".encode()).digest() * 16384)


def digest(root: Path) -> dict:
    """Every entry with type, mode, owner, size, mtime (ns), content hash, link target, xattrs
    and hard-link groups: what a migration that preserves metadata must keep."""
    result = {}
    inodes = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = {"mode": stat.S_IMODE(st.st_mode), "type": stat.S_IFMT(st.st_mode), "uid": st.st_uid,
                     "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    entry["sha"] = hashlib.sha256(handle.read()).hexdigest()
                entry["size"] = st.st_size
                entry["mtime_ns"] = st.st_mtime_ns
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            try:
                entry["xattrs"] = dict((k, os.getxattr(path, k, follow_symlinks=False).hex())
                                       for k in sorted(os.listxattr(path, follow_symlinks=False)))
            except OSError:
                entry["xattrs"] = {}
            result[rel] = entry
    result[".hardlinks"] = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return result


WRITER = textwrap.dedent("""
    import os, sys, time
    root, stop, count_file = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(os.path.join(root, 'writer'), exist_ok=True)
    n = 0
    while not os.path.exists(stop):
        try:
            with open(os.path.join(root, 'writer', 'w%d' % (n % 50)), 'wb') as handle:
                handle.write(('%d ' % n).encode() * 2000)
            with open(os.path.join(root, 'writer', 'log'), 'ab') as handle:
                handle.write(b'%d\\n' % n)
        except OSError:
            break
        n += 1
        time.sleep(0.005)
    with open(count_file, 'w') as handle:
        handle.write(str(n))
""")


class Writer:
    """A process writing into a share until stopped (users working during phase 1)."""

    def __init__(self, root: Path, work: Path):
        self.stop_file = work / "writer.stop"
        self.count_file = work / "writer.count"
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(self.stop_file), str(self.count_file)])

    def wait_for_writes(self, root: Path, at_least: int) -> None:
        for _poll in range(3000):
            log = root / "writer" / "log"
            if log.exists() and len(log.read_bytes().splitlines()) >= at_least:
                return
            time.sleep(0.01)
        raise AssertionError("the writer wrote nothing")

    def stop(self) -> int:
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=60)
        return int(self.count_file.read_text())


# ---------------------------------------------------------------------- child process entry


def _child(argv: list[str]) -> int:
    config, op, share = argv[0], argv[1], argv[2]
    sys.path.insert(0, str(HERE.parent))
    # Importing the tests' conftest makes the collection importable.
    import conftest  # noqa: F401  pylint: disable=unused-import
    from ansible_collections.storage.mobility.plugins.module_utils.context import Context
    from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
    from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import (
        ShareMigrationManager)
    backends = json.loads(Path(config).read_text(encoding="utf-8"))
    manager = ShareMigrationManager(Context(backends))
    try:
        if op == "start":
            result = manager.start(share, argv[3], FLAGS, wait=True, timeout=120, sleep=1)
        elif op == "complete":
            # An optional fourth argument: open_writers_wait in seconds.
            result = manager.complete(share, open_writers_wait=int(argv[3]) if len(argv) > 3 else 0)
        elif op == "cancel":
            result = manager.cancel(share)
        else:
            raise SystemExit(f"unknown op {op}")
    except StorageError as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps({"changed": result["changed"], "task_state": result["task_state"],
                      "migration": result["migration"]}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
