"""The `serve` parent's shutdown order, with small child processes standing in for the server:
drain file first, SIGTERM to the server only after the drain, SIGKILL at the grace deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from codexk8s.urls import READYZ
from codexk8s.web.http.app import build_http_app
from codexk8s.web.server_process import supervise
from tests.conftest import reset_caches

# Records when it got SIGTERM and whether the drain file existed then; exits 0 half a second later.
POLITE = """
import os, signal, sys, time
record, drain = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(record, "w") as f:
        f.write(f"{time.monotonic()} {os.path.exists(drain)}")
    time.sleep(0.5)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(0.05)
"""


def _signal_later(delay: float, sig: signal.Signals = signal.SIGTERM) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


def test_drains_then_stops_the_server_and_exits_cleanly(tmp_path: Path) -> None:
    record, drain = tmp_path / "record", tmp_path / "draining"
    _signal_later(0.5)
    sent = time.monotonic() + 0.5
    code = supervise(
        [sys.executable, "-c", POLITE, str(record), str(drain)], env=dict(os.environ),
        cwd=tmp_path, drain_file=drain, drain_seconds=1.0, grace_seconds=10,
    )  # fmt: skip
    finished = time.monotonic()
    assert code == 0
    got_sigterm_at, drain_existed = record.read_text().split()
    # The server was asked to stop only after the drain, and readiness was failing by then.
    assert float(got_sigterm_at) - sent >= 0.9
    assert drain_existed == "True"
    assert not drain.exists()  # cleaned up after
    assert finished - sent < 5


def test_a_server_that_ignores_sigterm_is_killed_at_the_grace_deadline(tmp_path: Path) -> None:
    drain = tmp_path / "draining"
    _signal_later(0.3)
    sent = time.monotonic() + 0.3
    code = supervise(
        [sys.executable, "-c", STUBBORN], env=dict(os.environ), cwd=tmp_path, drain_file=drain,
        drain_seconds=0.2, grace_seconds=2.5,
    )  # fmt: skip
    elapsed = time.monotonic() - sent
    assert code == -signal.SIGKILL
    assert 1.0 <= elapsed < 2.5 + 1.0


def test_a_second_signal_cuts_the_drain_short(tmp_path: Path) -> None:
    record, drain = tmp_path / "record", tmp_path / "draining"
    _signal_later(0.3)
    _signal_later(0.8, signal.SIGINT)
    sent = time.monotonic() + 0.3
    code = supervise(
        [sys.executable, "-c", POLITE, str(record), str(drain)], env=dict(os.environ),
        cwd=tmp_path, drain_file=drain, drain_seconds=30, grace_seconds=60,
    )  # fmt: skip
    assert code == 0
    assert time.monotonic() - sent < 5


def test_a_server_that_dies_on_its_own_passes_its_exit_code(tmp_path: Path) -> None:
    code = supervise(
        [sys.executable, "-c", "import sys; sys.exit(7)"], env=dict(os.environ), cwd=tmp_path,
        drain_file=tmp_path / "draining", drain_seconds=1, grace_seconds=5,
    )  # fmt: skip
    assert code == 7


def test_readiness_fails_while_the_drain_file_exists(
    app_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drain = tmp_path / "draining"
    monkeypatch.setenv("CODEXK8S_DRAIN_FILE", str(drain))
    reset_caches()
    client = TestClient(build_http_app())
    assert client.get(READYZ).status_code == 200
    drain.touch()
    answer = client.get(READYZ)
    assert answer.status_code == 503 and answer.json()["reason"] == "shutting down"
    assert client.get("/healthz").status_code == 200  # alive, only not ready


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # exited, waiting to be reaped by whoever adopted it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_killing_serve_outright_stops_the_server_too(tmp_path: Path) -> None:
    pid_file, drain = tmp_path / "server.pid", tmp_path / "draining"
    server = (
        f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))"
        "; time.sleep(120)"
    )
    parent_code = (
        "import os, sys; from pathlib import Path; "
        "from codexk8s.web.server_process import supervise; "
        f"supervise([sys.executable, '-c', {server!r}], env=dict(os.environ), cwd=Path('.'), "
        f"drain_file=Path({str(drain)!r}), drain_seconds=1, grace_seconds=5)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the server never started"
        time.sleep(0.05)
    server_pid = int(pid_file.read_text())
    parent.kill()  # SIGKILL: no chance to stop anything in order
    parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(server_pid):
        assert time.monotonic() < deadline, "the server outlived a killed serve"
        time.sleep(0.05)
