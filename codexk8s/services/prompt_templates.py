"""Prompt templates: the shipped seeds, versioned edits by platform admins, and a run's prompt.

Every edit inserts a new version row (scope, kind, locale, version); nothing is updated in place,
so the rows are the history. A run's prompt is rendered from the current version of its stage's
template and what the platform stored about the run (the run row, the delivery that started it,
the issue's recorded comments): the agent runner never needs GitHub to build its brief.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from codexk8s.db.models import AgentRun, PromptTemplate, Repository, User, WebhookDelivery, table_of
from codexk8s.domain import prompts
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.domain.feedback import COMMENT_MARKER_PREFIX
from codexk8s.domain.prompts import Comment, DiscussionEntry, PromptContext, TemplateError
from codexk8s.domain.runs import RunMode, RunStatus
from codexk8s.domain.stages import DISCUSSION_STAGE
from codexk8s.errors import ConflictError, ForbiddenError, InvalidArgumentError, NotFoundError
from codexk8s.services.audit import record_event

SEED_PACKAGE = "codexk8s"
SEED_DIR = "prompts"
# Enough issue_comment deliveries to fold edits and deletions into the latest MAX_COMMENTS.
_COMMENT_DELIVERIES_SCANNED = 100
_TEMPLATES: sa.Table = table_of(PromptTemplate)


@dataclass(frozen=True, slots=True)
class SeedTemplate:
    scope: str
    kind: str
    locale: str
    body: str


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One stored version of a template, as plain data."""

    id: int
    scope: str
    kind: str
    locale: str
    version: int
    body: str
    author: str  # the author's email; "codexk8s seed" or "command line" without a user
    created_at: datetime


