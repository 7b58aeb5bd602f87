"""Labelled form fields: every input has a visible label tied to it, and an optional hint."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s.web.components.buttons import icon_label_button


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


def add_person_form(state: Any, *, noun: str, roles: list[str], on_add: Any) -> rx.Component:
    """An email, a role and "Add NOUN": how a person joins the platform or a project. STATE
    holds the fields (`new_email`, `new_role` and their setters); test ids are
    `new-<noun>-email`, `new-<noun>-role` and `add-<noun>`."""
    return rx.hstack(
        rx.input(
            placeholder="someone@example.com",
            type="email",
            value=state.new_email,
            on_change=state.set_new_email,
            aria_label="Email",
            data_testid=f"new-{noun}-email",
            width="18rem",
        ),
        rx.select(
            roles,
            value=state.new_role,
            on_change=state.set_new_role,
            aria_label="Role",
            data_testid=f"new-{noun}-role",
        ),
        icon_label_button("user-plus", f"Add {noun}", on_add, f"add-{noun}", variant="solid"),
        spacing="2",
        align="center",
        wrap="wrap",
    )


def filter_field(label: str, control: rx.Component) -> rx.Component:
    """A list filter's CONTROL under its small gray LABEL (the Runs and Audit filter bars)."""
    return rx.vstack(rx.text(label, size="1", color_scheme="gray"), control, spacing="1")
