"""Benchmark run-log storage: bytes on disk and read times for one 100,000-line log stored as rows
(one per line, as the pump writes them) and after compaction into chunks, on PostgreSQL and on
SQLite; and the compaction job's time for that log.

The log is made to look like an agent's: commands, compiler and test output with ANSI colours,
diffs, stack traces, the odd long JSON line; lengths from 0 to ~4,000 characters (seeded, so
every run builds the same log). One rare word appears on one line.

Sizes: PostgreSQL `pg_total_relation_size` (heap, TOAST and indexes) of `run_logs` before and of
`run_log_chunks` after (the emptied rows' space is reused by new rows once vacuumed, and given
back to the file system only by VACUUM FULL); SQLite: the database file, before and after
compaction plus VACUUM (without VACUUM the freed pages are reused by later writes).

Reads (median of --repeat): the run page's first window (the last 500 lines), a window in the
middle, a search for the rare word over the whole log (what the page's search does), and the
full plain-text download (`iter_text`, what `logs.txt` streams).

Run: `.venv/bin/python bench/log_storage.py [--lines 100000] [--repeat 5] [--admin-url URL]`.
Without --admin-url a throwaway PostgreSQL is started (Debian's server binaries). Results go
to bench/results/log_storage.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.db import log_chunks
from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import AgentRun
from codexk8s.domain.logs import LogLimits
from codexk8s.domain.runtime import LogLine
from codexk8s.services import log_maintenance, projects, run_logs

# The benchmarks start their own PostgreSQL (tests/servers.py) unless --admin-url names one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import bench_postgres, fresh_database

RESULTS = Path(__file__).resolve().parent / "results" / "log_storage.json"
RARE = "zebracorn"
COLOURS = ["\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[1;34m", "\x1b[2m"]
RESET = "\x1b[0m"
WORDS = [
    "build", "module", "import", "error", "warning", "test", "passed", "failed", "config",
    "value", "request", "response", "handler", "client", "server", "cache", "index", "query",
    "session", "token", "branch", "commit", "merge", "review", "function", "class", "method",
    "return", "yield", "await", "async", "context", "manager", "runtime",
]  # fmt: skip


def realistic_log(count: int, *, seed: int = 17) -> list[LogLine]:
    """COUNT lines an agent run might print, with one RARE word on one line."""
    rng = random.Random(seed)
    # A project has a few hundred tests and files: output repeats them, as real output does.
    files = ["/".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(60)]
    tests = [f"tests/{rng.choice(files)}.py::test_{rng.choice(WORDS)}_{rng.choice(WORDS)}"
             for _ in range(400)]  # fmt: skip
    stamp = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    lines: list[LogLine] = []
    rare_at = count * 3 // 4 + 17
    n = 0

    def add(text: str, stream: str = "stdout") -> None:
        nonlocal n, stamp
        n += 1
        stamp += timedelta(microseconds=rng.randint(50, 40_000))
        if n == rare_at:
            text += f" {RARE}"
        lines.append(LogLine(stream=stream, line=text, ts=stamp, cursor=str(n)))

    while n < count:
        kind = rng.random()
        if kind < 0.05:
            add(f"\x1b[1m$ {rng.choice(['pytest -q', 'npm run build', 'make lint', 'git diff'])}"
                f" --{rng.choice(WORDS)}{RESET}")  # fmt: skip
        elif kind < 0.35:
            colour = rng.choice(COLOURS)
            add(f"{colour}{rng.choice(['PASS', 'ok', 'FAIL', 'SKIP'])}{RESET} "
                f"{rng.choice(tests)} ({rng.randint(1, 900)} ms)")  # fmt: skip
        elif kind < 0.55:
            sign = rng.choice(["+", "-", " "])
            colour = {"+": "\x1b[32m", "-": "\x1b[31m", " ": ""}[sign]
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 14)))
            add(f"{colour}{sign}    {body}{RESET if colour else ''}")
        elif kind < 0.62:
            for depth in range(rng.randint(3, 8)):
                add(f'  File "/work/src/{rng.choice(files)}.py", line {rng.randint(1, 2000)},'
                    f" in {rng.choice(WORDS)}_{depth}", "stderr")  # fmt: skip
            add(f"{rng.choice(WORDS).title()}Error: {' '.join(rng.sample(WORDS, 6))}", "stderr")
        elif kind < 0.625:  # the odd long line: a JSON blob, a minified bundle warning
            fields = range(rng.randint(10, 150))
            add(json.dumps({f"{rng.choice(WORDS)}_{i}": rng.randint(0, 10**6) for i in fields}))
        elif kind < 0.70:
            add("")
        else:
            add(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 25))))
    return lines[:count]


# --- databases ------------------------------------------------------------------------------------


def fresh_postgres(admin_url: str, name: str) -> str:
    db_url = fresh_database(admin_url, name)
    upgrade_to_head(db_url)
    return db_url


def store(engine: Engine, lines: list[LogLine]) -> int:
    """A finished run with LINES stored the way the pump stores them (batches of 500)."""
    with Session(engine) as session:
        project = projects.create_project(session=session, key="bench")
        now = datetime.now(UTC)
        run = AgentRun(
            correlation_id="bench-log", project_id=project.id or 0, agent_key="dev",
            stage="dev", status="succeeded", created_at=now, started_at=now, finished_at=now,
        )  # fmt: skip
        session.add(run)
        session.commit()
        run_id = run.id or 0
    position = run_logs.LogPosition()
    limits = LogLimits(max_lines=10**9, max_bytes=10**12)
    for start in range(0, len(lines), 500):
        stored = run_logs.store_batch(
            engine, run_id=run_id, expected_sequence=position.sequence,
            lines=lines[start : start + 500], limits=limits,
        )  # fmt: skip
        assert stored is not None
        position = stored
    return run_id


def sizes(engine: Engine, sqlite_path: Path | None) -> dict[str, int]:
    if sqlite_path is not None:
        with engine.connect() as connection:  # everything into the main file, the WAL emptied
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = sqlite_path.with_name(sqlite_path.name + "-wal")
        return {"file": sqlite_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)}
    with engine.connect() as connection:
        connection.execute(sa.text("ANALYZE"))
        return {
            table: int(connection.execute(
                sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}
            ).scalar_one())
            for table in ("run_logs", "run_log_chunks")
        }  # fmt: skip


def timed(work: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of REPEAT calls (after one warm-up) and the last result."""
    result = work()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def reads(engine: Engine, run_id: int, total: int, repeat: int) -> tuple[dict[str, float], Any]:
    figures: dict[str, float] = {}
    outputs: dict[str, Any] = {}
    for name, work in {
        "first window (last 500 lines)": lambda: run_logs.read_lines(
            engine, run_id=run_id, after=total - 500, limit=500
        ),
        "window in the middle": lambda: run_logs.read_lines(
            engine, run_id=run_id, after=total // 2, limit=500
        ),
        "search for a rare word": lambda: run_logs.search(engine, run_id=run_id, needle=RARE),
        "full download": lambda: "".join(run_logs.iter_text(engine, run_id=run_id)),
    }.items():
        figures[name], outputs[name] = timed(work, repeat)
    return figures, outputs


