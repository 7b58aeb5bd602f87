"""Labelled form fields: every input has a visible label tied to it, and an optional hint."""

from __future__ import annotations

import reflex as rx


def form_row(
    label: str, control: rx.Component, *, hint: str = "", width: str = "auto"
) -> rx.Component:
    """LABEL above CONTROL (the label element wraps both, so a click on it focuses the control
    and screen readers name the control by it), HINT below in gray."""
    return rx.el.label(
        rx.vstack(
            rx.text(label, size="2", weight="medium"),
            control,
            rx.cond(hint != "", rx.text(hint, size="1", color_scheme="gray")),
            spacing="1",
            width="100%",
        ),
        width=width,
        min_width="0",
    )
