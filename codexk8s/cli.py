"""The `codexk8s` command line: serve, migrate, and administration through the same services."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from sqlmodel import Session

from codexk8s import urls
from codexk8s.config import ConfigError, Settings, get_settings
from codexk8s.crypto import SecretBox, get_secret_box
from codexk8s.db import migrations
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.run_requests import WAITING_SLOT_WORDS
from codexk8s.domain.run_requests import waiting_slot as waiting_slot_of
from codexk8s.errors import CodexK8sError, PreconditionError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = PROJECT_ROOT / ".tools" / "node_modules" / ".bin"

app = typer.Typer(
    name="codexk8s",
    help="Control plane that runs AI coding agents on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Manage users (only added users may sign in).", no_args_is_help=True)
project_app = typer.Typer(help="Manage projects.", no_args_is_help=True)
member_app = typer.Typer(help="Manage project members.", no_args_is_help=True)
repo_app = typer.Typer(help="Manage repositories attached to projects.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens for the staff JSON API.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect agent runs.", no_args_is_help=True)
agent_app = typer.Typer(help="Agent runner and agent settings.", no_args_is_help=True)
webhook_app = typer.Typer(help="Send webhooks to a running codexk8s.", no_args_is_help=True)
prompt_app = typer.Typer(help="Prompt templates per stage (work and revise).", no_args_is_help=True)
secrets_app = typer.Typer(help="Manage the encryption of stored secrets.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(project_app, name="project")
project_app.add_typer(member_app, name="member")
app.add_typer(repo_app, name="repo")
app.add_typer(token_app, name="token")
app.add_typer(runs_app, name="runs")
app.add_typer(agent_app, name="agent")
app.add_typer(webhook_app, name="webhook")
app.add_typer(prompt_app, name="prompt")
app.add_typer(secrets_app, name="secrets")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        fail(str(exc), code=2)


def _ensure_schema(current: Settings) -> None:
    """Embedded mode migrates on demand; PostgreSQL upgrades stay an explicit operator step."""
    head = migrations.head_revision()
    if migrations.current_revision(get_engine()) == head:
        return
    if current.is_embedded:
        migrations.upgrade_to_head(current.effective_database_url)
        return
    raise PreconditionError("the database schema is not at head; run `codexk8s migrate` first")


@contextmanager
def service_call() -> Iterator[None]:
    """Check settings and schema first; a service error prints one line and exits non-zero."""
    current = settings()
    try:
        _ensure_schema(current)
        yield
    except CodexK8sError as exc:
        fail(str(exc))
    except ConfigError as exc:
        fail(str(exc), code=2)


@contextmanager
def transaction() -> Iterator[Session]:
    """One service call = one transaction, rolled back on any error."""
    with service_call(), session_scope() as session:
        yield session


def read_secret_env(var: str | None, what: str) -> str | None:
    """Secrets come from a named environment variable, never from the command line."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        fail(f"environment variable {var} (the {what}) is not set or empty")
    return value


def secret_box() -> SecretBox:
    try:
        return get_secret_box()
    except ConfigError as exc:
        fail(str(exc), code=2)


# --- serve and migrate -------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest revision (safe to run repeatedly)."""
    current = settings()
    try:
        migrations.upgrade_to_head(current.effective_database_url)
    except migrations.MigrationError as exc:
        fail(str(exc))
    typer.echo(f"database at revision {migrations.head_revision()}")
    _seed_prompts()


def _seed_prompts() -> None:
    """Load the shipped prompt templates that are not in the database yet (never overwrites)."""
    from codexk8s.services import prompt_templates

    with transaction() as session:
        inserted = prompt_templates.seed_defaults(session=session)
    if inserted:
        typer.echo(f"loaded {inserted} default prompt templates", err=True)


@app.command()
def seed() -> None:
    """Load the default prompt templates shipped with codexk8s where none exist yet."""
    _seed_prompts()


