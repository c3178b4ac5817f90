"""Unit tests for plugins/module_utils/transport/mounts.py: the mount table parsed from recorded
mountinfo text (what any transport reads on its host) and the lookups in it."""

from __future__ import annotations

from ansible_collections.storage.mobility.plugins.module_utils.transport.mounts import (
    deepest_mount, mount_table, parse_mountinfo, stack_at)

# Recorded from /proc/self/mountinfo (kernel 6.18) and trimmed: an export with its read-only base
# and a share bind-mounted on it, a mount point with a space, a line without the separator.
MOUNTINFO = """\
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 27 7:0 / /srv/pool rw,relatime shared:20 - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/
52 27 0:50 / /srv/exports/s1 ro,nosuid,nodev,noexec,relatime shared:30 - tmpfs storage-mobility-base ro,size=4k,mode=755
53 52 7:0 /shares/s1 /srv/exports/s1 rw,relatime shared:20 - btrfs /dev/loop0 rw,space_cache=v2
60 27 8:1 /data /srv/with\\040space rw,relatime shared:1 - ext4 /dev/sda1 rw
garbage without a separator
"""


def test_parse_mountinfo_reads_every_field_and_unescapes_paths():
    table = parse_mountinfo(MOUNTINFO)
    assert len(table) == 5
    assert table[1] == {"mount_point": "/srv/pool", "root": "/", "options": "rw,relatime", "fstype": "btrfs",
                        "source": "/dev/loop0", "mount_id": "40", "parent_id": "27"}
    assert table[3]["root"] == "/shares/s1" and table[3]["parent_id"] == "52"
    assert table[4]["mount_point"] == "/srv/with space"


def test_deepest_mount_is_the_filesystem_holding_a_path():
    table = parse_mountinfo(MOUNTINFO)
    assert deepest_mount("/srv/pool/shares/s1", table)["mount_id"] == "40"
    assert deepest_mount("/srv/poolx", table)["mount_id"] == "27", "a prefix of a name is not a parent"
    assert deepest_mount("/srv/with space/f", table)["fstype"] == "ext4"
    assert deepest_mount("/x", [])["fstype"] == "unknown"


def test_stack_at_orders_the_mounts_of_one_point_lowest_first():
    table = parse_mountinfo(MOUNTINFO)
    # listed upside down: the parent links, not the order of the lines, decide
    assert [e["mount_id"] for e in stack_at("/srv/exports/s1", list(reversed(table)))] == ["52", "53"]
    assert stack_at("/srv/exports/s2", table) == []


def test_the_mount_table_of_this_machine_has_its_root():
    assert any(entry["mount_point"] == "/" for entry in mount_table())
