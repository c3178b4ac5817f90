"""Shared pytest configuration for the storage.mobility collection.

* Under ``CI=true`` every skipped test is reported as a failure (the skip reason is
  kept in the message): CI must not pass while silently not testing something.
  Expected failures (``xfail``) are left alone.
* ``root_required`` (fixture), ``require_root()`` (helper) and the ``root`` marker
  skip with the reason "needs root" when not running as root.
* Tests marked ``disabled_target`` (integration targets whose ``aliases`` say
  ``disabled``) are deselected, so they neither run nor count as skips.
* Tests under ``tests/integration/openstack`` run last (their lab starts in the background).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

NEEDS_ROOT = "needs root"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _ensure_collection_importable() -> None:
    """Make ``import ansible_collections.storage.mobility...`` work without scripts/env.sh.

    scripts/env.sh puts .venv/collections on PYTHONPATH; a bare ``pytest`` run gets the
    same tree here (or, without .venv, a temporary one that links to this checkout).
    """
    try:
        import ansible_collections.storage.mobility  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        pass
    else:
        return
    venv_tree = REPO_ROOT / ".venv" / "collections"
    link = venv_tree / "ansible_collections" / "storage" / "mobility"
    if link.exists() and link.resolve() == REPO_ROOT:
        tree = venv_tree
    else:
        tree = Path(tempfile.mkdtemp(prefix="mobility-collections-"))
        atexit.register(shutil.rmtree, tree, True)
        (tree / "ansible_collections" / "storage").mkdir(parents=True)
        (tree / "ansible_collections" / "storage" / "mobility").symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(tree))


_ensure_collection_importable()


def in_ci() -> bool:
    """True when running in CI (the CI variable is "true", as CI systems set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(what: str | None = None) -> None:
    """Skip the calling test with the reason "needs root" unless running as root."""
    if not is_root():
        pytest.skip(f"{NEEDS_ROOT}: {what}" if what else NEEDS_ROOT)


@pytest.fixture
def root_required() -> None:
    """Fixture form of :func:`require_root`."""
    require_root()


# --------------------------------------------------------------------------- hooks


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"storage.mobility: uid={os.geteuid()} ({'root' if is_root() else 'not root'}), "
        f"CI={'true: skips are failures' if in_ci() else 'unset/false'}"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselected = [item for item in items if item.get_closest_marker("disabled_target")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("disabled_target")]
    # The OpenStack tests run last: scripts/test.sh starts their lab in the background when the
    # run begins, and its start-up (minutes) then overlaps every other test.
    openstack_dir = REPO_ROOT / "tests" / "integration" / "openstack"
    items.sort(key=lambda item: openstack_dir in Path(str(item.path)).parents)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not is_root():
        pytest.skip(NEEDS_ROOT)


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: <reason>"), lineno 1-based.
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, message = longrepr
        message = str(message)
        if message.startswith("Skipped: "):
            message = message[len("Skipped: "):]
        where = f"{path}:{lineno}" if isinstance(lineno, int) else str(path)
        return f"{message} [{where}]"
    return str(longrepr)


def _ci_failure_message(longrepr: object) -> str:
    return f"skipped, and CI=true makes every skip a failure: {_skip_reason(longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = _ci_failure_message(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    # Module-level skips (pytest.skip(allow_module_level=True), importorskip).
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = _ci_failure_message(report.longrepr)
