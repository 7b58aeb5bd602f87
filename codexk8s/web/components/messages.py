"""What a page says after an action: one red error and one green notice, same place, same look."""

from __future__ import annotations

from typing import Any

import reflex as rx


def messages(error: rx.Var, notice: rx.Var, prefix: str) -> rx.Component:
    """The error (role alert) and the notice (role status) of a page or panel; test ids are
    `<prefix>-error` and `<prefix>-notice`."""
    return rx.fragment(
        rx.cond(
            error != "",
            rx.callout(
                error,
                icon="triangle-alert",
                color_scheme="red",
                role="alert",
                width="100%",
                data_testid=f"{prefix}-error",
            ),
        ),
        rx.cond(
            notice != "",
            rx.callout(
                notice,
                icon="check",
                color_scheme="green",
                role="status",
                width="100%",
                data_testid=f"{prefix}-notice",
            ),
        ),
    )


def note(text: rx.Var, *, icon: str, color: str, **props: Any) -> rx.Component:
    """A callout of TEXT with ICON in COLOR, shown only when there is any text; PROPS are the
    callout's (size, width, role, data_testid, ...)."""
    return rx.cond(text != "", rx.callout(text, icon=icon, color_scheme=color, **props))
