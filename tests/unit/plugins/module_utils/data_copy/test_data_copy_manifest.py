"""Hash manifests and their comparison (plugins/module_utils/data_copy/manifest.py), on real files.

Each test builds a tree, copies it with the real rsync (the data mover's own argv), checks that the
trees match, then damages the destination in one way and checks that exactly that is reported.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import manifest as manifest_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")

BAD = b"bad\xffname"


def _build(root):
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


def _copy(src, dst, ignore=("lost+found",)):
    argv = rsync_lib.build_argv(os.fsdecode(src), os.fsdecode(dst), list(ignore))
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def trees(tmp_path):
    src = _build(tmp_path / "src")
    dst = os.fsencode(tmp_path / "dst")
    os.mkdir(dst)
    _copy(src, dst)
    return src, dst


def _compare(src, dst, **kwargs):
    kwargs.setdefault("ignore", ["lost+found"])
    return manifest_lib.compare_trees(src, dst, **kwargs)


def test_copy_matches_and_digests_are_equal(trees):
    src, dst = trees
    result = _compare(src, dst)
    assert result.matched, result.summary()
    assert result.source_digest == result.destination_digest
    assert result.source_digest.startswith("sha256:")
    assert result.source_counts["files"] == 7
    assert result.source_counts["directories"] == 4  # ., dir, dir/sub, empty (lost+found ignored)
    assert result.source_counts["symlinks"] == 1
    assert result.compared == result.source_counts["entries"]
    json.dumps(result.as_dict())


def test_flipped_byte_with_equal_size_and_mtime_differs_in_hash_only(trees):
    src, dst = trees
    path = os.path.join(dst, b"dir", b"b.bin")
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(12345)
        byte = handle.read(1)
        handle.seek(12345)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    result = _compare(src, dst)
    assert result.differ == [{"path": "dir/b.bin", "attributes": ["hash"]}]
    assert result.repair == [b"dir/b.bin"]
    assert result.source_digest != result.destination_digest
    assert "dir/b.bin (hash)" in result.summary()


@pytest.mark.parametrize("algorithm", ["sha256", "blake2b", "xxh128"])
def test_every_algorithm_detects_the_flip(trees, algorithm):
    if algorithm == "xxh128":
        assert manifest_lib._xxhash() is not None, "install xxhash (requirements-dev.txt) to test xxh128"
    src, dst = trees
    path = os.path.join(dst, b"dir", b"sub", b"c")
    stat_before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"C")
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    result = _compare(src, dst, algorithm=algorithm)
    assert [item["path"] for item in result.differ] == ["dir/sub/c"]


def test_missing_and_extra(trees):
    src, dst = trees
    os.unlink(os.path.join(dst, b"dir", b"sub", b"c"))
    shutil.rmtree(os.path.join(dst, b"empty"))
    with open(os.path.join(dst, b"dir", b"stray"), "wb") as handle:
        handle.write(b"?")
    result = _compare(src, dst)
    assert result.missing == ["dir/sub/c", "empty"]
    assert result.extra == ["dir/stray"]
    assert (result.missing_count, result.extra_count) == (2, 1)
    # Removing and adding entries changed the modification times of their folders.
    assert result.differ == [{"path": path, "attributes": ["mtime_ns"]} for path in (".", "dir", "dir/sub")]
    assert result.repair == []


def test_missing_folder_lists_its_contents(trees):
    src, dst = trees
    shutil.rmtree(os.path.join(dst, b"dir"))
    result = _compare(src, dst, skip_times=("directory",))
    assert result.missing == ["dir", "dir/a.hardlink", "dir/a.symlink", "dir/b.bin", "dir/sub", "dir/sub/c"]
    assert result.missing_count == 6 and result.differ_count == 0 and result.extra_count == 0


def test_xattr_difference(trees):
    src, dst = trees
    os.setxattr(os.path.join(dst, b"a.txt"), "user.origin", b"other")
    os.setxattr(os.path.join(dst, b"with space"), "user.added", b"1")
    result = _compare(src, dst)
    assert {item["path"]: item["attributes"] for item in result.differ} == {
        "a.txt": ["xattrs"], "dir/a.hardlink": ["xattrs"], "with space": ["xattrs"]}


def acl_xattr(mode, users=()):
    """The system.posix_acl_access value for ``mode`` plus named users ``(uid, perm)`` (what setfacl writes)."""
    entries = [(0x01, (mode >> 6) & 7, 0xFFFFFFFF)]
    entries += [(0x02, perm, uid) for uid, perm in users]
    entries += [(0x04, (mode >> 3) & 7, 0xFFFFFFFF), (0x10, (mode >> 3) & 7, 0xFFFFFFFF),
                (0x20, mode & 7, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_acl_difference(trees):
    src, dst = trees
    path = os.path.join(dst, b"dir", b"sub", b"c")
    os.setxattr(path, "system.posix_acl_access", acl_xattr(0o644, [(12345, 4)]))
    assert "system.posix_acl_access" in manifest_lib.read_xattrs(path)
    result = _compare(src, dst)
    assert result.differ == [{"path": "dir/sub/c", "attributes": ["xattrs"]}]


def test_broken_hard_link(trees):
    src, dst = trees
    link = os.path.join(dst, b"dir", b"a.hardlink")
    data = open(link, "rb").read()
    st = os.stat(link)
    os.unlink(link)
    with open(link, "wb") as handle:
        handle.write(data)
    os.setxattr(link, "user.origin", b"test")
    os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(os.path.join(dst, b"dir"), ns=(os.stat(os.path.join(src, b"dir")).st_atime_ns,
                                            os.stat(os.path.join(src, b"dir")).st_mtime_ns))
    result = _compare(src, dst)
    assert result.differ == [{"path": "dir/a.hardlink", "attributes": ["link"]}]
    assert result.repair == [b"dir/a.hardlink"]


def test_symlink_target_changed(trees):
    src, dst = trees
    link = os.path.join(dst, b"dir", b"a.symlink")
    os.unlink(link)
    os.symlink(b"../with space", link)
    result = _compare(src, dst, skip_times=("symlink", "directory"))
    assert result.differ == [{"path": "dir/a.symlink", "attributes": ["target"]}]


def test_symlink_is_never_followed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "outside").symlink_to("/etc/hostname")
    entries, dummy = manifest_lib.manifest(str(src), algorithm="sha256")
    link = [entry for entry in entries if entry["path"] == b"outside"][0]
    assert link["type"] == "symlink" and link["target"] == b"/etc/hostname" and "hash" not in link


def test_mode_and_owner_differences(trees):
    src, dst = trees
    os.chmod(os.path.join(dst, b"a.txt"), 0o600)
    result = _compare(src, dst)
    assert {item["path"]: item["attributes"] for item in result.differ} == {
        "a.txt": ["mode"], "dir/a.hardlink": ["mode"]}
    if os.geteuid() == 0:
        os.lchown(os.path.join(dst, b"with space"), 4321, 4321)
        result = _compare(src, dst)
        assert {item["path"]: item["attributes"] for item in result.differ}["with space"] == ["uid", "gid"]


def test_non_utf8_names_render_safely(trees):
    src, dst = trees
    os.unlink(os.path.join(dst, BAD))
    result = _compare(src, dst)
    assert result.missing == ["bad\\xffname"]
    text = json.dumps(result.as_dict(), ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogates: this would raise UnicodeEncodeError


def test_newline_name_is_one_entry(trees):
    src, dst = trees
    os.unlink(os.path.join(dst, b"new\nline"))
    result = _compare(src, dst)
    assert result.missing == ["new\nline"]


def test_ignored_names_are_skipped_on_both_sides(trees):
    src, dst = trees
    os.makedirs(os.path.join(dst, b"dir", b"lost+found"))
    result = _compare(src, dst, skip_times=("directory",))
    assert result.matched, result.summary()
    result = _compare(src, dst, ignore=[], skip_times=("directory",))
    assert "lost+found" in result.missing and "dir/lost+found" in result.extra


def test_lists_are_capped_but_counted(tmp_path):
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for index in range(12):
        (src / ("f%02d" % index)).write_bytes(b"x")
    result = manifest_lib.compare_trees(str(src), str(dst), limit=5, skip_times=("directory",))
    assert result.missing == ["f%02d" % index for index in range(5)]
    assert result.missing_count == 12


def test_manifest_entries_and_digest_are_stable(trees):
    src, dummy = trees
    first, digest1 = manifest_lib.manifest(src, ["lost+found"], "sha256")
    second, digest2 = manifest_lib.manifest(src, ["lost+found"], "sha256")
    assert digest1 == digest2
    assert [entry["path"] for entry in first] == [entry["path"] for entry in second]
    paths = [entry["path"] for entry in first]
    assert paths[0] == b"."
    assert b"dir/sub/c" in paths and b"lost+found/junk" not in paths
    hardlink = [entry for entry in first if entry["path"] == b"dir/a.hardlink"][0]
    assert hardlink["link"] == b"a.txt"


def test_unreadable_file_is_a_difference(trees, monkeypatch):
    src, dst = trees
    real_open = manifest_lib.open_for_reading
    victim = os.path.join(dst, b"with space")

    def refuse(path, *args):
        if path == victim:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args)

    monkeypatch.setattr(manifest_lib, "open_for_reading", refuse)
    result = _compare(src, dst)
    assert result.differ == [{"path": "with space", "attributes": ["hash", "error"],
                              "destination_error": "EACCES: Permission denied"}]
    assert not result.matched


def test_xxh128_falls_back_to_blake2b_without_xxhash(monkeypatch):
    monkeypatch.setattr(manifest_lib, "_xxhash", lambda: None)
    algorithm, warning = manifest_lib.resolve_algorithm("xxh128")
    assert algorithm == "blake2b"
    assert "xxhash is not installed" in warning
    assert manifest_lib.missing_library("xxh128") is None


def test_blake3_needs_its_package(monkeypatch):
    monkeypatch.setattr(manifest_lib, "_blake3", lambda: None)
    assert manifest_lib.missing_library("blake3") == "blake3"
    with pytest.raises(manifest_lib.HashUnavailable) as caught:
        manifest_lib.resolve_algorithm("blake3")
    assert caught.value.library == "blake3"


def test_sha256_and_blake2b_need_nothing():
    assert manifest_lib.resolve_algorithm("sha256") == ("sha256", None)
    assert manifest_lib.resolve_algorithm("blake2b") == ("blake2b", None)
    with pytest.raises(ValueError):
        manifest_lib.resolve_algorithm("md5")


def test_a_symlinked_root_is_followed_like_rsync_follows_source_slash(trees, tmp_path):
    src, dst = trees
    link = tmp_path / "source-link"
    link.symlink_to(os.fsdecode(src))
    result = _compare(str(link), dst)
    assert result.matched, result.summary()


# --------------------------------------------------------------------------- hash cache, processes, prehash


def _flip(path, offset=100):
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


def test_hash_cache_reuses_only_files_whose_identity_did_not_change(trees):
    src, dst = trees
    first = _compare(src, dst)
    assert first.matched and first.files_reused == 0
    hashed = first.files_hashed
    assert hashed >= 10  # both sides' files (a hard link shares its first path's hash)
    # Every file read, plus the hard link's second path on each side (same inode, same identity).
    assert len(first.cache.sides["source"]) + len(first.cache.sides["destination"]) == hashed + 2
    assert first.cache.sides["source"][b"dir/a.hardlink"] == first.cache.sides["source"][b"a.txt"]

    again = _compare(src, dst, cache=first.cache)
    assert again.matched, again.summary()
    assert again.files_hashed == 0 and again.files_reused == hashed
    assert again.source_digest == first.source_digest and again.destination_digest == first.destination_digest

    # Same size, same mtime, other content: the change time gives it away; the file is read again.
    _flip(os.path.join(dst, b"dir", b"b.bin"))
    damaged = _compare(src, dst, cache=again.cache)
    assert damaged.differ == [{"path": "dir/b.bin", "attributes": ["hash"]}]
    assert damaged.files_hashed == 1 and damaged.files_reused == hashed - 1


def test_hash_cache_of_another_algorithm_is_not_used(trees):
    src, dst = trees
    first = _compare(src, dst, algorithm="sha256")
    other = _compare(src, dst, algorithm="blake2b", cache=first.cache)
    assert other.files_reused == 0 and other.matched


def test_hash_cache_round_trip_keeps_any_name(trees, tmp_path):
    src, dst = trees
    cache = _compare(src, dst).cache
    assert BAD in cache.sides["source"] and BAD in cache.sides["destination"]
    path = str(tmp_path / "hashes")
    cache.save(path)
    loaded = manifest_lib.HashCache.load(path, "xxh128")
    assert loaded.sides == cache.sides
    assert manifest_lib.HashCache.load(path, "sha256") is None  # recorded with another algorithm
    assert manifest_lib.HashCache.load(str(tmp_path / "missing"), "xxh128") is None
    with open(path, "rb") as handle:
        saved = handle.read()
    with open(path, "ab") as handle:
        handle.write(b"s not-hex 1 2\n")
    assert manifest_lib.HashCache.load(path, "xxh128") is None  # damaged: not trusted at all
    with open(path, "wb") as handle:
        handle.write(saved[:-3])
    assert manifest_lib.HashCache.load(path, "xxh128") is None  # cut short


def test_hash_cache_of_the_wrong_shape_is_not_used(trees, tmp_path):
    src, dst = trees
    cache = _compare(src, dst).cache
    path = str(tmp_path / "hashes")
    rel = sorted(cache.sides["source"])[0]
    for wrong in ((1, 2, 3), "digest", ((1, 2, 3), "digest"), ((1, 2, 3, 4), b"digest")):
        damaged = manifest_lib.HashCache("xxh128", {"source": dict(cache.sides["source"]),
                                                    "destination": cache.sides["destination"]})
        damaged.sides["source"][rel] = wrong
        damaged.save(path)
        assert manifest_lib.HashCache.load(path, "xxh128") is None, wrong
    cache.save(path)
    assert manifest_lib.HashCache.load(path, "xxh128").sides == cache.sides


def test_processes_and_threads_give_the_same_comparison(trees):
    src, dst = trees
    _flip(os.path.join(dst, b"a.txt"), offset=1)
    by_process = _compare(src, dst, processes=True)
    by_thread = _compare(src, dst, processes=False)
    assert by_process.as_dict() == by_thread.as_dict()
    assert by_process.differ == [{"path": "a.txt", "attributes": ["hash"]},
                                 {"path": "dir/a.hardlink", "attributes": ["hash"]}]


def test_prehash_hashes_finished_destination_files_and_waits_for_the_others(trees):
    src, dst = trees
    unfinished = os.path.join(dst, b"dir", b"sub", b"c")
    os.utime(unfinished, ns=(1, 1))  # not the source's mtime: the copy has not finished it
    context = manifest_lib.fork_context()
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=manifest_lib.prehash, args=(src, ["lost+found"], "xxh128", {}, sending),
                            kwargs={"destination": dst})
    child.start()
    sending.close()
    records = {"source": {}, "destination": {}}
    try:
        # 6 regular files have their own inode on each side (a.txt and its hard link share one).
        while len(records["source"]) < 7 or len(records["destination"]) < 6:
            assert receiving.poll(60), records
            message = receiving.recv()
            assert isinstance(message, list), message
            for side, rel, record in message:
                records[side][rel] = record
        # The unfinished file is never read while it differs; the prehash keeps waiting for it.
        assert not receiving.poll(1.5)  # at least one more round (PREHASH_ROUND) has looked at it
        assert child.is_alive()
    finally:
        child.kill()
        child.join()
        receiving.close()
    assert b"dir/sub/c" in records["source"] and b"dir/sub/c" not in records["destination"]
    os.utime(unfinished, ns=(os.stat(os.path.join(src, b"dir", b"sub", b"c")).st_mtime_ns,) * 2)
    result = _compare(src, dst, cache=manifest_lib.HashCache("xxh128", records))
    assert result.matched, result.summary()
    # Only the unfinished file was read by the verification (the hard link shares a.txt's hash).
    assert result.files_hashed == 1
