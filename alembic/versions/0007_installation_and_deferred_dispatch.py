"""installation id and deferred dispatch

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00.000000

`installation` holds one row: this database's id, stamped on every workload the runtimes create
so that a control plane adopts only its own (a new database next to an old cluster or data
folder, two installations on one cluster). `agent_runs.dispatch_after` keeps a requeued run
from being claimed before a passing obstacle (its lineage's namespace still terminating) is
likely gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    op.bulk_insert(installation, [{"id": uuid.uuid4().hex, "created_at": datetime.now(UTC)}])
    # A plain ADD COLUMN: batch mode would copy the table on SQLite, and dropping the old copy
    # with foreign keys on deletes every run's logs (see docs/decisions.md).
    op.add_column(
        "agent_runs", sa.Column("dispatch_after", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("agent_runs", "dispatch_after")
    op.drop_table("installation")
