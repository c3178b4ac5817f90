"""Driver-assisted share migration between two real btrfs filesystems on loop devices.

What is checked, as root (skipped with the reason "needs root" otherwise, a failure under CI=true):

* a share with three snapshots and a process writing during phase 1 arrives whole: data, metadata
  (modes, owners, nanosecond mtimes, xattrs, hard links, symlinks, sparse files) and every
  snapshot with its name and recorded creation time; a same-size change made in the same second
  (same mtime) after the last increment is on the destination; a process still holding a file
  open for writing stops the switchover with its pid, and the share is writable again; with
  open_writers_wait the switchover waits for it instead, and its last write arrives;
* a program appending through the export during phase 2 never sees a write succeed that is then
  missing from the share (the export's read-only base refuses writes between the two mounts);
* kills during a send, after a receive, and at each step of the switchover converge on rerun,
  and a partially received subvolume is detected and sent again;
* the share's root folder keeps its times when users only add files in a subfolder after phase 1
  (the receive puts new files in the root folder first), with kills during those sends;
* cancel (after increments, after a failed switchover, after a crash during the cancel) removes
  the destination and every temporary snapshot and leaves the source writable;
* btrfs to posix takes the host-assisted path only as the reference allows;
* the share_migration module drives it through ansible-playbook, with check mode and a rerun that
  reports no change;
* ``btrfs subvolume list`` shows no temporary snapshot after any of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from appender import Appender, lost_writes
from test_targets import _ansible_playbook, _environment

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.managers.share_migration import ShareMigrationManager
from btrfs_lab import ALPHA, BETA, FLAGS, PLAIN, BtrfsLab, Writer, digest, fill, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: loop-mounted btrfs filesystems and bind mounts")


@pytest.fixture
def lab(tmp_path: Path):
    lab = BtrfsLab(tmp_path / "lab")
    lab.base.mkdir()
    try:
        yield lab.open()
    finally:
        problems = lab.close()
    assert not problems, problems


def _make_share(lab: BtrfsLab, name: str, snapshots=("s1", "s2", "s3"), big_mb: int = 0) -> Path:
    lab.create_share(name)
    inst = lab.instance(name)
    fill(inst, seed=0, big_mb=big_mb)
    for index, snap in enumerate(snapshots):
        fill(inst, seed=index + 1, files=20 + index * 5)
        os.unlink(inst / "d2" / f"f{2 + 4 * index}.bin")
        lab.shares().snapshot_present(name, snap)
    return inst


def _same_inode(a: Path, b: Path) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_writable_migration_with_snapshots_and_a_writer(lab: BtrfsLab):
    inst = _make_share(lab, "proj", big_mb=2)
    snaps_before = dict((s, digest(lab.snapshot("proj", s))) for s in ("s1", "s2", "s3"))
    created = dict((s["name"], s["created_at"]) for s in lab.info("proj")["snapshots"])
    export = lab.exports / "proj"

    writer = Writer(export, lab.base)
    writer.wait_for_writes(export, 5)
    rc, res = lab.op("start", "proj", BETA)
    assert rc == 0, res
    assert res["task_state"] == "migration_driver_phase1_done"
    assert res["migration"]["compatibility"] == {
        "compatible": True, "writable": True, "preserve_metadata": True, "preserve_snapshots": True,
        "nondisruptive": False, "reason": None}
    progress = lab.info("proj")["progress"]
    assert progress["bytes_sent"] > 2 * 1024 * 1024 and progress["bytes_total"] >= 2 * 1024 * 1024, progress
    assert progress["total_progress"] == 100 and "rate_bytes_per_s" in progress
    # Users kept writing through the export during phase 1; each rerun sends an increment.
    assert _writable(export)
    first = int((export / "writer" / "log").read_bytes().splitlines()[-1])
    writer.wait_for_writes(export, first + 5)
    rc, res = lab.op("start", "proj", BETA)
    assert (rc, res["changed"]) == (0, True), res
    assert lab.info("proj")["copy_progress"]["increments"] >= 2
    written = writer.stop()
    assert written > first

    # A same-size change with the same mtime, in the same second as the last increment.
    rc, res = lab.op("start", "proj", BETA)
    assert rc == 0 and res["changed"] is True, res
    victim = inst / "d1" / "f1.bin"
    st = os.stat(victim)
    old = victim.read_bytes()
    new = bytes(b ^ 0xFF for b in old)
    victim.write_bytes(new)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(victim).st_size == st.st_size and os.stat(victim).st_mtime_ns == st.st_mtime_ns

    # A process still holding a file open for writing stops the switchover, naming itself.
    holder = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'ab'); print('ready', flush=True); "
                               "sys.stdin.read()", str(inst / "held")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        rc, res = lab.op("complete", "proj")
        assert rc == 1 and str(holder.pid) in res["msg"] and "open for writing" in res["msg"], res
        assert lab.info("proj")["task_state"] == "migration_driver_phase1_done"
        assert _writable(inst) and lab.show(inst)["readonly"] is False
    finally:
        holder.communicate("", timeout=30)
    (inst / "held").unlink()
    expected = digest(inst)

    rc, res = lab.op("complete", "proj")
    assert rc == 0 and res["task_state"] == "migration_success", res
    mig = res["migration"]
    assert mig["switchover_seconds"] > 0 and mig["btrfs"]["read_only_seconds"] >= 0
    dest = lab.instance("proj", "beta")
    assert digest(dest) == expected
    assert (dest / "d1" / "f1.bin").read_bytes() == new
    log = (dest / "writer" / "log").read_bytes().splitlines()
    assert len(log) == written and int(log[-1]) == written - 1
    for snap, tree in snaps_before.items():
        path = lab.snapshot("proj", snap, "beta")
        assert digest(path) == tree, snap
        assert lab.show(path)["readonly"] is True
    share = lab.info("proj")
    assert share["host"] == BETA and share["export_location"] == str(export)
    assert dict((s["name"], s["created_at"]) for s in share["snapshots"]) == created
    assert all(s["path"].startswith(str(lab.pools["beta"])) for s in share["snapshots"])
    assert _same_inode(export, dest) and _writable(export)
    assert not inst.exists() and not (lab.pools["alpha"] / "snapshots" / "proj").exists()
    assert lab.subvolumes() == ["a:alpha", "b:shares/proj", "b:snapshots/proj/s1", "b:snapshots/proj/s2",
                                "b:snapshots/proj/s3"]
    rc, res = lab.op("complete", "proj")
    assert (rc, res["changed"]) == (0, False), res


def test_crash_points_converge(lab: BtrfsLab):
    inst = _make_share(lab, "crashy", snapshots=("s1", "s2"), big_mb=6)
    snaps_before = dict((s, digest(lab.snapshot("crashy", s))) for s in ("s1", "s2"))

    # Killed during the send of the first snapshot: the receive is cut short.
    rc, res = lab.op("start", "crashy", BETA, crash="btrfs sending snapshot s1")
    assert rc == 70, res
    partial = lab.snapshot("crashy", "s1", "beta")
    assert partial.exists() and lab.show(partial)["received_uuid"] is None
    # Killed after a receive ended, before anything else was recorded.
    rc, res = lab.op("start", "crashy", BETA, crash="btrfs received increment 1")
    assert rc == 70, res
    assert lab.show(partial)["received_uuid"] is not None
    rc, res = lab.op("start", "crashy", BETA)
    assert rc == 0 and res["task_state"] == "migration_driver_phase1_done", res

    fill(inst, seed=42, files=30, big_mb=2)
    rc, res = lab.op("start", "crashy", BETA, crash="btrfs sending increment 2")
    assert rc == 70, res
    assert lab.temporary_subvolumes()[-1].endswith("inc-000002")
    rc, res = lab.op("start", "crashy", BETA)
    assert rc == 0 and res["changed"] is True, res
    assert len(lab.temporary_subvolumes()) == 2  # only the newest increment, on each side

    fill(inst, seed=43, files=12, big_mb=3)
    expected = digest(inst)
    for point in ("switchover started", "btrfs source read-only", "btrfs sending final", "btrfs received final",
                  "btrfs destination placed", "destination available, source inactive"):
        rc, res = lab.op("complete", "crashy", crash=point)
        assert rc == 70, (point, res)
        if point == "btrfs source read-only":
            assert not _writable(inst) and lab.info("crashy")["task_state"] == "migration_completing"
        if point == "btrfs sending final":
            # Cut halfway: whatever arrived is not a complete receive (the last increment before
            # the source went read-only already carried the changes, so this stream is small).
            final = [s for s in lab.temporary_subvolumes() if s.startswith("b:") and s.endswith("/final")]
            assert all(lab.show(lab.pools["beta"] / f[2:])["received_uuid"] is None for f in final)
    rc, res = lab.op("complete", "crashy")
    assert rc == 0 and res["task_state"] == "migration_success", res
    assert digest(lab.instance("crashy", "beta")) == expected
    for snap, tree in snaps_before.items():
        assert digest(lab.snapshot("crashy", snap, "beta")) == tree
    assert lab.temporary_subvolumes() == [] and not inst.exists()
    assert _same_inode(lab.exports / "crashy", lab.instance("crashy", "beta"))


def test_cancel_leaves_the_source_as_it_was(lab: BtrfsLab):
    inst = _make_share(lab, "back", snapshots=("s1",))
    before_subvolumes = lab.subvolumes()
    rc, res = lab.op("start", "back", BETA)
    assert rc == 0, res
    fill(inst, seed=5)
    rc, res = lab.op("start", "back", BETA)
    assert rc == 0 and res["changed"], res
    assert lab.temporary_subvolumes()
    rc, res = lab.op("cancel", "back", crash="cancel requested")
    assert rc == 70, res
    rc, res = lab.op("cancel", "back")
    assert rc == 0 and res["task_state"] == "migration_cancelled", res
    assert lab.subvolumes() == before_subvolumes
    assert _writable(inst) and _same_inode(lab.exports / "back", inst)

    # Cancel after a switchover that died with the source read-only.
    expected = digest(inst)
    rc, res = lab.op("start", "back", BETA)
    assert rc == 0, res
    rc, res = lab.op("complete", "back", crash="btrfs sending final")
    assert rc == 70 and not _writable(inst), res
    rc, res = lab.op("cancel", "back")
    assert rc == 0 and res["task_state"] == "migration_cancelled", res
    assert lab.subvolumes() == before_subvolumes
    assert _writable(inst) and digest(inst) == expected
    assert lab.info("back")["status"] == "available"
    rc, res = lab.op("cancel", "back")
    assert (rc, res["changed"]) == (0, False), res

    # There and back again: the second move sends snapshots that were received themselves.
    snaps = digest(lab.snapshot("back", "s1"))
    for destination, pool in ((BETA, "beta"), (ALPHA, "alpha")):
        migrations = lab.migrations()
        assert migrations.start("back", destination, FLAGS)["task_state"] == "migration_driver_phase1_done"
        assert migrations.complete("back")["task_state"] == "migration_success"
        assert digest(lab.instance("back", pool)) == expected
        assert digest(lab.snapshot("back", "s1", pool)) == snaps
    assert lab.subvolumes() == before_subvolumes


def test_a_failure_in_phase1_removes_the_destination(lab: BtrfsLab):
    inst = _make_share(lab, "blocked", snapshots=("s1",))
    blocker = lab.snapshot("blocked", "s1", "beta")
    blocker.mkdir(parents=True)
    (blocker / "not ours").write_text("data someone put there")
    before = lab.subvolumes()
    with pytest.raises(StorageError, match=r"Failed to migrate share blocked to .*snapshots/blocked/s1 already exists; "
                                           r"the destination instance was removed"):
        lab.migrations().start("blocked", BETA, FLAGS)
    share = lab.info("blocked")
    assert share["task_state"] == "migration_error" and share["status"] == "available"
    assert lab.subvolumes() == before and (blocker / "not ours").exists()
    assert _writable(inst)
    # Once unblocked: a check-mode rerun after phase 1 predicts an increment only after a change.
    blocker.joinpath("not ours").unlink()
    blocker.rmdir()
    migrations = lab.migrations()
    assert migrations.start("blocked", BETA, FLAGS)["task_state"] == "migration_driver_phase1_done"
    assert ShareMigrationManager(lab.context(check_mode=True)).start("blocked", BETA, FLAGS)["changed"] is False
    (inst / "new").write_text("new")
    assert ShareMigrationManager(lab.context(check_mode=True)).start("blocked", BETA, FLAGS)["changed"] is True
    assert migrations.cancel("blocked")["task_state"] == "migration_cancelled"
    assert lab.subvolumes() == before


def test_fallbacks_and_refusals(lab: BtrfsLab):
    _make_share(lab, "snappy", snapshots=("s1",))
    lab.create_share("bare")
    fill(lab.instance("bare"))
    # Check mode predicts phase 1 and changes nothing.
    before = lab.subvolumes()
    result = ShareMigrationManager(lab.context(check_mode=True)).start("snappy", BETA, FLAGS)
    assert result["task_state"] == "migration_driver_phase1_done" and lab.subvolumes() == before
    # btrfs -> posix with a flag: the driver refuses and a host copy is not allowed.
    with pytest.raises(StorageError, match="uses driver posix.*preserve_snapshots=true"):
        lab.migrations().start("snappy", PLAIN, {"preserve_snapshots": True})
    assert lab.info("snappy")["migration"]["driver_refusal"].startswith("the destination backend px1 uses driver posix")
    # Without flags but with snapshots: a host copy cannot carry them.
    with pytest.raises(InvalidRequest, match="cannot carry its snapshots"):
        lab.migrations().start("snappy", PLAIN, {}, wait=False)
    # Without flags or snapshots: host-assisted, as the reference allows.
    result = lab.migrations().start("bare", PLAIN, {}, wait=False)
    assert result["migration"]["mechanism"] == "host"
    assert lab.migrations().cancel("bare")["task_state"] == "migration_cancelled"
    assert lab.subvolumes() == before
    # posix -> btrfs without flags: host-assisted too; the destination instance is a subvolume.
    lab.create_share("flat", pool=PLAIN)
    result = lab.migrations().start("flat", BETA, {}, wait=False)
    assert result["migration"]["mechanism"] == "host"
    assert "b:shares/flat" in lab.subvolumes()
    assert lab.migrations().cancel("flat")["task_state"] == "migration_cancelled"
    assert lab.subvolumes() == before
    # A btrfs pool whose path is not on btrfs fails clearly and creates nothing.
    fake = lab.base / "not-btrfs"
    fake.mkdir()
    lab.backends.append({"name": "bt2", "driver": "btrfs", "host": "stor1", "pools": {"fake": {"path": str(fake)}}})
    with pytest.raises(StorageError, match=r"Pool stor1@bt2#fake: its path .* not btrfs"):
        lab.create_share("nowhere", pool="stor1@bt2#fake")
    assert not (fake / "shares").exists() and not lab.info("nowhere")
    lab.backends.pop()


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ lookup('ansible.builtin.file', backends_file) | from_json }}"
  tasks:
    - &migrate
      storage.mobility.share_migration:
        share: mod
        destination_pool: "%(beta)s"
        writable: true
        preserve_metadata: true
        preserve_snapshots: true
      check_mode: true
      register: planned
    - <<: *migrate
      check_mode: false
      register: started
    - <<: *migrate
      check_mode: false
      register: again
    - storage.mobility.share_migration: {share: mod, state: completed}
      register: completed
    - ansible.builtin.debug:
        msg: "RESULTS {{ {'planned': [planned.changed, planned.task_state], 'started': [started.changed, started.task_state],
                          'again': again.changed, 'progress': started.share.progress,
                          'completed': [completed.changed, completed.task_state, completed.share.host],
                          'export': completed.share.export_location} | to_json }}"
"""


