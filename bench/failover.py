"""Leader failover: SIGKILL the leading replica while runs stream, and check what survives.

Two `codexk8s serve` replicas (production build) share a private PostgreSQL, a private Redis and
the local runtime's run folder. `--runs` labelled issues go to replica A's webhook endpoint; each
run's agent writes a marker (one per start) and prints `--lines` numbered lines over
`--seconds`. Once every run is running and lines are being stored, the replica holding the
leader lock (found through pg_locks and the lock session's client port) is killed with SIGKILL,
its whole process group, without a word. Measured and checked:

- time from the kill to the other replica holding the leader lock (and to its first stored line);
- every run succeeded (none lost or stuck), each started exactly once (markers), and each run's
  stored log is exactly lines 1..N in order (none lost or doubled).

Writes bench/results/failover.json.

    .venv/bin/python bench/failover.py [--runs 20] [--lines 400] [--seconds 40]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from sqlmodel import Session

from codexk8s import urls
from codexk8s.crypto import SecretBox
from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.jobs.control_loop import LEADER_LOCK_KEY
from codexk8s.services import agents, projects, repositories, users

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers import (  # noqa: E402
    bench_postgres,
    free_port,
    fresh_database,
    redis_server,
    stop_process_group,
    wait_for_http,
)
from tests.webhook_examples import example, with_labels  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "failover.json"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
WEBHOOK_SECRET = "bench-failover-webhook-secret"
REPOSITORY = "bench-org/bench-failover"
OWNER = "bench-owner@example.com"

AGENT = """
import os, sys, time, uuid
markers = {markers!r}
open(os.path.join(markers, os.environ["CODEXK8S_RUN_ID"] + "-" + uuid.uuid4().hex), "w").close()
count, seconds = {lines}, {seconds}
for n in range(1, count + 1):
    print(f"line {{n}}", flush=True)
    time.sleep(seconds / count)
"""


def prepare(admin_url: str, runs: int, agent_command: str) -> str:
    db_url = fresh_database(admin_url, "codexk8s_bench_failover")
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        # The captured payloads' sender (who labels) is this owner: owners may start runs.
        users.add_user(session=session, email=OWNER, role="owner", github_login="Codertocat")
        projects.create_project(session=session, key="failover", slots=runs)
        repositories.add_repository(
            session=session, box=SecretBox(SECRET_KEY), project_key="failover",
            full_name=REPOSITORY, webhook_secret=WEBHOOK_SECRET,
        )  # fmt: skip
        agents.set_agent(session=session, key="dev", command=agent_command, engine="process")
        session.commit()
    engine.dispose()
    return db_url


def serve(
    name: str, db_url: str, redis_url: str, shared: Path, own: Path, port: int
) -> subprocess.Popen[bytes]:
    own.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEXK8S_")}
    env.update(
        CODEXK8S_DATABASE_URL=db_url, CODEXK8S_SECRET_KEY=SECRET_KEY,
        CODEXK8S_REDIS_URL=f"{redis_url}/0", CODEXK8S_DATA_DIR=str(shared),
        CODEXK8S_PUBLIC_URL=f"http://127.0.0.1:{port}", CODEXK8S_LOG_LEVEL="warning",
        # One run folder for both (the survivor adopts the runs), a frontend build each.
        REFLEX_WEB_WORKDIR=str(own / "web"), REFLEX_STATES_WORKDIR=str(own / "states"),
    )  # fmt: skip
    log = (own / f"serve-{name}.log").open("wb")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )  # fmt: skip


def label(base: str, number: int) -> None:
    payload = with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
    payload["issue"]["number"] = number
    owner, name = REPOSITORY.split("/")
    payload["repository"].update(name=name, full_name=REPOSITORY)
    payload["repository"]["owner"]["login"] = owner
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        base + urls.WEBHOOK_GITHUB, data=body, method="POST",
        headers={"Content-Type": "application/json", "X-GitHub-Event": "issues",
                 "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def query(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        return list(connection.execute(sql, params).fetchall())  # type: ignore[arg-type]


def leader_port(db_url: str) -> int | None:
    """The client port of the session holding the leader's advisory lock."""
    rows = query(
        db_url,
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s",
        LEADER_LOCK_KEY,
    )
    return int(rows[0][0]) if rows else None


