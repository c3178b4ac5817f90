# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The extended attributes a copy must keep (and a verification compares): ACLs and ``user.*``
always, ``trusted.*`` and ``security.*`` as root, never a filesystem's internal mirror of the ACLs.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os

ACL_XATTRS = ('system.posix_acl_access', 'system.posix_acl_default')


# Filesystem-internal mirrors of what is compared already: XFS shows its on-disk copy of the
# POSIX ACLs to root as trusted.SGI_ACL_*, so an ext4 -> xfs copy would otherwise "differ".
FS_INTERNAL_XATTRS = ('trusted.SGI_ACL_FILE', 'trusted.SGI_ACL_DEFAULT')


def xattr_wanted(name, privileged):
    """The xattrs rsync -X/-A copies: ACLs and user.* always, trusted.* and security.* as root."""
    if name in FS_INTERNAL_XATTRS:
        return False
    if name in ACL_XATTRS or name.startswith('user.'):
        return True
    return privileged and name.startswith(('trusted.', 'security.'))


def read_xattrs(path, privileged=None):
    """The extended attributes of ``path`` (not following a symlink) that a copy must keep."""
    if privileged is None:
        privileged = os.geteuid() == 0
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM):
            return {}
        raise
    values = {}
    if not names:
        return values
    for name in sorted(names):
        if not xattr_wanted(name, privileged):
            continue
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise
    return values
