"""The Runs page: filters, a keyset-paged table of runs with status badges, kept live."""

from __future__ import annotations

import reflex as rx

from codexk8s.web import live
from codexk8s.web.components.layout import empty_state, page
from codexk8s.web.state.runs import AGENTS, ANY, STAGES, STATUSES, RunsState, RunView

# Badge colour per status (Radix colour scales read well in both themes).
STATUS_COLORS: dict[str, str] = {
    "pending": "gray",
    "starting": "amber",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "canceled": "orange",
}


def status_badge(status: rx.Var[str]) -> rx.Component:
    return rx.match(
        status,
        *((name, rx.badge(name, color_scheme=color, variant="soft", data_testid="run-status",
                          data_status=name))
          for name, color in STATUS_COLORS.items()),
        rx.badge(status, color_scheme="gray", data_testid="run-status"),
    )  # fmt: skip


def _filter_select(
    label: str, value: rx.Var[str], choices: list[str] | rx.Var[list[str]], on_change: object,
    testid: str,
) -> rx.Component:  # fmt: skip
    items = (
        rx.foreach(choices, lambda choice: rx.select.item(choice, value=choice))
        if isinstance(choices, rx.Var)
        else rx.fragment(*(rx.select.item(choice, value=choice) for choice in choices))
    )
    return rx.vstack(
        rx.text(label, size="1", color_scheme="gray"),
        rx.select.root(
            rx.select.trigger(aria_label=label, min_width="8rem", data_testid=testid),
            rx.select.content(rx.select.item(f"Any {label.lower()}", value=ANY), items),
            value=value,
            on_change=on_change,
        ),
        spacing="1",
    )


def filters() -> rx.Component:
    return rx.flex(
        _filter_select("Project", RunsState.project, RunsState.project_keys,
                       RunsState.set_project, "filter-project"),
        _filter_select("Status", RunsState.status, STATUSES, RunsState.set_status,
                       "filter-status"),
        _filter_select("Stage", RunsState.stage, STAGES, RunsState.set_stage, "filter-stage"),
        _filter_select("Agent", RunsState.agent, AGENTS, RunsState.set_agent, "filter-agent"),
        rx.vstack(
            rx.text("Issue", size="1", color_scheme="gray"),
            rx.input(
                placeholder="Title or #number",
                value=RunsState.search,
                on_change=RunsState.set_search,
                debounce_timeout=300,
                aria_label="Search issue title or number",
                data_testid="filter-search",
                min_width="12rem",
            ),
            spacing="1",
        ),
        rx.vstack(
            rx.text("Sort", size="1", color_scheme="gray"),
            rx.select.root(
                rx.select.trigger(aria_label="Sort", data_testid="sort"),
                rx.select.content(
                    rx.select.item("Newest first", value="newest"),
                    rx.select.item("Oldest first", value="oldest"),
                ),
                value=RunsState.sort_order,
                on_change=RunsState.set_sort,
            ),
            spacing="1",
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


def _row(run: RunView) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.link(f"#{run.id}", href=run.href, data_testid="run-link", weight="medium")
        ),
        rx.table.cell(run.project_key, data_testid="run-project"),
        rx.table.cell(
            rx.vstack(
                rx.text(run.target, size="2", weight="medium"),
                rx.text(run.title, size="1", color_scheme="gray",
                        max_width="24rem", overflow="hidden", text_overflow="ellipsis",
                        white_space="nowrap"),
                spacing="0",
            ),
            data_testid="run-target",
        ),
        rx.table.cell(run.stage, data_testid="run-stage"),
        rx.table.cell(run.agent, data_testid="run-agent"),
        rx.table.cell(
            rx.vstack(
                status_badge(run.status),
                rx.cond(run.status_reason != "",
                        rx.text(run.status_reason, size="1", color_scheme="gray")),
                spacing="1",
            )
        ),
        rx.table.cell(rx.text(run.created, size="1", white_space="nowrap")),
        rx.table.cell(rx.text(run.duration, size="2", white_space="nowrap"),
                      data_testid="run-duration"),
        data_testid="run-row",
        data_run_id=run.id,
    )  # fmt: skip


def _table() -> rx.Component:
    headers = ("Run", "Project", "Issue", "Stage", "Agent", "Status", "Created", "Duration")
    return rx.box(
        rx.table.root(
            rx.table.header(rx.table.row(*(rx.table.column_header_cell(h) for h in headers))),
            rx.table.body(rx.foreach(RunsState.runs, _row)),
            variant="surface",
            size="1",
            width="100%",
            data_testid="runs-table",
        ),
        overflow_x="auto",
        width="100%",
    )


def _skeleton() -> rx.Component:
    return rx.vstack(
        *(rx.skeleton(rx.box(height="2rem", width="100%"), loading=True) for _ in range(8)),
        width="100%",
        spacing="2",
        data_testid="runs-loading",
    )


def _pager() -> rx.Component:
    return rx.hstack(
        rx.button(rx.icon("chevron-left", size=16), "Previous", variant="soft",
                  disabled=~RunsState.has_previous, on_click=RunsState.previous_page,
                  data_testid="previous-page"),
        rx.button("Next", rx.icon("chevron-right", size=16), variant="soft",
                  disabled=~RunsState.has_next, on_click=RunsState.next_page,
                  data_testid="next-page"),
        justify="end",
        width="100%",
        padding_top="1rem",
    )  # fmt: skip


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
            "label) and its run appears here at once. Connect a repository on the Projects page "
            "first.",
            command="codexk8s repo add <project> <owner>/<repo> --webhook-secret-env SECRET",
        ),
    )  # fmt: skip


def runs() -> rx.Component:
    return page(
        "Runs",
        live.refresh_trigger(live.ProjectLive, RunsState.refresh_live),
        filters(),
        rx.cond(
            RunsState.error != "",
            rx.callout(RunsState.error, icon="triangle-alert", color_scheme="red",
                       margin_bottom="1rem", data_testid="runs-error"),
        ),
        rx.cond(
            RunsState.is_loading,
            _skeleton(),
            rx.cond(RunsState.runs.length() > 0, rx.fragment(_table(), _pager()), _empty()),
        ),
    )  # fmt: skip
