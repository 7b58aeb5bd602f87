"""conversation before code: run modes, service-comment notices, resumable agent sessions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00.000000

- `agent_runs.mode`: `work` (every run so far) or `discussion` (the agent answers on the issue).
- `github_feedback.notice`, `notice_at`, `notice_event_id`: the service comment explains a
  delivery that started nothing (a sender who may not start runs, conflicting labels).
- `agent_sessions`: the Codex session a succeeded run left, encrypted, for the next run of its
  lineage to resume.

Columns are added with plain ADD COLUMN: a batch copy would drop `agent_runs` (and
`github_feedback`) on SQLite, and with foreign keys on that drop deletes every run's logs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_runs",
        sa.Column(
            "mode",
            sqlmodel.sql.sqltypes.AutoString(length=16),
            nullable=False,
            server_default=sa.text("'work'"),
        ),
    )
    op.add_column("github_feedback", sa.Column("notice", sa.Text(), nullable=True))
    op.add_column(
        "github_feedback", sa.Column("notice_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("github_feedback", sa.Column("notice_event_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "agent_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("parent_session_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("raw_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("data_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_session_id"],
            ["agent_sessions.id"],
            name=op.f("fk_agent_sessions_parent_session_id_agent_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["agent_runs.id"],
            name=op.f("fk_agent_sessions_run_id_agent_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_sessions")),
        sa.UniqueConstraint("run_id", name=op.f("uq_agent_sessions_run_id")),
    )


def downgrade() -> None:
    op.drop_table("agent_sessions")
    # Plain DROP COLUMN (SQLite 3.35+), for the same reason as above.
    op.drop_column("github_feedback", "notice_event_id")
    op.drop_column("github_feedback", "notice_at")
    op.drop_column("github_feedback", "notice")
    op.drop_column("agent_runs", "mode")
