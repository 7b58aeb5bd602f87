"""The run page's state: one run's header, its timeline, and a bounded window of its log.

The full log stays in the database; the browser only ever holds `WINDOW` lines, rendered on the
server into one escaped HTML string (ANSI colours as styled spans, search matches marked), so a
100,000-line log costs the page no more than a short one.

Keeping up with a live run is one operation, `_sync`: re-check access, reload the header and
timeline, and fetch the lines after the last sequence this viewer holds. Because it resumes from
that sequence, a sync after a dropped websocket or a missed or doubled push neither loses nor
repeats a line. What wakes it is a push, not a poll: `load_run` links the tab's `RunLive` to the
token `run-<id>` (web/live.py), every transition and stored log batch of the run bumps that
token's version, and the page's trigger calls `refresh_live` with it. After a reconnect Reflex
runs `load_run` again, which reloads the tail and links again.

Every handler resolves the session again on the server; cancel and rerun check the caller's
project role with `is_allowed` before calling the service, whatever the page showed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import reflex as rx
from sqlmodel import Session

from codexk8s import urls
from codexk8s.config import get_settings
from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.domain.explanations import NEUTRAL_REASONS, actor_words, describe_event, reason_words
from codexk8s.domain.logs import LogSummary, format_bytes
from codexk8s.domain.runs import RunStatus
from codexk8s.errors import ForbiddenError, NotFoundError
from codexk8s.services import (
    agent_runs,
    audit,
    run_access,
    run_control,
    run_logs,
    run_story,
    sessions,
)
from codexk8s.services.agent_runs import RunDetail
from codexk8s.services.audit import EventRow
from codexk8s.services.run_logs import StoredLine
from codexk8s.services.run_story import RunStory
from codexk8s.services.transactions import in_transaction
from codexk8s.web import ansi, live
from codexk8s.web.components import formatters as fmt
from codexk8s.web.components.status import STATUS_WORDS, status_color
from codexk8s.web.http.auth import session_ttl
from codexk8s.web.state.actions import attempt
from codexk8s.web.state.auth import AuthState, session_token

WINDOW = 500  # log lines a viewer holds at most
NOT_VISIBLE = "This run does not exist, or you are not allowed to see it."
SIGNED_OUT = "Your session has ended; sign in again to see this run."
GITHUB_WEB = "https://github.com"


@dataclass(frozen=True, slots=True)
class RunHeader:
    """The run as its page header shows it: display strings, computed on the server."""

    id: int = 0
    project_key: str = ""
    status: str = ""
    status_color: str = "gray"
    stage: str = ""
    agent: str = ""
    model: str = ""
    repository: str = ""
    repository_url: str = ""
    issue: str = ""
    issue_url: str = ""
    issue_title: str = ""
    pr: str = ""
    pr_url: str = ""
    slot: str = ""
    namespace: str = ""
    created: str = ""
    created_ago: str = ""
    started: str = ""
    finished: str = ""
    duration: str = ""
    tokens_input: str = "0"
    tokens_cached: str = "0"
    tokens_output: str = "0"
    tokens_reasoning: str = "0"
    tokens_total: str = "0"
    cost: str = ""
    status_reason: str = ""
    status_message: str = ""
    # The reason in words ("The agent reported a failure"), and whether it is a failure (red).
    reason_text: str = ""
    is_failure: bool = False
    is_active: bool = False
    is_cancel_requested: bool = False
    # Its agent asked a person something and waits for the answer (the Inbox).
    is_waiting: bool = False
    # What it waits for: "a person", or, answered, "a free slot" (it gave its own away).
    waiting_for: str = "a person"
    # Notes on the stored log: what the per-run cap dropped, and removal by retention.
    log_truncated: str = ""
    log_removed: str = ""
    # What it produced, or why it waits (services/run_story.py).
    summary: str = ""
    branch: str = ""
    changed_files: tuple[str, ...] = ()
    no_pr_reason: str = ""
    queue_text: str = ""
    # The project documents its prompt received, one line each, and a note on them (no
    # services.yaml, its problems, documents already in a resumed session); its Codex session.
    documents: tuple[str, ...] = ()
    documents_note: str = ""
    session_text: str = ""
    attempt_text: str = ""
    parent_href: str = ""
    tab_title: str = "Run"


@dataclass(frozen=True, slots=True)
class EventView:
    id: int
    at: str  # time of day
    at_iso: str  # for the jump into the log
    at_full: str  # hover title: the full timestamp
    since: str  # "+12s" after the previous event
    event_type: str  # the title, in words
    actor: str
    detail: str
    tone: str  # neutral, good, bad, warn
    icon: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    header: RunHeader
    events: list[EventView]
    lines: list[StoredLine]
    total: int
    can_control: bool


_EVENT_ICONS = {
    "run_created": "circle-plus",
    "run_rerun_requested": "rotate-ccw",
    "run_pending": "clock",
    "run_starting": "rocket",
    "run_running": "play",
    "run_progress": "terminal",
    "run_usage": "gauge",
    "run_result": "file-check",
    "run_failure_reported": "octagon-alert",
    "run_succeeded": "circle-check",
    "run_failed": "circle-x",
    "run_canceled": "circle-slash",
    "run_cancel_requested": "hand",
    "run_cancel_sent": "hand",
    "github_feedback_failed": "github",
    "log_truncated": "scissors",
    "log_removed": "archive-x",
}


def _log_notes(log: LogSummary) -> tuple[str, str]:
    truncated = (
        f"Log truncated: {log.dropped_lines:,} lines ({format_bytes(log.dropped_bytes)}) were "
        "dropped after the run reached the per-run log cap; the run itself went on."
        if log.is_truncated
        else ""
    )
    removed = (
        f"This run's log ({log.lines:,} lines) was removed by log retention on "
        f"{fmt.timestamp(log.removed_at)}. Its timeline, usage and summary are kept."
        if log.is_removed
        else ""
    )
    return truncated, removed


_SKIPPED_WORDS = {
    "missing": "not found", "not_a_file": "not a file",
    "outside_repository": "outside the repository", "not_text": "not text",
    "too_large": "too large", "budget": "over the size budget",
}  # fmt: skip


def _documents(documents: dict[str, Any] | None) -> tuple[tuple[str, ...], str]:
    """The documents a run's prompt received, one line each, and a note on them."""
    if documents is None:
        return (), ""
    lines = []
    for doc in documents.get("documents") or []:
        path = str(doc.get("path") or "")
        skipped = doc.get("skipped")
        if skipped:
            lines.append(f"{path}: left out, {_SKIPPED_WORDS.get(skipped, skipped)}")
        else:
            cut = ", cut to fit the budget" if doc.get("truncated") else ""
            lines.append(f"{path} ({format_bytes(int(doc.get('bytes') or 0))}{cut})")
    source = documents.get("services_yaml") or "services.yaml"
    notes = []
    if documents.get("resumed"):
        notes.append("The resumed session already held the project documents.")
    elif not documents.get("found"):
        notes.append(f"No {source} in the repository: no project documents.")
    elif not lines:
        notes.append(f"{source} lists no documents for this stage.")
    notes += [f"{source}: {problem}" for problem in documents.get("problems") or []]
    return tuple(lines), " ".join(notes)


