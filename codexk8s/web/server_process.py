"""`codexk8s serve` keeps the Reflex server as a child process and owns its shutdown.

Kubernetes sends SIGTERM to the container's first process only, and Granian (the server under
`reflex run --env prod`) closes its listening socket the moment it gets one. So this parent takes
the signal instead and orders the shutdown:

1. create the drain file: /readyz answers 503 from now on (the pod leaves the Service endpoints),
   while every request, webhooks included, is still served for `shutdown_drain_seconds`, the time
   endpoint changes take to reach every proxy;
2. SIGTERM the server: it stops accepting connections, finishes the requests it has read, and
   its lifespan shutdown stops the control loop (waits for an in-flight dispatch, releases this
   replica's slot leases and the leader lock);
3. SIGKILL whatever is left of the server's process group once `shutdown_grace_seconds` have
   passed since the signal, so the pod is gone before Kubernetes' own deadline.

A second SIGTERM or SIGINT skips the rest of the drain wait.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
# Leave time between the server's deadline and the final SIGKILL of its group.
KILL_MARGIN_SECONDS = 1.0


def supervise(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    drain_file: Path,
    drain_seconds: float,
    grace_seconds: float,
) -> int:
    """Run ARGV until it exits or this process is asked to stop; return the exit code."""
    drain_file.unlink(missing_ok=True)
    signals: list[int] = []
    woken = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)
        woken.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Its own session: a terminal's Ctrl-C or a group kill reaches this parent, which then
        # stops the server in order, instead of reaching every worker at once.
        child = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, start_new_session=True,
            preexec_fn=_stop_with_parent,
        )  # fmt: skip
        while not signals:
            if child.poll() is not None:
                log.error("server exited on its own", extra={"exit_code": child.returncode})
                return child.returncode
            woken.wait(POLL_SECONDS)
        return _shut_down(child, signals, woken, drain_file, drain_seconds, grace_seconds)
    finally:
        drain_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _shut_down(
    child: subprocess.Popen[bytes],
    signals: list[int],
    woken: threading.Event,
    drain_file: Path,
    drain_seconds: float,
    grace_seconds: float,
) -> int:
    started = time.monotonic()
    deadline = started + grace_seconds
    drain_file.touch()
    log.info(
        "shutdown: readiness fails, draining",
        extra={"signal": signal.Signals(signals[0]).name, "drain_seconds": drain_seconds},
    )
    woken.clear()
    drain_until = min(started + drain_seconds, deadline - KILL_MARGIN_SECONDS)
    while len(signals) < 2 and child.poll() is None and time.monotonic() < drain_until:
        woken.wait(min(POLL_SECONDS, max(0.0, drain_until - time.monotonic())))
    if child.poll() is None:
        log.info("shutdown: stopping the server")
        _signal_quietly(child.pid, signal.SIGTERM, group=False)
    try:
        code = child.wait(timeout=max(0.0, deadline - KILL_MARGIN_SECONDS - time.monotonic()))
    except subprocess.TimeoutExpired:
        log.error("shutdown: the server did not stop in time; killing it")
        _signal_quietly(child.pid, signal.SIGKILL, group=True)
        code = child.wait()
    # Workers that outlived the server's main process would keep the port and the leases.
    _signal_quietly(child.pid, signal.SIGKILL, group=True)
    log.info(
        "shutdown: done",
        extra={"exit_code": code, "seconds": round(time.monotonic() - started, 3)},
    )
    # A server that stopped because it was asked to is a clean exit.
    return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code


_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child: get SIGTERM when this parent dies, even by SIGKILL, so a killed `serve`
    leaves no server behind holding the port and the database (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _signal_quietly(pid: int, sig: signal.Signals, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
