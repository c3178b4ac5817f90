"""The Manila driver against a real Manila (the ``openstack_lab`` fixture), through ansible-playbook.

Each test runs one playbook of ``manila/`` whose tasks carry the assertions: changed, then
unchanged on the rerun, check mode that predicts and changes nothing (the real run after it still
changes), the refusals with their messages. The test checks that the playbook passed; at the end
the module checks that nothing the playbooks created is left in Manila. Names carry a per-run
prefix, so a lab that other tests share, or that an earlier run left shares in, does not matter.

The playbooks of the selected tests start together (they touch different shares) and each test
waits for its own: most of a run is Ansible starting modules, and Manila's migration and
replica steps take their time on the server side, so running them side by side saves minutes.

The lab's Manila runs its dummy driver with short periodic intervals: a driver-assisted migration
reaches ``migration_driver_phase1_done`` in seconds. Its periodic replica update sets an
``out_of_sync`` replica ``in_sync`` on its own; replica.yml retries the steps that need one to stay
``out_of_sync`` for a few seconds (see refuse_attempt.yml and resync_attempt.yml).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from test_targets import _ansible_playbook, _environment

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
PLAYBOOKS = HERE / "manila"
TIMEOUT = 900
# test name -> (playbook, suffixes of the shares it creates)
SCENARIOS = {
    "test_share_lifecycle": ("share.yml", ["life", "old"]),
    "test_migration_complete_and_cancel": ("migration.yml", ["done", "cancel"]),
    "test_replica_lifecycle": ("replica.yml", ["rep", "plain"]),
}


class Playbooks:
    """The scenario playbooks of this run, started side by side."""

    def __init__(self, lab, collections: Path, work: Path):
        self.lab = lab
        self.collections = collections
        self.work = work
        self.prefix = "mt-" + uuid.uuid4().hex[:8]
        self.running: dict = {}

    def _args(self, playbook: str, **extra) -> list:
        data = {"mobility_backends": [{"name": "lab", "driver": "manila", "cloud": self.lab.cloud}],
                "manila_pools": list(self.lab.manila_pools), "prefix": self.prefix,
                "clouds_yaml": self.lab.clouds_yaml}
        data.update(extra)
        vars_file = self.work / f"{Path(playbook).stem}-vars.json"
        vars_file.write_text(json.dumps(data), encoding="utf-8")
        return [_ansible_playbook(), "-i", "localhost,", str(PLAYBOOKS / playbook), "-e", f"@{vars_file}"]

    def _env(self, name: str) -> dict:
        own = self.work / name
        own.mkdir(exist_ok=True)
        return _environment(self.collections, own)

    def start(self, playbook: str) -> None:
        log = self.work / f"{Path(playbook).stem}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(self._args(playbook), cwd=str(self.work), env=self._env(Path(playbook).stem),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.running[playbook] = (proc, log)

    def result(self, playbook: str) -> tuple:
        if playbook not in self.running:
            self.start(playbook)
        proc, log = self.running[playbook]
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
        return rc, log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        for proc, _log in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def leftovers(self, suffixes) -> list:
        """Which shares ``<prefix>-<suffix>`` Manila still has, read with share_info."""
        names = [f"{self.prefix}-{s}" for s in suffixes]
        proc = subprocess.run(self._args("leftovers.yml", names=names), cwd=str(self.work), env=self._env("leftovers"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=TIMEOUT, check=False)
        match = re.search(r"LEFTOVERS=(\[.*?\])", proc.stdout)
        assert proc.returncode == 0 and match, tail(proc.returncode, proc.stdout)
        return json.loads(match.group(1))


def tail(rc, output: str, lines: int = 150) -> str:
    return "ansible-playbook exited %s\n%s" % (rc, "\n".join(output.splitlines()[-lines:]))


@pytest.fixture(scope="module")
def playbooks(request, openstack_lab, collections_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("manila")
    runs = Playbooks(openstack_lab, collections_path, work)
    selected = [item.name for item in request.session.items if item.module is request.module]
    for name in selected:
        runs.start(SCENARIOS[name][0])
    try:
        yield runs
    finally:
        runs.stop()
    suffixes = [s for name in selected for s in SCENARIOS[name][1]]
    assert runs.leftovers(suffixes) == [], "the playbooks left shares behind in Manila"


def check(playbooks: Playbooks, test: str) -> None:
    rc, output = playbooks.result(SCENARIOS[test][0])
    assert rc == 0, tail(rc, output)


def test_share_lifecycle(playbooks):
    """Create (check mode, real, rerun), update size and access rules, delete (check, real, rerun), refusals."""
    check(playbooks, "test_share_lifecycle")


def test_migration_complete_and_cancel(playbooks):
    """One share migrated and completed, another cancelled, a task_state reset, the refusals."""
    check(playbooks, "test_migration_complete_and_cancel")


def test_replica_lifecycle(playbooks):
    """A replica created, promoted, reset, resynced and deleted, each with check mode and an unchanged rerun."""
    check(playbooks, "test_replica_lifecycle")
