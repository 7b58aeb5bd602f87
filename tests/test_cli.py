"""The `codexk8s` command against a real PostgreSQL database, error paths included."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from codexk8s.cli import app
from codexk8s.crypto import SecretBox, hash_token
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import (
    AgentRun,
    ApiToken,
    FlowEvent,
    Project,
    ProjectMember,
    Repository,
    Slot,
    User,
)
from codexk8s.domain.runtime import LogLine
from codexk8s.services import agents
from tests.conftest import TEST_SECRET_KEY, reset_caches
from tests.github_server import FakeGitHub, running_github

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def count(model: type) -> int:
    with Session(get_engine()) as session:
        return session.exec(sa.select(sa.func.count()).select_from(model)).one()[0]


@pytest.fixture(autouse=True)
def _db(app_db: str) -> None:
    """Every test here runs on its own migrated PostgreSQL database."""


def test_every_command_has_help() -> None:
    for command in (
        [], ["serve"], ["migrate"], ["user", "add"], ["project", "create"],
        ["project", "member", "add"], ["repo", "add"], ["repo", "allow-global-token"],
        ["token", "create"], ["token", "list"],
        ["token", "revoke"], ["runs", "list"],
        ["agent", "run"],
    ):  # fmt: skip
        code, out, _ = cli(*command, "--help")
        assert code == 0, command
        assert "Usage:" in out


def test_migrate_twice(app_db: str) -> None:
    code, out, _ = cli("migrate")
    assert code == 0 and "database at revision" in out
    code, out2, _ = cli("migrate")
    assert code == 0 and out2 == out


def test_user_add_and_errors() -> None:
    code, out, _ = cli("user", "add", "Ada@Example.com", "--role", "admin")
    assert code == 0 and "ada@example.com (admin)" in out
    with Session(get_engine()) as session:
        user = session.exec(select(User)).one()
        assert (user.email, user.role, user.disabled) == ("ada@example.com", "admin", False)

    code, _, err = cli("user", "add", "ada@example.com")
    assert code == 1 and err.strip() == "error: user ada@example.com already exists"
    code, _, err = cli("user", "add", "bob@example.com", "--role", "root")
    assert code == 1 and "unknown role 'root'" in err and err.count("\n") == 1
    code, _, err = cli("user", "add", "not-an-email")
    assert code == 1 and "not a valid email address" in err
    assert count(User) == 1
    # One audit event, for the one user that was added.
    with Session(get_engine()) as session:
        events = session.exec(select(FlowEvent.event_type)).all()
    assert events == ["user_added"]


def test_project_create_makes_slots_and_rejects_bad_input() -> None:
    code, out, _ = cli("project", "create", "web-app", "--name", "Web app", "--slots", "3")
    assert code == 0 and "3 slots" in out
    with Session(get_engine()) as session:
        project = session.exec(select(Project)).one()
        assert project.name == "Web app" and project.settings["slots"] == 3
        numbers = sorted(s.number for s in session.exec(select(Slot)).all())
    assert numbers == [1, 2, 3]

    for args, message in [
        (["web-app"], "already exists"),
        (["Bad_Key"], "invalid project key"),
        (["trailing-"], "invalid project key"),
        (["other", "--slots", "0"], "slots must be between 1 and 64"),
        (["other", "--slots", "65"], "slots must be between 1 and 64"),
    ]:
        code, _, err = cli("project", "create", *args)
        assert code != 0, args
        assert message in err, (args, err)
    # Nothing half-written: still one project and its three slots.
    assert (count(Project), count(Slot)) == (1, 3)


def test_member_add_and_errors() -> None:
    cli("user", "add", "ada@example.com")
    cli("project", "create", "web")
    code, out, _ = cli("project", "member", "add", "web", "ada@example.com", "--role", "read_write")
    assert code == 0 and "read_write on web" in out
    for args, message in [
        (["web", "ada@example.com", "--role", "admin"], "already a member"),
        (["nope", "ada@example.com", "--role", "read"], "no project with key 'nope'"),
        (["web", "ghost@example.com", "--role", "read"], "no user with email ghost@example.com"),
        (["web", "ada@example.com", "--role", "owner"], "unknown project role 'owner'"),
    ]:
        code, _, err = cli("project", "member", "add", *args)
        assert code == 1 and message in err, (args, err)
    with Session(get_engine()) as session:
        members = session.exec(select(ProjectMember)).all()
    assert [m.role for m in members] == ["read_write"]


def test_tool_policies_and_answers_from_the_command_line() -> None:
    from codexk8s.db.models import AgentRun
    from codexk8s.domain.run_requests import RequestKind
    from codexk8s.services import run_requests
    from codexk8s.services.run_states import RUNS

    cli("project", "create", "web")
    code, out, _ = cli("project", "policy", "web")
    assert code == 0 and "request_approval\towner" in out and "ask\tdelegated" in out
    code, out, _ = cli("project", "policy", "web", "request_approval", "none")
    assert code == 0 and "request_approval\tnone" in out
    for args, message in [
        (["web", "ask", "none"], "ask cannot have the policy none"),
        (["web", "ask"], "give the policy too"),
        (["web", "rm", "none"], "tools: ask"),
        (["nope"], "no project with key 'nope'"),
    ]:
        code, _, err = cli("project", "policy", *args)
        assert code == 1 and message in err, (args, err)

    with Session(get_engine()) as session:
        project_id = session.exec(sa.text("SELECT id FROM projects")).one()[0]
        run = AgentRun(correlation_id="c-cli", project_id=project_id, agent_key="dev",
                       stage="dev", status="running")  # fmt: skip
        session.add(run)
        session.commit()
        row = session.connection().execute(sa.select(RUNS)).one()
    request_id = run_requests.open_request(
        get_engine(), run=row, kind=RequestKind.QUESTION, text="Port?", wait_minutes=5
    )
    code, out, _ = cli("runs", "waiting")
    assert code == 0 and f"#{request_id}\trun {row.id}\tquestion\tPort?" in out
    code, out, _ = cli("runs", "answer", str(request_id), "8080")
    assert code == 0 and f"request {request_id} answered" in out
    code, _, err = cli("runs", "answer", str(request_id), "9090")
    assert code == 1 and "already answered" in err


def test_member_learning_mode_override() -> None:
    cli("user", "add", "ada@example.com")
    cli("project", "create", "web")
    cli("project", "member", "add", "web", "ada@example.com", "--role", "read")
    code, out, _ = cli("project", "member", "learning", "web", "ada@example.com", "on")
    assert code == 0 and "learning mode for ada@example.com on web: on" in out
    for args, message in [
        (["web", "ada@example.com", "sometimes"], "must be on, off or default"),
        (["web", "ghost@example.com", "off"], "no user with email ghost@example.com"),
    ]:
        code, _, err = cli("project", "member", "learning", *args)
        assert code == 1 and message in err, (args, err)
    with Session(get_engine()) as session:
        assert [m.learning_mode for m in session.exec(select(ProjectMember)).all()] == [True]
    assert cli("project", "member", "learning", "web", "ada@example.com", "default")[0] == 0
    with Session(get_engine()) as session:
        assert [m.learning_mode for m in session.exec(select(ProjectMember)).all()] == [None]


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """The GitHub `repo add` asks whether a token reaches the repository."""
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        reset_caches()
        yield fake


def test_repo_add_stores_secrets_encrypted(
    monkeypatch: pytest.MonkeyPatch, github: FakeGitHub
) -> None:
    github.add_repo("Octo-Org/Octo.Repo", token="ghp_token_value_123", admin=False)
    cli("project", "create", "web")
    monkeypatch.setenv("REPO_TOKEN", "ghp_token_value_123")
    monkeypatch.setenv("HOOK_SECRET", "hook-secret-456")
    code, out, _ = cli(
        "repo", "add", "web", "Octo-Org/Octo.Repo", "--token-env", "REPO_TOKEN",
        "--webhook-secret-env", "HOOK_SECRET", "--services-yaml", "deploy/services.yaml",
    )  # fmt: skip
    assert code == 0 and "attached octo-org/octo.repo to web" in out
    with Session(get_engine()) as session:
        repo = session.exec(select(Repository)).one()
        raw = session.exec(sa.text("SELECT * FROM repositories")).mappings().one()
        audit = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "repository_added")
        ).one()
    row_text = json.dumps({k: str(v) for k, v in raw.items()})
    assert "ghp_token_value_123" not in row_text and "hook-secret-456" not in row_text
    assert "ghp_token_value_123" not in json.dumps(audit.payload)
    box = SecretBox(TEST_SECRET_KEY)
    assert repo.token_ciphertext and box.decrypt(repo.token_ciphertext) == "ghp_token_value_123"
    assert repo.webhook_secret_ciphertext
    assert box.decrypt(repo.webhook_secret_ciphertext) == "hook-secret-456"
    assert repo.services_yaml_path == "deploy/services.yaml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["web", "octo/repo", "--token-env", "UNSET_VAR_X"],
            "UNSET_VAR_X (the repository token) is not set",
        ),
        (["web", "not-a-repo"], "not a GitHub repository name"),
        (["web", "a/b/c"], "not a GitHub repository name"),
        (["missing", "octo/repo"], "no project with key 'missing'"),
        (["web", "octo/repo", "--services-yaml", "/etc/passwd"], "must be relative"),
    ],
)
def test_repo_add_errors(args: list[str], message: str) -> None:
    cli("project", "create", "web")
    code, _, err = cli("repo", "add", *args)
    assert code == 1 and message in err
    assert count(Repository) == 0


def test_repo_add_checks_the_token_reaches_the_repository(
    monkeypatch: pytest.MonkeyPatch, github: FakeGitHub
) -> None:
    github.add_repo("team/app", token="ghp_reaches")
    github.add_repo("victim-org/secret-repo", token="ghp_platform")
    cli("project", "create", "web")
    monkeypatch.setenv("REPO_TOKEN", "ghp_reaches")
    code, _, err = cli("repo", "add", "web", "victim-org/secret-repo", "--token-env", "REPO_TOKEN")
    assert code == 1 and "not found on GitHub, or the token cannot see it (404)" in err
    monkeypatch.setenv("REPO_TOKEN", "ghp_revoked")
    code, _, err = cli("repo", "add", "web", "team/app", "--token-env", "REPO_TOKEN")
    assert code == 1 and "GitHub rejected the token for team/app (401)" in err
    assert count(Repository) == 0

    # The operator, without a token of the repository's own: the global one is checked.
    monkeypatch.setenv("CODEXK8S_GITHUB_TOKEN", "ghp_platform")
    reset_caches()  # each command is a process of its own
    code, _, err = cli("repo", "add", "web", "team/app")
    assert code == 1 and "CODEXK8S_GITHUB_TOKEN cannot see it" in err
    code, out, _ = cli("repo", "add", "web", "victim-org/secret-repo")
    assert code == 0 and "(GitHub calls use CODEXK8S_GITHUB_TOKEN)" in out
    with Session(get_engine()) as session:
        assert session.exec(select(Repository.global_token_allowed)).one() is True


def test_repo_allow_global_token(monkeypatch: pytest.MonkeyPatch, github: FakeGitHub) -> None:
    github.add_repo("team/app", token="ghp_platform")
    cli("project", "create", "web")
    cli("repo", "add", "web", "team/app")  # no token anywhere: nothing to check
    with Session(get_engine()) as session:
        session.exec(sa.update(Repository).values(global_token_allowed=False))  # as a member's
        session.commit()
    code, _, err = cli("repo", "allow-global-token", "team/app")
    assert code == 1 and "CODEXK8S_GITHUB_TOKEN is not set" in err
    monkeypatch.setenv("CODEXK8S_GITHUB_TOKEN", "ghp_platform")
    reset_caches()  # each command is a process of its own
    code, out, _ = cli("repo", "allow-global-token", "team/app")
    assert code == 0 and "team/app may now use CODEXK8S_GITHUB_TOKEN" in out
    with Session(get_engine()) as session:
        assert session.exec(select(Repository.global_token_allowed)).one() is True
    code, _, err = cli("repo", "allow-global-token", "team/other")
    assert code == 1 and "not attached" in err


def test_repo_add_duplicate_is_case_insensitive() -> None:
    cli("project", "create", "web")
    cli("project", "create", "api")
    assert cli("repo", "add", "web", "octo/repo")[0] == 0
    code, _, err = cli("repo", "add", "api", "OCTO/Repo")
    assert code == 1 and "already attached" in err
    assert count(Repository) == 1


def test_token_create_prints_once_and_stores_hash() -> None:
    cli("user", "add", "ada@example.com")
    code, out, _ = cli(
        "token", "create", "ada@example.com", "--name", "laptop", "--expires-days", "7"
    )
    assert code == 0
    token = out.strip()
    assert token.startswith("ck8s_")
    with Session(get_engine()) as session:
        stored = session.exec(select(ApiToken)).one()
        raw = json.dumps(
            {
                k: str(v)
                for k, v in session.exec(sa.text("SELECT * FROM api_tokens"))
                .mappings()
                .one()
                .items()
            }
        )
    assert stored.token_hash == hash_token(token)
    assert token not in raw
    assert stored.expires_at is not None
    assert timedelta(days=6) < stored.expires_at - datetime.now(UTC) <= timedelta(days=7)

    code, _, err = cli("token", "create", "ghost@example.com")
    assert code == 1 and "no user with email" in err
    code, _, err = cli("token", "create", "ada@example.com", "--expires-days", "0")
    assert code == 1 and "expiry must be" in err
    assert count(ApiToken) == 1


def test_token_list_and_revoke() -> None:
    cli("user", "add", "ada@example.com")
    cli("user", "add", "bob@example.com")
    _, ada_token, _ = cli("token", "create", "ada@example.com", "--name", "laptop")
    _, bob_token, _ = cli("token", "create", "bob@example.com", "--name", "ci")
    ada_token, bob_token = ada_token.strip(), bob_token.strip()

    code, out, _ = cli("token", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "PREFIX",
        "OWNER",
        "CREATED",
        "LAST",
        "USED",
        "STATUS",
    ]
    ada_line = next(line for line in lines if "ada@example.com" in line)
    assert "laptop" in ada_line and ada_token[:9] in ada_line and "active" in ada_line
    # The list never shows a token itself.
    assert ada_token not in out and bob_token not in out and ada_token[:12] not in out

    token_id = ada_line.split()[0]
    code, out, _ = cli("token", "revoke", token_id)
    assert code == 0 and f"revoked token {token_id} (laptop) of ada@example.com" in out
    code, out, _ = cli("token", "list")
    assert "revoked" in next(line for line in out.splitlines() if "ada@example.com" in line)
    with Session(get_engine()) as session:
        revoked = session.exec(select(ApiToken).where(ApiToken.id == int(token_id))).one()
        assert revoked.revoked_at is not None
        assert session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "api_token_revoked")
        ).one()
    code, _, err = cli("token", "revoke", "999999")
    assert code == 1 and "no API token with id 999999" in err


def test_runs_list_filters_and_json() -> None:
    cli("project", "create", "web")
    cli("project", "create", "api")
    code, out, _ = cli("runs", "list")
    assert code == 0 and out.strip() == "no runs"
    with Session(get_engine()) as session:
        web = session.exec(select(Project).where(Project.key == "web")).one()
        api = session.exec(select(Project).where(Project.key == "api")).one()
        base = datetime(2026, 1, 1, tzinfo=UTC)
        for index, (project, status) in enumerate(
            [(web, "pending"), (web, "succeeded"), (api, "failed")]
        ):
            session.add(
                AgentRun(
                    correlation_id=f"c{index}", project_id=project.id or 0, issue_number=10 + index,
                    agent_key="dev", stage="dev", status=status,
                    created_at=base + timedelta(minutes=index),
                )
            )  # fmt: skip
        session.commit()

    code, out, _ = cli("runs", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["issue"] for r in rows] == [12, 11, 10]  # newest first
    code, out, _ = cli("runs", "list", "--project", "web", "--json")
    assert {json.loads(line)["project"] for line in out.splitlines()} == {"web"}
    code, out, _ = cli("runs", "list", "--status", "failed", "--json")
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["failed"]
    code, out, _ = cli("runs", "list", "--project", "web")
    assert "STATUS" in out and "pending" in out and "failed" not in out
    code, _, err = cli("runs", "list", "--status", "exploded")
    assert code == 1 and "unknown status 'exploded'" in err
    code, _, err = cli("runs", "list", "--project", "ghost")
    assert code == 1 and "no project with key 'ghost'" in err


def test_postgres_schema_behind_head_asks_for_migrate(
    empty_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import reset_caches

    monkeypatch.setenv("CODEXK8S_DATABASE_URL", empty_pg_url)
    reset_caches()
    code, _, err = cli("user", "add", "ada@example.com")
    assert code == 1 and "run `codexk8s migrate` first" in err


def test_config_error_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import reset_caches

    monkeypatch.setenv("CODEXK8S_RUNTIME", "docker")
    reset_caches()
    code, _, err = cli("runs", "list")
    assert code == 2
    assert err.startswith("error: CODEXK8S_RUNTIME:") and err.count("\n") == 1


def test_serve_refuses_public_bind_without_oauth() -> None:
    code, _, err = cli("serve", "--host", "0.0.0.0")
    assert code == 2 and "refusing to bind 0.0.0.0 without GitHub sign-in" in err


def test_agent_run_names_the_variables_it_needs() -> None:
    code, _, err = cli("agent", "run")
    assert code == 2
    assert "CODEXK8S_RUN_ID, CODEXK8S_CALLBACK_URL, CODEXK8S_RUN_TOKEN must be set" in err


def test_installed_entry_point_runs(app_db: str) -> None:
    import os

    env = {**os.environ, "CODEXK8S_DATABASE_URL": app_db, "CODEXK8S_SECRET_KEY": TEST_SECRET_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "codexk8s", "project", "create", "from-subprocess"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert count(Project) == 1


def test_embedded_default_migrates_on_demand(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from tests.conftest import reset_caches

    monkeypatch.delenv("CODEXK8S_DATABASE_URL")
    monkeypatch.delenv("CODEXK8S_SECRET_KEY")
    reset_caches()
    code, _out, err = cli("project", "create", "local")
    assert code == 0, err
    assert (tmp_path / "data" / "codexk8s.db").exists()


def _make_run(status: str = "pending") -> int:
    with Session(get_engine()) as session:
        project = session.exec(select(Project)).first()
        run = AgentRun(
            correlation_id=f"c-{status}-{datetime.now(UTC).timestamp()}",
            project_id=project.id or 0,
            agent_key="dev", stage="dev", status=status, issue_number=1,
        )  # fmt: skip
        session.add(run)
        session.commit()
        return run.id or 0


def test_runs_cancel_rerun_and_logs() -> None:
    cli("project", "create", "web")
    pending = _make_run("pending")
    code, out, _ = cli("runs", "cancel", str(pending))
    assert code == 0 and out.strip() == f"run {pending} canceled"
    code, _, err = cli("runs", "cancel", str(pending))
    assert code == 1 and "already ended (canceled)" in err
    code, _, err = cli("runs", "cancel", "999999")
    assert code == 1 and "no run 999999" in err

    running = _make_run("running")
    code, out, _ = cli("runs", "cancel", str(running))
    assert code == 0 and "asked it to stop" in out
    with Session(get_engine()) as session:
        stopped = session.get(AgentRun, running)
        assert stopped is not None and stopped.cancel_reason == "canceled_by_user"

    code, _, err = cli("runs", "rerun", str(running))
    assert code == 1 and "still running" in err
    code, out, _ = cli("runs", "rerun", str(pending))
    assert code == 0 and f"(rerun of {pending})" in out

    from codexk8s.domain.runtime import LogLine
    from codexk8s.services import run_logs

    now = datetime.now(UTC)
    run_logs.store_batch(
        get_engine(), run_id=pending, expected_sequence=0,
        lines=[LogLine("stdout", "first", now, "1"), LogLine("stderr", "second", now, "2")],
        final=True,
    )  # fmt: skip
    code, out, _ = cli("runs", "logs", str(pending))
    assert code == 0 and out.splitlines() == ["first", "[stderr] second"]
    code, out, _ = cli("runs", "logs", str(pending), "--since", "1")
    assert out.splitlines() == ["[stderr] second"]
    code, out, _ = cli("runs", "logs", str(pending), "--follow")
    assert code == 0 and out.splitlines() == ["first", "[stderr] second"]
    code, _, err = cli("runs", "logs", "424242")
    assert code == 1 and "no run 424242" in err


def test_project_set_changes_only_what_is_given() -> None:
    assert cli("project", "create", "alpha", "--slots", "3")[0] == 0
    code, out, _ = cli("project", "set", "alpha", "--log-retention-days", "30")
    assert code == 0 and "3 slots" in out and "logs kept 30 days" in out

    def stored() -> dict[str, object]:
        with Session(get_engine()) as session:
            project = session.exec(select(Project).where(Project.key == "alpha")).one()
            return dict(project.settings)

    assert stored() == {"slots": 3, "learning_mode_default": False, "default_model": None,
                        "log_retention_days": 30}  # fmt: skip
    code, out, _ = cli("project", "set", "alpha", "--log-retention-days", "forever",
                       "--learning-default")  # fmt: skip
    assert code == 0 and "logs kept forever" in out and "learning mode on" in out
    assert stored()["log_retention_days"] == 0 and stored()["slots"] == 3
    code, out, _ = cli("project", "set", "alpha", "--log-retention-days", "default")
    assert code == 0 and "logs kept as the default" in out
    assert "log_retention_days" not in stored() and stored()["learning_mode_default"] is True
    for bad in ("-1", "1.5", "soon", "36501"):
        code, _, err = cli("project", "set", "alpha", "--log-retention-days", bad)
        assert code == 1 and "log retention must be" in err
    assert cli("project", "set", "nope", "--slots", "2")[0] == 1
    with Session(get_engine()) as session:
        changes = session.exec(
            select(FlowEvent.payload).where(FlowEvent.event_type == "project_settings_changed")
        ).all()
    assert [c["changes"].get("log_retention_days") for c in changes] == [
        [None, 30],
        [30, 0],
        [0, None],
    ]


def test_runs_logs_says_when_retention_removed_the_log() -> None:
    from codexk8s.services import log_maintenance
    from tests.log_examples import START, make_run, write

    run_id = make_run(get_engine())
    write(get_engine(), run_id, [LogLine("stdout", "kept a while", START, "1")])
    assert cli("runs", "logs", str(run_id))[1] == "kept a while\n"
    log_maintenance.apply_retention(get_engine(), default_days=1, now=START + timedelta(days=2))
    code, out, err = cli("runs", "logs", str(run_id))
    assert code == 0 and out == "" and "removed by log retention" in err


def test_agent_set() -> None:
    code, out, _ = cli(
        "agent", "set", "dev", "--command", "make agent", "--timeout", "30", "--model", "gpt-x"
    )
    assert code == 0
    assert out.strip() == "dev: engine=command command=make agent image=- timeout=30m model=gpt-x"
    code, out, _ = cli("agent", "set", "dev", "--engine", "codex")
    assert "engine=codex command=codexk8s agent run" in out
    # process: the stored command becomes the whole workload, without the agent runner.
    code, out, _ = cli("agent", "set", "dev", "--engine", "process")
    assert code == 0 and "engine=process command=make agent" in out
    for args, message in [
        (["wizard", "--model", "x"], "unknown agent 'wizard'"),
        (["dev"], "nothing to change"),
        (["dev", "--timeout", "0"], "timeout must be"),
        (["dev", "--engine", "magic"], "unknown engine 'magic'"),
        (["pm", "--engine", "process"], "engine 'process' needs a command"),
        (["dev", "--command", "unbalanced 'quote"], "cannot parse the command"),
        (["dev", "--pod", "{oops"], "--pod is not JSON"),
        (["dev", "--pod", '{"nodeSelector": []}'], "nodeSelector must be an object"),
    ]:
        code, _, err = cli("agent", "set", *args)
        assert code == 1 and message in err, (args, err)


def test_agent_pod_profile_reaches_the_runs_spec() -> None:
    profile = '{"nodeSelector": {"pool": "agents"}, "resources": {"limits": {"memory": "8Gi"}}}'
    code, out, _ = cli("agent", "set", "dev", "--pod", profile)
    assert code == 0
    assert (
        'pod={"resources": {"limits": {"memory": "8Gi"}}, "nodeSelector": {"pool": "agents"}}'
        in out
    )
    with session_scope() as session:
        settings = agents.get_settings_for(session=session, key="dev")
    assert settings.pod is not None and dict(settings.pod.node_selector) == {"pool": "agents"}
    code, out, _ = cli("agent", "set", "dev", "--pod", "{}")
    assert code == 0 and "pod=" not in out
    with session_scope() as session:
        assert agents.get_settings_for(session=session, key="dev").pod is None


def test_users_link_their_github_login_and_projects_name_who_else_may_trigger() -> None:
    code, out, _ = cli("user", "add", "dev@example.com", "--github-login", "Octo-Dev")
    assert code == 0 and "GitHub Octo-Dev" in out
    code, _, err = cli("user", "add", "other@example.com", "--github-login", "octo-dev")
    assert code == 1 and "already linked to dev@example.com" in err
    assert cli("user", "add", "other@example.com")[0] == 0
    code, _, err = cli("user", "link", "other@example.com", "not a login!")
    assert code == 1 and "not a GitHub login" in err
    code, out, _ = cli("user", "link", "other@example.com", "@octo-other")
    assert code == 0 and out == "other@example.com is GitHub octo-other\n"
    assert cli("user", "unlink", "other@example.com")[1] == (
        "other@example.com has no GitHub login linked\n"
    )

    assert cli("project", "create", "alpha")[0] == 0
    code, out, _ = cli(
        "project", "set", "alpha", "--trigger-bots", "renovate[bot], Dependabot[bot]",
        "--discussion-stages", "intake,PRD", "--discussion-model", "gpt-5-mini",
        "--discussion-reasoning", "minimal",
    )  # fmt: skip
    assert code == 0, out
    assert "bots that may start runs: renovate[bot], Dependabot[bot]" in out
    assert "discussion stages: intake, prd" in out
    with Session(get_engine()) as session:
        settings = session.exec(select(Project).where(Project.key == "alpha")).one().settings
    assert settings["discussion_model"] == "gpt-5-mini"
    assert settings["discussion_reasoning_effort"] == "minimal"
    code, out, _ = cli("project", "set", "alpha", "--trigger-bots", "")
    assert code == 0 and "bots that may start runs: none" in out
    assert "a waiting run keeps its slot" in out
    code, out, _ = cli("project", "set", "alpha", "--waiting-slot", "release")
    assert code == 0 and "a waiting run gives its slot to the next run" in out
    for option, value, message in (
        ("--discussion-stages", "review", "unknown stage"),
        ("--discussion-reasoning", "extreme", "reasoning effort must be"),
        ("--trigger-bots", "bad bot", "not a GitHub login"),
        ("--waiting-slot", "sometimes", "one of keep, release"),
    ):
        code, _, err = cli("project", "set", "alpha", option, value)
        assert code == 1 and message in err
