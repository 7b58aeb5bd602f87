"""Runs through a real control plane, as the deployed ServiceAccount: the lane is the truth.

The control loop (dispatcher, watch, log pump, reconciler, GitHub reporter) runs in this process on
a PostgreSQL database with the Kubernetes runtime built by `from_settings`, authenticated with a
token of `deploy/rbac`'s ServiceAccount, never as admin: whatever the runtime needs and the
ClusterRole or the admission policy refuse fails here for real. The real Job controller creates
each run's pod (admitted by ResourceQuota, LimitRanger and Pod Security `restricted`), the real
scheduler binds it to a kwok node, kwok runs it; the test plays the container (its output through
`pods/log`, its exit code).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlmodel import Session

from codexk8s import metrics
from codexk8s.adapters.kubernetes.runtime import KubernetesRuntime, from_settings
from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.domain.feedback import IN_PROGRESS, SERVICE_MARKER
from codexk8s.domain.runtime import WorkloadSpec
from codexk8s.jobs.control_loop import ControlLoop, ControlLoopTimings
from codexk8s.services import agents, projects, reconcile, repositories, run_control, run_logs
from codexk8s.services.installation import installation_id
from tests.conftest import link_member, reset_caches, trigger
from tests.github_server import FakeGitHub, running_github
from tests.kube.cluster import NODE_NAMES, REPO, Cluster
from tests.kube.control_loop_process import READY, make_control_loop, make_runtime
from tests.kube.lane import configuration, deploy_control_plane_identity

pytestmark = pytest.mark.kube
T = TypeVar("T")

SECRET = "lane-webhook-secret"
TOKEN = "ghp_kubelane000000000000000000000000001"
REPOSITORY = "Codertocat/Hello-World"
PUBLIC = "https://codexk8s.lane.test"
IMAGE = "registry.invalid/codexk8s-agent:lane"
CONTROL_PLANE = ("codexk8s", "codexk8s-control-plane")
LOG_READER = "codexk8s-run-log-reader"
RBAC_GROUP = "rbac.authorization.k8s.io"


def eventually(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


async def until(what: str, check: Callable[[], T | None], limit: float = 60.0) -> T:
    return await asyncio.to_thread(eventually, what, check, limit)


# -- the control plane's identity, as deploy/ ships it ------------------------------------------


@pytest.fixture(scope="module")
def control_plane_kubeconfig(
    kube_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """deploy/rbac applied as admin; a kubeconfig holding a token of its ServiceAccount."""
    return deploy_control_plane_identity(kube_cluster, tmp_path_factory.mktemp("control-plane"))


# -- the control loop ------------------------------------------------------------------------------


@dataclass
class Lane:
    """One test's control plane: database, GitHub fake, runtime, control loop, and the cluster."""

    cluster: Cluster
    github: FakeGitHub
    runtime: KubernetesRuntime
    control_loop: ControlLoop
    admin: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.admin)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.admin)

    def label(self, number: int, label: str = "run:dev") -> int:
        """A signed `issues.labeled` delivery through ingest; the run it started."""
        return trigger(number, secret=SECRET, labels=[label], added=label)

    def run(self, run_id: int) -> AgentRun:
        with Session(get_engine()) as session:
            found = session.get(AgentRun, run_id)
            assert found is not None
            return found

    async def status(self, run_id: int, *statuses: str, limit: float = 60) -> AgentRun:
        return await until(
            f"run {run_id} to be {' or '.join(statuses)}",
            lambda: (run := self.run(run_id)).status in statuses and run,
            limit,
        )

    def selector(self, run_id: int) -> str:
        """This test's (installation's) objects of RUN_ID: run ids restart at 1 in every test."""
        return (
            f"codexk8s.io/installation={installation_id(get_engine())},codexk8s.io/run-id={run_id}"
        )

    async def pod(self, run_id: int, phase: str = "Running") -> client.V1Pod:
        """The run's pod once it is in PHASE."""

        def find() -> client.V1Pod | None:
            pods = self.core.list_pod_for_all_namespaces(label_selector=self.selector(run_id))
            return next((p for p in pods.items if p.status.phase == phase), None)

        return await until(f"the pod of run {run_id} to be {phase}", find)

    def jobs(self, run_id: int) -> list[client.V1Job]:
        return self.batch.list_job_for_all_namespaces(label_selector=self.selector(run_id)).items

    def lines(self, run_id: int) -> list[str]:
        return [line.line for line in run_logs.read_lines(get_engine(), run_id=run_id)]

    async def stop(self) -> None:
        await self.control_loop.stop()
        self.runtime.close()

    async def restart(self, *, before_start: Callable[[], object] = lambda: None) -> None:
        """A new control plane (runtime and control loop), as after an upgrade: BEFORE_START
        runs in between, to change its settings or the cluster."""
        await self.stop()
        before_start()
        self.runtime = make_runtime()
        self.control_loop = make_control_loop(self.runtime)
        await self.control_loop.start()

    def service_comment(self, number: int) -> str:
        repo = self.github.repos[REPOSITORY.lower()]
        found = [c["body"] for c in repo.comments_on(number) if SERVICE_MARKER in c["body"]]
        assert len(found) <= 1, "the service comment was duplicated"
        return found[0] if found else ""


