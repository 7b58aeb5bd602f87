"""The Reflex application: dashboard pages plus the HTTP API mounted through api_transformer."""

from __future__ import annotations

import reflex as rx

from codexk8s import urls
from codexk8s.config import get_settings
from codexk8s.logging_config import configure_logging
from codexk8s.web.http.app import build_http_app
from codexk8s.web.lifespan import frozen_startup_objects, run_control_loop
from codexk8s.web.live import live_updates
from codexk8s.web.pages import (
    agents,
    audit,
    inbox,
    overview,
    project,
    projects,
    run,
    runs,
    users,
)
from codexk8s.web.state.agents import AgentsState
from codexk8s.web.state.audit import AuditState
from codexk8s.web.state.inbox import InboxState
from codexk8s.web.state.overview import OverviewState
from codexk8s.web.state.project import ProjectPageState
from codexk8s.web.state.projects import ProjectsState
from codexk8s.web.state.run import RunState
from codexk8s.web.state.runs import RunsState
from codexk8s.web.state.start_run import StartRunState
from codexk8s.web.state.users import UsersState

# The server process (and the workers forked from it) log like the CLI: structured, redacted.
configure_logging(get_settings())
app = rx.App(api_transformer=build_http_app())
# Live updates first: the control loop's first transitions are then pushed too.
app.register_lifespan_task(live_updates)
app.register_lifespan_task(frozen_startup_objects)
app.register_lifespan_task(run_control_loop)
# Every page resolves who is signed in on load; the Users and Projects pages do so in their own
# handlers.
app.add_page(
    overview.overview,
    route=urls.OVERVIEW,
    title="Overview · codexk8s",
    on_load=OverviewState.load_overview,
)
app.add_page(
    projects.projects,
    route=urls.PROJECTS,
    title="Projects · codexk8s",
    on_load=ProjectsState.load_projects,
)
app.add_page(
    project.project,
    route=urls.PROJECT,
    title="Project · codexk8s",
    on_load=[ProjectPageState.load_project, StartRunState.load_targets],
)
app.add_page(
    runs.runs,
    route=urls.RUNS,
    title="Runs · codexk8s",
    on_load=[RunsState.load_runs, StartRunState.load_targets],
)
app.add_page(
    agents.agents, route=urls.AGENTS, title="Agents · codexk8s", on_load=AgentsState.load_agents
)
app.add_page(users.users, route=urls.USERS, title="Users · codexk8s", on_load=UsersState.load_users)
app.add_page(audit.audit, route=urls.AUDIT, title="Audit · codexk8s", on_load=AuditState.load_audit)
app.add_page(inbox.inbox, route=urls.INBOX, title="Inbox · codexk8s", on_load=InboxState.load_inbox)
app.add_page(run.run_page, route=urls.RUN, title="Run · codexk8s", on_load=RunState.load_run)
