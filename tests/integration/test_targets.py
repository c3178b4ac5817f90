"""Run the Ansible integration targets under tests/integration/targets with pytest.

Each target is a role: ``tests/integration/targets/<name>/tasks/main.yml``. For every
target this writes a one-play playbook that applies the role to localhost (local
connection, no fact gathering) and runs the venv's ``ansible-playbook`` with

* ``mobility_test_dir``: a fresh, empty directory for this target,
* ``mobility_test_root``: true when running as root, else false.

An ``aliases`` file in a target may say:

* ``needs/root``: skip (reason "needs root") when not root,
* ``disabled``: never run (deselected),
* ``hidden``: a support role for other targets (e.g. ``setup_*``); not run by itself.

Targets named ``setup_*`` or ``prepare_*`` are support roles too. Other targets'
``meta/main.yml`` can depend on them by name (ANSIBLE_ROLES_PATH is the targets dir).

Environment: ``MOBILITY_TARGET_TIMEOUT`` (seconds per target, default 1800);
``MOBILITY_ANSIBLE_VERBOSITY`` (e.g. ``2`` for ``-vv``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS_DIR = REPO_ROOT / "tests" / "integration" / "targets"
VENV_COLLECTIONS = REPO_ROOT / ".venv" / "collections"
TAIL_LINES = 200
SUPPORT_PREFIXES = ("setup_", "prepare_")


def _aliases(target: Path) -> set[str]:
    path = target / "aliases"
    if not path.is_file():
        return set()
    aliases = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            aliases.add(line)
    return aliases


def _discover() -> list:
    if not TARGETS_DIR.is_dir():
        return []
    params = []
    for target in sorted(TARGETS_DIR.iterdir()):
        if not target.is_dir() or target.name.startswith((".", "_")):
            continue
        aliases = _aliases(target)
        if target.name.startswith(SUPPORT_PREFIXES) or "hidden" in aliases:
            continue
        marks = [pytest.mark.integration]
        if "needs/root" in aliases:
            marks.append(pytest.mark.root)
        if "disabled" in aliases:
            marks.append(pytest.mark.disabled_target)
        params.append(pytest.param(target.name, marks=marks, id=target.name))
    return params


TARGETS = _discover()


def _ansible_playbook() -> str:
    """The ansible-playbook of the running interpreter's environment (the venv)."""
    candidates = [
        Path(sys.executable).parent / "ansible-playbook",
        REPO_ROOT / ".venv" / "bin" / "ansible-playbook",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("ansible-playbook")
    if found:
        return found
    pytest.fail("ansible-playbook not found: run scripts/setup.sh (or scripts/test.sh) first", pytrace=False)
    raise AssertionError("unreachable")


def _environment(collections: Path, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_FORCE_COLOR", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH"):
        env.pop(name, None)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            "ANSIBLE_ROLES_PATH": str(TARGETS_DIR),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(work / "ansible-remote-tmp"),
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
            "ANSIBLE_HOST_KEY_CHECKING": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = text.splitlines()[-lines:]
    return "\n".join(kept)


def _run_target(target: str, tmp_path: Path, collections: Path) -> None:
    role = TARGETS_DIR / target
    if not (role / "tasks" / "main.yml").is_file():
        pytest.fail(f"integration target {target!r} has no tasks/main.yml", pytrace=False)

    test_dir = tmp_path / "test_dir"
    work = tmp_path / "ansible"
    test_dir.mkdir()
    work.mkdir()

    playbook = work / "playbook.yml"
    # JSON is valid YAML and needs no quoting care for odd paths.
    play = [
        {
            "name": f"integration target {target}",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            # Modules run with the same Python as ansible-playbook (the venv).
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "roles": [{"role": str(role)}],
        }
    ]
    playbook.write_text(json.dumps(play, indent=2) + "\n", encoding="utf-8")
    extra_vars = {"mobility_test_dir": str(test_dir), "mobility_test_root": os.geteuid() == 0}

    cmd = [_ansible_playbook(), "-i", "localhost,", "-e", json.dumps(extra_vars), str(playbook)]
    verbosity = os.environ.get("MOBILITY_ANSIBLE_VERBOSITY", "").strip()
    if verbosity.isdigit() and int(verbosity) > 0:
        cmd.append("-" + "v" * int(verbosity))
    timeout = float(os.environ.get("MOBILITY_TARGET_TIMEOUT", "1800"))

    log = work / "ansible-playbook.log"
    try:
        proc = subprocess.run(
            cmd,
            cwd=str(work),
            env=_environment(collections, work),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        output, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or ""
        if isinstance(partial, bytes):
            partial = partial.decode("utf-8", "replace")
        log.write_text(partial, encoding="utf-8")
        pytest.fail(
            f"integration target {target!r} timed out after {timeout:.0f}s; full log: {log}\n"
            f"--- last {TAIL_LINES} lines ---\n{_tail(partial)}",
            pytrace=False,
        )
    log.write_text(output, encoding="utf-8")
    if rc != 0:
        pytest.fail(
            f"integration target {target!r}: ansible-playbook exited {rc}\n"
            f"command: {' '.join(cmd)}\nfull log: {log}\n"
            f"--- last {TAIL_LINES} lines ---\n{_tail(output)}",
            pytrace=False,
        )


if TARGETS:
    # Defined only when there are targets: an empty parametrize would report a
    # skipped test, which CI (CI=true) counts as a failure.

    @pytest.mark.parametrize("target", TARGETS)
    def test_integration_target(target: str, tmp_path: Path, collections_path: Path) -> None:
        if "needs/root" in _aliases(TARGETS_DIR / target) and os.geteuid() != 0:
            pytest.skip(f"needs root (target {target} has needs/root in aliases)")
        try:
            _run_target(target, tmp_path, collections_path)
        finally:
            leftover = unmount_below(tmp_path)
        assert not leftover, f"target {target!r} left mounts behind: {leftover}"


def unmount_below(path: Path) -> list[str]:
    """Unmount whatever is still mounted below ``path`` (deepest first); return what was."""
    prefix = str(path.resolve()).rstrip("/") + "/"
    points = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                point = line.split()[4].encode().decode("unicode_escape")
                if point.startswith(prefix):
                    points.append(point)
    except OSError:
        return []
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return points
