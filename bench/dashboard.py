"""Benchmark the live dashboard in Chromium against `codexk8s serve` (production build).

Measurements (DESIGN §12, issue #7):
  (1) webhook POST → its row visible in an open Runs page, p50/p95 over N deliveries
      (target p95 < 1 s);
  (4) Runs page first paint with 100,000 runs in the database (target < 1 s).

(2) log line → visible on its run page and (3) the run page with 100,000 log lines are measured
by bench/run_page.py. Results go to bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s import urls
from codexk8s.crypto import SecretBox
from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.services import agent_runs, projects, repositories, sessions, users
from codexk8s.services.agent_runs import RunFilters

# The benchmarks start their own PostgreSQL (tests/servers.py) unless --admin-url names one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import bench_postgres, fresh_database, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"
EXAMPLES = ROOT / ".tools/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip
SECRET_KEY = "bench-secret-key-0123456789abcdef"
WEBHOOK_SECRET = "bench-webhook-secret"
SENDER, SENDER_EMAIL = "Codertocat", "codertocat@bench.example"
OWNER_EMAIL = "bench-owner@example.com"
PROJECT_KEY = "bench"
REPOSITORY = "bench-org/app"
# Not in the migrations yet (see docs/benchmarks.md); `--with-proposed-indexes` adds them to the
# bench database to show what they change.
PROPOSED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_agent_runs_created_at_id ON agent_runs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_agent_runs_project_id_created_at_id "
    "ON agent_runs (project_id, created_at, id)",
)
TARGET_WEBHOOK_P95_S = 1.0
TARGET_FIRST_PAINT_S = 1.0

# True once the row for issue NUMBER is in the table.
ROW_VISIBLE_JS = """(number) => [...document.querySelectorAll('[data-testid="run-target"]')]
    .some((cell) => cell.textContent.startsWith('#' + number))"""


@dataclass
class BenchContext:
    """What every measurement gets: the served app, its database and a signed-in browser."""

    base_url: str
    db_url: str
    engine: Engine
    browser: Browser
    storage_state: dict[str, Any]
    args: argparse.Namespace

    def new_page(self) -> Page:
        context = self.browser.new_context(storage_state=self.storage_state)  # type: ignore[arg-type]
        return context.new_page()

    def post_labeled_issue(self, number: int, title: str) -> int:
        """A signed `issues.labeled run:dev` delivery for issue NUMBER; the HTTP status."""
        payload = labeled_payload(number, title)
        body = json.dumps(payload, separators=(",", ":")).encode()
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            self.base_url + urls.WEBHOOK_GITHUB,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": signature,
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)


@dataclass
class Figures:
    """One measurement's result: named samples (seconds) plus free-form notes."""

    name: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self.notes}
        for key, values in self.samples.items():
            out[key] = {
                "n": len(values),
                "p50_ms": round(percentile(values, 50) * 1000, 1),
                "p95_ms": round(percentile(values, 95) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1),
            }
        return out


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def labeled_payload(number: int, title: str) -> dict[str, Any]:
    index = json.loads(EXAMPLES.read_text())
    examples = next(entry["examples"] for entry in index if entry["name"] == "issues")
    payload = next(p for p in examples if p.get("action") == "labeled")
    label = {"id": 1, "node_id": "L", "url": "", "color": "ededed", "default": False,
             "description": None, "name": "run:dev"}  # fmt: skip
    owner, name = REPOSITORY.split("/")
    payload["repository"].update(full_name=REPOSITORY, name=name)
    payload["repository"]["owner"]["login"] = owner
    payload["issue"].update(number=number, title=title, labels=[label])
    payload["label"] = label
    return payload


# --- the measurements ------------------------------------------------------------------------


def measure_webhook_to_runs_row(ctx: BenchContext) -> Figures:
    """(1) POST a delivery, then wait (requestAnimationFrame polling) for its row."""
    figures = Figures("webhook → row visible on an open Runs page")
    page = ctx.new_page()
    page.goto(ctx.base_url + urls.RUNS)
    page.wait_for_selector('[data-testid="empty-state"], [data-testid="runs-table"]')
    post_times, visible = [], []
    for n in range(ctx.args.deliveries):
        number = 100_000 + n
        started = time.perf_counter()
        status = ctx.post_labeled_issue(number, f"Bench issue {n}")
        posted = time.perf_counter()
        if status not in (200, 201, 202):
            raise RuntimeError(f"webhook answered {status}")
        page.wait_for_function(ROW_VISIBLE_JS, arg=number, polling="raf", timeout=30_000)
        visible.append(time.perf_counter() - started)
        post_times.append(posted - started)
        time.sleep(ctx.args.pause)
    figures.samples = {"post_answered": post_times, "row_visible": visible}
    figures.notes["target"] = f"p95 < {TARGET_WEBHOOK_P95_S * 1000:.0f} ms"
    figures.notes["met"] = percentile(visible, 95) < TARGET_WEBHOOK_P95_S
    page.context.close()
    return figures


