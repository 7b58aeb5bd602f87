"""The project page's handlers, called directly with a session cookie: settings, repositories and
deletion for each role (read, read_write, admin, platform admin), refused on the server where the
role does not allow it, and write-only secrets that never reach the state."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent, Project, Repository, Slot
from codexk8s.domain.authorization import Principal
from codexk8s.services import projects, repositories
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.project import ProjectPageState
from codexk8s.web.state.projects import ProjectsState
from tests.conftest import reset_caches, run_async
from tests.github_server import FakeGitHub, running_github
from tests.web.live_context import dashboard_headers
from tests.web.test_projects_handlers import add_user, session_for

TOKEN = "ghp_s3cr3t-token-never-shown"
HOOK_SECRET = "hook-s3cr3t-never-shown"


def page_state(token: str, key: str = "alpha") -> ProjectPageState:
    root = State(_reflex_internal_init=True)
    root.router_data = {
        "headers": dashboard_headers(f"{SESSION_COOKIE}={token}"),
        "pathname": "/projects/[project_key]",
        "query": {"project_key": key},
    }
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> ProjectPageState:
        return await root.get_state(ProjectPageState)

    return run_async(get())


def call(state: ProjectPageState, handler: str, *args: object) -> object:
    done = getattr(ProjectPageState, handler).fn(state, *args)
    return run_async(done) if inspect.iscoroutine(done) else done


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """The GitHub a repository's token is checked against when it is attached."""
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        reset_caches()
        fake.add_repo("octo/two", token=TOKEN)
        yield fake


@pytest.fixture
def people(github: FakeGitHub) -> dict[str, Principal]:
    engine = get_engine()
    people = {
        "read": add_user(engine, "read@example.com"),
        "read_write": add_user(engine, "rw@example.com"),
        "admin": add_user(engine, "padmin@example.com"),
        "platform_admin": add_user(engine, "owner@example.com", "admin"),
        "outsider": add_user(engine, "outsider@example.com"),
    }
    with session_scope(engine) as session:
        projects.create_project(session=session, key="alpha", name="Alpha", slots=2)
        for role, email in (("read", "read@example.com"), ("read_write", "rw@example.com"),
                            ("admin", "padmin@example.com")):  # fmt: skip
            projects.add_member(session=session, project_key="alpha", email=email, role=role)
        repo = repositories.add_repository(
            session=session, box=get_secret_box(), project_key="alpha", full_name="octo/one"
        )
        for number in range(1, 23):
            session.add(AgentRun(
                correlation_id=f"run-{number}", project_id=repo.project_id, agent_key="dev",
                stage="dev", status="succeeded" if number % 2 else "failed",
                repository_id=repo.id, issue_number=number,
                created_at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=number),
            ))  # fmt: skip
    return people


def settings(engine: Engine) -> tuple[str, dict[str, object], list[int]]:
    with Session(engine) as session:
        project = session.exec(select(Project).where(Project.key == "alpha")).one()
        slots = session.exec(select(Slot.number).where(Slot.project_id == project.id)).all()
        return project.name, dict(project.settings), sorted(slots)


