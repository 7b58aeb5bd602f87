"""Pure builders of every Kubernetes object a run needs, as plain dicts (no I/O, no client).

Per run (or per revise lineage, which reuses one namespace) the runtime creates, in order:

- a Namespace `<prefix>-<project>-<lineage hash>` labelled managed-by/project/lineage/run-id;
- a ServiceAccount `codexk8s-agent` whose API token is never mounted
  (`automountServiceAccountToken: false`): the agent talks to the control plane with its run
  token and to GitHub and the model, never to the Kubernetes API;
- a Role and RoleBinding for that ServiceAccount with an explicitly empty rule set: least
  privilege is "nothing", in particular nothing on secrets, and the grant is declared in one
  auditable place. (An empty Role also keeps the control plane's own ClusterRole small: RBAC
  only lets a subject create a Role granting what it holds itself.);
- a RoleBinding `codexk8s-run-log-reader` of the ClusterRole of that name (pods/log: get) to the
  control plane's own ServiceAccount: the control plane reads logs only where it has bound this,
  i.e. in its run namespaces (see permissions.py);
- a ResourceQuota and a LimitRange that cap what the namespace can consume;
- a NetworkPolicy `codexk8s-run` that denies all ingress and allows only the egress a run needs
  (see `network_policy_manifest`): DNS, the control plane's pods (brief, events, model proxy)
  and HTTPS to public addresses. Codex runs with its own sandbox off because the pod is the
  sandbox, so the pod must not reach the cloud metadata endpoint, the API server or anything
  else inside the cluster;
- a Secret `codexk8s-run-<id>-credentials` holding only this run's `secret_env` values;
- the Job `codexk8s-run-<id>` (see `job_manifest` for its safety settings).

Every name is deterministic, so a second launch of the same run finds the same objects. Every
object carries the installation's id (`codexk8s.io/installation`): a control plane adopts only
what its own installation created, so two installations sharing a cluster (or a new database
next to an old cluster) never take each other's workloads for their own.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from codexk8s.adapters.kubernetes.permissions import LOG_READER_ROLE_NAME
from codexk8s.domain.runtime import PodProfile, WorkloadSpec, workload_name

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "codexk8s"
INSTALLATION_LABEL = "codexk8s.io/installation"
PROJECT_LABEL = "codexk8s.io/project"
RUN_ID_LABEL = "codexk8s.io/run-id"
LINEAGE_LABEL = "codexk8s.io/lineage"
COMPONENT_LABEL = "app.kubernetes.io/component"
# Set by the Job controller on the pods it creates (Kubernetes >= 1.27).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# The one selector every list and watch of this runtime uses.
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

SERVICE_ACCOUNT_NAME = "codexk8s-agent"
ROLE_NAME = "codexk8s-agent"
QUOTA_NAME = "codexk8s-run"
LIMIT_RANGE_NAME = "codexk8s-run"
NETWORK_POLICY_NAME = "codexk8s-run"
# Namespaces created by older versions carry this ingress-only policy; it allows nothing more
# than the current one, so it is left in place.
LEGACY_NETWORK_POLICY_NAME = "codexk8s-deny-ingress"
FIELD_MANAGER = "codexk8s"
CONTAINER_NAME = "agent"
WORKSPACE_PATH = "/workspace"
# A path inside the pod (an emptyDir of its own), not a temp file of the control plane.
TMP_PATH = "/tmp"  # noqa: S108

DNS_LABEL_MAX = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LINEAGE_HASH_CHARS = 10


@dataclass(frozen=True, slots=True)
class ServiceAccountRef:
    """A ServiceAccount by namespace and name; the defaults are deploy/'s control plane."""

    namespace: str = "codexk8s"
    name: str = "codexk8s-control-plane"

    @property
    def username(self) -> str:
        """The user name the API server authenticates this ServiceAccount's tokens as."""
        return f"system:serviceaccount:{self.namespace}:{self.name}"