def set_agent(*, timeout_minutes: float | None = None, pod: dict[str, Any] | None = None) -> None:
    with session_scope() as session:
        agents.set_agent(
            session=session, key="dev", image=IMAGE, timeout_minutes=timeout_minutes, pod=pod,
            command="codexk8s agent run", engine="process",
        )  # fmt: skip


def lane_settings(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, **extra: str) -> None:
    values = {
        "RUNTIME": "kubernetes",
        "KUBECONFIG": str(kubeconfig),
        "AGENT_IMAGE": IMAGE,
        "PUBLIC_URL": PUBLIC,
        "RUN_START_GRACE_SECONDS": "8",
        **extra,
    }
    for key, value in values.items():
        monkeypatch.setenv(f"CODEXK8S_{key}", value)
    reset_caches()


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    # Every test database is cloned from one template, installation id included; on the one
    # shared cluster each test must be an installation of its own, or one test's run 1 would
    # be another's (exactly what the id is for).
    with get_engine().begin() as connection:
        connection.execute(sa.text("UPDATE installation SET id = :id"), {"id": uuid.uuid4().hex})
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        reset_caches()
        fake.add_repo(REPOSITORY, token=TOKEN)
        with session_scope() as session:
            projects.create_project(session=session, key="lane", slots=4)
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key="lane",
                full_name=REPOSITORY, webhook_secret=SECRET, token=TOKEN,
            )  # fmt: skip
        link_member("lane")
        set_agent()
        yield fake


@pytest.fixture
async def lane(
    kube_cluster: Cluster,
    control_plane_kubeconfig: Path,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Lane]:
    lane_settings(monkeypatch, control_plane_kubeconfig)
    runtime = make_runtime()
    started = Lane(
        kube_cluster, github, runtime, make_control_loop(runtime), kube_cluster.admin_client()
    )
    await started.control_loop.start()
    try:
        yield started
    finally:
        await started.stop()  # the one running now, also after a test's restart()


# -- a run, end to end ----------------------------------------------------------------------------