def repos(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return sorted(r.full_name for r in session.exec(select(Repository)).all())


def edit(state: ProjectPageState, slots: str = "4") -> None:
    state.edit_name, state.edit_slots = "Alpha two", slots
    state.edit_learning, state.edit_model = True, "gpt-5-codex"
    call(state, "save_settings")


@pytest.mark.parametrize(
    ("role", "may_edit", "may_edit_repositories", "may_delete"),
    [
        ("read", False, False, False),
        ("read_write", False, True, False),
        ("admin", True, True, True),
        ("platform_admin", True, True, True),
    ],
)
def test_role_matrix(
    people: dict[str, Principal], role: str, may_edit: bool, may_edit_repositories: bool,
    may_delete: bool,
) -> None:  # fmt: skip
    engine = get_engine()
    state = page_state(session_for(engine, people[role]))
    call(state, "load_project")
    assert state.project_name == "Alpha" and not state.not_found
    assert (state.can_edit, state.can_edit_repositories, state.can_delete) == (
        may_edit, may_edit_repositories, may_delete,
    )  # fmt: skip
    assert [r.full_name for r in state.repositories] == ["octo/one"]
    # The newest 20 of its 22 runs, newest first.
    assert len(state.recent_runs) == 20
    assert [(r.issue_number, r.status) for r in state.recent_runs[:2]] == [
        (22, "failed"), (21, "succeeded")
    ]  # fmt: skip
    assert state.recent_runs[0].repository == "octo/one"
    assert state.recent_runs[0].created_at == "2026-11-01 22:00 UTC"
    # The members panel is filled for the same project.
    members = run_async(state.get_state(ProjectsState))
    assert members.selected_key == "alpha" and len(members.members) == 3

    before = settings(engine)
    edit(state)
    if may_edit:
        assert state.error == "" and state.notice == "Settings saved."
        assert settings(engine) == (
            "Alpha two",
            {"slots": 4, "learning_mode_default": True, "default_model": "gpt-5-codex"},
            [1, 2, 3, 4],
        )
    else:
        assert "not for your role" in state.error and settings(engine) == before

    form = {"full_name": "Octo/Two", "token": TOKEN, "webhook_secret": HOOK_SECRET}
    call(state, "add_repository", form)
    if may_edit_repositories:
        assert state.error == "" and repos(engine) == ["octo/one", "octo/two"]
        added = next(r for r in state.repositories if r.full_name == "octo/two")
        assert added.has_token and added.has_webhook_secret
        with Session(engine) as session:
            row = session.exec(select(Repository).where(Repository.name == "two")).one()
        assert TOKEN not in (row.token_ciphertext or "")
        assert get_secret_box().decrypt(row.token_ciphertext or "") == TOKEN
        call(state, "remove_repository", "octo/one")
        assert state.error == "" and repos(engine) == ["octo/two"]
    else:
        assert "not for your role" in state.error and repos(engine) == ["octo/one"]
        call(state, "remove_repository", "octo/one")
        assert "not for your role" in state.error and repos(engine) == ["octo/one"]
    # Whatever happened, neither secret is anywhere in what the state holds or would send.
    dumped = json.dumps(state.dict(), default=str)
    assert TOKEN not in dumped and HOOK_SECRET not in dumped
    with Session(engine) as session:
        trail = json.dumps([e.payload for e in session.exec(select(FlowEvent)).all()])
    assert TOKEN not in trail and HOOK_SECRET not in trail

    state.delete_confirmation = "alpha"
    outcome = call(state, "delete_project")
    with Session(engine) as session:
        exists = session.exec(select(Project).where(Project.key == "alpha")).first() is not None
    if may_delete:
        assert state.error == "" and not exists and outcome is not None
    else:
        assert "not for your role" in state.error and exists and outcome is None


def test_log_retention_is_edited_with_the_settings(people: dict[str, Principal]) -> None:
    engine = get_engine()
    state = page_state(session_for(engine, people["admin"]))
    call(state, "load_project")
    assert state.edit_log_retention == "" and state.log_retention_default == "default: forever"
    for typed, kept in (("45", 45), ("0", 0), ("forever", 0), (" 7 ", 7)):
        state.edit_log_retention = typed
        call(state, "save_settings")
        assert state.error == "" and settings(engine)[1]["log_retention_days"] == kept
        assert state.edit_log_retention == str(kept)  # reloaded from what was stored
    state.edit_log_retention = ""  # back to the installation's default
    call(state, "save_settings")
    assert "log_retention_days" not in settings(engine)[1]
    before = settings(engine)
    for bad in ("-3", "two weeks", "99999"):
        state.edit_log_retention = bad
        call(state, "save_settings")
        assert "log retention must be" in state.error and settings(engine) == before


def test_tool_policies_are_shown_to_members_and_set_by_admins(
    people: dict[str, Principal],
) -> None:
    engine = get_engine()
    writer = page_state(session_for(engine, people["read_write"]))
    call(writer, "load_project")
    assert ["request_approval", "Approval before a risky action", "owner"] in writer.tool_policies
    call(writer, "set_tool_policy", "request_approval", "none")
    assert "not for your role" in writer.error
    assert "tool_policies" not in settings(engine)[1]

    admin = page_state(session_for(engine, people["admin"]))
    call(admin, "load_project")
    call(admin, "set_tool_policy", "request_approval", "delegated")
    assert admin.notice == ("Approval before a risky action: any member with write access decides.")
    assert ["request_approval", "Approval before a risky action", "delegated"] in (
        admin.tool_policies
    )
    call(admin, "set_tool_policy", "ask", "none")
    assert admin.error == "ask cannot have the policy none"
    assert settings(engine)[1]["tool_policies"] == {"request_approval": "delegated"}
    with Session(engine) as session:
        changed = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "tool_policy_changed")
        ).one()
    assert changed.actor_id == "padmin@example.com"


def test_the_waiting_slot_policy_is_shown_to_members_and_set_by_admins(
    people: dict[str, Principal],
) -> None:
    engine = get_engine()
    writer = page_state(session_for(engine, people["read_write"]))
    call(writer, "load_project")
    assert writer.waiting_slot == "keep"
    call(writer, "set_waiting_slot", "release")
    assert "not for your role" in writer.error and "waiting_slot" not in settings(engine)[1]

    admin = page_state(session_for(engine, people["admin"]))
    call(admin, "load_project")
    call(admin, "set_waiting_slot", "sometimes")
    assert "one of keep, release" in admin.error and "waiting_slot" not in settings(engine)[1]
    call(admin, "set_waiting_slot", "release")
    assert admin.notice == (
        "A run waiting for a person gives its slot to the next run and takes one back when "
        "answered."
    )
    assert admin.waiting_slot == "release" and settings(engine)[1]["waiting_slot"] == "release"