@dataclass(frozen=True, slots=True)
class RunPodSettings:
    """Sizes and lifetimes applied to every run's pod and namespace.

    Quantities use the Kubernetes notation ("500m", "4Gi"). The namespace quota allows
    `quota_pods` pods of the per-container limits, so a revise run can start while the previous
    pod of its lineage is still terminating.
    """

    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"
    ephemeral_storage_request: str = "1Gi"
    ephemeral_storage_limit: str = "10Gi"
    quota_pods: int = 2
    # Long enough for a control plane that was down to still read the outcome and the logs;
    # the namespace TTL removes everything anyway.
    job_ttl_seconds_after_finished: int = 24 * 3600
    termination_grace_seconds: int = 30
    run_as_user: int = 10001
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    service_account_annotations: Mapping[str, str] = field(default_factory=dict)

    def with_profile(self, profile: PodProfile | None) -> RunPodSettings:
        """These settings with a pod profile (the installation's, an agent's) laid on top."""
        if profile is None:
            return self
        sizes = {
            f"{resource.replace('-', '_')}_{kind}": value
            for kind, values in (("request", profile.requests), ("limit", profile.limits))
            for resource, value in values.items()
        }
        return replace(
            self,
            **sizes,
            node_selector={**self.node_selector, **profile.node_selector},
            tolerations=profile.tolerations or self.tolerations,
            image_pull_secrets=profile.image_pull_secrets or self.image_pull_secrets,
            service_account_annotations={
                **self.service_account_annotations,
                **profile.service_account_annotations,
            },
        )

    def __post_init__(self) -> None:
        pairs = (
            ("cpu", self.cpu_request, self.cpu_limit),
            ("memory", self.memory_request, self.memory_limit),
            ("ephemeral-storage", self.ephemeral_storage_request, self.ephemeral_storage_limit),
        )
        for resource, request, limit in pairs:
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"{resource} request {request} exceeds its limit {limit}")
        if self.quota_pods < 1:
            raise ValueError("quota_pods must be at least 1")
        if self.run_as_user < 1:
            raise ValueError("run_as_user must be a non-root uid")


# Never reachable from a run pod through the internet rule, whatever the settings: private
# (RFC 1918), carrier-grade NAT (RFC 6598, also used by some clusters for pods), link-local
# (the cloud metadata endpoints 169.254.169.254 and fd00:ec2::254 live there) and loopback.
PRIVATE_IPV4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
PRIVATE_IPV6 = ("fc00::/7", "fe80::/10")


@dataclass(frozen=True, slots=True)
class EgressRule:
    """One extra destination run pods may reach: a CIDR, optionally one port and protocol."""

    cidr: str
    port: int | None = None
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class RunNetworkSettings:
    """What a run pod may reach (the egress half of its NetworkPolicy).

    `control_plane_*` select the control plane's pods (the run's callback and model proxy go
    there; the port is the pods' own, the one a Service forwards to). `dns_*` select the
    cluster DNS. `internet_ports` are the TCP ports open to public addresses: everything except
    PRIVATE_IPV4/IPV6 and `cluster_cidrs` (pod and service ranges outside those). `extra` lists
    more destinations (a proxy, an internal Git server, a NodeLocal DNS address).
    """

    control_plane_namespace: str = "codexk8s"
    control_plane_labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "codexk8s",
            "app.kubernetes.io/component": "control-plane",
        }
    )
    control_plane_port: int = 3000
    dns_namespace: str = "kube-system"
    dns_labels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    internet_ports: tuple[int, ...] = (443,)
    cluster_cidrs: tuple[str, ...] = ()
    extra: tuple[EgressRule, ...] = ()


def is_dns_label(value: str) -> bool:
    """Whether `value` is a DNS-1123 label (what namespace names must be)."""
    return len(value) <= DNS_LABEL_MAX and _DNS_LABEL.match(value) is not None


def lineage_hash(lineage: str) -> str:
    """A short, stable, label-safe digest of a lineage string (which may hold slashes)."""
    return hashlib.sha256(lineage.encode()).hexdigest()[:_LINEAGE_HASH_CHARS]


