"""Encryption at rest of stored memory: AES-256-GCM, each blob bound to its record id.

One random key, LLMOS_HOME/keys/memory.key (0600, made on first encrypted use), seals memory's
records (text, tags and metadata), their embeddings and the saved sessions; a keyed digest under
a key derived from it stands in for a tag where the index must match it without holding it. The
key is apart from the install key, which signs capabilities: losing one costs only it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from llmos.errors import ErrorCode, LlmosError
from llmos.security.keys import derive_key, load_or_create_key

NONCE_BYTES = 12
KEY_FILE = ("keys", "memory.key")
"""Where the memory key lives, under LLMOS_HOME."""
DIGEST_CHARS = 16
"""Hex characters of a keyed digest (64 bits): enough that two tags or words never collide in
one person's memory, short enough that an index over them stays small."""


def memory_key_path(home: Path) -> Path:
    """The memory key of the installation at `home`."""
    return home.joinpath(*KEY_FILE)


class RecordCipher:
    """Seals and opens record blobs; the record id (plus a purpose) is the associated data, so a
    ciphertext copied onto another record, or from text to vector, fails to open."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._digest_key = derive_key(key, "llmos-memory/digest")

    @classmethod
    def from_key_file(cls, path: Path) -> RecordCipher:
        """A cipher under the key at `path`, created (0600) on first use."""
        return cls(load_or_create_key(path))

    @classmethod
    def existing(cls, path: Path, what: str) -> RecordCipher:
        """A cipher under the key at `path`, which must exist (E_IO naming `what` otherwise):
        opening something sealed never invents a new key."""
        if not path.exists():
            raise LlmosError(
                ErrorCode.E_IO, f"{what} is encrypted but its key {path} is missing; restore it"
            )
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

    def digest(self, purpose: str, value: str) -> str:
        """A keyed digest of `value`: equal values give equal digests (so an index can match
        them), and without the key nobody can tell which value, even by trying likely ones."""
        data = f"{purpose}\x00{value}".encode()
        return hmac.new(self._digest_key, data, hashlib.sha256).hexdigest()[:DIGEST_CHARS]


def _aad(record_id: str, purpose: str) -> bytes:
    return f"llmos-memory/{purpose}/{record_id}".encode()
