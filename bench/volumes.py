# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of volume migration on driver ``file`` (issue 19's speed targets), apart from the
default benchmark so that the default run stays short:

    python bench/run.py --volumes [--work-dir /var/tmp] [--out FILE]
    python bench/volumes.py [WORK_DIR [OUT [ROUNDS]]]     # the same, ROUNDS rounds (default 3)

1. Host copy of a 4 GiB sparse raw volume with 1 GiB of data (``volume_migrate force_host_copy``,
   verification included) against a bare ``qemu-img convert -n -S 4k`` of the same image.
2. Asynchronous migration (``async_migration``): seconds until ``migrating_attachable`` for a 1 GiB
   and a 16 GiB volume (1 GiB of data each); the pull's throughput against the bare copy of the
   same volume; a writer's 1 MiB write+fsync latency on the attached volume with and without a pull,
   and through the attachment's NBD hop alone (the path a pull needs, without the pull).

Each module runs as Ansible runs it (its own process, JSON arguments), so the figures include the
module start-up. The page cache is dropped before each timed copy when possible (root).
Each measure runs ROUNDS times, the bare copy and ours alternately (the machine is shared: medians
of interleaved runs keep the ratios fair). See docs/performance.md.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
GIB = 1024 * MIB


def log(text):
    print('[bench-volumes] %s' % text, flush=True)


def drop_caches():
    try:
        subprocess.run(['sync'], check=True)
        Path('/proc/sys/vm/drop_caches').write_text('3\n')
        return True
    except OSError:
        return False


