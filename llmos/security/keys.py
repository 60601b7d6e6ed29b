"""The per-installation secret, created atomically, and the keys derived from it (HMAC-SHA256)."""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from llmos.atomic import TEMP_MARK, write_atomic
from llmos.errors import ErrorCode, LlmosError

KEY_BYTES = 32

_log = logging.getLogger(__name__)

_HKDF_SALT = b"llmos key derivation v1"
"""A fixed, public salt: it makes the extracted key differ from the install secret itself, so a
derived key is never an HMAC made under the secret (which signs capabilities)."""


def _new_key() -> bytes:
    """32 random bytes from cryptography's key generator (also the shape AES-256-GCM needs)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def load_or_create_key(path: Path) -> bytes:
    """Read the key at `path`, creating it (mode 0600) on first use.

    The key only ever appears whole: it is written to a temporary file beside it, synced, and
    linked into place, so a crash leaves no key or a whole one. A file shorter than a key (left
    by a crash of an llmos that wrote keys in place) was never usable as one, so it is replaced,
    with a warning; a longer one is reported as damaged.
    """
    key = _read_key(path)
    if key is not None and len(key) == KEY_BYTES:
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _creation_lock(path):
        key = _read_key(path)  # another llmos process may have made it while we waited
        if key is None:
            try:
                _install(path, _new_key(), replace=False)
            except LlmosError as exc:  # made meanwhile by an llmos that takes no lock
                if exc.code is not ErrorCode.E_EXISTS:
                    raise
        elif len(key) < KEY_BYTES:
            _log.warning(
                "key file %s held %d of %d bytes (cut short by a crash while it was first "
                "written; it never signed or sealed anything): replaced with a new key",
                path,
                len(key),
                KEY_BYTES,
            )
            _install(path, _new_key(), replace=True)
        key = _read_key(path)
    if key is None or len(key) != KEY_BYTES:
        raise LlmosError(ErrorCode.E_INVAL, f"key file {path} is damaged (wrong length)")
    return key


def _read_key(path: Path) -> bytes | None:
    """The bytes of the key file (up to one more than a key), or None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LlmosError(
                ErrorCode.E_PERM, f"key file {path} is readable by others; run: chmod 600 {path}"
            )
        return os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _creation_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the key while it is made, so that two llmos processes
    starting at once agree on one key; stale temporary files of this key go while it is held."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for left in (f".{path.name}{TEMP_MARK}*", f".{path.name}.*.tmp"):  # now, and as once named
            for stale in path.parent.glob(left):
                with contextlib.suppress(OSError):
                    stale.unlink()
        yield
    finally:
        os.close(fd)


def _install(path: Path, key: bytes, *, replace: bool) -> None:
    """Put `key` at `path` (0600) whole: written beside it, synced, then linked into place (or,
    with `replace`, renamed over a damaged key); E_EXISTS when one appeared meanwhile."""
    write_atomic(path, key, mode=0o600, exclusive=not replace)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one `purpose`, from the install secret (HKDF-SHA256, RFC 5869, with the
    purpose as its info): keys for different purposes are independent of one another."""
    prk = hmac.digest(_HKDF_SALT, secret, "sha256")
    return hmac.digest(prk, purpose.encode() + b"\x01", "sha256")


class Signer:
    """HMAC-SHA256 signatures under one key; verification is constant-time."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def derive(self, purpose: str) -> Signer:
        """A signer under the key for `purpose` derived from this one's (see `derive_key`)."""
        return Signer(derive_key(self._key, purpose))

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