def _print_signin_link(current: Settings, bind_host: str, bind_port: int) -> None:
    """Embedded mode has no GitHub sign-in: the owner gets a one-time link at every start."""
    if not current.owner_email:
        typer.echo(
            "no sign-in link: set CODEXK8S_OWNER_EMAIL to get a one-time sign-in link at start",
            err=True,
        )
        return
    from codexk8s.services import sessions

    with service_call():
        token = sessions.create_signin_link(get_engine(), email=current.owner_email)
    host = f"[{bind_host}]" if ":" in bind_host else bind_host
    base = current.public_url or f"http://{host}:{bind_port}"
    minutes = int(sessions.SIGNIN_LINK_TTL.total_seconds() // 60)
    typer.echo(
        f"sign in once at {base}{urls.AUTH_LINK.format(token=token)} (valid {minutes} minutes)",
        err=True,
    )


@app.command()
def demo(
    email: Annotated[
        str | None,
        typer.Option(help="Owner to sign in as (default CODEXK8S_OWNER_EMAIL or the first owner)."),
    ] = None,
    pace: Annotated[
        float, typer.Option(help="Speed of the demo agent's output (1: about 15 s, 0: at once).")
    ] = 1.0,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the server (`make run`) to be ready.")
    ] = 90.0,
    force_agent: Annotated[
        bool, typer.Option(help="Point the dev agent at the demo agent even if it was set up.")
    ] = False,
) -> None:
    """Start a live demo run on the embedded default: a demo project, repository and agent (once),
    then a signed `issues.labeled` delivery through the running server's webhook endpoint.
    Prints the sign-in link and the run's URL."""
    import logging

    from codexk8s.services import demo as demo_service
    from codexk8s.services import sessions

    logging.getLogger("alembic").setLevel(logging.WARNING)  # a newcomer reads the run's URL
    current = settings()
    if not current.is_embedded:
        fail("the demo runs on the embedded default (SQLite); unset CODEXK8S_DATABASE_URL", code=2)
    if current.runtime != "local":
        fail("the demo runs on the local runtime; unset CODEXK8S_RUNTIME", code=2)
    with transaction() as session:
        setup = demo_service.prepare(
            session=session, box=get_secret_box(), owner_email=email or current.owner_email,
            pace=pace, force_agent=force_agent,
        )  # fmt: skip
    for item in setup.created:
        typer.echo(f"created {item}")
    base = current.effective_public_url
    if not demo_service.wait_until_ready(base, timeout=wait):
        fail(f"no codexk8s answers at {base}: start it first with `make run` (or `codexk8s serve`)")
    try:
        answer = demo_service.send_delivery(base, setup)
    except httpx_error() as exc:
        fail(f"could not reach {base}: {exc}")
    if answer.status_code >= 400:
        fail(f"the webhook endpoint answered {answer.status_code}: {answer.text}")
    runs = answer.json().get("runs") or []
    run_id = runs[0] if runs else None
    if run_id is None:
        with Session(get_engine()) as session:
            run_id = demo_service.active_demo_run(session=session, issue_number=setup.issue_number)
        if run_id is None:
            fail(f"the delivery started no run: {answer.text}")
        typer.echo(f"a demo run is still under way; showing run {run_id}")
    with service_call():
        token = sessions.create_signin_link(get_engine(), email=setup.owner_email)
    run_url = f"{base}{urls.run_page(run_id)}"
    link = f"{base}{urls.AUTH_LINK.format(token=token)}?next={urls.run_page(run_id)}"
    typer.echo(f"run {run_id} started: {run_url}")
    typer.echo(f"sign in and watch it (link works once, for 15 minutes):\n  {link}")


def httpx_error() -> type[Exception]:
    import httpx

    return httpx.HTTPError


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default CODEXK8S_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default CODEXK8S_PORT).")] = None,
) -> None:
    """Apply migrations, then serve the dashboard and the HTTP API on one port (production mode)."""
    current = settings()
    bind_host = host or current.host
    bind_port = port or current.port
    if not current.is_oauth_configured and not _is_loopback(bind_host):
        fail(
            f"refusing to bind {bind_host} without GitHub sign-in: set CODEXK8S_GITHUB_CLIENT_ID "
            "and CODEXK8S_GITHUB_CLIENT_SECRET, or bind 127.0.0.1",
            code=2,
        )
    try:
        current.secret_key_value()
        migrations.upgrade_to_head(current.effective_database_url)
    except (ConfigError, migrations.MigrationError) as exc:
        fail(str(exc), code=2)
    _seed_prompts()
    if current.owner_email:
        with transaction() as session:
            from codexk8s.services import users

            users.ensure_owner(session=session, email=current.owner_email)
    if not current.is_oauth_configured:
        _print_signin_link(current, bind_host, bind_port)

    env = dict(os.environ)
    # The Reflex worker reads its settings again; make sure it sees exactly these.
    env.update(
        CODEXK8S_HOST=bind_host,
        CODEXK8S_PORT=str(bind_port),
        CODEXK8S_DATA_DIR=str(current.data_dir),
        NPM_CONFIG_REGISTRY=env.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/"),
    )
    # The frontend is built into the data folder, not the checkout: the build holds this
    # server's port, so two servers sharing a folder (`make run` while `make test` runs) served
    # each other's pages. The image points REFLEX_WEB_WORKDIR at its pre-built /app/.web.
    env.setdefault("REFLEX_WEB_WORKDIR", str(current.data_dir / "web"))
    env.setdefault("REFLEX_STATES_WORKDIR", str(current.data_dir / "states"))
    if TOOLS_BIN.is_dir():
        env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    if shutil.which("bun", path=env["PATH"]) is None:
        fail("bun is not installed; run `make setup` (it installs Node 22 and bun into .tools/)")
    argv = [
        sys.executable, "-m", "reflex", "run", "--env", "prod", "--single-port",
        "--frontend-port", str(bind_port), "--backend-port", str(bind_port),
        "--backend-host", bind_host,
    ]  # fmt: skip
    raise typer.Exit(_supervise_server(current, argv, env, f"http://{bind_host}:{bind_port}"))


