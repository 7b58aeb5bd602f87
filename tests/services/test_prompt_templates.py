"""Prompt templates on PostgreSQL: seeding, versioned edits with access checks, and a run's
prompt built from real recorded webhook deliveries."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, make_engine, session_scope
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import AgentRun, FlowEvent, PromptTemplate, Repository, WebhookDelivery
from codexk8s.domain import prompts
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.domain.stages import DISCUSSION_STAGE, REVIEW_STAGE, Stage
from codexk8s.errors import ConflictError, ForbiddenError, InvalidArgumentError, NotFoundError
from codexk8s.services import projects, prompt_templates, repositories, users
from tests.conftest import deliver_signed, link_member
from tests.webhook_examples import example, with_labels

REPO = "Codertocat/Hello-World"
SECRET = "prompt-test-secret"


def person(email: str, role: str) -> Principal:
    with session_scope() as session:
        user = users.add_user(session=session, email=email, role=role)
        assert user.id is not None
        return Principal(user_id=user.id, platform_role=PlatformRole(role))


@pytest.fixture
def seeded(app_db: str) -> int:
    with session_scope() as session:
        return prompt_templates.seed_defaults(session=session)


@pytest.fixture
def admin(seeded: int) -> Principal:
    return person("admin@example.com", "admin")


def template_rows() -> int:
    with Session(get_engine()) as session:
        return session.exec(sa.select(sa.func.count()).select_from(PromptTemplate)).one()[0]


def versions_of(scope: str, kind: str) -> list[int]:
    with Session(get_engine()) as session:
        found = prompt_templates.history(session=session, scope=scope, kind=kind)
    return [v.version for v in found]


def prompt_events() -> list[FlowEvent]:
    with Session(get_engine()) as session:
        query = select(FlowEvent).where(col(FlowEvent.event_type).startswith("prompt_"))
        return list(session.exec(query.order_by(col(FlowEvent.id))).all())


# --- seeding --------------------------------------------------------------------------------------


def test_every_stage_ships_a_work_and_a_revise_template() -> None:
    shipped = {(t.scope, t.kind, t.locale) for t in prompt_templates.shipped_templates()}
    expected = {(s.value, k, "en") for s in Stage for k in prompts.KINDS}
    assert shipped == expected | {(REVIEW_STAGE, "work", "en"), (DISCUSSION_STAGE, "work", "en")}
    for template in prompt_templates.shipped_templates():
        prompts.validate_template(template.body)
        used = set(prompts.placeholders_in(template.body))
        assert {"issue_title", "issue_body", "stage_goal", "discussion", "project_docs"} <= used
        if template.scope != DISCUSSION_STAGE:
            # A discussion's transcript holds the comments; it pushes nothing, so the platform
            # rules (about the work branch) are its own.
            assert {"comments", "platform_rules"} <= used


def test_seed_inserts_version_one_once(app_db: str) -> None:
    with session_scope() as session:
        assert prompt_templates.seed_defaults(session=session) == 30
    with session_scope() as session:
        assert prompt_templates.seed_defaults(session=session) == 0
    assert template_rows() == 30
    assert [e.payload for e in prompt_events()] == [{"inserted": 30}]
    with Session(get_engine()) as session:
        dev = prompt_templates.current(session=session, scope="dev", kind="work")
    assert dev is not None and dev.version == 1 and dev.author == "codexk8s seed"
    assert "software engineer" in dev.body


def test_seed_never_overwrites_an_edit(admin: Principal) -> None:
    with session_scope() as session:
        prompt_templates.save_version(
            session=session, actor=admin, scope="plan", kind="work", body="Plan {{issue_title}}"
        )
    with session_scope() as session:
        assert prompt_templates.seed_defaults(session=session) == 0
    with Session(get_engine()) as session:
        plan = prompt_templates.current(session=session, scope="plan", kind="work")
    assert plan is not None and (plan.version, plan.body) == (2, "Plan {{issue_title}}")


def test_seed_fills_in_only_what_is_missing(seeded: int) -> None:
    with session_scope() as session:
        session.exec(  # type: ignore[call-overload]
            sa.delete(PromptTemplate).where(col(PromptTemplate.scope) == "qa")
        )
    with session_scope() as session:
        assert prompt_templates.seed_defaults(session=session) == 2
    assert template_rows() == 30


# --- versions -------------------------------------------------------------------------------------


def test_admin_saves_versions_with_author_and_event(admin: Principal) -> None:
    with session_scope() as session:
        saved = prompt_templates.save_version(
            session=session, actor=admin, scope="dev", kind="revise", body="Fix {{pr_number}}",
            base_version=1,
        )  # fmt: skip
    assert (saved.version, saved.author, saved.body) == (
        2,
        "admin@example.com",
        "Fix {{pr_number}}",
    )
    with Session(get_engine()) as session:
        versions = prompt_templates.history(session=session, scope="dev", kind="revise")
    assert [(v.version, v.author) for v in versions] == [
        (2, "admin@example.com"),
        (1, "codexk8s seed"),
    ]
    saved_events = [e for e in prompt_events() if e.event_type == "prompt_template_saved"]
    assert [(e.actor_id, e.payload) for e in saved_events] == [
        ("admin@example.com", {"scope": "dev", "kind": "revise", "locale": "en", "version": 2})
    ]


def test_non_admins_may_not_save_or_restore(seeded: int) -> None:
    user = person("user@example.com", "user")
    disabled = Principal(user_id=user.user_id, platform_role=PlatformRole.ADMIN, is_disabled=True)
    with Session(get_engine()) as session:
        first = prompt_templates.current(session=session, scope="dev", kind="work")
    assert first is not None
    for actor in (user, disabled):
        with pytest.raises(ForbiddenError, match="platform admins"), session_scope() as session:
            prompt_templates.save_version(
                session=session, actor=actor, scope="dev", kind="work", body="mine"
            )
        with pytest.raises(ForbiddenError), session_scope() as session:
            prompt_templates.restore(session=session, actor=actor, template_id=first.id)
    assert template_rows() == 30 and len(prompt_events()) == 1


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"body": "Hi {{issue.title}}"}, InvalidArgumentError, r"unknown placeholder \{\{issue"),
        ({"body": "  "}, InvalidArgumentError, "empty"),
        ({"scope": "deploy"}, InvalidArgumentError, "unknown template scope"),
        ({"kind": "draft"}, InvalidArgumentError, "unknown template kind"),
        ({"locale": "../x"}, InvalidArgumentError, "invalid locale"),
        ({"base_version": 0}, ConflictError, "reload it"),
    ],
)
def test_bad_saves_change_nothing(
    admin: Principal, changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"scope": "dev", "kind": "work", "body": "New {{issue_title}}"}
    arguments.update(changes)
    with pytest.raises(error, match=message), session_scope() as session:
        prompt_templates.save_version(session=session, actor=admin, **arguments)
    assert template_rows() == 30 and len(prompt_events()) == 1


def test_saving_the_same_text_again_is_refused(admin: Principal) -> None:
    with Session(get_engine()) as session:
        dev = prompt_templates.current(session=session, scope="dev", kind="work")
    assert dev is not None
    with pytest.raises(InvalidArgumentError, match="nothing to save"), session_scope() as session:
        prompt_templates.save_version(
            session=session, actor=admin, scope="dev", kind="work", body=dev.body
        )


def test_restore_makes_an_old_text_the_newest_version(admin: Principal) -> None:
    with session_scope() as session:
        for body in ("second {{stage}}", "third {{stage}}"):
            prompt_templates.save_version(
                session=session, actor=admin, scope="ops", kind="work", body=body
            )
    with Session(get_engine()) as session:
        versions = prompt_templates.history(session=session, scope="ops", kind="work")
    assert [v.version for v in versions] == [3, 2, 1]
    with session_scope() as session:
        restored = prompt_templates.restore(
            session=session, actor=admin, template_id=versions[2].id
        )
    assert restored.version == 4 and restored.body == versions[2].body
    with Session(get_engine()) as session:
        assert [v.version for v in prompt_templates.history(
            session=session, scope="ops", kind="work")] == [4, 3, 2, 1]  # fmt: skip
    assert prompt_events()[-1].event_type == "prompt_template_restored"
    assert prompt_events()[-1].payload["restored_from"] == 1
    # Restoring the text that is already current is refused like any unchanged save.
    with pytest.raises(InvalidArgumentError), session_scope() as session:
        prompt_templates.restore(session=session, actor=admin, template_id=versions[2].id)
    with pytest.raises(NotFoundError), session_scope() as session:
        prompt_templates.restore(session=session, actor=admin, template_id=999_999)


def test_concurrent_saves_from_the_same_version_store_one(admin: Principal) -> None:
    barrier = threading.Barrier(2)

    def save(body: str) -> str:
        try:
            with session_scope() as session:
                barrier.wait(timeout=10)
                prompt_templates.save_version(
                    session=session, actor=admin, scope="ops", kind="revise", body=body,
                    base_version=1,
                )  # fmt: skip
        except ConflictError as exc:
            assert "reload it" in str(exc)
            return "conflict"
        return "saved"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(save, ["A {{stage}}", "B {{stage}}"]))
    assert outcomes == ["conflict", "saved"]
    assert versions_of("ops", "revise") == [2, 1]


def test_concurrent_seeds_insert_each_template_once(app_db: str) -> None:
    barrier = threading.Barrier(3)

    def seed() -> int:
        with session_scope() as session:
            barrier.wait(timeout=10)
            return prompt_templates.seed_defaults(session=session)

    with ThreadPoolExecutor(max_workers=3) as pool:
        inserted = [future.result() for future in [pool.submit(seed) for _ in range(3)]]
    assert sum(inserted) == 30 and template_rows() == 30


def test_seed_and_render_on_the_embedded_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            assert prompt_templates.seed_defaults(session=session) == 30
            assert prompt_templates.seed_defaults(session=session) == 0
            project = projects.create_project(session=session, key="lite")
            repository = repositories.add_repository(
                session=session, box=get_secret_box(), project_key="lite", full_name="a/b"
            )
            session.add(
                WebhookDelivery(
                    delivery_id="c-1",
                    event="issue_comment",
                    action="created",
                    repository_id=repository.id,
                    outcome="ignored",
                    payload=comment("created", 5, "lee", "from sqlite", number=8),
                )
            )
            run = AgentRun(
                correlation_id="lite-1",
                project_id=project.id or 0,
                repository_id=repository.id,
                issue_number=8,
                issue_title="Lite",
                agent_key="qa",
                stage="qa",
            )
            session.add(run)
            session.flush()
            run_id = run.id
        with Session(engine) as session:
            assert run_id is not None
            out = prompt_templates.render_run_prompt(session=session, run_id=run_id)
        assert "**@lee** wrote:\n> from sqlite" in out and "quality engineer" in out
    finally:
        engine.dispose()


def test_the_local_operator_saves_without_a_user(seeded: int) -> None:
    with session_scope() as session:
        saved = prompt_templates.save_version(
            session=session, actor=None, scope="qa", kind="work", body="QA {{issue_title}}"
        )
    assert saved.version == 2 and saved.author == "command line"
    assert prompt_events()[-1].actor_id == "cli"


# --- a run's prompt -------------------------------------------------------------------------------


@pytest.fixture
def repo(seeded: int) -> Repository:
    with session_scope() as session:
        projects.create_project(session=session, key="hello", slots=2)
        repository = repositories.add_repository(
            session=session, box=get_secret_box(), project_key="hello", full_name=REPO,
            webhook_secret=SECRET,
        )  # fmt: skip
    link_member("hello")
    return repository


def deliver(event: str, payload: dict[str, Any]) -> None:
    deliver_signed(event, payload, secret=SECRET)


def comment(action: str, comment_id: int, login: str, text: str, number: int = 1) -> dict[str, Any]:
    payload = example("issue_comment", "created")
    payload["action"] = action
    payload["issue"]["number"] = number
    payload["comment"].update(id=comment_id, body=text)
    payload["comment"]["user"]["login"] = login
    return payload


def only_run() -> AgentRun:
    with Session(get_engine()) as session:
        found = session.exec(select(AgentRun)).all()
    assert len(found) == 1
    return found[0]


def render(run_id: int) -> str:
    with Session(get_engine()) as session:
        return prompt_templates.render_run_prompt(session=session, run_id=run_id)


def test_a_labeled_issue_renders_its_stage_prompt_with_context(repo: Repository) -> None:
    deliver("issue_comment", comment("created", 1, "alice", "Please keep {{platform_rules}}"))
    deliver("issue_comment", comment("created", 2, "bob", "first draft"))
    deliver("issue_comment", comment("edited", 2, "bob", "edited text"))
    deliver("issue_comment", comment("created", 3, "carol", "spam"))
    deliver("issue_comment", comment("deleted", 3, "carol", "spam"))
    deliver("issue_comment", comment("created", 4, "dave", "other issue", number=2))
    issue = with_labels(example("issues", "labeled"), "issue", ["bug", "run:dev"], "run:dev")
    issue["issue"].update(title="Spelling {{issue_body}}", body="Fix 'commmit'. {{comments}}")
    deliver("issues", issue)
    run = only_run()
    assert run.stage == "dev" and run.id is not None

    out = render(run.id)
    assert out.startswith("# Stage `dev`: Spelling {{issue_body}}\n")
    assert "software engineer (dev)" in out
    assert prompts.STAGE_GOALS["dev"] in out
    assert "**#1: Spelling {{issue_body}}** in `codertocat/hello-world`" in out
    assert "Labels: bug, run:dev" in out
    assert "Fix 'commmit'. {{comments}}" in out
    assert "**@alice** wrote:\n> Please keep {{platform_rules}}" in out
    assert "**@bob** wrote:\n> edited text" in out
    for absent in ("first draft", "spam", "other issue", prompts.LEARNING_BLOCK):
        assert absent not in out
    assert out.index("@alice") < out.index("@bob")
    assert "`codex/issue-1`" in out and "Never print, log, commit or repeat secrets" in out
    assert "{{" not in out.replace("{{issue_body}}", "").replace("{{comments}}", "").replace(
        "{{platform_rules}}", ""
    )


def test_learning_mode_adds_the_explanation_block(repo: Repository) -> None:
    deliver("issues", with_labels(example("issues", "labeled"), "issue", ["run:plan"], "run:plan"))
    run = only_run()
    with session_scope() as session:
        session.exec(  # type: ignore[call-overload]
            sa.update(AgentRun).where(col(AgentRun.id) == run.id).values(learning_mode=True)
        )
    assert run.id is not None
    out = render(run.id)
    assert prompts.LEARNING_BLOCK in out and "engineering manager (em)" in out


def test_a_changes_requested_review_renders_the_revise_prompt(repo: Repository) -> None:
    payload = with_labels(
        example("pull_request_review", "submitted"), "pull_request", ["run:dev"], None
    )
    payload["review"].update(state="changes_requested", body="Please add a test for the typo.")
    payload["review"]["user"]["login"] = "rita"
    deliver("pull_request_review", payload)
    run = only_run()
    assert run.is_revise and run.pr_number == 2 and run.id is not None
    out = render(run.id)
    assert out.startswith("# Revise stage `dev`:")
    assert "(pull request: 2)" in out and "`codex/issue-2`" in out
    assert (
        "**@rita** wrote:\n> (review: changes requested)\n> Please add a test for the typo." in out
    )


def test_a_reviewer_run_renders_the_review_prompt(repo: Repository) -> None:
    payload = with_labels(
        example("pull_request", "labeled"), "pull_request", ["need:reviewer"], "need:reviewer"
    )
    deliver("pull_request", payload)
    run = only_run()
    assert run.stage == REVIEW_STAGE and run.id is not None
    out = render(run.id)
    assert "You are the reviewer agent" in out and "Review comments on pull request #2" in out


def insert_run(repository_id: int | None, stage: str, *, is_revise: bool = False) -> int:
    with session_scope() as session:
        project = projects.require_by_key(session=session, key="hello")
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=project.id or 0,
            repository_id=repository_id, issue_number=77, issue_title="Started from the CLI",
            agent_key="dev", stage=stage, is_revise=is_revise,
        )  # fmt: skip
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


@pytest.mark.parametrize("is_revise", [False, True])
def test_every_stage_renders_for_a_run_without_a_delivery(
    repo: Repository, is_revise: bool
) -> None:
    for scope in prompts.SCOPES:
        out = render(insert_run(repo.id, scope, is_revise=is_revise))
        assert "Started from the CLI" in out and "`codertocat/hello-world`" in out
        assert prompts.STAGE_GOALS[scope] in out
        # A discussion's comments are its transcript (empty here): no "Recent comments".
        assert "(empty)" in out and ("(no comments)" in out) == (scope != DISCUSSION_STAGE)
        # Revise runs use the revise template; the reviewer and discussions have none and use
        # their work template.
        revise_heading = out.startswith("# Revise stage")
        assert revise_heading == (is_revise and scope not in (REVIEW_STAGE, DISCUSSION_STAGE))


def test_a_run_prompt_follows_the_newest_version(repo: Repository, admin: Principal) -> None:
    run_id = insert_run(repo.id, "qa")
    with session_scope() as session:
        prompt_templates.save_version(
            session=session, actor=admin, scope="qa", kind="work", body="QA for {{issue_title}}"
        )
    assert render(run_id) == "QA for Started from the CLI\n"


def test_missing_runs_are_clear_errors_and_missing_templates_fall_back(repo: Repository) -> None:
    with pytest.raises(NotFoundError, match="no run with id"):
        render(123_456)
    run_id = insert_run(repo.id, "ops")
    seeded_text = render(run_id)
    with session_scope() as session:
        session.exec(  # type: ignore[call-overload]
            sa.delete(PromptTemplate).where(col(PromptTemplate.scope) == "ops")
        )
    # A database without the stage's rows (never seeded) renders the shipped text.
    assert render(run_id) == seeded_text


def test_a_run_whose_repository_is_gone_still_renders(repo: Repository) -> None:
    deliver("issue_comment", comment("created", 1, "alice", "on issue 77", number=77))
    out = render(insert_run(None, "dev"))
    assert "in `(repository removed)`" in out and "Started from the CLI" in out
    # Without a repository there is no telling whose issue 77 the comments belong to.
    assert "on issue 77" not in out and "(no comments)" in out
    # With the repository, the recorded comment on issue 77 is found.
    assert "on issue 77" in render(insert_run(repo.id, "dev"))
