"""Fixtures of the data copy tests (helpers in copied_trees.py)."""

from __future__ import annotations

import os

import pytest

from copied_trees import build, copy

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import job as job_lib


@pytest.fixture
def trees(tmp_path):
    """``(source, destination)``: a tree with every kind of entry and its copy by rsync, as bytes."""
    src = build(tmp_path / "src")
    dst = os.fsencode(tmp_path / "dst")
    os.mkdir(dst)
    copy(src, dst)
    return src, dst


@pytest.fixture
def jobs(tmp_path):
    """A job manager with its state folder in ``tmp_path``; no worker is left running after the test."""
    manager = job_lib.DataCopyJobs(str(tmp_path / "state"))
    yield manager
    if os.path.isdir(manager.state_dir):
        for name in os.listdir(manager.state_dir):
            if not name.startswith("."):
                manager.cancel(name)