def measure(
    engine: Engine, lines: list[LogLine], repeat: int, sqlite_path: Path | None
) -> dict[str, Any]:
    run_id = store(engine, lines)
    total = len(lines)
    before_size = sizes(engine, sqlite_path)
    before_reads, before_out = reads(engine, run_id, total, repeat)
    start = time.perf_counter()
    ticks = 0
    while log_maintenance.compact_logs(engine).lines:
        ticks += 1
    compaction = time.perf_counter() - start
    after_compaction = sizes(engine, sqlite_path)
    # What the emptied rows' space becomes once given back (PostgreSQL reuses it for new rows
    # after a plain VACUUM; VACUUM FULL, or VACUUM on SQLite, shrinks the files).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM" if sqlite_path else "VACUUM FULL run_logs"))
    after_size = sizes(engine, sqlite_path)
    after_reads, after_out = reads(engine, run_id, total, repeat)
    assert after_out == before_out, "compaction changed what a reader sees"
    hit = after_out["search for a rare word"]
    assert hit is not None and hit.count == 1
    with engine.connect() as connection:
        chunks = connection.execute(
            sa.text("SELECT count(*), sum(length(data)) FROM run_log_chunks")
        ).one()
    return {
        "sizes_before": before_size,
        "sizes_after_compaction": after_compaction,
        "sizes_after_vacuum": after_size,
        "reads_before_s": before_reads,
        "reads_after_s": after_reads,
        "compaction_s": compaction,
        "compaction_ticks": ticks,
        "chunks": int(chunks[0]),
        "chunk_bytes": int(chunks[1]),
    }


