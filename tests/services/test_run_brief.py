"""Cost from the price table, and the price table from the environment."""

from __future__ import annotations

from decimal import Decimal

import pytest

from codexk8s.config import DEFAULT_MODEL_PRICES, ConfigError, load_settings
from codexk8s.services.run_brief import cost_usd, model_precondition

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
