"""`codexk8s migrate`, `seed` and `prompt ...` against a real PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from codexk8s.db.engine import get_engine
from codexk8s.db.models import PromptTemplate
from tests.test_cli import cli


@pytest.fixture(autouse=True)
def _db(app_db: str) -> None:
    """Every test here runs on its own migrated PostgreSQL database."""


def templates() -> int:
    with Session(get_engine()) as session:
        return session.exec(sa.select(sa.func.count()).select_from(PromptTemplate)).one()[0]


def test_migrate_seeds_the_templates_once_and_seed_repeats_safely() -> None:
    code, _, err = cli("migrate")
    assert code == 0 and "loaded 30 default prompt templates" in err
    assert templates() == 30
    code, _, err = cli("seed")
    assert code == 0 and err == "" and templates() == 30


def test_prompt_commands_edit_and_restore(tmp_path: Path) -> None:
    assert cli("seed")[0] == 0
    code, out, _ = cli("prompt", "list")
    assert code == 0 and len(out.splitlines()) == 30
    assert out.splitlines()[0].split()[:3] == ["intake", "work", "v1"]
    code, original, _ = cli("prompt", "show", "dev", "work")
    assert code == 0 and original.startswith("# Stage `{{stage}}`")

    new = tmp_path / "dev.md"
    new.write_text("Implement {{issue_title}} with tests.\n")
    assert (
        cli("prompt", "set", "dev", "work", "--file", str(new))[1] == "dev/work: saved version 2\n"
    )
    assert cli("prompt", "show", "dev", "work")[1] == "Implement {{issue_title}} with tests.\n"
    assert cli("prompt", "show", "dev", "work", "--version", "1")[1] == original

    bad = tmp_path / "bad.md"
    bad.write_text("Do {{issue.title}}\n")
    code, _, err = cli("prompt", "set", "dev", "work", "--file", str(bad))
    assert code == 1 and "unknown placeholder {{issue.title}}" in err
    code, _, err = cli("prompt", "set", "dev", "work", "--file", str(tmp_path / "missing.md"))
    assert code == 1 and "cannot read" in err

    code, out, _ = cli("prompt", "history", "dev", "work")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["v2", "v1"]
    first_id = lines[1].split()[1].removeprefix("id=")
    code, out, _ = cli("prompt", "restore", first_id)
    assert code == 0 and out == "dev/work: saved version 3\n"
    assert cli("prompt", "show", "dev", "work")[1] == original
    assert templates() == 32
