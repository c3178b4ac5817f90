"""Unit tests for plugins/module_utils/managers/volume.py: the local volume service on driver file.

Real qemu-img on images in tmp_path (sparse, cheap); attachments and copies between filesystems
run in tests/integration/test_volume_file.py.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from mobility_helpers import backend_spec

from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.managers.volume import LocalVolumeManager
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits

needs_qemu = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img (qemu-utils, scripts/setup.sh)")

MIGRATE = dict(volume="v1", host="localhost@vb#b", cluster=None, force_host_copy=False, lock_volume=False,
               new_type=None, migration_policy=None)


@pytest.fixture
def ctx(tmp_path):
    made = Context([backend_spec(tmp_path, name="vb", driver="file", pools=("a", "b"))])
    made.waits = Waits(wait=True, timeout=30, sleep=1)
    return made


def record(tmp_path, pool, name):
    return json.loads((tmp_path / ("localhost-vb/%s/.mobility/volumes/%s.json" % (pool, name))).read_text())


def test_without_volume_backends_every_request_is_refused_naming_the_backend(tmp_path):
    manager = LocalVolumeManager(Context([backend_spec(tmp_path / "b", name="bt", driver="btrfs")]))
    expected = ("Cannot %s: volumes on the collection's own drivers (backend bt with driver btrfs) are not supported "
                "yet; volumes need a backend with driver cinder or file (declared drivers: btrfs)")
    cases = [
        (lambda: manager.run(dict(state="present", name="v1", size=1, volume_type=None, availability_zone=None,
                                  description=None)), "manage volume v1"),
        (lambda: manager.run(dict(state="absent", name="v1")), "manage volume v1"),
        (lambda: manager.run_info(dict(name=None)), "list volumes"),
        (manager.pools, "list volumes"),
        (lambda: manager.run_migrate(dict(MIGRATE, host="devhost@file2#file2")), "migrate volume v1"),
        (lambda: manager.run_migrate(dict(MIGRATE, host=None, new_type="gold")), "migrate volume v1"),
    ]
    for call, what in cases:
        with pytest.raises(InvalidRequest) as info:
            call()
        assert str(info.value) == expected % what


def test_conflicting_migration_options_are_refused_first(ctx):
    with pytest.raises(InvalidRequest, match="give host or cluster, not both"):
        LocalVolumeManager(ctx).run_migrate(dict(MIGRATE, cluster="c1@file1"))
    with pytest.raises(InvalidRequest, match="host, new_type belong to starting a migration"):
        LocalVolumeManager(ctx).run_migrate(dict(MIGRATE, new_type="gold", state="cancelled"))


@needs_qemu
def test_create_is_sparse_idempotent_and_recorded_with_its_journal(ctx, tmp_path):
    manager = LocalVolumeManager(ctx)
    with pytest.raises(InvalidRequest, match="give its pool .host@backend#pool., one of localhost@vb#a, localhost@vb#b"):
        manager.present("v1", size=1)
    with pytest.raises(InvalidRequest, match="driver file has no volume types"):
        manager.present("v1", size=1, volume_type="gold", pool="localhost@vb#a")
    created = manager.present("v1", size=2, pool="localhost@vb#a", format="qcow2")
    assert created["changed"] and created["volume"]["status"] == "available"
    stored = record(tmp_path, "a", "v1")
    image = tmp_path / "localhost-vb" / "a" / ("volume-%s" % stored["id"])
    assert stored["format"] == "qcow2" and stored["host"] == "localhost@vb#a" and image.is_file()
    assert image.stat().st_blocks * 512 < 1024 * 1024, "nothing is written on creation"
    again = manager.present("v1", size=2, pool="localhost@vb#a")
    assert again["changed"] is False and again["actions"] == []
    lines = [json.loads(x) for x in (tmp_path / "localhost-vb/a/.mobility/events.jsonl").read_text().splitlines()]
    assert [(x["event"], x["old"], x["new"]) for x in lines] == [
        ("volume.status", None, "creating"), ("volume.status", "creating", "available")]


@needs_qemu
def test_check_mode_plans_and_writes_nothing(tmp_path):
    ctx = Context([backend_spec(tmp_path, name="vb", driver="file", pools=("a",))], check_mode=True)
    planned = LocalVolumeManager(ctx).present("v1", size=1)
    assert planned["changed"] and planned["actions"] == ["create volume v1 (1 GiB, raw) in localhost@vb#a"]
    assert planned["volume"]["status"] == "available"
    assert os.listdir(tmp_path / "localhost-vb" / "a") == []


@needs_qemu
def test_extend_grows_and_shrink_format_and_pool_changes_are_refused(ctx, tmp_path):
    manager = LocalVolumeManager(ctx)
    manager.present("v1", size=1, pool="localhost@vb#a")
    grown = manager.present("v1", size=3)
    assert grown["changed"] and grown["volume"]["size"] == 3
    assert grown["actions"] == ["extend volume v1 from 1 GiB to 3 GiB"]
    image = tmp_path / "localhost-vb" / "a" / ("volume-%s" % record(tmp_path, "a", "v1")["id"])
    assert image.stat().st_size == 3 * 1024 ** 3
    with pytest.raises(InvalidRequest, match="Cannot shrink volume v1 from 3 GiB to 2 GiB"):
        manager.present("v1", size=2)
    with pytest.raises(InvalidRequest, match="Cannot change the format of volume v1 from raw to qcow2"):
        manager.present("v1", format="qcow2")
    with pytest.raises(InvalidRequest, match="use volume_migrate"):
        manager.present("v1", pool="localhost@vb#b")
    assert record(tmp_path, "a", "v1")["size"] == 3


@needs_qemu
def test_a_rerun_after_a_crash_while_creating_converges(ctx, tmp_path, monkeypatch):
    manager = LocalVolumeManager(ctx)
    calls = []
    real = manager.driver(ctx.pool("localhost@vb#a")).create_volume

    def die_once(pool, volume):
        calls.append(volume["id"])
        raise KeyboardInterrupt("the run is killed while the image is created")

    monkeypatch.setattr(manager.driver(ctx.pool("localhost@vb#a")), "create_volume", die_once)
    with pytest.raises(KeyboardInterrupt):
        manager.present("v1", size=1, pool="localhost@vb#a")
    assert record(tmp_path, "a", "v1")["status"] == "creating"
    monkeypatch.setattr(manager.driver(ctx.pool("localhost@vb#a")), "create_volume", real)
    done = LocalVolumeManager(ctx).present("v1", size=1, pool="localhost@vb#a")
    assert done["changed"] and done["volume"]["status"] == "available" and done["volume"]["id"] == calls[0]


@needs_qemu
def test_driver_assisted_migration_renames_and_a_rerun_is_no_change(ctx, tmp_path):
    manager = LocalVolumeManager(ctx)
    manager.present("v1", size=1, pool="localhost@vb#a")
    vid = record(tmp_path, "a", "v1")["id"]
    source = tmp_path / "localhost-vb" / "a" / ("volume-%s" % vid)
    inode = source.stat().st_ino
    with pytest.raises(InvalidRequest, match="it is already there"):
        manager.run_migrate(dict(MIGRATE, host="localhost@vb#a"))
    moved = manager.run_migrate(MIGRATE)
    assert moved["changed"] and moved["migration"]["mechanism"] == "driver"
    assert moved["volume"]["host"] == "localhost@vb#b" and moved["volume"]["migration_status"] == "success"
    target = tmp_path / "localhost-vb" / "b" / ("volume-%s" % vid)
    assert target.stat().st_ino == inode and not source.exists()
    assert not (tmp_path / "localhost-vb/a/.mobility/volumes/v1.json").exists()
    assert manager.run_migrate(MIGRATE)["changed"] is False
    assert manager.info("v1")[0]["host"] == "localhost@vb#b"


@needs_qemu
def test_a_volume_held_by_another_run_is_busy_and_unknown_names_are_not_found(ctx):
    manager = LocalVolumeManager(ctx)
    manager.present("v1", size=1, pool="localhost@vb#a")
    with manager.repo.lock("v1", "a test"):
        with pytest.raises(Busy, match="Volume v1 is busy: another run holds its lock"):
            LocalVolumeManager(ctx).absent("v1")
    with pytest.raises(NotFound, match="Unknown volume 'nope'"):
        manager.attach("nope")
    assert manager.absent("v1")["changed"] and manager.absent("v1")["changed"] is False


def test_retype_and_cluster_are_refused_with_the_reason(ctx):
    manager = LocalVolumeManager(ctx)
    with pytest.raises(InvalidRequest, match="driver file has no volume types"):
        manager.run_migrate(dict(MIGRATE, host=None, new_type="gold"))
    with pytest.raises(InvalidRequest, match="driver file has no clusters"):
        manager.run_migrate(dict(MIGRATE, host=None, cluster="c1"))


@needs_qemu
def test_a_run_killed_between_the_rename_and_the_record_converges(ctx, tmp_path, monkeypatch):
    """The image is in the destination but the record still says the source: the rerun finishes."""
    manager = LocalVolumeManager(ctx)
    manager.present("v1", size=1, pool="localhost@vb#a")
    vid = record(tmp_path, "a", "v1")["id"]
    real_save = manager.repo.save

    def die_before_success(rec, pool, event=None):
        if event == "migration_success":
            raise KeyboardInterrupt("killed before the destination's record is written")
        return real_save(rec, pool, event)

    monkeypatch.setattr(manager.repo, "save", die_before_success)
    with pytest.raises(KeyboardInterrupt):
        manager.run_migrate(MIGRATE)
    assert record(tmp_path, "a", "v1")["migration_status"] == "migrating"
    assert (tmp_path / "localhost-vb" / "b" / ("volume-%s" % vid)).is_file()
    assert LocalVolumeManager(ctx).info("v1")[0]["migration"]["phase"] == "moving"
    done = LocalVolumeManager(ctx).run_migrate(MIGRATE)
    assert done["changed"] and done["volume"]["host"] == "localhost@vb#b"
    assert done["volume"]["migration_status"] == "success" and done["volume"]["status"] == "available"
    assert not (tmp_path / "localhost-vb/a/.mobility/volumes/v1.json").exists()


@needs_qemu
def test_progress_comes_from_the_copier_with_rate_and_eta(ctx, monkeypatch):
    manager = LocalVolumeManager(ctx)
    manager.present("v1", size=4, pool="localhost@vb#a")
    rec, pool, _stale = manager._load("v1")
    rec["migration_status"] = "migrating"
    rec["migration"] = {"mechanism": "host_copy", "phase": "copying", "destination": "localhost@vb#b",
                        "bytes_total": 4 * 1024 ** 3, "copy_started": 1000.0}
    monkeypatch.setattr(manager.driver(pool), "copy_state", lambda *a: {"state": "running", "percent": 25.0})
    monkeypatch.setattr(manager, "clock", lambda: 1010.0)
    progress = manager.progress(rec, pool)
    assert progress == {"bytes_done": 1024 ** 3, "bytes_total": 4 * 1024 ** 3, "percent": 25.0,
                        "rate_bytes_per_second": 1024 ** 3 // 10, "eta_seconds": 30, "copier": "running",
                        "seconds": 10.0}


@needs_qemu
def test_a_rename_the_filesystem_refuses_falls_back_to_a_verified_host_copy(ctx, tmp_path, monkeypatch):
    """Two mounts of one filesystem have one st_dev but rename(2) fails with EXDEV between them."""
    import errno

    manager = LocalVolumeManager(ctx)
    manager.present("v1", size=1, pool="localhost@vb#a")
    source = tmp_path / "localhost-vb" / "a" / ("volume-%s" % record(tmp_path, "a", "v1")["id"])
    with open(source, "r+b") as handle:
        handle.seek(5 * 1024 * 1024)
        handle.write(b"payload" * 1000)
    transport = manager.driver(ctx.pool("localhost@vb#a")).transport
    real_rename = transport.rename

    def exdev_for_images(a, b):
        if os.path.basename(a).startswith("volume-"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(a, b)

    monkeypatch.setattr(transport, "rename", exdev_for_images)
    monkeypatch.setattr(LocalVolumeManager, "sleep", staticmethod(lambda s: None))
    moved = manager.run_migrate(MIGRATE)
    assert moved["changed"] and moved["migration"]["mechanism"] == "host_copy", moved
    assert moved["volume"]["host"] == "localhost@vb#b" and moved["volume"]["migration_status"] == "success"
    target = tmp_path / "localhost-vb" / "b" / ("volume-%s" % record(tmp_path, "b", "v1")["id"])
    assert not source.exists() and target.read_bytes()[5 * 1024 * 1024:][:7000] == b"payload" * 1000
