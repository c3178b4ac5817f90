"""The maintenance window end to end on real pools (docs/evacuation.md): playbooks/evacuate_pool.yml
runs phase 1 of three shares, then playbooks/complete_ready_migrations.yml completes what fits in a
window shorter than the work and stops before the window's end.

As root the pools are an ext4 and an xfs image (hostmig_lab.Lab), so every move is host-assisted and
the final passes run on the data node (localhost) for real, slowed by rsync --bwlimit. The figures
are chosen so that the outcome does not depend on the machine's speed: each switchover is estimated
at SWITCHOVER s (given), the window is WINDOW s, so exactly one switchover fits (a second one never
fits once the first took any time), and "big" needs its changed megabytes at the bwlimit on top.
"""

from __future__ import annotations

import re
import time

import pytest

from hostmig_lab import ALPHA, BETA, PLAYBOOKS, is_root, opened_lab, read_json, tree_tool

pytestmark = pytest.mark.integration

EVACUATE = PLAYBOOKS / "evacuate_pool.yml"
WINDOW = PLAYBOOKS / "complete_ready_migrations.yml"
SMALL = ("small1", "small2")
SHARES = ("big",) + SMALL
PLAN = "night"
# Seconds: what a switchover round takes on a loaded machine stays below SWITCHOVER (a round took 117 s
# with a load average of 17 on two cores); WINDOW - SWITCHOVER is less than any real switchover, so a
# second one cannot fit. The run ends once nothing fits, so a long window costs no time.
SWITCHOVER = 240
WINDOW_SECONDS = 243
RATE = 20 * 1024  # bytes per second: the --bwlimit of the final passes (20 KiB/s), given as the rate
CHANGED_MB = 2


@pytest.fixture
def lab(tmp_path, collections_path):
    """Loop-mounted ext4 and xfs pools (root), so that every move is host-assisted. Not imported from
    test_evacuation: a test module's name is not unique here (tests/unit has a test_evacuation too)."""
    if not is_root():
        pytest.skip("needs root: the pools are loop-mounted ext4 and xfs images so that the moves are host-assisted")
    with opened_lab(tmp_path, collections_path) as the_lab:
        yield the_lab


def summary_rows(out: str) -> dict:
    """{share: [columns]} of the summary table (a list of lines, which the callback may wrap), and
    the window line under the key 'window'."""
    block = out[out.rfind("TASK [Summary]"):]
    block = block[:min(i for i in (block.find("\nTASK [", 1), block.find("PLAY RECAP"), len(block)) if i > 0)]
    rows = {}
    for entry in re.split(r"\n\s*- ", block)[1:]:
        line = " ".join(entry.split()).strip('\'",]}')
        if line.startswith("window: "):
            rows["window"] = line
            continue
        name, _sep, rest = line.partition(" | ")
        if name != "share" and rest:
            rows[name] = [c.strip() for c in rest.split("|")]
    return rows


def window_vars(**extra) -> dict:
    variables = {"plan_name": PLAN, "window_minutes": WINDOW_SECONDS / 60.0, "margin": 0, "margin_fraction": 0,
                 "switchover_seconds": SWITCHOVER, "mobility_poll_seconds": 1,
                 "rates": {"host": {"bytes_per_second": RATE, "seconds_per_file": 0, "fixed_seconds": 0}},
                 "data_mover_rsync_options": [f"--bwlimit={RATE // 1024}"]}
    variables.update(extra)
    return variables


def test_a_window_shorter_than_the_work_completes_what_fits_and_ends_on_time(lab):
    lab.create_shares(*SHARES)
    for share in SHARES:
        lab.fill_plain(share, files=6)
    phase1 = lab.run(EVACUATE, {"source": ALPHA, "destinations": [BETA], "headroom": 0.0, "plan_name": PLAN,
                                "mobility_poll_seconds": 1})
    assert phase1.rc == 0, phase1
    for share in SHARES:
        assert lab.record(share)["task_state"] == "data_copying_completed", share
    # Users of "big" wrote after its copy: its final pass has CHANGED_MB to copy at the bwlimit.
    (lab.share_path("big") / "written-after-phase-1.bin").write_bytes(b"w" * (CHANGED_MB << 20))
    before = {s: tree_tool.manifest(str(lab.share_path(s))) for s in SHARES}

    run = lab.run(WINDOW, window_vars())
    finished = time.time()
    assert run.rc == 0, run
    stored = read_json(lab.pools["alpha"] / ".mobility" / "windows" / f"{PLAN}.json")
    assert stored and stored["window_minutes"] == pytest.approx(WINDOW_SECONDS / 60.0), stored
    assert finished < stored["ends_epoch"], f"the run ended {finished - stored['ends_epoch']:.1f} s after the window\n{run}"

    records = {s: lab.record(s) for s in SHARES}
    completed = [s for s in SHARES if records[s]["task_state"] == "migration_success"]
    assert len(completed) == 1 and completed[0] in SMALL, ({s: r["task_state"] for s, r in records.items()}, run)
    done = completed[0]
    other = [s for s in SMALL if s != done][0]
    assert records[done]["host"] == BETA and not lab.share_path(done).exists()
    assert tree_tool.manifest(str(lab.share_path(done, "beta"))) == before[done]
    for share in ("big", other):
        assert records[share]["task_state"] == "data_copying_completed", share
        assert tree_tool.manifest(str(lab.share_path(share))) == before[share], f"the source of {share} changed"

    rows = summary_rows(run.out)
    assert rows[done][0] == "completed" and rows[done][1] == "migration_success", rows
    assert rows[other][0] == "left" and rows[other][4].startswith(f"needs {SWITCHOVER} s with the margin"), rows
    assert "left in the window" in rows[other][4], rows
    big = re.match(r"needs (\d+) s with the margin \(estimate (\d+) s\)", rows["big"][4])
    assert rows["big"][0] == "left" and big, rows
    # What changed since the copy was measured on the storage host: its megabytes at the given rate.
    assert int(big.group(2)) >= SWITCHOVER + (CHANGED_MB << 20) // RATE, rows["big"]
    assert rows["window"].startswith("window: ") and " s used, " in rows["window"], rows
    assert "switchover(s) failed" not in run.out

    # A rerun (after a crash, say) follows the stored window: the same end, and nothing fits now.
    again = lab.run(WINDOW, window_vars())
    assert again.rc == 0, again
    assert read_json(lab.pools["alpha"] / ".mobility" / "windows" / f"{PLAN}.json") == stored
    assert {s: lab.record(s)["task_state"] for s in ("big", other)} == {
        "big": "data_copying_completed", other: "data_copying_completed"}
    rows = summary_rows(again.out)
    assert rows[done][0] == "left" and rows[done][4] == "already completed (migration_success)", rows
    assert rows[other][0] == "left" and rows[other][4].startswith(("needs", "the window ended")), rows


def test_bad_window_requests_fail_naming_the_problem_and_change_nothing(lab):
    lab.create_shares("s1")
    past = lab.run(WINDOW, {"shares": ["s1"], "window_end": "2020-01-01T00:00:00Z"})
    assert past.rc != 0 and "Invalid window_end 2020-01-01T00:00:00Z: it is" in past.out, past
    unknown = lab.run(WINDOW, {"shares": ["s1", "ghost"], "window_minutes": 5})
    assert unknown.rc != 0 and "Unknown share 'ghost'" in unknown.out, unknown
    assert not (lab.pools["alpha"] / ".mobility" / "windows").exists()
    record = lab.record("s1")
    assert record.get("task_state") is None and [i["pool"] for i in record["instances"]] == [ALPHA]
