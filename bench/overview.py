"""Benchmark the Overview figures with 100,000 runs, on PostgreSQL and on SQLite.

Bulk-inserts 100,000 runs over 20 projects (a third of them in the 14-day window, statuses,
stages, agents, durations, tokens and costs spread evenly) into a fresh PostgreSQL database
`codexk8s_bench_overview` (dropped and recreated at start) and into a temporary SQLite file, then
times `services.overview.build_overview` for a platform admin (every project) and for a member of
two projects (median of `--repeat` runs, time.perf_counter). Results go to
bench/results/overview.json.

Run: `.venv/bin/python bench/overview.py [--runs 100000] [--repeat 5]`
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session

from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import AgentRun, Project, Slot
from codexk8s.services.overview import build_overview

# The benchmarks start their own PostgreSQL (tests/servers.py) unless --admin-url names one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import bench_postgres

DB = "codexk8s_bench_overview"
STAGES = ["plan", "dev", "qa", "doc-audit", "release"]
AGENTS = ["em", "dev", "qa", "km", "em"]
STATUSES = ["succeeded"] * 7 + ["failed", "canceled", "running", "pending"]


def _fill(url: str, runs: int) -> None:
    upgrade_to_head(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    rng = random.Random(7)
    projects = sa.insert(Project.__table__)  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(
            projects,
            [{"key": f"p{i:02d}", "name": f"P{i}", "settings": {"slots": 4},
              "created_at": now, "updated_at": now} for i in range(1, 21)],
        )  # fmt: skip
        connection.execute(
            sa.insert(Slot.__table__),  # type: ignore[attr-defined]
            [{"project_id": p, "number": n, "state": "leased" if n == 1 else "free"}
             for p in range(1, 21) for n in range(1, 5)],
        )  # fmt: skip
        batch = []
        for i in range(runs):
            # A third in the window, the rest spread over the year before it.
            age = timedelta(days=rng.uniform(0, 14) if i % 3 == 0 else rng.uniform(14, 365))
            status = STATUSES[i % len(STATUSES)]
            created = now - age
            finished = status in ("succeeded", "failed", "canceled")
            kind = i % len(STAGES)
            batch.append({
                "correlation_id": f"bench-{i}", "project_id": 1 + i % 20,
                "agent_key": AGENTS[kind], "stage": STAGES[kind], "status": status,
                "created_at": created,
                "started_at": created + timedelta(seconds=5) if status != "pending" else None,
                "finished_at": created + timedelta(seconds=rng.uniform(30, 3600))
                if finished else None,
                "tokens_input": rng.randint(1000, 100000), "tokens_output": rng.randint(100, 9000),
                "tokens_cached": 0, "tokens_reasoning": 0,
                "cost_usd": Decimal(rng.randint(1, 5000)) / 1000,
                "is_revise": False, "learning_mode": False, "attempt": 1, "log_sequence": 0,
            })  # fmt: skip
            if len(batch) == 5000:
                connection.execute(sa.insert(AgentRun.__table__), batch)  # type: ignore[attr-defined]
                batch = []
        if batch:
            connection.execute(sa.insert(AgentRun.__table__), batch)  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    engine.dispose()


def _time(url: str, repeat: int) -> dict[str, float]:
    engine = make_engine(url)
    results = {}
    for label, ids in (("platform admin", None), ("member of 2 projects", [1, 2])):
        timings = []
        for _ in range(repeat):
            with Session(engine) as session:
                start = time.perf_counter()
                figures = build_overview(session=session, project_ids=ids)
                timings.append(time.perf_counter() - start)
        assert figures.has_runs and figures.window_runs > 0
        results[label] = round(statistics.median(timings) * 1000, 1)
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--admin-url", default=None, help="default: a private PostgreSQL")
    args = parser.parse_args()
    with bench_postgres(args.admin_url) as admin_url:
        run(args, admin_url)


def run(args: argparse.Namespace, admin_url: str) -> None:
    url = make_url(admin_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname="postgres", autocommit=True,
    ) as c:  # fmt: skip
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")  # type: ignore[arg-type]
        c.execute(f"CREATE DATABASE {DB}")  # type: ignore[arg-type]
    pg_url = url.set(database=DB).render_as_string(hide_password=False)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite:///{Path(folder) / 'bench.db'}"
        for name, url in (("postgresql", pg_url), ("sqlite", sqlite_url)):
            _fill(url, args.runs)
            results[name] = _time(url, args.repeat)
            print(f"{name:10s} {args.runs:,} runs: " + ", ".join(
                f"{who} {ms} ms" for who, ms in results[name].items()))  # fmt: skip
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "overview.json").write_text(
        json.dumps({"runs": args.runs, "median_ms": results}, indent=2)
    )


if __name__ == "__main__":
    main()
