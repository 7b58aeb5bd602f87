"""Benchmark the run page in Chromium against `codexk8s serve` (production build, local runtime).

(2) Log line → visible: a run whose agent prints `bench <n> <epoch seconds>` every `--interval`
    seconds is followed on its run page; a MutationObserver installed before the page loads
    records when each line's row first appears. Latency = first sight minus the time the process
    printed it (same machine, same clock): the whole path of process → local runtime → log pump
    → run_logs → page sync → render. p50/p95 over `--live-lines` lines (target p95 < 1 s).

(3) A run with `--lines` (100,000) stored lines: time from navigation start to interactive,
    i.e. the log's last line rendered and the page answering input (the "Older" button's window
    shown; target < 2 s), then a search over the whole log (submit to match shown), the longest
    main-thread task while loading, and the page's JS heap (CDP
    `Performance.getMetrics` JSHeapUsedSize, after a forced garbage collection), over
    `--opens` page loads.

The database `codexk8s_bench_runpage` is dropped, recreated and migrated at start. Results go to
bench/results/run_page.json.

Run: `.venv/bin/python bench/run_page.py [--lines 100000] [--live-lines 60] [--opens 5]`
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s import urls
from codexk8s.crypto import SecretBox
from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import AgentRun, utcnow
from codexk8s.domain.runtime import LogLine
from codexk8s.services import agents, projects, repositories, run_logs, run_start, sessions, users
from codexk8s.web.state.run import WINDOW

# The benchmarks start their own PostgreSQL (tests/servers.py) unless --admin-url names one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import bench_postgres, fresh_database, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "run_page.json"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
PROJECT_KEY = "bench"
REPOSITORY = "bench-org/bench-repo"
OWNER = "bench-owner@example.com"
CHROMIUM = "/usr/bin/chromium"
TARGET_LIVE_P95_S = 1.0
TARGET_TTI_S = 2.0

# Records when each log row first appears, before any page script runs.
OBSERVER = """
window.__seen = {};
new MutationObserver((mutations) => {
  const now = Date.now();
  for (const mutation of mutations) {
    for (const node of mutation.addedNodes) {
      if (node.nodeType !== 1) continue;
      const rows = node.matches('[data-seq]') ? [node] : node.querySelectorAll('[data-seq]');
      for (const row of rows) {
        if (!(row.dataset.seq in window.__seen)) {
          window.__seen[row.dataset.seq] = [now, row.textContent];
        }
      }
    }
  }
}).observe(document, {childList: true, subtree: true});
window.__longest_task = 0;
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      window.__longest_task = Math.max(window.__longest_task, entry.duration);
    }
  }).observe({type: 'longtask', buffered: true});
} catch (e) {}
"""

AGENT = """
import sys, time
time.sleep({delay})
for n in range(1, {count} + 1):
    print(f"bench {{n}} {{time.time():.6f}}", flush=True)
    time.sleep({interval})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database(admin_url: str, db_name: str, agent_code: str) -> str:
    db_url = fresh_database(admin_url, db_name)
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        users.add_user(session=session, email=OWNER, role="owner")
        projects.create_project(session=session, key=PROJECT_KEY, name="Bench", slots=4)
        repositories.add_repository(
            session=session, box=SecretBox(SECRET_KEY), project_key=PROJECT_KEY,
            full_name=REPOSITORY,
        )  # fmt: skip
        agents.set_agent(
            session=session, key="dev",
            command=f"{sys.executable} -c {shlex.quote(agent_code)}", engine="process",
        )  # fmt: skip
        session.commit()
    engine.dispose()
    return db_url


def big_run(engine: Engine, lines: int) -> int:
    """A finished run with LINES stored log lines (some coloured), written as the pump would."""
    with Session(engine) as session:
        project = projects.require_by_key(session=session, key=PROJECT_KEY)
        now = utcnow()
        run = AgentRun(
            correlation_id=f"bench-big-{time.time_ns()}", project_id=project.id or 0,
            issue_number=9999, agent_key="dev", stage="dev", status="succeeded",
            created_at=now, started_at=now, finished_at=now,
        )  # fmt: skip
        session.add(run)
        session.commit()
        run_id = run.id or 0
    stamp = datetime.now(UTC)
    done = 0
    while done < lines:
        batch = [
            LogLine(
                stream="stdout",
                line=(
                    f"\x1b[32mok\x1b[0m step {n}: compiled module_{n % 97}.py in {n % 13} ms"
                    if n % 10
                    else f"\x1b[1;31mwarning\x1b[0m at step {n}: slow"
                ),
                ts=stamp,
                cursor=str(n),
            )
            for n in range(done + 1, min(lines, done + 10_000) + 1)
        ]
        stored = run_logs.store_batch(engine, run_id=run_id, expected_sequence=done, lines=batch)
        assert stored is not None
        done = stored.sequence
    return run_id


def serve(db_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATABASE_URL=db_url, CODEXK8S_SECRET_KEY=SECRET_KEY,
        CODEXK8S_DATA_DIR=str(data_dir), CODEXK8S_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    log = (data_dir / "serve.log").open("wb")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )  # fmt: skip


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_live(page: Page, engine: Engine, base: str, count: int) -> dict[str, Any]:
    run_id = run_start.start_run(
        engine, project_key=PROJECT_KEY, repository=REPOSITORY, issue=1, stage="dev"
    )
    page.goto(base + urls.run_page(run_id))
    page.get_by_test_id("run-title").wait_for(timeout=120_000)
    page.wait_for_function(
        "count => Object.values(window.__seen)"
        ".filter(([, text]) => /bench \\d+ /.test(text)).length >= count",
        arg=count,
        timeout=120_000 + count * 2_000,
    )
    stale = [text for _, text in page.evaluate("Object.values(window.__seen)")
             if "bench" not in text]  # fmt: skip
    assert not stale, f"the page showed another run's lines: {stale[:3]}"
    seen: dict[str, list[Any]] = page.evaluate("window.__seen")
    latencies = []
    for seen_ms, text in seen.values():
        found = re.search(r"bench (\d+) (\d+\.\d+)", text)
        if found:
            latencies.append(seen_ms / 1000 - float(found.group(2)))
    assert len(latencies) == count, f"saw {len(latencies)} of {count} lines"
    return {
        "run_id": run_id, "lines": len(latencies),
        "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies), "min_s": min(latencies),
    }  # fmt: skip


