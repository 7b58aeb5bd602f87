"""The Users page: who may sign in, with which platform role, who is disabled, and the API
tokens people hold."""

from __future__ import annotations

import reflex as rx

from codexk8s.services.users import UserRow
from codexk8s.web.components.buttons import row_button
from codexk8s.web.components.data_table import data_table
from codexk8s.web.components.forms import add_person_form
from codexk8s.web.components.layout import empty_state, page, signed_in_only
from codexk8s.web.components.messages import messages
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.users import ROLES, TokenView, UsersState


def _sign_in_prompt() -> rx.Component:
    return empty_state(
        "users",
        "Sign in to manage users",
        "Only people an admin adds may sign in. Platform admins add, disable and re-role "
        "users here once signed in, or from the command line.",
        command="codexk8s user add someone@example.com --role user",
        test_id="users-sign-in-prompt",
    )


def _not_admin() -> rx.Component:
    return rx.callout(
        "This page is for platform admins. Ask an owner or admin to add or change users.",
        icon="shield-alert",
        color_scheme="amber",
        data_testid="users-admins-only",
    )


def _messages() -> rx.Component:
    return messages(UsersState.error, UsersState.notice, "users")


def _add_form() -> rx.Component:
    return add_person_form(UsersState, noun="user", roles=ROLES, on_add=UsersState.add_user)


def _user_row(row: UserRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row.email, data_testid="user-email"),
        rx.table.cell(rx.cond(row.github_login, row.github_login, "—")),
        rx.table.cell(
            rx.select(
                ROLES,
                value=row.role,
                on_change=lambda role: UsersState.change_role(row.id, role),
                size="1",
                aria_label="Role of " + row.email,
                data_testid="user-role",
            )
        ),
        rx.table.cell(
            rx.cond(
                row.disabled,
                rx.badge("disabled", color_scheme="red", data_testid="user-status"),
                rx.badge("active", color_scheme="green", data_testid="user-status"),
            )
        ),
        rx.table.cell(
            rx.cond(
                row.disabled,
                row_button("Enable", UsersState.enable_user(row.id), "enable-user"),
                row_button("Disable", UsersState.disable_user(row.id), "disable-user", color="red"),
            )
        ),
        data_testid="user-row",
    )


def _token_row(token: TokenView) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(token.name, data_testid="token-name"),
        rx.table.cell(rx.code(token.prefix), data_testid="token-prefix"),
        rx.table.cell(token.owner_email, data_testid="token-owner"),
        rx.table.cell(token.created),
        rx.table.cell(token.last_used),
        rx.table.cell(
            rx.badge(token.status, color_scheme=token.status_color), data_testid="token-status"
        ),
        rx.table.cell(
            rx.cond(
                token.status == "active",
                row_button(
                    "Revoke",
                    UsersState.revoke_token(token.id),
                    "revoke-token",
                    color="red",
                    aria_label="Revoke the token " + token.name + " of " + token.owner_email,
                ),
            )
        ),
        data_testid="token-row",
    )


def _tokens() -> rx.Component:
    return rx.vstack(
        rx.heading("API tokens", size="4", as_="h2"),
        rx.text(
            "Tokens for the staff API, created with ",
            rx.code("codexk8s token create EMAIL"),
            ". Only their first characters are shown; a revoked token stops working at once.",
            color_scheme="gray",
        ),
        data_table(
            ["Name", "Starts with", "Owner", "Created", "Last used", "Status", ""],
            UsersState.tokens,
            _token_row,
            test_id="tokens-table",
            empty=rx.text("No API tokens yet.", data_testid="no-tokens"),
        ),
        spacing="3",
        width="100%",
    )


def _manager() -> rx.Component:
    return rx.vstack(
        rx.text(
            "Only people added here may sign in. Disabling someone ends their sessions and "
            "revokes their API tokens at once.",
            color_scheme="gray",
        ),
        _add_form(),
        _messages(),
        data_table(
            ["Email", "GitHub login", "Role", "Status", ""],
            UsersState.users,
            _user_row,
            test_id="users-table",
        ),
        _tokens(),
        spacing="4",
        width="100%",
    )


def users() -> rx.Component:
    return page(
        "Users",
        signed_in_only(
            rx.cond(AuthState.is_platform_admin, _manager(), _not_admin()), _sign_in_prompt()
        ),
    )
