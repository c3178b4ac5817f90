"""The OpenStack lab: real Manila and Cinder from PyPI on loopback, for the manila and cinder tests.

    python tests/integration/openstack/lab.py start  BASE   # blocks until ready, writes BASE/lab.json
    python tests/integration/openstack/lab.py stop   BASE   # stops everything the lab started
    python tests/integration/openstack/lab.py status BASE   # what runs; exit 0 when ready

``start`` needs root. It installs rabbitmq-server and mariadb-server with apt when they are
missing, builds (or reuses) two virtual environments from the pinned requirement files next to
this file, runs its own MariaDB, RabbitMQ (with its own epmd), Manila (api, scheduler, share with
the in-tree dummy driver and three backends alpha/beta/gamma in one replication domain, data) and
Cinder (api, scheduler, volume with two backends on the file drivers of ``cinder_test_drivers``),
everything under BASE and on ports of its own (see ``PORTS``), creates the share types
``default`` and ``replicated``, waits until every service is up, a probe share and a probe volume
became available and the pools are listed, then writes ``BASE/clouds.yaml`` and, last,
``BASE/lab.json``. When started from the command line it writes ``BASE/lab.failed`` with the
reason instead when it cannot get ready (and stops what it started).

``stop`` ends the start command when it is still running, then every process the lab started,
by the pid files in ``BASE/pids`` (each with the process start time, so a reused pid is never
killed), and removes ``lab.json``. Logs stay in ``BASE/logs``.

The virtual environments are cached in ``~/.cache/storage-mobility/openstack-lab/`` (override with
``MOBILITY_LAB_CACHE``), keyed by a hash of the requirement file and the Python version: a rerun
on a developer machine starts in well under a minute. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = {"manila": HERE / "requirements-manila.txt", "cinder": HERE / "requirements-cinder.txt"}
VENV_RECIPE = "1"  # bump to rebuild every cached environment
PIP_JOBS = 4  # pips installing one environment side by side
PROJECT_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "admin:" + PROJECT_ID
HOST = "devhost"
CLOUD = "mobility-lab"
# MOBILITY_LAB_PORT_OFFSET shifts every port, for a second lab on the same machine.
PORTS = dict((name, port + int(os.environ.get("MOBILITY_LAB_PORT_OFFSET") or 0)) for name, port in (
    ("mysql", 23306), ("amqp", 25682), ("dist", 25683), ("epmd", 24369), ("manila", 28786), ("cinder", 28776)))
MANILA_BACKENDS = ("alpha", "beta", "gamma")
CINDER_BACKENDS = ("file1", "file2")
REPLICATION_DOMAIN = "mobility_lab_domain"
APT_PACKAGES = ("rabbitmq-server", "mariadb-server", "mariadb-client")
START_TIMEOUT = 900
READY_TIMEOUT = 240
STOP_GRACE = 15
# Stop order: the services first, the message queue and the database last.
STATE_FOLDERS = ("etc", "logs", "mysql", "rabbitmq", "manila", "cinder")
PROCESS_ORDER = ("manila-api", "manila-scheduler", "manila-share", "manila-data",
                 "cinder-api", "cinder-scheduler", "cinder-volume", "rabbitmq", "mariadb", "epmd")


def cache_dir() -> Path:
    return Path(os.environ.get("MOBILITY_LAB_CACHE", "~/.cache/storage-mobility/openstack-lab")).expanduser()


@dataclass
class Lab:
    """What the tests need to reach a running lab (the content of ``lab.json``)."""

    base: str
    clouds_yaml: str
    cloud: str
    manila_endpoint: str
    cinder_endpoint: str
    project_id: str
    manila_pools: list = field(default_factory=list)
    cinder_pools: list = field(default_factory=list)
    # Optional: pool -> folder of its volume files, for labs whose Cinder backends keep real data.
    cinder_volume_dirs: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path) -> "Lab":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        optional = {"manila_pools", "cinder_pools", "cinder_volume_dirs"}
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data or k not in optional})


class LabError(RuntimeError):
    """The lab could not start; the message says which step and why."""


# ------------------------------------------------------------------------------------------ logging


class Log:
    def __init__(self, path: Path | None, echo: bool):
        self.path = path
        self.echo = echo
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        line = "[%6.1fs] %s" % (time.monotonic() - self.start, message)
        with self.lock:
            if self.echo:
                print(line, flush=True)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no %s)" % path


# ------------------------------------------------------------------------------------------ processes


def _start_time(pid: int) -> str | None:
    try:
        data = Path("/proc/%d/stat" % pid).read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def _pidfile(base: Path, name: str) -> Path:
    return base / "pids" / ("%s.pid" % name)


def record_pid(base: Path, name: str, pid: int) -> None:
    path = _pidfile(base, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("%d %s\n" % (pid, _start_time(pid) or "?"), encoding="utf-8")


def recorded_pid(base: Path, name: str) -> int | None:
    """The pid in ``name``'s pid file when that very process (same start time) still runs."""
    try:
        pid_text, started = _pidfile(base, name).read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    return pid if _start_time(pid) == started else None