def test_the_modules_drive_btrfs_end_to_end(lab: BtrfsLab, collections_path: Path):
    lab.create_share("mod")
    (lab.instance("mod") / "hello").write_text("hello\n")
    lab.shares().snapshot_present("mod", "first")
    work = lab.base / "ansible"
    work.mkdir()
    playbook = work / "play.yml"
    playbook.write_text(PLAYBOOK % {"beta": BETA}, encoding="utf-8")
    proc = subprocess.run([_ansible_playbook(), "-i", "localhost,", "-c", "local", str(playbook),
                           "-e", f"backends_file={lab.config}", "-e", f"ansible_python_interpreter={sys.executable}"],
                          env=dict(_environment(collections_path, work), ANSIBLE_CALLBACK_RESULT_FORMAT="json"),
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if '"msg": "RESULTS ' in ln]
    assert line, proc.stdout[-4000:]
    got = json.loads(json.loads("{" + line[0].strip() + "}")["msg"][len("RESULTS "):])
    assert got["planned"] == [True, "migration_driver_phase1_done"] and got["started"] == [True, "migration_driver_phase1_done"]
    assert got["again"] is False, "a rerun with nothing changed must send nothing"
    assert got["progress"]["bytes_sent"] > 0 and got["progress"]["total_progress"] == 100
    assert got["completed"] == [True, "migration_success", BETA]
    assert (Path(got["export"]) / "hello").read_text() == "hello\n"
    assert lab.subvolumes() == ["a:alpha", "b:shares/mod", "b:snapshots/mod/first"]


