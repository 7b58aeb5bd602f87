"""The one run-status palette and badge: every page colours a status from here.

Radix colour scales carry their own dark-mode shades, so one name per status reads on both
themes. Canceled is amber everywhere (stopped by someone, not broken); starting and running are
blue (at work); pending is gray (waiting).
"""

from __future__ import annotations

import reflex as rx

STATUS_PALETTE: dict[str, str] = {
    "pending": "gray",
    "starting": "blue",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "canceled": "amber",
}

STATUS_ICONS: dict[str, str] = {
    "pending": "clock",
    "starting": "loader",
    "running": "loader-circle",
    "succeeded": "circle-check",
    "failed": "circle-x",
    "canceled": "circle-slash",
}

# What a status means, in words, for hover titles and the tab title.
STATUS_WORDS: dict[str, str] = {
    "pending": "queued",
    "starting": "starting",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}

# Chart fills: the same scale as the badges, as CSS colours.
STATUS_FILLS: dict[str, str] = {
    status: f"var(--{color}-9)" for status, color in STATUS_PALETTE.items()
}
# The Overview's runs-per-day series: the finished statuses, and active (starting or running).
DAY_SERIES_FILLS: dict[str, str] = {
    "succeeded": STATUS_FILLS["succeeded"],
    "failed": STATUS_FILLS["failed"],
    "canceled": STATUS_FILLS["canceled"],
    "active": STATUS_FILLS["running"],
}


def status_color(status: str) -> str:
    return STATUS_PALETTE.get(status, "gray")


def status_badge(status: rx.Var | str, *, size: str = "1", test_id: str = "") -> rx.Component:
    """A run status as a coloured badge with its icon (a spinning one while at work)."""
    extra = {"data_testid": test_id} if test_id else {}
    return rx.match(
        status,
        *(
            (
                name,
                rx.badge(
                    rx.icon(
                        STATUS_ICONS[name],
                        size=12,
                        class_name="status-spin" if name in ("starting", "running") else "",
                    ),
                    name,
                    color_scheme=color,
                    size=size,
                    variant="soft",
                    data_status=name,
                    **extra,
                ),
            )
            for name, color in STATUS_PALETTE.items()
        ),
        rx.badge(status, color_scheme="gray", size=size, **extra),
    )


# The spinner of the at-work badges (one global rule; the shell adds it once).
STATUS_CSS = """
@keyframes status-spin { to { transform: rotate(360deg); } }
.status-spin { animation: status-spin 1.2s linear infinite; }
@media (prefers-reduced-motion: reduce) { .status-spin { animation: none; } }
"""
