"""Process supervisor for the local runtime: runs a run's command and records how it ended.

Started as `python -m codexk8s.adapters.local.supervisor WORKDIR TIMEOUT GRACE -- COMMAND...`
in a new session (its own process group), so it outlives a restart of the control plane. It
writes `exit.json` atomically when the command ends, which is how a restarted control plane
learns the outcome of a process that is no longer its child. Standard library only: it must start
fast and must not depend on the control plane's state.

The command's stdout and stderr come through two pipes and go into one file, `output.log`, in
the order they arrive, one record per line: the stream's letter (`o` or `e`), the time it was
read (Unix seconds), a space, the line's bytes and a newline. So the runtime reads both streams
interleaved as they were written, with the time of each line, by one byte offset that survives a
restart of the control plane.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

EXIT_FILE = "exit.json"
OUTPUT_FILE = "output.log"
# Separate files of supervisors started before output.log (runs adopted across an upgrade).
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
MAX_PARTIAL = 64 * 1024  # a line longer than this is written in pieces
DRAIN_AFTER_EXIT = 1.0  # seconds to keep reading pipes held open by the command's children


def record(stream: str, line: bytes, at: float) -> bytes:
    """One line of OUTPUT_FILE: `o1733212800.123456 text\n` (stream letter, read time)."""
    return b"%s%.6f " % (b"e" if stream == "stderr" else b"o", at) + line + b"\n"


class _Lines:
    """Cuts one pipe's bytes into lines and writes each as a record."""

    def __init__(self, stream: str, out: BinaryIO) -> None:
        self.stream, self.out, self.pending = stream, out, b""

    def feed(self, data: bytes, at: float) -> None:
        self.pending += data
        *whole, self.pending = self.pending.split(b"\n")
        for line in whole:
            self.out.write(record(self.stream, line.rstrip(b"\r"), at))
        while len(self.pending) > MAX_PARTIAL:
            self.out.write(record(self.stream, self.pending[:MAX_PARTIAL], at))
            self.pending = self.pending[MAX_PARTIAL:]
        self.out.flush()

    def close(self, at: float) -> None:
        if self.pending:
            self.out.write(record(self.stream, self.pending.rstrip(b"\r"), at))
            self.pending = b""
            self.out.flush()


def _write_exit(workdir: Path, record: dict[str, object]) -> None:
    temporary = workdir / (EXIT_FILE + ".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, workdir / EXIT_FILE)


def _enforce(
    child: subprocess.Popen[bytes], stopping: dict[str, str | None], now: float, deadline: float,
    killed_at: float | None, grace: float,
) -> float | None:  # fmt: skip
    """Stop the command at its deadline or when asked (SIGTERM), SIGKILL after the grace; the
    time the stop began."""
    if stopping["reason"] is None and now >= deadline:
        stopping["reason"] = "timeout"
        child.terminate()
        killed_at = now
    elif stopping["reason"] is not None and killed_at is None:
        killed_at = now
    if killed_at is not None and now - killed_at >= grace:
        child.kill()
    return killed_at


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 5:
        print("usage: supervisor WORKDIR TIMEOUT GRACE -- COMMAND...", file=sys.stderr)
        return 2
    split = argv.index("--")
    workdir, timeout, grace = Path(argv[0]), float(argv[1]), float(argv[2])
    command = argv[split + 1 :]
    stopping: dict[str, str | None] = {"reason": None}

    def on_term(_signum: int, _frame: object) -> None:
        # The control plane signals the whole process group; the child got SIGTERM as well.
        # Remember why, and keep waiting so the outcome is written.
        stopping["reason"] = "canceled"

    signal.signal(signal.SIGTERM, on_term)
    with (workdir / OUTPUT_FILE).open("ab") as out:
        try:
            child = subprocess.Popen(
                command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            out.write(record("stderr", f"cannot start {command[0]!r}: {exc}".encode(), time.time()))
            out.flush()
            _write_exit(workdir, {"exit_code": 127, "reason": "runtime_error", "message": str(exc),
                                  "finished_at": time.time()})  # fmt: skip
            return 127
        assert child.stdout is not None and child.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(child.stdout, selectors.EVENT_READ, _Lines("stdout", out))
        selector.register(child.stderr, selectors.EVENT_READ, _Lines("stderr", out))
        deadline = time.monotonic() + timeout
        killed_at: float | None = None
        exited_at: float | None = None
        code: int | None = None
        while selector.get_map():
            for key, _ in selector.select(timeout=0.2):
                data = os.read(key.fd, 65536)
                lines: _Lines = key.data
                if data:
                    lines.feed(data, time.time())
                else:
                    lines.close(time.time())
                    selector.unregister(key.fileobj)
            now = time.monotonic()
            if code is None:
                code = child.poll()
                if code is not None:
                    exited_at = now
            if exited_at is not None and now - exited_at >= DRAIN_AFTER_EXIT:
                break  # a background child still holds a pipe: stop waiting for it
            if code is None:
                killed_at = _enforce(child, stopping, now, deadline, killed_at, grace)
        for key in list(selector.get_map().values()):
            key.data.close(time.time())
        selector.close()
        # Both pipes closed but the command still runs (it closed its output): keep the clock.
        while code is None:
            try:
                code = child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                killed_at = _enforce(child, stopping, time.monotonic(), deadline, killed_at, grace)
    reason = stopping["reason"] or ("exit_code" if code != 0 else None)
    _write_exit(workdir, {"exit_code": code, "reason": reason, "finished_at": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
