"""The plugin API: pluggy hook specs that built-in families and third-party apps implement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from llmos.syscalls.base import Registry

if TYPE_CHECKING:
    from llmos.syscalls.tool import ToolTable

PROJECT = "llmos"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class AppSpec:
    """Hooks an app may implement."""

    @hookspec
    def register_syscalls(self, registry: Registry) -> None:
        """Register syscalls (model, handler, capability) into the live table."""

    @hookspec
    def register_tools(self, tools: ToolTable) -> None:
        """Declare tools (`tools.add(Tool(...))`, `tools.command(...)`, `tools.function(f)`)
        that `tool.run` runs; manifests declare theirs through the same table."""
