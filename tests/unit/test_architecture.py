"""The architecture rule of the transport layer, checked on the code itself (docs/architecture.md).

Drivers, the record store, the locks and the export helpers reach their storage host only through
the transport (plugins/module_utils/transport/), so that a transport to another machine needs no
change anywhere else. Only the transport and the data node's copy engine (data_copy/ and
data_mount.py) run commands or touch files themselves. This test reads every Python file under plugins/ with ``ast`` and fails, naming file,
line and call, when another file imports subprocess, fcntl or shutil, calls a file-system function
of ``os`` / ``os.path``, or calls ``open()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGINS = REPO_ROOT / "plugins"

# Where commands and direct file-system calls belong.
ALLOWED_PLACES = (
    "plugins/module_utils/transport/",      # the transport layer: how a storage host is reached
    "plugins/module_utils/data_copy/",      # the data node's copy engine (runs where the data is mounted)
    "plugins/module_utils/data_mount.py",   # the data node's mounts of the shares it copies
)

FORBIDDEN_MODULES = {"subprocess", "fcntl", "shutil"}

# Functions of ``os`` and ``os.path`` that only compute with strings or with this process: no
# file system is touched, so any file may call them.
PURE_OS = {
    "os.getpid", "os.environ.get", "os._exit", "os.fsencode", "os.fsdecode", "os.strerror", "os.getenv",
    "os.path.join", "os.path.dirname", "os.path.basename", "os.path.normpath", "os.path.split",
    "os.path.splitext", "os.path.isabs", "os.path.relpath", "os.path.commonpath", "os.sep",
}

# Calls outside the allowed places that are honestly not on a storage path, each with the reason.
# Keyed by (file, call).
# (file, call) -> why it is not a storage path. (The copy job's status file, once read by
# managers/share.py, is now read through data_copy/layout.py.)
ALLOWED_CALLS: dict[tuple[str, str], str] = {
    ("plugins/module_utils/data_copy/shipping.py", "open"):
        "reads the source of one of the collection's own modules in the running process, to ship it",
}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def violations(path: Path) -> list[str]:
    """What ``path`` does that only the allowed places may do, as ``file:line: what``."""
    rel = _relative(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    found = []
    os_aliases = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append("%s:%d: imports %s" % (rel, node.lineno, alias.name))
                if alias.name == "os" and alias.asname:
                    os_aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append("%s:%d: imports from %s" % (rel, node.lineno, node.module))
            if top == "os":
                names = ", ".join(a.name for a in node.names)
                found.append("%s:%d: imports %s from %s (call them as os.* so this test sees them)"
                             % (rel, node.lineno, names, node.module))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head = name.split(".", maxsplit=1)[0]
        if head in os_aliases and head != "os":
            name = "os" + name[len(head):]
        if name == "open" or name == "io.open":
            call = name
        elif name.startswith("os.") and name not in PURE_OS:
            call = name
        else:
            continue
        if (rel, call) in ALLOWED_CALLS:
            continue
        found.append("%s:%d: calls %s()" % (rel, node.lineno, call))
    return found


def _checked_files() -> list[Path]:
    return [p for p in sorted(PLUGINS.rglob("*.py")) if not _relative(p).startswith(ALLOWED_PLACES)]


def test_only_the_transport_and_the_data_node_touch_files_and_run_commands():
    found = []
    for path in _checked_files():
        found += violations(path)
    assert found == [], ("outside transport/ and the data node's copy engine, go through the transport "
                         "(ctx.driver(pool).transport, or the driver/store method that uses it):\n"
                         + "\n".join(found))


def test_the_check_sees_what_it_must_refuse(tmp_path, monkeypatch):
    """The scanner itself: every forbidden form is reported, the pure helpers are not."""
    sample = REPO_ROOT / "plugins" / "module_utils" / "_architecture_sample.py"
    source = (
        "import os\n"
        "import os as o\n"
        "import subprocess\n"
        "from fcntl import flock\n"
        "import shutil.which\n"
        "from os.path import isdir\n"
        "def f(path):\n"
        "    os.path.join(path, 'x'); os.path.dirname(path); os.getpid()\n"
        "    os.stat(path)\n"
        "    o.listdir(path)\n"
        "    os.path.isdir(path)\n"
        "    open(path)\n"
    )
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    found = violations(sample)
    rel = "plugins/module_utils/_architecture_sample.py"
    assert found == [
        rel + ":3: imports subprocess",
        rel + ":4: imports from fcntl",
        rel + ":5: imports shutil.which",
        rel + ":6: imports isdir from os.path (call them as os.* so this test sees them)",
        rel + ":9: calls os.stat()",
        rel + ":10: calls os.listdir()",
        rel + ":11: calls os.path.isdir()",
        rel + ":12: calls open()",
    ]


@pytest.mark.parametrize("place", ALLOWED_PLACES)
def test_every_allowed_place_exists(place):
    # A place that was renamed or removed must leave this list too.
    assert (REPO_ROOT / place).exists(), place


def test_every_allowed_call_is_still_made():
    # An allowance whose call went away must be removed, so the list stays honest.
    for (rel, call), _reason in ALLOWED_CALLS.items():
        tree = ast.parse((REPO_ROOT / rel).read_text(encoding="utf-8"))
        calls = {_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert call in calls, "%s no longer calls %s: remove it from ALLOWED_CALLS" % (rel, call)
