"""The demo playbook (the README's first command) run twice on the same demo root: the second run
finds the share the first one migrated, with its recorded migration, cleans it up and migrates a
new one. A small tree keeps it short; as root the pools are loop-mounted ext4 and xfs, otherwise
folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _demo(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_FORCE_COLOR="0")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "inventories/local/hosts.yml",
            "playbooks/demo.yml", "-e", "mobility_demo_root=%s" % root, "-e", "demo_files=200", "-e", "demo_size_mb=4"]
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900, check=False)


def test_the_demo_runs_again_over_an_earlier_demo(tmp_path):
    root = tmp_path / "demo-root"
    try:
        for run in ("first", "second"):
            proc = _demo(root, tmp_path)
            assert proc.returncode == 0, "%s run failed:\n%s" % (run, proc.stdout[-6000:])
            assert "independent check: identical" in proc.stdout, proc.stdout[-3000:]
            assert "task_state migration_success" in proc.stdout, proc.stdout[-3000:]
        # The second run met the first run's share and its recorded migration.
        assert _result_of("Stop the phase-1 copy job of an earlier demo", proc.stdout) in ("ok", "changed")
        assert _result_of("Cancel its migration if one is running", proc.stdout) in ("ok", "changed")
    finally:
        _unmount_below(root)


def _result_of(task: str, output: str) -> str:
    """The result (ok, changed, skipping, failed) ansible-playbook printed for the task named ``task``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TASK [%s]" % task))
    result = next(line for line in lines[start + 1:] if line.strip())
    return result.split(":", 1)[0]


def _unmount_below(root: Path) -> None:
    """Unmount what the demo mounted under ``root`` (deepest first) and detach its loop devices."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    listing = subprocess.run(["losetup", "-a"], check=False, capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if prefix in line:
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False, capture_output=True)
