"""The run page: header, cancel/rerun, the live log viewer and the run's timeline."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s import urls
from codexk8s.web import live
from codexk8s.web.components.buttons import icon_label_button
from codexk8s.web.components.confirm import confirm_button
from codexk8s.web.components.layout import empty_state, page, section_card, skeletons
from codexk8s.web.components.messages import messages, note
from codexk8s.web.components.status import status_badge
from codexk8s.web.state.run import EventView, RunState

# Styles for the server-rendered log lines (classes only: the HTML comes from
# codexk8s.web.ansi and codexk8s.web.state.run, never straight from the log).
LOG_CSS = """
.log-line { display: flex; gap: 0.75rem; padding: 0 0.5rem; white-space: pre-wrap;
  word-break: break-word; line-height: 1.45; }
.log-line:hover { background: var(--gray-a3); }
.log-no { color: var(--gray-9); min-width: 3.5rem; text-align: right; user-select: none;
  flex-shrink: 0; text-decoration: none; }
.log-no:hover { color: var(--accent-11); text-decoration: underline; }
.log-line { content-visibility: auto; contain-intrinsic-size: auto 1.45em; }
.log-ts { color: var(--gray-9); flex-shrink: 0; user-select: none; }
.log-text { flex: 1; min-width: 0; }
.log-stderr .log-text { color: var(--red-11); }
.log-line-current { background: var(--amber-a3); }
mark.log-match { background: var(--yellow-a6); color: inherit; border-radius: 2px; }
mark.log-match-current { background: var(--orange-9); color: var(--gray-1);
  outline: 1px solid var(--orange-11); }
