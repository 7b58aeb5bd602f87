"""The Runs page: filters, a keyset-paged table of runs with status badges, kept live."""

from __future__ import annotations

import reflex as rx

from codexk8s.web import live
from codexk8s.web.components.buttons import pager_buttons
from codexk8s.web.components.data_table import data_table
from codexk8s.web.components.forms import filter_field
from codexk8s.web.components.layout import empty_state, page, sign_in_button, skeletons
from codexk8s.web.components.messages import note
from codexk8s.web.components.start_run import start_run_button
from codexk8s.web.components.status import status_badge
from codexk8s.web.state.runs import AGENTS, ANY, STAGES, STATUSES, RunsState, RunView


def _filter_select(
    label: str, value: rx.Var[str], choices: list[str] | rx.Var[list[str]], on_change: object,
    testid: str,
) -> rx.Component:  # fmt: skip
    items = (
        rx.foreach(choices, lambda choice: rx.select.item(choice, value=choice))
        if isinstance(choices, rx.Var)
        else rx.fragment(*(rx.select.item(choice, value=choice) for choice in choices))
    )
    return filter_field(
        label,
        rx.select.root(
            rx.select.trigger(aria_label=label, min_width="8rem", data_testid=testid),
            rx.select.content(rx.select.item(f"Any {label.lower()}", value=ANY), items),
            value=value,
            on_change=on_change,
        ),
    )


def filters() -> rx.Component:
    return rx.flex(
        _filter_select("Project", RunsState.project, RunsState.project_keys,
                       RunsState.set_project, "filter-project"),
        _filter_select("Status", RunsState.status, STATUSES, RunsState.set_status,
                       "filter-status"),
        _filter_select("Stage", RunsState.stage, STAGES, RunsState.set_stage, "filter-stage"),
        _filter_select("Agent", RunsState.agent, AGENTS, RunsState.set_agent, "filter-agent"),
        filter_field(
            "Issue",
            rx.input(
                placeholder="Title or #number",
                value=RunsState.search,
                on_change=RunsState.set_search,
                debounce_timeout=300,
                aria_label="Search issue title or number",
                data_testid="filter-search",
                min_width="12rem",
            ),
        ),
        filter_field(
            "Sort",
            rx.select.root(
                rx.select.trigger(aria_label="Sort", data_testid="sort"),
                rx.select.content(
                    rx.select.item("Newest first", value="newest"),
                    rx.select.item("Oldest first", value="oldest"),
                ),
                value=RunsState.sort_order,
                on_change=RunsState.set_sort,
            ),
        ),
        rx.cond(
            RunsState.is_filtered,
            rx.button("Clear filters", variant="ghost", on_click=RunsState.clear_filters,
                      data_testid="clear-filters", align_self="end"),
        ),
        wrap="wrap",
        spacing="3",
        padding_bottom="1rem",
    )  # fmt: skip


def _target(run: RunView) -> rx.Component:
    return rx.vstack(
        rx.text(run.target, size="2", weight="medium"),
        rx.text(run.title, size="1", color_scheme="gray", max_width="24rem", overflow="hidden",
                text_overflow="ellipsis", white_space="nowrap"),
        rx.cond(
            run.attempt != "",
            rx.link(run.attempt, href=run.parent_href, size="1", data_testid="run-attempt",
                    on_click=rx.stop_propagation),
        ),
        spacing="0",
        min_width="0",
    )  # fmt: skip


def _status(run: RunView) -> rx.Component:
    return rx.vstack(
        status_badge(run.status, test_id="run-status"),
        rx.cond(run.status_reason != "",
                rx.text(run.status_reason, size="1", color_scheme="gray",
                        data_testid="run-reason")),
        spacing="1",
    )  # fmt: skip


def _created(run: RunView) -> rx.Component:
    return rx.text(run.created_ago, title=run.created, size="1", white_space="nowrap",
                   data_testid="run-created")  # fmt: skip