def _supervise_server(current: Settings, argv: list[str], env: dict[str, str], url: str) -> int:
    """Run the Reflex server as a child that this process shuts down in order on SIGTERM."""
    import logging
    import tempfile

    from codexk8s.logging_config import configure_logging
    from codexk8s.web.server_process import supervise

    configure_logging(current)  # `serve` logs JSON unless CODEXK8S_LOG_FORMAT=console
    logging.getLogger(__name__).info("codexk8s serving on %s", url, extra={"url": url})
    drain_file = Path(tempfile.gettempdir()) / f"codexk8s-draining-{os.getpid()}"
    env.update(
        CODEXK8S_DRAIN_FILE=str(drain_file),
        CODEXK8S_LOG_FORMAT=current.log_format,
        # Reflex's and Granian's own lines as JSON records too.
        REFLEX_LOG_JSON="true" if current.log_format == "json" else "false",
    )
    return supervise(
        argv, env=env, cwd=PROJECT_ROOT, drain_file=drain_file,
        drain_seconds=current.shutdown_drain_seconds,
        grace_seconds=current.shutdown_grace_seconds,
    )  # fmt: skip


# --- users, projects, repositories, tokens --------------------------------------------------------


@user_app.command("add")
def user_add(
    email: str,
    role: Annotated[str, typer.Option(help="owner, admin or user.")] = "user",
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    github_login: Annotated[
        str | None,
        typer.Option(help="Their GitHub login, so their labels and comments start runs."),
    ] = None,
) -> None:
    """Allow EMAIL to sign in with GitHub."""
    from codexk8s.services import users

    with transaction() as session:
        user = users.add_user(
            session=session, email=email, role=role, name=name, github_login=github_login
        )
    linked = f", GitHub {user.github_login}" if user.github_login else ""
    typer.echo(f"added user {user.email} ({user.role}{linked})")


@user_app.command("link")
def user_link(email: str, github_login: str) -> None:
    """Link the user EMAIL to GITHUB_LOGIN: labels, comments and reviews on GitHub start runs
    only for members whose login is linked (their first GitHub sign-in links it too)."""
    from codexk8s.services import users

    with transaction() as session:
        row = users.set_github_login(
            session=session, email=email, github_login=github_login, actor=None, actor_id="cli"
        )
    typer.echo(f"{row.email} is GitHub {row.github_login}")


@user_app.command("unlink")
def user_unlink(email: str) -> None:
    """Remove the GitHub login linked to the user EMAIL."""
    from codexk8s.services import users

    with transaction() as session:
        row = users.set_github_login(
            session=session, email=email, github_login=None, actor=None, actor_id="cli"
        )
    typer.echo(f"{row.email} has no GitHub login linked")


@project_app.command("create")
def project_create(
    key: str,
    name: Annotated[str | None, typer.Option(help="Display name (default: the key).")] = None,
    slots: Annotated[int, typer.Option(help="Runs that may execute at once.")] = 2,
) -> None:
    """Create a project with KEY (lower-case letters, digits, dashes)."""
    from codexk8s.services import projects

    with transaction() as session:
        project = projects.create_project(session=session, key=key, name=name, slots=slots)
    typer.echo(f"created project {project.key} with {slots} slots")


