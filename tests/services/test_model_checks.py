"""Model checks and learning explanations through the openai SDK against a loopback server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codexk8s.config import Settings
from codexk8s.services import model_checks
from tests.conftest import free_port
from tests.openai_server import API_KEY, FakeOpenAI, running_openai


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    model_checks._known_models.clear()
    with running_openai() as fake:
        yield fake
    model_checks._known_models.clear()


def settings_for(base_url: str, key: str = API_KEY) -> Settings:
    return Settings(openai_base_url=base_url, openai_api_key=key)  # type: ignore[arg-type]


async def test_missing_model_is_a_precondition_error(openai: FakeOpenAI) -> None:
    with pytest.raises(model_checks.ModelMissingError, match="'gpt-nope' does not exist"):
        await model_checks.check_model(settings=settings_for(openai.base_url), model="gpt-nope")


async def test_existing_model_is_asked_about_once(openai: FakeOpenAI) -> None:
    settings = settings_for(openai.base_url)
    await model_checks.check_model(settings=settings, model="gpt-test")
    await model_checks.check_model(settings=settings, model="gpt-test")
    assert openai.requests == [("GET", "/v1/models/gpt-test", None)]


async def test_unreachable_or_refusing_provider_does_not_fail_the_run(openai: FakeOpenAI) -> None:
    down = settings_for(f"http://127.0.0.1:{free_port()}/v1")
    await model_checks.check_model(settings=down, model="gpt-test")
    wrong_key = settings_for(openai.base_url, key="sk-wrong")
    await model_checks.check_model(settings=wrong_key, model="gpt-test")
    # Not cached as known: the next check asks again.
    await model_checks.check_model(settings=wrong_key, model="gpt-test")
    assert len(openai.requests) == 2


async def test_prose_answer_is_kept_as_one_explanation(openai: FakeOpenAI) -> None:
    openai.replies = ["The model table keeps widgets; a JSON column was simpler but unindexed."]
    explanations, usage = await model_checks.explain_changes(
        settings=settings_for(openai.base_url), model="gpt-test", title="Add widgets",
        summary="Adds widgets", changed_files=["app/models.py"],
    )  # fmt: skip
    assert [(e.file_path, e.text) for e in explanations] == [(None, openai.replies[0])]
    assert (usage.input, usage.cached, usage.output, usage.reasoning) == (120, 20, 80, 30)
