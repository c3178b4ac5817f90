"""Trees for the data copy tests: a tree with every kind of entry, copied by the real rsync.

Not a test module; pytest puts this folder on ``sys.path`` (see conftest.py for the ``trees`` fixture).
"""

from __future__ import annotations

import os
import struct
import subprocess

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib

BAD = b"bad\xffname"


def build(root):
    root = os.fsencode(root)
    os.makedirs(os.path.join(root, b"dir", b"sub"))
    os.makedirs(os.path.join(root, b"empty"))
    os.makedirs(os.path.join(root, b"lost+found"))
    with open(os.path.join(root, b"lost+found", b"junk"), "wb") as handle:
        handle.write(b"ignored")
    for rel, data in ((b"a.txt", b"alpha\n"), (b"dir/b.bin", os.urandom(70000)), (b"dir/sub/c", b"c" * 10),
                      (b"with space", b"s"), (b"new\nline", b"n"), (BAD, b"not utf-8")):
        with open(os.path.join(root, rel), "wb") as handle:
            handle.write(data)
    os.link(os.path.join(root, b"a.txt"), os.path.join(root, b"dir", b"a.hardlink"))
    os.symlink(b"../a.txt", os.path.join(root, b"dir", b"a.symlink"))
    os.setxattr(os.path.join(root, b"a.txt"), "user.origin", b"test")
    return root


def copy(src, dst, ignore=("lost+found",)):
    argv = rsync_lib.build_argv(os.fsdecode(src), os.fsdecode(dst), list(ignore))
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def compare(src, dst, **kwargs):
    kwargs.setdefault("ignore", ["lost+found"])
    return compare_lib.compare_trees(src, dst, **kwargs)


def flip(path, offset=100):
    """Change one byte, keeping the size and both timestamps to the nanosecond."""
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def acl_xattr(mode, users=()):
    """The system.posix_acl_access value for ``mode`` plus named users ``(uid, perm)`` (what setfacl writes)."""
    entries = [(0x01, (mode >> 6) & 7, 0xFFFFFFFF)]
    entries += [(0x02, perm, uid) for uid, perm in users]
    entries += [(0x04, (mode >> 3) & 7, 0xFFFFFFFF), (0x10, (mode >> 3) & 7, 0xFFFFFFFF),
                (0x20, mode & 7, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)
