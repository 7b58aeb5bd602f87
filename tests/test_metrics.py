"""Prometheus metrics: /metrics over the real routes, webhook counters, the control loop's
histograms, the database collector and the Kubernetes API counters."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from codexk8s import metrics
from codexk8s.adapters.github.webhooks import sign
from codexk8s.adapters.kubernetes.client import ApiCaller, RetryPolicy
from codexk8s.db.engine import session_scope
from codexk8s.db.models import AgentRun, RunRequest, utcnow
from codexk8s.urls import METRICS, WEBHOOK_GITHUB
from codexk8s.web.http.app import build_http_app
from tests.jobs.test_control_loop_local import (
    SECRET,
    make_control_loop,
    project,  # noqa: F401  (fixture)
    set_command,
    trigger,
    until,
    until_status,
)
from tests.webhook_examples import example, with_labels


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
def client(project: str) -> TestClient:  # noqa: F811  (the imported fixture)
    return TestClient(build_http_app())


def post(client: TestClient, body: bytes, *, delivery: str, signature: str | None = None) -> Any:
    return client.post(
        WEBHOOK_GITHUB,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature or sign(SECRET, body),
        },
    )


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get(METRICS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_webhook_counters_move_by_exactly_what_was_posted(client: TestClient) -> None:
    tracked = {
        "received": ("codexk8s_webhooks_received_total", {"event": "issues"}),
        "duplicate": ("codexk8s_webhooks_duplicate_total", {"event": "issues"}),
        "bad_signature": ("codexk8s_webhooks_rejected_total", {"reason": "signature"}),
        "bad_request": ("codexk8s_webhooks_rejected_total", {"reason": "bad_request"}),
        "ingests": ("codexk8s_webhook_ingest_seconds_count", {}),
    }

    def read() -> dict[str, float]:
        return {key: value(name, **labels) for key, (name, labels) in tracked.items()}

    before = read()
    body = json.dumps(
        with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
    ).encode()
    delivery = str(uuid.uuid4())
    assert post(client, body, delivery=delivery).status_code == 202
    assert post(client, body, delivery=delivery).json()["duplicate"] is True
    assert post(client, body, delivery=str(uuid.uuid4()), signature="sha256=00").status_code == 401

    after = read()
    assert {key: after[key] - before[key] for key in tracked} == {
        "received": 2,  # the new one and its duplicate: both were signed
        "duplicate": 1,
        "bad_signature": 1,
        "bad_request": 0,
        "ingests": 3,  # every ingest attempt, rejected ones included
    }
    # The scrape over HTTP shows the same numbers as the registry.
    scraped = scrape(client)
    assert (
        scraped[("codexk8s_webhooks_received_total", (("event", "issues"),))] == after["received"]
    )
    assert (
        scraped[("codexk8s_webhooks_rejected_total", (("reason", "signature"),))]
        == after["bad_signature"]
    )


def test_runs_by_state_and_leased_slots_come_from_the_database(client: TestClient) -> None:
    first, second, third = trigger(101), trigger(102), trigger(103)
    with session_scope() as session:
        session.execute(sa.update(AgentRun).where(AgentRun.id == first).values(status="failed"))
        session.execute(sa.update(AgentRun).where(AgentRun.id == second).values(status="running"))
        session.execute(
            sa.text(
                "UPDATE slots SET state = 'leased', run_id = :run "
                "WHERE number = 1 AND project_id = (SELECT id FROM projects WHERE key = 'web')"
            ),
            {"run": second},
        )
    assert third
    errors = value("codexk8s_metrics_collect_errors_total")
    scraped = scrape(client)
    states = {
        labels[0][1]: count
        for (name, labels), count in scraped.items()
        if name == "codexk8s_runs" and labels
    }
    assert states == {
        "pending": 1, "starting": 0, "running": 1, "succeeded": 0, "failed": 1, "canceled": 0,
    }  # fmt: skip
    assert scraped[("codexk8s_slots_leased", (("project", "web"),))] == 1
    assert value("codexk8s_metrics_collect_errors_total") == errors
    waiting = {
        labels[0][1]: count
        for (name, labels), count in scraped.items()
        if name == "codexk8s_runs_waiting" and labels
    }
    assert waiting == {"person": 0, "slot": 0}


def test_runs_waiting_for_a_person_or_a_slot_back_are_counted(client: TestClient) -> None:
    asking, answered, done = trigger(111), trigger(112), trigger(113)
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun)
            .where(AgentRun.id.in_([asking, answered]))  # type: ignore[attr-defined]
            .values(status="running", slot_released_at=utcnow())
        )
        session.execute(sa.update(AgentRun).where(AgentRun.id == done).values(status="failed"))
        for run_id, status in ((asking, "pending"), (answered, "answered"), (done, "pending")):
            session.add(
                RunRequest(
                    run_id=run_id, project_id=session.get_one(AgentRun, run_id).project_id,
                    kind="question", status=status, text="Which?",
                    policy="delegated", created_at=utcnow(), expires_at=utcnow(),
                )
            )  # fmt: skip
    scraped = scrape(client)
    assert scraped[("codexk8s_runs_waiting", (("waiting_for", "person"),))] == 1
    assert scraped[("codexk8s_runs_waiting", (("waiting_for", "slot"),))] == 1


def test_database_failure_is_counted_and_the_scrape_still_answers() -> None:
    def broken() -> Any:
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is down"))

    collector = metrics.DatabaseCollector(broken)
    families = {family.name: family for family in collector.collect()}
    assert set(families) == {"codexk8s_metrics_collect_errors"}
    assert families["codexk8s_metrics_collect_errors"].samples[0].value == 1
    list(collector.collect())
    assert collector.errors == 2


@pytest.mark.usefixtures("project")
async def test_control_loop_observes_dispatch_latency_run_duration_and_log_lines(
    tmp_path: Path,
) -> None:
    dispatched = value("codexk8s_dispatch_latency_seconds_count")
    finished = value("codexk8s_run_duration_seconds_count", stage="dev", status="succeeded")
    stored = value("codexk8s_log_lines_stored_total")
    sweeps = value("codexk8s_reconcile_cycle_seconds_count", cycle="sweep")
    set_command("print('one')\nprint('two')\nprint('three')")
    run_id = trigger(104)
    control_loop = make_control_loop(tmp_path / "runs")
    await control_loop.start()
    try:
        done = await until_status(run_id, "succeeded", "failed")
        await until(
            lambda: value("codexk8s_log_lines_stored_total") - stored >= 3, what="3 lines stored"
        )
    finally:
        await control_loop.stop()
    assert done.status == "succeeded" and done.stage == "dev"
    assert value("codexk8s_dispatch_latency_seconds_count") - dispatched == 1
    assert value("codexk8s_run_duration_seconds_count", stage="dev", status="succeeded") == (
        finished + 1
    )
    assert value("codexk8s_log_lines_stored_total") - stored == 3
    assert value("codexk8s_reconcile_cycle_seconds_count", cycle="sweep") > sweeps
    # The observed duration is the run's own, not the time the test waited.
    assert done.started_at and done.finished_at and done.created_at
    duration = (done.finished_at - done.started_at).total_seconds()
    summed = value("codexk8s_run_duration_seconds_sum", stage="dev", status="succeeded")
    assert summed >= duration


class _Response:
    data = b'{"kind": "Job"}'

    def release_conn(self) -> None:
        pass


async def test_api_caller_counts_every_attempt_and_error() -> None:
    failures = [ApiException(status=503, reason="busy")]

    def create_namespaced_job(*_: Any, **__: Any) -> _Response:
        if failures:
            raise failures.pop()
        return _Response()

    def read_namespaced_job(*_: Any, **__: Any) -> _Response:
        raise ApiException(status=404, reason="Not Found")

    async def no_sleep(_: float) -> None:
        pass

    labels = {"verb": "create", "resource": "job"}
    calls, errors = (
        value(f"codexk8s_kubernetes_api_{k}_total", **labels) for k in ("calls", "errors")
    )
    read_errors = value("codexk8s_kubernetes_api_errors_total", verb="read", resource="job")
    with ThreadPoolExecutor(1) as pool:
        caller = ApiCaller(
            request_timeout=1, connect_timeout=1, retry=RetryPolicy(attempts=3), sleep=no_sleep,
            stream_executor=pool,
        )  # fmt: skip
        assert await caller.call("create job", create_namespaced_job, "ns", {}) == {"kind": "Job"}
        with pytest.raises(ApiException):
            await caller.call("read job", read_namespaced_job, "job", "ns")
    assert value("codexk8s_kubernetes_api_calls_total", **labels) - calls == 2
    assert value("codexk8s_kubernetes_api_errors_total", **labels) - errors == 1
    assert value("codexk8s_kubernetes_api_errors_total", verb="read", resource="job") == (
        read_errors + 1
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("create_namespaced_job", ("create", "job")),
        ("read_namespaced_pod_log", ("read", "pod_log")),
        ("list_job_for_all_namespaces", ("list", "job")),
        ("delete_namespace", ("delete", "namespace")),
        ("weird", ("weird", "unknown")),
    ],
)
def test_kubernetes_labels_from_client_method_names(name: str, expected: tuple[str, str]) -> None:
    def fn() -> None:
        pass

    fn.__name__ = name
    assert metrics.kubernetes_call_labels(fn) == expected


def test_not_yet_observed_metrics_are_exposed() -> None:
    names = {family.name for family in REGISTRY.collect()}
    assert {
        "codexk8s_github_api_calls", "codexk8s_openai_tokens", "codexk8s_openai_cost_usd",
        "codexk8s_live_viewers",
    } <= names  # fmt: skip


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9;proto=https"},
        {"X-Real-IP": "203.0.113.9"},
    ],
)
def test_metrics_are_not_served_through_a_proxy(client: TestClient, header: dict[str, str]) -> None:
    # The public ingress adds these headers; Prometheus scraping the pod directly does not.
    refused = client.get(METRICS, headers=header)
    assert refused.status_code == 404 and "codexk8s_" not in refused.text
    assert client.get(METRICS).status_code == 200
