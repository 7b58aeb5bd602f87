"""The agent roster (pm, sa, em, dev, reviewer, qa, sre, km) and each agent's settings."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from codexk8s.db.models import Agent, User, utcnow
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.domain.runtime import PodProfile, PodProfileError, parse_pod_profile
from codexk8s.domain.stages import AgentRole
from codexk8s.errors import ForbiddenError, InvalidArgumentError, NotFoundError
from codexk8s.services.audit import record_event
from codexk8s.services.validation import parse_choice

DEFAULT_COMMAND = ("codexk8s", "agent", "run")
DEFAULT_TIMEOUT_MINUTES = 60
MIN_TIMEOUT_MINUTES = 0.05  # three seconds: short enough to test, long enough to start
MAX_TIMEOUT_MINUTES = 24 * 60
# codex: the agent runner drives Codex. command: the agent runner clones the repository and runs
# the agent's command there instead of Codex. process: the agent's command is the whole workload,
# without the runner (no clone, no brief; for teams with their own runner, and engine tests).
ENGINES = ("codex", "command", "process")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """An agent's effective settings, defaults filled in."""

    key: str
    command: tuple[str, ...]
    image: str | None
    timeout_minutes: float
    model: str | None
    engine: str
    # The agent's own pod profile (Kubernetes runtime), laid over the installation's.
    pod: PodProfile | None = None

    @property
    def workload(self) -> tuple[str, ...]:
        """What the run's workload executes: the agent runner unless the engine is `process`."""
        return self.command if self.engine == "process" else DEFAULT_COMMAND


def effective_settings(raw_settings: dict[str, Any] | None, key: str) -> AgentSettings:
    raw: dict[str, Any] = dict(raw_settings or {})
    command = raw.get("command")
    engine = raw.get("engine") or "codex"
    argv = tuple(shlex.split(command)) if engine != "codex" and command else DEFAULT_COMMAND
    return AgentSettings(
        key=key,
        command=argv,
        image=raw.get("image") or None,
        timeout_minutes=float(raw.get("timeout_minutes") or DEFAULT_TIMEOUT_MINUTES),
        model=raw.get("model") or None,
        engine=engine,
        pod=parse_pod_profile(raw["pod"], f"the pod profile of agent {key}")
        if raw.get("pod")
        else None,
    )


def get_settings_for(*, session: Session, key: str) -> AgentSettings:
    agent = session.exec(select(Agent).where(Agent.key == key)).first()
    return effective_settings(agent.settings if agent else None, key)


def set_agent(
    *,
    session: Session,
    key: str,
    command: str | None = None,
    image: str | None = None,
    timeout_minutes: float | None = None,
    model: str | None = None,
    engine: str | None = None,
    pod: dict[str, Any] | None = None,
    actor_id: str | None = None,
) -> Agent:
    """Change an agent's settings. Giving a command switches the agent to it (engine=command)."""
    parse_choice(AgentRole, key, "agent")
    agent = session.exec(select(Agent).where(Agent.key == key)).first()
    if agent is None:
        raise NotFoundError(f"agent {key!r} is missing from the roster; run `codexk8s migrate`")
    settings = dict(agent.settings)
    changes: dict[str, Any] = {}
    if command is not None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidArgumentError(f"cannot parse the command: {exc}") from None
        if not argv:
            raise InvalidArgumentError("the command is empty")
        changes["command"] = command
        changes["engine"] = "command"
    if engine is not None:
        if engine not in ENGINES:
            raise InvalidArgumentError(
                f"unknown engine {engine!r}; use one of: {', '.join(ENGINES)}"
            )
        if engine != "codex" and not (changes.get("command") or settings.get("command")):
            raise InvalidArgumentError(f"engine {engine!r} needs a command (--command)")
        changes["engine"] = engine
    if image is not None:
        changes["image"] = image or None
    if timeout_minutes is not None:
        if not MIN_TIMEOUT_MINUTES <= timeout_minutes <= MAX_TIMEOUT_MINUTES:
            raise InvalidArgumentError(
                f"timeout must be {MIN_TIMEOUT_MINUTES}-{MAX_TIMEOUT_MINUTES} minutes"
            )
        changes["timeout_minutes"] = timeout_minutes
    if model is not None:
        changes["model"] = model or None
    if pod is not None:
        try:
            profile = parse_pod_profile(pod, "the pod profile")
        except PodProfileError as exc:
            raise InvalidArgumentError(str(exc)) from None
        # An empty profile clears the agent's own: the installation's applies alone.
        changes["pod"] = profile.to_json() or None
    if not changes:
        raise InvalidArgumentError("nothing to change: give at least one setting")
    agent.settings = {**settings, **changes}
    agent.updated_at = utcnow()
    session.add(agent)
    record_event(
        session=session,
        correlation_id=f"agent-{key}",
        event_type="agent_updated",
        actor_id=actor_id,
        payload={"agent": key, "changes": changes},
    )
    return agent


