"""Which project documents a role gets and how they fit the prompt's budget (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexk8s.domain.documents import (
    CUT_MARKER,
    HEADING,
    MIN_PARTIAL_CHARS,
    DocumentRead,
    DocumentSpec,
    Skipped,
    for_role,
    is_safe_path,
    parse_docs,
    place,
)


def spec(path: str, *roles: str, title: str | None = None) -> DocumentSpec:
    return DocumentSpec(path=path, roles=frozenset(roles), title=title)


def test_docs_entries_are_read_in_order_and_bad_ones_explained() -> None:
    specs, problems = parse_docs(
        {
            "services": {"api": {"image": "x"}},  # the rest of services.yaml is not ours
            "docs": [
                {"path": "docs/arch.md", "roles": ["SA", "dev"], "title": " Architecture "},
                {"path": "docs/all.md", "roles": "all"},
                {"path": "/etc/passwd", "roles": ["dev"]},
                {"path": "docs/../../x", "roles": ["dev"]},
                {"path": "docs/x.md", "roles": [1]},
                "docs/plain.md",
            ],
        }
    )
    assert specs == [
        spec("docs/arch.md", "sa", "dev", title="Architecture"),
        spec("docs/all.md", "all"),
    ]
    assert [p.split(":")[0].split(" ")[0] for p in problems] == [
        "docs[2]", "docs[3]", "docs[4]", "docs[5]",
    ]  # fmt: skip
    assert parse_docs(None) == ([], [])
    assert parse_docs({"docs": "docs/a.md"}) == ([], ["`docs` must be a list"])
    assert parse_docs(["not", "a", "mapping"])[1] == ["services.yaml is not a mapping"]


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("docs/a.md", True), ("README.md", True), ("../a.md", False), ("/a.md", False),
        ("docs\\a.md", False), ("", False), ("a/../../b", False), ("a\x00b", False),
    ],
)  # fmt: skip
def test_only_relative_paths_inside_the_repository_are_safe(path: str, safe: bool) -> None:
    assert is_safe_path(path) is safe


def test_a_role_gets_its_documents_and_the_shared_ones_once() -> None:
    specs = [spec("a.md", "dev"), spec("b.md", "sre"), spec("c.md", "*"), spec("a.md", "all")]
    assert [s.path for s in for_role(specs, "dev")] == ["a.md", "c.md"]
    assert [s.path for s in for_role(specs, "SRE")] == ["b.md", "c.md", "a.md"]


def test_documents_fill_the_budget_in_order_then_one_is_cut_then_none() -> None:
    reads = [
        DocumentRead(spec("one.md", "dev", title="One"), 100, text="a" * 100),
        DocumentRead(spec("two.md", "dev"), 5000, text="b" * 5000),
        DocumentRead(spec("three.md", "dev"), 10, text="c" * 10),
        DocumentRead(spec("gone.md", "dev"), 0, problem=Skipped.MISSING),
    ]
    block, placed = place(reads, budget=100 + MIN_PARTIAL_CHARS + 50)
    assert block.startswith(HEADING) and "### One (`one.md`)" in block
    assert "### two.md (`two.md`)" in block and CUT_MARKER.strip() in block
    assert [(p.path, p.included_chars, p.is_truncated, p.skipped) for p in placed] == [
        ("one.md", 100, False, None),
        ("two.md", MIN_PARTIAL_CHARS + 50, True, None),
        ("three.md", 0, False, Skipped.BUDGET),
        ("gone.md", 0, False, Skipped.MISSING),
    ]
    # Too little left for a useful part: left out, and everything after it too.
    block, placed = place(reads[:3], budget=100 + MIN_PARTIAL_CHARS - 1)
    assert [p.skipped for p in placed] == [None, Skipped.BUDGET, Skipped.BUDGET]
    assert place([], 1000) == ("", [])
    assert place(reads[3:], 1000)[0] == ""


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
       st.integers(min_value=0, max_value=20000))  # fmt: skip
def test_the_budget_is_never_exceeded(sizes: list[int], budget: int) -> None:
    reads = [DocumentRead(spec(f"d{i}.md", "dev"), n, text="x" * n) for i, n in enumerate(sizes)]
    _, placed = place(reads, budget)
    assert sum(p.included_chars for p in placed) <= budget
    assert len(placed) == len(reads)
