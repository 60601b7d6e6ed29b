"""The plugin API: pluggy hook specs that built-in families and third-party apps implement."""

from __future__ import annotations

import pluggy

from llmos.syscalls.base import Registry

PROJECT = "llmos"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class AppSpec:
    """Hooks an app may implement."""

    @hookspec
    def register_syscalls(self, registry: Registry) -> None:
        """Register syscalls (model, handler, capability) into the live table."""
