"""The one dispatch path: failures become typed error results, never crashes; all audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.security.audit import verify_log
from llmos.syscalls.base import Syscall, SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System


class Boom(Syscall):
    """A test call whose handler fails in the way `kind` says."""

    call: Literal["test.boom"] = "test.boom"
    kind: str = "plain"


def _boom(call: Boom, process: Process) -> dict[str, str]:
    if call.kind == "plain":
        raise RuntimeError("the handler blew up")
    if call.kind == "os":
        raise FileNotFoundError(2, "No such file", "x")
    if call.kind == "llmos":
        raise LlmosError(ErrorCode.E_TOOBIG, "too big to handle")
    if call.kind == "key":
        return {}["missing"]
    return {"ok": "fine"}


@pytest.fixture
def boom_system(system: System) -> System:
    system.registry.register(Boom, _boom)
    return system


@pytest.fixture
def tester(boom_system: System, workspace: Path) -> Process:
    return boom_system.spawn("tester", workspace, patterns=["test.*", "fs.*"])


def _audit(system: System) -> list[dict[str, Any]]:
    return [json.loads(line) for line in system.audit.path.read_bytes().splitlines()]


def _last_audit(system: System) -> dict[str, Any]:
    return _audit(system)[-1]


def _assert_audited(system: System, result: SyscallResult, call: str, count: int) -> None:
    lines = _audit(system)
    assert len(lines) == count
    assert lines[-1]["call"] == call
    assert lines[-1]["ok"] is result.ok
    assert lines[-1]["code"] == (result.code.value if result.code else None)


def test_plain_exception_becomes_internal(boom_system: System, tester: Process) -> None:
    res = boom_system.dispatch(tester, {"call": "test.boom"})
    assert not res.ok
    assert res.code == ErrorCode.E_INTERNAL
    assert res.call == "test.boom"
    assert "the handler blew up" in (res.message or "")
    assert "RuntimeError" in (res.message or "")
    _assert_audited(boom_system, res, "test.boom", 1)


def test_system_keeps_working_after_a_crash(
    boom_system: System, tester: Process, workspace: Path
) -> None:
    for _ in range(3):
        assert boom_system.dispatch(tester, {"call": "test.boom"}).code == ErrorCode.E_INTERNAL
    res = boom_system.dispatch(tester, {"call": "fs.write", "path": "a.txt", "content": "hi"})
    assert res.ok, res.message
    assert boom_system.dispatch(tester, {"call": "fs.read", "path": "a.txt"}).ok
    assert boom_system.dispatch(tester, {"call": "test.boom", "kind": "none"}).value == {
        "ok": "fine"
    }
    assert (workspace / "a.txt").read_text() == "hi"
    assert verify_log(boom_system.audit.path, boom_system.signer) == (6, [])


@pytest.mark.parametrize(
    "kind,code,words",
    [
        ("os", ErrorCode.E_IO, "FileNotFoundError"),
        ("llmos", ErrorCode.E_TOOBIG, "too big to handle"),
        ("key", ErrorCode.E_INTERNAL, "KeyError"),
    ],
)
def test_handler_error_kinds(
    boom_system: System, tester: Process, kind: str, code: ErrorCode, words: str
) -> None:
    res = boom_system.dispatch(tester, {"call": "test.boom", "kind": kind})
    assert res.code == code
    assert words in (res.message or "")
    _assert_audited(boom_system, res, "test.boom", 1)


def test_capability_is_checked_before_the_handler(boom_system: System, workspace: Path) -> None:
    ran: list[str] = []

    class Probe(Syscall):
        """Records that it ran."""

        call: Literal["test.probe"] = "test.probe"

    boom_system.registry.register(Probe, lambda call, process: ran.append("ran"))
    proc = boom_system.spawn("nocaps", workspace, patterns=["fs.*"])
    res = boom_system.dispatch(proc, {"call": "test.probe"})
    assert res.code == ErrorCode.E_PERM
    assert "test.probe" in (res.message or "")
    assert ran == []
    _assert_audited(boom_system, res, "test.probe", 1)


def test_unknown_call_is_nosys(system: System, proc: Process) -> None:
    res = system.dispatch(proc, {"call": "fs.teleport", "path": "a"})
    assert res.code == ErrorCode.E_NOSYS
    assert "fs.teleport" in (res.message or "")
    _assert_audited(system, res, "fs.teleport", 1)
    assert _last_audit(system)["args"] == {"path": "a"}


@pytest.mark.parametrize(
    "raw,words",
    [
        ({"call": "fs.read", "path": 123}, ["path", "string"]),
        ({"call": "fs.read"}, ["path", "required"]),
        ({"call": "fs.read", "path": "a", "evil": True}, ["evil"]),
        ({"call": "fs.read", "path": "a", "offset": -1}, ["offset"]),
        ({"call": "fs.write", "path": "a", "content": "x", "mode": "shred"}, ["mode"]),
    ],
)
def test_bad_args_are_invalid_with_a_readable_message(
    system: System, proc: Process, raw: dict[str, Any], words: list[str]
) -> None:
    res = system.dispatch(proc, raw)
    assert res.code == ErrorCode.E_INVAL
    message = res.message or ""
    assert message.startswith(f"invalid arguments for {raw['call']}:")
    for word in words:
        assert word in message.lower()
    assert "Traceback" not in message and "pydantic" not in message
    _assert_audited(system, res, raw["call"], 1)


@pytest.mark.parametrize("raw", ["fs.read", ["fs.read"], None, 42, b"{}"])
def test_non_dict_is_invalid(system: System, proc: Process, raw: Any) -> None:
    res = system.dispatch(proc, raw)
    assert res.code == ErrorCode.E_INVAL
    assert "JSON object" in (res.message or "")
    _assert_audited(system, res, "?", 1)
    assert _last_audit(system)["args"] == {"raw": repr(raw)}


@pytest.mark.parametrize("raw", [{}, {"path": "a"}, {"call": 7}, {"call": None}])
def test_missing_or_bad_call_name_is_invalid(
    system: System, proc: Process, raw: dict[str, Any]
) -> None:
    res = system.dispatch(proc, raw)
    assert res.code == ErrorCode.E_INVAL
    assert "call" in (res.message or "")
    assert len(_audit(system)) == 1


@pytest.mark.parametrize(
    "raw",
    [
        {"call": "fs.read", "path": "a", 1: "int key"},
        {"call": "fs.read", "path": object()},
        {"call": "fs.read", "path": "\ud800"},
        {"call": "fs.read", "path": {"nested": ["x" * 10_000]}},
    ],
    ids=["int-key", "object", "surrogate", "nested"],
)
def test_odd_python_values_are_results_and_audited(
    system: System, proc: Process, raw: dict[Any, Any]
) -> None:
    res = system.dispatch(proc, raw)
    assert not res.ok
    assert res.code in (ErrorCode.E_INVAL, ErrorCode.E_INTERNAL)
    assert len(_audit(system)) == 1
    assert verify_log(system.audit.path, system.signer) == (1, [])


def test_typed_syscall_instance_dispatches(system: System, proc: Process, workspace: Path) -> None:
    from llmos.syscalls.fs import FsRead

    (workspace / "a.txt").write_text("typed")
    res = system.dispatch(proc, FsRead(path="a.txt"))
    assert res.ok, res.message
    assert _last_audit(system)["args"]["path"] == "a.txt"


def test_every_outcome_is_audited_in_order(
    boom_system: System, tester: Process, workspace: Path
) -> None:
    reader = boom_system.spawn("reader", workspace, patterns=["fs.read"])
    calls: list[tuple[Process, Any]] = [
        (tester, {"call": "fs.write", "path": "a.txt", "content": "x"}),
        (reader, {"call": "fs.write", "path": "b.txt", "content": "x"}),
        (tester, {"call": "test.boom"}),
        (tester, {"call": "nope"}),
        (tester, {"call": "fs.read", "path": 5}),
        (tester, ["not", "a", "dict"]),
        (tester, {"call": "fs.read", "path": "missing.txt"}),
    ]
    results = [boom_system.dispatch(p, raw) for p, raw in calls]
    codes = [r.code for r in results]
    assert codes == [
        None,
        ErrorCode.E_PERM,
        ErrorCode.E_INTERNAL,
        ErrorCode.E_NOSYS,
        ErrorCode.E_INVAL,
        ErrorCode.E_INVAL,
        ErrorCode.E_NOENT,
    ]
    lines = _audit(boom_system)
    assert [line["code"] for line in lines] == [c.value if c else None for c in codes]
    assert [line["proc"] for line in lines] == [p.name for p, _ in calls]
    assert [line["seq"] for line in lines] == list(range(1, 8))
    assert verify_log(boom_system.audit.path, boom_system.signer) == (7, [])
