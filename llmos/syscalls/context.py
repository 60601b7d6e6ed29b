"""The per-call context of the syscall ABI: a process (its workspace, capabilities, way of asking
for grants, and the services it may ask for by type) and what one call was authorized to do."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from llmos.errors import ErrorCode, LlmosError
from llmos.security.capabilities import (
    ANY,
    CapabilitySet,
    GrantCallback,
    GrantStore,
    call_matches,
    scope_covers,
)
from llmos.security.workspace import Workspace

if TYPE_CHECKING:
    from llmos.security.journal import ChangeSet

_pids = itertools.count(1)

T = TypeVar("T")


def type_name(kind: Callable[..., Any]) -> str:
    """A type's full name (`llmos.memory.memory.Memory`), the key a service is offered under."""
    return f"{kind.__module__}.{kind.__qualname__}"


class Services:
    """What a process may ask for by type: the installation's memory, the workspace's file
    index, the document reader, and (once a kernel runs its turns) the model. The system
    offers each under its type's full name with a factory called on first use, so offering
    one imports nothing; the family that asks names the type (or a protocol it is offered
    under), and gets an instance of it or None."""

    def __init__(self, factories: Mapping[str, Callable[[], object]] | None = None) -> None:
        self._factories = dict(factories or {})

    def offer(self, kind: Callable[..., Any], factory: Callable[[], object]) -> None:
        """Offer a service under `kind`'s name (the kernel offers the model it decodes a
        process's turns with, so a plugin's syscall can ask the same model)."""
        self._factories[type_name(kind)] = factory

    def get(self, kind: Callable[..., T]) -> T | None:
        """The service of `kind` (made now if it was not yet), or None when none is offered.
        `kind` is a class or a runtime-checkable protocol (typed as a callable because mypy
        refuses a protocol where `type[T]` is expected)."""
        factory = self._factories.get(type_name(kind))
        if factory is None:
            return None
        made = factory()
        if not isinstance(made, cast(type, kind)):
            raise LlmosError(
                ErrorCode.E_INTERNAL,
                f"the service offered as {type_name(kind)} is a {type(made).__name__}",
            )
        return cast(T, made)


@dataclass
class Authorized:
    """What the dispatcher allowed one call: the capabilities held (scopes combined, resource
    by resource) plus what the person answered "once" for this call alone."""

    caps: CapabilitySet
    call: str
    once: set[str] = field(default_factory=set)

    def covers(self, resources: Iterable[str], call: str | None = None) -> bool:
        """Whether `call` (this call by default) may act on every one of `resources`."""
        name = call or self.call
        for resource in resources:
            if name == self.call and any(scope_covers(s, resource) for s in self.once):
                continue
            if self.caps.find(name, [resource]) is None:
                return False
        return True

    def any_grant(self, call: str | None = None) -> bool:
        """Whether `call` is allowed on anything at all (a grant of some scope, or "once")."""
        name = call or self.call
        return (name == self.call and bool(self.once)) or self.caps.find(name, []) is not None

    def unscoped(self, call: str | None = None) -> bool:
        """Whether `call` is allowed on everything (no per-resource check is needed)."""
        name = call or self.call
        if name == self.call and ANY in self.once:
            return True
        denied = any(call_matches(pattern, name) for pattern, _ in self.caps.denied)
        return not denied and self.caps.find(name, [ANY]) is not None


@dataclass
class Process:
    """Who makes a syscall: the dispatch path checks its capabilities, never the model's word."""

    name: str
    workspace: Workspace
    caps: CapabilitySet
    grant: GrantCallback | None = None
    grant_store: GrantStore | None = None
    services: Services = field(default_factory=Services, repr=False)
    """What the process may ask for by type (memory, the file index, documents); none by
    default: a family then says the process has no such service, or does without it."""
    pid: int = field(default_factory=lambda: next(_pids))
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set when the process is being killed: a tool it is running is stopped (E_INTR)."""
    allows: frozenset[str] | None = field(default=None, repr=False)
    """The effects (see `Syscall.effects`) the current turn's request asked for, fixed from
    the person's words before any file or result is read; None outside a turn (a direct
    call, a scripted app step: the person or the approved app asked for it). A call with an
    effect outside it is asked about on a terminal and refused without one."""
    named: frozenset[str] | None = field(default=None, repr=False)
    """The files (workspace-relative) the person's words in the conversation name, set with
    `allows` for a turn: a call may replace an existing file (`Syscall.replaces`) only when it
    is named here or the turn made it. None: no limit (a direct call, an app step)."""
    authorized: Authorized | None = field(default=None, repr=False)
    """What the dispatcher authorized for the call now running: handlers that act on several
    resources (memories) ask it, never the capabilities."""
    changes: ChangeSet | None = field(default=None, repr=False)
    """The open change set (a turn, an app run) that the files its calls change are journaled
    in, for undo; None makes each file-changing call a change set of its own."""

    @property
    def interactive(self) -> bool:
        """True when someone can be asked to grant a missing capability."""
        return self.grant is not None


@dataclass(frozen=True)
class Dispatched:
    """One finished dispatch, as the `after_dispatch` hooks (the audit log among them) see it:
    allowed or refused, also when Ctrl-C stopped it before a result (`result` None)."""

    process: Process
    call: str
    args: Mapping[str, Any]
    resources: tuple[str, ...]
    result: Any = None
    """The SyscallResult; None when the call was interrupted."""

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.result is not None and bool(self.result.ok)

    @property
    def code(self) -> ErrorCode | None:
        """The error's stable code; E_INTR when interrupted; None when it succeeded."""
        if self.result is None:
            return ErrorCode.E_INTR
        code: ErrorCode | None = self.result.code
        return code