def seed_runs(engine: Engine, count: int) -> None:
    """COUNT runs over ten projects (the bench project one of them), one a second apart."""
    with engine.begin() as connection:
        for k in range(9):
            connection.execute(
                sa.text(
                    "INSERT INTO projects (key, name, settings, created_at, updated_at) "
                    "VALUES (:k, :k, '{}', now(), now()) ON CONFLICT (key) DO NOTHING"
                ),
                {"k": f"bench-{k}"},
            )
        connection.execute(
            sa.text(
                """
                INSERT INTO agent_runs (correlation_id, project_id, issue_number, issue_title,
                    agent_key, stage, status, created_at, started_at, finished_at, is_revise,
                    learning_mode, attempt, tokens_input, tokens_cached, tokens_output,
                    tokens_reasoning, cost_usd, log_sequence)
                SELECT md5('seed' || i), p.ids[1 + i % array_length(p.ids, 1)], i,
                       'Seeded issue ' || i, 'dev', (ARRAY['dev','plan','qa'])[1 + i % 3],
                       (ARRAY['succeeded','failed','canceled','running','pending'])[1 + i % 5],
                       now() - interval '2 days' - (i || ' seconds')::interval,
                       now() - interval '2 days' - (i || ' seconds')::interval,
                       now() - interval '2 days' - (i || ' seconds')::interval
                           + interval '95 seconds',
                       false, false, 1, 0, 0, 0, 0, 0, 0
                FROM generate_series(1, :count) AS i,
                     (SELECT array_agg(id ORDER BY id) AS ids FROM projects) AS p
                """
            ),
            {"count": count},
        )
        connection.execute(sa.text("ANALYZE agent_runs"))


