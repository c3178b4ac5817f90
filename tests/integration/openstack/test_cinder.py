"""The volume modules against real Cinder (the OpenStack lab, see lab.py and README.md here).

Every scenario runs the modules through ``ansible-playbook``: one playbook per scenario, one task
per step (a check-mode run, the real run, the rerun), each result saved to a file and asserted
afterwards. The volume data checks need a lab whose Cinder backends keep volumes as files
(``cinder_volume_dirs`` in lab.json, as lab.py's do); a lab without them (a Cinder on a driver
that stores nothing) skips only the checks that read data.

The scenario playbooks of the selected tests start together, once the volumes they start from
exist (one playbook creates them all): they touch different volumes, and most of a run is
Ansible starting modules and Cinder's own waits, so side by side they take about as long as the
slowest one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import uuid
from pathlib import Path

import pytest

import lab as lab_harness
from test_targets import _ansible_playbook, _environment

pytestmark = pytest.mark.integration

PLAYBOOK_TIMEOUT = 300
# Written into a volume before it moves: one block at the start, one in the middle of the sparse file.
PATTERN = {0: b"storage.mobility head " * 100, 512 * 1024 ** 2: b"storage.mobility middle " * 100}


# ------------------------------------------------------------------------------------------ helpers


class Cinder:
    """The lab's Cinder as an administrator sees it (REST with the lab's noauth token), for setup and checks."""

    def __init__(self, lab):
        self.lab = lab
        self.url = lab.cinder_endpoint.rstrip("/") + "/v3/" + lab.project_id

    def call(self, method, path, body=None):
        return lab_harness.http(method, self.url + path, body, headers={"OpenStack-API-Version": "volume 3.0"})

    def volume(self, volume_id):
        try:
            return self.call("GET", "/volumes/" + volume_id)["volume"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def find(self, name):
        found = [v for v in self.call("GET", "/volumes/detail?name=" + name)["volumes"] if v["name"] == name]
        return found[0] if found else None

    def backend_names(self):
        """{pool: volume_backend_name}"""
        pools = self.call("GET", "/scheduler-stats/get_pools?detail=true")["pools"]
        return {p["name"]: p["capabilities"]["volume_backend_name"] for p in pools}

    def ensure_type(self, name, extra_specs):
        existing = [t for t in self.call("GET", "/types?is_public=None")["volume_types"] if t["name"] == name]
        if not existing:
            self.call("POST", "/types", {"volume_type": {"name": name, "extra_specs": extra_specs}})

    def delete_quietly(self, name):
        """Delete the volume once no migration runs on it (test cleanup)."""
        volume = self.find(name)
        if volume is None:
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            volume = self.volume(volume["id"])
            if volume is None:
                return
            if volume["status"] in ("available", "error") and volume.get("migration_status") not in (
                    "starting", "migrating", "completing"):
                break
            time.sleep(1)
        self.call("DELETE", "/volumes/" + volume["id"])


class Play:
    """Runs steps (module calls) in one ansible-playbook run and returns each step's registered result."""

    def __init__(self, lab, work: Path, collections: Path):
        self.lab = lab
        self.work = work
        self.collections = collections
        self.runs = 0
        self.inventory = work / "inventory.ini"
        self.inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable,
                                  encoding="utf-8")

    def backends(self, **extra):
        return [dict({"name": "cloud", "driver": "cinder", "cloud": self.lab.cloud}, **extra)]

    def start(self, steps: list, backends: list | None = None) -> tuple:
        """Start a playbook of ``steps``: (module, args) or (module, args, {"check": True}), one task each."""
        self.runs += 1
        folder = self.work / ("run%02d" % self.runs)
        folder.mkdir()
        tasks = []
        for index, step in enumerate(steps):
            module, args = step[0], step[1]
            options = step[2] if len(step) > 2 else {}
            task = {"name": "Step %d, %s" % (index, module), "storage.mobility.%s" % module: args,
                    "register": "step_%d" % index, "ignore_errors": True}
            if options.get("check"):
                task["check_mode"] = True
            tasks.append(task)
        out = folder / "results.json"
        everything = "{{ [%s] | to_json }}" % ", ".join("step_%d" % index for index in range(len(steps)))
        tasks.append({"name": "Save the results", "check_mode": False,
                      "ansible.builtin.copy": {"content": everything, "dest": str(out), "mode": "0600"}})
        play = [{"name": "Cinder volumes", "hosts": "localhost", "gather_facts": False,
                 "module_defaults": {"group/storage.mobility.mobility": {"backends": backends or self.backends()}},
                 "tasks": tasks}]
        playbook = folder / "play.yml"
        playbook.write_text(json.dumps(play, indent=1), encoding="utf-8")
        env = _environment(self.collections, folder)
        env["OS_CLIENT_CONFIG_FILE"] = self.lab.clouds_yaml
        env.pop("OS_CLOUD", None)
        log = folder / "output.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen([_ansible_playbook(), "-i", str(self.inventory), str(playbook)],  # pylint: disable=consider-using-with
                                    cwd=str(folder), env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT)
        return proc, out, log, len(steps)

    @staticmethod
    def finish(started: tuple) -> list:
        """Wait for a started playbook; one result dict per step."""
        proc, out, log, count = started
        try:
            proc.wait(timeout=PLAYBOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output = log.read_text(encoding="utf-8", errors="replace")
        assert out.exists(), "ansible-playbook (rc %s) stopped before saving the results:\n%s" % (
            proc.returncode, output[-4000:])
        results = json.loads(out.read_text(encoding="utf-8"))
        assert len(results) == count
        return results

    def run(self, steps: list, backends: list | None = None) -> list:
        return self.finish(self.start(steps, backends))


def ok(result: dict) -> dict:
    assert not result.get("failed"), "module failed: %s" % result.get("msg")
    return result


def failed(result: dict, *needles: str) -> str:
    assert result.get("failed"), "module should have failed: %s" % json.dumps(result)[:2000]
    message = result["msg"]
    for needle in needles:
        assert needle in message, "%r not in %r" % (needle, message)
    return message


def volume_file(lab, volume: dict) -> Path:
    host = volume["os-vol-host-attr:host"]
    return Path(lab.cinder_volume_dirs[host]) / ("volume-%s" % (volume.get("os-vol-mig-status-attr:name_id") or volume["id"]))


def write_pattern(path: Path) -> None:
    with open(path, "r+b") as handle:
        for offset, data in PATTERN.items():
            handle.seek(offset)
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def has_pattern(path: Path) -> bool:
    with open(path, "rb") as handle:
        for offset, data in PATTERN.items():
            handle.seek(offset)
            if handle.read(len(data)) != data:
                return False
    return True


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cinder(openstack_lab):
    return Cinder(openstack_lab)


@pytest.fixture(scope="module")
def volume_types(openstack_lab, cinder):
    """{pool: name of a volume type pinned to that pool's backend (volume_backend_name)}."""
    backend_names = cinder.backend_names()
    types = {}
    for pool in openstack_lab.cinder_pools:
        types[pool] = "mobility-test-%s" % backend_names[pool]
        cinder.ensure_type(types[pool], {"volume_backend_name": backend_names[pool]})
    return types


def other_pool(lab, pool: str) -> str:
    return [p for p in lab.cinder_pools if p != pool][0]


def needs_volume_files(lab):
    if not lab.cinder_volume_dirs:
        pytest.skip("the lab's Cinder backends keep no volume data (lab.json has no cinder_volume_dirs); "
                    "lab.py's file-backed test drivers do")


# ------------------------------------------------------------------------------------------ scenarios
# Each builds the steps of one test's playbook from the volume it starts from (created beforehand).


def steps_lifecycle(name, volume, scenarios):
    return [
        ("volume", {"name": name, "size": 1, "wait_sleep": 1}, {"check": True}),
        ("volume", {"name": name, "size": 1, "description": "mobility test", "wait_sleep": 1}),
        ("volume", {"name": name, "size": 1, "description": "mobility test", "wait_sleep": 1}),
        ("volume", {"name": name, "size": 2, "wait_sleep": 1}),
        ("volume", {"name": name, "size": 1, "wait_sleep": 1}),
        ("volume_info", {"name": name}),
        ("volume", {"name": name, "state": "absent", "wait_sleep": 1}, {"check": True}),
        ("volume", {"name": name, "state": "absent", "wait_sleep": 1}),
        ("volume", {"name": name, "state": "absent", "wait_sleep": 1}),
    ]


def steps_driver(name, volume, scenarios):
    args = {"volume": name, "host": other_pool(scenarios.lab, volume["host"]), "wait_sleep": 1}
    return [("volume_migrate", args, {"check": True}), ("volume_migrate", args), ("volume_migrate", args),
            ("volume_info", {"name": name})]


def steps_host_copy(name, volume, scenarios):
    args = {"volume": name, "host": other_pool(scenarios.lab, volume["host"]), "force_host_copy": True,
            "lock_volume": True, "wait_sleep": 1}
    return [("volume_migrate", args, {"check": True}), ("volume_migrate", dict(args, wait=False)),
            ("volume_migrate", args), ("volume_migrate", args)]


def steps_retype(name, volume, scenarios):
    second = sorted(scenarios.lab.cinder_pools)[1]
    args = {"volume": name, "new_type": scenarios.types[second], "migration_policy": "on-demand", "wait_sleep": 1}
    return [("volume_migrate", dict(args, migration_policy="never")), ("volume_migrate", args, {"check": True}),
            ("volume_migrate", args), ("volume_migrate", args)]


def steps_bad(name, volume, scenarios):
    host, backend = volume["host"].split("#")[0].split("@")
    destination = other_pool(scenarios.lab, volume["host"])
    return [
        ("volume_migrate", {"volume": name, "host": "%s@no-such-backend#pool" % host}),
        ("volume_migrate", {"volume": name, "host": "%s@%s#no-such-pool" % (host, backend)}),
        ("volume_migrate", {"volume": name, "host": destination, "cluster": "somewhere"}),
        ("volume_migrate", {"volume": name, "host": destination, "new_type": "x"}),
        ("volume_migrate", {"volume": name, "new_type": "x", "force_host_copy": True}),
        ("volume_migrate", {"volume": name, "host": destination, "migration_policy": "on-demand"}),
        ("volume_migrate", {"volume": "%s-no-such-volume" % scenarios.prefix, "host": destination}),
        ("volume_migrate", {"volume": name, "new_type": "mobility-no-such-type"}),
        ("volume", {"name": "%s-no-size" % scenarios.prefix}),
        # refused by Cinder itself: its status and message come back
        ("volume", {"name": "%s-too-big" % scenarios.prefix, "size": 100000}),
        # a microversion cap below 3.16 (the backend's api_version) makes a cluster migration impossible
        ("volume_migrate", {"volume": name, "cluster": "somewhere",
                            "backends": scenarios.play.backends(api_version="3.10")}),
    ]


# test -> (purpose of the volume it starts from, or None; steps builder; needs volume files)
SCENARIOS = {
    "test_volume_create_extend_delete": (None, steps_lifecycle, False),
    "test_migrate_driver_assisted": ("drv", steps_driver, False),
    "test_migrate_with_host_copy": ("copy", steps_host_copy, True),
    "test_retype_with_migration": ("retype", steps_retype, False),
    "test_bad_requests_change_nothing": ("bad", steps_bad, False),
}


class Scenarios:
    """The selected tests' playbooks, started side by side once their volumes exist."""

    def __init__(self, lab, cinder, types, play):
        self.lab = lab
        self.cinder = cinder
        self.types = types
        self.play = play
        self.prefix = "mobility-%s" % uuid.uuid4().hex[:8]
        self.created = {}   # purpose -> the volume module's result
        self.names = {}     # test -> name of its volume
        self.running = {}   # test -> started playbook
        self.results = {}

    def prepare(self, tests):
        first = sorted(self.lab.cinder_pools)[0]
        purposes = [SCENARIOS[t][0] for t in tests if SCENARIOS[t][0]]
        steps = [("volume", dict({"name": "%s-%s" % (self.prefix, purpose), "size": 1, "wait_sleep": 1},
                                 **({"volume_type": self.types[first]} if purpose == "retype" else {})))
                 for purpose in purposes]
        for purpose, result in zip(purposes, self.play.run(steps) if steps else []):
            self.created[purpose] = ok(result)
        for test in tests:
            purpose, build, _files = SCENARIOS[test]
            volume = self.created[purpose]["volume"] if purpose else None
            self.names[test] = "%s-%s" % (self.prefix, purpose or "life")
            if volume is not None and self.lab.cinder_volume_dirs:
                write_pattern(volume_file(self.lab, volume))
            self.running[test] = self.play.start(build(self.names[test], volume, self))

    def result(self, test):
        if test not in self.results:
            self.results[test] = self.play.finish(self.running.pop(test))
        return self.results[test]

    def close(self):
        for proc, _out, _log, _count in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for name in list(self.names.values()) + ["%s-no-size" % self.prefix, "%s-too-big" % self.prefix]:
            self.cinder.delete_quietly(name)


@pytest.fixture(scope="module")
def scenarios(request, openstack_lab, cinder, volume_types, collections_path, tmp_path_factory):
    runs = Scenarios(openstack_lab, cinder, volume_types,
                     Play(openstack_lab, tmp_path_factory.mktemp("cinder"), collections_path))
    selected = [item.name for item in request.session.items if item.module is request.module]
    try:
        runs.prepare([t for t in selected if openstack_lab.cinder_volume_dirs or not SCENARIOS[t][2]])
        yield runs
    finally:
        runs.close()


# ------------------------------------------------------------------------------------------ tests


def test_volume_create_extend_delete(openstack_lab, scenarios, cinder):
    """Create (check mode, real, rerun), extend, a refused shrink, info, delete (check mode, real, rerun)."""
    name = scenarios.names["test_volume_create_extend_delete"]
    check, create, again, extend, shrink, info, check_delete, delete, delete_again = scenarios.result(
        "test_volume_create_extend_delete")
    assert ok(check)["changed"] and check["volume"]["name"] == name and check["actions"]
    assert ok(create)["changed"] and create["volume"]["status"] == "available"
    assert create["volume"]["host"] in openstack_lab.cinder_pools
    assert not ok(again)["changed"]
    assert ok(extend)["changed"] and extend["volume"]["size"] == 2
    failed(shrink, "Cannot shrink volume %s from 2 to 1 GiB" % name)
    (listed,) = ok(info)["volumes"]
    assert listed["id"] == create["volume"]["id"] and listed["size"] == 2 and listed["description"] == "mobility test"
    assert set(info["pools"]) == set(openstack_lab.cinder_pools)
    assert ok(check_delete)["changed"]
    assert ok(delete)["changed"] and cinder.volume(create["volume"]["id"]) is None
    assert not ok(delete_again)["changed"]


def test_migrate_driver_assisted(openstack_lab, scenarios, cinder):
    """Check mode, the migration, an unchanged rerun; the data moved with the volume."""
    created = scenarios.created["drv"]["volume"]
    name, source = created["name"], created["host"]
    destination = other_pool(openstack_lab, source)
    check, moved, again, info = scenarios.result("test_migrate_driver_assisted")
    assert ok(check)["changed"] and check["volume"]["host"] == destination
    assert check["actions"] == ["migrate volume %s to host %s" % (name, destination)]
    # check mode moved nothing: the real run still found the volume on the source
    assert ok(moved)["changed"] and moved["migration"]["source"] == source
    assert moved["volume"]["host"] == destination and moved["volume"]["migration_status"] == "success"
    assert moved["migration"]["mechanism"] == "driver" and moved["volume"]["name_id"] is None
    assert [h["migration_status"] for h in moved["migration"]["history"]][-1] == "success"
    assert not ok(again)["changed"] and again["volume"]["host"] == destination
    (listed,) = ok(info)["volumes"]
    assert listed["host"] == destination and listed["os-vol-host-attr:host"] == destination
    assert listed["migration_status"] == "success" and listed["os-vol-mig-status-attr:name_id"] is None
    assert cinder.volume(created["id"])["os-vol-host-attr:host"] == destination
    if openstack_lab.cinder_volume_dirs:
        assert has_pattern(volume_file(openstack_lab, listed)), "the data did not move with the volume"
        assert not volume_file(openstack_lab, created).exists()


def test_migrate_with_host_copy(openstack_lab, scenarios, cinder):
    """Check mode, a start without wait, a rerun that follows it, an unchanged rerun; the data was copied."""
    needs_volume_files(openstack_lab)
    source_volume = scenarios.created["copy"]["volume"]
    name = source_volume["name"]
    destination = other_pool(openstack_lab, source_volume["host"])
    source_file = volume_file(openstack_lab, source_volume)
    check, started, followed, again = scenarios.result("test_migrate_with_host_copy")
    assert ok(check)["changed"] and check["migration"]["force_host_copy"]
    assert check["actions"] == ["migrate volume %s to host %s with a host copy, locked" % (name, destination)]
    assert ok(started)["changed"] and started["migration"]["source"] == source_volume["host"]
    assert started["volume"]["migration_status"] in ("starting", "migrating", "completing", "success")
    if started["volume"]["migration_status"] != "success":
        # lock_volume: an available volume is in maintenance while it migrates
        assert started["volume"]["status"] == "maintenance"
    assert not ok(followed)["changed"], "a rerun follows the running migration instead of starting another"
    assert followed["volume"]["host"] == destination and followed["volume"]["migration_status"] == "success"
    assert followed["volume"]["status"] == "available"
    assert not ok(again)["changed"]
    moved = cinder.volume(source_volume["id"])
    assert moved["os-vol-host-attr:host"] == destination
    # a host copy: a new volume took the data and its place, so the volume's storage has a new name id
    assert moved["os-vol-mig-status-attr:name_id"] not in (None, source_volume["id"])
    destination_file = volume_file(openstack_lab, moved)
    assert destination_file.parent != source_file.parent
    assert has_pattern(destination_file), "the host copy did not copy the data"
    assert not source_file.exists(), "Cinder deletes the source volume after the copy"


def test_retype_with_migration(openstack_lab, scenarios, cinder, volume_types):
    """A retype refused under migration_policy never, then check mode, the retype with a move, a rerun."""
    first, second = sorted(openstack_lab.cinder_pools)[:2]
    created = scenarios.created["retype"]["volume"]
    name = created["name"]
    assert created["host"] == first and created["volume_type"] == volume_types[first]
    refused, check, retyped, again = scenarios.result("test_retype_with_migration")
    failed(refused, "Failed to retype volume %s to %s (migration_policy never)" % (name, volume_types[second]),
           "use migration_policy on-demand")
    assert refused["volume"]["volume_type"] == volume_types[first] and refused["volume"]["host"] == first
    assert ok(check)["changed"] and check["volume"]["volume_type"] == volume_types[second]
    assert ok(retyped)["changed"] and retyped["volume"]["volume_type"] == volume_types[second]
    assert retyped["volume"]["host"] == second and retyped["retype"]["moved"]
    assert retyped["retype"]["migration_status"] == "success"
    assert not ok(again)["changed"]
    volume = cinder.volume(created["id"])
    assert volume["volume_type"] == volume_types[second] and volume["os-vol-host-attr:host"] == second


def test_bad_requests_change_nothing(openstack_lab, scenarios, cinder):
    """Unknown destinations, conflicting flags, unknown names, Cinder's own refusal, a too old microversion."""
    created = scenarios.created["bad"]["volume"]
    name, source = created["name"], created["host"]
    host = source.split("@")[0]
    destination = other_pool(openstack_lab, source)
    (unknown_backend, unknown_pool, both, retype_and_move, retype_flags, policy, no_volume, no_type, no_size, too_big,
     too_old) = scenarios.result("test_bad_requests_change_nothing")
    failed(unknown_backend, "Failed to migrate volume %s to host %s@no-such-backend#pool" % (name, host),
           "reports no such pool", destination)
    failed(unknown_pool, "reports no such pool")
    failed(both, "give host or cluster, not both")
    failed(retype_and_move, "new_type (a retype) and host (a migration) are two requests")
    failed(retype_flags, "force_host_copy belong to a migration to a host or cluster")
    failed(policy, "migration_policy applies to a retype")
    failed(no_volume, "Unknown volume '%s-no-such-volume'" % scenarios.prefix)
    failed(no_type, "Unknown volume type 'mobility-no-such-type'")
    failed(no_size, "size (GiB) is required")
    failed(too_big, "Failed to create volume %s-too-big: " % scenarios.prefix, "quota", "(HTTP 413 from POST /volumes")
    assert too_big["status"] == 413
    failed(too_old, "Failed to migrate volume %s to cluster somewhere" % name, "microversion 3.10 at most",
           "capped by api_version 3.10", "needs 3.16 or newer")
    volume = cinder.find(name)
    assert volume["os-vol-host-attr:host"] == source and volume["migration_status"] is None
    assert cinder.find("%s-no-size" % scenarios.prefix) is None and cinder.find("%s-too-big" % scenarios.prefix) is None
