"""webhook body hashes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 11:00:00.000000

GitHub signs the body only, without a timestamp: a captured delivery re-sent under a new
X-GitHub-Delivery passed as new. Ingest now keeps the SHA-256 of every accepted body and refuses
the same body within 24 hours as a replay (its upsert is part of the delivery's own statement).
Deliveries from before have no hash: a replay of one of them is not recognised.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_body_hashes",
        sa.Column("body_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("delivery_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("body_sha256", name=op.f("pk_webhook_body_hashes")),
    )


def downgrade() -> None:
    op.drop_table("webhook_body_hashes")
