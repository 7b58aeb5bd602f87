"""Compaction and retention of run logs on PostgreSQL and SQLite: every reader (the run page's
windows and search, the JSON pages, the SSE follow, the download, the CLI) gives the same bytes
before, during and after compaction; retention removes only old finished logs, in bounded
statements, and keeps the run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from codexk8s import urls
from codexk8s.cli import app as cli_app
from codexk8s.db.engine import session_scope
from codexk8s.db.models import AgentRun, FlowEvent, RunLog, RunLogChunk
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.domain.logs import LogLimits, LogStorage
from codexk8s.domain.runtime import LogLine
from codexk8s.services import api_tokens, log_maintenance, projects, run_logs, users
from codexk8s.web.http.app import build_http_app
from codexk8s.web.state.run import WINDOW, load_snapshot, render_window
from tests.log_examples import START, example_lines, make_run, run_row, write

CAPPED = LogLimits(max_lines=3_000, max_bytes=10**12)
NEEDLES = ("error", "ZÜRICH", "zürich", "step 1", "\\ back\\", "wide 3", "MIXED case", "nothing")


@pytest.fixture
def admin(log_db: Engine) -> tuple[Principal, str]:
    """A platform admin and their API token."""
    with session_scope(log_db) as session:
        user = users.add_user(session=session, email="admin@example.com", role="admin")
        _, token = api_tokens.create_token(session=session, email=user.email)
        principal = Principal(user_id=user.id or 0, platform_role=PlatformRole.ADMIN)
    return principal, token


def searches(engine: Engine, run_id: int) -> dict[str, list[tuple[int, int, int]]]:
    """Each needle's first matches walked forward from the top and backward from the bottom, as
    the page's next/previous buttons walk them, and the hits next to a few lines on both sides
    (with the wrap-around at the ends)."""
    walked: dict[str, list[tuple[int, int, int]]] = {}
    for needle in NEEDLES:
        steps: list[tuple[int, int, int]] = []
        for backwards in (False, True):
            hit = run_logs.search(
                engine, run_id=run_id, needle=needle, from_sequence=1 if backwards else 0,
                backwards=backwards,
            )  # fmt: skip
            for _ in range(4 if hit else 0):
                assert hit is not None
                steps.append((hit.sequence, hit.index, hit.count))
                hit = run_logs.search(engine, run_id=run_id, needle=needle,
                                      from_sequence=hit.sequence, backwards=backwards)  # fmt: skip
            for at in (999, 1_000, 2_999, 3_001):
                hit = run_logs.search(engine, run_id=run_id, needle=needle, from_sequence=at,
                                      backwards=backwards)  # fmt: skip
                steps.append((hit.sequence, hit.index, hit.count) if hit else (0, 0, 0))
        walked[needle] = steps
    return walked


def sse(client: TestClient, url: str, headers: dict[str, str]) -> str:
    with client.stream("GET", url, params={"follow": "1"}, headers=headers) as response:
        assert response.status_code == 200
        return "".join(response.iter_text())


def every_reader(engine: Engine, run_id: int, admin: tuple[Principal, str]) -> dict[str, Any]:
    principal, token = admin
    out: dict[str, Any] = {}
    total = run_logs.log_length(engine, run_id=run_id)
    snapshot = load_snapshot(principal, run_id, after=0, is_tail=True)
    out["page tail"] = (snapshot.total, render_window(snapshot.lines))
    for name, after in (("start", 0), ("middle", total // 2 - 250), ("cut", 2_800)):
        lines = run_logs.read_lines(engine, run_id=run_id, after=after, limit=WINDOW)
        out[f"page {name}"] = render_window(lines, needle="step", current=after + 7)
        out[f"lines {name}"] = lines
    out["search"] = searches(engine, run_id)
    out["text"] = "".join(run_logs.iter_text(engine, run_id=run_id, page=777))

    client = TestClient(build_http_app())
    headers = {"Authorization": f"Bearer {token}"}
    pages, since = [], 0
    while True:
        page = client.get(
            urls.API_RUN_LOGS.format(run_id=run_id), params={"since": since}, headers=headers
        ).json()
        pages.append(page)
        if page["next"] == since:
            break
        since = page["next"]
    out["api pages"] = pages
    out["api text"] = client.get(
        urls.API_RUN_LOG_TEXT.format(run_id=run_id), headers=headers
    ).content
    out["api follow"] = sse(client, urls.API_RUN_LOGS.format(run_id=run_id), headers)
    out["api follow resumed"] = sse(
        client, urls.API_RUN_LOGS.format(run_id=run_id), {**headers, "Last-Event-ID": "1234"}
    )
    run = client.get(urls.API_RUN.format(run_id=run_id), headers=headers).json()["run"]
    out["api run log"] = {k: v for k, v in run["log"].items() if k != "storage"}

    runner = CliRunner()
    for args in ([], ["--since", "1500"], ["--follow"]):
        result = runner.invoke(cli_app, ["runs", "logs", str(run_id), *args])
        assert result.exit_code == 0, result.output
        out[f"cli {args}"] = result.stdout
    return out


def storage(engine: Engine, run_id: int) -> tuple[str, int, int]:
    with Session(engine) as session:
        rows = session.exec(select(sa.func.count()).select_from(RunLog)).one()
        chunks = session.exec(
            select(sa.func.count()).select_from(RunLogChunk).where(RunLogChunk.run_id == run_id)
        ).one()
    return run_row(engine, run_id).log_storage, rows, chunks


def test_every_reader_gives_the_same_before_during_and_after_compaction(
    log_db: Engine, admin: tuple[Principal, str]
) -> None:
    run_id = make_run(log_db)
    write(log_db, run_id, example_lines(3_500), limits=CAPPED)
    assert run_logs.log_length(log_db, run_id=run_id) == 3_001  # the marker is line 3,001
    before = every_reader(log_db, run_id, admin)
    assert before["text"].count("\n") == 3_001 and "log truncated" in before["text"]
    assert before["api run log"]["dropped_lines"] == 500
    assert before["search"]["ZÜRICH"] == before["search"]["nothing"] == [(0, 0, 0)] * 8
    assert before["search"]["zürich"][0] == (11, 1, 272)  # lines 11, 22, … up to the cap

    # Part of the log compacted (two bounded steps), the rest still rows: a mixed log reads
    # the same.
    assert log_maintenance.compact_step(log_db, run_id=run_id, limit=1_234)[0] == 1_234
    assert log_maintenance.compact_step(log_db, run_id=run_id, limit=900)[0] == 900
    assert storage(log_db, run_id) == ("rows", 3_001 - 2_134, 3)
    assert every_reader(log_db, run_id, admin) == before

    result = log_maintenance.compact_logs(log_db, lines_per_step=1_000)
    assert result.compacted == [run_id] and result.lines == 3_001 - 2_134
    state, rows, chunks = storage(log_db, run_id)
    assert (state, rows) == ("chunks", 0) and chunks >= 4
    assert every_reader(log_db, run_id, admin) == before


def test_search_finds_matches_on_both_sides_of_a_chunk_boundary_and_none_across_it(
    log_db: Engine,
) -> None:
    run_id = make_run(log_db)
    lines = [
        LogLine("stdout", "ends with foo" if n % 2 else "bar starts this one", START, str(n))
        for n in range(1, 2_101)
    ]
    write(log_db, run_id, lines)
    before = [run_logs.matching_sequences(log_db, run_id=run_id, needle=n)
              for n in ("FOO", "bar", "foobar", "foo\nbar", "one")]  # fmt: skip
    assert before[2:4] == [[], []]  # "foo" ends one line and "bar" starts the next: no match
    log_maintenance.compact_logs(log_db)
    with Session(log_db) as session:
        bounds = session.exec(
            select(RunLogChunk.first_sequence, RunLogChunk.last_sequence)
            .where(RunLogChunk.run_id == run_id)
            .order_by(RunLogChunk.first_sequence)
        ).all()
    assert bounds == [(1, 1_000), (1_001, 2_000), (2_001, 2_100)]
    after = [run_logs.matching_sequences(log_db, run_id=run_id, needle=n)
             for n in ("FOO", "bar", "foobar", "foo\nbar", "one")]  # fmt: skip
    assert after == before
    assert 999 in after[0] and 1_000 in after[1] and 1_001 in after[0] and 2_000 in after[1]
    hit = run_logs.search(log_db, run_id=run_id, needle="BAR", from_sequence=998)
    assert hit is not None and (hit.sequence, hit.index) == (1_000, 500)
    hit = run_logs.search(log_db, run_id=run_id, needle="foo", from_sequence=1_001, backwards=True)
    assert hit is not None and (hit.sequence, hit.index) == (999, 500)


def test_a_follow_that_started_before_compaction_goes_on_across_it(log_db: Engine) -> None:
    run_id = make_run(log_db)
    lines = example_lines(2_600)
    write(log_db, run_id, lines)
    expected = run_logs.read_lines(log_db, run_id=run_id, limit=10_000)

    async def follow() -> list[run_logs.StoredLine]:
        seen: list[run_logs.StoredLine] = []
        stream = run_logs.follow(log_db, run_id=run_id, after=0, poll_seconds=0.01)
        async for line in stream:
            seen.append(line)
            if len(seen) == 1_500:  # mid-way: the log is compacted under the follower
                await asyncio.to_thread(log_maintenance.compact_logs, log_db)
        return seen

    seen = asyncio.run(follow())
    assert storage(log_db, run_id)[0] == "chunks"
    assert seen == expected


def test_compaction_waits_for_the_end_of_the_log_and_is_idempotent(log_db: Engine) -> None:
    running = make_run(log_db, status="running")
    unfinished = make_run(log_db)  # ended, but its pump has not stored the end yet
    write(log_db, running, example_lines(20), final=False)
    write(log_db, unfinished, example_lines(20), final=False)
    assert log_maintenance.compact_logs(log_db).lines == 0
    assert storage(log_db, running)[0] == storage(log_db, unfinished)[0] == "rows"

    write(log_db, unfinished, [], final=True)
    assert log_maintenance.compact_logs(log_db).compacted == [unfinished]
    with Session(log_db) as session:
        first = session.exec(select(RunLogChunk).order_by(RunLogChunk.id)).all()
    again = log_maintenance.compact_logs(log_db)
    assert (again.lines, again.chunks, again.compacted) == (0, 0, [])
    with Session(log_db) as session:
        assert session.exec(select(RunLogChunk).order_by(RunLogChunk.id)).all() == first


def test_a_tick_moves_a_bounded_number_of_lines(log_db: Engine) -> None:
    first, second = make_run(log_db), make_run(log_db)
    write(log_db, first, example_lines(700))
    write(log_db, second, example_lines(700))
    result = log_maintenance.compact_logs(log_db, max_lines=1_000, lines_per_step=300)
    assert (result.lines, result.compacted) == (1_000, [first])
    assert storage(log_db, second)[0] == "rows"
    with Session(log_db) as session:
        assert session.exec(select(sa.func.count()).select_from(RunLog)).one() == 400
    assert log_maintenance.compact_logs(log_db).compacted == [second]


def test_two_replicas_compacting_at_once_store_each_line_once(app_db: str) -> None:
    from codexk8s.db.engine import get_engine

    engine = get_engine()
    run_ids = [make_run(engine) for _ in range(3)]
    for run_id in run_ids:
        write(engine, run_id, example_lines(2_500))
    expected = {r: run_logs.read_lines(engine, run_id=r, limit=5_000) for r in run_ids}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def replica() -> None:
        barrier.wait()
        try:
            while log_maintenance.compact_logs(engine, max_lines=700, lines_per_step=350).lines:
                pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(engine) as session:
        assert session.exec(select(sa.func.count()).select_from(RunLog)).one() == 0
        for run_id in run_ids:
            spans = session.exec(
                select(RunLogChunk.first_sequence, RunLogChunk.last_sequence)
                .where(RunLogChunk.run_id == run_id)
                .order_by(RunLogChunk.first_sequence)
            ).all()
            covered = [n for first, last in spans for n in range(first, last + 1)]
            assert covered == list(range(1, 2_501))  # every line once, no overlap, no gap
    for run_id in run_ids:
        assert run_row(engine, run_id).log_storage == "chunks"
        assert run_logs.read_lines(engine, run_id=run_id, limit=5_000) == expected[run_id]


# --- retention ------------------------------------------------------------------------------------

NOW = START + timedelta(days=40)


def set_retention(engine: Engine, key: str, days: int | None) -> None:
    with session_scope(engine) as session:
        project = projects.get_by_key(session=session, key=key) or projects.create_project(
            session=session, key=key
        )
        projects.update_settings(
            session=session, actor=None, project_key=key, name=project.name, slots=2,
            learning_mode_default=False, default_model=None, log_retention_days=days,
        )  # fmt: skip


def events(engine: Engine, run_id: int) -> list[str]:
    with Session(engine) as session:
        query = select(FlowEvent.event_type).where(FlowEvent.run_id == run_id)
        return list(session.exec(query.order_by(FlowEvent.id)).all())


def test_retention_removes_only_old_finished_logs_and_keeps_the_runs(
    log_db: Engine, admin: tuple[Principal, str]
) -> None:
    """Installation default 30 days; project "keep" keeps forever, "short" keeps 5 days."""
    set_retention(log_db, "keep", 0)
    set_retention(log_db, "short", 5)
    old = make_run(log_db, tokens_input=1234, summary="did the work")
    recent = make_run(log_db, finished_at=NOW - timedelta(days=10))
    running = make_run(log_db, status="running")
    unfinished = make_run(log_db)  # old, but its log is not complete yet
    compacted = make_run(log_db)
    kept_forever = make_run(log_db, project_key="keep")
    short = make_run(log_db, project_key="short", finished_at=NOW - timedelta(days=7))
    for run_id in (old, recent, running, unfinished, compacted, kept_forever, short):
        write(log_db, run_id, example_lines(50), final=run_id not in (running, unfinished))
    log_maintenance.compact_logs(log_db, run_ids=[compacted])
    assert storage(log_db, compacted)[0] == "chunks"
    old_events = events(log_db, old)

    result = log_maintenance.apply_retention(log_db, default_days=30, now=NOW)
    assert sorted(result.marked) == sorted(result.removed) == sorted([old, compacted, short])
    for run_id in (old, compacted, short):
        run = run_row(log_db, run_id)
        assert (run.log_storage, run.log_sequence) == ("removed", 50)  # the count stays
        assert run.log_removed_at is not None
        assert run_logs.read_lines(log_db, run_id=run_id) == []
        assert run_logs.search(log_db, run_id=run_id, needle="step") is None
        assert list(run_logs.iter_text(log_db, run_id=run_id)) == []
    with Session(log_db) as session:
        assert (
            session.exec(
                select(sa.func.count())
                .select_from(RunLogChunk)
                .where(RunLogChunk.run_id == compacted)
            ).one()
            == 0
        )
        left = session.exec(select(RunLog.run_id).distinct()).all()
    assert sorted(left) == sorted([recent, running, unfinished, kept_forever])
    for run_id in (recent, running, unfinished, kept_forever):
        assert len(run_logs.read_lines(log_db, run_id=run_id)) == 50
        assert run_row(log_db, run_id).log_storage in ("rows", "chunks")

    # The run itself, its usage, summary and timeline stay; the timeline says what happened.
    run = run_row(log_db, old)
    assert (run.status, run.tokens_input, run.summary) == ("succeeded", 1234, "did the work")
    assert events(log_db, old) == [*old_events, "log_removed"]
    principal, _ = admin
    snapshot = load_snapshot(principal, old, after=0, is_tail=True)
    assert (snapshot.total, snapshot.lines) == (0, [])
    assert "removed by log retention" in snapshot.header.log_removed
    assert "50 lines" in snapshot.header.log_removed
    # Nothing more to do on the next tick.
    again = log_maintenance.apply_retention(log_db, default_days=30, now=NOW)
    assert (again.marked, again.removed, again.rows_deleted) == ([], [], 0)
    # Without an installation default only "short" removes anything.
    assert log_maintenance.mark_expired(log_db, default_days=None, now=NOW) == []


@contextmanager
def deletes_counted(engine: Engine) -> Iterator[list[int]]:
    """The number of rows each DELETE statement removed."""
    counts: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            counts.append(cursor.rowcount)

    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "after_cursor_execute", after)


def test_retention_deletes_in_bounded_statements_and_readers_see_the_log_removed_at_once(
    log_db: Engine,
) -> None:
    run_id = make_run(log_db)
    write(log_db, run_id, example_lines(1_050))
    log_maintenance.compact_step(log_db, run_id=run_id, limit=250)  # 1 chunk + 800 rows
    assert log_maintenance.mark_expired(log_db, default_days=30, now=NOW) == [run_id]
    assert run_row(log_db, run_id).log_storage == LogStorage.REMOVING.value
    assert run_logs.read_lines(log_db, run_id=run_id) == []  # rows still there, not shown

    with deletes_counted(log_db) as counts:
        first = log_maintenance.purge_removed(log_db, max_statements=3, rows_per_delete=100)
    assert counts == [100, 100, 100] and first.rows_deleted == 300 and first.removed == []
    assert storage(log_db, run_id) == ("removing", 500, 1)
    with deletes_counted(log_db) as counts:
        rest = log_maintenance.purge_removed(log_db, max_statements=10, rows_per_delete=100)
    assert counts == [100, 100, 100, 100, 100, 0, 1] and rest.removed == [run_id]
    assert storage(log_db, run_id) == ("removed", 0, 0)


def test_a_project_may_keep_logs_longer_or_shorter_than_the_installation(
    log_db: Engine,
) -> None:
    runs = {key: make_run(log_db, project_key=key, finished_at=NOW - timedelta(days=20))
            for key in ("default", "longer", "shorter", "forever")}  # fmt: skip
    for run_id in runs.values():
        write(log_db, run_id, example_lines(5))
    set_retention(log_db, "longer", 60)
    set_retention(log_db, "shorter", 10)
    set_retention(log_db, "forever", 0)
    marked = log_maintenance.mark_expired(log_db, default_days=14, now=NOW)
    assert sorted(marked) == sorted([runs["default"], runs["shorter"]])
    set_retention(log_db, "longer", None)  # back to the installation's 14 days
    assert log_maintenance.mark_expired(log_db, default_days=14, now=NOW) == [runs["longer"]]
    with Session(log_db) as session:
        assert (
            session.exec(select(AgentRun.log_storage).where(AgentRun.id == runs["forever"])).one()
            == "rows"
        )
