"""Throwaway PostgreSQL and Redis servers from Debian's packages, on free loopback ports.

The test suite (tests/conftest.py) and the benchmarks (bench/) start their own: nothing on this
kind of machine runs a database before they do, and nothing they start outlives them. Each
context manager yields a URL and stops its server (by PID) on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class ServerError(RuntimeError):
    """A server could not be started; the message says how to get what is missing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise ServerError("PostgreSQL server binaries not found; run `make setup`")
    return candidates[-1].parent


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_server(*, max_connections: int = 300, durable: bool = False) -> Iterator[str]:
    """A fresh cluster; yields its `postgres` database's URL. Tests run it with fsync off
    (throwaway data); benchmarks ask for a `durable` one, configured as PostgreSQL ships."""
    bindir = _pg_bindir()
    workdir = Path(tempfile.mkdtemp(prefix="codexk8s-pg-"))
    datadir = workdir / "data"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
        workdir.chmod(0o700)
    try:
        subprocess.run(
            _as_postgres_user(
                [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
                 "--no-sync", "-E", "UTF8"]
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {port} -k {workdir} -c max_connections={max_connections}"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        subprocess.run(
            _as_postgres_user(
                [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options, "-l",
                 str(workdir / "log"), "-w", "-t", "60", "start"]
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user(
                [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]
            ),
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private `redis-server` (no persistence); yields its URL without a database number."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError("redis-server not found; run `make setup` (Debian package redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="codexk8s-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes",
         "--logfile", str(workdir / "log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "log").read_text() if (workdir / "log").exists() else ""
                raise ServerError(f"redis-server did not start on port {port}: {log[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def bench_postgres(admin_url: str | None) -> Iterator[str]:
    """What a benchmark measures on: ADMIN_URL when given, else a private durable server."""
    if admin_url:
        yield admin_url
        return
    with postgres_server(durable=True) as url:
        yield url


def wait_for_http(url: str, timeout: float = 240.0, interval: float = 0.5) -> None:
    """Until URL answers 200 (a server the tests or a bench started); TimeoutError after
    TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def fresh_database(admin_url: str, name: str) -> str:
    """An empty database NAME on the server of ADMIN_URL (dropped first if it exists, sessions
    and all): its URL, with the password."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database or "postgres", autocommit=True,
    ) as connection:  # fmt: skip
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]
        connection.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    return url.set(database=name).render_as_string(hide_password=False)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM to the process group PROCESS leads (a `codexk8s serve` and its Reflex workers),
    SIGKILL when it has not ended within TIMEOUT seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
