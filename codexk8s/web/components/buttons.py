"""The dashboard's buttons: a labelled button with a leading icon, and a table row's action."""

from __future__ import annotations

from typing import Any

import reflex as rx


def icon_label_button(
    icon: str,
    label: str | rx.Var,
    on_click: Any = None,
    test_id: str | None = None,
    *,
    variant: str = "soft",
    **props: Any,
) -> rx.Component:
    """LABEL after a 16 px ICON, soft unless VARIANT says otherwise; PROPS are rx.button's."""
    if on_click is not None:
        props["on_click"] = on_click
    if test_id is not None:
        props["data_testid"] = test_id
    return rx.button(rx.icon(icon, size=16), label, variant=variant, **props)


def row_button(
    label: str | rx.Var, on_click: Any, test_id: str, *, color: str | None = None, **props: Any
) -> rx.Component:
    """A table row's action: a small soft button, COLOR for a warning or destructive one; PROPS
    may override the rest (a variant that marks the selected row, loading, ...)."""
    if color is not None:
        props["color_scheme"] = color
    props = {"size": "1", "variant": "soft", **props}
    return rx.button(label, on_click=on_click, data_testid=test_id, **props)


def pager_buttons(
    state: Any, *, previous: tuple[str, str], following: tuple[str, str]
) -> tuple[rx.Component, rx.Component]:
    """The back and forward buttons through STATE's pages (its `has_previous`, `has_next`,
    `previous_page` and `next_page`); PREVIOUS and FOLLOWING are each a label and a test id."""
    return (
        icon_label_button(
            "chevron-left",
            previous[0],
            state.previous_page,
            previous[1],
            disabled=~state.has_previous,
        ),
        rx.button(
            following[0],
            rx.icon("chevron-right", size=16),
            variant="soft",
            disabled=~state.has_next,
            on_click=state.next_page,
            data_testid=following[1],
        ),
    )


def secondary_button(label: str | rx.Var, **props: Any) -> rx.Component:
    """The button that steps back (cancel, clear, discard, keep it): soft and gray."""
    return rx.button(label, variant="soft", color_scheme="gray", **props)
