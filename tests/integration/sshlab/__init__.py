"""The ssh lab: several "machines" on this one, each an sshd on its own loopback address.

Every host is an ``sshd -D`` started (as root) by ``unshare -m --propagation private``: its own
mount namespace, so the loop-mounted pools mounted into it are seen only by that host's ssh
sessions (the controller sees empty folders at the same paths). Each host has its own host key;
one client key is made for the run and authorised on every host; ``known_hosts`` holds the hosts'
keys. ``UsePAM no`` and ``StrictModes no`` let sshd run from a scratch folder.

Hosts (``HOSTS``): ``stora`` (ext4 and xfs pools on loop devices, backend ``pa`` driver posix;
and a small btrfs filesystem with one subvolume pool ``one``, backend ``ab`` driver btrfs, for the
migrations from btrfs host to btrfs host: ``Lab.btrfs_backend``), ``storb`` (a btrfs filesystem
with two subvolume pools, backend ``bb`` driver btrfs; and a small ext4 filesystem, backend ``pb``
driver posix, for host-assisted migrations from stora: ``Lab.posix_backend``) and ``datac`` (a data
node: no pools; it reaches stora and storb with the lab key, ``data_node_key_file``, which every
lab host sees at the same path, and checks their keys against the ones the plan carries).
``Lab.close()`` unmounts, stops every sshd and every process left in its namespace, detaches the
loop devices and removes the scratch folder, also after a failure.

An ``ssh-agent`` of the run holds a key of its own (``Lab.agent_key``, authorised on every host,
never used by the controller's own connections): a module run with ``Lab.agent_env()`` has it, so
that agent forwarding to a host is real. The lab's loopback addresses are 127.0.0.11-13, or the
three of ``SSHLAB_ADDRESSES`` (``a,b,c``: two lab runs on one machine at the same time).

Use ``ssh_lab`` (a session fixture; import it into the test module) or ``with Lab() as lab``.
Without root the fixture skips with the reason (a failure under CI=true, tests/conftest.py).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

MODULES = "ansible_collections.storage.mobility.plugins.modules"
# The lab hosts have no sudo (and root needs none): this stand-in logs its argv and, like
# ``sudo -n`` for a user without a passwordless rule, refuses while the file ``refuses`` exists.
FAKE_SUDO = """#!/bin/sh
echo "$*" >> '{log}'
if [ -e '{refuses}' ]; then
    echo 'sudo: a password is required' >&2
    exit 1
