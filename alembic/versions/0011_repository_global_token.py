"""repository global token

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00.000000

A repository without a token of its own used CODEXK8S_GITHUB_TOKEN, whoever attached it, so a
read_write member could aim the platform's token at any repository. Now only repositories a
platform admin (or the operator at the command line) attached or allowed may fall back to it.

Existing rows: the audit trail says who attached each one (its newest `repository_added`
event). A token-less repository keeps the global token when that was the command line (no actor)
or someone who is an owner or admin now; every other one loses it, and its runs fail with a
precondition until it gets a token of its own or a platform admin allows it
(`codexk8s repo allow-global-token OWNER/NAME`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _attached_by(bind: sa.Connection) -> dict[str, str | None]:
    """owner/name → the actor id of its newest `repository_added` event."""
    latest: dict[str, str | None] = {}
    rows = bind.execute(
        sa.text(
            "SELECT actor_id, payload FROM flow_events WHERE event_type = 'repository_added' "
            "ORDER BY id"
        )
    )
    for actor_id, payload in rows:
        data = json.loads(payload) if isinstance(payload, str) else payload
        name = data.get("repository") if isinstance(data, dict) else None
        if isinstance(name, str):
            latest[name.lower()] = actor_id
    return latest


def upgrade() -> None:
    # A plain ADD COLUMN that keeps its server default: any batch step (dropping the default
    # afterwards included) copies the table on SQLite, and dropping the old `repositories` with
    # foreign keys on would cascade into runs, feedback and redeliveries.
    op.add_column(
        "repositories",
        sa.Column("global_token_allowed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    bind = op.get_bind()
    admins = {
        email
        for (email,) in bind.execute(
            sa.text("SELECT email FROM users WHERE role IN ('owner', 'admin')")
        )
    }
    attached_by = _attached_by(bind)
    allowed = [
        repository_id
        for repository_id, owner, name in bind.execute(
            sa.text("SELECT id, owner, name FROM repositories WHERE token_ciphertext IS NULL")
        )
        if f"{owner}/{name}" in attached_by
        and (attached_by[f"{owner}/{name}"] is None or attached_by[f"{owner}/{name}"] in admins)
    ]
    if allowed:
        bind.execute(
            sa.text("UPDATE repositories SET global_token_allowed = :yes WHERE id IN :ids")
            .bindparams(sa.bindparam("ids", expanding=True))
            .bindparams(yes=True),
            {"ids": allowed},
        )


def downgrade() -> None:
    op.drop_column("repositories", "global_token_allowed")
