"""The run page in Chromium against the served app, whose engine runs agents on the local
runtime: the log follows as the process writes it, pauses and resumes, is searched and
downloaded; a read_write member cancels a run after confirming, a read member is not offered to."""

from __future__ import annotations

import re
import shlex
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s import urls
from codexk8s.crypto import SecretBox
from codexk8s.db.engine import session_scope
from codexk8s.db.models import AgentRun, RunLog, table_of, utcnow
from codexk8s.domain.logs import LogLimits
from codexk8s.domain.runtime import LogLine
from codexk8s.services import (
    agents,
    log_maintenance,
    projects,
    repositories,
    run_control,
    run_logs,
    run_start,
    users,
)
from codexk8s.services.run_states import add_event
from tests.conftest import TEST_SECRET_KEY, ServedApp
from tests.log_examples import START, make_run, write
from tests.web.test_projects_browser import served_engine  # noqa: F401 (a fixture)
from tests.web.test_users_browser import sign_in

pytestmark = pytest.mark.browser

LONG = 60_000  # ms: the first page load may wait for a busy machine

# Numbered lines, slowly; every 10th is a red "marker" line to search for.
SLOW_LINES = r"""
import sys, time
for i in range(1, 41):
    if i % 10 == 0:
        print(f"\x1b[31mmarker {i}\x1b[0m", flush=True)
    else:
        print(f"line {i}", flush=True)
    time.sleep(0.25)
"""
FOREVER = "import time\nprint('waiting', flush=True)\ntime.sleep(180)"


def command(code: str) -> str:
    return f"{sys.executable} -c {shlex.quote(code)}"


def setup(engine: Engine) -> tuple[str, str, str]:
    """A project with a writer and a reader, a repository, and agents whose commands print
    numbered lines (dev) or wait (em); returns the two emails and the project key."""
    suffix = uuid.uuid4().hex[:8]
    key, writer, reader = f"runs-{suffix}", f"w-{suffix}@example.com", f"r-{suffix}@example.com"
    with Session(engine) as session:
        users.add_user(session=session, email=writer, role="user")
        users.add_user(session=session, email=reader, role="user")
        projects.create_project(session=session, key=key, name="Run page", slots=4)
        projects.add_member(session=session, project_key=key, email=writer, role="read_write")
        projects.add_member(session=session, project_key=key, email=reader, role="read")
        repositories.add_repository(
            session=session, box=SecretBox(TEST_SECRET_KEY), project_key=key,
            full_name=f"octo-org/{key}", webhook_secret="s",
        )  # fmt: skip
        agents.set_agent(session=session, key="dev", command=command(SLOW_LINES), engine="process")
        agents.set_agent(session=session, key="em", command=command(FOREVER), engine="process")
        session.commit()
    return writer, reader, key


def start(engine: Engine, key: str, stage: str, issue: int) -> int:
    return run_start.start_run(
        engine, project_key=key, repository=f"octo-org/{key}", issue=issue, stage=stage
    )


def cancel_and_wait(engine: Engine, run_id: int) -> None:
    """Stop a run the test leaves behind (its process would outlive the served app)."""
    run_control.cancel_run(engine, run_id=run_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with Session(engine) as session:
            run = session.get(AgentRun, run_id)
            if run is not None and run.status == "canceled":
                return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not stop")


def last_seq(page: Page) -> int:
    sequences = page.locator("[data-testid=log-lines] [data-seq]").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.seq))"
    )
    return max(sequences, default=0)


