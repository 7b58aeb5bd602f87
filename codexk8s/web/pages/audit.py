"""The Audit page: the flow-event trail with filters and keyset paging, payloads readable."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s.web.components.buttons import pager_buttons, secondary_button
from codexk8s.web.components.forms import filter_field
from codexk8s.web.components.layout import empty_state, page, signed_in_only, skeletons
from codexk8s.web.components.messages import note
from codexk8s.web.state.audit import ACTOR_TYPES, AuditItem, AuditState
from codexk8s.web.state.auth import AuthState


def _select_filter(label: str, options: Any, field: str, test_id: str) -> rx.Component:
    # rx.select hands only custom_attrs on to the trigger button (the element people click).
    return filter_field(
        label,
        rx.select(
            options,
            value=getattr(AuditState, field),
            on_change=getattr(AuditState, "set_" + field),
            custom_attrs={"aria-label": label, "data-testid": test_id},
        ),
    )


def _text_filter(label: str, field: str, test_id: str, **props: Any) -> rx.Component:
    return filter_field(
        label,
        rx.input(
            value=getattr(AuditState, field),
            on_change=getattr(AuditState, "set_" + field),
            data_testid=test_id,
            **props,
        ),
    )


def _filters() -> rx.Component:
    return rx.flex(
        _select_filter("Project", AuditState.project_options, "project_filter", "audit-project"),
        _select_filter("Actor type", ACTOR_TYPES, "actor_type_filter", "audit-actor-type"),
        _select_filter("Event type", AuditState.type_options, "type_filter", "audit-type"),
        rx.form(
            rx.flex(
                _text_filter(
                    "Actor",
                    "actor_filter",
                    "audit-actor",
                    placeholder="email or login",
                    aria_label="Actor",
                ),
                _text_filter(
                    "From (UTC day)", "since", "audit-since", type="date", aria_label="From"
                ),
                _text_filter("To (UTC day)", "until", "audit-until", type="date", aria_label="To"),
                rx.button("Apply", type="submit", data_testid="audit-apply"),
                secondary_button(
                    "Clear",
                    type="button",
                    on_click=AuditState.clear_filters,
                    data_testid="audit-clear",
                ),
                spacing="3",
                align="end",
                wrap="wrap",
            ),
            on_submit=lambda _: AuditState.apply_filters(),
            reset_on_submit=False,
        ),
        spacing="3",
        align="end",
        wrap="wrap",
        width="100%",
    )


def _event(item: AuditItem) -> rx.Component:
    """One event on one line (what, when, where, who, in words); the payload folded below."""
    return rx.box(
        rx.el.details(
            rx.el.summary(
                rx.flex(
                    rx.badge(item.event_type, size="1", data_testid="audit-event-type"),
                    rx.text(item.summary, size="2", flex="1", min_width="12rem",
                            overflow="hidden", text_overflow="ellipsis", white_space="nowrap",
                            data_testid="audit-summary"),
                    rx.cond(item.project_key != "", rx.code(item.project_key, size="1")),
                    rx.cond(
                        item.run_id > 0,
                        rx.link("run #" + item.run_id.to_string(),
                                href="/runs/" + item.run_id.to_string(), size="2"),
                    ),
                    rx.text(item.actor_type, rx.cond(item.actor_id != "", ": " + item.actor_id, ""),
                            size="1", color_scheme="gray", data_testid="audit-actor-text"),
                    rx.text(item.created_ago, title=item.created_at, size="1",
                            color_scheme="gray", white_space="nowrap"),
                    gap="0.6rem",
                    align="center",
                    wrap="wrap",
                    display="inline-flex",
                    width="calc(100% - 1.2rem)",
                ),
                style={"cursor": "pointer"},
            ),
            rx.el.pre(
                item.payload_text,
                style={
                    "white-space": "pre-wrap", "word-break": "break-word", "font-size": "0.8rem",
                    "background": "var(--gray-a3)", "padding": "0.5rem",
                    "border-radius": "var(--radius-2)", "margin": "0.25rem 0 0 0",
                },
                data_testid="audit-payload",
            ),
            rx.text("correlation " + item.correlation_id, size="1", color_scheme="gray"),
            width="100%",
        ),
        padding_y="0.35rem",
        border_bottom="1px solid var(--gray-a4)",
        width="100%",
        data_testid="audit-event",
    )  # fmt: skip


def _pager() -> rx.Component:
    return rx.hstack(
        *pager_buttons(
            AuditState, previous=("Newer", "audit-newer"), following=("Older", "audit-older")
        ),
        spacing="2",
    )


def _content() -> rx.Component:
    return rx.vstack(
        rx.text(
            rx.cond(
                AuthState.is_platform_admin,
                "Every event of the platform, newest first.",
                "Events of the projects you belong to, newest first.",
            ),
            color_scheme="gray",
        ),
        _filters(),
        note(
            AuditState.error,
            icon="triangle-alert",
            color="red",
            role="alert",
            data_testid="audit-error",
        ),
        rx.cond(
            AuditState.events.length() > 0,  # type: ignore[attr-defined]
            rx.vstack(
                rx.foreach(AuditState.events, _event),
                _pager(),
                spacing="2",
                width="100%",
                data_testid="audit-events",
            ),
            empty_state(
                "scroll-text",
                "No events match",
                "Nothing in the trail matches these filters. Clear them, or widen the "
                "time range. Events appear as webhooks arrive, runs move and people act.",
                test_id="audit-empty",
            ),
        ),
        spacing="4",
        width="100%",
    )


def _loading() -> rx.Component:
    return skeletons(["4rem"] * 4, test_id="audit-loading", skeleton={"width": "100%"})


def audit() -> rx.Component:
    return page(
        "Audit",
        signed_in_only(
            _content(),
            empty_state(
                "scroll-text",
                "Sign in to read the audit trail",
                "The trail of webhooks, run transitions and human actions is shown to the "
                "members of each project. Sign in to see yours.",
            ),
            loading=_loading(),
            is_loaded=AuditState.is_loaded,
        ),
    )
