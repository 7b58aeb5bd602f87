"""`KubernetesRuntime`: runs each agent run as a Job in its own (or its lineage's) namespace.

launch() creates, or adopts when they exist already (HTTP 409), the objects manifests.py
builds, in order, and returns the Job's handle. Adoption rules: the namespace must carry
`app.kubernetes.io/managed-by=codexk8s`, the same project and this installation's id; one that
is still being deleted makes the launch wait (`WorkloadDeferredError`: the run is requeued). It
gets the new run id as its `run-id` label. The ServiceAccount, Role, RoleBinding, the log
reader's RoleBinding (the control plane's own right to read logs there), quota, LimitRange and
NetworkPolicy are applied server-side with the field manager `codexk8s`, so a lineage's
namespace follows the current settings after an upgrade. The Secret is replaced,
because a relaunch may carry a new run token. The Job, named `workload_name(run_id)`, is
adopted as it is only when it is stamped with this installation and run: never a second Job
for one run, never another installation's Job. Once the Job exists, the Secret gets the Job as
owner, so Kubernetes deletes the run's credentials together with its Job. A launch that fails
before its Job exists deletes the namespace if it created it (a failed launch returns no
handle, so no cleanup would find it); a lineage's existing namespace is left alone. Creates and
applies ask for strict field validation: a field the API server does not know is an error, not
silently dropped.

status() reads one Job and its pods; list_workloads() lists this installation's Jobs and pods
once across namespaces (from the API server's watch cache); for a Job without a pod after the
rejection grace it reads the Job's `FailedCreate` events, so a pod that admission refuses fails
the run with the refusal instead of holding the slot until the deadline. watch() is watch.py's
two-kind watch; stream_logs() is logs.py's follower: a log read refused (403) applies the log
reader's RoleBinding once and tries again, for runs launched before there was one (a namespace
from an older release whose next launch has not come yet). cancel() deletes the Job
(background propagation) and then its pods with the given grace period, because the grace
period of a Job's own deletion does not reach its pods. cancel() and cleanup() refuse any
namespace outside this runtime's prefix; cleanup() deletes the run's namespace.
list_leftovers() lists this installation's run namespaces, so the control loop can remove those
no stored run points to.

Every API call has a timeout and goes through client.ApiCaller (retries on 429/5xx/timeouts).
Errors the control loop should record surface as `WorkloadRuntimeError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from codexk8s.adapters.kubernetes import manifests
from codexk8s.adapters.kubernetes.client import ApiCaller, RetryPolicy, Sleep, describe
from codexk8s.adapters.kubernetes.logs import PodLogStreamer
from codexk8s.adapters.kubernetes.manifests import (
    FIELD_MANAGER,
    INSTALLATION_LABEL,
    JOB_NAME_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    PROJECT_LABEL,
    EgressRule,
    RunNetworkSettings,
    RunPodSettings,
    ServiceAccountRef,
)
from codexk8s.adapters.kubernetes.status import (
    DEFAULT_STARTUP_GRACE_SECONDS,
    RUNTIME_NAME,
    dig,
    handle_of,
    parse_time,
    run_id_of,
    workload_status,
)
from codexk8s.adapters.kubernetes.watch import WorkloadWatcher, pods_by_run
from codexk8s.config import (
    ENV_PREFIX,
    ConfigError,
    Settings,
    parse_cidrs,
    parse_dns,
    parse_egress_rules,
    parse_labels,
    parse_ports,
)
from codexk8s.domain.runtime import (
    Leftover,
    LogLine,
    WorkloadDeferredError,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadRuntimeError,
    WorkloadSpec,
    WorkloadStatus,
    workload_name,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"
STRICT = "Strict"
# Reads served from the API server's watch cache (no quorum read of etcd): the periodic lists.
FROM_CACHE = "0"
# How long a namespace still being deleted keeps a launch waiting before it is tried again.
TERMINATING_RETRY_SECONDS = 15.0
DEFAULT_REJECTION_GRACE_SECONDS = 60.0


class KubernetesRuntime:
    """The Runtime protocol on a Kubernetes cluster, through the official client."""

    name = RUNTIME_NAME

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        namespace_prefix: str,
        image_default: str,
        request_timeout: float = 30,
        connect_timeout: float = 10,
        pod_settings: RunPodSettings | None = None,
        retry: RetryPolicy | None = None,
        watch_timeout_seconds: int = 300,
        log_read_timeout: float = 300,
        log_poll_interval: float = 2.0,
        log_resume_margin_seconds: float = 30,
        startup_grace_seconds: float = DEFAULT_STARTUP_GRACE_SECONDS,
        rejection_grace_seconds: float = DEFAULT_REJECTION_GRACE_SECONDS,
        stream_workers: int = 256,
        watch_workers: int = 4,
        installation: str = "",
        network: RunNetworkSettings | None = None,
        control_plane: ServiceAccountRef | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not manifests.is_dns_label(namespace_prefix):
            raise ValueError(f"namespace prefix {namespace_prefix!r} is not a DNS-1123 label")
        # Stamped on every object and part of every selector: this control plane sees and adopts
        # only what its own installation (database) created.
        self.installation = installation
        self.selector = MANAGED_SELECTOR + (
            f",{INSTALLATION_LABEL}={installation}" if installation else ""
        )
        self.network = network or RunNetworkSettings()
        # Whom each run namespace lets read its pods' logs: the control plane's own identity.
        self.control_plane = control_plane or ServiceAccountRef()
        self._api_client = api_client
        self._core = k8s.CoreV1Api(api_client)
        self._batch = k8s.BatchV1Api(api_client)
        self._rbac = k8s.RbacAuthorizationV1Api(api_client)
        self._networking = k8s.NetworkingV1Api(api_client)
        self.namespace_prefix = namespace_prefix
        self.image_default = image_default
        self.pod_settings = pod_settings or RunPodSettings()
        self._watch_timeout = watch_timeout_seconds
        self._log_read_timeout = log_read_timeout
        self._log_poll_interval = log_poll_interval
        self._log_margin = log_resume_margin_seconds
        self._startup_grace = startup_grace_seconds
        self._rejection_grace = rejection_grace_seconds
        # Log follows and watches each on their own pool (see client.py).
        self._stream_executor = ThreadPoolExecutor(
            max_workers=stream_workers, thread_name_prefix="codexk8s-k8s-logs"
        )
        self._watch_executor = ThreadPoolExecutor(
            max_workers=watch_workers, thread_name_prefix="codexk8s-k8s-watch"
        )
        self._caller = ApiCaller(
            request_timeout=request_timeout,
            connect_timeout=connect_timeout,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            stream_executor=self._stream_executor,
            watch_executor=self._watch_executor,
        )

    def close(self) -> None:
        """Release the stream threads and the client's connections."""
        self._stream_executor.shutdown(wait=False, cancel_futures=True)
        self._watch_executor.shutdown(wait=False, cancel_futures=True)
        self._api_client.close()

    def owns_namespace(self, namespace: str) -> bool:
        return namespace.startswith(f"{self.namespace_prefix}-")

    def namespace_for(self, spec: WorkloadSpec) -> str:
        return manifests.namespace_name(self.namespace_prefix, spec, installation=self.installation)

    # -- launch --------------------------------------------------------------------------

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        namespace = self.namespace_for(spec)
        try:
            settings = self.pod_settings.with_profile(spec.pod)
            job_body = manifests.job_manifest(
                namespace,
                spec,
                image=spec.image or self.image_default,
                settings=settings,
                installation=self.installation,
            )
        except ValueError as exc:
            raise WorkloadRuntimeError(f"run {spec.run_id}: {exc}") from exc
        created = await self._ensure_namespace(namespace, spec)
        try:
            job = await self._create_run_objects(namespace, spec, job_body, settings)
        except WorkloadRuntimeError:
            if created:
                # A failed launch reports no handle, so nothing would ever clean this up.
                await self._discard_namespace(namespace)
            raise
        owned = manifests.secret_manifest(
            namespace,
            spec,
            owner={"name": job_body["metadata"]["name"], "uid": _uid(job)},
            installation=self.installation,
        )
        try:
            await self._replace_secret(namespace, owned)
        except WorkloadRuntimeError as exc:
            # The Job runs either way; the namespace's cleanup removes the Secret instead.
            log.warning("run %s: could not make the Job own its Secret: %s", spec.run_id, exc)
        return handle_of(job)

    async def _create_run_objects(
        self, namespace: str, spec: WorkloadSpec, job_body: Obj, settings: RunPodSettings
    ) -> Obj:
        core, rbac, stamp = self._core, self._rbac, {"installation": self.installation}
        applied: list[tuple[Callable[..., Any], Obj]] = [
            (
                core.patch_namespaced_service_account,
                manifests.service_account_manifest(namespace, spec, settings, **stamp),
            ),
            (rbac.patch_namespaced_role, manifests.role_manifest(namespace, spec, **stamp)),
            (
                rbac.patch_namespaced_role_binding,
                manifests.role_binding_manifest(namespace, spec, **stamp),
            ),
            (rbac.patch_namespaced_role_binding, self._log_reader_binding(namespace)),
            (
                core.patch_namespaced_resource_quota,
                manifests.resource_quota_manifest(namespace, spec, settings, **stamp),
            ),
            (
                core.patch_namespaced_limit_range,
                manifests.limit_range_manifest(namespace, spec, settings, **stamp),
            ),
            (
                self._networking.patch_namespaced_network_policy,
                manifests.network_policy_manifest(namespace, spec, self.network, **stamp),
            ),
        ]
        for apply, body in applied:
            # Server-side apply: created the first time, brought up to date in a lineage's
            # namespace whose objects an older version (or other settings) wrote.
            await self._apply(apply, namespace, body)
        secret = manifests.secret_manifest(namespace, spec, **stamp)
        if not await self._create(core.create_namespaced_secret, namespace, secret):
            await self._replace_secret(namespace, secret)
        return await self._create_job(namespace, job_body, spec.run_id)

    def _log_reader_binding(self, namespace: str) -> Obj:
        return manifests.log_reader_binding_manifest(
            namespace, self.control_plane, installation=self.installation
        )

    async def _grant_log_access(self, namespace: str) -> None:
        """Apply the log reader's RoleBinding in NAMESPACE, where a log read was refused."""
        try:
            await self._apply(
                self._rbac.patch_namespaced_role_binding,
                namespace,
                self._log_reader_binding(namespace),
            )
        except WorkloadRuntimeError as exc:
            log.warning("could not let the control plane read logs in %s: %s", namespace, exc)

    async def _apply(self, apply: Callable[..., Any], namespace: str, body: Obj) -> None:
        kind, name = body["kind"], body["metadata"]["name"]
        await self._checked(
            f"apply {kind} {namespace}/{name}",
            apply,
            name,
            namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            field_validation=STRICT,
            _content_type=APPLY_PATCH,
        )

    async def _discard_namespace(self, namespace: str) -> None:
        try:
            await self._delete(
                f"delete namespace {namespace}", self._core.delete_namespace, namespace
            )
        except WorkloadRuntimeError as exc:
            log.warning("could not remove namespace %s of a failed launch: %s", namespace, exc)

    async def _ensure_namespace(self, namespace: str, spec: WorkloadSpec) -> bool:
        """Create the namespace or adopt the lineage's; True if it was created now."""
        body = manifests.namespace_manifest(namespace, spec, installation=self.installation)
        if await self._create(self._core.create_namespace, None, body):
            return True
        existing = await self._checked(
            f"read namespace {namespace}", self._core.read_namespace, namespace
        )
        labels = dig(existing, "metadata", "labels") or {}
        wanted = body["metadata"]["labels"]
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or labels.get(PROJECT_LABEL) != wanted.get(
            PROJECT_LABEL
        ):
            raise WorkloadRuntimeError(
                f"namespace {namespace} exists but is not a codexk8s namespace of project "
                f"{spec.project_key}; refusing to use it"
            )
        if labels.get(INSTALLATION_LABEL, "") != wanted.get(INSTALLATION_LABEL, ""):
            raise WorkloadRuntimeError(
                f"namespace {namespace} belongs to another codexk8s installation "
                f"({labels.get(INSTALLATION_LABEL) or 'unstamped'}); refusing to use it"
            )
        if dig(existing, "metadata", "deletionTimestamp") or (
            dig(existing, "status", "phase") == "Terminating"
        ):
            raise WorkloadDeferredError(
                f"namespace {namespace} of this run's lineage is still being deleted; the run "
                "waits until it is gone",
                retry_after_seconds=TERMINATING_RETRY_SECONDS,
            )
        # Every label again, not just the run id: Pod Security's must stay whatever happened.
        await self._checked(
            f"label namespace {namespace}",
            self._core.patch_namespace,
            namespace,
            {"metadata": {"labels": wanted}},
        )
        return False

    async def _create(self, create: Callable[..., Any], namespace: str | None, body: Obj) -> bool:
        """Create `body`; False if it existed (409). Other API errors become runtime errors."""
        kind, name = body["kind"], body["metadata"]["name"]
        args = (body,) if namespace is None else (namespace, body)
        what = f"create {kind} {namespace + '/' if namespace else ''}{name}"
        try:
            await self._caller.call(what, create, *args, field_validation=STRICT)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise WorkloadRuntimeError(f"{what}: {_explain(exc)}") from exc
        return True

    async def _replace_secret(self, namespace: str, body: Obj) -> None:
        name = body["metadata"]["name"]
        # An update without resourceVersion is unconditional: the control plane never needs
        # to read a Secret, and its ClusterRole does not let it.
        await self._checked(
            f"replace Secret {namespace}/{name}",
            self._core.replace_namespaced_secret,
            name,
            namespace,
            body,
        )

    async def _create_job(self, namespace: str, body: Obj, run_id: int) -> Obj:
        name = body["metadata"]["name"]
        what = f"create Job {namespace}/{name}"
        try:
            created = await self._caller.call(
                what, self._batch.create_namespaced_job, namespace, body, field_validation=STRICT
            )
        except ApiException as exc:
            if exc.status != 409:
                raise WorkloadRuntimeError(f"{what}: {_explain(exc)}") from exc
            # Launched before (a retry after a timeout, a restart): adopt that Job, but only
            # if this installation launched it for this run.
            created = await self._checked(
                f"read Job {namespace}/{name}", self._batch.read_namespaced_job, name, namespace
            )
            stamp = dig(created, "metadata", "labels", INSTALLATION_LABEL) or ""
            if run_id_of(created) != run_id or stamp != self.installation:
                raise WorkloadRuntimeError(
                    f"Job {namespace}/{name} exists but belongs to another run or another "
                    "codexk8s installation; refusing to adopt it"
                ) from exc
        return created

    async def _checked(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._caller.call(what, fn, *args, **kwargs)
        except ApiException as exc:
            raise WorkloadRuntimeError(f"{what}: {_explain(exc)}") from exc

    # -- status --------------------------------------------------------------------------

    async def _job_pods(self, namespace: str, job_name: str) -> Any:
        return await self._caller.call(
            f"list pods of {namespace}/{job_name}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=f"{JOB_NAME_LABEL}={job_name}",
        )

    async def status(self, handle: WorkloadHandle, run_id: int) -> WorkloadStatus:
        namespace = _namespace_of(handle)
        try:
            job = await self._caller.call(
                f"read Job {namespace}/{handle.name}",
                self._batch.read_namespaced_job,
                handle.name,
                namespace,
            )
        except ApiException as exc:
            if exc.status == 404:
                return WorkloadStatus(run_id=run_id, phase=WorkloadPhase.MISSING, handle=handle)
            raise WorkloadRuntimeError(f"read Job {handle.name}: {describe(exc)}") from exc
        try:
            pods = (await self._job_pods(namespace, handle.name) or {}).get("items") or []
        except ApiException as exc:
            raise WorkloadRuntimeError(f"list pods of {handle.name}: {describe(exc)}") from exc
        now = datetime.now(UTC)
        return workload_status(
            run_id,
            job,
            pods,
            now=now,
            startup_grace_seconds=self._startup_grace,
            rejection=await self._rejection(job, pods, now),
        )

    async def list_workloads(self) -> list[WorkloadStatus]:
        jobs = await self._checked(
            "list Jobs",
            self._batch.list_job_for_all_namespaces,
            label_selector=self.selector,
            resource_version=FROM_CACHE,
        )
        pods = await self._checked(
            "list pods",
            self._core.list_pod_for_all_namespaces,
            label_selector=self.selector,
            resource_version=FROM_CACHE,
        )
        grouped = pods_by_run([p for p in (pods or {}).get("items") or [] if self._is_ours(p)])
        now = datetime.now(UTC)
        statuses = []
        for job in (jobs or {}).get("items") or []:
            run_id = run_id_of(job)
            if run_id is None or not self._is_ours(job):
                continue
            run_pods = grouped.get(run_id, [])
            statuses.append(
                workload_status(
                    run_id,
                    job,
                    run_pods,
                    now=now,
                    startup_grace_seconds=self._startup_grace,
                    rejection=await self._rejection(job, run_pods, now),
                )
            )
        return statuses

    async def _rejection(self, job: Obj, pods: list[Any], now: datetime) -> str | None:
        """Why the cluster refuses to create JOB's pod, once it has had no pod for longer than
        the rejection grace (the Job controller retries, and a full quota may free up)."""
        if pods or _is_finished(job) or dig(job, "metadata", "deletionTimestamp"):
            return None
        since = parse_time(dig(job, "status", "startTime")) or parse_time(
            dig(job, "metadata", "creationTimestamp")
        )
        if since is None or (now - since).total_seconds() < self._rejection_grace:
            return None
        namespace, name = str(dig(job, "metadata", "namespace")), str(dig(job, "metadata", "name"))
        try:
            events = await self._caller.call(
                f"list events of Job {namespace}/{name}",
                self._core.list_namespaced_event,
                namespace,
                field_selector=(
                    f"involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate"
                ),
            )
        except (ApiException, WorkloadRuntimeError) as exc:
            log.warning("reading events of Job %s/%s failed: %s", namespace, name, exc)
            return None
        items = (events or {}).get("items") or []
        if not items:
            return None
        newest = max(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return str(newest.get("message") or "FailedCreate")

    def _is_ours(self, obj: Mapping[str, Any]) -> bool:
        namespace = dig(obj, "metadata", "namespace")
        return isinstance(namespace, str) and self.owns_namespace(namespace)

    def watcher(self) -> WorkloadWatcher:
        """A fresh two-kind watch (what `watch()` iterates); exposed for inspection in tests."""

        async def read_pods(namespace: str, run_id: int) -> Any:
            return await self._job_pods(namespace, workload_name(run_id))

        return WorkloadWatcher(
            self._caller,
            list_jobs=self._batch.list_job_for_all_namespaces,
            list_pods=self._core.list_pod_for_all_namespaces,
            read_pods=read_pods,
            owns_namespace=self.owns_namespace,
            timeout_seconds=self._watch_timeout,
            startup_grace_seconds=self._startup_grace,
            selector=self.selector,
        )

    def watch(self) -> AsyncIterator[WorkloadStatus]:
        return self.watcher().statuses()

    # -- logs ----------------------------------------------------------------------------

    async def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        namespace = _namespace_of(handle)
        streamer = PodLogStreamer(
            self._caller,
            self._core,
            self._batch,
            handle,
            poll_interval=self._log_poll_interval,
            read_timeout=self._log_read_timeout,
            resume_margin_seconds=self._log_margin,
            on_forbidden=(
                partial(self._grant_log_access, namespace)
                if self.owns_namespace(namespace)
                else None
            ),
        )
        async for line in streamer.stream(follow=follow, after=after):
            yield line

    # -- cancel and cleanup --------------------------------------------------------------

    def _require_own(self, namespace: str, what: str) -> None:
        if not self.owns_namespace(namespace):
            raise WorkloadRuntimeError(
                f"refusing to {what} in namespace {namespace}: not a run namespace of this "
                f"control plane (prefix {self.namespace_prefix}-)"
            )

    async def cancel(self, handle: WorkloadHandle, *, grace_seconds: float = 10.0) -> None:
        namespace = _namespace_of(handle)
        self._require_own(namespace, "cancel a workload")
        grace = max(0, math.ceil(grace_seconds))
        # The Job first, so that its controller does not replace the pods deleted below.
        await self._delete(
            f"delete Job {namespace}/{handle.name}",
            self._batch.delete_namespaced_job,
            handle.name,
            namespace,
            propagation_policy="Background",
            grace_period_seconds=grace,
        )
        try:
            pods = await self._job_pods(namespace, handle.name)
        except ApiException as exc:
            raise WorkloadRuntimeError(f"list pods of {handle.name}: {describe(exc)}") from exc
        for pod in (pods or {}).get("items") or []:
            name = str(dig(pod, "metadata", "name"))
            await self._delete(
                f"delete pod {namespace}/{name}",
                self._core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=grace,
            )

    async def cleanup(self, handle: WorkloadHandle) -> None:
        namespace = _namespace_of(handle)
        self._require_own(namespace, "delete the namespace")
        await self._delete(
            f"delete namespace {namespace}",
            self._core.delete_namespace,
            namespace,
            propagation_policy="Background",
        )

    async def list_leftovers(self) -> list[Leftover]:
        found = await self._checked(
            "list namespaces",
            self._core.list_namespace,
            label_selector=self.selector,
            resource_version=FROM_CACHE,
        )
        leftovers = []
        for item in (found or {}).get("items") or []:
            name = str(dig(item, "metadata", "name"))
            if not self.owns_namespace(name) or dig(item, "metadata", "deletionTimestamp"):
                continue
            leftovers.append(
                Leftover(
                    handle=WorkloadHandle(runtime=RUNTIME_NAME, name=name, namespace=name),
                    run_id=run_id_of(item),
                    created_at=parse_time(dig(item, "metadata", "creationTimestamp")),
                )
            )
        return leftovers

    async def _delete(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            await self._caller.call(what, fn, *args, **kwargs)
        except ApiException as exc:
            # 404: already gone; 409: already being deleted. Both are what was asked for.
            if exc.status not in (404, 409):
                raise WorkloadRuntimeError(f"{what}: {describe(exc)}") from exc


def _namespace_of(handle: WorkloadHandle) -> str:
    if handle.runtime != RUNTIME_NAME or not handle.namespace:
        raise WorkloadRuntimeError(f"not a Kubernetes workload handle: {handle.to_json()}")
    return handle.namespace


def _is_finished(job: Mapping[str, Any]) -> bool:
    return any(
        cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"
        for cond in dig(job, "status", "conditions") or []
    )


def _explain(exc: ApiException) -> str:
    """`describe` plus the API server's own message for refusals a person must act on
    (403 from RBAC or admission, 422 from validation): without it, "HTTP 403 Forbidden" tells
    nobody which policy said no. The message is the Status object's, never a manifest."""
    summary = describe(exc)
    if exc.status not in (400, 403, 422) or not exc.body:
        return summary
    try:
        message = json.loads(exc.body).get("message")
    except (ValueError, AttributeError):
        return summary
    return f"{summary}: {str(message)[:400]}" if message else summary


def _uid(obj: Mapping[str, Any]) -> str:
    uid = dig(obj, "metadata", "uid")
    if not uid:
        raise WorkloadRuntimeError(f"{dig(obj, 'metadata', 'name')} has no uid")
    return str(uid)


def network_from_settings(settings: Settings) -> RunNetworkSettings:
    """The run pods' egress rules from the CODEXK8S_* settings (validated when they were read)."""
    dns_namespace, dns_labels = parse_dns(settings.run_dns)
    return RunNetworkSettings(
        control_plane_namespace=settings.control_plane_namespace,
        control_plane_labels=parse_labels(settings.control_plane_labels),
        control_plane_port=settings.port,
        dns_namespace=dns_namespace,
        dns_labels=dns_labels,
        internet_ports=parse_ports(settings.run_egress_ports),
        cluster_cidrs=parse_cidrs(settings.cluster_cidrs),
        extra=tuple(
            EgressRule(cidr=cidr, port=port, protocol=protocol)
            for cidr, port, protocol in parse_egress_rules(settings.run_egress_allow)
        ),
    )


def from_settings(
    settings: Settings, *, image_default: str, installation: str, **options: Any
) -> KubernetesRuntime:
    """A runtime for the configured cluster: `CODEXK8S_KUBECONFIG` if set, else in-cluster.

    `installation` is this installation's id (services.installation); `options` go to
    `KubernetesRuntime` (timeouts, ...).
    """
    configuration = k8s.Configuration()
    try:
        if settings.kubeconfig is not None:
            k8s_config.load_kube_config(
                config_file=str(settings.kubeconfig), client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        variable = f"{ENV_PREFIX}KUBECONFIG"
        where = settings.kubeconfig or "in-cluster service account (no kubeconfig set)"
        raise ConfigError(f"{variable}: cannot load {where}: {exc}") from exc
    try:
        pod_settings = RunPodSettings(job_ttl_seconds_after_finished=_ttl(settings)).with_profile(
            settings.pod_profile()
        )
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}RUN_POD: {exc}") from exc
    # Retries live in one place, the runtime's policy (with backoff, Retry-After and logs);
    # urllib3 retrying underneath would multiply every timeout.
    configuration.retries = False
    # Watches and log follows each hold a connection; let the pool keep them all.
    streams = int(options.get("stream_workers", 256)) + int(options.get("watch_workers", 4))
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize or 0, streams + 8
    )
    options.setdefault("startup_grace_seconds", settings.run_start_grace_seconds)
    return KubernetesRuntime(
        k8s.ApiClient(configuration),
        namespace_prefix=settings.run_namespace_prefix,
        image_default=image_default,
        installation=installation,
        network=network_from_settings(settings),
        control_plane=ServiceAccountRef(
            settings.control_plane_namespace, settings.control_plane_service_account
        ),
        pod_settings=pod_settings,
        **options,
    )


def _ttl(settings: Settings) -> int:
    # A finished Job stays as long as its run's leftovers (CLEANUP_AFTER_HOURS): the control
    # plane reads its outcome and logs from it after a restart.
    return max(60, round(settings.cleanup_after_hours * 3600))
