"""github feedback and redeliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 12:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # New tables are plain CREATE TABLE; the new run column goes through batch mode for SQLite.
    op.create_table(
        "github_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("comment_id", sa.BigInteger(), nullable=True),
        sa.Column("body_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_github_feedback_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_feedback")),
        sa.UniqueConstraint(
            "repository_id",
            "issue_number",
            name=op.f("uq_github_feedback_repository_id_issue_number"),
        ),
    )
    op.create_table(
        "github_redeliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("guid", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_github_redeliveries_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_redeliveries")),
        sa.UniqueConstraint("guid", name=op.f("uq_github_redeliveries_guid")),
    )
    op.create_index(
        op.f("ix_github_redeliveries_repository_id"),
        "github_redeliveries",
        ["repository_id"],
        unique=False,
    )
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_event_id", sa.BigInteger(), nullable=True))
    # Runs that exist before GitHub feedback did count as reported: upgrading must not post
    # comments on every old issue.
    op.execute(
        "UPDATE agent_runs SET reported_event_id = "
        "(SELECT max(flow_events.id) FROM flow_events WHERE flow_events.run_id = agent_runs.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.drop_column("reported_event_id")
    op.drop_index(op.f("ix_github_redeliveries_repository_id"), table_name="github_redeliveries")
    op.drop_table("github_redeliveries")
    op.drop_table("github_feedback")
