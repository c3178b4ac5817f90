"""A small run of bench/plan_sim.py (the planner and schedulers at scale, by simulation): the
bounds the full run promises must hold on a smaller backend too."""

from __future__ import annotations

import importlib.util
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "..", "..", "..", "bench", "plan_sim.py")


def load():
    spec = importlib.util.spec_from_file_location("plan_sim", SIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_simulation_keeps_every_bound(tmp_path):
    sim = load()
    report = sim.simulate(shares=800, nodes=[1, 3, 8, 24], seed=7, windows=(20, 60), ready_count=200)
    assert report["passed"], report["checks"]
    assert report["plan"]["overfilled"] == []
    assert report["plan"]["placed"] > 600
    for row in report["copies"]:
        assert row["lower_bound"] <= row["makespan"] <= 1.15 * row["lower_bound"] + 0.1
        assert row["bytes_only_bound"] <= row["lower_bound"] + 0.1
    for run in report["windows"]:
        assert run["overrun"] == 0 and run["last_end"] <= run["window_seconds"]
    # A short window leaves work over: the scheduler stops rather than running past the end.
    assert any(run["left"] > 0 for run in report["windows"])
    out = tmp_path / "sim.json"
    assert sim.main(["--shares", "300", "--nodes", "1,4", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["checks"]["no_pool_overfilled"] is True


def test_without_file_cost_the_bytes_over_rate_bound_holds_too():
    # With no cost per file the throughput bound is total bytes / total rate, the bound.
    sim = load()
    report = sim.simulate(shares=800, nodes=[1, 2, 5, 16], seed=9, windows=(20,), ready_count=50, file_cost=False)
    assert report["passed"], report["checks"]
    for row in report["copies"]:
        assert row["bytes_only_ratio"] <= 1.15 and abs(row["bytes_only_bound"] - row["lower_bound"]) <= 0.1


def test_check_plan_catches_an_overfilled_pool():
    sim = load()
    pools = [{"address": "h@b#p", "capacity_bytes": 100, "free_bytes": 50, "headroom": 0.1}]
    result = {"moves": [{"destination": "h@b#p", "bytes": 30}, {"destination": "h@b#p", "bytes": 11}]}
    assert sim.check_plan(result, pools) == ["h@b#p"]
    result["moves"].pop()
    assert sim.check_plan(result, pools) == []