def _row(run: RunView) -> rx.Component:
    # The whole row opens the run; the link inside stays for keyboards and new tabs.
    return rx.table.row(
        rx.table.cell(
            rx.link(f"#{run.id}", href=run.href, data_testid="run-link", weight="medium")
        ),
        rx.table.cell(_status(run)),
        rx.table.cell(run.project_key, data_testid="run-project"),
        rx.table.cell(_target(run), data_testid="run-target"),
        rx.table.cell(run.stage, data_testid="run-stage"),
        rx.table.cell(run.agent, data_testid="run-agent"),
        rx.table.cell(_created(run)),
        rx.table.cell(rx.text(run.duration, size="2", white_space="nowrap"),
                      data_testid="run-duration"),
        on_click=rx.redirect(run.href),
        cursor="pointer",
        _hover={"background": "var(--gray-a3)"},
        data_testid="run-row",
        data_run_id=run.id,
    )  # fmt: skip


def _card(run: RunView) -> rx.Component:
    """A run on a phone: the status first, then what it is about."""
    return rx.card(
        rx.vstack(
            rx.hstack(
                status_badge(run.status, test_id="run-status"),
                rx.link(f"#{run.id}", href=run.href, weight="medium"),
                rx.spacer(),
                _created(run),
                align="center",
                width="100%",
            ),
            _target(run),
            rx.text(run.project_key, " · ", run.stage, " · ", run.duration, size="1",
                    color_scheme="gray"),
            rx.cond(run.status_reason != "",
                    rx.text(run.status_reason, size="1", color_scheme="gray")),
            spacing="1",
            width="100%",
        ),
        on_click=rx.redirect(run.href),
        cursor="pointer",
        width="100%",
        data_testid="run-card",
    )  # fmt: skip


def _table() -> rx.Component:
    headers = ("Run", "Status", "Project", "Issue", "Stage", "Agent", "Created", "Duration")
    return rx.fragment(
        data_table(
            headers,
            RunsState.runs,
            _row,
            test_id="runs-table",
            size="1",
            variant="surface",
            display=rx.breakpoints(initial="none", sm="block"),
        ),
        rx.vstack(
            rx.foreach(RunsState.runs, _card),
            spacing="2",
            width="100%",
            display=rx.breakpoints(initial="flex", sm="none"),
            data_testid="runs-cards",
        ),
    )


def _total() -> rx.Component:
    return rx.text(
        RunsState.total_text,
        size="2",
        color_scheme="gray",
        data_testid="runs-total",
    )


def _skeleton() -> rx.Component:
    return skeletons(["2rem"] * 8, test_id="runs-loading", skeleton={"loading": True}, spacing="2")


def _pager() -> rx.Component:
    return rx.hstack(
        *pager_buttons(
            RunsState, previous=("Previous", "previous-page"), following=("Next", "next-page")
        ),
        justify="end",
        width="100%",
        padding_top="1rem",
    )


def _empty() -> rx.Component:
    return rx.cond(
        RunsState.is_filtered,
        rx.vstack(
            empty_state("search-x", "No runs match these filters",
                        "Widen the filters or clear them to see every run you may see."),
            rx.button("Clear filters", variant="soft", on_click=RunsState.clear_filters),
            align="center",
            width="100%",
        ),
        empty_state(
            "play", "No runs yet",
            "Label an issue of a connected repository with run:dev (or another run:<stage> "
            "label), or start one here, and its run appears at once. Trying codexk8s on one "
            "machine? `make demo` starts a demo run.",
            command="make demo",
        ),
    )  # fmt: skip


def _sign_in_prompt() -> rx.Component:
    return rx.box(
        empty_state(
            "log-in", "Sign in to see runs",
            "Runs are shown to the members of their project. Sign in with GitHub, or on one "
            "machine open the one-time link `codexk8s serve` printed.",
        ),
        rx.center(sign_in_button("runs-sign-in-button"), padding_top="1rem"),
        data_testid="runs-sign-in",
    )  # fmt: skip


def runs() -> rx.Component:
    return page(
        "Runs",
        live.refresh_trigger(live.ProjectLive, RunsState.refresh_live),
        rx.cond(
            RunsState.is_signed_out,
            _sign_in_prompt(),
            rx.fragment(
                rx.flex(filters(), rx.spacer(), rx.box(start_run_button(), padding_top="1.2rem"),
                        wrap="wrap", width="100%", gap="0.75rem"),
                note(RunsState.error, icon="triangle-alert", color="red", margin_bottom="1rem",
                     data_testid="runs-error"),
                rx.cond(
                    RunsState.is_loading,
                    _skeleton(),
                    rx.cond(RunsState.runs.length() > 0,
                            rx.vstack(_total(), _table(), _pager(), spacing="2", width="100%"),
                            _empty()),
                ),
            ),
        ),
    )  # fmt: skip
