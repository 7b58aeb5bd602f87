"""`codexk8s demo`: what it sets up (once), the delivery it sends, the scripted agent, and the
whole newcomer path in Chromium — an embedded server, `codexk8s demo`, its sign-in link, and the
run's log streaming in the browser."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, select

from codexk8s.adapters.github.webhooks import sign
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import Agent, Project, Repository
from codexk8s.errors import PreconditionError
from codexk8s.services import agents, demo
from codexk8s.web.http.app import build_http_app
from tests.conftest import reset_caches, wait_for_http
from tests.servers import free_port, stop_process_group
from tests.webhook_examples import example

CLI = str(Path(sys.executable).parent / "codexk8s")


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded default: SQLite in a data folder, at head."""
    data = tmp_path / "data"
    monkeypatch.setenv("CODEXK8S_DATA_DIR", str(data))
    reset_caches()
    data.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(f"sqlite:///{data / 'codexk8s.db'}")
    return data


def test_the_shipped_payload_is_the_captured_one() -> None:
    """What the package ships is GitHub's own shape: the same keys as the octokit example."""
    shipped = demo.captured_payload()
    captured = example("issues", "labeled")
    assert shipped == captured
    body = json.loads(demo.payload_for("acme/widgets"))
    assert body["repository"]["full_name"] == "acme/widgets"
    assert body["repository"]["owner"]["login"] == "acme"
    assert body["label"]["name"] == "run:dev" and body["action"] == "labeled"
    assert "run:dev" in [label["name"] for label in body["issue"]["labels"]]
    # Each labeling is a new body (the same body again would be refused as a replay).
    assert demo.payload_for("acme/widgets") != demo.payload_for("acme/widgets")
    assert json.loads(demo.payload_for("acme/widgets", sender="someone"))["sender"]["login"] == (
        "someone"
    )


def test_prepare_is_idempotent_and_the_delivery_starts_a_run(embedded: Path) -> None:
    engine = get_engine()
    with session_scope(engine) as session:
        first = demo.prepare(session=session, box=get_secret_box(), owner_email=None)
    assert first.created == [
        "owner owner@example.com", "project demo", "repository codexk8s-demo/hello-world",
        "agent dev → the demo agent", "labeler codexk8s-demo-labeler (write access to demo)",
    ]  # fmt: skip
    with session_scope(engine) as session:
        second = demo.prepare(session=session, box=get_secret_box(), owner_email=None)
    assert second.created == [] and second.webhook_secret == first.webhook_secret
    with Session(engine) as session:
        assert len(session.exec(select(Project)).all()) == 1
        assert len(session.exec(select(Repository)).all()) == 1
        dev = agents.get_settings_for(session=session, key="dev")
    assert dev.engine == "process" and "codexk8s.demo.agent" in " ".join(dev.command)

    # The delivery goes through the real webhook route, signed with the repository's secret.
    from starlette.testclient import TestClient

    def deliver(client: TestClient, delivery: str, body: bytes) -> dict:
        answer = client.post(
            "/api/v1/webhooks/github", content=body,
            headers={"Content-Type": "application/json", "X-GitHub-Event": "issues",
                     "X-GitHub-Delivery": delivery,
                     "X-Hub-Signature-256": sign(first.webhook_secret, body)},
        )  # fmt: skip
        assert answer.status_code == 202, answer.text
        return answer.json()

    with TestClient(build_http_app()) as client:
        # The captured sender is nobody of the project: its label starts nothing.
        assert deliver(client, "demo-0", demo.payload_for(first.repository))["runs"] == []
        sent = deliver(
            client, "demo-1", demo.payload_for(first.repository, sender="CODEXK8S-demo-labeler")
        )
    (run_id,) = sent["runs"]
    with Session(engine) as session:
        assert demo.active_demo_run(session=session, issue_number=first.issue_number) == run_id


def test_a_dev_agent_someone_set_up_is_left_alone(embedded: Path) -> None:
    engine = get_engine()
    with session_scope(engine) as session:
        agents.set_agent(session=session, key="dev", command="make agent")
    with session_scope(engine) as session, pytest.raises(PreconditionError, match="leaves it"):
        demo.prepare(session=session, box=get_secret_box(), owner_email="me@example.com")
    with Session(engine) as session:
        dev = session.exec(select(Agent).where(Agent.key == "dev")).one()
        assert dev.settings["command"] == "make agent"
    with session_scope(engine) as session:
        demo.prepare(
            session=session, box=get_secret_box(), owner_email="me@example.com", force_agent=True
        )


def test_the_demo_agent_prints_a_realistic_log_on_both_streams() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "codexk8s.demo.agent", "--pace", "0"],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "$ git clone" in done.stdout and "\x1b[32m" in done.stdout  # commands and colours
    assert "summary:" in done.stdout
    assert "Cloning into 'workspace'..." in done.stderr  # git talks on stderr, as it does


def test_demo_refuses_postgresql(app_db: str) -> None:
    done = subprocess.run(
        [CLI, "demo", "--wait", "0"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CODEXK8S_DATABASE_URL": app_db},
    )  # fmt: skip
    assert done.returncode == 2 and "embedded default" in done.stderr


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`codexk8s serve` on the embedded default, as `make run` starts it (own data folder)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATA_DIR=str(tmp_path / "newcomer"), CODEXK8S_PORT=str(port),
        CODEXK8S_OWNER_EMAIL="newcomer@example.com", CODEXK8S_LOG_FORMAT="console",
    )  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [CLI, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(f"{base}/")
        except TimeoutError:
            raise RuntimeError((tmp_path / "serve.log").read_text()[-4000:]) from None
        yield base, env
    finally:
        stop_process_group(process)
        log.close()


@pytest.mark.browser
def test_a_newcomer_follows_the_demo_run_live(
    embedded_server: tuple[str, dict[str, str]], page: Page, artifacts_dir: Path
) -> None:
    _base, env = embedded_server
    done = subprocess.run(
        [CLI, "demo", "--pace", "0.6"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    run_url = re.search(r"run \d+ started: (\S+)", done.stdout)
    link = re.search(r"(http://\S+/auth/link/\S+)", done.stdout)
    assert run_url and link, done.stdout
    page.goto(link.group(1))
    expect(page).to_have_url(run_url.group(1))  # the link leads straight to the run
    expect(page.get_by_test_id("run-status")).to_contain_text("running", timeout=30_000)
    lines = page.get_by_test_id("log-lines")
    expect(lines).to_contain_text("$ git clone", timeout=30_000)
    # Lines keep arriving while the page is open: streamed, not loaded once.
    expect(lines).not_to_contain_text("summary:")
    page.screenshot(path=str(artifacts_dir / "demo-run-live.png"), full_page=True)
    expect(lines).to_contain_text("summary:", timeout=60_000)
    expect(page.get_by_test_id("run-status")).to_contain_text("succeeded", timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "demo-run-done.png"), full_page=True)

    # Again: the same project, repository and agent, a new run.
    again = subprocess.run(
        [CLI, "demo", "--pace", "0.6"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout
    assert re.search(r"run \d+ started", again.stdout).group(0) != run_url.group(0)  # type: ignore[union-attr]
