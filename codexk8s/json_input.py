"""Reading JSON someone else sent: malformed, deeply nested or NUL-carrying input becomes one
MalformedInputError (a 400) instead of a RecursionError or a database error deep in a request."""

from __future__ import annotations

import json
from typing import Any

from codexk8s.errors import MalformedInputError

# Nothing codexk8s reads is nested more than a few levels; GitHub's payloads stay under 10.
MAX_DEPTH = 64


def loads(
    raw: bytes | str, *, what: str = "the body", max_depth: int | None = MAX_DEPTH,
    allow_nul: bool = True,
) -> Any:  # fmt: skip
    """`json.loads(RAW)`, refused as WHAT when it is not JSON, nests deeper than MAX_DEPTH (None:
    as deep as the decoder goes without RecursionError, for the webhook's hot path) or, unless
    ALLOW_NUL, holds a NUL character in a string (PostgreSQL text cannot store one)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise MalformedInputError(
            f"{what} is not valid JSON: it is nested too deeply", reason="too_deep"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedInputError(f"{what} is not valid JSON: {exc}", reason="bad_json") from None
    if max_depth is not None or not allow_nul:
        _check(value, what=what, max_depth=max_depth, allow_nul=allow_nul)
    return value


def _check(value: Any, *, what: str, max_depth: int | None, allow_nul: bool) -> None:
    # Iterative, so checking a deep value cannot itself run out of stack.
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if max_depth is not None and depth > max_depth:
                raise MalformedInputError(
                    f"{what} is not valid JSON: it is nested too deeply (more than {max_depth} "
                    "levels)",
                    reason="too_deep",
                )
            children = list(item.items()) if isinstance(item, dict) else [(None, x) for x in item]
            for key, child in children:
                if key is not None and not allow_nul and "\x00" in key:
                    raise _nul(what)
                pending.append((child, depth + 1))
        elif isinstance(item, str) and not allow_nul and "\x00" in item:
            raise _nul(what)


def _nul(what: str) -> MalformedInputError:
    return MalformedInputError(f"{what} holds a NUL character (\\u0000)", reason="nul_byte")


def refuse_nul(value: str, what: str) -> str:
    """VALUE, unless it holds a NUL character (a query or path parameter)."""
    if "\x00" in value:
        raise MalformedInputError(f"{what} holds a NUL character", reason="nul_byte")
    return value
