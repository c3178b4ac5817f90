"""Hash caches (plugins/module_utils/data_copy/hashcache.py): kept, reused only for unchanged files,
never trusted when damaged; on real trees copied by rsync.
"""

from __future__ import annotations

import os
import shutil

import pytest

from copied_trees import BAD, compare, flip
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")


def test_hash_cache_reuses_only_files_whose_identity_did_not_change(trees):
    src, dst = trees
    first = compare(src, dst)
    assert first.matched and first.files_reused == 0
    hashed = first.files_hashed
    assert hashed >= 10  # both sides' files (a hard link shares its first path's hash)
    # Every file read, plus the hard link's second path on each side (same inode, same identity).
    assert len(first.cache.sides["source"]) + len(first.cache.sides["destination"]) == hashed + 2
    assert first.cache.sides["source"][b"dir/a.hardlink"] == first.cache.sides["source"][b"a.txt"]

    again = compare(src, dst, cache=first.cache)
    assert again.matched, again.summary()
    assert again.files_hashed == 0 and again.files_reused == hashed
    assert again.source_digest == first.source_digest and again.destination_digest == first.destination_digest

    # Same size, same mtime, other content: the change time gives it away; the file is read again.
    flip(os.path.join(dst, b"dir", b"b.bin"))
    damaged = compare(src, dst, cache=again.cache)
    assert damaged.differ == [{"path": "dir/b.bin", "attributes": ["hash"]}]
    assert damaged.files_hashed == 1 and damaged.files_reused == hashed - 1


def test_hash_cache_of_another_algorithm_is_not_used(trees):
    src, dst = trees
    first = compare(src, dst, algorithm="sha256")
    other = compare(src, dst, algorithm="blake2b", cache=first.cache)
    assert other.files_reused == 0 and other.matched


def test_hash_cache_round_trip_keeps_any_name(trees, tmp_path):
    src, dst = trees
    cache = compare(src, dst).cache
    assert BAD in cache.sides["source"] and BAD in cache.sides["destination"]
    base = str(tmp_path / "hashes")
    cache.save(base)
    assert sorted(os.listdir(tmp_path)) == ["dst", "hashes.destination", "hashes.source", "src"]
    loaded = hashcache_lib.HashCache.load(base, "xxh128")
    assert loaded.sides == cache.sides
    assert hashcache_lib.HashCache.load(base, "sha256") is None  # recorded with another algorithm
    assert hashcache_lib.HashCache.load(str(tmp_path / "missing"), "xxh128") is None
    # One side only: the other is empty, not a reason to drop the one that is there.
    os.unlink(base + ".destination")
    assert hashcache_lib.HashCache.load(base, "xxh128").sides == {"source": cache.sides["source"], "destination": {}}


def side_file(tmp_path, monkeypatch, count=7, per_frame=2):
    """A side file of ``count`` records, ``per_frame`` to a frame, and its records in order."""
    monkeypatch.setattr(hashcache_lib, "FRAME_RECORDS", per_frame)
    records = [(b"d/f%02d" % index, ((index, 10 + index, 20 + index, 30 + index), "%032x" % index))
               for index in range(count)]
    path = str(tmp_path / "side")
    assert hashcache_lib.write_side(path, "xxh128", "source", records) == count
    return path, records


def frame_offsets(path):
    """Where each frame of a side file starts (after the header line)."""
    with open(path, "rb") as handle:
        data = handle.read()
    offsets, at = [], data.index(b"\n") + 1
    while at < len(data):
        offsets.append(at)
        at += hashcache_lib._FRAME_HEAD.size + int.from_bytes(data[at:at + 4], "big")
    return data, offsets


def test_side_file_cut_short_or_damaged_gives_only_the_frames_before(tmp_path, monkeypatch):
    path, records = side_file(tmp_path, monkeypatch)
    assert list(hashcache_lib.read_records(path, "xxh128", "source")) == records
    assert list(hashcache_lib.read_records(path, "xxh128", "destination")) == []  # the other side's name
    data, offsets = frame_offsets(path)
    assert len(offsets) == 5  # 4 frames of records (2, 2, 2, 1) and the end
    # Cut inside the third frame: the first two frames' records only.
    with open(path, "wb") as handle:
        handle.write(data[:offsets[2] + 10])
    assert list(hashcache_lib.read_records(path, "xxh128")) == records[:4]
    # One byte changed in the second frame's payload: its digest no longer matches.
    damaged = bytearray(data)
    damaged[offsets[1] + hashcache_lib._FRAME_HEAD.size + 3] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(damaged))
    assert list(hashcache_lib.read_records(path, "xxh128")) == records[:2]
    # Garbage after the end frame is never read.
    with open(path, "wb") as handle:
        handle.write(data + b"\x00\x00\x00\x05garbage")
    assert hashcache_lib.load_side(path, "xxh128") == dict(records)


