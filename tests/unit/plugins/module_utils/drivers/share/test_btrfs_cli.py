"""Unit tests for plugins/module_utils/drivers/share/btrfs_cli.py: the parsers, on output recorded
from btrfs-progs 6.2 (test_btrfs.py runs them on a real btrfs as root), and the argv builders."""

from __future__ import annotations

from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs import BtrfsShareDriver
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs_cli import (
    increment_name, increment_seq, parse_du_total, parse_dump_data_bytes, parse_subvolume_list, parse_subvolume_show,
    send_argv)

SHOW_RECEIVED = """stage/snap4
\tName: \t\t\tsnap4
\tUUID: \t\t\t646579e7-e5b3-0040-b75e-cc372b363366
\tParent UUID: \t\t5bdcba62-5db8-c24d-b7b5-86b61b3e1325
\tReceived UUID: \t\t1e4417ce-693e-0747-91f7-5be7e79159b7
\tCreation time: \t\t2026-11-22 22:39:37 +0000
\tSubvolume ID: \t\t257
\tGeneration: \t\t15
\tGen at creation: \t10
\tParent ID: \t\t5
\tTop level ID: \t\t5
\tFlags: \t\t\treadonly
\tSend transid: \t\t13
\tSend time: \t\t2026-11-22 22:39:37 +0000
\tReceive transid: \t11
\tReceive time: \t\t2026-11-22 22:39:37 +0000
\tSnapshot(s):
\t\t\t\tst3/snap5
"""

SHOW_PLAIN = """s
\tName: \t\t\ts
\tUUID: \t\t\t3fdd306b-1d8c-a945-a804-fa3e24bbbb3f
\tParent UUID: \t\t-
\tReceived UUID: \t\t-
\tCreation time: \t\t2026-11-22 22:39:24 +0000
\tSubvolume ID: \t\t256
\tGeneration: \t\t13
\tGen at creation: \t7
\tParent ID: \t\t5
\tTop level ID: \t\t5
\tFlags: \t\t\t-
\tSend transid: \t\t0
\tSend time: \t\t2026-11-22 22:39:24 +0000
\tReceive transid: \t0
\tReceive time: \t\t-
\tSnapshot(s):
\t\t\t\tsnap1
\t\t\t\tsnap2
"""

LIST = """ID 256 gen 13 top level 5 path stage/snap1
ID 260 gen 17 top level 5 path with space/x y
ID 261 gen 18 cgen 18 top level 5 otime 2026-11-22 22:39:37 path a/b
not a subvolume line
"""

DUMP = """snapshot        ./snap4                         uuid=1e4417ce-693e-0747-91f7-5be7e79159b7 transid=13 parent_uuid=d7 parent_transid=11
mkfile          ./snap4/o258-13-0
rename          ./snap4/o258-13-0               dest=./snap4/big
update_extent   ./snap4/big                     offset=0 len=20971520
update_extent   ./snap4/small                   offset=4096 len=3
clone           ./snap4/copy                    offset=0 len=4096 from=./snap4/big clone_offset=0
utimes          ./snap4/                        atime=2026-11-22T22:39:24+0000
"""

DU = """     Total   Exclusive  Set shared  Filename
  20971520           0    20971520  /tmp/bx/a/snap4
"""


# --------------------------------------------------------------------------- parsing


def test_parse_show_of_a_received_snapshot():
    info = parse_subvolume_show(SHOW_RECEIVED)
    assert info["path"] == "stage/snap4" and info["name"] == "snap4"
    assert info["uuid"] == "646579e7-e5b3-0040-b75e-cc372b363366"
    assert info["parent_uuid"] == "5bdcba62-5db8-c24d-b7b5-86b61b3e1325"
    assert info["received_uuid"] == "1e4417ce-693e-0747-91f7-5be7e79159b7"
    assert info["creation_time"] == "2026-11-22 22:39:37 +0000"
    assert (info["generation"], info["gen_at_creation"], info["subvolume_id"]) == (15, 10, 257)
    assert info["readonly"] is True and info["snapshots"] == ["st3/snap5"]
    # A received subvolume's own received UUID is what a send of it carries.
    assert BtrfsShareDriver.expected_received_uuid(info) == info["received_uuid"]


def test_parse_show_of_a_plain_subvolume():
    info = parse_subvolume_show(SHOW_PLAIN)
    assert info["parent_uuid"] is None and info["received_uuid"] is None and info["receive_time"] is None
    assert info["readonly"] is False and info["snapshots"] == ["snap1", "snap2"]
    assert BtrfsShareDriver.expected_received_uuid(info) == info["uuid"]


def test_parse_list_keeps_spaces_in_paths_and_skips_other_lines():
    assert parse_subvolume_list(LIST) == [
        {"id": 256, "gen": 13, "top_level": 5, "path": "stage/snap1"},
        {"id": 260, "gen": 17, "top_level": 5, "path": "with space/x y"},
        {"id": 261, "gen": 18, "top_level": 5, "path": "a/b"},
    ]


def test_parse_dump_counts_only_the_data_that_is_sent():
    # clone commands reference data the destination has already: not counted
    assert parse_dump_data_bytes(DUMP) == 20971520 + 3
    assert parse_dump_data_bytes("") == 0


def test_parse_du_total():
    assert parse_du_total(DU) == 20971520
    assert parse_du_total("ERROR: no such file") == 0


def test_increment_names_sort_and_round_trip():
    names = [increment_name(n) for n in (1, 2, 10, 999999)]
    assert names == sorted(names) == ["inc-000001", "inc-000002", "inc-000010", "inc-999999"]
    assert [increment_seq(n) for n in names] == [1, 2, 10, 999999]
    assert increment_seq("final") is None and increment_seq("inc-1") is None and increment_seq("inc-0000011") is None


def test_send_argv_for_a_full_an_incremental_and_a_metadata_only_send():
    assert send_argv("/p/s") == ["btrfs", "send", "-q", "/p/s"]
    assert send_argv("/p/s", "/p/parent") == ["btrfs", "send", "-q", "-p", "/p/parent", "/p/s"]
    assert send_argv("/p/s", "/p/parent", no_data=True) == ["btrfs", "send", "-q", "--no-data", "-p", "/p/parent",
                                                            "/p/s"]
