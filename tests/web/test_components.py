"""The dashboard kit without a browser: one formatter, one status palette, reasons and timeline
events in words, and that no page keeps a colour map of its own."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from codexk8s.domain.explanations import REASON_WORDS, describe_event, reason_words
from codexk8s.domain.runs import AgentFailure, RunStatus
from codexk8s.domain.runtime import FailureReason
from codexk8s.web.components import formatters as fmt
from codexk8s.web.components.status import STATUS_ICONS, STATUS_PALETTE

PAGES = Path(__file__).resolve().parents[2] / "codexk8s" / "web"


def test_money_durations_numbers_and_times() -> None:
    assert fmt.money(Decimal("0.690000")) == "$0.69"
    assert fmt.money(0.0042) == "$0.0042" and fmt.money(0) == "$0.00"
    assert fmt.money(1234.5) == "$1,234.50"
    assert [fmt.duration(s) for s in (4, 185, 3720, 200_000)] == ["4s", "3m 05s", "1h 02m", "2d 7h"]
    assert fmt.number(1234567) == "1,234,567" and fmt.tokens(12_345) == "12.3k"
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert fmt.relative(now - timedelta(minutes=5), now) == "5 min ago"
    assert fmt.relative(now - timedelta(days=1, hours=2), now) == "yesterday"
    assert fmt.timestamp(now) == "2026-12-03 12:00:00 UTC"
    # SQLite hands back naive UTC times: they read the same as aware ones.
    naive = datetime(2026, 12, 3, 11, 58)
    assert fmt.span(naive, None, now) == "2m 00s so far"
    assert fmt.span(naive, datetime(2026, 12, 3, 11, 59, tzinfo=UTC)) == "1m 00s"
    assert fmt.relative(naive, now) == "2 min ago"
    assert [fmt.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 22)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "22nd",
    ]  # fmt: skip


def test_one_palette_covers_every_status() -> None:
    assert set(STATUS_PALETTE) == {s.value for s in RunStatus} == set(STATUS_ICONS)
    assert STATUS_PALETTE["canceled"] == "amber" and STATUS_PALETTE["starting"] == "blue"


def test_no_page_keeps_its_own_status_colours() -> None:
    """Pages compose the kit (web/components/status.py); a colour map of their own is how
    canceled came out orange, amber or gray depending on the page."""
    offenders = []
    for path in [*(PAGES / "pages").glob("*.py"), *(PAGES / "state").glob("*.py")]:
        text = path.read_text()
        if re.search(r'"canceled":\s*"(orange|amber|gray|var\(--gray)', text):
            offenders.append(path.name)
    assert offenders == []


def test_every_failure_reason_reads_as_words() -> None:
    for reason in [*FailureReason, *AgentFailure, "launch_deferred", "no_slot_expired"]:
        assert reason in REASON_WORDS, reason
        assert "_" not in reason_words(reason)
    assert reason_words("agent_error") == "The agent reported a failure"
    assert reason_words("something_new") == "Something new"  # unknown codes still read
    assert reason_words(None) == ""


def test_events_in_words_without_raw_values() -> None:
    usage = describe_event(
        "run_usage", {"model": "gpt-5-codex", "cost_usd": "0.690000",
                      "metered": {"input": 1000, "output": 234}},
    )  # fmt: skip
    assert usage.detail == "1,234 tokens · $0.69 · gpt-5-codex"
    starting = describe_event("run_starting", {"slot": 2, "owner": "vm-123-abc", "reason": None})
    assert (starting.title, starting.detail) == ("Slot taken, launching", "slot 2")
    deferred = describe_event(
        "run_pending", {"reason": "launch_deferred", "message": "namespace is terminating"}
    )
    assert deferred.title == "Launch deferred by the runtime"
    assert (
        deferred.detail == "The runtime asked to wait before launching · namespace is terminating"
    )
    truncated = describe_event("log_truncated", {"after_lines": 200000})
    assert truncated.title.startswith("Log cap reached") and truncated.tone == "warn"
    assert describe_event("log_removed", {"lines": 12}).detail == "12 lines removed"
    failed = describe_event("run_failed", {"reason": "unschedulable", "message": None})
    assert (failed.tone, failed.detail) == ("bad", "No node could take the run's pod")
