"""`codexk8s secrets rotate` on PostgreSQL: re-encrypts every stored secret, all or nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session
from typer.testing import CliRunner

from codexk8s.cli import app
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.db.engine import get_engine
from codexk8s.db.models import Repository
from codexk8s.services import projects, repositories, secret_rotation
from tests.conftest import reset_caches

OLD_KEY = "old-secret-key-0123456789"
NEW_KEY = "new-secret-key-9876543210"
SECRETS = {
    "octo/one": ("token-one-aaaaaaaa", "hook-one-bbbbbbbb"),
    "octo/two": ("token-two-cccccccc", None),
    "octo/three": (None, "hook-three-dddddddd"),
}


@pytest.fixture
def stored(app_db: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Repositories whose secrets were written with OLD_KEY; the settings now name NEW_KEY."""
    old_box = SecretBox(OLD_KEY)
    with Session(get_engine()) as session:
        projects.create_project(session=session, key="web", slots=1)
        for full_name, (token, hook) in SECRETS.items():
            repositories.add_repository(
                session=session, box=old_box, project_key="web", full_name=full_name,
                token=token, webhook_secret=hook,
            )  # fmt: skip
        session.commit()
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", NEW_KEY)
    reset_caches()
    return ciphertexts()


def ciphertexts() -> dict[str, str]:
    with get_engine().connect() as connection:
        rows = connection.execute(
            sa.select(Repository.owner, Repository.name, Repository.token_ciphertext,
                      Repository.webhook_secret_ciphertext)
        ).all()  # fmt: skip
    found = {}
    for row in rows:
        full_name = f"{row.owner}/{row.name}"
        if row.token_ciphertext:
            found[f"{full_name}:token"] = row.token_ciphertext
        if row.webhook_secret_ciphertext:
            found[f"{full_name}:hook"] = row.webhook_secret_ciphertext
    return found


def plaintexts(box: SecretBox) -> dict[str, str]:
    return {name: box.decrypt(value) for name, value in ciphertexts().items()}


EXPECTED = {
    "octo/one:token": "token-one-aaaaaaaa",
    "octo/one:hook": "hook-one-bbbbbbbb",
    "octo/two:token": "token-two-cccccccc",
    "octo/three:hook": "hook-three-dddddddd",
}


def test_every_ciphertext_column_is_covered() -> None:
    names = {
        f"{table.name}.{column.name}"
        for table, columns in secret_rotation.encrypted_columns()
        for column in columns
    }
    assert names >= {"repositories.token_ciphertext", "repositories.webhook_secret_ciphertext"}


def test_rotation_makes_old_rows_readable_with_only_the_new_key(stored: dict[str, str]) -> None:
    with pytest.raises(DecryptionError):
        SecretBox(NEW_KEY).decrypt(stored["octo/one:token"])
    result = secret_rotation.rotate_secrets(
        get_engine(), current_key=NEW_KEY, previous_keys=["unrelated-key-xyz", OLD_KEY]
    )
    assert result.rotated == {
        "repositories.token_ciphertext": 2,
        "repositories.webhook_secret_ciphertext": 2,
    }
    assert result.already_current == 0
    assert plaintexts(SecretBox(NEW_KEY)) == EXPECTED
    with pytest.raises(DecryptionError):
        SecretBox(OLD_KEY).decrypt(ciphertexts()["octo/one:token"])

    again = secret_rotation.rotate_secrets(
        get_engine(), current_key=NEW_KEY, previous_keys=[OLD_KEY]
    )
    assert again.total_rotated == 0 and again.already_current == 4
    before = ciphertexts()
    secret_rotation.rotate_secrets(get_engine(), current_key=NEW_KEY, previous_keys=[])
    assert ciphertexts() == before  # idempotent: values already current are left untouched


