"""Which hash a data node can use (plugins/module_utils/data_copy/hashing.py).
"""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashing as hashing_lib


def test_xxh128_falls_back_to_blake2b_without_xxhash(monkeypatch):
    monkeypatch.setattr(hashing_lib, "_xxhash", lambda: None)
    algorithm, warning = hashing_lib.resolve_algorithm("xxh128")
    assert algorithm == "blake2b"
    assert "xxhash is not installed" in warning
    assert hashing_lib.missing_library("xxh128") is None


def test_blake3_needs_its_package(monkeypatch):
    monkeypatch.setattr(hashing_lib, "_blake3", lambda: None)
    assert hashing_lib.missing_library("blake3") == "blake3"
    with pytest.raises(hashing_lib.HashUnavailable) as caught:
        hashing_lib.resolve_algorithm("blake3")
    assert caught.value.library == "blake3"


def test_sha256_and_blake2b_need_nothing():
    assert hashing_lib.resolve_algorithm("sha256") == ("sha256", None)
    assert hashing_lib.resolve_algorithm("blake2b") == ("blake2b", None)
    with pytest.raises(ValueError):
        hashing_lib.resolve_algorithm("md5")