def shipped_templates() -> list[SeedTemplate]:
    """The templates shipped in the package: `codexk8s/prompts/<scope>.<kind>[.<locale>].md`."""
    found = []
    for entry in (resources.files(SEED_PACKAGE) / SEED_DIR).iterdir():
        name = entry.name
        if not name.endswith(".md"):
            continue
        parts = name[: -len(".md")].split(".")
        if len(parts) == 2:
            parts.append(prompts.DEFAULT_LOCALE)
        scope, kind, locale = parts
        if scope not in prompts.SCOPES or kind not in prompts.KINDS:
            raise RuntimeError(f"shipped prompt template {name} names no known scope and kind")
        found.append(SeedTemplate(scope, kind, locale, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda t: (prompts.SCOPES.index(t.scope), t.kind, t.locale))


def seed_defaults(*, session: Session) -> int:
    """Insert version 1 of every shipped template that has no row yet; the number inserted.

    Safe to repeat and to run on several replicas at once: an existing version 1 (the seed, or
    the start of someone's edits) is left alone, so edits are never overwritten.
    """
    seeds = shipped_templates()
    insert = (
        postgresql.insert(_TEMPLATES)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(_TEMPLATES)
    )
    inserted = 0
    for seed in seeds:
        prompts.validate_template(seed.body)
        statement = insert.values(
            scope=seed.scope, kind=seed.kind, locale=seed.locale, version=1, body=seed.body,
            author_id=None, created_at=sa.func.now(),
        ).on_conflict_do_nothing(index_elements=["scope", "kind", "locale", "version"])  # fmt: skip
        # RETURNING tells inserted from skipped rows on every driver (rowcount may be -1).
        inserted += len(session.connection().execute(statement.returning(_TEMPLATES.c.id)).all())
    if inserted:
        record_event(
            session=session,
            correlation_id="prompt-templates",
            event_type="prompt_templates_seeded",
            payload={"inserted": inserted},
        )
    return inserted


def _check_scope(scope: str, kind: str, locale: str) -> None:
    if scope not in prompts.SCOPES:
        raise InvalidArgumentError(
            f"unknown template scope {scope!r}; use one of: {', '.join(prompts.SCOPES)}"
        )
    if kind not in prompts.KINDS:
        raise InvalidArgumentError(f"unknown template kind {kind!r}; use work or revise")
    if not locale or len(locale) > 16 or not locale.replace("-", "").isalnum():
        raise InvalidArgumentError(f"invalid locale {locale!r}")


def _versions_query(scope: str, kind: str, locale: str) -> Any:
    return (
        select(PromptTemplate, User.email)
        .outerjoin(User, col(User.id) == col(PromptTemplate.author_id))
        .where(
            PromptTemplate.scope == scope,
            PromptTemplate.kind == kind,
            PromptTemplate.locale == locale,
        )
        .order_by(col(PromptTemplate.version).desc())
    )


def _row(template: PromptTemplate, email: str | None) -> TemplateVersion:
    assert template.id is not None
    return TemplateVersion(
        id=template.id,
        scope=template.scope,
        kind=template.kind,
        locale=template.locale,
        version=template.version,
        body=template.body,
        author=email or ("codexk8s seed" if template.version == 1 else "command line"),
        created_at=template.created_at,
    )


def current(
    *, session: Session, scope: str, kind: str, locale: str = prompts.DEFAULT_LOCALE
) -> TemplateVersion | None:
    """The newest version of the template, or None when it has none."""
    _check_scope(scope, kind, locale)
    found = session.exec(_versions_query(scope, kind, locale).limit(1)).first()
    return _row(*found) if found is not None else None


def history(
    *,
    session: Session,
    scope: str,
    kind: str,
    locale: str = prompts.DEFAULT_LOCALE,
    limit: int = 100,
) -> list[TemplateVersion]:
    """The template's versions, newest first."""
    _check_scope(scope, kind, locale)
    found = session.exec(_versions_query(scope, kind, locale).limit(limit)).all()
    return [_row(*row) for row in found]


# A None actor is the local operator at the command line (as in services/projects.py); every
# dashboard handler passes the signed-in principal, which must be a platform admin.


def _authorize(actor: Principal | None) -> None:
    if actor is not None and not is_allowed(actor, Action.MANAGE_PROMPTS):
        raise ForbiddenError("only platform admins change prompt templates")


def _actor_email(session: Session, actor: Principal | None) -> str | None:
    if actor is None:
        return None
    user = session.get(User, actor.user_id)
    return user.email if user is not None else str(actor.user_id)


def save_version(
    *,
    session: Session,
    actor: Principal | None,
    scope: str,
    kind: str,
    body: str,
    locale: str = prompts.DEFAULT_LOCALE,
    base_version: int | None = None,
    restored_from: int | None = None,
) -> TemplateVersion:
    """Store BODY as the next version of the template, written by ACTOR (a platform admin, or
    None for the local operator).

    BASE_VERSION, when given, is the version the editor started from: if someone saved a newer
    one meanwhile the save is refused instead of silently replacing their work.
    """
    _authorize(actor)
    _check_scope(scope, kind, locale)
    try:
        prompts.validate_template(body)
    except TemplateError as exc:
        raise InvalidArgumentError(str(exc)) from None
    latest = session.exec(
        select(PromptTemplate)
        .where(
            PromptTemplate.scope == scope,
            PromptTemplate.kind == kind,
            PromptTemplate.locale == locale,
        )
        .order_by(col(PromptTemplate.version).desc())
        .limit(1)
    ).first()
    latest_version = latest.version if latest is not None else 0
    if base_version is not None and base_version != latest_version:
        raise ConflictError(
            f"version {latest_version} of {scope}/{kind} was saved after the version "
            f"{base_version} you edited; reload it and apply your change again"
        )
    if latest is not None and latest.body == body:
        raise InvalidArgumentError(f"nothing to save: version {latest_version} has this text")
    template = PromptTemplate(
        scope=scope,
        kind=kind,
        locale=locale,
        version=latest_version + 1,
        body=body,
        author_id=actor.user_id if actor is not None else None,
    )
    # Two saves from the same version both compute the same next number: the unique constraint
    # lets one through and the other becomes a conflict. The savepoint keeps the caller's
    # transaction usable after it.
    try:
        with session.begin_nested():
            session.add(template)
    except sa.exc.IntegrityError:
        raise ConflictError(
            f"another version {latest_version + 1} of {scope}/{kind} was saved at the same time; "
            "reload it and apply your change again"
        ) from None
    email = _actor_email(session, actor)
    record_event(
        session=session,
        correlation_id=f"prompt-{scope}-{kind}-{locale}",
        event_type="prompt_template_restored" if restored_from else "prompt_template_saved",
        actor_id=email or "cli",
        payload={
            "scope": scope,
            "kind": kind,
            "locale": locale,
            "version": template.version,
            **({"restored_from": restored_from} if restored_from else {}),
        },
    )
    return _row(template, email)


def restore(*, session: Session, actor: Principal | None, template_id: int) -> TemplateVersion:
    """Make the text of an older version the newest version again (history is kept)."""
    _authorize(actor)
    old = session.get(PromptTemplate, template_id)
    if old is None:
        raise NotFoundError(f"no prompt template version with id {template_id}")
    return save_version(
        session=session, actor=actor, scope=old.scope, kind=old.kind, body=old.body,
        locale=old.locale, restored_from=old.version,
    )  # fmt: skip


# --- a run's prompt ------------------------------------------------------------------------------


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _labels(item: dict[str, Any]) -> tuple[str, ...]:
    labels = item.get("labels")
    if not isinstance(labels, list):
        return ()
    return tuple(_text(_dict(label).get("name")) for label in labels if _dict(label).get("name"))


def _login(item: dict[str, Any]) -> str:
    return _text(_dict(item.get("user")).get("login")) or "unknown"


@dataclass(frozen=True, slots=True)
class _TimedComment:
    at: datetime
    comment: Comment


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _recorded_comments(
    session: Session, run: AgentRun, repository_name: str | None
) -> list[_TimedComment]:
    """The comments people wrote on the run's issue, from recorded issue_comment deliveries,
    oldest first, each with when it was first received; later `edited` and `deleted`
    deliveries of a comment are applied. Comments codexk8s wrote itself (service comments,
    discussion answers, reviews) are left out: they carry its marker."""
    if run.issue_number is None:
        return []
    where = [
        WebhookDelivery.event == "issue_comment",
        WebhookDelivery.payload["issue"]["number"].as_integer() == run.issue_number,  # type: ignore[index]
    ]
    if run.repository_id is not None:
        where.append(WebhookDelivery.repository_id == run.repository_id)
    elif repository_name:
        where.append(sa.func.lower(WebhookDelivery.repository_full_name) == repository_name.lower())
    else:
        return []
    deliveries = session.exec(
        select(WebhookDelivery)
        .where(*where)
        .order_by(col(WebhookDelivery.received_at).desc(), col(WebhookDelivery.id).desc())
        .limit(_COMMENT_DELIVERIES_SCANNED)
    ).all()
    comments: dict[object, _TimedComment] = {}
    for delivery in reversed(deliveries):
        comment = _dict(delivery.payload.get("comment"))
        key = comment.get("id", delivery.id)
        body = _text(comment.get("body"))
        if delivery.action == "deleted" or COMMENT_MARKER_PREFIX in body:
            comments.pop(key, None)
        elif delivery.action in ("created", "edited"):
            first = comments[key].at if key in comments else _aware(delivery.received_at)
            comments[key] = _TimedComment(first, Comment(author=_login(comment), body=body))
    return list(comments.values())


def _discussion_answers(session: Session, run: AgentRun) -> list[tuple[datetime, str, str]]:
    """(when, agent, answer) of the discussion turns on RUN's issue that answered, oldest
    first (RUN itself excluded)."""
    if run.repository_id is None or run.issue_number is None:
        return []
    rows = session.exec(
        select(AgentRun.finished_at, AgentRun.created_at, AgentRun.agent_key, AgentRun.summary)
        .where(
            AgentRun.repository_id == run.repository_id,
            AgentRun.issue_number == run.issue_number,
            AgentRun.mode == RunMode.DISCUSSION.value,
            AgentRun.status == RunStatus.SUCCEEDED.value,
            AgentRun.id != run.id,
            col(AgentRun.summary).is_not(None),
        )
        .order_by(col(AgentRun.id))
    ).all()
    return [
        (_aware(finished or created), agent, summary or "")
        for finished, created, agent, summary in rows
    ]


def _discussion(
    run: AgentRun, comments: list[_TimedComment], answers: list[tuple[datetime, str, str]]
) -> tuple[DiscussionEntry, ...]:
    """The transcript a run gets: for a discussion turn, the people's comments and the earlier
    answers; for a work run, the same once the issue had a discussion (else nothing)."""
    if run.mode != RunMode.DISCUSSION.value and not answers:
        return ()
    merged = [(c.at, 0, DiscussionEntry(c.comment.author, c.comment.body)) for c in comments]
    merged += [(at, 1, DiscussionEntry(agent, body, is_agent=True)) for at, agent, body in answers]
    merged.sort(key=lambda item: (item[0], item[1]))
    return tuple(entry for _, _, entry in merged)


def build_context(
    *, session: Session, run: AgentRun, project_docs: str = "", since: datetime | None = None
) -> tuple[PromptContext, list[Comment]]:
    """The prompt context of RUN from what is stored: the run, its delivery, recorded comments,
    the issue's discussion; and the comments (and review) received after SINCE, for a run that
    resumes an earlier session. PROJECT_DOCS is what `{{project_docs}}` becomes.

    A run started without a webhook (API, CLI, rerun of such a run) has only its stored title.
    """
    repository = session.get(Repository, run.repository_id) if run.repository_id else None
    delivery = (
        session.exec(
            select(WebhookDelivery).where(WebhookDelivery.delivery_id == run.delivery_id)
        ).first()
        if run.delivery_id
        else None
    )
    payload = delivery.payload if delivery is not None else {}
    item = _dict(payload.get("issue")) or _dict(payload.get("pull_request"))
    repository_name = (
        repository.full_name
        if repository is not None
        else _text(_dict(payload.get("repository")).get("full_name")) or None
    )
    timed = _recorded_comments(session, run, repository_name)
    comments = [item.comment for item in timed][-prompts.MAX_COMMENTS :]
    new = [item.comment for item in timed if since is not None and item.at > _aware(since)]
    review = _dict(payload.get("review"))
    if delivery is not None and delivery.event == "pull_request_review" and review.get("body"):
        # The review that asked for changes is what a revise run answers; it is the newest word.
        asked = Comment(_login(review), "(review: changes requested)\n" + review["body"])
        comments = [*comments, asked][-prompts.MAX_COMMENTS :]
        new.append(asked)
    answers = _discussion_answers(session, run)
    context = PromptContext(
        repository=repository_name or "(repository removed)",
        issue_number=run.issue_number,
        issue_title=_text(item.get("title")) or run.issue_title or "(no title)",
        issue_body=_text(item.get("body")),
        issue_labels=_labels(item),
        comments=tuple(comments),
        stage=run.stage,
        stage_goal=prompts.stage_goal(run.stage),
        is_revise=run.is_revise,
        pr_number=run.pr_number,
        learning_mode=run.learning_mode and run.mode != RunMode.DISCUSSION.value,
        platform_rules=prompts.platform_rules(run.issue_number),
        discussion=_discussion(run, timed, answers),
        is_discussion=run.mode == RunMode.DISCUSSION.value,
        project_docs=project_docs,
    )
    return context, new[-prompts.MAX_COMMENTS :]


def template_for_run(
    *, session: Session, stage: str, is_revise: bool, locale: str = prompts.DEFAULT_LOCALE
) -> TemplateVersion:
    """The template a run of STAGE uses: its revise template for revise runs, falling back to
    the work template (the reviewer has no revise template); the default locale as fallback."""
    kinds = ("revise", "work") if is_revise else ("work",)
    locales = dict.fromkeys((locale, prompts.DEFAULT_LOCALE))
    for wanted_locale in locales:
        for kind in kinds:
            found = current(session=session, scope=stage, kind=kind, locale=wanted_locale)
            if found is not None:
                return found
    raise NotFoundError(
        f"no prompt template for stage {stage!r}; run `codexk8s seed` to load the defaults"
    )


@dataclass(frozen=True, slots=True)
class RunPrompts:
    """A run's prompt, and the shorter one it sends instead when it resumes an earlier session
    (only asked for with `since`)."""

    prompt: str
    continuation: str | None = None


def render_run_prompts(
    *, session: Session, run_id: int, project_docs: str = "", since: datetime | None = None
) -> RunPrompts:
    """The prompts of run RUN_ID (the agent runner's brief calls this). A discussion turn uses
    the `discussion` template whatever stage it discusses. SINCE (when the resumed session
    started) also renders the continuation: what was written after it."""
    run = session.get(AgentRun, run_id)
    if run is None:
        raise NotFoundError(f"no run with id {run_id}")
    scope = DISCUSSION_STAGE if run.mode == RunMode.DISCUSSION.value else run.stage
    if scope not in prompts.SCOPES:
        raise InvalidArgumentError(f"run {run_id} has an unknown stage {run.stage!r}")
    is_revise = run.is_revise and scope != DISCUSSION_STAGE
    try:
        body = template_for_run(session=session, stage=scope, is_revise=is_revise).body
    except NotFoundError:
        # A database nobody seeded yet (`migrate` and `serve` seed it) still gets the shipped text.
        body = _shipped_body(stage=scope, is_revise=is_revise)
    context, new = build_context(session=session, run=run, project_docs=project_docs, since=since)
    continuation = prompts.render_continuation(context, new) if since is not None else None
    return RunPrompts(prompt=prompts.render(body, context), continuation=continuation)


def render_run_prompt(*, session: Session, run_id: int, project_docs: str = "") -> str:
    """The rendered prompt of run RUN_ID."""
    return render_run_prompts(session=session, run_id=run_id, project_docs=project_docs).prompt


def _shipped_body(*, stage: str, is_revise: bool) -> str:
    shipped = {
        (t.scope, t.kind): t.body for t in shipped_templates() if t.locale == prompts.DEFAULT_LOCALE
    }
    for kind in ("revise", "work") if is_revise else ("work",):
        if (stage, kind) in shipped:
            return shipped[(stage, kind)]
    raise NotFoundError(
        f"no prompt template for stage {stage!r}; run `codexk8s seed` to load the defaults"
    )
