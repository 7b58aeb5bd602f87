"""A button that asks before it acts: destructive or costly actions go through this dialog."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s.web.components.buttons import secondary_button


def confirm_button(
    *,
    label: str | rx.Var,
    title: str | rx.Var,
    text: str | rx.Var,
    on_confirm: Any,
    test_id: str,
    color: str = "red",
    icon: str | None = None,
    size: str = "2",
    confirm_label: str | rx.Var | None = None,
) -> rx.Component:
    """LABEL opens a dialog (TITLE, TEXT); its confirm button (`<test_id>-confirm`) runs
    ON_CONFIRM, "Keep it" (`<test_id>-dismiss`) closes it."""
    trigger_children = [rx.icon(icon, size=16)] if icon else []
    return rx.alert_dialog.root(
        rx.alert_dialog.trigger(
            rx.button(
                *trigger_children,
                label,
                color_scheme=color,
                variant="soft",
                size=size,
                data_testid=test_id,
            ),
        ),
        rx.alert_dialog.content(
            rx.alert_dialog.title(title),
            rx.alert_dialog.description(text),
            rx.flex(
                rx.alert_dialog.cancel(
                    secondary_button("Keep it", data_testid=f"{test_id}-dismiss"),
                ),
                rx.alert_dialog.action(
                    rx.button(
                        confirm_label if confirm_label is not None else label,
                        color_scheme=color,
                        on_click=on_confirm,
                        data_testid=f"{test_id}-confirm",
                    ),
                ),
                gap="0.75rem",
                justify="end",
                margin_top="1rem",
            ),
            max_width="28rem",
        ),
    )