class Lab:
    def __init__(self, work: Path):
        self.work = work
        self.pools = {'src': work / 'src', 'dst': work / 'dst'}
        for path in self.pools.values():
            path.mkdir(parents=True)
        self.backends = [{'name': 'bench', 'driver': 'file', 'pools': {k: {'path': str(v)} for k, v in self.pools.items()}}]
        self.env = dict(os.environ, PYTHONPATH=str(REPO / '.venv' / 'collections'))

    def run(self, module, **args):
        path = self.work / 'args.json'
        path.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': dict(args, backends=self.backends)}))
        proc = subprocess.run([sys.executable, '-m', 'ansible_collections.storage.mobility.plugins.modules.' + module,
                               str(path)], capture_output=True, text=True, env=self.env, cwd=str(self.work), check=False)
        result = json.loads(proc.stdout)
        if result.get('failed'):
            raise RuntimeError('%s failed: %s' % (module, result.get('msg')))
        return result

    def volume(self, name, size_gb, data_gib=1):
        self.run('volume', name=name, size=size_gb, pool='localhost@bench#src')
        image = self.run('volume_info', name=name)['volumes'][0]['path']
        # data_gib GiB of incompressible data spread over the volume (16 regions)
        chunk = os.urandom(MIB)
        step = size_gb * GIB // 16
        per = data_gib * GIB // 16
        fd = os.open(image, os.O_WRONLY)
        try:
            for region in range(16):
                for offset in range(0, per, MIB):
                    os.pwrite(fd, chunk, region * step + offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        return image

    def delete(self, name):
        info = self.run('volume_info', name=name)['volumes']
        if info:
            if info[0]['status'] == 'in-use':
                self.run('volume', name=name, state='detached')
            self.run('volume', name=name, state='absent')


def writer_latencies(path, count=64, data=None):
    """Seconds of each 1 MiB pwrite + fdatasync at spread offsets of ``path`` (the same 1 MiB ``data``,
    random unless given, at offset (i * 7919 MiB) mod (size - 1 MiB) for the i-th write)."""
    data = data if data is not None else os.urandom(MIB)
    fd = os.open(path, os.O_WRONLY)
    out = []
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        for i in range(count):
            t0 = time.perf_counter()
            os.pwrite(fd, data, (i * 7919 * MIB) % (size - MIB))
            os.fdatasync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return out


def _stop_daemon(pidfile):
    """SIGTERM to the storage daemon of ``pidfile`` (it flushes and unmounts), then wait until it is gone."""
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _attempt in range(3000):
        if not os.path.exists('/proc/%d' % pid):
            return
        time.sleep(0.01)
    os.kill(pid, 9)


def writer_through_nbd_hop(image, work, count=64, data=None):
    """The same writer through the attachment's path during a pull minus the pull: a FUSE export whose
    node is an NBD client of a second storage daemon that exports the raw ``image`` as the plain
    attachment opens it (page cache, no qcow2 overlay, no job). A writable FUSE export takes QEMU's
    RESIZE permission, which block-stream does not share, so an attachment during a pull reads and
    writes through such an NBD hop (docs/volumes.md); this measures what the hop alone costs."""
    server_pid, fuse_pid = work / 'hop-nbd.pid', work / 'hop-fuse.pid'
    socket_path, mountpoint = work / 'hop.sock', work / 'hop.attachment'
    mountpoint.write_bytes(b'')
    subprocess.run(['qemu-storage-daemon', '--pidfile', str(server_pid),
                    '--blockdev', json.dumps({'driver': 'file', 'node-name': 'file0', 'filename': str(image),
                                              'cache': {'direct': False}}),
                    '--blockdev', json.dumps({'driver': 'raw', 'node-name': 'vol', 'file': 'file0'}),
                    '--nbd-server', json.dumps({'addr': {'type': 'unix', 'path': str(socket_path)}}),
                    '--export', json.dumps({'type': 'nbd', 'id': 'hop', 'node-name': 'vol', 'name': 'vol',
                                            'writable': True}),
                    '--daemonize'], check=True)
    try:
        subprocess.run(['qemu-storage-daemon', '--pidfile', str(fuse_pid),
                        '--blockdev', json.dumps({'driver': 'nbd', 'node-name': 'vol', 'export': 'vol',
                                                  'server': {'type': 'unix', 'path': str(socket_path)}}),
                        '--export', json.dumps({'type': 'fuse', 'id': 'hop', 'node-name': 'vol',
                                                'mountpoint': str(mountpoint), 'writable': True}),
                        '--daemonize'], check=True)
        try:
            return writer_latencies(str(mountpoint), count, data)
        finally:
            _stop_daemon(fuse_pid)
    finally:
        _stop_daemon(server_pid)
        for path in (socket_path, mountpoint):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def summary(latencies):
    ordered = sorted(latencies)
    return {'median_ms': round(statistics.median(ordered) * 1000, 1),
            'p95_ms': round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 1)}


def warm_tools():
    """Read the QEMU binaries once (the page cache was dropped): the timing is the migration's, not a cold
    load of qemu-img and qemu-storage-daemon with their libraries."""
    for tool in ('qemu-img', 'qemu-io', 'qemu-storage-daemon'):
        subprocess.run([tool, '--version'], capture_output=True, check=False)


def bare_copy(image, size_gb, work):
    """Seconds of a bare ``qemu-img convert -n -S 4k`` of ``image`` (page cache dropped first), and the
    same plus the flush of the copy to disk (``sync -d``) that the bare copy does not do."""
    target = work / 'bare.raw'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', str(target), '%dG' % size_gb], check=True)
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run(['qemu-img', 'convert', '-n', '-S', '4k', '-f', 'raw', '-O', 'raw', image, str(target)], check=True)
    bare = time.perf_counter() - t0
    subprocess.run(['sync', '-d', str(target)], check=True)
    flushed = time.perf_counter() - t0
    target.unlink()
    return bare, flushed


def median(values):
    return round(statistics.median(values), 2)


