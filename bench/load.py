"""Load on one replica: many concurrent local runs printing fast, with webhooks and a viewer.

`codexk8s serve` (production build, local runtime, PostgreSQL) gets `--runs` labelled issues at
once over its real webhook endpoint (spread over projects of at most 50 slots, so every run gets
a slot); each run's agent prints `--rate` lines a second for `--seconds` seconds, each line
carrying the time it was printed. While they stream:

- lines stored per second (the sum of the runs' stored sequences, sampled every 2 s);
- log line → browser: one run's page is open in Chromium; a MutationObserver records when each
  line first shows up anywhere in the page (p50 / p95 of shown minus printed);
- webhook ingest under load: a delivery that starts nothing (a label that is no trigger) every
  0.2 s, timed from request to answer (p50 / p99);
- dispatch latency: each run's creation → start (p50 / p95 / max);
- CPU: user + system seconds of the server's process tree, of PostgreSQL's and of the whole
  machine (runs, supervisors, the browser), over the streaming window, as cores in use;
- how far storage is behind printing: lines printed but not stored yet, in seconds of output
  per running run (mean and max over the samples);
- database size before and after.

Writes bench/results/load.json.

    .venv/bin/python bench/load.py [--runs 200] [--rate 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from playwright.sync_api import sync_playwright
from sqlalchemy.engine import make_url
from sqlmodel import Session

from codexk8s import urls
from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.services import agents, projects, repositories, sessions, users

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers import (  # noqa: E402
    bench_postgres,
    free_port,
    fresh_database,
    stop_process_group,
    wait_for_http,
)
from tests.webhook_examples import example, with_labels  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "load.json"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
WEBHOOK_SECRET = "bench-load-webhook-secret"
REPOSITORY = "bench-org/bench-load"
OWNER = "bench-owner@example.com"
CHROMIUM = "/usr/bin/chromium"
SLOTS_PER_PROJECT = 50

AGENT = """
import sys, time
rate, seconds, tag = {rate}, {seconds}, sys.argv[1] if len(sys.argv) > 1 else "x"
start = time.time()
n = 0
while n < rate * seconds:
    n += 1
    print(f"load {{n}} {{time.time():.6f}} " + "x" * 60, flush=True)
    time.sleep(max(0.0, start + n / rate - time.time()))
