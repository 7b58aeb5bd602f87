"""run model responses

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:00:00.000000

The model proxy records the ids of the responses each run creates, and lets a run read or cancel
only those (a response id of another run, or a guess, is not forwarded with the key).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_model_responses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("response_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["agent_runs.id"],
            name=op.f("fk_run_model_responses_run_id_agent_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_model_responses")),
        sa.UniqueConstraint(
            "run_id", "response_id", name=op.f("uq_run_model_responses_run_id_response_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("run_model_responses")