def test_side_file_record_of_the_wrong_shape_ends_the_file_there(tmp_path, monkeypatch):
    for wrong in (((1, 2, 3), "digest"), ((1, 2, 3, 4), b"digest"), "digest"):
        path, records = side_file(tmp_path, monkeypatch)
        bad = records[:3] + [(b"d/zz", wrong)]
        # Written as a walker would write it: the frame's digest matches, the shape does not.
        writer = hashcache_lib.SideWriter(path, "xxh128", "source")
        for rel, record in bad:
            writer._batch.append((rel,) + (tuple(record) if isinstance(record, tuple) else (record, None)))
        writer.close()
        assert list(hashcache_lib.read_records(path, "xxh128")) == [], wrong  # one frame: all of it dropped


def test_side_lookup_finds_records_in_any_order_and_misses_a_frame_changed_since(tmp_path, monkeypatch):
    path, records = side_file(tmp_path, monkeypatch)
    monkeypatch.setattr(hashcache_lib, "LOOKUP_FRAMES", 2)
    lookup = hashcache_lib.SideLookup(path, "xxh128", "source")
    assert lookup.get(b"d/f01") == records[1][1]
    assert lookup.get(b"d/f015") is None  # between two records
    assert lookup.get(b"d/f06") == records[6][1]
    assert lookup.get(b"d/f03") == records[3][1]  # behind: its frame is read again
    assert lookup.get(b"c") is None and lookup.get(b"e") is None
    assert [rel for rel, dummy in records if lookup.get(rel) == dummy] == [rel for rel, dummy in records]
    # The first frame changed on disk after the index was made and left the recent frames: a miss.
    data, offsets = frame_offsets(path)
    lookup.get(b"d/f04")
    lookup.get(b"d/f06")
    with open(path, "r+b") as handle:
        handle.seek(offsets[0] + hashcache_lib._FRAME_HEAD.size + 3)
        handle.write(b"\xff")
    assert lookup.get(b"d/f00") is None and lookup.get(b"d/f03") == records[3][1]
    missing = hashcache_lib.SideLookup(str(tmp_path / "none"), "xxh128")
    assert missing.get(b"d/f01") is None


def test_merged_streams_keep_the_walk_order_and_the_second_wins():
    one = [(b".", "root"), (b"a", "a1"), (b"a/b", "ab1"), (b"a-c", "ac1")]
    other = [(b"a/b", "ab2"), (b"a/b/c", "abc2"), (b"z", "z2")]
    assert list(hashcache_lib.merged(one, other)) == [
        (b".", "root"), (b"a", "a1"), (b"a/b", "ab2"), (b"a/b/c", "abc2"), (b"a-c", "ac1"), (b"z", "z2")]
    assert [rel for rel, dummy in hashcache_lib.sorted_records({b"a-c": 1, b"a/b": 2, b"a": 3, b".": 4})] == [
        b".", b"a", b"a/b", b"a-c"]


def test_walks_write_their_side_files_in_their_order_and_reuse_them_from_the_files(trees, tmp_path):
    src, dst = trees
    base = str(tmp_path / "new")
    first = compare(src, dst, record_to=base)
    assert first.matched and first.cache.files == {"source": base + ".source", "destination": base + ".destination"}
    for side, root in (("source", src), ("destination", dst)):
        paths = [rel for rel, dummy in hashcache_lib.read_records(base + "." + side, "xxh128", side)]
        assert paths == sorted(paths, key=hashcache_lib.sort_key) and BAD in paths and b"dir/a.hardlink" in paths
    first.cache.save(str(tmp_path / "kept"))
    assert not os.path.exists(base + ".source")  # renamed, not copied
    kept = hashcache_lib.HashCache.load(str(tmp_path / "kept"), "xxh128")
    assert isinstance(kept.lookup("source"), hashcache_lib.SideLookup)
    again = compare(src, dst, cache=kept, record_to=base)
    assert again.matched and again.files_hashed == 0 and again.files_reused == first.files_hashed
    flip(os.path.join(dst, b"dir", b"b.bin"))
    changed = compare(src, dst, cache=hashcache_lib.HashCache.load(str(tmp_path / "kept"), "xxh128"))
    assert changed.differ == [{"path": "dir/b.bin", "attributes": ["hash"]}] and changed.files_hashed == 1


