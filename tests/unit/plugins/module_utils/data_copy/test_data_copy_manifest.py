"""What a manifest entry is (plugins/module_utils/data_copy/manifest.py): the values of one path and
how two entries of the same path differ. The walks that make entries and the comparison of whole
trees are tested in test_data_copy_walk.py and test_data_copy_compare.py."""

from __future__ import annotations

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import manifest as manifest_lib


def _values(**given):
    return tuple(given.get(name) for name in manifest_lib.ATTRIBUTES)


def test_an_entry_keeps_only_the_values_present():
    values = _values(type="file", mode=0o644, uid=0, gid=0, size=3, mtime_ns=5, hash="abc",
                     xattrs=(("user.a", b"1"), ("user.b", b"2")))
    entry = manifest_lib.entry_from_values(b"dir/f", values)
    assert entry == {"path": b"dir/f", "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 3,
                     "mtime_ns": 5, "hash": "abc", "xattrs": {"user.a": b"1", "user.b": b"2"}}


def test_differing_attributes_names_each_difference_in_order():
    one = manifest_lib.entry_from_values(b"f", _values(type="file", mode=0o644, size=3, hash="abc"))
    same = manifest_lib.entry_from_values(b"f", _values(type="file", mode=0o644, size=3, hash="abc"))
    assert manifest_lib.differing_attributes(one, same) == []
    other = manifest_lib.entry_from_values(b"f", _values(type="file", mode=0o600, size=3, hash="abd", link=b"g"))
    assert manifest_lib.differing_attributes(one, other) == ["mode", "link", "hash"]


def test_an_error_on_either_side_is_a_difference_even_with_the_same_text():
    """A path that could not be read is never taken as equal, whatever the other side says."""
    failed = manifest_lib.entry_from_values(b"f", _values(type="file", error="EACCES: Permission denied"))
    assert manifest_lib.differing_attributes(failed, dict(failed)) == ["error"]
    fine = manifest_lib.entry_from_values(b"f", _values(type="file"))
    assert manifest_lib.differing_attributes(fine, failed) == ["error"]
