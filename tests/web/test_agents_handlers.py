"""The Agents page's event handlers, called directly with a session cookie (no browser): what an
admin and a plain user see, and that the server refuses changes from those who may not make them."""

from __future__ import annotations

import inspect
from typing import Any

from reflex.istate.data import RouterData
from reflex.state import State
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import Agent, FlowEvent
from codexk8s.services import agents, prompt_templates
from codexk8s.web.state.agents import SIGNED_OUT, AgentsState
from codexk8s.web.state.auth import AuthState
from tests.conftest import run_async
from tests.web.live_context import dashboard_headers
from tests.web.test_projects_handlers import add_user, session_for


def states_for(token: str | None) -> tuple[AgentsState, AuthState]:
    root = State(_reflex_internal_init=True)
    cookie = f"theme=dark; codexk8s_session={token}" if token else "theme=dark"
    root.router_data = {"headers": dashboard_headers(cookie), "pathname": "/agents"}
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> tuple[AgentsState, AuthState]:
        return await root.get_state(AgentsState), await root.get_state(AuthState)

    return run_async(get())


def call(handler: Any, state: AgentsState, *args: Any) -> None:
    """Run one event handler to the end, whether it is a coroutine or yields updates."""

    async def drive() -> None:
        result = handler.fn(state, *args)
        if inspect.isasyncgen(result):
            async for _ in result:
                pass
        elif inspect.isawaitable(result):
            await result

    run_async(drive())


def seed(engine: Engine) -> None:
    with session_scope(engine) as session:
        prompt_templates.seed_defaults(session=session)


def loaded(engine: Engine, email: str, role: str) -> AgentsState:
    state, _ = states_for(session_for(engine, add_user(engine, email, role)))
    call(AgentsState.load_agents, state)
    return state


def versions(scope: str = "dev", kind: str = "work") -> list[int]:
    with Session(get_engine()) as session:
        found = prompt_templates.history(session=session, scope=scope, kind=kind)
    return [v.version for v in found]


def test_admin_loads_the_roster_and_the_dev_template(app_db: str) -> None:
    engine = get_engine()
    seed(engine)
    state = loaded(engine, "admin@example.com", "admin")
    assert not state.is_loading and state.is_admin and state.error == ""
    assert [row.key for row in state.roster] == [
        "pm", "sa", "em", "dev", "reviewer", "qa", "sre", "km",
    ]  # fmt: skip
    assert (state.scope, state.kind, state.current_version) == ("dev", "work", 1)
    assert state.draft == state.current_body and "software engineer" in state.draft
    assert not state.is_dirty and state.draft_error == ""
    assert [(v.version, v.author, v.is_current) for v in state.versions] == [
        (1, "codexk8s seed", True)
    ]
    # The preview fills the placeholders with the sample issue.
    assert "Add a /healthz endpoint" in state.preview and "{{issue_title}}" not in state.preview


def test_admin_edits_saves_diffs_and_restores_a_template(app_db: str) -> None:
    engine = get_engine()
    seed(engine)
    state = loaded(engine, "admin@example.com", "admin")
    call(AgentsState.select_scope, state, "plan")
    call(AgentsState.select_kind, state, "revise")
    original = state.current_body
    assert (state.scope, state.kind) == ("plan", "revise") and "engineering manager" in original

    # A typo in a placeholder is shown while typing and refused on save.
    state.draft = original + "\nSee {{isue_title}}\n"
    assert "unknown placeholder {{isue_title}}" in state.draft_error
    call(AgentsState.save_template, state)
    assert "unknown placeholder {{isue_title}}" in state.error
    assert versions("plan", "revise") == [1]

    state.draft = original + "\nAlways link the plan from {{issue_title}}.\n"
    assert state.is_dirty
    assert [line.text for line in state.draft_diff if line.kind == "add"] == [
        "+",
        "+Always link the plan from {{issue_title}}.",
    ]
    call(AgentsState.save_template, state)
    assert state.error == "" and state.notice == "Saved plan/revise as version 2."
    assert versions("plan", "revise") == [2, 1] and not state.is_dirty
    assert [(v.version, v.author) for v in state.versions] == [
        (2, "admin@example.com"),
        (1, "codexk8s seed"),
    ]

    call(AgentsState.show_version_diff, state, state.versions[0].id)
    assert state.diff_title == "Version 2 against version 1"
    assert [line.text for line in state.version_diff if line.kind in ("add", "remove")] == [
        "+",
        "+Always link the plan from {{issue_title}}.",
    ]
    call(AgentsState.show_version_diff, state, state.versions[1].id)
    assert state.diff_title == "Version 1 is the first version." and state.version_diff == []

    call(AgentsState.restore_version, state, state.versions[1].id)
    assert state.notice == "Restored version 1 of plan/revise as version 3."
    assert versions("plan", "revise") == [3, 2, 1]
    assert state.current_body == original == state.draft


