"""This installation's id: one random value per database, created by migration 0007.

Runtimes stamp it on every workload they create and adopt only workloads that carry it, so a
control plane never takes another installation's Jobs (two installations on one cluster sharing
a namespace prefix) or an old data folder's processes (a new database next to old run folders)
for its own runs.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codexk8s.db.models import Installation, table_of, utcnow

INSTALLATION = table_of(Installation)


def installation_id(engine: Engine) -> str:
    """The id, created if the row is missing (a database migrated by hand, a restored dump)."""
    with engine.begin() as connection:
        found = connection.execute(
            sa.select(INSTALLATION.c.id)
            .order_by(INSTALLATION.c.created_at, INSTALLATION.c.id)
            .limit(1)
        ).scalar()
        if found:
            return str(found)
        created = uuid.uuid4().hex
        connection.execute(INSTALLATION.insert().values(id=created, created_at=utcnow()))
        return created