def test_trigger_bots_and_discussions_are_edited_on_the_page(
    people: dict[str, Principal],
) -> None:
    """Issue #19's settings (before, only `project set` changed them): admins edit them, bad
    input is refused whole, and the page shows what was stored."""
    engine = get_engine()
    admin = page_state(session_for(engine, people["admin"]))
    call(admin, "load_project")
    assert admin.conversation == {"bots": "", "stages": "", "model": "", "effort": ""}
    for field, value in (("bots", "renovate[bot], @dependabot[bot]"), ("stages", "plan , dev"),
                         ("model", "gpt-5-mini"), ("effort", "Low")):  # fmt: skip
        call(admin, "set_conversation", field, value)
    call(admin, "save_conversation")
    assert admin.error == "" and admin.notice == "Conversation settings saved."
    stored = settings(engine)[1]
    assert stored["trigger_bots"] == ["renovate[bot]", "dependabot[bot]"]
    assert stored["discussion_stages"] == ["plan", "dev"]
    assert (stored["discussion_model"], stored["discussion_reasoning_effort"]) == (
        "gpt-5-mini",
        "low",
    )
    assert admin.conversation == {  # reloaded from what was stored
        "bots": "renovate[bot], dependabot[bot]", "stages": "plan, dev", "model": "gpt-5-mini",
        "effort": "low",
    }  # fmt: skip

    before = settings(engine)
    call(admin, "set_conversation", "bots", "renovate[bot]")
    call(admin, "set_conversation", "stages", "plan, lunch")
    call(admin, "save_conversation")
    assert "unknown stage 'lunch'" in admin.error and settings(engine) == before
    call(admin, "set_conversation", "stages", "")  # clearing is a change like any other
    call(admin, "set_conversation", "owner", "me")  # not a field: ignored
    assert "owner" not in admin.conversation

    writer = page_state(session_for(engine, people["read_write"]))
    call(writer, "load_project")
    call(writer, "set_conversation", "bots", "")
    call(writer, "save_conversation")
    assert "not for your role" in writer.error and settings(engine) == before


def test_bad_input_changes_nothing(people: dict[str, Principal]) -> None:
    engine = get_engine()
    state = page_state(session_for(engine, people["admin"]))
    call(state, "load_project")
    before = settings(engine)
    for slots, message in (("three", "whole number"), ("0", "between 1 and 64"),
                           ("65", "between 1 and 64")):  # fmt: skip
        edit(state, slots)
        assert message in state.error and settings(engine) == before
    state.edit_slots, state.edit_model = "2", "bad model name!"
    call(state, "save_settings")
    assert "not a model name" in state.error and settings(engine) == before

    call(state, "add_repository", {"full_name": "not a repo", "token": TOKEN})
    assert "OWNER/NAME" in state.error and repos(engine) == ["octo/one"]
    call(state, "add_repository", {"full_name": "octo/one"})
    assert "already attached" in state.error

    # Deleting needs the key typed exactly; with a run in flight it is refused.
    state.delete_confirmation = "alph"
    assert call(state, "delete_project") is None and "type the project key" in state.error
    with session_scope(engine) as session:
        project = projects.require_by_key(session=session, key="alpha")
        session.add(AgentRun(correlation_id="r1", project_id=project.id or 0, agent_key="dev",
                             stage="dev", status="running"))  # fmt: skip
    state.delete_confirmation = "alpha"
    assert call(state, "delete_project") is None and "active run" in state.error
    assert settings(engine) == before


def test_slots_shrink_only_when_free(people: dict[str, Principal]) -> None:
    engine = get_engine()
    with session_scope(engine) as session:
        project = projects.require_by_key(session=session, key="alpha")
        slot = session.exec(
            select(Slot).where(Slot.project_id == project.id, Slot.number == 2)
        ).one()
        slot.state = "leased"
    state = page_state(session_for(engine, people["platform_admin"]))
    call(state, "load_project")
    edit(state, "1")
    assert "slot 2 of alpha is in use" in state.error and settings(engine)[2] == [1, 2]
    with session_scope(engine) as session:
        slot = session.exec(select(Slot).where(Slot.number == 2)).one()
        slot.state = "free"
    edit(state, "1")
    assert state.error == "" and settings(engine)[2] == [1]


