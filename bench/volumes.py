# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of volume migration on driver ``file`` (issue 19's speed targets), apart from the
default benchmark so that the default run stays short:

    python bench/run.py --volumes [--work-dir /var/tmp] [--out FILE]

1. Host copy of a 4 GiB sparse raw volume with 1 GiB of data (``volume_migrate force_host_copy``,
   verification included) against a bare ``qemu-img convert -n -S 4k`` of the same image.
2. Asynchronous migration (``async_migration``): seconds until ``migrating_attachable`` for a 1 GiB
   and a 16 GiB volume (1 GiB of data each); the pull's throughput against the bare copy of the
   same volume; a writer's 1 MiB write+fsync latency on the attached volume with and without a pull.

Each module runs as Ansible runs it (its own process, JSON arguments), so the figures include the
module start-up. The page cache is dropped before each timed copy when possible (root).
See docs/performance.md.
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


def writer_latencies(path, count=64):
    """Seconds of each 1 MiB pwrite + fdatasync at spread offsets of ``path``."""
    data = os.urandom(MIB)
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


def summary(latencies):
    ordered = sorted(latencies)
    return {'median_ms': round(statistics.median(ordered) * 1000, 1),
            'p95_ms': round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 1)}


def host_copy(lab, results):
    image = lab.volume('hc', 4)
    target = lab.work / 'bare.raw'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', str(target), '4G'], check=True)
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run(['qemu-img', 'convert', '-n', '-S', '4k', '-f', 'raw', '-O', 'raw', image, str(target)], check=True)
    bare = time.perf_counter() - t0
    target.unlink()
    drop_caches()
    lab.run('volume_info', name='hc')  # warm the module's Python, not the volume's data
    t0 = time.perf_counter()
    result = lab.run('volume_migrate', volume='hc', host='localhost@bench#dst', force_host_copy=True, wait=False)
    while result['volume']['migration_status'] in ('starting', 'migrating', 'completing'):
        time.sleep(0.2)
        result = lab.run('volume_migrate', volume='hc', host='localhost@bench#dst', force_host_copy=True, wait=False)
    ours = time.perf_counter() - t0
    assert result['volume']['migration_status'] == 'success', result
    results['host_copy'] = {'volume_gib': 4, 'data_gib': 1, 'bare_seconds': round(bare, 2),
                            'ours_seconds': round(ours, 2), 'ratio': round(ours / bare, 2), 'target': '<= 1.2'}
    log('host copy: bare %.2f s, ours (verified) %.2f s, ratio %.2f' % (bare, ours, ours / bare))
    lab.delete('hc')
    return bare


def async_migration(lab, results, size_gb, measure_writer):
    name = 'as%d' % size_gb
    image = lab.volume(name, size_gb)
    target = lab.work / 'bare.raw'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', str(target), '%dG' % size_gb], check=True)
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run(['qemu-img', 'convert', '-n', '-S', '4k', '-f', 'raw', '-O', 'raw', image, str(target)], check=True)
    bare = time.perf_counter() - t0
    target.unlink()
    entry = {'volume_gib': size_gb, 'data_gib': 1, 'bare_copy_seconds': round(bare, 2)}
    if measure_writer:
        attached = lab.run('volume', name=name, state='attached')
        entry['writer_without_migration'] = summary(writer_latencies(attached['attachment']['path']))
        lab.run('volume', name=name, state='detached')
        # the writer's data changed the source: the bare copy above still has the same size and layout
    drop_caches()
    lab.run('volume_info', name=name)  # the module's Python is read again: the timing is the migration's, not a cold import
    t0 = time.perf_counter()
    started = lab.run('volume_migrate', volume=name, host='localhost@bench#dst', async_migration=True, wait=False)
    attachable = time.perf_counter() - t0
    assert started['volume']['migration_status'] == 'migrating_attachable', started
    entry['attachable_seconds'] = round(attachable, 2)
    if measure_writer:
        attached = lab.run('volume', name=name, state='attached')
        entry['writer_during_pull'] = summary(writer_latencies(attached['attachment']['path']))
        entry['writer_latency_ratio'] = round(entry['writer_during_pull']['median_ms']
                                              / entry['writer_without_migration']['median_ms'], 2)
    while True:
        step = lab.run('volume_migrate', volume=name, host='localhost@bench#dst', async_migration=True, wait=False)
        if step['volume']['migration_status'] not in ('migrating_attachable', 'completing'):
            break
        time.sleep(0.2)
    pull = time.perf_counter() - t0
    assert step['volume']['migration_status'] == 'success', step
    entry.update(pull_seconds=round(pull, 2), throughput_vs_bare=round(bare / pull, 2),
                 verified=step['migration'].get('verified'))
    results['async_%dg' % size_gb] = entry
    log('async %d GiB: attachable after %.2f s, pull %.2f s (bare copy %.2f s, %.2f of its throughput)%s'
        % (size_gb, attachable, pull, bare, bare / pull,
           ', writer median %.1f ms during the pull vs %.1f ms without' % (
               entry['writer_during_pull']['median_ms'], entry['writer_without_migration']['median_ms'])
           if measure_writer else ''))
    lab.delete(name)


def main(work_dir='/var/tmp', out=None):
    if os.geteuid() != 0:
        log('needs root (FUSE exports, dropping the page cache)')
        return 2
    for tool in ('qemu-img', 'qemu-storage-daemon', 'fusermount3'):
        if not shutil.which(tool):
            log('needs %s (scripts/setup.sh)' % tool)
            return 2
    work = Path(tempfile.mkdtemp(prefix='mobility-bench-volumes-', dir=work_dir))
    lab = Lab(work)
    results = {'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'work_dir': str(work)}
    begun = time.perf_counter()
    try:
        host_copy(lab, results)
        async_migration(lab, results, 1, measure_writer=True)
        async_migration(lab, results, 16, measure_writer=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results['seconds'] = round(time.perf_counter() - begun, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
