"""Who may do what (DESIGN §9): one answer for the UI, the API and the CLI alike.

Platform roles: owner and admin may do everything; a plain user acts on projects through their
membership role. Project roles are cumulative: read (see the project and its runs) <
read_write (start, cancel and rerun runs, edit repositories) < admin (members, settings, delete).
A disabled user may do nothing. Managing users, agents and prompts is for platform admins; only
an owner may grant or take away the owner and admin roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from codexk8s.domain.access import PlatformRole, ProjectRole


class Action(StrEnum):
    # On one project.
    VIEW_PROJECT = "view_project"
    START_RUN = "start_run"
    CANCEL_RUN = "cancel_run"
    RERUN = "rerun"
    EDIT_REPOSITORIES = "edit_repositories"
    EDIT_PROJECT = "edit_project"
    MANAGE_MEMBERS = "manage_members"
    DELETE_PROJECT = "delete_project"
    # Platform-wide.
    CREATE_PROJECT = "create_project"
    MANAGE_USERS = "manage_users"
    GRANT_PLATFORM_ADMIN = "grant_platform_admin"
    MANAGE_AGENTS = "manage_agents"
    MANAGE_PROMPTS = "manage_prompts"
    VIEW_AUDIT = "view_audit"


PROJECT_ACTIONS: dict[ProjectRole, frozenset[Action]] = {
    ProjectRole.READ: frozenset({Action.VIEW_PROJECT}),
    ProjectRole.READ_WRITE: frozenset(
        {
            Action.VIEW_PROJECT,
            Action.START_RUN,
            Action.CANCEL_RUN,
            Action.RERUN,
            Action.EDIT_REPOSITORIES,
        }
    ),
    ProjectRole.ADMIN: frozenset(
        {
            Action.VIEW_PROJECT,
            Action.START_RUN,
            Action.CANCEL_RUN,
            Action.RERUN,
            Action.EDIT_REPOSITORIES,
            Action.EDIT_PROJECT,
            Action.MANAGE_MEMBERS,
            Action.DELETE_PROJECT,
        }
    ),
}
PLATFORM_ADMIN_ONLY = frozenset(
    {
        Action.CREATE_PROJECT,
        Action.MANAGE_USERS,
        Action.MANAGE_AGENTS,
        Action.MANAGE_PROMPTS,
        Action.VIEW_AUDIT,
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The acting person: their platform role and whether they are disabled."""

    user_id: int
    platform_role: PlatformRole
    is_disabled: bool = False

    @property
    def is_platform_admin(self) -> bool:
        return self.platform_role in (PlatformRole.OWNER, PlatformRole.ADMIN)


def is_allowed(
    principal: Principal | None, action: Action, project_role: ProjectRole | None = None
) -> bool:
    """May PRINCIPAL do ACTION, given their role on the project concerned (None: no membership)?"""
    if principal is None or principal.is_disabled:
        return False
    if action is Action.GRANT_PLATFORM_ADMIN:
        return principal.platform_role is PlatformRole.OWNER
    if principal.is_platform_admin:
        return True
    if action in PLATFORM_ADMIN_ONLY or project_role is None:
        return False
    return action in PROJECT_ACTIONS[project_role]


def can_see_project(principal: Principal | None, project_role: ProjectRole | None) -> bool:
    """Whether the project exists for this person at all (the API answers 404 otherwise)."""
    return is_allowed(principal, Action.VIEW_PROJECT, project_role)


def normalize_login(login: str) -> str:
    """A GitHub login as compared: GitHub treats logins case-insensitively (ASCII only)."""
    return login.strip().lower()


def sender_may_trigger(
    *,
    sender: str | None,
    principal: Principal | None,
    project_role: ProjectRole | None,
    allowed_bots: Iterable[str] = (),
) -> bool:
    """May the GitHub user SENDER start runs on a project by labeling, commenting or reviewing?

    Yes for a login on the project's allow-list of bots; otherwise only when the codexk8s user
    linked to that login (PRINCIPAL, with PROJECT_ROLE on the project) may start runs there —
    the same rule as a start from the dashboard or the API.
    """
    if not sender:
        return False
    if normalize_login(sender) in {normalize_login(bot) for bot in allowed_bots}:
        return True
    return is_allowed(principal, Action.START_RUN, project_role)
