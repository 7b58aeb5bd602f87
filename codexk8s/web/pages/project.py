"""A project's page: settings, repositories (secrets write-only), members, recent runs, deletion."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s import urls
from codexk8s.domain.run_requests import POLICY_WORDS, WAITING_SLOT_WORDS
from codexk8s.services.projects import RecentRun
from codexk8s.services.repositories import RepositoryRow
from codexk8s.web.components.buttons import icon_label_button, row_button, secondary_button
from codexk8s.web.components.confirm import confirm_button
from codexk8s.web.components.data_table import data_table
from codexk8s.web.components.layout import empty_state, page, section_card, signed_in_only
from codexk8s.web.components.messages import messages
from codexk8s.web.components.start_run import start_run_button
from codexk8s.web.components.status import status_badge
from codexk8s.web.pages.projects import _members
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.project import COST_RANGES, ProjectPageState


def _messages() -> rx.Component:
    return messages(ProjectPageState.error, ProjectPageState.notice, "project")


def _field(label: str | rx.Var[str], control: rx.Component) -> rx.Component:
    return rx.vstack(rx.text(label, size="2", weight="medium"), control, spacing="1")


def _setting(label: str, field: str, *, control: Any = rx.input, **props: Any) -> rx.Component:
    """LABEL over the control of the setting `edit_<field>` (test id `settings-<field>`); only
    the project's admins may change it."""
    state = ProjectPageState
    value = {"checked" if control is rx.switch else "value": getattr(state, f"edit_{field}")}
    props.setdefault("aria_label", label)
    return _field(
        label,
        control(
            **value,
            on_change=getattr(state, f"set_edit_{field}"),
            disabled=~state.can_edit,
            data_testid="settings-" + field.replace("_", "-"),
            **props,
        ),
    )


def _settings() -> rx.Component:
    return section_card(
        "Settings",
        rx.flex(
            _setting("Name", "name"),
            _setting("Run slots", "slots", type="number", min=1, max=64, width="6rem"),
            _setting("Default model", "model", placeholder="the agent's own model"),
            _setting(
                "Log retention (days)",
                "log_retention",
                placeholder=ProjectPageState.log_retention_default,
                aria_label="Log retention in days (0: forever; empty: the default)",
                title="Days finished runs keep their log lines; 0 keeps them forever, "
                "empty follows CODEXK8S_LOG_RETENTION_DAYS",
                width="10rem",
            ),
            _setting("Learning mode by default", "learning", control=rx.switch),
            spacing="4",
            wrap="wrap",
            align="end",
        ),
        rx.cond(
            ProjectPageState.can_edit,
            rx.button(
                "Save settings",
                on_click=ProjectPageState.save_settings,
                data_testid="settings-save",
            ),
            rx.text("Only the project's admins change its settings.", color_scheme="gray"),
        ),
    )


def _conversation_input(field: str, label: str, placeholder: str, width: str) -> rx.Component:
    return _field(
        label,
        rx.input(
            value=ProjectPageState.conversation[field],
            on_change=lambda value: ProjectPageState.set_conversation(field, value),
            placeholder=placeholder,
            disabled=~ProjectPageState.can_edit,
            aria_label=label,
            data_testid=f"conversation-{field}",
            width=width,
        ),
    )


def _conversation() -> rx.Component:
    """Who besides members with write access starts runs, and discussions before the work."""
    return section_card(
        "Triggers and discussions",
        rx.text(
            "Labels, comments and reviews start runs only for members with write access (by "
            "their linked GitHub login) and for the bots listed here. A stage listed under "
            "discussions answers on the issue first, with no branch or pull request.",
            size="2",
            color_scheme="gray",
        ),
        rx.flex(
            _conversation_input("bots", "Bots that may start runs", "renovate[bot], ...", "18rem"),
            _conversation_input("stages", "Stages that discuss first", "plan, dev, ...", "14rem"),
            _conversation_input("model", "Discussion model", "the installation's", "12rem"),
            _conversation_input(
                "effort", "Discussion reasoning effort", "low, medium or high", "12rem"
            ),
            spacing="4",
            wrap="wrap",
            align="end",
        ),
        rx.cond(
            ProjectPageState.can_edit,
            rx.button(
                "Save", on_click=ProjectPageState.save_conversation, data_testid="conversation-save"
            ),
        ),
        test_id="conversation-settings",
    )


