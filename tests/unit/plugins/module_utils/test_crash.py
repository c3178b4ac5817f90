"""Unit tests for plugins/module_utils/crash.py: the fault injection of the crash tests."""

from __future__ import annotations

import os
import subprocess
import sys

from ansible_collections.storage.mobility.plugins.module_utils.crash import CRASH_AFTER_ENV, crash_wanted


def test_crash_injection_matches_the_pattern_only(monkeypatch):
    monkeypatch.delenv(CRASH_AFTER_ENV, raising=False)
    assert crash_wanted("btrfs sending final") is False
    monkeypatch.setenv(CRASH_AFTER_ENV, "btrfs sending *")
    assert crash_wanted("btrfs sending increment 2") is True
    assert crash_wanted("btrfs received increment 2") is False


def test_a_matching_crash_point_exits_70_and_another_one_does_nothing():
    script = ("from ansible_collections.storage.mobility.plugins.module_utils.crash import crash_point\n"
              "crash_point('btrfs received increment 1')\nprint('passed', flush=True)\n"
              "crash_point('btrfs source read-only')\nprint('not reached')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **{CRASH_AFTER_ENV: "btrfs source *"})
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert (proc.returncode, proc.stdout) == (70, "passed\n"), proc.stderr
