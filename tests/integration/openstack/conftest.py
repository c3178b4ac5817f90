"""The OpenStack lab for the manila and cinder tests: real Manila and Cinder on loopback.

Contract (used by test_manila*.py and test_cinder*.py):

* the session fixture ``openstack_lab`` returns a ``Lab`` with
  ``base`` (folder), ``clouds_yaml`` (path of a clouds.yaml), ``cloud`` (the cloud's name in it),
  ``manila_endpoint`` and ``cinder_endpoint`` (root URLs), ``project_id``,
  ``manila_pools`` (``host@backend#pool`` of the three Manila backends, one replication domain)
  and ``cinder_pools`` (``host@backend#pool`` of the two Cinder backends), and optionally
  ``cinder_volume_dirs`` (pool -> folder of its volume files, for labs whose Cinder backends keep
  real data, as lab.py's do; empty otherwise). ``Lab`` is defined in lab.py, the harness;
* with ``MOBILITY_OPENSTACK_LAB=/path/lab.json`` the tests use a lab that is already running
  (or being started by ``lab.py start``, see below): they wait for the file to appear and never
  stop that lab;
* otherwise the fixture starts a lab with ``lab.py start`` in a temporary folder and stops it at
  the end of the session.

Starting needs root (apt packages, MariaDB, RabbitMQ); without root the tests skip with a reason.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab import Lab  # tests/integration/openstack/lab.py: the harness and its Lab

HERE = Path(__file__).resolve().parent


def wait_for_lab_file(path: Path, timeout: float) -> Lab:
    """Wait for ``lab.json`` (written when the lab is ready) or ``lab.failed`` next to it."""
    failed = path.with_name("lab.failed")
    starter = path.with_name("pids") / "start.pid"  # written by ``lab.py start`` while it runs
    seen_starter = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return Lab.from_file(path)
        if failed.exists():
            raise RuntimeError("The OpenStack lab failed to start: %s" % failed.read_text(encoding="utf-8"))
        if starter.exists():
            seen_starter = True
        elif seen_starter and not path.exists() and not failed.exists():
            raise RuntimeError("The OpenStack lab's start command ended without writing %s or %s (see %s)"
                               % (path.name, failed.name, path.with_name("logs") / "lab.log"))
        time.sleep(1)
    raise RuntimeError("The OpenStack lab did not become ready within %d s (%s)" % (timeout, path))


@pytest.fixture(scope="session")
def openstack_lab(tmp_path_factory: pytest.TempPathFactory):
    given = os.environ.get("MOBILITY_OPENSTACK_LAB")
    if given:
        yield wait_for_lab_file(Path(given), timeout=900)
        return
    if os.geteuid() != 0:
        pytest.skip("needs root: the OpenStack lab installs MariaDB and RabbitMQ and runs Manila and Cinder")
    import lab  # tests/integration/openstack/lab.py, on sys.path through rootdir conftest

    base = tmp_path_factory.mktemp("openstack-lab")
    handle = lab.start(base)
    try:
        yield handle
    finally:
        lab.stop(base)
