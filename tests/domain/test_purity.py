"""The domain package stays free of frameworks and I/O libraries (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import codexk8s.domain

FORBIDDEN = {"reflex", "sqlmodel", "sqlalchemy", "kubernetes", "openai", "httpx", "starlette",
             "pydantic", "psycopg", "authlib", "codexk8s.db", "codexk8s.adapters",
             "codexk8s.services", "codexk8s.web"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)


def test_domain_imports_no_framework() -> None:
    domain_dir = Path(codexk8s.domain.__file__).parent
    files = sorted(domain_dir.rglob("*.py"))
    assert len(files) >= 4
    offenders = {
        f"{path.name}: {module}"
        for path in files
        for module in _imports(path)
        if _is_forbidden(module)
    }
    assert offenders == set()


def test_the_check_itself_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import httpx\nfrom sqlmodel import Session\nfrom os import path\n")
    assert {m for m in _imports(bad) if _is_forbidden(m)} == {"httpx", "sqlmodel"}
