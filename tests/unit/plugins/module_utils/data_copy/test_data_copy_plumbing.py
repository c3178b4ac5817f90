"""Moving a walk's entries to the comparing side (plugins/module_utils/data_copy/plumbing.py): batches
in order, the end, and a walk's failure raised on the reading side."""

from __future__ import annotations

import queue

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import plumbing as plumbing_lib
from ansible_collections.storage.mobility.plugins.module_utils.data_copy import walk as walk_lib


class FakeWalker:
    """A walk of ``count`` files (a folder that could not be listed at ``broken``), or one that fails."""

    def __init__(self, count, broken=None, fail_after=None):
        self.count = count
        self.broken = broken
        self.fail_after = fail_after

    def walk(self):
        for index in range(self.count):
            if index == self.fail_after:
                raise OSError(5, "Input/output error")
            yield b"f%06d" % index, ("file",), "EACCES" if index == self.broken else None

    @staticmethod
    def summary():
        return {"counts": {}}


def _read_all(out):
    reader = plumbing_lib.Reader(out)
    items = []
    while True:
        item = reader.next()
        if item is plumbing_lib.END:
            return items
        items.append(item)


def test_batches_keep_the_order_and_the_error_of_a_folder():
    count = walk_lib.BATCH * 2 + 3
    batches = list(plumbing_lib.batches(FakeWalker(count, broken=7)))
    assert [len(batch) for batch in batches] == [walk_lib.BATCH, walk_lib.BATCH, 3]
    items = [item for batch in batches for item in batch]
    assert [item[0] for item in items] == [b"f%06d" % index for index in range(count)]
    assert items[7] == (b"f000007", ("file",), "EACCES") and items[6] == (b"f000006", ("file",))


def test_a_thread_walk_ends_and_keeps_its_summary():
    out = queue.Queue()
    summaries = [None]
    plumbing_lib.produce_summary(FakeWalker(5), out, summaries, 0)
    assert [item[0] for item in _read_all(out)] == [b"f%06d" % index for index in range(5)]
    assert summaries == [{"counts": {}}]


def test_a_failed_walk_is_raised_on_the_reading_side():
    out = queue.Queue()
    plumbing_lib.produce(FakeWalker(walk_lib.BATCH + 10, fail_after=walk_lib.BATCH + 2), out)
    with pytest.raises(OSError, match="Input/output error"):
        _read_all(out)
