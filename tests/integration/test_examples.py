"""Every module's EXAMPLES runs as written.

Each EXAMPLES block is read from the module file and checked three ways:

* statically: every task of a module in the collection's action group (meta/runtime.yml) gets
  ``backends``, either in its own arguments or through ``module_defaults`` on the action group of
  its play or block (a copied example must not fail with "missing required arguments: backends");
* ``ansible-playbook --syntax-check`` on every play;
* run for real against a local lab where it can: the plays on posix backends get ``mobility_backends``
  with two folders as pools (``stor1@generic1#alpha`` and ``#beta``, as in the examples' comment); the
  data_copy examples run as root in a private mount namespace with a tmpfs on /mnt and /var/tmp, so
  their paths are used exactly as written. Plays whose backends are OpenStack services (Manila,
  Cinder) and the data_mount examples (NFS and CIFS servers; this kernel has no client) are only
  syntax-checked; the reason is named per module below.

A task list (not a play) is run as the tasks of a play on localhost.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_targets import REPO_ROOT, TAIL_LINES, _tail

pytestmark = pytest.mark.integration

MODULES_DIR = REPO_ROOT / "plugins" / "modules"
GROUP = "group/storage.mobility.mobility"
OPENSTACK_DRIVERS = {"manila", "cinder"}

# Modules whose examples cannot run here, and why. Everything else must run.
SYNTAX_ONLY = {
    "data_mount": "mounts NFS and CIFS exports: needs a file server, and this kernel has no NFS or CIFS client",
}
# Examples that need root to run, and why.
NEEDS_ROOT = {"volume": "the example attaches a volume through a FUSE export of qemu-storage-daemon"}
# Examples that act on a share the user already has: the lab creates `projects` in alpha first.
NEEDS_SHARE = {"share_info", "share_snapshot", "share_migration", "migration_plan", "migration_window"}


def _modules() -> list[str]:
    return sorted(p.stem for p in MODULES_DIR.glob("*.py") if p.stem != "__init__")


def _action_group() -> set[str]:
    runtime = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    return set(runtime["action_groups"]["mobility"])


def examples_of(module: str) -> str:
    tree = ast.parse((MODULES_DIR / (module + ".py")).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "EXAMPLES" for t in node.targets):
            return node.value.value
    raise AssertionError("plugins/modules/%s.py has no EXAMPLES" % module)


def plays_of(module: str) -> list[dict]:
    data = yaml.safe_load(examples_of(module))
    assert isinstance(data, list) and data, "EXAMPLES of %s is not a list of plays or tasks" % module
    if all(isinstance(item, dict) and "hosts" in item for item in data):
        return data
    assert not any("hosts" in item for item in data), "EXAMPLES of %s mixes plays and tasks" % module
    return [{"name": "EXAMPLES of %s" % module, "hosts": "localhost", "gather_facts": False, "tasks": data}]


def _task_module(task: dict) -> tuple[str | None, object]:
    for key, value in task.items():
        if key.startswith("storage.mobility."):
            return key.split(".")[-1], value
    return None, None


def _walk_tasks(tasks: list, defaults: dict):
    """(task, module_defaults in force) for every task, blocks included."""
    for task in tasks or []:
        scoped = dict(defaults)
        scoped.update(task.get("module_defaults") or {})
        if "block" in task:
            for key in ("block", "rescue", "always"):
                yield from _walk_tasks(task.get(key), scoped)
            continue
        yield task, scoped


def _backends_of(play: dict) -> list[list]:
    found = []
    for task, defaults in _walk_tasks(play.get("tasks", []), play.get("module_defaults") or {}):
        name, args = _task_module(task)
        if name is None:
            continue
        if isinstance(args, dict) and "backends" in args:
            found.append(args["backends"])
        elif "backends" in (defaults.get(GROUP) or {}):
            found.append(defaults[GROUP]["backends"])
    return found


def _is_openstack(play: dict) -> bool:
    for backends in _backends_of(play):
        if isinstance(backends, list) and any(b.get("driver") in OPENSTACK_DRIVERS for b in backends):
            return True
    return False


# ----------------------------------------------------------------------------- static


@pytest.mark.parametrize("module", _modules())
def test_example_tasks_get_backends(module: str) -> None:
    group = _action_group()
    checked = 0
    for play in plays_of(module):
        for task, defaults in _walk_tasks(play.get("tasks", []), play.get("module_defaults") or {}):
            name, args = _task_module(task)
            if name is None or name not in group:
                continue
            checked += 1
            given = isinstance(args, dict) and "backends" in args
            by_default = "backends" in (defaults.get(GROUP) or {}) or "backends" in (
                defaults.get("storage.mobility." + name) or {})
            assert given or by_default, (
                "example task %r of %s gets no backends: pass them or set module_defaults on %s"
                % (task.get("name"), module, GROUP))
    if module in group:
        assert checked, "EXAMPLES of %s has no task of the module" % module


# ----------------------------------------------------------------------------- running


def _inventory(work: Path) -> Path:
    inventory = work / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable,
                         encoding="utf-8")
    return inventory


def _environment(collections: Path, work: Path) -> dict:
    env = dict(os.environ)
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_FORCE_COLOR"):
        env.pop(name, None)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(work / "ansible-remote-tmp"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _playbook(work: Path, name: str, plays: list[dict]) -> Path:
    path = work / name
    path.write_text(json.dumps(plays, indent=2) + "\n", encoding="utf-8")
    return path


def _ansible_playbook(args: list[str], env: dict, work: Path, prefix: list[str] | None = None) -> str:
    cmd = (prefix or []) + [str(Path(sys.executable).parent / "ansible-playbook")] + args
    proc = subprocess.run(cmd, cwd=str(work), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace", timeout=900, check=False)
    (work / "ansible-playbook.log").write_text(proc.stdout, encoding="utf-8")
    assert proc.returncode == 0, "ansible-playbook exited %d: %s\n--- last %d lines ---\n%s" % (
        proc.returncode, " ".join(cmd), TAIL_LINES, _tail(proc.stdout))
    return proc.stdout


def _lab_volume_backends(lab: Path) -> list[dict]:
    """The file volume backend of the volume examples (``mobility_volume_backends``): pools fast and slow."""
    pools = {}
    for pool in ("fast", "slow"):
        (lab / "blocks" / pool).mkdir(parents=True)
        pools[pool] = {"path": str(lab / "blocks" / pool)}
    return [{"name": "blocks", "driver": "file", "pools": pools}]


def _lab_backends(lab: Path) -> list[dict]:
    pools = {}
    for pool in ("alpha", "beta"):
        (lab / "pools" / pool).mkdir(parents=True)
        pools[pool] = {"path": str(lab / "pools" / pool)}
    return [{"name": "generic1", "driver": "posix", "host": "stor1", "pools": pools, "export": {"helper": "none"}}]


# A user's existing share for the examples that act on one.
_SETUP_PLAY = {
    "name": "a share the examples act on",
    "hosts": "localhost",
    "gather_facts": False,
    "module_defaults": {GROUP: {"backends": "{{ mobility_backends }}"}},
    "tasks": [
        {"name": "create projects", "storage.mobility.share": {
            "name": "projects", "pool": "stor1@generic1#alpha", "size": 1,
            "access_rules": [{"access_to": "10.0.0.0/24", "access_level": "rw"}]}, "register": "created"},
        {"name": "a file in it", "ansible.builtin.copy": {
            "content": "data\n", "dest": "{{ created.share.export_location }}/report.txt", "mode": "0644"}},
    ],
}


def _ok_recap(output: str) -> None:
    recap = output[output.rfind("PLAY RECAP"):]
    assert "PLAY RECAP" in output and "failed=0" in recap and "unreachable=0" in recap, recap


@pytest.mark.parametrize("module", _modules())
def test_examples_pass_syntax_check(module: str, tmp_path: Path, collections_path: Path) -> None:
    playbook = _playbook(tmp_path, "examples.yml", plays_of(module))
    out = _ansible_playbook(["-i", str(_inventory(tmp_path)), "--syntax-check", str(playbook)],
                            _environment(collections_path, tmp_path), tmp_path)
    assert "playbook: " in out


def _runnable(module: str) -> bool:
    """Whether the lab can run some of the module's examples (not only OpenStack plays)."""
    if module in SYNTAX_ONLY:
        return False
    try:
        return any(not _is_openstack(play) for play in plays_of(module))
    except Exception:  # pylint: disable=broad-exception-caught
        return True  # broken EXAMPLES: let test_examples_run report it


