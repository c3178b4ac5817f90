"""The test tree itself: pytest imports test modules by their file name (the default "prepend" import
mode, no __init__.py), and several integration tests import helpers and other test modules by name.
Two modules with the same name make `pytest tests/` fail at collection, or make an import find the
wrong file once scripts/test.sh leaves one of them out of a stage, so every name is unique."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SKIPPED = {"output", "targets", "__pycache__"}


def python_modules():
    for path in TESTS.rglob("*.py"):
        parts = set(path.relative_to(TESTS).parts[:-1])
        if parts & SKIPPED or path.name in ("conftest.py", "__init__.py"):
            continue
        yield path


def test_every_test_and_helper_module_name_is_unique():
    by_name = defaultdict(list)
    for path in python_modules():
        by_name[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"module names used twice under tests/: {clashes}"


def test_the_check_sees_both_trees():
    names = {path.name for path in python_modules()}
    assert {"test_architecture.py", "hostmig_lab.py", "test_window.py"} <= names
