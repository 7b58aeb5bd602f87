"""The one formatter for what pages show: money, durations, numbers and times.

Pure functions, run on the server when a state builds its rows, so every page says "$0.69",
"3m 05s", "1,234" and "5 min ago" the same way. Times are UTC; the relative form goes with the
absolute one (a page shows the relative text and puts the absolute one in the hover title).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal


def money(value: Decimal | float | int | None) -> str:
    """US dollars: cents from a cent up, four decimals below it (a short run costs $0.0042),
    "$0.00" for nothing."""
    amount = Decimal(str(value or 0))
    if amount == 0:
        return "$0.00"
    if abs(amount) < Decimal("0.01"):
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def number(value: int | float | None) -> str:
    """A count with thousands separators."""
    return f"{int(value or 0):,}"


def tokens(value: int | None) -> str:
    """A token count, short: 950, 12.3k, 4.1M."""
    count = int(value or 0)
    if count < 1_000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1_000:.1f}k".replace(".0k", "k")
    return f"{count / 1_000_000:.1f}M".replace(".0M", "M")


def duration(seconds: float | None) -> str:
    """42s, 3m 05s, 1h 02m; "" for no duration."""
    if seconds is None:
        return ""
    whole = int(max(seconds, 0))
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def span(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    """The duration from START to END (or to NOW, marked "so far"); "" before START."""
    if start is None:
        return ""
    if end is None:
        return duration(((now or datetime.now(UTC)) - _utc(start)).total_seconds()) + " so far"
    return duration((_utc(end) - _utc(start)).total_seconds())


def timestamp(value: datetime | None) -> str:
    """The absolute time: 2026-12-03 09:01:02 UTC."""
    if value is None:
        return ""
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: datetime | None) -> str:
    """The time of day: 09:01:02."""
    return "" if value is None else _utc(value).strftime("%H:%M:%S")


def relative(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago: just now, 42 s ago, 5 min ago, 3 h ago, yesterday, 4 days ago, then the
    date."""
    if value is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - _utc(value)).total_seconds()
    if seconds < 0:
        return "in the future" if seconds < -60 else "just now"
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    if days == 1:
        return "yesterday"
    if days < 30:
        return f"{days} days ago"
    return _utc(value).strftime("%Y-%m-%d")


def ordinal(value: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 22nd."""
    teens = 10 <= value % 100 <= 20
    suffix = "th" if teens else {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return f"{value}{suffix}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