fi
[ "$1" = -n ] || {{ echo 'sudo: a terminal is required' >&2; exit 1; }}
shift
[ "$1" = -- ] && shift
exec "$@"
"""

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ADDRESSES_ENV = "SSHLAB_ADDRESSES"
_ADDRESSES = [a.strip() for a in (os.environ.get(ADDRESSES_ENV) or "127.0.0.11,127.0.0.12,127.0.0.13").split(",")]
if len(_ADDRESSES) != 3 or not all(a.startswith("127.") for a in _ADDRESSES):
    raise ValueError(f"{ADDRESSES_ENV} must name three loopback addresses (127.x.y.z), not {_ADDRESSES}")
#: name -> (address, {mount name: (filesystem, size MiB)})
HOSTS = {
    "stora": (_ADDRESSES[0], {"ext4": ("ext4", 64), "xfs": ("xfs", 320), "btrfs": ("btrfs", 256)}),
    "storb": (_ADDRESSES[1], {"btrfs": ("btrfs", 640), "ext4": ("ext4", 64)}),
    "datac": (_ADDRESSES[2], {}),
}
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"], "btrfs": ["mkfs.btrfs", "-q", "-f"]}


def is_root() -> bool:
    return os.geteuid() == 0


def run(argv, check=True, **kwargs):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs)
    if check and proc.returncode:
        raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def free_port(addresses) -> int:
    """A TCP port free on every address."""
    for _attempt in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError("no TCP port free on every lab address")


def _mount_ns(pid) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class Host:
    """One lab machine: an sshd in its own mount namespace and its mounts there."""

    def __init__(self, lab: "Lab", name: str, address: str, filesystems: dict):
        self.lab = lab
        self.name = name
        self.address = address
        self.folder = lab.base / name
        self.filesystems = filesystems
        self.images = [self.folder / f"{fs}.img" for fs in filesystems]
        self.mounts = {fs: self.folder / fs for fs in filesystems}
        self.proc: subprocess.Popen | None = None
        self.namespace: str | None = None
        # An open file of the namespace keeps it (and its inode number, which pids() matches) alive:
        # once freed, Linux gives the number to the next new namespace, maybe another test's.
        self.namespace_fd: int | None = None
        self.host_key = self.folder / "ssh_host_ed25519_key"

    def start(self, port: int) -> None:
        self.folder.mkdir()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lab host {self.name}", "-f", self.host_key])
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.address}:{port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.lab.authorized_keys}",
            f"PidFile {self.folder / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "MaxSessions 64",
            "MaxStartups 64",
            "LogLevel VERBOSE",
            # The lab's own bin folder first: its fake sudo (see Lab.sudo) for the become tests.
            f"SetEnv PATH={self.lab.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "Subsystem sftp internal-sftp",
            "",
        ]), encoding="utf-8")
        for fs, (kind, size_mb) in self.filesystems.items():
            image = self.folder / f"{fs}.img"
            run(["truncate", "-s", f"{size_mb}M", image])
            run(MKFS[kind] + [image])
            self.mounts[fs].mkdir()
        self._launch(port)

    def _launch(self, port: int) -> None:
        """Start the host's sshd in a mount namespace of its own and mount its disks there."""
        config = self.folder / "sshd_config"
        log = open(self.folder / "sshd.log", "ab")  # noqa: SIM115 (kept for the process's life)
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", SSHD, "-D", "-e", "-f", config],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd of {self.name} exited: {(self.folder / 'sshd.log').read_text()}")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((self.address, port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd of {self.name} does not listen on {self.address}:{port}")
            time.sleep(0.05)
        self.hold_namespace()
        # A lab host is a plain server: root's shell start-up file of this machine (here it starts
        # pyenv, about 0.7 s per ssh session, and puts its shims before /usr/bin/python3) is not its own.
        rc_file = Path(os.path.expanduser("~root")) / ".bashrc"
        if rc_file.is_file():
            plain = self.folder / "bashrc"
            plain.write_text("# lab host: a plain server's root shell start-up (empty)\n", encoding="utf-8")
            self.nsenter(["mount", "--bind", plain, rc_file])
        for fs in self.filesystems:
            self.nsenter(["mount", "-o", "loop", self.folder / f"{fs}.img", self.mounts[fs]])

    def hold_namespace(self) -> None:
        """Note the mount namespace of the host's process (``proc``), and keep it open until stop."""
        self.namespace_fd = os.open(f"/proc/{self.proc.pid}/ns/mnt", os.O_RDONLY)
        self.namespace = _mount_ns(self.proc.pid)
        assert self.namespace and self.namespace != _mount_ns(os.getpid()), "sshd is not in its own mount namespace"

    def down(self) -> None:
        """The host goes down: its filesystems are unmounted (what was written stays on its disks),
        its sshd and every session end. ``up`` brings it back."""
        problems = self.stop()
        assert not problems, problems

    def up(self) -> None:
        """The host comes back after ``down``: its sshd on the same address, port and key, its disks
        mounted again where they were."""
        assert self.proc is not None and self.proc.poll() is not None, f"{self.name} is not down"
        self._launch(self.lab.port)

    def nsenter(self, argv, check=True):
        """Run ``argv`` inside this host's mount namespace (what the host's own root would do)."""
        return run(["nsenter", "-t", str(self.proc.pid), "-m", "--"] + [str(a) for a in argv], check=check)

    def pids(self) -> list[int]:
        """Processes in this host's namespace (the sshd and its sessions)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and self.namespace and _mount_ns(entry) == self.namespace:
                found.append(int(entry))
        return found

    def stop(self) -> list[str]:
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            for point in sorted(self.mounts.values(), key=lambda p: len(str(p)), reverse=True):
                if self.nsenter(["umount", point], check=False).returncode:
                    self.nsenter(["umount", "-l", point], check=False)
                    problems.append(f"lazy unmount of {point} on {self.name}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    continue
            deadline = time.monotonic() + 5
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.pids():
                break
        # Its processes are gone: let the namespace go, and never match its number again.
        if self.namespace_fd is not None:
            os.close(self.namespace_fd)
            self.namespace_fd = None
        self.namespace = None
        for image in self.images:
            found = run(["losetup", "-j", image], check=False)
            for line in found.stdout.splitlines():
                run(["losetup", "-d", line.split(":", 1)[0]], check=False)
        return problems


class Lab:
    """The lab's hosts, keys and known_hosts; ``backends()`` declares its pools for the modules."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="sshlab-"))
        os.chmod(self.base, 0o755)
        self.key = self.base / "id_lab"
        self.wrong_key = self.base / "id_wrong"
        self.agent_key = self.base / "id_agent"
        self.agent_socket = self.base / "agent.sock"
        self.agent_pid: int | None = None
        self.authorized_keys = self.base / "authorized_keys"
        self.known_hosts = self.base / "known_hosts"
        self.bin = self.base / "bin"
        self.sudo_log = self.base / "sudo.log"
        self.sudo_refuses = self.base / "sudo-refuses"
        self.port = 0
        self.hosts = {name: Host(self, name, address, fs) for name, (address, fs) in HOSTS.items()}

    def __enter__(self) -> "Lab":
        atexit.register(self.close)  # also when pytest is interrupted before the fixture's teardown
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> "Lab":
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.bin.mkdir()
        sudo = self.bin / "sudo"
        sudo.write_text(FAKE_SUDO.format(log=self.sudo_log, refuses=self.sudo_refuses), encoding="utf-8")
        sudo.chmod(0o755)
        for key in (self.key, self.wrong_key, self.agent_key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshlab client", "-f", key])
        self.authorized_keys.write_text(Path(f"{self.key}.pub").read_text() + Path(f"{self.agent_key}.pub").read_text(),
                                        encoding="utf-8")
        started = run(["ssh-agent", "-s", "-a", self.agent_socket])
        self.agent_pid = int(started.stdout.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
        run(["ssh-add", "-q", self.agent_key], env=dict(os.environ, **self.agent_env()))
        self.port = free_port([h.address for h in self.hosts.values()])
        lines = []
        for host in self.hosts.values():
            host.start(self.port)
            kind, blob = Path(f"{host.host_key}.pub").read_text().split()[:2]
            lines.append(f"[{host.address}]:{self.port} {kind} {blob}\n")
        self.known_hosts.write_text("".join(lines), encoding="utf-8")
        storb = self.hosts["storb"]
        for pool in ("one", "two"):
            storb.nsenter(["btrfs", "subvolume", "create", storb.mounts["btrfs"] / pool])
        stora = self.hosts["stora"]
        stora.nsenter(["btrfs", "subvolume", "create", stora.mounts["btrfs"] / "one"])
        return self

    def close(self) -> list[str]:
        if not self.base.exists():
            return []
        problems = []
        for host in self.hosts.values():
            problems += host.stop()
        if self.agent_pid is not None:
            try:
                os.kill(self.agent_pid, signal.SIGTERM)
            except OSError:
                pass
            self.agent_pid = None
        shutil.rmtree(self.base, ignore_errors=True)
        return problems

    def agent_env(self) -> dict:
        """The environment that gives a module run the lab's ssh agent (holding ``agent_key`` only)."""
        return {"SSH_AUTH_SOCK": str(self.agent_socket)}

    def fingerprint(self, key: Path) -> str:
        return run(["ssh-keygen", "-l", "-f", f"{key}.pub"]).stdout.split()[1]

    # ------------------------------------------------------------------ declarations
    def ssh_options(self, host: str, **overrides) -> dict:
        """How the controller reaches ``host``; a direct stream from it logs in to the other host with
        the lab key (``direct_key_file``: a file the lab's hosts see at the same path)."""
        options = {"address": self.hosts[host].address, "user": "root", "port": self.port,
                   "private_key_file": str(self.key), "known_hosts_file": str(self.known_hosts),
                   "direct_key_file": str(self.key)}
        options.update(overrides)
        return options

    def pools(self, host: str) -> dict:
        if host == "stora":
            return {"ext4": str(self.hosts[host].mounts["ext4"]), "xfs": str(self.hosts[host].mounts["xfs"])}
        return {"one": str(self.hosts[host].mounts["btrfs"] / "one"), "two": str(self.hosts[host].mounts["btrfs"] / "two")}

    def backend(self, host: str, **overrides) -> dict:
        name, driver = ("pa", "posix") if host == "stora" else ("bb", "btrfs")
        return {"name": name, "driver": driver, "host": host, "transport": "ssh",
                "ssh": self.ssh_options(host, **overrides), "pools": self.pools(host)}

    def btrfs_backend(self, host: str, data_path: str | None = None, **overrides) -> dict:
        """The btrfs backend of ``host``: ``ab`` on stora (pool ``one``), ``bb`` on storb
        (``data_path``: the backend's option; ``overrides``: ssh options)."""
        if host == "storb":
            backend = self.backend("storb", **overrides)
        else:
            backend = {"name": "ab", "driver": "btrfs", "host": host, "transport": "ssh",
                       "ssh": self.ssh_options(host, **overrides),
                       "pools": {"one": str(self.hosts[host].mounts["btrfs"] / "one")}}
        if data_path is not None:
            backend["data_path"] = data_path
        return backend

    def posix_backend(self, host: str, **overrides) -> dict:
        """The posix backend of ``host`` for host-assisted migrations between hosts: ``pa`` on stora
        (pools ext4 and xfs), ``pb`` on storb (pool ext4); a data node logs in with the lab key."""
        ssh = dict(self.ssh_options(host), data_node_key_file=str(self.key))
        ssh.update(overrides)
        if host == "stora":
            return {"name": "pa", "driver": "posix", "host": host, "transport": "ssh", "ssh": ssh,
                    "pools": self.pools("stora")}
        return {"name": "pb", "driver": "posix", "host": host, "transport": "ssh", "ssh": ssh,
                "pools": {"ext4": str(self.hosts[host].mounts["ext4"])}}

    def backends(self) -> list[dict]:
        return [self.backend("stora"), self.backend("storb")]

    def ssh(self, host: str, argv: list[str], check=True, key=None):
        """Run ``argv`` on ``host`` as the lab's root (for checks, apart from the code under test)."""
        import shlex
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
               "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", str(key or self.key),
               "-p", str(self.port), "-l", "root", self.hosts[host].address, "--", shlex.join(argv)]
        return run(cmd, check=check)


def collections_tree() -> str:
    """The folder holding ``ansible_collections`` that this test run imports the collection from."""
    import ansible_collections.storage.mobility as collection
    return str(Path(list(collection.__path__)[0]).parents[2])


def module_process(name: str, params: dict, folder: Path, env: dict | None = None) -> subprocess.Popen:
    """Start module ``name`` as Ansible runs it on a target: ``python -m <module> ARGS.json``
    (``env``: more environment variables)."""
    args = folder / f"args-{name}-{time.monotonic_ns()}.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=collections_tree(), **(env or {}))
    return subprocess.Popen([sys.executable, "-B", "-m", f"{MODULES}.{name}", str(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def module_result(proc: subprocess.Popen, timeout=180) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"failed": True, "msg": f"no module output (rc {proc.returncode}): {err.strip()[-2000:]}", "rc": proc.returncode}
    return json.loads(lines[-1])


def run_module(name: str, params: dict, folder: Path, timeout=180) -> dict:
    """Run module ``name`` with ``params``; its JSON result (``failed`` true when it failed)."""
    return module_result(module_process(name, params, folder), timeout)


@pytest.fixture(scope="session")
def ssh_lab():
    if not is_root():
        pytest.skip("needs root: sshd per lab host, mount namespaces and loop-mounted pools")
    with Lab() as lab:
        yield lab
