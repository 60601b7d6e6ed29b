"""A process: one context with its own workspace, capabilities and way of asking for grants."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmos.security.capabilities import CapabilitySet, GrantCallback, GrantStore
from llmos.security.workspace import Workspace

if TYPE_CHECKING:
    from llmos.memory.files import FileIndex
    from llmos.memory.memory import Memory
    from llmos.security.journal import ChangeSet

_pids = itertools.count(1)


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
    pid: int = field(default_factory=lambda: next(_pids))
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set when the process is being killed: a tool it is running is stopped (E_INTR)."""
    changes: ChangeSet | None = field(default=None, repr=False)
    """The open change set (a turn, an app run) that the files its calls change are journaled
    in, for undo; None makes each file-changing call a change set of its own."""

    @property
    def interactive(self) -> bool:
        """True when someone can be asked to grant a missing capability."""
        return self.grant is not None