def test_outsider_and_unknown_key_see_nothing(people: dict[str, Principal]) -> None:
    engine = get_engine()
    # A NUL byte in the URL is no key either (PostgreSQL refuses NUL in text: it was an error).
    for key in ("alpha", "no-such", "al\x00pha"):
        state = page_state(session_for(engine, people["outsider"]), key)
        call(state, "load_project")
        assert state.not_found and state.repositories == [] and state.recent_runs == []
        edit(state, "3")
        assert "no project with key" in state.error
    assert settings(engine)[2] == [1, 2]
    # Signed out: nothing at all.
    state = page_state("not-a-session")
    call(state, "load_project")
    assert state.project_settings is None and "session has ended" in state.error


def register(state: ProjectPageState, full_name: str) -> list[str]:
    """Drive the register_webhook handler; what `registering` was at each intermediate update."""

    async def drive() -> list[str]:
        seen = []
        async for _ in ProjectPageState.register_webhook.fn(state, full_name):
            seen.append(state.registering)
        return seen

    return run_async(drive())


def test_register_webhook_from_the_page(
    people: dict[str, Principal], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine()
    monkeypatch.setenv("CODEXK8S_PUBLIC_URL", "https://ck8s.example.test")
    reset_caches()
    repo = github.add_repo("octo/two", token=TOKEN)

    # A read member is not offered the button and is refused by the handler anyway.
    reader = page_state(session_for(engine, people["read"]))
    call(reader, "load_project")
    assert not reader.can_edit_repositories
    register(reader, "octo/one")
    assert "not for your role" in reader.error and reader.registering == ""

    state = page_state(session_for(engine, people["read_write"]))
    call(state, "load_project")
    assert state.can_edit_repositories
    # octo/one has no token and there is no global one: said so, nothing sent.
    register(state, "octo/one")
    assert "has no token" in state.error and state.notice == ""
    assert github.calls == []

    call(state, "add_repository", {"full_name": "octo/two", "token": TOKEN,
                                   "webhook_secret": HOOK_SECRET})  # fmt: skip
    assert register(state, "octo/two") == ["octo/two"]  # the spinner, while GitHub answers
    (hook_id,) = repo.hooks
    assert repo.hooks[hook_id]["_secret"] == HOOK_SECRET
    assert state.error == "" and state.notice == f"webhook {hook_id} created on octo/two"
    assert state.registering == ""
    row = next(r for r in state.repositories if r.full_name == "octo/two")
    assert row.webhook_id == hook_id
    register(state, "octo/two")
    assert state.notice == f"webhook {hook_id} updated on octo/two" and list(repo.hooks) == [
        hook_id
    ]

    # GitHub's refusal reaches the page as the service words it; nothing is stored. A token that
    # cannot see the repository is refused when it is attached ...
    call(state, "add_repository", {"full_name": "octo/three", "token": TOKEN,
                                   "webhook_secret": HOOK_SECRET})  # fmt: skip
    assert "octo/three not found on GitHub, or the token cannot see it (404)" in state.error
    assert "octo/three" not in [r.full_name for r in state.repositories]
    # ... and one that may read it but not manage its hooks when the webhook is registered.
    github.add_repo("octo/four", token=TOKEN, admin=False)
    call(state, "add_repository", {"full_name": "octo/four", "token": TOKEN,
                                   "webhook_secret": HOOK_SECRET})  # fmt: skip
    assert state.error == ""
    register(state, "octo/four")
    assert "may not manage webhooks of octo/four" in state.error
    assert next(r for r in state.repositories if r.full_name == "octo/four").webhook_id is None

    dumped = json.dumps(state.dict(), default=str)
    assert TOKEN not in dumped and HOOK_SECRET not in dumped


def test_a_read_write_member_cannot_aim_the_platform_token_at_any_repository(
    people: dict[str, Principal], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe (issue #14, item 2): a member attached `victim-org/secret-repo` without a token
    and the run's brief carried CODEXK8S_GITHUB_TOKEN to clone and push there."""
    monkeypatch.setenv("CODEXK8S_GITHUB_TOKEN", "ghp_platform_token_0123456789")
    reset_caches()
    github.add_repo("victim-org/secret-repo", token="ghp_platform_token_0123456789")
    engine = get_engine()
    state = page_state(session_for(engine, people["read_write"]))
    call(state, "load_project")
    call(state, "add_repository", {"full_name": "victim-org/secret-repo"})
    assert "only a platform admin may attach victim-org/secret-repo without a token" in (
        state.error
    )
    assert repos(engine) == ["octo/one"] and github.calls == []

    # A platform admin may; the page says the repository uses the platform's token.
    admin = page_state(session_for(engine, people["platform_admin"]))
    call(admin, "load_project")
    call(admin, "add_repository", {"full_name": "victim-org/secret-repo"})
    assert admin.error == "" and repos(engine) == ["octo/one", "victim-org/secret-repo"]
    row = next(r for r in admin.repositories if r.full_name == "victim-org/secret-repo")
    assert not row.has_token and row.uses_global_token
