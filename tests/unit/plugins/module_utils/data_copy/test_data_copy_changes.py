"""The changes pass (plugins/module_utils/data_copy/changes.py and the worker's final pass): real
rsync, real files, real detached workers. Every kind of change is copied and verified by it, and
whatever it cannot prove sends the pass back to the whole trees, with the reason in the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import changes as changes_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import seal as seal_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None or shutil.which("find") is None,
                                reason="rsync and find are needed")

POLL_LIMIT = 120.0
KEY = "migration-7"
IGNORE = ["lost+found"]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def tree(root):
    for folder in range(4):
        for index in range(5):
            write(os.path.join(root, "d%d" % folder, "f%d" % index), b"%d-%d " % (folder, index) * 200)
    write(os.path.join(root, "d0", "sub", "deep", "g"), b"deep")
    os.symlink("d0/f0", os.path.join(root, "link"))
    os.link(os.path.join(root, "d1", "f1"), os.path.join(root, "d1", "f1.hard"))


def run(jobs, job_id, src, dst, **kwargs):
    job = jobs.start(jobs.build_request(job_id, src, dst, hash_cache_key=KEY, **kwargs), wait_seconds=POLL_LIMIT)["job"]
    assert job["state"] in ("completed", "failed"), job
    return job


def phase1(jobs, tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    tree(src)
    time.sleep(0.05)  # the top folder's last change before the pass's point (else: a whole final pass)
    first = run(jobs, "p1", src, dst)
    assert first["report"]["verified"] is True, first
    assert first["report"]["changes_pass"] is None  # not a final pass: nothing tried
    return src, dst


def same(src, dst):
    """An independent whole comparison of both trees (every file read)."""
    result = compare_lib.compare_trees(src, dst, IGNORE, "sha256")
    return result.matched, result.summary()


def test_every_kind_of_change_is_copied_and_verified_by_the_changes_pass(jobs, tmp_path):
    src, dst = phase1(jobs, tmp_path)
    mtime = os.stat(os.path.join(src, "d0", "f1")).st_mtime_ns
    write(os.path.join(src, "d0", "f1"), b"X" * os.path.getsize(os.path.join(src, "d0", "f1")))
    os.utime(os.path.join(src, "d0", "f1"), ns=(mtime, mtime))          # same size, same mtime
    write(os.path.join(src, "d1", "new"), b"a new file")                # created in a folder
    os.unlink(os.path.join(src, "d2", "f3"))                            # deleted
    os.rename(os.path.join(src, "d0", "sub"), os.path.join(src, "d3", "sub-moved"))  # a folder moved, unchanged
    write(os.path.join(src, "d1", "fresh", "nested", "n"), b"n")        # a new folder tree
    os.chmod(os.path.join(src, "d2", "f0"), 0o600)                      # mode only
    os.setxattr(os.path.join(src, "d2", "f1"), "user.tag", b"v2")        # an xattr only
    os.link(os.path.join(src, "d2", "f2"), os.path.join(src, "d2", "f2.hard"))  # a new hard link
    os.symlink("f1", os.path.join(src, "d1", "link2"))                  # a new symlink
    os.unlink(os.path.join(src, "d3", "sub-moved", "deep", "g"))
    os.symlink("../../f2", os.path.join(src, "d3", "sub-moved", "deep", "g"))  # a file replaced by a symlink

    write(os.path.join(src, "d0", "lost+found", "x"), b"left out")      # ignored, and named as such
    final = run(jobs, "p1-final", src, dst, final_pass=True)
    report = final["report"]
    assert final["state"] == "completed" and report["verified"] is True, final
    assert (report["ignored"], report["ignored_count"]) == (["d0/lost+found/"], 1)
    assert not os.path.exists(os.path.join(dst, "d0", "lost+found"))
    changes = report["changes_pass"]
    assert changes["incremental"] is True, changes
    assert changes["full_pass_reason"] is None
    assert report["copy_engine"] == "changes"
    assert same(src, dst) == (True, "source and destination match")
    assert read(os.path.join(dst, "d0", "f1")).startswith(b"XXXX")
    assert not os.path.exists(os.path.join(dst, "d2", "f3"))
    assert not os.path.exists(os.path.join(dst, "d0", "sub"))
    assert os.readlink(os.path.join(dst, "d3", "sub-moved", "deep", "g")) == "../../f2"
    assert os.path.samefile(os.path.join(dst, "d2", "f2"), os.path.join(dst, "d2", "f2.hard"))
    # The seals are of the whole trees as they are (what the switch compares).
    assert report["source_seal"] == seal_lib.tree_seal(src, IGNORE)
    assert report["destination_seal"] == seal_lib.tree_seal(dst, IGNORE)
    # Totals of the whole source, not of what changed.
    assert report["files"] == sum(1 for top, dummy, files in os.walk(src) for name in files
                                  if not os.path.islink(os.path.join(top, name)) and "lost+found" not in top)
    # Fewer entries were compared than the tree holds: the unchanged ones were proven by their times.
    assert changes["entries_compared"] < seal_lib.seal_walk(src, IGNORE)["counts"]["entries"]

    # A second final pass after no change lists nothing and still verifies.
    again = run(jobs, "p1-final-2", src, dst, final_pass=True)
    assert again["report"]["verified"] is True
    assert again["report"]["changes_pass"]["incremental"] is True
    assert again["report"]["changes_pass"]["entries_listed"] == 0


def test_a_destination_changed_since_the_verified_pass_makes_it_a_whole_pass(jobs, tmp_path):
    src, dst = phase1(jobs, tmp_path)
    write(os.path.join(src, "d0", "f0"), b"changed in the source")
    damaged = os.path.join(dst, "d2", "f4")
    size = os.path.getsize(damaged)
    mtime = os.stat(damaged).st_mtime_ns
    write(damaged, b"!" * size)  # damage rsync's quick check cannot see
    os.utime(damaged, ns=(mtime, mtime))

    final = run(jobs, "p1-final", src, dst, final_pass=True)
    changes = final["report"]["changes_pass"]
    assert changes["incremental"] is False
    assert changes["full_pass_reason"] == "the destination changed since the last verified pass (d2/f4)"
    # The whole pass found the damage; the rerun repairs it.
    assert final["state"] == "failed" and "d2/f4" in final["error"]
    again = run(jobs, "p1-final", src, dst, final_pass=True)
    assert again["report"]["verified"] is True, again
    assert "earlier attempt left files to copy again" in again["report"]["changes_pass"]["full_pass_reason"]
    assert same(src, dst)[0]


def test_a_change_at_the_top_of_the_source_makes_it_a_whole_pass(jobs, tmp_path):
    src, dst = phase1(jobs, tmp_path)
    write(os.path.join(src, "top-level"), b"new at the top")
    final = run(jobs, "p1-final", src, dst, final_pass=True)
    assert final["report"]["verified"] is True
    assert final["report"]["changes_pass"] == {"incremental": False,
                                               "full_pass_reason": "the top folder of the source changed"}
    assert read(os.path.join(dst, "top-level")) == b"new at the top"
    # The whole pass keeps new points: the next final pass is a changes pass again.
    write(os.path.join(src, "d1", "f2"), b"later")
    later = run(jobs, "p1-final-2", src, dst, final_pass=True)
    assert later["report"]["changes_pass"]["incremental"] is True, later["report"]["changes_pass"]
    assert later["report"]["changes_pass"]["entries_listed"] == 1
    assert same(src, dst)[0]


def test_an_unverified_pass_in_between_leaves_no_points(jobs, tmp_path):
    src, dst = phase1(jobs, tmp_path)
    write(os.path.join(src, "d0", "f0"), b"changed")
    unverified = run(jobs, "p2", src, dst, check_hash=False)
    assert unverified["report"]["verified"] is False
    final = run(jobs, "p1-final", src, dst, final_pass=True)
    assert final["report"]["verified"] is True
    assert final["report"]["changes_pass"]["full_pass_reason"] == "no verified pass of these trees to start from"


def test_a_final_pass_without_an_earlier_verified_pass_is_whole(jobs, tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    tree(src)
    final = run(jobs, "only", src, dst, final_pass=True)
    assert final["report"]["verified"] is True
    assert final["report"]["changes_pass"]["full_pass_reason"] == "no verified pass of these trees to start from"


# --------------------------------------------------------------------------- the checks, one by one


def points_for(src, dst, folder, **changes):
    now = changes_lib.point(folder)
    points = {"format": 1, "source_ns": now["ctime_ns"], "destination_ns": now["ctime_ns"],
              "boot_id": now["boot_id"], "offset": now["offset"], "source_tree": changes_lib.tree_identity(src),
              "destination_tree": changes_lib.tree_identity(dst), "ignore_files": IGNORE, "flagged_entries": 0}
    points.update(changes)
    return points


@pytest.mark.parametrize("change, reason", [
    ({"boot_id": "another-boot"}, "the data node restarted since the last verified pass"),
    ({"offset_by": 5.0}, "the clock of the data node was set back by 5.0 s since the last verified pass"),
    ({"offset_by": -3.0}, "the clock of the data node was set forward by 3.0 s since the last verified pass"),
    ({"ignore_files": ["lost+found", ".snapshot"]}, "the ignore list changed since the last verified pass"),
    ({"flagged_entries": 2}, "the trees hold immutable or append-only entries"),
    ({"destination_tree": {"dev": 1, "ino": 2, "mount_id": 3}}, "the destination is not the tree that was verified"),
    ({"format": None}, "no verified pass of these trees to start from"),
])
def test_points_that_cannot_be_trusted_are_refused_with_the_reason(tmp_path, change, reason):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(src)
    os.makedirs(dst)
    change = dict(change)
    shift = change.pop("offset_by", 0.0)
    points = points_for(src, dst, str(tmp_path), **change)
    points["offset"] += shift
    with pytest.raises(changes_lib.Unknown, match=reason.replace("(", r"\(").replace(")", r"\)")):
        changes_lib.check_points(points, {"source": src, "destination": dst}, changes_lib.point(str(tmp_path)), IGNORE)


def test_trusted_points_give_the_change_times_to_list_from(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(src)
    os.makedirs(dst)
    points = points_for(src, dst, str(tmp_path))
    since = changes_lib.check_points(points, {"source": src, "destination": dst}, changes_lib.point(str(tmp_path)),
                                     IGNORE)
    assert since[0] < points["source_ns"] and since[1] < points["destination_ns"]
    assert points["source_ns"] - since[0] < 10 ** 9


def tree_then_point(tmp_path):
    """A tree, then a point after its last change: (its path, the change time to list from)."""
    root = str(tmp_path / "tree")
    tree(root)
    time.sleep(0.05)
    return root, changes_lib.point(str(tmp_path))["ctime_ns"] - 1


def test_list_changed_lists_what_changed_after_the_point_and_skips_ignored_names(tmp_path):
    root, since = tree_then_point(tmp_path)
    write(os.path.join(root, "d1", "f0"), b"new content")
    write(os.path.join(root, "d2", "lost+found", "x"), b"ignored")
    lists = dict((name, str(tmp_path / name)) for name in ("folders", "others", "sizes"))
    # d2 changed (an entry was added to it); what was added is ignored, as rsync ignores it.
    assert changes_lib.list_changed(root, since, IGNORE, lists) == (2, 1, 11)
    assert changes_lib.read_list(lists["folders"]) == [b"d2"]
    assert changes_lib.read_list(lists["others"]) == [b"d1/f0"]
    write(os.path.join(root, "top"), b"t")
    with pytest.raises(changes_lib.Unknown, match="the top folder of the source changed"):
        changes_lib.list_changed(root, since, IGNORE, lists)


def test_list_changed_refuses_more_than_its_limit(tmp_path, monkeypatch):
    root, since = tree_then_point(tmp_path)
    for index in range(3):
        write(os.path.join(root, "d1", "f%d" % index), b"again")
    monkeypatch.setattr(changes_lib, "LIST_LIMIT", 2)
    # f1's hard link changed with it: four entries.
    with pytest.raises(changes_lib.Unknown, match="4 entries changed, more than the 2"):
        changes_lib.list_changed(root, since, IGNORE, dict((name, str(tmp_path / name))
                                                           for name in ("folders", "others", "sizes")))


def test_compare_set_takes_listed_folders_whole_and_the_folders_above(tmp_path):
    root = str(tmp_path / "tree")
    tree(root)
    wanted = changes_lib.compare_set(os.fsencode(root), [b"d0/sub", b"d2/f1"], [b"d0/sub"], IGNORE)
    assert wanted == {b".", b"d0", b"d0/sub", b"d0/sub/deep", b"d0/sub/deep/g", b"d2", b"d2/f1"}


def test_the_seal_walk_names_what_changed_after_a_time_and_seals_as_tree_seal(tmp_path):
    root, since = tree_then_point(tmp_path)
    write(os.path.join(root, "d3", "f2"), b"later")
    walked = seal_lib.seal_walk(root, IGNORE, since, 10)
    assert walked["seal"] == seal_lib.tree_seal(root, IGNORE)
    assert [rel for rel, dummy in walked["newer"]] == [b"d3/f2"] and walked["newer_count"] == 1
    assert walked["counts"] == {"entries": 30, "files": 22, "bytes": walked["counts"]["bytes"], "directories": 7,
                                "symlinks": 1}


def test_a_final_pass_through_other_bind_mounts_of_the_same_trees_is_a_changes_pass(jobs, tmp_path):
    """Each job of a migration mounts the same exports at mount points of its own (helper bind, as
    root): the trees are the same filesystems, so the final pass is a changes pass."""
    if os.geteuid() != 0:
        pytest.skip("needs root: bind mounts")
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    tree(src)
    time.sleep(0.05)
    mounts = []
    try:
        for job in ("p1", "p1-final"):
            for side, path in (("source", src), ("destination", dst)):
                point = str(tmp_path / "mnt" / job / side)
                os.makedirs(point)
                subprocess.run(["mount", "--bind", path, point], check=True)
                mounts.append(point)
        first = run(jobs, "p1", mounts[0], mounts[1])
        assert first["report"]["verified"] is True, first
        write(os.path.join(src, "d2", "f2"), b"changed between the passes")
        assert changes_lib.tree_identity(mounts[0]) == changes_lib.tree_identity(mounts[2])
        final = run(jobs, "p1-final", mounts[2], mounts[3], final_pass=True)
        assert final["report"]["verified"] is True, final
        assert final["report"]["changes_pass"]["incremental"] is True, final["report"]["changes_pass"]
        assert final["report"]["changes_pass"]["entries_listed"] == 1
        assert read(os.path.join(dst, "d2", "f2")) == b"changed between the passes"
    finally:
        for point in reversed(mounts):
            subprocess.run(["umount", point], check=False)
