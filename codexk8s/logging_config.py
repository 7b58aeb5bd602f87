"""Process-wide logging: every stdlib and structlog record as one JSON object (or a console line)
with the correlation ids bound in structlog.contextvars, and secrets masked on the way out.

A JSON line has `timestamp` (ISO 8601, UTC), `level`, `logger`, `message`, the bound context
(`delivery_id`, `run_id`, `correlation_id`, ...), the record's `extra` fields and, for errors,
`exception` (the formatted traceback).

`configure_logging()` runs once at process start: in the `codexk8s` CLI (serve included) and in
each Reflex server worker (codexk8s.web.app). The code keeps using `logging.getLogger(__name__)`;
the root handler's ProcessorFormatter turns those records into structured lines.

Correlation ids: the webhook route binds `delivery_id`, the control loop and dispatcher bind
`run_id` (and the run's `correlation_id`) with `bound_contextvars`. asyncio tasks and
`asyncio.to_thread` copy the context when they start, so a binding reaches the work it spawns
and never leaks into another request's or another run's task.

Redaction is the last line of defence, not the policy (secrets are never passed to a logger on
purpose): the values of the secret settings, every secret this process decrypted (SecretBox
registers them), and anything shaped like a token are replaced by `[redacted]`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, unbind_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from codexk8s.config import ConfigError, Settings, get_settings

__all__ = [
    "REDACTED",
    "bind_contextvars",
    "bound_contextvars",
    "configure_logging",
    "redact_text",
    "register_secret",
    "unbind_contextvars",
]

REDACTED = "[redacted]"
# Shorter strings are too likely to occur by chance in ordinary text to be masked everywhere.
MIN_SECRET_LENGTH = 6
# Decrypted secrets are remembered for masking; bounded so a long-lived process cannot grow
# without limit (far more than any installation has repositories).
MAX_REGISTERED_SECRETS = 10_000

_TOKEN_PATTERN = re.compile(
    # Distinctive prefixes match anywhere, even glued to other text (`token=ck8s_...`).
    r"ck8s_[A-Za-z0-9_-]{8,}"  # codexk8s bearer, sign-in and run tokens
    r"|gh[pousr]_[A-Za-z0-9]{16,}"  # GitHub tokens (personal, OAuth, user/server, refresh)
    r"|github_pat_[A-Za-z0-9_]{16,}"  # fine-grained GitHub tokens
    r"|(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}"  # OpenAI keys (not the end of "task-...")
)
# The password part of a URL such as postgresql+psycopg://user:password@host/db.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+(?=@)", re.I)

_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask VALUE in every later log line of this process."""
    global _secrets_pattern
    if not value or len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        if len(_secrets) >= MAX_REGISTERED_SECRETS:
            return
        _secrets.add(value)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def register_settings_secrets(settings: Settings) -> None:
    """Mask the values of every secret setting."""
    for value in (
        settings.secret_key,
        settings.github_webhook_secret,
        settings.github_client_secret,
        settings.github_token,
        settings.openai_api_key,
    ):
        if value is not None:
            register_secret(value.get_secret_value())
    for key in settings.previous_secret_keys():
        register_secret(key)


def redact_text(text: str) -> str:
    """TEXT with registered secrets, token-shaped strings and URL passwords masked."""
    pattern = _secrets_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _TOKEN_PATTERN.sub(REDACTED, text)
    return _URL_PASSWORD.sub(lambda match: match.group("head") + REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in every value, the formatted exception included."""
    return {key: _redact_value(value) for key, value in event_dict.items()}


def _drop_formatter_fields(
    _logger: WrappedLogger, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # ProcessorFormatter adds the stdlib record itself; it is not for the output.
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    event_dict.pop("message", None)  # the formatted message again; "event" becomes "message"
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        # `log.info("...", extra={...})` fields become keys of the line.
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _final_processors(log_format: str) -> list[Processor]:
    renderer: Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        # The console renderer formats the exception itself; redact its text afterwards.
        return [_drop_formatter_fields, redact_secrets, renderer, _redact_rendered]
    renderer = structlog.processors.JSONRenderer()
    return [
        _drop_formatter_fields,
        structlog.processors.format_exc_info,
        # Reflex's and Granian's JSON records say "message"; with the same key every line of
        # the pod has one shape, and Reflex's output supervisor passes ours through untouched.
        structlog.processors.EventRenamer("message"),
        redact_secrets,
        renderer,
    ]


def _redact_rendered(_logger: WrappedLogger, _method: str, rendered: Any) -> Any:
    return redact_text(rendered) if isinstance(rendered, str) else rendered


# Loggers that libraries configure with their own handlers and propagate=False; their records
# go through the same formatter instead.
_LIBRARY_LOGGERS = ("_granian", "granian.access", "uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(
    settings: Settings,
    *,
    stream: TextIO | None = None,
    log_format: str | None = None,
    libraries: Iterable[str] = _LIBRARY_LOGGERS,
) -> None:
    """Route every log record of this process through structlog. Safe to call again (the
    handler is replaced, not added twice)."""
    register_settings_secrets(settings)
    chosen = log_format or settings.log_format
    level = getattr(logging, settings.log_level.upper())
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=_final_processors(chosen)
    )
    # The process's real stderr: Reflex's JSON mode replaces sys.stderr in the server with a
    # writer that would wrap each of these lines into a record of its own.
    handler = logging.StreamHandler(stream or sys.__stderr__ or sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("codexk8s")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "codexk8s":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in libraries:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # Chatty at info; their warnings still come through.
    for name in ("httpx", "httpcore", "apscheduler", "urllib3", "kubernetes", "mcp"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def configure_cli_logging() -> None:
    """Logging for the `codexk8s` command: JSON unless CODEXK8S_LOG_FORMAT says otherwise, except
    that a person at a terminal gets console lines when the variable is not set."""
    try:
        settings = get_settings()
    except ConfigError:
        return  # the command itself reports the bad variable
    log_format = settings.log_format
    if "log_format" not in settings.model_fields_set and sys.stderr.isatty():
        log_format = "console"
    configure_logging(settings, log_format=log_format)
