"""The tool family: `tool.run` and `tool.list` over the tools that apps declare (manifests and
plugins), each a Python callable or an external command run without a shell, bounded in time
and output, in the calling process's workspace; a command runs inside the sandbox's walls, its
path arguments resolved in the workspace and no argument turned into an option."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import (
    MAX_TOOL_OUTPUT_BYTES,
    MAX_TOOL_TIMEOUT_S,
    TOOL_OUTPUT_BYTES,
    TOOL_TIMEOUT_S,
)
from llmos.security.sandbox import Sandbox
from llmos.syscalls.base import Registrar, Syscall
from llmos.syscalls.context import Authorized, Process
from llmos.syscalls.hooks import hookimpl

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
TOOL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
EMPTY_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
INTERPRETER = re.compile(
    r"^(?:(?:ba|da|z|k|mk|c|tc|a|y)?sh|fish|busybox|pwsh|osascript|tclsh|Rscript|deno|node(?:js)?"
    r"|(?:python|pypy|perl|ruby|php|lua)[0-9.]*)$"
)
"""Programs whose argument after a code flag (`sh -c`, `python -c`, `perl -e`) is a program."""
CODE_FLAG = re.compile(r"^-[A-Za-z]*[ceEr]$|^--(?:eval|command|print)$|^-(?:Command|p)$")


class ToolSpec(BaseModel):
    """What an app declares about one tool (a manifest's `[tools.NAME]` table): how to call it
    and its bounds. Exactly one of `command` (here) or a Python callable (on `Tool`) runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1, description="What the tool does, for the kernel.")
    args: dict[str, Any] = Field(
        default_factory=lambda: dict(EMPTY_ARGS),
        description="JSON Schema (an object) of the arguments; calls are validated against it.",
    )
    command: list[str] | None = Field(
        default=None,
        description="argv of an external command; `{arg}` in an element is replaced by that "
        "argument. Run without a shell, so an argument is always one literal word.",
    )
    timeout: float = Field(default=TOOL_TIMEOUT_S, gt=0, le=MAX_TOOL_TIMEOUT_S)
    max_output: int = Field(default=TOOL_OUTPUT_BYTES, gt=0, le=MAX_TOOL_OUTPUT_BYTES)
    cwd: str = Field(default=".", description="Working folder, relative to the workspace.")
    sandbox: bool = Field(
        default=True,
        description="Run the command inside the sandbox's walls (Linux Landlock). False runs "
        "it with the user's full rights, which the approval prompt says; it is also the only "
        "way a command tool runs on a kernel without Landlock.",
    )
    network: bool = Field(default=False, description="Let the sandboxed command use the network.")

    @field_validator("args")
    @classmethod
    def _schema_is_an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError('the arguments schema must have "type": "object"')
        return value

    @field_validator("command")
    @classmethod
    def _command_names_its_program(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or not value[0]:
            raise ValueError("the command needs a program as its first element")
        if PLACEHOLDER.search(value[0]):
            raise ValueError("the program (first element) cannot be a {placeholder}")
        if any("\x00" in part for part in value):
            raise ValueError("the command contains a NUL byte")
        _no_placeholder_in_code(value)
        return value

    @model_validator(mode="after")
    def _placeholders_are_arguments(self) -> ToolSpec:
        known = set((self.args.get("properties") or {}).keys())
        for part in self.command or []:
            for name in PLACEHOLDER.findall(part):
                if name not in known:
                    raise ValueError(f"command uses {{{name}}}, which args.properties lacks")
        return self


def _no_placeholder_in_code(command: list[str]) -> None:
    """ValueError for a `{placeholder}` inside code an interpreter runs (`["sh", "-c", "cat
    {path}"]`), wherever the interpreter stands (after `env`, `nice`, `timeout 5`, `xargs`,
    `find -exec`): the value would be interpreted, not passed as one word. The code may still
    take its arguments as positional parameters: `["sh", "-c", 'cat -- "$1"', "sh", "{path}"]`."""
    for at, word in enumerate(command):
        if not INTERPRETER.match(Path(word).name):
            continue
        for flag, code in itertools.pairwise(command[at + 1 :]):
            if CODE_FLAG.match(flag) and PLACEHOLDER.search(code):
                raise ValueError(
                    f"{code!r} is code that {Path(word).name} interprets, and a {{placeholder}} "
                    "there would be interpreted too; pass it as a positional parameter instead, "
                    f'e.g. ["sh", "-c", \'cat -- "$1"\', "sh", "{{path}}"]'
                )


class Tool(ToolSpec):
    """A named tool in the table: a `ToolSpec` plus its name and, for an in-process tool, the
    Python callable that runs it (called with the validated arguments as keywords)."""

    name: str = Field(pattern=TOOL_NAME)
    func: Callable[..., Any] | None = Field(default=None, exclude=True)
    app: str = Field(default="", description="The app that declared the tool.")

    @model_validator(mode="after")
    def _exactly_one_way_to_run(self) -> Tool:
        if (self.command is None) == (self.func is None):
            raise ValueError("a tool needs exactly one of `command` or a Python `func`")
        return self

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, app: str = "") -> Tool:
        """The tool a manifest declares under `[tools.NAME]`."""
        return cls(name=name, app=app, **spec.model_dump())

    def summary(self) -> str:
        """`grep(pattern, path?): search files`: the tool as the kernel's prompt lists it."""
        props = list((self.args.get("properties") or {}).keys())
        required = set(self.args.get("required") or [])
        shown = ", ".join(p if p in required else f"{p}?" for p in props)
        return f"{self.name}({shown}): {self.description}"


