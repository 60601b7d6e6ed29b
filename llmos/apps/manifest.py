"""App manifests: a TOML file declaring an app (its prompt, the capabilities it needs, its tools
and optional steps), validated with errors that name the bad key, and run non-interactively by
`llmos run`: capabilities approved once are remembered, anything beyond them is E_PERM."""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmos.config import McpServerSpec
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.lessons import check_calls
from llmos.kernel.loop import Conversation, Kernel, KernelHost
from llmos.security.capabilities import (
    ANY,
    Capability,
    CapabilityAuthority,
    GrantCallback,
    GrantStore,
)
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.syscalls.tool import Tool, ToolSpec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llmos.kernel.backend import Backend


class AppHost(KernelHost, Protocol):
    """What an app run needs of the system (`llmos.system.System` is one): the kernel's needs,
    plus spawning the app's process and minting the capabilities approved for it."""

    authority: CapabilityAuthority

    def spawn(
        self,
        name: str,
        workspace: Path,
        *,
        patterns: Iterable[str] | None = None,
        grant: GrantCallback | None = None,
        remembered: bool = True,
    ) -> Process:
        """A process of the app on `workspace`."""
        ...


VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
CALL_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+$")
ALWAYS_HELD = ("reply", "ask")
"""Control calls every app process holds: they only end a kernel turn and touch nothing."""


@dataclass(frozen=True, order=True)
class CapabilityNeed:
    """One capability an app asks for: a call pattern and a scope (`tool.run on grep`)."""

    call: str
    scope: str = ANY
    note: str = field(default="", compare=False)
    """What the person approving must know beyond the call: `runs unsandboxed, with your full
    rights` for a tool whose manifest says `sandbox = false`. Not part of the need's identity."""

    @classmethod
    def parse(cls, text: str) -> CapabilityNeed:
        """`fs.read`, `fs.write on out/`, `tool.run on grep` -> a need; ValueError otherwise."""
        call, sep, scope = text.strip().partition(" on ")
        call, scope = call.strip(), scope.strip()
        if not CALL_PATTERN.match(call):
            raise ValueError(f"{text!r} is not a call pattern such as fs.read or fs.*")
        if sep and not scope:
            raise ValueError(f"{text!r}: 'on' needs a scope (a path or a tool name)")
        return cls(call, scope or ANY)

    def describe(self) -> str:
        """The same form a manifest writes it in, and the note, which the approval prompt shows."""
        text = self.call if self.scope == ANY else f"{self.call} on {self.scope}"
        return f"{text} ({self.note})" if self.note else text

    def held_by(self, cap: Capability) -> bool:
        """True when `cap` grants exactly this need."""
        return cap.call == self.call and cap.scope == self.scope


class Step(BaseModel):
    """One scripted step: a syscall (`call` plus its arguments) or a natural-language
    `request` that the kernel carries out. String values may use `{variables}`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    call: str | None = None
    request: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if (self.call is None) == (self.request is None):
            raise ValueError('a step needs exactly one of "call" (a syscall) or "request"')
        if self.request is not None and self.model_extra:
            extra = ", ".join(sorted(self.model_extra))
            raise ValueError(f"a request step takes no other keys (found {extra})")
        return self

    def raw(self) -> dict[str, Any]:
        """The step as plain data (a syscall step: the call and its arguments)."""
        if self.request is not None:
            return {"request": self.request}
        return {"call": self.call, **(self.model_extra or {})}


class AppExample(BaseModel):
    """A request like the ones the app makes, and the calls that carry it out: shown to the
    kernel for this app's requests alone (`[[examples]]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: str = Field(min_length=1)
    calls: list[dict[str, Any]] = Field(min_length=1)


