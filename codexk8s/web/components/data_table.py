"""The dashboard's tables: one look (compact rows, a scroll box on narrow screens)."""

from __future__ import annotations

import reflex as rx


def data_table(
    headers: list[str], body: rx.Component, *, test_id: str, size: str = "1"
) -> rx.Component:
    """HEADERS over BODY (an `rx.table.body`), horizontally scrollable when too wide."""
    return rx.box(
        rx.table.root(
            rx.table.header(rx.table.row(*(rx.table.column_header_cell(h) for h in headers))),
            body,
            width="100%",
            size=size,
            data_testid=test_id,
        ),
        width="100%",
        overflow_x="auto",
    )
