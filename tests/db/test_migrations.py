"""Migrations build exactly the models' schema, identically on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import codexk8s.db.models  # noqa: F401
from codexk8s.db import migrations
from codexk8s.db.engine import make_engine

EXPECTED_TABLES = {
    "users", "projects", "project_members", "repositories", "agents", "prompt_templates",
    "webhook_deliveries", "agent_runs", "slots", "flow_events", "run_logs", "learning_feedback",
    "api_tokens", "sessions", "signin_links", "github_feedback", "github_redeliveries",
    "run_model_responses", "webhook_body_hashes",
}  # fmt: skip


def _diff(engine: sa.Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, SQLModel.metadata)


def _snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns, keys and indexes in a dialect-neutral form."""
    inspector = sa.inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": sorted((c["name"], c["nullable"]) for c in inspector.get_columns(table)),
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
                # PostgreSQL reports the indexes behind unique constraints too.
                if not i.get("duplicates_constraint")
            ),
            "fks": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    (f.get("options") or {}).get("ondelete"),
                )
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return schema


def _sqlite_engine(tmp_path: Path) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    return url, make_engine(url)


def test_postgres_migrations_match_models(empty_pg_url: str) -> None:
    migrations.upgrade_to_head(empty_pg_url)
    engine = make_engine(empty_pg_url)
    assert _diff(engine) == []
    assert migrations.current_revision(engine) == migrations.head_revision()
    assert set(sa.inspect(engine).get_table_names()) >= EXPECTED_TABLES
    engine.dispose()


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    url, engine = _sqlite_engine(tmp_path)
    migrations.upgrade_to_head(url)
    assert _diff(engine) == []
    assert set(sa.inspect(engine).get_table_names()) >= EXPECTED_TABLES


def test_same_schema_on_sqlite_and_postgres(empty_pg_url: str, tmp_path: Path) -> None:
    sqlite_url, sqlite_engine = _sqlite_engine(tmp_path)
    migrations.upgrade_to_head(sqlite_url)
    migrations.upgrade_to_head(empty_pg_url)
    pg_engine = make_engine(empty_pg_url)
    sqlite_schema, pg_schema = _snapshot(sqlite_engine), _snapshot(pg_engine)
    assert set(sqlite_schema) == EXPECTED_TABLES
    assert sqlite_schema == pg_schema
    pg_engine.dispose()


def test_second_migrate_is_a_no_op(empty_pg_url: str) -> None:
    migrations.upgrade_to_head(empty_pg_url)
    engine = make_engine(empty_pg_url)
    before = _snapshot(engine)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.begin() as connection:
        migrations_config = migrations.alembic_config(empty_pg_url)
        migrations_config.attributes["connection"] = connection
        from alembic import command

        command.upgrade(migrations_config, "head")
    ddl = [
        s
        for s in statements
        if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE"))
    ]
    assert ddl == []
    assert _snapshot(engine) == before
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def test_unique_and_lookup_indexes_exist(empty_pg_url: str) -> None:
    migrations.upgrade_to_head(empty_pg_url)
    engine = make_engine(empty_pg_url)
    schema = _snapshot(engine)
    engine.dispose()
    assert ("uq_webhook_deliveries_delivery_id", ("delivery_id",)) in schema["webhook_deliveries"][
        "unique"
    ]
    assert ("uq_agent_runs_correlation_id", ("correlation_id",)) in schema["agent_runs"]["unique"]
    run_indexes = {name for name, _cols, _u in schema["agent_runs"]["indexes"]}
    assert "ix_agent_runs_project_id_status_created_at" in run_indexes
    event_indexes = {cols for _n, cols, _u in schema["flow_events"]["indexes"]}
    assert ("correlation_id", "created_at") in event_indexes
    slot_indexes = {cols for _n, cols, _u in schema["slots"]["indexes"]}
    assert ("project_id", "state") in slot_indexes
    assert ("uq_run_logs_run_id_sequence", ("run_id", "sequence")) in schema["run_logs"]["unique"]