def _select_row(label: Any, test_id: Any, *items: rx.Component, **select: Any) -> rx.Component:
    """A setting chosen from a list: its words, then the select (project admins change it)."""
    return rx.flex(
        rx.text(label, size="2", min_width="16rem"),
        rx.select.root(
            rx.select.trigger(aria_label=label, data_testid=test_id),
            rx.select.content(*items),
            disabled=~ProjectPageState.can_edit,
            **select,
        ),
        spacing="3",
        align="center",
        wrap="wrap",
    )


def _policy_row(row: rx.Var) -> rx.Component:
    tool, words, policy = row[0], row[1], row[2]
    return _select_row(
        words, "policy-" + tool.to(str),
        rx.cond(tool != "ask", rx.select.item(POLICY_WORDS["none"], value="none")),
        rx.select.item(POLICY_WORDS["owner"], value="owner"),
        rx.select.item(POLICY_WORDS["delegated"], value="delegated"),
        value=policy.to(str),
        on_change=lambda value: ProjectPageState.set_tool_policy(tool.to(str), value),
    )  # fmt: skip


def _tool_policies() -> rx.Component:
    return section_card(
        "Agent tools",
        rx.text(
            "Who decides when a run's agent asks a question or asks approval, through the "
            "platform tools. The run waits for the answer; every call is in the Audit page.",
            size="2",
            color_scheme="gray",
        ),
        rx.foreach(ProjectPageState.tool_policies, _policy_row),
        _select_row(
            "While its agent waits for a person, a run",
            "waiting-slot",
            *(rx.select.item(words, value=value) for value, words in WAITING_SLOT_WORDS.items()),
            value=ProjectPageState.waiting_slot,
            on_change=ProjectPageState.set_waiting_slot,
        ),
        test_id="tool-policies",
    )


def _register_webhook_button(row: RepositoryRow) -> rx.Component:
    # Only one registration at a time: the others are disabled while GitHub answers.
    return row_button(
        rx.cond(row.webhook_id, "Update webhook", "Register webhook"),
        ProjectPageState.register_webhook(row.full_name),
        "register-webhook",
        loading=ProjectPageState.registering == row.full_name,
        disabled=ProjectPageState.registering != "",
        title="Create or update this repository's webhook on GitHub with its stored token and "
        "secret (or the global ones)",
    )


def _repository_row(row: RepositoryRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.code(row.full_name), data_testid="repository-name"),
        rx.table.cell(
            rx.cond(
                row.has_token, "set", rx.cond(row.uses_global_token, "platform token", "not set")
            ),
            data_testid="repository-token",
        ),
        rx.table.cell(
            rx.cond(row.has_webhook_secret, "set", "global secret"),
            data_testid="repository-webhook-secret",
        ),
        rx.table.cell(row.services_yaml_path),
        rx.table.cell(
            rx.cond(row.webhook_id, rx.code(row.webhook_id.to_string()), "not registered"),
            data_testid="repository-webhook-id",
        ),
        rx.table.cell(
            rx.cond(
                ProjectPageState.can_edit_repositories,
                rx.hstack(
                    _register_webhook_button(row),
                    confirm_button(
                        label="Remove",
                        title="Detach " + row.full_name + "?",
                        text="Its labels no longer start runs here and its stored token and "
                        "webhook secret are deleted. Runs it already has stay.",
                        on_confirm=ProjectPageState.remove_repository(row.full_name),
                        test_id="remove-repository",
                        size="1",
                    ),
                    spacing="2",
                    wrap="wrap",
                ),
            )
        ),
        data_testid="repository-row",
    )


