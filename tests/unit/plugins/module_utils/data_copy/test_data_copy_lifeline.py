"""No orphans (plugins/module_utils/data_copy/lifeline.py and its users): every process a copy job
starts dies with its worker, and none can block forever once its reader is gone.

Real detached workers, real rsync, real forked processes; each test kills with SIGKILL (what a
crash, the OOM killer or an operator's kill -9 does) and then scans /proc for what is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import job as job_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")

GONE_WITHIN = 5.0  # seconds after the kill by which nothing of the job may be left
POLL_LIMIT = 120.0


def live(pid):
    info = lifeline.proc_stat(pid)
    return info is not None and info[0] not in ("Z", "X", "x")


def processes(*marks, pgid=None):
    """Live processes whose command line contains one of ``marks`` or that are in group ``pgid``."""
    wanted = [os.fsencode(str(mark)) for mark in marks]
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        pid = int(name)
        info = lifeline.proc_stat(pid)
        if info is None or info[0] in ("Z", "X", "x"):
            continue
        args = b" ".join(job_lib._cmdline(pid))
        if (pgid is not None and info[1] == pgid) or any(mark in args for mark in wanted):
            found[pid] = args.decode("utf-8", "replace")[:160]
    return found


def at_least(count, pgid, needing=None):
    """The processes of group ``pgid`` once there are ``count`` of them (and one of them runs
    ``needing``, when given), else None."""
    found = processes(pgid=pgid)
    if len(found) < count or (needing and not any(needing in args for args in found.values())):
        return None
    return found


def wait_for(predicate, what, limit=POLL_LIMIT):
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting for %s after %.0f s" % (what, limit))
        time.sleep(0.05)


def many_files(root, count, size):
    os.makedirs(root, exist_ok=True)
    data = os.urandom(size)
    for index in range(count):
        folder = os.path.join(root, "d%03d" % (index // 1000))
        if index % 1000 == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "f%05d" % index), "wb") as handle:
            handle.write(data)


def kill_worker_and_check(jobs, job_id, destination, pid):
    """SIGKILL the worker alone (not its group); within GONE_WITHIN seconds nothing of the job may
    be left, and the module's next look reports it gone, settled, with a status that says so."""
    folder = jobs.folder(job_id)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_WITHIN
    left = processes(folder, destination, pgid=pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = processes(folder, destination, pgid=pid)
    assert not left, "processes of job %s outlived its worker by %.0f s: %r" % (job_id, GONE_WITHIN, left)
    job = jobs.wait(job_id, 0)
    assert job["state"] == "failed" and job["interrupted"] is True, job
    assert "is gone without a final status" in job["error"], job["error"]
    return job


def test_killed_worker_takes_rsync_and_the_hashing_process_with_it(jobs, tmp_path):
    """The rsync pass: rsync (three processes) and the process that hashes beside it. Before the fix
    the hashing process held rsync's pipe and its own, and both waited forever to write."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    many_files(src, 3000, 8192)
    os.makedirs(dst)
    with open(os.path.join(dst, "old"), "wb") as handle:  # not empty: rsync copies, not the first copy
        handle.write(b"x")
    request = jobs.build_request("rs", src, dst, bwlimit="1m")
    pid = jobs.start(request)["job"]["pid"]
    # The worker, its hashing process and rsync's processes all run before the kill.
    members = wait_for(lambda: at_least(4, pid, needing="rsync"), "rsync and the hashing process")
    assert sum("worker.py" in args for args in members.values()) >= 2, members  # the worker and a fork of it
    kill_worker_and_check(jobs, "rs", dst, pid)
    # The status on disk says it too, for readers that never run the module (share_info).
    status = job_lib.state_lib.read_json(os.path.join(jobs.folder("rs"), "status.json"))
    assert status["state"] == "failed" and status["interrupted"] is True and "a copy pass" in status["error"]
    assert "while it was copying" in status["error"]
    # A rerun resumes it.
    again = jobs.start(request)
    assert again["actions"][0].startswith("restart job rs") or again["actions"][0].startswith("resume job rs")
    jobs.cancel("rs")


def test_killed_worker_takes_the_copying_processes_of_the_first_copy_with_it(jobs, tmp_path):
    """The parallel first copy: before the fix each copying process held the walking process's end
    of its own pipe and waited for work forever once the worker was killed."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    many_files(src, 30000, 512)
    os.makedirs(dst)
    request = jobs.build_request("fc", src, dst, copy_engine="auto")
    pid = jobs.start(request)["job"]["pid"]
    members = wait_for(lambda: at_least(3, pid), "the copying processes")
    assert jobs.view("fc")["state"] == "running", "the first copy ended before the kill: make the tree bigger"
    assert len(members) >= 3, members
    kill_worker_and_check(jobs, "fc", dst, pid)


WALKER = textwrap.dedent("""
    import sys
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare, lifeline
    if sys.argv[2] == 'pipes-only':
        lifeline._PRCTL[:] = [None]  # no death signal: only the closed pipe ends can end the walkers
    compare.compare_trees(sys.argv[1], sys.argv[1], processes=True)
""")


@pytest.mark.parametrize("how", ["death-signal", "pipes-only"])
def test_walking_processes_of_a_verification_end_when_it_is_killed(tmp_path, how):
    """The two walking processes of a verification: killed with it (death signal), and even without
    the signal they end (the cause): they no longer hold the reading end of their own pipe, so their
    next write fails instead of blocking forever on a full pipe."""
    tree = str(tmp_path / "tree")
    many_files(tree, 20000, 16)
    script = tmp_path / "walk.py"
    script.write_text(WALKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), tree, how], env=env, start_new_session=True)
    try:
        walkers = wait_for(lambda: at_least(3, proc.pid), "the two walking processes", limit=60)
        time.sleep(0.3)  # let them fill their pipes
        assert proc.poll() is None, "the verification ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + GONE_WITHIN
        while time.monotonic() < deadline and any(live(pid) for pid in walkers if pid != proc.pid):
            time.sleep(0.05)
        left = [pid for pid in walkers if pid != proc.pid and live(pid)]
        assert not left, "walking processes outlived the verification: %r" % left
    finally:
        for pid in processes(pgid=proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_child_whose_parent_is_already_gone_exits_at_once(tmp_path):
    """The race between the fork and the prctl: a child armed after its parent died does not stay."""
    marker = tmp_path / "ran-on"
    code = textwrap.dedent("""
        import os, sys, time
        from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline
        lifeline.arm(parent=1)  # a parent that is not ours: as if ours had died already
        open(sys.argv[1], 'w').write('armed and still running')
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code, str(marker)], env=env, timeout=60, check=False)
    assert done.returncode == 1
    assert not marker.exists()


def test_group_members_and_kill_exclude_the_caller(tmp_path):
    """kill_group_members stops the other members of a group and never the caller."""
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               "subprocess.Popen(['sleep', '60'])\ntime.sleep(60)"], start_new_session=True)
    try:
        wait_for(lambda: len(lifeline.group_members(leader.pid)) >= 2, "the sleeper to start", limit=30)
        killed = lifeline.kill_group_members(leader.pid, exclude=(leader.pid,))
        assert leader.pid not in killed and len(killed) == 1
        wait_for(lambda: lifeline.group_members(leader.pid) == [leader.pid], "the sleeper to go", limit=10)
        assert leader.poll() is None
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_the_hashing_process_beside_rsync_yields_the_cpu_to_rsync(jobs, tmp_path):
    """The hashing process beside rsync runs at a lower CPU priority than the worker and rsync: on a
    pass that changes little it only walks, and at the same priority its walk slowed rsync's."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    many_files(src, 3000, 8192)
    os.makedirs(dst)
    with open(os.path.join(dst, "old"), "wb") as handle:  # not empty: rsync copies, not the first copy
        handle.write(b"x")
    pid = jobs.start(jobs.build_request("nice", src, dst, bwlimit="1m"))["job"]["pid"]
    members = wait_for(lambda: at_least(4, pid, needing="rsync"), "rsync and the hashing process")
    worker_nice = os.getpriority(os.PRIO_PROCESS, pid)
    niceness = {}
    for member, args in members.items():
        try:
            niceness[member] = (os.getpriority(os.PRIO_PROCESS, member), args)
        except OSError:
            continue
    forks = [nice for member, (nice, args) in niceness.items() if member != pid and "worker.py" in args]
    copiers = [nice for member, (nice, args) in niceness.items() if "rsync" in args]
    assert forks and copiers, niceness
    assert all(nice == min(19, worker_nice + lifeline.BACKGROUND_NICE) for nice in forks), (worker_nice, niceness)
    assert all(nice == worker_nice for nice in copiers), (worker_nice, niceness)
    jobs.cancel("nice")


def test_lower_priority_of_a_thread_leaves_the_rest_of_the_process_alone():
    """The count of the source runs in a thread of the worker: only that thread yields the CPU."""
    seen = {}

    def count():
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lifeline.lower_priority()
        seen["thread"] = (before, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=count)
    thread.start()
    thread.join()
    before, after = seen["thread"]
    assert after == min(19, before + lifeline.BACKGROUND_NICE), seen
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main
    assert os.getpriority(os.PRIO_PROCESS, 0) == main


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a thread a lower nice value back needs root")
def test_restore_priority_gives_a_lowered_thread_the_callers_priority_back():
    """When rsync ends, the worker gives the count of the source, if it still runs, its priority back."""
    lowered, restored = threading.Event(), threading.Event()
    seen = {}

    def count():
        seen["tid"] = threading.get_native_id()
        lifeline.lower_priority()
        seen["lowered"] = os.getpriority(os.PRIO_PROCESS, 0)
        lowered.set()
        restored.wait(30)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, 0)

    main = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=count)
    thread.start()
    assert lowered.wait(30)
    lifeline.restore_priority(seen["tid"])
    restored.set()
    thread.join()
    assert seen["lowered"] == min(19, main + lifeline.BACKGROUND_NICE) != main
    assert seen["after"] == main
