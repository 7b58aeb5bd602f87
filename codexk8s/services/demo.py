"""`codexk8s demo`: a newcomer's first live run, on the embedded default, in one command.

It creates (once) a demo project, a repository attached to it with a webhook secret of its own
and points the `dev` agent at a scripted local process (`codexk8s.demo.agent`) that prints what
an agent run prints and reports a result. Then it sends a signed `issues.labeled` delivery with a
`run:dev` label, shaped as GitHub sends it (a captured payload shipped in `codexk8s/demo/`),
through the running server's real webhook endpoint, and answers the run it started. Running it
again reuses what exists (no duplicates) and starts a new run.
"""

from __future__ import annotations

import json
import secrets
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import httpx
from sqlmodel import Session, col, select

from codexk8s import urls
from codexk8s.adapters.github.webhooks import sign
from codexk8s.crypto import SecretBox
from codexk8s.db.models import Agent, AgentRun, User
from codexk8s.domain.access import PlatformRole, ProjectRole
from codexk8s.domain.runs import ACTIVE_STATUSES
from codexk8s.errors import PreconditionError
from codexk8s.services import agents, projects, repositories, users

PROJECT_KEY = "demo"
PROJECT_NAME = "Demo"
REPOSITORY = "codexk8s-demo/hello-world"
AGENT_KEY = "dev"
LABEL = "run:dev"
DEFAULT_OWNER = "owner@example.com"
DEMO_MODULE = "codexk8s.demo.agent"
ACTOR = "codexk8s demo"
# Labels start runs only for members with write access (matched by linked GitHub login), so the
# demo's deliveries come from a member of the demo project alone: a user with no way to sign in
# (no one-time link is ever issued for it, and its login is not a real account of anyone's).
LABELER_EMAIL = "labeler@demo.codexk8s.invalid"
LABELER_LOGIN = "codexk8s-demo-labeler"


@dataclass(frozen=True, slots=True)
class DemoSetup:
    project_key: str
    repository: str
    agent_key: str
    owner_email: str
    webhook_secret: str
    issue_number: int
    created: list[str] = field(default_factory=list)  # what this call created or changed


@dataclass(frozen=True, slots=True)
class DemoDelivery:
    delivery_id: str
    status_code: int
    run_id: int | None
    is_new_run: bool


def agent_command(*, pace: float = 1.0) -> str:
    """The demo agent's command line: this interpreter running the scripted agent."""
    return shlex.join([sys.executable, "-m", DEMO_MODULE, "--pace", f"{pace:g}"])


def _is_demo_command(command: str) -> bool:
    return DEMO_MODULE in command


def captured_payload() -> dict[str, Any]:
    """The captured `issues.labeled` delivery shipped with the package (a fresh copy)."""
    text = resources.files("codexk8s.demo").joinpath("issues.labeled.json").read_text()
    return json.loads(text)


def payload_for(
    repository: str, *, label: str = LABEL, sender: str | None = None, now: datetime | None = None
) -> bytes:
    """The captured delivery retargeted at REPOSITORY with LABEL added (by SENDER, if given), as
    GitHub would send it now: the item's `updated_at` moves with every labeling, so no two bodies
    are the same."""
    payload = captured_payload()
    if sender is not None:
        payload["sender"]["login"] = sender
    owner, name = repository.split("/", 1)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    repo = payload["repository"]
    repo.update(name=name, full_name=repository, html_url=f"https://github.com/{repository}")
    repo["owner"]["login"] = owner
    template = dict(payload["label"])
    added = {**template, "id": template["id"] + 1, "name": label, "color": "0e8a16",
             "default": False, "description": "codexk8s: start the dev stage"}  # fmt: skip
    payload["label"] = added
    payload["issue"]["labels"] = [*payload["issue"].get("labels", []), added]
    payload["issue"]["updated_at"] = stamp
    payload["issue"]["html_url"] = (
        f"https://github.com/{repository}/issues/{payload['issue']['number']}"
    )
    return json.dumps(payload).encode()


def _owner(session: Session, email: str | None) -> tuple[User, bool]:
    if email:
        found = users.get_by_email(session=session, email=email)
        if found is not None and found.role == PlatformRole.OWNER.value and not found.disabled:
            return found, False
        return users.ensure_owner(session=session, email=email), True
    existing = session.exec(
        select(User)
        .where(User.role == PlatformRole.OWNER.value, col(User.disabled).is_(False))
        .order_by(col(User.id))
    ).first()
    if existing is not None:
        return existing, False
    return users.ensure_owner(session=session, email=DEFAULT_OWNER), True


