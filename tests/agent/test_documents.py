"""The runner reading project documents from its clone (agent/documents.py)."""

from __future__ import annotations

import os
from pathlib import Path

from codexk8s.agent.documents import collect
from codexk8s.domain.documents import MAX_DOCUMENT_BYTES, MAX_SERVICES_YAML_BYTES

SERVICES = """
docs:
  - path: docs/arch.md
    roles: [dev]
  - path: docs/dir
    roles: [dev]
  - path: docs/binary.bin
    roles: [dev]
  - path: docs/huge.md
    roles: [dev]
  - path: docs/link-out.md
    roles: [dev]
  - path: docs/link-in.md
    roles: [dev]
"""


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "docs" / "dir").mkdir(parents=True)
    (root / "services.yaml").write_text(SERVICES)
    (root / "docs" / "arch.md").write_text("Layers: domain, services, adapters.\n")
    (root / "docs" / "binary.bin").write_bytes(b"\xff\xfe\x00binary")
    (root / "docs" / "huge.md").write_text("x" * (MAX_DOCUMENT_BYTES + 1))
    secret = tmp_path / "token"
    secret.write_text("ghs_secret_outside")
    os.symlink(secret, root / "docs" / "link-out.md")
    os.symlink(root / "docs" / "arch.md", root / "docs" / "link-in.md")
    return root


def test_each_document_is_read_or_skipped_with_its_reason(tmp_path: Path) -> None:
    outcome = collect(workspace(tmp_path), services_yaml="services.yaml", role="dev",
                      max_chars=10_000)  # fmt: skip
    found = {d.path: d.skipped.value if d.skipped else "ok" for d in outcome.documents}
    assert found == {
        "docs/arch.md": "ok", "docs/dir": "not_a_file", "docs/binary.bin": "not_text",
        "docs/huge.md": "too_large", "docs/link-out.md": "outside_repository",
        "docs/link-in.md": "ok",  # a link inside the clone is fine
    }  # fmt: skip
    assert "ghs_secret_outside" not in outcome.block
    assert outcome.block.count("Layers: domain, services, adapters.") == 2
    assert outcome.found and outcome.as_payload()["chars"] == 2 * 36


def test_services_yaml_missing_outside_too_large_or_broken(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    assert collect(root, services_yaml="other.yaml", role="dev", max_chars=100).found is False
    outside = collect(root, services_yaml="../services.yaml", role="dev", max_chars=100)
    assert outside.problems and outside.block == ""
    (root / "big.yaml").write_text("#" * (MAX_SERVICES_YAML_BYTES + 1))
    assert "larger than" in collect(root, services_yaml="big.yaml", role="dev",
                                    max_chars=100).problems[0]  # fmt: skip
    (root / "bad.yaml").write_text("docs: [unclosed\n")
    broken = collect(root, services_yaml="bad.yaml", role="dev", max_chars=100)
    assert broken.found and "not valid YAML" in broken.problems[0]
    # A role without documents gets none.
    assert collect(root, services_yaml="services.yaml", role="sre", max_chars=100).block == ""