HOLDER = """
import sys
f = open(sys.argv[1], 'ab')
f.write(b'before\\n'); f.flush()
print('ready', flush=True)
sys.stdin.readline()
f.write(b'late\\n'); f.close()
print('closed', flush=True)
sys.stdin.readline()
"""


def test_writes_through_the_export_during_phase2_are_never_lost(lab: BtrfsLab):
    _make_share(lab, "flow", snapshots=())
    rc, res = lab.op("start", "flow", BETA)
    assert rc == 0 and res["task_state"] == "migration_driver_phase1_done", res
    export = lab.exports / "flow"
    appender = Appender(export / "appended.log", lab.base)
    try:
        deadline = time.monotonic() + 30
        while not (export / "appended.log").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        # A writer that opens and closes the file at every write is caught by the open-writer
        # scan only if a descriptor happens to be open at that instant: the wait covers that.
        rc, res = lab.op("complete", "flow", "30")
        assert rc == 0 and res["task_state"] == "migration_success", res
        result = appender.stop_after_successes(300)
    finally:
        appender.kill()
    assert result["failed"] > 0, "the read-only source should have refused writes"
    dest = lab.instance("flow", "beta")
    assert lost_writes(result, dest / "appended.log") == []
    assert _same_inode(export, dest)


def test_the_switch_waits_for_a_process_holding_a_file_open(lab: BtrfsLab):
    inst = _make_share(lab, "wait", snapshots=())
    rc, res = lab.op("start", "wait", BETA)
    assert rc == 0, res
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(inst / "held")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    timer = None
    try:
        assert holder.stdout.readline().strip() == "ready"

        def close_it():
            holder.stdin.write("\n")
            holder.stdin.flush()
        timer = threading.Timer(3.0, close_it)
        timer.start()
        rc, res = lab.op("complete", "wait", "120")
        assert rc == 0 and res["task_state"] == "migration_success", res
        assert holder.stdout.readline().strip() == "closed"
    finally:
        if timer is not None:
            timer.cancel()
        holder.kill()
        holder.wait()
    # The write made after the source became read-only (btrfs lets an open descriptor write on)
    # arrived: the last send waited for the file to be closed.
    assert (lab.instance("wait", "beta") / "held").read_bytes() == b"before\nlate\n"


