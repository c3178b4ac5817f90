# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of the data mover against the copy limit, the reference method and rsync + sha256sum.

    python bench/run.py [--quick] [--runs N] [--out FILE]
    python bench/run.py --replication [--files N]   # replication instead (bench/replication.py)
    python bench/run.py --ssh-calls [--rounds N]    # a module call over ssh vs a local one (bench/ssh_calls.py)

Generates three data sets (seeded, so every run writes the same bytes), copies each one with every
method between two filesystems (as root: ext4 and xfs on loop devices; otherwise two folders),
with the page cache dropped before each timed run when possible (then, untimed, the method about
to run copies a one-file folder, so that its programs are in memory and its data on the disk),
then times the cutover (a final pass after 1% of the files changed). Every run of ours also records
the peak memory of its job's processes together (bench/peakmem.py). ``--datasets D4`` makes a fourth
set of 1,000,000 files of 1 KiB (``--d4-files`` for fewer). Prints a table and PASS/FAIL per target
and writes a JSON file.
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import peakmem  # noqa: E402  (bench/peakmem.py)
MIB = 1024 * 1024
KIB = 1024

PLAYBOOK = """---
- name: Benchmark one copy through storage.mobility.data_mover (helper none)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Copy and verify with the data_mover role
      ansible.builtin.include_role:
        name: storage.mobility.data_mover
      vars:
        data_mover_job_id: "{{ bench_job_id }}"
        data_mover_source: {helper: none, export: "{{ bench_source }}"}
        data_mover_destination: {helper: none, export: "{{ bench_destination }}"}
        data_mover_state_dir: "{{ bench_state_dir }}"
        data_mover_mount_tmp_location: "{{ bench_mount_tmp }}"
        data_mover_final_pass: "{{ bench_final_pass | bool }}"
"""

STARTUP_PLAYBOOK = """---
- name: Start-up cost of ansible-playbook and one data_copy module call
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Ask for a job that does not exist
      storage.mobility.data_copy:
        job_id: bench-startup-probe
        state: status
        state_dir: "{{ bench_state_dir }}"
"""

METHODS = ('cp_a', 'tar_pipe', 'copy_limit', 'rsync', 'reference', 'rsync_sha256sum', 'ours')
DATASETS = ('D1', 'D2', 'D3')
# D4 (1,000,000 files of 1 KiB) only when asked for: --datasets D4 (see --d4-files).
ALL_DATASETS = DATASETS + ('D4',)
BLOCK = 4096


def log(message):
    sys.stdout.write('[%s] %s\n' % (time.strftime('%H:%M:%S'), message))
    sys.stdout.flush()


def run_cmd(argv, **kwargs):
    kwargs.setdefault('check', True)
    kwargs.setdefault('stdout', subprocess.DEVNULL)
    kwargs.setdefault('stderr', subprocess.PIPE)
    try:
        check = kwargs.pop('check')
        return subprocess.run(argv, check=check, **kwargs)
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode('utf-8', 'replace') if isinstance(exc.stderr, bytes) else (exc.stderr or '')
        raise RuntimeError('%s failed with %s: %s' % (' '.join(map(str, argv)), exc.returncode, err[-2000:]))


# ---------------------------------------------------------------------- data sets


class Block:
    """Deterministic incompressible content: slices of one seeded random buffer, stamped per chunk."""

    def __init__(self, seed):
        self.buffer = random.Random(seed).randbytes(8 * MIB + 64 * KIB)

    def content(self, size, key):
        out = bytearray()
        offset = (hash_int(key) % (64 * KIB))
        stamp = key.encode('utf-8')[:64]
        while len(out) < size:
            chunk = bytearray(self.buffer[offset:offset + min(MIB, size - len(out))])
            chunk[:len(stamp)] = stamp[:len(chunk)]
            out += chunk
            offset = (offset + 4099) % (64 * KIB)
            stamp = (key + ':%d' % len(out)).encode('utf-8')[:64]
        return bytes(out)


def hash_int(text):
    return int.from_bytes(hashlib.blake2b(text.encode('utf-8'), digest_size=8).digest(), 'big')