async def test_a_labelled_issue_runs_as_a_job_and_reports_back(lane: Lane) -> None:
    started = time.monotonic()
    run_id = lane.label(101)
    pod = await lane.pod(run_id)
    namespace = pod.metadata.namespace
    assert pod.spec.node_name in NODE_NAMES  # bound by the real scheduler
    # Admitted by the real admission chain: LimitRange defaults, the restricted profile.
    labels = lane.core.read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["app.kubernetes.io/managed-by"] == "codexk8s"
    quota = lane.core.read_namespaced_resource_quota("codexk8s-run", namespace)
    eventually("the quota to count the pod", lambda: (
        lane.core.read_namespaced_resource_quota("codexk8s-run", namespace).status.used or {}
    ).get("pods") == "1")  # fmt: skip
    assert quota.metadata.managed_fields[0].manager == "codexk8s"
    networking = client.NetworkingV1Api(lane.admin)
    policy = networking.read_namespaced_network_policy("codexk8s-run", namespace)
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    # The control plane reads this run's log through the log reader it bound here to itself.
    reader = client.RbacAuthorizationV1Api(lane.admin).read_namespaced_role_binding(
        LOG_READER, namespace
    )
    assert (reader.role_ref.kind, reader.role_ref.name) == ("ClusterRole", LOG_READER)
    assert [(s.kind, s.namespace, s.name) for s in reader.subjects] == [
        ("ServiceAccount", *CONTROL_PLANE)
    ]
    assert may_read_logs(lane.admin, namespace)
    await lane.status(run_id, "running")

    log = lane.cluster.pod_log(namespace, pod.metadata.name)
    log.write("cloning codertocat/hello-world", "\x1b[32mtests passed\x1b[0m")
    log.write("warning: something on stderr", stream="stderr")
    log.write(*(f"line {n}" for n in range(200)))
    await until("every line stored", lambda: len(lane.lines(run_id)) == 203)
    await until("the comment to say running", lambda: "running" in lane.service_comment(101))
    repo = lane.github.repos[REPOSITORY.lower()]
    await until("state:in-progress", lambda: IN_PROGRESS in repo.issue_labels.get(101, ()))

    lane.cluster.exit_pod(namespace, pod.metadata.name, 0)
    finished = await lane.status(run_id, "succeeded")
    assert finished.status_reason is None or finished.status_reason == "completed"
    stored = lane.lines(run_id)
    assert stored[:3] == [
        "cloning codertocat/hello-world",
        "\x1b[32mtests passed\x1b[0m",
        "warning: something on stderr",
    ]
    assert stored[3:] == [f"line {n}" for n in range(200)]  # in order, each once
    await until("the comment to say succeeded", lambda: "succeeded" in lane.service_comment(101))
    await until("state:in-progress removed", lambda: IN_PROGRESS not in repo.issue_labels[101])
    print(f"label → succeeded through the real API: {time.monotonic() - started:.1f}s")


async def test_a_non_zero_exit_fails_the_run_with_its_code(lane: Lane) -> None:
    run_id = lane.label(102)
    pod = await lane.pod(run_id)
    lane.cluster.exit_pod(pod.metadata.namespace, pod.metadata.name, 3)
    failed = await lane.status(run_id, "failed")
    assert failed.status_reason == "exit_code"
    assert "3" in (failed.status_message or "")


async def test_the_job_controller_enforces_the_runs_deadline(lane: Lane) -> None:
    set_agent(timeout_minutes=0.1)  # six seconds: activeDeadlineSeconds on the Job
    run_id = lane.label(103)
    await lane.pod(run_id)
    failed = await lane.status(run_id, "failed", limit=90)
    assert failed.status_reason == "timeout"
    job = lane.batch.read_namespaced_job(f"codexk8s-run-{run_id}", failed.namespace)
    reasons = {c.reason for c in job.status.conditions or [] if c.status == "True"}
    assert "DeadlineExceeded" in reasons


async def test_cancel_mid_run_stops_the_pod(lane: Lane) -> None:
    run_id = lane.label(104)
    pod = await lane.pod(run_id)
    await lane.status(run_id, "running")
    run_control.cancel_run(get_engine(), run_id=run_id, actor_id="lane")
    canceled = await lane.status(run_id, "canceled")
    assert canceled.finished_at is not None
    await until("the pod to be gone", lambda: not lane.core.list_namespaced_pod(
        pod.metadata.namespace, label_selector=lane.selector(run_id)).items)  # fmt: skip


async def test_cleanup_takes_the_namespace_through_terminating_to_gone(lane: Lane) -> None:
    run_id = lane.label(105)
    pod = await lane.pod(run_id)
    namespace = pod.metadata.namespace
    lane.cluster.exit_pod(namespace, pod.metadata.name, 0)
    await lane.status(run_id, "succeeded")
    cleaned = await reconcile.cleanup_runtimes(
        engine=get_engine(), runtime=lane.runtime, older_than=timedelta(0)
    )
    assert cleaned == [run_id]
    phases = []

    def gone() -> bool:
        try:
            phases.append(lane.core.read_namespace(namespace).status.phase)
        except ApiException as exc:
            return exc.status == 404
        return False

    await until(f"namespace {namespace} to disappear", gone, limit=120)
    assert "Terminating" in phases  # the namespace controller emptied it first


