"""The evacuation playbooks end to end on local pools (docs/evacuation.md): playbooks/evacuate_pool.yml
plans the evacuation of pool alpha with storage.mobility.migration_plan, runs phase 1 of every share
on the data nodes (localhost, or two inventory hosts dn1 and dn2 that both run here), prints the
summary table, and resumes on a rerun. The limits per data node and per storage host are checked on
the data copy jobs' own reports (started_at and finished_at of every job), the loss of a data node by
killing the controller and that node's copy workers in the middle of a copy.

As root the pools are an ext4 and an xfs image (hostmig_lab.Lab), so every move is host-assisted and
the data mover copies and verifies it for real.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import datetime
from itertools import combinations

import pytest

from hostmig_lab import (ALPHA, BETA, PLAYBOOKS, alive, is_root, opened_lab, processes_naming, read_json, tree_tool,
                         wait_until, write_big_file)

pytestmark = pytest.mark.integration

EVACUATE = PLAYBOOKS / "evacuate_pool.yml"
SHARES = ("ev1", "ev2", "ev3")


@pytest.fixture
def lab(tmp_path, collections_path):
    if not is_root():
        pytest.skip("needs root: the pools are loop-mounted ext4 and xfs images so that the moves are host-assisted")
    with opened_lab(tmp_path, collections_path) as the_lab:
        yield the_lab


def summary_rows(out: str) -> dict:
    """{share: [columns]} of the last summary table printed (a list of lines, which the callback may wrap)."""
    block = out[out.rfind("TASK [Summary]"):]
    block = block[:min(i for i in (block.find("\nTASK [", 1), block.find("PLAY RECAP"), len(block)) if i > 0)]
    rows = {}
    for entry in re.split(r"\n\s*- ", block)[1:]:
        line = " ".join(entry.split()).strip("\"',")
        name, _sep, rest = line.partition(" | ")
        if name != "share" and rest:
            rows[name] = [c.strip() for c in rest.split("|")]
    return rows


def test_evacuate_pool_runs_phase_1_for_every_share_and_a_rerun_resumes(lab):
    """One share (ev3) cannot start: foreign data sits where its destination instance would go. The
    others are copied, the summary names ev3's error, and the run fails naming it; once the
    foreign data is gone a rerun moves ev3 without copying the others again."""
    lab.create_shares(*SHARES)
    manifests = {s: lab.fill_plain(s, files=10 + 5 * i) for i, s in enumerate(SHARES)}
    extra = {"source": ALPHA, "destinations": [BETA], "headroom": 0.0, "plan_name": "evac-alpha",
             "mobility_poll_seconds": 1}
    foreign = lab.share_path("ev3", "beta")
    foreign.mkdir(parents=True)
    (foreign / "not-yours.txt").write_text("data this collection does not manage\n")
    failed = lab.run(EVACUATE, extra)
    assert failed.rc != 0, failed
    assert "Failed: ev3 (errors in the summary above)" in failed.out, failed
    rows = summary_rows(failed.out)
    assert sorted(rows) == sorted(SHARES), failed
    assert rows["ev3"][7] != "-" and rows["ev1"][7] == "-" and rows["ev2"][7] == "-", rows
    assert (foreign / "not-yours.txt").is_file(), "the failed start touched data it does not own"
    assert tree_tool.manifest(str(lab.share_path("ev3"))) == manifests["ev3"]
    for share in ("ev1", "ev2"):
        assert lab.record(share)["task_state"] == "data_copying_completed", (share, failed)
    copied_first = {s: lab.migration_id(s) for s in ("ev1", "ev2")}

    (foreign / "not-yours.txt").unlink()
    foreign.rmdir()
    run = lab.run(EVACUATE, extra)
    assert run.rc == 0, run
    assert {s: lab.migration_id(s) for s in ("ev1", "ev2")} == copied_first
    assert "Copy and verify ev3" in run.out and "Copy and verify ev1" not in run.out, run
    for share in SHARES:
        record = lab.record(share)
        assert record["task_state"] == "data_copying_completed", (share, record["task_state"], run)
        assert record["migration"]["mechanism"] == "host"
        assert record["migration"]["destination_pool"] == BETA
        copied = lab.pools["beta"] / "shares" / share
        assert tree_tool.manifest(str(copied)) == manifests[share], share
        # The source is untouched until phase 2.
        assert tree_tool.manifest(str(lab.share_path(share))) == manifests[share]
    rows = summary_rows(run.out)
    assert sorted(rows) == sorted(SHARES), run
    for share in SHARES:
        assert rows[share][0] == "data_copying_completed" and rows[share][5] == "localhost", rows[share]
        assert rows[share][7] == "-" and rows[share][3] != "not known yet", rows[share]
        assert rows[share][4].endswith("MiB/s") and re.fullmatch(r"slot 1, copy [1-3]", rows[share][6]), rows[share]
    stored = json.loads((lab.pools["alpha"] / ".mobility" / "plans" / "evac-alpha.json").read_text())
    assert sorted(m["share"] for m in stored["plan"]["moves"]) == sorted(SHARES)

    # A rerun follows the stored plan and finds every copy done: nothing is copied again.
    ids = {s: lab.migration_id(s) for s in SHARES}
    again = lab.run(EVACUATE, extra)
    assert again.rc == 0, again
    assert {s: lab.migration_id(s) for s in SHARES} == ids
    assert sorted(summary_rows(again.out)) == sorted(SHARES)
    assert "Copy and verify ev" not in again.out, "a rerun after phase 1 starts no copy"


# -- several copies per data node, a limit per storage host, a data node lost ---------------------

BWLIMIT_KIB = 256   # rsync --bwlimit of every copy: a 2 MiB share copies in about 8 s


def slow_vars(plan: str, **extra) -> dict:
    variables = {"source": ALPHA, "destinations": [BETA], "headroom": 0.0, "plan_name": plan,
                 "mobility_poll_seconds": 1, "data_mover_rsync_options": [f"--bwlimit={BWLIMIT_KIB}"]}
    variables.update(extra)
    return variables


def fill_big(lab, shares, megabytes: int) -> dict:
    manifests = {}
    for share in shares:
        manifests[share] = lab.fill_plain(share, files=5)
        write_big_file(lab.share_path(share) / "big.bin", megabytes)
        manifests[share] = tree_tool.manifest(str(lab.share_path(share)))
    return manifests


def two_data_nodes(lab, nodes=("dn1", "dn2")) -> None:
    """Rewrite the lab's inventory: localhost for the controller's plays, the data nodes as their own
    inventory hosts (both run on this machine, as a data node with its own name would)."""
    inventory = json.loads(lab.inventory.read_text())
    local = dict(inventory["all"]["hosts"]["localhost"])
    for node in nodes:
        inventory["all"]["hosts"][node] = dict(local)
    inventory["all"]["children"]["data_nodes"] = {"hosts": dict((node, {}) for node in nodes)}
    lab.inventory.write_text(json.dumps(inventory, indent=2) + "\n", encoding="utf-8")


def unreachable(lab, node: str) -> None:
    """Keep ``node`` in the inventory's data_nodes, but at an address where nothing answers (a dead
    host): ssh to a loopback port with no listener is refused at once."""
    inventory = json.loads(lab.inventory.read_text())
    inventory["all"]["hosts"][node] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.254", "ansible_port": 9,
                                       "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes"}
    lab.inventory.write_text(json.dumps(inventory, indent=2) + "\n", encoding="utf-8")


def job_interval(lab, share: str) -> tuple[float, float]:
    """When the share's phase-1 copy job ran, from the job's own report (started_at, finished_at)."""
    report = read_json(lab.job_folder(lab.migration_id(share)) / "report.json")
    assert report and report.get("state") == "completed", (share, report)
    return tuple(datetime.fromisoformat(report[key]).timestamp() for key in ("started_at", "finished_at"))


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Seconds two intervals share (0 or less when one ended before the other began)."""
    return min(a[1], b[1]) - max(a[0], b[0])


