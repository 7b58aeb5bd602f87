"""A fake Kubernetes API server for the runtime's tests: kmock serves real HTTP, this keeps state.

kmock (a real aiohttp server) receives every request the official client sends, records it and
lets tests inject responses (`api["post /api/v1/namespaces"][:1] << 429`). What kmock's own
emulator does not model, and the runtime depends on, lives here: resourceVersions and replay
from them (410 Gone once compacted), label selectors, PUT, namespaces that own their objects,
streamed pod logs honouring `sinceSeconds`, and streams that can be dropped on purpose.

There are no controllers: tests play the Job controller and the kubelet with `start_pod`,
`set_status`, `write_log` and `end_log`. Server-side apply (PATCH with
`application/apply-patch+yaml`) creates or replaces the object and records its field manager;
`add_event` records an event that `fieldSelector` lists find. Query parameters of every request
are kept (`requests_with`), so tests can check `fieldValidation` and `resourceVersion`. Pod
logs are served only in namespaces holding a RoleBinding of the ClusterRole `log_reader`
(else 403), as deploy/rbac's RBAC does; `log_reader = None` serves them everywhere.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import kmock
from kmock._internal import parsing as kmock_parsing

from codexk8s.adapters.kubernetes.permissions import LOG_READER_ROLE_NAME

Obj = dict[str, Any]

# plural -> (apiVersion, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "namespaces": ("v1", "Namespace", False),
    "serviceaccounts": ("v1", "ServiceAccount", True),
    "secrets": ("v1", "Secret", True),
    "pods": ("v1", "Pod", True),
    "resourcequotas": ("v1", "ResourceQuota", True),
    "limitranges": ("v1", "LimitRange", True),
    "jobs": ("batch/v1", "Job", True),
    "roles": ("rbac.authorization.k8s.io/v1", "Role", True),
    "rolebindings": ("rbac.authorization.k8s.io/v1", "RoleBinding", True),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy", True),
    "events": ("v1", "Event", True),
}
APPLY_PATCH = "application/apply-patch+yaml"
RBAC_GROUP = "rbac.authorization.k8s.io"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
DROP_CLEAN = "drop-clean"
DROP_ABRUPT = "drop-abrupt"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(moment: datetime, nanos: int = 0) -> str:
    """An RFC3339Nano timestamp as the kubelet writes it (trailing zeros dropped)."""
    base = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


def _stamp_seconds(value: str) -> float:
    base, _, rest = value.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(base).replace(tzinfo=UTC)
    return moment.timestamp() + (int(rest.ljust(9, "0")) / 1e9 if rest else 0.0)


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path addresses (kmock 0.8 cannot parse /api/v1/namespaces itself)."""

    group: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @classmethod
    def parse(cls, path: str) -> Route | None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, rest = parts[1], parts[3:]
        else:
            return None
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        return cls(
            group=group,
            plural=rest[0],
            namespace=namespace,
            name=rest[1] if len(rest) > 1 else None,
            subresource="/".join(rest[2:]) or None,
        )

    @property
    def verb_resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


def rbac_verb(request: kmock.Request) -> tuple[str, str, str] | None:
    """(apiGroup, resource, verb) that RBAC would check for this request."""
    route = Route.parse(request.url.path)
    if route is None:
        return None
    method = request.method.value
    if method == "GET":
        verb = (
            "watch" if request.params.get("watch") == "true" else ("get" if route.name else "list")
        )
    elif method == "DELETE":
        verb = "delete" if route.name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    return route.group, route.verb_resource, verb


def _selector(value: str | None) -> dict[str, str]:
    if not value:
        return {}
    return dict(term.split("=", 1) for term in value.split(","))