def _session_text(summary: dict[str, Any] | None) -> str:
    """The run's Codex session in words: resumed from which run, what it left, any note."""
    if not summary:
        return ""
    parts = []
    resumed = summary.get("resumed")
    if resumed:
        parts.append(
            f"Resumed the session of run #{resumed.get('from_run')}"
            + (f" (version {resumed['version']})" if resumed.get("version") else "")
            + "."
        )
    parts += [str(note) for note in summary.get("notes") or []]
    stored = summary.get("stored")
    if stored:
        parts.append(
            f"Left its session for a revise run (version {stored.get('version')}, "
            f"{format_bytes(int(stored.get('bytes') or 0))})."
        )
    return " ".join(part for part in parts if part)


def _queue_text(story: RunStory | None) -> str:
    queue = story.queue if story is not None else None
    if queue is None:
        return ""
    if queue.is_deferred:
        return (
            "The runtime asked to wait before launching"
            + (f": {queue.message}" if queue.message else "")
            + ". It is tried again shortly."
        )
    holders = ", ".join(f"#{run_id}" for run_id in queue.holders)
    in_use = f"{queue.project_key} {len(queue.holders)}/{queue.slots} in use"
    if len(queue.holders) >= queue.slots:
        by = f" by {holders}" if holders else ""
        return f"Waiting for a slot: {in_use}{by}; {fmt.ordinal(queue.position)} in line."
    return f"Waiting to be picked up: {in_use}; {fmt.ordinal(queue.position)} in line."


