"""The per-run model proxy's wire rules: which calls pass, which request headers go on, what is
set from configuration, and the key scrubbed from everything relayed back.

The proxy swaps a run's token for the control plane's key, so anything a run may send or read
through it is decided here, narrowly:
- paths match a strict pattern of the Responses and Models routes Codex uses, checked on the
  decoded path; a `%` is refused outright, since a second decoding by a proxy in front of the
  provider could turn `%2e%2e` into `..` and reach `/v1/organization/...` with the key;
- request headers are an allow-list (content negotiation and Codex's own metadata); billing
  headers (`OpenAI-Organization`, `OpenAI-Project`) come from configuration, never from a run;
- answers pass through with a few headers, and every occurrence of the key in a header or the
  body (streamed or not, even split across chunks) is replaced, since a compatible provider may
  echo it in an error.

`forward` sends one allowed call to the provider and relays the answer as it streams, metering
its usage and the responses it creates through the caller's callbacks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx

from codexk8s.adapters.openai.usage import UsageMeter
from codexk8s.errors import UnavailableError

REDACTED = b"[redacted]"
UPSTREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)

# What a run may ask for. Response ids and model names are plain tokens: no `/`, `%` or dots
# that could make a path segment of their own.
_RESPONSE_ID = r"[A-Za-z0-9_-]{1,128}"
_MODEL = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_ROUTES: tuple[tuple[str, re.Pattern[str], bool], ...] = (
    # (method, path pattern, whether the `id` group names a response the run must own)
    ("POST", re.compile(r"responses"), False),
    ("POST", re.compile(r"responses/(?:compact|input_tokens)"), False),
    ("GET", re.compile(rf"responses/(?P<id>{_RESPONSE_ID})"), True),
    ("GET", re.compile(rf"responses/(?P<id>{_RESPONSE_ID})/input_items"), True),
    ("POST", re.compile(rf"responses/(?P<id>{_RESPONSE_ID})/cancel"), True),
    ("GET", re.compile(r"models"), False),
    ("GET", re.compile(rf"models/{_MODEL}"), False),
)
# Forwarded request headers: content negotiation and what Codex and the OpenAI SDKs send about
# themselves. Anything else a run sends stays here (cookies, billing, account or routing
# headers such as ChatGPT-Account-ID).
_PASSED_REQUEST_HEADERS = frozenset(
    {"content-type", "accept", "user-agent", "openai-beta", "idempotency-key", "originator",
     "session_id", "conversation_id", "version", "x-client-request-id", "x-openai-subagent"}
)  # fmt: skip
_PASSED_REQUEST_PREFIXES = ("x-codex-", "x-stainless-")
_PASSED_RESPONSE_HEADERS = frozenset(
    {"content-type", "retry-after", "x-request-id", "openai-processing-ms"}
)
_PASSED_RESPONSE_PREFIXES = ("x-ratelimit-",)


@dataclass(frozen=True, slots=True)
class ProxiedCall:
    """A call the proxy forwards: its path under the provider's base URL, and the response it
    reads or changes (which the run must have created), if any."""

    path: str
    response_id: str | None = None


def match_call(method: str, path: str) -> ProxiedCall | None:
    """The call METHOD PATH (decoded, without leading or trailing slash) stands for, or None when
    the proxy does not forward it."""
    if "%" in path or "\\" in path:
        return None
    for allowed, pattern, is_owned in _ROUTES:
        found = pattern.fullmatch(path)
        if found is not None and method == allowed:
            return ProxiedCall(path=path, response_id=found.group("id") if is_owned else None)
    return None


def request_headers(
    incoming: Iterable[tuple[str, str]], *, api_key: str, organization: str | None,
    project: str | None,
) -> dict[str, str]:  # fmt: skip
    """The headers sent to the provider: the allowed ones of INCOMING, the key, and the billing
    headers from configuration."""
    headers = {
        name.lower(): value
        for name, value in incoming
        if name.lower() in _PASSED_REQUEST_HEADERS
        or name.lower().startswith(_PASSED_REQUEST_PREFIXES)
    }
    headers["authorization"] = f"Bearer {api_key}"
    if organization:
        headers["openai-organization"] = organization
    if project:
        headers["openai-project"] = project
    return headers


def response_headers(upstream: Mapping[str, str], scrubber: SecretScrubber) -> dict[str, str]:
    """The provider's headers a run gets back, scrubbed."""
    return {
        name: scrubber.scrub_text(value)
        for name, value in upstream.items()
        if name.lower() in _PASSED_RESPONSE_HEADERS
        or name.lower().startswith(_PASSED_RESPONSE_PREFIXES)
    }


