"""The run page's handlers, called directly with a session cookie (no browser): the bounded log
window, following by sequence, search, paging, who sees the run, and that cancel and rerun are
refused on the server for those who may not use them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from reflex.istate.data import RouterData
from reflex.state import State
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, utcnow
from codexk8s.domain.authorization import Principal
from codexk8s.domain.runtime import LogLine
from codexk8s.services import projects, repositories, run_logs, run_start
from codexk8s.web import live
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.run import NOT_VISIBLE, WINDOW, RunState
from tests.conftest import run_async
from tests.web.live_context import call_handler, dashboard_headers
from tests.web.test_projects_handlers import add_user, session_for

PEOPLE: dict[str, Principal] = {}


def state_for(engine: Engine, email: str | None, run_id: object) -> RunState:
    """The run page's state as an event from EMAIL's browser on /runs/RUN_ID would see it."""
    token = session_for(engine, PEOPLE[email]) if email is not None else None
    root = State(_reflex_internal_init=True)
    cookie = f"{SESSION_COOKIE}={token}" if token else "theme=dark"
    root.router_data = {
        "headers": dashboard_headers(cookie),
        "pathname": f"/runs/{run_id}",
        "query": {"run_id": str(run_id)},
    }
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> RunState:
        return await root.get_state(RunState)

    return run_async(get())


def write_lines(engine: Engine, run_id: int, texts: list[str]) -> None:
    last = run_logs.log_length(engine, run_id=run_id)
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    stored = run_logs.store_batch(
        engine, run_id=run_id, expected_sequence=last,
        lines=[LogLine(stream="stdout", line=text, ts=stamp, cursor=None) for text in texts],
    )  # fmt: skip
    assert stored is not None and stored.sequence == last + len(texts)


@pytest.fixture
def world(app_db: str) -> dict[str, int]:
    engine = get_engine()
    for email in ("writer@example.com", "reader@example.com", "outsider@example.com"):
        PEOPLE[email] = add_user(engine, email)
    with session_scope(engine) as session:
        projects.create_project(session=session, key="alpha", name="Alpha")
        projects.create_project(session=session, key="beta", name="Beta")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="alpha",
            full_name="octo-org/octo-repo", webhook_secret="s",
        )  # fmt: skip
        projects.add_member(
            session=session, project_key="alpha", email="writer@example.com", role="read_write"
        )
        projects.add_member(
            session=session, project_key="alpha", email="reader@example.com", role="read"
        )
    run_id = run_start.start_run(
        engine, project_key="alpha", repository="octo-org/octo-repo", issue=42, stage="dev"
    )
    return {"run": run_id}


def status_of(run_id: int) -> str:
    with Session(get_engine()) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        return run.status


def test_header_and_a_bounded_tail_window(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    write_lines(engine, run_id, [f"line {n}" for n in range(1, 1201)])
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    # The tab is linked to the run's live updates.
    links = state._get_root_state()._reflex_internal_links or {}
    assert links.get(live.RunLive.get_full_name()) == live.run_token(run_id)
    assert state.is_live  # an active run
    assert not state.is_loading and not state.is_missing and state.error == ""
    header = state.run
    assert (header.id, header.status, header.stage, header.agent) == (
        run_id,
        "pending",
        "dev",
        "dev",
    )
    assert header.repository_url == "https://github.com/octo-org/octo-repo"
    assert header.issue == "#42" and header.issue_url.endswith("/octo-org/octo-repo/issues/42")
    assert header.is_active and header.project_key == "alpha"
    assert [e.event_type for e in state.events] == ["Run created"]
    # Only the last WINDOW lines are held, and rendered with line numbers and timestamps.
    assert (state.first_line, state.last_line, state.total_lines) == (701, 1200, 1200)
    assert len(state._lines) == WINDOW
    assert state.log_html.count('class="log-line"') == WINDOW
    assert 'data-seq="1200"' in state.log_html and 'data-seq="700"' not in state.log_html
    assert "03:04:05.000" in state.log_html
    assert not header.is_waiting
    # Its agent asks a person something: the header says it waits.
    with engine.begin() as connection:
        connection.execute(
            sa.update(AgentRun.__table__)  # type: ignore[attr-defined]
            .where(AgentRun.__table__.c.id == run_id)  # type: ignore[attr-defined]
            .values(waiting_since=utcnow())
        )
    call_handler(state, RunState.load_run.fn)
    assert state.run.is_waiting


def test_a_push_syncs_once_per_new_version(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    write_lines(engine, run_id, ["a1"])
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    seen = state._seen_version
    write_lines(engine, run_id, ["b2", "b3"])
    # The trigger fires on mount with the version already seen: nothing is fetched.
    call_handler(state, RunState.refresh_live.fn, seen)
    assert state.last_line == 1
    # A new version: the lines after the last one held arrive, once.
    call_handler(state, RunState.refresh_live.fn, seen + 1)
    assert [line.line for line in state._lines] == ["a1", "b2", "b3"]
    call_handler(state, RunState.refresh_live.fn, seen + 1)
    assert state.last_line == 3 and len(state._lines) == 3


def test_following_resumes_from_the_last_sequence_without_loss_or_repeat(
    world: dict[str, int],
) -> None:
    engine, run_id = get_engine(), world["run"]
    write_lines(engine, run_id, ["a1", "a2"])
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    assert state.last_line == 2
    write_lines(engine, run_id, ["b3", "b4", "b5"])
    assert run_async(state._sync(state._generation)) is True
    assert [line.sequence for line in state._lines] == [1, 2, 3, 4, 5]
    # A second sync with nothing new (a duplicate push) changes nothing.
    run_async(RunState.sync_now.fn(state))
    assert [line.line for line in state._lines] == ["a1", "a2", "b3", "b4", "b5"]

    # Paused: new lines are counted but the window stays.
    RunState.pause.fn(state)
    write_lines(engine, run_id, ["c6"])
    run_async(state._sync(state._generation))
    assert state.last_line == 5 and state.total_lines == 6 and state.unseen_lines == 1

    # Resume jumps to the end; far more than a window behind, the window skips ahead whole.
    run_async(RunState.resume.fn(state))
    assert state.is_following and state.last_line == 6
    write_lines(engine, run_id, [f"d{n}" for n in range(7, 7 + WINDOW + 50)])
    run_async(state._sync(state._generation))
    sequences = [line.sequence for line in state._lines]
    assert sequences == list(range(57, 7 + WINDOW + 50))
    # A stale loop (the page loaded another run since) must not touch the window.
    assert run_async(state._sync(state._generation - 1)) is False


def test_paging_and_search_over_the_whole_log(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    texts = [f"step {n}" for n in range(1, 2001)]
    texts[9] = "\x1b[31mERROR\x1b[0m: disk full"  # line 10
    texts[1499] = "another error here"  # line 1500
    write_lines(engine, run_id, texts)
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    assert state.first_line == 1501

    run_async(RunState.show_older.fn(state))
    assert (state.first_line, state.last_line, state.is_following) == (1001, 1500, False)
    run_async(RunState.show_start.fn(state))
    assert (state.first_line, state.last_line) == (1, 500)
    run_async(RunState.show_newer.fn(state))
    assert (state.first_line, state.last_line) == (501, 1000)

    RunState.set_search_input.fn(state, "error")
    run_async(RunState.submit_search.fn(state))
    assert (state.match_count, state.match_index, state.match_line) == (2, 1, 10)
    assert state.first_line <= 10 <= state.last_line
    assert '<mark class="log-match log-match-current">' in state.log_html
    assert 'color:var(--red-11)">ERROR</span>' in state.log_html

    run_async(RunState.next_match.fn(state))
    assert (state.match_index, state.match_line) == (2, 1500)
    assert state.first_line <= 1500 <= state.last_line
    run_async(RunState.next_match.fn(state))  # wraps to the first
    assert (state.match_index, state.match_line) == (1, 10)
    run_async(RunState.previous_match.fn(state))  # and back around to the last
    assert (state.match_index, state.match_line) == (2, 1500)

    RunState.set_search_input.fn(state, "no such text")
    run_async(RunState.submit_search.fn(state))
    assert state.match_count == 0 and "<mark" not in state.log_html
    run_async(RunState.clear_search.fn(state))
    assert state.search_query == "" and state.match_line == 0


def test_a_read_member_cannot_cancel_or_rerun(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    assert state.can_control is False  # the buttons are not rendered
    run_async(RunState.cancel_run.fn(state))  # a crafted event is refused anyway
    assert "does not allow" in state.error and status_of(run_id) == "pending"
    assert run_async(RunState.rerun_run.fn(state)) is None
    assert "does not allow" in state.error


def test_a_read_write_member_cancels_and_reruns(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    state = state_for(engine, "writer@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    assert state.can_control is True
    run_async(RunState.cancel_run.fn(state))
    assert state.error == "" and state.notice == "Run canceled."
    assert status_of(run_id) == "canceled" and state.run.status == "canceled"
    assert not state.run.is_active
    redirect = run_async(RunState.rerun_run.fn(state))
    with Session(engine) as session:
        new_id = session.exec(
            sa.select(AgentRun.id).where(AgentRun.parent_run_id == run_id)  # type: ignore[arg-type]
        ).scalar_one()
    assert status_of(new_id) == "pending"
    assert f"/runs/{new_id}" in str(redirect)


@pytest.mark.parametrize("who", ["outsider", "missing", "garbage", "signed out"])
def test_missing_and_invisible_runs_look_the_same(world: dict[str, int], who: str) -> None:
    engine, run_id = get_engine(), world["run"]
    email, target = {
        "outsider": ("outsider@example.com", run_id),
        "missing": ("writer@example.com", run_id + 1000),
        "garbage": ("writer@example.com", "12abc"),
        "signed out": (None, run_id),
    }[who]
    state = state_for(engine, email, target)
    assert call_handler(state, RunState.load_run.fn) is None
    assert state.run.id == 0 and state.log_html == "" and state.events == []
    if who == "signed out":
        assert "sign in" in state.error and not state.is_missing
    else:
        assert state.is_missing and state.error == NOT_VISIBLE
    run_async(RunState.cancel_run.fn(state))
    assert status_of(run_id) == "pending"


def _finish(engine: Engine, run_id: int, *, status: str, reason: str | None, result: bool) -> None:
    """Move the run through starting and running to STATUS, with the agent's result events."""
    from codexk8s.domain.runs import RunStatus
    from codexk8s.services.run_states import add_event, transition

    with engine.begin() as connection:
        run = connection.execute(sa.select(AgentRun.__table__).where(AgentRun.id == run_id)).one()
        common = {"run_id": run_id, "correlation_id": run.correlation_id,
                  "project_id": run.project_id}  # fmt: skip
        transition(
            connection,
            **common,
            from_statuses=[RunStatus.PENDING],
            to_status=RunStatus.STARTING,
            event_payload={"slot": 1, "owner": "vm-1"},
        )
        transition(connection, **common, from_statuses=[RunStatus.STARTING],
                   to_status=RunStatus.RUNNING)  # fmt: skip
        add_event(connection, **common, event_type="run_progress", actor_type="agent",
                  actor_id="dev", payload={"kind": "command", "message": "make test",
                                           "exit_code": 2})  # fmt: skip
        if result:
            connection.execute(
                AgentRun.__table__.update().where(AgentRun.id == run_id)
                .values(summary="Fixed the typo.", cost_usd=0.69)
            )  # fmt: skip
            add_event(connection, **common, event_type="run_usage", actor_type="agent",
                      actor_id="dev", payload={"model": "gpt-5-mini", "cost_usd": "0.690000",
                                               "metered": {"input": 10, "output": 5}})  # fmt: skip
            add_event(connection, **common, event_type="run_result", actor_type="agent",
                      actor_id="dev", payload={"branch": "codex/issue-42",
                                               "changed_files": ["README.md", "docs/a.md"],
                                               "summary": "Fixed the typo.",
                                               "is_pull_request": False})  # fmt: skip
        transition(connection, **common, from_statuses=[RunStatus.RUNNING],
                   to_status=RunStatus(status), reason=reason)  # fmt: skip