@project_app.command("set")
def project_set(
    key: str,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    slots: Annotated[int | None, typer.Option(help="Runs that may execute at once.")] = None,
    learning_default: Annotated[
        bool | None,
        typer.Option("--learning-default/--no-learning-default", help="Learning mode default."),
    ] = None,
    default_model: Annotated[
        str | None, typer.Option(help="Model of runs that name none ('' clears it).")
    ] = None,
    log_retention_days: Annotated[
        str | None,
        typer.Option(
            help="Days finished runs keep their log lines: a number, 'forever' (or 0), or "
            "'default' (CODEXK8S_LOG_RETENTION_DAYS)."
        ),
    ] = None,
    trigger_bots: Annotated[
        str | None,
        typer.Option(
            help="GitHub logins of bots that may start runs, comma-separated ('' clears); "
            "people need membership with write access and a linked login."
        ),
    ] = None,
    discussion_stages: Annotated[
        str | None,
        typer.Option(
            help="Stages whose run label starts a discussion on the issue instead of work, "
            "comma-separated ('' clears)."
        ),
    ] = None,
    discussion_model: Annotated[
        str | None, typer.Option(help="Model of discussion turns ('' for the default).")
    ] = None,
    discussion_reasoning: Annotated[
        str | None,
        typer.Option(help="Reasoning effort of discussion turns ('' for the default)."),
    ] = None,
    waiting_slot: Annotated[
        str | None,
        typer.Option(
            metavar="[keep|release]",
            help="What a run does with its slot while its agent waits for a person: keep it "
            "(the default), or release it to the next run and take one back when answered.",
        ),
    ] = None,
) -> None:
    """Change project KEY's settings; what is not given stays as it is."""
    from codexk8s.services import projects, run_requests

    def items(text: str | None) -> list[str] | None:
        return None if text is None else [item for item in text.split(",") if item.strip()]

    with transaction() as session:
        projects.update_conversation_settings(
            session=session, actor=None, project_key=key, trigger_bots=items(trigger_bots),
            discussion_stages=items(discussion_stages), discussion_model=discussion_model,
            discussion_reasoning_effort=discussion_reasoning, actor_id="cli",
        )  # fmt: skip
        if waiting_slot is not None:
            run_requests.set_waiting_slot(
                session=session, actor=None, project_key=key, policy=waiting_slot, actor_id="cli"
            )
        project = projects.require_by_key(session=session, key=key)
        current = project.settings or {}
        projects.update_settings(
            session=session, actor=None, project_key=key,
            name=name if name is not None else project.name,
            slots=slots if slots is not None else int(current.get("slots", 1)),
            learning_mode_default=(
                learning_default
                if learning_default is not None
                else bool(current.get("learning_mode_default", False))
            ),
            default_model=(
                default_model if default_model is not None else current.get("default_model")
            ),
            log_retention_days=(
                projects.parse_log_retention(log_retention_days)
                if log_retention_days is not None
                else current.get("log_retention_days")
            ),
            actor_id="cli",
        )  # fmt: skip
        after = projects.require_by_key(session=session, key=key).settings or {}
    retention = after.get("log_retention_days")
    kept = {None: "as the default", 0: "forever"}.get(retention, f"{retention} days")
    model = after.get("default_model") or "the agent's own"
    learning = "on" if after.get("learning_mode_default") else "off"
    bots = ", ".join(after.get("trigger_bots") or []) or "none"
    discussing = ", ".join(after.get("discussion_stages") or []) or "none"
    waits = waiting_slot_of(after).value
    typer.echo(
        f"{key}: {after.get('slots')} slots, learning mode {learning} by default, "
        f"model {model}, logs kept {kept}, bots that may start runs: {bots}, "
        f"discussion stages: {discussing}, a waiting run {WAITING_SLOT_WORDS[waits]}"
    )


@member_app.command("add")
def member_add(
    key: str,
    email: str,
    role: Annotated[str, typer.Option(help="read, read_write or admin.")],
) -> None:
    """Give the user EMAIL a ROLE on project KEY."""
    from codexk8s.services import projects

    with transaction() as session:
        member = projects.add_member(session=session, project_key=key, email=email, role=role)
    typer.echo(f"{email} is now {member.role} on {key}")


_LEARNING_CHOICES = {"on": True, "off": False, "default": None}


@member_app.command("learning")
def member_learning(
    key: str,
    email: str,
    mode: Annotated[str, typer.Argument(metavar="on|off|default")],
) -> None:
    """Turn learning mode on or off for the runs EMAIL starts on project KEY (by labeling an issue
    or through the API), or back to the project's default."""
    from codexk8s.services import projects

    if mode not in _LEARNING_CHOICES:
        fail(f"learning mode must be on, off or default, not {mode!r}")
    with transaction() as session:
        projects.set_member_learning_mode(
            session=session, actor=None, project_key=key, email=email,
            learning_mode=_LEARNING_CHOICES[mode],
        )  # fmt: skip
    typer.echo(f"learning mode for {email} on {key}: {mode}")


