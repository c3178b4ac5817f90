"""bench/peakmem.py: the peak memory of a job's processes together, sampled from /proc, with real
processes that hold known amounts of memory."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PEAKMEM = os.path.join(HERE, "..", "..", "..", "bench", "peakmem.py")
MIB = 1024 * 1024

# A process that holds MIB_HELD MiB (pages written, so resident), says so in a file, and waits for
# the stop file. With START_LEADER it first starts, in a session of its own, a leader that writes its
# pid to LEADER_PID and holds 96 MiB, and that leader starts a helper of 32 MiB in its session.
HOLDER = r"""
import os, subprocess, sys, time
tmp, mib, role = sys.argv[1], int(sys.argv[2]), sys.argv[3]
children = []
if role == 'parent':
    children.append(subprocess.Popen([sys.executable, sys.argv[0], tmp, '96', 'leader'],
                                     start_new_session=True))
elif role == 'leader':
    with open(os.path.join(tmp, 'leader.pid'), 'w') as handle:
        handle.write('%d\n' % os.getpid())
    children.append(subprocess.Popen([sys.executable, sys.argv[0], tmp, '32', 'helper']))
held = b'\x01' * (mib * 1024 * 1024)
open(os.path.join(tmp, 'ready-%s' % role), 'w').close()
while not os.path.exists(os.path.join(tmp, 'stop')):
    time.sleep(0.02)
for child in children:
    child.wait()
"""


def load():
    spec = importlib.util.spec_from_file_location("bench_peakmem", PEAKMEM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for(paths, timeout=30):
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(path) for path in paths):
        assert time.monotonic() < deadline, "the memory holders did not start"
        time.sleep(0.05)


@pytest.fixture
def holder(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    return script


def run_tree(peakmem, holder, tmp_path, cgroup_root=None):
    memory = peakmem.JobMemory(interval=0.05, cgroup_root=cgroup_root, leader_pid_file=str(tmp_path / "leader.pid"),
                               pss_every=2)
    # An unrelated process of 80 MiB started without the marker: never counted.
    outsider = subprocess.Popen([sys.executable, str(holder), str(tmp_path), "80", "outsider"])
    parent = subprocess.Popen([sys.executable, str(holder), str(tmp_path), "64", "parent"], env=memory.env())
    memory.attach(parent.pid)
    memory.start()
    try:
        wait_for([tmp_path / ("ready-%s" % role) for role in ("parent", "leader", "helper", "outsider")])
        time.sleep(0.3)
    finally:
        (tmp_path / "stop").write_text("")
        parent.wait(timeout=30)
        outsider.wait(timeout=30)
        result = memory.stop(linger=5)
    return result


def test_peak_is_the_sum_of_the_job_session_and_excludes_outsiders(holder, tmp_path):
    peakmem = load()
    result = run_tree(peakmem, holder, tmp_path)
    # The job: the leader (96 MiB) and its helper (32 MiB) together, both held at the same time.
    assert 128 * MIB <= result["peak_rss_bytes"] < (128 + 40) * MIB, result
    # Every member, the parent (64 MiB, another session) too; the outsider (80 MiB) never.
    assert (128 + 64) * MIB <= result["peak_rss_all_bytes"] < (128 + 64 + 60) * MIB, result
    names = {item["pid"]: item for item in result["processes"]}
    assert len(names) == 3, result["processes"]
    assert sum(item["in_job"] for item in names.values()) == 2
    assert max(item["hwm_bytes"] for item in names.values()) >= 96 * MIB
    assert result["peak_breakdown"][0]["rss_bytes"] >= 96 * MIB
    assert result["samples"] > 3
    # Proportional sizes: the job's own pages (the two processes share little), never above the RSS sum.
    assert 100 * MIB <= result["peak_pss_bytes"] <= result["peak_rss_bytes"], result


def test_cgroup_membership_counts_a_process_without_the_marker(tmp_path):
    peakmem = load()
    if os.geteuid() != 0:
        pytest.skip("needs root: a cgroup v1 memory controller to create a cgroup in")
    if not os.path.isdir(peakmem.CGROUP_ROOT):
        pytest.skip("no cgroup v1 memory controller at %s" % peakmem.CGROUP_ROOT)
    memory = peakmem.JobMemory(interval=0.05)
    assert memory.cgroup, memory.cgroup_error
    stop = tmp_path / "stop"
    ready = tmp_path / "ready"
    code = ("import os, time\nheld = b'\\x01' * (48 * 1024 * 1024)\nopen(%r, 'w').close()\n"
            "while not os.path.exists(%r):\n    time.sleep(0.02)\n" % (str(ready), str(stop)))
    # A cleared environment: only the cgroup ties this process to the run.
    process = subprocess.Popen([sys.executable, "-c", code], env={})
    memory.attach(process.pid)
    memory.start()
    try:
        wait_for([ready])
        time.sleep(0.3)
    finally:
        stop.write_text("")
        process.wait(timeout=30)
        result = memory.stop(linger=5)
    assert result["peak_rss_all_bytes"] >= 48 * MIB, result
    assert result["membership"] == "environment marker + cgroup"
    assert not os.path.exists(memory.cgroup), "the cgroup was left behind"


def test_a_process_that_is_gone_is_not_read():
    peakmem = load()
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert peakmem.process_info(process.pid) is None
