"""Placeholder prompt rendering for agent runs, to be replaced by the prompt-templates work.

Only `render_run_prompt` exists here, with the signature the real module keeps; the prompt
templates branch replaces this whole file (templates from `prompt_templates`, issue context,
learning mode).
"""

from __future__ import annotations

from sqlmodel import Session

from codexk8s.db.models import AgentRun
from codexk8s.errors import NotFoundError


def render_run_prompt(*, session: Session, run_id: int) -> str:
    """The run's prompt in a fixed format: stage, issue number and title (placeholder)."""
    run = session.get(AgentRun, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    target = f"#{run.issue_number}" if run.issue_number is not None else f"run {run.id}"
    title = run.issue_title or "(no title)"
    return (
        f"Stage: {run.stage}{' (revise)' if run.is_revise else ''}\n"
        f"Issue {target}: {title}\n\n"
        f"Do the work of the {run.stage} stage for this issue in this repository."
    )
