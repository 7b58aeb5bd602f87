"""Readiness: is the database reachable and migrated to head?"""

from __future__ import annotations

import sqlalchemy as sa

from codexk8s.config import get_settings
from codexk8s.db import migrations
from codexk8s.db.engine import get_engine


def readiness_problem() -> str | None:
    """None when ready; otherwise a short reason suitable for a probe's response."""
    engine = get_engine()
    try:
        current = migrations.current_revision(engine)
    except sa.exc.SQLAlchemyError as exc:
        return f"database unreachable: {type(exc).__name__}"
    head = migrations.head_revision()
    if current != head:
        return f"database schema at {current or 'nothing'}, expected {head}; run `codexk8s migrate`"
    return None


def is_draining() -> bool:
    """True once `codexk8s serve` began shutting down: the replica must leave the endpoints."""
    drain_file = get_settings().drain_file
    return drain_file is not None and drain_file.exists()
