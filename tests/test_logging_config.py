"""Structured logs: stdlib records as JSON lines, correlation ids per task, secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from codexk8s import logging_config
from codexk8s.config import Settings
from codexk8s.crypto import SecretBox
from codexk8s.logging_config import (
    REDACTED,
    bind_contextvars,
    bound_contextvars,
    configure_logging,
    redact_text,
)

log = logging.getLogger("codexk8s.tests.logging")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    settings = Settings(
        secret_key="the-secret-key-value",
        secret_key_previous="old-key-number-one, old-key-number-two",
        github_webhook_secret="hook-secret-value",
        github_client_secret="client-secret-value",
    )
    configure_logging(settings, stream=buffer)
    yield buffer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "codexk8s":
            root.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_stdlib_records_become_json_with_the_usual_fields(stream: io.StringIO) -> None:
    log.info("run %s is %s", 7, "running", extra={"slot": 2})
    log.warning("careful")
    first, second = records(stream)
    assert first["message"] == "run 7 is running"
    assert first["level"] == "info" and first["logger"] == "codexk8s.tests.logging"
    assert first["slot"] == 2
    assert str(first["timestamp"]).endswith("Z")
    assert second["level"] == "warning"


def test_exceptions_are_one_json_line_with_the_traceback(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("database went away")
    except RuntimeError:
        log.exception("cycle failed")
    (record,) = records(stream)
    assert record["message"] == "cycle failed" and record["level"] == "error"
    assert "RuntimeError: database went away" in str(record["exception"])


@pytest.mark.parametrize(
    "secret",
    [
        "the-secret-key-value",
        "old-key-number-two",
        "hook-secret-value",
        "client-secret-value",
        "ck8s_AbCdEfGhIjKlMnOpQrStUv",
        "ghp_0123456789abcdefghijKLMNOP",
        "gho_0123456789abcdefghijKLMNOP",
        "github_pat_11ABCDEFG0123456789_abcdefghij",
        "sk-proj-0123456789abcdefghij",
    ],
)
def test_secrets_are_masked_in_message_fields_and_tracebacks(
    stream: io.StringIO, secret: str
) -> None:
    log.info("value %s here", secret, extra={"field": f"key={secret};", "nested": {"k": [secret]}})
    try:
        raise ValueError(f"bad {secret}")
    except ValueError:
        log.exception("oops")
    text = stream.getvalue()
    assert secret not in text
    first, second = records(stream)
    assert first["message"] == f"value {REDACTED} here"
    assert first["nested"] == {"k": [REDACTED]}
    assert f"bad {REDACTED}" in str(second["exception"])


def test_decrypted_secrets_are_masked_from_then_on(stream: io.StringIO) -> None:
    box = SecretBox("some-key")
    ciphertext = box.encrypt("plain-repository-token-42")
    log.info("before: plain-repository-token-42")
    assert box.decrypt(ciphertext) == "plain-repository-token-42"
    log.info("after: plain-repository-token-42")
    before, after = records(stream)
    assert before["message"] == "before: plain-repository-token-42"  # not known yet: the defence
    assert after["message"] == f"after: {REDACTED}"  # is a last line, not a policy


def test_url_passwords_are_masked_and_ordinary_words_kept() -> None:
    assert redact_text("postgresql+psycopg://app:s3cr3t@db:5432/x") == (
        f"postgresql+psycopg://app:{REDACTED}@db:5432/x"
    )
    ordinary = "task-runner asked for desk-0123 and skipped ck8s_ short sk-1"
    assert redact_text(ordinary) == ordinary


async def test_correlation_ids_stay_with_their_task(stream: io.StringIO) -> None:
    async def handle(run_id: int, pause: float) -> None:
        with bound_contextvars(run_id=run_id):
            await asyncio.sleep(pause)
            # The thread sees the binding of the task that started it.
            await asyncio.to_thread(log.info, "in thread")
            log.info("in task")

    bind_contextvars(delivery_id="outer")
    try:
        await asyncio.gather(handle(1, 0.05), handle(2, 0.0))
        log.info("after")
    finally:
        logging_config.unbind_contextvars("delivery_id")
    lines = records(stream)
    by_run = sorted((r["run_id"], r["message"]) for r in lines if "run_id" in r)
    assert by_run == [(1, "in task"), (1, "in thread"), (2, "in task"), (2, "in thread")]
    assert all(r["delivery_id"] == "outer" for r in lines)
    assert "run_id" not in lines[-1] and lines[-1]["message"] == "after"


def test_console_format_is_one_line_and_masked() -> None:
    buffer = io.StringIO()
    configure_logging(
        Settings(secret_key="console-secret-key"), stream=buffer, log_format="console"
    )
    try:
        with bound_contextvars(run_id=9):
            log.info("key console-secret-key used")
    finally:
        configure_logging(Settings(), stream=io.StringIO())
    text = buffer.getvalue()
    assert "console-secret-key" not in text and REDACTED in text
    assert "run_id=9" in text and len(text.strip().splitlines()) == 1


def test_configuring_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging(Settings(), stream=stream)
    log.info("once")
    assert [r["message"] for r in records(stream)] == ["once"]
