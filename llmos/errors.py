"""One error tree with stable codes, shared by syscall results, shell, scripts and audit log."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable errno-style codes: the same code reaches kernel, shell, exit status and audit."""

    E_PERM = "E_PERM"
    E_NOENT = "E_NOENT"
    E_INVAL = "E_INVAL"
    E_TOOBIG = "E_TOOBIG"
    E_EXISTS = "E_EXISTS"
    E_TIMEOUT = "E_TIMEOUT"
    E_IO = "E_IO"
    E_NOSYS = "E_NOSYS"
    E_ISDIR = "E_ISDIR"
    E_NOTDIR = "E_NOTDIR"
    E_NOTEMPTY = "E_NOTEMPTY"
    E_BACKEND = "E_BACKEND"
    E_INTERNAL = "E_INTERNAL"
    E_INTR = "E_INTR"
    """The process was stopped (`:kill`) while the syscall ran; added last, so the exit
    statuses of the others stay as they were."""


EXIT_STATUS: dict[ErrorCode, int] = {code: 10 + i for i, code in enumerate(ErrorCode)}
"""Process exit status for each code, so scripts can tell failures apart (0 is success)."""


class LlmosError(Exception):
    """Base of every llmos error: a stable code and a message a person can act on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