def header_for(run: RunDetail, story: RunStory | None = None) -> RunHeader:
    repo_url = f"{GITHUB_WEB}/{run.repository}" if run.repository else ""
    model = story.model if story is not None else (run.model or "")
    if run.reasoning_effort:
        model = f"{model} · {run.reasoning_effort} reasoning"
    pr_url = run.pr_url or (
        f"{repo_url}/pull/{run.pr_number}" if repo_url and run.pr_number else ""
    )
    log_truncated, log_removed = _log_notes(run.log)
    documents, documents_note = _documents(run.documents)
    reason = run.status_reason or ""
    status = RunStatus(run.status)
    is_failure = status is RunStatus.FAILED or (
        status is RunStatus.CANCELED and reason not in NEUTRAL_REASONS and reason != ""
    )
    attempt = ""
    if run.parent_run_id is not None:
        attempt = f"Attempt {run.attempt} · rerun of #{run.parent_run_id}"
    tokens_total = run.tokens_input + run.tokens_output
    return RunHeader(
        id=run.id, project_key=run.project_key, status=run.status,
        status_color=status_color(run.status),
        stage=run.stage + (" (revise)" if run.is_revise else ""), agent=run.agent_key,
        model=model, repository=run.repository or "", repository_url=repo_url,
        issue=f"#{run.issue_number}" if run.issue_number else "",
        issue_url=f"{repo_url}/issues/{run.issue_number}" if repo_url and run.issue_number else "",
        issue_title=run.issue_title or "",
        pr=f"#{run.pr_number}" if run.pr_number else ("pull request" if run.pr_url else ""),
        pr_url=pr_url, slot=str(run.slot_number) if run.slot_number is not None else "",
        namespace=run.namespace or "", created=fmt.timestamp(run.created_at),
        created_ago=fmt.relative(run.created_at),
        started=fmt.timestamp(run.started_at), finished=fmt.timestamp(run.finished_at),
        duration=fmt.span(run.started_at, run.finished_at),
        tokens_input=fmt.number(run.tokens_input), tokens_cached=fmt.number(run.tokens_cached),
        tokens_output=fmt.number(run.tokens_output),
        tokens_reasoning=fmt.number(run.tokens_reasoning), tokens_total=fmt.number(tokens_total),
        cost=fmt.money(run.cost_usd),
        status_reason=reason, status_message=run.status_message or "",
        reason_text=reason_words(reason), is_failure=is_failure,
        is_active=not status.is_terminal,
        is_cancel_requested=run.cancel_requested_at is not None,
        is_waiting=run.waiting_since is not None and not status.is_terminal,
        waiting_for="a free slot" if run.is_waiting_for_slot else "a person",
        log_truncated=log_truncated, log_removed=log_removed,
        summary=(story.summary if story else run.summary) or "",
        branch=story.branch if story else "",
        changed_files=tuple(story.changed_files) if story else (),
        no_pr_reason=story.no_pr_reason if story else "",
        queue_text=_queue_text(story) if status is RunStatus.PENDING else "",
        documents=documents, documents_note=documents_note, session_text=_session_text(run.session),
        attempt_text=attempt,
        parent_href=urls.run_page(run.parent_run_id) if run.parent_run_id else "",
        tab_title=f"{STATUS_WORDS.get(run.status, run.status).capitalize()} · run #{run.id} · "
        f"{run.project_key} · codexk8s",
    )  # fmt: skip


def _event_view(event: EventRow, previous: EventRow | None) -> EventView:
    words = describe_event(event.event_type, event.payload)
    since = ""
    if previous is not None:
        gap = (event.created_at - previous.created_at).total_seconds()
        since = f"+{fmt.duration(gap)}" if gap >= 1 else ""
    return EventView(
        id=event.id,
        at=fmt.clock(event.created_at),
        at_iso=event.created_at.astimezone(UTC).isoformat(),
        at_full=fmt.timestamp(event.created_at),
        since=since,
        event_type=words.title,
        actor=actor_words(event.actor_type, event.actor_id),
        detail=words.detail,
        tone=words.tone,
        icon=_EVENT_ICONS.get(event.event_type, "dot"),
    )


