"""One transaction per use case for callers that hold no session (dashboard states, HTTP
routes): services own their transactions, so web code never opens one itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from codexk8s.db.engine import session_scope

T = TypeVar("T")


def in_transaction(work: Callable[..., T], /, **kwargs: object) -> T:
    """WORK(session=..., **KWARGS) in one transaction of the application's database: committed
    when it returns, rolled back when it raises."""
    with session_scope() as session:
        return work(session=session, **kwargs)
