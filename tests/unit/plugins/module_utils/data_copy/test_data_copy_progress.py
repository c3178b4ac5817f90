# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The estimate of a phase (files and bytes), the phases' own times and rates, the progress line."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import progress as progress_lib

GiB = 1024 ** 3
MiB = 1024 ** 2


def run(estimator, steps, files_per_s, bytes_per_s, step=1.0):
    """Feed ``steps`` one-second observations of a copy at the given speeds; return the last figures."""
    files = size = 0
    now = estimator.started
    for dummy in range(steps):
        now += step
        files += int(files_per_s * step)
        size += int(bytes_per_s * step)
        estimator.observe(now, files, size)
    return files, size


def test_a_few_big_files_copied_first_do_not_make_the_copy_look_done():
    """The user's case: 2 GiB in 60,000 files where a few big files (1.9 GiB) come first. By bytes it
    read 97% with 56,000 files left; by files and bytes it is far from done, and the ETA is minutes."""
    estimator = progress_lib.Estimator(0.0)
    # 20 s at 100 MiB/s over 4 big files (no small files yet): 1.95 GiB of 2 GiB.
    estimator.observe(20.0, 4, int(1.95 * GiB))
    # Then small files: 400 files/s, 1.6 MiB/s, for 10 s.
    files, size = 4, int(1.95 * GiB)
    now = 20.0
    for dummy in range(10):
        now += 1.0
        files += 400
        size += int(1.6 * MiB)
        estimator.observe(now, files, size)
    estimate = estimator.estimate(files, size, 60000, 2 * GiB)
    by_bytes = int(100 * size / (2 * GiB))
    assert by_bytes >= 97
    assert estimate["percent"] < 40
    # 56,000 files at about 400 a second: more than 100 s, never 0:00:00.
    assert estimate["eta_seconds"] > 100


def test_costs_are_learnt_from_the_run():
    """Per-file and per-byte costs come from the run, whatever the priors say."""
    estimator = progress_lib.Estimator(0.0)
    # Alternate phases of small files (1000 files/s) and big files (50 MiB/s): the fit separates them.
    now = 0.0
    files = size = 0
    for index in range(40):
        now += 1.0
        if index % 2:
            files += 1000
        else:
            size += 50 * MiB
            files += 1
        estimator.observe(now, files, size)
    file_cost, byte_cost = estimator.costs()
    assert file_cost == pytest.approx(0.001, rel=0.25)
    assert byte_cost == pytest.approx(1.0 / (50 * MiB), rel=0.25)


def test_eta_is_never_zero_while_work_remains_and_percent_stays_below_100():
    estimator = progress_lib.Estimator(0.0)
    run(estimator, 30, 100000, 10 * GiB)  # very fast: the work left costs far less than a second
    estimate = estimator.estimate(999, 10 * GiB, 1000, 10 * GiB)
    assert estimate["eta_seconds"] >= 1
    assert estimate["percent"] <= 99
    assert estimator.estimate(1000, 10 * GiB, 1000, 10 * GiB) == {"percent": 100, "eta_seconds": 0}


def test_no_percentage_or_eta_before_the_totals_are_known():
    estimator = progress_lib.Estimator(0.0)
    run(estimator, 5, 100, MiB)
    assert estimator.estimate(500, 5 * MiB, None, None) == {"percent": None, "eta_seconds": None}


def test_eta_follows_the_observed_speed():
    """At a steady 500 files/s of 4 KiB, 30,000 files left take about 60 s."""
    estimator = progress_lib.Estimator(0.0)
    files, size = run(estimator, 20, 500, 500 * 4096)
    estimate = estimator.estimate(files, size, files + 30000, size + 30000 * 4096)
    assert 45 <= estimate["eta_seconds"] <= 75


def test_a_pause_without_progress_is_charged_to_the_next_work():
    """Seconds spent inside one big file (nothing finished) count when the file ends."""
    estimator = progress_lib.Estimator(0.0)
    estimator.observe(1.0, 0, 0)
    estimator.observe(2.0, 0, 0)
    estimator.observe(10.0, 1, 1 * GiB)
    assert estimator.costs()[1] * GiB == pytest.approx(10.0, rel=0.35)


