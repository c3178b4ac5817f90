"""The evacuation playbooks end to end on local pools (docs/evacuation.md): playbooks/evacuate_pool.yml
plans the evacuation of pool alpha with storage.mobility.migration_plan, runs phase 1 of every share
on the data nodes (one here: localhost), prints the summary table, and resumes on a rerun.

As root the pools are an ext4 and an xfs image (hostmig_lab.Lab), so every move is host-assisted and
the data mover copies and verifies it for real.
"""

from __future__ import annotations

import json
import re

import pytest

from hostmig_lab import ALPHA, BETA, PLAYBOOKS, is_root, opened_lab, tree_tool

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
        assert rows[share][4].endswith("MiB/s") and rows[share][6].startswith("round "), rows[share]
    stored = json.loads((lab.pools["alpha"] / ".mobility" / "plans" / "evac-alpha.json").read_text())
    assert sorted(m["share"] for m in stored["plan"]["moves"]) == sorted(SHARES)

    # A rerun follows the stored plan and finds every copy done: nothing is copied again.
    ids = {s: lab.migration_id(s) for s in SHARES}
    again = lab.run(EVACUATE, extra)
    assert again.rc == 0, again
    assert {s: lab.migration_id(s) for s in SHARES} == ids
    assert sorted(summary_rows(again.out)) == sorted(SHARES)
    assert "Copy and verify ev" not in again.out, "a rerun after phase 1 starts no copy"
