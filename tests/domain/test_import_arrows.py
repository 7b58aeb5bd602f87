"""The import arrows between codexk8s's packages (docs/architecture.md, "Import arrows"): every
module's imports are read with ast and checked against the table, which the doc states too."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import codexk8s

PACKAGE_DIR = Path(codexk8s.__file__).parent
ARCHITECTURE_DOC = PACKAGE_DIR.parent / "docs" / "architecture.md"
STDLIB = "the standard library"
STDLIB_WORDS = "anything but the standard library and `domain` itself"

# Package → the codexk8s packages it must not import. `domain` is stricter: only the standard
# library and itself (STDLIB stands for that rule in the doc's table).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": (STDLIB,),
    "agent": ("web", "services", "db"),
    "adapters": ("services", "web"),
    "services": ("web",),
    "web": ("db",),
    "jobs": ("web", "db"),
}

# Web modules that compose the application and so may reach `db`: the lifespan builds the control
# loop and the notification hub's transport from the SQLAlchemy engine.
COMPOSITION_ROOT = {"codexk8s.web.lifespan", "codexk8s.web.live"}

# Arrows the table forbids that still exist, each with the reason it is not fixed yet. An entry
# that no longer matches a real import fails the test, so the list only shrinks. None is left:
# every service web calls finds the application's engine itself when it is given none.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module PATH imports (relative imports resolved, `from a import b` also as `a.b`)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            submodules = {name for name in submodules if _is_codexk8s_module(name)}
            names.update(submodules or {base})
    return names


def _is_codexk8s_module(name: str) -> bool:
    if not name.startswith("codexk8s."):
        return False
    path = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "codexk8s" else None


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names or module == "__future__"


def forbidden_arrows(path: Path) -> set[tuple[str, str]]:
    module = module_name(path)
    package = _package_of(module)
    rules = FORBIDDEN.get(package or "", ())
    arrows: set[tuple[str, str]] = set()
    for name in imports(path):
        target = _package_of(name)
        if STDLIB in rules:
            if target != package and not (target is None and _is_stdlib(name)):
                arrows.add((module, name))
        elif target in rules and not (package == "web" and module in COMPOSITION_ROOT):
            arrows.add((module, name))
    return arrows


def all_forbidden_arrows() -> set[tuple[str, str]]:
    return {arrow for path in PACKAGE_DIR.rglob("*.py") for arrow in forbidden_arrows(path)}


def test_no_import_arrow_the_architecture_forbids() -> None:
    found = all_forbidden_arrows()
    assert found - set(ALLOWED) == set()
    # A fixed arrow leaves the allow-list with it.
    assert set(ALLOWED) - found == set()


def test_the_doc_states_the_same_table() -> None:
    doc = ARCHITECTURE_DOC.read_text()
    section = doc.split("## Import arrows", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            rows[cells[0].strip("`")] = cells[1]
    expected = {
        package: STDLIB_WORDS if STDLIB in rules else ", ".join(f"`{r}`" for r in rules)
        for package, rules in FORBIDDEN.items()
    }
    assert rows == expected
    roots = set(re.findall(r"`(codexk8s\.web\.[a-z_.]+)`", section))
    assert roots == COMPOSITION_ROOT


def test_the_check_itself_catches_forbidden_arrows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_root = tmp_path / "codexk8s"
    for package in ("agent", "db", "domain", "web"):
        (fake_root / package).mkdir(parents=True)
        (fake_root / package / "__init__.py").write_text("")
    (fake_root / "web" / "routes.py").write_text("")
    (fake_root / "db" / "engine.py").write_text("")
    (fake_root / "agent" / "brief.py").write_text(
        "from codexk8s.web import routes\nfrom ..domain import runs\nimport httpx\n"
    )
    (fake_root / "domain" / "rules.py").write_text(
        "import re\nimport sqlmodel\nfrom . import runs\n"
    )
    (fake_root / "web" / "lifespan.py").write_text("from codexk8s.db.engine import get_engine\n")
    (fake_root / "web" / "page.py").write_text("from codexk8s.db import engine\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", fake_root)
    found = {arrow for path in fake_root.rglob("*.py") for arrow in forbidden_arrows(path)}
    assert found == {
        ("codexk8s.agent.brief", "codexk8s.web.routes"),
        ("codexk8s.domain.rules", "sqlmodel"),
        ("codexk8s.web.page", "codexk8s.db.engine"),
    }