class Manifest(BaseModel):
    """An app, as its TOML file declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    prompt: str = Field(default="", description="What the app is for, told to the kernel.")
    capabilities: list[str] = Field(default_factory=list)
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Default values of `{variables}`; --input overrides."
    )
    tools: dict[str, ToolSpec] = Field(default_factory=dict)
    mcp: dict[str, McpServerSpec] = Field(
        default_factory=dict,
        description="MCP servers whose tools the app calls, as NAME.<tool> (`[mcp.NAME]`).",
    )
    steps: list[Step] = Field(default_factory=list)
    examples: list[AppExample] = Field(
        default_factory=list,
        description="Requests and their calls shown to the kernel for this app's requests only.",
    )

    @field_validator("capabilities")
    @classmethod
    def _capabilities_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            CapabilityNeed.parse(text)
        return value

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, value: dict[str, ToolSpec]) -> dict[str, ToolSpec]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", name):
                raise ValueError(f"tool name {name!r}: letters, digits, _ . - only")
            if value[name].command is None:
                raise ValueError(f"tool {name!r} needs a command (argv list)")
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> Manifest:
        if not self.steps and not self.prompt.strip():
            raise ValueError("an app needs steps, or a prompt to run as its request")
        return self

    def needs(self) -> list[CapabilityNeed]:
        """Every capability the app needs: those it lists plus `tool.run` on each of its tools,
        noting a tool that runs unsandboxed or may use the network."""
        found = {need: need for need in map(CapabilityNeed.parse, self.capabilities)}
        for name, spec in self.tools.items():
            need = CapabilityNeed("tool.run", name, tool_note(spec))
            found[need] = need  # the tool's own need, with its note, wins over a listed one
        for name, server in self.mcp.items():
            need = CapabilityNeed(f"{name}.*", ANY, mcp_note(server))
            found[need] = need
        return sorted(found.values())


def mcp_note(spec: McpServerSpec) -> str:
    """What approving an app's MCP server must say: the command it starts, and its walls."""
    walls = (
        "unsandboxed, with your full rights"
        if not spec.sandbox
        else "sandboxed, may use the network"
        if spec.network
        else "sandboxed"
    )
    return f"the MCP server {' '.join(spec.command)}, {walls}"


def tool_note(spec: ToolSpec) -> str:
    """What a tool's approval must say beyond its name: unsandboxed, or networked."""
    if not spec.sandbox:
        return "runs unsandboxed, with your full rights: any file you can read or write"
    return "sandboxed, may use the network" if spec.network else ""


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the manifest spells it: `[tools.grep].timeout`."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "tools":
        head, rest = f"[tools.{parts[1]}]", parts[2:]
    elif len(parts) >= 2 and parts[0] == "steps" and parts[1].isdigit():
        head, rest = f"[[steps]] #{int(parts[1]) + 1}", parts[2:]
    elif len(parts) >= 2 and parts[1].isdigit():
        head, rest = f"{parts[0]}[{parts[1]}]", parts[2:]
    else:
        head, rest = (parts[0] if parts else "(manifest)"), parts[1:]
    return head + "".join(f".{p}" if not p.isdigit() else f"[{p}]" for p in rest)


def parse_manifest(text: str, source: str = "app.toml") -> Manifest:
    """Validate a manifest's TOML text; E_INVAL naming the file and each bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"{source}: not valid TOML: {exc}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise LlmosError(ErrorCode.E_INVAL, "\n".join(lines)) from None


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest at `path`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LlmosError(ErrorCode.E_NOENT, f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmosError(ErrorCode.E_IO, f"{path}: unreadable: {exc}") from None
    return parse_manifest(text, path.name)


def substitute(value: Any, variables: dict[str, str], where: str) -> Any:
    """`value` with each `{name}` in its strings replaced (recursively); E_INVAL names the
    step and the variable when one is not given. Other braces are left as they are."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            if match[1] not in variables:
                raise LlmosError(
                    ErrorCode.E_INVAL,
                    f"{where} uses {{{match[1]}}}, which no --input {match[1]}=... gives "
                    "(and [inputs] has no default)",
                )
            return variables[match[1]]

        return VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables, where) for k, v in value.items()}
    return value


Approver = Callable[[Manifest, list[CapabilityNeed]], bool | None]
"""Asked to approve the needs not yet approved: True approves (remembered), False refuses,
None means no one can be asked (no terminal, no --yes)."""


@dataclass
class AppRun:
    """How an app run ended: ok, or the code and message of the first failure (`ran` is False
    for an app that never started because another app run with it could not)."""

    ok: bool = True
    ran: bool = True
    code: ErrorCode | None = None
    message: str = ""
    results: list[SyscallResult] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def fail(self, code: ErrorCode, message: str) -> AppRun:
        """Mark the run failed (the first failure wins) and return it."""
        if self.ok:
            self.ok, self.code, self.message = False, code, message
        return self


