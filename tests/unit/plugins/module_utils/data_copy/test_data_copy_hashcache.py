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
    path = str(tmp_path / "hashes")
    cache.save(path)
    loaded = hashcache_lib.HashCache.load(path, "xxh128")
    assert loaded.sides == cache.sides
    assert hashcache_lib.HashCache.load(path, "sha256") is None  # recorded with another algorithm
    assert hashcache_lib.HashCache.load(str(tmp_path / "missing"), "xxh128") is None
    with open(path, "rb") as handle:
        saved = handle.read()
    with open(path, "ab") as handle:
        handle.write(b"s not-hex 1 2\n")
    assert hashcache_lib.HashCache.load(path, "xxh128") is None  # damaged: not trusted at all
    with open(path, "wb") as handle:
        handle.write(saved[:-3])
    assert hashcache_lib.HashCache.load(path, "xxh128") is None  # cut short


def test_hash_cache_of_the_wrong_shape_is_not_used(trees, tmp_path):
    src, dst = trees
    cache = compare(src, dst).cache
    path = str(tmp_path / "hashes")
    rel = sorted(cache.sides["source"])[0]
    for wrong in ((1, 2, 3), "digest", ((1, 2, 3), "digest"), ((1, 2, 3, 4), b"digest")):
        damaged = hashcache_lib.HashCache("xxh128", {"source": dict(cache.sides["source"]),
                                                     "destination": cache.sides["destination"]})
        damaged.sides["source"][rel] = wrong
        damaged.save(path)
        assert hashcache_lib.HashCache.load(path, "xxh128") is None, wrong
    cache.save(path)
    assert hashcache_lib.HashCache.load(path, "xxh128").sides == cache.sides