def _dns_part(value: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return re.sub(r"-{2,}", "-", cleaned) or "x"


def namespace_tail(spec: WorkloadSpec, installation: str = "") -> str:
    """The part of a run namespace's name (and lineage label) that tells lineages apart.

    With an installation id the digest covers it too, so two installations on one cluster never
    pick the same namespace for their own lineages (or for their own run 1).
    """
    if installation:
        return lineage_hash(f"{installation}/{spec.lineage or f'run-{spec.run_id}'}")
    return lineage_hash(spec.lineage) if spec.lineage else f"r{spec.run_id}"


def namespace_name(prefix: str, spec: WorkloadSpec, *, installation: str = "") -> str:
    """`<prefix>-<project>-<tail>`: a valid DNS-1123 label of at most 63 characters.

    Runs with the same lineage get the same namespace (revise runs reuse it); a run without a
    lineage gets its own. The project part is shortened first when the whole would be too
    long; the tail (`namespace_tail`) is never cut, so two lineages never collide because of
    truncation.
    """
    if not is_dns_label(prefix):
        raise ValueError(f"namespace prefix {prefix!r} is not a DNS-1123 label")
    tail = namespace_tail(spec, installation)
    room = DNS_LABEL_MAX - len(prefix) - len(tail) - 2
    if room < 1:
        raise ValueError(f"namespace prefix {prefix!r} is too long")
    project = _dns_part(spec.project_key)[:room].strip("-") or "x"
    return f"{prefix}-{project}-{tail}"


def _label_value(value: str) -> str:
    """Cut and clean a value so the API server accepts it as a label value."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:DNS_LABEL_MAX]
    cleaned = cleaned.strip("-_.")
    return cleaned if _LABEL_VALUE.match(cleaned) else ""


def namespace_labels(spec: WorkloadSpec, installation: str = "") -> dict[str, str]:
    """Labels of the namespace; `run-id` names the latest run launched into it."""
    stamp = {INSTALLATION_LABEL: installation} if installation else {}
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        **stamp,
        PROJECT_LABEL: _label_value(spec.project_key),
        LINEAGE_LABEL: namespace_tail(spec, installation),
        RUN_ID_LABEL: str(spec.run_id),
    }


def run_labels(spec: WorkloadSpec, installation: str = "") -> dict[str, str]:
    """Labels of the run's own objects (Job, pod, Secret); the watch keys on `run-id`."""
    extra = {
        key: _label_value(value)
        for key, value in spec.labels.items()
        # Our own labels are what the watch and the selectors rely on: never let them be
        # overridden by the caller's.
        if not key.startswith(("codexk8s.io/", "app.kubernetes.io/"))
    }
    return {
        **extra,
        **namespace_labels(spec, installation),
        COMPONENT_LABEL: "agent-run",
    }


def _metadata(name: str, namespace: str | None, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def namespace_manifest(
    namespace: str, spec: WorkloadSpec, *, installation: str = ""
) -> dict[str, Any]:
    # The Pod Security Admission labels make the API server itself refuse any pod in the run's
    # namespace that is less locked down than `restricted`, whoever creates it.
    labels = {
        **namespace_labels(spec, installation),
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(namespace, None, labels)}


def service_account_manifest(
    namespace: str,
    spec: WorkloadSpec,
    settings: RunPodSettings | None = None,
    *,
    installation: str = "",
) -> dict[str, Any]:
    """The agent's ServiceAccount; its annotations (workload identity: an IAM role, a Google
    service account) come from the pod settings."""
    metadata = _metadata(SERVICE_ACCOUNT_NAME, namespace, namespace_labels(spec, installation))
    if settings is not None and settings.service_account_annotations:
        metadata["annotations"] = dict(settings.service_account_annotations)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        "automountServiceAccountToken": False,
    }


def role_manifest(namespace: str, spec: WorkloadSpec, *, installation: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(ROLE_NAME, namespace, namespace_labels(spec, installation)),
        # Deliberately empty: the agent needs no Kubernetes API access (see module docstring).
        "rules": [],
    }


def role_binding_manifest(
    namespace: str, spec: WorkloadSpec, *, installation: str = ""
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(ROLE_NAME, namespace, namespace_labels(spec, installation)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
        "subjects": [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT_NAME, "namespace": namespace}
        ],
    }


def log_reader_binding_manifest(
    namespace: str, control_plane: ServiceAccountRef, *, installation: str = ""
) -> dict[str, Any]:
    """Lets the control plane's ServiceAccount read pod logs in this run namespace, and only here.

    Nothing in it depends on a run, so any launch (or a log reader finding it missing) applies
    the same object."""
    stamp = {INSTALLATION_LABEL: installation} if installation else {}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(
            LOG_READER_ROLE_NAME, namespace, {MANAGED_BY_LABEL: MANAGED_BY, **stamp}
        ),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": LOG_READER_ROLE_NAME,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": control_plane.name,
                "namespace": control_plane.namespace,
            }
        ],
    }


