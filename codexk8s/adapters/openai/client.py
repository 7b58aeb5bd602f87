"""The control plane's own calls to the model provider through the openai SDK (`AsyncOpenAI`):
whether a model exists, and one Responses API answer with its usage. SDK errors become the two
error types below, so services never handle the SDK's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from codexk8s.domain.repository_provider import Usage

TIMEOUT_SECONDS = 30.0


class ModelProviderError(Exception):
    """The provider did not answer the call; KIND names the SDK's error (`APIConnectionError`)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class ModelNotFoundError(ModelProviderError):
    """The provider answered that the model does not exist."""


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    text: str
    usage: Usage


def client(*, api_key: str, base_url: str | None) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=TIMEOUT_SECONDS, max_retries=2)


async def retrieve_model(*, api_key: str, base_url: str | None, model: str) -> None:
    """Return when MODEL exists; ModelNotFoundError when the provider says it does not."""
    sdk = client(api_key=api_key, base_url=base_url)
    try:
        await sdk.models.retrieve(model)
    except openai.NotFoundError:
        raise ModelNotFoundError("NotFoundError") from None
    except openai.OpenAIError as exc:
        raise ModelProviderError(type(exc).__name__) from None
    finally:
        await sdk.close()


async def create_response(
    *, api_key: str, base_url: str | None, model: str, instructions: str, input: str
) -> ModelAnswer:
    """One Responses API answer: its text and its token usage."""
    sdk = client(api_key=api_key, base_url=base_url)
    try:
        response = await sdk.responses.create(model=model, instructions=instructions, input=input)
    except openai.OpenAIError as exc:
        raise ModelProviderError(type(exc).__name__) from None
    finally:
        await sdk.close()
    return ModelAnswer(text=response.output_text or "", usage=_usage(response))


def _usage(response: Any) -> Usage:
    usage = getattr(response, "usage", None)
    if usage is None:
        return Usage()
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input=int(getattr(usage, "input_tokens", 0) or 0),
        cached=int(getattr(input_details, "cached_tokens", 0) or 0),
        output=int(getattr(usage, "output_tokens", 0) or 0),
        reasoning=int(getattr(output_details, "reasoning_tokens", 0) or 0),
    )
