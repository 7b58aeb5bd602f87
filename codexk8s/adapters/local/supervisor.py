"""Process supervisor for the local runtime: runs a run's command and records how it ended.

Started as `python -m codexk8s.adapters.local.supervisor WORKDIR TIMEOUT GRACE -- COMMAND...`
in a new session (its own process group), so it outlives a restart of the control plane. It
writes `exit.json` atomically when the command ends, which is how a restarted control plane
learns the outcome of a process that is no longer its child. Standard library only: it must start
fast and must not depend on the control plane's state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_FILE = "exit.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"


def _write_exit(workdir: Path, record: dict[str, object]) -> None:
    temporary = workdir / (EXIT_FILE + ".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, workdir / EXIT_FILE)


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 5:
        print("usage: supervisor WORKDIR TIMEOUT GRACE -- COMMAND...", file=sys.stderr)
        return 2
    split = argv.index("--")
    workdir, timeout, grace = Path(argv[0]), float(argv[1]), float(argv[2])
    command = argv[split + 1 :]
    stopping = {"reason": None}

    def on_term(_signum: int, _frame: object) -> None:
        # The control plane signals the whole process group; the child got SIGTERM as well.
        # Remember why, and keep waiting so the outcome is written.
        stopping["reason"] = "canceled"

    signal.signal(signal.SIGTERM, on_term)
    with (workdir / STDOUT_FILE).open("ab") as out, (workdir / STDERR_FILE).open("ab") as err:
        try:
            child = subprocess.Popen(
                command, cwd=workdir, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            err.write(f"cannot start {command[0]!r}: {exc}\n".encode())
            err.flush()
            _write_exit(workdir, {"exit_code": 127, "reason": "runtime_error", "message": str(exc),
                                  "finished_at": time.time()})  # fmt: skip
            return 127
        deadline = time.monotonic() + timeout
        killed_at: float | None = None
        while True:
            try:
                code = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stopping["reason"] is None and now >= deadline:
                stopping["reason"] = "timeout"
                child.terminate()
                killed_at = now
            elif stopping["reason"] is not None and killed_at is None:
                killed_at = now
            if killed_at is not None and now - killed_at >= grace:
                child.kill()
    reason = stopping["reason"] or ("exit_code" if code != 0 else None)
    _write_exit(workdir, {"exit_code": code, "reason": reason, "finished_at": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