def host_copy(lab, results, rounds):
    """Bare copy and ours alternately, ``rounds`` times (the volume goes back and forth between the pools)."""
    lab.volume('hc', 4)
    bares, flushed, ours, copies, verifies = [], [], [], [], []
    for round_ in range(rounds):
        image = lab.run('volume_info', name='hc')['volumes'][0]['path']
        bare, bare_flushed = bare_copy(image, 4, lab.work)
        bares.append(bare)
        flushed.append(bare_flushed)
        drop_caches()
        lab.run('volume_info', name='hc')  # warm the module's Python, not the volume's data
        warm_tools()
        host = 'localhost@bench#%s' % ('dst' if round_ % 2 == 0 else 'src')
        t0 = time.perf_counter()
        # one task that waits, as a playbook runs it (wait: true); the copy's end is seen at once
        result = lab.run('volume_migrate', volume='hc', host=host, force_host_copy=True, wait=True, wait_sleep=1)
        ours.append(time.perf_counter() - t0)
        assert result['volume']['migration_status'] == 'success', result
        copies.append(result['migration']['copy_seconds'])
        verifies.append(result['migration']['verify_seconds'])
        log('host copy round %d: bare %.2f s (%.2f s with its flush), ours (verified, flushed) %.2f s '
            '(the copier %.2f s, the verification %.2f s)' % (round_ + 1, bare, bare_flushed, ours[-1], copies[-1], verifies[-1]))
    entry = {'volume_gib': 4, 'data_gib': 1, 'rounds': rounds, 'bare_seconds': median(bares),
             'bare_flushed_seconds': median(flushed), 'ours_seconds': median(ours),
             'ours_copy_seconds': median(copies), 'ours_verify_seconds': median(verifies),
             'ratio': round(statistics.median(ours) / statistics.median(bares), 2),
             'ratio_vs_flushed_bare': round(statistics.median(ours) / statistics.median(flushed), 2),
             'target': '<= 1.2', 'all': {'bare': [round(x, 2) for x in bares], 'bare_flushed': [round(x, 2) for x in flushed],
                                         'ours': [round(x, 2) for x in ours], 'ours_copy': copies,
                                         'ours_verify': verifies}}
    results['host_copy'] = entry
    log('host copy: medians bare %.2f s (flushed %.2f s), ours %.2f s, ratio %.2f (%.2f vs the flushed bare copy)'
        % (entry['bare_seconds'], entry['bare_flushed_seconds'], entry['ours_seconds'], entry['ratio'],
           entry['ratio_vs_flushed_bare']))
    lab.delete('hc')


def async_round(lab, size_gb, measure_writer):
    name = 'as%d' % size_gb
    image = lab.volume(name, size_gb)
    bare, _flushed = bare_copy(image, size_gb, lab.work)
    entry = {'bare_copy_seconds': bare}
    if measure_writer:
        attached = lab.run('volume', name=name, state='attached')
        entry['writer_without_migration'] = writer_latencies(attached['attachment']['path'])
        lab.run('volume', name=name, state='detached')
        entry['writer_through_nbd_hop'] = writer_through_nbd_hop(image, lab.work)
        # the writers' data changed the source: the bare copy above still has the same size and layout
    drop_caches()
    lab.run('volume_info', name=name)  # the module's Python is read again: the timing is the migration's, not a cold import
    warm_tools()
    t0 = time.perf_counter()
    started = lab.run('volume_migrate', volume=name, host='localhost@bench#dst', async_migration=True, wait=False)
    entry['attachable_seconds'] = time.perf_counter() - t0
    assert started['volume']['migration_status'] == 'migrating_attachable', started
    if measure_writer:
        attached = lab.run('volume', name=name, state='attached')
        entry['writer_during_pull'] = writer_latencies(attached['attachment']['path'])
    # then one task that waits, as a playbook runs it (wait: true); the pull's end is seen at once
    step = lab.run('volume_migrate', volume=name, host='localhost@bench#dst', async_migration=True, wait=True,
                   wait_sleep=1)
    entry['pull_seconds'] = time.perf_counter() - t0
    assert step['volume']['migration_status'] == 'success', step
    # the pull job alone: from its start (in the first run) until the waiting run saw it end
    entry['pull_job_seconds'] = step['migration']['copy_seconds']
    entry['verify_seconds'] = step['migration']['verify_seconds']
    entry['verified'] = step['migration'].get('verified')
    lab.delete(name)
    return entry


