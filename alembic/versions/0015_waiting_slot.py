"""waiting runs that gave their slot away; decisions handed to the agent

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 14:00:00.000000

- `agent_runs.slot_released_at`: set while a run waiting for a person has given its slot to the
  next run (a project's waiting-slot policy `release`); dispatch hands it a slot back first.
- `run_requests.delivered_at`: when the agent's waiting tool call got the decision; a decided
  request not yet delivered is what the same call, retried, waits on again.

The columns are added with plain ADD COLUMN (see 0013 for why not a batch copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_runs", sa.Column("slot_released_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "run_requests", sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("run_requests", "delivered_at")
    op.drop_column("agent_runs", "slot_released_at")