"""

OBSERVER = """
window.__seen = {};
new MutationObserver((mutations) => {
  const now = Date.now();
  for (const mutation of mutations) {
    for (const node of mutation.addedNodes) {
      const text = node.textContent || '';
      for (const found of text.matchAll(/load (\\d+) (\\d+\\.\\d+)/g)) {
        if (!(found[1] in window.__seen)) window.__seen[found[1]] = [now, parseFloat(found[2])];
      }
    }
  }
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def prepare(admin_url: str, runs: int, agent_command: str) -> tuple[str, list[str]]:
    db_url = fresh_database(admin_url, "codexk8s_bench_load")
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    keys = [f"load{n}" for n in range((runs + SLOTS_PER_PROJECT - 1) // SLOTS_PER_PROJECT)]
    with Session(engine) as session:
        # The captured payloads' sender (who labels) is this owner: owners may start runs.
        users.add_user(session=session, email=OWNER, role="owner", github_login="Codertocat")
        for number, key in enumerate(keys):
            projects.create_project(session=session, key=key, slots=SLOTS_PER_PROJECT)
            repositories.add_repository(
                session=session, box=_box(), project_key=key,
                full_name=f"{REPOSITORY}-{number}", webhook_secret=WEBHOOK_SECRET,
            )  # fmt: skip
        agents.set_agent(session=session, key="dev", command=agent_command, engine="process")
        session.commit()
    engine.dispose()
    return db_url, keys


def _box() -> Any:
    from codexk8s.crypto import SecretBox

    return SecretBox(SECRET_KEY)


def serve(db_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATABASE_URL=db_url, CODEXK8S_SECRET_KEY=SECRET_KEY,
        CODEXK8S_DATA_DIR=str(data_dir), CODEXK8S_PUBLIC_URL=f"http://127.0.0.1:{port}",
        CODEXK8S_LOG_LEVEL="warning",
    )  # fmt: skip
    log = (data_dir / "serve.log").open("wb")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )  # fmt: skip


def post_webhook(base: str, repository: str, number: int, label: str) -> float:
    """One signed `issues.labeled` delivery; the seconds until its answer."""
    payload = with_labels(example("issues", "labeled"), "issue", [label], label)
    payload["issue"]["number"] = number
    payload["issue"]["updated_at"] = f"2026-12-03T12:00:00.{number:06d}Z"
    owner, name = repository.split("/")
    payload["repository"]["name"] = name
    payload["repository"]["full_name"] = repository
    payload["repository"]["owner"]["login"] = owner
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        base + urls.WEBHOOK_GITHUB, data=body, method="POST",
        headers={"Content-Type": "application/json", "X-GitHub-Event": "issues",
                 "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature},
    )  # fmt: skip
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"webhook answered {answer.status}")
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread(values: list[float], *fractions: float) -> dict[str, float]:
    return {f"p{round(f * 100)}_ms": round(percentile(values, f) * 1000, 1) for f in fractions} | {
        "max_ms": round(max(values) * 1000, 1),
        "count": len(values),
    }


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.system + getattr(times, "nice", 0.0))


def postgres_processes(port: int) -> list[psutil.Process]:
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if process.info.get("name") == "postgres" and f"{port}" in " ".join(cmdline):
            return tree(process)
    return []


class Sampler(threading.Thread):
    """Every 2 s: lines stored so far, and the CPU time of each group of processes."""

    def __init__(self, db_url: str, groups: dict[str, Any], rate: int, seconds: int) -> None:
        super().__init__(daemon=True)
        self.rate, self.seconds = rate, seconds
        self.db_url = db_url.replace("postgresql+psycopg://", "postgresql://")
        self.groups = groups
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as connection:
            while not self.stop.wait(2.0):
                stored = connection.execute(
                    "SELECT coalesce(sum(log_sequence), 0), count(*) FILTER (WHERE status ="
                    " 'running'), coalesce(sum(least(extract(epoch FROM now() - started_at)"
                    " * %s, %s) - log_sequence) FILTER (WHERE status = 'running'), 0)"
                    " FROM agent_runs",
                    (self.rate, self.rate * self.seconds),
                ).fetchone()
                assert stored is not None
                sample = {
                    "t": time.monotonic(), "lines": int(stored[0]), "running": stored[1],
                    # Lines printed but not stored yet, in seconds of output per running run.
                    "behind_s": float(stored[2]) / self.rate / stored[1] if stored[1] else 0.0,
                }  # fmt: skip
                for name, find in self.groups.items():
                    # The whole machine: runs, supervisors, the browser, everything.
                    sample[f"cpu_{name}"] = cpu_seconds(find()) if find else machine_busy_seconds()
                self.samples.append(sample)


def database_bytes(db_url: str) -> int:
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        found = connection.execute("SELECT pg_database_size(current_database())").fetchone()
        assert found is not None
        return int(found[0])


def dispatch_latencies(db_url: str) -> list[float]:
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        rows = connection.execute(
            "SELECT extract(epoch FROM started_at - created_at) FROM agent_runs"
            " WHERE started_at IS NOT NULL"
        ).fetchall()
    return [float(row[0]) for row in rows]


def measure(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    agent = f"{sys.executable} -c {shlex.quote(AGENT.format(rate=args.rate, seconds=args.seconds))}"
    db_url, _projects = prepare(admin_url, args.runs, agent)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pg_port = make_url(admin_url).port or 5432
    with tempfile.TemporaryDirectory(prefix="bench-load-") as folder:
        data_dir = Path(folder)
        server = serve(db_url, data_dir, port)
        try:
            print("building and starting the app (production mode)…", flush=True)
            wait_for_http(base + urls.HEALTHZ, timeout=900)
            wait_for_http(base + "/", timeout=900)
            size_before = database_bytes(db_url)
            server_tree = psutil.Process(server.pid)
            groups = {
                "server": lambda: tree(server_tree),
                "postgres": lambda: postgres_processes(pg_port),
                "machine": None,
            }
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_init_script(OBSERVER)
                page = context.new_page()
                engine = make_engine(db_url)
                link = sessions.create_signin_link(engine, email=OWNER)
                engine.dispose()
                page.goto(f"{base}/auth/link/{link}")
                page.get_by_test_id("signed-in-as").wait_for(timeout=120_000)

                sampler = Sampler(db_url, groups, args.rate, args.seconds)
                sampler.start()
                started = time.monotonic()
                starting = [
                    post_webhook(base, f"{REPOSITORY}-{n // SLOTS_PER_PROJECT}", n + 1, "run:dev")
                    for n in range(args.runs)
                ]
                labelled_in = time.monotonic() - started
                print(f"{args.runs} runs labelled in {labelled_in:.1f}s", flush=True)
                # The run labelled last: it streams for the whole window after the page opens
                # (the first run may have ended before 200 were labelled).
                page.goto(base + urls.run_page(args.runs))
                page.get_by_test_id("run-title").wait_for(timeout=120_000)
                # Only lines printed once the page is open and following count: the older ones
                # were loaded, not pushed.
                opened = time.time() + 1.0
                idle: list[float] = []
                # At least 20 s of following, however long labelling took (at 200 runs, longer
                # than the runs' own minute on this machine).
                deadline = max(started + args.seconds + 15, time.monotonic() + 20)
                number = 100_000
                while time.monotonic() < deadline:
                    number += 1
                    idle.append(post_webhook(base, f"{REPOSITORY}-0", number, "question"))
                    time.sleep(0.2)
                seen = page.evaluate("window.__seen")
                browser.close()
            # Wait for the runs to end and every line to be stored.
            expected = args.runs * args.rate * args.seconds
            finish_by = time.monotonic() + args.seconds + 300
            while time.monotonic() < finish_by:
                if sampler.samples and sampler.samples[-1]["lines"] >= expected:
                    break
                time.sleep(2)
            sampler.stop.set()
            sampler.join()
            size_after = database_bytes(db_url)
            dispatch = dispatch_latencies(db_url)
        finally:
            stop_process_group(server, timeout=30)
    samples = sampler.samples
    stored = samples[-1]["lines"] if samples else 0
    busy = [s for s in samples if s["running"] > 0]
    window = (busy[-1]["t"] - busy[0]["t"]) if len(busy) > 1 else 0.0
    rates = [(b["lines"] - a["lines"]) / (b["t"] - a["t"]) for a, b in itertools.pairwise(samples)]
    cores = {
        name: round((busy[-1][f"cpu_{name}"] - busy[0][f"cpu_{name}"]) / window, 2)
        for name in groups
    } if window else {}  # fmt: skip
    shown = [seen_ms / 1000 - printed for seen_ms, printed in seen.values() if printed > opened]
    behind = [s["behind_s"] for s in samples if s["running"]]
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": args.runs,
        "lines_per_second_offered": args.runs * args.rate,
        "seconds": args.seconds,
        "lines_expected": expected,
        "lines_stored": stored,
        "lines_stored_per_second_peak": round(max(rates), 0) if rates else 0,
        "lines_stored_per_second_mean_while_running": round(
            (busy[-1]["lines"] - busy[0]["lines"]) / window, 0
        )
        if window
        else 0,
        "log_line_to_browser": spread(shown, 0.5, 0.95) if shown else None,
        "storage_behind_printing_s": {
            "mean": round(statistics.mean(behind), 2) if behind else None,
            "max": round(max(behind), 2) if behind else None,
        },
        "labelling_all_runs_s": round(labelled_in, 1),
        "webhook_starting_runs": spread(starting, 0.5, 0.99),
        "webhook_ingest_under_load": spread(idle, 0.5, 0.99),
        "dispatch_latency": spread(dispatch, 0.5, 0.95),
        "cores_in_use_while_streaming": cores,
        "database_bytes_before": size_before,
        "database_bytes_after": size_after,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rate", type=int, default=50, help="lines a second per run")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--admin-url", default=None, help="default: a private PostgreSQL")
    args = parser.parse_args()
    with bench_postgres(args.admin_url) as admin_url:
        result = measure(args, admin_url)
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