def codec_figures(lines: list[LogLine]) -> dict[str, Any]:
    """Chunk sizes and encode/decode times at three zlib levels, and how much of a full read
    decompression is (what a faster codec could save)."""
    stored = [run_logs.StoredLine(i + 1, line.stream, line.line, line.ts)
              for i, line in enumerate(lines)]  # fmt: skip
    groups = log_chunks.split(stored)
    text_bytes = sum(len(line.line.encode()) + 1 for line in lines)
    figures: dict[str, Any] = {"text_bytes": text_bytes, "levels": {}}
    original = log_chunks.LEVEL
    try:
        for level in (1, 6, 9):
            log_chunks.LEVEL = level
            start = time.perf_counter()
            blobs = [log_chunks.encode(group) for group in groups]
            encode = time.perf_counter() - start
            decode, _ = timed(
                lambda: [log_chunks.Chunk(g[0].sequence, b).lines()
                         for g, b in zip(groups, blobs, strict=True)],  # noqa: B023
                3,
            )  # fmt: skip
            inflate, _ = timed(lambda: [zlib.decompress(b[1:]) for b in blobs], 3)  # noqa: B023
            figures["levels"][level] = {
                "bytes": sum(len(blob) for blob in blobs), "encode_s": encode,
                "decode_s": decode, "inflate_s": inflate,
            }  # fmt: skip
    finally:
        log_chunks.LEVEL = original
    return figures


def kib(value: int) -> str:
    return f"{value / 1024:,.0f} KiB"


def report(results: dict[str, Any], count: int) -> None:
    codec = results["codec"]
    print(f"log: {count:,} lines, {codec['text_bytes'] / 1024 / 1024:.1f} MiB of text")
    for level, figures in codec["levels"].items():
        print(f"  zlib level {level}: {kib(figures['bytes'])} "
              f"(1:{codec['text_bytes'] / figures['bytes']:.1f}), encode "
              f"{figures['encode_s'] * 1000:.0f} ms, decode {figures['decode_s'] * 1000:.0f} ms "
              f"(inflate {figures['inflate_s'] * 1000:.0f} ms)")  # fmt: skip
    for backend in ("postgresql", "sqlite"):
        figures = results[backend]
        print(f"\n{backend}: {figures['chunks']} chunks, {kib(figures['chunk_bytes'])} of data")
        print(f"  on disk before: { {k: kib(v) for k, v in figures['sizes_before'].items()} }")
        print(f"  after compaction: "
              f"{ {k: kib(v) for k, v in figures['sizes_after_compaction'].items()} }")  # fmt: skip
        print(f"  after VACUUM: { {k: kib(v) for k, v in figures['sizes_after_vacuum'].items()} }")
        print(f"  compaction: {figures['compaction_s']:.2f} s "
              f"({count / figures['compaction_s']:,.0f} lines/s, "
              f"{figures['compaction_ticks']} ticks)")  # fmt: skip
        for name, seconds in figures["reads_before_s"].items():
            after = figures["reads_after_s"][name]
            print(f"  {name:32} rows {seconds * 1000:8.1f} ms   chunks {after * 1000:8.1f} ms")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--admin-url", default=None, help="a PostgreSQL server to use")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    lines = realistic_log(args.lines)
    results: dict[str, Any] = {"lines": args.lines, "codec": codec_figures(lines)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        upgrade_to_head(f"sqlite:///{path}")
        engine = make_engine(f"sqlite:///{path}")
        results["sqlite"] = measure(engine, lines, args.repeat, path)
        engine.dispose()
    with bench_postgres(args.admin_url) as admin_url:
        engine = make_engine(fresh_postgres(admin_url, "codexk8s_bench_logs"))
        results["postgresql"] = measure(engine, lines, args.repeat, None)
        engine.dispose()
    report(results, args.lines)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
