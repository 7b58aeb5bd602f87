"""Secrets at rest: ciphertext only, bound to the key, rotatable; tokens hashed."""

from __future__ import annotations

import pytest

from codexk8s.crypto import DecryptionError, SecretBox, hash_token, new_token


def test_round_trip_and_no_plaintext_in_ciphertext() -> None:
    box = SecretBox("key-one")
    secret = "ghp_supersecretvalue123"
    ciphertext = box.encrypt(secret)
    assert secret not in ciphertext
    assert box.decrypt(ciphertext) == secret
    # Fernet is randomised: the same secret never encrypts the same way twice.
    assert box.encrypt(secret) != ciphertext


def test_wrong_key_does_not_decrypt() -> None:
    ciphertext = SecretBox("key-one").encrypt("value")
    with pytest.raises(DecryptionError):
        SecretBox("key-two").decrypt(ciphertext)


def test_rotation_re_encrypts_under_the_new_key() -> None:
    old = SecretBox("old-key")
    ciphertext = old.encrypt("value")
    rotating = SecretBox("new-key", previous_keys=["old-key"])
    assert rotating.decrypt(ciphertext) == "value"
    rotated = rotating.rotate(ciphertext)
    assert SecretBox("new-key").decrypt(rotated) == "value"
    with pytest.raises(DecryptionError):
        old.decrypt(rotated)


def test_tokens_are_random_and_hashed() -> None:
    first, second = new_token(), new_token()
    assert first != second
    assert first.startswith("ck8s_")
    assert len(hash_token(first)) == 64
    assert hash_token(first) == hash_token(first)
    assert hash_token(first) != hash_token(second)
