"""Operating `codexk8s serve` for real, on PostgreSQL with the local runtime, in one served process:

1. the end-to-end flow (signed webhook → run → succeeded, GitHub sign-in, the API with a bearer
   token) moves the counters on /metrics;
2. SIGTERM while several clients send webhooks: readiness fails first, every request got a 2xx or
   was refused before being read, nothing is half-recorded, the replica's leases are released and
   the process exits within the grace period;
3. everything the server and the CLI logged meanwhile is JSON with correlation ids and contains
   none of the configured secrets.

The tests run in file order and share the server (a production start builds the frontend).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from codexk8s import urls
from codexk8s.adapters.github.webhooks import sign
from codexk8s.web.http.auth import SESSION_COOKIE
from tests.conftest import TEST_SECRET_KEY, _admin_execute, _with_database, free_port
from tests.github_server import CLIENT_SECRET, FakeGitHub, email_entry
from tests.webhook_examples import example, with_labels

GLOBAL_WEBHOOK_SECRET = "global-hook-secret-4f9a1c"
REPO_WEBHOOK_SECRET = "repo-hook-secret-77d2e0"
REPO_TOKEN = "repo-token-9b3e5d7a1c"  # deliberately not token-shaped: masked because stored
GITHUB_TOKEN = "ghp_0123456789abcdefghijABCDEFGHIJ"
OPENAI_API_KEY = "sk-test-0123456789abcdefghij"
GRACE_SECONDS = 20.0
DRAIN_SECONDS = 2.0
START_TIMEOUT = 600.0
REPOSITORY = "Codertocat/Hello-World"


@dataclass
class Ops:
    base_url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    database_url: str
    log_path: Path
    cli_log: Path
    tokens_dir: Path
    hold_file: Path
    github: FakeGitHub
    api_token: str = ""
    seen_secrets: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "codexk8s"), *args],
            env={**self.env, **(extra_env or {})}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        with self.cli_log.open("a") as handle:
            handle.write(done.stderr)
        assert done.returncode == 0, done.stderr
        return done.stdout


def _agent_command(tokens_dir: Path, hold_file: Path) -> str:
    # The run token is written where the test can read it (to scan the logs for it); the run
    # stays alive while the hold file exists, so a slot is leased at shutdown.
    code = (
        "import os, pathlib, time\n"
        f"d = pathlib.Path({str(tokens_dir)!r})\n"
        "(d / os.environ['CODEXK8S_RUN_ID']).write_text(os.environ['CODEXK8S_RUN_TOKEN'])\n"
        "print('working', flush=True)\n"
        f"while os.path.exists({str(hold_file)!r}):\n"
        "    time.sleep(0.2)\n"
        "print('done', flush=True)\n"
    )
    return f"{sys.executable} -c {shlex.quote(code)}"


@pytest.fixture(scope="module")
def ops(
    pg_admin_url: str,
    pg_template: str,
    tmp_path_factory: pytest.TempPathFactory,
    served_github: FakeGitHub,
) -> Iterator[Ops]:
    from tests.github_server import CLIENT_ID

    name = f"ops_{uuid.uuid4().hex[:12]}"
    _admin_execute(pg_admin_url, f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    root = tmp_path_factory.mktemp("ops")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATABASE_URL=_with_database(pg_admin_url, name),
        CODEXK8S_SECRET_KEY=TEST_SECRET_KEY,
        CODEXK8S_DATA_DIR=str(root / "data"),
        CODEXK8S_GITHUB_WEBHOOK_SECRET=GLOBAL_WEBHOOK_SECRET,
        CODEXK8S_GITHUB_CLIENT_ID=CLIENT_ID,
        CODEXK8S_GITHUB_CLIENT_SECRET=CLIENT_SECRET,
        CODEXK8S_GITHUB_OAUTH_URL=served_github.oauth_url,
        CODEXK8S_GITHUB_API_URL=served_github.base_url,
        CODEXK8S_GITHUB_TOKEN=GITHUB_TOKEN,
        CODEXK8S_OPENAI_API_KEY=OPENAI_API_KEY,
        CODEXK8S_PUBLIC_URL=base_url,
        CODEXK8S_LOG_FORMAT="json",
        CODEXK8S_SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
        CODEXK8S_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
        REPO_TOKEN_VALUE=REPO_TOKEN,
        REPO_HOOK_VALUE=REPO_WEBHOOK_SECRET,
    )
    tokens_dir = root / "run-tokens"
    tokens_dir.mkdir()
    log_path = root / "serve.log"
    ops = Ops(
        base_url=base_url, process=None, env=env,  # type: ignore[arg-type]
        database_url=env["CODEXK8S_DATABASE_URL"], log_path=log_path, cli_log=root / "cli.log",
        tokens_dir=tokens_dir, hold_file=root / "hold", github=served_github,
    )  # fmt: skip
    ops.cli("migrate")
    ops.cli("user", "add", "octocat@github.com", "--role", "admin")
    ops.cli("project", "create", "web", "--slots", "2")
    served_github.add_repo(REPOSITORY, token=REPO_TOKEN)  # `repo add` checks the token reaches it
    ops.cli(
        "repo", "add", "web", REPOSITORY,
        "--token-env", "REPO_TOKEN_VALUE", "--webhook-secret-env", "REPO_HOOK_VALUE",
    )  # fmt: skip
    # The captured payloads' sender labels the issues: a member with write access, linked.
    ops.cli("user", "add", "labeler@example.com", "--github-login", "Codertocat")
    ops.cli("project", "member", "add", "web", "labeler@example.com", "--role", "read_write")
    ops.cli(
        "agent", "set", "dev", "--engine", "process",
        "--command", _agent_command(tokens_dir, ops.hold_file),
    )  # fmt: skip
    ops.api_token = ops.cli("token", "create", "octocat@github.com", "--name", "ops").strip()
    with log_path.open("wb") as log:
        ops.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(base_url, ops.process, log_path)
        yield ops
    finally:
        ops.hold_file.unlink(missing_ok=True)  # lets held runs end
        if ops.process.poll() is None:
            os.killpg(ops.process.pid, signal.SIGKILL)
            ops.process.wait()
        _admin_execute(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text()[-4000:])
        try:
            if httpx.get(base_url + urls.READYZ, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready: " + log_path.read_text()[-4000:])


def _labeled(number: int, label: str = "run:dev") -> bytes:
    payload = with_labels(example("issues", "labeled"), "issue", [label], label)
    payload["issue"]["number"] = number
    return json.dumps(payload).encode()


def _post_webhook(client: httpx.Client, base_url: str, body: bytes, delivery: str) -> Any:
    return client.post(
        base_url + urls.WEBHOOK_GITHUB,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(REPO_WEBHOOK_SECRET, body),
        },
    )


def _scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(base_url + urls.METRICS, timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _metric(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def _until(predicate: Any, limit: float, what: str) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_end_to_end_flow_moves_the_metrics(ops: Ops) -> None:
    before = _scrape(ops.base_url)
    auth = {"Authorization": f"Bearer {ops.api_token}"}
    with httpx.Client(timeout=30) as client:
        delivery = str(uuid.uuid4())
        answer = _post_webhook(client, ops.base_url, _labeled(1), delivery)
        assert answer.status_code == 202, answer.text
        (run_id,) = answer.json()["runs"]
        # A duplicate and a forged delivery are counted too.
        again = _post_webhook(client, ops.base_url, _labeled(1), delivery)
        assert again.json()["duplicate"] is True
        forged = client.post(
            ops.base_url + urls.WEBHOOK_GITHUB, content=_labeled(2),
            headers={"Content-Type": "application/json", "X-GitHub-Event": "issues",
                     "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": "sha256=00"},
        )  # fmt: skip
        assert forged.status_code == 401

        def finished() -> dict[str, Any] | None:
            run = client.get(ops.base_url + urls.API_RUN.format(run_id=run_id), headers=auth)
            assert run.status_code == 200, run.text
            body = run.json()["run"]
            return body if body["status"] in ("succeeded", "failed") else None

        run = _until(finished, 120, f"run {run_id} to finish")
        assert run["status"] == "succeeded", run
        logs_url = ops.base_url + urls.API_RUN_LOGS.format(run_id=run_id)
        # The leader's log pump stores the output shortly after (or before) the run settles.
        _until(lambda: "done" in client.get(logs_url, headers=auth).text, 30, "stored log")
        assert "working" in client.get(logs_url, headers=auth).text

    # GitHub sign-in through the served app, by hand like a browser.
    ops.github.login, ops.github.emails = "octocat", [email_entry("octocat@github.com")]
    ops.github.deny = False
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        hop = browser.get(ops.base_url + urls.AUTH_GITHUB_LOGIN)
        hop = browser.get(hop.headers["location"])
        hop = browser.get(hop.headers["location"])
        assert hop.status_code == 302, hop.text
        ops.seen_secrets["session cookie"] = browser.cookies[SESSION_COOKIE]
        assert browser.get(ops.base_url + urls.API_ME).json()["github_login"] == "octocat"

    after = _scrape(ops.base_url)

    def moved(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert moved("codexk8s_webhooks_received_total", event="issues") == 2
    assert moved("codexk8s_webhooks_duplicate_total", event="issues") == 1
    assert moved("codexk8s_webhooks_rejected_total", reason="signature") == 1
    assert moved("codexk8s_webhook_ingest_seconds_count") == 3
    assert moved("codexk8s_dispatch_latency_seconds_count") == 1
    assert moved("codexk8s_run_duration_seconds_count", stage="dev", status="succeeded") == 1
    assert moved("codexk8s_log_lines_stored_total") >= 2  # "working" and "done"
    assert _metric(after, "codexk8s_runs", state="succeeded") == 1
    assert _metric(after, "codexk8s_runs", state="pending") == 0


@dataclass
class _Outcome:
    delivery: str
    issue: int
    status: int | None = None  # None: no HTTP answer
    runs: list[int] = field(default_factory=list)
    error: str | None = None


def _send_until_refused(
    base_url: str, first_issue: int, outcomes: list[_Outcome], stop: threading.Event
) -> None:
    issue = first_issue
    with httpx.Client(timeout=httpx.Timeout(30, connect=2)) as client:
        while not stop.is_set():
            outcome = _Outcome(delivery=str(uuid.uuid4()), issue=issue)
            issue += 1
            try:
                answer = _post_webhook(client, base_url, _labeled(outcome.issue), outcome.delivery)
                outcome.status = answer.status_code
                if answer.status_code < 300:
                    outcome.runs = answer.json()["runs"]
            except httpx.HTTPError as exc:
                outcome.error = type(exc).__name__
            outcomes.append(outcome)
            if outcome.error == "ConnectError":
                return  # refused: the listening socket is closed, the server is going away
            time.sleep(0.01)


def test_sigterm_drains_webhooks_releases_leases_and_exits_in_time(ops: Ops) -> None:
    engine = sa.create_engine(ops.database_url)
    # A run that stays alive holds a slot lease of this replica at shutdown.
    ops.hold_file.touch()
    with httpx.Client(timeout=30) as client:
        held = _post_webhook(client, ops.base_url, _labeled(500), str(uuid.uuid4()))
    assert held.status_code == 202
    (held_run,) = held.json()["runs"]

    def leased() -> Any:
        with engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT lease_owner FROM slots WHERE run_id = :run AND state = 'leased'"),
                {"run": held_run},
            ).scalar()

    owner = _until(leased, 60, "the held run's lease")

    stop = threading.Event()
    outcomes: list[list[_Outcome]] = [[] for _ in range(4)]
    clients = [
        threading.Thread(
            target=_send_until_refused, args=(ops.base_url, 10_000 * (i + 1), outcomes[i], stop)
        )
        for i in range(len(outcomes))
    ]
    for thread in clients:
        thread.start()
    time.sleep(1.5)  # traffic flows before the signal
    signalled = time.monotonic()
    os.kill(ops.process.pid, signal.SIGTERM)  # like the kubelet: the first process only

    # Readiness fails first, while webhooks are still answered.
    ready = _until(
        lambda: httpx.get(ops.base_url + urls.READYZ, timeout=5).status_code == 503,
        DRAIN_SECONDS,
        "readiness to fail",
    )
    assert ready
    answered_while_draining = sum(len(o) for o in outcomes)
    try:
        code = ops.process.wait(timeout=GRACE_SECONDS + 5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    elapsed = time.monotonic() - signalled
    assert code == 0, ops.log_path.read_text()[-3000:]
    assert elapsed < GRACE_SECONDS, elapsed
    assert elapsed >= DRAIN_SECONDS  # it kept serving during the drain

    sent = [outcome for per_client in outcomes for outcome in per_client]
    ok = [o for o in sent if o.status is not None and 200 <= o.status < 300]
    failed = [o for o in sent if o not in ok]
    assert len(ok) > answered_while_draining / 2 > 0
    # Every request either got a 2xx or failed without an answer: refused (the socket was
    # closed), or a keep-alive connection closed as the request went out. Never a timeout or a
    # 5xx of a half-done delivery. None of the failed ones may be stored (checked below).
    allowed = {(None, "ConnectError"), (None, "RemoteProtocolError"), (None, "ReadError"),
               (503, None)}  # fmt: skip
    assert {(o.status, o.error) for o in failed} <= allowed, failed
    # Each client ended on a refusal: the shutdown, not the test, stopped the traffic.
    assert all(per_client and per_client[-1].error == "ConnectError" for per_client in outcomes)

    with engine.connect() as connection:
        recorded = set(
            connection.execute(
                sa.text("SELECT delivery_id FROM webhook_deliveries WHERE delivery_id = ANY(:ids)"),
                {"ids": [o.delivery for o in sent]},
            ).scalars()
        )
        runs = connection.execute(
            sa.text("SELECT id, issue_number FROM agent_runs WHERE issue_number >= 10000")
        ).all()
        slots = connection.execute(
            sa.text("SELECT run_id, state, lease_owner, lease_until <= now() FROM slots")
        ).all()
    # Nothing half-recorded: exactly the 2xx deliveries are stored, each with exactly the runs
    # its answer named, and no run exists that no answered delivery created.
    assert recorded == {o.delivery for o in ok}
    assert sorted(run_id for o in ok for run_id in o.runs) == sorted(row.id for row in runs)
    assert all(len(o.runs) == 1 for o in ok)
    assert {row.issue_number for row in runs} == {o.issue for o in ok}
    # The replica handed its leases back: no slot names it, the held run's lease is due now.
    assert owner is not None
    assert all(row.lease_owner != owner for row in slots)
    held_slot = [row for row in slots if row.run_id == held_run]
    assert held_slot and held_slot[0].state == "leased" and held_slot[0][3] is True
    log = ops.log_path.read_text()
    assert '"engine stopped"' in log and f'"owner": "{owner}"' in log
    engine.dispose()


_SECRETS_BY_NAME = {
    "webhook secret (global)": GLOBAL_WEBHOOK_SECRET,
    "webhook secret (repository)": REPO_WEBHOOK_SECRET,
    "secret key": TEST_SECRET_KEY,
    "OAuth client secret": CLIENT_SECRET,
    "repository token": REPO_TOKEN,
    "GitHub token": GITHUB_TOKEN,
    "OpenAI key": OPENAI_API_KEY,
}


def test_logs_are_json_with_correlation_ids_and_no_secrets(ops: Ops) -> None:
    assert ops.process.poll() is not None, "runs after the shutdown test"
    secrets = dict(_SECRETS_BY_NAME)
    secrets["API token"] = ops.api_token
    secrets.update(ops.seen_secrets)
    run_tokens = {path.name: path.read_text() for path in ops.tokens_dir.iterdir()}
    assert run_tokens, "the runs wrote their tokens"
    secrets.update({f"run token of run {run}": token for run, token in run_tokens.items()})

    server_lines = ops.log_path.read_text().splitlines()
    cli_lines = ops.cli_log.read_text().splitlines()
    for line in server_lines + cli_lines:
        for what, secret in secrets.items():
            assert secret not in line, f"{what} appears in a log line"

    records = []
    for line in server_lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "logger" in record:
            records.append(record)
        else:
            # Only codexk8s' own loggers are held to the structured format here; say which line
            # broke it so a regression is easy to find.
            assert "codexk8s." not in line, f"unstructured codexk8s log line: {line}"
    ours = [r for r in records if str(r["logger"]).startswith("codexk8s")]
    assert ours, "the server logged through structlog"
    for record in ours:
        assert {"timestamp", "level", "logger", "message"} <= set(record), record

    webhook_lines = [r for r in ours if r["logger"] == "codexk8s.web.http.webhooks"]
    assert webhook_lines and all(r.get("delivery_id") for r in webhook_lines)
    launches = [r for r in ours if r["message"] == "run launched"]
    assert launches and all(isinstance(r.get("run_id"), int) for r in launches)
    changes = [r for r in ours if r["logger"] == "codexk8s.services.reconcile"]
    assert any(r.get("run_id") and r.get("status") == "succeeded" for r in changes)
    # A run's lines name that run, not another one handled at the same time.
    for record in launches:
        assert record["correlation_id"]
    assert {"shutdown: readiness fails, draining", "shutdown: done"} <= {r["message"] for r in ours}