def test_the_page_says_what_happened_in_words(world: dict[str, int]) -> None:
    """Issue #16: a result panel (summary, branch, changed files, cost, the reason there is no
    pull request), a timeline in words without raw values, and the model actually used."""
    engine, run_id = get_engine(), world["run"]
    _finish(engine, run_id, status="succeeded", reason=None, result=True)
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    run = state.run
    assert run.summary == "Fixed the typo." and run.branch == "codex/issue-42"
    assert run.changed_files == ("README.md", "docs/a.md")
    assert run.cost == "$0.69" and run.model == "gpt-5-mini"
    assert run.no_pr_reason.startswith("No repository token: GitHub feedback skipped")
    assert run.tab_title == f"Succeeded · run #{run_id} · alpha · codexk8s"
    titles = [e.event_type for e in state.events]
    assert titles[:4] == ["Run created", "Slot taken, launching", "Agent started", "Ran a command"]
    assert "Agent reported its result" in titles and titles[-1] == "Run succeeded"
    shown = " ".join(f"{e.event_type} {e.actor} {e.detail}" for e in state.events)
    for raw in ("is_pull_request", "False", "0.690000", "vm-1", "owner:", "human ", "_"):
        assert raw not in shown, raw
    command = next(e for e in state.events if e.event_type == "Ran a command")
    assert command.detail == "$ make test (exit 2)" and command.tone == "bad"
    assert command.icon == "terminal"