def measure_open(page: Page, base: str, run_id: int, lines: int) -> dict[str, Any]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    started = time.perf_counter()
    page.goto(base + urls.run_page(run_id), wait_until="commit")
    page.locator(f'[data-testid=log-lines] [data-seq="{lines}"]').wait_for(timeout=60_000)
    rendered = time.perf_counter() - started
    # Interactive: the page answers input, shown by paging one window back (a server round trip).
    page.get_by_test_id("log-older").click()
    page.locator(f'[data-testid=log-lines] [data-seq="{lines - 2 * WINDOW + 1}"]').wait_for(
        timeout=60_000
    )
    interactive = time.perf_counter() - started
    # A search over the whole log, answered and its match shown.
    search_started = time.perf_counter()
    page.get_by_test_id("log-search").fill(f"step {lines // 2}:")
    page.get_by_test_id("log-search-submit").click()
    page.locator(f'[data-seq="{lines // 2}"] mark.log-match-current').wait_for(timeout=60_000)
    searched = time.perf_counter() - search_started
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    rows = page.locator("[data-testid=log-lines] [data-seq]").count()
    longest = page.evaluate("window.__longest_task")
    cdp.detach()
    return {
        "rendered_s": rendered, "interactive_s": interactive, "search_s": searched,
        "js_heap_used_mb": metrics["JSHeapUsedSize"] / 2**20,
        "js_heap_total_mb": metrics["JSHeapTotalSize"] / 2**20,
        "dom_nodes": int(metrics["Nodes"]), "rows_in_dom": rows, "longest_task_ms": longest,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=None, help="default: a private PostgreSQL")
    parser.add_argument("--db-name", default="codexk8s_bench_runpage")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--live-lines", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--opens", type=int, default=5)
    args = parser.parse_args()
    with bench_postgres(args.admin_url) as admin_url:
        run(args, admin_url)


def run(args: argparse.Namespace, admin_url: str) -> None:
    agent_code = AGENT.format(delay=4, count=args.live_lines, interval=args.interval)
    db_url = prepare_database(admin_url, args.db_name, agent_code)
    engine = make_engine(db_url)
    big = big_run(engine, args.lines)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-runpage-") as folder:
        process = serve(db_url, Path(folder), port)
        try:
            print("building and starting the app (production mode)…", flush=True)
            wait_for_http(base + urls.HEALTHZ, timeout=900)
            wait_for_http(base + "/", timeout=900)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--no-sandbox", "--disable-gpu", "--enable-precise-memory-info"],
                )
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_init_script(OBSERVER)
                page = context.new_page()
                page.goto(f"{base}/auth/link/{sessions.create_signin_link(engine, email=OWNER)}")
                page.get_by_test_id("signed-in-as").wait_for(timeout=120_000)
                page.goto(base + urls.run_page(big))  # warm: compile caches, first connect
                page.locator(f'[data-seq="{args.lines}"]').wait_for(timeout=120_000)
                opens = [measure_open(page, base, big, args.lines) for _ in range(args.opens)]
                live = measure_live(page, engine, base, args.live_lines)
                browser.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    engine.dispose()

    def median(key: str) -> float:
        return statistics.median(item[key] for item in opens)

    summary = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "live": live,
        "open": {
            "lines": args.lines,
            "rendered_s_median": median("rendered_s"),
            "interactive_s_median": median("interactive_s"),
            "interactive_s_max": max(item["interactive_s"] for item in opens),
            "search_s_median": median("search_s"),
            "js_heap_used_mb_median": median("js_heap_used_mb"),
            "longest_task_ms_max": max(item["longest_task_ms"] for item in opens),
            "rows_in_dom": opens[-1]["rows_in_dom"],
            "dom_nodes": opens[-1]["dom_nodes"],
            "samples": opens,
        },
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    o = summary["open"]
    print(
        f"(2) log line → visible, {live['lines']} lines: p50 {live['p50_s'] * 1000:.0f} ms, "
        f"p95 {live['p95_s'] * 1000:.0f} ms, max {live['max_s'] * 1000:.0f} ms "
        f"(target p95 < {TARGET_LIVE_P95_S * 1000:.0f} ms: "
        f"{'met' if live['p95_s'] < TARGET_LIVE_P95_S else 'MISSED'})"
    )
    print(
        f"(3) open a run with {args.lines:,} lines, {args.opens} loads: last line rendered "
        f"{o['rendered_s_median']:.2f} s, interactive {o['interactive_s_median']:.2f} s median "
        f"/ {o['interactive_s_max']:.2f} s max (target < {TARGET_TTI_S:.0f} s: "
        f"{'met' if o['interactive_s_max'] < TARGET_TTI_S else 'MISSED'}); JS heap "
        f"{o['js_heap_used_mb_median']:.1f} MB used; {o['rows_in_dom']} rows / "
        f"{o['dom_nodes']} DOM nodes; longest task {o['longest_task_ms_max']:.0f} ms"
    )
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
