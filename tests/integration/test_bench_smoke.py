"""Smoke test of bench/run.py: tiny sizes, one run; checks the shape of the JSON, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
METHODS = ("cp_a", "tar_pipe", "copy_limit", "reference", "rsync_sha256sum", "ours")
DATASETS = ("D1", "D2", "D3")


def test_bench_quick_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    work.mkdir()
    argv = [
        sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--quick", "--runs", "1", "--out", str(out),
        "--work-dir", str(work), "--d1-files", "2", "--d1-mib", "1", "--d2-files", "100", "--d2-dirs", "4",
        "--d3-files", "100", "--sparse-mib", "4", "--ref-files", "20",
    ]
    env = dict(os.environ)
    env.setdefault("ANSIBLE_LOCAL_TEMP", str(tmp_path / "ansible-tmp"))
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = json.loads(out.read_text())

    rows = {(row["method"], row["dataset"]): row for row in result["results"]}
    for dataset in DATASETS:
        assert result["datasets"][dataset]["files"] > 0
        for method in METHODS:
            assert (method, dataset) in rows, (method, dataset)
            assert rows[(method, dataset)]["seconds"] > 0, (method, dataset)
        assert rows[("ours", dataset)]["verified"] is True

    cut = result["cutover"]
    assert cut["changed_files"] > 0
    assert cut["ours_final_verified"] is True
    assert cut["ours_missed_total"] == 0
    # The final pass read the changed files again and kept the phase-1 hashes of the others.
    final = cut["runs"][0]
    assert 0 < final["ours_final_files_read"] < 2 * result["datasets"]["D3"]["files"], final["ours_final_hashing"]
    assert final["ours_final_hashing"]["files_reused"] > 0
    for key in ("ours_final_seconds", "rsync_seconds", "ours_noop_seconds", "rsync_noop_seconds"):
        assert cut[key] > 0, key

    machine = result["machine"]
    for key in ("cpu_count", "memory_bytes", "kernel", "rsync", "python", "caches_dropped", "source_fs"):
        assert key in machine, key
    assert result["targets"], "no target evaluated"
    assert all(isinstance(target["pass"], bool) for target in result["targets"])
    # The work folder and any loop devices are gone.
    assert list(work.iterdir()) == []
