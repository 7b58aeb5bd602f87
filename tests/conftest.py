"""Shared fixtures: a real PostgreSQL (throwaway unless CODEXK8S_TEST_DATABASE_URL is set),
one freshly migrated database per test cloned from a template, and settings wired to it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db import engine as db_engine
from codexk8s.db.migrations import upgrade_to_head
from tests.servers import (
    ServerError,
    free_port,
    postgres_server,
    redis_server,
    stop_process_group,
    wait_for_http,
)

if TYPE_CHECKING:
    # tests.github_server imports this module; import it lazily at run time.
    from tests.github_server import FakeGitHub

T = TypeVar("T")
TEMPLATE_DB = "codexk8s_test_template"
TEST_SECRET_KEY = "test-secret-key-0123456789"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last. Playwright's sync API keeps an event loop running in the main
    thread for as long as its session-scoped browser lives, and asyncio tests cannot start
    theirs under it; pytest groups the tests of a session-scoped parameter (the browser's name)
    together wherever the first one is collected, so without this one browser test in an early
    folder would pull them all in front of the asyncio tests."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server URL (database `postgres`) on which tests may create databases."""
    configured = os.environ.get("CODEXK8S_TEST_DATABASE_URL")
    if configured:
        yield configured.replace("postgresql://", "postgresql+psycopg://", 1)
        return
    try:
        with postgres_server() as url:
            yield url
    except ServerError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A Redis server URL (no database number) that tests may use: a private `redis-server` on a
    free loopback port, started like the throwaway PostgreSQL, unless CODEXK8S_TEST_REDIS_URL
    points at one."""
    configured = os.environ.get("CODEXK8S_TEST_REDIS_URL")
    if configured:
        yield configured.rstrip("/")
        return
    try:
        with redis_server() as url:
            yield url
    except ServerError as exc:
        pytest.exit(str(exc), returncode=3)


def _admin_execute(admin_url: str, *statements: str) -> None:
    url = make_url(admin_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database or "postgres", autocommit=True,
    ) as connection:  # fmt: skip
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


def _with_database(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str:
    """A database migrated to head once per session; each test clones it."""
    _admin_execute(
        pg_admin_url, f"DROP DATABASE IF EXISTS {TEMPLATE_DB}", f"CREATE DATABASE {TEMPLATE_DB}"
    )
    url = _with_database(pg_admin_url, TEMPLATE_DB)
    upgrade_to_head(url)
    sa.create_engine(url).dispose()
    return TEMPLATE_DB


@pytest.fixture
def empty_pg_url(pg_admin_url: str) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (no migrations)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin_execute(pg_admin_url, f"CREATE DATABASE {name}")
    yield _with_database(pg_admin_url, name)
    _admin_execute(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh database at the head migration, cloned from the template (fast)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin_execute(pg_admin_url, f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield _with_database(pg_admin_url, name)
    _admin_execute(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def reset_caches() -> None:
    get_settings.cache_clear()
    get_secret_box.cache_clear()
    if db_engine.get_engine.cache_info().currsize:
        db_engine.get_engine().dispose()
    db_engine.get_engine.cache_clear()


# The sender of every captured payload in @octokit/webhooks-examples.
EXAMPLE_SENDER = "Codertocat"


def link_member(
    project_key: str, login: str = EXAMPLE_SENDER, *, role: str = "read_write", engine: Any = None
) -> str:
    """Make the GitHub user LOGIN a member of PROJECT_KEY with ROLE (a codexk8s user linked to
    that login, created when missing), so that their labels, comments and reviews start runs.
    Returns the user's email."""
    from codexk8s.db.engine import session_scope
    from codexk8s.services import projects, users

    email = f"{login.lower()}@users.example.test"
    with session_scope(engine) as session:
        if users.get_by_email(session=session, email=email) is None:
            users.add_user(session=session, email=email, github_login=login)
        projects.add_member(session=session, project_key=project_key, email=email, role=role)
    return email


def deliver_signed(
    event: str, payload: dict[str, Any], *, secret: str, global_secret: str | None = None
) -> Any:
    """PAYLOAD as GitHub sends it (signed with SECRET, a fresh delivery id) through ingest, the way
    the webhook route hands it over; the IngestOutcome."""
    from codexk8s.adapters.github.webhooks import sign
    from codexk8s.db.engine import get_engine
    from codexk8s.services.webhook_ingest import WebhookRequest, ingest_github_delivery

    body = json.dumps(payload).encode()
    return ingest_github_delivery(
        engine=get_engine(), box=get_secret_box(), global_secret=global_secret,
        request=WebhookRequest(
            delivery_id=str(uuid.uuid4()), event=event, signature=sign(secret, body),
            content_type="application/json", body=body,
        ),
    )  # fmt: skip


