"""The audit trail cannot lose a line: its own key, writes that fail kept and retried, a close
safe against threads still recording, digests of values when memory is encrypted, and `tail`."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from llmos.config import Settings
from llmos.security import audit as audit_module
from llmos.security.audit import (
    GENESIS,
    LINE_KEY,
    AuditLog,
    _canonical,
    head_path,
    tail_log,
    verify,
    verify_log,
)
from llmos.security.capabilities import CapabilityAuthority
from llmos.security.keys import Signer
from llmos.system import System

KEY = b"s" * 32


def _record(log: AuditLog, i: int, call: str = "fs.stat", **extra: Any) -> None:
    log.record(pid=i, process="p", call=call, args={"i": i, **extra}, ok=True, code=None)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_lines_are_signed_with_the_audits_own_key_not_the_install_key(tmp_path: Path) -> None:
    install = Signer(KEY)
    path = tmp_path / "audit.log"
    log = AuditLog(path, install)
    _record(log, 1)
    log.close()
    (entry,) = _lines(path)
    mac = entry.pop("mac")
    body = _canonical(entry)
    assert install.derive(LINE_KEY).verify(body, mac)
    assert not install.verify(body, mac), "the capability key never signs an audit line"
    # ... and a capability's signature is no audit line's MAC.
    cap = CapabilityAuthority(install).mint("fs.read")
    assert not install.derive(LINE_KEY).verify(cap.payload(), str(cap.sig))
    assert verify_log(path, install) == (1, [])


def _legacy_log(path: Path, install: Signer, n: int) -> None:
    """A log as an llmos before the audit had its own key wrote it: lines and head signed with
    the install key itself."""
    prev, lines = GENESIS, []
    for seq in range(1, n + 1):
        entry = {"seq": seq, "t": 1.0, "pid": 1, "proc": "old", "call": "fs.stat", "args": {}}
        entry |= {"ok": True, "code": None, "prev": prev}
        body = _canonical(entry)
        line = body[:-1] + b',"mac":"' + install.sign(body).encode() + b'"}'
        lines.append(line + b"\n")
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"".join(lines))
    head = f"{n:020d} {prev}".encode()
    head_path(path).write_bytes(head + b" " + install.sign(head).encode() + b"\n")


def test_an_existing_log_keeps_verifying_and_its_chain_goes_on(tmp_path: Path) -> None:
    install, path = Signer(KEY), tmp_path / "audit.log"
    _legacy_log(path, install, 3)
    assert verify(path, install).legacy_lines == 3 and verify_log(path, install) == (3, [])
    log = AuditLog(path, install)
    _record(log, 4)
    _record(log, 5)
    log.close()
    report = verify(path, install)
    assert (report.lines, report.problems, report.legacy_lines) == (5, [], 3)
    assert [e["seq"] for e in _lines(path)] == [1, 2, 3, 4, 5]


def test_a_line_under_the_old_key_after_the_new_one_took_over_is_found(tmp_path: Path) -> None:
    install, path = Signer(KEY), tmp_path / "audit.log"
    _legacy_log(path, install, 2)
    log = AuditLog(path, install)
    _record(log, 3)
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    forged = json.loads(lines[-1])
    forged.pop("mac")
    forged |= {"seq": 4, "prev": hashlib.sha256(lines[-1].rstrip(b"\n")).hexdigest()}
    body = _canonical(forged)
    path.write_bytes(path.read_bytes() + body[:-1] + b',"mac":"' + install.sign(body).encode())
    with path.open("ab") as fh:
        fh.write(b'"}\n')
    problems = verify(path, install).problems
    assert problems[0].line == 4 and "capability key after" in problems[0].reason


def test_a_failed_write_never_raises_and_the_line_is_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install, path = Signer(KEY), tmp_path / "audit.log"
    log = AuditLog(path, install)
    _record(log, 1)
    real_write = os.write
    calls: list[int] = []

    def disk_full(fd: int, data: bytes) -> int:
        calls.append(fd)
        if len(calls) == 1:  # the first attempt gets half the line onto the disk
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with caplog.at_level(logging.WARNING, logger="llmos.security.audit"):
        _record(log, 2, call="fs.delete")
        _record(log, 3, call="fs.write")
    assert log.pending == 2 and log.failure is not None and "No space" in log.failure
    assert caplog.text.count("cannot be written") == 1, "one warning, not one per line"
    assert len(_lines(path)) == 1, "no half line was left in the file"
    monkeypatch.undo()
    _record(log, 4)
    log.close()
    assert log.pending == 0 and log.failure is None
    assert [e["call"] for e in _lines(path)] == ["fs.stat", "fs.delete", "fs.write", "fs.stat"]
    assert verify_log(path, install) == (4, [])


def test_lines_dropped_from_a_full_queue_are_counted_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install, path = Signer(KEY), tmp_path / "audit.log"
    log = AuditLog(path, install)
    monkeypatch.setattr(audit_module, "_MAX_PENDING", 3)

    def broken(fd: int, data: bytes) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audit_module, "write_all", lambda fd, data, **kw: broken(fd, data))
    for i in range(5):
        _record(log, i)
    assert log.pending == 3
    monkeypatch.undo()
    log.close()
    lost, *kept = _lines(path)
    assert lost["call"] == "audit.lost" and lost["args"]["lines"] == 2
    assert [e["args"]["i"] for e in kept] == [2, 3, 4]
    assert verify_log(path, install) == (4, [])


def test_an_unserialisable_record_still_logs_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.log", Signer(KEY))

    def boom(args: Any) -> Any:
        raise RuntimeError("cannot describe")

    monkeypatch.setattr(audit_module, "digest_args", boom)
    log.record(pid=1, process="p", call="fs.read", args={"x": 1}, ok=False, code="E_PERM")
    log.close()
    (entry,) = _lines(tmp_path / "audit.log")
    assert entry["call"] == "fs.read" and entry["code"] == "E_PERM"
    assert entry["args"] == {"unloggable": "RuntimeError"}


def test_close_while_threads_record_loses_no_line(tmp_path: Path) -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    install, path = Signer(KEY), tmp_path / "audit.log"
    log = AuditLog(path, install)
    started = threading.Barrier(5)

    def append(tag: int) -> None:
        started.wait()
        for i in range(150):
            log.record(
                pid=tag, process=f"t{tag}", call="fs.stat", args={"i": i}, ok=True, code=None
            )

    try:
        threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        started.wait()
        log.close()  # while the threads are still recording
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert verify_log(path, install) == (600, [])
    assert log._fd == -1 and log._head_fd == -1, "a line after close leaves no file open"


def test_a_line_recorded_after_close_is_written(tmp_path: Path) -> None:
    install, path = Signer(KEY), tmp_path / "audit.log"
    log = AuditLog(path, install)
    _record(log, 1)
    log.close()
    log.close()
    _record(log, 2)
    assert [e["args"]["i"] for e in _lines(path)] == [1, 2]
    assert verify_log(path, install) == (2, [])


def test_durable_logs_fsync_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    quick = AuditLog(tmp_path / "quick.log", Signer(KEY))
    _record(quick, 1)
    assert synced == [], "by default a line is an unbuffered write, not a disk flush"
    durable = AuditLog(tmp_path / "durable.log", Signer(KEY), durable=True)
    _record(durable, 1)
    assert len(synced) == 1
    quick.close()
    assert len(synced) == 3, "close fsyncs the log and its head"
    durable.close()


def test_with_memory_encrypted_no_value_is_on_disk_in_clear(
    llmos_home: Path, workspace: Path
) -> None:
    settings = Settings(home=llmos_home, memory_encrypt=True)
    with System(settings, plugins=False) as system:
        assert system.audit.digest_values
        proc = system.spawn("test", workspace, patterns=["fs.*"])
        res = system.dispatch(proc, {"call": "fs.write", "path": "pin-88412.txt", "content": "x"})
        assert res.ok, res.message
        system.audit.record(
            pid=proc.pid,
            process="test",
            call="mem.store",
            args={"text": "my bank PIN is 88412", "tags": ["bank", 88412], "pin": 88412},
            ok=True,
            code=None,
            resources=["bank"],
        )
        rows = system.audit.tail(2)
        digest = system.audit.value_digest("my bank PIN is 88412")
        count, problems = verify_log(system.audit.path, system.signer)
    raw = (llmos_home / "audit.log").read_bytes()
    assert b"88412" not in raw and b"bank" not in raw and b"pin-" not in raw
    assert (count, problems) == (2, [])
    assert rows[1].call == "mem.store" and rows[1].args["text"] == digest
    assert digest["chars"] == len("my bank PIN is 88412") and len(digest["hmac"]) == 32
    assert rows[0].args["path"] != rows[1].args["text"]


def test_without_encryption_short_values_stay_readable(system: System, workspace: Path) -> None:
    assert not system.audit.digest_values
    proc = system.spawn("test", workspace, patterns=["fs.*"])
    system.dispatch(proc, {"call": "fs.write", "path": "a.txt", "content": "88412"})
    assert b'"content":"88412"' in system.audit.path.read_bytes()


def test_tail_reads_the_last_lines_and_what_is_still_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, Signer(KEY))
    for i in range(400):  # long lines: the tail spans more than one 64 KiB block
        _record(log, i, pad="y" * 250)
    assert [e.seq for e in log.tail(3)] == [398, 399, 400]
    last = log.tail(1)[0]
    assert (last.process, last.call, last.ok, last.code, last.args["i"]) == (
        "p",
        "fs.stat",
        True,
        None,
        399,
    )
    assert len(log.tail(300)) == 300 and log.tail(300)[0].seq == 101
    assert log.tail(0) == []
    monkeypatch.setattr(
        audit_module, "write_all", lambda fd, data, **kw: (_ for _ in ()).throw(OSError)
    )
    _record(log, 400)
    rows = log.tail(2)
    assert [r.written for r in rows] == [True, False] and rows[1].args["i"] == 400
    monkeypatch.undo()
    log.close()
    assert tail_log(tmp_path / "missing.log", 5) == []


def test_ctrl_c_in_the_middle_of_a_write_keeps_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install, path = Signer(KEY), tmp_path / "audit.log"
    log = AuditLog(path, install)
    real = audit_module.write_all

    def interrupted(fd: int, data: bytes, **kwargs: bool) -> None:
        real(fd, data[:10], **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(audit_module, "write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):  # the person's Ctrl-C still reaches the shell
        _record(log, 1, call="fs.delete")
    assert log.pending == 1 and path.read_bytes() == b"", "no half line"
    monkeypatch.undo()
    log.close()  # what is pending is written at close at the latest
    assert [e["call"] for e in _lines(path)] == ["fs.delete"]
    assert verify_log(path, install) == (1, [])
