"""agents that ask: questions and approval requests a run waits on

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 11:00:00.000000

- `run_requests`: a question or an approval request of a run's agent (the platform MCP tools
  `ask` and `request_approval`), pending until a person answers or the wait limit passes.
- `agent_runs.waiting_since`: set while the run waits for a person; its deadline is paused.
- `agent_runs.wait_allowance_seconds`: what the runtime's own timer allows beyond the timeout for
  waiting, so the control plane's (paused) deadline is the one that stops the run.

The column is added with plain ADD COLUMN (see 0013 for why not a batch copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_runs", sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "agent_runs",
        sa.Column(
            "wait_allowance_seconds", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.create_table(
        "run_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("policy", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("answered_by", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column("answered_via", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_run_requests_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["agent_runs.id"],
            name=op.f("fk_run_requests_run_id_agent_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_requests")),
    )
    op.create_index(op.f("ix_run_requests_run_id"), "run_requests", ["run_id"], unique=False)
    op.create_index(
        "ix_run_requests_status_project_id", "run_requests", ["status", "project_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_run_requests_status_project_id", table_name="run_requests")
    op.drop_index(op.f("ix_run_requests_run_id"), table_name="run_requests")
    op.drop_table("run_requests")
    op.drop_column("agent_runs", "wait_allowance_seconds")
    op.drop_column("agent_runs", "waiting_since")