def test_phase_clock_keeps_each_phase_own_time_and_rate():
    """The summary shows the copy's rate as the copy's, the verification's as the verification's."""
    clock = progress_lib.PhaseClock()
    clock.begin("copying", 0.0)
    clock.figures(60000, 2 * GiB)
    clock.begin("verifying", 20.0)
    clock.figures(60000, 2 * GiB)
    clock.end(21.0)
    summary = clock.summary()
    assert [item["phase"] for item in summary] == ["copying", "verifying"]
    copying, verifying = summary
    assert copying["seconds"] == 20.0 and copying["rate_bytes_per_s"] == int(2 * GiB / 20)
    assert copying["rate_files_per_s"] == 3000
    assert verifying["seconds"] == 1.0 and verifying["rate_bytes_per_s"] == 2 * GiB


def test_phase_clock_merges_a_phase_run_twice():
    clock = progress_lib.PhaseClock()
    clock.begin("copying", 0.0)
    clock.figures(10, 100)
    clock.begin("verifying", 1.0)
    clock.figures(10, 100)
    clock.begin("copying", 2.0)
    clock.figures(5, 100)
    clock.end(5.0)
    copying = clock.summary()[0]
    assert copying == {"phase": "copying", "seconds": 4.0, "files": 15, "bytes": 200, "rate_bytes_per_s": 50,
                       "rate_files_per_s": 3}


def test_progress_line_while_counting_shows_no_percentage():
    line = progress_lib.progress_line({"state": "running", "phase": "copying", "totals_known": False,
                                       "files_counted": 12000, "files_done": 3000, "bytes_done": 5 * MiB,
                                       "percent": None, "rate_bytes_per_s": MiB, "rate_files_per_s": 600})
    assert line.startswith("copying, still counting the source (12000 files so far)")
    assert "%" not in line and "ETA" not in line


def test_progress_line_names_the_phase_percent_eta_and_rates():
    line = progress_lib.progress_line({"state": "running", "phase": "verifying", "totals_known": True,
                                       "percent": 42, "eta_seconds": 3725, "bytes_done": GiB, "bytes_total": 2 * GiB,
                                       "files_done": 25000, "files_total": 60000, "rate_bytes_per_s": 85 * MiB,
                                       "rate_files_per_s": 410}, final_pass=True)
    assert line == ("final pass: verifying 42% (ETA 1:02:05), 1.0 GiB of 2.0 GiB, 25000 of 60000 files, "
                    "85.0 MiB/s, 410 files/s")
    assert progress_lib.progress_line({"state": "running", "phase": "scanning", "totals_known": False,
                                       "files_counted": 0}).startswith("counting, still counting")


def test_progress_line_at_the_end_names_each_phase():
    line = progress_lib.progress_line({
        "state": "completed", "phase": "done", "percent": 100, "rate_bytes_per_s": 100 * MiB,
        "phases": [{"phase": "scanning", "seconds": 0.1, "files": 0, "bytes": 0, "rate_bytes_per_s": 0,
                    "rate_files_per_s": 0},
                   {"phase": "copying", "seconds": 20.0, "files": 60000, "bytes": 2 * GiB,
                    "rate_bytes_per_s": 2 * GiB // 20, "rate_files_per_s": 3000},
                   {"phase": "verifying", "seconds": 1.0, "files": 60000, "bytes": 2 * GiB,
                    "rate_bytes_per_s": 2 * GiB, "rate_files_per_s": 60000}]})
    assert line == ("completed: copying 2.0 GiB in 0:00:20 (102.4 MiB/s, 3000 files/s); "
                    "verifying 2.0 GiB in 0:00:01 (2.0 GiB/s, 60000 files/s)")


def test_progress_line_of_a_job_that_failed_while_copying():
    line = progress_lib.progress_line({"state": "failed", "phase": "copying", "files_done": 10, "files_total": 20,
                                       "phases": []})
    assert line == "failed (while copying: 10 of 20 files)"


@pytest.mark.parametrize("count, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * GiB, "3.0 GiB"),
                                         (5 * 1024 * GiB * 1024, "5120.0 TiB")])
def test_size_text(count, text):
    assert progress_lib.size_text(count) == text
