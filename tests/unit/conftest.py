"""Unit-test setup: make ``ansible_collections.storage.mobility`` importable and share helpers.

When the collection is not importable yet (no ``PYTHONPATH`` pointing at an
``ansible_collections/storage/mobility`` tree), a temporary symlink tree
``<tmp>/ansible_collections/storage/mobility -> repository root`` is put on ``sys.path``.
The helper module ``mobility_helpers`` next to this file is made importable too.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO_ROOT = os.path.dirname(os.path.dirname(_HERE))

if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _importable() -> bool:
    try:
        import ansible_collections.storage.mobility.plugins.module_utils.errors  # noqa: F401
    except ImportError:
        return False
    return True


def _remove_tree(base: str) -> None:
    link = os.path.join(base, "ansible_collections", "storage", "mobility")
    # Remove the symlink itself first: never walk into the repository through it.
    if os.path.islink(link):
        os.unlink(link)
    for folder in (os.path.join(base, "ansible_collections", "storage"),
                   os.path.join(base, "ansible_collections"), base):
        try:
            os.rmdir(folder)
        except OSError:
            pass


if not _importable():
    _base = tempfile.mkdtemp(prefix="mobility-unit-path-")
    os.makedirs(os.path.join(_base, "ansible_collections", "storage"))
    os.symlink(_REPO_ROOT, os.path.join(_base, "ansible_collections", "storage", "mobility"))
    atexit.register(_remove_tree, _base)
    for _name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[_name]
    sys.path.insert(0, _base)
    if not _importable():  # pragma: no cover - a broken checkout
        raise ImportError("cannot import ansible_collections.storage.mobility from %s" % _REPO_ROOT)
