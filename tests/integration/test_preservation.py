"""What a host-assisted migration preserves, on real filesystems: an ext4 pool to an xfs pool.

One share holds every kind of entry and attribute a migration must keep. It is migrated with the
operator's playbooks (migrate_share, then complete_share_migration: two passes into xfs, the phase 1
copy by the parallel first-copy engine and the final pass by rsync), and compared entry by entry with a manifest taken here,
independently of the data mover's own verification: type, permission bits (setuid, setgid,
sticky), numeric owner and group (ids unknown to /etc/passwd), size, content hash, modification
time in nanoseconds (files, folders, symlinks), symlink targets (never followed), extended
attributes, POSIX ACLs (access and default), hard-link groups, sparseness (allocated blocks), and
names with spaces, newlines and bytes that are not UTF-8.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from hostmig_lab import BETA, Lab, mount_options

pytestmark = pytest.mark.integration

UNKNOWN_UID, UNKNOWN_GID = 54321, 54322
BASE_NS = 1_500_000_000_123_456_789
SPARSE_SIZE = 32 << 20
ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
# XFS's own copy of the POSIX ACLs, visible to root; the ACL itself is compared as system.posix_acl_*.
XFS_INTERNAL = ("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT")

ODD_NAMES = (b"with space.txt", b"new\nline.txt", b"latin1-caf\xe9", b"\xff\xfe not utf-8", b"-leading-dash",
             "\u00fcml\u00e4ut-utf8".encode())


def _ns(index: int) -> tuple[int, int]:
    """Distinct (atime, mtime) in nanoseconds, none a whole second."""
    return (BASE_NS + index * 1_000_003, BASE_NS + index * 7_000_011)


def build_tree(root: Path) -> dict:
    """Every kind of entry a migration must keep; returns facts the tests check by name."""
    root = os.fsencode(root)
    counter = iter(range(1, 10_000))

    def join(*parts: bytes) -> bytes:
        return os.path.join(root, *parts)

    def write(rel: bytes, data: bytes, mode: int = 0o644, owner=None) -> bytes:
        path = join(rel)
        with open(path, "wb") as handle:
            handle.write(data)
        if owner:
            os.chown(path, *owner)
        os.chmod(path, mode)  # after chown, which would clear setuid/setgid
        return path

    for folder in (b"modes", b"owners", b"links", b"links/sub", b"xattrs", b"acl-dir", b"names", b"empty",
                   b"empty/nested", b"special"):
        os.mkdir(join(folder))
    write(b"plain.bin", os.urandom(3 << 20))
    write(b"empty.txt", b"")
    # Permission bits
    write(b"modes/setuid", b"#!/bin/sh\n", 0o4755)
    write(b"modes/setgid", b"#!/bin/sh\n", 0o2750)
    write(b"modes/private", b"secret\n", 0o600)
    write(b"modes/no-access", b"none\n", 0o000)
    os.mkdir(join(b"modes/sticky-dir"))
    os.chmod(join(b"modes/sticky-dir"), 0o1777)
    os.mkdir(join(b"modes/setgid-dir"))
    os.chmod(join(b"modes/setgid-dir"), 0o2775)
    # Numeric owners nobody on this machine has
    write(b"owners/file", b"owned\n", 0o640, (UNKNOWN_UID, UNKNOWN_GID))
    os.mkdir(join(b"owners/dir"))
    os.chown(join(b"owners/dir"), UNKNOWN_UID + 2, UNKNOWN_GID + 2)
    os.symlink(b"file", join(b"owners/link"))
    os.lchown(join(b"owners/link"), UNKNOWN_UID + 4, UNKNOWN_GID + 4)
    # Hard links (three names, two folders) and symlinks of every kind, none followed
    write(b"links/a", os.urandom(5000))
    os.link(join(b"links/a"), join(b"links/b"))
    os.link(join(b"links/a"), join(b"links/sub/c"))
    os.symlink(b"a", join(b"links/relative"))
    os.symlink(b"/etc/hostname", join(b"links/absolute"))
    os.symlink(b"../does/not/exist", join(b"links/dangling"))
    os.symlink(b"../modes/sticky-dir", join(b"links/to-dir"))
    # Extended attributes (text and binary values) on a file and a folder
    write(b"xattrs/file", b"tagged\n")
    os.setxattr(join(b"xattrs/file"), b"user.color", b"blue")
    os.setxattr(join(b"xattrs/file"), b"user.binary", bytes(range(256)))
    os.setxattr(join(b"xattrs"), b"user.folder", b"\x00\x01\x02")
    # POSIX ACLs: an access ACL on a file, access and default ACLs on a folder, a file inheriting them
    write(b"acl-file", b"acl\n", 0o640)
    _setfacl(["-m", f"u:{UNKNOWN_UID}:rw,g:{UNKNOWN_GID}:r"], join(b"acl-file"))
    _setfacl(["-m", f"u:{UNKNOWN_UID}:rwx,d:u:{UNKNOWN_UID}:r-x,d:g:{UNKNOWN_GID}:rwx"], join(b"acl-dir"))
    write(b"acl-dir/inherited", b"inherits the default ACL\n", 0o640)
    # A sparse file: 32 MiB apparent, a few KiB allocated
    with open(join(b"sparse.img"), "wb") as handle:
        handle.seek(1 << 20)
        handle.write(b"in the middle")
        handle.seek(SPARSE_SIZE - 12)
        handle.write(b"at the end!!")
    # Odd names
    for name in ODD_NAMES:
        write(b"names/" + name, name * 3)
    # A FIFO (never opened by the copy)
    os.mkfifo(join(b"special/fifo"), 0o640)
    # Nanosecond times on everything, folders last (deepest first) so that nothing touches them after
    entries = []
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            entries.append(os.path.join(folder, name))
    for path in sorted(entries, key=lambda p: (-p.count(b"/"), p)):
        os.utime(path, ns=_ns(next(counter)), follow_symlinks=False)
    os.utime(root, ns=_ns(next(counter)))
    return {"sparse_source_blocks": os.stat(join(b"sparse.img")).st_blocks}


def _setfacl(args: list, path: bytes) -> None:
    subprocess.run(["setfacl"] + args + ["--", path], check=True)


def getfacl(path: Path | bytes) -> list[str]:
    out = subprocess.run(["getfacl", "-n", "-p", "--", path], check=True, capture_output=True).stdout
    return [line for line in out.decode().splitlines() if line and not line.startswith("#")]


def _xattrs(path: bytes) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    values = {}
    for name in sorted(names):
        if name in XFS_INTERNAL:
            continue
        values[name] = os.getxattr(path, name, follow_symlinks=False)
    return values


def manifest(root: Path) -> dict:
    """{relative path (bytes): attributes} of every entry below ``root``, ``.`` included."""
    root = os.fsencode(root)
    entries = {}
    inodes: dict = {}
    paths = [root]
    for folder, dirs, files in os.walk(root):
        paths += [os.path.join(folder, name) for name in dirs + files]
    for path in paths:
        rel = os.path.relpath(path, root)
        st = os.lstat(path)
        entry = {"type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid,
                 "gid": st.st_gid, "mtime_ns": st.st_mtime_ns, "xattrs": _xattrs(path)}
        if stat.S_ISLNK(st.st_mode):
            entry["target"] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            entry.update(size=st.st_size, sha256=digest.hexdigest(), nlink=st.st_nlink,
                         sparse=st.st_blocks * 512 < st.st_size // 4)
            inodes.setdefault(st.st_ino, []).append(rel)
            entry["inode"] = st.st_ino
        entries[rel] = entry
    for entry in entries.values():
        if "inode" in entry:
            entry["hard_links"] = tuple(sorted(inodes[entry.pop("inode")]))
    return entries


def differences(left: dict, right: dict) -> list:
    problems = [("missing", p) for p in sorted(set(left) - set(right))]
    problems += [("extra", p) for p in sorted(set(right) - set(left))]
    for path in sorted(set(left) & set(right)):
        for key in sorted(set(left[path]) | set(right[path])):
            if left[path].get(key) != right[path].get(key):
                problems.append((path, key, left[path].get(key), right[path].get(key)))
    return problems


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, collections_path):
    """The share built, migrated ext4 -> xfs in two phases; manifests and ACLs along the way."""
    lab = Lab(tmp_path_factory.mktemp("preserve"), collections_path)
    if not lab.root:
        pytest.skip("needs root: ext4 and xfs pools on loop devices, numeric owners, bind exports")
    facts = {}
    try:
        lab.open()
        lab.create_shares("keep")
        source = lab.share_path("keep")
        facts.update(build_tree(source))
        facts["before"] = manifest(source)
        facts["fstypes"] = (lab.fstype("alpha"), lab.fstype("beta"))
        facts["migrate"] = lab.migrate("keep")
        destination = lab.share_path("keep", "beta")
        facts["phase1"] = manifest(destination)
        facts["phase1_acl"] = {name: getfacl(destination / name) for name in ("acl-file", "acl-dir")}
        facts["phase1_record"] = lab.record("keep")
        facts["complete"] = lab.complete("keep")
        facts["record"] = lab.record("keep")
        exported = lab.export_path("keep")
        facts["export_mount"] = mount_options(exported)
        facts["after"] = manifest(exported)
        facts["after_acl"] = {name: getfacl(exported / name) for name in ("acl-file", "acl-dir")}
        facts["source_gone"] = not source.exists()
        yield facts
    finally:
        problems = lab.close()
    assert not problems, problems


def test_the_pools_are_ext4_and_xfs_and_the_migration_succeeded(migrated):
    assert migrated["fstypes"] == ("ext4", "xfs")
    assert migrated["migrate"].rc == 0, migrated["migrate"]
    assert migrated["phase1_record"]["task_state"] == "data_copying_completed"
    assert migrated["phase1_record"]["migration"]["mechanism"] == "host"
    # Phase 1 copies into the new, empty share with the parallel engine; nothing changed since, so the
    # final pass is a changes pass that lists nothing, compares the top folder and proves the rest
    # from the change times (the manifests below compare every entry after the switch).
    assert migrated["phase1_record"]["migration"]["copy"]["copy_engine"] == "parallel"
    final = migrated["record"]["migration"]["final_copy"]
    assert final["copy_engine"] == "changes", final
    assert final["changes_pass"] == {"incremental": True, "full_pass_reason": None, "entries_listed": 0,
                                     "entries_compared": 1}, final["changes_pass"]
    assert migrated["complete"].rc == 0, migrated["complete"]
    record = migrated["record"]
    assert record["task_state"] == "migration_success" and record["host"] == BETA
    assert "rw" in migrated["export_mount"]
    assert migrated["source_gone"], "the source instance folder is still there"


def test_phase1_copy_is_identical_entry_by_entry(migrated):
    assert differences(migrated["before"], migrated["phase1"]) == []


def test_migrated_share_is_identical_entry_by_entry(migrated):
    """After the final pass and the switchover, served from xfs through the export."""
    assert differences(migrated["before"], migrated["after"]) == []


def test_every_kind_of_entry_is_in_the_tree_and_kept(migrated):
    """The comparison above is only as good as the tree: check that each case is there, and kept."""
    after = migrated["after"]
    assert len(after) == len(migrated["before"]) >= 40
    # The owners must be unknown here, or numeric ids would not be tested.
    for uid, gid in ((UNKNOWN_UID, UNKNOWN_GID), (UNKNOWN_UID + 2, UNKNOWN_GID + 2), (UNKNOWN_UID + 4, UNKNOWN_GID + 4)):
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
        with pytest.raises(KeyError):
            grp.getgrgid(gid)
    assert after[b"modes/setuid"]["mode"] == oct(0o4755)
    assert after[b"modes/setgid"]["mode"] == oct(0o2750)
    assert after[b"modes/no-access"]["mode"] == oct(0)
    assert after[b"modes/sticky-dir"]["mode"] == oct(0o1777)
    assert after[b"modes/setgid-dir"]["mode"] == oct(0o2775)
    assert (after[b"owners/file"]["uid"], after[b"owners/file"]["gid"]) == (UNKNOWN_UID, UNKNOWN_GID)
    assert (after[b"owners/dir"]["uid"], after[b"owners/dir"]["gid"]) == (UNKNOWN_UID + 2, UNKNOWN_GID + 2)
    assert (after[b"owners/link"]["uid"], after[b"owners/link"]["gid"]) == (UNKNOWN_UID + 4, UNKNOWN_GID + 4)
    assert after[b"links/a"]["hard_links"] == (b"links/a", b"links/b", b"links/sub/c")
    assert after[b"links/a"]["nlink"] == 3
    for name, target in ((b"relative", b"a"), (b"absolute", b"/etc/hostname"),
                         (b"dangling", b"../does/not/exist"), (b"to-dir", b"../modes/sticky-dir")):
        assert after[b"links/" + name]["type"] == stat.S_IFLNK, name
        assert after[b"links/" + name]["target"] == target
    assert after[b"xattrs/file"]["xattrs"]["user.color"] == b"blue"
    assert after[b"xattrs/file"]["xattrs"]["user.binary"] == bytes(range(256))
    assert after[b"xattrs"]["xattrs"]["user.folder"] == b"\x00\x01\x02"
    assert set(ACL_NAMES) <= set(after[b"acl-dir"]["xattrs"])
    assert "system.posix_acl_access" in after[b"acl-file"]["xattrs"]
    assert "system.posix_acl_access" in after[b"acl-dir/inherited"]["xattrs"]
    assert after[b"special/fifo"]["type"] == stat.S_IFIFO
    assert after[b"empty/nested"]["type"] == stat.S_IFDIR
    for name in ODD_NAMES:
        assert after[b"names/" + name]["sha256"] == hashlib.sha256(name * 3).hexdigest(), name
    # Nanosecond times on files, folders and symlinks (none of them a whole second).
    for rel in (b"plain.bin", b"empty/nested", b"links/dangling", b"names/new\nline.txt", b"."):
        assert after[rel]["mtime_ns"] % 1_000_000_000 != 0, rel
        assert after[rel]["mtime_ns"] == migrated["before"][rel]["mtime_ns"], rel


def test_sparse_file_stays_sparse_on_xfs(migrated):
    before, after = migrated["before"][b"sparse.img"], migrated["after"][b"sparse.img"]
    assert before["sparse"] and before["size"] == SPARSE_SIZE
    assert after["size"] == SPARSE_SIZE and after["sha256"] == before["sha256"]
    assert after["sparse"], "the destination copy of sparse.img is fully allocated"
    assert migrated["phase1"][b"sparse.img"]["sparse"]


def test_acls_survive_two_passes_to_xfs(migrated):
    """Regression: rsync -X on a second pass into xfs deleted trusted.SGI_ACL_FILE, XFS's own copy of
    the ACL, and the ACL with it. The phase 1 copy and the final pass must both leave the ACLs."""
    expected_file = {f"user:{UNKNOWN_UID}:rw-", f"group:{UNKNOWN_GID}:r--"}
    expected_dir = {f"user:{UNKNOWN_UID}:rwx", f"default:user:{UNKNOWN_UID}:r-x", f"default:group:{UNKNOWN_GID}:rwx"}
    for when in ("phase1_acl", "after_acl"):
        acl = migrated[when]
        assert expected_file <= set(acl["acl-file"]), (when, acl["acl-file"])
        assert expected_dir <= set(acl["acl-dir"]), (when, acl["acl-dir"])
    before = migrated["before"]
    for rel in (b"acl-file", b"acl-dir", b"acl-dir/inherited"):
        for name in ACL_NAMES:
            assert migrated["after"][rel]["xattrs"].get(name) == before[rel]["xattrs"].get(name), (rel, name)
