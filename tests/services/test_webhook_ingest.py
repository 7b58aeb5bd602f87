"""The ingest service on PostgreSQL and SQLite: from a signed real payload to runs and flow events.

The two backends write a delivery that starts nothing differently (one CTE statement in
autocommit on PostgreSQL, a transaction on SQLite), so the behaviour tests run on both."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.adapters.github.webhooks import sign
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import (
    AgentRun,
    FlowEvent,
    Repository,
    WebhookBodyHash,
    WebhookDelivery,
    utcnow,
)
from codexk8s.errors import InvalidArgumentError, UnauthorizedError, UnavailableError
from codexk8s.services import projects, repositories, users
from codexk8s.services.webhook_ingest import (
    REPLAY_WINDOW,
    IngestOutcome,
    WebhookRequest,
    ingest_github_delivery,
)
from tests.conftest import TEST_SECRET_KEY, link_member, reset_caches
from tests.webhook_examples import example, with_labels

REPO = "Codertocat/Hello-World"
REPO_SECRET = "repo-secret-abc"
GLOBAL_SECRET = "global-secret-xyz"

Deliver = Callable[..., IngestOutcome]


@pytest.fixture(params=["postgresql", "sqlite"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("app_db")
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", url)
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", TEST_SECRET_KEY)
    reset_caches()
    upgrade_to_head(url)
    return url


@pytest.fixture
def repo(database: str) -> Repository:
    with session_scope() as session:
        projects.create_project(session=session, key="hello", slots=2)
        repository = repositories.add_repository(
            session=session, box=get_secret_box(), project_key="hello", full_name=REPO,
            webhook_secret=REPO_SECRET,
        )  # fmt: skip
    # The payloads' sender may start runs (member-only triggers have tests of their own).
    link_member("hello")
    return repository


def _deliver(
    event: str,
    payload: dict[str, Any],
    *,
    secret: str | None = REPO_SECRET,
    global_secret: str | None = GLOBAL_SECRET,
    delivery_id: str | None = None,
    signature: str | None = None,
) -> IngestOutcome:
    body = json.dumps(payload).encode()
    request = WebhookRequest(
        delivery_id=delivery_id or str(uuid.uuid4()),
        event=event,
        signature=signature if signature is not None else (sign(secret, body) if secret else None),
        content_type="application/json",
        body=body,
    )
    return ingest_github_delivery(
        engine=get_engine(), box=get_secret_box(), global_secret=global_secret, request=request
    )


def labeled(labels: list[str], changed: str, *, number: int = 1) -> dict[str, Any]:
    payload = with_labels(example("issues", "labeled"), "issue", labels, changed)
    payload["issue"]["number"] = number
    return payload


def runs() -> list[AgentRun]:
    with Session(get_engine()) as session:
        return list(session.exec(select(AgentRun).order_by(AgentRun.id)).all())


def events(correlation_id: str | None = None) -> list[FlowEvent]:
    with Session(get_engine()) as session:
        query = select(FlowEvent).order_by(FlowEvent.id)
        if correlation_id:
            query = query.where(FlowEvent.correlation_id == correlation_id)
        return list(session.exec(query).all())


def table_counts() -> tuple[int, int, int]:
    with Session(get_engine()) as session:
        return tuple(  # type: ignore[return-value]
            session.exec(sa.select(sa.func.count()).select_from(model)).one()[0]
            for model in (WebhookDelivery, AgentRun, FlowEvent)
        )


def test_run_label_creates_one_pending_run(repo: Repository) -> None:
    outcome = _deliver("issues", labeled(["bug", "run:dev"], "run:dev"), delivery_id="d-1")
    assert outcome.ignored is None and len(outcome.runs) == 1
    (run,) = runs()
    assert (run.id, run.status, run.stage, run.agent_key) == (
        outcome.runs[0],
        "pending",
        "dev",
        "dev",
    )
    assert (run.issue_number, run.pr_number, run.is_revise) == (1, None, False)
    assert run.trigger_label == "run:dev" and run.delivery_id == "d-1"
    assert run.repository_id == repo.id and run.issue_title
    assert [e.event_type for e in events("d-1")] == ["delivery_accepted", "run_created"]
    with Session(get_engine()) as session:
        delivery = session.exec(select(WebhookDelivery)).one()
    assert (delivery.delivery_id, delivery.event, delivery.action) == ("d-1", "issues", "labeled")
    assert delivery.outcome == "run_created" and delivery.payload["label"]["name"] == "run:dev"


@pytest.mark.parametrize(
    ("label", "stage", "agent", "revise"),
    [("run:plan", "plan", "em", False), ("run:arch:revise", "arch", "sa", True),
     ("run:doc-audit", "doc-audit", "km", False), ("run:postdeploy", "postdeploy", "sre", False)],
)  # fmt: skip
def test_stage_table_reaches_the_run(
    repo: Repository, label: str, stage: str, agent: str, revise: bool
) -> None:
    _deliver("issues", labeled([label], label))
    (run,) = runs()
    assert (run.stage, run.agent_key, run.is_revise) == (stage, agent, revise)


def test_model_and_reasoning_labels(repo: Repository) -> None:
    _deliver(
        "issues", labeled(["[ai-model-gpt-5.2-codex]", "[ai-reasoning-high]", "run:dev"], "run:dev")
    )
    (run,) = runs()
    assert (run.model, run.reasoning_effort) == ("gpt-5.2-codex", "high")


def test_project_default_model_applies_without_a_label(repo: Repository) -> None:
    with session_scope() as session:
        project = projects.require_by_key(session=session, key="hello")
        project.settings = {
            **project.settings,
            "default_model": "gpt-default",
            "learning_mode_default": True,
        }
        session.add(project)
    _deliver("issues", labeled(["run:dev"], "run:dev"))
    (run,) = runs()
    assert (run.model, run.learning_mode) == ("gpt-default", True)


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (["run:dev", "run:plan"], "multiple_run_labels"),
        (["run:dev", "[ai-model-a]", "[ai-model-b]"], "multiple_model_labels"),
        (["run:dev", "[ai-reasoning-low]", "[ai-reasoning-high]"], "multiple_reasoning_labels"),
    ],
)
def test_conflicts_start_nothing(repo: Repository, labels: list[str], reason: str) -> None:
    outcome = _deliver("issues", labeled(labels, "run:dev"), delivery_id="conflict")
    assert outcome.runs == [] and outcome.ignored == f"trigger_conflict:{reason}"
    assert runs() == []
    conflict = [e for e in events("conflict") if e.event_type == "trigger_conflict"]
    assert len(conflict) == 1 and conflict[0].payload["reason"] == reason
    assert conflict[0].payload["message"]


def test_second_trigger_while_active_is_already_active(repo: Repository) -> None:
    first = _deliver("issues", labeled(["run:dev"], "run:dev"))
    second = _deliver("issues", labeled(["run:dev"], "run:dev"), delivery_id="again")
    assert len(first.runs) == 1 and second.runs == [] and second.ignored == "already_active"
    assert len(runs()) == 1
    assert events("again")[-1].event_type == "run_already_active"
    # Another issue, or another stage on the same issue, is independent.
    assert len(_deliver("issues", labeled(["run:dev"], "run:dev", number=2)).runs) == 1
    # Once the first run is finished a new trigger starts a new run.
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun).where(AgentRun.id == first.runs[0]).values(status="succeeded")
        )
    assert len(_deliver("issues", labeled(["run:dev"], "run:dev")).runs) == 1


def test_need_reviewer_on_a_pull_request(repo: Repository) -> None:
    payload = with_labels(
        example("pull_request", "labeled"), "pull_request", ["need:reviewer"], "need:reviewer"
    )
    outcome = _deliver("pull_request", payload)
    (run,) = runs()
    number = payload["pull_request"]["number"]
    assert outcome.runs == [run.id]
    assert (run.stage, run.agent_key, run.pr_number, run.issue_number) == (
        "review",
        "reviewer",
        number,
        number,
    )


def test_changes_requested_review_starts_the_stage_revise(repo: Repository) -> None:
    payload = with_labels(
        example("pull_request_review", "submitted"), "pull_request", ["run:dev"], None
    )
    payload["review"]["state"] = "changes_requested"
    _deliver("pull_request_review", payload)
    (run,) = runs()
    assert (run.stage, run.is_revise, run.agent_key) == ("dev", True, "dev")


@pytest.mark.parametrize(
    ("labels", "reason"), [([], "no_stage_label"), (["run:dev", "run:qa"], "multiple_stage_labels")]
)
def test_changes_requested_without_one_stage_label(
    repo: Repository, labels: list[str], reason: str
) -> None:
    payload = with_labels(example("pull_request_review", "submitted"), "pull_request", labels, None)
    payload["review"]["state"] = "changes_requested"
    outcome = _deliver("pull_request_review", payload, delivery_id="rev")
    assert outcome.ignored == reason and runs() == []
    assert events("rev")[-1].payload["reason"] == reason


def test_unlabel_cancels_a_pending_run_only(repo: Repository) -> None:
    _deliver("issues", labeled(["run:dev"], "run:dev"))
    unlabel = labeled([], "run:dev")
    unlabel["action"] = "unlabeled"
    outcome = _deliver("issues", unlabel, delivery_id="unlabel")
    (run,) = runs()
    assert outcome.canceled == [run.id]
    assert (run.status, run.status_reason) == ("canceled", "label_removed")
    assert run.finished_at is not None
    assert [e.event_type for e in events("unlabel")] == ["delivery_accepted", "run_canceled"]


def test_unlabel_leaves_a_running_run_alone(repo: Repository) -> None:
    _deliver("issues", labeled(["run:dev"], "run:dev"))
    with session_scope() as session:
        session.execute(sa.update(AgentRun).values(status="running"))
    unlabel = labeled([], "run:dev")
    unlabel["action"] = "unlabeled"
    outcome = _deliver("issues", unlabel)
    assert outcome.ignored == "nothing_to_cancel"
    (run,) = runs()
    assert run.status == "running" and run.cancel_requested_at is None


def test_close_cancels_pending_and_asks_running_to_stop(repo: Repository) -> None:
    _deliver("issues", labeled(["run:dev"], "run:dev"))
    _deliver("issues", labeled(["run:plan"], "run:plan"))
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun).where(AgentRun.stage == "plan").values(status="running")
        )
    # The package has no issues.closed capture; a reopened one differs only in action and state.
    closed = example("issues", "reopened")
    closed["action"], closed["issue"]["state"] = "closed", "closed"
    closed["issue"]["number"] = 1
    closed["repository"]["full_name"] = REPO
    outcome = _deliver("issues", closed, delivery_id="close")
    dev, plan = runs()
    assert outcome.canceled == [dev.id] and outcome.cancel_requested == [plan.id]
    assert (dev.status, dev.status_reason) == ("canceled", "issue_closed")
    assert plan.status == "running" and plan.cancel_reason == "issue_closed"
    assert plan.cancel_requested_at is not None
    assert sorted(e.event_type for e in events("close")) == [
        "delivery_accepted", "run_cancel_requested", "run_canceled",
    ]  # fmt: skip


def test_comment_is_recorded_and_starts_nothing(repo: Repository) -> None:
    outcome = _deliver("issue_comment", example("issue_comment", "created"))
    assert outcome.ignored == "comment_recorded" and runs() == []
    with Session(get_engine()) as session:
        assert session.exec(select(WebhookDelivery.outcome)).one() == "ignored:comment_recorded"


def test_unknown_repository_is_recorded_and_ignored(repo: Repository) -> None:
    payload = labeled(["run:dev"], "run:dev")
    payload["repository"]["full_name"] = "someone/else"
    outcome = _deliver("issues", payload, secret=GLOBAL_SECRET, delivery_id="unknown")
    assert outcome.ignored == "unknown_repository" and runs() == []
    assert [e.event_type for e in events("unknown")] == ["delivery_accepted", "delivery_ignored"]


def test_unsupported_event_is_recorded(repo: Repository) -> None:
    outcome = _deliver("star", {"action": "created", "repository": {"full_name": REPO}})
    assert outcome.ignored == "unsupported_event"
    assert table_counts()[0] == 1


def test_sequential_duplicate(repo: Repository) -> None:
    payload = labeled(["run:dev"], "run:dev")
    first = _deliver("issues", payload, delivery_id="dup")
    second = _deliver("issues", payload, delivery_id="dup")
    assert not first.is_duplicate and second.is_duplicate
    assert len(runs()) == 1
    assert [e.event_type for e in events("dup")] == [
        "delivery_accepted",
        "run_created",
        "delivery_duplicate",
    ]


def _finish_all_runs() -> None:
    with session_scope() as session:
        session.execute(sa.update(AgentRun).values(status="succeeded"))


def test_a_signed_body_replayed_under_a_new_delivery_id_starts_nothing(repo: Repository) -> None:
    """Issue #14, item 9: GitHub signatures carry no timestamp, so a captured body re-sent with a
    fresh X-GitHub-Delivery passed as a new delivery and started its run again."""
    payload = labeled(["run:dev"], "run:dev")
    first = _deliver("issues", payload, delivery_id="original")
    assert len(first.runs) == 1
    _finish_all_runs()  # the run is over: a new delivery of this label would start another
    before = table_counts()
    replay = _deliver("issues", payload, delivery_id="captured-and-replayed")
    assert replay.is_duplicate and replay.replay_of == "original" and replay.runs == []
    assert len(runs()) == 1
    # One audit event, no delivery row.
    assert table_counts() == (before[0], before[1], before[2] + 1)
    [replayed] = events("captured-and-replayed")
    assert replayed.event_type == "delivery_replayed"
    assert replayed.payload == {"event": "issues", "action": "labeled", "replay_of": "original"}

    # A body that starts nothing is refused the same way.
    comment = example("issue_comment", "created")
    assert not _deliver("issue_comment", comment, delivery_id="c-1").is_duplicate
    again = _deliver("issue_comment", comment, delivery_id="c-2")
    assert again.is_duplicate and again.replay_of == "c-1"
    assert [e.event_type for e in events("c-2")] == ["delivery_replayed"]


def test_githubs_redelivery_of_a_recorded_delivery_is_the_usual_duplicate(
    repo: Repository,
) -> None:
    payload = labeled(["run:dev"], "run:dev")
    _deliver("issues", payload, delivery_id="guid-1")
    redelivered = _deliver("issues", payload, delivery_id="guid-1")
    assert redelivered.is_duplicate and redelivered.replay_of is None
    assert [e.event_type for e in events("guid-1")][-1] == "delivery_duplicate"


def test_the_same_body_is_accepted_again_after_the_window(repo: Repository) -> None:
    payload = labeled(["run:dev"], "run:dev")
    _deliver("issues", payload, delivery_id="day-1")
    _finish_all_runs()
    with session_scope() as session:
        session.execute(
            sa.update(WebhookBodyHash).values(
                received_at=utcnow() - REPLAY_WINDOW - timedelta(minutes=1)
            )
        )
    later = _deliver("issues", payload, delivery_id="day-2")
    assert not later.is_duplicate and len(later.runs) == 1
    # ... and the window starts again from then.
    _finish_all_runs()
    assert _deliver("issues", payload, delivery_id="day-2-replayed").replay_of == "day-2"


def test_different_bodies_are_different_deliveries(repo: Repository) -> None:
    first = labeled(["run:dev"], "run:dev")
    second = labeled(["run:dev"], "run:dev", number=2)
    assert len(_deliver("issues", first).runs) == 1
    assert len(_deliver("issues", second).runs) == 1


def test_repository_secret_takes_precedence_over_the_global_one(repo: Repository) -> None:
    before = table_counts()
    with pytest.raises(UnauthorizedError, match="signature mismatch"):
        _deliver("issues", labeled(["run:dev"], "run:dev"), secret=GLOBAL_SECRET, delivery_id="g")
    deliveries, run_count, event_count = table_counts()
    assert (deliveries, run_count, event_count) == (before[0], before[1], before[2] + 1)
    assert events("g")[-1].event_type == "signature_rejected"


def test_global_secret_serves_repositories_without_their_own(app_db: str) -> None:
    with session_scope() as session:
        projects.create_project(session=session, key="hello")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="hello", full_name=REPO
        )
    link_member("hello")
    outcome = _deliver("issues", labeled(["run:dev"], "run:dev"), secret=GLOBAL_SECRET)
    assert len(outcome.runs) == 1


def test_no_secret_anywhere_is_unavailable(app_db: str) -> None:
    with pytest.raises(UnavailableError, match="CODEXK8S_GITHUB_WEBHOOK_SECRET"):
        _deliver("issues", labeled(["run:dev"], "run:dev"), secret="x", global_secret=None)
    assert table_counts() == (0, 0, 1)


@pytest.mark.parametrize(
    ("signature", "message"),
    [("", "missing signature"), ("sha256=" + "0" * 64, "signature mismatch")],
)
def test_bad_signature_writes_only_an_audit_event(
    repo: Repository, signature: str, message: str
) -> None:
    before = table_counts()
    with pytest.raises(UnauthorizedError, match=message):
        _deliver("issues", labeled(["run:dev"], "run:dev"), signature=signature)
    assert table_counts() == (before[0], before[1], before[2] + 1)


def test_missing_headers_are_invalid(repo: Repository) -> None:
    request = WebhookRequest(
        delivery_id=None, event=None, signature=None, content_type=None, body=b"{}"
    )
    with pytest.raises(
        InvalidArgumentError, match="missing X-GitHub-Event header; missing X-GitHub-Delivery"
    ):
        ingest_github_delivery(
            engine=get_engine(), box=get_secret_box(), global_secret=GLOBAL_SECRET, request=request
        )


def test_a_delivery_that_starts_nothing_is_written_whole(repo: Repository) -> None:
    payload = example("issue_comment", "created")
    outcome = _deliver("issue_comment", payload, delivery_id="comment-1")
    assert not outcome.is_duplicate and outcome.ignored == "comment_recorded"
    with Session(get_engine()) as session:
        row = session.exec(select(WebhookDelivery)).one()
    assert (row.delivery_id, row.event, row.action) == ("comment-1", "issue_comment", "created")
    assert (row.repository_id, row.repository_full_name) == (repo.id, REPO)
    assert row.outcome == "ignored:comment_recorded" and row.payload == payload
    written = events("comment-1")
    assert [e.event_type for e in written] == ["delivery_accepted", "delivery_ignored"]
    assert {e.project_id for e in written} == {repo.project_id}
    assert written[0].payload == {"event": "issue_comment", "action": "created", "repository": REPO}
    assert written[1].payload["reason"] == "comment_recorded"
    assert all(e.actor_type == "system" and e.run_id is None for e in written)
    assert written[0].created_at <= written[1].created_at


def test_already_active_is_recorded_with_the_active_run(repo: Repository) -> None:
    first = _deliver("issues", labeled(["run:dev"], "run:dev"), delivery_id="first")
    again = _deliver("issues", labeled(["run:dev"], "run:dev"), delivery_id="again")
    assert again.ignored == "already_active" and again.runs == []
    written = events("again")
    assert [e.event_type for e in written] == ["delivery_accepted", "run_already_active"]
    assert written[1].run_id == first.runs[0]
    # Another stage of the same issue is not blocked by it.
    plan = _deliver("issues", labeled(["run:plan"], "run:plan"), delivery_id="plan")
    assert len(plan.runs) == 1 and plan.ignored is None


def test_concurrent_copies_of_a_delivery_that_starts_nothing(app_db: str) -> None:
    with session_scope() as session:
        projects.create_project(session=session, key="hello", slots=2)
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="hello", full_name=REPO,
            webhook_secret=REPO_SECRET,
        )  # fmt: skip
    payload = example("issue_comment", "created")
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(
            pool.map(lambda _: _deliver("issue_comment", payload, delivery_id="same"), range(20))
        )
    assert sum(not outcome.is_duplicate for outcome in outcomes) == 1
    assert table_counts()[0] == 1
    assert sorted(e.event_type for e in events("same")) == sorted(
        ["delivery_accepted", "delivery_ignored"] + ["delivery_duplicate"] * 19
    )


def test_the_labelers_own_learning_mode_applies(repo: Repository) -> None:
    payload = labeled(["run:dev"], "run:dev")
    payload["sender"]["login"] = "Labeler"
    link_member("hello", "someone-else")
    with session_scope() as session:
        user = users.add_user(session=session, email="labeler@example.com")
        user.github_login = "LABELER"  # GitHub logins compare case-insensitively
        session.add(user)
        projects.add_member(
            session=session, project_key="hello", email="labeler@example.com", role="read_write"
        )
        projects.set_member_learning_mode(
            session=session, actor=None, project_key="hello", email="labeler@example.com",
            learning_mode=True,
        )  # fmt: skip
    (run_id,) = _deliver("issues", payload).runs
    other = labeled(["run:plan"], "run:plan")
    other["sender"]["login"] = "someone-else"
    (other_id,) = _deliver("issues", other).runs
    with Session(get_engine()) as session:
        assert session.get(AgentRun, run_id).learning_mode is True  # type: ignore[union-attr]
        assert session.get(AgentRun, other_id).learning_mode is False  # type: ignore[union-attr]


# --- only people of the project trigger runs (issue #19) ----------------------------------------


def from_sender(payload: dict[str, Any], login: str) -> dict[str, Any]:
    payload["sender"]["login"] = login
    return payload


def refused_events(delivery_id: str) -> list[FlowEvent]:
    return [e for e in events(delivery_id) if e.event_type == "trigger_refused"]


def test_a_label_from_someone_outside_the_project_starts_nothing(repo: Repository) -> None:
    payload = from_sender(labeled(["run:dev"], "run:dev", number=4), "drive-by")
    outcome = _deliver("issues", payload, delivery_id="outsider")
    assert outcome.runs == [] and outcome.ignored == "sender_not_allowed" and runs() == []
    with Session(get_engine()) as session:
        row = session.exec(select(WebhookDelivery).where(WebhookDelivery.delivery_id == "outsider"))
        assert row.one().outcome == "ignored:sender_not_allowed"
    (refused,) = refused_events("outsider")
    assert refused.project_id is not None
    assert refused.payload["sender"] == "drive-by" and refused.payload["number"] == 4
    assert refused.payload["repository_id"] == repo.id and refused.payload["trigger"] == "run:dev"
    assert "@drive-by may not start runs" in refused.payload["message"]
    assert "read_write or admin" in refused.payload["message"]
    ignored = [e for e in events("outsider") if e.event_type == "delivery_ignored"]
    assert ignored[0].payload["reason"] == "sender_not_allowed"


@pytest.mark.parametrize(
    ("project_role", "platform_role", "disabled", "starts"),
    [
        ("read", "user", False, False),
        ("read_write", "user", False, True),
        ("admin", "user", False, True),
        (None, "admin", False, True),  # platform admins may start runs anywhere
        (None, "user", False, False),
        ("admin", "user", True, False),  # a disabled user may do nothing
    ],
)
def test_who_may_start_runs_is_the_start_run_rule(
    repo: Repository, project_role: str | None, platform_role: str, disabled: bool, starts: bool
) -> None:
    with session_scope() as session:
        user = users.add_user(
            session=session, email="pat@example.com", role=platform_role, github_login="Pat"
        )
        user.disabled = disabled
        session.add(user)
        if project_role is not None:
            projects.add_member(
                session=session, project_key="hello", email="pat@example.com", role=project_role
            )
    # GitHub logins compare without case.
    outcome = _deliver("issues", from_sender(labeled(["run:dev"], "run:dev"), "pat"))
    assert (len(outcome.runs) == 1) == starts
    assert outcome.ignored == (None if starts else "sender_not_allowed")


def test_a_member_whose_login_is_not_linked_starts_nothing(repo: Repository) -> None:
    with session_scope() as session:
        users.add_user(session=session, email="unlinked@example.com")
        projects.add_member(
            session=session, project_key="hello", email="unlinked@example.com", role="admin"
        )
    outcome = _deliver("issues", from_sender(labeled(["run:dev"], "run:dev"), "unlinked"))
    assert outcome.ignored == "sender_not_allowed"
    with session_scope() as session:
        users.set_github_login(
            session=session, email="unlinked@example.com", github_login="unlinked", actor=None
        )
    assert len(_deliver("issues", from_sender(labeled(["run:dev"], "run:dev"), "unlinked")).runs)


def test_an_allow_listed_bot_starts_runs(repo: Repository) -> None:
    payload = from_sender(labeled(["run:dev"], "run:dev"), "renovate[bot]")
    assert _deliver("issues", payload).ignored == "sender_not_allowed"
    with session_scope() as session:
        projects.update_conversation_settings(
            session=session, actor=None, project_key="hello", trigger_bots=["Renovate[bot]"]
        )
    payload = from_sender(labeled(["run:dev"], "run:dev"), "renovate[bot]")
    assert len(_deliver("issues", payload).runs) == 1
    payload = from_sender(labeled(["run:plan"], "run:plan"), "other[bot]")
    (refused,) = refused_events(_deliver("issues", payload).delivery_id)
    assert "`Renovate[bot]`" in refused.payload["message"]


def test_a_changes_requested_review_from_an_outsider_starts_no_revise(repo: Repository) -> None:
    payload = with_labels(
        example("pull_request_review", "submitted"), "pull_request", ["run:dev"], None
    )
    payload["review"]["state"] = "changes_requested"
    outcome = _deliver("pull_request_review", from_sender(payload, "drive-by"))
    assert outcome.ignored == "sender_not_allowed" and runs() == []
    outcome = _deliver("pull_request_review", from_sender(copy.deepcopy(payload), "Codertocat"))
    (run,) = runs()
    assert outcome.runs == [run.id] and run.is_revise


def test_need_reviewer_from_an_outsider_starts_no_review(repo: Repository) -> None:
    payload = with_labels(
        example("pull_request", "labeled"), "pull_request", ["need:reviewer"], "need:reviewer"
    )
    assert _deliver("pull_request", from_sender(payload, "drive-by")).ignored == (
        "sender_not_allowed"
    )
    assert runs() == []


def test_outsiders_may_still_cancel_by_unlabeling(repo: Repository) -> None:
    """Cancels stop spending: whoever may remove the label on GitHub may stop a pending run."""
    _deliver("issues", labeled(["run:dev"], "run:dev"))
    unlabel = from_sender(labeled([], "run:dev"), "drive-by")
    unlabel["action"] = "unlabeled"
    outcome = _deliver("issues", unlabel)
    (run,) = runs()
    assert outcome.canceled == [run.id]


def test_a_refused_trigger_redelivered_is_a_duplicate(repo: Repository) -> None:
    payload = from_sender(labeled(["run:dev"], "run:dev"), "drive-by")
    _deliver("issues", payload, delivery_id="twice")
    again = _deliver("issues", payload, delivery_id="twice")
    assert again.is_duplicate and len(refused_events("twice")) == 1


# --- discussions (issue #19) ---------------------------------------------------------------------


def commented(labels: list[str], *, number: int = 1, body: str = "What about X?") -> dict[str, Any]:
    payload = with_labels(example("issue_comment", "created"), "issue", labels, None)
    payload.pop("label", None)
    payload["issue"]["number"] = number
    payload["comment"]["body"] = body
    payload["comment"]["id"] = next(_comment_ids)
    return payload


_comment_ids = itertools.count(9000)


def set_status(run_id: int, status: str) -> None:
    with session_scope() as session:
        session.execute(sa.update(AgentRun).where(AgentRun.id == run_id).values(status=status))


def test_the_discussion_label_starts_a_cheap_turn_answered_by_the_pm(repo: Repository) -> None:
    with session_scope() as session:
        projects.update_settings(
            session=session, actor=None, project_key="hello", name="hello", slots=2,
            learning_mode_default=False, default_model="gpt-5-codex", log_retention_days=None,
        )  # fmt: skip
    outcome = _deliver(
        "issues", labeled(["mode:discussion", "[ai-model-o3]"], "mode:discussion"), delivery_id="d"
    )
    (run,) = runs()
    assert outcome.runs == [run.id]
    assert (run.stage, run.mode, run.agent_key, run.trigger_label) == (
        "discussion", "discussion", "pm", "mode:discussion",
    )  # fmt: skip
    # Not the issue's model label (that is the work's): the project's model at low effort.
    assert (run.model, run.reasoning_effort) == ("gpt-5-codex", "low")
    created = [e for e in events("d") if e.event_type == "run_created"]
    assert created[0].payload["mode"] == "discussion"


def test_discussion_model_and_effort_are_the_projects_own(repo: Repository) -> None:
    with session_scope() as session:
        projects.update_conversation_settings(
            session=session, actor=None, project_key="hello", discussion_model="gpt-5-mini",
            discussion_reasoning_effort="minimal",
        )  # fmt: skip
    _deliver("issues", labeled(["mode:discussion"], "mode:discussion"))
    (run,) = runs()
    assert (run.model, run.reasoning_effort) == ("gpt-5-mini", "minimal")


def test_comments_continue_the_discussion_one_pending_turn_at_a_time(repo: Repository) -> None:
    (first,) = _deliver("issues", labeled(["mode:discussion"], "mode:discussion")).runs
    # Still pending: the pending turn reads the new comment when it starts.
    folded = _deliver("issue_comment", commented(["mode:discussion"]))
    assert folded.ignored == "already_active" and len(runs()) == 1
    # Running: the comment queues the next turn (dispatch starts it after this one).
    set_status(first, "running")
    (second,) = _deliver("issue_comment", commented(["mode:discussion"])).runs
    third = _deliver("issue_comment", commented(["mode:discussion"]))
    assert third.ignored == "already_active"
    turn = next(r for r in runs() if r.id == second)
    assert (turn.mode, turn.stage, turn.status) == ("discussion", "discussion", "pending")


def test_outsiders_and_codexk8s_itself_do_not_continue_a_discussion(repo: Repository) -> None:
    outsider = _deliver("issue_comment", from_sender(commented(["mode:discussion"]), "drive-by"))
    assert outsider.ignored == "sender_not_allowed" and runs() == []
    own = commented(["mode:discussion"], body="<!-- codexk8s:discussion run=1 -->\nAn answer")
    assert _deliver("issue_comment", own).ignored == "own_comment" and runs() == []


def test_a_run_label_ends_the_discussion_and_starts_the_work(repo: Repository) -> None:
    (turn,) = _deliver("issues", labeled(["mode:discussion"], "mode:discussion")).runs
    set_status(turn, "succeeded")
    (work,) = _deliver("issues", labeled(["mode:discussion", "run:dev"], "run:dev")).runs
    assert next(r for r in runs() if r.id == work).mode == "work"
    after = _deliver("issue_comment", commented(["mode:discussion", "run:dev"]))
    assert after.ignored == "comment_recorded" and len(runs()) == 2


def test_removing_the_discussion_label_cancels_the_pending_turn(repo: Repository) -> None:
    (turn,) = _deliver("issues", labeled(["mode:discussion"], "mode:discussion")).runs
    unlabel = labeled([], "mode:discussion")
    unlabel["action"] = "unlabeled"
    assert _deliver("issues", unlabel).canceled == [turn]


def test_a_discussion_stage_discusses_its_run_label_and_comments(repo: Repository) -> None:
    with session_scope() as session:
        projects.update_conversation_settings(
            session=session, actor=None, project_key="hello", discussion_stages=["intake"]
        )
    assert _deliver("issue_comment", commented(["run:dev"])).ignored == "comment_recorded"
    (turn,) = _deliver("issues", labeled(["run:intake", "[ai-model-o3]"], "run:intake")).runs
    run = runs()[0]
    assert (run.stage, run.mode, run.agent_key, run.trigger_label) == (
        "intake", "discussion", "pm", "run:intake",
    )  # fmt: skip
    assert run.model != "o3"
    set_status(turn, "succeeded")
    (following,) = _deliver("issue_comment", commented(["run:intake"])).runs
    assert next(r for r in runs() if r.id == following).mode == "discussion"


def test_a_redelivered_discussion_comment_starts_one_turn(repo: Repository) -> None:
    payload = commented(["mode:discussion"])
    first = _deliver("issue_comment", payload, delivery_id="c-once")
    again = _deliver("issue_comment", payload, delivery_id="c-once")
    assert len(first.runs) == 1 and again.is_duplicate and len(runs()) == 1
