"""The Overview page: what runs now, slot use, and the last 14 days as charts and as tables."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s import urls
from codexk8s.services.overview import WINDOW_DAYS, SlotUse
from codexk8s.web import live
from codexk8s.web.components.data_table import data_table
from codexk8s.web.components.layout import empty_state, page, section_card, signed_in_only
from codexk8s.web.components.messages import note
from codexk8s.web.components.status import DAY_SERIES_FILLS, status_badge
from codexk8s.web.state.overview import DayRow, DurationRow, OverviewState, UsageRow
from codexk8s.web.state.runs import RunView

_AXIS = {"stroke": "var(--gray-11)", "font_size": 12}


def _chart_data(rows: rx.Var) -> rx.Var:
    # Dataclass rows reach the browser as objects; recharts takes them as they are.
    return rows.to(list[dict[str, Any]])


def _stat(
    label: str, value: rx.Var | str, test_id: str, icon: str, href: str | None = None
) -> rx.Component:
    card = rx.card(
        rx.hstack(
            rx.icon(icon, size=22, color="var(--accent-9)"),
            rx.vstack(
                rx.text(label, size="2", color_scheme="gray"),
                rx.text(value, size="6", weight="bold", data_testid=test_id),
                spacing="0",
            ),
            align="center",
            spacing="3",
        ),
        min_width="10rem",
        flex="1",
        _hover={"background": "var(--gray-a3)"} if href else {},
    )
    if href is None:
        return card
    # The count opens the list of those runs.
    return rx.link(card, href=href, underline="none", color="inherit", flex="1",
                   min_width="10rem", data_testid=f"{test_id}-link")  # fmt: skip


def _stats() -> rx.Component:
    return rx.flex(
        _stat(
            "Active runs",
            OverviewState.active_runs.to_string(),
            "stat-active",
            "play",
            href=urls.RUNS + "?status=running",
        ),
        _stat(
            "Queued runs",
            OverviewState.queued_runs.to_string(),
            "stat-queued",
            "hourglass",
            href=urls.RUNS + "?status=pending",
        ),
        _stat(
            "Slots in use",
            OverviewState.slots_used.to_string() + " / " + OverviewState.slots_total.to_string(),
            "stat-slots",
            "cpu",
        ),
        _stat(
            f"Success rate ({WINDOW_DAYS} days)",
            OverviewState.success_rate_text,
            "stat-success",
            "circle-check",
        ),
        spacing="3",
        wrap="wrap",
        width="100%",
    )


def _figures(summary: str, table: rx.Component) -> rx.Component:
    """The chart's numbers as a table, folded away but readable by screen readers and anyone."""
    return rx.el.details(
        rx.el.summary(summary, style={"cursor": "pointer", "color": "var(--gray-11)"}),
        table,
        width="100%",
    )


def _unscrolled_table(headers: list[str], items: rx.Var, row: Any, test_id: str) -> rx.Component:
    # These sit in the page's cards as they always did, without a scroll box of their own.
    return data_table(headers, items, row, test_id=test_id, size="1", scrolls=False)


def _day_row(day: DayRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(day.day),
        rx.table.cell(day.succeeded),
        rx.table.cell(day.failed),
        rx.table.cell(day.canceled),
        rx.table.cell(day.active),
        rx.table.cell(day.cost_text),
        data_testid="day-figure",
    )


