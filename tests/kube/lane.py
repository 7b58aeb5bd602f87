"""The control plane's identity on the lane's cluster, as `deploy/` ships it: used by the lane's
tests (tests/kube/test_runs.py) and its benchmark (bench/kube_lane.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import create_from_dict

from tests.kube.cluster import REPO, Cluster

CONTROL_PLANE = ("codexk8s", "codexk8s-control-plane")  # namespace, ServiceAccount


def deploy_rbac_documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted((REPO / "deploy" / "rbac").glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def deploy_control_plane_identity(cluster: Cluster, directory: Path) -> Path:
    """Apply deploy/rbac (ServiceAccount, ClusterRole and binding, admission policy) as admin and
    return a kubeconfig with a token of that ServiceAccount, once the policy is in force."""
    admin = cluster.admin_client()
    core = client.CoreV1Api(admin)
    namespace, account = CONTROL_PLANE
    try:
        core.create_namespace({"metadata": {"name": namespace}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    for doc in deploy_rbac_documents():
        try:
            create_from_dict(admin, doc)
        except Exception as exc:  # FailToCreateError wraps the ApiException
            if "AlreadyExists" not in str(exc):
                raise
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 4 * 3600}}
    ).status.token
    admin_config = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin_config["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": cluster_entry["name"], "user": account}}
        ],
        "current-context": account,
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    # The admission policy is enforced only once the API server has loaded it.
    deadline = time.monotonic() + 60
    while not _refused_outside(path):
        if time.monotonic() > deadline:
            raise AssertionError("the admission policy did not come into force within 60 s")
        time.sleep(0.5)
    return path


def configuration(kubeconfig: Path) -> client.Configuration:
    loaded = client.Configuration()
    kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=loaded)
    return loaded


def _refused_outside(kubeconfig: Path) -> bool:
    api = client.ApiClient(configuration(kubeconfig))
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": "not-a-run-namespace"}})
    except ApiException as exc:
        return exc.status in (403, 422) and "run namespaces" in (exc.body or "")
    else:
        core.delete_namespace("not-a-run-namespace")
        return False
    finally:
        api.close()