# -- what the ServiceAccount may not do -----------------------------------------------------------


@pytest.mark.parametrize("namespace", ["default", "kube-system"])
def test_the_control_plane_cannot_write_outside_run_namespaces(
    control_plane_kubeconfig: Path, namespace: str
) -> None:
    api = client.ApiClient(configuration(control_plane_kubeconfig))
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "escape"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "x", "image": IMAGE}]}}},
    }  # fmt: skip
    try:
        with pytest.raises(ApiException) as refused:
            client.BatchV1Api(api).create_namespaced_job(namespace, job)
        assert refused.value.status == 403
        assert "may only write in its run namespaces" in refused.value.body
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api).delete_namespace(namespace)
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api).patch_namespace(
                namespace, {"metadata": {"labels": {"app.kubernetes.io/managed-by": "codexk8s"}}}
            )
        assert refused.value.status == 403
    finally:
        api.close()


def test_the_control_plane_cannot_take_over_or_weaken_a_namespace(
    kube_cluster: Cluster, control_plane_kubeconfig: Path
) -> None:
    core_admin = client.CoreV1Api(kube_cluster.admin_client())
    squatted = f"codexk8s-run-squat-{uuid.uuid4().hex[:6]}"
    core_admin.create_namespace({"metadata": {"name": squatted}})  # someone else's, by name
    api = client.ApiClient(configuration(control_plane_kubeconfig))
    core = client.CoreV1Api(api)
    try:
        with pytest.raises(ApiException) as refused:
            core.patch_namespace(
                squatted, {"metadata": {"labels": {"app.kubernetes.io/managed-by": "codexk8s"}}}
            )
        assert refused.value.status == 403
        weak = f"codexk8s-run-weak-{uuid.uuid4().hex[:6]}"
        with pytest.raises(ApiException) as refused:
            core.create_namespace({"metadata": {"name": weak, "labels": {
                "app.kubernetes.io/managed-by": "codexk8s",
                "pod-security.kubernetes.io/enforce": "privileged"}}})  # fmt: skip
        assert refused.value.status == 403
        assert "restricted" in refused.value.body
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_secret("kube-system")
        assert refused.value.status == 403  # RBAC: never read a Secret
    finally:
        api.close()
        core_admin.delete_namespace(squatted)


