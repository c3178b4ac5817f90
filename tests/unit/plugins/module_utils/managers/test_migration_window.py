"""Unit tests for plugins/module_utils/managers/migration_window.py (module migration_window): which
ready share to switch over now, measured from what changed in its source since its last copy began,
the window stored and followed on a rerun, and bad input refused with nothing changed.

Records are set to the states the decision reads by the test's hand (Env.edit), except in the first
test, where phase 1 ends through the real host-assisted path and its copy report."""

from __future__ import annotations

import json
import os
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import states
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.signing import sign_report
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.managers.evacuation import MigrationPlanManager
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_window import (
    CLOCK_SKEW_SECONDS, DEFAULT_SWITCHOVER_SECONDS, MigrationWindowManager, iso, measured_switchovers,
    parse_window_end)

from mobility_helpers import RULE

MIB = 1024 * 1024
# A host-assisted final pass at 1 MiB/s, no per-file or fixed cost: an estimate is changed MiB + switchover.
RATES = {"host": {"bytes_per_second": MIB, "seconds_per_file": 0, "fixed_seconds": 0}}
NO_MARGIN = {"seconds": 0.0, "fraction": 0.0}


def params(**kw):
    p = {"plan_name": None, "shares": None, "name": None, "window_end": None, "window_minutes": None,
         "new_window": False, "margin": dict(NO_MARGIN), "order": None, "skip": None, "rates": RATES,
         "switchover_seconds": 10.0}
    p.update(kw)
    return p


def decide(env, now, check_mode=False, **kw):
    return MigrationWindowManager(env.ctx(check_mode), clock=lambda: now).run(params(**kw))


def ready_share(env, name, changed_mib=0, task_state=states.DATA_COPYING_COMPLETED, copy_began=None):
    """Share ``name`` with phase 1 done; ``changed_mib`` MiB written into its source after its copy began."""
    env.create_share(name, rules=[RULE])
    path = env.share_path(env.A, name)
    with open(os.path.join(path, "old.bin"), "wb") as handle:
        handle.write(b"o" * 1000)
    began = time.time() + 2 * CLOCK_SKEW_SECONDS if copy_began is None else copy_began
    if changed_mib:
        # Written "after" the copy began: the copy's start is set before it.
        began = time.time() - 2 * CLOCK_SKEW_SECONDS
        with open(os.path.join(path, "new.bin"), "wb") as handle:
            handle.write(b"n" * (changed_mib * MIB))

    def edit(record):
        record["task_state"] = task_state
        record["migration"] = {"id": "m-" + name, "mechanism": "host", "destination_pool": env.B,
                               "copy": {"started_at": iso(began), "bytes": 1000, "copy_seconds": 1.0}}
    env.edit(name, migration=edit)
    return path


def views(result):
    return dict((v["name"], v) for v in result["shares"])


def window_file(env, name="window"):
    return os.path.join(env.pool_path(env.A), ".mobility", "windows", name + ".json")


# --------------------------------------------------------------------------- input


def test_window_end_needs_a_time_zone_and_a_real_date():
    assert parse_window_end("2026-12-02T05:00:00Z") == parse_window_end("2026-12-02T06:00:00+01:00")
    assert parse_window_end("2026-12-02T05:00:00.5Z") - parse_window_end("2026-12-02T05:00:00Z") == 0.5
    assert iso(parse_window_end("2026-12-02 05:00-0130")) == "2026-12-02T06:30:00Z"
    for bad in ("2026-12-02T05:00:00", "tomorrow", "2026-11-31T05:00:00Z", None):
        with pytest.raises(InvalidRequest, match="window_end"):
            parse_window_end(bad)


# --------------------------------------------------------------------------- the estimate


