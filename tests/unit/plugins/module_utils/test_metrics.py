"""Unit tests for plugins/module_utils/metrics.py: the node_exporter textfiles of real pools in a
temporary folder, rewritten as real shares are created and migrated (posix driver)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest
from mobility_helpers import RULE, Env, backend_spec, populate_share

from ansible_collections.storage.mobility.plugins.module_utils import common, metrics, states
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.volume import LocalVolumeManager
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress

SERIES = re.compile(r'^(storage_mobility_[a-z_]+)(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+)$')


def write(env, folder):
    ctx = env.ctx()
    return metrics.write_pool_metrics(ctx, str(folder), ShareManager(ctx).view)


def parse(path):
    """{(name, share): (labels, value)} of a textfile, checking its format line by line."""
    found, declared = {}, set()
    with open(path) as handle:
        text = handle.read()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        match = SERIES.match(line)
        assert match, "not a textfile series: %r" % line
        name, labels, value = match.groups()
        assert name in declared, "%s comes before its HELP and TYPE" % name
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', labels or ""))
        key = (name, labels.get("share") or labels.get("volume"))
        if "replica" in labels:
            key += (labels["replica"],)
        assert key not in found, "two series of %s for %s" % key[:2]
        found[key] = (labels, float(value))
    return found


def test_each_pool_file_lists_the_shares_whose_record_it_holds_and_follows_a_migration(tmp_path):
    env = Env(tmp_path)
    folder = tmp_path / "textfiles"
    folder.mkdir()
    env.create_share("s1", rules=[RULE])
    env.create_share("s2", pool=env.B, rules=[RULE])
    assert write(env, folder) == []
    file_a = folder / metrics.file_name(PoolAddress.split(env.A))
    file_b = folder / metrics.file_name(PoolAddress.split(env.B))
    assert sorted(os.listdir(folder)) == sorted([file_a.name, file_b.name])
    assert file_a.name == "storage_mobility_localhost_be1_a.prom"
    assert oct(os.stat(file_a).st_mode & 0o777) == "0o644"
    a = parse(file_a)
    labels, value = a[("storage_mobility_share_info", "s1")]
    assert value == 1 and labels["status"] == states.AVAILABLE and labels["host"] == env.A
    assert labels["id"] == env.read_record(env.A, "s1")["id"] and labels["task_state"] == ""
    assert a[("storage_mobility_share_failures", "s1")][1] == 0
    assert a[("storage_mobility_share_busy", "s1")][1] == 0
    assert ("storage_mobility_share_last_success_timestamp_seconds", "s1") not in a
    assert ("storage_mobility_share_info", "s2") not in a
    assert ("storage_mobility_share_info", "s2") in parse(file_b)
    assert abs(a[("storage_mobility_metrics_written_timestamp_seconds", None)][1] - time.time()) < 60

    before = time.time()
    env.migrations().start("s1", env.B, {})
    env.migrations().complete("s1")
    assert write(env, folder) == []
    assert ("storage_mobility_share_info", "s1") not in parse(file_a)
    b = parse(file_b)
    labels, _value = b[("storage_mobility_share_info", "s1")]
    assert labels["host"] == env.B and labels["task_state"] == states.MIGRATION_SUCCESS
    assert b[("storage_mobility_share_progress_percent", "s1")][1] == 100
    assert before - 1 <= b[("storage_mobility_share_last_success_timestamp_seconds", "s1")][1] <= time.time() + 1
    assert [n for n in os.listdir(folder) if not n.endswith(".prom")] == []


def test_a_stale_copy_of_a_record_is_not_counted_twice(tmp_path):
    env = Env(tmp_path)
    folder = tmp_path / "textfiles"
    folder.mkdir()
    env.create_share("s1", rules=[RULE])
    env.migrations().start("s1", env.B, {})
    env.migrations().complete("s1")
    # What a switchover leaves for a moment: the source pool still holds an older revision.
    stale = env.read_record(env.B, "s1")
    stale["revision"] -= 3
    stale["host"] = env.A
    with open(env.record_path(env.A, "s1"), "w") as handle:
        json.dump(stale, handle)
    write(env, folder)
    assert ("storage_mobility_share_info", "s1") not in parse(folder / "storage_mobility_localhost_be1_a.prom")
    assert ("storage_mobility_share_info", "s1") in parse(folder / "storage_mobility_localhost_be1_b.prom")


def test_failures_count_each_entry_into_migration_error(tmp_path):
    env = Env(tmp_path)
    folder = tmp_path / "textfiles"
    folder.mkdir()
    env.create_share("s1", rules=[RULE])
    for task_state in (states.MIGRATION_ERROR, states.MIGRATION_ERROR, None, states.MIGRATION_ERROR):
        env.edit("s1", task_state=task_state)
    write(env, folder)
    assert parse(folder / "storage_mobility_localhost_be1_a.prom")[("storage_mobility_share_failures", "s1")][1] == 2


def test_bytes_and_rate_come_from_the_live_copy_then_the_record_then_a_verified_copy():
    record = {"task_state": states.DATA_COPYING_IN_PROGRESS, "history": [],
              "progress": {"bytes_sent": 10, "bytes_total": 40}, "migration": {"copy": {"bytes": 99}}}
    live = {"copy_progress": {"bytes_done": 5, "bytes_total": 50, "rate_bytes_per_s": 7}, "total_progress": 10}
    figures = metrics.share_figures(live, record)
    assert (figures["share_bytes_done"], figures["share_bytes_total"], figures["share_rate_bytes_per_second"]) == (5, 50, 7)
    assert figures["share_busy"] == 1 and figures["share_progress_percent"] == 10
    figures = metrics.share_figures({}, record)
    assert (figures["share_bytes_done"], figures["share_bytes_total"]) == (10, 40)
    assert "share_rate_bytes_per_second" not in figures
    del record["progress"]
    figures = metrics.share_figures({}, record)
    assert (figures["share_bytes_done"], figures["share_bytes_total"]) == (99, 99)


def test_label_values_are_escaped_and_metrics_grouped_under_one_help_line():
    rows = [({"share": 's"1', "id": "x\\y", "host": "h\nz"}, {"status": "available", "task_state": None},
             {"share_info": 1, "share_failures": 0}),
            ({"share": "s2", "id": "2", "host": "h"}, {"status": "error", "task_state": None},
             {"share_info": 1, "share_failures": 3})]
    text = metrics.render(rows, now=1700000000.5)
    assert 'share="s\\"1"' in text and 'id="x\\\\y"' in text and 'host="h\\nz"' in text
    assert text.count("# TYPE storage_mobility_share_failures gauge") == 1
    lines = text.splitlines()
    help_at = lines.index("# TYPE storage_mobility_share_failures gauge")
    assert lines[help_at + 1].startswith("storage_mobility_share_failures{") and lines[help_at + 2].endswith(" 3")
    assert lines[-1] == "storage_mobility_metrics_written_timestamp_seconds 1700000000.5"


def test_every_metric_is_listed_in_docs_events_md():
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "docs", "events.md")).read()
    for name, kind, _help in metrics.METRICS:
        assert "`storage_mobility_%s`" % name in docs, name


def test_a_folder_that_cannot_be_written_is_a_warning(tmp_path):
    env = Env(tmp_path)
    env.create_share("s1", rules=[RULE])
    warnings = write(env, tmp_path / "missing")
    assert len(warnings) == 2 and all("was not written" in w and "missing" in w for w in warnings)
    shutil.rmtree(tmp_path / "pools" / "localhost-be1" / "b")
    folder = tmp_path / "textfiles"
    folder.mkdir()
    assert write(env, folder) == []
    assert os.listdir(folder) == ["storage_mobility_localhost_be1_a.prom"]


def test_replicas_have_their_state_lag_last_update_and_rpo_in_the_file_of_the_active_pool(tmp_path):
    env = Env(tmp_path, [backend_spec(tmp_path / "pools", pools=("a", "b"), replication_domain="d1")])
    folder = tmp_path / "textfiles"
    folder.mkdir()
    env.shares().present("s1", env.A, 1, "NFS", "rep", {"replication_type": "readable", "rpo_seconds": "60"}, [RULE])
    populate_share(env.share_path(env.A, "s1"))
    replica = LocalReplicaManager(env.ctx()).present("s1", pool=env.B)["replica"]
    assert write(env, folder) == []
    a = parse(folder / "storage_mobility_localhost_be1_a.prom")
    record = env.read_record(env.A, "s1")
    active = [r["id"] for r in record["replicas"] if r["replica_state"] == "active"][0]
    labels, value = a[("storage_mobility_share_replica_info", "s1", active)]
    assert value == 1 and labels["replica_state"] == "active" and labels["replica_host"] == env.A
    assert ("storage_mobility_share_replica_lag_seconds", "s1", active) not in a
    labels, _value = a[("storage_mobility_share_replica_info", "s1", replica["id"])]
    assert (labels["replica_state"], labels["replica_host"], labels["host"]) == ("in_sync", env.B, env.A)
    assert 0 <= a[("storage_mobility_share_replica_lag_seconds", "s1", replica["id"])][1] < 60
    assert a[("storage_mobility_share_replica_last_sync_timestamp_seconds", "s1", replica["id"])][1] == \
        pytest.approx([r for r in record["replicas"] if r["id"] == replica["id"]][0]["last_sync_epoch"], abs=0.01)
    assert a[("storage_mobility_share_replica_last_update_bytes", "s1", replica["id"])][1] == \
        replica["last_update"]["bytes"] > 0
    assert ("storage_mobility_share_replica_last_update_seconds", "s1", replica["id"]) in a
    assert a[("storage_mobility_share_replica_past_rpo", "s1", replica["id"])][1] == 0
    assert ("storage_mobility_share_replica_info", "s1", replica["id"]) not in parse(
        folder / "storage_mobility_localhost_be1_b.prom")

    def age(record):
        for one in record["replicas"]:
            if one["id"] == replica["id"]:
                one["last_sync_epoch"] -= 120
    env.edit("s1", **{"_": age})
    write(env, folder)
    a = parse(folder / "storage_mobility_localhost_be1_a.prom")
    assert a[("storage_mobility_share_replica_past_rpo", "s1", replica["id"])][1] == 1
    assert a[("storage_mobility_share_replica_lag_seconds", "s1", replica["id"])][1] >= 120


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img (qemu-utils, scripts/setup.sh)")
def test_volumes_have_their_status_and_running_migration_in_the_file_of_their_pool(tmp_path, monkeypatch):
    ctx = Context([backend_spec(tmp_path, name="vb", driver="file", pools=("a", "b"))])
    folder = tmp_path / "textfiles"
    folder.mkdir()
    volumes = LocalVolumeManager(ctx)
    volumes.present("v1", size=4, pool="localhost@vb#a")
    # the hook of every module run: a run with volume backends only writes the volume pools' files
    assert common.event_warnings(ctx, str(folder)) == []
    assert sorted(os.listdir(folder)) == ["storage_mobility_localhost_vb_a.prom", "storage_mobility_localhost_vb_b.prom"]
    a = parse(folder / "storage_mobility_localhost_vb_a.prom")
    labels, value = a[("storage_mobility_volume_info", "v1")]
    assert value == 1 and (labels["status"], labels["migration_status"], labels["host"]) == ("available", "", "localhost@vb#a")
    assert ("storage_mobility_volume_migration_bytes_done", "v1") not in a
    assert ("storage_mobility_volume_info", "v1") not in parse(folder / "storage_mobility_localhost_vb_b.prom")

    record, pool, _stale = volumes._load("v1")
    record["migration_status"] = "migrating"
    record["migration"] = {"mechanism": "host_copy", "phase": "copying", "destination": "localhost@vb#b",
                           "bytes_total": 4 * 1024 ** 3, "copy_started": 1000.0}
    volumes.repo.save(record, pool)
    monkeypatch.setattr(volumes.driver(pool), "copy_state", lambda *a: {"state": "running", "percent": 25.0})
    monkeypatch.setattr(volumes, "clock", lambda: 1010.0)
    assert metrics.write_volume_metrics(str(folder), volumes) == []
    a = parse(folder / "storage_mobility_localhost_vb_a.prom")
    assert a[("storage_mobility_volume_info", "v1")][0]["migration_status"] == "migrating"
    assert a[("storage_mobility_volume_migration_bytes_done", "v1")][1] == 1024 ** 3
    assert a[("storage_mobility_volume_migration_bytes_total", "v1")][1] == 4 * 1024 ** 3
    assert a[("storage_mobility_volume_migration_rate_bytes_per_second", "v1")][1] == 1024 ** 3 // 10

    # a copier that cannot be read leaves the volume out with a warning, the file is still written
    monkeypatch.setattr(volumes.driver(pool), "copy_state", lambda *a: 1 / 0)
    warnings = metrics.write_volume_metrics(str(folder), volumes)
    assert len(warnings) == 1 and "Metrics of volume v1 in pool localhost@vb#a were left out" in warnings[0]
    assert ("storage_mobility_volume_info", "v1") not in parse(folder / "storage_mobility_localhost_vb_a.prom")
