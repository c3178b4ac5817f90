"""Immutable and append-only attributes (plugins/module_utils/data_copy/fileflags.py) on real files:
read with statx, set and cleared with the ioctls, carried by a real data copy job from pass to pass
and checked by its verification. Setting them needs root and a filesystem that has them (tmp_path
here is on one); without them the tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileflags
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import job as job_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib

POLL_LIMIT = 120.0


def _flags_supported(path):
    probe = os.path.join(str(path), "probe")
    with open(probe, "w") as handle:
        handle.write("x")
    try:
        fileflags.set_carried(probe, fileflags.ATTR_APPEND)
        fileflags.set_carried(probe, 0)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


@pytest.fixture
def flaggable(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: only root (CAP_LINUX_IMMUTABLE) sets immutable and append-only attributes")
    if not _flags_supported(tmp_path):
        pytest.skip("the filesystem of %s has no immutable and append-only attributes" % tmp_path)
    yield tmp_path
    subprocess.run(["chattr", "-R", "-i", "-a", str(tmp_path)], capture_output=True, check=False)


def lsattr(path):
    out = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def tree(root):
    root = str(root)
    os.makedirs(os.path.join(root, "frozen-dir"))
    for rel, data in (("frozen-dir/inside", b"kept"), ("frozen.txt", b"never changes"), ("journal.log", b"line 1\n"),
                      ("plain.txt", b"plain")):
        with open(os.path.join(root, rel), "wb") as handle:
            handle.write(data)
    subprocess.run(["chattr", "+i", os.path.join(root, "frozen.txt")], check=True)
    subprocess.run(["chattr", "+a", os.path.join(root, "journal.log")], check=True)
    subprocess.run(["chattr", "+i", os.path.join(root, "frozen-dir")], check=True)


def test_read_set_and_clear_agree_with_chattr_and_lsattr(flaggable):
    tree(flaggable / "t")
    root = flaggable / "t"
    assert fileflags.read_carried(str(root / "frozen.txt")) == fileflags.ATTR_IMMUTABLE
    assert fileflags.read_carried(str(root / "journal.log")) == fileflags.ATTR_APPEND
    assert fileflags.read_carried(str(root / "plain.txt")) == 0
    assert fileflags.flagged_entries(str(root)) == {
        b"frozen-dir": fileflags.ATTR_IMMUTABLE, b"frozen.txt": fileflags.ATTR_IMMUTABLE,
        b"journal.log": fileflags.ATTR_APPEND}
    assert fileflags.set_carried(str(root / "plain.txt"), fileflags.CARRIED) is True
    assert "i" in lsattr(root / "plain.txt") and "a" in lsattr(root / "plain.txt")
    assert fileflags.clear_tree(str(root)) == 4
    assert fileflags.flagged_entries(str(root)) == {}
    shutil.rmtree(str(root))  # nothing blocks the deletion any more


def test_set_tree_makes_every_file_and_folder_immutable_and_keeps_other_flags(flaggable):
    tree(flaggable / "t")
    root = flaggable / "t"
    os.symlink("plain.txt", str(root / "link"))
    os.mkfifo(str(root / "fifo"))
    # inside, journal.log (append-only, now both), plain.txt and the root; not the already immutable ones
    assert fileflags.set_tree(str(root), fileflags.ATTR_IMMUTABLE) == 4
    assert fileflags.flagged_entries(str(root)) == {
        b".": fileflags.ATTR_IMMUTABLE, b"frozen-dir": fileflags.ATTR_IMMUTABLE,
        b"frozen-dir/inside": fileflags.ATTR_IMMUTABLE, b"frozen.txt": fileflags.ATTR_IMMUTABLE,
        b"journal.log": fileflags.CARRIED, b"plain.txt": fileflags.ATTR_IMMUTABLE}
    for attempt in (lambda: open(str(root / "plain.txt"), "a"), lambda: open(str(root / "new"), "w"),
                    lambda: os.unlink(str(root / "link")), lambda: os.rename(str(root / "fifo"), str(root / "x"))):
        with pytest.raises(PermissionError):
            attempt()
    assert fileflags.set_tree(str(root), fileflags.ATTR_IMMUTABLE) == 0
    assert fileflags.clear_tree(str(root)) == 6
    shutil.rmtree(str(root))


def test_a_copy_job_carries_the_attributes_and_a_later_pass_can_rewrite_the_files(flaggable):
    src, dst = flaggable / "src", flaggable / "dst"
    dst.mkdir()
    tree(src)
    jobs = job_lib.DataCopyJobs(str(flaggable / "state"))
    first = jobs.start(jobs.build_request("pass1", str(src), str(dst)), wait_seconds=POLL_LIMIT)["job"]
    assert first["state"] == "completed", first
    assert first["report"]["verified"] is True and first["report"]["flagged_entries"] == 3
    assert "i" in lsattr(dst / "frozen.txt") and "a" in lsattr(dst / "journal.log")
    assert "i" in lsattr(dst / "frozen-dir") and "i" not in lsattr(dst / "plain.txt")
    # The source changes: the append-only file grows, the immutable file is replaced and stays
    # immutable, the folder loses its attribute. The next pass must rewrite flagged destination
    # entries (it clears them first) and carry the new state.
    subprocess.run(["chattr", "-i", str(src / "frozen.txt"), str(src / "frozen-dir")], check=True)
    (src / "frozen.txt").write_bytes(b"changed once")
    subprocess.run(["chattr", "+i", str(src / "frozen.txt")], check=True)
    with open(src / "journal.log", "ab") as handle:
        handle.write(b"line 2\n")
    (src / "frozen-dir" / "new").write_bytes(b"new")
    second = jobs.start(jobs.build_request("pass2", str(src), str(dst), final_pass=True),
                        wait_seconds=POLL_LIMIT)["job"]
    assert second["state"] == "completed", second
    assert second["report"]["verified"] is True
    assert (dst / "frozen.txt").read_bytes() == b"changed once" and "i" in lsattr(dst / "frozen.txt")
    assert (dst / "journal.log").read_bytes() == b"line 1\nline 2\n" and "a" in lsattr(dst / "journal.log")
    assert "i" not in lsattr(dst / "frozen-dir") and (dst / "frozen-dir" / "new").read_bytes() == b"new"


def test_the_verification_catches_a_missing_attribute(flaggable):
    tree(flaggable / "src")
    dst = flaggable / "dst"
    subprocess.run(["cp", "-a", str(flaggable / "src"), str(dst)], check=True)  # cp does not carry them
    result = compare_lib.compare_trees(str(flaggable / "src"), str(dst), algorithm="sha256")
    assert not result.matched
    assert sorted((item["path"], item["attributes"]) for item in result.differ) == [
        ("frozen-dir", ["flags"]), ("frozen.txt", ["flags"]), ("journal.log", ["flags"])]


@pytest.mark.parametrize("beside", [False, True])
def test_a_destination_without_the_attributes_is_refused_naming_the_files(flaggable, monkeypatch, beside):
    """Also when the worker asks to read the source beside the copy: the refusal still comes from
    prepare, before anything is copied."""
    tree(flaggable / "src")
    dst = flaggable / "dst"
    dst.mkdir()
    real = fileflags.statx_attributes
    # The destination is on a filesystem without them (its statx attributes mask lacks them).
    monkeypatch.setattr(fileflags, "statx_attributes",
                        lambda path: (0, 0) if os.fsdecode(path).startswith(str(dst)) else real(path))
    carrier = fileflags.Carrier(str(flaggable / "src"), str(dst))
    with pytest.raises(fileflags.FlagError) as info:
        carrier.prepare(beside=beside)
    message = str(info.value)
    assert "3 source entries" in message and "frozen.txt (immutable)" in message
    assert "journal.log (append-only)" in message and "does not support them" in message
    assert os.listdir(str(dst)) == []


def test_a_later_pass_clears_what_the_ledger_lists_without_walking_the_destination(flaggable, monkeypatch):
    src, dst = flaggable / "src", flaggable / "dst"
    tree(src)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)  # data there, attributes not
    ledger = str(flaggable / "index" / "key.flags.json")
    first = fileflags.Carrier(str(src), str(dst), ledger=ledger)
    first.prepare()  # no ledger yet: walks the destination (nothing flagged there)
    assert first.apply() == 3
    assert "i" in lsattr(dst / "frozen.txt")

    def no_walk(*args, **kwargs):
        raise AssertionError("the destination was walked although the ledger lists what is flagged")

    monkeypatch.setattr(fileflags, "clear_tree", no_walk)
    second = fileflags.Carrier(str(src), str(dst), ledger=ledger)
    second.prepare()
    assert fileflags.flagged_entries(str(dst)) == {}, "the next pass must be able to rewrite every entry"
    (dst / "frozen.txt").write_bytes(b"rewritable now")
    assert second.apply() == 3
    assert fileflags.flagged_entries(str(dst)) == fileflags.flagged_entries(str(src))


def test_read_beside_the_copy_the_source_flags_do_not_hold_the_copy_back(flaggable, monkeypatch):
    """prepare(beside=True) leaves the source to read_beside, which returns while the source is
    still being read; apply() waits for the read and sets what it found."""
    src, dst = flaggable / "src", flaggable / "dst"
    tree(src)
    dst.mkdir()
    real = fileflags.flagged_entries
    release = threading.Event()
    reading = []

    def slow_read(root, ignore=(), stay_on=None):
        reading.append(root)
        assert release.wait(30), "never released"
        return real(root, ignore, stay_on)

    monkeypatch.setattr(fileflags, "flagged_entries", slow_read)
    carrier = fileflags.Carrier(str(src), str(dst))
    carrier.prepare(beside=True)
    assert reading == [], "prepare read the source although it was asked to leave it to the copy"
    carrier.read_beside()
    assert reading == [str(src)] and carrier.wanted == {}, "read_beside waited for the source's flags"
    subprocess.run(["cp", "-a", str(src) + "/.", str(dst)], check=True)  # the copy, meanwhile
    release.set()
    assert carrier.apply() == 3
    assert fileflags.flagged_entries(str(dst)) == fileflags.flagged_entries(str(src))


def test_a_source_that_cannot_be_read_beside_the_copy_fails_the_pass(flaggable, monkeypatch):
    src, dst = flaggable / "src", flaggable / "dst"
    tree(src)
    dst.mkdir()

    def unreadable(root, ignore=(), stay_on=None):
        raise OSError(5, "Input/output error", root)

    monkeypatch.setattr(fileflags, "flagged_entries", unreadable)
    carrier = fileflags.Carrier(str(src), str(dst))
    carrier.prepare(beside=True)
    carrier.read_beside()
    with pytest.raises(fileflags.FlagError) as info:
        carrier.apply()
    assert str(info.value) == ("Failed to read the immutable and append-only attributes of %s: Input/output error"
                               % src)


def test_flags_left_to_a_copy_that_did_not_read_them_are_read_by_apply(flaggable):
    """The first copy (the parallel engine) forks its copying processes and starts no read beside:
    apply reads the source itself, and carries every flag."""
    src, dst = flaggable / "src", flaggable / "dst"
    tree(src)
    dst.mkdir()
    carrier = fileflags.Carrier(str(src), str(dst))
    carrier.prepare(beside=True)
    assert carrier.wanted == {}
    subprocess.run(["cp", "-a", str(src) + "/.", str(dst)], check=True)
    assert carrier.apply() == 3 and len(carrier.wanted) == 3
    assert fileflags.flagged_entries(str(dst)) == fileflags.flagged_entries(str(src))