def plan_datasets(opts):
    """The files of each data set, as (relative path, size) lists plus extras, without writing anything."""
    rng = random.Random(opts.seed)
    plans = {}
    plans['D1'] = {'files': [('big-%02d.bin' % i, opts.d1_mib * MIB) for i in range(opts.d1_files)]}
    per_dir = max(1, opts.d2_files // opts.d2_dirs)
    plans['D2'] = {'files': [('d%04d/f%05d.dat' % (i // per_dir, i), opts.d2_kib * KIB)
                             for i in range(opts.d2_files)]}
    files = []
    for i in range(opts.d3_files):
        # Mostly small files, a few large ones: 98% 1 KiB..64 KiB, 2% 64 KiB..8 MiB (log-uniform).
        if rng.random() < 0.98:
            size = int(2 ** rng.uniform(10, 16))
        else:
            size = int(2 ** rng.uniform(16, 23))
        folder = 'a%02d/b%03d' % (rng.randrange(20), rng.randrange(50))
        files.append(('%s/m%05d.bin' % (folder, i), size))
    hardlinks = [(files[i][0], 'links/h%05d' % i) for i in range(0, len(files), 50)]
    symlinks = [('symlinks/s%05d' % i, '../' + files[i][0]) for i in range(0, len(files), 100)]
    symlinks.append(('symlinks/dangling', 'does/not/exist'))
    xattrs = [files[i][0] for i in range(0, len(files), 20)]
    plans['D3'] = {'files': files, 'hardlinks': hardlinks, 'symlinks': symlinks, 'xattrs': xattrs,
                   'sparse': ('sparse/sparse.img', opts.sparse_mib * MIB)}
    if 'D4' in opts.datasets:
        # Many small files: written by write_small_files (one process, no Path objects per file).
        d4_dirs = max(1, min(opts.d4_dirs, opts.d4_files))
        per_dir = -(-opts.d4_files // d4_dirs)
        plans['D4'] = {'files': [('d%05d/f%07d.dat' % (i // per_dir, i), opts.d4_kib * KIB)
                                 for i in range(opts.d4_files)], 'small': True}
    for plan in plans.values():
        plan['bytes'] = sum(size for _rel, size in plan['files'])
        if 'sparse' in plan:
            plan['bytes'] += plan['sparse'][1]
        plan['nfiles'] = len(plan['files']) + len(plan.get('hardlinks', ())) + (1 if 'sparse' in plan else 0)
        folders = set(rel.rpartition('/')[0] for rel, _size in plan['files'])
        plan['ndirs'] = len(folders) + 10
        # What the set takes on a filesystem of 4 KiB blocks (a 1 KiB file takes a block): the images
        # are sized from this, not from the bytes alone.
        plan['disk_bytes'] = (sum(-(-size // BLOCK) * BLOCK for _rel, size in plan['files'])
                              + (plan['sparse'][1] if 'sparse' in plan else 0) + plan['ndirs'] * BLOCK)
    return plans


def write_small_files(base, name, plan, block, seed):
    """Many small files quickly, in this one process: one open/write/futimens/close per file, with
    the same seeded content and timestamps write_dataset would give them."""
    rng = random.Random(seed)
    base = str(base)
    last = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, 'O_CLOEXEC', 0)
    for rel, size in plan['files']:
        folder = rel.rpartition('/')[0]
        if folder != last:
            os.makedirs(os.path.join(base, folder), exist_ok=True)
            last = folder
        fd = os.open(os.path.join(base, rel), flags, 0o644)
        try:
            os.write(fd, block.content(size, '%s/%s' % (name, rel)))
            stamp = 1_700_000_000 * 10 ** 9 + rng.randrange(10 ** 15)
            os.utime(fd, ns=(stamp, stamp))
        finally:
            os.close(fd)
    return []


def write_dataset(root, name, plan, block, seed):
    base = root / name
    base.mkdir(parents=True, exist_ok=True)
    if plan.get('small'):
        return write_small_files(base, name, plan, block, seed)
    made = set()
    notes = []
    for rel, size in plan['files']:
        path = base / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, 'wb') as handle:
            if size > 4 * MIB:
                done = 0
                while done < size:
                    part = min(4 * MIB, size - done)
                    handle.write(block.content(part, '%s/%s@%d' % (name, rel, done)))
                    done += part
            else:
                handle.write(block.content(size, '%s/%s' % (name, rel)))
    for target, link in plan.get('hardlinks', ()):
        (base / link).parent.mkdir(parents=True, exist_ok=True)
        os.link(base / target, base / link)
    for link, target in plan.get('symlinks', ()):
        (base / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, base / link)
    failed = 0
    for rel in plan.get('xattrs', ()):
        try:
            os.setxattr(base / rel, 'user.mobility.bench', ('xattr of %s' % rel).encode('utf-8'))
        except OSError:
            failed += 1
    if failed:
        notes.append('%d xattrs could not be set (filesystem without user xattrs)' % failed)
    if 'sparse' in plan:
        rel, size = plan['sparse']
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, 'wb') as handle:
            handle.truncate(size)
            for offset in (0, size // 2, size - MIB):
                handle.seek(offset)
                handle.write(block.content(MIB, '%s/sparse@%d' % (name, offset)))
    # Fixed timestamps with nanoseconds, so every run has the same metadata.
    rng = random.Random(seed)
    for rel, _size in plan['files']:
        os.utime(base / rel, ns=(1_700_000_000 * 10 ** 9 + rng.randrange(10 ** 15),) * 2)
    return notes


def tree_stats(root):
    """Regular file paths, unique bytes and entries of a tree (for rates and subsets)."""
    paths, inodes, entries = [], {}, 0
    dirs = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        entries += 1
        rel_folder = os.path.relpath(folder, root)
        dirs.append(rel_folder)
        for name in sorted(filenames):
            entries += 1
            full = os.path.join(folder, name)
            st = os.lstat(full)
            if os.path.isfile(full) and not os.path.islink(full):
                paths.append(os.path.normpath(os.path.join(rel_folder, name)))
                inodes[(st.st_dev, st.st_ino)] = st.st_size
    return {'paths': paths, 'bytes': sum(inodes.values()), 'files': len(paths), 'entries': entries, 'dirs': dirs}


# ---------------------------------------------------------------------- filesystems and caches


class Filesystems:
    """The source and destination: ext4 and xfs on loop devices as root, else two folders."""

    def __init__(self, work, mode, src_bytes, dst_bytes, dst_inodes, src_inodes=None):
        self.work = work
        self.src_inodes = src_inodes
        self.loops = []
        self.mounted = []
        self.images = []
        self.kind = 'folders'
        self.note = None
        self.src = work / 'src'
        self.dst = work / 'dst'
        self.src.mkdir()
        self.dst.mkdir()
        if mode == 'folders':
            self.note = 'two folders on one filesystem (--fs folders)'
            return
        if os.geteuid() != 0:
            self.note = 'two folders on one filesystem (not root: no loop devices)'
            if mode == 'loop':
                raise SystemExit('--fs loop needs root')
            return
        try:
            self._setup_loop(src_bytes, dst_bytes, dst_inodes)
            self.kind = 'loop'
        except Exception as exc:  # pylint: disable=broad-except
            self.cleanup()
            self.src.mkdir(exist_ok=True)
            self.dst.mkdir(exist_ok=True)
            if mode == 'loop':
                raise
            self.note = 'two folders on one filesystem (loop devices failed: %s)' % str(exc).splitlines()[0][:200]

    def _image(self, name, size):
        image = self.work / name
        with open(image, 'wb') as handle:
            handle.truncate(size)
        self.images.append(image)
        out = run_cmd(['losetup', '--find', '--show', str(image)], stdout=subprocess.PIPE)
        loop = out.stdout.decode().strip()
        self.loops.append(loop)
        return loop

    def _setup_loop(self, src_bytes, dst_bytes, dst_inodes):
        gib = 1024 * MIB
        self.src_loop = self._image('src-ext4.img', (src_bytes * 14 // 10 // gib + 2) * gib)
        # The inode count: from the entries when given (D4: millions of small files), else a margin.
        inodes = self.src_inodes or max(dst_inodes * 3, 65536)
        run_cmd(['mkfs.ext4', '-q', '-F', '-N', str(inodes), '-E',
                 'lazy_itable_init=0,lazy_journal_init=0', self.src_loop])
        self._mount(self.src_loop, self.src)
        self.dst_loop = self._image('dst-xfs.img', (dst_bytes * 14 // 10 // gib + 2) * gib)
        self.format_dst()

    def _replace_dst_loop(self):
        old_loop, old_image = self.dst_loop, self.work / 'dst-xfs.img'
        size = old_image.stat().st_size
        subprocess.run(['losetup', '-d', old_loop], check=False)
        self.loops.remove(old_loop)
        self.images.remove(old_image)
        old_image.unlink()
        self.dst_loop = self._image('dst-xfs.img', size)

    def _mount(self, device, path):
        run_cmd(['mount', device, str(path)])
        self.mounted.append(path)

    def format_dst(self):
        """A fresh destination: a new xfs (loop) or an empty folder."""
        if self.kind == 'loop' or getattr(self, 'dst_loop', None):
            if self.dst in self.mounted:
                run_cmd(['umount', str(self.dst)])
                self.mounted.remove(self.dst)
            try:
                run_cmd(['mkfs.xfs', '-q', '-f', self.dst_loop])
            except RuntimeError:
                # The old filesystem can outlive its unmount here when a process in another mount
                # namespace still holds it (the device is then busy): format a new image instead.
                self._replace_dst_loop()
                run_cmd(['mkfs.xfs', '-q', '-f', self.dst_loop])
            self._mount(self.dst_loop, self.dst)
        else:
            for child in self.dst.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def fstype(self, path):
        try:
            out = subprocess.run(['findmnt', '-n', '-o', 'FSTYPE,SOURCE', '-T', str(path)], check=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            return out.stdout.decode().strip()
        except (OSError, subprocess.CalledProcessError):
            return 'unknown'

    def cleanup(self):
        for path in reversed(self.mounted):
            subprocess.run(['umount', str(path)], check=False)
        self.mounted = []
        for loop in self.loops:
            subprocess.run(['losetup', '-d', loop], check=False)
        self.loops = []
        for image in self.images:
            try:
                image.unlink()
            except OSError:
                pass
        self.images = []


def flush(path):
    """syncfs(2) of the filesystem holding ``path`` (coreutils ``sync -f``)."""
    run_cmd(['sync', '-f', str(path)])


def drop_caches():
    os.sync()
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as handle:
            handle.write('3\n')
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------- methods


def m_cp_a(src, dst, ctx):
    run_cmd(['cp', '-a', str(src) + '/.', str(dst)])
    return {}


def m_tar_pipe(src, dst, ctx):
    producer = subprocess.Popen(['tar', '-C', str(src), '-cf', '-', '.'], stdout=subprocess.PIPE)
    consumer = subprocess.Popen(['tar', '-C', str(dst), '-xf', '-'], stdin=producer.stdout)
    producer.stdout.close()
    rc_consumer = consumer.wait()
    rc_producer = producer.wait()
    if rc_consumer or rc_producer:
        raise RuntimeError('tar pipe failed: %s %s' % (rc_producer, rc_consumer))
    return {}


def sha256_files(root, rels, batch=256):
    out = {}
    for start in range(0, len(rels), batch):
        chunk = rels[start:start + batch]
        result = run_cmd(['sha256sum', '--'] + chunk, cwd=str(root), stdout=subprocess.PIPE)
        for line in result.stdout.decode('utf-8', 'surrogateescape').splitlines():
            digest, _sep, name = line.partition('  ')
            out[name] = digest
    return out


def m_reference(src, dst, ctx):
    """One `cp -P --preserve=all` per file on a subset, then sha256sum of both sides; scaled."""
    stats = ctx['stats']
    subset = ctx['subset']
    started = time.perf_counter()
    for rel in stats['dirs']:
        (dst / rel).mkdir(parents=True, exist_ok=True)
    dirs_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for rel in subset:
        run_cmd(['cp', '-P', '--preserve=all', str(src / rel), str(dst / rel)])
    copy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    left = sha256_files(src, subset)
    right = sha256_files(dst, subset)
    hash_seconds = time.perf_counter() - started
    if left != right:
        raise RuntimeError('reference method: sha256 of the copied subset differs')
    # Scaled by the file count, or by the bytes when the subset holds more than its share of them
    # (whichever is smaller, so the estimate never overstates the method's time).
    files_scale = stats['files'] / float(len(subset))
    subset_bytes = sum(os.lstat(src / rel).st_size for rel in subset)
    all_bytes = sum(os.lstat(src / rel).st_size for rel in stats['paths'])
    bytes_scale = all_bytes / float(subset_bytes) if subset_bytes else files_scale
    scale = min(files_scale, bytes_scale)
    return {'measured_seconds': dirs_seconds + copy_seconds + hash_seconds, 'subset_files': len(subset),
            'scale': scale, 'files_scale': files_scale, 'bytes_scale': bytes_scale,
            'dirs_seconds': dirs_seconds, 'copy_seconds_subset': copy_seconds,
            'hash_seconds_subset': hash_seconds,
            'seconds': dirs_seconds + (copy_seconds + hash_seconds) * scale}


def find_sha256sum(root):
    find = subprocess.Popen(['find', '.', '-type', 'f', '-print0'], cwd=str(root), stdout=subprocess.PIPE)
    xargs = subprocess.Popen(['xargs', '-0', 'sha256sum', '--'], cwd=str(root), stdin=find.stdout,
                             stdout=subprocess.PIPE)
    find.stdout.close()
    output = xargs.communicate()[0]
    if find.wait() or xargs.returncode:
        raise RuntimeError('find | xargs sha256sum failed in %s' % root)
    return sorted(output.splitlines())


def m_rsync(src, dst, ctx):
    """Plain ``rsync -aHAX`` into the empty destination, no verification: a plain copier, which
    beats the tar pipe on many small files."""
    run_cmd(['rsync', '-aHAX', str(src) + '/', str(dst) + '/'])
    return {}


def m_rsync_sha256sum(src, dst, ctx):
    started = time.perf_counter()
    run_cmd(['rsync', '-aHAX', str(src) + '/', str(dst) + '/'])
    copy_seconds = time.perf_counter() - started
    if find_sha256sum(src) != find_sha256sum(dst):
        raise RuntimeError('rsync + sha256sum: the trees differ')
    return {'copy_seconds': copy_seconds, 'verify_seconds': time.perf_counter() - started - copy_seconds}


class Ours:
    """storage.mobility.data_copy through ansible-playbook running the data_mover role (helper none)."""

    def __init__(self, work):
        self.work = work
        self.state_dir = work / 'jobs'
        self.mount_tmp = work / 'mnt'
        self.state_dir.mkdir()
        self.mount_tmp.mkdir()
        self.playbook = work / 'bench_data_mover.yml'
        self.playbook.write_text(PLAYBOOK)
        self.startup = work / 'bench_startup.yml'
        self.startup.write_text(STARTUP_PLAYBOOK)
        self.env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='false',
                        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false', ANSIBLE_LOCALHOST_WARNING='false',
                        ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
        if not self.env.get('ANSIBLE_COLLECTIONS_PATH'):
            venv = REPO / '.venv' / 'collections'
            link = venv / 'ansible_collections' / 'storage' / 'mobility'
            if link.exists() and link.resolve() == REPO:
                self.env['ANSIBLE_COLLECTIONS_PATH'] = str(venv)
            else:
                base = work / 'collections'
                (base / 'ansible_collections' / 'storage').mkdir(parents=True)
                (base / 'ansible_collections' / 'storage' / 'mobility').symlink_to(REPO)
                self.env['ANSIBLE_COLLECTIONS_PATH'] = str(base)
        candidate = Path(sys.executable).parent / 'ansible-playbook'
        self.ansible_playbook = str(candidate) if candidate.exists() else shutil.which('ansible-playbook')
        if not self.ansible_playbook:
            raise SystemExit('ansible-playbook not found (source scripts/env.sh first)')
        self.counter = 0
        self.memory_interval = 0.1
        self.last_memory = None

    def _play(self, playbook, extra, label, state_dir=None, job_id=None):
        vars_file = self.work / ('vars-%s.json' % label)
        extra = dict(extra, bench_state_dir=str(state_dir or self.state_dir), bench_mount_tmp=str(self.mount_tmp),
                     ansible_python_interpreter=sys.executable)
        vars_file.write_text(json.dumps(extra))
        log_file = self.work / ('ansible-%s.log' % label)
        # Peak memory of the run's processes (bench/peakmem.py): sampled from /proc in a thread of
        # this process, which only waits meanwhile.
        leader = str(Path(state_dir or self.state_dir) / job_id / 'worker.pid') if job_id else None
        memory = peakmem.JobMemory(interval=self.memory_interval, leader_pid_file=leader)
        started = time.perf_counter()
        with open(log_file, 'wb') as handle:
            process = subprocess.Popen([self.ansible_playbook, '-i', 'localhost,', str(playbook), '-e',
                                        '@%s' % vars_file], env=memory.env(self.env), stdout=handle,
                                       stderr=subprocess.STDOUT, cwd=str(self.work))
            memory.attach(process.pid)
            memory.start()
            try:
                rc = process.wait()
            finally:
                seconds = time.perf_counter() - started
                self.last_memory = memory.stop()
        if rc:
            tail = log_file.read_text(errors='replace')[-3000:]
            raise RuntimeError('ansible-playbook (%s) failed with %d:\n%s' % (label, rc, tail))
        return seconds

    def startup_seconds(self):
        return self._play(self.startup, {}, 'startup')

    def fresh_state_dir(self, label):
        """A state folder of its own: the job finds no hashes recorded by an earlier timed run, so every
        timed first copy reads every file (jobs of one cutover share one folder, as in a migration)."""
        folder = self.work / ('jobs-%s' % label)
        folder.mkdir()
        return folder

    def copy(self, src, dst, job_id, final_pass=False, state_dir=None):
        state_dir = state_dir or self.state_dir
        seconds = self._play(self.playbook, {'bench_job_id': job_id, 'bench_source': str(src),
                                             'bench_destination': str(dst), 'bench_final_pass': final_pass},
                             job_id, state_dir, job_id=job_id)
        report = json.loads((state_dir / job_id / 'report.json').read_text())
        stats = report.get('rsync_stats') or {}
        return {'seconds': seconds, 'verified': bool(report.get('verified')), 'memory': self.last_memory,
                'hashing': report.get('hashing'),
                'verification': report.get('verification'), 'copy_seconds': report.get('copy_seconds'),
                'verify_seconds': report.get('verify_seconds'), 'hash_algorithm': report.get('hash_algorithm'),
                'job_id': job_id, 'rsync_stats': stats, 'copy_engine': report.get('copy_engine'),
                'changes_pass': report.get('changes_pass')}


# ---------------------------------------------------------------------- programs in memory


class ProgramWarmup:
    """Dropping the page cache also drops the methods' own programs. After each drop, the method
    about to be timed copies a one-file folder once, untimed, on the work folder's filesystem (not
    the data's): its programs are then in memory and its data is still on the disk, for every method
    alike. cp, tar, rsync and sha256sum load in milliseconds; ours loads ansible-playbook, the role,
    the module and the job's worker, up to about a second from a cold disk (the output gives the
    start-up both ways). ``--cold-programs`` times every method with its programs
    dropped too."""

    def __init__(self, work, ours):
        self.root = work / 'warmup'
        self.src = self.root / 'src'
        (self.src / 'folder').mkdir(parents=True)
        (self.src / 'folder' / 'file').write_bytes(b'storage.mobility warm-up\n' * 200)
        self.ours = ours
        self.count = 0
        self.seconds = {}

    def run(self, method):
        self.count += 1
        dst = self.root / ('dst-%d' % self.count)
        dst.mkdir()
        started = time.perf_counter()
        try:
            if method == 'cp_a':
                m_cp_a(self.src, dst, {})
            elif method == 'tar_pipe':
                m_tar_pipe(self.src, dst, {})
            elif method == 'reference':
                (dst / 'folder').mkdir()
                run_cmd(['cp', '-P', '--preserve=all', str(self.src / 'folder' / 'file'), str(dst / 'folder' / 'file')])
                if sha256_files(self.src, ['folder/file']) != sha256_files(dst, ['folder/file']):
                    raise RuntimeError('warm-up of the reference method: the copy differs')
            elif method == 'rsync_sha256sum':
                m_rsync_sha256sum(self.src, dst, {})
            elif method == 'rsync':
                run_cmd(['rsync', '-aHAX', str(self.src) + '/', str(dst) + '/'])
            elif method == 'ours':
                label = 'warmup-%d-%d' % (os.getpid(), self.count)
                extra = self.ours.copy(self.src, dst, label, state_dir=self.ours.fresh_state_dir(label))
                if not extra['verified']:
                    raise RuntimeError('warm-up of ours did not verify: %s' % extra)
            else:
                raise ValueError('no warm-up for method %r' % method)
        finally:
            self.seconds.setdefault(method, []).append(time.perf_counter() - started)
            shutil.rmtree(dst)


def prepare(method, warmup):
    """Drop the page cache, then load the method's programs when ``warmup`` is set. Returns whether
    the cache was dropped."""
    dropped = drop_caches()
    if warmup is not None and dropped:
        warmup.run(method)
    return dropped


# ---------------------------------------------------------------------- the cutover


def modify_one_percent(root, stats, block, seed):
    """Change 1% of the regular files: half rewritten with the same size and an mtime in the same
    second (other nanoseconds), half grown by 100 bytes with the current time."""
    rng = random.Random(seed)
    count = max(2, len(stats['paths']) // 100)
    chosen = sorted(rng.sample(stats['paths'], min(count, len(stats['paths']))))
    same_second, grown = [], []
    for index, rel in enumerate(chosen):
        path = root / rel
        st = os.stat(path)
        if index % 2 == 0:
            data = block.content(st.st_size, 'changed:%s' % rel)
            with open(path, 'r+b') as handle:
                handle.write(data)
                handle.truncate(st.st_size)
            second, nanos = divmod(st.st_mtime_ns, 10 ** 9)
            new = second * 10 ** 9 + (nanos + 123_457) % 10 ** 9
            os.utime(path, ns=(st.st_atime_ns, new))
            same_second.append(rel)
        else:
            with open(path, 'ab') as handle:
                handle.write(block.content(100, 'grown:%s' % rel))
            grown.append(rel)
    return same_second, grown


def _files_read(hashing):
    """Files whose content ours read in a pass (during the copy or after it), both sides."""
    hashing = hashing or {}
    return hashing.get('files_hashed', 0) + hashing.get('files_hashed_during_copy', 0)


def content_misses(src, dst, rels):
    left = sha256_files(src, rels)
    right = sha256_files(dst, rels) if rels else {}
    return sorted(rel for rel in rels if left.get(rel) != right.get(rel))


def cutover(fs, ours, opts, run, block, caches, warmup):
    """Phase 1 by ours and by rsync, change 1%, then time ours' final pass against a plain rsync."""
    fs.format_dst()
    source = fs.src / 'CUT'
    if source.exists():
        shutil.rmtree(source)
    # D4 in a single run is not read again after the cutover: it is moved rather than copied (a copy
    # of 1,000,000 files takes minutes), and left in place at the end (the filesystem goes anyway).
    moved = opts.cutover_set == 'D4' and opts.runs == 1
    if moved:
        os.rename(str(fs.src / opts.cutover_set), str(source))
    else:
        run_cmd(['cp', '-a', str(fs.src / opts.cutover_set), str(source)])
    ours_dst, rsync_dst = fs.dst / 'ours', fs.dst / 'rsync'
    ours_dst.mkdir()
    rsync_dst.mkdir()
    tag = '%d-%d' % (os.getpid(), run)
    jobs = ours.fresh_state_dir('cut-%s' % tag)
    drop_caches()
    phase1 = ours.copy(source, ours_dst, 'bench-cut-p1-%s' % tag, state_dir=jobs)
    log('cutover run %d: ours phase 1 (first copy with verification) %.2f s, verified %s%s' % (
        run + 1, phase1['seconds'], phase1['verified'], mem_text(phase1['memory'])))
    # The source's pages from ours' phase 1 are dropped: this rsync reads the disk too, and its time
    # is a plain first copy of the same set in the same run (the copy limit of D4, where rsync wins).
    caches.append(prepare('rsync', warmup))
    started = time.perf_counter()
    run_cmd(['rsync', '-aHAX', str(source) + '/', str(rsync_dst) + '/'])
    flush(rsync_dst)
    rsync_phase1 = time.perf_counter() - started
    log('cutover run %d: plain rsync -aHAX phase 1 %.2f s' % (run + 1, rsync_phase1))
    stats = tree_stats(source)
    same_second, grown = modify_one_percent(source, stats, block, opts.seed + 1000 + run)
    changed = same_second + grown
    caches.append(prepare('ours', warmup))
    final = ours.copy(source, ours_dst, 'bench-cut-final-%s' % tag, final_pass=True, state_dir=jobs)
    log('cutover run %d: %d files changed; ours final pass %.2f s, verified %s%s' % (
        run + 1, len(changed), final['seconds'], final['verified'], mem_text(final['memory'])))
    caches.append(prepare('rsync', warmup))
    started = time.perf_counter()
    run_cmd(['rsync', '-aHAX', str(source) + '/', str(rsync_dst) + '/'])
    flush(rsync_dst)
    rsync_seconds = time.perf_counter() - started
    ours_missed = content_misses(source, ours_dst, changed)
    rsync_missed = content_misses(source, rsync_dst, changed)
    caches.append(prepare('ours', warmup))
    noop = ours.copy(source, ours_dst, 'bench-cut-noop-%s' % tag, final_pass=True, state_dir=jobs)
    log('cutover run %d: plain rsync final pass %.2f s; ours no-op rerun %.2f s%s' % (
        run + 1, rsync_seconds, noop['seconds'], mem_text(noop['memory'])))
    caches.append(prepare('rsync', warmup))
    started = time.perf_counter()
    run_cmd(['rsync', '-aHAX', str(source) + '/', str(rsync_dst) + '/'])
    flush(rsync_dst)
    rsync_noop = time.perf_counter() - started
    started = time.perf_counter()
    attach = ours.copy(source, ours_dst, 'bench-cut-noop-%s' % tag, final_pass=True, state_dir=jobs)
    if not moved:
        shutil.rmtree(source)
    return {
        'phase1_seconds': phase1['seconds'], 'phase1_verified': phase1['verified'],
        'phase1_copy_seconds': phase1['copy_seconds'], 'phase1_verify_seconds': phase1['verify_seconds'],
        'rsync_phase1_seconds': rsync_phase1,
        'phase1_copy_engine': phase1['copy_engine'], 'ours_final_copy_engine': final['copy_engine'],
        'ours_final_changes_pass': final['changes_pass'], 'ours_noop_changes_pass': noop['changes_pass'],
        'changed_files': len(changed), 'changed_same_size_same_second': len(same_second),
        'changed_grown': len(grown),
        'ours_final_seconds': final['seconds'], 'ours_final_verified': final['verified'],
        'ours_final_copy_seconds': final['copy_seconds'], 'ours_final_verify_seconds': final['verify_seconds'],
        'ours_final_rsync_stats': final['rsync_stats'], 'ours_final_hashing': final['hashing'],
        'ours_final_files_read': _files_read(final['hashing']),
        'ours_missed': len(ours_missed), 'rsync_seconds': rsync_seconds, 'rsync_missed': len(rsync_missed),
        'rsync_missed_same_second': len(set(rsync_missed) & set(same_second)),
        'rsync_missed_examples': rsync_missed[:5],
        'ours_noop_seconds': noop['seconds'], 'ours_noop_verified': noop['verified'],
        'ours_noop_copy_seconds': noop['copy_seconds'], 'ours_noop_verify_seconds': noop['verify_seconds'],
        'rsync_noop_seconds': rsync_noop, 'ours_attach_completed_seconds': attach['seconds'],
        'ours_phase1_memory': phase1['memory'], 'ours_final_memory': final['memory'],
        'ours_noop_memory': noop['memory'],
        'ours_phase1_peak_rss_bytes': peak_of(phase1), 'ours_final_peak_rss_bytes': peak_of(final),
        'ours_noop_peak_rss_bytes': peak_of(noop),
    }


def peak_of(extra):
    """The peak RSS of the job's processes together in one run of ours (bytes), or None."""
    return ((extra or {}).get('memory') or {}).get('peak_rss_bytes')


def mem_text(memory):
    """', peak memory ...' for a log line of a run of ours, or ''."""
    if not memory:
        return ''
    top = memory['peak_breakdown'][0] if memory['peak_breakdown'] else None
    return '; peak RSS of the job %.0f MiB (PSS %s MiB; with ansible-playbook %.0f MiB)%s' % (
        memory['peak_rss_bytes'] / MIB,
        '%.0f' % (memory['peak_pss_bytes'] / MIB) if memory.get('peak_pss_bytes') is not None else '-',
        memory['peak_rss_all_bytes'] / MIB,
        ', largest %s %.0f MiB' % (top['name'], top['rss_bytes'] / MIB) if top else '')


# ---------------------------------------------------------------------- report


def machine_info(fs, caches_dropped):
    mem = None
    try:
        with open('/proc/meminfo') as handle:
            for line in handle:
                if line.startswith('MemTotal:'):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    cpu_model = None
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu_model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    rsync_version = subprocess.run(['rsync', '--version'], stdout=subprocess.PIPE, check=False).stdout.decode().splitlines()[0]
    return {
        'hostname': platform.node(), 'cpu_count': os.cpu_count(), 'cpu_model': cpu_model,
        'memory_bytes': mem, 'kernel': platform.release(), 'python': platform.python_version(),
        'rsync': rsync_version, 'root': os.geteuid() == 0, 'filesystems': fs.kind,
        'filesystems_note': fs.note, 'source_fs': fs.fstype(fs.src), 'destination_fs': fs.fstype(fs.dst),
        'work_dir_fs': fs.fstype(fs.work), 'caches_dropped': caches_dropped,
        'loadavg_at_start': os.getloadavg(),
    }


def spread(values, fmt='%.2f'):
    """The lowest and the highest of ``values`` ('a-b'), or the one value."""
    low, high = min(values), max(values)
    return fmt % low if len(values) == 1 or fmt % low == fmt % high else '%s-%s' % (fmt % low, fmt % high)


def fmt_table(rows):
    header = ('method', 'data set', 'seconds', 'runs (s)', 'MB/s', 'files/s', 'x copy limit', 'peak MiB', 'note')
    lines = [header]
    for row in rows:
        lines.append((row['method'], row['dataset'], '%.2f' % row['seconds'], spread(row['runs']),
                      '%.1f' % row['mb_per_s'],
                      '%.0f' % row['files_per_s'],
                      '%.2f' % row['ratio_to_copy_limit'] if row['ratio_to_copy_limit'] else '-',
                      '%.0f' % (row['peak_rss_bytes'] / MIB) if row.get('peak_rss_bytes') else '-',
                      row.get('note', '')))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append('  '.join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append('  '.join('-' * w for w in widths))
    return '\n'.join(out)


def evaluate_targets(rows, cut, plain_copier=None):
    """PASS or FAIL of each target, judged on the medians; ``per_run`` gives the same figure within
    each run (run i of one method against run i of the other: they ran minutes apart at most), to
    show how much it moves between runs. A target on a ratio of times also gives ours' median
    seconds (``ours_seconds``) and the seconds the target allows ours from the other method's median
    (``allowed_seconds``), so that a miss can be read as time.

    Returns (targets, figures): ``figures`` are the retired targets' ratios, kept for information and
    not judged: the reference method's speed-ups (they follow from the copy limit) and the final
    pass against plain rsync on a cutover set smaller than D4 (Ansible's start-up dominates it there;
    the target is judged at 1,000,000 files, and on the read-only window by bench/window.py)."""
    by = {(row['method'], row['dataset']): row['seconds'] for row in rows}
    runs = {(row['method'], row['dataset']): row['runs'] for row in rows}
    targets, figures = [], []

    def add(name, value, per_run, op, limit, unit='x', ours=None, other=None, judged=True):
        """``ours`` and ``other``: the median seconds of the ratio's two methods (ours is the
        numerator of a ``<=`` target and the denominator of a ``>=`` one)."""
        if value is None:
            return
        ok = value <= limit if op == '<=' else value >= limit
        target = {'target': name, 'value': round(value, 3), 'op': op, 'limit': limit, 'unit': unit,
                  'pass': bool(ok), 'per_run': [round(item, 3) for item in per_run]}
        if ours is not None:
            allowed = other * limit if op == '<=' else other / limit
            target.update(ours_seconds=round(ours, 3), allowed_seconds=round(allowed, 3))
        if judged:
            targets.append(target)
        else:
            del target['pass']
            target['retired_limit'] = target.pop('limit')
            target.pop('allowed_seconds', None)
            figures.append(target)

    def ratio(top, bottom, ds):
        return (by[(top, ds)] / by[(bottom, ds)],
                [a / b for a, b in zip(runs[(top, ds)], runs[(bottom, ds)])])

    for ds, limit in (('D1', 1.3), ('D2', 1.6), ('D3', 1.3)):
        if ('ours', ds) in by and ('copy_limit', ds) in by:
            add('ours copy+verify / copy limit on %s' % ds, *ratio('ours', 'copy_limit', ds), op='<=', limit=limit,
                ours=by[('ours', ds)], other=by[('copy_limit', ds)])
    for ds, limit in (('D2', 50), ('D3', 10)):
        if ('ours', ds) in by and ('reference', ds) in by:
            add('reference method / ours on %s (speed-up)' % ds, *ratio('reference', 'ours', ds), op='>=',
                limit=limit, ours=by[('ours', ds)], other=by[('reference', ds)], judged=False)
    plain_copier = plain_copier or {}
    if ('ours', 'D4') in by and 'D4' in plain_copier:
        fastest = plain_copier['D4']
        add('ours copy+verify / fastest plain copier (%s) on D4' % fastest['method'], by[('ours', 'D4')] / fastest['seconds'],
            [a / b for a, b in zip(runs[('ours', 'D4')], fastest['runs'])], '<=', 1.6,
            ours=by[('ours', 'D4')], other=fastest['seconds'])
    for ds in ALL_DATASETS:
        if ('ours', ds) in by and ('rsync_sha256sum', ds) in by:
            add('rsync+sha256sum / ours on %s (speed-up)' % ds, *ratio('rsync_sha256sum', 'ours', ds), op='>=',
                limit=1.5, ours=by[('ours', ds)], other=by[('rsync_sha256sum', ds)])
    if cut:
        add('ours final pass / plain incremental rsync', cut['ours_final_seconds'] / cut['rsync_seconds'],
            [run['ours_final_seconds'] / run['rsync_seconds'] for run in cut['runs']], '<=', 1.2,
            ours=cut['ours_final_seconds'], other=cut['rsync_seconds'], judged=cut.get('dataset') == 'D4')
        add('changes missed by ours final pass (all runs)', cut['ours_missed_total'],
            [run['ours_missed'] for run in cut['runs']], '<=', 0, unit='files')
    if cut and cut.get('dataset') == 'D4':
        # The cutover's phase 1 is a first copy with verification too, next to a plain rsync -aHAX of
        # the same set in the same run (each after a cache drop): at 1,000,000 files the run may
        # time only these (--methods '' --cutover-set D4).
        add('ours phase 1 (first copy+verify) / plain rsync phase 1 on D4', cut['phase1_seconds'] / cut['rsync_phase1_seconds'],
            [run['phase1_seconds'] / run['rsync_phase1_seconds'] for run in cut['runs']], '<=', 1.6,
            ours=cut['phase1_seconds'], other=cut['rsync_phase1_seconds'])
    # Peak memory at 1,000,000 files (issue 20): every run of ours on D4, the cutover's included.
    peaks = list(next((row.get('peak_rss_runs') or [] for row in rows
                       if row['method'] == 'ours' and row['dataset'] == 'D4'), []))
    if cut and cut.get('dataset') == 'D4':
        for run in cut['runs']:
            peaks += [run[key] for key in ('ours_phase1_peak_rss_bytes', 'ours_final_peak_rss_bytes',
                                           'ours_noop_peak_rss_bytes') if run.get(key) is not None]
    if peaks:
        add('peak memory of ours\' job on D4, every run (MiB)', max(peaks) / MIB, [p / MIB for p in peaks], '<=',
            256, unit='MiB')
    return targets, figures


def target_seconds(target, startup):
    """What a target on a ratio of times means for ours, in seconds (empty for the others)."""
    if 'allowed_seconds' not in target:
        return ''
    text = '; ours %.2f s, the target allows %.2f s' % (target['ours_seconds'], target['allowed_seconds'])
    if startup is not None and target['allowed_seconds'] < startup:
        text += ', less than ansible-playbook + one module call alone (%.2f s)' % startup
    return text


def median(values):
    return statistics.median(values) if values else None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='small sizes: the whole run in well under a minute')
    parser.add_argument('--runs', type=int, help='timed runs per method and data set (median); default 3, 1 quick')
    parser.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'latest.json'), help='the JSON file')
    parser.add_argument('--fs', choices=['auto', 'loop', 'folders'], default='auto',
                        help='auto: ext4 + xfs on loop devices as root, else two folders')
    parser.add_argument('--work-dir', default='/var/tmp', help='where the work folder (and loop images) go')
    parser.add_argument('--seed', type=int, default=20240601)
    parser.add_argument('--datasets', default='D1,D2,D3',
                        help='comma-separated subset of D1,D2,D3,D4 (D4, 1,000,000 files of 1 KiB, only when named)')
    parser.add_argument('--methods', default='cp_a,tar_pipe,reference,rsync_sha256sum,ours',
                        help='comma-separated subset of cp_a,tar_pipe,rsync,reference,rsync_sha256sum,ours (the copy '
                             'limit needs cp_a and tar_pipe; rsync is a plain rsync -aHAX, not in the default run)')
    parser.add_argument('--d1-files', type=int)
    parser.add_argument('--d1-mib', type=int, help='size of each D1 file in MiB')
    parser.add_argument('--d2-files', type=int)
    parser.add_argument('--d2-dirs', type=int)
    parser.add_argument('--d2-kib', type=int, default=4)
    parser.add_argument('--d3-files', type=int)
    parser.add_argument('--sparse-mib', type=int, help='apparent size of the D3 sparse file')
    parser.add_argument('--d4-files', type=int, default=1000000, help='files in D4 (default 1,000,000)')
    parser.add_argument('--d4-dirs', type=int, default=10000, help='folders of D4 (default 10,000)')
    parser.add_argument('--d4-kib', type=int, default=1, help='size of each D4 file in KiB (default 1)')
    parser.add_argument('--ref-files', type=int, help='files in the subset the reference method copies')
    parser.add_argument('--cutover-set', default='D3', choices=ALL_DATASETS)
    parser.add_argument('--no-cutover', action='store_true')
    parser.add_argument('--cold-programs', action='store_true',
                        help='no untimed warm-up after each cache drop: every method also loads its programs '
                             'from the disk in its timed run')
    parser.add_argument('--keep', action='store_true', help='keep the work folder (logs, job folders)')
    parser.add_argument('--volumes', action='store_true',
                        help='run the volume migration benchmark instead (bench/volumes.py; root; several minutes)')
    opts = parser.parse_args(argv)
    quick = {'d1_files': 4, 'd1_mib': 16, 'd2_files': 2000, 'd2_dirs': 20, 'd3_files': 1000, 'sparse_mib': 16,
             'ref_files': 500, 'runs': 1}
    full = {'d1_files': 4, 'd1_mib': 512, 'd2_files': 100000, 'd2_dirs': 1000, 'd3_files': 20000, 'sparse_mib': 64,
            'ref_files': 2000, 'runs': 3}
    for key, value in (quick if opts.quick else full).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.datasets = [d for d in opts.datasets.split(',') if d]
    opts.methods = [m for m in opts.methods.split(',') if m]
    for name in opts.datasets:
        if name not in ALL_DATASETS:
            parser.error('unknown data set %r (choose from %s)' % (name, ','.join(ALL_DATASETS)))
    for method in opts.methods:
        if method not in METHODS or method == 'copy_limit':
            parser.error('unknown method %r' % method)
    if opts.d4_files < 1 or opts.d4_dirs < 1 or opts.d4_kib < 0:
        parser.error('--d4-files and --d4-dirs must be at least 1, --d4-kib at least 0')
    if opts.cutover_set not in opts.datasets:
        opts.no_cutover = True
    return opts


def _terminate(*_args):
    raise SystemExit('terminated')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if '--replication' in argv:
        # The replication scenario (bench/replication.py) runs on its own: the default run stays short.
        sys.path.insert(0, str(REPO / 'bench'))
        import replication
        return replication.main([a for a in argv if a != '--replication'])
    if '--ssh-calls' in argv:
        # The cost of a module call on a storage host reached with ssh (bench/ssh_calls.py, as root).
        sys.path.insert(0, str(REPO / 'bench'))
        import ssh_calls
        return ssh_calls.main([a for a in argv if a != '--ssh-calls'])
    opts = parse_args(argv)
    if opts.volumes:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import volumes  # bench/volumes.py
        out = opts.out if opts.out != str(REPO / 'bench' / 'results' / 'latest.json') else \
            str(REPO / 'bench' / 'results' / 'volumes.json')
        return volumes.main(opts.work_dir, out)
    begun = time.perf_counter()
    signal.signal(signal.SIGTERM, _terminate)
    plans = plan_datasets(opts)
    plans = {name: plans[name] for name in opts.datasets}
    total = sum(plan['disk_bytes'] for plan in plans.values())
    biggest = max(plan['disk_bytes'] for plan in plans.values())
    cut_bytes = plans[opts.cutover_set]['disk_bytes'] if not opts.no_cutover else 0
    inodes = sum(plan['nfiles'] for plan in plans.values()) + 3 * (plans.get(opts.cutover_set, {}).get('nfiles', 0))
    src_inodes = None
    if 'D4' in plans:
        # Every entry of the source (the sets and the cutover's copy of one), a quarter more, and room.
        entries = sum(plan['nfiles'] + plan['ndirs'] for plan in plans.values())
        if not opts.no_cutover:
            entries += plans[opts.cutover_set]['nfiles'] + plans[opts.cutover_set]['ndirs']
        src_inodes = entries * 5 // 4 + 65536
    work = Path(tempfile.mkdtemp(prefix='mobility-bench-', dir=opts.work_dir))
    fs = None
    try:
        fs = Filesystems(work, opts.fs, total + cut_bytes, max(biggest, 2 * cut_bytes), inodes, src_inodes)
        log('work folder %s; source %s, destination %s%s' % (
            work, fs.fstype(fs.src), fs.fstype(fs.dst), (' -- ' + fs.note) if fs.note else ''))
        can_drop = drop_caches()
        if not can_drop:
            log('NOTE: the page cache could not be dropped (not root?): runs may read from memory')
        block = Block(opts.seed)
        notes = {}
        stats = {}
        for name, plan in plans.items():
            started = time.perf_counter()
            notes[name] = write_dataset(fs.src, name, plan, block, opts.seed)
            stats[name] = tree_stats(fs.src / name)
            log('generated %s: %d files, %.1f MiB, %d entries in %.1f s' % (
                name, stats[name]['files'], stats[name]['bytes'] / MIB, stats[name]['entries'],
                time.perf_counter() - started))
        ours = Ours(work) if 'ours' in opts.methods or not opts.no_cutover else None
        startup = startup_cold = None
        if ours:
            if can_drop:
                drop_caches()
                startup_cold = ours.startup_seconds()
            startup = median([ours.startup_seconds() for _run in range(1 if opts.quick else 2)])
            log('ansible-playbook + one data_copy call (start-up cost): %.2f s with its programs in memory%s' % (
                startup, ', %.2f s right after the page cache was dropped' % startup_cold if startup_cold else ''))
        warmup = ProgramWarmup(work, ours) if can_drop and not opts.cold_programs else None
        caches = [can_drop]
        samples = {}
        extras = {}
        funcs = {'cp_a': m_cp_a, 'tar_pipe': m_tar_pipe, 'rsync': m_rsync, 'reference': m_reference,
                 'rsync_sha256sum': m_rsync_sha256sum}
        for name in opts.datasets:
            st = stats[name]
            step = max(1, -(-st['files'] // opts.ref_files))
            subset = st['paths'][::step]
            for run in range(opts.runs):
                for method in opts.methods:
                    fs.format_dst()
                    target = fs.dst / name
                    target.mkdir()
                    caches.append(prepare(method, warmup))
                    started = time.perf_counter()
                    if method == 'ours':
                        job_id = 'bench-%s-%d-%d' % (name, run, os.getpid())
                        extra = ours.copy(fs.src / name, target, job_id, state_dir=ours.fresh_state_dir(job_id))
                        seconds = extra['seconds']
                        if not extra['verified']:
                            raise RuntimeError('ours did not verify on %s: %s' % (name, extra))
                    else:
                        extra = funcs[method](fs.src / name, target, {'stats': st, 'subset': subset})
                        seconds = extra.get('seconds', time.perf_counter() - started)
                    # A copy is done when it is on the disk: every method ends with a flush of the
                    # destination filesystem (ours already flushed before verifying: this one is cheap).
                    flushed = time.perf_counter()
                    flush(target)
                    extra['flush_seconds'] = time.perf_counter() - flushed
                    seconds += extra['flush_seconds']
                    samples.setdefault((method, name), []).append(seconds)
                    extras.setdefault((method, name), []).append(extra)
                    log('%s %s run %d: %.2f s%s' % (method, name, run + 1, seconds, mem_text(extra.get('memory'))))
        cut_runs = []
        if not opts.no_cutover:
            for run in range(opts.runs):
                result = cutover(fs, ours, opts, run, block, caches, warmup)
                cut_runs.append(result)
                log('cutover run %d: ours final %.2f s (copy %.2f, verify %.2f, verified %s, missed %d); plain rsync '
                    '%.2f s (missed %d of %d changed); no-op rerun ours %.2f s, rsync %.2f s' % (
                        run + 1, result['ours_final_seconds'], result['ours_final_copy_seconds'],
                        result['ours_final_verify_seconds'], result['ours_final_verified'], result['ours_missed'],
                        result['rsync_seconds'], result['rsync_missed'], result['changed_files'],
                        result['ours_noop_seconds'], result['rsync_noop_seconds']))
        caches_dropped = all(caches)
        rows = []
        plain_copier = {}
        for name in opts.datasets:
            st = stats[name]
            medians = {m: median(samples.get((m, name), [])) for m in METHODS}
            plain = [m for m in ('cp_a', 'tar_pipe', 'rsync') if medians[m] is not None]
            if plain:
                # The fastest plain copier of this set, rsync -aHAX included (issue 20's copy limit at
                # 1,000,000 files, where rsync beats the tar pipe).
                fastest = min(plain, key=lambda m: medians[m])
                plain_copier[name] = {'method': fastest, 'seconds': medians[fastest],
                                      'runs': [min(group) for group in zip(*[samples[(m, name)] for m in plain])]}
            if medians['cp_a'] is not None and medians['tar_pipe'] is not None:
                medians['copy_limit'] = min(medians['cp_a'], medians['tar_pipe'])
                # Each run's own limit (the better of the two in that run), for the per-run ratios.
                samples[('copy_limit', name)] = [min(pair) for pair in zip(samples[('cp_a', name)],
                                                                           samples[('tar_pipe', name)])]
            for method in METHODS:
                seconds = medians.get(method)
                if seconds is None:
                    continue
                limit = medians.get('copy_limit')
                row = {'method': method, 'dataset': name, 'seconds': round(seconds, 3),
                       'runs': [round(s, 3) for s in samples[(method, name)]],
                       'mb_per_s': st['bytes'] / 1e6 / seconds, 'files_per_s': st['files'] / seconds,
                       'ratio_to_copy_limit': round(seconds / limit, 3) if limit else None}
                ex = extras.get((method, name))
                if method == 'copy_limit':
                    row['note'] = 'best of cp -a and tar pipe'
                elif method == 'reference':
                    row['note'] = 'scaled x%.2f from %d files (file ratio %.2f, byte ratio %.2f: the smaller)' % (
                        ex[0]['scale'], ex[0]['subset_files'], ex[0]['files_scale'], ex[0]['bytes_scale'])
                    row['detail'] = ex
                elif method == 'ours':
                    row['note'] = 'role+module, %s, verified=%s, copy %.2f + verify %.2f s, %d of %d contents read during copy' % (
                        '/'.join(sorted(set(str(e.get('copy_engine')) for e in ex))),
                        all(e['verified'] for e in ex), median([e['copy_seconds'] for e in ex]),
                        median([e['verify_seconds'] for e in ex]),
                        median([(e['hashing'] or {}).get('files_hashed_during_copy', 0) for e in ex]),
                        median([_files_read(e['hashing']) for e in ex]))
                    row['verified'] = all(e['verified'] for e in ex)
                    row['copy_engines'] = sorted(set(str(e.get('copy_engine')) for e in ex))
                    peaks = [peak_of(e) for e in ex if peak_of(e) is not None]
                    row['peak_rss_runs'] = peaks
                    row['peak_rss_bytes'] = max(peaks) if peaks else None
                    row['detail'] = ex
                elif method == 'rsync_sha256sum':
                    row['note'] = 'rsync %.2f + sha256sum %.2f s' % (median([e['copy_seconds'] for e in ex]),
                                                                     median([e['verify_seconds'] for e in ex]))
                    row['detail'] = ex
                rows.append(row)
        cut = None
        if cut_runs:
            cut = {key: median([r[key] for r in cut_runs]) for key in cut_runs[0]
                   if isinstance(cut_runs[0][key], (int, float)) and not isinstance(cut_runs[0][key], bool)}
            cut.update(dataset=opts.cutover_set, runs=cut_runs,
                       ours_missed_total=sum(r['ours_missed'] for r in cut_runs),
                       ours_final_verified=all(r['ours_final_verified'] for r in cut_runs),
                       rsync_missed_total=sum(r['rsync_missed'] for r in cut_runs),
                       rsync_missed_same_second_changes=any(r['rsync_missed_same_second'] for r in cut_runs))
        targets, figures = evaluate_targets(rows, cut, plain_copier)
        result = {
            'command': ' '.join([os.path.relpath(sys.argv[0]) if argv is None else 'bench/run.py']
                                + (sys.argv[1:] if argv is None else list(argv))),
            'finished_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'duration_seconds': round(time.perf_counter() - begun, 1),
            'machine': machine_info(fs, caches_dropped),
            'options': {k: v for k, v in vars(opts).items() if k not in ('out',)},
            'ours_path': 'ansible-playbook running the role storage.mobility.data_mover (helper none) -> '
                         'storage.mobility.data_copy (detached worker: into an empty destination, the parallel first '
                         'copy, hashing each file as it copies it and reading the copies back from disk; otherwise '
                         'rsync while a second process hashes the source and the finished destination files from '
                         'disk; then xxh128 manifests of both trees, one process each); times include '
                         'ansible-playbook and module start-up',
            'ours_startup_seconds': startup,
            'ours_startup_cold_seconds': startup_cold,
            'programs_in_memory': warmup is not None and caches_dropped,
            'warmup_seconds': {method: round(median(values), 3)
                               for method, values in (warmup.seconds.items() if warmup else ())},
            'datasets': {name: {'files': st['files'], 'bytes': st['bytes'], 'entries': st['entries'],
                                'notes': notes[name]} for name, st in stats.items()},
            'results': rows, 'cutover': cut, 'targets': targets, 'figures': figures,
            'fastest_plain_copier': plain_copier,
            'memory_note': 'peak_rss_bytes: the largest sum of VmRSS over the job\'s processes (the data mover\'s '
                           'worker and every process it started), sampled every %.1f s from /proc; '
                           'peak_rss_all_bytes adds ansible-playbook and the module; see bench/peakmem.py'
                           % (ours.memory_interval if ours else 0.1),
        }
        print()
        print('Machine: %(cpu_count)d CPUs, %(memory)s, kernel %(kernel)s, %(rsync)s, Python %(python)s' % dict(
            result['machine'], memory='%.1f GiB' % (result['machine']['memory_bytes'] / 1024 ** 3)))
        print('Filesystems: source %s, destination %s%s' % (
            result['machine']['source_fs'], result['machine']['destination_fs'],
            ('  -- ' + fs.note) if fs.note else ''))
        print('Page cache dropped before every timed run: %s' % (
            'yes' if caches_dropped else 'NO (not possible here): runs may read from memory'))
        if caches_dropped:
            print('Programs: %s' % (
                'after each drop, the method about to be timed copied a one-file folder once, untimed (its programs '
                'in memory, its data on the disk)' if result['programs_in_memory'] else
                'dropped with the page cache and loaded within each timed run (--cold-programs)'))
        print('Ours: %s' % result['ours_path'])
        if startup is not None:
            print('      ansible-playbook + one module call alone: %.2f s with its programs in memory%s' % (
                startup, ', %.2f s right after the page cache was dropped' % startup_cold if startup_cold else ''))
        print('Reference method: measured on a subset of the files and scaled linearly by the file count, or by '
              'the bytes when that factor is smaller (its folder creation is not scaled); hard links become copies.')
        print('Medians of %d run(s); "runs (s)" gives the fastest and the slowest run, the copy limit\'s runs '
              'being the better of cp -a and the tar pipe in each run.' % opts.runs)
        for name, st in stats.items():
            print('  %s: %d files, %.1f MiB, %d entries' % (name, st['files'], st['bytes'] / MIB, st['entries']))
        print()
        print(fmt_table(rows))
        if cut:
            print()
            print('Cutover on %s (%d files changed, %d of them same size within the same second):' % (
                opts.cutover_set, cut['changed_files'], cut['changed_same_size_same_second']))
            print('  plain rsync -aHAX phase 1 (into its own empty destination, cache dropped first): %.2f s' % (
                cut['rsync_phase1_seconds']))
            print('  ours phase 1 (engine %s): %.2f s (copy %s + verify %s); ours final pass (role, final_pass=true, '
                  'new job id, engine %s): '
                  '%.2f s (copy %.2f + verify %.2f), verified: %s, changed files missed: %d in %d run(s); %s' % (
                      cut_runs[0]['phase1_copy_engine'], cut['phase1_seconds'],
                      *('%.2f' % cut[key] if cut.get(key) is not None else '-'
                        for key in ('phase1_copy_seconds', 'phase1_verify_seconds')),
                      cut_runs[0]['ours_final_copy_engine'],
                      cut['ours_final_seconds'], cut['ours_final_copy_seconds'], cut['ours_final_verify_seconds'],
                      cut['ours_final_verified'], cut['ours_missed_total'], len(cut_runs),
                      ('file contents read: %d (both sides; %s)' % (
                          cut['ours_final_files_read'],
                          'a changes pass: the others were proven unchanged by their change times'
                          if (cut_runs[0].get('ours_final_changes_pass') or {}).get('incremental') else
                          'the others kept their phase-1 hashes: unchanged size, mtime, ctime and inode'))
                      if cut_runs[0]['ours_final_hashing'] else 'the job reported no hashing figures'))
            for label, key in (('final pass', 'ours_final_changes_pass'), ('no-op rerun', 'ours_noop_changes_pass')):
                passes = [item.get(key) or {} for item in cut_runs]
                print('  ours %s: %s' % (label, '; '.join(
                    'changes pass, %s entries listed, %s compared' % (item.get('entries_listed'), item.get('entries_compared'))
                    if item.get('incremental') else 'whole pass (%s)' % item.get('full_pass_reason') for item in passes)))
            print('  plain incremental rsync -aHAX: %.2f s, changed files missed: %d in %d run(s) (same-second ones: %s)' % (
                cut['rsync_seconds'], cut['rsync_missed_total'], len(cut_runs),
                'MISSED' if cut['rsync_missed_same_second_changes'] else 'none missed'))
            print('  rerun with nothing to do: ours %.2f s (new job id; attaching to the completed job: %.2f s), '
                  'plain rsync %.2f s' % (cut['ours_noop_seconds'], cut['ours_attach_completed_seconds'],
                                          cut['rsync_noop_seconds']))
        memory_lines = []
        for row in rows:
            if row.get('peak_rss_runs'):
                memory_lines.append('  first copy with verification, %s: %s MiB' % (
                    row['dataset'], ', '.join('%.0f' % (p / MIB) for p in row['peak_rss_runs'])))
        for run in cut_runs:
            memory_lines.append('  cutover on %s: phase 1 %s, final pass %s, no-op rerun %s MiB' % tuple(
                [opts.cutover_set] + ['%.0f' % (run[key] / MIB) if run.get(key) is not None else '-' for key in (
                    'ours_phase1_peak_rss_bytes', 'ours_final_peak_rss_bytes', 'ours_noop_peak_rss_bytes')]))
        if memory_lines:
            print()
            print('Peak memory of ours\' job (the sum of the RSS of the worker and every process it started, '
                  'sampled from /proc every %.1f s), each run:' % ours.memory_interval)
            print('\n'.join(memory_lines))
        print()
        print('Targets:')
        for target in targets:
            unit = {'files': '', 'MiB': ' MiB'}.get(target['unit'], 'x')
            print('  %-4s %s: %s %s %s%s%s%s' % (
                'PASS' if target['pass'] else 'FAIL', target['target'], target['value'], target['op'],
                target['limit'], unit,
                '  (each run: %s)' % ', '.join('%s%s' % (item, unit) for item in target['per_run'])
                if len(target['per_run']) > 1 else '', target_seconds(target, startup)))
        if figures:
            print('For information (retired targets, not judged):')
        for figure in figures:
            print('  %s: %s%s (was %s %s%s)%s' % (
                figure['target'], figure['value'], 'x', figure['op'], figure['retired_limit'], 'x',
                '; ours %.2f s' % figure['ours_seconds'] if 'ours_seconds' in figure else ''))
        print('Total benchmark time: %.1f s' % result['duration_seconds'])
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + '\n')
        print('JSON: %s' % out)
        return 0
    finally:
        if fs is not None:
            fs.cleanup()
        if opts.keep:
            log('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