def _runs_per_day() -> rx.Component:
    return section_card(
        f"Runs per day by status (last {WINDOW_DAYS} days)",
        rx.recharts.bar_chart(
            *(
                rx.recharts.bar(data_key=status, stack_id="runs", fill=color, name=status)
                for status, color in DAY_SERIES_FILLS.items()
            ),
            rx.recharts.x_axis(data_key="day", **_AXIS),
            rx.recharts.y_axis(allow_decimals=False, **_AXIS),
            rx.recharts.graphing_tooltip(),
            rx.recharts.legend(),
            data=_chart_data(OverviewState.days),
            width="100%",
            height=260,
        ),
        rx.text("Cost per day (USD)", size="2", color_scheme="gray"),
        rx.recharts.line_chart(
            rx.recharts.line(
                data_key="cost_usd", name="cost (USD)", stroke="var(--accent-9)", dot=False
            ),
            rx.recharts.x_axis(data_key="day", **_AXIS),
            rx.recharts.y_axis(**_AXIS),
            rx.recharts.graphing_tooltip(),
            data=_chart_data(OverviewState.days),
            width="100%",
            height=160,
        ),
        _figures(
            "Runs and cost per day as a table",
            data_table(
                ["Day", "Succeeded", "Failed", "Canceled", "Active", "Cost"],
                OverviewState.days,
                _day_row,
                test_id="days-table",
                size="1",
                padding_top="0.5rem",
            ),
        ),
        test_id="chart-runs-per-day",
    )


def _duration_row(row: DurationRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row.stage),
        rx.table.cell(row.runs),
        rx.table.cell(row.p50_text, data_testid="duration-p50"),
        rx.table.cell(row.p95_text, data_testid="duration-p95"),
        data_testid="duration-figure",
    )


def _durations() -> rx.Component:
    return section_card(
        "Run duration by stage (p50 / p95, seconds)",
        rx.cond(
            OverviewState.durations.length() > 0,  # type: ignore[attr-defined]
            rx.recharts.bar_chart(
                rx.recharts.bar(data_key="p50_seconds", name="p50", fill="var(--accent-9)"),
                rx.recharts.bar(data_key="p95_seconds", name="p95", fill="var(--accent-6)"),
                rx.recharts.x_axis(data_key="stage", **_AXIS),
                rx.recharts.y_axis(**_AXIS),
                rx.recharts.graphing_tooltip(),
                rx.recharts.legend(),
                data=_chart_data(OverviewState.durations),
                width="100%",
                height=240,
            ),
            rx.text("No run has finished in this period yet.", color_scheme="gray"),
        ),
        _unscrolled_table(
            ["Stage", "Finished runs", "p50", "p95"],
            OverviewState.durations,
            _duration_row,
            "durations-table",
        ),
        test_id="chart-durations",
    )


def _usage_row(row: UsageRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row.name),
        rx.table.cell(row.runs),
        rx.table.cell(row.tokens_text),
        rx.table.cell(row.cost_text, data_testid="usage-cost"),
        data_testid="usage-figure",
    )


def _usage(title: str, rows: rx.Var, test_id: str) -> rx.Component:
    return section_card(
        title,
        rx.recharts.bar_chart(
            rx.recharts.bar(data_key="cost_usd", name="cost (USD)", fill="var(--accent-9)"),
            rx.recharts.x_axis(data_key="name", **_AXIS),
            rx.recharts.y_axis(**_AXIS),
            rx.recharts.graphing_tooltip(),
            data=_chart_data(rows),
            width="100%",
            height=200,
        ),
        _unscrolled_table(["Name", "Runs", "Tokens", "Cost"], rows, _usage_row, "usage-table"),
        test_id=test_id,
    )


def _slot_row(row: SlotUse) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.code(row.project_key)),
        rx.table.cell(
            rx.hstack(
                rx.progress(value=row.used * 100 / row.total, width="8rem", max=100),
                rx.text(row.used.to_string() + " of " + row.total.to_string()),
                align="center",
                spacing="2",
            )
        ),
        data_testid="slot-figure",
    )


def _slots() -> rx.Component:
    return section_card(
        "Slot use per project",
        _unscrolled_table(["Project", "Slots in use"], OverviewState.slot_use, _slot_row, "slots"),
        test_id="slot-use",
    )


