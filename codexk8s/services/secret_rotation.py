"""Re-encrypt every stored secret under the current CODEXK8S_SECRET_KEY (`codexk8s secrets rotate`).

Every `*_ciphertext` column of every table is covered, so secrets added by later tables are rotated
without touching this module. One transaction: the rows are locked, each value is opened with the
current key or one of the previous keys and written back under the current key; when any value
opens with none of them, nothing is written. Values already under the current key are left as they
are, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import codexk8s.db.models  # noqa: F401  (registers every table on SQLModel.metadata)
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.errors import PreconditionError

CIPHERTEXT_SUFFIX = "_ciphertext"


class RotationError(PreconditionError):
    """A stored secret opens with neither the current nor any previous key; nothing changed."""


@dataclass(slots=True)
class RotationResult:
    # "table.column" -> values re-encrypted under the current key
    rotated: dict[str, int] = field(default_factory=dict)
    already_current: int = 0

    @property
    def total_rotated(self) -> int:
        return sum(self.rotated.values())


def encrypted_columns() -> list[tuple[sa.Table, list[sa.Column]]]:
    """Each table holding ciphertext, with its ciphertext columns (sorted, for stable output)."""
    found = []
    for table in sorted(SQLModel.metadata.tables.values(), key=lambda t: t.name):
        columns = [c for c in table.columns if c.name.endswith(CIPHERTEXT_SUFFIX)]
        if columns:
            found.append((table, columns))
    return found


def _opens(box: SecretBox, ciphertext: str | bytes) -> bool:
    try:
        if isinstance(ciphertext, bytes):
            box.decrypt_bytes(ciphertext)
        else:
            box.decrypt(ciphertext)
    except DecryptionError:
        return False
    return True


def _rotate(box: SecretBox, ciphertext: str | bytes) -> str | bytes:
    if isinstance(ciphertext, bytes):
        return box.rotate_bytes(ciphertext)
    return box.rotate(ciphertext)


def rotate_secrets(engine: Engine, *, current_key: str, previous_keys: list[str]) -> RotationResult:
    """Re-encrypt every stored secret under CURRENT_KEY, reading with it or PREVIOUS_KEYS."""
    current_only = SecretBox(current_key)
    any_key = SecretBox(current_key, previous_keys)
    result = RotationResult()
    with engine.begin() as connection:
        for table, columns in encrypted_columns():
            (key,) = table.primary_key.columns
            query = sa.select(key).order_by(key)
            if connection.dialect.name == "postgresql":
                # Writers of these rows wait until the rotation commits.
                query = query.with_for_update()
            # The keys first, then one row at a time: a table of blobs (agent sessions, up to
            # megabytes each) never sits in memory whole.
            for (row_key,) in connection.execute(query).all():
                row = connection.execute(sa.select(key, *columns).where(key == row_key)).one()
                changes: dict[str, str | bytes] = {}
                for column in columns:
                    ciphertext = row._mapping[column]
                    if ciphertext is None:
                        continue
                    if _opens(current_only, ciphertext):
                        result.already_current += 1
                        continue
                    try:
                        changes[column.name] = _rotate(any_key, ciphertext)
                    except DecryptionError:
                        raise RotationError(
                            f"{table.name}.{column.name} of row {row._mapping[key]} opens with "
                            "neither CODEXK8S_SECRET_KEY nor any key in "
                            "CODEXK8S_SECRET_KEY_PREVIOUS; nothing was changed"
                        ) from None
                    name = f"{table.name}.{column.name}"
                    result.rotated[name] = result.rotated.get(name, 0) + 1
                if changes:
                    connection.execute(
                        table.update().where(key == row._mapping[key]).values(**changes)
                    )
    return result
