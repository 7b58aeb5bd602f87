"""The Inbox: what waiting runs ask the signed-in person, answered in place."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s.web.components.layout import empty_state, page
from codexk8s.web.components.messages import messages
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.inbox import InboxItem, InboxState


def _meta(item: InboxItem) -> rx.Component:
    return rx.hstack(
        rx.badge(item.project_key, variant="soft"),
        rx.link(f"Run #{item.run_id}", href=item.run_href, size="2"),
        rx.cond(item.issue != "", rx.text(f"issue {item.issue}", size="2", color_scheme="gray")),
        rx.text(f"asked {item.asked_ago} · for {item.who}", size="2", color_scheme="gray"),
        spacing="3",
        align="center",
        flex_wrap="wrap",
    )


def _request_id(item: InboxItem) -> rx.Component:
    """The form's hidden field naming the request it answers."""
    return rx.el.input(type="hidden", name="request_id", value=item.id.to_string())  # type: ignore[attr-defined]


def _request_form(
    item: InboxItem, on_submit: Any, stack: Any, *fields: rx.Component
) -> rx.Component:
    """A form that answers ITEM's request (its id in a hidden field): FIELDS in a STACK (row or
    column), emptied once sent."""
    return rx.form(
        stack(_request_id(item), *fields, spacing="2", width="100%"),
        on_submit=on_submit,
        reset_on_submit=True,
        width="100%",
    )


def _question_form(item: InboxItem) -> rx.Component:
    return rx.vstack(
        rx.cond(
            item.options.length() > 0,  # type: ignore[attr-defined]
            rx.hstack(
                rx.foreach(
                    item.options,
                    lambda option: rx.button(
                        option,
                        variant="soft",
                        on_click=InboxState.pick(item.id, option),
                        data_testid="inbox-option",
                    ),
                ),
                spacing="2",
                flex_wrap="wrap",
            ),
        ),
        _request_form(
            item,
            InboxState.answer,
            rx.hstack,
            rx.input(
                name="answer",
                placeholder="Your answer",
                aria_label="Your answer",
                required=True,
                flex="1",
                data_testid="inbox-answer",
            ),
            rx.button("Answer", type="submit", data_testid="inbox-send"),
        ),
        width="100%",
        spacing="2",
    )


def _approval_form(item: InboxItem) -> rx.Component:
    return _request_form(
        item,
        InboxState.decide,
        rx.vstack,
        rx.radio_group.root(
            rx.hstack(
                # Each radio inside its label: the label names it and a click on the word picks
                # it (Radix's radios are buttons, which `for=` does not reach).
                *(
                    rx.text(
                        rx.flex(rx.radio_group.item(value=value), word, gap="1", align="center"),
                        as_="label",
                    )
                    for value, word in (("approve", "Approve"), ("deny", "Deny"))
                ),
                spacing="3",
                align="center",
            ),
            name="decision",
            required=True,
            data_testid="inbox-decision",
        ),
        rx.input(
            name="note",
            placeholder="A note for the agent (optional)",
            aria_label="Note",
            width="100%",
            data_testid="inbox-note",
        ),
        rx.button("Send decision", type="submit", data_testid="inbox-decide"),
    )


def _card(item: InboxItem) -> rx.Component:
    return rx.card(
        rx.vstack(
            _meta(item),
            rx.text(
                rx.cond(item.is_approval, "Asks for approval: ", "Asks: "),
                rx.text.strong(item.text),
                size="3",
            ),
            rx.cond(item.details != "", rx.text(item.details, size="2", color_scheme="gray")),
            rx.cond(item.is_approval, _approval_form(item), _question_form(item)),
            rx.text(f"Waits until {item.expires_in}", size="1", color_scheme="gray"),
            spacing="3",
            width="100%",
        ),
        width="100%",
        data_testid="inbox-item",
    )


def _content() -> rx.Component:
    return rx.vstack(
        messages(InboxState.error, InboxState.notice, "inbox"),
        rx.cond(
            InboxState.count > 0,
            rx.vstack(rx.foreach(InboxState.items, _card), width="100%", spacing="3"),
            empty_state(
                "inbox",
                "Nothing is waiting for you",
                "When an agent asks a question or asks approval before a risky action on one "
                "of your projects, it shows up here, and the run waits for your answer.",
            ),
        ),
        width="100%",
        spacing="3",
    )


def inbox() -> rx.Component:
    return page(
        "Inbox",
        rx.cond(
            AuthState.is_signed_in,
            _content(),
            empty_state(
                "inbox",
                "Sign in to answer your agents",
                "Questions and approval requests of runs are shown to the members who may "
                "answer them. Sign in to see yours.",
            ),
        ),
    )
