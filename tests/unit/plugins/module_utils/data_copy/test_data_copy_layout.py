"""Where a data copy job lives (plugins/module_utils/data_copy/layout.py): the default state folder,
the paths the module returns, the final pass's job, and progress read from a real status file that
a real job wrote (see test_data_copy_job.py for the module side)."""

from __future__ import annotations

import json
import os

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import layout as layout_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib


def test_default_state_dir(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert layout_lib.default_state_dir() == "/var/tmp/storage-mobility/jobs"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", "/home/someone")
    assert layout_lib.default_state_dir() == "/home/someone/.cache/storage-mobility/jobs"


def test_job_paths_name_the_files_the_worker_writes():
    paths = layout_lib.job_paths("/srv/jobs", "mig1")
    assert paths == {
        "state_dir": "/srv/jobs",
        "folder": "/srv/jobs/mig1",
        "status_file": "/srv/jobs/mig1/" + state_lib.STATUS_FILE,
        "report_file": "/srv/jobs/mig1/" + state_lib.REPORT_FILE,
        "worker_log": "/srv/jobs/mig1/" + state_lib.WORKER_LOG,
        "rsync_log": "/srv/jobs/mig1/" + state_lib.RSYNC_LOG,
    }
    assert paths["status_file"] == "/srv/jobs/mig1/status.json"


def test_the_final_pass_runs_next_to_phase_one():
    assert layout_lib.final_job_id("mig1") == "mig1-final"
    phase1 = {"job_id": "mig1", "data_node": "dn1", "status_file": "/srv/jobs/mig1/status.json"}
    final = layout_lib.final_job(phase1)
    assert final == {"job_id": "mig1-final", "data_node": "dn1", "status_file": "/srv/jobs/mig1-final/status.json"}
    assert phase1["job_id"] == "mig1", "the phase-1 job is left as it was"
    assert layout_lib.final_job({"job_id": "mig1"}) is None
    assert layout_lib.final_job({"status_file": "/srv/jobs/mig1/status.json"}) is None
    assert layout_lib.final_job(None) is None


def test_the_final_pass_is_found_when_the_state_folder_names_the_job():
    """A state folder whose path holds the job id (a user's choice): only the job's own folder changes
    (a string replace() of the id rewrote the state folder too and missed the final pass)."""
    phase1 = {"job_id": "mig1", "status_file": "/srv/mig1/jobs/mig1/status.json"}
    assert layout_lib.final_job(phase1)["status_file"] == "/srv/mig1/jobs/mig1-final/status.json"


def test_read_live_progress(tmp_path):
    assert layout_lib.read_live_progress(None) is None
    assert layout_lib.read_live_progress(str(tmp_path / "missing" / "status.json")) is None
    flat = tmp_path / "flat.json"
    status = {"state": "running", "phase": "copying", "percent": 45, "bytes_done": 5, "bytes_total": 11,
              "files_done": 1, "files_total": 2, "rate_bytes_per_s": 3, "eta_seconds": None, "pid": 7}
    flat.write_text(json.dumps(status))
    assert layout_lib.read_live_progress(str(flat)) == {
        "state": "running", "phase": "copying", "percent": 45, "bytes_done": 5, "bytes_total": 11,
        "files_done": 1, "files_total": 2, "rate_bytes_per_s": 3}
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"state": "cancelled", "progress": {"percent": 42, "bytes_done": 5}}))
    assert layout_lib.read_live_progress(str(nested)) == {"state": "cancelled", "percent": 42, "bytes_done": 5}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert layout_lib.read_live_progress(str(broken)) is None
    assert layout_lib.read_live_progress(str(tmp_path)) is None, "a folder is not a status file"
