"""The one typed settings object; nothing else in codexk8s reads os.environ for configuration."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from codexk8s.domain.logs import (
    DEFAULT_MAX_BYTES_PER_RUN,
    DEFAULT_MAX_LINES_PER_RUN,
    LogLimits,
    LogPolicy,
)
from codexk8s.domain.runtime import PodProfile, PodProfileError, parse_pod_profile

ENV_PREFIX = "CODEXK8S_"
SECRET_KEY_FILE = "secret_key"


# USD per million tokens (input, cached input, output; reasoning tokens bill as output), from
# OpenAI's public price list. `CODEXK8S_MODEL_PRICES` (JSON, same shape) replaces the table.
DEFAULT_MODEL_PRICES: dict[str, dict[str, float]] = {
    "gpt-5": {"input": 1.25, "cached_input": 0.125, "output": 10.0},
    "gpt-5-codex": {"input": 1.25, "cached_input": 0.125, "output": 10.0},
    "gpt-5-mini": {"input": 0.25, "cached_input": 0.025, "output": 2.0},
    "gpt-5-nano": {"input": 0.05, "cached_input": 0.005, "output": 0.4},
    "gpt-4.1": {"input": 2.0, "cached_input": 0.5, "output": 8.0},
    "gpt-4.1-mini": {"input": 0.4, "cached_input": 0.1, "output": 1.6},
    "o4-mini": {"input": 1.1, "cached_input": 0.275, "output": 4.4},
}
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    """Every `CODEXK8S_*` variable, typed. Defaults give the embedded mode (SQLite, local)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Path(".data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    public_url: str | None = None
    secret_key: SecretStr | None = None
    # Keys that encrypted stored secrets before the current one (comma-separated), accepted for
    # reading until `codexk8s secrets rotate` has re-encrypted everything with SECRET_KEY.
    secret_key_previous: SecretStr | None = None
    owner_email: str | None = None

    github_webhook_secret: SecretStr | None = None
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    github_api_url: str = "https://api.github.com"
    github_oauth_url: str = "https://github.com/login/oauth"
    github_git_url: str = "https://github.com"
    github_token: SecretStr | None = None

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    # Billing headers the model proxy sends with every run's request (a run cannot choose them).
    openai_organization: str | None = None
    openai_project: str | None = None
    # The model a run uses when neither its labels, its agent nor its project name one.
    default_model: str = "gpt-5-codex"
    model_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_PRICES)
    )

    # The URL runs reach the control plane at (brief, events, model proxy). The control plane
    # hands it to every run, and `codexk8s agent run` reads it back. Default: PUBLIC_URL for
    # the local runtime; the in-cluster Service for the Kubernetes runtime (see
    # `run_callback_url`), so runs never hairpin through the public ingress.
    callback_url: str | None = None
    # Read by `codexk8s agent run` only: what dispatch hands to a run's workload.
    run_id: int | None = None
    run_token: SecretStr | None = None
    # Where the runner clones the repository (default: its working directory).
    agent_workdir: Path | None = None

    runtime: Literal["local", "kubernetes"] = "local"
    kubeconfig: Path | None = None
    # Image for agents without their own (Kubernetes runtime); the control plane's image by default
    # in the deploy manifests.
    agent_image: str | None = None
    run_namespace_prefix: str = Field(
        default="codexk8s-run", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    # Kubernetes runtime. Every run's pod profile (JSON: resources, nodeSelector, tolerations,
    # imagePullSecrets, serviceAccountAnnotations; an agent's own profile goes on top).
    run_pod: str | None = None
    # Where the control plane's pods are: run pods may reach them (and nothing else inside the
    # cluster but DNS) on PORT.
    control_plane_namespace: str = Field(
        default="codexk8s", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    # The ServiceAccount the control plane runs as (in CONTROL_PLANE_NAMESPACE): each run
    # namespace binds the run log reader (deploy/rbac/run-log-reader.yaml) to it.
    control_plane_service_account: str = Field(
        default="codexk8s-control-plane", pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
    )
    control_plane_labels: str = (
        "app.kubernetes.io/name=codexk8s,app.kubernetes.io/component=control-plane"
    )
    # The cluster DNS run pods may query: NAMESPACE/label=value[,label=value].
    run_dns: str = "kube-system/k8s-app=kube-dns"
    # TCP ports run pods may open to public addresses (comma-separated; empty: none).
    run_egress_ports: str = "443"
    # Pod and service CIDRs of the cluster that are not private ranges already (comma-separated).
    cluster_cidrs: str = ""
    # More destinations for run pods: CIDR[:PORT[/udp|/tcp]], comma-separated.
    run_egress_allow: str = ""
    # How long a run's pod may wait for a node or an image before the run fails.
    run_start_grace_seconds: float = Field(default=300.0, gt=0)

    # A replica with the control loop off only serves the dashboard and the API. The name
    # (CODEXK8S_ENGINE_ENABLED) predates the control loop's and stays: deployments set it.
    engine_enabled: bool = True
    # Terminal runs keep their workload leftovers (namespace, work folder) this long.
    cleanup_after_hours: float = Field(default=24.0, gt=0)
    # Stored run logs: the cap per run (later lines are counted, not stored) and how long
    # finished runs keep their lines (unset: forever; a project's own setting overrides it).
    log_max_lines_per_run: int = Field(default=DEFAULT_MAX_LINES_PER_RUN, ge=1)
    log_max_bytes_per_run: int = Field(default=DEFAULT_MAX_BYTES_PER_RUN, ge=1024)
    log_retention_days: int | None = Field(default=None, ge=1)
    # A browser session ends after this long without a request (sliding expiry).
    session_ttl_hours: float = Field(default=12, gt=0)

    # Discussion turns (`mode:discussion`): their model (unset: the run's usual default) and
    # reasoning effort, unless the project names its own. Cheap by default: a conversation
    # needs less than the work.
    discussion_model: str | None = None
    discussion_reasoning_effort: Literal["minimal", "low", "medium", "high", "xhigh"] = "low"
    # The repository documents a run's prompt may carry (services.yaml `docs` of its role), in
    # characters altogether.
    prompt_documents_max_chars: int = Field(default=30_000, ge=0, le=400_000)
    # A resumable Codex session a run leaves (gzip-compressed rollout) may be this large; a
    # larger one is not kept and the next run starts fresh.
    agent_session_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # How long a run may wait for a person (a question, an approval) before the request times
    # out and the run fails; its own deadline is paused meanwhile. The run keeps its slot while
    # it waits (docs/decisions.md).
    human_wait_minutes: float = Field(default=24 * 60, gt=0, le=14 * 24 * 60)

    redis_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One JSON object per line (production, what log collectors parse) or coloured key=value
    # lines for a person at a terminal.
    log_format: Literal["json", "console"] = "json"

    # SIGTERM to `codexk8s serve`: readiness fails at once while requests are still served for
    # SHUTDOWN_DRAIN_SECONDS (endpoints stop routing here), then the server stops accepting,
    # finishes in-flight requests and releases its leases. The whole shutdown stays within
    # SHUTDOWN_GRACE_SECONDS, which must be below the pod's terminationGracePeriodSeconds.
    shutdown_drain_seconds: float = Field(default=5.0, ge=0)
    shutdown_grace_seconds: float = Field(default=25.0, gt=0)
    # Set by `codexk8s serve` for its server process: while this file exists, /readyz fails.
    drain_file: Path | None = None

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Child processes (the Reflex worker) may run in another working directory.
        return value.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if value.startswith("postgresql:"):
            # Only psycopg 3 is installed; make the plain scheme mean it.
            value = "postgresql+psycopg:" + value.removeprefix("postgresql:")
        return value

    @field_validator("log_retention_days", mode="before")
    @classmethod
    def _forever(cls, value: object) -> object:
        # Unset, empty and 0 all mean keep forever.
        return None if value in (None, "", 0, "0") else value

    @field_validator("github_git_url")
    @classmethod
    def _git_url(cls, value: str) -> str:
        # file:// lets a local mirror (and the tests' bare repositories) stand in for GitHub.
        if not value.startswith(("http://", "https://", "file://")):
            raise ValueError("must start with http://, https:// or file://")
        return value.rstrip("/")

    @field_validator("model_prices")
    @classmethod
    def _prices(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, price in value.items():
            missing = {"input", "output"} - set(price)
            if missing:
                raise ValueError(f"price of {model!r} lacks {', '.join(sorted(missing))}")
            if any(amount < 0 for amount in price.values()):
                raise ValueError(f"price of {model!r} is negative")
        return value

    @field_validator("public_url", "github_api_url", "github_oauth_url", "callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("run_pod")
    @classmethod
    def _pod_profile(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parse_pod_profile(json.loads(value), "the pod profile")
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from None
        except PodProfileError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("control_plane_labels", "run_dns", "run_egress_ports", "cluster_cidrs",
                     "run_egress_allow")  # fmt: skip
    @classmethod
    def _network(cls, value: str, info: ValidationInfo) -> str:
        NETWORK_PARSERS[str(info.field_name)](value)
        return value

    def log_policy(self) -> LogPolicy:
        return LogPolicy(
            limits=LogLimits(
                max_lines=self.log_max_lines_per_run, max_bytes=self.log_max_bytes_per_run
            ),
            retention_days=self.log_retention_days,
        )

    def pod_profile(self) -> PodProfile:
        """RUN_POD as a profile (empty when unset)."""
        return parse_pod_profile(json.loads(self.run_pod) if self.run_pod else None)

    def run_callback_url(self) -> str:
        """What runs are told to call back to: CALLBACK_URL; else the in-cluster Service of
        the control plane with the Kubernetes runtime, PUBLIC_URL with the local one.

        A loopback address is refused with the Kubernetes runtime: inside a pod it is the pod.
        """
        if self.callback_url:
            url = self.callback_url
        elif self.runtime == "kubernetes":
            return f"http://codexk8s.{self.control_plane_namespace}.svc"
        else:
            return self.effective_public_url
        host = urlsplit(url).hostname or ""
        if self.runtime == "kubernetes" and (
            host == "localhost" or host.endswith(".localhost") or _is_loopback(host)
        ):
            raise ConfigError(
                f"{ENV_PREFIX}CALLBACK_URL: {url} is a loopback address, which a run pod "
                "cannot reach; use the control plane's in-cluster Service "
                f"(http://codexk8s.{self.control_plane_namespace}.svc)"
            )
        return url

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'codexk8s.db'}"

    @property
    def is_embedded(self) -> bool:
        """True for the one-machine default: SQLite in the data folder."""
        return self.effective_database_url.startswith("sqlite:")

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def effective_openai_base_url(self) -> str:
        return (self.openai_base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")

    @property
    def is_oauth_configured(self) -> bool:
        return bool(self.github_client_id and self.github_client_secret)

    def previous_secret_keys(self) -> list[str]:
        """The keys listed in SECRET_KEY_PREVIOUS, in order, blanks dropped."""
        if self.secret_key_previous is None:
            return []
        raw = self.secret_key_previous.get_secret_value()
        return [key.strip() for key in raw.split(",") if key.strip()]

    def secret_key_value(self) -> str:
        """The key that signs and encrypts. Embedded mode generates one into the data folder."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        if not self.is_embedded:
            raise ConfigError(
                f"{ENV_PREFIX}SECRET_KEY: required when {ENV_PREFIX}DATABASE_URL is not the "
                "embedded SQLite database"
            )
        return _embedded_secret_key(self.data_dir)


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_labels(value: str) -> dict[str, str]:
    """`a=b,c=d` as a dict; ValueError on anything else."""
    labels = {}
    for item in _items(value):
        key, sep, label = item.partition("=")
        if not sep or not key.strip() or not label.strip():
            raise ValueError(f"{item!r} is not label=value")
        labels[key.strip()] = label.strip()
    if not labels:
        raise ValueError("give at least one label=value")
    return labels


def parse_ports(value: str) -> tuple[int, ...]:
    ports = []
    for item in _items(value):
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise ValueError(f"{item!r} is not a port (1-65535)")
        ports.append(int(item))
    return tuple(ports)


def parse_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/8 ({exc})") from None


def parse_egress_rules(value: str) -> tuple[tuple[str, int | None, str], ...]:
    """`CIDR[:PORT[/udp|/tcp]]` items as (cidr, port, protocol) triples."""
    rules = []
    for item in _items(value):
        # An IPv6 CIDR holds colons itself: the port, if any, follows the prefix length.
        network, sep, rest = (
            item.rpartition(":") if "/" in item.rpartition(":")[0] else (item, "", "")
        )
        port_text, _, protocol = rest.partition("/")
        cidr = parse_cidr(network if sep else item)
        port = None
        if sep:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError(f"{item!r}: {port_text!r} is not a port")
            port = int(port_text)
        proto = (protocol or "tcp").upper()
        if proto not in ("TCP", "UDP"):
            raise ValueError(f"{item!r}: protocol must be tcp or udp")
        rules.append((cidr, port, proto))
    return tuple(rules)


def parse_dns(value: str) -> tuple[str, dict[str, str]]:
    """`NAMESPACE/label=value[,label=value]`: where the cluster DNS pods are."""
    namespace, _, labels = value.partition("/")
    if not namespace or not labels:
        raise ValueError("must be NAMESPACE/label=value[,label=value]")
    return namespace, parse_labels(labels)


def parse_cidrs(value: str) -> tuple[str, ...]:
    return tuple(parse_cidr(item) for item in _items(value))


# How each network setting of the Kubernetes runtime is read (and validated at start-up).
NETWORK_PARSERS: dict[str, Callable[[str], Any]] = {
    "control_plane_labels": parse_labels,
    "run_dns": parse_dns,
    "run_egress_ports": parse_ports,
    "cluster_cidrs": parse_cidrs,
    "run_egress_allow": parse_egress_rules,
}


def _embedded_secret_key(data_dir: Path) -> str:
    path = data_dir / SECRET_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL makes the first writer win when several processes start together.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if not key:
            raise ConfigError(f"{ENV_PREFIX}SECRET_KEY: the key file {path} is empty") from None
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def load_settings() -> Settings:
    """Read the environment once; raise ConfigError with one line naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}") from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings (cached). Tests call `get_settings.cache_clear()` after changes."""
    return load_settings()
