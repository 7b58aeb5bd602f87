"""Prometheus metrics of the control plane, all on the default registry and named codexk8s_*.

`GET /metrics` (codexk8s.web.http.app) serves them. Each process counts on its own: Reflex may
run several worker processes (with Redis for state), and prometheus_client's multiprocess mode is
not set up, so every worker exposes its own counters and a scrape sees only the worker that
answered it. The gauges read from the database (runs by state, leased slots) are the same from
every worker. Acceptable for now; aggregate per pod in PromQL.

Where each metric is observed:
- webhooks_*: the webhook route (codexk8s.web.http.webhooks).
- api_requests_rejected_total: the staff API (codexk8s.web.http.api) and the runner's API
  (codexk8s.web.http.agent_api), for input no client of ours sends.
- dispatch_latency_seconds, run_duration_seconds, reconcile_*: the control loop
  (codexk8s.jobs.control_loop); log_lines_stored_total, log_lines_dropped_total: the leader's log
  pumps (codexk8s.services.log_pumps).
- kubernetes_api_*: ApiCaller (codexk8s.adapters.kubernetes.client), once per HTTP attempt.
- runs, slots_leased, metrics_collect_errors_total: read from the database on every scrape by
  DatabaseCollector.
- github_api_calls_total: the GitHub REST client (codexk8s.adapters.github.client), once per HTTP
  attempt, labelled with the method and path template.
- openai_tokens_total: the control plane's own model calls (codexk8s.services.model_checks,
  learning explanations) and every answer the per-run model proxy passes on
  (codexk8s.services.run_brief.meter_model_usage); openai_cost_usd_total: the proxy's answers,
  priced with CODEXK8S_MODEL_PRICES.
- live_viewers: the API's live log streams (codexk8s.web.http.api), per process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# Webhook deliveries answer in well under a second; runs take minutes to hours.
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DISPATCH_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_RUN_BUCKETS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0)

# --- webhooks -------------------------------------------------------------------------------
WEBHOOKS_RECEIVED = Counter(
    "codexk8s_webhooks_received",
    "Verified (signed) GitHub deliveries, duplicates included, by event.",
    ["event"],
)
WEBHOOKS_REJECTED = Counter(
    "codexk8s_webhooks_rejected",
    "Rejected webhook requests by reason: signature, bad_request, too_large, no_secret, other.",
    ["reason"],
)
WEBHOOKS_DUPLICATE = Counter(
    "codexk8s_webhooks_duplicate",
    "Deliveries whose X-GitHub-Delivery was already recorded, by event.",
    ["event"],
)
WEBHOOKS_REPLAYED = Counter(
    "codexk8s_webhooks_replayed",
    "Signed bodies already accepted within 24 h, sent again under a new X-GitHub-Delivery "
    "(answered as duplicates, nothing started), by event.",
    ["event"],
)
WEBHOOK_INGEST_SECONDS = Histogram(
    "codexk8s_webhook_ingest_seconds",
    "Time to verify and record one delivery (including rejected ones), in seconds.",
    buckets=_FAST_BUCKETS,
)

# --- APIs -----------------------------------------------------------------------------------
API_REQUESTS_REJECTED = Counter(
    "codexk8s_api_requests_rejected",
    "Malformed requests to the staff and runner APIs by route template and reason: bad_json, "
    "too_deep, nul_byte.",
    ["route", "reason"],
)

# --- runs -----------------------------------------------------------------------------------
DISPATCH_LATENCY_SECONDS = Histogram(
    "codexk8s_dispatch_latency_seconds",
    "From a run's creation (pending) to its launch (running): started_at - created_at.",
    buckets=_DISPATCH_BUCKETS,
)
RUN_DURATION_SECONDS = Histogram(
    "codexk8s_run_duration_seconds",
    "From start to a terminal state (finished_at - started_at) of launched runs, by stage and "
    "final status.",
    ["stage", "status"],
    buckets=_RUN_BUCKETS,
)
RECONCILE_SECONDS = Histogram(
    "codexk8s_reconcile_cycle_seconds",
    "Duration of one reconcile cycle of the leader (sweep: runtime vs. database; leases).",
    ["cycle"],
    buckets=_FAST_BUCKETS,
)
RECONCILE_ERRORS = Counter(
    "codexk8s_reconcile_errors",
    "Reconcile cycles that raised (the next cycle retries), and runtime watch restarts.",
    ["cycle"],
)
LOG_LINES_STORED = Counter(
    "codexk8s_log_lines_stored",
    "Workload log lines stored in run_logs by the leader's log pumps.",
)
LOG_LINES_DROPPED = Counter(
    "codexk8s_log_lines_dropped",
    "Workload log lines read but not stored because their run passed its log cap.",
)

# --- external APIs --------------------------------------------------------------------------
KUBERNETES_API_CALLS = Counter(
    "codexk8s_kubernetes_api_calls",
    "Kubernetes API requests (each retry attempt counts), by verb and resource.",
    ["verb", "resource"],
)
KUBERNETES_API_ERRORS = Counter(
    "codexk8s_kubernetes_api_errors",
    "Kubernetes API requests that failed (any error, including 404/409 the caller handles).",
    ["verb", "resource"],
)
KUBERNETES_WATCH_RELISTS = Counter(
    "codexk8s_kubernetes_watch_relists",
    "Watches whose position expired (410 Gone: an API server restart, etcd compaction) and that "
    "listed their kind again, by kind.",
    ["kind"],
)
GITHUB_API_CALLS = Counter(
    "codexk8s_github_api_calls",
    "GitHub REST API requests (every attempt, retries included) by method and path template.",
    ["endpoint"],
)
OPENAI_TOKENS = Counter(
    "codexk8s_openai_tokens",
    "OpenAI tokens by project and kind (input/cached/output/reasoning).",
    ["project", "kind"],
)
OPENAI_COST_USD = Counter(
    "codexk8s_openai_cost_usd",
    "Estimated OpenAI cost of agent runs in USD (CODEXK8S_MODEL_PRICES), by project.",
    ["project"],
)

# --- dashboard ------------------------------------------------------------------------------
LIVE_VIEWERS = Gauge(
    "codexk8s_live_viewers",
    "Clients following a run's log live (GET /api/v1/runs/{id}/logs?follow=1 streams).",
)


# --- read from the database on each scrape --------------------------------------------------
RUN_STATES = ("pending", "starting", "running", "succeeded", "failed", "canceled")
COLLECT_TIMEOUT_MS = 2000


class DatabaseCollector(Collector):
    """Runs by state, leased slots per project and waiting runs, read on every scrape.

    Three grouped queries per scrape, with a statement timeout on PostgreSQL. A failure (database
    down, timeout) is logged and counted in codexk8s_metrics_collect_errors_total; the scrape
    still answers, without the database gauges.
    """

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self.errors = 0

    def describe(self) -> Iterator[Metric]:
        # Without this the registry would call collect() (and query) at registration.
        yield GaugeMetricFamily("codexk8s_runs", "", labels=["state"])
        yield GaugeMetricFamily("codexk8s_slots_leased", "", labels=["project"])
        yield GaugeMetricFamily("codexk8s_runs_waiting", "", labels=["waiting_for"])
        yield CounterMetricFamily("codexk8s_metrics_collect_errors", "")

    def _read(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        engine = self._engine()
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text(f"SET LOCAL statement_timeout = {COLLECT_TIMEOUT_MS}"))
            runs = connection.execute(
                sa.text("SELECT status, count(*) FROM agent_runs GROUP BY status")
            ).all()
            slots = connection.execute(
                sa.text(
                    "SELECT p.key, sum(CASE WHEN s.state = 'leased' THEN 1 ELSE 0 END) "
                    "FROM projects p JOIN slots s ON s.project_id = p.id GROUP BY p.key"
                )
            ).all()
            # Active runs whose agent waits for a person (a pending question or approval), and
            # running ones that gave their slot away and, answered, wait for one back.
            person, slot = connection.execute(
                sa.text(
                    "SELECT sum(CASE WHEN q.run_id IS NOT NULL THEN 1 ELSE 0 END), "
                    "sum(CASE WHEN q.run_id IS NULL AND r.slot_released_at IS NOT NULL "
                    "AND r.status = 'running' THEN 1 ELSE 0 END) "
                    "FROM agent_runs r LEFT JOIN (SELECT DISTINCT run_id FROM run_requests "
                    "WHERE status = 'pending') q ON q.run_id = r.id "
                    "WHERE r.status IN ('starting', 'running')"
                )
            ).one()
            connection.rollback()
        return (
            {str(s): int(n) for s, n in runs},
            {str(k): int(n or 0) for k, n in slots},
            {"person": int(person or 0), "slot": int(slot or 0)},
        )

    def collect(self) -> Iterator[Metric]:
        try:
            runs, slots, waiting = self._read()
        except Exception as exc:
            self.errors += 1
            log.warning("metrics: reading runs and slots failed: %s", exc)
            runs = slots = waiting = None
        if runs is not None and slots is not None and waiting is not None:
            by_state = GaugeMetricFamily(
                "codexk8s_runs", "Agent runs by current status.", labels=["state"]
            )
            for state in sorted({*RUN_STATES, *runs}):
                by_state.add_metric([state], runs.get(state, 0))
            yield by_state
            leased = GaugeMetricFamily(
                "codexk8s_slots_leased", "Slots leased to a run, per project key.",
                labels=["project"],
            )  # fmt: skip
            for key, count in sorted(slots.items()):
                leased.add_metric([key], count)
            yield leased
            waits = GaugeMetricFamily(
                "codexk8s_runs_waiting",
                "Active runs waiting: for a person (a question or approval of their agent), or, "
                "answered, for a slot back (waiting-slot policy release).",
                labels=["waiting_for"],
            )
            for reason, count in sorted(waiting.items()):
                waits.add_metric([reason], count)
            yield waits
        yield CounterMetricFamily(
            "codexk8s_metrics_collect_errors",
            "Scrapes whose database read (runs, slots) failed.",
            value=self.errors,
        )


def _default_engine() -> Engine:
    from codexk8s.db.engine import get_engine

    return get_engine()


DATABASE_COLLECTOR = DatabaseCollector(_default_engine)
REGISTRY.register(DATABASE_COLLECTOR)


# --- helpers for the instrumented code ------------------------------------------------------
def kubernetes_call_labels(fn: Any) -> tuple[str, str]:
    """(verb, resource) from a client method name: `create_namespaced_job` → (create, job),
    `read_namespaced_pod_log` → (read, pod_log), `list_job_for_all_namespaces` → (list, job)."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "")
    verb, _, rest = str(name).partition("_")
    if not rest:
        return (verb or "unknown", "unknown")
    rest = rest.removeprefix("namespaced_").removesuffix("_for_all_namespaces")
    return verb, rest or "unknown"


def seconds_between(later: Any, earlier: Any) -> float | None:
    """`later - earlier` in seconds, or None when either is missing or it is negative."""
    if later is None or earlier is None:
        return None
    seconds = (later - earlier).total_seconds()
    return seconds if seconds >= 0 else None