def app_grants(system: AppHost, manifest: Manifest, source: Path) -> GrantStore:
    """Where this app's approvals are kept: per app name and manifest file, per workspace, so
    another file calling itself by the same name inherits nothing."""
    identity = f"{manifest.name}\0{source.resolve()}"
    # A tool turned unsandboxed or networked is a new app to approve: its old grants stay behind.
    walls = sorted(f"{n}:{tool_note(s)}" for n, s in manifest.tools.items() if tool_note(s))
    walls += sorted(f"mcp:{n}:{mcp_note(s)}" for n, s in manifest.mcp.items())
    if walls:
        identity += "\0" + "\0".join(walls)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    folder = system.settings.ensure_home() / "apps"
    folder.mkdir(exist_ok=True, mode=0o700)
    return GrantStore(folder / f"{manifest.name}-{key}.grants.json", system.authority)


def spawn_app(
    system: AppHost, manifest: Manifest, source: Path, workspace: Path, approve: Approver
) -> Process:
    """A non-interactive process for the app holding exactly its approved needs (asking
    `approve` for new ones, remembering the answer); E_PERM when they are not approved."""
    process = system.spawn(
        f"app:{manifest.name}", workspace, patterns=ALWAYS_HELD, remembered=False
    )
    store = app_grants(system, manifest, source)
    needs = manifest.needs()
    held = [cap for cap in store.load(process.workspace.root) if any(n.held_by(cap) for n in needs)]
    new = [need for need in needs if not any(need.held_by(cap) for cap in held)]
    if new:
        listed = ", ".join(n.describe() for n in new)
        answer = approve(manifest, new)
        if answer is None:
            raise LlmosError(
                ErrorCode.E_PERM,
                f"app {manifest.name} needs approval for: {listed}; run it once from a "
                "terminal, or with --yes",
            )
        if not answer:
            raise LlmosError(ErrorCode.E_PERM, f"app {manifest.name}: not approved: {listed}")
        for need in new:
            cap = system.authority.mint(need.call, scope=need.scope)
            store.save(process.workspace.root, cap)
            held.append(cap)
    for cap in held:
        process.caps.add(cap)
    return process


@contextmanager
def declared_tools(system: AppHost, manifest: Manifest) -> Iterator[None]:
    """The app's tools and the syscalls of its MCP servers in the system's table for the length
    of the run (each server started when first called, stopped after)."""
    from llmos.apps.mcp_client import McpServer
    from llmos.syscalls.base import Registrar

    added: list[str] = []
    servers: list[tuple[McpServer, Registrar]] = []
    try:
        for name, spec in manifest.tools.items():
            system.tools.add(Tool.from_spec(name, spec, app=manifest.name))
            added.append(name)
        for name, server_spec in manifest.mcp.items():
            server = McpServer(name, server_spec, system.settings.ensure_home())
            register = Registrar(system.registry, f"app:{manifest.name}:mcp:{name}")
            servers.append((server, register))
            try:
                server.register_syscalls(register)
            except LlmosError as exc:
                raise LlmosError(
                    exc.code, f"app {manifest.name}: [mcp.{name}]: {exc.message}"
                ) from None
        yield
    finally:
        for name in added:
            system.tools.remove(name)
        for server, register in servers:
            server.close()
            register.undo()


@dataclass
class PreparedApp:
    """An app ready to run: its steps with every `{variable}` filled in, and its process
    holding exactly the approved capabilities."""

    manifest: Manifest
    process: Process
    steps: list[dict[str, Any]]
    preface: str


def prepare_app(
    system: AppHost,
    manifest: Manifest,
    source: Path,
    workspace: Path,
    inputs: dict[str, str],
    *,
    approve: Approver,
) -> PreparedApp:
    """Fill in the app's variables and approve its process, running nothing yet; E_INVAL for
    a variable no input gives, E_PERM when its capabilities are not approved."""
    variables = {**manifest.inputs, **inputs}
    steps = [s.raw() for s in manifest.steps] or [{"request": manifest.prompt}]
    prepared = [substitute(s, variables, f"[[steps]] #{i}") for i, s in enumerate(steps, 1)]
    preface = substitute(manifest.prompt, variables, "prompt") if manifest.steps else ""
    for number, example in enumerate(manifest.examples, 1):
        try:
            check_calls(example.calls, system.registry)
        except LlmosError as exc:
            raise LlmosError(exc.code, f"[[examples]] #{number}: {exc.message}") from None
    process = spawn_app(system, manifest, source, workspace, approve)
    return PreparedApp(manifest, process, prepared, preface)


