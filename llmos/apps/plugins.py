"""Loads the built-in syscall families and every `llmos.apps` entry point into one registry."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from llmos.apps.hooks import PROJECT, AppSpec
from llmos.syscalls.base import Registry

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


def _register_one(pm: pluggy.PluginManager, registry: Registry, name: str, plugin: object) -> None:
    """Register one plugin (pluggy validates its hooks) and run its hook alone, undoing a
    half-registration if it raises, so one broken app never affects the others."""
    before = set(registry.names())
    pm.register(plugin, name=name)
    try:
        impl = getattr(plugin, "register_syscalls", None)
        if impl is not None:
            impl(registry=registry)
    except BaseException:
        for added in set(registry.names()) - before:
            registry.unregister(added)
        pm.unregister(plugin)
        raise


def build_registry(*, plugins: bool = True) -> tuple[Registry, PluginReport]:
    """A registry holding the built-in families and, unless disabled, installed plugin apps."""
    registry = Registry()
    report = PluginReport()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(AppSpec)
    for module_name in BUILTIN_FAMILIES:
        module: ModuleType = importlib.import_module(module_name)
        _register_one(pm, registry, module_name, module)
        report.loaded.append(module_name)
    registry.mark_core()
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            label = f"{ep.name} ({ep.value})"
            try:
                _register_one(pm, registry, ep.name, ep.load())
            except Exception as exc:
                report.failed[label] = f"{type(exc).__name__}: {exc}"
            else:
                report.loaded.append(label)
    return registry, report
