"""The Audit page's handlers with a session cookie: scope per person, filters, paging back and
forth, and bad dates refused with a message."""

from __future__ import annotations

import pytest

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.services import audit, projects
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.audit import PAGE_SIZE, AuditState, parse_range
from tests.conftest import run_async
from tests.web.live_context import dashboard_state
from tests.web.test_projects_handlers import add_user, session_for


def audit_state(token: str) -> AuditState:
    return dashboard_state(AuditState, f"{SESSION_COOKIE}={token}", "/audit")


def call(state: AuditState, handler: str, *args: object) -> None:
    run_async(getattr(AuditState, handler).fn(state, *args))


def test_pages_filters_and_scope(app_db: str) -> None:
    engine = get_engine()
    reader = add_user(engine, "reader@example.com")
    admin = add_user(engine, "admin@example.com", "admin")
    with session_scope(engine) as session:
        alpha = projects.create_project(session=session, key="alpha")
        projects.create_project(session=session, key="beta")
        projects.add_member(session=session, project_key="alpha", email="reader@example.com",
                            role="read")  # fmt: skip
        for n in range(PAGE_SIZE + 10):
            audit.record_event(session=session, correlation_id=f"c{n}", event_type="tick",
                               project_id=alpha.id, payload={"n": n})  # fmt: skip
        audit.record_event(session=session, correlation_id="x", event_type="user_added",
                           payload={"email": "someone@example.com"})  # fmt: skip

    state = audit_state(session_for(engine, reader))
    call(state, "load_audit")
    assert len(state.events) == PAGE_SIZE and state.has_next and not state.has_previous
    assert {e.project_key for e in state.events} == {"alpha"}
    assert state.project_keys == ["alpha"] and "user_added" not in state.event_types
    first_page = [e.id for e in state.events]
    assert state.events[0].payload_text == '{\n  "n": 59\n}'
    call(state, "next_page")
    second = [e.id for e in state.events]
    assert state.has_previous and not state.has_next and min(first_page) > max(second)
    # 60 ticks + creation + membership of alpha, nothing of beta, nothing without a project.
    assert len(first_page) + len(second) == PAGE_SIZE + 12
    call(state, "previous_page")
    assert [e.id for e in state.events] == first_page and not state.has_previous

    call(state, "set_type_filter", "member_added")
    assert [e.event_type for e in state.events] == ["member_added"] and not state.has_next
    call(state, "set_project_filter", "beta")  # not theirs: nothing, not an error
    assert state.events == [] and state.error == ""
    call(state, "clear_filters")
    state.since = "27/11/2026"
    call(state, "apply_filters")
    assert state.error == "From is not a date (YYYY-MM-DD): '27/11/2026'"

    admin_state = audit_state(session_for(engine, admin))
    call(admin_state, "load_audit")
    assert admin_state.events[0].event_type == "user_added"
    assert admin_state.events[0].project_key == "" and admin_state.project_keys == [
        "alpha", "beta"
    ]  # fmt: skip

    signed_out = audit_state("nope")
    call(signed_out, "load_audit")
    assert signed_out.events == [] and signed_out.is_loaded


def test_parse_range_is_whole_utc_days() -> None:
    start, end = parse_range("2026-11-01", "2026-11-01")
    assert start is not None and end is not None
    assert start.isoformat() == "2026-11-01T00:00:00+00:00"
    assert end.isoformat() == "2026-11-02T00:00:00+00:00"
    assert parse_range("", " ") == (None, None)
    with pytest.raises(Exception, match="To is not a date"):
        parse_range("", "tomorrow")
