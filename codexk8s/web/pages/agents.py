"""The Agents page: the roster with its settings and the prompt template editor with history."""

from __future__ import annotations

import reflex as rx

from codexk8s.domain import prompts
from codexk8s.domain.prompts import DiffLine
from codexk8s.services.agents import AgentRow
from codexk8s.web.components.buttons import icon_label_button, row_button, secondary_button
from codexk8s.web.components.data_table import data_table
from codexk8s.web.components.forms import form_row
from codexk8s.web.components.layout import empty_state, page, signed_in_only, skeletons
from codexk8s.web.components.messages import messages, note
from codexk8s.web.state.agents import KINDS, SCOPES, AgentsState, VersionRow

ENGINE_LABELS = (
    ("codex", "Codex (agent runner)"),
    ("command", "Command in the runner"),
    ("process", "Own process"),
)
MONO = "var(--code-font-family, ui-monospace, monospace)"


def _sign_in_prompt() -> rx.Component:
    return empty_state(
        "bot",
        "Sign in to see the agents",
        "The agent roster and the prompt templates each stage's agent works from are shown "
        "to signed-in people; platform admins change them.",
        test_id="agents-sign-in-prompt",
    )


def _messages() -> rx.Component:
    return messages(AgentsState.error, AgentsState.notice, "agents")


def _skeleton() -> rx.Component:
    return skeletons(["12rem", "24rem"], test_id="agents-loading", spacing="4")


# --- roster ---------------------------------------------------------------------------------------


def _agent_row(row: AgentRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(rx.code(row.key), data_testid="agent-key"),
        rx.table.cell(row.name),
        rx.table.cell(
            rx.vstack(
                rx.match(
                    row.engine,
                    ("command", rx.badge("command in the runner", color_scheme="blue")),
                    ("process", rx.badge("own process", color_scheme="violet")),
                    rx.badge("Codex (agent runner)", color_scheme="gray"),
                ),
                rx.cond(row.command != "", rx.code(row.command, size="1")),
                spacing="1",
                align="start",
            ),
            data_testid="agent-engine",
        ),
        rx.table.cell(rx.cond(row.image != "", rx.code(row.image), "default")),
        rx.table.cell(row.timeout_minutes, " min", data_testid="agent-timeout"),
        rx.table.cell(rx.cond(row.model != "", row.model, "project default")),
        rx.table.cell(
            rx.cond(
                AgentsState.is_admin,
                row_button("Edit", AgentsState.start_edit_agent(row.key), "edit-agent"),
            )
        ),
        data_testid="agent-row",
    )


def _field(label: str, value: rx.Var, on_change: object, testid: str, hint: str) -> rx.Component:
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.input(
            value=value,
            on_change=on_change,
            placeholder=hint,
            aria_label=label,
            data_testid=testid,
            width="100%",
        ),
        spacing="1",
        width=["100%", "100%", "auto"],
        flex="1",
        min_width="12rem",
    )


def _agent_form() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Settings of ", rx.code(AgentsState.editing_key), size="3", as_="h3"),
            rx.flex(
                form_row(
                    "Engine",
                    rx.select.root(
                        rx.select.trigger(data_testid="agent-engine-select", width="100%"),
                        rx.select.content(
                            *(rx.select.item(label, value=value) for value, label in ENGINE_LABELS)
                        ),
                        value=AgentsState.edit_engine,
                        on_change=AgentsState.set_edit_engine,
                    ),
                    hint="Codex: the agent runner drives Codex. Command: the runner runs the "
                    "command in the checkout. Process: the command is the whole workload.",
                    width="16rem",
                ),
                _field(
                    "Image",
                    AgentsState.edit_image,
                    AgentsState.set_edit_image,
                    "agent-image",
                    "default image",
                ),
                _field(
                    "Command",
                    AgentsState.edit_command,
                    AgentsState.set_edit_command,
                    "agent-command",
                    "needed for the command and process engines",
                ),
                _field(
                    "Timeout (minutes)",
                    AgentsState.edit_timeout,
                    AgentsState.set_edit_timeout,
                    "agent-timeout-input",
                    "60",
                ),
                _field(
                    "Default model",
                    AgentsState.edit_model,
                    AgentsState.set_edit_model,
                    "agent-model",
                    "project default",
                ),
                wrap="wrap",
                gap="3",
                width="100%",
            ),
            rx.hstack(
                rx.button(
                    "Save settings", on_click=AgentsState.save_agent, data_testid="save-agent"
                ),
                secondary_button("Cancel", on_click=AgentsState.cancel_edit_agent),
                spacing="2",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        data_testid="agent-form",
    )


