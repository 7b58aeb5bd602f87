"""The run brief: cost from the price table, the price table from the environment, and the
branches a run works on."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from codexk8s.config import DEFAULT_MODEL_PRICES, ConfigError, load_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.services import projects, repositories, run_brief
from codexk8s.services.run_brief import RUNS, cost_usd, model_precondition
from tests.conftest import deliver_signed, link_member, reset_caches
from tests.webhook_examples import example, with_labels

USAGE = {"input": 1_000_000, "cached": 200_000, "output": 100_000, "reasoning": 50_000}


def test_cost_uses_cached_and_output_prices() -> None:
    # 800k input at 1.25 + 200k cached at 0.125 + 100k output (reasoning included) at 10.
    assert cost_usd("gpt-5", USAGE, DEFAULT_MODEL_PRICES) == Decimal("2.025000")
    assert cost_usd("unknown-model", USAGE, DEFAULT_MODEL_PRICES) == Decimal("0")
    no_cached_price = {"m": {"input": 1.0, "output": 2.0}}
    assert cost_usd("m", USAGE, no_cached_price) == Decimal("1.200000")


def test_prices_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_MODEL_PRICES", '{"house-model": {"input": 3, "output": 6}}')
    assert load_settings().model_prices == {"house-model": {"input": 3, "output": 6}}
    monkeypatch.setenv("CODEXK8S_MODEL_PRICES", '{"house-model": {"input": 3}}')
    with pytest.raises(ConfigError, match="CODEXK8S_MODEL_PRICES"):
        load_settings()


def test_precondition_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = model_precondition(load_settings())
    assert problem is not None and "CODEXK8S_OPENAI_API_KEY" in problem
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "sk-x")
    assert model_precondition(load_settings()) is None


def test_a_revise_run_from_a_review_works_on_the_pull_requests_branch(
    app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "sk-test-not-real")
    reset_caches()
    secret = "brief-secret"
    with session_scope() as session:
        projects.create_project(session=session, key="hello")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="hello",
            full_name="Codertocat/Hello-World", webhook_secret=secret,
        )  # fmt: skip
    link_member("hello")

    def deliver(event: str, payload: dict[str, Any]) -> int:
        (run_id,) = deliver_signed(event, payload, secret=secret).runs
        return run_id

    def repository_brief(run_id: int) -> dict[str, Any]:
        with get_engine().connect() as connection:
            run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
        return run_brief.build_brief(get_engine(), run=run, openai_path="/x")["repository"]

    review = with_labels(
        example("pull_request_review", "submitted"), "pull_request", ["run:dev"], None
    )
    review["review"]["state"] = "changes_requested"
    pull = review["pull_request"]
    pull["head"]["ref"], pull["base"]["ref"] = "codex/issue-7", "main"
    pull["head"]["repo"]["full_name"] = "Codertocat/Hello-World"
    assert repository_brief(deliver("pull_request_review", review))["work_branch"] == (
        "codex/issue-7"
    )
    assert repository_brief(run_id=_last_run())["base_branch"] == "main"

    # From a fork, the branch cannot be pushed to: the run gets a branch of its own.
    forked = copy.deepcopy(review)
    forked["pull_request"]["number"] = forked["number"] = 99
    forked["pull_request"]["head"]["repo"]["full_name"] = "someone/fork"
    assert repository_brief(deliver("pull_request_review", forked))["work_branch"] == (
        "codex/issue-99"
    )
    # An issue's run works on codex/issue-<n>.
    issue = with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
    issue["issue"]["number"] = 5
    assert repository_brief(deliver("issues", issue))["work_branch"] == "codex/issue-5"


def _last_run() -> int:
    with get_engine().connect() as connection:
        return connection.execute(sa.select(sa.func.max(RUNS.c.id))).scalar_one()