def prepare(
    *, session: Session, box: SecretBox, owner_email: str | None, pace: float = 1.0,
    force_agent: bool = False,
) -> DemoSetup:  # fmt: skip
    """Create what the demo needs, reusing what exists. The `dev` agent is pointed at the demo
    agent only while it still has the shipped settings (or the demo's): an agent someone set up
    is left alone unless FORCE_AGENT."""
    created: list[str] = []
    owner, is_new_owner = _owner(session, owner_email)
    if is_new_owner:
        created.append(f"owner {owner.email}")
    if projects.get_by_key(session=session, key=PROJECT_KEY) is None:
        projects.create_project(session=session, key=PROJECT_KEY, name=PROJECT_NAME, actor_id=ACTOR)
        created.append(f"project {PROJECT_KEY}")
    repository = repositories.get_by_full_name(session=session, full_name=REPOSITORY)
    if repository is None:
        secret = secrets.token_hex(24)
        repositories.add_repository(
            session=session, box=box, project_key=PROJECT_KEY, full_name=REPOSITORY,
            webhook_secret=secret, actor_id=ACTOR,
        )  # fmt: skip
        created.append(f"repository {REPOSITORY}")
    else:
        project = projects.require_by_key(session=session, key=PROJECT_KEY)
        if repository.project_id != project.id:
            raise PreconditionError(
                f"{REPOSITORY} is attached to another project; detach it to run the demo"
            )
        if repository.webhook_secret_ciphertext is None:
            raise PreconditionError(f"{REPOSITORY} has no webhook secret of its own")
        secret = box.decrypt(repository.webhook_secret_ciphertext)
    agent = session.exec(select(Agent).where(Agent.key == AGENT_KEY)).first()
    if agent is None:
        raise PreconditionError("the agent roster is missing; run `codexk8s migrate`")
    raw = dict(agent.settings or {})
    wanted = agent_command(pace=pace)
    is_shipped = (raw.get("engine") or "codex") == "codex" and not raw.get("command")
    is_demo = raw.get("engine") == "process" and _is_demo_command(str(raw.get("command") or ""))
    if not (is_shipped or is_demo or force_agent):
        raise PreconditionError(
            f"agent {AGENT_KEY} has settings of its own ({raw.get('engine') or 'codex'}: "
            f"{raw.get('command') or 'the agent runner'}); the demo leaves it alone. Run "
            "`codexk8s demo --force-agent` to point it at the demo agent anyway"
        )
    if raw.get("command") != wanted or raw.get("engine") != "process":
        agents.set_agent(
            session=session, key=AGENT_KEY, engine="process", command=wanted,
            timeout_minutes=5, actor_id=ACTOR,
        )  # fmt: skip
        created.append(f"agent {AGENT_KEY} → the demo agent")
    if _ensure_labeler(session):
        created.append(f"labeler {LABELER_LOGIN} (write access to {PROJECT_KEY})")
    issue_number = int(captured_payload()["issue"]["number"])
    return DemoSetup(
        project_key=PROJECT_KEY, repository=REPOSITORY, agent_key=AGENT_KEY,
        owner_email=owner.email, webhook_secret=secret, issue_number=issue_number,
        created=created,
    )  # fmt: skip


def _ensure_labeler(session: Session) -> bool:
    """The demo project's labeler exists, linked and with write access; whether it was missing."""
    changed = False
    labeler = users.get_by_email(session=session, email=LABELER_EMAIL)
    if labeler is None:
        users.add_user(
            session=session, email=LABELER_EMAIL, name="Demo labeler", github_login=LABELER_LOGIN,
            actor_id=ACTOR,
        )  # fmt: skip
        changed = True
    elif labeler.github_login != LABELER_LOGIN:
        users.set_github_login(
            session=session, email=LABELER_EMAIL, github_login=LABELER_LOGIN, actor=None,
            actor_id=ACTOR,
        )  # fmt: skip
        changed = True
    roles = {m.email: m.role for m in projects.list_members(
        session=session, actor=None, project_key=PROJECT_KEY)}  # fmt: skip
    if LABELER_EMAIL not in roles:
        projects.add_member(
            session=session, project_key=PROJECT_KEY, email=LABELER_EMAIL,
            role=ProjectRole.READ_WRITE.value, actor_id=ACTOR,
        )  # fmt: skip
        changed = True
    elif roles[LABELER_EMAIL] == ProjectRole.READ.value:
        projects.set_member_role(
            session=session, actor=None, project_key=PROJECT_KEY, email=LABELER_EMAIL,
            role=ProjectRole.READ_WRITE.value, actor_id=ACTOR,
        )  # fmt: skip
        changed = True
    return changed


def wait_until_ready(base_url: str, *, timeout: float = 90.0) -> bool:
    """Whether the server at BASE_URL answers `/readyz` within TIMEOUT seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + urls.READYZ, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def send_delivery(base_url: str, setup: DemoSetup) -> httpx.Response:
    """POST the signed delivery to the server's webhook endpoint, as GitHub does."""
    body = payload_for(setup.repository, sender=LABELER_LOGIN)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/codexk8s-demo",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(setup.webhook_secret, body),
    }
    return httpx.post(base_url + urls.WEBHOOK_GITHUB, content=body, headers=headers, timeout=30)


def active_demo_run(*, session: Session, issue_number: int) -> int | None:
    """The demo issue's run still under way, if any (a new label then starts nothing)."""
    repository = repositories.get_by_full_name(session=session, full_name=REPOSITORY)
    if repository is None:
        return None
    return session.exec(
        select(AgentRun.id)
        .where(
            AgentRun.repository_id == repository.id,
            AgentRun.issue_number == issue_number,
            col(AgentRun.status).in_([s.value for s in ACTIVE_STATUSES]),
        )
        .order_by(col(AgentRun.id).desc())
    ).first()
