"""Smoke tests of the kube lane: the control plane is real, secured, and drives Jobs end to end."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from tests.kube.cluster import NODE_NAMES, REPO, Cluster

pytestmark = pytest.mark.kube
T = TypeVar("T")


def eventually(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "agent", "image": "registry.invalid/agent:1", "args": ["run"]}
                    ],
                }
            },
        },
    }


def job_pod(core: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod:
    def find() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return pods[0] if pods else None

    return eventually(f"the pod of Job {job}", find)


def pod_phase(core: client.CoreV1Api, namespace: str, name: str, phase: str) -> client.V1Pod:
    def check() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == phase else None

    return eventually(f"pod {name} {phase}", check)


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, kind: str) -> Any:
    def check() -> Any:
        job = batch.read_namespaced_job(name, namespace)
        for cond in job.status.conditions or []:
            if cond.type == kind and cond.status == "True":
                return cond
        return None

    return eventually(f"Job {name} {kind}", check)


def test_version_is_the_built_release(kube_cluster: Cluster, kube_admin: client.ApiClient) -> None:
    gomod = (REPO / "tools/kube/kubernetes/go.mod").read_text()
    pinned = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v\S+)", gomod, re.M)
    assert pinned is not None
    info = client.VersionApi(kube_admin).get_code()
    assert info.git_version == pinned.group(1)
    assert (info.major, info.minor) == tuple(pinned.group(1)[1:].split(".")[:2])
    assert info.build_date.startswith("20"), info.build_date


def test_job_pod_runs_on_a_kwok_node_logs_and_completes(
    kube_cluster: Cluster, kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core, batch = client.CoreV1Api(kube_admin), client.BatchV1Api(kube_admin)
    batch.create_namespaced_job(kube_namespace, job_manifest("ok"))
    pod = job_pod(core, kube_namespace, "ok")
    pod = pod_phase(core, kube_namespace, pod.metadata.name, "Running")
    assert pod.spec.node_name in NODE_NAMES  # placed by the real scheduler
    assert pod.metadata.finalizers == ["batch.kubernetes.io/job-tracking"]
    # Admission gave it the namespace's default service account and a projected token.
    assert pod.spec.service_account_name == "default"
    assert any(v.projected for v in pod.spec.volumes or [])

    log = kube_cluster.pod_log(kube_namespace, pod.metadata.name)
    log.write("line 1", "line 2")
    stream = core.read_namespaced_pod_log(
        pod.metadata.name,
        kube_namespace,
        follow=True,
        timestamps=True,
        _preload_content=False,
        _request_timeout=(5, 30),
    )
    try:
        lines: list[str] = []
        buffer = b""
        chunks = stream.stream(64)
        for round_ in range(2):
            if round_ == 1:
                log.write("line 3 after the follow began")
            want = 2 if round_ == 0 else 3
            while len(lines) < want:
                buffer += next(chunks)
                *done, buffer = buffer.split(b"\n")
                lines += [d.decode() for d in done]
    finally:
        stream.close()  # a follow is never complete: drop the connection, not pool it
    texts = [line.split(" ", 1)[1] for line in lines]
    assert texts == ["line 1", "line 2", "line 3 after the follow began"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z ", line) for line in lines)

    kube_cluster.exit_pod(kube_namespace, pod.metadata.name, 0)
    job_condition(batch, kube_namespace, "ok", "Complete")
    done = core.read_namespaced_pod(pod.metadata.name, kube_namespace)
    assert done.status.phase == "Succeeded"
    assert done.status.container_statuses[0].state.terminated.exit_code == 0
    # The log stays readable after the end, without follow.
    assert core.read_namespaced_pod_log(pod.metadata.name, kube_namespace).splitlines() == texts


def test_job_pod_exit_code_fails_the_job(
    kube_cluster: Cluster, kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core, batch = client.CoreV1Api(kube_admin), client.BatchV1Api(kube_admin)
    batch.create_namespaced_job(kube_namespace, job_manifest("boom"))
    pod = job_pod(core, kube_namespace, "boom")
    pod_phase(core, kube_namespace, pod.metadata.name, "Running")
    kube_cluster.exit_pod(kube_namespace, pod.metadata.name, 3)
    failed = pod_phase(core, kube_namespace, pod.metadata.name, "Failed")
    terminated = failed.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    cond = job_condition(batch, kube_namespace, "boom", "Failed")
    assert cond.reason == "BackoffLimitExceeded"


def test_undriven_pods_keep_running_until_active_deadline(
    kube_cluster: Cluster, kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core, batch = client.CoreV1Api(kube_admin), client.BatchV1Api(kube_admin)
    batch.create_namespaced_job(kube_namespace, job_manifest("slow", activeDeadlineSeconds=6))
    pod = job_pod(core, kube_namespace, "slow")
    pod_phase(core, kube_namespace, pod.metadata.name, "Running")
    cond = job_condition(batch, kube_namespace, "slow", "Failed")
    assert cond.reason == "DeadlineExceeded"
    # Its pod was stopped and removed (kwok's pod-stop and pod-delete stages, finalizer handed
    # back by the Job controller).
    eventually(
        "the deadline-exceeded pod gone",
        lambda: not core.list_namespaced_pod(kube_namespace, label_selector="job-name=slow").items,
    )


def restricted_namespace(core: client.CoreV1Api, name: str) -> None:
    core.patch_namespace(
        name, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )


def test_pod_security_restricted_refuses_a_privileged_pod(
    kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin)
    restricted_namespace(core, kube_namespace)
    pod = {
        "metadata": {"name": "loose"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
    }
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_pod(kube_namespace, pod)
    assert caught.value.status == 403
    assert 'violates PodSecurity "restricted' in json.loads(caught.value.body)["message"]
    # The same pod made to fit `restricted` is admitted.
    pod["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    core.create_namespaced_pod(kube_namespace, pod)


def test_resource_quota_refuses_what_exceeds_it(
    kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin)
    # The root CA publisher puts one configmap (kube-root-ca.crt) into every namespace.
    eventually(
        "kube-root-ca.crt",
        lambda: core.list_namespaced_config_map(kube_namespace).items,
    )
    core.create_namespaced_resource_quota(
        kube_namespace, {"metadata": {"name": "cap"}, "spec": {"hard": {"configmaps": "2"}}}
    )
    # The quota controller computes the usage; admission enforces from then on.
    eventually(
        "quota usage computed",
        lambda: (
            (core.read_namespaced_resource_quota("cap", kube_namespace).status.used or {}).get(
                "configmaps"
            )
            == "1"
        ),
    )
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "first"}})
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "second"}})
    assert caught.value.status == 403
    assert "exceeded quota: cap" in json.loads(caught.value.body)["message"]


def test_rbac_refuses_a_user_without_bindings(
    kube_cluster: Cluster, kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    nobody = client.CoreV1Api(kube_cluster.user_client("lane-nobody"))
    with pytest.raises(client.ApiException) as caught:
        nobody.list_namespaced_pod(kube_namespace)
    assert caught.value.status == 403
    message = json.loads(caught.value.body)["message"]
    assert 'User "lane-nobody" cannot list resource "pods"' in message
    # Bound to the built-in `view` role in that namespace, the same user may list.
    rbac_group = "rbac.authorization.k8s.io"
    client.RbacAuthorizationV1Api(kube_admin).create_namespaced_role_binding(
        kube_namespace,
        {
            "metadata": {"name": "nobody-views"},
            "roleRef": {"apiGroup": rbac_group, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": rbac_group, "kind": "User", "name": "lane-nobody"}],
        },
    )
    assert nobody.list_namespaced_pod(kube_namespace).items == []
    with pytest.raises(client.ApiException) as caught:
        nobody.list_namespaced_pod("default")
    assert caught.value.status == 403


def test_namespace_deletion_terminates_then_disappears(
    kube_cluster: Cluster, kube_admin: client.ApiClient
) -> None:
    core, batch = client.CoreV1Api(kube_admin), client.BatchV1Api(kube_admin)
    name = "lane-doomed"
    core.create_namespace({"metadata": {"name": name}})
    batch.create_namespaced_job(name, job_manifest("work"))
    pod = job_pod(core, name, "work")
    pod_phase(core, name, pod.metadata.name, "Running")
    core.create_namespaced_config_map(name, {"metadata": {"name": "data"}})
    core.delete_namespace(name)
    assert core.read_namespace(name).status.phase == "Terminating"

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    eventually("the namespace gone", gone, timeout=90)


def test_apiserver_crash_compaction_and_restart(
    kube_cluster: Cluster, kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin)
    old_rv = core.list_namespaced_config_map(kube_namespace).metadata.resource_version
    for i in range(3):
        core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": f"cm-{i}"}})
    kube_cluster.kill_apiserver()
    revision = kube_cluster.compact_etcd()
    assert revision > int(old_rv)
    kube_cluster.start_apiserver()
    core = client.CoreV1Api(kube_cluster.admin_client())
    # A watch from before the compaction is told its resourceVersion is gone (410).
    resp = core.list_namespaced_config_map(
        kube_namespace,
        watch=True,
        resource_version=old_rv,
        _preload_content=False,
        _request_timeout=(5, 20),
    )
    try:
        first = json.loads(next(iter(resp.stream(amt=None))).split(b"\n")[0])
    except client.ApiException as exc:  # some versions answer 410 outright
        assert exc.status == 410
    else:
        assert first["type"] == "ERROR", first
        assert first["object"]["code"] == 410, first
    finally:
        resp.close()
    names = {c.metadata.name for c in core.list_namespaced_config_map(kube_namespace).items}
    assert {"cm-0", "cm-1", "cm-2"} <= names
    # The controllers rode out the outage: a new Job still gets a running pod.
    batch = client.BatchV1Api(kube_cluster.admin_client())
    batch.create_namespaced_job(kube_namespace, job_manifest("after"))
    pod = job_pod(core, kube_namespace, "after")
    pod_phase(core, kube_namespace, pod.metadata.name, "Running")


def test_controller_manager_crash_and_restart(
    kube_cluster: Cluster, kube_admin: client.ApiClient, kube_namespace: str
) -> None:
    core, batch = client.CoreV1Api(kube_admin), client.BatchV1Api(kube_admin)
    kube_cluster.kill_component("controller-manager")
    try:
        batch.create_namespaced_job(kube_namespace, job_manifest("orphan"))
        time.sleep(2)
        # Nobody runs the Job controller: no pod.
        assert not core.list_namespaced_pod(kube_namespace, label_selector="job-name=orphan").items
    finally:
        kube_cluster.start_component("controller-manager")
    pod = job_pod(core, kube_namespace, "orphan")
    pod_phase(core, kube_namespace, pod.metadata.name, "Running")


def test_component_logs_are_kept(kube_cluster: Cluster) -> None:
    for name in ("etcd", "apiserver", "controller-manager", "scheduler", "kwok"):
        log = Path(kube_cluster.components[name].log)
        assert log.stat().st_size > 0, name
