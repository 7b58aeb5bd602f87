"""Fixtures: a fake API server on a real port, and a KubernetesRuntime pointed at it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kmock
import pytest
from kmock._internal import parsing as kmock_parsing
from kubernetes import client as k8s

from codexk8s.adapters.kubernetes.client import RetryPolicy
from codexk8s.adapters.kubernetes.runtime import KubernetesRuntime
from codexk8s.domain.runtime import WorkloadSpec
from tests.adapters.kubernetes.fake_api import FakeApiServer, FakeCluster, tolerant_parse_path

PREFIX = "codexk8s-run"
IMAGE = "registry.example/codexk8s-agent:1"
# Short enough to keep the suite fast, long enough for a loaded machine.
REQUEST_TIMEOUT = 3.0


class Sleeps(list[float]):
    """Records every delay the runtime asked for and sleeps only a moment instead."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        await asyncio.sleep(0.005)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeApiServer]:
    monkeypatch.setattr(kmock_parsing, "parse_path", tolerant_parse_path)
    async with FakeApiServer() as server, kmock.Server(server):
        try:
            yield server
        finally:
            server.cluster.close_streams()


@pytest.fixture
def cluster(api: FakeApiServer) -> FakeCluster:
    return api.cluster


def api_client(api: FakeApiServer) -> k8s.ApiClient:
    configuration = k8s.Configuration(host=str(api.url).rstrip("/"))
    configuration.retries = False  # as from_settings does: the runtime's policy retries
    return k8s.ApiClient(configuration)


def make_runtime(api: FakeApiServer, sleeps: Sleeps, **options: Any) -> KubernetesRuntime:
    settings: dict[str, Any] = {
        "request_timeout": REQUEST_TIMEOUT,
        "connect_timeout": 2,
        "retry": RetryPolicy(attempts=4, base_delay=0.2, max_delay=1.0),
        "watch_timeout_seconds": 30,
        "log_read_timeout": 10,
        "log_poll_interval": 0.05,
        "sleep": sleeps,
        **options,
    }
    return KubernetesRuntime(
        api_client(api), namespace_prefix=PREFIX, image_default=IMAGE, **settings
    )


@pytest.fixture
def runtime(api: FakeApiServer, sleeps: Sleeps) -> Iterator[KubernetesRuntime]:
    runtime = make_runtime(api, sleeps)
    yield runtime
    runtime.close()


def make_spec(
    run_id: int = 7, *, lineage: str = "demo/1/42/dev", **overrides: object
) -> WorkloadSpec:
    values: dict[str, object] = {
        "run_id": run_id,
        "correlation_id": f"corr-{run_id}",
        "project_key": "demo",
        "lineage": lineage,
        "command": ("codexk8s", "agent", "run", "--run-id", str(run_id)),
        "env": {"CODEXK8S_CALLBACK_URL": "http://cp.example/api/v1/runs"},
        "secret_env": {"CODEXK8S_RUN_TOKEN": f"token-of-run-{run_id}"},
        "timeout_seconds": 1800,
    }
    values.update(overrides)
    return WorkloadSpec(**values)  # type: ignore[arg-type]
