"""Migrations build exactly the models' schema, identically on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
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
    "installation", "run_log_chunks", "run_model_responses", "webhook_body_hashes",
    "agent_sessions", "run_requests",
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


def test_each_database_gets_its_own_installation_id(tmp_path: Path) -> None:
    from codexk8s.services.installation import installation_id

    ids = []
    for name in ("one", "two"):
        url, engine = _sqlite_engine(tmp_path / name)
        migrations.upgrade_to_head(url)
        ids.append(installation_id(engine))
        assert installation_id(engine) == ids[-1]  # stable
        engine.dispose()
    assert ids[0] != ids[1]
    assert all(len(value) == 32 for value in ids)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_0008_counts_the_bytes_of_logs_stored_before_it(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A run still writing when the cap arrives must not get a fresh byte budget."""
    from alembic import command

    url = (
        request.getfixturevalue("empty_pg_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'old.db'}"
    )
    command.upgrade(migrations.alembic_config(url), "0007")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO projects (id, key, name, settings, created_at, updated_at)"
            " VALUES (1, 'p', 'P', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ))  # fmt: skip
        for run_id in (1, 2):
            connection.execute(sa.text(
                "INSERT INTO agent_runs (id, correlation_id, project_id, agent_key, stage, status,"
                " is_revise, learning_mode, attempt, log_sequence, created_at, tokens_input,"
                " tokens_cached, tokens_output, tokens_reasoning, cost_usd) VALUES (:id, :c, 1,"
                " 'dev', 'dev', 'running', false, false, 1, :n, CURRENT_TIMESTAMP, 0, 0, 0, 0, 0)"
            ), {"id": run_id, "c": f"c{run_id}", "n": 2 if run_id == 1 else 0})  # fmt: skip
        for sequence, line in ((1, "héllo"), (2, "")):
            connection.execute(sa.text(
                "INSERT INTO run_logs (run_id, sequence, stream, line, ts)"
                " VALUES (1, :s, 'stdout', :l, CURRENT_TIMESTAMP)"
            ), {"s": sequence, "l": line})  # fmt: skip
    migrations.upgrade_to_head(url)
    with engine.connect() as connection:
        counted = connection.execute(
            sa.text("SELECT id, log_bytes, log_storage FROM agent_runs ORDER BY id")
        ).all()
        kept = connection.execute(sa.text("SELECT count(*) FROM run_logs")).scalar_one()
    assert [tuple(row) for row in counted] == [(1, 8, "rows"), (2, 0, "rows")]  # "héllo\n" + "\n"
    # The lines themselves survive (a table copy on SQLite would have cascaded them away), and
    # so they do going back down.
    assert kept == 2
    command.downgrade(migrations.alembic_config(url), "0007")
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM run_logs")).scalar_one() == 2
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_every_migration_keeps_the_data_of_a_populated_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """From 0006 to head and back, with foreign keys on (as the app connects): no step may copy
    and drop a table others cascade from (SQLite's batch mode does), losing runs, logs or
    feedback on the way."""
    from alembic import command

    url = (
        request.getfixturevalue("empty_pg_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'populated.db'}"
    )
    config = migrations.alembic_config(url)
    command.upgrade(config, "0006")
    engine = make_engine(url)
    statements = [
        "INSERT INTO projects (id, key, name, settings, created_at, updated_at)"
        " VALUES (1, 'p', 'P', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        "INSERT INTO repositories (id, project_id, provider, owner, name, services_yaml_path,"
        " created_at, updated_at) VALUES"
        " (1, 1, 'github', 'o', 'r', 'services.yaml', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        "INSERT INTO agent_runs (id, correlation_id, project_id, repository_id, issue_number,"
        " agent_key, stage, status, is_revise, learning_mode, attempt, log_sequence, tokens_input,"
        " tokens_cached, tokens_output, tokens_reasoning, cost_usd, created_at)"
        " VALUES (1, 'c1', 1, 1, 7, 'dev', 'dev', 'succeeded', false, false, 1, 2, 0, 0, 0, 0, 0,"
        " CURRENT_TIMESTAMP)",
        "INSERT INTO run_logs (run_id, sequence, stream, line, ts) VALUES"
        " (1, 1, 'stdout', 'one', CURRENT_TIMESTAMP), (1, 2, 'stdout', 'two', CURRENT_TIMESTAMP)",
        "INSERT INTO github_feedback (repository_id, issue_number, attempts, updated_at)"
        " VALUES (1, 7, 0, CURRENT_TIMESTAMP)",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()

    def counts() -> dict[str, int]:
        counted = make_engine(url)
        with counted.connect() as connection:
            found = {
                table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608 (fixed names)
                for table in ("agent_runs", "run_logs", "github_feedback", "repositories")
            }
            found["linked"] = connection.execute(
                sa.text("SELECT count(*) FROM agent_runs WHERE repository_id = 1")
            ).scalar_one()
        counted.dispose()
        return found

    kept = {"agent_runs": 1, "run_logs": 2, "github_feedback": 1, "repositories": 1, "linked": 1}
    assert counts() == kept
    command.upgrade(config, "head")
    assert counts() == kept
    command.downgrade(config, "0006")
    assert counts() == kept