class SecretScrubber:
    """Replaces secrets in a byte stream fed chunk by chunk.

    A secret split across chunks is still found: the end of a chunk that could be the start of a
    secret is held back until the next chunk (or `finish`) shows whether it is. Only such an end
    is held, so a stream of server-sent events is not delayed by a chunk.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self._held = b""

    def scrub_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret.decode(), REDACTED.decode())
        return text

    def _replace(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, REDACTED)
        return data

    def _pending_prefix(self, data: bytes) -> int:
        """The length of the longest end of DATA that begins some secret."""
        longest = min(len(data), max((len(s) for s in self._secrets), default=1) - 1)
        for size in range(longest, 0, -1):
            tail = data[-size:]
            if any(secret.startswith(tail) for secret in self._secrets):
                return size
        return 0

    def feed(self, chunk: bytes) -> bytes:
        """What of CHUNK can be sent now, scrubbed."""
        if not self._secrets:
            return chunk
        data = self._replace(self._held + chunk)
        hold = self._pending_prefix(data)
        self._held = data[len(data) - hold :] if hold else b""
        return data[: len(data) - hold]

    def finish(self) -> bytes:
        """The rest held back at the end of the stream (it was no secret)."""
        rest, self._held = self._held, b""
        return rest


@dataclass(frozen=True, slots=True)
class Relay:
    """The provider's answer on its way back: status, scrubbed headers, the scrubbed body as it
    streams, and `close` for the upstream connection once the body was sent."""

    status_code: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


async def forward(
    call: ProxiedCall, *, method: str, base_url: str, query: str, body: bytes,
    incoming_headers: Iterable[tuple[str, str]], api_key: str, organization: str | None,
    project: str | None, record_response_ids: Callable[[list[str]], Awaitable[None]],
    record_usage: Callable[[dict[str, int]], Awaitable[None]],
) -> Relay:  # fmt: skip
    """Send CALL to the provider at BASE_URL with the control plane's key and relay the answer.
    The ids of responses it creates reach RECORD_RESPONSE_IDS before the chunk naming them is
    passed on; each answer's usage reaches RECORD_USAGE. An unreachable provider is an
    UnavailableError (a gateway error: Codex retries it like any 5xx from the provider)."""
    headers = request_headers(
        incoming_headers, api_key=api_key, organization=organization, project=project
    )
    url = f"{base_url}/{call.path}"
    if query:
        url = f"{url}?{query}"
    client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
    try:
        upstream = await client.send(
            client.build_request(method, url, content=body, headers=headers), stream=True
        )
    except httpx.HTTPError as exc:
        await client.aclose()
        raise UnavailableError(f"the model provider is unreachable: {type(exc).__name__}") from exc

    is_stream = upstream.headers.get("content-type", "").startswith("text/event-stream")
    meter = UsageMeter(is_stream=is_stream) if upstream.status_code == 200 else None
    # Responses this call creates become the run's to read; reads name one it already owns.
    is_creation = call.response_id is None and call.path.startswith("responses")
    scrubber = SecretScrubber([api_key])
    recorded = 0

    async def record(usages: list[dict[str, int]]) -> None:
        nonlocal recorded
        if meter is not None and is_creation and len(meter.response_ids) > recorded:
            new_ids, recorded = meter.response_ids[recorded:], len(meter.response_ids)
            await record_response_ids(new_ids)
        for usage in usages:
            await record_usage(usage)

    async def relay() -> AsyncIterator[bytes]:
        # A plain JSON answer's last piece waits until its response id is recorded, so the run
        # cannot ask for the response before it is known to be the run's.
        held = b""
        try:
            async for chunk in upstream.aiter_bytes():
                if meter is not None:
                    await record(meter.feed(chunk))
                ready = scrubber.feed(chunk)
                if is_stream:
                    if ready:
                        yield ready
                    continue
                if held:
                    yield held
                held = ready
        except httpx.HTTPError:
            # The client sees a cut stream and retries it.
            if rest := held + scrubber.finish():
                yield rest
            return
        if meter is not None:
            await record(meter.finish())
        if rest := held + scrubber.finish():
            yield rest

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    return Relay(
        status_code=upstream.status_code, headers=response_headers(upstream.headers, scrubber),
        body=relay(), close=close,
    )  # fmt: skip
