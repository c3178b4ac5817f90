"""Comparing two trees (plugins/module_utils/data_copy/compare.py), on real files.

Each test builds a tree, copies it with the real rsync (the data mover's own argv), checks that the
trees match, then damages the destination in one way and checks that exactly that is reported.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from copied_trees import BAD, acl_xattr, compare, flip
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileread as fileread_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import xattrs as xattrs_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")


def test_copy_matches_and_digests_are_equal(trees):
    src, dst = trees
    result = compare(src, dst)
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
    flip(os.path.join(dst, b"dir", b"b.bin"), offset=12345)
    result = compare(src, dst)
    assert result.differ == [{"path": "dir/b.bin", "attributes": ["hash"]}]
    assert result.repair == [b"dir/b.bin"]
    assert result.source_digest != result.destination_digest
    assert "dir/b.bin (hash)" in result.summary()


@pytest.mark.parametrize("algorithm", ["sha256", "blake2b", "xxh128"])
def test_every_algorithm_detects_the_flip(trees, algorithm):
    if algorithm == "xxh128":
        assert hashing_lib._xxhash() is not None, "install xxhash (requirements-dev.txt) to test xxh128"
    src, dst = trees
    path = os.path.join(dst, b"dir", b"sub", b"c")
    stat_before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"C")
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    result = compare(src, dst, algorithm=algorithm)
    assert [item["path"] for item in result.differ] == ["dir/sub/c"]


def test_missing_and_extra(trees):
    src, dst = trees
    os.unlink(os.path.join(dst, b"dir", b"sub", b"c"))
    shutil.rmtree(os.path.join(dst, b"empty"))
    with open(os.path.join(dst, b"dir", b"stray"), "wb") as handle:
        handle.write(b"?")
    result = compare(src, dst)
    assert result.missing == ["dir/sub/c", "empty"]
    assert result.extra == ["dir/stray"]
    assert (result.missing_count, result.extra_count) == (2, 1)
    # Removing and adding entries changed the modification times of their folders.
    assert result.differ == [{"path": path, "attributes": ["mtime_ns"]} for path in (".", "dir", "dir/sub")]
    assert result.repair == []


def test_missing_folder_lists_its_contents(trees):
    src, dst = trees
    shutil.rmtree(os.path.join(dst, b"dir"))
    result = compare(src, dst, skip_times=("directory",))
    assert result.missing == ["dir", "dir/a.hardlink", "dir/a.symlink", "dir/b.bin", "dir/sub", "dir/sub/c"]
    assert result.missing_count == 6 and result.differ_count == 0 and result.extra_count == 0


def test_xattr_difference(trees):
    src, dst = trees
    os.setxattr(os.path.join(dst, b"a.txt"), "user.origin", b"other")
    os.setxattr(os.path.join(dst, b"with space"), "user.added", b"1")
    result = compare(src, dst)
    assert {item["path"]: item["attributes"] for item in result.differ} == {
        "a.txt": ["xattrs"], "dir/a.hardlink": ["xattrs"], "with space": ["xattrs"]}


def test_acl_difference(trees):
    src, dst = trees
    path = os.path.join(dst, b"dir", b"sub", b"c")
    os.setxattr(path, "system.posix_acl_access", acl_xattr(0o644, [(12345, 4)]))
    assert "system.posix_acl_access" in xattrs_lib.read_xattrs(path)
    result = compare(src, dst)
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
    result = compare(src, dst)
    assert result.differ == [{"path": "dir/a.hardlink", "attributes": ["link"]}]
    assert result.repair == [b"dir/a.hardlink"]


def test_symlink_target_changed(trees):
    src, dst = trees
    link = os.path.join(dst, b"dir", b"a.symlink")
    os.unlink(link)
    os.symlink(b"../with space", link)
    result = compare(src, dst, skip_times=("symlink", "directory"))
    assert result.differ == [{"path": "dir/a.symlink", "attributes": ["target"]}]


def test_mode_and_owner_differences(trees):
    src, dst = trees
    os.chmod(os.path.join(dst, b"a.txt"), 0o600)
    result = compare(src, dst)
    assert {item["path"]: item["attributes"] for item in result.differ} == {
        "a.txt": ["mode"], "dir/a.hardlink": ["mode"]}
    if os.geteuid() == 0:
        os.lchown(os.path.join(dst, b"with space"), 4321, 4321)
        result = compare(src, dst)
        assert {item["path"]: item["attributes"] for item in result.differ}["with space"] == ["uid", "gid"]


def test_non_utf8_names_render_safely(trees):
    src, dst = trees
    os.unlink(os.path.join(dst, BAD))
    result = compare(src, dst)
    assert result.missing == ["bad\\xffname"]
    text = json.dumps(result.as_dict(), ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogates: this would raise UnicodeEncodeError


def test_newline_name_is_one_entry(trees):
    src, dst = trees
    os.unlink(os.path.join(dst, b"new\nline"))
    result = compare(src, dst)
    assert result.missing == ["new\nline"]


def test_ignored_names_are_skipped_on_both_sides(trees):
    src, dst = trees
    os.makedirs(os.path.join(dst, b"dir", b"lost+found"))
    result = compare(src, dst, skip_times=("directory",))
    assert result.matched, result.summary()
    result = compare(src, dst, ignore=[], skip_times=("directory",))
    assert "lost+found" in result.missing and "dir/lost+found" in result.extra


def test_lists_are_capped_but_counted(tmp_path):
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for index in range(12):
        (src / ("f%02d" % index)).write_bytes(b"x")
    result = compare_lib.compare_trees(str(src), str(dst), limit=5, skip_times=("directory",))
    assert result.missing == ["f%02d" % index for index in range(5)]
    assert result.missing_count == 12


def test_unreadable_file_is_a_difference(trees, monkeypatch):
    src, dst = trees
    real_open = fileread_lib.open_for_reading
    victim = os.path.join(dst, b"with space")

    def refuse(path, *args):
        if path == victim:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args)

    monkeypatch.setattr(fileread_lib, "open_for_reading", refuse)
    result = compare(src, dst)
    assert result.differ == [{"path": "with space", "attributes": ["hash", "error"],
                              "destination_error": "EACCES: Permission denied"}]
    assert not result.matched


def test_a_symlinked_root_is_followed_like_rsync_follows_source_slash(trees, tmp_path):
    src, dst = trees
    link = tmp_path / "source-link"
    link.symlink_to(os.fsdecode(src))
    result = compare(str(link), dst)
    assert result.matched, result.summary()


# --------------------------------------------------------------------------- hash cache, processes, prehash


def test_processes_and_threads_give_the_same_comparison(trees):
    src, dst = trees
    flip(os.path.join(dst, b"a.txt"), offset=1)
    by_process = compare(src, dst, processes=True)
    by_thread = compare(src, dst, processes=False)
    assert by_process.as_dict() == by_thread.as_dict()
    assert by_process.differ == [{"path": "a.txt", "attributes": ["hash"]},
                                 {"path": "dir/a.hardlink", "attributes": ["hash"]}]
