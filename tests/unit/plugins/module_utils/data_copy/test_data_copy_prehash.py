"""Hashing while the copy runs (plugins/module_utils/data_copy/prehash.py), on real trees.
"""

from __future__ import annotations

import os
import shutil

import pytest

from copied_trees import compare
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import plumbing as plumbing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import prehash as prehash_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")


def test_prehash_hashes_finished_destination_files_and_waits_for_the_others(trees):
    src, dst = trees
    unfinished = os.path.join(dst, b"dir", b"sub", b"c")
    os.utime(unfinished, ns=(1, 1))  # not the source's mtime: the copy has not finished it
    context = plumbing_lib.fork_context()
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=prehash_lib.prehash, args=(src, ["lost+found"], "xxh128", {}, sending),
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
    result = compare(src, dst, cache=hashcache_lib.HashCache("xxh128", records))
    assert result.matched, result.summary()
    # Only the unfinished file was read by the verification (the hard link shares a.txt's hash).
    assert result.files_hashed == 1
