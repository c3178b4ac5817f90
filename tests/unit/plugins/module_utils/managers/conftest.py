"""Fixtures shared by the manager tests: a posix lab (mobility_helpers.Env) and share s1 in pool a."""

from __future__ import annotations

import os

import pytest

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