def test_the_page_shows_the_documents_and_the_session_a_run_had(world: dict[str, int]) -> None:
    """Issue #19: which project documents the prompt received (and which were left out, why),
    and the Codex session the run resumed and left, in words, as the runner recorded them."""
    from codexk8s.services import run_brief
    from codexk8s.services.run_states import RUNS, add_event

    engine, run_id = get_engine(), world["run"]
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    assert state.run.documents == () and state.run.documents_note == ""
    assert state.run.session_text == ""  # nothing recorded: the panel shows neither row

    with engine.connect() as connection:
        run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
    run_brief.record_documents(engine, run=run, payload={
        "services_yaml": "services.yaml", "found": True,
        "documents": [
            {"path": "docs/architecture.md", "bytes": 4_700, "chars": 4_700},
            {"path": "docs/runbook.md", "bytes": 90_000, "chars": 20_000, "truncated": True},
            {"path": "docs/gone.md", "bytes": 0, "chars": 0, "skipped": "missing"},
        ],
        "problems": ["docs[3]: path must be relative and inside the repository"],
    })  # fmt: skip
    common = {"run_id": run_id, "correlation_id": run.correlation_id,
              "project_id": run.project_id, "actor_type": "agent"}  # fmt: skip
    with engine.begin() as connection:
        add_event(connection, **common, event_type="session_resume_started",
                  payload={"session_id": "s-1", "version": 3, "from_run": 7})  # fmt: skip
        add_event(connection, **common, event_type="session_stored",
                  payload={"session_id": "s-1", "version": 4, "bytes": 52_000})  # fmt: skip
    call_handler(state, RunState.load_run.fn)
    shown = state.run
    assert shown.documents == (
        "docs/architecture.md (4.6 KiB)", "docs/runbook.md (87.9 KiB, cut to fit the budget)",
        "docs/gone.md: left out, not found",
    )  # fmt: skip
    assert shown.documents_note == (
        "services.yaml: docs[3]: path must be relative and inside the repository"
    )
    assert shown.session_text == (
        "Resumed the session of run #7 (version 3). "
        "Left its session for a revise run (version 4, 50.8 KiB)."
    )