def explain_first_page(engine: Engine) -> dict[str, Any]:
    """The plan and time of the Runs page's first query as a platform admin sees it."""
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(sa.text("SELECT id FROM projects"))]
        query = agent_runs.search_query(project_ids=ids, filters=RunFilters(), limit=26)
        sql = str(
            query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
        plan = [row[0] for row in connection.execute(sa.text("EXPLAIN ANALYZE " + sql))]
    return {
        "execution": next((line.strip() for line in plan if "Execution Time" in line), ""),
        "scans": sorted({line.strip().split("  (")[0].lstrip("-> ") for line in plan
                         if "Scan" in line and "agent_runs" in line}),
    }  # fmt: skip


def measure_runs_page_first_paint(ctx: BenchContext) -> Figures:
    """(4) With 100,000 runs stored: from navigation to the first row painted, and the
    browser's first contentful paint (the frame and skeleton)."""
    figures = Figures("Runs page first paint with many runs")
    print(f"  seeding {ctx.args.runs:,} runs")
    seed_runs(ctx.engine, ctx.args.runs)
    if ctx.args.with_proposed_indexes:
        with ctx.engine.begin() as connection:
            for statement in PROPOSED_INDEXES:
                connection.execute(sa.text(statement))
            connection.execute(sa.text("ANALYZE agent_runs"))
        figures.notes["proposed_indexes"] = True
    figures.notes["runs_in_database"] = ctx.args.runs + ctx.args.deliveries
    figures.notes["first_page_query"] = explain_first_page(ctx.engine)
    first_row, fcp = [], []
    for _ in range(ctx.args.loads):
        page = ctx.new_page()
        started = time.perf_counter()
        page.goto(ctx.base_url + urls.RUNS, wait_until="commit")
        page.wait_for_selector('[data-testid="run-row"]', timeout=30_000)
        first_row.append(time.perf_counter() - started)
        paint = page.evaluate(
            "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
        )
        if paint is not None:
            fcp.append(float(paint) / 1000)
        page.context.close()
    figures.samples = {"first_row_painted": first_row, "first_contentful_paint": fcp}
    figures.notes["target"] = f"< {TARGET_FIRST_PAINT_S * 1000:.0f} ms"
    figures.notes["met"] = percentile(first_row, 50) < TARGET_FIRST_PAINT_S
    return figures


MEASUREMENTS: list[tuple[str, Callable[[BenchContext], Figures]]] = [
    ("webhook_to_row", measure_webhook_to_runs_row),
    ("runs_page_100k_runs", measure_runs_page_first_paint),
]


# --- setup -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_database(admin_url: str, db_name: str) -> str:
    if not db_name.replace("_", "").isalnum():
        sys.exit(f"bad database name {db_name!r}")
    url = fresh_database(admin_url, db_name)
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            users.add_user(session=session, email=OWNER_EMAIL, role="owner")
            projects.create_project(session=session, key=PROJECT_KEY, name="Bench")
            repositories.add_repository(
                session=session, box=SecretBox(SECRET_KEY), project_key=PROJECT_KEY,
                full_name=REPOSITORY,
            )  # fmt: skip
            # The captured payloads' sender labels the issues: a member who may start runs.
            users.add_user(session=session, email=SENDER_EMAIL, github_login=SENDER)
            projects.add_member(
                session=session, project_key=PROJECT_KEY, email=SENDER_EMAIL, role="read_write"
            )
            session.commit()
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def served(db_url: str, workdir: Path) -> Iterator[str]:
    """`codexk8s serve` as `make run` starts it (production build), engine off: the bench
    measures the path from ingest to the browser, not agent launches."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATABASE_URL=db_url, CODEXK8S_SECRET_KEY=SECRET_KEY,
        CODEXK8S_DATA_DIR=str(workdir / "data"), CODEXK8S_GITHUB_WEBHOOK_SECRET=WEBHOOK_SECRET,
        CODEXK8S_PUBLIC_URL=base_url, CODEXK8S_ENGINE_ENABLED="false",
    )  # fmt: skip
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            for path in ("/healthz", "/"):
                while True:
                    try:
                        with urllib.request.urlopen(base_url + path, timeout=5) as answer:
                            if answer.status == 200:
                                break
                    except OSError:
                        pass
                    if process.poll() is not None or time.monotonic() > deadline:
                        sys.exit("serve did not come up:\n" + log_path.read_text()[-3000:])
                    time.sleep(0.5)
            yield base_url
        finally:
            stop_process_group(process)


def signed_in_state(browser: Browser, base_url: str, engine: Engine) -> dict[str, Any]:
    token = sessions.create_signin_link(engine, email=OWNER_EMAIL)
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base_url}/auth/link/{token}")
    page.wait_for_selector('[data-testid="signed-in-as"]')
    state = context.storage_state()
    context.close()
    return dict(state)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=50, help="webhooks for (1)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between deliveries")
    parser.add_argument("--runs", type=int, default=100_000, help="runs seeded for (4)")
    parser.add_argument("--loads", type=int, default=10, help="page loads measured for (4)")
    parser.add_argument(
        "--admin-url",
        default=None,
        help="PostgreSQL URL on which the bench database may be dropped and created",
    )
    parser.add_argument("--db-name", default="codexk8s_bench_dashboard")
    parser.add_argument(
        "--with-proposed-indexes", action="store_true",
        help="add PROPOSED_INDEXES to the bench database before measuring (4)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=[name for name, _ in MEASUREMENTS],
        help="run only these measurements (repeatable)",
    )  # fmt: skip
    return parser.parse_args()


def run(args: argparse.Namespace, admin_url: str) -> int:
    print(f"preparing database {args.db_name}")
    db_url = prepare_database(admin_url, args.db_name)
    engine = make_engine(db_url)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="codexk8s-bench-") as tmp, served(
        db_url, Path(tmp)
    ) as base_url, sync_playwright() as playwright:  # fmt: skip
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = BenchContext(
            base_url=base_url, db_url=db_url, engine=engine, browser=browser,
            storage_state=signed_in_state(browser, base_url, engine), args=args,
        )  # fmt: skip
        for name, measure in MEASUREMENTS:
            if args.only and name not in args.only:
                continue
            print(f"measuring {name}")
            summary = measure(ctx).summary()
            results.append(summary)
            print(json.dumps(summary, indent=2, default=str))
        browser.close()
    engine.dispose()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    document = {"measured_at": measured_at, "results": results}
    RESULTS.write_text(json.dumps(document, indent=2, default=str))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def main() -> int:
    args = parse_args()
    with bench_postgres(args.admin_url) as admin_url:
        return run(args, admin_url)


if __name__ == "__main__":
    sys.exit(main())
