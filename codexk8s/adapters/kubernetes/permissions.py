"""The cluster permissions the control plane needs for the Kubernetes runtime, and no more.

deploy/rbac/clusterrole.yaml grants exactly PERMISSIONS, and deploy/rbac/run-log-reader.yaml
holds exactly LOG_READER_PERMISSIONS (a test compares each pair, and another checks that the
runtime's requests against a fake API server use exactly these verbs). Why each one:

- namespaces: create (launch), get (adopt a lineage's namespace: is it ours, is it
  terminating), patch (label it with the latest run id), delete (cleanup), list (find run
  namespaces that no stored run points to, by label);
- serviceaccounts, roles, rolebindings, resourcequotas, limitranges, networkpolicies: create
  and patch, as server-side apply: created the first time (an apply that creates is authorized
  as `create` too), brought up to date in a lineage's namespace after an upgrade, never read.
  The agent's Role is empty, so applying it and its binding needs no further rights (RBAC
  escalation checks);
- secrets: create and update, never get/list/watch: the control plane writes a run's
  credentials (update: a relaunch's new token, the Job as owner) but cannot read any Secret;
- jobs: create, get (status, adopt on relaunch), list and watch (across namespaces, by label),
  delete (cancel);
- pods: list and watch (status reasons, finding a Job's pod), delete (cancel with a grace
  period);
- events: list (why the Job controller could not create a run's pod: FailedCreate);
- clusterroles: bind, on the run log reader only (below).

Logs are not read through the cluster-wide grant. pods/log: get is the whole of a second
ClusterRole, LOG_READER_ROLE_NAME, that nothing binds cluster-wide: each run namespace gets a
RoleBinding of it to the control plane's own ServiceAccount (manifests.log_reader_binding_manifest,
applied with the run's other objects), so the control plane reads the logs of its run pods and of
no other pod. Binding a role one does not hold needs `bind` on it (RBAC escalation rules), hence
that one grant.

Cluster-wide grants cannot be limited to namespaces by a prefix, so deploy/rbac also ships a
ValidatingAdmissionPolicy that makes the API server refuse this ServiceAccount's writes outside
codexk8s run namespaces, and any Role or RoleBinding it writes other than the agent's empty
Role, its binding to the agent, and the log reader bound to the control plane itself (see
docs/security.md).
"""

from __future__ import annotations

from typing import NamedTuple


class Permission(NamedTuple):
    api_group: str
    resource: str
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()


CLUSTER_ROLE_NAME = "codexk8s-control-plane"
LOG_READER_ROLE_NAME = "codexk8s-run-log-reader"

PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "namespaces", ("create", "delete", "get", "list", "patch")),
    Permission("", "serviceaccounts", ("create", "patch")),
    Permission("", "resourcequotas", ("create", "patch")),
    Permission("", "limitranges", ("create", "patch")),
    Permission("", "secrets", ("create", "update")),
    Permission("", "pods", ("delete", "list", "watch")),
    Permission("", "events", ("list",)),
    Permission("batch", "jobs", ("create", "delete", "get", "list", "watch")),
    Permission("rbac.authorization.k8s.io", "roles", ("create", "patch")),
    Permission("rbac.authorization.k8s.io", "rolebindings", ("create", "patch")),
    Permission("networking.k8s.io", "networkpolicies", ("create", "patch")),
    Permission("rbac.authorization.k8s.io", "clusterroles", ("bind",), (LOG_READER_ROLE_NAME,)),
)

# The run log reader: bound in each run namespace only, never cluster-wide.
LOG_READER_PERMISSIONS: tuple[Permission, ...] = (Permission("", "pods/log", ("get",)),)


def granted(permissions: tuple[Permission, ...] = PERMISSIONS) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) triple of PERMISSIONS (or of another list)."""
    return {(p.api_group, p.resource, verb) for p in permissions for verb in p.verbs}


def rules(permissions: tuple[Permission, ...]) -> list[dict[str, list[str]]]:
    """The ClusterRole rules that grant `permissions`, as deploy/rbac writes them."""
    return [
        {
            "apiGroups": [p.api_group],
            "resources": [p.resource],
            **({"resourceNames": list(p.resource_names)} if p.resource_names else {}),
            "verbs": list(p.verbs),
        }
        for p in permissions
    ]
