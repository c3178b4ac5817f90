"""Unit tests for plugins/module_utils/names.py: safe names and ``host@backend#pool`` addresses."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.names import (
    COMPONENT_MAX, DERIVED_NAMES, SHARE_NAME_MAX, SNAPSHOT_NAME_MAX, PoolAddress, PoolRef, name_limit, parse_pool, validate_name)


@pytest.mark.parametrize("name", ["s1", "share-01", "A.b_c", "x" * 250, "\u00e9" * 125, "caf\u00e9", "with space"])
def test_validate_name_accepts_safe_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name, problem", [
    ("a/b", "contains '/'"),
    ("/abs", "contains '/'"),
    ("..", "contains '..'"),
    (".", "starts with '.'"),
    ("a..b", "contains '..'"),
    ("-rf", "starts with '-'"),
    ("--help", "starts with '-'"),
    ("a\x00b", "contains a NUL byte"),
    ("a\nb", "contains a newline"),
    ("a\rb", "contains a newline"),
    (".hidden", "starts with '.'"),
    ("x" * 251, "is 251 bytes long, more than the limit of 250 bytes for a share name"),
    ("\u00e9" * 126, "is 252 bytes long, more than the limit of 250 bytes"),  # 252 bytes in UTF-8
])
def test_validate_name_refuses_unsafe_names_naming_the_problem(name, problem):
    with pytest.raises(InvalidRequest) as info:
        validate_name(name)
    assert problem in str(info.value)
    assert "Invalid share name" in str(info.value)


def test_validate_name_lists_every_problem_and_uses_the_given_noun():
    with pytest.raises(InvalidRequest) as info:
        validate_name("-a/..", what="snapshot name")
    message = str(info.value)
    assert message.startswith("Invalid snapshot name")
    for problem in ("contains '/'", "contains '..'", "starts with '-'"):
        assert problem in message


@pytest.mark.parametrize("value", ["", None, 3, b"bytes", ["s1"]])
def test_validate_name_refuses_non_strings_and_empty(value):
    with pytest.raises(InvalidRequest) as info:
        validate_name(value)
    assert "non-empty string" in str(info.value)


def test_parse_pool_splits_the_three_parts():
    ref = parse_pool("node-1.example@be_1#pool.a")
    assert (ref.host, ref.backend, ref.pool) == ("node-1.example", "be_1", "pool.a")
    assert str(ref) == "node-1.example@be_1#pool.a"
    assert repr(ref) == "PoolAddress('node-1.example@be_1#pool.a')"


def test_pool_refs_compare_and_hash_by_address():
    assert parse_pool("h@b#p") == PoolRef("h", "b", "p")
    assert parse_pool("h@b#p") != parse_pool("h@b#q")
    assert (parse_pool("h@b#p") != PoolRef("h", "b", "p")) is False
    assert parse_pool("h@b#p") != "h@b#p"
    assert len({parse_pool("h@b#p"), PoolRef("h", "b", "p")}) == 1


@pytest.mark.parametrize("value, hint", [
    ("hostbackend#pool", "no '@' between host and backend"),
    ("host@backend", "no '#' before the pool name"),
    ("host#pool", "no '@' between host and backend"),
    ("host@backend#", None),
    ("@backend#pool", None),
    ("host@#pool", None),
    ("host@backend#pool#x", None),
    ("host@@backend#pool", None),
    ("host@backend#-pool", None),
    ("host@backend#.pool", None),
    (" host@backend#pool", None),
    ("host@backend#pool\n", None),
    ("host@back end#pool", None),
    ("host@backend#../pool", None),
    ("host@backend#po/ol", None),
])
def test_parse_pool_refuses_malformed_addresses(value, hint):
    with pytest.raises(InvalidRequest) as info:
        parse_pool(value, "destination pool")
    message = str(info.value)
    assert message.startswith("Invalid destination pool %r" % value)
    assert "expected host@backend#pool" in message
    if hint:
        assert hint in message


@pytest.mark.parametrize("value", ["", None, 12])
def test_parse_pool_refuses_empty_and_non_strings(value):
    with pytest.raises(InvalidRequest) as info:
        parse_pool(value)
    assert "expected host@backend#pool" in str(info.value)


@pytest.mark.parametrize("value, parts, host_backend", [
    ("devhost@alpha#p1", ("devhost", "alpha", "p1"), "devhost@alpha"),
    ("devhost@file1", ("devhost", "file1", None), "devhost@file1"),   # Cinder's host@backend
    ("cluster1", ("cluster1", None, None), "cluster1"),
    ("a@b#c#d", ("a", "b", "c#d"), "a@b"),
    ("h@#p", ("h", "", "p"), "h@"),
    ("", ("", None, None), ""),
    (None, ("", None, None), ""),
])
def test_split_reads_the_parts_as_written_and_gives_them_back(value, parts, host_backend):
    address = PoolAddress.split(value)
    assert (address.host, address.backend, address.pool) == parts
    assert address.host_backend == host_backend
    assert str(address) == (value or "")


def test_split_never_judges_what_parse_refuses():
    address = PoolAddress.split("h st@b#p")
    assert (address.host, address.backend, address.pool) == ("h st", "b", "p")
    with pytest.raises(InvalidRequest):
        PoolAddress.parse("h st@b#p")


def test_service_form_accepts_what_a_service_names_and_refuses_missing_parts():
    address = PoolAddress.service("devhost@alpha#pool1", "destination pool", "Manila", "devhost@alpha#pool1")
    assert address == PoolAddress("devhost", "alpha", "pool1")
    for bad in ("devhost@alpha", "devhost#p", "@a#p", "h@#p", "h@a#", "", None):
        with pytest.raises(InvalidRequest) as info:
            PoolAddress.service(bad, "destination pool", "Manila", "devhost@alpha#pool1")
        assert str(info.value) == ("Invalid destination pool %r: expected host@backend#pool as Manila names pools, "
                                   "for example devhost@alpha#pool1" % (bad,))


def test_pool_ref_is_the_old_name_of_the_address():
    assert PoolRef is PoolAddress
    assert parse_pool("h@b#p") == PoolAddress.parse("h@b#p")


@pytest.mark.parametrize("what", sorted(DERIVED_NAMES))
def test_the_longest_accepted_name_fits_in_every_derived_name_and_one_more_byte_is_refused(what):
    limit = name_limit(what)
    longest = "n" * limit
    assert validate_name(longest, what) == longest
    for pattern in DERIVED_NAMES[what]:
        assert len((pattern % longest).encode()) <= COMPONENT_MAX, pattern
    assert max(len((p % longest).encode()) for p in DERIVED_NAMES[what]) == COMPONENT_MAX, "the limit is the longest"
    with pytest.raises(InvalidRequest) as info:
        validate_name(longest + "n", what)
    assert "more than the limit of %d bytes for a %s" % (limit, what) in str(info.value)


def test_the_limits_are_those_of_the_documentation():
    # plugins/doc_fragments and docs/share_migration.md name these numbers
    assert (SHARE_NAME_MAX, SNAPSHOT_NAME_MAX, name_limit("job id")) == (250, 246, 249)
