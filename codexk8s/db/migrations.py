"""Programmatic Alembic: apply migrations, report the current and head revisions."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from alembic import command

# The migrations live at the top of the source tree (alembic/), beside the package.
ALEMBIC_DIR = Path(__file__).resolve().parents[2] / "alembic"


class MigrationError(Exception):
    """Migrations cannot be found or applied."""


def alembic_config(url: str) -> Config:
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise MigrationError(f"alembic scripts not found at {ALEMBIC_DIR}")
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # A literal "%" in a password must not be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


@functools.cache
def head_revision() -> str | None:
    """The newest revision among the shipped scripts (fixed for the life of the process)."""
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise MigrationError(f"alembic scripts not found at {ALEMBIC_DIR}")
    return ScriptDirectory(str(ALEMBIC_DIR)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