def test_the_share_root_keeps_its_times_when_users_add_files_in_a_subfolder(lab: BtrfsLab):
    """A receive creates new files under temporary names in the subvolume's root folder, and the
    send carries the root's times only when the root itself changed: users adding files in a
    subfolder while phase 1 was done gave the migrated share's root the time of the switchover
    (the fault campaign, seed 5). Killed halfway through the sends that carry those files, and
    rerun, the share still arrives with its root's times."""
    inst = _make_share(lab, "rooted", snapshots=("s1",))
    (inst / "user").mkdir()
    os.utime(inst, ns=(978307200123456789, 978307201987654321))
    rc, res = lab.op("start", "rooted", BETA)
    assert rc == 0 and res["task_state"] == "migration_driver_phase1_done", res
    (lab.exports / "rooted" / "user" / "new-1.txt").write_bytes(b"a user's first file")
    rc, res = lab.op("start", "rooted", BETA, crash="btrfs sending increment 2")
    assert rc == 70, res
    rc, res = lab.op("start", "rooted", BETA)
    assert (rc, res["changed"]) == (0, True), res
    (lab.exports / "rooted" / "user" / "new-2.txt").write_bytes(b"a user's second file")
    assert os.stat(inst).st_mtime_ns == 978307201987654321  # the users' files left the root alone
    expected = digest(inst)
    for point in ("btrfs sending increment 3", "btrfs sending final"):
        rc, res = lab.op("complete", "rooted", crash=point)
        assert rc == 70, (point, res)
    rc, res = lab.op("complete", "rooted")
    assert rc == 0 and res["task_state"] == "migration_success", res
    dest = lab.instance("rooted", "beta")
    assert digest(dest) == expected
    assert (dest / "user" / "new-2.txt").read_bytes() == b"a user's second file"
    assert os.stat(dest).st_mtime_ns == 978307201987654321
    assert lab.temporary_subvolumes() == [] and not inst.exists()