def test_phase_1_ended_by_a_real_copy_report_is_ready_and_only_what_changed_since_counts(env):
    """The record keeps when the copy began (copy_summary's started_at); a file written after it
    is the final pass's work, the files copied before are not."""
    env.create_share("s1", rules=[RULE])
    source = env.share_path(env.A, "s1")
    with open(os.path.join(source, "copied.bin"), "wb") as handle:
        handle.write(b"c" * (3 * MIB))
    migrations = env.migrations()
    plan = migrations.start("s1", env.B, {}, force_host_assisted=True)["copy_plan"]
    binding = plan["report_signing"]
    report = sign_report({"job_id": plan["job_id"], "state": "completed", "verified": True, "files": 1,
                          "bytes": 3 * MIB, "copy_seconds": 3.0, "migration_id": binding["migration_id"],
                          "pass_id": binding["pass_id"], "final_pass": False,
                          "started_at": iso(time.time() + 2 * CLOCK_SKEW_SECONDS)}, binding["key"])
    assert migrations.start("s1", env.B, {}, force_host_assisted=True, copy_report=report)["task_state"] == \
        states.DATA_COPYING_COMPLETED
    assert env.load("s1")[0]["migration"]["copy"]["started_at"] == report["started_at"]
    now = time.time()
    view = views(decide(env, now, shares=["s1"], window_minutes=10))["s1"]
    assert view["ready"] and view["changed_bytes"] == 0 and view["bytes"] == 3 * MIB
    assert view["estimate"] == 10.0, "nothing changed since the copy began: only the switchover"
    # Now the copy "began" before a new file was written: the file is counted.
    env.edit("s1", migration=lambda r: r["migration"]["copy"].update(started_at=iso(now - 60)))
    view = views(decide(env, now, shares=["s1"], window_minutes=10))["s1"]
    assert view["changed_bytes"] == 3 * MIB and view["estimate"] == 13.0


def test_the_largest_expected_disruption_goes_first_when_it_fits(env):
    ready_share(env, "small")
    ready_share(env, "big", changed_mib=4)
    result = decide(env, time.time(), shares=["small", "big"], window_minutes=1)
    shares = views(result)
    assert shares["big"]["changed_bytes"] >= 4 * MIB and shares["big"]["estimate"] >= 14.0
    assert shares["small"]["estimate"] == 10.0 and shares["small"]["changed_bytes"] == 0
    assert result["next"]["name"] == "big"
    assert "fits now" in shares["small"]["reason"] and "waits for big" in shares["small"]["reason"]
    assert [s["name"] for s in result["plan"]["started"]] == ["big", "small"]
    assert result["rates"]["source"] == "given"


def test_a_share_that_does_not_fit_is_left_with_the_reason_and_a_smaller_one_starts(env):
    ready_share(env, "big", changed_mib=20)
    ready_share(env, "small")
    now = float(int(time.time()))
    result = decide(env, now, shares=["big", "small"], window_end=iso(now + 25), margin={"seconds": 5, "fraction": 0.5})
    shares = views(result)
    assert result["next"]["name"] == "small"
    # small: 10 s + 5 s + 0.5 * 10 s = 20 s <= 25 s left; big needs 30 s + 5 s + 15 s.
    assert shares["small"]["needs_seconds"] == 20.0
    assert shares["big"]["reason"].startswith("needs 50 s with the margin (estimate 30 s), 2")
    assert result["left"] == [{"name": "big", "reason": shares["big"]["reason"]}]


def test_never_a_switchover_at_or_after_the_end(env):
    ready_share(env, "s1")
    now = float(int(time.time()))  # the end is given in whole seconds
    end = iso(now + 60)
    decide(env, now, shares=["s1"], window_end=end)
    assert decide(env, now + 50.5, shares=["s1"], window_end=end)["next"] is None, "10 s needed, 9.5 s left"
    assert decide(env, now + 50, shares=["s1"], window_end=end)["next"]["name"] == "s1", "exactly fits"
    for later in (now + 60, now + 90):
        result = decide(env, later, shares=["s1"], window_end=end)
        assert result["next"] is None and result["window"]["ended"]
        assert result["left"][0]["reason"].startswith("the window ended")