def stored_copies(lab, plan: str) -> dict:
    return json.loads((lab.pools["alpha"] / ".mobility" / "plans" / f"{plan}.json").read_text())["copies"]


def assert_phase1_done(lab, shares, manifests) -> None:
    for share in shares:
        record = lab.record(share)
        assert record["task_state"] == "data_copying_completed", (share, record["task_state"])
        assert tree_tool.manifest(str(lab.pools["beta"] / "shares" / share)) == manifests[share], share
        assert tree_tool.manifest(str(lab.share_path(share))) == manifests[share], share


def test_two_copies_at_once_on_one_data_node_overlap_in_time(lab):
    """copies_per_data_node=2 on one data node: each copy is the first of a lane (slots 1 and 2) and
    their jobs ran at the same time; copied one after the other they would share no second."""
    shares = ("par1", "par2")
    lab.create_shares(*shares)
    manifests = fill_big(lab, shares, 2)
    # 2 MiB at 64 KiB/s: each copy takes about 32 s, far more than starting the second copy takes
    # (a few seconds of tasks, over ten on a CI machine three times slower than a quiet one).
    run = lab.run(EVACUATE, slow_vars("evac-par", copies_per_data_node=2,
                                      data_mover_rsync_options=[f"--bwlimit={BWLIMIT_KIB // 4}"]))
    assert run.rc == 0, run
    assert_phase1_done(lab, shares, manifests)
    first, second = (job_interval(lab, s) for s in shares)
    assert min(first[1] - first[0], second[1] - second[0]) > 10, (first, second)   # slowed, as meant
    assert overlap(first, second) > 0, ("the two copies did not run at the same time", first, second)
    copies = stored_copies(lab, "evac-par")
    assert copies["copies_per_data_node"] == 2 and copies["mode"] == "lanes" and copies["rounds"] == []
    assert sorted((a["data_node"], a["slot"]) for a in copies["assignments"]) == [("localhost", 1), ("localhost", 2)]
    rows = summary_rows(run.out)
    assert sorted(rows[s][6] for s in shares) == ["slot 1, copy 1", "slot 2, copy 1"], rows
    assert all(rows[s][5] == "localhost" and rows[s][4].endswith("MiB/s") for s in shares), rows


