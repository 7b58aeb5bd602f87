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


def _counter(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("agent_runs") as batch:
        batch.add_column(_counter("log_bytes"))
        batch.add_column(_counter("log_dropped_lines"))
        batch.add_column(_counter("log_dropped_bytes"))
        batch.add_column(
            sa.Column(
                "log_storage", sa.String(length=16), server_default=sa.text("'rows'"),
                nullable=False,
            )
        )  # fmt: skip
        batch.add_column(sa.Column("log_removed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(
            "ix_agent_runs_log_storage_finished_at", ["log_storage", "finished_at"]
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
            ["run_id"], ["agent_runs.id"], name=op.f("fk_run_log_chunks_run_id_agent_runs"),
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_log_chunks")),
        sa.UniqueConstraint(
            "run_id", "first_sequence", name=op.f("uq_run_log_chunks_run_id_first_sequence")
        ),
    )
    octets = (
        "octet_length(line)"
        if op.get_bind().dialect.name == "postgresql"
        else "length(CAST(line AS BLOB))"
    )
    op.execute(
        "UPDATE agent_runs SET log_bytes = "
        f"(SELECT coalesce(sum({octets} + 1), 0) FROM run_logs WHERE run_id = agent_runs.id) "
        "WHERE log_sequence > 0"
    )


def downgrade() -> None:
    # Compacted logs exist only as chunks: dropping the table would lose them silently.
    if op.get_bind().execute(sa.text("SELECT 1 FROM run_log_chunks LIMIT 1")).first():
        raise RuntimeError(
            "run_log_chunks holds compacted logs; downgrading below 0008 would delete them"
        )
    op.drop_table("run_log_chunks")
    with op.batch_alter_table("agent_runs") as batch:
        batch.drop_index("ix_agent_runs_log_storage_finished_at")
        batch.drop_column("log_removed_at")
        batch.drop_column("log_storage")
        batch.drop_column("log_dropped_bytes")
        batch.drop_column("log_dropped_lines")
        batch.drop_column("log_bytes")
