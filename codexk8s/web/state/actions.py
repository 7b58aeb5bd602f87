"""How a dashboard state carries out one service call for a person's action and shows a refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from codexk8s.errors import CodexK8sError


async def attempt(
    state: Any, work: Callable[..., Any], /, *args: Any,
    refusals: Mapping[type[CodexK8sError], str] | None = None, **kwargs: Any,
) -> tuple[bool, Any]:  # fmt: skip
    """WORK(*ARGS, **KWARGS) in a worker thread. A CodexK8sError becomes STATE's error (the
    words REFUSALS gives its kind, else its own message; the notice cleared) and (False, None);
    otherwise STATE's error is cleared and (True, result), and the caller says what was done in
    the notice."""
    try:
        result = await asyncio.to_thread(work, *args, **kwargs)
    except CodexK8sError as exc:
        words = next((w for kind, w in (refusals or {}).items() if isinstance(exc, kind)), None)
        state.error, state.notice = words or str(exc), ""
        return False, None
    state.error = ""
    return True, result