@pytest.mark.parametrize("module", [m for m in _modules() if _runnable(m)])
def test_examples_run(module: str, tmp_path: Path, collections_path: Path) -> None:
    if module in NEEDS_ROOT and os.geteuid() != 0:
        pytest.skip("needs root: %s" % NEEDS_ROOT[module])
    plays = [play for play in plays_of(module) if not _is_openstack(play)]
    work = tmp_path / "work"
    work.mkdir()
    env = _environment(collections_path, work)
    inventory = _inventory(work)
    extra = {"mobility_backends": _lab_backends(tmp_path / "lab"),
             "mobility_volume_backends": _lab_volume_backends(tmp_path / "lab")}
    extra_file = work / "lab.json"
    extra_file.write_text(json.dumps(extra), encoding="utf-8")
    common = ["-i", str(inventory), "-e", "@" + str(extra_file)]

    if module in NEEDS_SHARE:
        _ok_recap(_ansible_playbook(common + [str(_playbook(work, "setup.yml", [_SETUP_PLAY]))], env, work))

    playbook = _playbook(work, "examples.yml", plays)
    if "/mnt/" in examples_of(module):
        out = _run_in_mount_namespace(module, common + [str(playbook)], env, work)
    else:
        out = _ansible_playbook(common + [str(playbook)], env, work)
    _ok_recap(out)
    _check_effect(module, tmp_path / "lab", out)