@project_app.command("policy")
def project_policy(
    key: str,
    tool: Annotated[str | None, typer.Argument(help="ask, request_approval, ...")] = None,
    policy: Annotated[str | None, typer.Argument(metavar="[none|owner|delegated]")] = None,
) -> None:
    """Show the approval policy of every platform tool on project KEY, or set TOOL's: none (no
    one is asked), owner (a project admin decides) or delegated (any member with write access)."""
    from codexk8s.services import run_requests

    with transaction() as session:
        if tool is None:
            policies = run_requests.tool_policies(session=session, actor=None, project_key=key)
        elif policy is None:
            fail("give the policy too: none, owner or delegated")
        else:
            policies = run_requests.set_tool_policy(
                session=session, actor=None, project_key=key, tool=tool, policy=policy
            )
    for name, value in policies.items():
        typer.echo(f"{name}\t{value}")


@runs_app.command("answer")
def runs_answer(
    request_id: int,
    answer: Annotated[str, typer.Argument(help="The answer; for an approval: approve or deny.")],
) -> None:
    """Answer question or approval request REQUEST_ID of a waiting run, as the operator."""
    from codexk8s.services import run_requests

    with service_call():
        decision = run_requests.answer_request(
            get_engine(), principal=None, request_id=request_id, answer=answer, via="cli",
            by="cli",
        )  # fmt: skip
    typer.echo(f"request {request_id} {decision.status}")


@runs_app.command("waiting")
def runs_waiting() -> None:
    """The questions and approval requests waiting for an answer, oldest first."""
    from codexk8s.services import run_requests

    with service_call():
        found = run_requests.all_pending(get_engine())
    for row in found:
        typer.echo(f"#{row.id}\trun {row.run_id}\t{row.kind}\t{row.text}")


@repo_app.command("add")
def repo_add(
    key: str,
    full_name: Annotated[str, typer.Argument(metavar="OWNER/NAME")],
    token_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the repository token.")
    ] = None,
    webhook_secret_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding this repository's webhook secret."),
    ] = None,
    services_yaml: Annotated[
        str | None, typer.Option(help="Path of services.yaml inside the repository.")
    ] = None,
    register_webhook: Annotated[
        bool,
        typer.Option(
            help="Check the repository and token on GitHub, then create or update its webhook "
            "(PUBLIC_URL/api/v1/webhooks/github, JSON, issue/PR events)."
        ),
    ] = False,
) -> None:
    """Attach the GitHub repository OWNER/NAME to project KEY. GitHub is asked first whether the
    token (or, without --token-env, CODEXK8S_GITHUB_TOKEN) reaches the repository."""
    import asyncio

    from codexk8s.services import repositories

    token = read_secret_env(token_env, "repository token")
    webhook_secret = read_secret_env(webhook_secret_env, "webhook secret")
    box = secret_box()
    webhook_id = None
    if register_webhook:
        webhook_id = _register_webhook(key, full_name, token, webhook_secret)
    with service_call():
        repository = asyncio.run(
            repositories.attach_repository(
                box=box, settings=settings(), actor=None, project_key=key, full_name=full_name,
                token=token, webhook_secret=webhook_secret, services_yaml_path=services_yaml,
                webhook_id=webhook_id,
            )
        )  # fmt: skip
    uses = "its own token" if token else (
        "CODEXK8S_GITHUB_TOKEN" if settings().github_token else "no token"
    )  # fmt: skip
    typer.echo(f"attached {repository.full_name} to {key} (GitHub calls use {uses})")


@repo_app.command("allow-global-token")
def repo_allow_global_token(
    full_name: Annotated[str, typer.Argument(metavar="OWNER/NAME")],
) -> None:
    """Let the attached OWNER/NAME, which has no token of its own, use CODEXK8S_GITHUB_TOKEN
    (for repositories a member attached without a token before only platform admins could).
    GitHub is asked first whether the token reaches it."""
    import asyncio

    from codexk8s.services import repositories

    box = secret_box()
    with service_call():
        row = asyncio.run(
            repositories.allow_global_token(
                box=box, settings=settings(), actor=None, full_name=full_name
            )
        )
    typer.echo(f"{row.full_name} may now use CODEXK8S_GITHUB_TOKEN")


def _register_webhook(
    key: str, full_name: str, token: str | None, webhook_secret: str | None
) -> int:
    """Validate the name first (nothing sent for a name that cannot be added), then GitHub."""
    from codexk8s.services import repositories

    with transaction() as session:
        owner, name = repositories.check_can_add(
            session=session, project_key=key, full_name=full_name
        )
    return _create_or_update_hook(owner, name, token, webhook_secret)


