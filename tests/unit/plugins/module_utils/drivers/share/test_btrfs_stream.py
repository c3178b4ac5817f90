"""Unit tests for plugins/module_utils/drivers/share/btrfs_stream.py: the send stream commands the
btrfs driver writes and the edit of the stream's end (test_btrfs.py checks a real receive of it)."""

from __future__ import annotations

import struct

from ansible_collections.storage.mobility.plugins.module_utils.drivers.share import btrfs_stream
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.btrfs_stream import (
    END_COMMAND, root_times_edit, root_utimes_command)
from ansible_collections.storage.mobility.plugins.module_utils.transport.base import FileStat


def test_the_end_command_is_the_one_btrfs_send_writes():
    # The last 10 bytes of a stream written by btrfs send (kernel 6.18, read by btrfs-progs 6.2):
    # length 0, command 21 (end) and its CRC32C; the same CRC code signs the utimes command.
    assert END_COMMAND == bytes.fromhex("000000001500506cc99d")


def test_the_root_utimes_command_carries_the_times_of_the_sent_root():
    st = FileStat(mode=0o40755, ino=256, dev=1, nlink=1, uid=0, gid=0, size=0, atime_ns=978307200123456789,
                  mtime_ns=978307201987654321, ctime_ns=978307202000000001)
    command = root_utimes_command(st)
    length, kind, crc = struct.unpack("<IHI", command[:10])
    assert (kind, length) == (20, len(command) - 10)
    assert crc == btrfs_stream.crc32c(command[:6] + b"\0\0\0\0" + command[10:]) and crc != 0
    attrs, payload = {}, command[10:]
    while payload:
        kind, size = struct.unpack("<HH", payload[:4])
        attrs[kind], payload = payload[4:4 + size], payload[4 + size:]
    assert attrs[15] == b""  # the path of the received subvolume's root
    assert struct.unpack("<QI", attrs[11]) == (978307200, 123456789)  # atime
    assert struct.unpack("<QI", attrs[10]) == (978307201, 987654321)  # mtime
    assert struct.unpack("<QI", attrs[9]) == (978307202, 1)  # ctime


def test_the_root_times_edit_goes_before_the_end_only():
    st = FileStat(mode=0o40755, ino=256, dev=1, nlink=1, uid=0, gid=0, size=0, atime_ns=1, mtime_ns=2, ctime_ns=3)
    edit = root_times_edit(st)
    assert edit.finish(END_COMMAND) == root_utimes_command(st) + END_COMMAND
    assert edit.finish(b"0123456789") == b"0123456789", "a stream without its end passes unchanged"
