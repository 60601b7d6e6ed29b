"""Errors as data: a class per stable code, what the error was about, one map of foreign
exceptions, and an exit status per code that never moves."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from llmos.errors import (
    BY_CODE,
    EXIT_STATUS,
    BackendError,
    ErrorCode,
    InternalError,
    Interrupted,
    LlmosError,
    NotFound,
    PermissionDenied,
    TimedOut,
    from_exception,
    os_error,
)
from llmos.syscalls.context import Process
from llmos.system import System


def test_a_code_makes_the_exception_of_its_family() -> None:
    exc = LlmosError(ErrorCode.E_PERM, "fs.write needs a grant", call="fs.write")
    assert type(exc) is PermissionDenied and isinstance(exc, LlmosError)
    assert exc.code is ErrorCode.E_PERM and exc.message == "fs.write needs a grant"
    assert str(exc) == "E_PERM: fs.write needs a grant" and exc.call == "fs.write"
    made = NotFound("notes.txt: no such file", resource="notes.txt")
    assert made.code is ErrorCode.E_NOENT and made.resource == "notes.txt"
    with pytest.raises(BackendError):
        raise LlmosError(ErrorCode.E_BACKEND, "no model")


def test_every_code_has_a_class_and_its_own_fixed_exit_status() -> None:
    assert set(BY_CODE) == set(ErrorCode)
    assert all(cls(ErrorCode(code), "x").code is code for code, cls in BY_CODE.items())
    assert set(EXIT_STATUS) == set(ErrorCode)
    assert len(set(EXIT_STATUS.values())) == len(ErrorCode)
    assert not {0, 1, 2} & set(EXIT_STATUS.values()), "0, 1 and 2 mean success, failure, usage"
    # Scripts test these numbers; they never move when codes are added.
    assert EXIT_STATUS[ErrorCode.E_PERM] == 10 and EXIT_STATUS[ErrorCode.E_NOENT] == 11
    assert EXIT_STATUS[ErrorCode.E_BACKEND] == 21 and EXIT_STATUS[ErrorCode.E_INTR] == 23


def test_an_error_pickles_whole() -> None:
    exc = LlmosError(ErrorCode.E_TOOBIG, "too big", call="fs.read", process="shell")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and back.code is exc.code and back.message == exc.message
    assert (back.call, back.process) == ("fs.read", "shell")


def test_foreign_exceptions_are_mapped_in_one_place() -> None:
    mine = NotFound("gone")
    assert from_exception(mine, call="fs.read") is mine and mine.call == "fs.read"
    assert type(from_exception(TimeoutError("slow"), call="tool.run")) is TimedOut
    io = from_exception(OSError(errno.EIO, "Input/output error"), call="fs.write")
    assert io.code is ErrorCode.E_IO and "Input/output error" in io.message
    assert type(from_exception(KeyboardInterrupt())) is Interrupted
    bug = from_exception(ValueError("bad"), call="fs.list")
    assert type(bug) is InternalError and bug.message == "fs.list failed: ValueError: bad"
    missing = os_error(FileNotFoundError(errno.ENOENT, "No such file"), "a.txt")
    assert type(missing) is NotFound and missing.resource == "a.txt"
    assert os_error(OSError(errno.ELOOP, "loop"), "l").code is ErrorCode.E_PERM


def test_dispatch_results_keep_the_code_of_what_failed(
    system: System, proc: Process, workspace: Path
) -> None:
    result = system.dispatch(proc, {"call": "fs.read", "path": "absent.txt"})
    assert not result.ok and result.code is ErrorCode.E_NOENT
    (workspace / "d").mkdir()
    result = system.dispatch(proc, {"call": "fs.read", "path": "d"})
    assert not result.ok and result.code is ErrorCode.E_ISDIR