def test_a_lane_starts_its_next_copy_without_waiting_for_the_other_lanes(lab):
    """Two data nodes of one slot, a big share and two small ones: longest first, the big one goes to
    dn1 and both small ones to dn2, one after the other. In rounds the second small copy would wait
    for the big one to end; in lanes it starts as soon as the first small one ended, while the big
    one still copies."""
    shares = ("lane-big", "lane-s1", "lane-s2")
    lab.create_shares(*shares)
    manifests = fill_big(lab, ("lane-big",), 4)
    manifests.update(fill_big(lab, ("lane-s1", "lane-s2"), 1))
    two_data_nodes(lab)
    # At 64 KiB/s: 4 MiB in about 64 s, 1 MiB in about 16 s.
    run = lab.run(EVACUATE, slow_vars("evac-lanes", data_mover_rsync_options=[f"--bwlimit={BWLIMIT_KIB // 4}"]))
    assert run.rc == 0, run
    assert_phase1_done(lab, shares, manifests)
    copies = stored_copies(lab, "evac-lanes")
    lanes = {lane["data_node"]: lane["shares"] for lane in copies["lanes"]}
    assert lanes["dn1"] == ["lane-big"] and sorted(lanes["dn2"]) == ["lane-s1", "lane-s2"], copies
    order = ["lane-big"] + lanes["dn2"]
    big, small1, small2 = (job_interval(lab, s) for s in order)
    assert small1[1] <= small2[0], ("dn2's lane ran its copies at once", small1, small2)
    assert small2[0] < big[1] and overlap(small2, big) > 0, ("the lane waited for the other lane", big, small2)
    rows = summary_rows(run.out)
    assert [rows[s][6] for s in order] == ["slot 1, copy 1", "slot 1, copy 1", "slot 1, copy 2"], rows
    assert [rows[s][5] for s in order] == ["dn1", "dn2", "dn2"], rows


def test_a_storage_host_limit_of_one_keeps_the_copies_apart_in_time(lab):
    """Two data nodes of two slots each could run all three copies at once; every copy reads from and
    writes to storage host stor1, so copies_per_storage_host=1 runs them one after another."""
    shares = ("lim1", "lim2", "lim3")
    lab.create_shares(*shares)
    manifests = fill_big(lab, shares, 1)
    two_data_nodes(lab)
    run = lab.run(EVACUATE, slow_vars("evac-lim", copies_per_data_node=2, copies_per_storage_host=1))
    assert run.rc == 0, run
    assert_phase1_done(lab, shares, manifests)
    copies = stored_copies(lab, "evac-lim")
    assert copies["mode"] == "rounds" and [len(r) for r in copies["rounds"]] == [1, 1, 1], copies["rounds"]
    # The rounds take turns on dn1 and dn2: what keeps them apart is the wait between rounds on
    # every data node, not one node's order.
    assert [r[0]["data_node"] for r in copies["rounds"]] == ["dn1", "dn2", "dn1"], copies["rounds"]
    intervals = {s: job_interval(lab, s) for s in shares}
    for a, b in combinations(shares, 2):
        assert overlap(intervals[a], intervals[b]) <= 0, ("copies of one storage host ran together", a, b, intervals)
    rows = summary_rows(run.out)
    assert sorted(rows[s][6] for s in shares) == ["round 1, slot 1", "round 2, slot 1", "round 3, slot 1"], rows
    # A bad limit is refused by name before anything changes: the stored plan stays as it was.
    before = (lab.pools["alpha"] / ".mobility" / "plans" / "evac-lim.json").read_text()
    bad = lab.run(EVACUATE, slow_vars("evac-lim", copies_per_data_node=2, copies_per_storage_host=0))
    assert bad.rc != 0 and "Invalid copies_per_storage_host 0: a positive integer" in bad.out, bad
    assert (lab.pools["alpha"] / ".mobility" / "plans" / "evac-lim.json").read_text() == before
    assert "Start the copy of" not in bad.out, bad