def spawn(base: Path, name: str, argv: list, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a long-running process in its own session (so stop can end its whole group)."""
    out = open(base / "logs" / ("%s.out" % name), "ab")  # pylint: disable=consider-using-with
    try:
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,  # pylint: disable=consider-using-with
                                stderr=subprocess.STDOUT, env=env, cwd=str(cwd or base), start_new_session=True)
    finally:
        out.close()
    record_pid(base, name, proc.pid)
    return proc


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(pid: int, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``grace`` seconds."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        _reap(pid)
        time.sleep(0.2)
    if _group_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pid):
            _reap(pid)
            time.sleep(0.1)
    _reap(pid)


# A failing start sets _ABORT so that its other threads stop waiting, and kills the helper
# commands (pip, db sync) in _HELPERS, which are no services and have no pid file.
_ABORT = threading.Event()
_HELPERS: list = []


def _end_children(procs: list) -> None:
    """Kill the helper commands (pip, db sync) still running when a step is interrupted."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def run(argv: list, log_file: Path, what: str, env: dict | None = None, timeout: float = 900,
        input_text: str | None = None) -> str:
    """Run a command to completion, output appended to ``log_file``; LabError naming ``what`` on failure."""
    argv = [str(a) for a in argv]
    with open(log_file, "ab") as out:
        out.write(("\n$ %s\n" % " ".join(argv)).encode())
        out.flush()
        try:
            proc = subprocess.run(argv, input=input_text.encode() if input_text is not None else None,
                                  stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise LabError("%s: %s did not finish within %d s (log: %s)" % (what, argv[0], timeout, log_file)) from None
    if proc.returncode != 0:
        raise LabError("%s: %s exited with %d (log: %s):\n%s"
                       % (what, argv[0], proc.returncode, log_file, tail(log_file)))
    return log_file.read_text(encoding="utf-8", errors="replace")


# ------------------------------------------------------------------------------------------ http


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 10):
    """A JSON call with the lab's noauth admin token; returns the decoded body or None."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(
        {"X-Auth-Token": TOKEN, "Content-Type": "application/json", "Accept": "application/json"}, **(headers or {})))
    with _OPENER.open(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, what: str, timeout: float, interval: float = 0.5, check=None):
    """Poll ``predicate`` until it returns a true value; ``check()`` may raise to stop early."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if _ABORT.is_set():
            raise LabError("start aborted while waiting for %s" % what)
        if check is not None:
            check()
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
            value, last_error = None, exc
        if value:
            return value
        time.sleep(interval)
    raise LabError("gave up after %d s waiting for %s%s"
                   % (timeout, what, " (last error: %s)" % last_error if last_error else ""))


# ------------------------------------------------------------------------------------------ the steps


