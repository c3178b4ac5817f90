"""Run one replica manager call in a child process, so that the crash injection
(``STORAGE_MOBILITY_CRASH_AFTER``, plugins/module_utils/crash.py) kills the child, not pytest.

    python replica_child.py BACKENDS_JSON OP SHARE POOL [force]

OP is present, resynced or promoted. Prints the result's replica as one JSON line; exit 1 on a
refusal or storage error, 70 when a crash point killed it.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    config, op, share, pool = argv[:4]
    force = argv[4:] == ["force"]
    sys.path.insert(0, str(HERE.parent))
    # Importing the tests' conftest makes the collection importable.
    importlib.import_module("conftest")
    from ansible_collections.storage.mobility.plugins.module_utils.context import Context
    from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
    from ansible_collections.storage.mobility.plugins.module_utils.managers.replica import LocalReplicaManager

    manager = LocalReplicaManager(Context(json.loads(Path(config).read_text(encoding="utf-8"))))
    kwargs = {"pool": pool}
    if force:
        kwargs["force"] = True
    try:
        result = getattr(manager, op)(share, **kwargs)
    except StorageError as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps({"changed": result["changed"], "replica": result["replica"]}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