def trigger(
    number: int, *, secret: str, labels: Sequence[str] = ("run:dev",), added: str = "run:dev"
) -> int:
    """The run a signed `issues.labeled` delivery started: ADDED labeled on issue NUMBER, which
    then carries LABELS."""
    from tests.webhook_examples import example, with_labels

    payload = with_labels(example("issues", "labeled"), "issue", list(labels), added)
    payload["issue"]["number"] = number
    (run_id,) = deliver_signed("issues", payload, secret=secret).runs
    return run_id


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's CODEXK8S_* variables or writes into the source tree."""
    for name in list(os.environ):
        if name.startswith("CODEXK8S_") and name != "CODEXK8S_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("CODEXK8S_DATA_DIR", str(tmp_path / "data"))
    reset_caches()
    yield
    reset_caches()


@pytest.fixture
def app_db(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the product's settings at a fresh migrated PostgreSQL database."""
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", pg_url)
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", TEST_SECRET_KEY)
    reset_caches()
    return pg_url


@pytest.fixture(params=["postgresql", "sqlite"])
def log_db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> sa.Engine:
    """The product's engine on a fresh PostgreSQL or SQLite database at head, for code whose
    paths differ between the two (run logs: row locks, search)."""
    if request.param == "postgresql":
        request.getfixturevalue("app_db")
    else:
        url = f"sqlite:///{tmp_path / 'logs.db'}"
        monkeypatch.setenv("CODEXK8S_DATABASE_URL", url)
        reset_caches()
        upgrade_to_head(url)
    return db_engine.get_engine()


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, object]:
    """pytest-playwright launches Debian's Chromium (Playwright cannot download browsers here)."""
    return {
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    }  # fmt: skip


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class ServedApp:
    """`codexk8s serve` running as a child process, the way `make run` starts it, with GitHub
    sign-in configured against `github`, a loopback fake GitHub (tests/github_server.py)."""

    webhook_secret = "served-webhook-secret"

    def __init__(
        self,
        base_url: str,
        process: subprocess.Popen[bytes],
        env: dict[str, str],
        github: FakeGitHub,
    ) -> None:
        self.base_url = base_url
        self.process = process
        self.env = env
        self.database_url = env["CODEXK8S_DATABASE_URL"]
        self.github = github

    def next_github_user(self, login: str, emails: list[dict[str, Any]]) -> None:
        """Who the fake GitHub approves at the next authorize: LOGIN with EMAILS
        (`tests.github_server.email_entry` items)."""
        self.github.login = login
        self.github.emails = emails
        self.github.deny = False


@pytest.fixture(scope="session")
def served_github() -> Iterator[FakeGitHub]:
    """The fake GitHub the served app signs people in with, for the whole session."""
    from tests.github_server import running_github

    with running_github() as fake:
        yield fake


@pytest.fixture(scope="session")
def served_app(
    pg_admin_url: str,
    pg_template: str,
    tmp_path_factory: pytest.TempPathFactory,
    served_github: FakeGitHub,
) -> Iterator[ServedApp]:
    """One production-mode server for the browser tests, on its own PostgreSQL database, with
    GitHub OAuth pointed at `served_github`."""
    from tests.github_server import CLIENT_ID, CLIENT_SECRET

    name = f"served_{uuid.uuid4().hex[:12]}"
    _admin_execute(pg_admin_url, f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("served-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATABASE_URL=_with_database(pg_admin_url, name),
        CODEXK8S_SECRET_KEY=TEST_SECRET_KEY,
        CODEXK8S_DATA_DIR=str(data_dir),
        CODEXK8S_GITHUB_WEBHOOK_SECRET=ServedApp.webhook_secret,
        CODEXK8S_GITHUB_CLIENT_ID=CLIENT_ID,
        CODEXK8S_GITHUB_CLIENT_SECRET=CLIENT_SECRET,
        CODEXK8S_GITHUB_OAUTH_URL=served_github.oauth_url,
        CODEXK8S_GITHUB_API_URL=served_github.base_url,
        CODEXK8S_PUBLIC_URL=base_url,
    )
    log = (data_dir / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(os.sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"{base_url}/healthz")
        wait_for_http(f"{base_url}/")
    except TimeoutError:
        process.kill()
        raise RuntimeError((data_dir / "serve.log").read_text()[-4000:]) from None
    try:
        yield ServedApp(base_url, process, env, served_github)
    finally:
        stop_process_group(process)
        log.close()
        _admin_execute(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh loop in another thread.

    Playwright's sync API keeps an event loop marked as running in the main thread for the whole
    session, so `asyncio.run` there would refuse.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@contextlib.contextmanager
def serve_in_thread(asgi_app: Any, *, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on loopback in a thread; yield its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError(f"test server on port {port} did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
