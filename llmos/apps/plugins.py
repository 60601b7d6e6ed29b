"""Loads the built-in syscall families and every `llmos.apps` entry point into one registry."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from llmos.kernel.examples import BUILTIN, ExampleBank, ExampleRegistrar
from llmos.syscalls.base import Registrar, Registry
from llmos.syscalls.hooks import PROJECT, AppSpec, hookimpl
from llmos.syscalls.tool import ToolFamily, ToolTable

BUILTIN_FAMILIES = (
    "llmos.syscalls.fs",
    "llmos.syscalls.image",
    "llmos.syscalls.mem",
    "llmos.syscalls.control",
)
TOOL_FAMILY = "llmos.syscalls.tool"
"""The plugin name of the tool family (registered after the core, see build_registry)."""
ENTRY_POINT_GROUP = "llmos.apps"
BUILTIN_EXAMPLES = "builtin"
"""The plugin name (and examples' source) of the kernel's own examples."""


@dataclass
class PluginReport:
    """Which apps loaded and which failed (each failure reported once, then skipped)."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    hooks: Any = None
    """The plugin manager's hook relay (`pm.hook`): dispatch calls its before_dispatch and
    after_dispatch hooks."""


class BuiltinExamples:
    """The kernel's own examples (llmos.kernel.examples.BUILTIN), added through the same hook
    as an app's, so built-ins and plugins reach the bank one way."""

    @hookimpl
    def register_examples(self, examples: ExampleRegistrar) -> None:
        """Add every built-in example."""
        for example in BUILTIN:
            examples.add(example.request, example.calls)


def _call_alone(pm: pluggy.PluginManager, plugin: object, hook: str, **kwargs: Any) -> None:
    """Call one hook of one plugin only, through pluggy (so only marked, validated hookimpls
    run), so a plugin's hooks run and fail on their own."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)


def _register_one(
    pm: pluggy.PluginManager,
    registry: Registry,
    tools: ToolTable,
    examples: ExampleBank,
    name: str,
    plugin: object,
    *,
    builtin: bool = False,
) -> Registrar:
    """Register one plugin (pluggy validates its hooks) and run its hooks alone, undoing a
    half-registration (syscalls, tools and examples) if one raises, so one broken app never
    affects the others; its registrar (what it registered, what it asked to keep stable)."""
    tools_before = set(tools.names())
    pm.register(plugin, name=name)
    register = Registrar(registry, name, builtin=builtin)
    added = examples.registrar(name)
    try:
        _call_alone(pm, plugin, "register_syscalls", register=register)
        _call_alone(pm, plugin, "register_tools", tools=tools)
        _call_alone(pm, plugin, "register_examples", examples=added)
    except BaseException:
        added.undo()
        for added_tool in set(tools.names()) - tools_before:
            tools.remove(added_tool)
        register.undo()
        pm.unregister(plugin)
        raise
    return register


def build_registry(
    *,
    plugins: bool = True,
    tools: ToolTable | None = None,
    examples: ExampleBank | None = None,
    observers: Sequence[tuple[str, object]] = (),
    extra: Sequence[tuple[str, object]] = (),
) -> tuple[Registry, PluginReport]:
    """A registry holding the built-in families and, unless disabled, installed plugin apps.

    The tool table (`tools`, a fresh one if not given) is attached after the core is marked,
    so `tool.run`/`tool.list` join the table, after the core, only once some tool exists. The
    example bank (`examples`, a fresh one if not given) gets the built-in examples and every
    loaded plugin's. `extra` are llmos's own plugins that may fail like an app (the MCP servers
    of config.toml), registered after the tools and before the installed apps."""
    registry = Registry()
    tools = ToolTable() if tools is None else tools
    examples = ExampleBank() if examples is None else examples
    report = PluginReport()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(AppSpec)
    for label, observer in observers:  # llmos's own dispatch hooks (the audit log), first
        pm.register(observer, name=label)
    report.hooks = pm.hook
    for module_name in BUILTIN_FAMILIES:
        module: ModuleType = importlib.import_module(module_name)
        _register_one(pm, registry, tools, examples, module_name, module, builtin=True)
        report.loaded.append(module_name)
    _register_one(pm, registry, tools, examples, BUILTIN_EXAMPLES, BuiltinExamples(), builtin=True)
    registry.mark_core()
    # After the core, so tool.* (there only while tools exist) stay out of the cached prompt.
    _register_one(pm, registry, tools, examples, TOOL_FAMILY, ToolFamily(tools), builtin=True)
    stable: list[str] = []
    for label, plugin in extra:
        try:
            _register_one(pm, registry, tools, examples, label, plugin)
        except (Exception, SystemExit) as exc:
            report.failed[label] = f"{type(exc).__name__}: {exc}"
        else:
            report.loaded.append(label)
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            label = f"{ep.name} ({ep.value})"
            try:
                done = _register_one(pm, registry, tools, examples, ep.name, ep.load())
            except (Exception, SystemExit) as exc:  # a plugin's sys.exit() must not end llmos
                report.failed[label] = f"{type(exc).__name__}: {exc}"
            else:
                report.loaded.append(label)
                stable.extend(done.stable)
    registry.mark_stable(stable)
    return registry, report
