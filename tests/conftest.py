"""Shared pytest configuration for the storage.mobility collection.

* Under ``CI=true`` every skipped test is reported as a failure (the skip reason is
  kept in the message): CI must not pass while silently not testing something.
  Expected failures (``xfail``) are left alone.
* ``root_required`` (fixture), ``require_root()`` (helper) and the ``root`` marker
  skip with the reason "needs root" when not running as root.
* Tests marked ``disabled_target`` (integration targets whose ``aliases`` say
  ``disabled``) are deselected, so they neither run nor count as skips.
"""

from __future__ import annotations

import os

import pytest

NEEDS_ROOT = "needs root"


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not is_root():
        pytest.skip(NEEDS_ROOT)


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: <reason>").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, message = longrepr
        return f"{message} ({path}:{lineno + 1 if isinstance(lineno, int) else lineno})"
    return str(longrepr)


def _ci_failure_message(longrepr: object) -> str:
    return (
        f"skipped under CI=true, which counts as a failure: {_skip_reason(longrepr)}\n"
        "(a CI run must be able to run every test: install what is missing, run as root, "
        "or remove/deselect the test)"
    )


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