def test_a_data_node_lost_during_a_copy_leaves_its_shares_to_the_other_on_rerun(lab):
    """dn1 and dn2 copy one share each. In the middle of the copies the controller is killed and so
    are dn1's copy workers (dn1 is gone: it no longer answers); a rerun leaves dn1 out and holds its
    share until a rerun confirms dn1 lost, which finishes both shares on dn2."""
    shares = ("lost1", "lost2")
    lab.create_shares(*shares)
    manifests = fill_big(lab, shares, 3)
    two_data_nodes(lab)
    # 3 MiB at 64 KiB/s: each copy takes about 48 s, so that both are still running once the second
    # has started, even when starting it takes a loaded machine many seconds.
    extra = slow_vars("evac-lost", data_mover_rsync_options=[f"--bwlimit={BWLIMIT_KIB // 4}"])
    proc, log = lab.spawn(EVACUATE, extra)
    try:
        def copying():
            jobs = {}
            for share in shares:
                record = lab.record(share) if lab.records(share) else {}
                job = (record.get("migration") or {}).get("copy_job") or {}
                status = lab.job_status(job["job_id"]) if job.get("job_id") else {}
                if status.get("state") != "running" or not alive(status.get("pid")):
                    return None
                jobs[job["data_node"]] = (share, job["job_id"])
            return jobs if len(jobs) == 2 else None
        jobs = wait_until(copying, "both copies running, one on each data node", attempts=1200)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    lost_share, lost_job = jobs["dn1"]
    kept_share, kept_job = jobs["dn2"]
    victims = processes_naming(lab.job_folder(lost_job), f"/tmp/{lost_job}")
    assert victims, "no worker of dn1's copy to kill"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not processes_naming(lab.job_folder(lost_job), f"/tmp/{lost_job}"), "dn1's workers gone")
    assert lab.record(lost_share)["task_state"] != "data_copying_completed"
    interrupted = {s: lab.migration_id(s) for s in shares}

    unreachable(lab, "dn1")
    # dn1 no longer answers, but the controller cannot tell a dead node from one cut off from it
    # that still copies: the rerun leaves dn1 out, holds its share, copies nothing for it and fails
    # naming it.
    held = lab.run(EVACUATE, extra)
    assert held.rc != 0 and f"Held: {lost_share}" in held.out and "lost_data_nodes" in held.out, held
    assert "Data nodes that cannot be reached, left out of this run: dn1" in held.out, held
    assert f"Copy and verify {lost_share}" not in held.out and f"Start the copy of {lost_share}" not in held.out, held
    job = lab.record(lost_share)["migration"]["copy_job"]
    assert job["data_node"] == "dn1" and job["job_id"] == lost_job, job
    copies = stored_copies(lab, "evac-lost")
    assert [h["share"] for h in copies["held"]] == [lost_share] and copies["reason"] == "data nodes gone: dn1", copies
    assert summary_rows(held.out)[lost_share][7].startswith("held: its copy job"), held

    # The operator confirms dn1 lost (still in the inventory, still not answering): its share goes
    # to dn2.
    rerun = lab.run(EVACUATE, dict(extra, lost_data_nodes=["dn1"]))
    assert rerun.rc == 0, rerun
    assert_phase1_done(lab, shares, manifests)
    assert {s: lab.migration_id(s) for s in shares} == interrupted, "the rerun resumed the same migrations"
    for share in shares:
        assert lab.record(share)["migration"]["copy_job"]["data_node"] == "dn2", share
    copies = stored_copies(lab, "evac-lost")
    assert copies["data_nodes"] == ["dn2"] and copies["reason"] == "lost data nodes confirmed: dn1", copies
    assert copies["held"] == [] and copies["lost_data_nodes"] == ["dn1"], copies
    assert set(a["data_node"] for a in copies["assignments"]) <= {"dn2"}
    rows = summary_rows(rerun.out)
    assert sorted(rows) == sorted(shares) and all(rows[s][5] == "dn2" for s in shares), rows
    assert f"Copy and verify {lost_share}" in rerun.out, rerun
    del kept_job, log
