"""Copy reports bound to one pass of one migration (plugins/module_utils/data_copy/signing.py)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import signing


def a_report(**over):
    report = {"job_id": "m1-final", "migration_id": "m1", "pass_id": "p1", "final_pass": True, "state": "completed",
              "verified": True, "verification": "passed", "hash_algorithm": "xxh128",
              "source_digest": "sha256:aa", "destination_digest": "sha256:bb",
              "source_seal": "seal1:sha256:cc", "destination_seal": "seal1:sha256:dd", "files": 3, "bytes": 42,
              "directories": 1, "symlinks": 0, "differ_count": 0, "missing_count": 0, "extra_count": 0,
              "ignore_files": ["lost+found"], "copy_seconds": 1.5, "warnings": []}
    report.update(over)
    return report


def test_new_passes_are_random_and_distinct():
    one, two = signing.new_pass(False), signing.new_pass(True)
    assert len(one["id"]) == 32 and len(one["key"]) == 64 and one["final"] is False and two["final"] is True
    assert one["id"] != two["id"] and one["key"] != two["key"]


def test_a_signed_report_verifies_with_its_key_only():
    signed = signing.sign_report(a_report(), "k1")
    assert signed["signature"].startswith("hmac-sha256:")
    assert signing.signature_valid(signed, "k1")
    assert not signing.signature_valid(signed, "k2")
    assert not signing.signature_valid(a_report(), "k1"), "no signature"
    assert not signing.signature_valid(dict(signed, signature=None), "k1")
    assert not signing.signature_valid(signed, "")


def test_the_signature_is_an_hmac_sha256_of_the_canonical_fields():
    report = a_report()
    fields = dict((name, report.get(name)) for name in signing.SIGNED_FIELDS)
    payload = (signing.SIGNATURE_FORMAT + "\n" + json.dumps(fields, sort_keys=True, separators=(",", ":"))).encode()
    expected = hmac.new(b"k1", payload, hashlib.sha256).hexdigest()
    assert signing.report_signature(report, "k1") == "hmac-sha256:" + expected


@pytest.mark.parametrize("field, value", [
    ("verified", False), ("state", "failed"), ("job_id", "m2-final"), ("migration_id", "m2"), ("pass_id", "p0"),
    ("destination_seal", "seal1:sha256:ee"), ("source_seal", None), ("destination_digest", "sha256:00"),
    ("files", 4), ("missing_count", 1), ("ignore_files", []), ("final_pass", False),
])
def test_an_edited_report_does_not_verify(field, value):
    signed = signing.sign_report(a_report(), "k1")
    assert not signing.signature_valid(dict(signed, **{field: value}), "k1"), field


def test_fields_outside_the_proof_may_change():
    """Timings and warnings are not part of what a report proves (the role adds its own error text)."""
    signed = signing.sign_report(a_report(), "k1")
    assert signing.signature_valid(dict(signed, copy_seconds=9.9, warnings=["x"], error=None), "k1")


def job(report, state="completed", job_id="m1-final"):
    return {"id": job_id, "state": state, "report": report}


def test_the_module_signs_only_the_completed_report_of_its_pass():
    binding = {"migration_id": "m1", "pass_id": "p1", "key": "k1"}
    done = job(a_report())
    assert signing.sign_job_report(done, binding) is None
    assert signing.signature_valid(done["report"], "k1")

    for other, why in ((a_report(pass_id="p0"), "made for pass id p0, not p1"),
                       (a_report(migration_id="m0"), "made for migration id m0, not m1"),
                       (a_report(job_id="m1"), "it names job m1")):
        stale = job(other)
        assert why in signing.sign_job_report(stale, binding)
        assert "signature" not in stale["report"]

    for state in ("failed", "running", "cancelled", "absent"):
        unfinished = job(a_report(), state=state)
        assert signing.sign_job_report(unfinished, binding) is None
        assert "signature" not in unfinished["report"]
    assert signing.sign_job_report(job(None), binding) is None