def _create_or_update_hook(
    owner: str, name: str, token: str | None, webhook_secret: str | None
) -> int:
    import asyncio

    from codexk8s.adapters.github.client import GitHubClient
    from codexk8s.services import repositories

    current = settings()
    token = token or (current.github_token.get_secret_value() if current.github_token else None)
    secret = webhook_secret or (
        current.github_webhook_secret.get_secret_value() if current.github_webhook_secret else None
    )
    if not token:
        fail("--register-webhook needs a token: --token-env or CODEXK8S_GITHUB_TOKEN")
    if not secret:
        fail(
            "--register-webhook needs a webhook secret: --webhook-secret-env or "
            "CODEXK8S_GITHUB_WEBHOOK_SECRET"
        )

    async def register() -> tuple[int, bool]:
        async with GitHubClient(token=token, api_url=current.github_api_url) as github:
            return await repositories.register_webhook(
                provider=github, owner=owner, name=name,
                public_url=current.effective_public_url, secret=secret,
            )  # fmt: skip

    with service_call():
        hook_id, created = asyncio.run(register())
    url = current.effective_public_url + urls.WEBHOOK_GITHUB
    typer.echo(f"{'created' if created else 'updated'} webhook {hook_id} on {owner}/{name} → {url}")
    return hook_id


@repo_app.command("register-webhook")
def repo_register_webhook(full_name: Annotated[str, typer.Argument(metavar="OWNER/NAME")]) -> None:
    """Create or update the webhook of an attached repository (its stored token and secret, or
    CODEXK8S_GITHUB_TOKEN / CODEXK8S_GITHUB_WEBHOOK_SECRET)."""
    import asyncio

    from codexk8s.services import repositories

    current, box = settings(), secret_box()
    with service_call():
        hook_id, created = asyncio.run(
            repositories.register_stored_webhook(
                box=box, settings=current, actor=None, project_key=None, full_name=full_name
            )
        )
    owner, name = repositories.parse_full_name(full_name)
    url = current.effective_public_url + urls.WEBHOOK_GITHUB
    typer.echo(f"{'created' if created else 'updated'} webhook {hook_id} on {owner}/{name} → {url}")


@token_app.command("create")
def token_create(
    email: str,
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "",
    expires_days: Annotated[int, typer.Option(help="Days until the token expires.")] = 90,
) -> None:
    """Create an API token for EMAIL and print it once (only its hash is stored)."""
    from codexk8s.services import api_tokens

    with transaction() as session:
        _token, plaintext = api_tokens.create_token(
            session=session, email=email, name=name, expires_in_days=expires_days
        )
    typer.echo(plaintext)


@token_app.command("list")
def token_list() -> None:
    """List every API token, newest first: name, the first characters, owner, when created and
    last used, and whether it still works (never the token itself)."""
    from codexk8s.services import api_tokens

    with transaction() as session:
        rows = api_tokens.list_tokens(session=session, actor=None)
    if not rows:
        typer.echo("no API tokens")
        return
    typer.echo(
        f"{'ID':>5}  {'NAME':<20} {'PREFIX':<10} {'OWNER':<32} {'CREATED':<17} "
        f"{'LAST USED':<17} STATUS"
    )
    for row in rows:
        last_used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        typer.echo(
            f"{row.id:>5}  {row.name or '-':<20} {row.prefix or '-':<10} {row.owner_email:<32} "
            f"{row.created_at:%Y-%m-%d %H:%M} {last_used:<17} {row.status}"
        )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The ID `token list` shows.")],
) -> None:
    """Revoke the API token TOKEN_ID: it stops working at once."""
    from codexk8s.services import api_tokens

    with transaction() as session:
        row = api_tokens.revoke_token(session=session, actor=None, token_id=token_id)
    typer.echo(f"revoked token {row.id} ({row.name or 'unnamed'}) of {row.owner_email}")


