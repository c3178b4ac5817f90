# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rsync as the data mover runs it, recursing incrementally (the default options) beside the same
rsync with ``--no-inc-recursive`` (the whole file list first, as the data mover ran it before),
on one tree of many small files, in one run.

    python bench/rsync_recursion.py [--files N] [--per-folder N] [--out FILE]

Makes ``--files`` files of 1 KiB, ``--per-folder`` to a folder (default 200,000 in 2,000 folders)
under a work folder (``--work``, default a temporary folder in /var/tmp), then runs, each way, in
alternating order: a first copy into an empty destination, and a pass over the copied tree with
nothing to do (what a final pass does for the files that did not change). For each run: the
seconds, the peak memory of rsync's processes together (the sum of their VmRSS, read from /proc
every 0.05 s), and how long after its start rsync copied its first file (its first ``xfr#``
progress line). Writes a JSON file (default bench/results/rsync_recursion.json); see
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if (REPO / ".venv" / "collections").is_dir():
    sys.path.insert(0, str(REPO / ".venv" / "collections"))  # the collection as scripts/setup.sh installs it

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
import peakmem  # noqa: E402  (bench/peakmem.py)

WAYS = {"incremental": [], "whole list": ["--no-inc-recursive"]}


def make_tree(root: Path, files: int, per_folder: int) -> None:
    payload = b"x" * 1023 + b"\n"
    for index in range(files):
        folder = root / ("d%05d" % (index // per_folder))
        if index % per_folder == 0:
            folder.mkdir(parents=True)
        with open(folder / ("f%07d" % index), "wb") as handle:
            handle.write(payload)


def run_rsync(source: Path, destination: Path, extra: list[str]) -> dict:
    argv = rsync_lib.build_argv(str(source), str(destination), extra_options=extra)
    # Every process of rsync carries the sampler's marker (bench/peakmem.py), and only they do.
    memory = peakmem.JobMemory(interval=0.05, cgroup_root=None, pss_every=0)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env=memory.env(dict(os.environ, LC_ALL="C")))
    memory.start()
    first_copy = [None]
    reader = rsync_lib.ProgressReader()
    while True:
        data = proc.stdout.read1(65536)
        if not data:
            break
        if first_copy[0] is None and b"xfr#" in data:
            first_copy[0] = time.monotonic() - started
        reader.feed(data)
    reader.close()
    rc = proc.wait()
    seconds = time.monotonic() - started
    peak = memory.stop()["peak_rss_all_bytes"]
    if rc != 0:
        raise SystemExit("rsync %s exited with %d: %s" % (" ".join(argv), rc, reader.lines[-5:]))
    return {"seconds": round(seconds, 2), "peak_rss_bytes": peak,
            "first_file_after_seconds": None if first_copy[0] is None else round(first_copy[0], 2),
            "entries_checked": reader.checked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200000)
    parser.add_argument("--per-folder", type=int, default=100)
    parser.add_argument("--work", default="/var/tmp")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "rsync_recursion.json"))
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed")
    work = Path(tempfile.mkdtemp(prefix="rsync-recursion-", dir=args.work))
    try:
        source = work / "source"
        began = time.monotonic()
        make_tree(source, args.files, args.per_folder)
        print("made %d files in %.1f s under %s" % (args.files, time.monotonic() - began, work), flush=True)
        results = {}
        order = list(WAYS) + list(WAYS)[::-1]
        for step, way in enumerate(order):
            copy = "first copy" if step < len(WAYS) else "first copy (second round)"
            destination = work / ("destination-%d" % step)
            first = run_rsync(source, destination, WAYS[way])
            noop = run_rsync(source, destination, WAYS[way])
            shutil.rmtree(destination)
            results.setdefault(way, []).append({"first_copy": first, "no_op_pass": noop})
            print("%-12s %-26s %8.2f s  peak %6.1f MiB  first file after %s s | no-op pass %7.2f s  peak %6.1f MiB"
                  % (way, copy, first["seconds"], first["peak_rss_bytes"] / 2 ** 20, first["first_file_after_seconds"],
                     noop["seconds"], noop["peak_rss_bytes"] / 2 ** 20), flush=True)
        version = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=False).stdout
        summary = {}
        for way, rounds in results.items():
            summary[way] = {kind: {"seconds": min(r[kind]["seconds"] for r in rounds),
                                   "peak_rss_bytes": max(r[kind]["peak_rss_bytes"] for r in rounds)}
                            for kind in ("first_copy", "no_op_pass")}
        ratios = {kind: {"seconds": round(summary["incremental"][kind]["seconds"]
                                          / summary["whole list"][kind]["seconds"], 2),
                         "peak_rss": round(summary["incremental"][kind]["peak_rss_bytes"]
                                           / summary["whole list"][kind]["peak_rss_bytes"], 2)}
                  for kind in ("first_copy", "no_op_pass")}
        out = {"files": args.files, "per_folder": args.per_folder, "rsync": version.splitlines()[0],
               "runs": results, "best": summary, "incremental_over_whole_list": ratios,
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
               "load_average": os.getloadavg()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print("incremental / whole list: %s" % json.dumps(ratios))
        print("wrote %s" % args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
