"""/healthz and /readyz through the real Starlette routes."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from codexk8s.db.migrations import upgrade_to_head
from codexk8s.web.http.app import build_http_app
from tests.conftest import reset_caches


def test_healthz_answers_without_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    reset_caches()
    response = TestClient(build_http_app()).get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_unreachable_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", "k")
    reset_caches()
    response = TestClient(build_http_app()).get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("database unreachable")


def test_readyz_follows_the_schema(empty_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_DATABASE_URL", empty_pg_url)
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", "k")
    reset_caches()
    client = TestClient(build_http_app())
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "database schema at nothing" in response.json()["reason"]
    assert "codexk8s migrate" in response.json()["reason"]
    upgrade_to_head(empty_pg_url)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
