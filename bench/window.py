# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The read-only window of a writable migration, through the operator's playbooks, against a plain
incremental ``rsync -aHAX`` of the same change (issue 20's target: at most 1.2x at 1,000,000 files).

    sudo -E env PATH="$PATH" python bench/window.py [--files N] [--dirs N] [--out FILE]

As root only (the share is bind-exported, so read-only really refuses writes, as for users): an ext4
pool and an xfs pool on loop devices under ``--work-dir``, one posix backend, this machine as data
node. Steps:

1. a share is created in the ext4 pool with the playbooks' modules and filled with ``--files`` files
   of 1 KiB in ``--dirs`` folders (bench/run.py's D4 layout); a second copy of the same bytes beside
   it is the plain rsync's source;
2. phase 1 of a writable migration (``migrate_share.yml -e writable=true``) to the xfs pool, and a
   plain ``rsync -aHAX`` of the second copy into the xfs filesystem (both timed, for information);
3. 1% of the files change in both sources alike (bench/run.py's cutover change: half rewritten with
   the same size and an mtime in the same second, half grown);
4. the page cache is dropped and the programs loaded again (a ``share_info`` run, an rsync of one
   file), then phase 2 (``complete_share_migration.yml``) is timed and the share's record gives the
   read-only window (``migration.read_only_seconds``: from the read-only point to the switch); then,
   cache dropped again, the plain incremental ``rsync -aHAX`` (and a ``syncfs``) is timed;
5. every changed file is compared by hash between the plain source and the share's new instance,
   and the same for the plain rsync's destination (which misses the same-second, same-size ones).

Writes a JSON file (``bench/results/window.json`` unless ``--out``) and prints PASS/FAIL for the
target (``pass`` in the JSON; the exit status is 0 either way once the figures are written).
See docs/performance.md ("The read-only window through the playbooks").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: data layout, loop filesystems, caches, the change)

REPO = bench.REPO
PLAYBOOKS = REPO / 'playbooks'
HOST, BACKEND, SHARE = 'stor1', 'generic1', 'window'
TARGET = 1.2
GIB = 1024 * bench.MIB


def log(message):
    bench.log('window: ' + message)


class Lab:
    """The two pools, the inventory and the playbook runs."""

    def __init__(self, work, fs, poll_seconds):
        self.work = work
        self.fs = fs
        self.pools = {'alpha': fs.src / 'alpha', 'beta': fs.dst / 'beta'}
        self.exports = work / 'exports'
        for path in list(self.pools.values()) + [self.exports]:
            path.mkdir(parents=True, exist_ok=True)
        self.poll_seconds = poll_seconds
        backend = {'name': BACKEND, 'driver': 'posix', 'host': HOST,
                   'pools': dict((name, {'path': str(path)}) for name, path in self.pools.items()),
                   'export': {'helper': 'bind', 'root': str(self.exports)}}
        self.inventory = work / 'inventory.json'
        self.inventory.write_text(json.dumps({'all': {
            'hosts': {'localhost': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}},
            'vars': {'mobility_backends': [backend]},
            'children': {'data_nodes': {'hosts': {'localhost': {}}}}}}, indent=2))
        # The Ansible settings and collection path of bench/run.py's runs of ours.
        (work / 'ours').mkdir()
        self.env = dict(bench.Ours(work / 'ours').env, ANSIBLE_LOG_PATH=str(work / 'ansible.log'))  # timestamped
        self.ansible_playbook = str(Path(sys.executable).parent / 'ansible-playbook')
        if not os.path.exists(self.ansible_playbook):
            self.ansible_playbook = shutil.which('ansible-playbook') or 'ansible-playbook'
        self.runs = 0

    def play(self, playbook, extra, label):
        """Run one playbook; returns (seconds, output). Fails with the output's tail."""
        self.runs += 1
        log_file = self.work / ('%02d-%s.log' % (self.runs, label))
        started = time.perf_counter()
        with open(log_file, 'wb') as handle:
            rc = subprocess.call([self.ansible_playbook, '-i', str(self.inventory), str(playbook), '-e', json.dumps(extra)],
                                 env=self.env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=str(self.work))
        seconds = time.perf_counter() - started
        output = log_file.read_text(errors='replace')
        if rc:
            raise RuntimeError('ansible-playbook %s (%s) failed with %d:\n%s' % (playbook.name, label, rc, output[-4000:]))
        return seconds, output

    def module_play(self, label, tasks):
        playbook = self.work / ('%s.json' % label)
        playbook.write_text(json.dumps([{
            'hosts': 'localhost', 'gather_facts': False,
            'module_defaults': {'group/storage.mobility.mobility': {'backends': '{{ mobility_backends }}'}},
            'tasks': tasks}]))
        return self.play(playbook, {}, label)

    def share_path(self, pool):
        return self.pools[pool] / 'shares' / SHARE

    def record(self):
        """The share's authoritative record (the highest revision found in the pools)."""
        found = []
        for path in self.pools.values():
            try:
                found.append(json.loads((path / '.mobility' / 'shares' / ('%s.json' % SHARE)).read_text()))
            except (OSError, ValueError):
                pass
        if not found:
            raise RuntimeError('no record of share %s in the pools' % SHARE)
        return max(found, key=lambda record: int(record.get('revision', 0)))