def _check_effect(module: str, lab: Path, output: str) -> None:
    """What each runnable example must have left behind (so a silently skipped task fails here)."""
    alpha, beta = lab / "pools" / "alpha", lab / "pools" / "beta"
    if module == "share":
        assert not (alpha / "shares" / "projects").exists(), "the example's last task deletes the share"
        assert "changed: [localhost]" in output
    elif module == "share_snapshot":
        assert (alpha / "shares" / "projects").is_dir()
        assert not (alpha / "snapshots" / "projects" / "before-upgrade").exists()
        assert output.count("changed: [localhost]") >= 2, "snapshot taken and deleted"
    elif module == "share_migration":
        # Phase 1 and 2 moved it to beta; the second phase 1 (back to alpha) was cancelled.
        assert (beta / "shares" / "projects" / "report.txt").read_text() == "data\n"
        assert not (alpha / "shares" / "projects").exists()
    elif module == "share_info":
        assert "stor1@generic1#alpha: task_state" in output, "the example prints where the share is"
    elif module == "data_copy":
        assert "20 files, 21000 bytes, verified True" in output
    elif module == "volume":
        # created, attached (written through the FUSE file), detached: the image holds the 8 MiB written
        images = list((lab / "blocks" / "fast").glob("volume-*"))
        assert len(images) == 1 and images[0].stat().st_blocks * 512 >= 8 * 1024 * 1024
        assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(lab) in line]
    elif module == "volume_migrate":
        # Moved to slow, then a copy back to fast started with wait: false. An empty volume can be
        # copied before the start returns: the example then prints "success" and the cancel finds
        # nothing to stop. Either way one image, in the pool the example reported, nothing half-copied.
        # The progress counts the data (an empty volume has little), not the 2 GiB virtual size.
        shown = re.search(r'"msg": "(migrating|success)(, [0-9.]+ % of [0-9]+ bytes)?"', output)
        assert shown, "the example prints the copy's migration_status (and its progress while it runs)"
        if shown.group(1) == "migrating":
            assert shown.group(2), "a running copy shows its progress"
            kept, left = "slow", "fast"
        else:
            kept, left = "fast", "slow"
        assert len(list((lab / "blocks" / kept).glob("volume-*"))) == 1, (shown.group(0), kept)
        assert not [p for p in (lab / "blocks" / left).iterdir() if p.name != ".mobility"], (shown.group(0), left)
    elif module == "migration_plan":
        # The example keeps 5% of beta's filesystem free. The lab's pools share this machine's /tmp,
        # whose free space other work changes: expect what the free space read here allows, and
        # accept either outcome only within a 1% band around the limit, where it may have moved.
        st = os.statvfs(beta)
        free = st.f_bavail / float(st.f_blocks or 1)
        placed = "projects -> stor1@generic1#beta (driver-assisted" in output
        refused = re.search(r'"msg": "projects: stor1@generic1#beta: needs \d+ bytes, \d+ left above its headroom',
                            output)
        if free > 0.06:
            assert placed, "%.1f%% free: the plan moves projects to beta" % (free * 100)
        elif free < 0.04:
            assert refused, "%.1f%% free: the plan names the headroom it would eat" % (free * 100)
        else:
            assert placed or refused
        assert (alpha / ".mobility" / "plans" / "evacuate-alpha.json").is_file(), "the plan is stored with the records"
    elif module == "migration_window":
        # projects has no migration: nothing to complete, with the reason; the window is stored with the plan.
        # The example plans with the default headroom (10% of the filesystem kept free): the lab's
        # pools share this machine's /tmp, and when a busy machine has less than that free there, the
        # plan cannot place projects, and the window says so instead.
        shown = [line.strip() for line in output.splitlines() if '"msg":' in line]
        assert ("nothing fits: no migration ready to complete (task_state None)" in output
                or ("nothing fits: not in the plan: " in output and "left above its headroom" in output)), shown
        assert (alpha / ".mobility" / "windows" / "evacuate-alpha.json").is_file()
    elif module == "pool_info":
        assert "stor1@generic1#alpha:" in output and "stor1@generic1#beta:" in output


_NAMESPACE_SCRIPT = r'''
import os, subprocess, sys
for point in ("/mnt", "/var/tmp"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "examples", point], check=True)
base = "/mnt/mobility/projects-to-beta"
os.makedirs(base + "/source/docs")
os.makedirs(base + "/destination")
for index in range(20):
    with open("%s/source/docs/file-%02d.txt" % (base, index), "w") as handle:
        handle.write("content %d\n" % index * 100)
proc = subprocess.run(sys.argv[1:])
check = subprocess.run(["diff", "-r", base + "/source", base + "/destination"])
sys.exit(proc.returncode or (3 if check.returncode else 0))
'''


def _run_in_mount_namespace(module: str, args: list[str], env: dict, work: Path) -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root: the %s examples use their /mnt paths as written, in a private mount namespace" % module)
    prefix = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", _NAMESPACE_SCRIPT]
    return _ansible_playbook(args, env, work, prefix=prefix)