def run_prepared(
    system: AppHost,
    app: PreparedApp,
    *,
    backend: Callable[[], Backend] | None = None,
    show: Callable[[str], None] = print,
) -> AppRun:
    """Run a prepared app's steps in order (its tools must be declared) and stop at the first
    failure, the files they change journaled as one change set. `backend` opens the model,
    only if a request step needs it."""
    run = AppRun()
    kernel_steps = _KernelSteps(system, backend, app.preface)
    process = app.process
    own = system.examples.registrar(process.name)  # shown to this app's process alone
    for example in app.manifest.examples:
        own.add(example.request, example.calls)
    process.changes = system.journal.begin(f"app {app.manifest.name}", process.workspace)
    try:
        for number, step in enumerate(app.steps, 1):
            if "request" in step:
                kernel_steps.run(process, str(step["request"]), run, show, number)
            else:
                _syscall_step(system, process, step, run, show, number)
            if not run.ok:
                break
    finally:  # the whole run is one change set: `llmos undo` takes it back at once
        own.undo()
        system.journal.end(process.changes)
        process.changes = None
        for notice in system.journal.take_notices():
            show(f"note: {notice}")
    return run


def run_app(
    system: AppHost,
    manifest: Manifest,
    source: Path,
    workspace: Path,
    inputs: dict[str, str],
    *,
    approve: Approver,
    backend: Callable[[], Backend] | None = None,
    show: Callable[[str], None] = print,
) -> AppRun:
    """Run the app's steps in order (or its prompt as one request) and stop at the first
    failure: a syscall that fails, a tool that exits non-zero, or a request the kernel does
    not end with a reply. `backend` opens the model, only if a request step needs it."""
    with declared_tools(system, manifest):
        app = prepare_app(system, manifest, source, workspace, inputs, approve=approve)
        return run_prepared(system, app, backend=backend, show=show)


def _syscall_step(
    system: AppHost,
    process: Process,
    step: dict[str, Any],
    run: AppRun,
    show: Callable[[str], None],
    number: int,
) -> None:
    """Dispatch one scripted syscall and record its outcome."""
    result = system.dispatch(process, step)
    run.results.append(result)
    show(f"[{number}] {step['call']}: {result.render()}")
    if not result.ok:
        run.fail(result.code or ErrorCode.E_INTERNAL, f"step {number}: {result.render()}")
        return
    value = result.value if isinstance(result.value, dict) else {}
    if result.call == "tool.run" and value.get("exit_code") not in (0, None):
        run.fail(ErrorCode.E_IO, f"step {number}: tool {value['name']} exited {value['exit_code']}")


class _KernelSteps:
    """Carries out request steps through the kernel, one shared conversation per run; the
    model is opened on the first request step only."""

    def __init__(
        self, system: AppHost, backend: Callable[[], Backend] | None, preface: str
    ) -> None:
        self.system = system
        self.backend = backend
        self.preface = preface
        self.kernel: Kernel | None = None
        self.conversation = Conversation()

    def run(
        self,
        process: Process,
        request: str,
        run: AppRun,
        show: Callable[[str], None],
        number: int,
    ) -> None:
        """One request to its end; a turn that does not end in a reply fails the run."""
        if self.backend is None:
            run.fail(ErrorCode.E_BACKEND, f"step {number}: a request step needs a model")
            return
        if self.kernel is None:
            self.kernel = Kernel(self.system, self.backend())
            if self.preface:
                request = f"{self.preface}\n\n{request}"
        last = None
        for event in self.kernel.turn(process, self.conversation, request):
            if event.kind == "call":
                continue
            show(f"[{number}] {event.kind}: {event.text}")
            if event.result is not None:
                run.results.append(event.result)
            last = event
        if last is not None and last.kind == "reply":
            run.replies.append(last.text)
            return
        text = last.text if last is not None else "no steps"
        code = (last.code if last is not None else None) or ErrorCode.E_INVAL
        kind = last.kind if last is not None else "error"
        run.fail(code, f"step {number}: the kernel did not reply ({kind}: {text})")
