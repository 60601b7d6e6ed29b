"""The one dispatch path: validate -> check capability -> run -> audit, for every caller."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.process import Process
from llmos.security.audit import AuditLog
from llmos.security.capabilities import ANY, CapabilityAuthority, GrantAnswer, GrantRequest
from llmos.security.journal import Journal
from llmos.security.workspace import Located
from llmos.syscalls.base import Registry, Syscall, SyscallResult, SyscallSpec

log = logging.getLogger(__name__)

DispatchHook = Callable[[Process, Syscall, SyscallResult], None]


class Dispatcher:
    """Runs syscalls for processes; no handler is ever called any other way."""

    def __init__(
        self,
        registry: Registry,
        authority: CapabilityAuthority,
        audit: AuditLog | None,
        journal: Journal | None = None,
    ) -> None:
        self.registry = registry
        self.authority = authority
        self.audit = audit
        self.journal = journal

    def dispatch(self, process: Process, raw: Syscall | dict[str, Any]) -> SyscallResult:
        """Run one call for `process`; every outcome, allowed or denied, is audited, also when
        the call is interrupted (Ctrl-C) or fails in a way no handler expected."""
        name, args = _name_and_args(raw)
        resources: list[str] = []
        result: SyscallResult | None = None
        try:
            try:
                call = self.registry.parse(raw)
                spec = self.registry.get(call.call)
                assert spec is not None
                resources = list(spec.resources(call, process))
                self._authorize(process, spec, resources)
                value = self._run(process, spec, call, resources)
                result = SyscallResult.success(call.call, value)
            except LlmosError as exc:
                result = SyscallResult.failure(name, exc.code, exc.message)
            except OSError as exc:
                result = SyscallResult.failure(name, ErrorCode.E_IO, f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                result = SyscallResult.failure(
                    name, ErrorCode.E_INTERNAL, f"{name} failed: {type(exc).__name__}: {exc}"
                )
            return result
        finally:  # record never raises, and a Ctrl-C mid-call still leaves its line
            if self.audit is not None:
                code = ErrorCode.E_INTR.value if result is None else result.code
                self.audit.record(
                    pid=process.pid,
                    process=process.name,
                    call=name,
                    args=args,
                    ok=result is not None and result.ok,
                    code=code.value if isinstance(code, ErrorCode) else code,
                    resources=resources,
                )

    def _run(
        self, process: Process, spec: SyscallSpec[Any], call: Syscall, resources: list[str]
    ) -> Any:
        """Call the handler with the workspace guarded: every path it resolves (after symlinks,
        or derived, like a default output name) must be covered too, else E_PERM."""
        allowed = set(resources)

        def guard(real: str) -> None:
            if real not in allowed:
                self._authorize(process, spec, [real])
                allowed.add(real)

        workspace = process.workspace
        if not call.changes_files or self.journal is None:
            previous, workspace.guard = workspace.guard, guard
            try:
                return spec.handler(call, process)
            finally:
                workspace.guard = previous
        own = process.changes is None
        changes = process.changes or self.journal.begin(_label(call), workspace)

        def watch(located: Located) -> None:
            changes.before(located, call.call)

        previous, workspace.guard = workspace.guard, guard
        watching, workspace.watch = workspace.watch, watch
        try:
            return spec.handler(call, process)
        finally:
            workspace.guard, workspace.watch = previous, watching
            try:
                changes.after(workspace)
                if own:
                    self.journal.end(changes)
            except OSError as exc:  # the saved copies are in; only the record is behind
                log.warning("the undo journal could not record %s: %s", call.call, exc)

    def _authorize(self, process: Process, spec: SyscallSpec[Any], resources: list[str]) -> None:
        """Pass if a held capability covers the call; else ask (interactive) or refuse (E_PERM)."""
        cap_name = spec.cap_name
        if process.caps.find(cap_name, resources) is not None:
            return
        wanted = process.caps.missing(cap_name, resources) if resources else [ANY]
        shown = ", ".join(r if r else "/" for r in wanted if r != ANY)
        need = f"{cap_name}" + (f" on {shown}" if shown else "")
        if process.caps.is_denied(cap_name, resources):
            raise LlmosError(ErrorCode.E_PERM, f"denied: {need}")
        if process.grant is None:
            raise LlmosError(ErrorCode.E_PERM, f"missing capability {need}")
        for resource in wanted:
            answer = _as_answer(process.grant(GrantRequest(process.name, cap_name, resource)))
            if answer is GrantAnswer.DENY:
                process.caps.deny(cap_name, resource)
                raise LlmosError(ErrorCode.E_PERM, f"denied by the user: {need}")
            if answer in (GrantAnswer.SESSION, GrantAnswer.ALWAYS):
                cap = self.authority.mint(cap_name, scope=resource or ANY)
                process.caps.add(cap)
                if answer is GrantAnswer.ALWAYS and process.grant_store is not None:
                    process.grant_store.save(process.workspace.root, cap)


def _as_answer(value: object) -> GrantAnswer:
    """A grant callback's answer as a GrantAnswer; anything unrecognised is a deny (fail closed).

    Callbacks are plain code (scripts, manifests): one returning the string "deny", None or a
    typo must never fall through to "allowed once".
    """
    if isinstance(value, GrantAnswer):
        return value
    if not isinstance(value, str):
        return GrantAnswer.DENY
    try:
        return GrantAnswer(value.strip().lower())
    except ValueError:
        return GrantAnswer.DENY


def _label(call: Syscall) -> str:
    """A direct call's change-set label: its name and first arguments, shortened."""
    args = call.model_dump(mode="json", exclude={"call"}, exclude_defaults=True)
    words = [f"{k}={str(v)[:40]}" for k, v in list(args.items())[:2]]
    return " ".join([call.call, *words])


def _name_and_args(raw: Syscall | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, Syscall):
        data = raw.model_dump(mode="json")
    elif isinstance(raw, dict):
        data = dict(raw)
    else:
        return "?", {"raw": repr(raw)}
    name = data.pop("call", "?")
    return (name if isinstance(name, str) else repr(name)), data
