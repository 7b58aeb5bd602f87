"""The cluster permissions the control plane needs for the Kubernetes runtime, and no more.

deploy/rbac/clusterrole.yaml grants exactly this list (a test compares them, and another checks
that the runtime's requests against a fake API server use exactly these verbs). Why each one:

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
  period); pods/log: get (follow a run's output);
- events: list (why the Job controller could not create a run's pod: FailedCreate).

Cluster-wide grants cannot be limited to namespaces by a prefix, so deploy/rbac also ships a
ValidatingAdmissionPolicy that makes the API server refuse this ServiceAccount's writes outside
codexk8s run namespaces (see docs/security.md).
"""

from __future__ import annotations

from typing import NamedTuple


class Permission(NamedTuple):
    api_group: str
    resource: str
    verbs: tuple[str, ...]


CLUSTER_ROLE_NAME = "codexk8s-control-plane"

PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "namespaces", ("create", "delete", "get", "list", "patch")),
    Permission("", "serviceaccounts", ("create", "patch")),
    Permission("", "resourcequotas", ("create", "patch")),
    Permission("", "limitranges", ("create", "patch")),
    Permission("", "secrets", ("create", "update")),
    Permission("", "pods", ("delete", "list", "watch")),
    Permission("", "pods/log", ("get",)),
    Permission("", "events", ("list",)),
    Permission("batch", "jobs", ("create", "delete", "get", "list", "watch")),
    Permission("rbac.authorization.k8s.io", "roles", ("create", "patch")),
    Permission("rbac.authorization.k8s.io", "rolebindings", ("create", "patch")),
    Permission("networking.k8s.io", "networkpolicies", ("create", "patch")),
)


def granted() -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) triple of PERMISSIONS."""
    return {(p.api_group, p.resource, verb) for p in PERMISSIONS for verb in p.verbs}