def test_the_log_follows_pauses_searches_and_downloads(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    writer, _, key = setup(served_engine)
    run_id = start(served_engine, key, "dev", 101)
    sign_in(page, served_app, served_engine, writer)
    page.goto(served_app.base_url + urls.run_page(run_id))
    expect(page.get_by_test_id("run-title")).to_have_text(
        re.compile(rf"^Run #{run_id}( ·|$)"), timeout=LONG
    )
    lines = page.get_by_test_id("log-lines")
    expect(lines.locator('[data-seq="3"]')).to_contain_text("line 3", timeout=LONG)
    expect(page.get_by_test_id("run-status")).to_have_text("running")
    expect(page.get_by_test_id("live-badge")).to_be_visible()
    # The page follows: later lines arrive without any reload.
    expect(lines.locator('[data-seq="8"]')).to_contain_text("line 8", timeout=LONG)
    page.screenshot(path=str(artifacts_dir / "run-page-following.png"), full_page=True)

    page.get_by_test_id("log-pause").click()
    expect(page.get_by_test_id("log-resume")).to_be_visible()
    held = last_seq(page)
    expect(page.get_by_test_id("log-status")).to_contain_text("newer not shown", timeout=LONG)
    assert last_seq(page) == held  # paused: the window did not move
    page.get_by_test_id("log-resume").click()
    expect(page.get_by_test_id("log-pause")).to_be_visible()
    page.wait_for_function(
        f"() => Math.max(...[...document.querySelectorAll('[data-seq]')]"
        f".map(r => Number(r.dataset.seq))) > {held + 1}",
        timeout=LONG,
    )

    # Wait for the run to finish, then search and download the whole log.
    expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=LONG)
    expect(lines.locator('[data-seq="40"]')).to_contain_text("marker 40", timeout=LONG)
    # The red marker lines are rendered in colour, their text escaped.
    marker = lines.locator('[data-seq="10"] .log-text span')
    expect(marker).to_have_text("marker 10")
    assert "red" in (marker.get_attribute("style") or "")

    page.get_by_test_id("log-search").fill("MARKER")
    page.get_by_test_id("log-search-submit").click()
    count = page.get_by_test_id("log-match-count")
    expect(count).to_have_text("1 of 4")
    current = page.locator("mark.log-match-current")
    expect(current).to_have_count(1)
    expect(lines.locator('[data-seq="10"] mark.log-match-current')).to_have_text("marker")
    expect(page.locator("mark.log-match")).to_have_count(4)
    page.get_by_test_id("log-match-next").click()
    expect(count).to_have_text("2 of 4")
    expect(lines.locator('[data-seq="20"] mark.log-match-current')).to_be_visible()
    page.get_by_test_id("log-match-previous").click()
    page.get_by_test_id("log-match-previous").click()
    expect(count).to_have_text("4 of 4")
    expect(lines.locator('[data-seq="40"] mark.log-match-current')).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "run-page-search.png"), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_test_id("log-download").click()
    saved = tmp_path / "run.log"
    download_info.value.save_as(saved)
    stored = run_logs.read_lines(served_engine, run_id=run_id, limit=10_000)
    assert saved.read_text().splitlines() == [line.line for line in stored]
    assert len(stored) == 40

    timeline = page.get_by_test_id("run-timeline")
    expect(timeline).to_contain_text("Run created")
    expect(timeline).to_contain_text("Run succeeded")


