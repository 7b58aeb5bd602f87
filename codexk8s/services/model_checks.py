"""The control plane's own model calls around runs (`CODEXK8S_OPENAI_BASE_URL`, through
`adapters/openai/client.py`).

- `check_model`: before a run launches, does the configured model exist for this provider? A
  missing model fails the run at once with reason `precondition` instead of after a clone.
- `explain_changes`: learning mode; after a PR, the model explains the key changes (why,
  trade-offs, alternatives). Its token usage is returned so it can be added to the run.

Agent work itself runs in the agent runner (Codex), not here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from codexk8s import metrics
from codexk8s.adapters.openai import client as model_client
from codexk8s.config import Settings
from codexk8s.domain.repository_provider import Usage
from codexk8s.errors import PreconditionError, UnavailableError

log = logging.getLogger(__name__)
# A model known to exist is not asked about again for this long (one call per model, not per run).
KNOWN_MODEL_SECONDS = 300.0
_known_models: dict[tuple[str, str], float] = {}


class ModelMissingError(PreconditionError):
    """The configured model does not exist for the configured provider."""


@dataclass(frozen=True, slots=True)
class Explanation:
    file_path: str | None
    text: str


def is_configured(settings: Settings) -> bool:
    return settings.openai_api_key is not None and bool(settings.openai_api_key.get_secret_value())


def _api_key(settings: Settings) -> str:
    if not is_configured(settings):
        raise UnavailableError("CODEXK8S_OPENAI_API_KEY is not set")
    assert settings.openai_api_key is not None
    return settings.openai_api_key.get_secret_value()


async def check_model(*, settings: Settings, model: str) -> None:
    """Raise ModelMissingError when MODEL does not exist; other failures only log.

    A provider that is down or slow must not fail runs here: the agent runner meets the same
    provider and classifies its errors with retries. Only a definite "no such model" is final.
    """
    key = (settings.openai_base_url or "", model)
    if _known_models.get(key, 0.0) > time.monotonic():
        return
    api_key = _api_key(settings)
    try:
        await model_client.retrieve_model(
            api_key=api_key, base_url=settings.openai_base_url, model=model
        )
    except model_client.ModelNotFoundError:
        raise ModelMissingError(
            f"model {model!r} does not exist at the configured OpenAI provider"
            f" ({settings.openai_base_url or 'api.openai.com'}); choose another with an"
            " [ai-model-<name>] label or the project's default model"
        ) from None
    except model_client.ModelProviderError as exc:
        log.warning("model check for %s inconclusive: %s", model, exc.kind)
        return
    _known_models[key] = time.monotonic() + KNOWN_MODEL_SECONDS


LEARNING_INSTRUCTIONS = (
    "You explain a pull request to a developer who is learning. For the key changes, say why "
    "they were made, the trade-offs, and the alternatives that were considered. Answer only "
    'with JSON: {"explanations": [{"file": "<path or null>", "why": "...", "trade_offs": '
    '"...", "alternatives": "..."}]} with at most 5 entries.'
)


def _parse_explanations(text: str) -> list[Explanation]:
    try:
        data = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
        items = data["explanations"]
        found = []
        for item in items:
            parts = [
                f"**Why:** {item['why']}" if item.get("why") else "",
                f"**Trade-offs:** {item['trade_offs']}" if item.get("trade_offs") else "",
                f"**Alternatives:** {item['alternatives']}" if item.get("alternatives") else "",
            ]
            body = "\n".join(p for p in parts if p)
            if body:
                found.append(Explanation(file_path=item.get("file") or None, text=body))
        if found:
            return found
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    # Not the JSON asked for: keep the model's prose as one explanation rather than nothing.
    return [Explanation(file_path=None, text=text.strip())] if text.strip() else []


async def explain_changes(
    *,
    settings: Settings,
    model: str,
    title: str,
    summary: str,
    changed_files: Sequence[str],
    project_key: str = "",
) -> tuple[list[Explanation], Usage]:
    """Ask MODEL to explain a PR's key changes; return the explanations and the usage."""
    api_key = _api_key(settings)
    files = "\n".join(f"- {path}" for path in changed_files[:100]) or "(not reported)"
    try:
        answer = await model_client.create_response(
            api_key=api_key, base_url=settings.openai_base_url, model=model,
            instructions=LEARNING_INSTRUCTIONS,
            input=f"Pull request: {title}\n\nSummary:\n{summary}\n\nChanged files:\n{files}",
        )  # fmt: skip
    except model_client.ModelProviderError as exc:
        raise UnavailableError(f"learning explanations failed: {exc.kind}") from None
    usage = answer.usage
    metrics.OPENAI_TOKENS.labels(project_key, "input").inc(usage.input)
    metrics.OPENAI_TOKENS.labels(project_key, "output").inc(usage.output)
    return _parse_explanations(answer.text), usage


def render_learning_comment(marker: str, explanations: Sequence[Explanation]) -> str:
    lines = [marker, "### Learning notes", ""]
    for item in explanations:
        lines.append(f"#### `{item.file_path}`" if item.file_path else "#### Overall")
        lines += [item.text, ""]
    return "\n".join(lines)