def test_overlay_records_win_over_the_kept_files_in_lookups_records_and_a_comparison(trees, tmp_path):
    """A verification's input without an input file: the records held in memory (the hashes read during
    a copy) lie over the kept cache's side files. A wrong hash in the overlay must be what a walk
    uses (the comparison then fails on that file), so the overlay is really read, and first."""
    src, dst = trees
    first = compare(src, dst, record_to=str(tmp_path / "new"))
    first.cache.save(str(tmp_path / "kept"))
    kept = hashcache_lib.HashCache.load(str(tmp_path / "kept"), "xxh128")
    records = dict(kept.records("destination"))
    rel = b"dir/b.bin"
    identity, digest = records[rel]
    wrong = "0" * len(digest)
    spill = hashcache_lib.RecordSpill(str(tmp_path / "runs"), "xxh128")
    spill.add("destination", rel, (identity, wrong))
    spill.add("destination", b"not/in/the/tree", ((1, 2, 3, 4), "1" * len(digest)))
    overlay = spill.in_memory()
    assert overlay is not None and os.listdir(tmp_path).count("runs.run0.destination") == 0
    both = hashcache_lib.HashCache("xxh128", files=kept.files, overlay=overlay)
    lookup = both.lookup("destination")
    assert isinstance(lookup, hashcache_lib.OverlayLookup) and isinstance(lookup.then, hashcache_lib.SideLookup)
    assert lookup.get(rel) == (identity, wrong)
    other = next(path for path in records if path != rel)
    assert lookup.get(other) == records[other]
    assert isinstance(both.lookup("source"), hashcache_lib.SideLookup)  # no overlay for that side
    merged = dict(both.records("destination"))
    assert merged[rel] == (identity, wrong) and b"not/in/the/tree" in merged
    assert len(merged) == len(records) + 1
    result = compare(src, dst, cache=both)
    assert [item["path"] for item in result.differ] == ["dir/b.bin"] and result.files_hashed == 0
    # a spill that wrote a run is not in memory any more
    small = hashcache_lib.RecordSpill(str(tmp_path / "small"), "xxh128", limit=1)
    small.add("source", b"a", ((1, 1, 1, 1), "2" * 32))
    assert small.in_memory() is None


def test_a_walk_that_stops_leaves_no_side_file(trees, tmp_path):
    src, dummy = trees
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy.walk import Walker
    path = str(tmp_path / "partial.source")
    walker = Walker(src, ["lost+found"], "xxh128", record_to=path, side="source")
    walk = walker.walk()
    next(walk)
    next(walk)
    assert os.path.exists(path)
    walk.close()
    assert not os.path.exists(path)


def test_record_spill_writes_sorted_runs_and_gives_each_path_once_with_its_last_record(tmp_path):
    spill = hashcache_lib.RecordSpill(str(tmp_path / "runs"), "xxh128", limit=3)
    order = [b"b/2", b"a", b"c", b"b/1", b"a", b"b", b"d"]
    for number, rel in enumerate(order):
        spill.add("source", rel, ((number, 0, 0, 0), "%032x" % number))
    spill.add("destination", b"x", ((9, 9, 9, 9), "9" * 32))
    assert len(spill) == 8 and spill.counts == {"source": 7, "destination": 1}
    assert sorted(os.listdir(tmp_path)) == ["runs.run0.source", "runs.run1.source"]
    got = list(spill.records("source"))
    assert [rel for rel, dummy in got] == [b"a", b"b", b"b/1", b"b/2", b"c", b"d"]
    assert dict(got)[b"a"][0][0] == 4  # added twice: the later record
    assert list(spill.records("destination")) == [(b"x", ((9, 9, 9, 9), "9" * 32))]
    spill.discard()
    assert os.listdir(tmp_path) == [] and list(spill.records("source")) == []


def test_record_spill_that_cannot_write_a_run_drops_it_and_says_so(tmp_path):
    spill = hashcache_lib.RecordSpill(str(tmp_path / "missing-folder" / "runs"), "xxh128", limit=2)
    for number in range(5):
        spill.add("source", b"f%d" % number, ((number, 0, 0, 0), "0" * 32))
    assert spill.dropped == 4 and "missing-folder" in spill.error
    assert [rel for rel, dummy in spill.records("source")] == [b"f4"]  # only what was never spilled