class ToolRun(Syscall):
    """Run one of the apps' tools by name with its arguments (tool.list shows them)."""

    effects = frozenset({"run"})
    call: Literal["tool.run"] = "tool.run"
    name: str = Field(description="The tool's name.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments, as a JSON object."
    )


class ToolRunResult(BaseModel):
    """What a tool gave back: its output (cut at the tool's cap, and then marked as cut)."""

    name: str
    output: str
    stderr: str = ""
    exit_code: int | None = None
    """The command's exit status; None for a Python tool or a command stopped at the cap."""
    truncated: bool = False
    note: str = ""
    seconds: float = 0.0


class ToolList(Syscall):
    """List the tools this process may run, with their arguments."""

    call: Literal["tool.list"] = "tool.list"


class ToolInfo(BaseModel):
    """One runnable tool."""

    name: str
    description: str
    args: dict[str, Any]
    kind: Literal["command", "python"]
    app: str = ""


class ToolListResult(BaseModel):
    """The tools the caller holds `tool.run` for."""

    tools: list[ToolInfo]


class ToolTable:
    """The tools that apps declared. Once its family's `register_syscalls` hook has run (see
    `ToolFamily`), it keeps `tool.run` and `tool.list` registered exactly while at least one
    tool exists, after the core table, so a system without tools shows the kernel no tool
    family at all."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._register: Registrar | None = None

    def attach(self, register: Registrar) -> None:
        """Register the tool family with `register` (now and whenever the tools change)."""
        self._register = register
        self._sync()

    def add(self, tool: Tool) -> None:
        """Add a tool; E_EXISTS when another tool already has its name."""
        if tool.name in self._tools:
            raise LlmosError(ErrorCode.E_EXISTS, f"tool {tool.name!r} is already declared")
        self._tools[tool.name] = tool
        self._sync()

    def command(self, name: str, argv: list[str], description: str, **spec: Any) -> Tool:
        """Declare an external-command tool (a shortcut for plugins); returns it."""
        tool = Tool(name=name, command=argv, description=description, **spec)
        self.add(tool)
        return tool

    def function(self, func: Callable[..., Any], **spec: Any) -> Tool:
        """Declare a Python tool named after `func`, described by its docstring's first line,
        unless `name`/`description` are given; returns it."""
        doc = (func.__doc__ or "").strip().splitlines()
        spec.setdefault("name", func.__name__)
        spec.setdefault("description", doc[0] if doc else func.__name__)
        tool = Tool(func=func, **spec)
        self.add(tool)
        return tool

    def remove(self, name: str) -> None:
        """Drop a tool (an app that finished, a plugin that failed to register)."""
        if self._tools.pop(name, None) is not None:
            self._sync()

    def get(self, name: str) -> Tool | None:
        """The tool with this name, or None."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Tool names, sorted."""
        return sorted(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter([self._tools[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def _sync(self) -> None:
        """Re-register the family so tool.run's description names the current tools."""
        register = self._register
        if register is None:
            return
        register.undo()
        if not self._tools:
            return
        listed = "; ".join(tool.summary() for tool in self)
        register(
            ToolRun,
            lambda call, process: run_tool(self, call, process),
            result=ToolRunResult,
            resources=lambda call, process: [call.name],
            description=f"Run a tool with its args. Tools: {listed}",
        )
        register(ToolList, lambda call, process: list_tools(self, process), result=ToolListResult)


class ToolFamily:
    """The tool family as a plugin of its table: its `register_syscalls` hook hands the table
    the `register` callback every family gets, through which it keeps tool.* in step with the
    tools declared."""

    def __init__(self, table: ToolTable) -> None:
        self.table = table

    @hookimpl
    def register_syscalls(self, register: Registrar) -> None:
        """Attach the table (tool.* appear once a tool is declared)."""
        self.table.attach(register)


def list_tools(table: ToolTable, process: Process) -> ToolListResult:
    """The tools `process` holds a `tool.run` capability for."""
    auth = process.authorized or Authorized(process.caps, "")
    infos = [
        ToolInfo(
            name=tool.name,
            description=tool.description,
            args=tool.args,
            kind="python" if tool.func is not None else "command",
            app=tool.app,
        )
        for tool in table
        if auth.covers([tool.name], "tool.run")
    ]
    return ToolListResult(tools=infos)


def check_args(tool: Tool, args: dict[str, Any]) -> None:
    """E_INVAL, naming each bad argument, unless `args` fits the tool's schema."""
    validator = jsonschema.Draft202012Validator(tool.args)
    errors = sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))
    if errors:
        parts = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '(args)'}: {e.message}" for e in errors
        ]
        raise LlmosError(
            ErrorCode.E_INVAL, f"invalid arguments for tool {tool.name}: " + "; ".join(parts)
        )


