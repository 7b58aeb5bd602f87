"""The Audit page: the flow-event trail with filters and keyset paging, payloads readable."""

from __future__ import annotations

import reflex as rx

from codexk8s.web.components.layout import empty_state, page, signed_in_only
from codexk8s.web.state.audit import ACTOR_TYPES, AuditItem, AuditState
from codexk8s.web.state.auth import AuthState


def _filters() -> rx.Component:
    # rx.select hands only custom_attrs on to the trigger button (the element people click).
    def labelled(label: str, control: rx.Component) -> rx.Component:
        return rx.vstack(rx.text(label, size="1", color_scheme="gray"), control, spacing="1")

    return rx.flex(
        labelled(
            "Project",
            rx.select(
                AuditState.project_options,
                value=AuditState.project_filter,
                on_change=AuditState.set_project_filter,
                custom_attrs={"aria-label": "Project", "data-testid": "audit-project"},
            ),
        ),
        labelled(
            "Actor type",
            rx.select(
                ACTOR_TYPES,
                value=AuditState.actor_type_filter,
                on_change=AuditState.set_actor_type_filter,
                custom_attrs={"aria-label": "Actor type", "data-testid": "audit-actor-type"},
            ),
        ),
        labelled(
            "Event type",
            rx.select(
                AuditState.type_options,
                value=AuditState.type_filter,
                on_change=AuditState.set_type_filter,
                custom_attrs={"aria-label": "Event type", "data-testid": "audit-type"},
            ),
        ),
        rx.form(
            rx.flex(
                labelled(
                    "Actor",
                    rx.input(
                        placeholder="email or login",
                        value=AuditState.actor_filter,
                        on_change=AuditState.set_actor_filter,
                        aria_label="Actor",
                        data_testid="audit-actor",
                    ),
                ),
                labelled(
                    "From (UTC day)",
                    rx.input(
                        type="date",
                        value=AuditState.since,
                        on_change=AuditState.set_since,
                        aria_label="From",
                        data_testid="audit-since",
                    ),
                ),
                labelled(
                    "To (UTC day)",
                    rx.input(
                        type="date",
                        value=AuditState.until,
                        on_change=AuditState.set_until,
                        aria_label="To",
                        data_testid="audit-until",
                    ),
                ),
                rx.button("Apply", type="submit", data_testid="audit-apply"),
                rx.button(
                    "Clear",
                    type="button",
                    variant="soft",
                    color_scheme="gray",
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
        rx.button(
            rx.icon("chevron-left", size=16),
            "Newer",
            variant="soft",
            disabled=~AuditState.has_previous,
            on_click=AuditState.previous_page,
            data_testid="audit-newer",
        ),
        rx.button(
            "Older",
            rx.icon("chevron-right", size=16),
            variant="soft",
            disabled=~AuditState.has_next,
            on_click=AuditState.next_page,
            data_testid="audit-older",
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
        rx.cond(
            AuditState.error != "",
            rx.callout(
                AuditState.error,
                icon="triangle-alert",
                color_scheme="red",
                role="alert",
                data_testid="audit-error",
            ),
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
    return rx.vstack(
        *(rx.skeleton(rx.box(height="4rem", width="100%"), width="100%") for _ in range(4)),
        width="100%",
        data_testid="audit-loading",
    )


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