def test_the_page_answers_what_happened(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
) -> None:
    """Issue #16: the result panel, a timeline in words with links into the log, failures in
    red, the status in the tab, line permalinks, and "following" only while the run is live."""
    writer, _, key = setup(served_engine)
    run_id = start(served_engine, key, "dev", 102)
    sign_in(page, served_app, served_engine, writer)
    page.goto(served_app.base_url + urls.run_page(run_id))
    expect(page.get_by_test_id("run-status")).to_have_text("running", timeout=LONG)
    expect(page).to_have_title(f"Running · run #{run_id} · {key} · codexk8s", timeout=LONG)
    icon = page.locator("link[rel~='icon']")
    expect(icon).to_have_attribute("href", "/favicon-running.svg")
    expect(page.get_by_test_id("log-status")).to_contain_text("following")
    expect(page.get_by_test_id("run-model")).to_have_text("gpt-5-codex")  # not "default"
    expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=LONG)
    expect(page).to_have_title(f"Succeeded · run #{run_id} · {key} · codexk8s")
    expect(icon).to_have_attribute("href", "/favicon-succeeded.svg")
    expect(page.get_by_test_id("log-status")).not_to_contain_text("following")
    result = page.get_by_test_id("run-result")
    expect(result.get_by_test_id("result-pr")).to_contain_text(
        "runs its own process, which reported no result"
    )
    expect(result.get_by_test_id("run-cost")).to_have_text("$0.00")
    timeline = page.get_by_test_id("run-timeline")
    for raw in ("owner:", "is_pull_request", "human ", "reason:"):
        expect(timeline).not_to_contain_text(raw)
    expect(timeline).to_contain_text("Slot taken, launching")
    # An event's time opens the log where it happened.
    running = page.get_by_test_id("timeline-event").filter(has_text="Agent started")
    running.get_by_test_id("timeline-log-link").click()
    expect(page.locator(".log-line-current")).to_have_count(1)
    page.screenshot(path=str(artifacts_dir / "run-page-result.png"), full_page=True)

    # A line's number is its permalink: the page opens at that line, marked.
    page.locator('[data-seq="25"] a.log-no').click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}\?line=25$"))
    expect(page.locator('[data-seq="25"].log-line-current')).to_be_visible(timeout=LONG)

    # A failed run: the reason in words, in red.
    failing = make_run(served_engine, project_key=key, status="failed", has_workload=False)
    with served_engine.begin() as connection:
        connection.execute(
            AgentRun.__table__.update()  # type: ignore[attr-defined]
            .where(AgentRun.id == failing)
            .values(status_reason="pod_rejected", status_message="exceeded quota: cpu")
        )
        run = connection.execute(sa.select(table_of(AgentRun)).where(AgentRun.id == failing)).one()
        # Issue #19: what the prompt received and the session it resumed, as the runner records.
        for event_type, payload in (
            ("run_documents", {"services_yaml": "services.yaml", "found": True, "documents": [
                {"path": "docs/architecture.md", "bytes": 4_700, "chars": 4_700},
                {"path": "docs/gone.md", "bytes": 0, "chars": 0, "skipped": "missing"}]}),
            ("session_resume_started", {"session_id": "s", "version": 2, "from_run": run_id}),
        ):  # fmt: skip
            add_event(
                connection, correlation_id=run.correlation_id, event_type=event_type,
                run_id=failing, project_id=run.project_id, actor_type="agent", payload=payload,
            )  # fmt: skip
    expect(result.get_by_test_id("result-documents")).to_have_count(0)  # none recorded
    page.goto(served_app.base_url + urls.run_page(failing))
    documents = page.get_by_test_id("result-documents")
    expect(documents).to_contain_text("docs/architecture.md (4.6 KiB)", timeout=LONG)
    expect(documents).to_contain_text("docs/gone.md: left out, not found")
    expect(page.get_by_test_id("result-session")).to_have_text(
        f"Resumed the session of run #{run_id} (version 2)."
    )
    callout = page.get_by_test_id("status-reason")
    expect(callout).to_have_text(
        "The cluster refused to create the run's pod: exceeded quota: cpu", timeout=LONG
    )
    expect(callout).to_have_attribute("role", "alert")
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(artifacts_dir / "run-page-failed-dark.png"), full_page=True)
    expect(page).to_have_title(f"Failed · run #{failing} · {key} · codexk8s")


