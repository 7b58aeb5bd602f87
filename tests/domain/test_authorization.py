"""The whole role matrix of the authorization rules."""

from __future__ import annotations

import itertools

import pytest

from codexk8s.domain.access import PlatformRole, ProjectRole
from codexk8s.domain.authorization import Action, Principal, can_see_project, is_allowed

READ_ONLY = {Action.VIEW_PROJECT}
WRITER = READ_ONLY | {Action.START_RUN, Action.CANCEL_RUN, Action.RERUN, Action.EDIT_REPOSITORIES}
PROJECT_ADMIN = WRITER | {Action.EDIT_PROJECT, Action.MANAGE_MEMBERS, Action.DELETE_PROJECT}
EVERYTHING_BUT_GRANT = set(Action) - {Action.GRANT_PLATFORM_ADMIN}

EXPECTED: dict[tuple[PlatformRole, ProjectRole | None], set[Action]] = {
    (PlatformRole.USER, None): set(),
    (PlatformRole.USER, ProjectRole.READ): READ_ONLY,
    (PlatformRole.USER, ProjectRole.READ_WRITE): WRITER,
    (PlatformRole.USER, ProjectRole.ADMIN): PROJECT_ADMIN,
    **{(PlatformRole.ADMIN, role): EVERYTHING_BUT_GRANT for role in [None, *ProjectRole]},
    **{(PlatformRole.OWNER, role): set(Action) for role in [None, *ProjectRole]},
}


@pytest.mark.parametrize(("platform", "project"), list(EXPECTED))
def test_matrix(platform: PlatformRole, project: ProjectRole | None) -> None:
    principal = Principal(user_id=1, platform_role=platform)
    allowed = {action for action in Action if is_allowed(principal, action, project)}
    assert allowed == EXPECTED[(platform, project)]


@pytest.mark.parametrize(
    ("platform", "project", "action"),
    list(itertools.product(PlatformRole, [None, *ProjectRole], Action)),
)
def test_disabled_and_anonymous_may_do_nothing(
    platform: PlatformRole, project: ProjectRole | None, action: Action
) -> None:
    assert not is_allowed(
        Principal(user_id=1, platform_role=platform, is_disabled=True), action, project
    )
    assert not is_allowed(None, action, project)


def test_project_visibility_follows_view() -> None:
    user = Principal(user_id=1, platform_role=PlatformRole.USER)
    assert not can_see_project(user, None)
    assert all(can_see_project(user, role) for role in ProjectRole)
    assert can_see_project(Principal(user_id=2, platform_role=PlatformRole.ADMIN), None)
