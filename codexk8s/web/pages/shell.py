"""The dashboard pages as they stand before their features land: frame plus empty states."""

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


def projects() -> rx.Component:
    return page(
        "Projects",
        empty_state(
            "folder-git-2",
            "No projects to show",
            "A project groups repositories, members and run slots. Create one, then attach a "
            "GitHub repository to it.",
            command="codexk8s repo add my-project octo-org/octo-repo --token-env GITHUB_TOKEN",
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


def users() -> rx.Component:
    return page(
        "Users",
        empty_state(
            "users",
            "Users",
            "Only people an admin adds may sign in. Add one from the command line.",
            command="codexk8s user add someone@example.com --role user",
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
