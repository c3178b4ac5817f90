# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The btrfs send stream as the btrfs driver edits it on its way to ``btrfs receive``.

The stream (btrfs-progs' send.h) is a sequence of commands: a little-endian header (payload
length u32, command u16, CRC32C u32 of header and payload with the CRC field zero) and TLV
attributes. The driver inserts one command, a ``utimes`` of the received root folder, before
the closing ``end`` (root_times_edit), through the transport's pipe.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import struct

from ansible_collections.storage.mobility.plugins.module_utils.transport.base import TailEdit

SEND_C_UTIMES = 20
SEND_C_END = 21
SEND_A_CTIME = 9
SEND_A_MTIME = 10
SEND_A_ATIME = 11
SEND_A_PATH = 15
SEND_HEADER = struct.Struct('<IHI')


def _crc32c_table():
    table = []
    for index in range(256):
        crc = index
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC32C as the send stream uses it: seed 0, no final inversion."""
    for byte in bytearray(data):
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def send_command(command, attributes=()):
    """One send stream command: ``attributes`` are (type, bytes) pairs."""
    payload = b''.join(struct.pack('<HH', kind, len(value)) + value for kind, value in attributes)
    crc = crc32c(SEND_HEADER.pack(len(payload), command, 0) + payload)
    return SEND_HEADER.pack(len(payload), command, crc) + payload


END_COMMAND = send_command(SEND_C_END)


def root_utimes_command(st):
    """A ``utimes`` command for the root folder of the received subvolume (the empty path) with
    the times of ``st`` (the FileStat of the sent subvolume's root, transport/base.py).

    An incremental send creates every new inode under a temporary name in the subvolume's root
    folder and then renames it into place, but it sends the root's times only when the root
    itself changed: a receive of new files in subfolders leaves the received root with the time
    of the receive. Appended before the stream's end, this command puts the source's times back."""
    def stamp(ns):
        return struct.pack('<QI', ns // 1000000000, ns % 1000000000)
    return send_command(SEND_C_UTIMES, [(SEND_A_PATH, b''), (SEND_A_ATIME, stamp(st.atime_ns)),
                                        (SEND_A_MTIME, stamp(st.mtime_ns)), (SEND_A_CTIME, stamp(st.ctime_ns))])


def root_times_edit(st):
    """The pipe edit (transport/base.py TailEdit) that puts root_utimes_command(``st``) just before
    the stream's closing ``end``; a stream that does not close with one passes unchanged."""
    return TailEdit(END_COMMAND, root_utimes_command(st))
