"""A lab for end-to-end host-assisted share migrations: pools, an inventory, the operator's playbooks.

As root the two pools are different filesystems (an ext4 and an xfs image, loop-mounted below the
test's tmp_path) and shares are exported with the ``bind`` helper, so the posix driver refuses to
rename and the manager takes the host-assisted path on its own. Without root the pools are plain
folders, the export helper is ``none`` and every migration passes
``force_host_assisted_migration=true``.

The playbooks run as an operator runs them (``ansible-playbook -i INVENTORY playbooks/X.yml -e ...``)
with the data node being localhost (group ``data_nodes``). The data mover keeps its defaults: job
folders in ``/var/tmp/storage-mobility/jobs`` (root) and mount points under ``/tmp/<job id>/``;
``Lab.close`` stops the copy workers of the lab's migrations, unmounts their mount points, removes
their job folders, then unmounts the pools and detaches the loop devices.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from test_targets import REPO_ROOT, _ansible_playbook, _environment, unmount_below

PLAYBOOKS = REPO_ROOT / "playbooks"
MIGRATE = PLAYBOOKS / "migrate_share.yml"
COMPLETE = PLAYBOOKS / "complete_share_migration.yml"
CANCEL = PLAYBOOKS / "cancel_share_migration.yml"
HOST = "stor1"
BACKEND = "generic1"
ALPHA = f"{HOST}@{BACKEND}#alpha"
BETA = f"{HOST}@{BACKEND}#beta"
CRASH_ENV = "STORAGE_MOBILITY_CRASH_AFTER"
MOUNT_MARKER = ".storage-mobility-mount-point"
IMAGE_MB = 300
PLAYBOOK_TIMEOUT = 600
# A module killed by the crash injection exits 70; Ansible shows the rc of a module that printed nothing.
CRASH_RC_RE = re.compile(r"\brc\W{1,4}70\b")


def is_root() -> bool:
    return os.geteuid() == 0


def job_state_dir() -> Path:
    """The data_copy job folders the phase playbooks use on this data node (run_data_mover.yml)."""
    if is_root():
        return Path("/var/tmp/storage-mobility/jobs")
    return Path(os.path.expanduser("~/.cache/storage-mobility/jobs"))


MOUNT_TMP = Path("/tmp")  # the data_mover role's data_mover_mount_tmp_location default


def _load_tree_tool():
    spec = importlib.util.spec_from_file_location("hostmig_tree_tool", PLAYBOOKS / "files" / "tree_tool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tree_tool = _load_tree_tool()


# ------------------------------------------------------------------------------------------ processes


def proc_state(pid: int | None) -> str | None:
    """The state letter of a process, or None when there is no such process."""
    if not pid:
        return None
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()[0].decode()


def alive(pid: int | None) -> bool:
    """True for a live process (a zombie waiting for its reaper is dead)."""
    return proc_state(pid) not in (None, "Z", "X", "x")


def processes_naming(*needles: str | Path) -> list[int]:
    """Live processes whose command line contains one of ``needles``."""
    wanted = [os.fsencode(str(n)) for n in needles]
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if any(w in cmdline for w in wanted) and alive(int(name)):
            found.append(int(name))
    return found


def wait_until(predicate, what: str, attempts: int = 600, interval: float = 0.1):
    """Poll ``predicate`` a bounded number of times; return its first true value or fail naming ``what``."""
    for _attempt in range(attempts):
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up waiting ({attempts} polls of {interval} s) for {what}")


# ------------------------------------------------------------------------------------------ mounts


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[dict]:
    table = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            table.append({"point": _unescape(fields[4]), "options": fields[5], "fstype": fields[sep + 1],
                          "source": _unescape(fields[sep + 2])})
    return table


def mounts_below(path: str | Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    return [m["point"] for m in mounts() if m["point"].startswith(prefix) or m["point"] == str(path)]


def mount_options(point: str | Path) -> list[str]:
    found = [m for m in mounts() if m["point"] == str(point)]
    assert found, f"{point} is not mounted"
    return found[-1]["options"].split(",")


def _umount(point: str) -> None:
    if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# ------------------------------------------------------------------------------------------ runs


@dataclass(repr=False)
class Run:
    args: list
    rc: int
    out: str
    log: Path

    def __str__(self) -> str:
        tail = "\n".join(self.out.splitlines()[-120:])
        return f"ansible-playbook exited {self.rc}: {' '.join(map(str, self.args))}\nlog: {self.log}\n--- tail ---\n{tail}"

    __repr__ = __str__

    @property
    def crashed(self) -> bool:
        """The run failed because a module exited 70 (the crash injection)."""
        return self.rc != 0 and bool(CRASH_RC_RE.search(self.out))

    def recap(self) -> dict:
        """The PLAY RECAP counters of localhost."""
        match = re.search(r"^localhost\s+:\s+(.*)$", self.out, re.M)
        assert match, f"no PLAY RECAP in the output\n{self}"
        return dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1)))


class Lab:
    """Two pools, an export root, an inventory, and helpers to run the playbooks and read the records."""

    def __init__(self, tmp_path: Path, collections: Path):
        self.base = tmp_path
        self.collections = collections
        # HOSTMIG_PLAIN_POOLS=1 gives root the layout an ordinary user gets (to check that variant).
        self.root = is_root() and os.environ.get("HOSTMIG_PLAIN_POOLS") != "1"
        self.pools = {"alpha": tmp_path / "pools" / "alpha", "beta": tmp_path / "pools" / "beta"}
        self.exports = tmp_path / "exports"
        self.work = tmp_path / "work"
        self.images: list[Path] = []
        self.migration_ids: set[str] = set()
        self.extra_jobs: set[str] = set()
        self.shares: set[str] = set()
        self._runs = 0
        self.inventory = self.work / "inventory.yml"

    # -------------------------------------------------------------------- setup and teardown

    def open(self) -> "Lab":
        for path in list(self.pools.values()) + [self.exports, self.work]:
            path.mkdir(parents=True, exist_ok=True)
        if self.root:
            disks = self.base / "disks"
            disks.mkdir()
            for pool, mkfs in (("alpha", ["mkfs.ext4", "-q", "-F", "-I", "256"]), ("beta", ["mkfs.xfs", "-q", "-f"])):
                image = disks / f"{pool}.img"
                subprocess.run(["truncate", "-s", f"{IMAGE_MB}M", str(image)], check=True)
                subprocess.run(mkfs + [str(image)], check=True, capture_output=True)
                self.images.append(image)
                subprocess.run(["mount", "-o", "loop", str(image), str(self.pools[pool])], check=True)
            assert self.fstype("alpha") == "ext4" and self.fstype("beta") == "xfs", mounts_below(self.base)
        backend = {"name": BACKEND, "driver": "posix", "host": HOST,
                   "pools": dict((name, {"path": str(path)}) for name, path in self.pools.items()),
                   "export": {"helper": "bind", "root": str(self.exports)} if self.root else {"helper": "none"}}
        inventory = {"all": {
            "hosts": {"localhost": {"ansible_connection": "local",
                                    "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
            "vars": {"mobility_backends": [backend]},
            "children": {"data_nodes": {"hosts": {"localhost": {}}}}}}
        self.backends = [backend]
        # JSON is YAML; no quoting trouble with odd tmp paths.
        self.inventory.write_text(json.dumps(inventory, indent=2) + "\n", encoding="utf-8")
        return self

    def fstype(self, pool: str) -> str:
        found = [m["fstype"] for m in mounts() if m["point"] == str(self.pools[pool])]
        return found[-1] if found else "none"

    def close(self) -> list[str]:
        """Undo everything; return the problems met (a test asserts there are none)."""
        problems = []
        for name in list(self.shares):
            for record in self.records(name).values():
                if (record.get("migration") or {}).get("id"):
                    self.migration_ids.add(record["migration"]["id"])
        for mig in sorted(self.migration_ids):
            for job in (mig, mig + "-final"):
                problems += self._remove_job(job)
        for job in sorted(self.extra_jobs):
            if not job.endswith("-final"):
                problems += self._remove_job(job)
        if self.root:
            for point in sorted(mounts_below(self.base), key=len, reverse=True):
                _umount(point)
            leftover = unmount_below(self.base)
            if leftover:
                problems.append(f"mounts that needed a lazy unmount: {leftover}")
            for image in self.images:
                found = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=False)
                for line in found.stdout.splitlines():
                    device = line.split(":", 1)[0]
                    subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
        return problems

    def _remove_job(self, job: str) -> list[str]:
        problems = []
        folder = job_state_dir() / job
        for _round in range(50):
            # Found by what they name, never by the pid in status.json: once the worker is gone its
            # pid goes to the next new process (the pid space here is small), maybe another test's.
            pids = processes_naming(folder, MOUNT_TMP / job)
            if not pids:
                break
            for victim in pids:
                try:
                    os.kill(victim, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            problems.append(f"processes of job {job} survived SIGKILL")
        job_mounts = MOUNT_TMP / job
        for point in sorted(mounts_below(job_mounts), key=len, reverse=True):
            _umount(point)
        if mounts_below(job_mounts):
            problems.append(f"cannot unmount {mounts_below(job_mounts)}")
        elif job_mounts.is_dir():
            # Only the role's empty mount points (and their markers) are removed, never data.
            for side in ("source", "destination"):
                marker = job_mounts / side / MOUNT_MARKER
                if marker.exists():
                    marker.unlink()
                try:
                    (job_mounts / side).rmdir()
                except OSError:
                    pass
            try:
                job_mounts.rmdir()
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
        try:
            (job_state_dir() / f".{job}.lock").unlink()
        except OSError:
            pass
        return problems

    # -------------------------------------------------------------------- shares and data

    def share_path(self, share: str, pool: str = "alpha") -> Path:
        return self.pools[pool] / "shares" / share

    def export_path(self, share: str) -> Path:
        """Where users reach the share: the bind export (root) or the folder in its pool."""
        if self.root:
            return self.exports / share
        record = self.record(share)
        return Path([i for i in record["instances"] if i.get("role", "active") == "active"][0]["path"])

    def create_shares(self, *shares: str, rules=None) -> None:
        """Create shares in pool alpha (one playbook run for all of them)."""
        rules = [{"access_to": "127.0.0.1", "access_level": "rw"}] if rules is None else rules
        tasks = [{"name": f"create share {s}", "storage.mobility.share": {
            "name": s, "pool": ALPHA, "size": 1, "access_rules": rules}} for s in shares]
        play = [{"hosts": "localhost", "gather_facts": False,
                 "module_defaults": {"group/storage.mobility.mobility": {"backends": "{{ mobility_backends }}"}},
                 "tasks": tasks}]
        playbook = self.work / "create_shares.yml"
        playbook.write_text(json.dumps(play), encoding="utf-8")
        run = self.run(playbook, {})
        assert run.rc == 0, run
        self.shares.update(shares)

    def fill(self, share: str, files: int = 120, size_mb: int = 2, seed: int = 7) -> dict:
        """Generate a small tree (tree_tool: odd names, links, xattrs, ACLs, sparse) and return its manifest."""
        root = self.share_path(share)
        tree_tool.generate(str(root), files, size_mb, seed)
        return tree_tool.manifest(str(root))

    def fill_plain(self, share: str, files: int = 30, big_mb: int = 0) -> dict:
        """A plain tree (small files, one folder level, no sparse file) plus an optional big file of
        random data, for the tests that need a slow copy; returns its manifest."""
        root = self.share_path(share)
        for index in range(files):
            folder = root / f"dir{index % 3}"
            folder.mkdir(exist_ok=True)
            (folder / f"file{index:03d}.txt").write_bytes(os.urandom(1000 + index))
        if big_mb:
            write_big_file(root / "big.bin", big_mb)
        return tree_tool.manifest(str(root))

    # -------------------------------------------------------------------- playbooks

    def _args(self, playbook: Path, extra: dict) -> list:
        return [_ansible_playbook(), "-i", str(self.inventory), str(playbook), "-e", json.dumps(extra)]

    def _env(self, env: dict | None) -> dict:
        environment = _environment(self.collections, self.work)
        environment.pop(CRASH_ENV, None)
        environment.update(env or {})
        return environment

    def _log(self, playbook: Path) -> Path:
        self._runs += 1
        return self.work / f"run{self._runs:02d}-{playbook.stem}.log"

    def run(self, playbook: Path, extra: dict, env: dict | None = None, timeout: int = PLAYBOOK_TIMEOUT) -> Run:
        args = self._args(playbook, extra)
        log = self._log(playbook)
        proc = subprocess.run(args, cwd=str(self.work), env=self._env(env), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                              timeout=timeout, check=False)
        log.write_text(proc.stdout, encoding="utf-8")
        return Run(args, proc.returncode, proc.stdout, log)

    def spawn(self, playbook: Path, extra: dict, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        """Start a playbook in its own process group, output to a log file; returns (process, log)."""
        args = self._args(playbook, extra)
        log = self._log(playbook)
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, cwd=str(self.work), env=self._env(env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.hostmig_args = args  # for messages
        return proc, log

    def finish(self, proc: subprocess.Popen, log: Path, timeout: int = PLAYBOOK_TIMEOUT) -> Run:
        rc = proc.wait(timeout=timeout)
        return Run(proc.hostmig_args, rc, log.read_text(encoding="utf-8", errors="replace"), log)

    def migrate_vars(self, share: str, **extra) -> dict:
        variables = {"share": share, "destination_pool": BETA, "mobility_poll_seconds": 1}
        if not self.root:
            variables["force_host_assisted_migration"] = True
        variables.update(extra)
        return variables

    def migrate(self, share: str, env: dict | None = None, **extra) -> Run:
        self.shares.add(share)
        run = self.run(MIGRATE, self.migrate_vars(share, **extra), env)
        if self.records(share):
            self.record(share)  # remembers the migration id, for the cleanup of its copy jobs
        return run

    def complete(self, share: str, env: dict | None = None, **extra) -> Run:
        return self.run(COMPLETE, dict({"share": share, "mobility_poll_seconds": 1}, **extra), env)

    def cancel(self, share: str, env: dict | None = None, **extra) -> Run:
        return self.run(CANCEL, dict({"share": share}, **extra), env)

    # -------------------------------------------------------------------- records and modules

    def records(self, share: str) -> dict:
        """{pool name: record} of every record of ``share`` found in the pools."""
        found = {}
        for name, path in self.pools.items():
            record = read_json(path / ".mobility" / "shares" / f"{share}.json")
            if record is not None:
                found[name] = record
        return found

    def record(self, share: str) -> dict:
        """The authoritative record (highest revision); remembers the migration id for the cleanup."""
        found = self.records(share)
        assert found, f"no record of share {share}"
        record = max(found.values(), key=lambda r: int(r.get("revision", 0)))
        if (record.get("migration") or {}).get("id"):
            self.migration_ids.add(record["migration"]["id"])
        return record

    def migration_id(self, share: str) -> str:
        return self.record(share)["migration"]["id"]

    def events(self, share: str) -> list[str]:
        return [h["event"] for h in self.record(share).get("history", [])]

    def module(self, name: str, args: dict, check: bool = True) -> dict:
        """Run one of the collection's modules directly (as Ansible would, without a playbook)."""
        args_file = self.work / f"module-{name}-{time.monotonic_ns()}.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, backends=self.backends)}))
        env = self._env(None)
        env["PYTHONPATH"] = str(self.collections)
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "plugins" / "modules" / f"{name}.py"), str(args_file)],
                              cwd=str(self.work), env=env, capture_output=True, text=True, timeout=300, check=False)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"module {name} printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        if check:
            assert not result.get("failed"), f"module {name} failed: {result.get('msg')}"
        return result

    def share_info(self, share: str) -> dict:
        shares = self.module("share_info", {"name": share})["shares"]
        assert len(shares) == 1, shares
        return shares[0]

    # -------------------------------------------------------------------- copy jobs

    def job_folder(self, job_id: str) -> Path:
        return job_state_dir() / job_id

    def job_status(self, job_id: str) -> dict:
        return read_json(self.job_folder(job_id) / "status.json") or {}

    def job_mounts(self, job_id: str) -> list[str]:
        return mounts_below(MOUNT_TMP / job_id)


@contextlib.contextmanager
def opened_lab(tmp_path: Path, collections_path: Path):
    """A Lab opened for one test; on the way out it is closed, and whatever it left is a failure."""
    the_lab = Lab(tmp_path, collections_path)
    try:
        the_lab.open()
        yield the_lab
    finally:
        problems = the_lab.close()
    assert not problems, problems


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_big_file(path: Path, megabytes: int) -> None:
    """Random (incompressible) data, written in 1 MiB blocks."""
    with open(path, "wb") as handle:
        for _block in range(megabytes):
            handle.write(os.urandom(1 << 20))


def can_write(folder: Path) -> tuple[bool, str]:
    """Try to create a file in ``folder``; (True, '') or (False, the error)."""
    probe = folder / f".write-probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        probe.write_text("probe")
    except OSError as exc:
        return False, exc.strerror or str(exc)
    probe.unlink()
    return True, ""