def run_tool(table: ToolTable, call: ToolRun, process: Process) -> ToolRunResult:
    """The `tool.run` handler: find the tool, validate its arguments, run it within bounds."""
    tool = table.get(call.name)
    if tool is None:
        known = ", ".join(table.names()) or "none"
        raise LlmosError(ErrorCode.E_NOENT, f"no tool named {call.name!r} (tools: {known})")
    check_args(tool, call.args)
    start = time.perf_counter()
    if tool.func is not None:
        value = _call_with_time_out(tool, call.args, process.stop)
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        output, cut = _cap_text(text, tool.max_output)
        return ToolRunResult(
            name=tool.name,
            output=output,
            truncated=cut,
            note=f"output cut at {tool.max_output} bytes" if cut else "",
            seconds=round(time.perf_counter() - start, 3),
        )
    assert tool.command is not None
    cwd = _working_dir(process, tool.cwd)
    args = resolve_paths(tool, call.args, process, cwd)
    argv = build_argv(tool.command, args, options=option_arguments(tool))
    with _sandbox_for(tool, process, argv[0], cwd) as sandbox:
        done = run_command(
            argv, cwd, tool.timeout, tool.max_output, stop=process.stop, sandbox=sandbox
        )
    if done.ended == "stopped":
        raise LlmosError(
            ErrorCode.E_INTR,
            f"tool {tool.name} was stopped with its process; its process group was killed",
        )
    if done.ended == "timed_out":
        raise LlmosError(
            ErrorCode.E_TIMEOUT,
            f"tool {tool.name} ran longer than its {tool.timeout:g} s time-out; "
            "its process group was killed",
        )
    return ToolRunResult(
        name=tool.name,
        output=done.stdout.decode("utf-8", errors="replace"),
        stderr=done.stderr.decode("utf-8", errors="replace"),
        exit_code=None if done.cut else done.exit_code,
        truncated=done.cut,
        note=f"output cut at {tool.max_output} bytes; the tool was stopped" if done.cut else "",
        seconds=round(time.perf_counter() - start, 3),
    )


