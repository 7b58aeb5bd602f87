"""How a dashboard state carries out one service call for a person's action and shows a refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from codexk8s.errors import CodexK8sError


async def attempt(
    state: Any, work: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> tuple[bool, Any]:
    """WORK(*ARGS, **KWARGS) in a worker thread. A CodexK8sError becomes STATE's error (its
    notice cleared) and (False, None); otherwise STATE's error is cleared and (True, result), and
    the caller says what was done in the notice."""
    try:
        result = await asyncio.to_thread(work, *args, **kwargs)
    except CodexK8sError as exc:
        state.error, state.notice = str(exc), ""
        return False, None
    state.error = ""
    return True, result
