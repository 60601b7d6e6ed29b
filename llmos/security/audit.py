"""The tamper-evident audit log: one JSON line per dispatch, hash-chained and HMAC-signed."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmos.limits import AUDIT_INLINE_CHARS
from llmos.security.keys import Signer

GENESIS = "0" * 64
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


_MAX_ARGS_BYTES = 16 * 1024
"""Arguments whose logged form is larger than this are logged as one digest (keeps lines short)."""

_MAX_DEPTH = 8


def _text(value: str) -> str:
    """`value` if it is valid Unicode text; lone surrogates become backslash escapes."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _digest(data: bytes, unit: str, size: int) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), unit: size}


def _jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON data that always serialises: long strings and byte blobs become
    digests, keys become strings, and anything else becomes its (digested if long) repr."""
    if type(value) is str and len(value) <= AUDIT_INLINE_CHARS and value.isascii():
        return value  # the common case, checked first: this runs on every dispatch
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else {"int_bits": value.bit_length()}
    if isinstance(value, str):
        if len(value) > AUDIT_INLINE_CHARS:
            return _digest(value.encode("utf-8", "surrogatepass"), "chars", len(value))
        return _text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return _digest(data, "bytes", len(data))
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {_text(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(v, depth + 1) for v in value]
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not stop the audit line
        text = f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return _jsonable(text, depth + 1)


def digest_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as logged: long strings and byte blobs become their sha256 and length.

    Whatever the caller passed (nested data, non-string keys, objects, invalid text), the
    result is JSON data; if it is still over 16 KiB it is replaced by one digest of it.
    """
    out = {_text(str(key)): _jsonable(value) for key, value in args.items()}
    if len(out) <= 8 and all(_small(k, v) for k, v in out.items()):
        return out  # bounded well under the cap: skip serialising twice on the hot path
    blob = _canonical(out)
    if len(blob) > _MAX_ARGS_BYTES:
        return {"digest": _digest(blob, "bytes", len(blob))}
    return out


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _small(key: str, value: Any) -> bool:
    """A flat argument whose serialised size is bounded (short key, scalar or short string)."""
    if len(key) > 64:
        return False
    return (
        value is None
        or isinstance(value, bool | int | float)
        or (isinstance(value, str) and len(value) <= AUDIT_INLINE_CHARS)
    )


def _canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes a line's MAC covers: compact JSON with sorted keys (orjson, for speed).

    Lines we write never hold lone surrogates; an edited line read back may, which orjson
    refuses, so those go through json with surrogatepass and then fail their MAC, not raise.
    """
    try:
        return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")


class AuditLog:
    """Appends signed, chained lines; safe for several llmos processes writing one file, and
    for several threads of one (processes under the scheduler dispatch concurrently)."""

    def __init__(self, path: Path, signer: Signer) -> None:
        self.path = path
        self._signer = signer
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | _O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        self._size = -1
        self._prev = GENESIS
        self._seq = 0
        # flock excludes other open files only: threads sharing this descriptor would all
        # hold the lock at once and chain two lines to the same predecessor.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the log file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _sync_tail(self, size: int) -> None:
        """Re-read the last line when another writer appended since we last looked."""
        self._prev, self._seq = GENESIS, 0
        if size == 0:
            self._size = 0
            return
        with open(self.path, "rb") as fh:
            fh.seek(max(0, size - 65536))
            tail = fh.read(size - fh.tell())
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        self._prev = _line_hash(last)
        try:
            self._seq = int(json.loads(last)["seq"])
        except (ValueError, KeyError, TypeError):
            self._seq = 0
        self._size = size

    def record(
        self,
        *,
        pid: int,
        process: str,
        call: str,
        args: Mapping[str, Any],
        ok: bool,
        code: str | None,
        resources: list[str] | None = None,
    ) -> None:
        """Append one line for a dispatch (allowed or denied). The thread lock orders the
        threads of this process (flock only excludes other open files); flock, other
        processes."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(self._fd).st_size
                if size != self._size:
                    self._sync_tail(size)
                entry: dict[str, Any] = {
                    "seq": self._seq + 1,
                    "t": time.time(),
                    "pid": pid,
                    "proc": _jsonable(process),
                    "call": _jsonable(call),
                    "args": digest_args(args),
                    "ok": ok,
                    "code": code,
                    "prev": self._prev,
                }
                if resources:
                    entry["res"] = _jsonable(resources)
                body = _canonical(entry)
                mac = self._signer.sign(body)
                line = body[:-1] + b',"mac":"' + mac.encode() + b'"}\n'
                os.write(self._fd, line)
                self._prev = _line_hash(line)
                self._seq += 1
                self._size = size + len(line)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class AuditProblem:
    """One place where the log fails verification, with the 1-based line number."""

    line: int
    reason: str


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The log's lines, numbered from 1, without their newlines."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, raw.rstrip(b"\n")


def verify_log(path: Path, signer: Signer) -> tuple[int, list[AuditProblem]]:
    """Check every line's MAC, sequence number and link to the line before.

    An edited line fails its MAC; a removed, inserted or reordered line breaks the sequence and
    the chain at the first line after the change. Returns (lines checked, problems).
    """
    problems: list[AuditProblem] = []
    prev, seq, count = GENESIS, 0, 0
    if not path.exists():
        return 0, problems
    for number, raw in iter_lines(path):
        count = number
        try:
            entry = json.loads(raw)
            mac = entry.pop("mac")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            problems.append(AuditProblem(number, "not a valid audit line (edited or corrupted)"))
            prev = _line_hash(raw)
            continue
        if not signer.verify(_canonical(entry), str(mac)):
            problems.append(
                AuditProblem(number, "edited: its signature does not match its content")
            )
        elif entry.get("seq") != seq + 1:
            problems.append(
                AuditProblem(
                    number,
                    f"out of sequence: expected #{seq + 1}, found #{entry.get('seq')}"
                    " (lines removed, inserted or reordered before it)",
                )
            )
        elif entry.get("prev") != prev:
            problems.append(
                AuditProblem(number, "chain broken: the line before it is not the one it followed")
            )
        prev = _line_hash(raw)
        seq_value = entry.get("seq")
        seq = seq_value if isinstance(seq_value, int) else seq + 1
    return count, problems
