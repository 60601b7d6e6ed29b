"""A process: one context with its own workspace, capabilities and way of asking for grants."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    from llmos.documents import Documents
    from llmos.memory.files import FileIndex
    from llmos.memory.memory import Memory
    from llmos.security.journal import ChangeSet

_pids = itertools.count(1)


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
    open_memory: Callable[[], Memory] | None = None
    """Opens (on first use) the installation's memory; None for a process without one."""
    open_files: Callable[[], FileIndex] | None = None
    """Opens (on first use) the search by meaning over the workspace's files; None without."""
    documents: Documents | None = field(default=None, repr=False)
    """Reads documents and images as text with the installation's cache; None reads them
    without a cache."""
    pid: int = field(default_factory=lambda: next(_pids))
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set when the process is being killed: a tool it is running is stopped (E_INTR)."""
    allows: frozenset[str] | None = field(default=None, repr=False)
    """The effects (see `Syscall.effects`) the current turn's request asked for, fixed from
    the person's words before any file or result is read; None outside a turn (a direct
    call, a scripted app step: the person or the approved app asked for it). A call with an
    effect outside it is asked about on a terminal and refused without one."""
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
