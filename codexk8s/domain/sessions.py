"""What a resumable agent session looks like on the wire: Codex's thread id and the rollout
file's place under CODEX_HOME. Checked by the control plane before it stores a session and by
the runner before it writes one back, so neither side writes outside `sessions/`."""

from __future__ import annotations

import re
from typing import Final

THREAD_HEADER: Final[str] = "X-Codexk8s-Session-Thread"
PATH_HEADER: Final[str] = "X-Codexk8s-Session-Path"
PARENT_HEADER: Final[str] = "X-Codexk8s-Session-Parent"
ID_HEADER: Final[str] = "X-Codexk8s-Session-Id"
VERSION_HEADER: Final[str] = "X-Codexk8s-Session-Version"

_THREAD_ID: Final[re.Pattern[str]] = re.compile(
    r"^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$"
)
# sessions/YYYY/MM/DD/rollout-<time>-<thread>.jsonl, as Codex names them.
_PATH: Final[re.Pattern[str]] = re.compile(
    r"^sessions/\d{4}/\d{2}/\d{2}/rollout-[0-9A-Za-z:.T-]{1,64}-"
    r"(?P<thread>[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})\.jsonl$"
)


def is_thread_id(value: str | None) -> bool:
    return bool(value) and _THREAD_ID.match(value or "") is not None


def is_session_path(path: str | None, thread_id: str | None) -> bool:
    """Whether PATH is where Codex keeps the rollout of THREAD_ID (relative, no `..`)."""
    match = _PATH.match(path or "")
    return (
        match is not None
        and thread_id is not None
        and match.group("thread").lower() == thread_id.lower()
    )
