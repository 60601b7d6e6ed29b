"""The plugin API: pluggy hook specs that built-in families and third-party apps implement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

from llmos.security.audit import AuditLog
from llmos.syscalls.base import Registrar, Syscall
from llmos.syscalls.context import Dispatched, Process

PROJECT = "llmos"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ToolDeclarer(Protocol):
    """What `register_tools` is given: the tool table's ways to declare a tool (the table in
    `llmos.syscalls.tool` is one; see `Tool` there for the fields)."""

    def add(self, tool: Any) -> None:
        """Declare a `Tool`; E_EXISTS when its name is taken."""
        ...

    def command(self, name: str, argv: list[str], description: str, **spec: Any) -> Any:
        """Declare an external-command tool."""
        ...

    def function(self, func: Callable[..., Any], **spec: Any) -> Any:
        """Declare a Python function as a tool."""
        ...


class ExampleAdder(Protocol):
    """What `register_examples` is given: the example bank's registrar for this app."""

    def add(self, request: str, calls: Any) -> Any:
        """A request -> calls example (one call dict, or a list in order)."""
        ...

    def rule(self, text: str) -> None:
        """A routing line for the kernel's prompt."""
        ...


class AppSpec:
    """Hooks an app may implement."""

    @hookspec
    def register_syscalls(self, register: Registrar) -> None:
        """Register syscalls: `register(Model, handler, result=..., capability=...,
        resources=..., stable=False)` adds one to the live table, in the namespace this app
        owns (`example.count` makes `example` its own); `stable=True` puts it in the kernel's
        cached prompt. The built-in families register through this same hook."""

    @hookspec
    def register_tools(self, tools: ToolDeclarer) -> None:
        """Declare tools (`tools.add(Tool(...))`, `tools.command(...)`, `tools.function(f)`)
        that `tool.run` runs; manifests declare theirs through the same table."""

    @hookspec
    def register_examples(self, examples: ExampleAdder) -> None:
        """Show the kernel when and how to use this app's syscalls: `examples.add(request,
        calls)` adds a request -> calls example (one call dict, or a list in order) that the
        kernel is shown for requests like it; `examples.rule(text)` a routing line for the
        prompt. The core keeps them, and shows only those whose calls are registered."""

    @hookspec
    def before_dispatch(self, process: Process, call: Syscall, resources: list[str]) -> None:
        """A validated, authorized call is about to run for `process` on `resources`: raise an
        LlmosError (`PermissionDenied(...)`) to refuse it; the refusal is its result and is
        audited like any other."""

    @hookspec
    def after_dispatch(self, done: Dispatched) -> None:
        """A call ended (allowed, refused, failed or interrupted): `done` has the process, the
        call's name and arguments, the resources and the result. Called for every dispatch,
        so keep it quick; a failure here is logged, never the call's."""


class AuditHooks:
    """The audit log as one implementation of the dispatch hooks (first, before any app's)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    @hookimpl(tryfirst=True)
    def after_dispatch(self, done: Dispatched) -> None:
        """Append the call's line to the signed audit log (which never raises)."""
        code = done.code
        self.audit.record(
            pid=done.process.pid,
            process=done.process.name,
            call=done.call,
            args=done.args,
            ok=done.ok,
            code=code.value if code else None,
            resources=list(done.resources),
        )
