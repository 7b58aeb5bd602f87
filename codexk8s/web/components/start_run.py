"""The "Start run" button and its dialog (shown to people who may start runs)."""

from __future__ import annotations

import reflex as rx

from codexk8s.web.components.buttons import icon_label_button, secondary_button
from codexk8s.web.components.forms import form_row
from codexk8s.web.components.messages import note
from codexk8s.web.state.start_run import STAGES, StartRunState


def _select(
    value: rx.Var, choices: rx.Var | list[str], on_change: object, test_id: str
) -> rx.Component:
    items = (
        rx.foreach(choices, lambda c: rx.select.item(c, value=c))
        if isinstance(choices, rx.Var)
        else rx.fragment(*(rx.select.item(c, value=c) for c in choices))
    )
    return rx.select.root(
        rx.select.trigger(data_testid=test_id, width="100%"),
        rx.select.content(items),
        value=value,
        on_change=on_change,
    )


def start_run_button(*, choose_project: bool = True) -> rx.Component:
    """The button; CHOOSE_PROJECT adds a project field (the Runs page; a project's page has
    its own project)."""
    state = StartRunState
    return rx.cond(
        state.can_start if choose_project else state.page_project != "",
        rx.dialog.root(
            rx.dialog.trigger(
                icon_label_button(
                    "play", "Start run", state.open_dialog, "start-run", variant="solid"
                )
            ),
            rx.dialog.content(
                rx.dialog.title("Start a run"),
                rx.dialog.description(
                    "The run is queued for a free slot of the project, as if its label had "
                    "been added on GitHub.",
                    size="2",
                    color_scheme="gray",
                ),
                rx.vstack(
                    note(
                        state.error,
                        icon="triangle-alert",
                        color="red",
                        role="alert",
                        width="100%",
                        data_testid="start-run-error",
                    ),
                    *(
                        [
                            form_row(
                                "Project",
                                _select(
                                    state.project,
                                    state.projects,
                                    state.set_project,
                                    "start-run-project",
                                ),
                                width="100%",
                            )
                        ]
                        if choose_project
                        else []
                    ),
                    form_row(
                        "Repository",
                        rx.cond(
                            state.repositories.length() > 0,
                            _select(
                                state.repository,
                                state.repositories,
                                state.set_repository,
                                "start-run-repository",
                            ),
                            rx.text(
                                "This project has no repository yet.",
                                size="2",
                                color_scheme="gray",
                            ),
                        ),
                        width="100%",
                    ),
                    form_row(
                        "Issue or pull request number",
                        rx.input(
                            value=state.number,
                            on_change=state.set_number,
                            placeholder="42",
                            inputmode="numeric",
                            data_testid="start-run-number",
                        ),
                        hint="review runs take a pull request's number",
                        width="100%",
                    ),
                    form_row(
                        "Stage",
                        _select(state.stage, STAGES, state.set_stage, "start-run-stage"),
                        width="100%",
                    ),
                    rx.flex(
                        rx.dialog.close(secondary_button("Cancel")),
                        rx.button(
                            rx.cond(state.is_starting, rx.spinner(size="1"), rx.icon("play")),
                            "Start run",
                            on_click=state.start,
                            disabled=state.is_starting,
                            data_testid="start-run-submit",
                        ),
                        gap="0.75rem",
                        justify="end",
                        width="100%",
                    ),
                    spacing="3",
                    width="100%",
                    padding_top="0.75rem",
                ),
                max_width="28rem",
            ),
            open=state.is_open,
            on_open_change=state.set_open,
        ),
    )