def _no_runs() -> rx.Component:
    return empty_state(
        "activity",
        "No runs yet",
        "Runs start when a run:<stage> label (run:dev, run:plan, ...) lands on an issue of a "
        "repository connected to one of your projects. Connect a repository on its project "
        "page, then label an issue. Trying codexk8s on one machine? `make demo` starts a "
        "demo run you can watch here.",
        command="make demo",
        test_id="overview-empty",
    )


def _skeleton() -> rx.Component:
    return rx.vstack(
        rx.flex(
            *(rx.skeleton(rx.box(height="4.5rem"), flex="1", min_width="10rem") for _ in range(4)),
            spacing="3",
            wrap="wrap",
            width="100%",
        ),
        rx.skeleton(rx.box(height="16rem", width="100%"), width="100%"),
        rx.skeleton(rx.box(height="12rem", width="100%"), width="100%"),
        spacing="4",
        width="100%",
        data_testid="overview-loading",
    )


def _run_line(run: RunView) -> rx.Component:
    return rx.hstack(
        status_badge(run.status),
        rx.link(f"#{run.id}", href=run.href, weight="medium"),
        rx.text(run.target, size="2", overflow="hidden", text_overflow="ellipsis",
                white_space="nowrap", flex="1", min_width="0"),
        rx.text(rx.cond(run.status_reason != "", run.status_reason, run.duration), size="1",
                color_scheme="gray", overflow="hidden", text_overflow="ellipsis",
                white_space="nowrap", max_width="40%"),
        rx.text(run.created_ago, title=run.created, size="1", color_scheme="gray",
                white_space="nowrap"),
        align="center",
        spacing="2",
        width="100%",
        padding_y="0.3rem",
        border_bottom="1px solid var(--gray-a3)",
        data_testid="overview-run",
    )  # fmt: skip


def _run_list(title: str, runs: rx.Var, empty: str, href: str, test_id: str) -> rx.Component:
    return section_card(
        title,
        rx.cond(
            runs.length() > 0,  # type: ignore[attr-defined]
            rx.vstack(rx.foreach(runs, _run_line), spacing="0", width="100%"),
            rx.text(empty, size="2", color_scheme="gray"),
        ),
        rx.link("All of them", href=href, size="2"),
        test_id=test_id,
    )


def _two_columns(*cards: rx.Component) -> rx.Component:
    """CARDS side by side on wide screens, one under the other on narrow ones."""
    return rx.grid(*cards, columns=rx.breakpoints(initial="1", lg="2"), spacing="4", width="100%")


def _figures_page() -> rx.Component:
    return rx.vstack(
        _stats(),
        _two_columns(
            _run_list(
                "Running now",
                OverviewState.running_runs,
                "Nothing is running.",
                urls.RUNS + "?status=running",
                "overview-running",
            ),
            _run_list(
                "Failed recently",
                OverviewState.failed_runs,
                "No run has failed.",
                urls.RUNS + "?status=failed",
                "overview-failed",
            ),
        ),
        _runs_per_day(),
        _two_columns(_durations(), _slots()),
        _two_columns(
            _usage("Tokens and cost by project", OverviewState.usage_by_project, "usage-project"),
            _usage("Tokens and cost by agent", OverviewState.usage_by_agent, "usage-agent"),
        ),
        spacing="4",
        width="100%",
        data_testid="overview-figures",
    )


def _sign_in_prompt() -> rx.Component:
    return empty_state(
        "activity",
        "Sign in to see the overview",
        "Runs, slots and costs of your projects are shown to their members. Sign in to see them.",
    )


def overview() -> rx.Component:
    return page(
        "Overview",
        # Run changes in any project are pushed (web/live.py); the state throttles the reloads.
        live.refresh_trigger(live.ProjectLive, OverviewState.refresh_live),
        note(OverviewState.error, icon="triangle-alert", color="red", role="alert"),
        signed_in_only(
            rx.cond(OverviewState.has_runs, _figures_page(), _no_runs()),
            _sign_in_prompt(),
            loading=_skeleton(),
            is_loaded=OverviewState.is_loaded,
        ),
    )
