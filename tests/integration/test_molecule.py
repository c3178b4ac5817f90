"""The molecule scenario of the data_mover role (roles/data_mover/molecule/default), run by the
test suite: a delegated driver on this machine (localhost is the data node, plain folders reached
with helper ``none``), the sequence syntax, cleanup, converge (which prepares the trees), idempotence, verify, cleanup."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_targets import REPO_ROOT, _environment

ROLE = REPO_ROOT / "roles" / "data_mover"


def _molecule() -> str:
    found = Path(sys.executable).parent / "molecule"
    if not found.is_file():
        pytest.fail("molecule not found next to %s: it is in requirements-dev.txt (scripts/setup.sh)" % sys.executable,
                    pytrace=False)
    return str(found)


def test_the_data_mover_scenario_converges_is_idempotent_and_verifies(collections_path, tmp_path):
    env = _environment(collections_path, tmp_path)
    env.pop("ANSIBLE_ROLES_PATH", None)
    proc = subprocess.run([_molecule(), "test", "--scenario-name", "default"], cwd=str(ROLE), env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", timeout=900, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out[-8000:]
    for action in ("syntax", "converge", "idempotence", "verify", "cleanup"):
        assert re.search(r"default > %s: Executed: Successful" % action, out), "%s did not succeed:\n%s" % (action, out[-8000:])
    # The converge copied: the role's progress line and the completed job show in its output.
    assert "Show the progress of copy job molecule-copy-1" in out
    assert "Molecule executed 1 scenario (1 successful)" in out
