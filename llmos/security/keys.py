"""The per-installation secret that signs capabilities and audit lines (HMAC-SHA256 via cryptography)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import constant_time, hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from llmos.errors import ErrorCode, LlmosError

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """Read the key at `path`, creating it (mode 0600, exclusively) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, os.urandom(KEY_BYTES))
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
        mac = crypto_hmac.HMAC(self._key, hashes.SHA256())
        mac.update(data)
        return mac.finalize().hex()

    def verify(self, data: bytes, signature: str) -> bool:
        """True when `signature` is this key's HMAC of `data`."""
        return constant_time.bytes_eq(self.sign(data).encode(), signature.encode())
