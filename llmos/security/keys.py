"""The per-installation secret that signs capabilities and audit lines (HMAC-SHA256)."""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from llmos.errors import ErrorCode, LlmosError

KEY_BYTES = 32


def _new_key() -> bytes:
    """32 random bytes from cryptography's key generator (also the shape AES-256-GCM needs)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def load_or_create_key(path: Path) -> bytes:
    """Read the key at `path`, creating it (mode 0600, exclusively) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, _new_key())
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LlmosError(
                ErrorCode.E_PERM, f"key file {path} is readable by others; run: chmod 600 {path}"
            )
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise LlmosError(ErrorCode.E_INVAL, f"key file {path} is damaged (wrong length)")
    return key


class Signer:
    """HMAC-SHA256 signatures under one key; verification is constant-time."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, data: bytes) -> str:
        """The hex HMAC of `data`."""
        # stdlib hmac.digest is one call into OpenSSL: a third of the cost of building an
        # HMAC object per line, and this runs on every dispatch (the audit line).
        return hmac.digest(self._key, data, "sha256").hex()

    def verify(self, data: bytes, signature: str) -> bool:
        """True when `signature` is this key's HMAC of `data` (False for any non-hex junk).

        A signature read from an edited file may be anything; one that is not ASCII text
        (a lone surrogate, say) must be a mismatch, not a UnicodeEncodeError.
        """
        if not isinstance(signature, str) or not signature.isascii():
            return False
        return hmac.compare_digest(self.sign(data), signature)
