"""The one typed settings object; nothing else in codexk8s reads os.environ for configuration."""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # Read by `codexk8s agent run` only: what dispatch hands to a run's workload.
    run_id: int | None = None
    callback_url: str | None = None
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

    # A replica with the engine off only serves the dashboard and the API.
    engine_enabled: bool = True
    # Terminal runs keep their workload leftovers (namespace, work folder) this long.
    cleanup_after_hours: float = Field(default=24.0, gt=0)
    # A browser session ends after this long without a request (sliding expiry).
    session_ttl_hours: float = Field(default=12, gt=0)

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