# --- the dashboard's Agents page ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One agent of the roster with its effective settings, as the Agents page shows it."""

    key: str
    name: str
    engine: str
    command: str  # the raw command of a command or process agent ("" for codex)
    image: str
    timeout_minutes: float
    model: str


def list_roster(*, session: Session) -> list[AgentRow]:
    """The roster in role order (pm, sa, em, dev, reviewer, qa, sre, km)."""
    order = {role.value: index for index, role in enumerate(AgentRole)}
    agents = sorted(session.exec(select(Agent)).all(), key=lambda a: order.get(a.key, len(order)))
    rows = []
    for agent in agents:
        settings = effective_settings(agent.settings, agent.key)
        rows.append(
            AgentRow(
                key=agent.key,
                name=agent.name,
                engine=settings.engine,
                command=str((agent.settings or {}).get("command") or "")
                if settings.engine != "codex"
                else "",
                image=settings.image or "",
                timeout_minutes=settings.timeout_minutes,
                model=settings.model or "",
            )
        )
    return rows


def update_agent(
    *,
    session: Session,
    actor: Principal | None,
    key: str,
    engine: str,
    image: str,
    command: str,
    timeout_minutes: float,
    model: str,
) -> AgentRow:
    """Set an agent's engine, image, command, timeout and model from the Agents page (platform
    admins).

    Only what differs from the stored settings is changed (and audited), so a form that shows
    the agent as it is and is saved with one field edited changes that field alone: the engine,
    the command and the pod profile of a `process` agent stay as they were. A `command` or
    `process` engine needs a command; `codex` keeps a stored command for a later switch back.
    Empty image or model fall back to the defaults.
    """
    if not is_allowed(actor, Action.MANAGE_AGENTS):
        raise ForbiddenError("only platform admins change agent settings")
    assert actor is not None
    user = session.get(User, actor.user_id)
    current = next((row for row in list_roster(session=session) if row.key == key), None)
    if current is None:
        raise NotFoundError(f"agent {key!r} is missing from the roster; run `codexk8s migrate`")
    engine = engine.strip() or current.engine
    if engine not in ENGINES:
        raise InvalidArgumentError(f"unknown engine {engine!r}; use one of: {', '.join(ENGINES)}")
    command = command.strip()
    if engine != "codex" and not command:
        raise InvalidArgumentError(
            "a command agent and a process agent need a command; choose Codex to run the agent "
            "runner"
        )
    changes: dict[str, Any] = {}
    if engine != "codex" and command != current.command:
        changes["command"] = command
    if engine != current.engine or "command" in changes:
        # set_agent makes a new command an engine=command agent; say the engine outright.
        changes["engine"] = engine
    if image.strip() != current.image:
        changes["image"] = image.strip()
    if timeout_minutes != current.timeout_minutes:
        changes["timeout_minutes"] = timeout_minutes
    if model.strip() != current.model:
        changes["model"] = model.strip()
    if changes:
        set_agent(
            session=session,
            key=key,
            actor_id=user.email if user is not None else str(actor.user_id),
            **changes,
        )
        session.flush()
    return next(row for row in list_roster(session=session) if row.key == key)
