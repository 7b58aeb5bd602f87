"""KubernetesRuntime against a fake API server speaking real HTTP: launch, adopt, status, list,
cancel, cleanup, and the API errors it must survive."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from codexk8s.adapters.kubernetes.client import RetryPolicy
from codexk8s.adapters.kubernetes.manifests import RunPodSettings
from codexk8s.adapters.kubernetes.permissions import LOG_READER_ROLE_NAME
from codexk8s.adapters.kubernetes.runtime import KubernetesRuntime, from_settings
from codexk8s.config import ConfigError, Settings
from codexk8s.domain.runtime import (
    FailureReason,
    Runtime,
    WorkloadDeferredError,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadRuntimeError,
)
from tests.adapters.kubernetes.conftest import IMAGE, PREFIX, Sleeps, make_runtime, make_spec
from tests.adapters.kubernetes.fake_api import FakeApiServer, FakeCluster, now_rfc3339

KINDS_PER_NAMESPACE = {
    "serviceaccounts",
    "roles",
    "rolebindings",
    "resourcequotas",
    "limitranges",
    "networkpolicies",
    "secrets",
    "jobs",
}


def secret_token(cluster: FakeCluster, namespace: str, run_id: int) -> str:
    secret = cluster.get("secrets", namespace, f"codexk8s-run-{run_id}-credentials")
    assert secret is not None
    return base64.b64decode(secret["data"]["CODEXK8S_RUN_TOKEN"]).decode()


def test_it_is_a_runtime(runtime: KubernetesRuntime) -> None:
    assert isinstance(runtime, Runtime)
    assert runtime.name == "kubernetes"


async def test_launch_creates_every_object_of_the_run(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))

    namespace = handle.namespace
    assert namespace is not None
    assert namespace.startswith(f"{PREFIX}-demo-")
    assert handle.runtime == "kubernetes"
    assert handle.name == "codexk8s-run-7"
    job = cluster.get("jobs", namespace, "codexk8s-run-7")
    assert job is not None
    assert handle.details == {"uid": job["metadata"]["uid"]}
    assert {plural for plural, ns, _ in cluster.objects if ns == namespace} == KINDS_PER_NAMESPACE
    ns_labels = cluster.get("namespaces", None, namespace)["metadata"]["labels"]  # type: ignore[index]
    assert ns_labels["app.kubernetes.io/managed-by"] == "codexk8s"
    assert ns_labels["codexk8s.io/run-id"] == "7"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    # The Job owns the run's Secret, so deleting the Job deletes the credentials too.
    secret = cluster.get("secrets", namespace, "codexk8s-run-7-credentials")
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert secret_token(cluster, namespace, 7) == "token-of-run-7"


@pytest.mark.parametrize("version", ["1.30", "1.34"])
async def test_every_object_the_runtime_sends_passes_the_strict_schema(
    runtime: KubernetesRuntime, api: FakeApiServer, version: str
) -> None:
    await runtime.launch(make_spec(7))
    await runtime.launch(make_spec(7))  # the adopt path: replaces the Secret again

    sent = [r.data for r in api if r.method.value in ("POST", "PUT", "PATCH")]
    # Every body is a whole object except the namespace's relabel (a merge patch).
    sent = [body for body in sent if "kind" in body]
    assert {body["kind"] for body in sent} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "LimitRange",
        "NetworkPolicy", "Secret", "Job",
    }  # fmt: skip
    for body in sent:
        kubernetes_validate.validate(body, version, strict=True)


async def test_the_agents_image_wins_over_the_default(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(8, image="ghcr.io/acme/agent:9"))
    job = cluster.get("jobs", handle.namespace, handle.name)
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/agent:9"


async def test_launching_the_same_run_twice_adopts_the_job_and_refreshes_the_token(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    first = await runtime.launch(make_spec(7))
    again = await runtime.launch(make_spec(7, secret_env={"CODEXK8S_RUN_TOKEN": "a-fresh-token"}))

    assert again == first
    assert len(cluster.items("jobs")) == 1
    assert secret_token(cluster, first.namespace or "", 7) == "a-fresh-token"


async def test_a_revise_run_reuses_the_lineage_namespace(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    first = await runtime.launch(make_spec(7, lineage="demo/1/42/dev"))
    revise = await runtime.launch(make_spec(9, lineage="demo/1/42/dev"))
    other = await runtime.launch(make_spec(10, lineage="demo/1/43/dev"))

    assert revise.namespace == first.namespace
    assert other.namespace != first.namespace
    assert {job["metadata"]["name"] for job in cluster.items("jobs", first.namespace)} == {
        "codexk8s-run-7",
        "codexk8s-run-9",
    }
    labels = cluster.get("namespaces", None, first.namespace or "")["metadata"]["labels"]  # type: ignore[index]
    assert labels["codexk8s.io/run-id"] == "9"
    # Each run has its own Secret with its own token only.
    assert secret_token(cluster, first.namespace or "", 7) == "token-of-run-7"
    assert secret_token(cluster, first.namespace or "", 9) == "token-of-run-9"


async def test_a_foreign_namespace_with_the_same_name_is_not_used(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    namespace = runtime.namespace_for(make_spec(7))
    cluster.create("namespaces", None, {"metadata": {"name": namespace, "labels": {"x": "y"}}})

    with pytest.raises(WorkloadRuntimeError, match="not a codexk8s namespace"):
        await runtime.launch(make_spec(7))
    assert cluster.items("jobs") == []


async def test_a_terminating_lineage_namespace_defers_the_launch(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    await runtime.launch(make_spec(7))
    namespace = runtime.namespace_for(make_spec(7))
    cluster.set_status("namespaces", "", namespace, {"phase": "Terminating"})

    with pytest.raises(WorkloadDeferredError, match="still being deleted") as raised:
        await runtime.launch(make_spec(9))
    assert raised.value.retry_after_seconds > 0
    assert cluster.get("jobs", namespace, "codexk8s-run-9") is None


async def test_launch_lets_the_control_plane_read_logs_in_the_run_namespace(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))

    binding = cluster.get("rolebindings", handle.namespace, LOG_READER_ROLE_NAME)
    assert binding is not None
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": LOG_READER_ROLE_NAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "codexk8s-control-plane", "namespace": "codexk8s"}
    ]
    assert binding["metadata"]["managedFields"][0]["manager"] == "codexk8s"
    applies = api.requests_with("PATCH", "rolebindings")
    assert len(applies) == 2  # the agent's binding and this one, both server-side applied
    assert all(a["fieldManager"] == "codexk8s" and a["force"] == "true" for a in applies)
    # Applied before the Job, so the run's first log read is allowed.
    writes = [r.url.path for r in api if r.method.value in ("POST", "PATCH")]
    assert writes.index(next(w for w in writes if w.endswith(LOG_READER_ROLE_NAME))) < (
        writes.index(next(w for w in writes if w.endswith("/jobs")))
    )


async def test_a_lineage_namespace_from_before_the_log_reader_gets_it_at_its_next_launch(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    first = await runtime.launch(make_spec(7))
    namespace = first.namespace or ""
    cluster.delete("rolebindings", namespace, LOG_READER_ROLE_NAME)  # an older release's

    await runtime.launch(make_spec(9))  # the revise run, after the upgrade

    assert cluster.get("rolebindings", namespace, LOG_READER_ROLE_NAME) is not None


async def test_lineage_objects_follow_the_current_settings_by_server_side_apply(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    """A revise run after an upgrade (other pod settings) updates the lineage namespace's quota
    and LimitRange instead of keeping the old ones that would refuse its pod."""
    before = make_runtime(api, sleeps)
    first = await before.launch(make_spec(7))
    before.close()
    bigger = RunPodSettings(cpu_limit="4", memory_limit="16Gi")
    after = make_runtime(api, sleeps, pod_settings=bigger)
    revise = await after.launch(make_spec(9))
    after.close()

    assert revise.namespace == first.namespace
    quota = cluster.get("resourcequotas", first.namespace, "codexk8s-run")
    assert quota is not None
    assert quota["spec"]["hard"]["limits.cpu"] == "8"
    limits = cluster.get("limitranges", first.namespace, "codexk8s-run")
    assert limits is not None
    assert limits["spec"]["limits"][0]["max"]["memory"] == "16Gi"
    applies = api.requests_with("PATCH", "resourcequotas")
    assert applies and all(
        a["fieldManager"] == "codexk8s"
        and a["force"] == "true"
        and a["fieldValidation"] == "Strict"
        for a in applies
    )
    for plural in ("namespaces", "secrets", "jobs"):
        assert all(p["fieldValidation"] == "Strict" for p in api.requests_with("POST", plural))


async def test_periodic_lists_read_from_the_watch_cache(
    runtime: KubernetesRuntime, api: FakeApiServer
) -> None:
    await runtime.launch(make_spec(7))
    await runtime.list_workloads()
    await runtime.list_leftovers()
    for plural in ("jobs", "pods", "namespaces"):
        lists = [p for p in api.requests_with("GET", plural) if "labelSelector" in p]
        assert lists and all(p["resourceVersion"] == "0" for p in lists), plural


async def test_only_this_installations_workloads_are_seen_or_adopted(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    ours = make_runtime(api, sleeps, installation="ours")
    theirs = make_runtime(api, sleeps, installation="theirs")
    try:
        mine = await ours.launch(make_spec(7))
        other = await theirs.launch(make_spec(7))  # their run 7 of the same lineage
        assert mine.namespace != other.namespace
        assert [s.run_id for s in await ours.list_workloads()] == [7]
        assert [s.handle for s in await ours.list_workloads()] == [mine]
        assert [found.handle.namespace for found in await ours.list_leftovers()] == [mine.namespace]

        # Their Job stamped into our namespace under our run's name is not taken for ours.
        job = cluster.get("jobs", mine.namespace, "codexk8s-run-7")
        assert job is not None
        job["metadata"]["labels"]["codexk8s.io/installation"] = "theirs"
        with pytest.raises(WorkloadRuntimeError, match="another codexk8s installation"):
            await ours.launch(make_spec(7))
        # A namespace of theirs under our name is refused too.
        namespace = cluster.get("namespaces", None, mine.namespace or "")
        assert namespace is not None
        namespace["metadata"]["labels"]["codexk8s.io/installation"] = "theirs"
        with pytest.raises(WorkloadRuntimeError, match="another codexk8s installation"):
            await ours.launch(make_spec(9))
    finally:
        ours.close()
        theirs.close()


async def test_a_pod_the_cluster_refuses_fails_the_run_after_the_grace(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    patient = make_runtime(api, sleeps, rejection_grace_seconds=3600)
    eager = make_runtime(api, sleeps, rejection_grace_seconds=0)
    try:
        handle = await patient.launch(make_spec(7))
        job = cluster.get("jobs", handle.namespace, handle.name)
        assert job is not None
        job["status"] = {"startTime": now_rfc3339(), "active": 0}
        # No refusal recorded yet: pending, and no events were even read within the grace.
        assert (await patient.status(handle, 7)).phase is WorkloadPhase.PENDING
        message = 'pods "codexk8s-run-7-ab" is forbidden: violates PodSecurity "restricted:latest"'
        cluster.add_event(handle.namespace or "", job, "FailedCreate", message)
        cluster.add_event(handle.namespace or "", job, "SuccessfulCreate", "not this one")
        assert (await patient.status(handle, 7)).phase is WorkloadPhase.PENDING
        status = await eager.status(handle, 7)
        assert status.phase is WorkloadPhase.FAILED
        assert status.reason is FailureReason.POD_REJECTED
        assert status.message == f"the cluster refused the pod: {message}"
        (listed,) = await eager.list_workloads()
        assert listed.reason is FailureReason.POD_REJECTED
        reads = api.requests_with("GET", "events")
        assert reads and all(
            r["fieldSelector"]
            == "involvedObject.kind=Job,involvedObject.name=codexk8s-run-7,reason=FailedCreate"
            for r in reads
        )
    finally:
        patient.close()
        eager.close()


async def test_cancel_refuses_namespaces_outside_the_prefix(runtime: KubernetesRuntime) -> None:
    foreign = WorkloadHandle(runtime="kubernetes", name="codexk8s-run-7", namespace="kube-system")
    with pytest.raises(WorkloadRuntimeError, match="not a run namespace"):
        await runtime.cancel(foreign)


async def test_a_job_name_taken_by_another_run_is_refused(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    job = cluster.get("jobs", handle.namespace, "codexk8s-run-7")
    assert job is not None
    job["metadata"]["labels"]["codexk8s.io/run-id"] = "8"

    with pytest.raises(WorkloadRuntimeError, match="another run"):
        await runtime.launch(make_spec(7))


async def test_429_is_retried_after_the_servers_retry_after(
    runtime: KubernetesRuntime, api: FakeApiServer, sleeps: Sleeps
) -> None:
    api["post /api/v1/namespaces"][:2] << 429 << {"Retry-After": "7"}

    handle = await runtime.launch(make_spec(7))

    assert handle.name == "codexk8s-run-7"
    assert sleeps == [7.0, 7.0]
    assert len(list(api["post /api/v1/namespaces"])) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_with_backoff(
    runtime: KubernetesRuntime,
    api: FakeApiServer,
    cluster: FakeCluster,
    sleeps: Sleeps,
    status: int,
) -> None:
    api["post /apis/batch/v1/namespaces/*/jobs"][:1] << status

    await runtime.launch(make_spec(7))

    assert len(cluster.items("jobs")) == 1
    assert len(sleeps) == 1
    assert 0 < sleeps[0] <= 0.2  # the first backoff step of the fixture's policy


async def test_retries_are_bounded(
    runtime: KubernetesRuntime, api: FakeApiServer, sleeps: Sleeps
) -> None:
    api["post /api/v1/namespaces"] << 503

    with pytest.raises(WorkloadRuntimeError, match=r"503.*gave up after 4 attempts"):
        await runtime.launch(make_spec(7))
    assert len(sleeps) == 3
    # Exponential: every delay is within the jitter band of twice the previous step.
    assert sleeps[0] <= 0.2 < sleeps[2] <= 0.8


async def test_forbidden_is_not_retried(
    runtime: KubernetesRuntime, api: FakeApiServer, sleeps: Sleeps
) -> None:
    api["post /api/v1/namespaces/*/secrets"] << 403

    with pytest.raises(WorkloadRuntimeError, match=r"create Secret .* 403"):
        await runtime.launch(make_spec(7))
    assert sleeps == []


async def test_a_failed_launch_removes_the_namespace_it_created(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    api["post /apis/batch/v1/namespaces/*/jobs"] << 422

    with pytest.raises(WorkloadRuntimeError, match="422"):
        await runtime.launch(make_spec(7))

    assert cluster.objects == {}


async def test_a_failed_revise_launch_keeps_the_lineage_namespace(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    first = await runtime.launch(make_spec(7))
    api["post /apis/batch/v1/namespaces/*/jobs"] << 422

    with pytest.raises(WorkloadRuntimeError):
        await runtime.launch(make_spec(9))

    assert cluster.get("jobs", first.namespace, first.name) is not None


async def test_a_create_that_timed_out_but_happened_is_adopted(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    runtime = make_runtime(api, sleeps, request_timeout=0.5)
    # The API server applies the create, but answers after the client gave up waiting.
    cluster.stalls[("POST", "jobs")] = [1.0]
    try:
        handle = await runtime.launch(make_spec(7))
    finally:
        runtime.close()

    assert len(sleeps) == 1  # one timeout, one retry, which met 409 and adopted
    jobs = cluster.items("jobs")
    assert len(jobs) == 1
    assert handle.details == {"uid": jobs[0]["metadata"]["uid"]}


async def test_status_reads_the_job_and_its_pod(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    assert (await runtime.status(handle, 7)).phase is WorkloadPhase.PENDING

    cluster.start_pod(namespace, handle.name)
    assert (await runtime.status(handle, 7)).phase is WorkloadPhase.RUNNING

    cluster.start_pod(
        namespace,
        handle.name,
        phase="Failed",
        state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        name="codexk8s-run-7-other",
    )
    cluster.delete("pods", namespace, "codexk8s-run-7-x7k2p")
    cluster.set_status(
        "jobs", namespace, handle.name, {"conditions": [{"type": "Failed", "status": "True"}]}
    )
    status = await runtime.status(handle, 7)
    assert (status.phase, status.reason, status.exit_code) == (
        WorkloadPhase.FAILED,
        FailureReason.OOM_KILLED,
        137,
    )
    assert status.handle == handle


async def test_status_of_a_vanished_job_is_missing(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    cluster.delete("jobs", handle.namespace, handle.name)

    status = await runtime.status(handle, 7)

    assert status.phase is WorkloadPhase.MISSING
    assert status.handle == handle


async def test_a_foreign_handle_is_refused(runtime: KubernetesRuntime) -> None:
    with pytest.raises(WorkloadRuntimeError, match="not a Kubernetes workload"):
        await runtime.status(WorkloadHandle(runtime="local", name="codexk8s-run-1"), 1)


async def test_list_workloads_is_one_list_per_kind_over_managed_objects(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    first = await runtime.launch(make_spec(7))
    await runtime.launch(make_spec(8, lineage="demo/1/43/dev"))
    cluster.start_pod(first.namespace or "", first.name)
    # Someone else's Job with our label, outside our namespace prefix: not ours.
    cluster.create("namespaces", None, {"metadata": {"name": "elsewhere"}})
    cluster.create(
        "jobs",
        "elsewhere",
        {
            "metadata": {
                "name": "codexk8s-run-99",
                "labels": {"app.kubernetes.io/managed-by": "codexk8s", "codexk8s.io/run-id": "99"},
            },
            "spec": {},
        },
    )
    requests_before = len(list(api))

    statuses = {status.run_id: status for status in await runtime.list_workloads()}

    assert {run_id: s.phase for run_id, s in statuses.items()} == {
        7: WorkloadPhase.RUNNING,
        8: WorkloadPhase.PENDING,
    }
    made = list(api)[requests_before:]
    assert [request.url.path for request in made] == ["/apis/batch/v1/jobs", "/api/v1/pods"]
    assert all(
        request.params["labelSelector"] == "app.kubernetes.io/managed-by=codexk8s"
        for request in made
    )


async def test_cancel_deletes_the_job_then_its_pods_with_the_grace(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    cluster.start_pod(namespace, handle.name)

    await runtime.cancel(handle, grace_seconds=4.2)

    assert cluster.items("jobs") == []
    assert cluster.items("pods") == []
    deletes = [request for request in api if request.method.value == "DELETE"]
    assert [request.url.path for request in deletes] == [
        f"/apis/batch/v1/namespaces/{namespace}/jobs/{handle.name}",
        f"/api/v1/namespaces/{namespace}/pods/codexk8s-run-7-x7k2p",
    ]
    assert deletes[0].params == {"propagationPolicy": "Background", "gracePeriodSeconds": "5"}
    assert deletes[1].params == {"gracePeriodSeconds": "5"}


async def test_cancel_of_a_gone_job_is_fine(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    cluster.delete("jobs", handle.namespace, handle.name)

    await runtime.cancel(handle)  # no error


async def test_cleanup_deletes_the_namespace_and_tolerates_it_gone(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))

    await runtime.cleanup(handle)
    assert cluster.items("namespaces") == []
    assert cluster.objects == {}
    await runtime.cleanup(handle)  # 404 now: still fine

    deletes = [r for r in api if r.method.value == "DELETE"]
    assert len(deletes) == 2
    assert deletes[0].params == {"propagationPolicy": "Background"}


async def test_cleanup_refuses_namespaces_outside_the_prefix(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    cluster.create("namespaces", None, {"metadata": {"name": "kube-system"}})
    handle = WorkloadHandle(runtime="kubernetes", name="codexk8s-run-7", namespace="kube-system")

    with pytest.raises(WorkloadRuntimeError, match="refusing"):
        await runtime.cleanup(handle)
    assert cluster.get("namespaces", None, "kube-system") is not None


async def test_every_call_carries_a_timeout(api: FakeApiServer, sleeps: Sleeps) -> None:
    # A server that never answers must not hang the runtime.
    runtime = make_runtime(api, sleeps, request_timeout=0.3, retry=RetryPolicy())
    api.cluster.stalls[("GET", "jobs")] = [1.0] * 5
    try:
        with pytest.raises(WorkloadRuntimeError, match=r"ReadTimeoutError.*gave up after 5"):
            await runtime.list_workloads()
    finally:
        runtime.close()
    assert len(sleeps) == 4


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "t0k3n"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_from_settings_uses_the_kubeconfig(
    api: FakeApiServer, cluster: FakeCluster, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(api.url).rstrip("/"))
    settings = Settings(
        runtime="kubernetes", kubeconfig=kubeconfig, run_namespace_prefix="cx", port=8080,
        run_pod='{"nodeSelector": {"pool": "agents"}, "imagePullSecrets": ["pull"]}',
        control_plane_namespace="platform", run_egress_ports="443,22",
        cluster_cidrs="198.18.0.0/15", run_egress_allow="10.9.0.0/16:5000",
        cleanup_after_hours=2, control_plane_service_account="cp",
    )  # fmt: skip
    runtime = from_settings(settings, image_default=IMAGE, installation="inst-1")
    try:
        handle = await runtime.launch(make_spec(7))
    finally:
        runtime.close()

    assert handle.namespace is not None
    assert handle.namespace.startswith("cx-demo-")
    assert next(iter(api)).headers["Authorization"] == "Bearer t0k3n"
    job = cluster.get("jobs", handle.namespace, handle.name)
    assert job is not None
    assert job["metadata"]["labels"]["codexk8s.io/installation"] == "inst-1"
    assert job["spec"]["ttlSecondsAfterFinished"] == 2 * 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    policy = cluster.get("networkpolicies", handle.namespace, "codexk8s-run")
    assert policy is not None
    egress = policy["spec"]["egress"]
    assert egress[1]["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "platform"
    }
    assert egress[1]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert "198.18.0.0/15" in egress[2]["to"][0]["ipBlock"]["except"]
    assert [p["port"] for p in egress[2]["ports"]] == [443, 22]
    assert egress[3] == {
        "to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 5000}],
    }
    logs = cluster.get("rolebindings", handle.namespace, LOG_READER_ROLE_NAME)
    assert logs is not None
    assert logs["subjects"] == [{"kind": "ServiceAccount", "name": "cp", "namespace": "platform"}]


def test_from_settings_without_kubeconfig_outside_a_cluster_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match=r"^CODEXK8S_KUBECONFIG: "):
        from_settings(Settings(runtime="kubernetes"), image_default=IMAGE, installation="i")


def test_build_runtime_requires_an_agent_image() -> None:
    from codexk8s.adapters.runtimes import build_runtime

    with pytest.raises(ConfigError, match=r"^CODEXK8S_AGENT_IMAGE: required"):
        build_runtime(Settings(runtime="kubernetes"), installation="i")
