"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_targets import REPO_ROOT, VENV_COLLECTIONS


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ansible_collections/storage/mobility -> the repository root."""
    link = VENV_COLLECTIONS / "ansible_collections" / "storage" / "mobility"
    if link.exists() and link.resolve() == REPO_ROOT:
        return VENV_COLLECTIONS
    base = tmp_path_factory.mktemp("collections")
    namespace_dir = base / "ansible_collections" / "storage"
    namespace_dir.mkdir(parents=True)
    (namespace_dir / "mobility").symlink_to(REPO_ROOT, target_is_directory=True)
    return base
