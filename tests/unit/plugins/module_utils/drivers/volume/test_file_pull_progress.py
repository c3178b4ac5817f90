"""Unit tests for the progress of an asynchronous pull on driver ``file`` (drivers/volume/file.py):
counted over the source's data, not over the holes the job steps over in a moment.

Real parts: a sparse raw image on this machine's filesystem and ``qemu-img map`` reading its holes
(skips where qemu-img is not installed; in CI, which installs it, a skip fails the run)."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.file import FileVolumeDriver
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

MIB = 1024 * 1024
VOLUME = {"id": "v1", "name": "v", "format": "raw"}

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img (qemu-utils)")


@pytest.fixture
def driver():
    return FileVolumeDriver(SimpleNamespace(name="blocks", host="localhost"), LocalTransport(CommandRunner()))


@pytest.fixture
def image(tmp_path):
    """64 MiB with 1 MiB of data at 8 MiB and 2 MiB at 40 MiB; the rest holes."""
    path = tmp_path / "volume-v1"
    with open(path, "wb") as handle:
        handle.truncate(64 * MIB)
        handle.seek(8 * MIB)
        handle.write(os.urandom(MIB))
        handle.seek(40 * MIB)
        handle.write(os.urandom(2 * MIB))
    return str(path)


@pytest.mark.parametrize("position, done", [
    (0, 0), (8 * MIB, 0), (8 * MIB + MIB // 2, MIB // 2), (9 * MIB, MIB), (39 * MIB, MIB),
    (41 * MIB, 2 * MIB), (64 * MIB, 3 * MIB),
])
def test_the_data_before_the_job_position_over_the_data_in_all(driver, image, position, done):
    assert driver.data_bytes(image, VOLUME, position, 64 * MIB) == (done, 3 * MIB)


def test_the_holes_are_read_once_while_the_source_is_unchanged(driver, image, monkeypatch):
    calls = []
    real = driver._img

    def counting(argv, what, check=True):
        calls.append(argv[0])
        return real(argv, what, check=check)

    monkeypatch.setattr(driver, "_img", counting)
    for position in (0, 9 * MIB, 64 * MIB):
        driver.data_bytes(image, VOLUME, position, 64 * MIB)
    assert calls == ["map"]
    # a source that changed (it may not, during a migration; a new one may come later) is mapped again
    with open(image, "r+b") as handle:
        handle.seek(20 * MIB)
        handle.write(os.urandom(MIB))
    os.utime(image, ns=(1, 1))
    assert driver.data_bytes(image, VOLUME, 64 * MIB, 64 * MIB) == (4 * MIB, 4 * MIB)
    assert calls == ["map", "map"]


def test_the_zero_ranges_marked_before_a_pull_are_the_holes_cut_to_whole_clusters(driver, image):
    ranges = driver.zero_ranges(image, VOLUME)
    assert ranges == [(0, 8 * MIB), (9 * MIB, 31 * MIB), (42 * MIB, 22 * MIB)]