def _add_repository() -> rx.Component:
    # Uncontrolled inputs read on submit: the secrets are never held in state or sent back.
    return rx.form(
        rx.flex(
            _field(
                "Repository",
                rx.input(
                    name="full_name",
                    placeholder="owner/name",
                    required=True,
                    data_testid="repository-full-name",
                    aria_label="Repository",
                ),
            ),
            _field(
                rx.cond(
                    AuthState.is_platform_admin,
                    "Token (write-only; none: the platform's token)",
                    "Token (write-only, required)",
                ),
                rx.input(
                    name="token",
                    type="password",
                    placeholder="ghp_… or a fine-grained token",
                    auto_complete="off",
                    data_testid="repository-token-input",
                    aria_label="Token",
                ),
            ),
            _field(
                "Webhook secret (write-only)",
                rx.input(
                    name="webhook_secret",
                    type="password",
                    placeholder="optional",
                    auto_complete="off",
                    data_testid="repository-secret-input",
                    aria_label="Webhook secret",
                ),
            ),
            icon_label_button(
                "plus", "Add repository", test_id="add-repository", variant="solid", type="submit"
            ),
            spacing="3",
            wrap="wrap",
            align="end",
        ),
        on_submit=ProjectPageState.add_repository,
        reset_on_submit=True,
        width="100%",
    )


def _repositories() -> rx.Component:
    return section_card(
        "Repositories",
        data_table(
            ["Repository", "Token", "Webhook secret", "services.yaml", "Webhook", ""],
            ProjectPageState.repositories,
            _repository_row,
            test_id="repositories-table",
            empty=rx.text(
                "No repository yet. Add one: its issues labelled run:<stage> start runs here. "
                "Then register its webhook with the button on its row (or point a GitHub "
                "webhook for issues, pull requests, reviews and comments at "
                "/api/v1/webhooks/github with the same secret).",
                color_scheme="gray",
                data_testid="repositories-empty",
            ),
        ),
        rx.cond(ProjectPageState.can_edit_repositories, _add_repository()),
    )


def _run_row(run: RecentRun) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(
            rx.link("#" + run.id.to_string(), href="/runs/" + run.id.to_string())
        ),
        rx.table.cell(status_badge(run.status), data_testid="recent-run-status"),
        rx.table.cell(run.stage),
        rx.table.cell(run.agent_key),
        rx.table.cell(
            rx.cond(run.issue_number, run.repository + "#" + run.issue_number.to_string(), "")
        ),
        rx.table.cell(run.created_at),
        on_click=rx.redirect("/runs/" + run.id.to_string()),
        cursor="pointer",
        _hover={"background": "var(--gray-a3)"},
        data_testid="recent-run",
    )


def _cost() -> rx.Component:
    """What the project's runs cost per day over the chosen range."""
    return section_card(
        rx.flex(
            rx.heading("Cost", size="4", as_="h2"),
            rx.spacer(),
            rx.select.root(
                rx.select.trigger(aria_label="Range", data_testid="cost-range"),
                rx.select.content(
                    *(rx.select.item(f"Last {d} days", value=d) for d in COST_RANGES)
                ),
                value=ProjectPageState.cost_days.to_string(),
                on_change=ProjectPageState.set_cost_days,
            ),
            align="center",
            width="100%",
            gap="0.5rem",
        ),
        rx.text(
            rx.text.span(ProjectPageState.cost_total, weight="bold", size="5"),
            " in the last ",
            ProjectPageState.cost_days,
            " days",
            data_testid="cost-total",
        ),
        rx.recharts.bar_chart(
            rx.recharts.bar(data_key="cost_value", name="Cost (USD)", fill="var(--accent-9)"),
            rx.recharts.x_axis(data_key="day"),
            rx.recharts.y_axis(),
            rx.recharts.graphing_tooltip(),
            data=ProjectPageState.cost_rows.to(list[dict[str, Any]]),
            height=180,
            width="100%",
        ),
        data_table(
            ["Day", "Runs", "Cost"],
            ProjectPageState.cost_rows,
            lambda row: rx.table.row(
                rx.table.cell(row.day),
                rx.table.cell(row.runs),
                rx.table.cell(row.cost),
                data_testid="cost-row",
            ),
            test_id="cost-table",
            size="1",
        ),
        test_id="project-cost",
    )