def principal_for(token: str | None) -> Principal | None:
    return sessions.authenticate(session_token=token, ttl=session_ttl(get_settings()))


def _read_run(
    *, session: Session, principal: Principal, run_id: int
) -> tuple[ProjectRole | None, RunDetail, list[EventRow], RunStory]:
    """The run as PRINCIPAL may see it, its timeline and its story, in one transaction."""
    role = run_access.require_run(
        session=session, actor=principal, run_id=run_id, action=Action.VIEW_PROJECT
    )
    run = agent_runs.get_run(session=session, run_id=run_id)
    events = audit.list_run_events(session=session, run_id=run_id)
    return role, run, events, run_story.explain_run(session=session, run_id=run_id)


def load_snapshot(
    principal: Principal,
    run_id: int,
    *,
    after: int | None,
    limit: int = WINDOW,
    is_tail: bool = False,
) -> Snapshot:
    """Everything the page shows for RUN_ID as PRINCIPAL may see it, with up to LIMIT log lines
    after AFTER (None: no lines); IS_TAIL skips ahead so that the lines end at the log's end.
    NotFoundError when the run is missing or not visible."""
    role, run, events, story = in_transaction(_read_run, principal=principal, run_id=run_id)
    # A log removed by retention has no lines to show (the header says why).
    total = 0 if run.log.is_removed else run.log.lines
    lines: list[StoredLine] = []
    if after is not None and limit > 0:
        if is_tail:
            after = max(after, total - limit)
        if after < total:
            lines = run_logs.read_lines(run_id=run_id, after=after, limit=limit)
    return Snapshot(
        header=header_for(run, story),
        events=[
            _event_view(event, events[index - 1] if index else None)
            for index, event in enumerate(events)
        ],
        lines=lines,
        total=total,
        can_control=is_allowed(principal, Action.CANCEL_RUN, role),
    )


def _line_html(line: StoredLine, needle: str, current: int) -> str:
    stamp = line.ts.astimezone(UTC)
    stream = " log-stderr" if line.stream == "stderr" else ""
    current_class = " log-line-current" if line.sequence == current else ""
    body = ansi.to_html(line.line, highlight=needle, is_current=line.sequence == current)
    return (
        f'<div class="log-line{stream}{current_class}" data-seq="{line.sequence}" '
        f'id="L{line.sequence}">'
        # A permalink: the run page opens at this line (`?line=N`).
        f'<a class="log-no" href="?line={line.sequence}" title="Link to line {line.sequence}">'
        f"{line.sequence}</a>"
        f'<time class="log-ts" datetime="{stamp.isoformat()}">'
        f"{stamp.strftime('%H:%M:%S.%f')[:-3]}</time>"
        f'<span class="log-text">{body}</span></div>'
    )


def render_window(lines: list[StoredLine], *, needle: str = "", current: int = 0) -> str:
    """The window of lines as one HTML string (everything from the log escaped)."""
    return "".join(_line_html(line, needle, current) for line in lines)