def _matches(obj: Obj, selector: Mapping[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _field(obj: Obj, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, Mapping) else None
    return obj


def _fields_match(obj: Obj, selector: str | None) -> bool:
    """A fieldSelector of `a.b=value` terms (what the runtime sends for events)."""
    return all(
        str(_field(obj, path)) == value
        for path, value in (term.split("=", 1) for term in (selector or "").split(",") if term)
    )


def _merge(target: Obj, patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def kube_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


@dataclass
class _Watch:
    plural: str
    namespace: str | None
    selector: dict[str, str]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


@dataclass
class PodLog:
    lines: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # For the next follow streams opened: after how many lines to cut them.
    cuts: list[int] = field(default_factory=list)


class FakeCluster:
    """The objects, history and streams behind the fake API server."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.revision = 1000
        self.history: list[tuple[int, str, str, Obj]] = []
        self.compacted = 0
        self.watches: list[_Watch] = []
        self.logs: dict[tuple[str, str], PodLog] = {}
        # (method, plural) -> seconds to stall after applying each of the next such requests
        self.stalls: dict[tuple[str, str], list[float]] = {}
        self.api: FakeApiServer | None = None
        # The ClusterRole whose RoleBinding in a namespace lets the caller read logs there.
        self.log_reader: str | None = LOG_READER_ROLE_NAME

    # -- object store ------------------------------------------------------------------------

    def _key(self, plural: str, namespace: str | None, name: str) -> tuple[str, str, str]:
        return plural, namespace or "", name

    def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        return self.objects.get(self._key(plural, namespace, name))

    def items(self, plural: str, namespace: str | None = None) -> list[Obj]:
        return [
            obj
            for (kind, ns, _), obj in self.objects.items()
            if kind == plural and (namespace is None or ns == namespace)
        ]

    def _bump(self, obj: Obj) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)

    def _emit(self, plural: str, event_type: str, obj: Obj) -> None:
        snapshot = copy.deepcopy(obj)
        self.history.append((self.revision, plural, event_type, snapshot))
        namespace = obj["metadata"].get("namespace")
        for watch in self.watches:
            if watch.plural != plural or not _matches(obj, watch.selector):
                continue
            if watch.namespace is None or watch.namespace == namespace:
                watch.queue.put_nowait({"type": event_type, "object": snapshot})

    def create(self, plural: str, namespace: str | None, body: Obj) -> Obj:
        api_version, kind, namespaced = RESOURCES[plural]
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise kube_error(422, "Invalid", "metadata.name is required")
        if namespaced:
            ns = self.get("namespaces", None, namespace or "")
            if ns is None:
                raise kube_error(404, "NotFound", f'namespaces "{namespace}" not found')
            if ns.get("status", {}).get("phase") == "Terminating":
                raise kube_error(403, "Forbidden", f"namespace {namespace} is being terminated")
            meta["namespace"] = namespace
        key = self._key(plural, namespace if namespaced else None, name)
        if key in self.objects:
            raise kube_error(409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        self._bump(obj)
        self.objects[key] = obj
        self._emit(plural, "ADDED", obj)
        return obj

    def _existing(self, plural: str, namespace: str | None, name: str) -> Obj:
        obj = self.get(plural, namespace, name)
        if obj is None:
            raise kube_error(404, "NotFound", f'{plural} "{name}" not found')
        return obj

    def replace(self, plural: str, namespace: str | None, name: str, body: Obj) -> Obj:
        old = self._existing(plural, namespace, name)
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise kube_error(409, "Conflict", "the object has been modified")
        obj = copy.deepcopy(body)
        for kept in ("uid", "creationTimestamp", "namespace"):
            if kept in old["metadata"]:
                obj["metadata"][kept] = old["metadata"][kept]
        if "status" in old:
            obj["status"] = old["status"]
        self._bump(obj)
        self.objects[self._key(plural, namespace, name)] = obj
        self._emit(plural, "MODIFIED", obj)
        return obj

    def patch(self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]) -> Obj:
        obj = self._existing(plural, namespace, name)
        _merge(obj, patch)
        self._bump(obj)
        self._emit(plural, "MODIFIED", obj)
        return obj

    def delete(self, plural: str, namespace: str | None, name: str) -> Obj:
        obj = self._existing(plural, namespace, name)
        if plural == "namespaces":
            for key in [k for k in self.objects if k[1] == name and k[0] != "namespaces"]:
                self.delete(key[0], name, key[2])
        del self.objects[self._key(plural, namespace, name)]
        if plural == "pods":
            self.end_log(namespace or "", name)  # its container is gone, so is its output
        self._bump(obj)
        self._emit(plural, "DELETED", obj)
        return obj

    def apply(self, plural: str, namespace: str | None, name: str, body: Obj, manager: str) -> Obj:
        """Server-side apply: create the object, or replace what the body names."""
        obj = copy.deepcopy(body)
        obj.setdefault("metadata", {})["name"] = name
        obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply"}]
        if self.get(plural, namespace, name) is None:
            return self.create(plural, namespace, obj)
        return self.replace(plural, namespace, name, obj)

    def add_event(self, namespace: str, involved: Obj, reason: str, message: str) -> Obj:
        """An event about INVOLVED (an object of the store), as a controller records one."""
        meta = involved["metadata"]
        return self.create(
            "events",
            namespace,
            {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:10]}"},
                "involvedObject": {
                    "kind": involved.get("kind"),
                    "name": meta["name"],
                    "namespace": namespace,
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "lastTimestamp": now_rfc3339(),
            },
        )

    def listing(
        self,
        plural: str,
        namespace: str | None,
        selector: Mapping[str, str],
        field_selector: str | None = None,
    ) -> Obj:
        api_version, kind, _ = RESOURCES[plural]
        items = [
            copy.deepcopy(o)
            for o in self.items(plural, namespace)
            if _matches(o, selector) and _fields_match(o, field_selector)
        ]
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    # -- what controllers and kubelets would do ---------------------------------------------

    def start_pod(
        self,
        namespace: str,
        job_name: str,
        *,
        name: str | None = None,
        phase: str = "Running",
        state: Obj | None = None,
        created: datetime | None = None,
    ) -> Obj:
        job = self._existing("jobs", namespace, job_name)
        template = job["spec"]["template"]
        labels = {**template["metadata"]["labels"], JOB_NAME_LABEL: job_name, "job-name": job_name}
        pod = self.create(
            "pods",
            namespace,
            {
                "metadata": {"name": name or f"{job_name}-x7k2p", "labels": labels},
                "spec": copy.deepcopy(template["spec"]),
            },
        )
        if created is not None:
            pod["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        container = {"name": "agent", "state": state or {"running": {"startedAt": now_rfc3339()}}}
        return self.patch(
            "pods",
            namespace,
            pod["metadata"]["name"],
            {"status": {"phase": phase, "containerStatuses": [container]}},
        )

    def set_status(self, plural: str, namespace: str, name: str, status: Obj) -> Obj:
        obj = self._existing(plural, namespace, name)
        obj["status"] = copy.deepcopy(status)
        self._bump(obj)
        self._emit(plural, "MODIFIED", obj)
        return obj

    def compact(self) -> None:
        """Forget every position so far: watches resuming from one get 410 Gone."""
        self.compacted = self.revision

    def drop_watches(self, *, abrupt: bool) -> None:
        for watch in self.watches:
            watch.queue.put_nowait(DROP_ABRUPT if abrupt else DROP_CLEAN)

    def pod_log(self, namespace: str, pod: str) -> PodLog:
        return self.logs.setdefault((namespace, pod), PodLog())

    def write_log(self, namespace: str, pod: str, *lines: tuple[str, str]) -> None:
        log = self.pod_log(namespace, pod)
        log.lines.extend(lines)
        log.changed.set()

    def end_log(self, namespace: str, pod: str) -> None:
        log = self.pod_log(namespace, pod)
        log.ended = True
        log.changed.set()

    def close_streams(self) -> None:
        self.drop_watches(abrupt=False)
        for log in self.logs.values():
            log.ended = True
            log.changed.set()

    # -- HTTP --------------------------------------------------------------------------------

    async def serve(self, request: kmock.Request) -> Any:
        route = Route.parse(request.url.path)
        if route is None or route.plural not in RESOURCES:
            raise kube_error(404, "NotFound", f"no such resource: {request.url.path}")
        method = request.method.value
        params = request.params
        if method == "GET" and params.get("watch") == "true":
            return self._watch(route, params, request)
        if method == "GET" and route.subresource == "log":
            return self._log(route, params, request)
        if method == "PATCH" and request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
            manager = params.get("fieldManager")
            if not manager:
                raise kube_error(422, "Invalid", "fieldManager is required for apply")
            if not route.name:
                raise kube_error(405, "MethodNotAllowed", "apply needs a name")
            body = request.data if isinstance(request.data, dict) else {}
            result = self.apply(route.plural, route.namespace, route.name, body, manager)
        else:
            result = self._apply(method, route, request.data, params)
        stalls = self.stalls.get((method, route.plural))
        if stalls:
            await asyncio.sleep(stalls.pop(0))
        return result

    def _apply(self, method: str, route: Route, data: Any, params: Mapping[str, str]) -> Obj:
        namespace, name, plural = route.namespace, route.name, route.plural
        if method == "GET" and name:
            return self._existing(plural, namespace, name)
        if method == "GET":
            return self.listing(
                plural,
                namespace,
                _selector(params.get("labelSelector")),
                params.get("fieldSelector"),
            )
        if method == "POST":
            return self.create(plural, namespace, data)
        if method == "PUT" and name:
            return self.replace(plural, namespace, name, data)
        if method == "PATCH" and name:
            return self.patch(plural, namespace, name, data)
        if method == "DELETE" and name:
            return self.delete(plural, namespace, name)
        raise kube_error(405, "MethodNotAllowed", f"{method} {route}")

    async def _watch(
        self, route: Route, params: Mapping[str, str], request: kmock.Request
    ) -> AsyncIterator[Any]:
        # Send the headers at once, as an API server does, even before the first event.
        yield b""
        position = params.get("resourceVersion")
        selector = _selector(params.get("labelSelector"))
        if position and int(position) < self.compacted:
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {position}",
                },
            }
            return
        watch = _Watch(route.plural, route.namespace, selector)
        if position:
            backlog = [
                {"type": event_type, "object": obj}
                for revision, plural, event_type, obj in self.history
                if revision > int(position) and plural == route.plural and _matches(obj, selector)
            ]
        else:
            backlog = [
                {"type": "ADDED", "object": copy.deepcopy(obj)}
                for obj in self.items(route.plural, route.namespace)
                if _matches(obj, selector)
            ]
        self.watches.append(watch)
        try:
            for event in backlog:
                yield event
            while True:
                event = await watch.queue.get()
                if event == DROP_CLEAN:
                    return
                if event == DROP_ABRUPT:
                    _cut(request)
                    return
                yield event
        finally:
            self.watches.remove(watch)

    def _log(
        self, route: Route, params: Mapping[str, str], request: kmock.Request
    ) -> AsyncIterator[bytes]:
        namespace, pod = route.namespace or "", route.name or ""
        if self.log_reader is not None and not any(
            binding["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "ClusterRole",
                                   "name": self.log_reader}
            for binding in self.items("rolebindings", namespace)
        ):  # fmt: skip
            raise kube_error(403, "Forbidden", f"cannot get resource pods/log in {namespace}")
        self._existing("pods", namespace, pod)
        return self._log_stream(self.pod_log(namespace, pod), params, request)

    async def _log_stream(
        self, log: PodLog, params: Mapping[str, str], request: kmock.Request
    ) -> AsyncIterator[bytes]:
        follow = params.get("follow") == "true"
        since = params.get("sinceSeconds")
        cutoff = (datetime.now(UTC) - timedelta(seconds=int(since))).timestamp() if since else None
        cut_after = log.cuts.pop(0) if follow and log.cuts else None
        yield b""
        sent = 0
        position = 0
        while True:
            while position < len(log.lines):
                moment, text = log.lines[position]
                position += 1
                if cutoff is not None and _stamp_seconds(moment) < cutoff:
                    continue
                if cut_after is not None and sent >= cut_after:
                    _cut(request)
                    return
                stamp_prefix = f"{moment} " if params.get("timestamps") == "true" else ""
                yield f"{stamp_prefix}{text}\n".encode()
                sent += 1
            if not follow or log.ended:
                return
            log.changed.clear()
            await log.changed.wait()


def _cut(request: kmock.Request) -> None:
    """Drop the connection mid-stream, without the terminating chunk: what a broken link does."""
    raw = request._raw_request
    if raw is not None and raw.transport is not None:
        raw.transport.abort()


def tolerant_parse_path(path: str) -> Any:
    # kmock 0.8 raises on the cluster-scoped collection /api/v1/namespaces; the fake routes
    # requests itself (Route), so kmock only needs not to crash on it.
    try:
        return ORIGINAL_PARSE_PATH(path)
    except ValueError:
        return kmock_parsing.ParsedPath(group="", version="v1", plural="namespaces")


ORIGINAL_PARSE_PATH: Callable[[str], Any] = kmock_parsing.parse_path


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold (discovery, error rendering) routing resources to a cluster."""

    cluster: FakeCluster = attrs.field(factory=FakeCluster)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.cluster.api = self
        self.fallback[self._is_resource] << self.cluster.serve

    @staticmethod
    def _is_resource(request: kmock.Request) -> bool:
        route = Route.parse(request.url.path)
        return route is not None and route.plural in RESOURCES

    def verbs(self) -> Iterator[tuple[str, str, str]]:
        for request in list(self):
            verb = rbac_verb(request)
            if verb is not None:
                yield verb
                if request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
                    # A server-side apply that creates its object is authorized as `create`
                    # too (what the kube lane's API server answered without it: 403).
                    yield verb[0], verb[1], "create"
                role = (request.data or {}).get("roleRef") if verb[1] == "rolebindings" else None
                if role and role.get("kind") == "ClusterRole":
                    # Binding a ClusterRole the requester does not hold is authorized as `bind`
                    # on it (RBAC escalation rules; the agent's empty Role needs no such grant).
                    yield RBAC_GROUP, "clusterroles", "bind"

    def requests_with(self, method: str, plural: str) -> list[Mapping[str, str]]:
        """The query parameters of every METHOD request on PLURAL so far."""
        found = []
        for request in list(self):
            route = Route.parse(request.url.path)
            if route is not None and route.plural == plural and request.method.value == method:
                found.append(dict(request.params))
        return found
