"""The runner's side of project documents: read services.yaml and the documents of the run's role
from the clone, and put them where the prompt's one-time marker is (rules: domain/documents.py).

Read from the clone, not fetched by the control plane: the documents are those of the commit the
agent works on (a revise run sees the docs its branch changed), no GitHub API call is spent per
run, and any git remote works. Every path is resolved on disk and must stay inside the clone,
so a symbolic link cannot pull a file from outside it (a token, the pod's service account)
into a prompt that goes to the model provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codexk8s.domain.documents import (
    MAX_DOCUMENT_BYTES,
    MAX_SERVICES_YAML_BYTES,
    DocumentRead,
    DocumentSpec,
    PlacedDocument,
    Skipped,
    for_role,
    is_safe_path,
    parse_docs,
    place,
)


@dataclass(slots=True)
class DocumentsOutcome:
    """What the run's prompt received: the block, each document's record, and problems with
    services.yaml itself (absent, unreadable, entries left out)."""

    block: str = ""
    documents: list[PlacedDocument] = field(default_factory=list)
    services_yaml: str | None = None
    found: bool = False
    problems: list[str] = field(default_factory=list)

    def as_payload(self) -> dict[str, Any]:
        return {
            "services_yaml": self.services_yaml,
            "found": self.found,
            "documents": [document.as_dict() for document in self.documents],
            "problems": self.problems[:20],
            "chars": sum(document.included_chars for document in self.documents),
        }


def _inside(root: Path, relative: str) -> Path | None:
    """ROOT/RELATIVE resolved, or None when it leaves ROOT (through `..` or a link)."""
    if not is_safe_path(relative):
        return None
    resolved = (root / relative).resolve()
    return resolved if resolved.is_relative_to(root) else None


def _read(root: Path, spec: DocumentSpec) -> DocumentRead:
    path = _inside(root, spec.path)
    if path is None:
        return DocumentRead(spec, 0, problem=Skipped.OUTSIDE_REPOSITORY)
    if not path.exists():
        return DocumentRead(spec, 0, problem=Skipped.MISSING)
    if not path.is_file():
        return DocumentRead(spec, 0, problem=Skipped.NOT_A_FILE)
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        return DocumentRead(spec, size, problem=Skipped.TOO_LARGE)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return DocumentRead(spec, size, problem=Skipped.NOT_TEXT)
    if "\x00" in text:
        return DocumentRead(spec, size, problem=Skipped.NOT_TEXT)
    return DocumentRead(spec, size, text=text)


def collect(workspace: Path, *, services_yaml: str, role: str, max_chars: int) -> DocumentsOutcome:
    """The documents ROLE gets from WORKSPACE's SERVICES_YAML, within MAX_CHARS."""
    root = workspace.resolve()
    outcome = DocumentsOutcome(services_yaml=services_yaml)
    path = _inside(root, services_yaml)
    if path is None:
        outcome.problems.append(f"{services_yaml} is not a path inside the repository")
        return outcome
    if not path.is_file():
        return outcome
    outcome.found = True
    if path.stat().st_size > MAX_SERVICES_YAML_BYTES:
        outcome.problems.append(f"{services_yaml} is larger than {MAX_SERVICES_YAML_BYTES} bytes")
        return outcome
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        outcome.problems.append(f"{services_yaml} is not valid YAML: {type(exc).__name__}")
        return outcome
    specs, problems = parse_docs(data)
    outcome.problems.extend(problems)
    reads = [_read(root, spec) for spec in for_role(specs, role)]
    outcome.block, outcome.documents = place(reads, max_chars)
    return outcome
