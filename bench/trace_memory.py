# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the data mover's worker keeps its memory: one first copy with verification, run in this
process under tracemalloc, on D4-like files (1 KiB each, 100 per folder), then a final pass after 1%
changed.

    python bench/trace_memory.py [--files 100000] [--work-dir /var/tmp] [--top 12]

The worker runs as the detached worker runs it (Worker(folder).run() on a job folder that the
module's DataCopyJobs writes), in this process, so that tracemalloc sees every allocation of the
worker itself; its forked helpers (copying processes, the walkers of the verification) are other
processes, whose peaks the benchmark's per-process figures give (bench/peakmem.py). At the moments
where the worker holds the most (when it saves the hash cache, after the copy and after the
verification), it takes a snapshot and prints the source lines that hold the most memory then.
Source and destination are two folders of the work folder's filesystem: this measures memory, not
speed. Prints JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def _where(frame):
    name = frame.filename
    if 'ansible_collections/' in name:
        name = name[name.index('ansible_collections/'):]
    return '%s:%d' % (name, frame.lineno)


def top_lines(snapshot, count, frames=1):
    """The allocation sites holding the most memory: the line that allocated (with ``frames`` above 1,
    the whole call chain, the data mover's lines and the allocating line)."""
    stats = snapshot.statistics('traceback' if frames > 1 else 'lineno')
    total = sum(stat.size for stat in stats)
    out = []
    for stat in stats[:count]:
        chain = [_where(frame) for frame in stat.traceback]
        if frames > 1:
            chain = [where for where in chain[:-1] if 'data_copy' in where] + chain[-1:]
        out.append({'where': ' <- '.join(reversed(chain)), 'mib': round(stat.size / MIB, 1), 'blocks': stat.count})
    return total, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--files', type=int, default=100000)
    parser.add_argument('--per-dir', type=int, default=100)
    parser.add_argument('--work-dir', default='/var/tmp')
    parser.add_argument('--top', type=int, default=12)
    parser.add_argument('--frames', type=int, default=1, help='traceback depth kept by tracemalloc')
    opts = parser.parse_args(argv)
    collections = os.environ.get('ANSIBLE_COLLECTIONS_PATH') or str(REPO / '.venv' / 'collections')
    for entry in collections.split(os.pathsep):
        sys.path.insert(0, entry)
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import job as job_lib
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import worker as worker_lib

    work = Path(tempfile.mkdtemp(prefix='mobility-trace-memory-', dir=opts.work_dir))
    snapshots = []
    try:
        src, dst = work / 'src', work / 'dst'
        dst.mkdir()
        rng = random.Random(1)
        started = time.perf_counter()
        for index in range(opts.files):
            folder = src / ('d%05d' % (index // opts.per_dir))
            if index % opts.per_dir == 0:
                folder.mkdir(parents=True)
            with open(folder / ('f%07d.dat' % index), 'wb') as handle:
                handle.write(rng.randbytes(1024))
        print('made %d files in %.1f s' % (opts.files, time.perf_counter() - started), flush=True)
        jobs = job_lib.DataCopyJobs(str(work / 'state'))
        original = worker_lib.Worker.save_cache

        def save_cache(self, cache, verified):
            current, peak = tracemalloc.get_traced_memory()
            total, lines = top_lines(tracemalloc.take_snapshot(), opts.top, opts.frames)
            snapshots.append({'job': self.job['job_id'], 'at': 'save_cache (verified=%s)' % verified,
                              'traced_now_mib': round(current / MIB, 1), 'traced_peak_mib': round(peak / MIB, 1),
                              'hash_cache_entries': len(cache) if cache is not None else None, 'top': lines})
            return original(self, cache, verified)

        worker_lib.Worker.save_cache = save_cache
        signal.signal = lambda *args: None  # the worker's handlers belong to a process of its own
        results = []
        for job_id, final_pass in (('trace-first', False), ('trace-final', True)):
            if final_pass:
                # 1% of the files changed, as in the benchmark's cutover (half same size and second).
                for index in range(0, opts.files, 100):
                    path = src / ('d%05d' % (index // opts.per_dir)) / ('f%07d.dat' % index)
                    st = path.stat()
                    with open(path, 'r+b') as handle:
                        handle.write(rng.randbytes(1024))
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
            folder = jobs.folder(job_id)
            os.makedirs(folder)
            state_lib.write_json(os.path.join(folder, state_lib.JOB_FILE),
                                 jobs.build_request(job_id, str(src), str(dst), final_pass=final_pass)
                                 if final_pass else jobs.build_request(job_id, str(src), str(dst)))
            tracemalloc.start(opts.frames)
            started = time.perf_counter()
            rc = worker_lib.Worker(folder).run()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            report = state_lib.read_json(os.path.join(folder, state_lib.REPORT_FILE))
            results.append({'job': job_id, 'rc': rc, 'verified': report.get('verified'),
                            'copy_engine': report.get('copy_engine'), 'seconds': round(time.perf_counter() - started, 1),
                            'traced_peak_mib': round(peak / MIB, 1), 'traced_at_end_mib': round(current / MIB, 1)})
            print('%s: rc %s, verified %s, traced peak %.1f MiB' % (job_id, rc, report.get('verified'), peak / MIB),
                  flush=True)
        out = {'files': opts.files, 'runs': results, 'snapshots': snapshots}
        print(json.dumps(out, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