@media (max-width: 40em) { .log-ts { display: none; } .log-no { min-width: 2.5rem; } }
"""

STATUS_BADGE = status_badge(RunState.run.status, size="2")


def _field(label: str, value: rx.Var | rx.Component, test_id: str) -> rx.Component:
    return rx.vstack(
        rx.text(label, size="1", color_scheme="gray", weight="medium"),
        rx.box(value, data_testid=test_id),
        spacing="1",
        min_width="0",
    )


def _text_or_dash(value: rx.Var) -> rx.Component:
    return rx.text(rx.cond(value != "", value, "—"), size="2")


def _link_or_dash(label: rx.Var, url: rx.Var) -> rx.Component:
    return rx.cond(
        url != "",
        rx.link(label, href=url, is_external=True, size="2"),
        rx.text(rx.cond(label != "", label, "—"), size="2"),
    )


def _actions() -> rx.Component:
    cancel = confirm_button(
        label="Cancel run",
        icon="circle-stop",
        title="Cancel this run?",
        text="The agent is stopped; work it has not pushed is lost. You can rerun it later.",
        on_confirm=RunState.cancel_run,
        test_id="cancel-run",
        color="red",
    )
    rerun = confirm_button(
        label="Rerun",
        icon="rotate-ccw",
        title="Start this run again?",
        text="A new run with the same issue, stage and model is queued for a free slot.",
        on_confirm=RunState.rerun_run,
        test_id="rerun-run",
        color="blue",
    )
    return rx.cond(
        RunState.can_control,
        rx.hstack(
            rx.cond(
                RunState.run.is_active,
                rx.cond(
                    RunState.run.is_cancel_requested,
                    rx.badge("stopping…", color_scheme="amber", data_testid="cancel-requested"),
                    cancel,
                ),
                rerun,
            ),
            spacing="2",
        ),
    )


def _header() -> rx.Component:
    run = RunState.run
    return rx.card(
        rx.vstack(
            rx.flex(
                rx.hstack(
                    rx.heading(
                        "Run #",
                        run.id,
                        rx.text.span(" · ", run.project_key, color_scheme="gray"),
                        rx.cond(
                            run.issue != "",
                            rx.text.span(" · ", run.repository, run.issue, color_scheme="gray"),
                        ),
                        size="5",
                        as_="h2",
                        data_testid="run-title",
                    ),
                    rx.box(STATUS_BADGE, data_testid="run-status"),
                    rx.cond(
                        run.is_waiting,
                        rx.link(
                            rx.badge(
                                rx.icon("message-circle-question", size=12),
                                "waiting for ",
                                run.waiting_for,
                                color_scheme="orange",
                                variant="soft",
                            ),
                            href=urls.INBOX,
                            data_testid="waiting-badge",
                        ),
                    ),
                    rx.cond(
                        RunState.is_live,
                        rx.badge(
                            rx.icon("radio", size=12),
                            "live",
                            color_scheme="green",
                            variant="outline",
                            data_testid="live-badge",
                        ),
                    ),
                    align="center",
                    spacing="3",
                    wrap="wrap",
                ),
                rx.spacer(),
                _actions(),
                width="100%",
                gap="0.75rem",
                wrap="wrap",
                align="center",
            ),
            rx.cond(run.issue_title != "", rx.text(run.issue_title, size="3", weight="medium")),
            rx.cond(
                run.attempt_text != "",
                rx.link(
                    run.attempt_text, href=run.parent_href, size="2", data_testid="run-attempt"
                ),
            ),
            _run_note(run.queue_text, "hourglass", "gray", "run-queue"),
            rx.cond(
                (run.reason_text != "") | (run.status_message != ""),
                rx.callout(
                    rx.text(
                        rx.text.span(run.reason_text, weight="bold"),
                        rx.cond((run.status_message != "") & (run.reason_text != ""), ": ", ""),
                        run.status_message,
                    ),
                    icon=rx.cond(run.is_failure, "octagon-alert", "info"),
                    color_scheme=rx.cond(run.is_failure, "red", "gray"),
                    size="1",
                    width="100%",
                    role=rx.cond(run.is_failure, "alert", "status"),
                    data_testid="status-reason",
                ),
            ),
            rx.grid(
                _field("Project", _text_or_dash(run.project_key), "run-project"),
                _field("Stage", _text_or_dash(run.stage), "run-stage"),
                _field("Agent", _text_or_dash(run.agent), "run-agent"),
                _field("Model", _text_or_dash(run.model), "run-model"),
                _field(
                    "Repository",
                    _link_or_dash(run.repository, run.repository_url),
                    "run-repository",
                ),
                _field("Issue", _link_or_dash(run.issue, run.issue_url), "run-issue"),
                _field("Pull request", _link_or_dash(run.pr, run.pr_url), "run-pr"),
                _field("Slot", _text_or_dash(run.slot), "run-slot"),
                _field("Namespace", _text_or_dash(run.namespace), "run-namespace"),
                _field(
                    "Created",
                    rx.text(run.created_ago, title=run.created, size="2"),
                    "run-created",
                ),
                _field("Started", _text_or_dash(run.started), "run-started"),
                _field("Finished", _text_or_dash(run.finished), "run-finished"),
                _field("Duration", _text_or_dash(run.duration), "run-duration"),
                columns=rx.breakpoints(initial="2", sm="3", lg="5"),
                gap="1rem",
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )


def _messages() -> rx.Component:
    return messages(RunState.error, RunState.notice, "run")


def _search_button(
    icon: str, label: str, on_click: Any, test_id: str, variant: str = "soft"
) -> rx.Component:
    """An icon-only button of the search bar (type button, so it never submits the search)."""
    return rx.icon_button(
        rx.icon(icon, size=16),
        variant=variant,
        type="button",
        on_click=on_click,
        aria_label=label,
        data_testid=test_id,
    )


def _search() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.input(
                placeholder="Search the whole log",
                value=RunState.search_input,
                on_change=RunState.set_search_input,
                aria_label="Search the log",
                data_testid="log-search",
                width=rx.breakpoints(initial="100%", sm="14rem"),
            ),
            icon_label_button("search", "Find", test_id="log-search-submit", type="submit"),
            rx.cond(
                RunState.search_query != "",
                rx.hstack(
                    rx.text(
                        rx.cond(
                            RunState.match_count > 0,
                            rx.text.span(RunState.match_index, " of ", RunState.match_count),
                            "no matches",
                        ),
                        size="2",
                        color_scheme="gray",
                        data_testid="log-match-count",
                        white_space="nowrap",
                    ),
                    _search_button(
                        "chevron-up",
                        "Previous match",
                        RunState.previous_match,
                        "log-match-previous",
                    ),
                    _search_button(
                        "chevron-down", "Next match", RunState.next_match, "log-match-next"
                    ),
                    _search_button(
                        "x", "Clear search", RunState.clear_search, "log-search-clear", "ghost"
                    ),
                    spacing="2",
                    align="center",
                ),
            ),
            spacing="2",
            align="center",
            wrap="wrap",
        ),
        on_submit=RunState.submit_search,
        reset_on_submit=False,
    )


def _log_toolbar() -> rx.Component:
    follow_toggle = rx.cond(
        RunState.is_following,
        icon_label_button("pause", "Pause", RunState.pause, "log-pause"),
        icon_label_button("play", "Follow", RunState.resume, "log-resume", variant="solid"),
    )
    return rx.flex(
        rx.cond(RunState.run.is_active, follow_toggle),
        icon_label_button("arrow-down-to-line", "Jump to end", RunState.resume, "log-jump-end"),
        icon_label_button(
            "chevrons-up", "Older", RunState.show_older, "log-older", disabled=~RunState.has_older
        ),
        rx.cond(
            ~RunState.is_following & (RunState.unseen_lines > 0),
            icon_label_button("chevrons-down", "Newer", RunState.show_newer, "log-newer"),
        ),
        icon_label_button("download", "Download", RunState.download_log, "log-download"),
        rx.spacer(),
        _search(),
        gap="0.5rem",
        wrap="wrap",
        align="center",
        width="100%",
    )


def _log_status() -> rx.Component:
    return rx.text(
        rx.cond(
            RunState.total_lines > 0,
            rx.text.span(
                "Lines ",
                RunState.first_line,
                " to ",
                RunState.last_line,
                " of ",
                RunState.total_lines,
                rx.cond(
                    ~RunState.is_following & (RunState.unseen_lines > 0),
                    rx.text.span(" · ", RunState.unseen_lines, " newer not shown"),
                ),
                rx.cond(RunState.is_following & RunState.is_live, " · following", ""),
            ),
            "",
        ),
        size="1",
        color_scheme="gray",
        data_testid="log-status",
    )


def _run_note(text: rx.Var, icon: str, color: str, test_id: str) -> rx.Component:
    """A small note across the run page, shown when TEXT says something."""
    return note(text, icon=icon, color=color, size="1", width="100%", data_testid=test_id)


def _log_notes() -> rx.Component:
    return rx.fragment(
        _run_note(RunState.run.log_truncated, "scissors", "amber", "log-truncated"),
        _run_note(RunState.run.log_removed, "archive-x", "gray", "log-removed"),
    )


def _log_viewer() -> rx.Component:
    # column-reverse keeps the view pinned to the newest line while following, without script.
    return rx.vstack(
        _log_notes(),
        _log_toolbar(),
        rx.cond(
            RunState.total_lines == 0,
            rx.center(
                rx.text(
                    rx.cond(
                        RunState.run.log_removed != "",
                        "Removed by log retention.",
                        rx.cond(
                            RunState.run.is_active,
                            "No output yet. Lines appear here as the run writes them.",
                            "This run wrote no output.",
                        ),
                    ),
                    color_scheme="gray",
                    size="2",
                ),
                padding_y="3rem",
                width="100%",
                border="1px dashed var(--gray-a6)",
                border_radius="var(--radius-3)",
                data_testid="log-empty",
            ),
            rx.box(
                rx.box(rx.html(RunState.log_html), data_testid="log-lines"),
                display="flex",
                flex_direction="column-reverse",
                overflow_y="auto",
                max_height=rx.breakpoints(initial="55vh", md="62vh"),
                width="100%",
                font_family="var(--code-font-family)",
                font_size="12.5px",
                background="var(--gray-a2)",
                border="1px solid var(--gray-a5)",
                border_radius="var(--radius-3)",
                padding_y="0.5rem",
                data_testid="log-viewer",
                role="log",
                aria_live="off",
            ),
        ),
        _log_status(),
        spacing="2",
        width="100%",
    )


_TONE_COLORS = {"bad": "red", "good": "green", "warn": "amber", "neutral": "gray"}


def _event_row(event: EventView) -> rx.Component:
    color = rx.match(
        event.tone, *((tone, f"var(--{c}-11)") for tone, c in _TONE_COLORS.items()), "inherit"
    )
    return rx.hstack(
        rx.box(
            rx.icon(event.icon, size=16),
            color=color,
            padding_top="0.15rem",
            flex_shrink="0",
        ),
        rx.vstack(
            rx.hstack(
                rx.text(event.event_type, size="2", weight="medium", color=color),
                rx.text(event.actor, size="1", color_scheme="gray"),
                spacing="2",
                align="baseline",
                wrap="wrap",
            ),
            rx.cond(
                event.detail != "",
                rx.text(
                    event.detail,
                    size="1",
                    color=rx.cond(event.tone == "bad", "var(--red-11)", "var(--gray-11)"),
                    font_family=rx.cond(
                        event.detail.startswith("$ "), "var(--code-font-family)", "inherit"
                    ),
                    word_break="break-word",
                ),
            ),
            spacing="0",
            min_width="0",
            flex="1",
        ),
        rx.vstack(
            rx.link(
                event.at,
                href="#log",
                title=event.at_full + " · show the log from here",
                on_click=RunState.jump_to_time(event.at_iso),
                size="1",
                font_family="var(--code-font-family)",
                data_testid="timeline-log-link",
            ),
            rx.text(event.since, size="1", color_scheme="gray"),
            spacing="0",
            align="end",
            flex_shrink="0",
        ),
        align="start",
        spacing="3",
        padding_y="0.4rem",
        padding_x="0.5rem",
        border_radius="var(--radius-2)",
        background=rx.cond(event.tone == "bad", "var(--red-a2)", "transparent"),
        border_bottom="1px solid var(--gray-a3)",
        width="100%",
        data_testid="timeline-event",
        data_tone=event.tone,
    )


def _timeline() -> rx.Component:
    return section_card(
        "Timeline",
        rx.cond(
            RunState.events.length() > 0,
            rx.vstack(rx.foreach(RunState.events, _event_row), spacing="0", width="100%"),
            rx.text("No events recorded for this run yet.", color_scheme="gray", size="2"),
        ),
        test_id="run-timeline",
    )


def _result() -> rx.Component:
    """What the run produced: the agent's summary, the pull request (or why there is none),
    the branch, the changed files, tokens and cost."""
    run = RunState.run
    return section_card(
        "Result",
        rx.cond(
            run.summary != "",
            rx.text(run.summary, size="2", data_testid="result-summary"),
            rx.text(
                rx.cond(
                    run.is_active,
                    "The agent's summary appears here when it reports its result.",
                    "The agent reported no summary.",
                ),
                size="2",
                color_scheme="gray",
                data_testid="result-summary",
            ),
        ),
        rx.grid(
            _field(
                "Pull request",
                rx.cond(
                    run.pr_url != "",
                    rx.link(
                        rx.icon("git-pull-request", size=14),
                        " ",
                        run.pr,
                        href=run.pr_url,
                        is_external=True,
                        size="2",
                    ),
                    rx.text(
                        rx.cond(
                            run.no_pr_reason != "",
                            run.no_pr_reason,
                            rx.cond(run.is_active, "Not yet", "—"),
                        ),
                        size="2",
                        color_scheme="gray",
                    ),
                ),
                "result-pr",
            ),
            _field(
                "Branch",
                rx.cond(
                    run.branch != "",
                    rx.code(run.branch, size="2"),
                    rx.text("—", size="2"),
                ),
                "result-branch",
            ),
            _field(
                "Changed files",
                rx.cond(
                    run.changed_files.length() > 0,
                    rx.vstack(
                        rx.foreach(run.changed_files, lambda f: rx.code(f, size="1")),
                        spacing="1",
                        align="start",
                    ),
                    rx.text("—", size="2"),
                ),
                "result-files",
            ),
            _field(
                "Tokens",
                rx.text(
                    run.tokens_total,
                    title=(
                        "input "
                        + run.tokens_input
                        + " (cached "
                        + run.tokens_cached
                        + ") · output "
                        + run.tokens_output
                        + " (reasoning "
                        + run.tokens_reasoning
                        + ")"
                    ),
                    size="2",
                ),
                "run-tokens",
            ),
            _field("Cost", _text_or_dash(run.cost), "run-cost"),
            columns=rx.breakpoints(initial="1", sm="2", lg="5"),
            gap="1rem",
            width="100%",
        ),
        rx.cond(
            (run.documents.length() > 0) | (run.documents_note != ""),
            _field(
                "Project documents in the prompt",
                rx.vstack(
                    rx.foreach(run.documents, lambda line: rx.code(line, size="1")),
                    rx.cond(
                        run.documents_note != "",
                        rx.text(run.documents_note, size="2", color_scheme="gray"),
                    ),
                    spacing="1",
                    align="start",
                ),
                "result-documents",
            ),
        ),
        rx.cond(
            run.session_text != "",
            _field("Agent session", rx.text(run.session_text, size="2"), "result-session"),
        ),
        test_id="run-result",
    )


def _skeleton() -> rx.Component:
    return skeletons(
        ["9rem", "2.25rem", "50vh"],
        test_id="run-loading",
        skeleton={"loading": True},
        spacing="3",
        aria_busy="true",
    )


def _not_visible() -> rx.Component:
    return empty_state(
        "search-x",
        "Run not found",
        "This run does not exist, or you are not allowed to see it. Runs are shown to "
        "members of their project; ask a project admin to add you.",
        test_id="run-not-visible",
    )


def _content() -> rx.Component:
    return rx.vstack(
        _messages(),
        _header(),
        _result(),
        section_card(rx.heading("Log", size="4", as_="h2", id="log"), _log_viewer()),
        _timeline(),
        spacing="4",
        width="100%",
    )


def run_page() -> rx.Component:
    return page(
        rx.cond(RunState.run.id > 0, "Run #" + RunState.run.id.to_string(), "Run"),
        rx.el.style(LOG_CSS),
        # Pushed changes of this run (web/live.py) call refresh_live; nothing polls.
        live.refresh_trigger(live.RunLive, RunState.refresh_live),
        rx.cond(
            RunState.is_loading | (RunState.loaded_for != rx.State.run_id),
            _skeleton(),
            rx.cond(
                RunState.is_missing,
                _not_visible(),
                rx.cond(RunState.run.id > 0, _content(), _messages()),
            ),
        ),
        is_run_page=True,
    )
