"""Unit tests for plugins/module_utils/drivers/share/btrfs.py (its parsers and stream commands:
test_btrfs_cli.py, test_btrfs_stream.py).

Checked without btrfs where it can be and, as root, on a real btrfs
filesystem in a loop-mounted sparse image (the cheap parts of the driver: subvolumes, snapshots,
compatibility answers, change detection, open writers, a send through the measured pipe).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.config import Backends
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.posix import PosixShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

# --------------------------------------------------------------------------- compatibility without btrfs


def _backends(tmp_path, **kinds):
    specs = []
    for name, (driver, host) in kinds.items():
        path = tmp_path / name
        path.mkdir()
        specs.append({"name": name, "driver": driver, "host": host, "pools": {"p": {"path": str(path)}}})
    return Backends(specs)


def _driver(backends, name):
    backend = [b for b in backends.backends if b.name == name][0]
    cls = BtrfsShareDriver if backend.driver == "btrfs" else PosixShareDriver
    return cls(backend, LocalTransport(CommandRunner())), backend.pools["p"]


def _answer(**kw):
    result = {"compatible": False, "writable": False, "preserve_metadata": False, "nondisruptive": False,
              "preserve_snapshots": False}
    result.update(kw)
    return result


def test_compatibility_with_a_posix_destination_is_refused_with_the_reason(tmp_path):
    backends = _backends(tmp_path, src=("btrfs", "h1"), dst=("posix", "h1"))
    (drv, src), (dst_drv, dst) = _driver(backends, "src"), _driver(backends, "dst")
    answer = drv.migration_check_compatibility(src, dst, {"name": "s"}, dst_drv)
    assert answer.pop("reason") == ("the destination backend dst uses driver posix; btrfs send/receive needs btrfs "
                                    "pools on both sides")
    assert answer == _answer()


def test_compatibility_across_hosts_is_refused(tmp_path):
    backends = _backends(tmp_path, src=("btrfs", "h1"), dst=("btrfs", "h2"))
    (drv, src), (dst_drv, dst) = _driver(backends, "src"), _driver(backends, "dst")
    answer = drv.migration_check_compatibility(src, dst, {"name": "s"}, dst_drv)
    assert "different hosts (h1, h2)" in answer["reason"] and answer["compatible"] is False


def test_compatibility_with_a_pool_that_is_not_btrfs_names_the_filesystem(tmp_path, monkeypatch):
    monkeypatch.setattr(LocalTransport, "mount_of", lambda self, path: {"fstype": "ext4", "source": "/dev/sdz1",
                                                                        "mount_point": "/srv"})
    monkeypatch.setattr(LocalTransport, "which", lambda self, name: True)
    backends = _backends(tmp_path, src=("btrfs", "h1"), dst=("btrfs", "h1"))
    (drv, src), (dst_drv, dst) = _driver(backends, "src"), _driver(backends, "dst")
    answer = drv.migration_check_compatibility(src, dst, {"name": "s"}, dst_drv)
    assert answer["compatible"] is False
    assert answer["reason"].startswith("the source pool h1@src#p is not usable")
    assert "ext4 filesystem (/dev/sdz1 mounted at /srv), not btrfs" in answer["reason"]
    with pytest.raises(StorageError, match=r"Pool h1@src#p: its path .* is on a ext4 filesystem"):
        drv.pool_stats(src)


def test_a_missing_btrfs_command_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(LocalTransport, "which", lambda self, name: False)
    backends = _backends(tmp_path, src=("btrfs", "h1"))
    drv, src = _driver(backends, "src")
    with pytest.raises(StorageError, match="needs the btrfs command: install btrfs-progs"):
        drv.create_instance(src, "s")
    assert not (tmp_path / "src" / "shares").exists()


# --------------------------------------------------------------------------- a real btrfs (root)


@pytest.fixture(scope="module")
def real_fs(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: a loop-mounted btrfs filesystem")
    base = tmp_path_factory.mktemp("btrfs-unit")
    image, point = base / "fs.img", base / "mnt"
    point.mkdir()
    subprocess.run(["truncate", "-s", "200M", str(image)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)
        found = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=False)
        for line in found.stdout.splitlines():
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)


@pytest.fixture
def real(real_fs, request):
    names = []
    for pool in ("a", "b"):
        path = real_fs / ("%s-%s" % (request.node.name[:40], pool))
        subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True, capture_output=True)
        names.append(str(path))
    pools = {"a": {"path": names[0]}, "b": {"path": names[1]}}
    backends = Backends([{"name": "bt", "driver": "btrfs", "host": "h", "pools": pools}])
    backend = backends.backends[0]
    return BtrfsShareDriver(backend, LocalTransport(CommandRunner())), backend.pools["a"], backend.pools["b"]


def test_real_instances_and_snapshots_are_subvolumes(real):
    drv, pool_a, pool_b = real
    path = drv.create_instance(pool_a, "s")
    assert drv.is_subvolume(path) and drv.create_instance(pool_a, "s") == path
    with open(os.path.join(path, "f"), "wb") as handle:
        handle.write(b"x" * 100000)
    with pytest.raises(InvalidRequest, match="is not an empty btrfs subvolume"):
        drv.create_instance(pool_a, "s")
    assert drv.create_snapshot(pool_a, "s", "snap") >= 100000
    info = drv.show(drv.snapshot_path(pool_a, "s", "snap"))
    assert info["readonly"] is True and info["parent_uuid"] == drv.show(path)["uuid"] and info["creation_time"]
    assert drv.snapshot_exists(pool_a, "s", "snap") and drv.pool_stats(pool_a)["filesystem"] == "btrfs"
    assert drv.delete_snapshot(pool_a, "s", "snap") is True and drv.delete_snapshot(pool_a, "s", "snap") is False
    assert not os.path.exists(drv.snapshots_dir(pool_a, "s"))
    assert drv.delete_instance(pool_a, "s") is True and drv.delete_instance(pool_a, "s") is False


def test_real_tree_seal_of_a_subvolume(real):
    """An instance that is a subvolume is sealed as a folder; a change of content keeping the size and
    mtime changes the seal."""
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import tree_seal
    drv, pool_a, _pool_b = real
    path = drv.create_instance(pool_a, "s")
    target = os.path.join(path, "f")
    with open(target, "wb") as handle:
        handle.write(b"x" * 1000)
    seal = drv.tree_seal(pool_a, path, ["lost+found"])
    assert seal == tree_seal(path, ["lost+found"])
    st = os.stat(target)
    with open(target, "r+b") as handle:
        handle.write(b"y")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert drv.tree_seal(pool_a, path, ["lost+found"]) != seal


def test_real_compatibility_is_truthful(real):
    drv, pool_a, pool_b = real
    drv.create_instance(pool_a, "s")
    share = {"name": "s"}
    assert drv.migration_check_compatibility(pool_a, pool_b, share, drv) == {
        "compatible": True, "writable": True, "preserve_metadata": True, "preserve_snapshots": True,
        "nondisruptive": False, "reason": None}
    subprocess.run(["btrfs", "subvolume", "create", os.path.join(drv.instance_path(pool_a, "s"), "inner")],
                   check=True, capture_output=True)
    answer = drv.migration_check_compatibility(pool_a, pool_b, share, drv)
    assert answer["compatible"] is False and "nested subvolumes" in answer["reason"] and "inner" in answer["reason"]


def test_real_change_detection_and_a_measured_send(real):
    drv, pool_a, pool_b = real
    path = drv.create_instance(pool_a, "s")
    share = {"name": "s", "migration": {"id": "0123-abcd"}, "snapshots": []}
    with open(os.path.join(path, "data"), "wb") as handle:
        handle.write(os.urandom(300000))
    assert drv.source_changed(pool_a, share) is True  # no increment yet
    drv.migration_start(pool_a, pool_b, share)
    assert drv.migration_continue(pool_a, pool_b, share) is True
    progress = drv.migration_get_progress(pool_a, pool_b, share)
    assert progress["total_progress"] == 100 and progress["bytes_sent"] >= 300000
    assert 300000 <= progress["bytes_total"] <= progress["bytes_sent"]
    assert drv.source_changed(pool_a, share) is False
    assert drv.migration_refresh(pool_a, pool_b, share) is False
    with open(os.path.join(path, "data"), "r+b") as handle:
        handle.write(b"changed")
    assert drv.source_changed(pool_a, share) is True
    assert drv.migration_refresh(pool_a, pool_b, share) is True
    stage = drv.staging_dir(pool_b, share)
    assert sorted(os.listdir(stage)) == ["inc-000002"]
    with open(os.path.join(stage, "inc-000002", "data"), "rb") as handle:
        assert handle.read(7) == b"changed"
    drv.migration_cancel(pool_a, pool_b, share)
    assert not os.path.exists(stage) and not os.path.exists(drv.staging_dir(pool_a, share))


def test_real_root_times_survive_an_increment_of_new_files_in_a_subfolder(real):
    """The receive creates new files under temporary names in the subvolume's root folder before
    moving them into their folder; the send does not carry the root's times when only a subfolder
    changed, so the received root got the time of the receive (seen in the fault campaign)."""
    drv, pool_a, pool_b = real
    path = drv.create_instance(pool_a, "s")
    share = {"name": "s", "migration": {"id": "0123-root"}, "snapshots": []}
    os.mkdir(os.path.join(path, "user"))
    os.utime(path, ns=(978307200123456789, 978307201987654321))
    drv.migration_start(pool_a, pool_b, share)
    assert drv.migration_continue(pool_a, pool_b, share) is True
    stage = drv.staging_dir(pool_b, share)
    assert os.stat(os.path.join(stage, "inc-000001")).st_mtime_ns == 978307201987654321
    with open(os.path.join(path, "user", "new"), "wb") as handle:
        handle.write(b"written by a user")
    assert os.stat(path).st_mtime_ns == 978307201987654321  # the user's write left the root alone
    assert drv.migration_refresh(pool_a, pool_b, share) is True
    received = os.path.join(stage, "inc-000002")
    with open(os.path.join(received, "user", "new"), "rb") as handle:
        assert handle.read() == b"written by a user"
    assert drv.received_ok(os.path.join(drv.staging_dir(pool_a, share), "inc-000002"), received)
    st, sent = os.stat(received), os.stat(os.path.join(drv.staging_dir(pool_a, share), "inc-000002"))
    assert st.st_mtime_ns == 978307201987654321
    assert st.st_atime_ns == sent.st_atime_ns
    drv.migration_cancel(pool_a, pool_b, share)


def test_real_open_writers_are_named(real):
    drv, pool_a, pool_b = real
    path = drv.create_instance(pool_a, "s")
    target = os.path.join(path, "held")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'ab'); print('ok', flush=True); "
                               "sys.stdin.read()", target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        found = drv.open_writers(path)
        assert len(found) == 1 and found[0].startswith("%d (python" % holder.pid) and target in found[0]
    finally:
        holder.communicate("", timeout=30)
    reader = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'rb'); print('ok', flush=True); "
                               "sys.stdin.read()", target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ok"
        assert drv.open_writers(path) == []
    finally:
        reader.communicate("", timeout=30)


def test_send_eta_is_never_zero_while_bytes_remain():
    """A send past the estimate of its total said ETA 0 with the send still running; an ETA of a send
    near its end said 0.0 while bytes were left."""
    progress = {"bytes_total": 1000}
    BtrfsShareDriver._update_rate(progress, 999, 10.0, 999)
    assert progress["eta_seconds"] >= 1 and progress["total_progress"] == 99
    progress = {"bytes_total": 1000}
    BtrfsShareDriver._update_rate(progress, 1500, 10.0, 1500)  # the estimate was too small
    assert progress["eta_seconds"] is None and progress["total_progress"] == 99


def test_real_replica_update_places_the_instance_with_four_subvolume_shows(real, monkeypatch):
    """A steady-state update shows the common point on both sides and the sent and received
    point (the received UUID check), and no more: the placement reuses the received point's
    show and makes no "already placed" check for a point received in the same run."""
    drv, pool_a, pool_b = real
    path = drv.create_instance(pool_a, "s")
    share = {"name": "s", "id": "5d0f9c1e-7b2a-4c8e-9f3d-2a1b0c9d8e7f", "snapshots": [], "replicas": []}
    replica = {"id": "r1"}
    with open(os.path.join(path, "data"), "wb") as handle:
        handle.write(b"first")
    drv.replica_update(pool_a, pool_b, share, replica)
    with open(os.path.join(path, "data"), "wb") as handle:
        handle.write(b"second")
    real_run = drv.transport.run
    commands = []

    def run(argv, what, check=True):
        commands.append([str(a) for a in argv])
        return real_run(argv, what, check=check)
    monkeypatch.setattr(drv.transport, "run", run)
    result = drv.replica_update(pool_a, pool_b, share, replica)
    assert result["incremental"] is True and replica["base"] == 2
    shows = [c for c in commands if c[:3] == ["btrfs", "subvolume", "show"]]
    assert len(shows) == 4, shows
    instance = drv.instance_path(pool_b, "s")
    with open(os.path.join(instance, "data"), "rb") as handle:
        assert handle.read() == b"second"
    placed, point = drv.show(instance), drv.show(os.path.join(drv.replication_dir(pool_b, share), drv.point_name(2)))
    assert placed["readonly"] and placed["parent_uuid"] == point["uuid"]


def test_real_staging_folder_is_removed_with_what_a_killed_writer_left(real):
    """A migration killed while it wrote its progress file leaves the atomic write's temporary file in
    the staging folder; the cleanup removes it with the rest (it used to stop on the folder not being
    empty, which also left the source's snapshots behind)."""
    drv, pool_a, dummy = real
    share = {"name": "s", "migration": {"id": "0f1e2d3c-mig"}}
    folder = drv.staging_dir(pool_a, share)
    os.makedirs(folder)
    for name in ("progress.json", ".tmp.4242.0123456789ab"):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"{}")
    subprocess.run(["btrfs", "subvolume", "create", os.path.join(folder, "snap-0")], check=True, capture_output=True)
    assert drv._remove_staging(pool_a, share) is True  # pylint: disable=protected-access
    assert not os.path.exists(folder)