def test_cancel_by_a_writer_and_not_offered_to_a_reader(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
) -> None:
    writer, reader, key = setup(served_engine)
    run_id = start(served_engine, key, "plan", 202)

    sign_in(page, served_app, served_engine, reader)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.emulate_media(color_scheme="dark")
    page.goto(served_app.base_url + urls.run_page(run_id))
    expect(page.get_by_test_id("run-title")).to_have_text(
        re.compile(rf"^Run #{run_id}( ·|$)"), timeout=LONG
    )
    expect(page.get_by_test_id("log-lines")).to_contain_text("waiting", timeout=LONG)
    expect(page.get_by_test_id("cancel-run")).to_have_count(0)
    expect(page.get_by_test_id("rerun-run")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "run-page-reader-phone-dark.png"), full_page=True)

    # A run id that does not exist and one the reader may not see look the same.
    page.goto(served_app.base_url + urls.run_page(run_id + 100_000))
    expect(page.get_by_test_id("run-not-visible")).to_be_visible(timeout=LONG)
    page.screenshot(path=str(artifacts_dir / "run-page-not-found.png"), full_page=True)

    page.context.clear_cookies()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="light")
    sign_in(page, served_app, served_engine, writer)
    page.goto(served_app.base_url + urls.run_page(run_id))
    expect(page.get_by_test_id("run-status")).to_have_text("running", timeout=LONG)
    page.get_by_test_id("cancel-run").click()
    expect(page.get_by_role("alertdialog")).to_contain_text("Cancel this run?")
    page.screenshot(path=str(artifacts_dir / "run-page-cancel-dialog.png"))
    page.get_by_test_id("cancel-run-dismiss").click()  # changing one's mind changes nothing
    expect(page.get_by_role("alertdialog")).to_have_count(0)
    page.get_by_test_id("cancel-run").click()
    page.get_by_test_id("cancel-run-confirm").click()
    expect(page.get_by_test_id("run-notice")).to_contain_text(re.compile("stop|canceled"))
    # The state change is pushed to the page: no reload.
    expect(page.get_by_test_id("run-status")).to_have_text("canceled", timeout=LONG)
    expect(page.get_by_test_id("rerun-run")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "run-page-canceled.png"), full_page=True)
    with Session(served_engine) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None and run.status == "canceled"

    # Rerun, confirmed, opens the new run's page.
    page.get_by_test_id("rerun-run").click()
    page.get_by_test_id("rerun-run-confirm").click()
    page.wait_for_url(lambda url: url.rsplit("/", 1)[1] != str(run_id), timeout=LONG)
    new_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_test_id("run-title")).to_have_text(
        re.compile(rf"^Run #{new_id}( ·|$)"), timeout=LONG
    )
    with Session(served_engine) as session:
        rerun = session.get(AgentRun, new_id)
        assert rerun is not None and rerun.parent_run_id == run_id
    cancel_and_wait(served_engine, new_id)


def test_a_dropped_connection_resyncs_without_lost_or_repeated_lines(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
) -> None:
    writer, _, key = setup(served_engine)
    run_id = start(served_engine, key, "dev", 303)
    sign_in(page, served_app, served_engine, writer)
    page.goto(served_app.base_url + urls.run_page(run_id))
    lines = page.get_by_test_id("log-lines")
    expect(lines.locator('[data-seq="3"]')).to_be_visible(timeout=LONG)
    page.context.set_offline(True)  # the websocket drops while the run keeps writing
    # Reflex says so when its websocket is gone: the drop really happened.
    expect(page.get_by_text("Cannot connect to server")).to_be_visible(timeout=LONG)
    page.wait_for_timeout(2_000)
    page.screenshot(path=str(artifacts_dir / "run-page-offline.png"), full_page=True)
    page.context.set_offline(False)
    expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=LONG)
    expect(lines.locator('[data-seq="40"]')).to_contain_text("marker 40", timeout=LONG)
    shown = lines.locator("[data-seq]").evaluate_all(
        "rows => rows.map(row => [Number(row.dataset.seq), row.querySelector('.log-text')"
        ".textContent])"
    )
    assert shown == [
        [n, f"marker {n}" if n % 10 == 0 else f"line {n}"] for n in range(1, 41)
    ]  # every line once, in order, nothing from before the drop repeated
    page.screenshot(path=str(artifacts_dir / "run-page-after-reconnect.png"), full_page=True)