def may_read_logs(admin: client.ApiClient, namespace: str) -> bool:
    """What the API server's authorizer answers for the control plane's `get pods/log` there."""
    attributes = {"namespace": namespace, "verb": "get", "resource": "pods", "subresource": "log"}
    user = "system:serviceaccount:{}:{}".format(*CONTROL_PLANE)
    review = client.AuthorizationV1Api(admin).create_subject_access_review(
        {"spec": {"user": user, "resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


def refused(write: Callable[[], Any]) -> str:
    """The API server's message for WRITE, which must be Forbidden."""
    with pytest.raises(ApiException) as caught:
        write()
    assert caught.value.status == 403, caught.value.body
    return str(json.loads(caught.value.body)["message"])


@pytest.mark.parametrize("namespace", ["default", "kube-system"])
def test_the_control_plane_cannot_read_logs_outside_run_namespaces(
    kube_cluster: Cluster, control_plane_kubeconfig: Path, namespace: str
) -> None:
    """A pod's log the admin reads in another namespace is Forbidden to the control plane: its
    ClusterRole has no pods/log, and the log reader is bound only in run namespaces."""
    admin = kube_cluster.admin_client()
    core_admin = client.CoreV1Api(admin)
    name = f"lane-other-{uuid.uuid4().hex[:6]}"
    core_admin.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE}]}})  # fmt: skip
    api = client.ApiClient(configuration(control_plane_kubeconfig))
    try:
        eventually(
            "the pod to be scheduled",
            lambda: core_admin.read_namespaced_pod(name, namespace).spec.node_name,
        )
        kube_cluster.pod_log(namespace, name).write("a token someone printed")
        assert "a token someone printed" in core_admin.read_namespaced_pod_log(name, namespace)
        message = refused(lambda: client.CoreV1Api(api).read_namespaced_pod_log(name, namespace))
        assert 'cannot get resource "pods/log"' in message
        assert not may_read_logs(admin, namespace)
    finally:
        api.close()
        core_admin.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def test_the_control_plane_binds_the_log_reader_only_to_itself(
    kube_cluster: Cluster, control_plane_kubeconfig: Path
) -> None:
    """RBAC lets the control plane bind the log reader (and no other ClusterRole) in its run
    namespaces; the admission policy lets it bind that only to itself, the agent's Role only
    to the agent, and write no Role that grants anything."""
    admin = kube_cluster.admin_client()
    api = client.ApiClient(configuration(control_plane_kubeconfig))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    namespace = f"codexk8s-run-bind-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {
        "app.kubernetes.io/managed-by": "codexk8s",
        "pod-security.kubernetes.io/enforce": "restricted"}}})  # fmt: skip
    me = {"kind": "ServiceAccount", "namespace": CONTROL_PLANE[0], "name": CONTROL_PLANE[1]}
    agent = {"kind": "ServiceAccount", "namespace": namespace, "name": "codexk8s-agent"}
    everyone = {"kind": "Group", "name": "system:authenticated", "apiGroup": RBAC_GROUP}

    def bind(kind: str, role: str, *subjects: dict[str, str]) -> Any:
        return rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": f"lane-{uuid.uuid4().hex[:6]}"}, "subjects": list(subjects),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role}})  # fmt: skip

    only_allowed = (
        "may only bind Role codexk8s-agent to its ServiceAccount and ClusterRole "
        f"{LOG_READER} to itself"
    )
    try:
        assert not may_read_logs(admin, namespace)
        assert only_allowed in refused(lambda: bind("ClusterRole", LOG_READER, agent))
        assert only_allowed in refused(lambda: bind("ClusterRole", LOG_READER, everyone))
        assert only_allowed in refused(lambda: bind("ClusterRole", LOG_READER, me, agent))
        # Not any ClusterRole: `bind` names the log reader only (RBAC's escalation check).
        assert "not currently held" in refused(lambda: bind("ClusterRole", "view", me))
        # The agent's empty Role, bound to anyone but the agent (RBAC allows: it grants nothing).
        rbac.create_namespaced_role(namespace, {"metadata": {"name": "codexk8s-agent"}})
        assert only_allowed in refused(lambda: bind("Role", "codexk8s-agent", everyone))
        # A Role granting what the control plane holds passes RBAC; admission refuses it.
        jobs = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}
        role = {"metadata": {"name": "lane-jobs"}, "rules": [jobs]}
        message = refused(lambda: rbac.create_namespaced_role(namespace, role))
        assert "may only write Roles that grant nothing" in message
        # What the runtime does is allowed, and lets it read logs here, and only here.
        mine = bind("ClusterRole", LOG_READER, me)
        eventually("the log reader to take effect", lambda: may_read_logs(admin, namespace))
        assert not may_read_logs(admin, "default")
        widened = {"subjects": [me, agent]}
        message = refused(
            lambda: rbac.patch_namespaced_role_binding(mine.metadata.name, namespace, widened)
        )
        assert only_allowed in message
    finally:
        api.close()
        client.CoreV1Api(admin).delete_namespace(namespace)


# -- when the pod cannot start ---------------------------------------------------------------------


async def test_a_pod_refused_by_admission_fails_the_run_with_the_refusal(lane: Lane) -> None:
    """A cluster policy of the platform team (here a ValidatingAdmissionPolicy demanding a
    cost-center label) refuses the run's pod: the run fails with the API server's words and its
    Job is deleted, instead of holding the slot until the deadline."""
    admission = client.AdmissionregistrationV1Api(lane.admin)
    name = f"lane-cost-center-{uuid.uuid4().hex[:6]}"
    admission.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"]}]},
            "validations": [{
                "expression": "has(object.metadata.labels) && "
                              "'cost-center' in object.metadata.labels",
                "message": "pods need a cost-center label"}],
        },
    })  # fmt: skip
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
            "namespaceSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "codexk8s"}}}},
    })  # fmt: skip
    try:
        await asyncio.sleep(2)  # the API server loads new policies within a second or so
        run_id = lane.label(106)
        failed = await lane.status(run_id, "failed", limit=90)
        assert failed.status_reason == "pod_rejected"
        assert "pods need a cost-center label" in (failed.status_message or "")
        await until("the Job to be deleted", lambda: not lane.jobs(run_id))
        slots = await until("the slot to be free", lambda: _free_slots() == 4 or None)
        assert slots
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


