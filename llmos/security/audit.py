"""The tamper-evident audit log: one JSON line per dispatch, hash-chained and HMAC-signed."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmos.atomic import write_all
from llmos.limits import AUDIT_INLINE_CHARS
from llmos.security.keys import Signer

GENESIS = "0" * 64
_log = logging.getLogger(__name__)
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


LINE_KEY = "audit lines"
"""The purpose the audit's line key is derived for (`Signer.derive`): never the key that signs
capabilities, so no signature made for one is ever accepted as the other."""

VALUE_KEY = "audit values"
"""The purpose of the key under which argument values are digested when `digest_values` is on."""

_MAX_PENDING = 10_000
"""Lines kept in memory while the log cannot be written; beyond it the oldest go, and a line
saying how many were lost is written first once writing works again."""


class AuditLog:
    """Appends signed, chained lines; safe for several llmos processes writing one file, and
    for several threads of one (processes under the scheduler dispatch concurrently). After
    each write it rewrites the head (`head_path`) in place, a fixed-length record.

    `record` never raises: a line that cannot be written (disk full, an I/O error) is kept in
    memory, a warning is logged once, and it is written before the next line, so the order
    holds. Writes are unbuffered `write(2)`s, so a line survives the llmos process being killed
    the moment `record` returns; `close` fsyncs, and with `durable` every write is fsynced too
    (a power loss then loses nothing recorded; off by default, it costs a disk flush per call).
    A line recorded after `close` (a job thread still dispatching) is still written: the log is
    opened for it and closed again.

    `signer` is the installation's; the log signs under a key derived from it for the audit
    alone (`LINE_KEY`). With `digest_values` (on when memory is encrypted) every argument value
    and resource is written as a keyed digest, never as its text.
    """

    def __init__(
        self, path: Path, signer: Signer, *, digest_values: bool = False, durable: bool = False
    ) -> None:
        self.path = path
        self.digest_values = digest_values
        self.durable = durable
        self._signer = signer.derive(LINE_KEY)
        self._values = signer.derive(VALUE_KEY)
        # flock excludes other open files only: threads sharing this descriptor would all
        # hold the lock at once and chain two lines to the same predecessor.
        self._lock = threading.Lock()
        self._pending: deque[dict[str, Any]] = deque()
        self._lost = 0
        self._failure: str | None = None
        self._closed = False
        self._fd = self._head_fd = -1
        self._size = -1
        self._prev = GENESIS
        self._seq = 0
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._open()
        if os.fstat(self._head_fd).st_size == 0:
            self._start_head()

    @property
    def pending(self) -> int:
        """Lines recorded but not yet written (the log could not be written to)."""
        return len(self._pending)

    @property
    def failure(self) -> str | None:
        """Why the last write failed, while lines are pending; None when all is written."""
        return self._failure

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | _O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        try:
            head_flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | _O_CLOEXEC
            self._head_fd = os.open(head_path(self.path), head_flags, 0o600)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _close_files(self) -> None:
        """fsync and close both files (a failed fsync does not keep them open)."""
        fd, head_fd, self._fd, self._head_fd = self._fd, self._head_fd, -1, -1
        for each in (fd, head_fd):
            if each >= 0:
                try:
                    os.fsync(each)
                except OSError as exc:
                    _log.warning("audit log %s: fsync failed at close: %s", self.path, exc)
                finally:
                    os.close(each)

    def close(self) -> None:
        """Write what is pending, fsync and close the log. Safe while other threads record:
        they wait for the lock, and a line recorded afterwards is still written."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pending or self._lost:
                self._write_pending()
            self._close_files()
            if self._pending:
                _log.warning(
                    "audit log %s closed with %d line(s) it could not write: %s",
                    self.path,
                    len(self._pending),
                    self._failure,
                )

    def flush(self) -> int:
        """Try again to write the lines still pending; how many remain."""
        with self._lock:
            if self._pending or self._lost:
                self._write_pending()
            return len(self._pending)

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

    def value_digest(self, value: Any) -> dict[str, Any]:
        """How a value is written with `digest_values`: a keyed digest (HMAC-SHA256 under the
        audit's value key, 128 bits) and its length. A short secret such as a PIN cannot be
        found by hashing guesses without the key, and equal values still show as equal."""
        plain = _jsonable(value)
        if isinstance(plain, str):
            data, size = plain.encode("utf-8", "surrogatepass"), {"chars": len(plain)}
        else:
            data, size = _canonical({"v": plain}), {}
        return {"hmac": self._values.sign(data)[:32], **size}

    def _entry(
        self,
        pid: int,
        process: str,
        call: str,
        args: Mapping[str, Any],
        ok: bool,
        code: str | None,
        resources: list[str] | None,
    ) -> dict[str, Any]:
        """A line's content, before it is placed in the chain (seq, prev) and signed."""
        if self.digest_values:
            logged: dict[str, Any] = {
                _text(str(key)): value
                if value is None or isinstance(value, bool)
                else self.value_digest(value)
                for key, value in args.items()
            }
        else:
            logged = digest_args(args)
        entry: dict[str, Any] = {
            "t": time.time(),
            "pid": pid if type(pid) is int else _jsonable(pid),
            "proc": _jsonable(process),
            "call": _jsonable(call),
            "args": logged,
            "ok": bool(ok),
            "code": _jsonable(code),
        }
        if resources:
            entry["res"] = (
                [self.value_digest(r) for r in resources]
                if self.digest_values
                else _jsonable(resources)
            )
        return entry

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
        """Append one line for a dispatch (allowed or denied); never raises (see the class).

        The thread lock orders the threads of this process (flock only excludes other open
        files); flock, other processes.
        """
        try:
            entry = self._entry(pid, process, call, args, ok, code, resources)
        except Exception as exc:  # the arguments could not even be described: log the call
            entry = {
                "t": time.time(),
                "pid": pid if type(pid) is int else -1,
                "proc": _jsonable(process),
                "call": _jsonable(call),
                "args": {"unloggable": type(exc).__name__},
                "ok": bool(ok),
                "code": _jsonable(code),
            }
        with self._lock:
            if len(self._pending) >= _MAX_PENDING:
                self._pending.popleft()
                self._lost += 1
            self._pending.append(entry)
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the pending lines in order (the lock held); on failure keep them and say why.
        A closed log is opened for this and closed again."""
        reopened = False
        try:
            if self._fd < 0:
                self._open()
                reopened = True
            self._append_locked()
        except Exception as exc:
            if self._failure is None:
                _log.warning(
                    "audit log %s cannot be written (%s: %s); %d line(s) kept in memory and "
                    "written before the next call's",
                    self.path,
                    type(exc).__name__,
                    exc,
                    len(self._pending),
                )
            self._failure = f"{type(exc).__name__}: {exc}"
        else:
            if self._failure is not None:
                _log.warning("audit log %s: writing again; no line was lost", self.path)
            self._failure = None
        finally:
            if reopened:
                with contextlib.suppress(OSError):
                    self._close_files()

    def _append_locked(self) -> None:
        """Under flock: chain, sign and append each pending line, then rewrite the head."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            if size != self._size:
                self._sync_tail(size)
            if self._lost:
                self._append(self._lost_entry())
                self._lost = 0
            while self._pending:
                self._append(self._pending[0])
                self._pending.popleft()
            if self.durable:
                os.fsync(self._fd)
            os.pwrite(self._head_fd, _head_record(self._seq, self._prev, self._signer), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _lost_entry(self) -> dict[str, Any]:
        return {
            "t": time.time(),
            "pid": os.getpid(),
            "proc": "audit",
            "call": "audit.lost",
            "args": {"lines": self._lost, "why": _jsonable(self._failure or "")},
            "ok": False,
            "code": "E_IO",
        }

    def _append(self, content: dict[str, Any]) -> None:
        """Append one line after the last; a partial write is cut off again, so the file never
        holds half a line, and the caller keeps the entry to try it later."""
        content["seq"] = self._seq + 1  # set again if this write fails and is retried
        content["prev"] = self._prev
        body = _canonical(content)
        mac = self._signer.sign(body)
        line = body[:-1] + b',"mac":"' + mac.encode() + b'"}\n'
        try:
            write_all(self._fd, line, sync=False)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._prev = _line_hash(line)
        self._seq += 1
        self._size += len(line)

    def tail(self, n: int = 10) -> list[AuditEntry]:
        """The last `n` lines as read back (unverified; see `verify_log`), oldest first, then
        any still waiting to be written (`written` False)."""
        entries = tail_log(self.path, n) if n > 0 else []
        with self._lock:
            waiting = list(self._pending)
        entries += [AuditEntry.of(e, written=False) for e in waiting]
        return entries[-n:] if n > 0 else []


@dataclass(frozen=True)
class AuditEntry:
    """One audit line as read back, for showing: who made which call and how it ended."""

    seq: int
    time: float
    pid: int
    process: str
    call: str
    args: dict[str, Any]
    ok: bool
    code: str | None
    resources: list[Any]
    written: bool = True

    @classmethod
    def of(cls, data: Mapping[str, Any], *, written: bool = True) -> AuditEntry:
        """An entry from a line's JSON object (fields of the wrong type read as blanks)."""

        def get(key: str, kind: type, default: Any) -> Any:
            value = data.get(key, default)
            return value if isinstance(value, kind) else default

        stamp = data.get("t")
        return cls(
            seq=get("seq", int, 0),
            time=float(stamp) if isinstance(stamp, int | float) else 0.0,
            pid=get("pid", int, -1),
            process=str(data.get("proc", "?")),
            call=str(data.get("call", "?")),
            args=get("args", dict, {}),
            ok=data.get("ok") is True,
            code=data.get("code") if isinstance(data.get("code"), str) else None,
            resources=get("res", list, []),
            written=written,
        )


def tail_log(path: Path, n: int) -> list[AuditEntry]:
    """The last `n` lines of the log at `path` that parse (oldest first); [] if there is none."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; the file may be missing)
    except FileNotFoundError:
        return []
    with fh:
        end = fh.seek(0, os.SEEK_END)
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    lines = data.splitlines()
    if pos > 0:
        lines = lines[1:]  # the first is (probably) cut in the middle
    out: list[AuditEntry] = []
    for raw in lines[-n:] if n > 0 else []:
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict):
            out.append(AuditEntry.of(entry))
    return out


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


@dataclass(frozen=True)
class AuditVerification:
    """What verifying a log found: lines checked, problems, and how many of the lines (the
    first ones) were signed under the old shared key, before the audit had a key of its own."""

    lines: int
    problems: list[AuditProblem]
    legacy_lines: int = 0


def verify_log(path: Path, signer: Signer) -> tuple[int, list[AuditProblem]]:
    """Check every line's MAC, sequence number and link to the line before, and the head.

    An edited line fails its MAC; a removed, inserted or reordered line breaks the sequence and
    the chain at the first line after the change; lines cut from the end leave the log short
    of its signed head. `signer` is the installation's (see `AuditLog`). Returns (lines
    checked, problems); `verify` says more.
    """
    report = verify(path, signer)
    return report.lines, report.problems


def verify(path: Path, signer: Signer) -> AuditVerification:
    """`verify_log`, with the count of lines signed under the old shared key.

    A log begun before the audit had its own key starts with lines signed by the install key
    itself; those verify under it, but only before the first line under the audit key: one
    after it is reported, as is a head under the old key once the log has moved on.
    """
    keyed = signer.derive(LINE_KEY)
    problems: list[AuditProblem] = []
    prev, seq, count, legacy = GENESIS, 0, 0, 0
    moved_on = False
    head, head_problem, head_legacy = _read_head(path, keyed, signer)
    if not path.exists():
        if head is not None and head[0] > 0:
            problems.append(AuditProblem(0, f"log removed: its head names line #{head[0]}"))
        return AuditVerification(0, problems)
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
        body = _canonical(entry)
        genuine = keyed.verify(body, str(mac))
        if genuine:
            moved_on = True
        elif signer.verify(body, str(mac)):
            if moved_on:
                problems.append(
                    AuditProblem(
                        number,
                        "signed with the capability key after the audit's own key took over"
                        " (not written by this llmos)",
                    )
                )
            else:
                genuine = True
                legacy += 1
        if not genuine:
            if not problems or problems[-1].line != number:
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
    elif head is not None and head_legacy and moved_on:
        problems.append(
            AuditProblem(count, "head signed with the old shared key after the log moved on")
        )
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
    return AuditVerification(count, problems, legacy)


def _read_head(
    path: Path, keyed: Signer, legacy: Signer
) -> tuple[tuple[int, str] | None, str, bool]:
    """The head's (sequence number, line hash), or None and why it cannot be trusted; and
    whether it was signed under the old shared key."""
    try:
        raw = head_path(path).read_bytes()
    except FileNotFoundError:
        return None, "head missing: lines cut from the end would go unnoticed (removed?)", False
    except OSError as exc:
        return None, f"head unreadable: {exc}", False
    parts = raw.strip().split(b" ")
    if len(parts) != 3 or not parts[0].isdigit():
        return None, "head damaged or edited", False
    body = parts[0] + b" " + parts[1]
    signature = parts[2].decode("ascii", "replace")
    old = False
    if not keyed.verify(body, signature):
        if not legacy.verify(body, signature):
            return None, "head edited: its signature does not match", False
        old = True
    return (int(parts[0]), parts[1].decode("ascii")), "", old