@runs_app.command("list")
def runs_list(
    project: Annotated[str | None, typer.Option(help="Project key.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded, ...")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List agent runs, newest first."""
    from codexk8s.services import agent_runs

    with transaction() as session:
        rows = agent_runs.list_runs(
            session=session, project_key=project, status=status, limit=limit
        )
    if as_json:
        for row in rows:
            typer.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "project": row.project_key,
                        "repository": row.repository,
                        "issue": row.issue_number,
                        "pr": row.pr_number,
                        "stage": row.stage,
                        "agent": row.agent_key,
                        "status": row.status,
                        "status_reason": row.status_reason,
                        "created_at": row.created_at.isoformat(),
                    }
                )
            )
        return
    if not rows:
        typer.echo("no runs")
        return
    typer.echo(f"{'ID':>6}  {'PROJECT':<16} {'TARGET':<28} {'STAGE':<12} {'STATUS':<10} CREATED")
    for row in rows:
        target = f"{row.repository or '-'}#{row.pr_number or row.issue_number or '-'}"
        status_text = row.status + (f"/{row.status_reason}" if row.status_reason else "")
        typer.echo(
            f"{row.id:>6}  {row.project_key:<16} {target:<28} {row.stage:<12} {status_text:<10} "
            f"{row.created_at:%Y-%m-%d %H:%M}"
        )


@runs_app.command("cancel")
def runs_cancel(run_id: int) -> None:
    """Cancel RUN_ID: at once if pending, else ask its workload to stop."""
    from codexk8s.services import run_control

    with service_call():
        outcome = run_control.cancel_run(get_engine(), run_id=run_id, actor_id="cli")
    if outcome.is_immediate:
        typer.echo(f"run {run_id} canceled")
    else:
        typer.echo(f"run {run_id} is {outcome.status}; asked it to stop")


@runs_app.command("rerun")
def runs_rerun(run_id: int) -> None:
    """Start a new run with the same target and stage as the finished RUN_ID."""
    from codexk8s.services import run_control

    with service_call():
        new_id = run_control.rerun(get_engine(), run_id=run_id, actor_id="cli")
    typer.echo(f"run {new_id} created (rerun of {run_id})")


@runs_app.command("logs")
def runs_logs(
    run_id: int,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    since: Annotated[int, typer.Option(help="Print lines after this sequence number.")] = 0,
) -> None:
    """Print the stored log of RUN_ID (stdout and stderr, in order)."""
    import asyncio

    from codexk8s.services import run_logs

    def show(line: run_logs.StoredLine) -> None:
        prefix = "" if line.stream == "stdout" else "[stderr] "
        typer.echo(f"{prefix}{line.line}")

    async def tail() -> None:
        async for line in run_logs.follow(get_engine(), run_id=run_id, after=since):
            show(line)

    with service_call():
        log = run_logs.log_summary(get_engine(), run_id=run_id)
        if log.is_removed:
            typer.echo(
                f"run {run_id}: its log ({log.lines:,} lines) was removed by log retention",
                err=True,
            )
            return
        if follow:
            asyncio.run(tail())
            return
        position = since
        while lines := run_logs.read_lines(get_engine(), run_id=run_id, after=position):
            for line in lines:
                show(line)
            position = lines[-1].sequence


@webhook_app.command("replay")
def webhook_replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    event: Annotated[str, typer.Option(help="The X-GitHub-Event to send, e.g. issues.")],
    delivery: Annotated[
        str | None, typer.Option(help="X-GitHub-Delivery id (default: a new UUID).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Webhook URL (default: CODEXK8S_PUBLIC_URL's endpoint).")
    ] = None,
    secret_env: Annotated[
        str | None,
        typer.Option(help="Variable holding the secret (default CODEXK8S_GITHUB_WEBHOOK_SECRET)."),
    ] = None,
) -> None:
    """Sign FILE the way GitHub does and POST it to the webhook endpoint; print the answer."""
    import uuid

    import httpx

    from codexk8s.adapters.github.webhooks import sign

    current = settings()
    if secret_env is not None:
        secret = read_secret_env(secret_env, "webhook secret")
    elif current.github_webhook_secret is not None:
        secret = current.github_webhook_secret.get_secret_value()
    else:
        fail("no secret to sign with: set CODEXK8S_GITHUB_WEBHOOK_SECRET or pass --secret-env VAR")
    body = file.read_bytes()
    target = url or current.effective_public_url + urls.WEBHOOK_GITHUB
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/codexk8s-replay",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret or "", body),
    }
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"could not reach {target}: {exc}")
    typer.echo(f"{response.status_code} {response.text}")
    if response.status_code >= 400:
        raise typer.Exit(1)


@agent_app.command("set")
def agent_set(
    role: str,
    command: Annotated[
        str | None, typer.Option(help="Run this command instead of Codex (engine command).")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Container image (Kubernetes runtime).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Run timeout in minutes.")] = None,
    model: Annotated[str | None, typer.Option(help="Default model for this agent.")] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="codex (the runner drives Codex), command (the runner runs --command in the "
            "cloned workspace instead) or process (--command is the whole workload)."
        ),
    ] = None,
    pod: Annotated[
        str | None,
        typer.Option(
            help="The agent's pod profile as JSON, laid over CODEXK8S_RUN_POD (Kubernetes "
            'runtime): {"resources": {"requests": {"cpu": "1"}, "limits": {"memory": "8Gi"}}, '
            '"nodeSelector": {...}, "tolerations": [...], "imagePullSecrets": ["name"], '
            '"serviceAccountAnnotations": {...}}; {} clears it.'
        ),
    ] = None,
) -> None:
    """Change the settings of agent ROLE (pm, sa, em, dev, reviewer, qa, sre, km)."""
    from codexk8s.services import agents

    profile = None
    if pod is not None:
        try:
            profile = json.loads(pod)
        except json.JSONDecodeError as exc:
            fail(f"--pod is not JSON: {exc.msg}")
    with transaction() as session:
        agent = agents.set_agent(
            session=session, key=role, command=command, image=image, timeout_minutes=timeout,
            model=model, engine=engine, pod=profile, actor_id="cli",
        )  # fmt: skip
        settings = agents.effective_settings(agent.settings, agent.key)
    typer.echo(
        f"{role}: engine={settings.engine} command={' '.join(settings.command)} "
        f"image={settings.image or '-'} timeout={settings.timeout_minutes:g}m "
        f"model={settings.model or '-'}"
        + (f" pod={json.dumps(settings.pod.to_json())}" if settings.pod else "")
    )


@agent_app.command("run")
def agent_run() -> None:
    """The agent runner a run's pod or process executes (reads CODEXK8S_RUN_ID,
    CODEXK8S_CALLBACK_URL and CODEXK8S_RUN_TOKEN, set by dispatch)."""
    from codexk8s.agent.runner import run_from_settings

    raise typer.Exit(run_from_settings(settings()))


# --- prompt templates (the local operator acts as actor None, as for members) ---------------------


@prompt_app.command("list")
def prompt_list() -> None:
    """List every template with its current version."""
    from codexk8s.domain.prompts import KINDS, SCOPES
    from codexk8s.services import prompt_templates

    with transaction() as session:
        for scope in SCOPES:
            for kind in KINDS:
                found = prompt_templates.current(session=session, scope=scope, kind=kind)
                if found is not None:
                    typer.echo(
                        f"{scope:<13} {kind:<7} v{found.version:<4} {found.author:<24} "
                        f"{found.created_at:%Y-%m-%d %H:%M}"
                    )


@prompt_app.command("show")
def prompt_show(
    scope: str,
    kind: Annotated[str, typer.Argument(help="work or revise.")] = "work",
    version: Annotated[int | None, typer.Option(help="An older version.")] = None,
) -> None:
    """Print the current (or an older) version of the template SCOPE/KIND."""
    from codexk8s.services import prompt_templates

    with transaction() as session:
        versions = prompt_templates.history(session=session, scope=scope, kind=kind)
    chosen = next((v for v in versions if version in (None, v.version)), None)
    if chosen is None:
        fail(f"no version {version or ''} of {scope}/{kind}".replace("  ", " "))
    typer.echo(chosen.body, nl=False)


@prompt_app.command("set")
def prompt_set(
    scope: str,
    kind: Annotated[str, typer.Argument(help="work or revise.")],
    file: Annotated[Path, typer.Option("--file", help="Markdown file with the new text.")],
) -> None:
    """Save the text of FILE as the next version of the template SCOPE/KIND."""
    from codexk8s.services import prompt_templates

    try:
        body = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    with transaction() as session:
        saved = prompt_templates.save_version(
            session=session, actor=None, scope=scope, kind=kind, body=body
        )
    typer.echo(f"{scope}/{kind}: saved version {saved.version}")


@prompt_app.command("history")
def prompt_history(
    scope: str, kind: Annotated[str, typer.Argument(help="work or revise.")] = "work"
) -> None:
    """List the versions of the template SCOPE/KIND, newest first (ids are for `restore`)."""
    from codexk8s.services import prompt_templates

    with transaction() as session:
        versions = prompt_templates.history(session=session, scope=scope, kind=kind)
    for v in versions:
        typer.echo(f"v{v.version:<4} id={v.id:<6} {v.author:<24} {v.created_at:%Y-%m-%d %H:%M}")


@prompt_app.command("restore")
def prompt_restore(template_id: int) -> None:
    """Make the text of the version TEMPLATE_ID (see `history`) the newest version again."""
    from codexk8s.services import prompt_templates

    with transaction() as session:
        saved = prompt_templates.restore(session=session, actor=None, template_id=template_id)
    typer.echo(f"{saved.scope}/{saved.kind}: saved version {saved.version}")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with CODEXK8S_SECRET_KEY, reading rows written with the
    keys in CODEXK8S_SECRET_KEY_PREVIOUS (comma-separated). Safe to run again."""
    from codexk8s.services import secret_rotation

    current = settings()
    with service_call():
        result = secret_rotation.rotate_secrets(
            get_engine(),
            current_key=current.secret_key_value(),
            previous_keys=current.previous_secret_keys(),
        )
    detail = ", ".join(f"{name}: {count}" for name, count in sorted(result.rotated.items()))
    typer.echo(
        f"re-encrypted {result.total_rotated} stored secrets"
        + (f" ({detail})" if detail else "")
        + f"; {result.already_current} already under the current key"
    )


def main() -> None:
    from codexk8s.logging_config import configure_cli_logging

    configure_cli_logging()
    app()
