"""Reading a file for its hash (plugins/module_utils/data_copy/fileread.py), on real files: the hash is
the content's, with and without direct I/O, the identity says whether the file changed, and a read
stops when it is cancelled."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import fileread as fileread_lib


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(3 * fileread_lib.CHUNK + 4097)  # several chunks and an unaligned tail
    path.write_bytes(data)
    return os.fsencode(path), data


@pytest.mark.parametrize("drop_cache", [False, True])
def test_the_hash_is_of_the_whole_content(big_file, drop_cache):
    path, data = big_file
    reader = fileread_lib.FileHasher("sha256", drop_cache=drop_cache)
    digest, after = reader.read_and_hash(path)
    assert digest == hashlib.sha256(data).hexdigest()
    assert after == fileread_lib.identity(os.lstat(path))
    before, digest2, after2 = reader.read_identified(path)
    assert before == after2 == after and digest2 == digest


def test_the_identity_changes_with_any_write(big_file):
    """The same size and modification time put back: the change time still gives the write away."""
    path, data = big_file
    before = fileread_lib.identity(os.lstat(path))
    st = os.lstat(path)
    with open(path, "r+b") as handle:
        handle.write(bytes([data[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = fileread_lib.identity(os.lstat(path))
    assert after[:2] == before[:2] and after != before


def test_a_cancelled_read_stops(big_file):
    path, dummy = big_file
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(fileread_lib.Cancelled):
        fileread_lib.FileHasher("sha256", cancelled=cancelled).read_and_hash(path)


def test_a_symlink_is_not_followed(big_file, tmp_path):
    path, dummy = big_file
    link = tmp_path / "link"
    link.symlink_to(os.fsdecode(path))
    with pytest.raises(OSError):
        fileread_lib.FileHasher("sha256").read_and_hash(os.fsencode(link))


def test_sync_filesystem_flushes(tmp_path):
    assert fileread_lib.sync_filesystem(str(tmp_path)) in ("syncfs", "sync")
