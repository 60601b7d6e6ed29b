"""One error tree with stable codes, shared by syscall results, shell, scripts and audit log.

Every code has its own exception class (`PermissionDenied` for E_PERM, ...), so callers catch a
kind of failure by type; `LlmosError(code, message)` still builds the class of its code. An error
carries what it was about (the call, the process, the resource) where the raiser or the dispatch
path knows it; `from_exception` maps foreign exceptions (OSError, Ctrl-C, ...) in one place."""

from __future__ import annotations

import errno
from enum import StrEnum
from typing import Any, ClassVar, overload


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
    """The process was stopped (`:kill`) while the syscall ran."""


EXIT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.E_PERM: 10,
    ErrorCode.E_NOENT: 11,
    ErrorCode.E_INVAL: 12,
    ErrorCode.E_TOOBIG: 13,
    ErrorCode.E_EXISTS: 14,
    ErrorCode.E_TIMEOUT: 15,
    ErrorCode.E_IO: 16,
    ErrorCode.E_NOSYS: 17,
    ErrorCode.E_ISDIR: 18,
    ErrorCode.E_NOTDIR: 19,
    ErrorCode.E_NOTEMPTY: 20,
    ErrorCode.E_BACKEND: 21,
    ErrorCode.E_INTERNAL: 22,
    ErrorCode.E_INTR: 23,
}
"""Process exit status for each code, so scripts can tell failures apart (0 is success, 1 a
failure with no code, 2 a usage error). Written out, never derived from the enum's order: a
script's `case $?` must not change meaning when a code is added."""


