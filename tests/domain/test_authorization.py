"""The whole role matrix of the authorization rules."""

from __future__ import annotations

import itertools

import pytest

from codexk8s.domain.access import PlatformRole, ProjectRole
from codexk8s.domain.authorization import (
    Action,
    Principal,
    can_see_project,
    is_allowed,
    normalize_login,
    sender_may_trigger,
)

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


# --- who may start runs from GitHub (issue #19) ---------------------------------------------


@pytest.mark.parametrize(("platform", "project"), list(EXPECTED))
def test_a_linked_sender_may_trigger_exactly_when_they_may_start_runs(
    platform: PlatformRole, project: ProjectRole | None
) -> None:
    principal = Principal(user_id=1, platform_role=platform)
    allowed = sender_may_trigger(sender="alice", principal=principal, project_role=project)
    assert allowed == (Action.START_RUN in EXPECTED[(platform, project)])


def test_unlinked_disabled_and_anonymous_senders_may_not_trigger() -> None:
    writer = ProjectRole.READ_WRITE
    disabled = Principal(user_id=1, platform_role=PlatformRole.OWNER, is_disabled=True)
    assert not sender_may_trigger(sender="alice", principal=None, project_role=writer)
    assert not sender_may_trigger(sender="alice", principal=disabled, project_role=writer)
    user = Principal(user_id=1, platform_role=PlatformRole.USER)
    assert not sender_may_trigger(sender=None, principal=user, project_role=writer)
    assert not sender_may_trigger(sender="", principal=user, project_role=writer)


def test_allowed_bots_trigger_without_a_user_and_logins_ignore_case() -> None:
    bots = ["renovate[bot]", "Dependabot[bot]"]
    for sender in ("renovate[bot]", "RENOVATE[bot]", "dependabot[bot]"):
        assert sender_may_trigger(sender=sender, principal=None, project_role=None,
                                  allowed_bots=bots)  # fmt: skip
    assert not sender_may_trigger(
        sender="renovate", principal=None, project_role=None, allowed_bots=bots
    )
    assert normalize_login("  OctoCat ") == "octocat"
