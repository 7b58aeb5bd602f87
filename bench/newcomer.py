"""Benchmark a newcomer's first live run: `git clone` → `make run` ready → `make demo` → the demo
run's log lines streaming in Chromium.

Clones this repository (the local checkout by default; pass `--source URL` for a remote) into a
fresh folder, runs `make run` there on a free port with `CODEXK8S_OWNER_EMAIL` set, waits for
`/readyz` and the dashboard's first page, runs `make demo`, opens the printed sign-in link in
Chromium and waits for the first log line and then for the run's last line to be shown. Each
step's wall time and the total go to bench/results/newcomer.json.

What a newcomer's machine already has counts: with a warm uv and npm cache (this project's
tools installed once before), `make setup` takes seconds; on a cold machine it downloads the
Python packages, Node and bun first. The report says which: `--cold` empties
UV_CACHE_DIR / npm cache for the run (into a temporary folder), so nothing is reused.

Run: `.venv/bin/python bench/newcomer.py [--source PATH_OR_URL] [--cold]`
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers import free_port, stop_process_group, wait_for_http  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default=str(ROOT))
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="codexk8s-newcomer-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEXK8S_", "VIRTUAL_ENV"))}
    env.update(CODEXK8S_PORT=str(port), CODEXK8S_OWNER_EMAIL="newcomer@example.com")
    if args.cold:
        env.update(UV_CACHE_DIR=str(work / "uv-cache"), npm_config_cache=str(work / "npm-cache"))
    steps: dict[str, float] = {}
    server: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        checkout = work / "codexk8s"
        subprocess.run(["git", "clone", "-q", args.source, str(checkout)], check=True)
        steps["git clone"] = time.monotonic() - started

        mark = time.monotonic()
        log = (work / "make-run.log").open("wb")
        server = subprocess.Popen(
            ["make", "run"], cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/readyz", timeout=900)
        wait_for_http(base + "/", timeout=900)
        steps["make run → ready"] = time.monotonic() - mark

        mark = time.monotonic()
        demo = subprocess.run(
            ["make", "demo"], cwd=checkout, env=env, capture_output=True, text=True, timeout=300,
            check=True,
        )  # fmt: skip
        link = re.search(r"(http://\S+/auth/link/\S+)", demo.stdout)
        assert link, demo.stdout + demo.stderr
        steps["make demo"] = time.monotonic() - mark

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            mark = time.monotonic()
            page.goto(link.group(1))
            page.locator("[data-testid=log-lines] [data-seq='1']").wait_for(timeout=120_000)
            steps["browser: first streamed line"] = time.monotonic() - mark
            page.get_by_text("summary:").first.wait_for(timeout=120_000)
            steps["browser: run's last line"] = time.monotonic() - mark
            browser.close()
        total = time.monotonic() - started
        to_first_line = (
            total - steps["browser: run's last line"] + steps["browser: first streamed line"]
        )
    finally:
        if server is not None:
            stop_process_group(server, timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "source": args.source,
        "cold_caches": args.cold,
        "steps_seconds": {k: round(v, 1) for k, v in steps.items()},
        "clone_to_first_streamed_line_seconds": round(to_first_line, 1),
        "clone_to_finished_demo_run_seconds": round(total, 1),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "newcomer.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