def test_a_stale_editor_does_not_overwrite_a_newer_version(app_db: str) -> None:
    engine = get_engine()
    seed(engine)
    first = loaded(engine, "one@example.com", "admin")
    second = loaded(engine, "two@example.com", "admin")
    first.draft = "First {{issue_title}}"
    call(AgentsState.save_template, first)
    second.draft = "Second {{issue_title}}"
    call(AgentsState.save_template, second)
    assert "reload it" in second.error and versions() == [2, 1]


def test_admin_changes_agent_settings(app_db: str) -> None:
    engine = get_engine()
    state = loaded(engine, "admin@example.com", "owner")
    call(AgentsState.start_edit_agent, state, "qa")
    assert state.editing_key == "qa" and state.edit_timeout == "60"
    assert state.edit_engine == "codex"
    call(AgentsState.set_edit_engine, state, "command")
    state.edit_image, state.edit_command = "ghcr.io/acme/qa:1", "make check"
    state.edit_timeout, state.edit_model = "abc", "gpt-5-codex"
    call(AgentsState.save_agent, state)
    assert state.error == "The timeout must be a number of minutes." and state.editing_key == "qa"
    state.edit_timeout = "90"
    call(AgentsState.save_agent, state)
    assert state.error == "" and state.notice == "Saved the settings of qa."
    qa = next(row for row in state.roster if row.key == "qa")
    assert (qa.image, qa.command, qa.engine, qa.timeout_minutes, qa.model) == (
        "ghcr.io/acme/qa:1", "make check", "command", 90.0, "gpt-5-codex",
    )  # fmt: skip
    with Session(engine) as session:
        settings = agents.get_settings_for(session=session, key="qa")
    assert settings.command == ("make", "check") and settings.image == "ghcr.io/acme/qa:1"

    # A command engine without a command is refused; choosing Codex switches back.
    call(AgentsState.start_edit_agent, state, "qa")
    state.edit_command = ""
    call(AgentsState.save_agent, state)
    assert "need a command" in state.error
    call(AgentsState.set_edit_engine, state, "codex")
    call(AgentsState.save_agent, state)
    qa = next(row for row in state.roster if row.key == "qa")
    assert (qa.engine, qa.command) == ("codex", "")


