"""The Projects page: the projects a person may see, with their role, and a project's members."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s import urls
from codexk8s.services.projects import MemberRow, ProjectRow
from codexk8s.web.components.buttons import row_button
from codexk8s.web.components.confirm import confirm_button
from codexk8s.web.components.data_table import data_table
from codexk8s.web.components.forms import add_person_form, form_row
from codexk8s.web.components.layout import empty_state, page, signed_in_only
from codexk8s.web.components.messages import messages
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.projects import PROJECT_ROLES, ProjectsState

# A member's own learning mode; "default" follows the project's setting.
LEARNING_CHOICES = ["default", "on", "off"]


def _sign_in_prompt() -> rx.Component:
    return empty_state(
        "folder-git-2",
        "Sign in to see your projects",
        "Projects, their run slots and their members are shown to the people who belong "
        "to them. Sign in to see yours.",
        test_id="projects-sign-in-prompt",
    )


def _no_projects() -> rx.Component:
    return empty_state(
        "folder-git-2",
        "No projects to show",
        "A project groups repositories, members and run slots. A platform admin creates "
        "one (New project, above) and adds members; you see the projects you are a member of.",
        command="codexk8s project create my-project --name 'My project'",
        test_id="projects-empty",
    )


def _messages() -> rx.Component:
    return messages(ProjectsState.error, ProjectsState.notice, "projects")


def _project_row(row: ProjectRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(
            rx.link(rx.code(row.key), href=urls.PROJECTS + "/" + row.key),
            data_testid="project-key",
        ),
        rx.table.cell(row.name),
        rx.table.cell(row.slots),
        rx.table.cell(
            rx.cond(row.role, rx.badge(row.role), rx.badge("platform admin", color_scheme="gray")),
            data_testid="project-role",
        ),
        rx.table.cell(
            row_button(
                "Members",
                ProjectsState.select_project(row.key),
                "show-members",
                variant=rx.cond(row.key == ProjectsState.selected_key, "solid", "soft"),
            )
        ),
        data_testid="project-row",
    )


def _projects_table() -> rx.Component:
    return data_table(
        ["Key", "Name", "Slots", "Your role", ""],
        ProjectsState.projects,
        _project_row,
        test_id="projects-table",
    )


def _add_form() -> rx.Component:
    return add_person_form(
        ProjectsState, noun="member", roles=PROJECT_ROLES, on_add=ProjectsState.add_member
    )


def _member_choice(
    options: list[str],
    value: rx.Var,
    on_change: Any,
    label: rx.Var,
    test_id: str,
    **badge_props: Any,
) -> rx.Component:
    """A member's role or learning mode: a select for those who manage the members, a badge for
    everyone else."""
    return rx.table.cell(
        rx.cond(
            ProjectsState.can_manage_members,
            rx.select(
                options,
                value=value,
                on_change=on_change,
                size="1",
                aria_label=label,
                data_testid=test_id,
            ),
            rx.badge(value, data_testid=test_id, **badge_props),
        )
    )


def _member_row(row: MemberRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row.email, data_testid="member-email"),
        _member_choice(
            PROJECT_ROLES,
            row.role,
            lambda role: ProjectsState.change_member_role(row.email, role),
            "Role of " + row.email,
            "member-role",
        ),
        _member_choice(
            LEARNING_CHOICES,
            row.learning_mode,
            lambda mode: ProjectsState.change_member_learning(row.email, mode),
            "Learning mode of " + row.email,
            "member-learning",
            variant="outline",
        ),
        rx.table.cell(
            rx.cond(
                ProjectsState.can_manage_members,
                confirm_button(
                    label="Remove",
                    title="Remove " + row.email + "?",
                    text="They lose access to this project at once: its runs, logs and "
                    "settings. You can add them again later.",
                    on_confirm=ProjectsState.remove_member(row.email),
                    test_id="remove-member",
                    size="1",
                ),
            )
        ),
        data_testid="member-row",
    )


def _members() -> rx.Component:
    return rx.vstack(
        rx.heading("Members of ", ProjectsState.selected_name, size="4", as_="h2"),
        messages(ProjectsState.member_error, ProjectsState.member_notice, "members"),
        rx.cond(
            ProjectsState.can_manage_members,
            _add_form(),
            rx.text(
                "Only the project's admins and platform admins change its members.",
                color_scheme="gray",
            ),
        ),
        data_table(
            ["Email", "Role", "Learning mode", ""],
            ProjectsState.members,
            _member_row,
            test_id="members-table",
        ),
        spacing="3",
        width="100%",
        data_testid="members",
    )


def _new_project_form() -> rx.Component:
    """Platform admins create projects here (the service checks it again)."""
    return rx.card(
        rx.form(
            rx.flex(
                form_row(
                    "Key",
                    rx.input(
                        name="key",
                        placeholder="web-shop",
                        required=True,
                        data_testid="new-project-key",
                    ),
                    hint="lowercase letters, digits and dashes",
                ),
                form_row(
                    "Name",
                    rx.input(name="name", placeholder="optional", data_testid="new-project-name"),
                ),
                form_row(
                    "Run slots",
                    rx.input(
                        name="slots",
                        type="number",
                        min=1,
                        max=64,
                        default_value="2",
                        data_testid="new-project-slots",
                        width="7rem",
                    ),
                    hint="runs at once",
                ),
                rx.button(
                    rx.cond(ProjectsState.is_creating, rx.spinner(size="1"), rx.icon("plus")),
                    "New project",
                    type="submit",
                    disabled=ProjectsState.is_creating,
                    data_testid="new-project-submit",
                ),
                gap="0.75rem",
                wrap="wrap",
                align="end",
            ),
            on_submit=ProjectsState.create_project,
            reset_on_submit=True,
        ),
        width="100%",
    )


def _content() -> rx.Component:
    return rx.vstack(
        _messages(),
        rx.cond(AuthState.is_platform_admin, _new_project_form()),
        rx.cond(
            ProjectsState.projects.length() > 0,  # type: ignore[attr-defined]
            rx.vstack(
                _projects_table(),
                rx.cond(ProjectsState.selected_key != "", _members()),
                spacing="5",
                width="100%",
            ),
            _no_projects(),
        ),
        spacing="4",
        width="100%",
    )


def projects() -> rx.Component:
    return page(
        "Projects",
        signed_in_only(_content(), _sign_in_prompt()),
    )
