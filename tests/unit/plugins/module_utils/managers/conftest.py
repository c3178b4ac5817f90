"""Fixtures shared by the manager tests: a posix lab (mobility_helpers.Env) and share s1 in pool a."""

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.job import DataCopyJobs

from mobility_helpers import RULE, Env


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture
def share(env):
    """Share s1 in pool a with one rw rule and a file (a test module may define its own)."""
    env.create_share("s1", rules=[RULE])
    path = env.share_path(env.A, "s1")
    with open(os.path.join(path, "data.txt"), "w") as handle:
        handle.write("payload")
    return path


@pytest.fixture
def jobs(tmp_path):
    """A data node's copy jobs in tmp_path; whatever still runs at the end is cancelled."""
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed")
    manager = DataCopyJobs(str(tmp_path / "jobs"))
    yield manager
    if os.path.isdir(manager.state_dir):
        for name in os.listdir(manager.state_dir):
            if not name.startswith("."):
                manager.cancel(name)