def ensure_packages(log: Log, logs: Path) -> None:
    """apt-get install the Debian packages the lab runs when their programs are missing."""
    missing = [p for p, program in (("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server"),
                                    ("mariadb-server", "/usr/sbin/mariadbd"), ("mariadb-client", "/usr/bin/mariadb"))
               if not Path(program).exists()]
    if shutil.which("epmd") is None and "rabbitmq-server" not in missing:
        missing.append("rabbitmq-server")
    if not missing:
        return
    if os.geteuid() != 0:
        raise LabError("the lab needs %s; install them (apt-get install %s) or run as root"
                       % (", ".join(missing), " ".join(APT_PACKAGES)))
    log("apt-get install %s" % " ".join(APT_PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep the packages' own services from starting: the lab runs its own instances.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\n# written by the storage.mobility OpenStack lab during apt-get install\nexit 101\n",
                          encoding="utf-8")
        policy.chmod(0o755)
    try:
        run(["apt-get", "update", "-qq"], logs / "apt.log", "apt-get update", env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + list(APT_PACKAGES),
            logs / "apt.log", "apt-get install", env=env)
    finally:
        if created:
            with contextlib.suppress(OSError):
                policy.unlink()


def ensure_venv(name: str, log: Log, logs: Path) -> Path:
    """The cached virtual environment for ``name`` (manila or cinder), built when missing."""
    requirements = REQUIREMENTS[name]
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update(("%s|%s" % (sys.version, VENV_RECIPE)).encode())
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / ("%s-%s" % (name, digest.hexdigest()[:16]))
    marker = target / ".storage-mobility-complete"
    with open(root / (target.name + ".lock"), "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lab may be building the same environment
        if marker.exists():
            log("%s: cached environment %s" % (name, target))
            return target
        log("%s: building %s from %s" % (name, target, requirements.name))
        shutil.rmtree(target, ignore_errors=True)
        pip_log = logs / ("pip-%s.log" % name)
        run([sys.executable, "-m", "venv", target], pip_log, "create the %s environment" % name)
        pip = target / "bin" / "pip"
        install_pins(pip, requirements, logs, name)
        run([pip, "check"], pip_log, "check the %s environment" % name)
        marker.write_text(requirements.read_text(encoding="utf-8"), encoding="utf-8")
        log("%s: environment ready" % name)
        return target


def install_pins(pip: Path, requirements: Path, logs: Path, name: str) -> None:
    """Install the pinned packages of ``requirements`` with ``PIP_JOBS`` pips side by side.

    Every package is pinned, so no resolution is needed (--no-deps) and each pip downloads its
    share; ensure_venv's pip check then proves the pins complete. No byte-compiling: Python writes
    the .pyc files of what the services import."""
    pins = [line.strip() for line in requirements.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    procs = []
    for index, chunk in enumerate(pin_chunks(pins, PIP_JOBS)):
        chunk_file = logs / ("pip-%s-%d.txt" % (name, index))
        chunk_file.write_text("\n".join(chunk) + "\n", encoding="utf-8")
        chunk_log = open(logs / ("pip-%s-%d.log" % (name, index)), "ab")  # pylint: disable=consider-using-with
        procs.append((subprocess.Popen([str(pip), "install", "-q", "--no-deps", "--no-compile", "-r",  # pylint: disable=consider-using-with
                                        str(chunk_file)], stdout=chunk_log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL), chunk_log, chunk_file))
        _HELPERS.append(procs[-1][0])
    failures = []
    try:
        for proc, chunk_log, chunk_file in procs:
            rc = proc.wait(timeout=900)
            if rc != 0:
                failures.append("%s (rc %d, log %s):\n%s"
                                % (chunk_file.name, rc, chunk_log.name, tail(Path(chunk_log.name))))
    finally:
        _end_children([proc for proc, _log, _file in procs])
        for _proc, chunk_log, _file in procs:
            chunk_log.close()
    if failures:
        raise LabError("install %s: pip failed for %s" % (name, "\n".join(failures)))


def pin_chunks(pins: list, count: int) -> list:
    """``pins`` in about ``count`` runs of the sorted list, never splitting packages whose names start
    alike (Paste and PasteDeploy share a folder; two pips must not write it at once)."""
    ordered = sorted(pins, key=str.lower)
    size = max(1, -(-len(ordered) // count))
    chunks, current = [], []
    for pin in ordered:
        if len(current) >= size and current[-1].lower()[:5] != pin.lower()[:5]:
            chunks.append(current)
            current = []
        current.append(pin)
    if current:
        chunks.append(current)
    return chunks


def start_epmd(base: Path) -> None:
    spawn(base, "epmd", ["epmd", "-port", PORTS["epmd"], "-address", "127.0.0.1"],
          env=dict(os.environ, ERL_EPMD_PORT=str(PORTS["epmd"])))


def rabbit_env(base: Path) -> dict:
    rabbit = base / "rabbitmq"
    (rabbit / "mnesia").mkdir(parents=True, exist_ok=True)
    (rabbit / "log").mkdir(parents=True, exist_ok=True)
    (rabbit / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    (rabbit / "rabbitmq.conf").write_text("loopback_users.guest = true\n", encoding="utf-8")
    (rabbit / "rabbitmq-env.conf").write_text("# the lab sets everything in the environment\n", encoding="utf-8")
    env = dict(os.environ)
    env.update({
        "HOME": str(rabbit),  # the Erlang cookie lives here
        "ERL_EPMD_PORT": str(PORTS["epmd"]),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODENAME": "mobility-lab@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(PORTS["amqp"]),
        "RABBITMQ_DIST_PORT": str(PORTS["dist"]),
        "RABBITMQ_MNESIA_BASE": str(rabbit / "mnesia"),
        "RABBITMQ_LOG_BASE": str(rabbit / "log"),
        "RABBITMQ_PID_FILE": str(rabbit / "rabbitmq.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(rabbit / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(rabbit / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(rabbit / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(rabbit / "rabbitmq-env.conf"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    })
    return env


def start_rabbitmq(base: Path) -> None:
    # The Debian wrapper (/usr/sbin/rabbitmq-server) would switch to the rabbitmq user, who cannot
    # write under BASE; the server script itself runs as root with everything under BASE.
    spawn(base, "rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=rabbit_env(base))


def start_mariadb(base: Path, log: Log) -> None:
    mysql = base / "mysql"
    (mysql / "data").mkdir(parents=True, exist_ok=True)
    sock = mysql / "mysqld.sock"
    if len(str(sock)) > 100:
        raise LabError("the MariaDB socket path %s is too long for a unix socket: use a shorter BASE" % sock)
    cnf = base / "etc" / "my.cnf"
    cnf.write_text("\n".join([
        "[mysqld]", "user = root", "datadir = %s" % (mysql / "data"), "socket = %s" % sock,
        "pid-file = %s" % (mysql / "mysqld.pid"), "bind-address = 127.0.0.1", "port = %d" % PORTS["mysql"],
        "skip-name-resolve", "innodb_buffer_pool_size = 64M", "innodb_log_file_size = 16M",
        "innodb_flush_log_at_trx_commit = 2", "sync_binlog = 0", "performance_schema = OFF",
        "max_connections = 500", "log-error = %s" % (base / "logs" / "mysqld.err"), ""]), encoding="utf-8")
    run(["mariadb-install-db", "--defaults-file=%s" % cnf, "--auth-root-authentication-method=normal",
         "--skip-test-db"], base / "logs" / "mysql-install.log", "initialise MariaDB")
    spawn(base, "mariadb", ["mariadbd", "--defaults-file=%s" % cnf])
    client = ["mariadb", "--no-defaults", "--socket=%s" % sock, "-uroot"]
    wait_until(lambda: subprocess.run(client + ["-e", "SELECT 1"], capture_output=True, check=False).returncode == 0,
               "MariaDB on %s" % sock, 60, check=lambda: _alive_or_fail(base, "mariadb", "mysqld.err"))
    statements = []
    for service in ("manila", "cinder"):
        statements += ["CREATE DATABASE %s CHARACTER SET utf8" % service,
                       "CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'" % (service, service),
                       "GRANT ALL ON %s.* TO '%s'@'127.0.0.1'" % (service, service)]
    run(client, base / "logs" / "mysql-install.log", "create the databases", input_text=";\n".join(statements) + ";\n")
    log("MariaDB ready on 127.0.0.1:%d" % PORTS["mysql"])


def _alive_or_fail(base: Path, name: str, log_name: str | None = None) -> None:
    if recorded_pid(base, name) is None:
        log_path = base / "logs" / (log_name or "%s.out" % name)
        raise LabError("%s exited during start-up (log: %s):\n%s" % (name, log_path, tail(log_path)))


def _common_conf(base: Path, service: str, port: int) -> list:
    return [
        "[DEFAULT]",
        "host = %s" % HOST,
        "my_ip = 127.0.0.1",
        "state_path = %s" % (base / service / "state"),
        "api_paste_config = %s" % (base / service / "etc" / "api-paste.ini"),
        "auth_strategy = noauth",
        "transport_url = rabbit://guest:guest@127.0.0.1:%d/" % PORTS["amqp"],
        "control_exchange = %s" % service,
        "debug = True",
        "use_stderr = False",
        "log_dir = %s" % (base / "logs"),
        "report_interval = 10",  # heartbeats cost CPU for the whole test run; 10 s is the services' default
        "periodic_interval = 3",
        "periodic_fuzzy_delay = 0",
        "service_down_time = 60",
        "osapi_%s_listen = 127.0.0.1" % ("share" if service == "manila" else "volume"),
        "osapi_%s_listen_port = %d" % ("share" if service == "manila" else "volume", port),
        "osapi_%s_workers = 1" % ("share" if service == "manila" else "volume"),
    ]


def _tail_conf(base: Path, service: str) -> list:
    return [
        "",
        "[database]",
        "connection = mysql+pymysql://%s:%s@127.0.0.1:%d/%s?charset=utf8" % (service, service, PORTS["mysql"], service),
        "",
        "[oslo_concurrency]",
        "lock_path = %s" % (base / service / "lock"),
        "",
        "[coordination]",
        "backend_url = file://%s" % (base / service / "coordination"),
    ]


def with_discovery(paste: str) -> str:
    """api-paste.ini with the lab's ``lab_discovery`` filter before the noauth middleware of every
    noauth pipeline (see lab_discovery.py: keystoneauth's version discovery carries no token)."""
    lines = []
    for line in paste.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().startswith("noauth"):
            words = value.split()
            auth = [i for i, word in enumerate(words) if word.startswith("noauth")]
            if auth:
                words.insert(auth[0], "lab_discovery")
                line = "%s= %s" % (key, " ".join(words))
        lines.append(line)
    lines += ["", "[filter:lab_discovery]", "paste.filter_factory = lab_discovery:filter_factory", ""]
    return "\n".join(lines)


def write_manila_conf(base: Path, venv: Path) -> Path:
    etc = base / "manila" / "etc"
    for sub in ("etc", "state", "lock", "coordination"):
        (base / "manila" / sub).mkdir(parents=True, exist_ok=True)
    paste = (venv / "etc" / "manila" / "api-paste.ini").read_text(encoding="utf-8")
    (etc / "api-paste.ini").write_text(with_discovery(paste.replace("/etc/manila/healthcheck_disable",
                                                                    str(etc / "healthcheck_disable"))),
                                       encoding="utf-8")
    lines = _common_conf(base, "manila", PORTS["manila"]) + [
        "enabled_share_backends = %s" % ",".join(MANILA_BACKENDS),
        "enabled_share_protocols = NFS,CIFS",
        "default_share_type = default",
        "migration_driver_continue_update_interval = 3",
        "replica_state_update_interval = 300",  # the tests reset replica_state by hand; a short interval races them
        "dummy_driver_default_driver_method_delay = 0.1",
    ] + _tail_conf(base, "manila")
    delays = ("migration_continue:0.1,migration_get_progress:0.1,create_share:0.2,create_replica:0.2,"
              "promote_replica:0.2,update_replica_state:0.1")
    for backend in MANILA_BACKENDS:
        lines += ["", "[%s]" % backend, "share_backend_name = %s" % backend.upper(),
                  "driver_handles_share_servers = False", "replication_domain = %s" % REPLICATION_DOMAIN,
                  "share_driver = manila.tests.share.drivers.dummy.DummyDriver",
                  "dummy_driver_driver_methods_delays = %s" % delays]
    conf = etc / "manila.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return conf


def cinder_volume_dir(base: Path, backend: str) -> Path:
    return base / "cinder" / "volumes" / backend


def write_cinder_conf(base: Path, venv: Path) -> Path:
    etc = base / "cinder" / "etc"
    for sub in ("etc", "state", "lock", "coordination"):
        (base / "cinder" / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(venv / "etc" / "cinder" / "resource_filters.json", etc / "resource_filters.json")
    paste = (venv / "etc" / "cinder" / "api-paste.ini").read_text(encoding="utf-8")
    (etc / "api-paste.ini").write_text(with_discovery(paste), encoding="utf-8")
    lines = _common_conf(base, "cinder", PORTS["cinder"]) + [
        "resource_query_filters_file = %s" % (etc / "resource_filters.json"),
        "enabled_backends = %s" % ",".join(CINDER_BACKENDS),
        "backend_stats_polling_interval = 3",
        "scheduler_driver_init_wait_time = 3",
        "migration_create_volume_timeout_secs = 60",
    ] + _tail_conf(base, "cinder")
    # os-brick and Cinder start their privsep daemons through sudo by default; root needs no sudo
    # (and the machine may have none), so they run the helper directly.
    helper = "%s --config-file %s" % (venv / "bin" / "privsep-helper", etc / "cinder.conf")
    for section in ("privsep_osbrick", "cinder_sys_admin"):
        lines += ["", "[%s]" % section, "helper_command = %s" % helper]
    for backend in CINDER_BACKENDS:
        cinder_volume_dir(base, backend).mkdir(parents=True, exist_ok=True)
        lines += ["", "[%s]" % backend, "volume_backend_name = %s" % backend,
                  "volume_driver = cinder_test_drivers.file_volume.MovingFileVolumeDriver",
                  "mobility_volume_directory = %s" % cinder_volume_dir(base, backend)]
    conf = etc / "cinder.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return conf


def service_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "OS_CLOUD"):
        env.pop(name, None)
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra or {})
    return env


def db_sync(base: Path, venvs: dict, confs: dict, log: Log) -> None:
    """Both schemas at once (each takes seconds of alembic)."""
    procs = {}
    for service in ("manila", "cinder"):
        out = open(base / "logs" / ("%s-db-sync.log" % service), "ab")  # pylint: disable=consider-using-with
        procs[service] = (subprocess.Popen([str(venvs[service] / "bin" / ("%s-manage" % service)),  # pylint: disable=consider-using-with
                                            "--config-file", str(confs[service]), "db", "sync"],
                                           stdout=out, stderr=subprocess.STDOUT, env=service_env()), out)
        _HELPERS.append(procs[service][0])
    try:
        for service, (proc, out) in procs.items():
            rc = proc.wait(timeout=600)
            if rc != 0:
                path = base / "logs" / ("%s-db-sync.log" % service)
                raise LabError("%s-manage db sync exited with %d (log: %s):\n%s" % (service, rc, path, tail(path)))
    finally:
        _end_children([proc for proc, _out in procs.values()])
        for _proc, out in procs.values():
            out.close()
    log("database schemas created")


def start_services(base: Path, venvs: dict, confs: dict) -> None:
    manila_bin = venvs["manila"] / "bin"
    for svc in ("scheduler", "share", "data"):
        spawn(base, "manila-%s" % svc, [manila_bin / ("manila-%s" % svc), "--config-file", confs["manila"]],
              env=service_env())
    # manila-api's own server needs eventlet's monkey patching, which this variable keeps on.
    spawn(base, "manila-api", [manila_bin / "manila-api", "--config-file", confs["manila"]],
          env=service_env({"OS_MANILA_DISABLE_EVENTLET_PATCHING": "false", "PYTHONPATH": str(HERE)}))  # lab_discovery
    cinder_bin = venvs["cinder"] / "bin"
    for svc in ("api", "scheduler", "volume"):
        spawn(base, "cinder-%s" % svc, [cinder_bin / ("cinder-%s" % svc), "--config-file", confs["cinder"]],
              env=service_env({"PYTHONPATH": str(HERE)}))  # cinder_test_drivers, lab_discovery


def _services_alive(base: Path) -> None:
    for name in PROCESS_ORDER:
        _alive_or_fail(base, name)


def manila_ready(base: Path, log: Log) -> list:
    url = "http://127.0.0.1:%d/v2" % PORTS["manila"]
    headers = {"X-OpenStack-Manila-API-Version": "2.65"}

    def services_up():
        services = http("GET", url + "/services", headers=headers)["services"]
        up = [s for s in services if s["state"] == "up" and s["status"] == "enabled"]
        return len(up) >= 2 + len(MANILA_BACKENDS)

    wait_until(services_up, "the Manila services", READY_TIMEOUT, check=lambda: _services_alive(base))
    log("Manila services up")
    existing = {t["name"] for t in http("GET", url + "/types", headers=headers)["share_types"]}
    specs = {"driver_handles_share_servers": "False", "snapshot_support": "True"}
    for name, extra in (("default", {}), ("replicated", {"replication_type": "readable"})):
        if name not in existing:
            http("POST", url + "/types", {"share_type": {"name": name, "extra_specs": dict(specs, **extra),
                                                         "share_type_access:is_public": True}}, headers=headers)
    log("share types default and replicated")

    def probe_share():
        share = http("POST", url + "/shares", {"share": {"share_proto": "NFS", "size": 1, "name": "lab-probe",
                                                         "share_type": "default"}}, headers=headers)["share"]
        status = wait_until(lambda: _share_status(url, headers, share["id"], ("available", "error")),
                            "the probe share", 60)
        http("DELETE", url + "/shares/" + share["id"], headers=headers)
        wait_until(lambda: _gone(url + "/shares/" + share["id"], headers), "the deletion of the probe share", 60)
        return status == "available"

    # The pools API answers from the scheduler's cache, which only a scheduling refreshes: a backend
    # whose first report came just after the probe share was scheduled would stay missing from it.
    # So the probe is repeated (each one is scheduled) until every backend's pool is listed.
    def probe_and_pools():
        if not probe_share():
            return None
        return _pools(http("GET", url + "/scheduler-stats/pools", headers=headers)["pools"], len(MANILA_BACKENDS))

    pools = wait_until(probe_and_pools, "a Manila probe share and the pools of every backend", READY_TIMEOUT,
                       interval=2, check=lambda: _services_alive(base))
    log("Manila: probe share available; pools: %s" % ", ".join(pools))
    return pools


def _share_status(url: str, headers: dict, share_id: str, final: tuple):
    status = http("GET", url + "/shares/" + share_id, headers=headers)["share"]["status"]
    return status if status in final else None


def _gone(url: str, headers: dict | None = None) -> bool:
    try:
        http("GET", url, headers=headers)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


def _pools(pools: list, count: int):
    names = sorted(p["name"] for p in pools)
    return names if len(names) >= count else None


def cinder_ready(base: Path, log: Log) -> list:
    url = "http://127.0.0.1:%d/v3/%s" % (PORTS["cinder"], PROJECT_ID)

    def services_up():
        services = http("GET", url + "/os-services")["services"]
        up = [s for s in services if s["state"] == "up" and s["status"] == "enabled"]
        return len(up) >= 1 + len(CINDER_BACKENDS)

    wait_until(services_up, "the Cinder services", READY_TIMEOUT, check=lambda: _services_alive(base))
    log("Cinder services up")
    pools = wait_until(lambda: _pools(http("GET", url + "/scheduler-stats/get_pools")["pools"], len(CINDER_BACKENDS)),
                       "the Cinder pools", READY_TIMEOUT, check=lambda: _services_alive(base))
    log("Cinder pools: %s" % ", ".join(pools))

    def probe_volume():
        volume = http("POST", url + "/volumes", {"volume": {"size": 1, "name": "lab-probe"}})["volume"]
        status = wait_until(lambda: _volume_status(url, volume["id"]), "the probe volume", 60)
        http("DELETE", url + "/volumes/" + volume["id"])
        wait_until(lambda: _gone(url + "/volumes/" + volume["id"]), "the deletion of the probe volume", 60)
        return status == "available"

    wait_until(probe_volume, "a first Cinder volume to become available", READY_TIMEOUT, interval=2,
               check=lambda: _services_alive(base))
    log("Cinder: probe volume available")
    return pools


def _volume_status(url: str, volume_id: str):
    status = http("GET", url + "/volumes/" + volume_id)["volume"]["status"]
    return status if status in ("available", "error") else None


def write_clouds_yaml(base: Path) -> Path:
    manila = "http://127.0.0.1:%d/" % PORTS["manila"]
    cinder = "http://127.0.0.1:%d/" % PORTS["cinder"]
    path = base / "clouds.yaml"
    path.write_text("\n".join([
        "# The OpenStack lab (noauth: the token user:project is an administrator of the project)",
        "clouds:",
        "  %s:" % CLOUD,
        "    auth_type: admin_token",
        "    auth:",
        "      endpoint: %s" % manila,
        '      token: "%s"' % TOKEN,
        "    shared_file_system_endpoint_override: %s" % manila,
        "    block_storage_endpoint_override: %s" % cinder,
        ""]), encoding="utf-8")
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ start / stop


def _check_ports(base: Path) -> None:
    busy = ["%s %d" % (name, port) for name, port in sorted(PORTS.items()) if port_open(port)]
    if busy:
        raise LabError("ports in use on 127.0.0.1 (%s): another lab runs? stop it (lab.py stop BASE) first; "
                       "this lab is at %s" % (", ".join(busy), base))


def start(base, echo: bool = True, timeout: float = START_TIMEOUT) -> Lab:
    """Start the lab under ``base`` and block until it is ready; returns its Lab.

    On failure everything started is stopped and LabError says why.
    """
    base = Path(base).resolve()
    if (base / "lab.json").exists() and status(base)["ready"]:
        return Lab.from_file(base / "lab.json")
    stop(base, quiet=True, own_start=True)
    # A fresh lab every time: the state of an earlier run under this BASE goes (the logs too,
    # except the log of the command running now, which test.sh may have opened there).
    for sub in STATE_FOLDERS:
        shutil.rmtree(base / sub, ignore_errors=True)
    for stale in ("lab.json", "lab.failed", "clouds.yaml"):
        with contextlib.suppress(FileNotFoundError):
            (base / stale).unlink()
    for sub in ("logs", "pids", "etc"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    log = Log(base / "logs" / "lab.log", echo)
    _ABORT.clear()
    del _HELPERS[:]
    if os.geteuid() != 0:
        raise LabError("the OpenStack lab needs root (apt packages, MariaDB and RabbitMQ run as root)")
    started = time.monotonic()
    try:
        _check_ports(base)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)  # pylint: disable=consider-using-with
        try:
            futures = {name: pool.submit(ensure_venv, name, log, base / "logs") for name in REQUIREMENTS}
            ensure_packages(log, base / "logs")
            start_epmd(base)
            wait_until(lambda: port_open(PORTS["epmd"]), "epmd", 30, 0.1, check=lambda: _alive_or_fail(base, "epmd"))
            start_rabbitmq(base)
            start_mariadb(base, log)
            venvs = {name: future.result(timeout=max(1.0, timeout - (time.monotonic() - started)))
                     for name, future in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        confs = {"manila": write_manila_conf(base, venvs["manila"]), "cinder": write_cinder_conf(base, venvs["cinder"])}
        db_sync(base, venvs, confs, log)
        wait_until(lambda: port_open(PORTS["amqp"]), "RabbitMQ on port %d" % PORTS["amqp"], 120,
                   check=lambda: _alive_or_fail(base, "rabbitmq"))
        log("RabbitMQ ready on 127.0.0.1:%d" % PORTS["amqp"])
        start_services(base, venvs, confs)
        log("services started")
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)  # pylint: disable=consider-using-with
        try:
            manila = pool.submit(manila_ready, base, log)
            cinder = pool.submit(cinder_ready, base, log)
            manila_pools, cinder_pools = manila.result(), cinder.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        lab = Lab(base=str(base), clouds_yaml=str(write_clouds_yaml(base)), cloud=CLOUD,
                  manila_endpoint="http://127.0.0.1:%d/" % PORTS["manila"],
                  cinder_endpoint="http://127.0.0.1:%d/" % PORTS["cinder"], project_id=PROJECT_ID,
                  manila_pools=manila_pools, cinder_pools=cinder_pools,
                  cinder_volume_dirs={pool: str(cinder_volume_dir(base, pool.split("@", 1)[1].split("#", 1)[0]))
                                      for pool in cinder_pools})
        _write_atomic(base / "lab.json", json.dumps(asdict(lab), indent=1) + "\n")
        log("lab ready in %.0f s: %s" % (time.monotonic() - started, base / "lab.json"))
        return lab
    except BaseException as exc:
        _ABORT.set()  # the other threads of this start give up at their next step
        _end_children(list(_HELPERS))
        log("start failed: %s" % (exc if isinstance(exc, LabError) else "interrupted (%s %s)" % (type(exc).__name__, exc)))
        stop(base, quiet=True, own_start=True)
        if isinstance(exc, LabError):
            raise
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise LabError("%s: %s" % (type(exc).__name__, exc)) from exc


def stop(base, quiet: bool = False, own_start: bool = False) -> list:
    """Stop every process the lab under ``base`` started; returns the names stopped."""
    base = Path(base).resolve()
    stopped = []
    if not own_start:
        starter = recorded_pid(base, "start")
        if starter is not None and starter != os.getpid():
            end_group(starter)  # the start command and its children (pip, apt, db sync)
            stopped.append("start")
    for name in PROCESS_ORDER:
        pid = recorded_pid(base, name)
        if pid is not None:
            end_group(pid)
            stopped.append(name)
        with contextlib.suppress(FileNotFoundError):
            _pidfile(base, name).unlink()
    if not own_start:
        with contextlib.suppress(FileNotFoundError):
            _pidfile(base, "start").unlink()
    with contextlib.suppress(FileNotFoundError):
        (base / "lab.json").unlink()
    if not quiet:
        print("stopped: %s" % (", ".join(stopped) or "nothing was running"))
    return stopped


def status(base) -> dict:
    base = Path(base).resolve()
    processes = {name: recorded_pid(base, name) for name in ("start",) + PROCESS_ORDER}
    services_alive = all(processes[name] for name in PROCESS_ORDER)
    return {"base": str(base), "ready": (base / "lab.json").exists() and services_alive,
            "failed": (base / "lab.failed").read_text(encoding="utf-8") if (base / "lab.failed").exists() else None,
            "processes": processes}


def _give_up_after(seconds: float, base: Path):
    """A SIGALRM handler: the start command ran out of time."""
    def handler(signum, frame):  # pylint: disable=unused-argument
        raise LabError("the lab did not become ready within %d s (--timeout); see %s"
                       % (seconds, base / "logs" / "lab.log"))
    return handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("base", help="folder of the lab (created)")
    parser.add_argument("--timeout", type=float, default=START_TIMEOUT,
                        help="seconds start may take before it gives up (default %d)" % START_TIMEOUT)
    args = parser.parse_args(argv)
    base = Path(args.base).resolve()
    if args.action == "stop":
        stop(base)
        return 0
    if args.action == "status":
        state = status(base)
        print(json.dumps(state, indent=1))
        return 0 if state["ready"] else 1
    base.mkdir(parents=True, exist_ok=True)
    (base / "logs").mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        os.setsid()  # one process group for this command and its children: stop ends them together
    record_pid(base, "start", os.getpid())
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGALRM, _give_up_after(args.timeout, base))
    signal.alarm(max(1, int(args.timeout)))
    try:
        start(base, echo=True, timeout=args.timeout)
    except (LabError, SystemExit, KeyboardInterrupt) as exc:
        reason = str(exc) if isinstance(exc, LabError) else "interrupted (%s %s): lab.py stop, or a signal" % (
            type(exc).__name__, exc)
        _write_atomic(base / "lab.failed", reason + "\n")
        print("lab start failed: %s" % reason, file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        with contextlib.suppress(FileNotFoundError):
            _pidfile(base, "start").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
