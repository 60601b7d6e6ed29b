"""Loads the built-in syscall families and every `llmos.apps` entry point into one registry."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from llmos.apps.hooks import PROJECT, AppSpec
from llmos.syscalls.base import Registry
from llmos.syscalls.tool import ToolTable

BUILTIN_FAMILIES = (
    "llmos.syscalls.fs",
    "llmos.syscalls.image",
    "llmos.syscalls.mem",
    "llmos.syscalls.control",
)
ENTRY_POINT_GROUP = "llmos.apps"


@dataclass
class PluginReport:
    """Which apps loaded and which failed (each failure reported once, then skipped)."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _register_one(
    pm: pluggy.PluginManager, registry: Registry, tools: ToolTable, name: str, plugin: object
) -> None:
    """Register one plugin (pluggy validates its hooks) and run its hooks alone, undoing a
    half-registration (syscalls and tools) if one raises, so one broken app never affects the
    others."""
    before = set(registry.names())
    tools_before = set(tools.names())
    pm.register(plugin, name=name)
    try:
        impl = getattr(plugin, "register_syscalls", None)
        if impl is not None:
            impl(registry=registry)
        impl = getattr(plugin, "register_tools", None)
        if impl is not None:
            impl(tools=tools)
    except BaseException:
        for added in set(tools.names()) - tools_before:
            tools.remove(added)
        for added in set(registry.names()) - before:
            registry.unregister(added)
        pm.unregister(plugin)
        raise


def build_registry(
    *, plugins: bool = True, tools: ToolTable | None = None
) -> tuple[Registry, PluginReport]:
    """A registry holding the built-in families and, unless disabled, installed plugin apps.

    The tool table (`tools`, a fresh one if not given) is attached after the core is marked,
    so `tool.run`/`tool.list` join the table, after the core, only once some tool exists."""
    registry = Registry()
    tools = ToolTable() if tools is None else tools
    report = PluginReport()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(AppSpec)
    for module_name in BUILTIN_FAMILIES:
        module: ModuleType = importlib.import_module(module_name)
        _register_one(pm, registry, tools, module_name, module)
        report.loaded.append(module_name)
    registry.mark_core()
    tools.attach(registry)
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            label = f"{ep.name} ({ep.value})"
            try:
                _register_one(pm, registry, tools, ep.name, ep.load())
            except Exception as exc:
                report.failed[label] = f"{type(exc).__name__}: {exc}"
            else:
                report.loaded.append(label)
    return registry, report