def test_states_that_are_not_ready_say_why_and_an_interrupted_switchover_comes_first(env):
    ready_share(env, "copying", task_state=states.DATA_COPYING_IN_PROGRESS)
    ready_share(env, "done", task_state=states.MIGRATION_SUCCESS)
    ready_share(env, "big", changed_mib=2)
    ready_share(env, "interrupted", task_state=states.MIGRATION_COMPLETING)
    env.create_share("plain", rules=[RULE])
    result = decide(env, time.time(), shares=["copying", "done", "big", "interrupted", "plain"], window_minutes=5)
    shares = views(result)
    assert result["next"]["name"] == "interrupted" and "resumes the switchover" in shares["interrupted"]["reason"]
    assert shares["copying"]["reason"] == "phase 1 is not done (task_state data_copying_in_progress)"
    assert shares["done"]["reason"] == "already completed (migration_success)"
    assert shares["plain"]["reason"] == "no migration ready to complete (task_state None)"
    assert not shares["plain"]["ready"] and shares["big"]["ready"]


def test_the_operators_order_and_skip(env):
    for name, mib in (("a1", 0), ("b2", 1), ("c3", 2)):
        ready_share(env, name, changed_mib=mib)
    now = time.time()
    names = ["a1", "b2", "c3"]
    assert decide(env, now, shares=names, window_minutes=5)["next"]["name"] == "c3"
    assert decide(env, now, shares=names, window_minutes=5, order=["a1"])["next"]["name"] == "a1"
    result = decide(env, now, shares=names, window_minutes=5, order=["a1"], skip=["a1"])
    assert result["next"]["name"] == "c3", "a1 skipped, then the largest"
    assert views(result)["a1"]["reason"].startswith("left out by the caller")


# --------------------------------------------------------------------------- the stored window


def test_window_minutes_opens_a_window_that_a_rerun_keeps(env):
    ready_share(env, "s1")
    now = float(int(time.time())) + 0.25
    check = decide(env, now, check_mode=True, shares=["s1"], window_minutes=2)
    assert check["changed"] and check["window"]["source"] == "opened" and not os.path.exists(window_file(env))
    first = decide(env, now, shares=["s1"], window_minutes=2)
    assert first["changed"] and first["window"]["source"] == "opened"
    with open(window_file(env)) as handle:
        stored = json.load(handle)
    assert stored["ends_epoch"] == int(now) + 120, "whole seconds, as ends_at shows the end"
    # The playbook's later calls pass ends_at back: the same window, also once it has ended.
    follow = decide(env, now + 200, shares=["s1"], window_end=first["window"]["ends_at"])
    assert follow["window"]["source"] == "stored" and follow["next"] is None and not follow["changed"]
    # A rerun after a crash, a minute later: the same end, not a fresh one.
    again = decide(env, now + 60, shares=["s1"], window_minutes=2)
    assert not again["changed"] and again["window"]["source"] == "stored"
    assert again["window"]["ends_at"] == first["window"]["ends_at"] and again["window"]["seconds_left"] == 59.75
    # Its end passed: nothing starts, and the result says how to open a new window.
    ended = decide(env, now + 300, shares=["s1"], window_minutes=2)
    assert ended["next"] is None and "new_window" in ended["window"]["note"]
    fresh = decide(env, now + 300, shares=["s1"], window_minutes=2, new_window=True)
    assert fresh["changed"] and fresh["next"]["name"] == "s1"
    assert fresh["window"]["seconds_left"] == 119.75
    # Another length while a window is open is refused, naming the stored window.
    with pytest.raises(InvalidRequest, match="open until"):
        decide(env, now + 310, shares=["s1"], window_minutes=30)


def test_a_stored_plan_gives_the_shares_and_keeps_the_window(env):
    ready_share(env, "s1", changed_mib=1)
    ready_share(env, "s2")
    MigrationPlanManager(env.ctx()).run({"name": "evac", "source": env.A, "destinations": [env.B], "headroom": 0.0,
                                         "rates": None, "flags": None, "new_plan": False})
    result = decide(env, time.time(), plan_name="evac", window_minutes=5)
    assert sorted(views(result)) == ["s1", "s2"] and result["next"]["name"] == "s1"
    assert os.path.exists(window_file(env, "evac"))
    with pytest.raises(NotFound, match="Unknown plan 'other'"):
        decide(env, time.time(), plan_name="other", window_minutes=5)