def async_migration(lab, results, size_gb, measure_writer, rounds):
    runs = [async_round(lab, size_gb, measure_writer) for _round in range(rounds)]
    bare = statistics.median(r['bare_copy_seconds'] for r in runs)
    pull = statistics.median(r['pull_seconds'] for r in runs)
    job = statistics.median(r['pull_job_seconds'] for r in runs)
    entry = {'volume_gib': size_gb, 'data_gib': 1, 'rounds': rounds, 'bare_copy_seconds': round(bare, 2),
             'attachable_seconds': median([r['attachable_seconds'] for r in runs]),
             'pull_job_seconds': round(job, 2), 'pull_job_throughput_vs_bare': round(bare / job, 2),
             'verify_seconds': median([r['verify_seconds'] for r in runs]),
             'pull_seconds': round(pull, 2), 'throughput_vs_bare': round(bare / pull, 2),
             'verified': [r['verified'] for r in runs],
             'all': {k: [round(r[k], 2) for r in runs]
                     for k in ('bare_copy_seconds', 'attachable_seconds', 'pull_job_seconds', 'verify_seconds', 'pull_seconds')}}
    if measure_writer:
        without = [x for r in runs for x in r['writer_without_migration']]
        during = [x for r in runs for x in r['writer_during_pull']]
        entry['writer_without_migration'] = summary(without)
        entry['writer_during_pull'] = summary(during)
        entry['writer_latency_ratio'] = round(entry['writer_during_pull']['median_ms']
                                              / entry['writer_without_migration']['median_ms'], 2)
        hop = [x for r in runs for x in r['writer_through_nbd_hop']]
        entry['writer_through_nbd_hop'] = summary(hop)
        entry['nbd_hop_latency_ratio'] = round(entry['writer_through_nbd_hop']['median_ms']
                                               / entry['writer_without_migration']['median_ms'], 2)
    results['async_%dg' % size_gb] = entry
    log('async %d GiB (median of %d): attachable after %.2f s, pull job %.2f s (bare copy %.2f s, %.2f of its '
        'throughput), until success with the verification (%.2f s) %.2f s (%.2f)%s'
        % (size_gb, rounds, entry['attachable_seconds'], job, bare, bare / job, entry['verify_seconds'], pull, bare / pull,
           ', writer median %.1f ms during the pull vs %.1f ms without (%.1f ms through the NBD hop alone)' % (
               entry['writer_during_pull']['median_ms'], entry['writer_without_migration']['median_ms'],
               entry['writer_through_nbd_hop']['median_ms'])
           if measure_writer else ''))


def main(work_dir='/var/tmp', out=None, rounds=3):
    rounds = int(rounds)
    if os.geteuid() != 0:
        log('needs root (FUSE exports, dropping the page cache)')
        return 2
    for tool in ('qemu-img', 'qemu-io', 'qemu-storage-daemon', 'fusermount3'):
        if not shutil.which(tool):
            log('needs %s (scripts/setup.sh)' % tool)
            return 2
    work = Path(tempfile.mkdtemp(prefix='mobility-bench-volumes-', dir=work_dir))
    lab = Lab(work)
    results = {'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'work_dir': str(work),
               'load_average_at_start': list(os.getloadavg())}
    begun = time.perf_counter()
    try:
        host_copy(lab, results, rounds)
        async_migration(lab, results, 1, measure_writer=True, rounds=rounds)
        async_migration(lab, results, 16, measure_writer=False, rounds=rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results['seconds'] = round(time.perf_counter() - begun, 1)
    results['load_average_at_end'] = list(os.getloadavg())
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