def history_gap(record, first, then):
    """Seconds between the last history events ``first`` and ``then`` of a record (the switch's seals
    of both instances lie between 'final pass verified' and the sealed event), or None."""
    stamps = {}
    for item in record.get('history') or []:
        if item.get('event') in (first, then):
            stamps[item['event']] = datetime.datetime.fromisoformat(item['at'].replace('Z', '+00:00'))
    if first not in stamps or then not in stamps:
        return None
    return round((stamps[then] - stamps[first]).total_seconds(), 3)


def timed_rsync(src, dst):
    started = time.perf_counter()
    bench.run_cmd(['rsync', '-aHAX', str(src) + '/', str(dst) + '/'])
    bench.flush(dst)
    return time.perf_counter() - started


def rsync_warmup(work):
    """rsync's program back in memory after a cache drop (a one-file copy on the work folder)."""
    src, dst = work / 'warm-src', work / 'warm-dst'
    shutil.rmtree(dst, ignore_errors=True)
    src.mkdir(exist_ok=True)
    (src / 'file').write_bytes(b'storage.mobility window warm-up\n')
    bench.run_cmd(['rsync', '-aHAX', str(src) + '/', str(dst) + '/'])


def unmount_below(base, keep):
    """Unmount what the run left mounted under ``base`` (the share's bind export, a job's mount
    points), deepest first, except the loop filesystems in ``keep`` (Filesystems.cleanup's)."""
    out = subprocess.run(['findmnt', '-rn', '-o', 'TARGET'], stdout=subprocess.PIPE, check=False)
    points = [p.replace('\\x20', ' ') for p in out.stdout.decode().splitlines() if p.startswith(str(base) + '/')]
    for point in sorted(points, key=len, reverse=True):
        if Path(point) not in keep:
            subprocess.run(['umount', point], check=False, stderr=subprocess.DEVNULL)


