"""The extended attributes a copy keeps (plugins/module_utils/data_copy/xattrs.py), on real files."""

from __future__ import annotations

import os

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import xattrs as xattrs_lib


def test_which_xattrs_are_kept():
    assert xattrs_lib.xattr_wanted("user.origin", privileged=False)
    assert xattrs_lib.xattr_wanted("system.posix_acl_access", privileged=False)
    assert not xattrs_lib.xattr_wanted("trusted.note", privileged=False)
    assert xattrs_lib.xattr_wanted("trusted.note", privileged=True)
    assert xattrs_lib.xattr_wanted("security.selinux", privileged=True)
    # XFS's own mirror of the ACLs, compared already as system.posix_acl_*: never.
    assert not xattrs_lib.xattr_wanted("trusted.SGI_ACL_FILE", privileged=True)


def test_read_xattrs_of_a_file_and_not_of_a_symlinks_target(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    try:
        os.setxattr(path, "user.origin", b"test")
    except OSError as exc:
        pytest.skip("this filesystem has no user xattrs: %s" % exc)
    assert xattrs_lib.read_xattrs(os.fsencode(path)) == {"user.origin": b"test"}
    link = tmp_path / "link"
    link.symlink_to(path)
    assert xattrs_lib.read_xattrs(os.fsencode(link)) == {}
