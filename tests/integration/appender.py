"""A user's program appending to a file of a share in a loop while a switchover runs, and the
check that no write it saw succeed is missing from the share afterwards.

Each write opens the file, appends one numbered line and closes it again (a process holding the
file open would be refused by the switchover's open-writer check instead). The numbers of the
writes that succeeded are kept by the writer and written to a file outside the share when it is
told to stop, with the number of writes that failed (a read-only share refuses them: that is
allowed, a write that succeeded and then vanished is not).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

APPENDER = textwrap.dedent("""
    import json, os, sys, time
    target, stop, result = sys.argv[1], sys.argv[2], sys.argv[3]
    accepted, failed, n = [], 0, 0
    while not os.path.exists(stop):
        try:
            with open(target, 'a') as handle:
                handle.write('%d\\n' % n)
            accepted.append(n)
        except OSError:
            failed += 1
        n += 1
        time.sleep(0.0002)
    with open(result, 'w') as handle:
        json.dump({'accepted': accepted, 'failed': failed}, handle)
""")


class Appender:
    def __init__(self, target: Path, work: Path, name: str = "appender"):
        self.target = target
        self.stop_file = work / f"{name}.stop"
        self.result_file = work / f"{name}.json"
        self.stop_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(target), str(self.stop_file),
                                      str(self.result_file)])

    def stop(self) -> dict:
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=60)
        return json.loads(self.result_file.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop_after_successes(self, count: int, timeout: float = 60) -> dict:
        """Let it write ``count`` more lines into the share first (so that writes after the
        switch are part of the check), then stop it."""
        start = self._lines()
        deadline = time.monotonic() + timeout
        while len(self._lines()) < len(start) + count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.stop()

    def _lines(self) -> list[str]:
        try:
            return self.target.read_text().splitlines()
        except OSError:
            return []


def lost_writes(result: dict, share_file: Path) -> list[int]:
    """The writes the writer saw succeed that are not in ``share_file`` (the file in the share's
    instance after the switch)."""
    present = set(int(line) for line in share_file.read_text().splitlines() if line.strip())
    return [n for n in result["accepted"] if n not in present]
