"""Tree seals (plugins/module_utils/data_copy/seal.py) on real files: every kind of change changes the
seal, nothing else does, and the seal the verification's walk takes is the one the manager takes.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
from copied_trees import flip

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import seal as seal_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import SealError, tree_seal, tree_seals


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    write(str(root / "docs" / "a.txt"), b"alpha" * 100)
    write(str(root / "docs" / "b.txt"), b"bravo" * 100)
    write(str(root / "data" / "deep" / "c.bin"), os.urandom(5000))
    os.link(str(root / "docs" / "a.txt"), str(root / "data" / "a.hardlink"))
    os.symlink("../docs/b.txt", str(root / "data" / "b.symlink"))
    os.makedirs(str(root / "empty"))
    os.mkfifo(str(root / "pipe"))  # never opened: a seal reads no file
    write(str(root / "lost+found" / "fsck"), b"ignored")
    write(str(root / "docs" / "lost+found" / "nested"), b"ignored at any depth")
    return str(root)


def xattr_or_skip(path):
    try:
        os.setxattr(path, "user.seal.test", b"value")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            pytest.skip("this filesystem takes no user.* xattrs")
        raise


def test_an_unchanged_tree_gives_the_same_seal(tree):
    first = tree_seal(tree, ["lost+found"])
    assert first.startswith("seal1:sha256:") and len(first) == len("seal1:sha256:") + 64
    # Reading files changes at most their atime, which is not sealed.
    for name in ("docs/a.txt", "docs/b.txt", "data/deep/c.bin"):
        with open(os.path.join(tree, name), "rb") as handle:
            handle.read()
    assert tree_seal(tree, ["lost+found"]) == first


@pytest.mark.parametrize("change", [
    "content with size and mtime kept", "mode", "xattr", "rename", "added file", "removed file", "added folder",
    "owner", "symlink replaced", "hard link added",
])
def test_every_change_changes_the_seal(tree, change):
    before = tree_seal(tree, ["lost+found"])
    a = os.path.join(tree, "docs", "a.txt")
    if change == "content with size and mtime kept":
        flip(os.path.join(tree, "data", "deep", "c.bin"), offset=3)
    elif change == "mode":
        os.chmod(a, 0o600)
    elif change == "xattr":
        xattr_or_skip(os.path.join(tree, "docs", "b.txt"))
    elif change == "rename":
        os.rename(a, os.path.join(tree, "docs", "a2.txt"))
    elif change == "added file":
        write(os.path.join(tree, "docs", "new.txt"), b"")
    elif change == "removed file":
        os.unlink(os.path.join(tree, "docs", "b.txt"))
    elif change == "added folder":
        os.makedirs(os.path.join(tree, "empty", "inner"))
    elif change == "owner":
        if os.geteuid() != 0:
            pytest.skip("needs root: changing a file's owner")
        os.lchown(a, 4242, 4242)
    elif change == "symlink replaced":
        link = os.path.join(tree, "data", "b.symlink")
        st = os.lstat(link)
        os.unlink(link)
        os.symlink("../docs/a.txt", link)
        os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    elif change == "hard link added":
        os.link(os.path.join(tree, "docs", "b.txt"), os.path.join(tree, "b.hardlink"))
    assert tree_seal(tree, ["lost+found"]) != before, change


def test_the_ignore_list_applies_at_any_depth(tree):
    """What the verification skips (an ignored name at any depth, and all below it) is not sealed."""
    before = tree_seal(tree, ["lost+found"])
    unignored = tree_seal(tree, [])
    write(os.path.join(tree, "docs", "lost+found", "more"), b"inside an ignored folder")
    flip(os.path.join(tree, "lost+found", "fsck"), offset=3)
    assert tree_seal(tree, ["lost+found"]) == before
    # Without the ignore list the same changes are seen.
    assert tree_seal(tree, []) != unignored


def test_a_copy_has_another_seal(tree, tmp_path):
    """Inodes and change times are sealed: an identical copy is another tree."""
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-a", "--", tree, copy], check=True)
    assert tree_seal(copy, ["lost+found"]) != tree_seal(tree, ["lost+found"])


def test_the_verification_walk_takes_the_same_seal(tree, tmp_path):
    """The data mover's walks seal as they hash; the manager's tree_seal must give the same value."""
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-a", "--", tree, copy], check=True)
    result = compare_lib.compare_trees(tree, copy, ["lost+found"], "sha256")
    assert result.source_seal == tree_seal(tree, ["lost+found"])
    assert result.destination_seal == tree_seal(copy, ["lost+found"])
    threads = compare_lib.compare_trees(tree, copy, ["lost+found"], "sha256", processes=False)
    assert (threads.source_seal, threads.destination_seal) == (result.source_seal, result.destination_seal)


def test_seals_of_several_trees_at_once_equal_those_taken_in_turn(tree, tmp_path):
    other = str(tmp_path / "other")
    write(os.path.join(other, "x"), b"x")
    assert tree_seals([tree, other], ["lost+found"]) == [tree_seal(tree, ["lost+found"]), tree_seal(other, ["lost+found"])]


def test_a_seal_collected_later_is_walked_by_another_process_and_equals_tree_seal(tree, tmp_path):
    """seal_later returns at once while a forked process walks; its answer is tree_seal's, it is
    collected once, and a tree that cannot be sealed fails at the collection, naming it."""
    import multiprocessing
    wait = seal_lib.seal_later(tree, ["lost+found"])
    assert [child.name for child in multiprocessing.active_children()] == ["tree-seal"]
    assert wait() == tree_seal(tree, ["lost+found"])
    assert multiprocessing.active_children() == []
    with pytest.raises(SealError, match="already collected"):
        wait()
    missing = seal_lib.seal_later(str(tmp_path / "missing"))
    with pytest.raises(SealError, match="missing: No such file or directory"):
        missing()
    assert multiprocessing.active_children() == []


def test_a_seal_later_where_no_process_can_be_forked_is_taken_at_once(tree, tmp_path, monkeypatch):
    """A limit on processes (fork fails with EAGAIN) does not fail the seal: it is computed at once,
    and collected like the forked one (once; a missing tree fails at the collection)."""
    import multiprocessing

    def no_fork(_self):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(multiprocessing.get_context("fork").Process, "start", no_fork)
    wait = seal_lib.seal_later(tree, ["lost+found"])
    assert multiprocessing.active_children() == []
    assert wait() == tree_seal(tree, ["lost+found"])
    with pytest.raises(SealError, match="already collected"):
        wait()
    with pytest.raises(SealError, match="missing: No such file or directory"):
        seal_lib.seal_later(str(tmp_path / "missing"))()


def test_a_root_that_is_not_a_folder_is_an_error(tmp_path):
    with pytest.raises(SealError, match="No such file or directory"):
        tree_seal(str(tmp_path / "missing"))
    write(str(tmp_path / "file"), b"x")
    with pytest.raises(SealError, match="not a folder"):
        tree_seal(str(tmp_path / "file"))
    with pytest.raises(SealError, match="missing"):
        tree_seals([str(tmp_path / "missing"), str(tmp_path)])


def test_memory_does_not_grow_with_the_tree(tmp_path, monkeypatch):
    """One streaming walk: the digest is fed in batches, never the whole list of entries."""
    root = tmp_path / "wide"
    for index in range(3 * seal_lib.BATCH):
        write(str(root / ("d%d" % (index % 7)) / ("f%04d" % index)), b"")
    peak = []
    real_add = seal_lib.TreeSeal.add

    def add(self, rel, st):
        real_add(self, rel, st)
        peak.append(len(self._lines))

    monkeypatch.setattr(seal_lib.TreeSeal, "add", add)
    seal = tree_seal(str(root))
    assert max(peak) < seal_lib.BATCH and len(peak) == 3 * seal_lib.BATCH + 8
    monkeypatch.undo()
    assert tree_seal(str(root)) == seal
