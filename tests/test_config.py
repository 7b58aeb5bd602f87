"""Settings: defaults, validation with one clear line, the embedded secret key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from codexk8s.config import ConfigError, load_settings


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.is_embedded
    assert settings.runtime == "local"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'codexk8s.db'}"
    assert settings.effective_public_url == "http://127.0.0.1:3000"


def test_relative_data_dir_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CODEXK8S_DATA_DIR", ".data")
    assert load_settings().data_dir == tmp_path / ".data"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CODEXK8S_PORT", "eighty", "CODEXK8S_PORT:"),
        ("CODEXK8S_PORT", "70000", "CODEXK8S_PORT:"),
        ("CODEXK8S_RUNTIME", "docker", "CODEXK8S_RUNTIME:"),
        ("CODEXK8S_DATABASE_URL", "mysql://x/y", "CODEXK8S_DATABASE_URL:"),
        ("CODEXK8S_PUBLIC_URL", "ftp://example.com", "CODEXK8S_PUBLIC_URL:"),
        ("CODEXK8S_RUN_NAMESPACE_PREFIX", "Bad_Prefix", "CODEXK8S_RUN_NAMESPACE_PREFIX:"),
        ("CODEXK8S_RUN_POD", "{not json", "CODEXK8S_RUN_POD: Value error, not JSON"),
        ("CODEXK8S_RUN_POD", '{"nodeSelctor": {}}', "CODEXK8S_RUN_POD: Value error, the pod"),
        ("CODEXK8S_RUN_POD", '{"resources": {"limits": {"cpu": "two"}}}', "CODEXK8S_RUN_POD:"),
        ("CODEXK8S_RUN_EGRESS_PORTS", "443,https", "CODEXK8S_RUN_EGRESS_PORTS:"),
        ("CODEXK8S_CLUSTER_CIDRS", "10.0.0.1/8", "CODEXK8S_CLUSTER_CIDRS:"),
        ("CODEXK8S_RUN_EGRESS_ALLOW", "10.0.0.0/8:99999", "CODEXK8S_RUN_EGRESS_ALLOW:"),
        ("CODEXK8S_RUN_EGRESS_ALLOW", "10.0.0.0/8:53/sctp", "CODEXK8S_RUN_EGRESS_ALLOW:"),
        ("CODEXK8S_RUN_DNS", "kube-dns", "CODEXK8S_RUN_DNS:"),
        ("CODEXK8S_CONTROL_PLANE_LABELS", "app", "CODEXK8S_CONTROL_PLANE_LABELS:"),
    ],
)
def test_invalid_setting_names_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_plain_postgresql_scheme_means_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", "postgresql://u@h/db")
    settings = load_settings()
    assert settings.effective_database_url == "postgresql+psycopg://u@h/db"
    assert not settings.is_embedded


def test_postgres_requires_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", "postgresql+psycopg://u@h/db")
    with pytest.raises(ConfigError, match=r"^CODEXK8S_SECRET_KEY: required"):
        load_settings().secret_key_value()
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", "k" * 40)
    assert load_settings().secret_key_value() == "k" * 40


def test_embedded_key_is_generated_once_with_0600(tmp_path: Path) -> None:
    settings = load_settings()
    first = settings.secret_key_value()
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 40
    assert load_settings().secret_key_value() == first


def test_empty_embedded_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret_key").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings().secret_key_value()


def test_runs_call_back_to_the_in_cluster_service_on_kubernetes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODEXK8S_PUBLIC_URL", "https://codexk8s.example.com")
    assert load_settings().run_callback_url() == "https://codexk8s.example.com"  # local runtime
    monkeypatch.setenv("CODEXK8S_RUNTIME", "kubernetes")
    assert load_settings().run_callback_url() == "http://codexk8s.codexk8s.svc"
    monkeypatch.setenv("CODEXK8S_CONTROL_PLANE_NAMESPACE", "platform")
    assert load_settings().run_callback_url() == "http://codexk8s.platform.svc"
    monkeypatch.setenv("CODEXK8S_CALLBACK_URL", "http://cp.platform.svc.cluster.local:8080/")
    assert load_settings().run_callback_url() == "http://cp.platform.svc.cluster.local:8080"


@pytest.mark.parametrize(
    "url", ["http://localhost:3000", "http://127.0.0.1", "http://[::1]:80", "http://a.localhost"]
)
def test_a_loopback_callback_is_refused_with_the_kubernetes_runtime(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("CODEXK8S_CALLBACK_URL", url)
    assert load_settings().run_callback_url() == url  # a local process can reach loopback
    monkeypatch.setenv("CODEXK8S_RUNTIME", "kubernetes")
    with pytest.raises(ConfigError, match=r"^CODEXK8S_CALLBACK_URL: .* loopback"):
        load_settings().run_callback_url()
