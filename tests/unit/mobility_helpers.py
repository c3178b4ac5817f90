"""Helpers shared by the unit tests: pools in tmp_path, tree snapshots, a fake clock, a lock holder.

Not a test module; ``tests/unit/conftest.py`` puts this folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import time

from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import tree_seal
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.signing import sign_job_report, sign_report
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import ShareMigrationManager
from ansible_collections.storage.mobility.plugins.module_utils.store import META_DIR

LOCKS = os.path.join(META_DIR, "locks").encode()
#: the access rule most tests give their shares
RULE = {"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "rw"}


# --------------------------------------------------------------------------- pools


def backend_spec(root, name="be1", pools=("a", "b"), host="localhost", helper="none", **extra):
    """A backends entry whose pools are fresh folders ``<root>/<host>-<name>/<pool>``."""
    spec_pools = {}
    for pool in pools:
        path = os.path.join(str(root), "%s-%s" % (host, name), pool)
        os.makedirs(path, exist_ok=True)
        spec_pools[pool] = {"path": path}
    spec = {"name": name, "driver": "posix", "host": host, "pools": spec_pools, "export": {"helper": helper}}
    spec.update(extra)
    return spec


class FakeClock:
    """A monotonic clock that only moves when the fake sleeper is called."""

    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class Env:
    """Two pools ``a`` and ``b`` of backend ``be1`` (same filesystem) plus helpers around them."""

    A = "localhost@be1#a"
    B = "localhost@be1#b"

    def __init__(self, tmp_path, backends=None):
        self.tmp_path = tmp_path
        self.root = tmp_path / "pools"
        self.backends = backends if backends is not None else [backend_spec(self.root)]
        self.clock = FakeClock()

    def ctx(self, check_mode=False):
        return Context(self.backends, check_mode=check_mode)

    def shares(self, check_mode=False):
        return ShareManager(self.ctx(check_mode))

    def migrations(self, check_mode=False, host_assisted=True):
        """The migration manager (host-assisted path on, as in production, unless told otherwise)."""
        return ShareMigrationManager(self.ctx(check_mode), host_assisted=host_assisted,
                                     clock=self.clock.clock, sleeper=self.clock.sleep)

    def pool(self, address):
        return self.ctx().pool(address)

    def pool_path(self, address):
        return self.pool(address).path

    def share_path(self, address, share):
        return os.path.join(self.pool_path(address), "shares", share)

    def snapshots_path(self, address, share):
        return os.path.join(self.pool_path(address), "snapshots", share)

    def record_path(self, address, share):
        return os.path.join(self.pool_path(address), META_DIR, "shares", share + ".json")

    def read_record(self, address, share):
        try:
            with open(self.record_path(address, share)) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def record_pools(self, share):
        """The pools that hold a record of ``share``."""
        return sorted(str(p.ref) for p in self.ctx().backends.pools()
                      if os.path.exists(self.record_path(str(p.ref), share)))

    def load(self, share):
        return self.ctx().load(share)

    def create_share(self, name="s1", pool=None, size=1, rules=None, **kw):
        rules = [{"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "rw"}] if rules is None else rules
        return self.shares().present(name, pool or self.A, size, "NFS", None, None, rules, **kw)

    def edit(self, share, **changes):
        """Rewrite the authoritative record of ``share`` with ``changes`` (a test's hand on the record)."""
        ctx = self.ctx()
        record, pool = ctx.load(share)
        for key, value in changes.items():
            if callable(value):
                value(record)
            else:
                record[key] = value
        ctx.repo.save(record, pool, "edited by the test")
        return record

    def state(self):
        """Everything on disk in every pool (records included, lock files excluded)."""
        return dict((str(p.ref), tree_state(p.path)) for p in self.ctx().backends.pools())


# --------------------------------------------------------------------------- trees


def xattrs_of(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    return dict((n, os.getxattr(path, n, follow_symlinks=False)) for n in sorted(names))


def tree_state(root, mtimes=True, skip=(LOCKS,)):
    """Every entry below ``root`` (bytes names) with type, mode, mtime_ns, size, content digest,
    link target, xattrs and the set of names sharing its inode (hard links).

    Lock files (``.mobility/locks``) are skipped: they coordinate runs and are rewritten by every
    run that takes the lock, including check-mode runs; they hold no share state.
    """
    root = os.fsencode(str(root))
    if not os.path.isdir(root):
        return None
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if any(rel_dir == s or rel_dir.startswith(s + b"/") for s in skip):
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            st = os.lstat(path)
            entry = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                     "uid": st.st_uid, "gid": st.st_gid, "xattrs": xattrs_of(path)}
            if mtimes:
                entry["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    entry["sha256"] = hashlib.sha256(handle.read()).hexdigest()
                entry["size"] = st.st_size
                entry["blocks"] = st.st_blocks
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
                entry["inode"] = (st.st_dev, st.st_ino)
            entries[rel] = entry
    for entry in entries.values():
        key = entry.pop("inode", None)
        if key is not None:
            entry["hardlinks"] = tuple(sorted(inodes[key]))
    return entries


def populate_share(path):
    """Fill a share folder with everything a migration must keep. Returns True when the
    filesystem accepted a ``user.*`` xattr (so the xattr assertions are meaningful)."""
    path = os.fsencode(str(path))

    def j(*names):
        return os.path.join(path, *names)
    with open(j(b"plain.txt"), "wb") as handle:
        handle.write(b"hello\n" * 100)
    os.chmod(j(b"plain.txt"), 0o640)
    os.makedirs(j(b"dir", b"sub"))
    with open(j(b"dir", b"sub", b"deep.bin"), "wb") as handle:
        handle.write(os.urandom(70000))
    os.chmod(j(b"dir", b"sub", b"deep.bin"), 0o600)
    # hard links: two names, one inode
    os.link(j(b"plain.txt"), j(b"dir", b"hardlink-to-plain"))
    # symlinks: relative, absolute-looking, dangling
    os.symlink(b"../plain.txt", j(b"dir", b"rel-link"))
    os.symlink(b"/nonexistent/absolute/target", j(b"abs-dangling"))
    os.symlink(b"sub", j(b"dir", b"dir-link"))
    # sparse file: 8 MiB with one byte of data in the middle
    with open(j(b"sparse.img"), "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
        handle.seek(4 * 1024 * 1024)
        handle.write(b"x")
    # empty folders, nested
    os.makedirs(j(b"empty", b"nested-empty"))
    os.chmod(j(b"empty"), 0o700)
    # odd names: a space, a newline, non-UTF-8 bytes, a leading dash
    for name in (b"with space", b"new\nline", b"caf\xe9-latin1", b"-dash"):
        with open(j(name), "wb") as handle:
            handle.write(name * 3)
    os.makedirs(j(b"odd dir \xff"))
    # xattr
    xattr_ok = True
    try:
        os.setxattr(j(b"plain.txt"), "user.mobility.test", b"kept")
        os.setxattr(j(b"dir"), "user.mobility.dir", b"dir value")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
            raise
        xattr_ok = False
    # fixed timestamps (nanoseconds), set last and bottom-up so folder mtimes stay as set
    stamp = 1_600_000_000_123_456_789
    for i, (dirpath, dirnames, filenames) in enumerate(sorted(os.walk(path), key=lambda w: -len(w[0]))):
        for k, name in enumerate(filenames + dirnames):
            os.utime(os.path.join(dirpath, name), ns=(stamp, stamp + 1000 * (i * 100 + k)), follow_symlinks=False)
    return xattr_ok


# --------------------------------------------------------------------------- another process


_HOLDER = r"""
import json, sys
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.store import ShareRepository
repo = ShareRepository(Backends(json.loads(sys.argv[1])))
with repo.lock(sys.argv[2], sys.argv[3]):
    sys.stdout.write('locked\n')
    sys.stdout.flush()
    sys.stdin.read()  # hold the lock until the test closes our stdin
sys.stdout.write('released\n')
"""


@contextlib.contextmanager
def lock_held_by_other_process(backends, share, purpose="held by the test"):
    """Run a separate Python process that holds the lock of ``share`` until the block ends."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, json.dumps(backends), share, purpose],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline()
        if line != b"locked\n":
            proc.kill()
            raise AssertionError("lock holder did not start: %r %r" % (line, proc.stderr.read()))
        yield proc
    finally:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=60)


class _Stat:
    """An os.stat result with another st_dev."""

    def __init__(self, real, dev):
        self._real = real
        self.st_dev = dev

    def __getattr__(self, name):
        return getattr(self._real, name)


def fake_other_filesystem(monkeypatch, pool_path):
    """os.stat reports another device for everything under ``pool_path`` (the driver's device check)."""
    real_stat = os.stat
    prefix = os.fsencode(pool_path)

    def fake_stat(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        raw = os.fsencode(path) if not isinstance(path, int) else b""
        if raw == prefix or raw.startswith(prefix + b"/"):
            return _Stat(result, result.st_dev + 1000)
        return result
    monkeypatch.setattr(os, "stat", fake_stat)


# ------------------------------------------------------------ what a data node does with a copy plan


def copy_like_a_data_node(plan):
    """Copy a host-assisted plan's source into its destination, as a data node would (no checks)."""
    subprocess.run(["cp", "-a", "--", plan["source"]["export"] + "/.", plan["destination"]["export"]], check=True)


def mover_report(plan, sign=True, **over):
    """The report a data mover would return for ``plan``: the seals of both trees as they are now,
    the plan's migration and pass, signed with the plan's key (``sign=False``: unsigned)."""
    binding = plan["report_signing"]
    data = {"job_id": plan["job_id"], "state": "completed", "verified": True, "files": 10, "bytes": 1234,
            "hash_algorithm": plan["hash_algorithm"], "migration_id": binding["migration_id"],
            "pass_id": binding["pass_id"], "final_pass": plan["final_pass"],
            "source_seal": tree_seal(plan["source"]["export"], plan["ignore_files"]),
            "destination_seal": tree_seal(plan["destination"]["export"], plan["ignore_files"])}
    data.update(over)
    return sign_report(data, binding["key"]) if sign else data


def data_mover(jobs, plan):
    """What the data_mover role does with a plan on a data node (both sides reached in place): run the
    data_copy job, have the module sign its report, and report as the role does."""
    binding = plan["report_signing"]
    request = jobs.build_request(plan["job_id"], plan["source"]["export"], plan["destination"]["export"],
                                 plan["ignore_files"], plan["check_hash"], plan["hash_algorithm"],
                                 final_pass=plan["final_pass"], copy_engine="auto",
                                 hash_cache_key="%s|%s" % (plan["source"]["export"], plan["destination"]["export"]),
                                 migration_id=binding["migration_id"], pass_id=binding["pass_id"])
    job = jobs.start(request, wait_seconds=120)["job"]
    assert job["state"] in ("completed", "failed"), job
    assert sign_job_report(job, binding) is None
    return dict(job["report"], job_id=plan["job_id"], state=job["state"],
                **({"error": job["error"]} if job["error"] else {}))


def wait_for_btrfs_commands(base, polls=600):
    """Wait until no ``btrfs`` process names a path under ``base``: the send/receive a killed run left
    behind (a receive reads what is still in the pipe, then fails on the cut stream), and the
    background deletion of a retired replica instance (BtrfsShareDriver._retire)."""
    prefix = str(base).encode()
    busy = []
    for _poll in range(polls):
        busy = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"btrfs") and any(a.startswith(prefix) for a in argv):
                busy.append(pid)
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError(f"btrfs processes under {base} still running: {busy}")