def _roster() -> rx.Component:
    return rx.vstack(
        rx.heading("Roster", size="4", as_="h2"),
        data_table(
            ["Key", "Name", "Runs", "Image", "Timeout", "Model", ""],
            AgentsState.roster,
            _agent_row,
            test_id="roster-table",
            empty=empty_state(
                "bot",
                "The roster is empty",
                "The agents are created by the database migrations.",
                command="codexk8s migrate",
            ),
        ),
        rx.cond(AgentsState.editing_key != "", _agent_form()),
        spacing="3",
        width="100%",
    )


# --- prompt templates -----------------------------------------------------------------------------


def _diff_line(line: DiffLine) -> rx.Component:
    return rx.box(
        line.text,
        white_space="pre-wrap",
        word_break="break-word",
        padding_x="0.5rem",
        color=rx.match(
            line.kind,
            ("add", "var(--green-11)"),
            ("remove", "var(--red-11)"),
            ("hunk", "var(--blue-11)"),
            "var(--gray-11)",
        ),
        background=rx.match(
            line.kind, ("add", "var(--green-a3)"), ("remove", "var(--red-a3)"), "transparent"
        ),
        data_kind=line.kind,
    )


def _diff(lines: rx.Var, testid: str, empty: str) -> rx.Component:
    return rx.cond(
        lines.length() > 0,  # type: ignore[attr-defined]
        rx.box(
            rx.foreach(lines, _diff_line),
            font_family=MONO,
            font_size="0.8rem",
            border="1px solid var(--gray-a5)",
            border_radius="var(--radius-3)",
            padding_y="0.5rem",
            max_height="28rem",
            overflow_y="auto",
            width="100%",
            data_testid=testid,
        ),
        rx.text(empty, color_scheme="gray", size="2", data_testid=testid + "-empty"),
    )


def _picker() -> rx.Component:
    return rx.flex(
        rx.select(
            SCOPES,
            value=AgentsState.scope,
            on_change=AgentsState.select_scope,
            aria_label="Stage",
            data_testid="template-scope",
        ),
        rx.select(
            KINDS,
            value=AgentsState.kind,
            on_change=AgentsState.select_kind,
            aria_label="Kind",
            data_testid="template-kind",
        ),
        rx.cond(
            AgentsState.current_version > 0,
            rx.badge("version ", AgentsState.current_version, data_testid="template-version"),
            rx.badge("no version yet", color_scheme="orange", data_testid="template-version"),
        ),
        rx.cond(AgentsState.is_dirty, rx.badge("unsaved changes", color_scheme="amber")),
        gap="2",
        align="center",
        wrap="wrap",
    )


def _editor() -> rx.Component:
    return rx.vstack(
        rx.text_area(
            value=AgentsState.draft,
            on_change=AgentsState.set_draft,
            read_only=~AgentsState.is_admin,
            rows="22",
            font_family=MONO,
            width="100%",
            resize="vertical",
            aria_label="Template text",
            data_testid="template-editor",
        ),
        note(
            AgentsState.draft_error,
            icon="triangle-alert",
            color="orange",
            size="1",
            data_testid="template-draft-error",
        ),
        rx.cond(
            AgentsState.is_admin,
            rx.hstack(
                icon_label_button(
                    "save",
                    "Save as new version",
                    AgentsState.save_template,
                    "save-template",
                    variant="solid",
                    disabled=~AgentsState.is_dirty | (AgentsState.draft_error != ""),
                ),
                secondary_button(
                    "Discard changes",
                    on_click=AgentsState.discard_draft,
                    disabled=~AgentsState.is_dirty,
                ),
                spacing="2",
                wrap="wrap",
            ),
            rx.text(
                "Only platform admins change prompt templates; you can read them.",
                color_scheme="gray",
                size="2",
                data_testid="template-read-only",
            ),
        ),
        spacing="2",
        width="100%",
    )