def session_lookups(engine: Engine) -> int:
    """How often the sessions table was read (every page sync resolves the viewer's session)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text(
                    "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0)"
                    " FROM pg_stat_user_tables WHERE relname = 'sessions'"
                )
            ).scalar_one()
        )


STATS_FLUSH_SECONDS = 12  # PostgreSQL backends publish their statistics within 10 s of idling


def test_an_open_page_of_an_idle_run_does_not_poll(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
) -> None:
    """Updates are pushed (web/live.py): a page whose run changes nothing asks nothing."""
    _, reader, key = setup(served_engine)
    run_id = start(served_engine, key, "plan", 404)  # waits for minutes: always "running"
    sign_in(page, served_app, served_engine, reader)
    page.goto(served_app.base_url + urls.run_page(run_id))
    expect(page.get_by_test_id("log-lines")).to_contain_text("waiting", timeout=LONG)
    time.sleep(STATS_FLUSH_SECONDS)
    before = session_lookups(served_engine)
    time.sleep(STATS_FLUSH_SECONDS)
    assert session_lookups(served_engine) - before <= 2  # no per-viewer sync loop
    page.close()
    with Session(served_engine) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None and run.status == "running"
    cancel_and_wait(served_engine, run_id)


def test_a_compacted_log_reads_like_a_live_one_with_notes_for_the_cap_and_retention(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    """A finished log cut at the cap and compacted into chunks: its tail, older windows, search
    and download work as before, and the page says how much the cap dropped; a log removed by
    retention says so instead of showing lines."""
    writer, _, key = setup(served_engine)
    capped = make_run(served_engine, project_key=key)
    lines = [
        LogLine("stdout", f"\x1b[36mstep\x1b[0m {n}" + (" needle-rare" if n == 17 else ""),
                START, str(n))
        for n in range(1, 1_801)
    ]  # fmt: skip
    write(served_engine, capped, lines, limits=LogLimits(max_lines=1_500, max_bytes=10**9))
    log_maintenance.compact_logs(served_engine, run_ids=[capped])
    with Session(served_engine) as session:
        run = session.get(AgentRun, capped)
        assert run is not None and run.log_storage == "chunks"
        assert (
            session.exec(
                sa.select(sa.func.count()).select_from(RunLog).where(RunLog.run_id == capped)
            ).one()[0]
            == 0
        )

    sign_in(page, served_app, served_engine, writer)
    page.goto(served_app.base_url + urls.run_page(capped))
    expect(page.get_by_test_id("run-title")).to_have_text(
        re.compile(rf"^Run #{capped}( ·|$)"), timeout=LONG
    )
    log = page.get_by_test_id("log-lines")
    expect(log.locator('[data-seq="1501"]')).to_contain_text("log truncated")
    expect(log.locator('[data-seq="1500"]')).to_have_text(re.compile("step 1500$"))
    expect(page.get_by_test_id("log-truncated")).to_contain_text("300 lines")
    expect(page.get_by_test_id("log-status")).to_contain_text("Lines 1002 to 1501 of 1501")
    page.screenshot(path=str(artifacts_dir / "run-page-compacted-capped.png"), full_page=True)
    page.get_by_test_id("log-older").click()
    expect(log.locator('[data-seq="502"]')).to_have_text(re.compile("step 502$"))
    page.get_by_test_id("log-search").fill("NEEDLE-rare")
    page.get_by_test_id("log-search-submit").click()
    expect(page.get_by_test_id("log-match-count")).to_have_text("1 of 1")
    expect(log.locator('[data-seq="17"] mark.log-match-current')).to_have_text("needle-rare")
    with page.expect_download() as download_info:
        page.get_by_test_id("log-download").click()
    saved = tmp_path / "capped.log"
    download_info.value.save_as(saved)
    stored = run_logs.read_lines(served_engine, run_id=capped, limit=10_000)
    assert saved.read_text().splitlines() == [line.line for line in stored]
    assert len(stored) == 1_501

    removed = make_run(served_engine, project_key=key, finished_at=utcnow() - timedelta(days=3))
    write(served_engine, removed, lines[:30])
    with session_scope(served_engine) as session:
        project = projects.require_by_key(session=session, key=key)
        projects.update_settings(
            session=session, actor=None, project_key=key, name=project.name, slots=4,
            learning_mode_default=False, default_model=None, log_retention_days=1,
        )  # fmt: skip
    log_maintenance.apply_retention(served_engine, default_days=None)
    page.goto(served_app.base_url + urls.run_page(removed))
    expect(page.get_by_test_id("run-title")).to_have_text(
        re.compile(rf"^Run #{removed}( ·|$)"), timeout=LONG
    )
    expect(page.get_by_test_id("log-removed")).to_contain_text(
        "log (30 lines) was removed by log retention"
    )
    expect(page.get_by_test_id("log-empty")).to_have_text("Removed by log retention.")
    expect(page.get_by_test_id("log-lines")).to_have_count(0)
    expect(page.get_by_test_id("run-timeline")).to_contain_text("Log removed by retention")
    page.screenshot(path=str(artifacts_dir / "run-page-log-removed.png"), full_page=True)
