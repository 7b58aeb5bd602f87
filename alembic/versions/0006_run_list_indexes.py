"""run list indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 13:10:00.000000

The Runs page pages by (created_at, id), over every visible project or one; with 100,000 runs
its first page was a sequential scan and sort (124 ms), with these an index range (0.2 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_agent_runs_created_at_id", "agent_runs", ["created_at", "id"])
    op.create_index(
        "ix_agent_runs_project_id_created_at_id", "agent_runs", ["project_id", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_agent_runs_project_id_created_at_id", table_name="agent_runs")
    op.drop_index("ix_agent_runs_created_at_id", table_name="agent_runs")