def test_editing_a_process_agent_keeps_its_engine_command_and_pod(app_db: str) -> None:
    """Issue #16: the form opened a process agent with an empty command and saving only the
    timeout stored `engine: codex`. It now shows the real engine and command and changes only
    the edited field (the pod profile, not on the form, stays)."""
    engine = get_engine()
    pod = {"nodeSelector": {"pool": "agents"}}
    with session_scope(engine) as session:
        agents.set_agent(
            session=session, key="dev", engine="process",
            command="sh -c 'echo working; sleep 2'", pod=pod,
        )  # fmt: skip
    state = loaded(engine, "admin@example.com", "owner")
    dev = next(row for row in state.roster if row.key == "dev")
    assert (dev.engine, dev.command) == ("process", "sh -c 'echo working; sleep 2'")
    call(AgentsState.start_edit_agent, state, "dev")
    assert state.edit_engine == "process"
    assert state.edit_command == "sh -c 'echo working; sleep 2'"
    state.edit_timeout = "5"
    call(AgentsState.save_agent, state)
    assert state.error == "" and state.notice == "Saved the settings of dev."
    with Session(engine) as session:
        stored = session.exec(select(Agent).where(Agent.key == "dev")).one().settings
        events = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "agent_updated")
        ).all()
    assert stored["engine"] == "process"
    assert stored["command"] == "sh -c 'echo working; sleep 2'"
    assert stored["timeout_minutes"] == 5.0 and stored["pod"] == pod
    # Only the edited field is audited as changed.
    assert events[-1].payload["changes"] == {"timeout_minutes": 5.0}

    # Saving an untouched form changes nothing and says so.
    call(AgentsState.start_edit_agent, state, "dev")
    call(AgentsState.save_agent, state)
    assert state.notice == "No changes to save for dev."
    with Session(engine) as session:
        again = session.exec(select(FlowEvent).where(FlowEvent.event_type == "agent_updated")).all()
    assert len(again) == len(events)


def test_a_plain_user_reads_but_is_refused_on_the_server(app_db: str) -> None:
    engine = get_engine()
    seed(engine)
    state = loaded(engine, "user@example.com", "user")
    assert not state.is_admin and state.error == ""
    assert len(state.roster) == 8 and state.current_version == 1
    with Session(engine) as session:
        before_agents = [(a.key, dict(a.settings)) for a in session.exec(select(Agent)).all()]
        before_events = len(session.exec(select(FlowEvent)).all())

    # Calling the handlers anyway (as a crafted event would) changes nothing.
    state.draft = "Mine {{issue_title}}"
    call(AgentsState.save_template, state)
    assert "only platform admins" in state.error and versions() == [1]
    state.error = ""
    call(AgentsState.restore_version, state, state.versions[0].id)
    assert "only platform admins" in state.error and versions() == [1]
    state.error = ""
    state.roster = [*state.roster]
    call(AgentsState.start_edit_agent, state, "dev")
    state.edit_command = "rm -rf /"
    call(AgentsState.save_agent, state)
    assert "only platform admins" in state.error
    with Session(engine) as session:
        after_agents = [(a.key, dict(a.settings)) for a in session.exec(select(Agent)).all()]
        assert after_agents == before_agents
        assert len(session.exec(select(FlowEvent)).all()) == before_events


def test_signed_out_viewers_see_nothing(app_db: str) -> None:
    seed(get_engine())
    state, auth = states_for(None)
    call(AgentsState.load_agents, state)
    assert not auth.is_signed_in and state.error == SIGNED_OUT
    assert state.roster == [] and state.versions == [] and state.draft == ""
    call(AgentsState.select_scope, state, "qa")
    assert state.versions == [] and state.error == SIGNED_OUT


def test_unknown_selections_are_refused(app_db: str) -> None:
    engine = get_engine()
    seed(engine)
    state = loaded(engine, "admin@example.com", "admin")
    call(AgentsState.select_scope, state, "deploy")
    assert state.error == "There is no work template for deploy." and state.scope == "dev"


def test_switching_templates_keeps_unsaved_changes(app_db: str) -> None:
    engine = get_engine()
    seed(engine)
    state = loaded(engine, "admin@example.com", "admin")
    state.draft = "Half-written {{issue_title}}"
    call(AgentsState.select_scope, state, "qa")
    assert "unsaved changes to dev/work" in state.error
    assert state.scope == "dev" and state.draft == "Half-written {{issue_title}}"
    call(AgentsState.discard_draft, state)
    call(AgentsState.select_scope, state, "qa")
    assert state.error == "" and state.scope == "qa" and "quality engineer" in state.draft