def test_the_shares_a_plan_could_not_place_are_left_with_the_plans_reason(env):
    """A plan that keeps 99.9% of every filesystem free places nothing: the window has nothing to
    complete and names each share of the plan with the plan's reason, not an empty list."""
    ready_share(env, "s1", changed_mib=1)
    planned = MigrationPlanManager(env.ctx()).run({"name": "full", "source": env.A, "destinations": [env.B],
                                                   "headroom": 0.999, "rates": None, "flags": None, "new_plan": False})
    assert [u["share"] for u in planned["plan"]["unplaced"]] == ["s1"]
    result = decide(env, time.time(), plan_name="full", window_minutes=5)
    assert result["next"] is None and views(result) == {}
    assert [item["name"] for item in result["left"]] == ["s1"]
    reason = result["left"][0]["reason"]
    assert reason.startswith("not in the plan: ") and "left above its headroom" in reason, result["left"]


def test_measured_switchovers_take_the_median_of_the_recent_ones_less_their_copy():
    def done(at, seconds, copied, mechanism="host"):
        return {"task_state": states.MIGRATION_SUCCESS,
                "migration": {"mechanism": mechanism, "completed_at": at, "switchover_seconds": seconds,
                              "final_copy": {"copy_seconds": copied}}}
    records = [done("2026-01-0%d" % i, 100.0 + i, 0.0) for i in range(1, 4)] + [
        done("2026-02-01", 30.0, 10.0), done("2026-02-02", 25.0, 5.0), done("2026-03-01", 7.0, 0.0, "driver"),
        {"task_state": states.DATA_COPYING_COMPLETED, "migration": {"mechanism": "host", "switchover_seconds": 9}}]
    # The five most recent host switchovers: 102, 103, 20, 20 and 101 -> median 101.
    assert measured_switchovers(records) == {"host": 101.0, "driver": 7.0}


def test_without_a_given_switchover_the_measured_one_then_the_default(env):
    ready_share(env, "s1")
    view = views(decide(env, time.time(), shares=["s1"], window_minutes=5, switchover_seconds=None))["s1"]
    assert (view["switchover_seconds"], view["switchover_source"]) == (DEFAULT_SWITCHOVER_SECONDS["host"], "default")
    ready_share(env, "moved", task_state=states.MIGRATION_SUCCESS)
    env.edit("moved", migration=lambda r: r["migration"].update(switchover_seconds=40.0, final_copy={"copy_seconds": 15.0}))
    view = views(decide(env, time.time(), shares=["s1"], window_minutes=5, switchover_seconds=None))["s1"]
    assert (view["switchover_seconds"], view["switchover_source"]) == (25.0, "measured")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, match", [
    ({"window_end": "2020-01-01T00:00:00Z"}, "in the past"),
    ({"window_end": "2099-01-01T00:00:00Z", "window_minutes": 5}, "not both"),
    ({}, "not neither"),
    ({"window_minutes": 0}, "above 0"),
    ({"window_minutes": 5, "shares": ["s1", "ghost"]}, "Unknown share 'ghost'"),
    ({"window_minutes": 5, "shares": ["s1", "s1"]}, "s1 listed twice"),
    ({"window_minutes": 5, "order": ["ghost"]}, "order: ghost is not among"),
    ({"window_minutes": 5, "margin": {"seconds": -1}}, "margin.seconds"),
    ({"window_minutes": 5, "switchover_seconds": -1.0}, "switchover_seconds"),
    ({"window_minutes": 5, "plan_name": "p"}, "plan_name .* or shares, not both"),
    ({"window_minutes": 5, "rates": {"bogus": {}}}, "rate model"),
])
def test_bad_input_is_refused_naming_it_and_changes_nothing(env, kw, match):
    ready_share(env, "s1")
    before = env.state()
    kw = dict({"shares": ["s1"]}, **kw)
    with pytest.raises((InvalidRequest, NotFound), match=match):
        decide(env, time.time(), **kw)
    assert env.state() == before
