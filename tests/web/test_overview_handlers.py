"""The Overview state: figures for the viewer, kept current by pushes with throttled reloads."""

from __future__ import annotations

import time

import sqlalchemy as sa
from reflex.istate.data import RouterData
from reflex.state import State

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.services import projects
from codexk8s.web import live
from codexk8s.web.state.overview import MIN_REFRESH_SECONDS, OverviewState
from tests.conftest import run_async
from tests.web.live_context import call_handler, dashboard_headers
from tests.web.test_projects_handlers import add_user, session_for


def state_for(token: str) -> OverviewState:
    root = State(_reflex_internal_init=True)
    root.router_data = {"headers": dashboard_headers(f"codexk8s_session={token}"), "pathname": "/"}
    root.router = RouterData.from_router_data(root.router_data)
    return run_async(root.get_state(OverviewState))


def add_run(project_key: str, status: str) -> None:
    with get_engine().begin() as connection:
        project_id = connection.execute(
            sa.text("SELECT id FROM projects WHERE key = :k"), {"k": project_key}
        ).scalar_one()
        connection.execute(
            sa.text(
                "INSERT INTO agent_runs (correlation_id, project_id, agent_key, stage, status,"
                " is_revise, learning_mode, attempt, log_sequence, created_at,"
                " tokens_input, tokens_cached, tokens_output, tokens_reasoning, cost_usd)"
                " VALUES (:c, :p, 'dev', 'dev', :s, false, false, 1, 0, now(), 0, 0, 0, 0, 0)"
            ),
            {"c": f"{project_key}-{time.monotonic_ns()}", "p": project_id, "s": status},
        )


def test_pushes_reload_the_figures_at_most_once_per_interval(app_db: str) -> None:
    engine = get_engine()
    owner = add_user(engine, "owner@example.com", "owner")
    with session_scope(engine) as session:
        projects.create_project(session=session, key="alpha")
    state = state_for(session_for(engine, owner))
    call_handler(state, OverviewState.load_overview.fn)
    links = state._get_root_state()._reflex_internal_links or {}
    assert links.get(live.ProjectLive.get_full_name()) == live.ALL_PROJECTS
    assert state.queued_runs == 0
    seen = state._seen_version

    add_run("alpha", "pending")
    # The trigger's first call carries the version already seen: nothing is reloaded.
    assert call_handler(state, OverviewState.refresh_live.fn, seen) is None
    assert state.queued_runs == 0
    # A change right after a reload is deferred to one later reload, however many arrive.
    later = call_handler(state, OverviewState.refresh_live.fn, seen + 1)
    assert later is OverviewState.refresh_later and state.queued_runs == 0
    assert call_handler(state, OverviewState.refresh_live.fn, seen + 2) is None
    # Once the interval has passed, a change reloads at once.
    state._refreshed_at -= MIN_REFRESH_SECONDS
    state._is_refresh_pending = False
    assert call_handler(state, OverviewState.refresh_live.fn, seen + 3) is None
    assert state.queued_runs == 1
