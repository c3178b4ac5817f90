# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of share replication (issue 18) against the bare tools, in one run (as root).

    python bench/replication.py [--files N] [--out FILE]
    python bench/run.py --replication [--files N]       # the same, from the main bench

Two btrfs filesystems and an ext4 and an xfs one, on loop devices. A share of N files (seeded
sizes, 1-64 KiB) gets a replica; then 1% of its files change and three things are timed, each
against its baseline on the same change of the same data:

* btrfs replica update (share_replica resynced) vs bare ``btrfs subvolume snapshot -r`` +
  ``btrfs send -p | btrfs receive`` of a copy of the data, in three rounds (the ratio is the mean
  of rounds 2 and 3, the steady state, one with ours timed first and one with the bare run first;
  the first update after the full copy is reported beside it);
* posix replica update (ext4 to xfs) vs plain ``rsync -aHAX --delete`` of a copy of the data, in
  two rounds (ours first, then the plain rsync first; the ratio is of the means);
* failback (after a planned promotion and 1% changed on the new active, the old active's resync)
  vs one incremental update, with the bytes sent vs the bytes of the changed files.

Every timed run starts after a ``sync`` and 0.1 s without writes (``QUIET_SECONDS``).

Prints the ratios and writes a JSON file. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20


def run(argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs)


def import_collection():
    collections = REPO / '.venv' / 'collections'
    if collections.is_dir() and str(collections) not in sys.path:
        sys.path.insert(0, str(collections))
    from ansible_collections.storage.mobility.plugins.module_utils.context import Context
    from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager
    from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
    return Context, LocalReplicaManager, ShareManager


def write_data(root: Path, files: int, seed: int):
    rng = random.Random(seed)
    for index in range(files):
        folder = root / ('d%03d' % (index // 100))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ('f%06d' % index)).write_bytes(rng.randbytes(rng.randint(1, 64) * 1024))


def change_one_percent(roots, files: int, seed: int):
    """Rewrite the same 1% of the files (same new bytes) in every root; return the bytes changed."""
    rng = random.Random(seed)
    picked = rng.sample(range(files), max(1, files // 100))
    changed = 0
    for index in picked:
        data = rng.randbytes(rng.randint(1, 64) * 1024)
        changed += len(data)
        for root in roots:
            (root / ('d%03d' % (index // 100)) / ('f%06d' % index)).write_bytes(data)
    return changed


#: seconds without writes before every timed run, after its ``sync``: a posix update that starts within
#: 0.05 s of the last write to the share takes a second pass (posix.CTIME_MARGIN: the kernel stamps change
#: times with a coarse clock), and the rounds compare the single passes of ours with the plain runs.
QUIET_SECONDS = 0.1


def quiet():
    run(['sync'])
    time.sleep(QUIET_SECONDS)


def send_receive(snapshot, parent, destination):
    """``btrfs send [-p parent] snapshot | btrfs receive destination``: (seconds, stream bytes)."""
    argv = ['btrfs', 'send', '-q'] + (['-p', str(parent)] if parent else []) + [str(snapshot)]
    start = time.monotonic()
    sender = subprocess.Popen(argv, stdout=subprocess.PIPE)
    receiver = subprocess.Popen(['btrfs', 'receive', '-q', str(destination)], stdin=subprocess.PIPE)
    sent = 0
    while True:
        chunk = sender.stdout.read(CHUNK)
        if not chunk:
            break
        sent += len(chunk)
        receiver.stdin.write(chunk)
    receiver.stdin.close()
    if sender.wait() or receiver.wait():
        raise SystemExit('btrfs send/receive failed')
    return time.monotonic() - start, sent


class Lab:
    def __init__(self, base: Path, image_mb: int):
        self.base = base
        self.image_mb = image_mb
        self.mounts = {}

    def filesystem(self, name, kind):
        image, point = self.base / (name + '.img'), self.base / name
        point.mkdir()
        run(['truncate', '-s', '%dM' % self.image_mb, image])
        run({'btrfs': ['mkfs.btrfs', '-q', '-f'], 'ext4': ['mkfs.ext4', '-q', '-F'],
             'xfs': ['mkfs.xfs', '-q', '-f']}[kind] + [image])
        run(['mount', '-o', 'loop', image, point])
        self.mounts[name] = (point, image)
        return point

    def close(self):
        for point, image in self.mounts.values():
            subprocess.run(['umount', str(point)], check=False)
            found = subprocess.run(['losetup', '-j', str(image)], capture_output=True, text=True, check=False)
            for line in found.stdout.splitlines():
                subprocess.run(['losetup', '-d', line.split(':', 1)[0]], check=False)


def bench(files, seed, base: Path):
    Context, Replicas, Shares = import_collection()
    # mkfs.xfs refuses a filesystem of 300 MB or less
    image_mb = max(320, files * 33 * 3 // 1024 + 128)
    lab = Lab(base, image_mb)
    try:
        points = dict((n, lab.filesystem(n, k)) for n, k in (('a', 'btrfs'), ('b', 'btrfs'), ('c', 'ext4'), ('d', 'xfs')))
        backends = [{'name': 'bt', 'driver': 'btrfs', 'host': 'stor1', 'replication_domain': 'bt',
                     'pools': {'a': {'path': str(points['a'])}, 'b': {'path': str(points['b'])}}},
                    {'name': 'px', 'driver': 'posix', 'host': 'stor1', 'replication_domain': 'px',
                     'pools': {'c': {'path': str(points['c'])}, 'd': {'path': str(points['d'])}}}]
        specs = {'replication_type': 'dr'}
        results = {'files': files}
        # -- btrfs: replica update vs bare send -p | receive
        Shares(Context(backends)).present('s1', 'stor1@bt#a', 1, 'NFS', 'rep', specs, [])
        share = points['a'] / 'shares' / 's1'
        write_data(share, files, seed)
        # The copy first: reading the share sets its files' access times, and a replica point
        # taken before that would make the update below carry 2,000 atime changes the bare
        # send does not have (the 22% larger stream of the first runs).
        bare = points['a'] / 'bare'
        run(['btrfs', 'subvolume', 'create', bare])
        run(['cp', '-a', '--reflink=never', str(share) + '/.', str(bare)])
        Replicas(Context(backends)).present('s1', pool='stor1@bt#b')
        (points['a'] / 'bare-snaps').mkdir()
        (points['b'] / 'bare-recv').mkdir()
        run(['btrfs', 'subvolume', 'snapshot', '-r', bare, points['a'] / 'bare-snaps' / 'p0'])
        send_receive(points['a'] / 'bare-snaps' / 'p0', None, points['b'] / 'bare-recv')
        # Three rounds: the first update after the full copy also deletes the fully received
        # first point, whose cached folder entries the kernel drops then (up to a second at
        # 20,000 files); rounds 2 and 3 are the steady state of a replica updated on a schedule,
        # one with ours timed first and one with the bare run first (what one leaves to the
        # kernel, such as the cleaner's work of deleted subvolumes, lands in the other's time),
        # each after a ``sync``. The ratio is the sum of ours over the sum of the bare runs of
        # rounds 2 and 3.
        rounds = []
        for round_ in (1, 2, 3):
            changed = change_one_percent([share, bare], files, seed + round_)
            snap, parent = points['a'] / 'bare-snaps' / ('p%d' % round_), points['a'] / 'bare-snaps' / ('p%d' % (round_ - 1))

            def timed_ours():
                quiet()
                start = time.monotonic()
                update = Replicas(Context(backends)).resynced('s1', pool='stor1@bt#b')['replica']['last_update']
                return time.monotonic() - start, update

            def timed_bare():
                quiet()
                start = time.monotonic()
                run(['btrfs', 'subvolume', 'snapshot', '-r', bare, snap])
                sent = send_receive(snap, parent, points['b'] / 'bare-recv')[1]
                return time.monotonic() - start, sent
            if round_ == 3:
                bare_seconds, sent = timed_bare()
                ours, update = timed_ours()
            else:
                ours, update = timed_ours()
                bare_seconds, sent = timed_bare()
            # Untimed: the bare side keeps only its newest snapshot on each side (the next
            # parent), as the replica keeps only its base point.
            run(['btrfs', 'subvolume', 'delete', parent, points['b'] / 'bare-recv' / parent.name])
            rounds.append({'ours_seconds': ours, 'ours_driver_seconds': update['seconds'],
                           'ours_bytes': update['bytes'], 'bare_seconds': bare_seconds,
                           'bare_bytes': sent, 'changed_bytes': changed, 'ratio': ours / bare_seconds,
                           'first': 'bare' if round_ == 3 else 'ours'})
        steady = rounds[1:]
        ours = sum(r['ours_seconds'] for r in steady) / len(steady)
        results['btrfs_update'] = dict(rounds[1], first_update=rounds[0], rounds=steady,
                                       ours_seconds=ours,
                                       ours_driver_seconds=sum(r['ours_driver_seconds'] for r in steady) / len(steady),
                                       bare_seconds=sum(r['bare_seconds'] for r in steady) / len(steady),
                                       ratio=ours / (sum(r['bare_seconds'] for r in steady) / len(steady)))
        # -- failback: planned promotion to b, 1% changed there, the old active's resync
        Replicas(Context(backends)).promoted('s1', pool='stor1@bt#b')
        changed = change_one_percent([points['b'] / 'shares' / 's1'], files, seed + 3)
        quiet()
        start = time.monotonic()
        back = Replicas(Context(backends)).resynced('s1', pool='stor1@bt#a')['replica']['last_update']
        failback = time.monotonic() - start
        results['btrfs_failback'] = {'seconds': failback, 'bytes': back['bytes'], 'changed_bytes': changed,
                                     'driver_seconds': back['seconds'],
                                     'incremental': back['incremental'], 'vs_update_ratio': failback / ours,
                                     'bytes_per_changed_byte': back['bytes'] / float(changed)}
        # -- posix (ext4 to xfs): replica update vs plain rsync -aHAX
        Shares(Context(backends)).present('s2', 'stor1@px#c', 1, 'NFS', 'rep', specs, [])
        share = points['c'] / 'shares' / 's2'
        write_data(share, files, seed)
        bare, bare_dst = points['c'] / 'bare', points['d'] / 'bare'
        run(['cp', '-a', str(share), str(bare)])
        # As a share that existed before its replica: a top folder changed within the change-time
        # margin of the first update's point would make the next update copy the whole tree.
        quiet()
        Replicas(Context(backends)).present('s2', pool='stor1@px#d')
        run(['rsync', '-aHAX', '--delete', str(bare) + '/', str(bare_dst) + '/'])
        # Two rounds, ours timed first in one and the plain rsync first in the other, each after
        # a ``sync``; the ratio is the sum of ours over the sum of the plain runs.
        posix_rounds = []
        for round_ in (1, 2):
            changed = change_one_percent([share, bare], files, seed + 10 * round_)

            def timed_ours():
                quiet()
                start = time.monotonic()
                update = Replicas(Context(backends)).resynced('s2', pool='stor1@px#d')['replica']['last_update']
                return time.monotonic() - start, update

            def timed_rsync():
                quiet()
                start = time.monotonic()
                run(['rsync', '-aHAX', '--delete', str(bare) + '/', str(bare_dst) + '/'])
                return time.monotonic() - start
            if round_ == 2:
                rsync_seconds = timed_rsync()
                ours, update = timed_ours()
            else:
                ours, update = timed_ours()
                rsync_seconds = timed_rsync()
            posix_rounds.append({'ours_seconds': ours, 'ours_driver_seconds': update['seconds'],
                                 'ours_bytes': update['bytes'], 'passes': update['passes'],
                                 'incremental': update.get('incremental'),
                                 'full_send_reason': update.get('full_send_reason'),
                                 'rsync_seconds': rsync_seconds, 'changed_bytes': changed,
                                 'ratio': ours / rsync_seconds, 'first': 'rsync' if round_ == 2 else 'ours'})
        ours = sum(r['ours_seconds'] for r in posix_rounds) / len(posix_rounds)
        rsync_seconds = sum(r['rsync_seconds'] for r in posix_rounds) / len(posix_rounds)
        results['posix_update'] = dict(posix_rounds[0], rounds=posix_rounds, ours_seconds=ours,
                                       ours_driver_seconds=sum(r['ours_driver_seconds'] for r in posix_rounds) / 2,
                                       passes=max(r['passes'] for r in posix_rounds),
                                       rsync_seconds=rsync_seconds, ratio=ours / rsync_seconds)
        Replicas(Context(backends)).promoted('s2', pool='stor1@px#d')
        changed = change_one_percent([points['d'] / 'shares' / 's2'], files, seed + 2)
        quiet()
        start = time.monotonic()
        back = Replicas(Context(backends)).resynced('s2', pool='stor1@px#c')['replica']['last_update']
        failback = time.monotonic() - start
        results['posix_failback'] = {'seconds': failback, 'bytes': back['bytes'], 'changed_bytes': changed,
                                     'incremental': back.get('incremental'),
                                     'full_send_reason': back.get('full_send_reason'),
                                     'driver_seconds': back['seconds'], 'passes': back['passes'],
                                     'vs_update_ratio': failback / ours,
                                     'bytes_per_changed_byte': back['bytes'] / float(changed)}
        return results
    finally:
        lab.close()


def walked(update):
    """What a posix update copied: the entries changed since its last point, or the whole tree and why."""
    if update.get('incremental'):
        return 'changed entries'
    return 'whole tree: %s' % (update.get('full_send_reason') or 'no reason recorded')


def report(results):
    b, f, p, pf = (results[k] for k in ('btrfs_update', 'btrfs_failback', 'posix_update', 'posix_failback'))
    lines = ['replication, %d files, 1%% changed' % results['files'],
             'btrfs update / bare send -p|receive: %.2f (%.2fs, of which %.2fs in the driver, vs %.2fs; '
             '%d vs %d bytes sent, %d changed)'
             % (b['ratio'], b['ours_seconds'], b['ours_driver_seconds'], b['bare_seconds'], b['ours_bytes'],
                b['bare_bytes'], b['changed_bytes']),
             '  (rounds, %s)' % '; '.join(
                 '%s first: %.2fs vs %.2fs' % (r['first'], r['ours_seconds'], r['bare_seconds']) for r in b['rounds']),
             '  (first update after the full copy: %.2f, %.2fs vs %.2fs)'
             % (b['first_update']['ratio'], b['first_update']['ours_seconds'], b['first_update']['bare_seconds']),
             'posix update / rsync -aHAX: %.2f (%.2fs, of which %.2fs in the driver, vs %.2fs; %d passes)'
             % (p['ratio'], p['ours_seconds'], p['ours_driver_seconds'], p['rsync_seconds'], p['passes']),
             '  (rounds, %s)' % '; '.join(
                 '%s first: %.2fs vs %.2fs, %s' % (r['first'], r['ours_seconds'], r['rsync_seconds'], walked(r))
                 for r in p['rounds']),
             'btrfs failback / one update: %.2f (%.2fs; %d bytes sent for %d changed: %.2f per changed byte)'
             % (f['vs_update_ratio'], f['seconds'], f['bytes'], f['changed_bytes'], f['bytes_per_changed_byte']),
             'posix failback / one update: %.2f (%.2fs, %d passes, %s; %d bytes sent for %d changed: %.2f per '
             'changed byte)' % (pf['vs_update_ratio'], pf['seconds'], pf['passes'], walked(pf), pf['bytes'],
                                pf['changed_bytes'], pf['bytes_per_changed_byte'])]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--files', type=int, default=2000, help='files in the share (default 2000)')
    parser.add_argument('--seed', type=int, default=20240601)
    parser.add_argument('--work-dir', default='/var/tmp')
    parser.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'replication.json'))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit('bench/replication.py needs root (loop-mounted btrfs, ext4 and xfs)')
    for tool in ('btrfs', 'mkfs.btrfs', 'mkfs.xfs', 'mkfs.ext4', 'rsync', 'losetup'):
        if not shutil.which(tool):
            raise SystemExit('bench/replication.py needs %s' % tool)
    base = Path(tempfile.mkdtemp(prefix='mobility-rep-bench-', dir=args.work_dir))
    try:
        results = bench(args.files, args.seed, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(report(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
