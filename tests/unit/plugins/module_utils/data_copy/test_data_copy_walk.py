"""Walking one tree (plugins/module_utils/data_copy/walk.py): its manifest entries, in order, on real files.
"""

from __future__ import annotations

import shutil

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import walk as walk_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")


def test_symlink_is_never_followed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "outside").symlink_to("/etc/hostname")
    entries, dummy = walk_lib.manifest(str(src), algorithm="sha256")
    link = [entry for entry in entries if entry["path"] == b"outside"][0]
    assert link["type"] == "symlink" and link["target"] == b"/etc/hostname" and "hash" not in link


def test_manifest_entries_and_digest_are_stable(trees):
    src, dummy = trees
    first, digest1 = walk_lib.manifest(src, ["lost+found"], "sha256")
    second, digest2 = walk_lib.manifest(src, ["lost+found"], "sha256")
    assert digest1 == digest2
    assert [entry["path"] for entry in first] == [entry["path"] for entry in second]
    paths = [entry["path"] for entry in first]
    assert paths[0] == b"."
    assert b"dir/sub/c" in paths and b"lost+found/junk" not in paths
    hardlink = [entry for entry in first if entry["path"] == b"dir/a.hardlink"][0]
    assert hardlink["link"] == b"a.txt"
