"""Encryption at rest of stored memory: AES-256-GCM, each blob bound to its record id."""

from __future__ import annotations

import os
from pathlib import Path

from llmos.errors import ErrorCode, LlmosError
from llmos.security.keys import load_or_create_key

NONCE_BYTES = 12


class RecordCipher:
    """Seals and opens record blobs; the record id (plus a purpose) is the associated data, so a
    ciphertext copied onto another record, or from text to vector, fails to open."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: Path) -> RecordCipher:
        """A cipher under the key at `path`, created (0600) on first use."""
        return cls(load_or_create_key(path))

    def seal(self, record_id: str, purpose: str, data: bytes) -> bytes:
        """nonce || ciphertext+tag of `data`."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, _aad(record_id, purpose))

    def open(self, record_id: str, purpose: str, blob: bytes) -> bytes:
        """The plaintext of a sealed blob, or E_IO when it was altered or moved."""
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(record_id, purpose)
            )
        except (InvalidTag, ValueError):
            raise LlmosError(
                ErrorCode.E_IO, f"memory {record_id}: stored {purpose} fails its integrity check"
            ) from None


def _aad(record_id: str, purpose: str) -> bytes:
    return f"llmos-memory/{purpose}/{record_id}".encode()
