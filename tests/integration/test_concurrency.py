"""Concurrent runs on one share: the lock in every pool makes the second run see the share busy.

Real processes: a second Python process holds the share's lock while a real ansible-playbook
run tries to migrate it, and several ansible-playbook runs race on the same migration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from test_targets import _ansible_playbook, _environment


def _backends(base: Path) -> list:
    return [{"name": "generic1", "driver": "posix", "host": "stor1",
             "pools": {"alpha": {"path": str(base / "alpha")}, "beta": {"path": str(base / "beta")}},
             "export": {"helper": "none"}}]


def _playbook(work: Path, name: str, tasks: list, backends: list) -> Path:
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
             "module_defaults": {"group/storage.mobility.mobility": {"backends": backends}},
             "tasks": tasks}]
    path = work / f"{name}.yml"
    path.write_text(json.dumps(play), encoding="utf-8")
    return path


def _start(playbook: Path, collections: Path, work: Path) -> subprocess.Popen:
    return subprocess.Popen([_ansible_playbook(), "-i", "localhost,", str(playbook)], cwd=str(work),
                            env=_environment(collections, work), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(base: Path) -> dict:
    found = {}
    for pool in ("alpha", "beta"):
        path = base / pool / ".mobility" / "shares" / "busy.json"
        if path.exists():
            found[pool] = json.loads(path.read_text())
    return found


def _prepare(tmp_path: Path, collections: Path):
    base = tmp_path / "pools"
    for pool in ("alpha", "beta"):
        (base / pool).mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    backends = _backends(base)
    create = _playbook(work, "create", [{"storage.mobility.share": {"name": "busy", "pool": "stor1@generic1#alpha",
                                                                    "size": 1}}], backends)
    proc = _start(create, collections, work)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    (base / "alpha" / "shares" / "busy" / "data.txt").write_text("payload\n")
    return base, work, backends


def test_second_run_sees_the_share_busy_while_another_holds_it(tmp_path, collections_path):
    base, work, backends = _prepare(tmp_path, collections_path)
    holder_code = textwrap.dedent("""
        import sys, time, os
        sys.path.insert(0, sys.argv[1])
        from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
        from ansible_collections.storage.mobility.plugins.module_utils.store import ShareRepository
        import json
        repo = ShareRepository(Backends(json.loads(sys.argv[2])))
        with repo.lock('busy', 'a test holding the lock'):
            open(sys.argv[3], 'w').close()
            while not os.path.exists(sys.argv[4]):
                time.sleep(0.05)
    """)
    ready, release = work / "ready", work / "release"
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(collections_path), json.dumps(backends),
                               str(ready), str(release)])
    try:
        for _attempt in range(600):
            if ready.exists() or holder.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert ready.exists(), "the lock holder did not start"
        before = _records(base)
        migrate = _playbook(work, "migrate", [{"storage.mobility.share_migration": {
            "share": "busy", "destination_pool": "stor1@generic1#beta"}}], backends)
        proc = _start(migrate, collections_path, work)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0, out
        assert "Share busy is busy: another run holds its lock" in out
        assert "a test holding the lock" in out
        assert _records(base) == before
        assert not (base / "beta" / "shares" / "busy").exists()
    finally:
        release.touch()
        holder.wait(timeout=60)


def test_racing_runs_converge_to_one_migration(tmp_path, collections_path):
    base, work, backends = _prepare(tmp_path, collections_path)
    start = _playbook(work, "start", [{"storage.mobility.share_migration": {
        "share": "busy", "destination_pool": "stor1@generic1#beta"}}], backends)
    complete = _playbook(work, "complete", [{"storage.mobility.share_migration": {
        "share": "busy", "state": "completed"}}], backends)
    for playbook, final_state in ((start, "migration_driver_phase1_done"), (complete, "migration_success")):
        procs = [_start(playbook, collections_path, work) for _run in range(4)]
        outputs = [(p.communicate(timeout=600)[0], p.returncode) for p in procs]
        for out, rc in outputs:
            # Each run either did the work, found it done, or saw the share busy; nothing else.
            assert rc == 0 or "another run holds its lock" in out, out
        assert any(rc == 0 for _out, rc in outputs)
        records = _records(base)
        assert len(records) == 1, records
        assert list(records.values())[0]["task_state"] == final_state
    assert list(_records(base)) == ["beta"]
    assert (base / "beta" / "shares" / "busy" / "data.txt").read_text() == "payload\n"
    assert not (base / "alpha" / "shares" / "busy").exists()
    assert [i["status"] for i in _records(base)["beta"]["instances"]] == ["available"]
