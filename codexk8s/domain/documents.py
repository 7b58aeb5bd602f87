"""Project documents in the prompt (issue #19): which documents of a repository's services.yaml a
run's role gets, within a size budget, and how they read in the prompt.

services.yaml (its path is the repository's `services_yaml_path`) may hold, beside anything
else, a `docs` list:

    docs:
      - path: docs/architecture.md
        roles: [sa, dev, reviewer]        # agent roles; "all" (or "*") for every role
        title: Architecture               # optional; the path otherwise
      - path: docs/runbooks/deploy.md
        roles: [sre]

Rules (the runner reads the files from its clone; this module only decides):
- Entries are taken in file order; a role gets the entries naming it or `all`.
- A path must be relative, inside the repository (no `..`, no absolute path, no backslash).
- The budget counts the characters of the documents' text. A document that fits is included
  whole; the first one that does not fit is cut to what is left of the budget (with a marker)
  when that is at least MIN_PARTIAL_CHARS, else it is left out; every later one is left out.
- Every document the role asked for is reported with its size and what happened to it, so a
  run's page can say which documents the run received and which it did not, and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Final

ALL_ROLES: Final[frozenset[str]] = frozenset({"all", "*"})
MAX_ENTRIES: Final[int] = 100
MAX_PATH_LENGTH: Final[int] = 300
MIN_PARTIAL_CHARS: Final[int] = 1_000
# services.yaml is a configuration file; anything this large is not one.
MAX_SERVICES_YAML_BYTES: Final[int] = 256 * 1024
# A single document read for the prompt; the budget is what really limits.
MAX_DOCUMENT_BYTES: Final[int] = 2 * 1024 * 1024
HEADING: Final[str] = "## Project documents"
INTRO: Final[str] = (
    "Documents of this repository chosen for your role (from its services.yaml). They were "
    "written by the project's people: follow them where they apply to this work."
)
CUT_MARKER: Final[str] = "\n\n[… the rest of this document was left out: prompt size budget …]"


class Skipped(StrEnum):
    """Why a document the role asked for is not in the prompt."""

    MISSING = "missing"
    NOT_A_FILE = "not_a_file"
    OUTSIDE_REPOSITORY = "outside_repository"
    NOT_TEXT = "not_text"
    TOO_LARGE = "too_large"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class DocumentSpec:
    path: str
    roles: frozenset[str]
    title: str | None = None

    def is_for(self, role: str) -> bool:
        return bool(self.roles & ALL_ROLES) or role in self.roles


@dataclass(frozen=True, slots=True)
class DocumentRead:
    """What the runner found at a spec's path: its text, or why there is none."""

    spec: DocumentSpec
    size_bytes: int
    text: str | None = None
    problem: Skipped | None = None


@dataclass(frozen=True, slots=True)
class PlacedDocument:
    """A document as the run received it (or not): what the run's record shows."""

    path: str
    size_bytes: int
    included_chars: int
    is_truncated: bool = False
    skipped: Skipped | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "bytes": self.size_bytes,
            "chars": self.included_chars,
            "truncated": self.is_truncated,
            "skipped": self.skipped.value if self.skipped else None,
        }


def is_safe_path(path: str) -> bool:
    """A relative path that stays inside the repository (checked again on disk, for links)."""
    if not path or len(path) > MAX_PATH_LENGTH or "\\" in path or "\x00" in path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts and pure.parts != ()


def parse_docs(data: object) -> tuple[list[DocumentSpec], list[str]]:
    """The `docs` entries of a parsed services.yaml, and a sentence per entry that was left out
    (wrong shape, unsafe path). A file without `docs` has none; never raises."""
    if not isinstance(data, Mapping):
        return [], (["services.yaml is not a mapping"] if data is not None else [])
    raw = data.get("docs")
    if raw is None:
        return [], []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return [], ["`docs` must be a list"]
    specs: list[DocumentSpec] = []
    problems: list[str] = []
    for index, entry in enumerate(raw[:MAX_ENTRIES]):
        if not isinstance(entry, Mapping):
            problems.append(f"docs[{index}] is not a mapping")
            continue
        path, roles, title = entry.get("path"), entry.get("roles"), entry.get("title")
        if not isinstance(path, str) or not is_safe_path(path.strip()):
            problems.append(f"docs[{index}]: path must be relative and inside the repository")
            continue
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, Sequence) or not all(isinstance(r, str) for r in roles):
            problems.append(f"docs[{index}] ({path}): roles must be a list of role names")
            continue
        specs.append(
            DocumentSpec(
                path=path.strip(),
                roles=frozenset(r.strip().lower() for r in roles),
                title=title.strip() if isinstance(title, str) and title.strip() else None,
            )
        )
    if len(raw) > MAX_ENTRIES:
        problems.append(f"only the first {MAX_ENTRIES} entries of `docs` are read")
    return specs, problems


def for_role(specs: Sequence[DocumentSpec], role: str) -> list[DocumentSpec]:
    """The documents ROLE gets, in file order, each path once."""
    seen: set[str] = set()
    chosen = []
    for spec in specs:
        if spec.is_for(role.lower()) and spec.path not in seen:
            seen.add(spec.path)
            chosen.append(spec)
    return chosen


def place(reads: Sequence[DocumentRead], budget: int) -> tuple[str, list[PlacedDocument]]:
    """The prompt block for READS within BUDGET characters ('' when nothing fits or nothing was
    asked for), and the record of every document."""
    left = max(0, budget)
    parts: list[str] = []
    placed: list[PlacedDocument] = []
    for read in reads:
        path, size = read.spec.path, read.size_bytes
        if read.problem is not None or read.text is None:
            placed.append(PlacedDocument(path, size, 0, skipped=read.problem or Skipped.MISSING))
            continue
        text = read.text
        if len(text) <= left:
            body, is_truncated = text, False
        elif left >= MIN_PARTIAL_CHARS:
            body, is_truncated = text[:left] + CUT_MARKER, True
        else:
            placed.append(PlacedDocument(path, size, 0, skipped=Skipped.BUDGET))
            left = 0
            continue
        used = min(len(text), left)
        left -= used
        title = read.spec.title or path
        parts.append(f"### {title} (`{path}`)\n\n{body.rstrip()}")
        placed.append(PlacedDocument(path, size, used, is_truncated=is_truncated))
    if not parts:
        return "", placed
    return "\n\n".join([HEADING, INTRO, *parts]), placed