def measure(opts, work):
    files, dirs = opts.files, max(1, min(opts.dirs, opts.files))
    per_dir = -(-files // dirs)
    plan = {'files': [('d%05d/f%07d.dat' % (i // per_dir, i), opts.kib * bench.KIB) for i in range(files)], 'small': True}
    disk = files * -(-opts.kib * bench.KIB // bench.BLOCK) * bench.BLOCK + (dirs + 10) * bench.BLOCK
    entries = files + dirs + 10
    # Two copies on each filesystem (the share's instance and the plain rsync's tree). The xfs image
    # gets half as much again: at a million 1 KiB files written by several processes at once its free
    # space fragments, and xfs then fails to allocate inode chunks (ENOSPC) with a quarter of it free.
    fs = bench.Filesystems(work, 'loop', 2 * disk, 3 * disk, 2 * entries, src_inodes=int(2 * entries * 1.25) + 65536)
    try:
        return _measure(opts, work, fs, plan, files, dirs)
    finally:
        unmount_below(work, set(fs.mounted))
        fs.cleanup()


def _measure(opts, work, fs, plan, files, dirs):
    lab = Lab(work, fs, opts.poll_seconds)
    alpha, beta = '%s@%s#alpha' % (HOST, BACKEND), '%s@%s#beta' % (HOST, BACKEND)
    size_gib = max(1, -(-2 * files * opts.kib * bench.KIB // GIB))
    lab.module_play('create', [{'name': 'Create the share', 'storage.mobility.share': {
        'name': SHARE, 'pool': alpha, 'size': size_gib,
        'access_rules': [{'access_to': '127.0.0.1', 'access_level': 'rw'}]}}])
    block = bench.Block(opts.seed)
    plain_src, plain_dst = fs.src / 'plain', fs.dst / 'plain'
    started = time.perf_counter()
    for root in (lab.share_path('alpha'), plain_src):
        # The same seeded bytes and timestamps twice (write_small_files writes under root/name).
        root.mkdir(parents=True, exist_ok=True)
        bench.write_small_files(root, '.', plan, block, opts.seed)
    log('%d files in %d folders written twice in %.1f s' % (files, dirs, time.perf_counter() - started))
    plain_dst.mkdir()

    bench.drop_caches()
    variables = {'share': SHARE, 'destination_pool': beta, 'writable': True, 'mobility_poll_seconds': opts.poll_seconds}
    phase1, _out = lab.play(PLAYBOOKS / 'migrate_share.yml', variables, 'phase1')
    record = lab.record()
    log('phase 1 (writable) %.2f s, task_state %s' % (phase1, record.get('task_state')))
    if record.get('task_state') != 'data_copying_completed':
        raise RuntimeError('phase 1 ended in task_state %s: %s' % (record.get('task_state'), record.get('migration', {}).get('error')))
    bench.drop_caches()
    rsync_warmup(work)
    rsync_phase1 = timed_rsync(plain_src, plain_dst)
    log('plain rsync -aHAX phase 1 %.2f s' % rsync_phase1)

    stats = bench.tree_stats(plain_src)
    changes = []
    for root in (lab.share_path('alpha'), plain_src):
        changes.append(bench.modify_one_percent(root, stats, block, opts.seed + 1000))
    if changes[0] != changes[1]:
        raise RuntimeError('the two sources did not change alike')
    same_second, grown = changes[0]
    changed = same_second + grown

    bench.drop_caches()
    lab.module_play('warmup', [{'name': 'Read the share (loads Ansible and the collection)',
                                'storage.mobility.share_info': {'name': SHARE}}])
    phase2, output = lab.play(PLAYBOOKS / 'complete_share_migration.yml',
                              {'share': SHARE, 'mobility_poll_seconds': opts.poll_seconds}, 'phase2')
    record = lab.record()
    mig = record.get('migration') or {}
    if record.get('task_state') != 'migration_success':
        raise RuntimeError('phase 2 ended in task_state %s: %s' % (record.get('task_state'), mig.get('error')))
    final = mig.get('final_copy') or {}
    window = mig.get('read_only_seconds')
    seals = history_gap(record, 'final pass verified', 'both instances sealed as the final pass verified them: switching')
    log('phase 2 %.2f s; read-only window %s s; final pass %s' % (phase2, window, final.get('timing')))

    bench.drop_caches()
    rsync_warmup(work)
    rsync_final = timed_rsync(plain_src, plain_dst)
    log('plain incremental rsync -aHAX %.2f s' % rsync_final)

    new_path = Path([i for i in record['instances'] if i.get('role', 'active') == 'active'][0]['path'])
    ours_missed = bench.content_misses(plain_src, new_path, changed)
    rsync_missed = bench.content_misses(plain_src, plain_dst, changed)
    ratio = window / rsync_final if window is not None and rsync_final else None
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith('"read-only') or
             line.strip().startswith('"final pass') or line.strip().startswith('"switchover')]
    return {
        'files': files, 'folders': dirs, 'file_kib': opts.kib, 'poll_seconds': opts.poll_seconds,
        'source_fs': fs.fstype(fs.src).split()[0], 'destination_fs': fs.fstype(fs.dst).split()[0],
        'phase1_seconds': phase1, 'rsync_phase1_seconds': rsync_phase1,
        'changed_files': len(changed), 'changed_same_size_same_second': len(same_second),
        'phase2_seconds': phase2, 'read_only_seconds': window,
        'switchover_seconds': mig.get('switchover_seconds'), 'switch_seal_seconds': seals,
        'final_copy': dict((key, final.get(key)) for key in (
            'timing', 'copy_engine', 'changes_pass', 'copy_seconds', 'verify_seconds', 'verified_at')),
        'final_verified': mig.get('final_verified'),
        'rsync_seconds': rsync_final, 'ratio': ratio,
        'ours_missed': len(ours_missed), 'rsync_missed': len(rsync_missed),
        'rsync_missed_same_second': len(set(rsync_missed) & set(same_second)),
        'playbook_summary': lines,
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--files', type=int, default=100000, help='files of the share (1,000,000 for the target)')
    parser.add_argument('--dirs', type=int, default=None, help='folders (default: one per 100 files)')
    parser.add_argument('--kib', type=int, default=1, help='size of each file in KiB')
    parser.add_argument('--seed', type=int, default=42)
    parser.add_argument('--poll-seconds', type=int, default=10,
                        help="the playbooks' poll interval (mobility_poll_seconds; a poll returns as soon as the job ends)")
    parser.add_argument('--work-dir', default='/var/tmp')
    parser.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'window.json'))
    parser.add_argument('--keep', action='store_true', help='keep the work folder (logs, inventory)')
    opts = parser.parse_args(argv)
    if opts.files < 100:
        parser.error('--files must be at least 100 (1%% of them change)')
    if opts.dirs is None:
        opts.dirs = max(1, opts.files // 100)
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit('bench/window.py needs root: loop devices, and bind exports that really refuse writes')
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix='mobility-window-', dir=opts.work_dir))
    log('work folder %s' % work)
    try:
        result = measure(opts, work)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    result.update(date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                  commit=subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, check=False).stdout.decode().strip() or None,
                  command='python bench/window.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
                  target=TARGET, cpus=os.cpu_count(), load_before=load_before, load_after=os.getloadavg())
    result['pass'] = bool(result['ratio'] is not None and result['ratio'] <= TARGET and not result['ours_missed'])
    verdict = 'PASS' if result['pass'] else 'FAIL'
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    print('\nread-only window of a writable migration, %d files (%s -> %s), %d changed (%d same size, same second):'
          % (result['files'], result['source_fs'], result['destination_fs'], result['changed_files'],
             result['changed_same_size_same_second']))
    print('  phase 2 through the playbooks   %8.2f s  (read-only window %s s, final pass %s)'
          % (result['phase2_seconds'], result['read_only_seconds'], result['final_copy'].get('timing')))
    print('  of which the switch sealed both instances in %s s' % result['switch_seal_seconds'])
    print('  plain incremental rsync -aHAX   %8.2f s' % result['rsync_seconds'])
    print('  window / rsync                  %8.2f    target <= %.1f: %s; changes missed: ours %d, rsync %d'
          % (result['ratio'] or float('nan'), TARGET, verdict, result['ours_missed'], result['rsync_missed']))
    print('figures written to %s' % out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