def _times(quantity: str, factor: int) -> str:
    value: Decimal = parse_quantity(quantity) * factor
    # Plain decimal numbers are valid quantities ("4", "8589934592", "0.5").
    return format(value.normalize(), "f")


def resource_quota_manifest(
    namespace: str, spec: WorkloadSpec, settings: RunPodSettings, *, installation: str = ""
) -> dict[str, Any]:
    pods = settings.quota_pods
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _metadata(QUOTA_NAME, namespace, namespace_labels(spec, installation)),
        "spec": {
            "hard": {
                "pods": str(pods),
                "requests.cpu": _times(settings.cpu_request, pods),
                "limits.cpu": _times(settings.cpu_limit, pods),
                "requests.memory": _times(settings.memory_request, pods),
                "limits.memory": _times(settings.memory_limit, pods),
                "requests.ephemeral-storage": _times(settings.ephemeral_storage_request, pods),
                "limits.ephemeral-storage": _times(settings.ephemeral_storage_limit, pods),
                # Nothing in a run namespace has a reason to expose or claim anything.
                "services": "0",
                "persistentvolumeclaims": "0",
            }
        },
    }


def limit_range_manifest(
    namespace: str, spec: WorkloadSpec, settings: RunPodSettings, *, installation: str = ""
) -> dict[str, Any]:
    limits = {
        "cpu": settings.cpu_limit,
        "memory": settings.memory_limit,
        "ephemeral-storage": settings.ephemeral_storage_limit,
    }
    requests = {
        "cpu": settings.cpu_request,
        "memory": settings.memory_request,
        "ephemeral-storage": settings.ephemeral_storage_request,
    }
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _metadata(LIMIT_RANGE_NAME, namespace, namespace_labels(spec, installation)),
        "spec": {
            "limits": [
                {"type": "Container", "default": limits, "defaultRequest": requests, "max": limits}
            ]
        },
    }


def _peer_port(port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": port}


def network_policy_manifest(
    namespace: str,
    spec: WorkloadSpec,
    network: RunNetworkSettings | None = None,
    *,
    installation: str = "",
) -> dict[str, Any]:
    """Ingress: none. Egress: only what a run needs.

    - DNS (UDP and TCP 53) to the cluster DNS pods;
    - the control plane's pods on their own port (the callback URL's Service forwards there);
    - `internet_ports` (TCP 443) to every address except private, carrier-grade NAT,
      link-local (cloud metadata) and the cluster's own ranges;
    - each `extra` rule.

    A NetworkPolicy is enforced by the cluster's network plugin; on a cluster whose plugin does
    not enforce policies (flannel alone, kind's default before v0.24) it is stored and ignored.
    """
    network = network or RunNetworkSettings()
    dns_ports = [_peer_port(53, "UDP"), _peer_port(53, "TCP")]
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": network.dns_namespace}
                    },
                    "podSelector": {"matchLabels": dict(network.dns_labels)},
                }
            ],
            "ports": dns_ports,
        },
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {
                            "kubernetes.io/metadata.name": network.control_plane_namespace
                        }
                    },
                    "podSelector": {"matchLabels": dict(network.control_plane_labels)},
                }
            ],
            "ports": [_peer_port(network.control_plane_port)],
        },
    ]
    if network.internet_ports:
        cluster_v4 = tuple(c for c in network.cluster_cidrs if ":" not in c)
        cluster_v6 = tuple(c for c in network.cluster_cidrs if ":" in c)
        egress.append(
            {
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE_IPV4, *cluster_v4]}},
                    {"ipBlock": {"cidr": "::/0", "except": [*PRIVATE_IPV6, *cluster_v6]}},
                ],
                "ports": [_peer_port(port) for port in network.internet_ports],
            }
        )
    for rule in network.extra:
        allowed: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
        if rule.port is not None:
            allowed["ports"] = [_peer_port(rule.port, rule.protocol)]
        egress.append(allowed)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(NETWORK_POLICY_NAME, namespace, namespace_labels(spec, installation)),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": egress},
    }


