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


def head_path(path: Path) -> Path:
    """Where the log's head lives: the sequence number and hash of the last line written,
    signed, so that lines cut from the end of the log (which leave a valid chain) are found."""
    return path.with_name(path.name + ".head")


def _head_record(seq: int, line_hash: str, signer: Signer) -> bytes:
    body = f"{seq:020d} {line_hash}".encode()
    return body + b" " + signer.sign(body).encode() + b"\n"


class AuditLog:
    """Appends signed, chained lines; safe for several llmos processes writing one file, and
    for several threads of one (processes under the scheduler dispatch concurrently). After
    each line it rewrites the head (`head_path`) in place, a fixed-length record."""

    def __init__(self, path: Path, signer: Signer) -> None:
        self.path = path
        self._signer = signer
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | _O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        head_flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | _O_CLOEXEC
        self._head_fd = os.open(head_path(path), head_flags, 0o600)
        self._size = -1
        self._prev = GENESIS
        self._seq = 0
        if os.fstat(self._head_fd).st_size == 0:
            self._start_head()
        # flock excludes other open files only: threads sharing this descriptor would all
        # hold the lock at once and chain two lines to the same predecessor.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the log file."""
        if self._fd >= 0:
            os.close(self._fd)
            os.close(self._head_fd)
            self._fd = -1

    def _start_head(self) -> None:
        """Give a log that has none (one written before heads were kept) its head now."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            if size and os.fstat(self._head_fd).st_size == 0:
                self._sync_tail(size)
                os.pwrite(self._head_fd, _head_record(self._seq, self._prev, self._signer), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

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
                os.pwrite(self._head_fd, _head_record(self._seq, self._prev, self._signer), 0)
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
    """Check every line's MAC, sequence number and link to the line before, and the head.

    An edited line fails its MAC; a removed, inserted or reordered line breaks the sequence and
    the chain at the first line after the change; lines cut from the end leave the log short
    of its signed head. Returns (lines checked, problems).
    """
    problems: list[AuditProblem] = []
    prev, seq, count = GENESIS, 0, 0
    head, head_problem = _read_head(path, signer)
    if not path.exists():
        if head is not None and head[0] > 0:
            problems.append(AuditProblem(0, f"log removed: its head names line #{head[0]}"))
        return 0, problems
    named: str | None = None
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
        if head is not None and seq == head[0]:
            named = prev
    if count and head_problem:
        problems.append(AuditProblem(count, head_problem))
    elif head is not None and head[0] > seq:
        problems.append(
            AuditProblem(
                count, f"lines removed from the end: the log ends at #{seq}, #{head[0]} was written"
            )
        )
    elif head is not None and named != head[1]:
        problems.append(
            AuditProblem(
                count, f"head: line #{head[0]} is not the one written (the log was rewritten)"
            )
        )
    return count, problems


def _read_head(path: Path, signer: Signer) -> tuple[tuple[int, str] | None, str]:
    """The head's (sequence number, line hash), or None and why it cannot be trusted."""
    try:
        raw = head_path(path).read_bytes()
    except FileNotFoundError:
        return None, "head missing: lines cut from the end would go unnoticed (removed?)"
    except OSError as exc:
        return None, f"head unreadable: {exc}"
    parts = raw.strip().split(b" ")
    if len(parts) != 3 or not parts[0].isdigit():
        return None, "head damaged or edited"
    body = parts[0] + b" " + parts[1]
    if not signer.verify(body, parts[2].decode("ascii", "replace")):
        return None, "head edited: its signature does not match"
    return (int(parts[0]), parts[1].decode("ascii")), ""