def _tabs() -> rx.Component:
    return rx.tabs.root(
        rx.tabs.list(
            rx.tabs.trigger("Edit", value="edit", data_testid="tab-edit"),
            rx.tabs.trigger("Preview", value="preview", data_testid="tab-preview"),
            rx.tabs.trigger("Unsaved changes", value="changes", data_testid="tab-changes"),
        ),
        rx.tabs.content(_editor(), value="edit", padding_top="0.75rem"),
        rx.tabs.content(
            rx.vstack(
                rx.text(
                    "Rendered with a sample issue (#42 in octo-org/octo-repo).",
                    color_scheme="gray",
                    size="2",
                ),
                rx.box(
                    rx.markdown(AgentsState.preview), width="100%", data_testid="template-preview"
                ),
                spacing="2",
            ),
            value="preview",
            padding_top="0.75rem",
        ),
        rx.tabs.content(
            _diff(AgentsState.draft_diff, "draft-diff", "No unsaved changes."),
            value="changes",
            padding_top="0.75rem",
        ),
        value=AgentsState.view,
        on_change=AgentsState.set_view,
        width="100%",
    )


def _version_row(row: VersionRow) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(
            rx.hstack(
                rx.text("v", row.version, data_testid="history-version"),
                rx.cond(row.is_current, rx.badge("current", color_scheme="green")),
                spacing="2",
            )
        ),
        rx.table.cell(row.author, data_testid="history-author"),
        rx.table.cell(row.created),
        rx.table.cell(
            rx.hstack(
                row_button("Diff", AgentsState.show_version_diff(row.id), "history-diff"),
                rx.cond(
                    AgentsState.is_admin & ~row.is_current,
                    row_button(
                        "Restore",
                        AgentsState.restore_version(row.id),
                        "history-restore",
                        color="orange",
                    ),
                ),
                spacing="2",
            )
        ),
        data_testid="history-row",
    )


def _history() -> rx.Component:
    return rx.vstack(
        rx.heading("History", size="3", as_="h3"),
        data_table(
            ["Version", "By", "When", ""],
            AgentsState.versions,
            _version_row,
            test_id="history-table",
            size="1",
        ),
        rx.cond(
            AgentsState.diff_title != "",
            rx.vstack(
                rx.text(
                    AgentsState.diff_title,
                    weight="medium",
                    size="2",
                    data_testid="version-diff-title",
                ),
                _diff(AgentsState.version_diff, "version-diff", "The texts are identical."),
                spacing="2",
                width="100%",
            ),
        ),
        spacing="2",
        width="100%",
    )


def _placeholders() -> rx.Component:
    return rx.box(
        rx.text("Placeholders", weight="medium", size="2"),
        rx.flex(
            *(
                rx.tooltip(rx.code("{{" + name + "}}", size="1"), content=description)
                for name, description in prompts.PLACEHOLDERS.items()
            ),
            wrap="wrap",
            gap="1",
            padding_top="0.25rem",
        ),
        width="100%",
    )


def _templates() -> rx.Component:
    return rx.vstack(
        rx.heading("Prompt templates", size="4", as_="h2"),
        rx.text(
            "Each stage's agent works from its template: work for a first run, revise when a "
            "review asks for changes. Saving keeps every earlier version.",
            color_scheme="gray",
            size="2",
        ),
        _picker(),
        rx.cond(
            AgentsState.current_version > 0,
            rx.grid(
                rx.vstack(_tabs(), _placeholders(), spacing="3", width="100%", min_width="0"),
                _history(),
                columns=rx.breakpoints(initial="1", lg="2"),
                gap="5",
                width="100%",
            ),
            empty_state(
                "file-text",
                "No template for this stage yet",
                "Load the templates that ship with codexk8s; edits are kept as new versions.",
                command="codexk8s seed",
            ),
        ),
        spacing="3",
        width="100%",
        data_testid="templates",
    )


def _content() -> rx.Component:
    return rx.vstack(
        _messages(),
        rx.cond(
            AgentsState.is_loading,
            _skeleton(),
            rx.vstack(_roster(), _templates(), spacing="6", width="100%"),
        ),
        spacing="4",
        width="100%",
    )


def agents() -> rx.Component:
    return page(
        "Agents",
        signed_in_only(_content(), _sign_in_prompt(), loading=_skeleton()),
    )
