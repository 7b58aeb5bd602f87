"""Dashboard pages that are still placeholders: the frame plus an empty state saying what comes."""

from __future__ import annotations

import reflex as rx

from codexk8s.web.components.layout import empty_state, page


def overview() -> rx.Component:
    return page(
        "Overview",
        empty_state(
            "activity",
            "No runs yet",
            "Runs appear here when a run:<stage> label lands on an issue of a connected "
            "repository. Start by creating a project.",
            command="codexk8s project create my-project --name 'My project'",
        ),
    )


def runs() -> rx.Component:
    return page(
        "Runs",
        empty_state(
            "play",
            "No runs to show",
            "Label an issue with run:dev (or another stage) to start an agent run.",
            command="codexk8s runs list",
        ),
    )


def agents() -> rx.Component:
    return page(
        "Agents",
        empty_state(
            "bot",
            "Agents and prompt templates",
            "The agent roster (pm, sa, em, dev, reviewer, qa, sre, km) and their prompt "
            "templates will be edited here.",
        ),
    )


def audit() -> rx.Component:
    return page(
        "Audit",
        empty_state(
            "scroll-text",
            "Audit log",
            "Every webhook, run transition and human action is recorded as a flow event.",
        ),
    )
