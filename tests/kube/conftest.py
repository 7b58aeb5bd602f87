"""Fixtures of the kube lane: one real control plane (tests/kube/cluster.py) for the session.

Only `make test-kube` (pytest -m kube) runs these tests. A missing Go toolchain or a failed build
of the binaries is an error of every test here, never a skip."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube.cluster import Cluster, ClusterError

_started: list[Cluster] = []


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The lane's control plane, started once; KUBE_LANE_WORKDIR chooses its work directory."""
    chosen = os.environ.get("KUBE_LANE_WORKDIR")
    workdir = Path(chosen) if chosen else tmp_path_factory.mktemp("kube-lane")
    # A SIGTERM (a CI time-out, a stopped make) unwinds like Ctrl-C, from the start on, so that
    # the components are stopped (Cluster.start stops what it started when interrupted).
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            cluster = Cluster.start(workdir)
        except ClusterError as exc:
            pytest.fail(f"the kube lane's control plane did not start: {exc}", pytrace=False)
        _started.append(cluster)
        print(f"\n{cluster.describe()} (started in {cluster.startup_seconds:.1f}s)")
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def kube_admin(kube_cluster: Cluster) -> client.ApiClient:
    """An ApiClient authenticated as cluster admin."""
    return kube_cluster.admin_client()


@pytest.fixture
def kube_namespace(kube_cluster: Cluster, kube_admin: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted after the test (without waiting for it to go)."""
    name = f"lane-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """A failed kube test says where the control plane's component logs are."""
    report = yield
    if report.failed and _started and item.get_closest_marker("kube"):
        report.sections.append(("kube lane", _started[-1].describe()))
    return report
