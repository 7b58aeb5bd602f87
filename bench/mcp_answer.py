"""Answer → run resumed: how long after a person's answer is stored the agent's waiting `ask`
call returns (issue #18).

The control plane's real routes serve on loopback, on the embedded default (SQLite); a run is
claimed by the real dispatcher (its token issued) and marked running. Each round a client sends
the platform MCP `tools/call ask` as Codex does (one streamable-HTTP POST with the run token),
waits until the question is stored, then answers it through the service the Inbox calls, and
measures from the answer's commit to the tool call's HTTP response.

Two ways of waiting are measured: `woken`, as `codexk8s serve` runs it (the notification hub runs
in the server's loop: the answer's commit wakes the waiting call, which otherwise reads its row
every `WATCHED_POLL_SECONDS`), and `polling`, the fallback without a hub in the loop (the row is
read every `POLL_SECONDS`). Rows read per waiting call and second are counted too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.routing import Mount

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codexk8s import urls
from codexk8s.db.engine import get_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.services import notifications, run_requests
from codexk8s.services.run_states import RUNS
from codexk8s.web.http.app import build_http_app
from tests.agent.conftest import claim, create_run
from tests.conftest import reset_caches, serve_in_thread

RESULTS = Path(__file__).resolve().parent / "results" / "mcp_answer.json"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}


def pending_id(run_id: int) -> int | None:
    with get_engine().connect() as connection:
        return connection.execute(
            sa.select(run_requests.REQUESTS.c.id).where(
                run_requests.REQUESTS.c.run_id == run_id,
                run_requests.REQUESTS.c.status == "pending",
            )
        ).scalar()


READS = {"count": 0}
_check_request = run_requests.check_request


def _counted_check(*args: object, **kwargs: object) -> object:
    READS["count"] += 1
    return _check_request(*args, **kwargs)  # type: ignore[arg-type]


run_requests.check_request = _counted_check  # type: ignore[assignment]


def with_hub(app: Starlette) -> Starlette:
    """APP with the notification hub running in its loop, as the served dashboard has it."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with notifications.get_hub().running():
            yield

    return Starlette(routes=[Mount("/", app)], lifespan=lifespan)


def one_round(url: str, token: str, run_id: int, n: int) -> tuple[float, float]:
    """Seconds from the answer to the call's return, and rows read per second of waiting."""
    returned: dict[str, float] = {}

    def call() -> None:
        response = httpx.post(
            url,
            json={"jsonrpc": "2.0", "id": n, "method": "tools/call",
                  "params": {"name": "ask", "arguments": {"question": f"Question {n}?"}}},
            headers={**HEADERS, "Authorization": f"Bearer {token}"}, timeout=60,
        )  # fmt: skip
        returned["at"] = time.perf_counter()
        if response.status_code != 200 or response.json()["result"].get("isError"):
            raise SystemExit(f"round {n}: {response.text}")

    caller = threading.Thread(target=call)
    caller.start()
    while (request_id := pending_id(run_id)) is None:
        time.sleep(0.01)
    reads, since = READS["count"], time.perf_counter()
    # A person answers at any moment of the call's polling loop.
    time.sleep(random.uniform(2.0, 2.0 + run_requests.POLL_SECONDS))
    waited, read = time.perf_counter() - since, READS["count"] - reads
    run_requests.answer_request(
        get_engine(), principal=None, request_id=request_id, answer=f"answer {n}", by="bench"
    )
    answered = time.perf_counter()
    caller.join()
    return returned["at"] - answered, read / waited


def measure(app: Starlette, rounds: int, issue: int) -> dict[str, float]:
    with serve_in_thread(app) as base:
        claimed = claim(create_run(issue=issue), base)
        with get_engine().begin() as connection:
            connection.execute(
                RUNS.update().where(RUNS.c.id == claimed.run_id).values(status="running")
            )
        url = base + urls.API_AGENT_MCP.format(run_id=claimed.run_id)
        results = [one_round(url, claimed.token, claimed.run_id, n) for n in range(rounds)]
    ms = sorted(seconds * 1000 for seconds, _ in results)
    return {
        "rounds": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
        "row_reads_per_second": round(statistics.mean(rate for _, rate in results), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codexk8s-mcp-") as tmp:
        root = Path(tmp)
        os.environ.update({
            "CODEXK8S_DATA_DIR": str(root / "data"),
            "CODEXK8S_DATABASE_URL": f"sqlite:///{root / 'codexk8s.db'}",
            "CODEXK8S_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "CODEXK8S_OPENAI_API_KEY": "sk-bench-not-used",
        })  # fmt: skip
        reset_caches()
        upgrade_to_head(os.environ["CODEXK8S_DATABASE_URL"])
        figures = {
            "poll_ms": run_requests.POLL_SECONDS * 1000,
            "watched_poll_ms": run_requests.WATCHED_POLL_SECONDS * 1000,
            "woken": measure(with_hub(build_http_app()), args.rounds, issue=1),
            "polling": measure(build_http_app(), args.rounds, issue=2),
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
