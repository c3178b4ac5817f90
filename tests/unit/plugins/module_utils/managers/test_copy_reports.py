"""Unit tests for plugins/module_utils/managers/copy_reports.py: passes, the checks a copy report
must pass, and what the record keeps of it. The whole host-assisted flow with real copies is in
test_host_assisted.py; these are the pure functions on their own."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.signing import sign_report
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers import copy_reports


def record_with_pass(final=False):
    record = {"name": "s1", "migration": {"id": "m-1"}}
    drawn = copy_reports.draw_pass(record, final)
    return record, drawn


def signed(record, drawn, final=False, **over):
    data = {"job_id": copy_reports.final_job_id(record["migration"]) if final else "m-1", "state": "completed",
            "verified": True, "migration_id": "m-1", "pass_id": drawn["id"]}
    data.update(over)
    return sign_report(data, drawn["key"])


def test_the_final_pass_has_its_own_job_id_and_pass():
    record, drawn = record_with_pass(final=True)
    assert copy_reports.final_job_id(record["migration"]) == "m-1-final"
    assert copy_reports.current_pass(record, final=True) == drawn
    assert copy_reports.current_pass(record, final=False) is None
    copy_reports.forget_final_pass(record)
    assert copy_reports.current_pass(record, final=True) is None


def test_a_signed_report_of_the_current_pass_is_taken():
    record, drawn = record_with_pass()
    report = signed(record, drawn)
    copy_reports.check_report(record, report, final=False)
    assert copy_reports.signature_problem(record, report, final=False) is None
    assert copy_reports.report_failure(report) is None


@pytest.mark.parametrize("change, why", [
    ({"job_id": "other"}, "belongs to job 'other'"),
    ({"files": 99}, "signature does not match"),
])
def test_a_foreign_or_edited_report_is_refused(change, why):
    record, drawn = record_with_pass()
    report = dict(signed(record, drawn), **change)
    with pytest.raises(InvalidRequest, match=why):
        copy_reports.check_report(record, report, final=False)


def test_a_report_of_an_earlier_pass_is_refused():
    record, old = record_with_pass()
    report = signed(record, old)
    copy_reports.draw_pass(record, final=False)
    with pytest.raises(InvalidRequest, match="not for the current pass"):
        copy_reports.check_report(record, report, final=False)


def test_a_failure_needs_no_signature_and_says_why():
    record, _drawn = record_with_pass()
    report = {"job_id": "m-1", "state": "cancelled"}
    copy_reports.check_report(record, report, final=False)
    assert copy_reports.report_failure(report) == ("copy job m-1 did not complete (cancelled): it was cancelled "
                                                   "before it completed")
    unverified = {"job_id": "m-1", "state": "completed", "verified": False, "missing": ["a", "b"]}
    assert copy_reports.report_failure(unverified) == "the copy was not verified (missing: a, b)"


def test_the_summary_keeps_the_record_small():
    report = {"files": 3, "bytes": 10, "ignored_count": 50, "ignored": ["f%d" % i for i in range(50)],
              "log_tail": ["x" * 1000] * 40, "not_kept": True}
    summary = copy_reports.copy_summary(report)
    assert summary["files"] == 3 and summary["ignored_count"] == 50
    assert len(summary["ignored"]) == copy_reports.SUMMARY_IGNORED
    assert len(summary["log_tail"]) == copy_reports.SUMMARY_LOG_LINES
    assert all(len(line) == copy_reports.SUMMARY_LOG_WIDTH for line in summary["log_tail"])
    assert "not_kept" not in summary and "verified_at" in summary


def test_the_summary_keeps_when_the_copy_began_for_the_maintenance_window():
    # migration_window measures what changed in the source since this time.
    summary = copy_reports.copy_summary({"files": 1, "bytes": 2, "started_at": "2026-12-02T03:00:00.000000Z"})
    assert summary["started_at"] == "2026-12-02T03:00:00.000000Z"
