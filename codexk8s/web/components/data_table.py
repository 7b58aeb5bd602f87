"""The dashboard's tables: one look (compact rows, a scroll box on narrow screens)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reflex as rx


def data_table(
    headers: list[str] | tuple[str, ...],
    items: rx.Var,
    row: Callable[[Any], rx.Component],
    *,
    test_id: str | None = None,
    size: str | None = None,
    variant: str | None = None,
    empty: rx.Component | None = None,
    scrolls: bool = True,
    **box_props: Any,
) -> rx.Component:
    """HEADERS over ROW(item) for each of ITEMS, horizontally scrollable when too wide (unless
    SCROLLS is false: a table inside something that scrolls already); EMPTY instead when given
    and there are no items. SIZE and VARIANT are the table's (Radix's defaults when not given),
    BOX_PROPS the scroll box's."""
    table_props: dict[str, Any] = {"width": "100%"}
    if size is not None:
        table_props["size"] = size
    if variant is not None:
        table_props["variant"] = variant
    if test_id is not None:
        table_props["data_testid"] = test_id
    table = rx.table.root(
        rx.table.header(rx.table.row(*(rx.table.column_header_cell(h) for h in headers))),
        rx.table.body(rx.foreach(items, row)),
        **table_props,
    )
    if scrolls:
        table = rx.box(table, width="100%", overflow_x="auto", **box_props)
    if empty is None:
        return table
    return rx.cond(items.length() > 0, table, empty)  # type: ignore[attr-defined]
