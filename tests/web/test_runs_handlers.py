"""The Runs page's event handlers, called directly with a session cookie (no browser): a viewer
sees only the runs of projects they are a member of, filters and keyset pages are right, and the
page links to the live token of what it shows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from reflex.istate.data import RouterData
from reflex.state import State

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.errors import InvalidArgumentError
from codexk8s.services import agent_runs, projects
from codexk8s.services.agent_runs import Cursor, RunFilters
from codexk8s.web import live
from codexk8s.web.state.runs import ANY, PAGE_SIZE, SIGNED_OUT, RunsState
from tests.conftest import run_async
from tests.web.live_context import call_handler, dashboard_headers
from tests.web.test_projects_handlers import add_user, session_for

BASE = datetime(2026, 1, 1, tzinfo=UTC)
RUNS = AgentRun.__table__  # type: ignore[attr-defined]


def add_runs(project_key: str, count: int, *, start: int = 0, **values: Any) -> list[int]:
    """COUNT runs of the project, one minute apart from BASE + START minutes."""
    engine = get_engine()
    with engine.begin() as connection:
        project_id = connection.execute(
            sa.text("SELECT id FROM projects WHERE key = :k"), {"k": project_key}
        ).scalar_one()
        rows = [
            {
                "correlation_id": f"{project_key}-{start + n}-{values.get('stage', 'dev')}",
                "project_id": project_id,
                "issue_number": 100 + start + n,
                "issue_title": f"Issue {start + n} of {project_key}",
                "agent_key": values.get("agent_key", "dev"),
                "stage": values.get("stage", "dev"),
                "status": values.get("status", "pending"),
                "created_at": BASE + timedelta(minutes=start + n),
                **{k: v for k, v in values.items() if k not in ("stage", "agent_key", "status")},
            }
            for n in range(count)
        ]
        return list(connection.execute(RUNS.insert().returning(RUNS.c.id), rows).scalars())


def state_for(token: str | None) -> RunsState:
    root = State(_reflex_internal_init=True)
    cookie = f"codexk8s_session={token}" if token else "theme=dark"
    root.router_data = {"headers": dashboard_headers(cookie), "pathname": "/runs"}
    root.router = RouterData.from_router_data(root.router_data)
    return run_async(root.get_state(RunsState))


def call(state: RunsState, handler: Callable[..., Awaitable[None]], *args: Any) -> None:
    call_handler(state, handler, *args)


def linked_token(state: RunsState) -> str | None:
    links = state._get_root_state()._reflex_internal_links or {}
    return links.get(live.ProjectLive.get_full_name())


@pytest.fixture
def people(app_db: str) -> dict[str, str]:
    engine = get_engine()
    owner = add_user(engine, "owner@example.com", "owner")
    member = add_user(engine, "member@example.com")
    outsider = add_user(engine, "outsider@example.com")
    with session_scope(engine) as session:
        projects.create_project(session=session, key="alpha")
        projects.create_project(session=session, key="beta")
        projects.add_member(
            session=session, project_key="alpha", email="member@example.com", role="read"
        )
    return {
        "owner": session_for(engine, owner),
        "member": session_for(engine, member),
        "outsider": session_for(engine, outsider),
    }


def test_member_sees_only_their_projects_runs(people: dict[str, str]) -> None:
    alpha = add_runs("alpha", 3)
    add_runs("beta", 2, start=10)

    state = state_for(people["member"])
    call(state, RunsState.load_runs.fn)
    assert state.error == "" and not state.is_loading
    assert [r.id for r in state.runs] == alpha[::-1]  # newest first
    assert {r.project_key for r in state.runs} == {"alpha"}
    assert state.project_keys == ["alpha"]
    assert state.runs[0].href == f"/runs/{alpha[-1]}" and state.runs[0].target == "#102"
    assert linked_token(state) == live.ALL_PROJECTS

    # Naming a project they are not a member of shows nothing and says so.
    call(state, RunsState.set_project.fn, "beta")
    assert state.runs == [] and state.error == "no project with key 'beta'"

    outsider = state_for(people["outsider"])
    call(outsider, RunsState.load_runs.fn)
    assert outsider.runs == [] and outsider.project_keys == [] and outsider.error == ""

    owner = state_for(people["owner"])
    call(owner, RunsState.load_runs.fn)
    assert len(owner.runs) == 5 and owner.project_keys == ["alpha", "beta"]
    call(owner, RunsState.set_project.fn, "beta")
    assert {r.project_key for r in owner.runs} == {"beta"} and len(owner.runs) == 2
    with session_scope() as session:
        beta_id = projects.require_by_key(session=session, key="beta").id
    assert linked_token(owner) == f"project-{beta_id}"

    for token in (None, "not-a-session"):
        signed_out = state_for(token)
        call(signed_out, RunsState.load_runs.fn)
        assert signed_out.runs == [] and signed_out.error == SIGNED_OUT


def test_filters_search_and_sort(people: dict[str, str]) -> None:
    dev = add_runs("alpha", 2)
    plan = add_runs("alpha", 2, start=5, stage="plan", agent_key="em", status="running",
                    started_at=BASE + timedelta(minutes=6))  # fmt: skip
    add_runs("alpha", 1, start=9, stage="qa", agent_key="qa", status="failed",
             started_at=BASE, finished_at=BASE + timedelta(minutes=3, seconds=5))  # fmt: skip
    state = state_for(people["owner"])
    call(state, RunsState.load_runs.fn)
    assert len(state.runs) == 5 and state.total_text == "5 runs"

    call(state, RunsState.set_stage.fn, "plan")
    assert [r.id for r in state.runs] == plan[::-1] and state.is_filtered
    assert state.total == 2 and state.total_text == "2 runs match these filters"
    assert state._query() == "stage=plan"  # what the page writes into its URL
    assert state.runs[0].status == "running" and state.runs[0].duration.endswith("so far")
    call(state, RunsState.set_stage.fn, ANY)
    call(state, RunsState.set_status.fn, "failed")
    assert [(r.stage, r.duration) for r in state.runs] == [("qa", "3m 05s")]
    call(state, RunsState.set_status.fn, ANY)
    call(state, RunsState.set_agent.fn, "em")
    assert {r.agent for r in state.runs} == {"em"}
    call(state, RunsState.clear_filters.fn)
    assert len(state.runs) == 5 and not state.is_filtered

    call(state, RunsState.set_search.fn, "#101")
    assert [r.id for r in state.runs] == [dev[1]]
    call(state, RunsState.set_search.fn, "issue 6 OF alp")  # title, case-insensitive
    assert [r.id for r in state.runs] == [plan[1]]
    call(state, RunsState.set_search.fn, "100%_")  # LIKE wildcards are literal
    assert state.runs == [] and state.is_filtered
    call(state, RunsState.set_search.fn, "")

    call(state, RunsState.set_sort.fn, "oldest")
    assert state.runs[0].id == dev[0] and state.sort_order == "oldest"
    # A crafted status is refused by the service, not passed to SQL.
    call(state, RunsState.set_status.fn, "bogus")
    assert state.status == ANY


def test_keyset_paging_forward_and_back(people: dict[str, str]) -> None:
    ids = add_runs("alpha", PAGE_SIZE * 2 + 3)
    newest = ids[::-1]
    state = state_for(people["member"])
    call(state, RunsState.load_runs.fn)
    assert [r.id for r in state.runs] == newest[:PAGE_SIZE]
    assert state.has_next and not state.has_previous
    call(state, RunsState.next_page.fn)
    assert [r.id for r in state.runs] == newest[PAGE_SIZE : PAGE_SIZE * 2]
    assert state.has_next and state.has_previous
    call(state, RunsState.next_page.fn)
    assert [r.id for r in state.runs] == newest[PAGE_SIZE * 2 :]
    assert not state.has_next and state.has_previous
    call(state, RunsState.previous_page.fn)
    assert [r.id for r in state.runs] == newest[PAGE_SIZE : PAGE_SIZE * 2]
    call(state, RunsState.previous_page.fn)
    assert [r.id for r in state.runs] == newest[:PAGE_SIZE] and not state.has_previous

    # A new run does not shift a later page; a live refresh reloads the page being shown.
    call(state, RunsState.next_page.fn)
    shown = [r.id for r in state.runs]
    (new,) = add_runs("alpha", 1, start=1000)
    call(state, RunsState.refresh_live.fn, state._seen_version + 1)
    assert [r.id for r in state.runs] == shown
    # Walking back reaches the page just before, then the first page, full, new run on top.
    call(state, RunsState.previous_page.fn)
    assert [r.id for r in state.runs] == newest[:PAGE_SIZE] and state.has_previous
    call(state, RunsState.previous_page.fn)
    assert [r.id for r in state.runs] == [new, *newest[: PAGE_SIZE - 1]]
    assert not state.has_previous and state.has_next


def test_search_page_rejects_bad_arguments(people: dict[str, str]) -> None:
    with session_scope() as session:
        with pytest.raises(InvalidArgumentError):
            agent_runs.search_page(session=session, project_ids=None, limit=0)
        with pytest.raises(InvalidArgumentError):
            agent_runs.search_page(
                session=session, project_ids=None, filters=RunFilters(status="nope")
            )
        cursor = Cursor(created_at=BASE, run_id=1)
        with pytest.raises(InvalidArgumentError):
            agent_runs.search_page(session=session, project_ids=None, after=cursor, before=cursor)
        # No visible project: nothing, even with runs in the database.
        add_runs("alpha", 2)
        page = agent_runs.search_page(session=session, project_ids=[])
        assert page.rows == [] and page.next_cursor is None and page.previous_cursor is None