def owner_of(port: int, replicas: dict[str, subprocess.Popen[bytes]]) -> str | None:
    """Which replica's process tree has a socket bound to PORT."""
    for name, process in replicas.items():
        try:
            root = psutil.Process(process.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            try:
                if any(c.laddr and c.laddr.port == port for c in member.net_connections("tcp")):
                    return name
            except psutil.Error:
                continue
    return None


def wait_until(what: str, check: Any, limit: float) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def measure(args: argparse.Namespace, admin_url: str, redis_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as folder:
        root = Path(folder)
        markers = root / "markers"
        markers.mkdir()
        code = AGENT.format(markers=str(markers), lines=args.lines, seconds=args.seconds)
        db_url = prepare(admin_url, args.runs, f"{sys.executable} -c {shlex.quote(code)}")
        ports = {"a": free_port(), "b": free_port()}
        replicas = {
            name: serve(name, db_url, redis_url, root / "shared", root / name, port)
            for name, port in ports.items()
        }
        try:
            print("building and starting two replicas (production mode)…", flush=True)
            for port in ports.values():
                wait_for_http(f"http://127.0.0.1:{port}{urls.HEALTHZ}", timeout=900)
                wait_for_http(f"http://127.0.0.1:{port}/", timeout=900)
            for number in range(1, args.runs + 1):
                label(f"http://127.0.0.1:{ports['a']}", number)
            wait_until(
                "every run running with lines stored",
                lambda: (
                    query(
                        db_url,
                        "SELECT count(*) FROM agent_runs"
                        " WHERE status = 'running' AND log_sequence > 5",
                    )[0][0]
                    == args.runs
                ),
                limit=300,
            )
            leader = wait_until(
                "a leader", lambda: owner_of(leader_port(db_url) or -1, replicas), limit=30
            )
            survivor = "b" if leader == "a" else "a"
            stored_before = query(db_url, "SELECT sum(log_sequence) FROM agent_runs")[0][0]
            print(f"killing the leader, replica {leader}", flush=True)
            killed_at = time.monotonic()
            os.killpg(replicas[leader].pid, signal.SIGKILL)
            replicas[leader].wait()
            wait_until(
                "the survivor to lead",
                lambda: owner_of(leader_port(db_url) or -1, {survivor: replicas[survivor]}),
                limit=120,
            )
            led_after = time.monotonic() - killed_at
            wait_until(
                "lines stored again",
                lambda: (
                    query(db_url, "SELECT sum(log_sequence) FROM agent_runs")[0][0]
                    > stored_before + args.runs
                ),
                limit=120,
            )
            storing_after = time.monotonic() - killed_at
            wait_until(
                "every run to end",
                lambda: (
                    query(db_url, "SELECT count(*) FROM agent_runs WHERE status = 'succeeded'")[0][
                        0
                    ]
                    == args.runs
                    or query(
                        db_url,
                        "SELECT count(*) FROM agent_runs WHERE status IN ('failed','canceled')",
                    )[0][0]
                ),
                limit=args.seconds + 300,
            )
            statuses = dict(query(db_url, "SELECT status, count(*) FROM agent_runs GROUP BY 1"))
            starts: dict[int, int] = {}
            for marker in markers.iterdir():
                run_id = int(marker.name.split("-")[0])
                starts[run_id] = starts.get(run_id, 0) + 1
            wrong_logs = []
            for (run_id,) in query(db_url, "SELECT id FROM agent_runs ORDER BY id"):
                lines = [
                    row[0]
                    for row in query(
                        db_url,
                        "SELECT line FROM run_logs WHERE run_id = %s ORDER BY sequence",
                        run_id,
                    )
                ]
                if lines != [f"line {n}" for n in range(1, args.lines + 1)]:
                    wrong_logs.append({"run": run_id, "stored": len(lines)})
        finally:
            for process in replicas.values():
                if process.poll() is None:
                    stop_process_group(process, timeout=30)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": args.runs,
        "lines_per_run": args.lines,
        "killed": leader,
        "kill_to_new_leader_s": round(led_after, 2),
        "kill_to_lines_stored_again_s": round(storing_after, 2),
        "statuses": statuses,
        "runs_started_more_than_once": sorted(r for r, n in starts.items() if n > 1),
        "runs_never_started": sorted(set(range(1, args.runs + 1)) - set(starts)),
        "runs_with_lost_or_doubled_lines": wrong_logs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--admin-url", default=None, help="default: a private PostgreSQL")
    args = parser.parse_args()
    with bench_postgres(args.admin_url) as admin_url, redis_server() as redis_url:
        result = measure(args, admin_url, redis_url)
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        result["statuses"] == {"succeeded": args.runs}
        and not result["runs_started_more_than_once"]
        and not result["runs_never_started"]
        and not result["runs_with_lost_or_doubled_lines"]
    )
    print("no run lost, doubled or stuck; no line lost or doubled" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
