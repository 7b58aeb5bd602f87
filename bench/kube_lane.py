"""Latency of runs through a real Kubernetes control plane (the kube lane), and their API calls.

Starts what the kube lane starts (etcd, kube-apiserver, controller manager, scheduler, kwok
nodes; built by tools/kube/build.sh), a private PostgreSQL and a loopback GitHub, then the
control loop with the product's own timings, authenticated as deploy/rbac's ServiceAccount. RUNS
labelled issues are sent one after another through webhook ingest; a watch as admin records when
each run's Job appears and when its pod turns Running; then the pod exits 0 and the run must
succeed before the next label. Prints, and writes to bench/results/kube_lane.json:

- label → Job created and label → pod Running, p50 / p95 / max (ms);
- label → run succeeded once the pod exits (ms, p50 / p95);
- Kubernetes API requests per run by verb and resource (launch to cleanup), as the client sent
  them (codexk8s_kubernetes_api_calls_total).

    .venv/bin/python bench/kube_lane.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402

from codexk8s import metrics  # noqa: E402
from codexk8s.adapters.github.webhooks import sign  # noqa: E402
from codexk8s.crypto import get_secret_box  # noqa: E402
from codexk8s.db.engine import get_engine, session_scope  # noqa: E402
from codexk8s.db.migrations import upgrade_to_head  # noqa: E402
from codexk8s.jobs.control_loop import ControlLoopTimings  # noqa: E402
from codexk8s.services import (  # noqa: E402
    agents,
    notifications,
    projects,
    reconcile,
    repositories,
    users,
)
from codexk8s.services.installation import installation_id  # noqa: E402
from codexk8s.services.webhook_ingest import WebhookRequest, ingest_github_delivery  # noqa: E402
from tests.conftest import reset_caches  # noqa: E402
from tests.github_server import running_github  # noqa: E402
from tests.kube.cluster import running_cluster  # noqa: E402
from tests.kube.control_loop_process import make_control_loop, make_runtime  # noqa: E402
from tests.kube.lane import deploy_control_plane_identity  # noqa: E402
from tests.servers import bench_postgres, fresh_database  # noqa: E402
from tests.webhook_examples import example, with_labels  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "kube_lane.json"
SECRET = "bench-webhook-secret"
TOKEN = "ghp_benchkubelane00000000000000000000001"
REPOSITORY = "Codertocat/Hello-World"
IMAGE = "registry.invalid/codexk8s-agent:bench"


class Arrivals:
    """Admin watches of Jobs and pods: when each run's Job appeared, when its pod ran."""

    def __init__(self, api: client.ApiClient, selector: str) -> None:
        self.job_seen: dict[int, float] = {}
        self.pod_running: dict[int, float] = {}
        self.pods: dict[int, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_jobs, args=(api, selector), daemon=True),
            threading.Thread(target=self._watch_pods, args=(api, selector), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _watch_jobs(self, api: client.ApiClient, selector: str) -> None:
        batch = client.BatchV1Api(api)
        while not self._stop.is_set():
            for event in watch.Watch().stream(
                batch.list_job_for_all_namespaces, label_selector=selector, timeout_seconds=5
            ):
                run_id = int(event["object"].metadata.labels["codexk8s.io/run-id"])
                self.job_seen.setdefault(run_id, time.monotonic())

    def _watch_pods(self, api: client.ApiClient, selector: str) -> None:
        core = client.CoreV1Api(api)
        while not self._stop.is_set():
            for event in watch.Watch().stream(
                core.list_pod_for_all_namespaces, label_selector=selector, timeout_seconds=5
            ):
                pod = event["object"]
                run_id = int(pod.metadata.labels["codexk8s.io/run-id"])
                if pod.status.phase == "Running":
                    self.pod_running.setdefault(run_id, time.monotonic())
                    self.pods[run_id] = (pod.metadata.namespace, pod.metadata.name)

    def stop(self) -> None:
        self._stop.set()


def label(number: int) -> int:
    payload = with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
    payload["issue"]["number"] = number
    payload["issue"]["updated_at"] = f"2026-12-03T10:{number // 60 % 60:02d}:{number % 60:02d}Z"
    body = json.dumps(payload).encode()
    outcome = ingest_github_delivery(
        engine=get_engine(), box=get_secret_box(), global_secret=None,
        request=WebhookRequest(
            delivery_id=str(uuid.uuid4()), event="issues", signature=sign(SECRET, body),
            content_type="application/json", body=body,
        ),
    )  # fmt: skip
    (run_id,) = outcome.runs
    return run_id


def wait_for(what: str, check: Any, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def status_of(run_id: int) -> str:
    with get_engine().connect() as connection:
        return str(
            connection.exec_driver_sql(
                "SELECT status FROM agent_runs WHERE id = %s", (run_id,)
            ).scalar_one()
        )


def has_succeeded(run_id: int) -> bool:
    return status_of(run_id) == "succeeded"


def calls() -> dict[str, float]:
    found: dict[str, float] = {}
    for family in metrics.REGISTRY.collect():
        if family.name == "codexk8s_kubernetes_api_calls":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = f"{sample.labels['verb']} {sample.labels['resource']}"
                    found[key] = sample.value
    return found


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def measure(cluster: Any, runs: int) -> dict[str, Any]:
    # As in `serve`: the notification hub runs beside the control loop (PostgreSQL LISTEN/NOTIFY
    # here).
    hub = notifications.get_hub()
    async with hub.running(notifications.transport_for(redis_url=None, engine=get_engine())):
        return await _measure(cluster, runs)


async def _measure(cluster: Any, runs: int) -> dict[str, Any]:
    runtime = make_runtime()
    control_loop = make_control_loop(runtime, ControlLoopTimings())  # the product's own intervals
    await control_loop.start()
    admin = cluster.admin_client()
    arrivals = Arrivals(admin, f"codexk8s.io/installation={installation_id(get_engine())}")
    before = calls()
    labelled: dict[int, float] = {}
    succeeded: dict[int, float] = {}
    try:
        for number in range(runs):
            started = time.monotonic()
            run_id = await asyncio.to_thread(label, 2000 + number)
            labelled[run_id] = started
            pod_of = functools.partial(arrivals.pods.get, run_id)
            await asyncio.to_thread(wait_for, f"run {run_id}'s pod", pod_of)
            namespace, pod = arrivals.pods[run_id]
            await asyncio.to_thread(cluster.exit_pod, namespace, pod, 0)
            done = functools.partial(has_succeeded, run_id)
            await asyncio.to_thread(wait_for, f"run {run_id} to succeed", done)
            succeeded[run_id] = time.monotonic()
        await reconcile.cleanup_runtimes(
            engine=get_engine(), runtime=runtime, older_than=timedelta(0)
        )
    finally:
        arrivals.stop()
        await control_loop.stop()
        runtime.close()
    after = calls()
    per_run = {
        key: round((after[key] - before.get(key, 0)) / runs, 2)
        for key in sorted(after)
        if after[key] - before.get(key, 0)
    }
    return {
        "runs": runs,
        "label_to_job_created": percentiles(
            [arrivals.job_seen[r] - t for r, t in labelled.items()]
        ),
        "label_to_pod_running": percentiles(
            [arrivals.pod_running[r] - t for r, t in labelled.items()]
        ),
        "exit_to_run_succeeded_incl_label_to_exit": percentiles(
            [succeeded[r] - t for r, t in labelled.items()]
        ),
        "api_requests_per_run": per_run,
        "api_requests_per_run_total": round(sum(per_run.values()), 1),
    }


def prepare(admin_url: str, work: Path, kubeconfig: Path, github_url: str) -> None:
    database_url = fresh_database(admin_url, "codexk8s_bench_kube_lane")
    for key, value in {
        "DATABASE_URL": database_url, "SECRET_KEY": "bench-secret-key-0123456789",
        "DATA_DIR": str(work / "data"), "RUNTIME": "kubernetes", "KUBECONFIG": str(kubeconfig),
        "AGENT_IMAGE": IMAGE, "PUBLIC_URL": "https://codexk8s.bench.test",
        "GITHUB_API_URL": github_url, "LOG_LEVEL": "warning",
    }.items():  # fmt: skip
        os.environ[f"CODEXK8S_{key}"] = value
    reset_caches()
    upgrade_to_head(database_url)
    with session_scope() as session:
        projects.create_project(session=session, key="bench", slots=4)
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="bench",
            full_name=REPOSITORY, webhook_secret=SECRET, token=TOKEN,
        )  # fmt: skip
        # The captured payloads' sender labels the issues: a member who may start runs.
        users.add_user(session=session, email="codertocat@bench.example", github_login="Codertocat")
        projects.add_member(
            session=session, project_key="bench", email="codertocat@bench.example",
            role="read_write",
        )  # fmt: skip
        agents.set_agent(
            session=session, key="dev", image=IMAGE, command="codexk8s agent run",
            engine="process",
        )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--admin-url", default=None, help="default: a private PostgreSQL")
    args = parser.parse_args()
    total = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="codexk8s-bench-kube-") as tmp,
        bench_postgres(args.admin_url) as admin_url,
        running_github() as github,
        running_cluster(Path(tmp) / "cluster") as cluster,
    ):
        work = Path(tmp)
        github.add_repo(REPOSITORY, token=TOKEN)
        kubeconfig = deploy_control_plane_identity(cluster, work)
        prepare(admin_url, work, kubeconfig, github.base_url)
        result = asyncio.run(measure(cluster, args.runs))
        result["cluster_startup_s"] = round(cluster.startup_seconds, 1)
        result["kubernetes"] = cluster.version
    result["bench_s"] = round(time.monotonic() - total, 1)
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
