"""Run log rules: a stored line, the per-run cap, where a run's lines live, and retention.

Pure: the services apply these to rows. The cap is measured in lines and in bytes, a line's bytes
being its UTF-8 text plus the newline it ends with in the plain-text download.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

DEFAULT_MAX_LINES_PER_RUN = 200_000
DEFAULT_MAX_BYTES_PER_RUN = 64 * 1024 * 1024
MAX_LINE_CHARS = 64 * 1024  # a single gigantic line must not blow up a page or a row
TRUNCATION_STREAM = "stderr"


@dataclass(frozen=True, slots=True)
class StoredLine:
    """One stored line of a run's log, wherever it is kept (a row or a compacted chunk)."""

    sequence: int
    stream: str
    line: str
    ts: datetime


class LogStorage(StrEnum):
    """Where a run's lines are: rows while written (and until compacted), compressed chunks once
    the finished log is compacted, gone once retention removed them ("removing" while the rows
    are still being deleted in bounded batches; readers already treat the log as removed)."""

    ROWS = "rows"
    CHUNKS = "chunks"
    REMOVING = "removing"
    REMOVED = "removed"

    @property
    def is_removed(self) -> bool:
        return self in (LogStorage.REMOVING, LogStorage.REMOVED)


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What a run's log holds, for its page and the API: LINES stored (numbered 1..LINES, the
    truncation marker included) of BYTES, what the cap dropped, where the lines are, and when
    retention removed them."""

    lines: int = 0
    bytes: int = 0
    dropped_lines: int = 0
    dropped_bytes: int = 0
    storage: str = LogStorage.ROWS.value
    removed_at: datetime | None = None

    @property
    def is_truncated(self) -> bool:
        return self.dropped_lines > 0

    @property
    def is_removed(self) -> bool:
        return LogStorage(self.storage).is_removed


@dataclass(frozen=True, slots=True)
class LogLimits:
    """The per-run cap (CODEXK8S_LOG_MAX_LINES_PER_RUN / _BYTES_PER_RUN)."""

    max_lines: int = DEFAULT_MAX_LINES_PER_RUN
    max_bytes: int = DEFAULT_MAX_BYTES_PER_RUN


@dataclass(frozen=True, slots=True)
class LogPolicy:
    """The installation's log settings: the per-run cap and the default retention in days
    (None: keep forever; a project's `log_retention_days` overrides it)."""

    limits: LogLimits = field(default_factory=LogLimits)
    retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class CapOutcome:
    """How a batch fits under the cap: the first KEPT lines are stored, the rest dropped."""

    kept: int
    kept_bytes: int
    dropped: int
    dropped_bytes: int


def line_bytes(text: str) -> int:
    """What a line costs against the byte cap: its UTF-8 text and a newline."""
    return len(text.encode("utf-8", "surrogatepass")) + 1


def fit_under_cap(
    sizes: Sequence[int],
    *,
    stored_lines: int,
    stored_bytes: int,
    is_truncated: bool,
    limits: LogLimits,
) -> CapOutcome:
    """Keep lines (of byte SIZES, in order) while both caps hold; once one line does not fit,
    it and everything after it are dropped, so the stored log is always a prefix of the output.
    A log already truncated keeps nothing more."""
    kept = 0
    kept_bytes = 0
    if not is_truncated:
        for size in sizes:
            if stored_lines + kept + 1 > limits.max_lines:
                break
            if stored_bytes + kept_bytes + size > limits.max_bytes:
                break
            kept += 1
            kept_bytes += size
    dropped_sizes = sizes[kept:]
    return CapOutcome(
        kept=kept, kept_bytes=kept_bytes, dropped=len(dropped_sizes),
        dropped_bytes=sum(dropped_sizes),
    )  # fmt: skip


def format_bytes(count: int) -> str:
    """1,536 → "1.5 KiB"; binary units, one decimal."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def truncation_marker(limits: LogLimits) -> str:
    """The one line stored where a log was cut."""
    return (
        f"[codexk8s] log truncated: this run's output passed the cap of {limits.max_lines:,} "
        f"lines / {format_bytes(limits.max_bytes)} per run; the rest is not stored (the run "
        "goes on; its page and the API count the lines dropped)"
    )


def retention_days(project_setting: object, default: int | None) -> int | None:
    """A project's effective retention in days, None for keep forever. The project setting
    `log_retention_days` overrides the installation's: absent/None → DEFAULT, 0 → forever."""
    if project_setting is None or isinstance(project_setting, bool):
        return default
    if isinstance(project_setting, int):
        return None if project_setting <= 0 else project_setting
    return default


def utc(value: datetime) -> datetime:
    """VALUE as an aware UTC datetime (SQLite hands timestamps back without a zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