def test_a_row_no_key_opens_fails_and_changes_nothing(stored: dict[str, str]) -> None:
    # One row already under the new key, so a partial write would be visible.
    with get_engine().begin() as connection:
        connection.execute(
            sa.update(Repository)
            .where(Repository.name == "two")
            .values(token_ciphertext=SecretBox(NEW_KEY).encrypt("token-two-cccccccc"))
        )
    before = ciphertexts()
    with pytest.raises(secret_rotation.RotationError, match="nothing was changed") as raised:
        secret_rotation.rotate_secrets(
            get_engine(), current_key=NEW_KEY, previous_keys=["wrong-previous-key"]
        )
    assert "repositories." in str(raised.value)
    assert ciphertexts() == before


def test_cli_rotates_with_the_previous_keys_setting(
    stored: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("CODEXK8S_SECRET_KEY_PREVIOUS", f"nope-not-this-one,{OLD_KEY}")
    reset_caches()
    result = runner.invoke(app, ["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 4 stored secrets" in result.output
    assert "0 already under the current key" in result.output
    for secret in [*EXPECTED.values(), OLD_KEY, NEW_KEY]:
        assert secret not in result.output
    # The service reads them with the new key alone now.
    monkeypatch.delenv("CODEXK8S_SECRET_KEY_PREVIOUS")
    reset_caches()
    assert plaintexts(SecretBox(NEW_KEY)) == EXPECTED
    second = runner.invoke(app, ["secrets", "rotate"])
    assert second.exit_code == 0 and "re-encrypted 0 stored secrets" in second.output
    assert "4 already under the current key" in second.output


def test_cli_with_a_wrong_previous_key_fails_clearly_and_changes_nothing(
    stored: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXK8S_SECRET_KEY_PREVIOUS", "wrong-previous-key")
    reset_caches()
    result = CliRunner().invoke(app, ["secrets", "rotate"])
    assert result.exit_code == 1
    assert "opens with neither CODEXK8S_SECRET_KEY nor any key in" in result.output
    assert "nothing was changed" in result.output
    assert ciphertexts() == stored
    for secret in [*EXPECTED.values(), "wrong-previous-key", NEW_KEY]:
        assert secret not in result.output


def test_the_service_reads_old_rows_while_previous_keys_are_configured(
    stored: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from codexk8s.crypto import get_secret_box

    with pytest.raises(DecryptionError):
        get_secret_box().decrypt(stored["octo/one:hook"])
    monkeypatch.setenv("CODEXK8S_SECRET_KEY_PREVIOUS", OLD_KEY)
    reset_caches()
    assert get_secret_box().decrypt(stored["octo/one:hook"]) == "hook-one-bbbbbbbb"


def test_agent_session_blobs_are_rotated_too(stored: dict[str, str]) -> None:
    """Binary ciphertext (an agent's session, issue #19) is rotated like the text secrets."""
    import gzip
    import uuid

    from codexk8s.db.models import AgentRun, AgentSession

    blob = gzip.compress(b'{"type": "session_meta"}\n')
    with Session(get_engine()) as session:
        run = AgentRun(correlation_id=uuid.uuid4().hex, project_id=1, agent_key="dev",
                       stage="dev")  # fmt: skip
        session.add(run)
        session.flush()
        sealed = SecretBox(OLD_KEY).encrypt_bytes(blob)
        session.add(AgentSession(
            run_id=run.id or 0, thread_id="t", path="p", size_bytes=len(blob),
            raw_size_bytes=0, sha256="0" * 64, data_ciphertext=sealed,
        ))  # fmt: skip
        session.commit()
    result = secret_rotation.rotate_secrets(get_engine(), current_key=NEW_KEY,
                                            previous_keys=[OLD_KEY])  # fmt: skip
    assert result.rotated["agent_sessions.data_ciphertext"] == 1
    with Session(get_engine()) as session:
        (row,) = session.exec(sa.select(AgentSession)).all()
    assert SecretBox(NEW_KEY).decrypt_bytes(row[0].data_ciphertext) == blob
    with pytest.raises(DecryptionError):
        SecretBox(OLD_KEY).decrypt_bytes(row[0].data_ciphertext)