def _recent_runs() -> rx.Component:
    return section_card(
        "Recent runs",
        data_table(
            ["Run", "Status", "Stage", "Agent", "Issue", "Created"],
            ProjectPageState.recent_runs,
            _run_row,
            size="1",
            empty=rx.text(
                "No runs yet: label an issue of one of its repositories with run:dev "
                "(or another stage) to start one.",
                color_scheme="gray",
            ),
        ),
    )


def _delete() -> rx.Component:
    return section_card(
        "Delete this project",
        rx.text(
            "Deleting removes its repositories, members, slots, runs and their logs. The "
            "audit trail keeps its events. A project with active runs cannot be deleted.",
            color_scheme="gray",
        ),
        rx.alert_dialog.root(
            rx.alert_dialog.trigger(
                rx.button(
                    "Delete project…",
                    color_scheme="red",
                    variant="soft",
                    data_testid="delete-project",
                ),
            ),
            rx.alert_dialog.content(
                rx.alert_dialog.title("Delete ", ProjectPageState.page_key, "?"),
                rx.alert_dialog.description(
                    "This cannot be undone. Type the project key to confirm."
                ),
                rx.input(
                    value=ProjectPageState.delete_confirmation,
                    on_change=ProjectPageState.set_delete_confirmation,
                    placeholder=ProjectPageState.page_key,
                    aria_label="Project key",
                    data_testid="delete-confirmation",
                    margin_y="1rem",
                ),
                rx.flex(
                    rx.alert_dialog.cancel(secondary_button("Cancel")),
                    rx.alert_dialog.action(
                        rx.button(
                            "Delete",
                            color_scheme="red",
                            disabled=ProjectPageState.delete_confirmation
                            != ProjectPageState.page_key,
                            on_click=ProjectPageState.delete_project,
                            data_testid="confirm-delete",
                        )
                    ),
                    spacing="3",
                    justify="end",
                ),
            ),
        ),
        test_id="danger-zone",
    )


def _content() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.link(
                rx.hstack(
                    rx.icon("arrow-left", size=16), "All projects", spacing="1", align="center"
                ),
                href=urls.PROJECTS,
            ),
            rx.code(ProjectPageState.page_key, data_testid="project-page-key"),
            rx.badge(ProjectPageState.role_text, data_testid="project-page-role"),
            rx.spacer(),
            start_run_button(choose_project=False),
            align="center",
            spacing="3",
            wrap="wrap",
            width="100%",
        ),
        _messages(),
        _settings(),
        _conversation(),
        _tool_policies(),
        _repositories(),
        rx.card(_members(), width="100%"),
        _recent_runs(),
        _cost(),
        rx.cond(ProjectPageState.can_delete, _delete()),
        spacing="4",
        width="100%",
    )


def project() -> rx.Component:
    return page(
        rx.cond(
            ProjectPageState.project_name != "",
            "Project " + ProjectPageState.project_name,
            "Project",
        ),
        signed_in_only(
            rx.cond(
                ProjectPageState.not_found,
                empty_state(
                    "folder-x",
                    "No such project",
                    "There is no project with this key, or you are not a member of it. "
                    "Go back to the projects you can see.",
                    test_id="project-not-found",
                ),
                _content(),
            ),
            empty_state(
                "folder-git-2",
                "Sign in to see this project",
                "Projects are shown to their members. Sign in to see yours.",
            ),
            is_loaded=ProjectPageState.is_loaded,
        ),
    )
