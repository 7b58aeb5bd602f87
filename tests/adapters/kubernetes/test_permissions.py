"""The ClusterRoles in deploy/ grant exactly the declared permissions, and those are exactly
what the runtime uses against the API server; the admission policy names the same identity,
prefix and roles as the code."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from codexk8s.adapters.kubernetes import manifests
from codexk8s.adapters.kubernetes.permissions import (
    CLUSTER_ROLE_NAME,
    LOG_READER_PERMISSIONS,
    LOG_READER_ROLE_NAME,
    PERMISSIONS,
    granted,
    rules,
)
from codexk8s.config import Settings
from codexk8s.domain.runtime import FailureReason
from tests.adapters.kubernetes.conftest import Sleeps, make_runtime, make_spec
from tests.adapters.kubernetes.fake_api import FakeApiServer, FakeCluster

RBAC_DIR = Path(__file__).resolve().parents[3] / "deploy" / "rbac"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(RBAC_DIR.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def only(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        doc
        for doc in documents()
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    return found


@pytest.mark.parametrize(
    ("name", "permissions"),
    [(CLUSTER_ROLE_NAME, PERMISSIONS), (LOG_READER_ROLE_NAME, LOG_READER_PERMISSIONS)],
)
def test_each_cluster_role_grants_exactly_the_declared_permissions(
    name: str, permissions: tuple[Any, ...]
) -> None:
    role = only("ClusterRole", name)
    assert role["rules"] == rules(permissions)
    assert all("*" not in part for triple in granted(permissions) for part in triple)


def test_the_control_plane_reads_no_secrets_and_no_logs_cluster_wide() -> None:
    secret_verbs = {verb for group, resource, verb in granted() if resource == "secrets"}
    assert secret_verbs == {"create", "update"}
    assert not {resource for _, resource, _ in granted()} & {"pods/log", "pods/exec"}
    # What it may bind is the log reader, by name, and nothing else.
    (bind,) = [p for p in PERMISSIONS if "bind" in p.verbs]
    assert bind == ("rbac.authorization.k8s.io", "clusterroles", ("bind",), (LOG_READER_ROLE_NAME,))
    assert granted(LOG_READER_PERMISSIONS) == {("", "pods/log", "get")}
    # Nothing binds the log reader cluster-wide: each run namespace binds it (the runtime).
    assert only("ClusterRoleBinding")["roleRef"]["name"] == CLUSTER_ROLE_NAME


def test_declarations_are_unique() -> None:
    keys = [(p.api_group, p.resource) for p in PERMISSIONS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("version", ["1.30", "1.34"])
def test_rbac_manifests_pass_the_official_schema(version: str) -> None:
    docs = documents()
    assert {doc["kind"] for doc in docs} == {
        "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    binding, account = only("ClusterRoleBinding"), only("ServiceAccount")
    assert binding["roleRef"]["name"] == CLUSTER_ROLE_NAME
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]


def test_the_admission_policy_fences_in_the_deployed_identity_and_the_default_prefix() -> None:
    """The policy names the same ServiceAccount the binding grants the ClusterRole to (which is
    the one the runtime binds the log reader to by default), the prefix the control plane uses
    by default, and the roles it may bind; the binding enforces it (Deny)."""
    policy = only("ValidatingAdmissionPolicy")
    binding = only("ValidatingAdmissionPolicyBinding")
    account = only("ServiceAccount")["metadata"]
    username = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    defaults = Settings()
    control_plane = manifests.ServiceAccountRef(
        defaults.control_plane_namespace, defaults.control_plane_service_account
    )
    assert control_plane == manifests.ServiceAccountRef()
    assert control_plane.username == username
    (condition,) = policy["spec"]["matchConditions"]
    assert f"'{username}'" in condition["expression"]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["prefix"] == f"'{defaults.run_namespace_prefix}-'"
    assert variables["agent"] == f"'{manifests.ROLE_NAME}'" == f"'{manifests.SERVICE_ACCOUNT_NAME}'"
    assert variables["logReader"] == f"'{LOG_READER_ROLE_NAME}'"
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"], "resources": ["*/*"],
        }
    ]  # fmt: skip


async def test_a_full_lifecycle_uses_exactly_the_declared_permissions(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    """Every verb the runtime sends is granted, and every grant is needed by some call."""
    runtime = make_runtime(api, sleeps, rejection_grace_seconds=0)
    stuck = await runtime.launch(make_spec(9, lineage="demo/1/43/dev"))
    job = cluster.get("jobs", stuck.namespace, stuck.name)
    assert job is not None
    cluster.add_event(stuck.namespace or "", job, "FailedCreate", "exceeded quota")
    assert (await runtime.status(stuck, 9)).reason is FailureReason.POD_REJECTED
    assert await runtime.list_leftovers()
    first = await runtime.launch(make_spec(7))
    await runtime.launch(make_spec(8))  # a revise run: adopts and relabels the namespace
    await runtime.launch(make_spec(8))  # a relaunch: adopts the Job, rewrites the Secret
    namespace = first.namespace or ""
    cluster.start_pod(namespace, first.name)
    cluster.write_log(namespace, "codexk8s-run-7-x7k2p", ("2026-03-01T10:00:00Z", "hello"))
    cluster.end_log(namespace, "codexk8s-run-7-x7k2p")
    async with aclosing(runtime.watch()) as stream:
        await asyncio.wait_for(anext(stream), timeout=5)
        await asyncio.sleep(0.1)  # let both watches open
    await runtime.status(first, 7)
    await runtime.list_workloads()
    assert [line.line async for line in runtime.stream_logs(first, follow=False)] == ["hello"]
    await runtime.cancel(first)
    await runtime.cleanup(first)
    runtime.close()

    used = set(api.verbs())
    # The log reader's grant holds in the run namespaces only, where the launch bound it.
    allowed = granted() | granted(LOG_READER_PERMISSIONS)
    assert used == allowed, {
        "used but not granted": used - allowed,
        "granted but never used": allowed - used,
    }
    log_reads = {r.url.path.split("/")[4] for r in api if r.url.path.endswith("/log")}
    assert log_reads == {namespace}