def _free_slots() -> int:
    with get_engine().connect() as connection:
        return int(connection.execute(
            sa.text("SELECT count(*) FROM slots WHERE state = 'free'")
        ).scalar_one())  # fmt: skip


async def test_a_pod_no_node_can_take_fails_the_run_after_the_grace(lane: Lane) -> None:
    set_agent(pod={"nodeSelector": {"pool": "gpu"}})  # no kwok node has it
    run_id = lane.label(107)
    waiting = await lane.pod(run_id, phase="Pending")
    assert waiting.spec.node_selector == {"pool": "gpu"}
    failed = await lane.status(run_id, "failed", limit=90)
    assert failed.status_reason == "unschedulable"
    assert "node" in (failed.status_message or "").lower()
    await until("the Job to be deleted", lambda: not lane.jobs(run_id))


# -- lineage namespaces ----------------------------------------------------------------------------


async def test_a_revise_run_waits_for_its_terminating_namespace_then_runs(lane: Lane) -> None:
    first = lane.label(108)
    pod = await lane.pod(first)
    namespace = pod.metadata.namespace
    lane.cluster.exit_pod(namespace, pod.metadata.name, 0)
    await lane.status(first, "succeeded")
    # Something in the namespace holds its deletion (a finalizer of someone's controller).
    lane.core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "held", "finalizers": ["lane.codexk8s.io/hold"]}})  # fmt: skip
    await reconcile.cleanup_runtimes(
        engine=get_engine(), runtime=lane.runtime, older_than=timedelta(0)
    )
    await until(
        "the namespace to be terminating",
        lambda: lane.core.read_namespace(namespace).status.phase == "Terminating",
    )
    revise = lane.label(108, "run:dev:revise")
    waiting = await until(
        "the revise run to be deferred",
        lambda: (r := lane.run(revise)).status_reason == "launch_deferred" and r,
    )
    assert waiting.status == "pending"
    assert "still being deleted" in (waiting.status_message or "")
    lane.core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    pod = await lane.pod(revise)
    assert pod.metadata.namespace == namespace  # the lineage's namespace, made anew
    lane.cluster.exit_pod(namespace, pod.metadata.name, 0)
    await lane.status(revise, "succeeded", limit=90)


async def test_a_lineage_namespace_follows_new_pod_settings(
    lane: Lane, monkeypatch: pytest.MonkeyPatch, control_plane_kubeconfig: Path
) -> None:
    first = lane.label(109)
    pod = await lane.pod(first)
    namespace = pod.metadata.namespace
    lane.cluster.exit_pod(namespace, pod.metadata.name, 0)
    await lane.status(first, "succeeded")
    rbac = client.RbacAuthorizationV1Api(lane.admin)

    def upgrade() -> None:
        # A namespace of a release that bound no log reader (and read logs cluster-wide).
        rbac.delete_namespaced_role_binding(LOG_READER, namespace)
        # Bigger pods: the old quota and LimitRange would refuse the new pod.
        profile = {"resources": {"requests": {"memory": "6Gi"}, "limits": {"memory": "12Gi"}}}
        lane_settings(monkeypatch, control_plane_kubeconfig, RUN_POD=json.dumps(profile))

    await lane.restart(before_start=upgrade)
    revise = lane.label(109, "run:dev:revise")
    pod = await lane.pod(revise)
    assert pod.metadata.namespace == namespace
    assert pod.spec.containers[0].resources.limits["memory"] == "12Gi"
    limits = lane.core.read_namespaced_limit_range("codexk8s-run", namespace)
    assert limits.spec.limits[0].max["memory"] == "12Gi"
    quota = lane.core.read_namespaced_resource_quota("codexk8s-run", namespace)
    assert quota.spec.hard["limits.memory"] == str(2 * 12 * 1024**3)
    assert rbac.read_namespaced_role_binding(LOG_READER, namespace).role_ref.name == LOG_READER


