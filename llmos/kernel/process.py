"""A process: one context with its own workspace, capabilities and way of asking for grants."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from llmos.security.capabilities import CapabilitySet, GrantCallback, GrantStore
from llmos.security.workspace import Workspace

_pids = itertools.count(1)


@dataclass
class Process:
    """Who makes a syscall: the dispatch path checks its capabilities, never the model's word."""

    name: str
    workspace: Workspace
    caps: CapabilitySet
    grant: GrantCallback | None = None
    grant_store: GrantStore | None = None
    pid: int = field(default_factory=lambda: next(_pids))

    @property
    def interactive(self) -> bool:
        """True when someone can be asked to grant a missing capability."""
        return self.grant is not None
