"""The audit log: one signed, chained line per dispatch; verification finds every tampering."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llmos.cli import main
from llmos.errors import ErrorCode
from llmos.limits import AUDIT_INLINE_CHARS
from llmos.security.audit import AuditLog, digest_args, head_path, verify_log
from llmos.security.keys import Signer
from llmos.syscalls.context import Process
from llmos.system import System


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _raw_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _fill(system: System, proc: Process, n: int = 5) -> Path:
    for i in range(n):
        res = system.dispatch(proc, {"call": "fs.write", "path": f"f{i}.txt", "content": str(i)})
        assert res.ok, res.message
    return system.audit.path


def _problems(system: System) -> list[tuple[int, str]]:
    _, problems = verify_log(system.audit.path, system.signer)
    return [(p.line, p.reason) for p in problems]


def test_every_dispatch_is_logged(system: System, proc: Process, workspace: Path) -> None:
    reader = system.spawn("reader", workspace, patterns=["fs.read"])
    before = time.time()
    ok = system.dispatch(proc, {"call": "fs.write", "path": "a.txt", "content": "hello"})
    denied = system.dispatch(reader, {"call": "fs.write", "path": "b.txt", "content": "no"})
    assert ok.ok and denied.code == ErrorCode.E_PERM
    first, second = _lines(system.audit.path)
    assert first["seq"] == 1 and second["seq"] == 2
    assert before - 1 <= first["t"] <= time.time() + 1
    assert (first["proc"], first["pid"]) == ("test", proc.pid)
    assert first["call"] == "fs.write"
    assert first["args"] == {"path": "a.txt", "content": "hello"}
    assert (first["ok"], first["code"]) == (True, None)
    assert first["res"] == ["a.txt"]
    assert (second["proc"], second["pid"]) == ("reader", reader.pid)
    assert (second["ok"], second["code"]) == (False, "E_PERM")
    assert second["args"]["path"] == "b.txt"
    assert first["mac"] and second["prev"] != first["prev"]


def test_large_args_are_digested(system: System, proc: Process) -> None:
    secret = "TOP-SECRET-" + "x" * 5000
    res = system.dispatch(proc, {"call": "fs.write", "path": "big.txt", "content": secret})
    assert res.ok
    raw = system.audit.path.read_text()
    assert "TOP-SECRET" not in raw
    (entry,) = _lines(system.audit.path)
    assert entry["args"]["content"] == {
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "chars": len(secret),
    }
    assert entry["args"]["path"] == "big.txt"


def test_digest_threshold() -> None:
    short = "a" * AUDIT_INLINE_CHARS
    long = "a" * (AUDIT_INLINE_CHARS + 1)
    out = digest_args({"s": short, "l": long, "b": b"\x00\x01", "n": 3, "f": None})
    assert out["s"] == short
    assert out["l"] == {"sha256": hashlib.sha256(long.encode()).hexdigest(), "chars": len(long)}
    assert out["b"] == {"sha256": hashlib.sha256(b"\x00\x01").hexdigest(), "bytes": 2}
    assert (out["n"], out["f"]) == (3, None)


def test_nested_and_odd_args_always_log(tmp_path: Path) -> None:
    signer = Signer(b"s" * 32)
    log = AuditLog(tmp_path / "audit.log", signer)
    odd: dict[Any, Any] = {
        "nested": {"deep": ["y" * 1000, {"k": b"bytes"}]},
        1: "int key",
        "obj": object(),
        "bad_text": "\ud800 lone surrogate",
        "huge_int": 10**40,
        "many": ["v"] * 100_000,
    }
    log.record(pid=1, process="p\udcff", call="x.y", args=odd, ok=False, code="E_INVAL")
    log.record(pid=1, process="p", call="x.y", args={}, ok=True, code=None)
    log.close()
    raw = (tmp_path / "audit.log").read_bytes()
    assert b"y" * 300 not in raw
    assert len(raw) < 64 * 1024
    count, problems = verify_log(tmp_path / "audit.log", signer)
    assert (count, problems) == (2, [])


def test_untouched_log_verifies(system: System, proc: Process) -> None:
    path = _fill(system, proc, 6)
    count, problems = verify_log(path, system.signer)
    assert count == 6
    assert problems == []


def test_empty_or_missing_log_verifies(tmp_path: Path) -> None:
    signer = Signer(b"s" * 32)
    assert verify_log(tmp_path / "none.log", signer) == (0, [])


def test_edited_line_is_found(system: System, proc: Process) -> None:
    path = _fill(system, proc, 5)
    lines = _raw_lines(path)
    assert b'"path":"f2.txt"' in lines[2]
    lines[2] = lines[2].replace(b'"path":"f2.txt"', b'"path":"f9.txt"')
    path.write_bytes(b"".join(lines))
    problems = _problems(system)
    assert problems[0][0] == 3
    assert "edited" in problems[0][1]


def test_edited_outcome_is_found(system: System, proc: Process) -> None:
    path = _fill(system, proc, 3)
    lines = _raw_lines(path)
    lines[1] = lines[1].replace(b'"ok":true', b'"ok":false')
    path.write_bytes(b"".join(lines))
    assert _problems(system)[0][0] == 2


def test_reserialised_line_breaks_the_chain(system: System, proc: Process) -> None:
    path = _fill(system, proc, 3)
    lines = _raw_lines(path)
    lines[0] = json.dumps(json.loads(lines[0]), indent=None).encode() + b"\n"  # same data
    path.write_bytes(b"".join(lines))
    problems = _problems(system)
    assert problems and problems[0][0] == 2
    assert "chain" in problems[0][1]


@pytest.mark.parametrize("index", [0, 2, 4])
def test_removed_line_is_found(system: System, proc: Process, index: int) -> None:
    path = _fill(system, proc, 6)
    lines = _raw_lines(path)
    del lines[index]
    path.write_bytes(b"".join(lines))
    problems = _problems(system)
    assert problems[0][0] == index + 1
    assert "sequence" in problems[0][1]


@pytest.mark.parametrize("cut", [1, 3])
def test_lines_cut_from_the_end_are_found(system: System, proc: Process, cut: int) -> None:
    path = _fill(system, proc, 6)
    path.write_bytes(b"".join(_raw_lines(path)[:-cut]))
    problems = _problems(system)
    assert len(problems) == 1 and problems[0][0] == 6 - cut
    assert "removed from the end" in problems[0][1] and "#6" in problems[0][1]


def test_a_removed_or_edited_head_is_found(system: System, proc: Process) -> None:
    path = _fill(system, proc, 3)
    head = head_path(path)
    text = head.read_text()
    head.write_text(text.replace("3", "2", 1))
    assert ["head" in reason for _, reason in _problems(system)] == [True]
    head.unlink()
    assert ["head" in reason for _, reason in _problems(system)] == [True]


def test_a_log_written_before_heads_gets_one_when_opened(tmp_path: Path) -> None:
    signer, path = Signer(b"k" * 32), tmp_path / "audit.log"
    log = AuditLog(path, signer)
    for i in range(3):
        log.record(pid=1, process="p", call="fs.read", args={"i": i}, ok=True, code=None)
    log.close()
    head_path(path).unlink()
    AuditLog(path, signer).close()
    assert verify_log(path, signer) == (3, [])
    path.unlink()
    _, problems = verify_log(path, signer)
    assert problems and "removed" in problems[0].reason


def test_a_head_one_line_behind_still_verifies(system: System, proc: Process) -> None:
    # A kill between appending a line and updating the head leaves the head behind it.
    path = _fill(system, proc, 3)
    before = head_path(path).read_bytes()
    _fill(system, proc, 1)
    head_path(path).write_bytes(before)
    assert _problems(system) == []
    lines = _raw_lines(path)
    path.write_bytes(b"".join(lines[:2]) + lines[3])  # the line the head names is not there
    assert any("not the one" in reason for _, reason in _problems(system))


def test_swapped_lines_are_found(system: System, proc: Process) -> None:
    path = _fill(system, proc, 5)
    lines = _raw_lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    problems = _problems(system)
    assert problems[0][0] == 2
    assert {p[0] for p in problems} >= {2, 3}


def test_inserted_forged_line_is_found(system: System, proc: Process) -> None:
    path = _fill(system, proc, 4)
    lines = _raw_lines(path)
    forged = json.loads(lines[1])
    forged.update(seq=3, call="fs.delete", args={"path": "evidence.txt"}, mac="0" * 64)
    lines.insert(2, json.dumps(forged, separators=(",", ":")).encode() + b"\n")
    path.write_bytes(b"".join(lines))
    problems = _problems(system)
    assert problems[0][0] == 3
    assert "edited" in problems[0][1]
    assert any(line == 4 for line, _ in problems)


def test_replayed_genuine_line_is_found(system: System, proc: Process) -> None:
    path = _fill(system, proc, 4)
    lines = _raw_lines(path)
    lines.insert(3, lines[1])
    path.write_bytes(b"".join(lines))
    problems = _problems(system)
    assert problems[0][0] == 4


@pytest.mark.parametrize(
    "junk",
    [
        b"not json\n",
        b"\n",
        b"[1, 2]\n",
        b'"text"\n',
        b'{"seq": 2}\n',
        b'{"seq": 2, "mac": "\\ud800"}\n',
        b'{"seq": 2, "x": "\\udcff", "mac": "00"}\n',
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
    ],
    ids=["text", "blank", "list", "string", "no-mac", "surrogate-mac", "surrogate", "deep"],
)
def test_garbage_line_is_reported_not_raised(system: System, proc: Process, junk: bytes) -> None:
    path = _fill(system, proc, 3)
    lines = _raw_lines(path)
    lines.insert(1, junk)
    path.write_bytes(b"".join(lines))
    count, problems = verify_log(path, system.signer)
    assert count == 4
    assert problems and problems[0].line == 2


def test_two_writers_alternating_still_verify(tmp_path: Path) -> None:
    signer = Signer(b"s" * 32)
    path = tmp_path / "audit.log"
    a, b = AuditLog(path, signer), AuditLog(path, signer)
    for i in range(10):
        log = a if i % 3 else b
        log.record(pid=i, process=f"w{i}", call="fs.stat", args={"i": i}, ok=True, code=None)
    a.close()
    b.close()
    assert [e["seq"] for e in _lines(path)] == list(range(1, 11))
    assert verify_log(path, signer) == (10, [])


def test_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    signer = Signer(b"s" * 32)
    path = tmp_path / "audit.log"
    first = AuditLog(path, signer)
    first.record(pid=1, process="p", call="a", args={}, ok=True, code=None)
    first.close()
    second = AuditLog(path, signer)
    second.record(pid=2, process="p", call="b", args={}, ok=True, code=None)
    second.close()
    assert verify_log(path, signer) == (2, [])


def _append_many(path: str, key: bytes, tag: str, n: int) -> None:
    log = AuditLog(Path(path), Signer(key))
    for i in range(n):
        log.record(pid=i, process=tag, call="fs.stat", args={"i": i}, ok=True, code=None)
    log.close()


def test_concurrent_processes_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    key = b"s" * 32
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_append_many, args=(str(path), key, f"w{n}", 40)) for n in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert verify_log(path, Signer(key)) == (120, [])


def test_concurrent_threads_still_verify(tmp_path: Path) -> None:
    """Processes under the scheduler dispatch from several threads of one llmos, sharing one
    log descriptor (flock alone does not keep them apart)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to make a race likely
    path = tmp_path / "audit.log"
    key = b"t" * 32
    log = AuditLog(path, Signer(key))

    def append(tag: str) -> None:
        for i in range(200):
            log.record(pid=i, process=tag, call="fs.stat", args={"i": i}, ok=True, code=None)

    try:
        threads = [threading.Thread(target=append, args=(f"t{n}",)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(interval)
        log.close()
    assert verify_log(path, Signer(key)) == (800, [])


def test_wrong_key_fails_every_line(system: System, proc: Process) -> None:
    path = _fill(system, proc, 3)
    _, problems = verify_log(path, Signer(b"z" * 32))
    assert [p.line for p in problems] == [1, 2, 3, 3]
    assert "head" in problems[-1].reason


def test_cli_audit_verify(
    system: System, proc: Process, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _fill(system, proc, 4)
    assert main(["audit", "verify"]) == 0
    assert "4 lines" in capsys.readouterr().out
    lines = _raw_lines(path)
    lines[2] = lines[2].replace(b'"f2.txt"', b'"fX.txt"')
    path.write_bytes(b"".join(lines))
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:3:" in out
    assert "FAILED" in out


def test_cli_audit_verify_explicit_log(
    system: System, proc: Process, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _fill(system, proc, 2)
    copy = tmp_path / "copy.log"
    copy.write_bytes(_raw_lines(path)[1])  # only the second line: out of sequence
    assert main(["audit", "verify", "--log", str(path)]) == 0
    assert main(["audit", "verify", "--log", str(copy)]) == 1
    assert f"{copy}:1:" in capsys.readouterr().out
