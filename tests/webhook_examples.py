"""Real GitHub webhook payloads from the @octokit/webhooks-examples npm package."""

from __future__ import annotations

import copy
import functools
import itertools
import json
from pathlib import Path
from typing import Any

INDEX = (
    Path(__file__).resolve().parents[1]
    / ".tools/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
)


@functools.cache
def _index() -> dict[str, list[dict[str, Any]]]:
    if not INDEX.is_file():
        raise FileNotFoundError(f"{INDEX} is missing; run `make setup`")
    return {entry["name"]: entry["examples"] for entry in json.loads(INDEX.read_text())}


def examples(event: str) -> list[dict[str, Any]]:
    """Every captured example of EVENT (deep copies, safe to modify)."""
    return copy.deepcopy(_index()[event])


def example(event: str, action: str | None = None) -> dict[str, Any]:
    """The first example of EVENT with ACTION."""
    for payload in examples(event):
        if action is None or payload.get("action") == action:
            return payload
    raise LookupError(f"no {event}.{action} example")


_label_changes = itertools.count(1)


def with_labels(
    payload: dict[str, Any], item_key: str, names: list[str], changed: str | None
) -> dict[str, Any]:
    """Set the labels on payload[item_key] (issue or pull_request) and the changed label. Like
    GitHub, each labeling moves the item's `updated_at`, so no two bodies are the same (the same
    body again is a replay, which ingest refuses)."""
    template = {
        "id": 1,
        "node_id": "L",
        "url": "",
        "color": "ededed",
        "default": False,
        "description": None,
    }
    payload[item_key]["labels"] = [
        {**template, "id": i + 1, "name": n} for i, n in enumerate(names)
    ]
    if changed is not None:
        payload["label"] = {**template, "name": changed}
    payload[item_key]["updated_at"] = f"2026-12-01T00:00:00.{next(_label_changes):06d}Z"
    return payload