class LlmosError(Exception):
    """Base of every llmos error: a stable code, a message a person can act on, and what it was
    about. `LlmosError(code, message)` makes the subclass of `code`; a subclass is made with the
    message alone (`NotFound("notes.txt: no such file")`)."""

    code_of_class: ClassVar[ErrorCode] = ErrorCode.E_INTERNAL

    def __new__(cls, *args: Any, **kwargs: Any) -> LlmosError:
        if cls is LlmosError and args and isinstance(args[0], ErrorCode):
            cls = BY_CODE.get(args[0], cls)
        return super().__new__(cls)

    @overload
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        /,
        *,
        call: str | None = None,
        process: str | None = None,
        resource: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        message: str,
        /,
        *,
        call: str | None = None,
        process: str | None = None,
        resource: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        *args: Any,
        call: str | None = None,
        process: str | None = None,
        resource: str | None = None,
    ) -> None:
        if args and isinstance(args[0], ErrorCode):
            code, message = args[0], str(args[1])
        else:
            code, message = type(self).code_of_class, str(args[0]) if args else ""
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message
        self.call = call
        self.process = process
        self.resource = resource

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles whole (a child process's error reaches the parent with its code)."""
        context = {"call": self.call, "process": self.process, "resource": self.resource}
        return (_rebuild, (self.code, self.message, context))

    def about(
        self, *, call: str | None = None, process: str | None = None, resource: str | None = None
    ) -> LlmosError:
        """Fill in what the error was about where the raiser did not know it; returns self."""
        self.call = self.call or call
        self.process = self.process or process
        self.resource = self.resource or resource
        return self


def _rebuild(code: ErrorCode, message: str, context: dict[str, str | None]) -> LlmosError:
    return LlmosError(code, message, **context)


class PermissionDenied(LlmosError):
    """E_PERM: no capability for the call, a path outside the workspace, a refused grant."""

    code_of_class = ErrorCode.E_PERM


class NotFound(LlmosError):
    """E_NOENT: no such file, memory, tool or session."""

    code_of_class = ErrorCode.E_NOENT


class InvalidArgument(LlmosError):
    """E_INVAL: a malformed call, argument, manifest, file or model output."""

    code_of_class = ErrorCode.E_INVAL


class TooBig(LlmosError):
    """E_TOOBIG: over one of the limits in `llmos.limits`."""

    code_of_class = ErrorCode.E_TOOBIG


class AlreadyExists(LlmosError):
    """E_EXISTS: the name is taken and the call would not clobber it."""

    code_of_class = ErrorCode.E_EXISTS


class TimedOut(LlmosError):
    """E_TIMEOUT: a tool, sandbox or service did not answer in time."""

    code_of_class = ErrorCode.E_TIMEOUT


class IOFailure(LlmosError):
    """E_IO: the disk, a store or a pipe failed under the call."""

    code_of_class = ErrorCode.E_IO


class NoSuchCall(LlmosError):
    """E_NOSYS: a syscall, tool or feature that is not there."""

    code_of_class = ErrorCode.E_NOSYS


class IsADirectory(LlmosError):
    """E_ISDIR: a file was wanted and the path is a folder."""

    code_of_class = ErrorCode.E_ISDIR


class NotADirectory(LlmosError):
    """E_NOTDIR: a folder was wanted and the path is a file."""

    code_of_class = ErrorCode.E_NOTDIR


class NotEmpty(LlmosError):
    """E_NOTEMPTY: a folder that still holds files."""

    code_of_class = ErrorCode.E_NOTEMPTY


class BackendError(LlmosError):
    """E_BACKEND: the model (or its server, or the embedder) failed or is missing."""

    code_of_class = ErrorCode.E_BACKEND


class InternalError(LlmosError):
    """E_INTERNAL: a handler or plugin failed in a way nobody expected."""

    code_of_class = ErrorCode.E_INTERNAL


class Interrupted(LlmosError):
    """E_INTR: the process was stopped (`:kill`, Ctrl-C) while the call ran."""

    code_of_class = ErrorCode.E_INTR


BY_CODE: dict[ErrorCode, type[LlmosError]] = {
    cls.code_of_class: cls
    for cls in (
        PermissionDenied,
        NotFound,
        InvalidArgument,
        TooBig,
        AlreadyExists,
        TimedOut,
        IOFailure,
        NoSuchCall,
        IsADirectory,
        NotADirectory,
        NotEmpty,
        BackendError,
        InternalError,
        Interrupted,
    )
}
"""The exception class of each code."""

_ERRNO: dict[int, ErrorCode] = {
    errno.ENOENT: ErrorCode.E_NOENT,
    errno.EEXIST: ErrorCode.E_EXISTS,
    errno.EISDIR: ErrorCode.E_ISDIR,
    errno.ENOTDIR: ErrorCode.E_NOTDIR,
    errno.ENOTEMPTY: ErrorCode.E_NOTEMPTY,
    errno.ELOOP: ErrorCode.E_PERM,
    errno.EACCES: ErrorCode.E_PERM,
    errno.EPERM: ErrorCode.E_PERM,
    errno.EFBIG: ErrorCode.E_TOOBIG,
    errno.ENAMETOOLONG: ErrorCode.E_INVAL,
    errno.EINVAL: ErrorCode.E_INVAL,
    errno.ETIMEDOUT: ErrorCode.E_TIMEOUT,
}


def os_error(exc: OSError, resource: str) -> LlmosError:
    """An OSError met while working on `resource` (a path), as the error of its errno's code."""
    code = _ERRNO.get(exc.errno or 0, ErrorCode.E_IO)
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        reason = "a symlink was swapped in or loops"
    return LlmosError(code, f"{resource}: {reason}", resource=resource)


def from_exception(exc: BaseException, *, call: str | None = None) -> LlmosError:
    """Any exception as an llmos error, the one place foreign ones are mapped: an LlmosError is
    itself; an OSError without a path the call named is E_IO (E_TIMEOUT for a timeout); Ctrl-C is
    E_INTR; anything else is a handler that failed unexpectedly (E_INTERNAL)."""
    if isinstance(exc, LlmosError):
        return exc.about(call=call)
    if isinstance(exc, TimeoutError):
        return TimedOut(f"{call or 'the call'} timed out: {exc}", call=call)
    if isinstance(exc, OSError):
        return IOFailure(f"{type(exc).__name__}: {exc}", call=call)
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"{call or 'the call'} was interrupted", call=call)
    failed = f"{call} failed: " if call else ""
    return InternalError(f"{failed}{type(exc).__name__}: {exc}", call=call)
