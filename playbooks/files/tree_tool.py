# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generate a test tree, or take a manifest of one, for the demo and the tests.

  tree_tool.py generate ROOT [--files N] [--size-mb M] [--seed S]
  tree_tool.py manifest ROOT [--out FILE]
  tree_tool.py compare MANIFEST_A MANIFEST_B

``generate`` is deterministic for a seed and covers what a migration must preserve: contents,
modes, timestamps (nanoseconds), hard links, symlinks (also dangling), xattrs, ACLs where setfacl
exists, a sparse file, empty folders, names with spaces, a newline and non-UTF-8 bytes.
``manifest`` records every entry with its attributes and a SHA-256 of each file's content, and
one digest over all of it, so two trees compare byte for byte and attribute for attribute.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys

ODD_NAMES = [b'with space', b'new\nline', b'caf\xe9-latin1', b'-leading-dash', b'\xf0\x9f\x93\x81 emoji']


def _write(path, size, rng):
    with open(path, 'wb') as handle:
        remaining = size
        block = rng.randbytes(min(size, 1 << 16)) if size else b''
        while remaining > 0:
            chunk = block[:remaining]
            handle.write(chunk)
            remaining -= len(chunk)


def generate(root, files, size_mb, seed):
    rng = random.Random(seed)
    root = os.fsencode(root)
    os.makedirs(root, exist_ok=True)
    budget = size_mb * 1024 * 1024
    folders = max(1, files // 100)
    total = 0
    made = 0
    notes = []
    for i in range(files):
        folder = os.path.join(root, b'd%03d' % (i % folders), b'sub%d' % (i % 3))
        os.makedirs(folder, exist_ok=True)
        # Mostly small files, a few larger ones, within the byte budget.
        size = rng.choice([0, 100, 4096, 4096, 12000, 65536]) if i % 50 else min(budget // 20 + 1, 8 << 20)
        size = max(0, min(size, budget - total)) if budget else size
        path = os.path.join(folder, b'f%06d.dat' % i)
        _write(path, size, rng)
        os.chmod(path, rng.choice([0o644, 0o600, 0o640, 0o755]))
        os.utime(path, ns=(1_600_000_000_123_456_789 + i, 1_600_000_000_987_654_321 + i * 1000))
        total += size
        made += 1
    extras = os.path.join(root, b'extras')
    os.makedirs(os.path.join(extras, b'empty', b'nested-empty'), exist_ok=True)
    for name in ODD_NAMES:
        _write(os.path.join(extras, name), 1234, rng)
    _write(os.path.join(extras, b'hardlink-a'), 5000, rng)
    os.link(os.path.join(extras, b'hardlink-a'), os.path.join(extras, b'hardlink-b'))
    os.symlink(b'hardlink-a', os.path.join(extras, b'symlink-rel'))
    os.symlink(b'/nonexistent/target', os.path.join(extras, b'symlink-dangling'))
    sparse = os.path.join(extras, b'sparse.img')
    with open(sparse, 'wb') as handle:
        handle.seek(64 * 1024 * 1024)
        handle.write(b'end-of-sparse')
        handle.seek(4096)
        handle.write(b'a little data')
    try:
        os.setxattr(os.path.join(extras, b'hardlink-a'), b'user.mobility', b'kept')
        os.setxattr(os.path.join(extras, ODD_NAMES[0]), b'user.checksum', b'\x00\x01binary')
    except OSError as exc:
        notes.append('xattrs not supported here: %s' % exc.strerror)
    if shutil.which('setfacl'):
        proc = subprocess.run(['setfacl', '-m', 'u:12345:rw', '--', os.path.join(extras, b'hardlink-a')],
                              capture_output=True, check=False)
        if proc.returncode:
            notes.append('ACLs not supported here: %s' % proc.stderr.decode(errors='replace').strip())
    else:
        notes.append('setfacl not installed: no ACLs in the tree')
    if os.geteuid() == 0:
        os.lchown(os.path.join(extras, ODD_NAMES[1]), 4242, 4343)
    return {'files': made + len(ODD_NAMES) + 3, 'bytes': total + 1234 * len(ODD_NAMES) + 5000 + 4096 + 13,
            'notes': notes}


def _xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    result = {}
    for name in sorted(names):
        if name in ('trusted.SGI_ACL_FILE', 'trusted.SGI_ACL_DEFAULT'):
            continue  # XFS's own mirror of the POSIX ACLs, compared through system.posix_acl_*
        try:
            result[name] = os.getxattr(path, name, follow_symlinks=False).hex()
        except OSError:
            pass
    return result


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(root):
    root = os.fsencode(root)
    entries = []
    inodes = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).decode('utf-8', 'surrogateescape')
            st = os.lstat(path)
            entry = {'path': rel, 'mode': oct(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid,
                     'xattrs': _xattrs(path)}
            if stat.S_ISLNK(st.st_mode):
                entry['target'] = os.readlink(path).decode('utf-8', 'surrogateescape')
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=_sha256(path),
                             sparse=st.st_blocks * 512 < st.st_size)
                if st.st_nlink > 1:
                    entry['hardlink_group'] = inodes.setdefault(key, rel)
            else:
                entry['mtime_ns'] = st.st_mtime_ns
            entries.append(entry)
    canonical = json.dumps(entries, sort_keys=True).encode('utf-8')
    return {'entries': len(entries), 'files': sum(1 for e in entries if 'sha256' in e),
            'bytes': sum(e.get('size', 0) for e in entries), 'digest': hashlib.sha256(canonical).hexdigest(),
            'list': entries}


def compare(a, b):
    left = dict((e['path'], e) for e in a['list'])
    right = dict((e['path'], e) for e in b['list'])
    return {'equal': a['digest'] == b['digest'],
            'missing': sorted(set(left) - set(right)), 'extra': sorted(set(right) - set(left)),
            'differ': sorted(p for p in set(left) & set(right) if left[p] != right[p])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    sub = parser.add_subparsers(dest='command', required=True)
    gen = sub.add_parser('generate')
    gen.add_argument('root')
    gen.add_argument('--files', type=int, default=1000)
    gen.add_argument('--size-mb', type=int, default=20)
    gen.add_argument('--seed', type=int, default=1)
    man = sub.add_parser('manifest')
    man.add_argument('root')
    man.add_argument('--out')
    cmp_ = sub.add_parser('compare')
    cmp_.add_argument('a')
    cmp_.add_argument('b')
    args = parser.parse_args(argv)
    if args.command == 'generate':
        result = generate(args.root, args.files, args.size_mb, args.seed)
    elif args.command == 'manifest':
        result = manifest(args.root)
        if args.out:
            with open(args.out, 'w') as handle:
                json.dump(result, handle)
        result = dict((k, v) for k, v in result.items() if k != 'list')
    else:
        with open(args.a) as ha, open(args.b) as hb:
            result = compare(json.load(ha), json.load(hb))
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')
    return 0 if result.get('equal', True) else 1


if __name__ == '__main__':
    sys.exit(main())
