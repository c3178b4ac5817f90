"""Fixtures of the data copy tests (helpers in copied_trees.py)."""

from __future__ import annotations

import os

import pytest

from copied_trees import build, copy


@pytest.fixture
def trees(tmp_path):
    """``(source, destination)``: a tree with every kind of entry and its copy by rsync, as bytes."""
    src = build(tmp_path / "src")
    dst = os.fsencode(tmp_path / "dst")
    os.mkdir(dst)
    copy(src, dst)
    return src, dst