STOP_POLL_S = 0.1
"""How often a running tool checks whether its process was stopped."""

Ended = Literal["done", "timed_out", "stopped"]


def _until(deadline: float, stop: threading.Event | None, step: Callable[[float], bool]) -> Ended:
    """Call `step(seconds)` (wait at most that long; True once what it waits for is done) until
    it is done, `deadline` (monotonic) passes, or `stop` is set; done wins a tie."""
    while True:
        left = deadline - time.monotonic()
        if step(max(0.0, min(left, STOP_POLL_S))):
            return "done"
        if stop is not None and stop.is_set():
            return "stopped"
        if left <= 0:
            return "timed_out"


def _call_with_time_out(tool: Tool, args: dict[str, Any], stop: threading.Event) -> Any:
    """Call a Python tool in its own thread, waiting at most its time-out, or until `stop` is
    set (E_INTR). A thread cannot be killed: one past its time-out is left to finish in the
    background and its result dropped, while the caller gets E_TIMEOUT at once. What the tool
    raises is raised here."""
    assert tool.func is not None
    func = tool.func
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = func(**args)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"llmos-tool-{tool.name}", daemon=True)
    worker.start()

    def finished(seconds: float) -> bool:
        worker.join(seconds)
        return not worker.is_alive()

    ended = _until(time.monotonic() + tool.timeout, stop, finished)
    if ended == "stopped":
        raise LlmosError(
            ErrorCode.E_INTR,
            f"tool {tool.name} was stopped with its process; it finishes in the background "
            "and its result is dropped",
        )
    if ended == "timed_out":
        raise LlmosError(
            ErrorCode.E_TIMEOUT,
            f"tool {tool.name} ran longer than its {tool.timeout:g} s time-out; a Python tool "
            "cannot be killed, so it finishes in the background and its result is dropped",
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _cap_text(text: str, cap: int) -> tuple[str, bool]:
    """`text` cut to at most `cap` UTF-8 bytes, and whether it was cut."""
    data = text.encode()
    if len(data) <= cap:
        return text, False
    return data[:cap].decode("utf-8", errors="ignore"), True


def _word(value: Any) -> str:
    """One argument as the text of an argv element (JSON spelling for non-strings)."""
    return value if isinstance(value, str) else json.dumps(value)


def build_argv(
    template: list[str], args: dict[str, Any], *, options: Collection[str] = ()
) -> list[str]:
    """The argv for one run: each `{arg}` replaced by its value, never split or interpreted. An
    element that is exactly `{arg}` is left out when the argument is absent, and becomes one
    element per item when it is a list. E_INVAL when a value would begin an element with "-"
    (it would be read as an option: `--version`, `-rf`), unless its argument is in `options`."""
    argv = [template[0]]
    for part in template[1:]:
        lead = PLACEHOLDER.match(part)
        whole = PLACEHOLDER.fullmatch(part)
        if whole is not None:
            value = args.get(whole.group(1))
            if value is None:
                continue
            words = [_word(v) for v in value] if isinstance(value, list) else [_word(value)]
        else:
            words = [
                PLACEHOLDER.sub(lambda m: "" if args.get(m[1]) is None else _word(args[m[1]]), part)
            ]
        if lead is not None and lead[1] not in options:
            for word in words:
                if word.startswith("-"):
                    raise LlmosError(
                        ErrorCode.E_INVAL,
                        f"argument {lead[1]}={word!r} starts with '-' and would be read as an "
                        "option of the command; tools take no options from their arguments "
                        "(a schema lists the allowed ones with enum or const)",
                    )
        argv.extend(words)
    if any("\x00" in word for word in argv):
        raise LlmosError(ErrorCode.E_INVAL, "a tool argument contains a NUL byte")
    return argv


def _author_chosen(schema: Any) -> bool:
    """Whether a property's values are listed by the tool's author (enum/const, or an array
    of such), so one starting with "-" is an option the author meant."""
    if not isinstance(schema, dict):
        return False
    if "enum" in schema or "const" in schema:
        return True
    return schema.get("type") == "array" and _author_chosen(schema.get("items"))


def option_arguments(tool: Tool) -> set[str]:
    """The arguments whose values may begin with "-": those whose schema lists them."""
    props = tool.args.get("properties") or {}
    return {name for name, schema in props.items() if _author_chosen(schema)}


def _is_path(schema: Any) -> bool:
    """Whether a property is a workspace path (`"format": "path"`, or an array of them)."""
    if not isinstance(schema, dict):
        return False
    if schema.get("format") == "path":
        return True
    return schema.get("type") == "array" and _is_path(schema.get("items"))


def resolve_paths(tool: Tool, args: dict[str, Any], process: Process, cwd: Path) -> dict[str, Any]:
    """`args` with each path argument resolved in the workspace as fs paths are (E_PERM for
    `..`, `~`, absolute paths or symlinks leading outside, and llmos's own state) and written
    relative to the command's folder, starting with "." so it cannot be read as an option."""
    props = tool.args.get("properties") or {}
    resolved = dict(args)
    for name, schema in props.items():
        if not _is_path(schema) or args.get(name) is None:
            continue
        value = args[name]
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise LlmosError(ErrorCode.E_INVAL, f"tool {tool.name}: {name} must be a path")
        paths = [_workspace_path(process, item, cwd, f"tool {tool.name}: {name}") for item in items]
        resolved[name] = paths if isinstance(value, list) else paths[0]
    return resolved


def _workspace_path(process: Process, value: str, cwd: Path, shown: str) -> str:
    """One path argument as the command sees it: `./notes.txt`, `../data/x.csv` from a tool
    folder. The sandbox, not this check, is what holds while the command runs (a link swapped
    in later still leads nowhere it can reach)."""
    ws = process.workspace
    rel = ws.relpath(value)
    real = Path(os.path.realpath(ws.root / rel))
    if not real.is_relative_to(ws.root):
        raise LlmosError(ErrorCode.E_PERM, f"{shown}={value!r} leads outside the workspace")
    real_rel = real.relative_to(ws.root).as_posix()
    if ws.hides(rel) or ws.hides("" if real_rel == "." else real_rel):
        raise LlmosError(ErrorCode.E_PERM, f"{shown}={value!r}: llmos's own state is out of reach")
    word = os.path.relpath(real, cwd)
    return word if word.startswith(".") else f"./{word}"


def _sandbox_for(tool: Tool, process: Process, program: str, cwd: Path) -> Sandbox:
    """The walls for one run of a command tool: Landlock unless its manifest said `sandbox =
    false`; E_NOSYS, saying why, on a kernel without Landlock."""
    ws = process.workspace
    if not tool.sandbox:
        return Sandbox(ws.root, timeout=tool.timeout, landlock=False)
    found = os.path.join(cwd, program) if "/" in program else shutil.which(program)
    try:
        return Sandbox(
            ws.root,
            hidden=ws.hidden,
            program=found,
            network=tool.network,
            timeout=tool.timeout,
        )
    except LlmosError as exc:
        raise LlmosError(
            exc.code,
            f"tool {tool.name} not run: {exc.message}; a manifest may say sandbox = false to "
            "run it unsandboxed, with the user's full rights",
        ) from None


def _working_dir(process: Process, rel: str) -> Path:
    """The tool's folder inside the workspace, resolved (symlinks too) and checked to stay in.

    The folder is the app's declaration, not something the call names, so it is not a
    resource of the `tool.run` capability (which is scoped by tool name).
    """
    ws = process.workspace
    real = Path(os.path.realpath(ws.root / ws.relpath(rel)))
    if not real.is_relative_to(ws.root):
        raise LlmosError(ErrorCode.E_PERM, f"tool folder {rel}: leads outside the workspace")
    if not real.is_dir():
        raise LlmosError(ErrorCode.E_NOENT, f"tool folder {rel}: not a folder in the workspace")
    return real


@dataclass
class CommandOutcome:
    """How one command run ended."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None
    ended: Ended
    """"done", or killed at its time-out ("timed_out") or with its process ("stopped")."""
    cut: bool


def run_command(
    argv: list[str],
    cwd: Path,
    timeout: float,
    cap: int,
    *,
    stop: threading.Event | None = None,
    sandbox: Sandbox | None = None,
) -> CommandOutcome:
    """Run `argv` (no shell) in its own process group, inside `sandbox`'s walls when given; read
    at most `cap` bytes of stdout and stderr together. When the command exits, at its time-out,
    when the cap is reached, or when `stop` is set, the whole group is killed: a child it left
    behind (`sleep 60 &`) dies with it, and neither a hung tool nor an endless writer holds
    llmos up."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            env=None if sandbox is None else sandbox.env,
            preexec_fn=None if sandbox is None else sandbox.enter,
        )
    except FileNotFoundError:
        raise LlmosError(ErrorCode.E_NOENT, f"program {argv[0]!r} not found") from None
    except PermissionError:
        raise LlmosError(ErrorCode.E_PERM, f"program {argv[0]!r} is not executable") from None
    except subprocess.SubprocessError as exc:  # the sandbox could not be entered: nothing ran
        raise LlmosError(
            ErrorCode.E_INTERNAL, f"program {argv[0]!r} not run: the sandbox failed ({exc})"
        ) from None
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = time.monotonic() + timeout
    cut = False
    # A pidfd tells the leader's exit without reaping it: the group is killed while the zombie
    # still holds its id, so the kill can never reach a process that reused it.
    pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else -1
    exited = False
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        if pidfd >= 0:
            selector.register(pidfd, selectors.EVENT_READ)

        def take(fd: int) -> None:
            nonlocal cut
            chunk = os.read(fd, 65536)
            if not chunk:
                selector.unregister(fd)
                return
            room = cap - len(buffers[out_fd]) - len(buffers[err_fd])
            buffers[fd] += chunk[:room]
            cut = cut or len(chunk) > room

        def pipes_open() -> bool:
            return any(fd in buffers for fd in selector.get_map())

        def step(seconds: float) -> bool:
            nonlocal exited
            for key, _ in selector.select(seconds):
                if key.fd == pidfd:
                    exited = True
                    selector.unregister(pidfd)
                elif key.fd in selector.get_map():
                    take(key.fd)
            if pidfd < 0 and not pipes_open():
                exited = proc.poll() is not None
            if cut:
                return True
            if not exited:
                return False
            # Exited: what it wrote is still in the pipes; a child holding them open must not.
            while not cut and pipes_open() and (ready := selector.select(0)):
                for key, _ in ready:
                    if key.fd != pidfd and key.fd in selector.get_map():
                        take(key.fd)
            return True

        try:
            ended = _until(deadline, stop, step)
        finally:
            _kill_group(proc)
            if pidfd >= 0:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()
    return CommandOutcome(
        stdout=bytes(buffers[out_fd]),
        stderr=bytes(buffers[err_fd]),
        exit_code=proc.returncode,
        ended=ended,
        cut=cut,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole group (its children too), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