def _parse_run_id(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


class RunState(rx.State):
    """One run page per tab."""

    is_loading: bool = True
    # The route's run id this state was loaded for: until on_load catches up with a new URL
    # (the tab's state comes back with the previous run's values), the page shows the skeleton.
    loaded_for: str = ""
    is_missing: bool = False
    error: str = ""
    notice: str = ""
    run: RunHeader = RunHeader()
    events: list[EventView] = []
    can_control: bool = False

    log_html: str = ""
    first_line: int = 0  # sequence of the first line in the window (0: empty window)
    last_line: int = 0  # sequence of the last line in the window
    total_lines: int = 0  # lines stored so far
    is_following: bool = True
    is_live: bool = False  # linked to the run's live updates while it is active

    focus_line: int = 0  # a line opened by its permalink or from the timeline
    search_query: str = ""
    search_input: str = ""
    match_count: int = 0
    match_index: int = 0
    match_line: int = 0

    _run_id: int = 0
    _lines: list[StoredLine] = []
    _generation: int = 0
    _seen_version: int = 0  # the RunLive version this tab last synced to
    _tab_sent: str = ""  # the tab title last set in the browser

    @rx.var
    def unseen_lines(self) -> int:
        """Lines stored after the window's end (shown while paused or scrolled back)."""
        return max(0, self.total_lines - self.last_line)

    @rx.var
    def has_older(self) -> bool:
        return self.first_line > 1

    @rx.var
    def download_url(self) -> str:
        return urls.API_RUN_LOG_TEXT.format(run_id=self.run.id) if self.run.id else ""

    # --- plumbing -----------------------------------------------------------------------------

    def _session_token(self) -> str | None:
        return session_token(self.router.headers)

    def _clear(self, message: str, *, is_missing: bool) -> None:
        self.run, self.events, self._lines = RunHeader(), [], []
        self.log_html, self.first_line, self.last_line, self.total_lines = "", 0, 0, 0
        self.can_control, self.is_missing, self.error = False, is_missing, message
        self.is_loading = False

    def _show_window(self) -> None:
        self.first_line = self._lines[0].sequence if self._lines else 0
        self.last_line = self._lines[-1].sequence if self._lines else self.last_line
        self.log_html = render_window(
            self._lines, needle=self.search_query, current=self.match_line or self.focus_line
        )

    def _apply_header(self, snapshot: Snapshot) -> None:
        # Assign only what changed: every assignment is sent to the browser.
        if snapshot.header != self.run:
            self.run = snapshot.header
        if snapshot.events != self.events:
            self.events = snapshot.events
        if snapshot.total != self.total_lines:
            self.total_lines = snapshot.total
        if snapshot.can_control != self.can_control:
            self.can_control = snapshot.can_control
        if self.is_missing or self.is_loading:
            self.is_missing, self.is_loading = False, False

    def _replace_window(self, snapshot: Snapshot) -> None:
        self._apply_header(snapshot)
        self._lines = list(snapshot.lines)
        self.last_line = 0
        self._show_window()

    async def _fetch(
        self, *, after: int | None, is_tail: bool = False, is_locked: bool = True
    ) -> Snapshot | None:
        """A snapshot for the signed-in caller, or None with the page cleared when they are
        signed out or may not see the run. The I/O runs in a thread; IS_LOCKED says whether the
        caller holds the state (a normal handler) or not (the background follow loop)."""
        if is_locked:
            token, run_id = self._session_token(), self._run_id
        else:
            async with self:
                token, run_id = self._session_token(), self._run_id

        def work() -> Snapshot | str:
            principal = principal_for(token)
            if principal is None:
                return SIGNED_OUT
            try:
                return load_snapshot(principal, run_id, after=after, is_tail=is_tail)
            except NotFoundError:
                return NOT_VISIBLE

        found = await asyncio.to_thread(work)
        if isinstance(found, Snapshot):
            return found
        if is_locked:
            self._clear(found, is_missing=found == NOT_VISIBLE)
        else:
            async with self:
                self._clear(found, is_missing=found == NOT_VISIBLE)
        return None

    # --- loading and following ----------------------------------------------------------------

    @rx.event
    async def load_run(self):
        """`on_load` of the run page: the header, the timeline and the log's tail, then follow."""
        auth = await self.get_state(AuthState)
        await auth._resolve_principal()
        self._generation += 1
        self.is_loading, self.is_missing, self.error, self.notice = True, False, "", ""
        self.is_live, self.is_following = False, True
        self.search_query = self.search_input = ""
        self.match_count = self.match_index = self.match_line = self.focus_line = 0
        route_id = str(self.router.page.params.get("run_id", ""))
        wanted_line = _parse_run_id(str(self.router.page.params.get("line", "")))
        run_id = _parse_run_id(route_id)
        self.loaded_for = route_id
        if run_id is None:
            self._clear(NOT_VISIBLE, is_missing=True)
            return None
        self._run_id = run_id
        if wanted_line:
            # A permalink: open the window around the line and stay there.
            self.focus_line, self.is_following = wanted_line, False
            snapshot = await self._fetch(after=max(0, wanted_line - WINDOW // 2 - 1))
        else:
            snapshot = await self._fetch(after=0, is_tail=True)
        if snapshot is None:
            return None
        self._replace_window(snapshot)
        self._seen_version = await live.watch(self, live.RunLive, live.run_token(run_id))
        self.is_live = snapshot.header.is_active
        self._tab_sent = ""  # the trigger's mount sends it (see refresh_live)
        return _scroll_to_current() if wanted_line else None

    async def _sync(self, generation: int) -> bool:
        """One catch-up: header, timeline and, when following, the lines after the last sequence
        held (skipping ahead when more than a window was written). False when there is nothing
        more to follow or the page moved on."""
        async with self:
            is_following, last = self.is_following, self.last_line
        snapshot = await self._fetch(
            after=last if is_following else None, is_tail=True, is_locked=False
        )
        if snapshot is None:
            return False
        async with self:
            if generation != self._generation:
                return False
            self._apply_header(snapshot)
            self.is_live = snapshot.header.is_active
            # Apply lines only if no other handler moved the window meanwhile.
            if self.is_following and is_following and self.last_line == last and snapshot.lines:
                if snapshot.lines[0].sequence != last + 1:
                    self._lines = []  # skipped ahead: the old lines are not contiguous
                self._lines = (self._lines + snapshot.lines)[-WINDOW:]
                self._show_window()
            # A finished run's log is followed to its end; paused, there is nothing to wait for.
            return snapshot.header.is_active or (
                self.is_following and self.last_line < snapshot.total
            )

    @rx.event
    async def sync_now(self) -> None:
        """Catch up at once (also what a push leads to, see `refresh_live`)."""
        if self._run_id and not self.is_missing:
            await self._sync(self._generation)

    @rx.event
    async def refresh_live(self, version: int) -> None:
        """The run changed (its `RunLive` version moved): catch up, unless this version was
        already seen (the trigger also fires when it mounts)."""
        if version != self._seen_version:
            self._seen_version = version
            await self.sync_now()
        # The tab's title and icon follow the status; sent again when it changes, and once
        # when the page has mounted (the router sets the page's own title on navigation).
        if not self.run.id or self.run.tab_title == self._tab_sent:
            return None
        self._tab_sent = self.run.tab_title
        return tab_script(self.run)

    # --- the log window -----------------------------------------------------------------------

    async def _load_window(self, after: int, *, following: bool) -> None:
        snapshot = await self._fetch(after=after)
        if snapshot is None:
            return
        self.is_following = following
        self._replace_window(snapshot)

    @rx.event
    def pause(self) -> None:
        self.is_following = False

    @rx.event
    async def resume(self) -> None:
        """Follow again from the end of the log (what was written while paused is skipped to)."""
        await self._follow_tail()

    async def _follow_tail(self) -> None:
        snapshot = await self._fetch(after=0, is_tail=True)
        if snapshot is None:
            return
        self.focus_line = 0
        self.is_following = True  # the page says "following" only while the run is live
        self._replace_window(snapshot)

    @rx.event
    async def show_older(self) -> None:
        await self._load_window(max(0, self.first_line - 1 - WINDOW), following=False)

    @rx.event
    async def show_newer(self) -> None:
        await self._load_window(self.last_line, following=False)

    @rx.event
    async def show_start(self) -> None:
        await self._load_window(0, following=False)

    @rx.event
    def download_log(self):
        """The whole log from the download route (which checks access itself)."""
        if not self.run.id:
            return None
        return rx.download(url=self.download_url, filename=f"run-{self.run.id}.log")

    # --- search -------------------------------------------------------------------------------

    @rx.event
    def set_search_input(self, value: str) -> None:
        self.search_input = value[:200]

    async def _read_visible(self, read: Callable[[int], Any]) -> tuple[bool, Any]:
        """(True, READ(run id)) read in a thread when the signed-in caller may see this run;
        otherwise (False, None) with the page cleared and saying why."""
        token, run_id = self._session_token(), self._run_id

        def work() -> tuple[str, Any]:
            principal = principal_for(token)
            if principal is None:
                return SIGNED_OUT, None
            try:
                in_transaction(
                    run_access.require_run, actor=principal, run_id=run_id,
                    action=Action.VIEW_PROJECT,
                )  # fmt: skip
            except NotFoundError:
                return NOT_VISIBLE, None
            return "", read(run_id)

        refusal, value = await asyncio.to_thread(work)
        if refusal:
            self._clear(refusal, is_missing=refusal == NOT_VISIBLE)
            return False, None
        return True, value

    async def _show_around(self, line: int) -> None:
        """Stop following and show LINE: in the window held when it is there, else a window
        around it."""
        if self._lines and self.first_line <= line <= self.last_line:
            self.is_following = False
            self._show_window()
        else:
            await self._load_window(max(0, line - WINDOW // 2 - 1), following=False)

    async def _search(self, *, from_sequence: int, backwards: bool) -> None:
        needle = self.search_query

        def read(run_id: int) -> run_logs.SearchHit | None:
            return run_logs.search(
                run_id=run_id, needle=needle, from_sequence=from_sequence,
                backwards=backwards,
            )  # fmt: skip

        is_visible, hit = await self._read_visible(read)
        if not is_visible:
            return
        if hit is None:
            self.match_count = self.match_index = self.match_line = 0
            self._show_window()
            return
        self.match_count, self.match_index, self.match_line = hit.count, hit.index, hit.sequence
        await self._show_around(hit.sequence)

    @rx.event
    async def submit_search(self, form: dict | None = None):
        self.search_query = self.search_input.strip()
        if not self.search_query:
            return RunState.clear_search
        await self._search(from_sequence=0, backwards=False)
        return _scroll_to_match()

    @rx.event
    async def next_match(self):
        if self.search_query:
            await self._search(from_sequence=self.match_line, backwards=False)
            return _scroll_to_match()

    @rx.event
    async def previous_match(self):
        if self.search_query:
            await self._search(from_sequence=self.match_line or 1, backwards=True)
            return _scroll_to_match()

    @rx.event
    async def clear_search(self) -> None:
        """Forget the search; on a live run, follow its newest lines again (a search moved the
        window back, and those lines must not stay hidden)."""
        self.search_query = self.search_input = ""
        self.match_count = self.match_index = self.match_line = 0
        if self.is_live:
            await self._follow_tail()
        else:
            self._show_window()

    @rx.event
    async def jump_to_time(self, at_iso: str):
        """Open the log where a timeline event happened: the first line written at or after it."""
        try:
            at = datetime.fromisoformat(at_iso)
        except ValueError:
            return None
        is_visible, found = await self._read_visible(
            lambda run_id: run_logs.sequence_at(run_id=run_id, at=at)
        )
        if not is_visible or found == 0:
            return None
        self.focus_line = found
        await self._show_around(found)
        return _scroll_to_current()

    # --- cancel and rerun ---------------------------------------------------------------------

    async def _act(self, work: Callable[..., Any]) -> tuple[bool, Any]:
        """WORK (run_control.cancel_run or rerun, which check the caller may do it) on this run
        as the signed-in person; a refusal is shown in words."""
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.error = SIGNED_OUT
            return False, None
        return await attempt(
            self, work, run_id=self._run_id, actor=principal, refusals={
                NotFoundError: NOT_VISIBLE,
                ForbiddenError: "Your role on this project does not allow canceling or rerunning "
                "runs.",
            },
        )  # fmt: skip

    @rx.event
    async def cancel_run(self) -> None:
        ok, outcome = await self._act(run_control.cancel_run)
        if not ok:
            return
        self.notice = (
            "Run canceled." if outcome.is_immediate else "Asked the run to stop; it ends shortly."
        )
        head = await self._fetch(after=None)
        if head is not None:
            self._apply_header(head)

    @rx.event
    async def rerun_run(self):
        ok, new_id = await self._act(run_control.rerun)
        if not ok:
            return
        return rx.redirect(urls.run_page(new_id))


def tab_script(run: RunHeader) -> rx.event.EventSpec:
    """The browser tab says the run's status: its title, and a favicon in the status colour
    (assets/favicon-<status>.svg)."""
    icon = f"/favicon-{run.status}.svg" if run.status in STATUS_WORDS else "/favicon.ico"
    return rx.call_script(
        f"document.title = {json.dumps(run.tab_title)};"
        "(() => { let l = document.querySelector(\"link[rel~='icon']\");"
        " if (!l) { l = document.createElement('link'); l.rel = 'icon';"
        " document.head.appendChild(l); }"
        f" l.href = {json.dumps(icon)}; l.dataset.status = {json.dumps(run.status)}; }})()"
    )


def _scroll_to_current() -> rx.event.EventSpec:
    return rx.call_script(
        "document.querySelector('.log-line-current')"
        "?.scrollIntoView({block: 'center', behavior: 'instant'})"
    )


def _scroll_to_match() -> rx.event.EventSpec:
    return rx.call_script(
        "document.querySelector('.log-match-current')"
        "?.scrollIntoView({block: 'center', behavior: 'instant'})"
    )