def test_a_failure_is_explained_and_red(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    _finish(engine, run_id, status="failed", reason="agent_error", result=False)
    state = state_for(engine, "reader@example.com", run_id)
    call_handler(state, RunState.load_run.fn)
    assert state.run.reason_text == "The agent reported a failure" and state.run.is_failure
    assert state.run.no_pr_reason == "The run failed, so no pull request was opened."
    failed = state.events[-1]
    assert (failed.event_type, failed.tone) == ("Run failed", "bad")
    assert failed.detail == "The agent reported a failure"


def test_a_queued_run_says_why_it_waits(world: dict[str, int]) -> None:
    """Both slots of alpha taken by two runs: the third says who holds them and its place."""
    engine = get_engine()
    from codexk8s.domain.runs import RunStatus
    from codexk8s.services.run_states import transition

    holders = [world["run"]]
    holders.append(
        run_start.start_run(
            engine, project_key="alpha", repository="octo-org/octo-repo", issue=43, stage="dev"
        )
    )
    with engine.begin() as connection:
        for number, holder in enumerate(holders, start=1):
            run = connection.execute(
                sa.select(AgentRun.__table__).where(AgentRun.id == holder)
            ).one()
            transition(connection, run_id=holder, correlation_id=run.correlation_id,
                       project_id=run.project_id, from_statuses=[RunStatus.PENDING],
                       to_status=RunStatus.STARTING, values={"slot_number": number})  # fmt: skip
            connection.execute(
                sa.text(
                    "UPDATE slots SET state='leased', run_id=:r WHERE project_id=:p AND number=:n"
                ),
                {"r": holder, "p": run.project_id, "n": number},
            )
    waiting = [
        run_start.start_run(
            engine, project_key="alpha", repository="octo-org/octo-repo", issue=n, stage="dev"
        )
        for n in (44, 45)
    ]
    state = state_for(engine, "reader@example.com", waiting[1])
    call_handler(state, RunState.load_run.fn)
    assert state.run.queue_text == (
        f"Waiting for a slot: alpha 2/2 in use by #{holders[0]}, #{holders[1]}; 2nd in line."
    )
    with engine.begin() as connection:
        connection.execute(
            AgentRun.__table__.update()
            .where(AgentRun.id == waiting[1])
            .values(
                dispatch_after=datetime(2099, 1, 1, tzinfo=UTC),
                status_message="namespace codexk8s-run-x is still terminating",
            )
        )
    call_handler(state, RunState.load_run.fn)
    assert state.run.queue_text == (
        "The runtime asked to wait before launching: namespace codexk8s-run-x is still "
        "terminating. It is tried again shortly."
    )


def test_permalink_timeline_jump_and_search_keep_the_newest_lines(world: dict[str, int]) -> None:
    engine, run_id = get_engine(), world["run"]
    from datetime import timedelta

    base = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
    lines = [
        LogLine(stream="stdout", line=f"line {n}", ts=base + timedelta(seconds=n), cursor=None)
        for n in range(1, 1201)
    ]
    run_logs.store_batch(engine, run_id=run_id, expected_sequence=0, lines=lines)
    assert run_logs.sequence_at(engine, run_id=run_id, at=base + timedelta(seconds=700.5)) == 701

    # A permalink opens the page at its line, marked, and stays there.
    state = state_for(engine, "reader@example.com", run_id)
    state.router_data["query"]["line"] = "300"
    state._get_root_state().router = RouterData.from_router_data(state.router_data)
    call_handler(state, RunState.load_run.fn)
    assert state.focus_line == 300 and state.first_line <= 300 <= state.last_line
    assert 'id="L300"' in state.log_html and "log-line-current" in state.log_html
    assert 'href="?line=300"' in state.log_html and not state.is_following

    # The timeline jumps to the line written at an event's time.
    run_async(RunState.jump_to_time.fn(state, (base + timedelta(seconds=1100)).isoformat()))
    assert state.focus_line == 1100 and state.first_line <= 1100 <= state.last_line

    # After a search on a live run, clearing it follows the newest lines again.
    RunState.set_search_input.fn(state, "line 5")
    run_async(RunState.submit_search.fn(state))
    assert state.match_count > 0 and not state.is_following
    run_async(RunState.clear_search.fn(state))
    assert state.is_following and state.last_line == 1200