def secret_name(run_id: int) -> str:
    return f"{workload_name(run_id)}-credentials"


def secret_manifest(
    namespace: str,
    spec: WorkloadSpec,
    owner: Mapping[str, str] | None = None,
    *,
    installation: str = "",
) -> dict[str, Any]:
    """The run's credentials; `owner` (the Job's name and uid) lets Kubernetes delete the
    Secret together with the Job (on cancel, or when the Job's TTL expires)."""
    metadata = _metadata(secret_name(spec.run_id), namespace, run_labels(spec, installation))
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": "Job", "name": owner["name"], "uid": owner["uid"]}
        ]
    data = {
        key: base64.b64encode(value.encode()).decode() for key, value in spec.secret_env.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": data,
    }


def _env(spec: WorkloadSpec) -> list[dict[str, Any]]:
    # HOME and TMPDIR point into the writable volumes unless the agent's settings say otherwise.
    plain = {"HOME": WORKSPACE_PATH, "TMPDIR": TMP_PATH, **spec.env}
    env: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in plain.items() if key not in spec.secret_env
    ]
    # Credentials only ever appear in the pod spec as references; the values stay in the Secret.
    env += [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": secret_name(spec.run_id), "key": key}},
        }
        for key in spec.secret_env
    ]
    return env


def job_manifest(
    namespace: str,
    spec: WorkloadSpec,
    *,
    image: str,
    settings: RunPodSettings,
    installation: str = "",
) -> dict[str, Any]:
    """The run's Job: one pod, never retried, killed at the deadline, non-root and locked down.

    The root filesystem is read-only; the agent writes to its workspace (also HOME) and /tmp,
    both emptyDirs capped by the pod's ephemeral-storage limit.
    """
    if not spec.command:
        raise ValueError("the workload has no command")
    labels = run_labels(spec, installation)
    resources = {
        "requests": {
            "cpu": settings.cpu_request,
            "memory": settings.memory_request,
            "ephemeral-storage": settings.ephemeral_storage_request,
        },
        "limits": {
            "cpu": settings.cpu_limit,
            "memory": settings.memory_limit,
            "ephemeral-storage": settings.ephemeral_storage_limit,
        },
    }
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.command),
        "workingDir": WORKSPACE_PATH,
        "env": _env(spec),
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE_PATH},
            {"name": "tmp", "mountPath": TMP_PATH},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    uid = settings.run_as_user
    pod_spec = {
        "restartPolicy": "Never",
        "serviceAccountName": SERVICE_ACCOUNT_NAME,
        "automountServiceAccountToken": False,
        # Service links would put every Service of the namespace into the environment.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            # A fixed uid makes runAsNonRoot hold for images whose USER is a name or root.
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "workspace", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(workload_name(spec.run_id), namespace, labels),
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": spec.limit_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def run_manifests(
    namespace: str,
    spec: WorkloadSpec,
    *,
    image: str,
    settings: RunPodSettings,
    network: RunNetworkSettings | None = None,
    control_plane: ServiceAccountRef | None = None,
    installation: str = "",
) -> list[dict[str, Any]]:
    """Every object of one run, in creation order (the Job last: its pod needs the rest)."""
    stamp = {"installation": installation}
    return [
        namespace_manifest(namespace, spec, **stamp),
        service_account_manifest(namespace, spec, settings, **stamp),
        role_manifest(namespace, spec, **stamp),
        role_binding_manifest(namespace, spec, **stamp),
        log_reader_binding_manifest(namespace, control_plane or ServiceAccountRef(), **stamp),
        resource_quota_manifest(namespace, spec, settings, **stamp),
        limit_range_manifest(namespace, spec, settings, **stamp),
        network_policy_manifest(namespace, spec, network, **stamp),
        secret_manifest(namespace, spec, **stamp),
        job_manifest(namespace, spec, image=image, settings=settings, **stamp),
    ]
