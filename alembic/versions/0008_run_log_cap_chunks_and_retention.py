"""run log cap, compacted chunks and retention

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 09:00:00.000000

`agent_runs` counts what a run's log stored and dropped after the per-run cap, says where its
lines are (`log_storage`: rows, chunks, removing, removed) and when retention removed them;
`run_log_chunks` holds finished logs compacted into compressed chunks of about 1,000 lines.
Runs that already have lines get their stored bytes counted here (one pass over `run_logs`), so
a run still writing keeps within the byte cap after the upgrade.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Bytes a stored line counts against the cap: its UTF-8 text and a newline.
BACKFILL_BYTES = {
    "postgresql": (
        "UPDATE agent_runs SET log_bytes = (SELECT coalesce(sum(octet_length(line) + 1), 0)"
        " FROM run_logs WHERE run_id = agent_runs.id) WHERE log_sequence > 0"
    ),
    "sqlite": (
        "UPDATE agent_runs SET log_bytes = (SELECT coalesce(sum(length(CAST(line AS BLOB)) + 1),"
        " 0) FROM run_logs WHERE run_id = agent_runs.id) WHERE log_sequence > 0"
    ),
}


def _counter(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite a batch would copy agent_runs and drop the
    # old table, and with foreign keys on that drop deletes every run's logs (ON DELETE
    # CASCADE). Constant defaults keep ADD COLUMN possible there.
    for name in ("log_bytes", "log_dropped_lines", "log_dropped_bytes"):
        op.add_column("agent_runs", _counter(name))
    op.add_column(
        "agent_runs",
        sa.Column(
            "log_storage", sa.String(length=16), server_default=sa.text("'rows'"), nullable=False
        ),
    )
    op.add_column("agent_runs", sa.Column("log_removed_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_agent_runs_log_storage_finished_at", "agent_runs", ["log_storage", "finished_at"]
    )
    op.create_table(
        "run_log_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["agent_runs.id"],
            name=op.f("fk_run_log_chunks_run_id_agent_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_log_chunks")),
        sa.UniqueConstraint(
            "run_id", "first_sequence", name=op.f("uq_run_log_chunks_run_id_first_sequence")
        ),
    )
    op.execute(BACKFILL_BYTES[op.get_bind().dialect.name])


def downgrade() -> None:
    # Compacted logs exist only as chunks: dropping the table would lose them silently.
    if op.get_bind().execute(sa.text("SELECT 1 FROM run_log_chunks LIMIT 1")).first():
        raise RuntimeError(
            "run_log_chunks holds compacted logs; downgrading below 0008 would delete them"
        )
    op.drop_table("run_log_chunks")
    op.drop_index("ix_agent_runs_log_storage_finished_at", table_name="agent_runs")
    # DROP COLUMN without a table copy (SQLite 3.35+), for the same reason as in upgrade().
    for name in ("log_removed_at", "log_storage", "log_dropped_bytes", "log_dropped_lines",
                 "log_bytes"):  # fmt: skip
        op.drop_column("agent_runs", name)