async def test_a_run_from_before_the_log_reader_keeps_its_log_after_the_upgrade(lane: Lane) -> None:
    """A run launched by a release that bound no log reader, still running after the upgrade:
    the new control plane's first read of its log is refused, binds the reader, and reads."""
    run_id = lane.label(113)
    pod = await lane.pod(run_id)
    namespace = pod.metadata.namespace
    await lane.status(run_id, "running")
    rbac = client.RbacAuthorizationV1Api(lane.admin)

    def unbind() -> None:
        rbac.delete_namespaced_role_binding(LOG_READER, namespace)
        eventually("the log reader to be gone", lambda: not may_read_logs(lane.admin, namespace))

    await lane.restart(before_start=unbind)
    log = lane.cluster.pod_log(namespace, pod.metadata.name)
    log.write("after the upgrade")
    await until("the line to be stored", lambda: lane.lines(run_id) == ["after the upgrade"])
    subjects = rbac.read_namespaced_role_binding(LOG_READER, namespace).subjects
    assert [(s.namespace, s.name) for s in subjects] == [CONTROL_PLANE]
    lane.cluster.exit_pod(namespace, pod.metadata.name, 0)
    await lane.status(run_id, "succeeded")


# -- restarts and the watch -----------------------------------------------------------------------


async def test_a_control_plane_killed_mid_run_is_replaced_and_each_line_stored_once(
    kube_cluster: Cluster,
    control_plane_kubeconfig: Path,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """SIGKILL: no lease handed back, no leadership released, a log batch maybe half stored."""
    lane_settings(monkeypatch, control_plane_kubeconfig)
    lane = Lane(kube_cluster, github, None, None, kube_cluster.admin_client())  # type: ignore[arg-type]
    first = control_loop_process(tmp_path / "first.log")
    try:
        run_id = lane.label(110)
        pod = await lane.pod(run_id)
        await lane.status(run_id, "running")
        log = lane.cluster.pod_log(pod.metadata.namespace, pod.metadata.name)
        log.write(*(f"before {n}" for n in range(300)))
        await until("some lines stored", lambda: len(lane.lines(run_id)) >= 100)
    finally:
        first.kill()
        first.wait()
    log.write(*(f"while down {n}" for n in range(100)))
    second = control_loop_process(tmp_path / "second.log")
    try:
        log.write(*(f"after {n}" for n in range(100)))
        await until("every line so far", lambda: len(lane.lines(run_id)) >= 500, limit=90)
        lane.cluster.exit_pod(pod.metadata.namespace, pod.metadata.name, 0)
        await lane.status(run_id, "succeeded", limit=90)
    finally:
        second.terminate()
        second.wait(timeout=30)
    phases = (("before", 300), ("while down", 100), ("after", 100))
    expected = [f"{phase} {n}" for phase, count in phases for n in range(count)]
    assert lane.lines(run_id) == expected


def control_loop_process(log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m tests.kube.control_loop_process` with this test's settings, once it is running."""
    out = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kube.control_loop_process"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=out, env=dict(os.environ),
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if READY not in line:
        process.kill()
        raise AssertionError(
            f"the control loop process did not start: {log_path.read_text()[-3000:]}"
        )
    return process


async def test_a_watch_that_expires_relists_and_misses_no_transition(
    kube_cluster: Cluster,
    control_plane_kubeconfig: Path,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the watch may notice the run's end here (the sweep runs once an hour), and it does
    so across an API server restart and an etcd compaction, which expire its position."""
    lane_settings(monkeypatch, control_plane_kubeconfig)
    runtime = make_runtime()
    timings = ControlLoopTimings(
        dispatch_seconds=0.2, leader_seconds=0.3, sweep_seconds=3600, lease_seconds=3600,
        cleanup_seconds=3600, cancel_grace_seconds=1, feedback_seconds=3600,
    )  # fmt: skip
    control_loop = make_control_loop(runtime, timings)
    await control_loop.start()
    lane = Lane(kube_cluster, github, runtime, control_loop, kube_cluster.admin_client())
    try:
        run_id = lane.label(111)
        pod = await lane.pod(run_id)
        await lane.status(run_id, "running")
        expired_before = _expired_watches()
        kube_cluster.compact_etcd()
        kube_cluster.restart_apiserver()
        lane.cluster.exit_pod(pod.metadata.namespace, pod.metadata.name, 4)
        failed = await lane.status(run_id, "failed", limit=120)
        assert failed.status_reason == "exit_code"
        assert _expired_watches() > expired_before
    finally:
        await control_loop.stop()
        runtime.close()


def _expired_watches() -> float:
    return sum(
        sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == "codexk8s_kubernetes_watch_relists"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


# -- installations and the cost of a run ----------------------------------------------------------


async def test_another_installation_on_the_cluster_sees_nothing_of_ours(
    lane: Lane, pg_url: str, monkeypatch: pytest.MonkeyPatch, control_plane_kubeconfig: Path
) -> None:
    run_id = lane.label(112)
    await lane.pod(run_id)
    ours = await lane.runtime.list_workloads()
    assert run_id in {s.run_id for s in ours}
    theirs = from_settings(
        get_settings(), image_default=IMAGE, installation=uuid.uuid4().hex
    )  # a second database, the same cluster and prefix
    try:
        assert await theirs.list_workloads() == []
        assert await theirs.list_leftovers() == []
    finally:
        theirs.close()


async def test_api_requests_per_run(lane: Lane) -> None:
    """The requests one run costs, by verb and resource (launch to cleanup), as sent."""
    before = _calls()
    runs = []
    for number in range(120, 125):
        run_id = lane.label(number)
        pod = await lane.pod(run_id)
        log = lane.cluster.pod_log(pod.metadata.namespace, pod.metadata.name)
        log.write("hello")
        lane.cluster.exit_pod(pod.metadata.namespace, pod.metadata.name, 0)
        runs.append(run_id)
    for run_id in runs:
        await lane.status(run_id, "succeeded")
    await reconcile.cleanup_runtimes(engine=get_engine(), runtime=lane.runtime,
                                     older_than=timedelta(0))  # fmt: skip
    after = _calls()
    per_run = {key: (after[key] - before.get(key, 0)) / len(runs) for key in after}
    per_run = {key: value for key, value in per_run.items() if value}
    shown = {f"{verb} {resource}": round(n, 1) for (verb, resource), n in sorted(per_run.items())}
    print("API requests per run:", json.dumps(shown))
    # Launch is eleven writes (three creates, seven applies with the log reader's binding, the
    # Secret's replace), whatever the watch and the sweep add; reading the log costs none.
    writes = sum(n for (verb, _), n in per_run.items() if verb in ("create", "patch", "replace"))
    assert 10 <= writes <= 12, per_run


def _calls() -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in metrics.REGISTRY.collect():
        if family.name != "codexk8s_kubernetes_api_calls":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                found[(sample.labels["verb"], sample.labels["resource"])] = sample.value
    return found


async def test_a_namespace_no_run_accounts_for_is_swept(lane: Lane) -> None:
    """A launch whose handle was never stored (a crash right after it, a run this database does
    not know) leaves a namespace only the label finds; it goes after CLEANUP_AFTER_HOURS."""
    spec = WorkloadSpec(
        run_id=9999, correlation_id="orphan", project_key="lane", lineage="lane/1/999/dev",
        command=("codexk8s", "agent", "run"), secret_env={"CODEXK8S_RUN_TOKEN": "t"},
    )  # fmt: skip
    handle = await lane.runtime.launch(spec)
    namespace = handle.namespace
    assert namespace is not None
    kept = await reconcile.sweep_leftovers(
        engine=get_engine(), runtime=lane.runtime, older_than=timedelta(hours=1)
    )
    assert kept == []  # too young
    (swept,) = await reconcile.sweep_leftovers(
        engine=get_engine(), runtime=lane.runtime, older_than=timedelta(0)
    )
    assert swept.namespace == namespace

    def gone() -> bool:
        try:
            lane.core.read_namespace(namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    await until(f"namespace {namespace} to disappear", gone, limit=120)
