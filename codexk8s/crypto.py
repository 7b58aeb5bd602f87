"""Encryption of secrets at rest, and hashing of bearer tokens."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from codexk8s.logging_config import register_secret

_ENCRYPTION_INFO = b"codexk8s/encryption/v1"
_SIGNING_INFO = b"codexk8s/signing/v1"
TOKEN_PREFIX = "ck8s_"


class DecryptionError(Exception):
    """A stored ciphertext does not open with the configured key (wrong or rotated key)."""


def _derive(secret_key: str, info: bytes) -> bytes:
    # The operator's secret can be any string; HKDF turns it into independent keys per purpose.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        secret_key.encode()
    )


def signing_key(secret_key: str) -> bytes:
    """A key for HMAC signatures, independent of the encryption key."""
    return _derive(secret_key, _SIGNING_INFO)


class SecretBox:
    """Fernet (AES-128-CBC + HMAC-SHA256) with the current key first and older keys accepted.

    Older keys let `secrets rotate` re-encrypt rows while the service keeps reading them.
    """

    def __init__(self, secret_key: str, previous_keys: Sequence[str] = ()) -> None:
        keys = [secret_key, *previous_keys]
        self._fernet = MultiFernet(
            [Fernet(base64.urlsafe_b64encode(_derive(k, _ENCRYPTION_INFO))) for k in keys]
        )

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            plaintext = self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise DecryptionError(
                "stored secret does not decrypt with CODEXK8S_SECRET_KEY"
            ) from None
        # Whatever was stored encrypted must never appear in a log line of this process.
        register_secret(plaintext)
        return plaintext

    def encrypt_bytes(self, data: bytes) -> bytes:
        """DATA encrypted: for stored blobs that are not credentials themselves (an agent's
        session), so opening one registers nothing for log masking."""
        return self._fernet.encrypt(data)

    def decrypt_bytes(self, ciphertext: bytes) -> bytes:
        try:
            return self._fernet.decrypt(ciphertext)
        except InvalidToken:
            raise DecryptionError("stored data does not decrypt with CODEXK8S_SECRET_KEY") from None

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt under the current key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise DecryptionError("stored secret does not decrypt with any known key") from None

    def rotate_bytes(self, ciphertext: bytes) -> bytes:
        """Re-encrypt a blob under the current key."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise DecryptionError("stored data does not decrypt with any known key") from None


def new_token() -> str:
    """A fresh bearer token: 256 bits of randomness with a recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 of a high-entropy token.

    A plain hash (not a keyed one) on purpose: tokens carry 256 random bits, so brute force is
    hopeless, and tokens keep working across a SECRET_KEY rotation.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@functools.cache
def get_secret_box() -> SecretBox:
    """The process-wide box for CODEXK8S_SECRET_KEY (tests clear the cache with the settings)."""
    from codexk8s.config import get_settings

    settings = get_settings()
    return SecretBox(settings.secret_key_value(), settings.previous_secret_keys())
