"""Unit tests for plugins/module_utils/transport/openfiles.py, with real processes holding real files."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.transport import openfiles

from mobility_helpers import FakeClock

HOLD = """
import mmap, os, sys
mode, path = sys.argv[1], sys.argv[2]
if mode == 'mmap':
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, 4096)
    mapped = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)  # only the mapping is left
elif mode == 'cwd':
    os.chdir(path)
else:
    fd = os.open(path, {'r': os.O_RDONLY, 'w': os.O_WRONLY | os.O_CREAT, 'rw': os.O_RDWR | os.O_CREAT}[mode])
    if len(sys.argv) > 3:
        os.unlink(path)
print('ready', flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def hold():
    procs = []

    def start(mode, path, *extra):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, mode, str(path)] + list(extra),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def share(tmp_path):
    path = tmp_path / "pool" / "shares" / "s1"
    path.mkdir(parents=True)
    (path / "f").write_text("x")
    return path


def pids(found):
    return [item["pid"] for item in found]


@pytest.mark.parametrize("mode, is_writer", [("w", True), ("rw", True), ("r", False)])
def test_the_access_mode_decides(share, hold, mode, is_writer):
    proc = hold(mode, share / "f")
    found = openfiles.open_writers([str(share)])
    assert (proc.pid in pids(found)) is is_writer
    assert proc.pid in pids(openfiles.users([str(share)]))


def test_a_writer_is_named_with_its_command_and_file(share, hold):
    proc = hold("w", share / "f")
    found = [item for item in openfiles.open_writers([str(share)]) if item["pid"] == proc.pid]
    assert found == [{"pid": proc.pid, "command": found[0]["command"], "paths": [str(share / "f")]}]
    assert found[0]["command"].startswith("python")
    assert openfiles.describe(found) == "%d (%s): %s" % (proc.pid, found[0]["command"], share / "f")


def test_a_file_outside_the_paths_on_the_same_device_counts_only_for_the_whole_device(share, hold, tmp_path):
    other = tmp_path / "pool" / "elsewhere"
    proc = hold("w", other)
    assert proc.pid not in pids(openfiles.open_writers([str(share)]))
    assert proc.pid in pids(openfiles.open_writers([str(share)], whole_device=True))


def test_a_shared_writable_mapping_counts_after_its_descriptor_closed(share, hold):
    proc = hold("mmap", share / "f")
    found = [item for item in openfiles.open_writers([str(share)]) if item["pid"] == proc.pid]
    assert found and found[0]["paths"] == [str(share / "f")]


def test_a_deleted_file_still_open_for_writing_counts(share, hold):
    proc = hold("w", share / "gone", "unlink")
    found = [item for item in openfiles.open_writers([str(share)]) if item["pid"] == proc.pid]
    assert found and found[0]["paths"] == [str(share / "gone")]


def test_a_current_folder_is_a_use_not_a_write(share, hold):
    proc = hold("cwd", share)
    assert proc.pid in pids(openfiles.users([str(share)]))
    assert proc.pid not in pids(openfiles.open_writers([str(share)]))


def test_missing_paths_find_nothing(tmp_path):
    assert openfiles.open_writers([str(tmp_path / "absent"), None]) == []


def test_describe_limits_long_lists():
    items = [{"pid": n, "command": "c", "paths": ["/p/%d" % i for i in range(7)]} for n in range(12)]
    text = openfiles.describe(items)
    assert text.startswith("0 (c): /p/0, /p/1, /p/2, /p/3, /p/4 and 2 more; 1 (c)")
    assert text.endswith("and 2 more processes")


def test_wait_closed_scans_until_nothing_is_left_or_time_is_up():
    clock = FakeClock()
    results = [["a"], ["a"], []]
    assert openfiles.wait_closed(lambda: results.pop(0), 10, clock.clock, clock.sleep) == []
    assert clock.sleeps == [0.5, 0.5]
    clock = FakeClock()
    assert openfiles.wait_closed(lambda: ["a"], 2, clock.clock, clock.sleep) == ["a"]
    assert sum(clock.sleeps) == 2
    clock = FakeClock()
    assert openfiles.wait_closed(lambda: ["a"], 0, clock.clock, clock.sleep) == ["a"] and clock.sleeps == []
