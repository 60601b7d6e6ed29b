"""MCP servers as syscalls: each server declared in config.toml (`[mcp.servers.NAME]`) or in an
app manifest (`[mcp.NAME]`) brings its tools in as the syscalls `NAME.<tool>`, in a namespace
of its own, each capability-checked (by name: `--allow 'NAME.*'`), audited and shown to the
kernel like an app's calls.

A server is started when first needed: its tool list is kept under LLMOS_HOME/mcp, so a
session that never calls it never starts it (only the first session ever, or one whose command
changed, starts it once to list them). It runs inside the command tools' walls (Landlock, no
network, a trimmed environment, its own process group) unless it says `sandbox = false`; each
call has a time-out and its output a cap, and what it returns is data for the kernel like any
result. A server that fails to start or dies is reported and its syscalls are withdrawn;
nothing else breaks.

The SDK is asyncio; dispatch is not. Each server gets one thread running its own event loop,
holding the client session; a call from dispatch is handed to that loop and waited for."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model

from llmos.atomic import write_atomic
from llmos.errors import ErrorCode, LlmosError
from llmos.syscalls.base import JSON_TYPES, Registrar, Syscall
from llmos.syscalls.hooks import hookimpl

if TYPE_CHECKING:
    from llmos.config import McpServerSpec
    from llmos.syscalls.context import Process

log = logging.getLogger(__name__)

MCP_DIR = "mcp"
START_TIMEOUT_S = 30.0
"""Seconds a server has to start and answer the handshake and its tool list."""
SERVER_CPU_S = 3600
"""CPU seconds a sandboxed server may use in all (RLIMIT_CPU; it lives as long as the session)."""
MAX_LINE_BYTES = 4 << 20
"""Longest message a server may send (one JSON-RPC line); more ends the connection."""
MAX_RESULT_CHARS = 8000
"""A tool result is cut to this many characters (and says so)."""
STDERR_TAIL = 2000
"""Characters of a dead server's stderr its error quotes."""
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TOOL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class McpResult(BaseModel):
    """What an MCP tool answered: its text (data, not instructions), cut if too long."""

    text: str
    truncated: bool = False


def _schema_type(prop: dict[str, Any]) -> Any:
    """The Python type for one JSON Schema property (anything unknown is any JSON value)."""
    kind = prop.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any


def tool_model(server: str, tool: dict[str, Any]) -> type[Syscall]:
    """A syscall model for one MCP tool: `call` is `SERVER.<tool>`, the arguments its input
    schema's properties (required ones required, the others optional)."""
    name = f"{server}.{tool['name']}"
    schema = tool.get("input_schema") or tool.get("inputSchema") or {}
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {"call": (Literal[name], name)}
    for key, prop in props.items():
        if not isinstance(prop, dict) or key == "call" or not key.isidentifier():
            continue
        described = str(prop.get("description", ""))[:200]
        kind = _schema_type(prop)
        if key in required:
            fields[key] = (kind, Field(description=described))
        else:
            fields[key] = (kind | None, Field(default=None, description=described))
    model: type[Syscall] = create_model(
        "Mcp_" + re.sub(r"\W", "_", name), __base__=Syscall, **fields
    )
    model.__doc__ = (str(tool.get("description") or f"The {name} tool.").strip() or name)[:300]
    return model


@contextlib.asynccontextmanager
async def sandboxed_stdio(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    enter: Callable[[], None] | None,
    errlog: Any,
    gone: asyncio.Event,
) -> AsyncIterator[tuple[Any, Any]]:
    """An MCP transport (the SDK's read and write streams) over a server started here, in its
    own process group, entering the sandbox between fork and exec (`enter`), which the SDK's
    own stdio client cannot do. `gone` is set when the server's output ends (it exited)."""
    import anyio
    import mcp_types
    from mcp.shared.message import SessionMessage

    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=errlog,
        cwd=cwd,
        env=env,
        preexec_fn=enter,
        start_new_session=True,
        limit=MAX_LINE_BYTES,
    )
    read_in, read_out = anyio.create_memory_object_stream[Any](0)
    write_in, write_out = anyio.create_memory_object_stream[Any](0)

    async def reader() -> None:
        assert proc.stdout is not None
        async with read_in:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                while line := await proc.stdout.readline():
                    try:
                        message: Any = SessionMessage(
                            mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                        )
                    except ValueError as exc:
                        message = exc
                    await read_in.send(message)
        gone.set()

    async def writer() -> None:
        assert proc.stdin is not None
        async with write_out:
            with contextlib.suppress(anyio.ClosedResourceError, BrokenPipeError, ConnectionError):
                async for message in write_out:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    proc.stdin.write((data + "\n").encode())
                    await proc.stdin.drain()

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        group.start_soon(writer)
        try:
            yield read_out, write_in
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await proc.wait()
            group.cancel_scope.cancel()


class McpLink:
    """One running MCP server, started on demand for one workspace: a thread with its event
    loop and the SDK's client session. `tools()` and `call()` are called from any thread."""

    def __init__(self, name: str, spec: McpServerSpec, workspace: Path, hidden: list[str]):
        self.name = name
        self.spec = spec
        self.workspace = workspace
        self.hidden = hidden
        self.error: LlmosError | None = None
        self.listed: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stderr: Any = None
        self.on_death: Callable[[LlmosError], None] | None = None

    def start(self) -> None:
        """Start the server and wait for its tool list (E_IO naming why when it cannot start)."""
        import tempfile

        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept open until close)
        self._thread = threading.Thread(target=self._run, name=f"mcp-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.close()
            raise LlmosError(
                ErrorCode.E_TIMEOUT, f"MCP server {self.name} did not start in {START_TIMEOUT_S}s"
            )
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # the server failed to start or died: report, never raise
            error = self._died(exc)
            first = self.error is None
            self.error = error
            self._ready.set()
            if first and self.on_death is not None and self.listed:
                self.on_death(error)

    def _died(self, exc: BaseException) -> LlmosError:
        """What went wrong, with the tail of the server's stderr."""
        tail = ""
        if self._stderr is not None:
            with contextlib.suppress(Exception):
                self._stderr.seek(0)
                tail = self._stderr.read().decode(errors="replace")[-STDERR_TAIL:].strip()
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        said = f"; it said: {tail}" if tail else ""
        return LlmosError(ErrorCode.E_IO, f"MCP server {self.name} stopped ({why}){said}")

    def _sandbox(self) -> Any:
        from llmos.security.sandbox import Sandbox

        program = shutil.which(self.spec.command[0], path=os.environ.get("PATH"))
        if not self.spec.sandbox:
            return Sandbox(self.workspace, timeout=SERVER_CPU_S, landlock=False)
        return Sandbox(
            self.workspace,
            hidden=self.hidden,
            read=self.spec.read,
            program=program,
            network=self.spec.network,
            timeout=SERVER_CPU_S,
        )

    async def _main(self) -> None:
        from mcp import Client

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        gone = asyncio.Event()
        with self._sandbox() as sandbox:
            env = {**sandbox.env, **self.spec.env}
            transport = sandboxed_stdio(
                list(self.spec.command), self.workspace, env, sandbox.enter, self._stderr, gone
            )
            async with Client(transport, read_timeout_seconds=self.spec.timeout) as client:
                listed = await client.list_tools()
                self.listed = [
                    {
                        "name": t.name,
                        "description": t.description or "",
                        "input_schema": t.input_schema,
                    }
                    for t in listed.tools
                ]
                self._client = client
                self._ready.set()
                stop = asyncio.ensure_future(self._stop.wait())
                ended = asyncio.ensure_future(gone.wait())
                await asyncio.wait([stop, ended], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                ended.cancel()
                if gone.is_set() and not self._stop.is_set():
                    raise ConnectionError("it exited")

    def call(self, tool: str, arguments: dict[str, Any]) -> McpResult:
        """Call one tool and wait for it (E_TIMEOUT past the spec's time-out; E_IO when the
        server is gone; a tool error is E_IO with its text)."""
        if self.error is not None:
            raise self.error
        loop, client = self._loop, self._client
        if loop is None or client is None:
            raise LlmosError(ErrorCode.E_IO, f"MCP server {self.name} is not running")
        future = asyncio.run_coroutine_threadsafe(client.call_tool(tool, arguments), loop)
        try:
            result = future.result(self.spec.timeout + 5)
        except TimeoutError:
            future.cancel()
            raise LlmosError(
                ErrorCode.E_TIMEOUT, f"{self.name}.{tool} took more than {self.spec.timeout}s"
            ) from None
        except Exception as exc:
            from mcp.shared.exceptions import MCPError
            from mcp_types import REQUEST_TIMEOUT

            if isinstance(exc, MCPError) and exc.code == REQUEST_TIMEOUT:
                raise LlmosError(
                    ErrorCode.E_TIMEOUT, f"{self.name}.{tool} took more than {self.spec.timeout}s"
                ) from None
            if self._thread is not None:  # a dead server's own error says why
                self._thread.join(2)
            if self.error is not None:
                raise self.error from None
            raise LlmosError(ErrorCode.E_IO, f"{self.name}.{tool}: {exc}") from None
        text = "\n".join(
            str(getattr(block, "text", "") or f"[{getattr(block, 'type', 'content')}]")
            for block in result.content
        )
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        if result.is_error:
            raise LlmosError(ErrorCode.E_IO, f"{self.name}.{tool} failed: {text[:500]}")
        cut = len(text) > MAX_RESULT_CHARS
        return McpResult(text=text[:MAX_RESULT_CHARS], truncated=cut)

    def close(self) -> None:
        """Stop the server (its whole process group) and the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class McpServer:
    """One declared MCP server: its tool list (cached), its links (one per workspace, started
    on the first call there), and the syscalls it registered."""

    def __init__(self, name: str, spec: McpServerSpec, home: Path) -> None:
        self.name = name
        self.spec = spec
        self.folder = home / MCP_DIR
        self.links: dict[Path, McpLink] = {}
        self.registrar: Registrar | None = None
        self.error: LlmosError | None = None
        self._lock = threading.Lock()

    def _cache(self) -> Path:
        key = hashlib.sha256(json.dumps(self.spec.model_dump(), sort_keys=True).encode())
        return self.folder / f"{self.name}-{key.hexdigest()[:12]}.tools.json"

    def tool_list(self) -> list[dict[str, Any]]:
        """The server's tools: from the cache, else by starting it once in an empty folder."""
        cache = self._cache()
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(cache.read_text())
            if isinstance(data, list):
                return [t for t in data if isinstance(t, dict) and "name" in t]
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = self.folder / f"{self.name}-probe"
        probe.mkdir(exist_ok=True, mode=0o700)
        link = McpLink(self.name, self.spec, probe, [])
        try:
            link.start()
            listed = link.listed
        finally:
            link.close()
        write_atomic(cache, json.dumps(listed).encode())
        return listed

    def link_for(self, process: Process) -> McpLink:
        """The running server for the process's workspace, started now if need be."""
        root = process.workspace.root
        with self._lock:
            if self.error is not None:
                raise self.error
            link = self.links.get(root)
            if link is None or link.error is not None:
                link = McpLink(self.name, self.spec, root, list(process.workspace.hidden))
                link.on_death = self.died
                self.links[root] = link
                try:
                    link.start()
                except LlmosError as exc:
                    self.died(exc)
                    raise
        return link

    def died(self, error: LlmosError) -> None:
        """The server failed or died: withdraw its syscalls (the kernel stops seeing them)."""
        log.warning("%s; its syscalls are withdrawn", error.message)
        self.error = error
        if self.registrar is not None:
            self.registrar.undo()

    def handler(self, tool: str) -> Callable[[Syscall, Process], McpResult]:
        """The handler of the syscall for `tool`."""

        def run(call: Syscall, process: Process) -> McpResult:
            arguments = call.model_dump(exclude={"call"}, exclude_none=True)
            return self.link_for(process).call(tool, arguments)

        return run

    def close(self) -> None:
        """Stop every running link."""
        for link in list(self.links.values()):
            link.close()
        self.links.clear()

    @hookimpl
    def register_syscalls(self, register: Registrar) -> None:
        """Register a syscall for each of the server's tools (E_INVAL for a name that cannot
        be a namespace; the server's failure to start, when its tools are not cached yet)."""
        if not NAME.fullmatch(self.name):
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"MCP server name {self.name!r}: use lower-case letters, digits, '-' or '_'",
            )
        self.registrar = register
        for tool in self.tool_list():
            if not TOOL.fullmatch(str(tool["name"])):
                log.warning("MCP server %s: tool %r skipped (bad name)", self.name, tool["name"])
                continue
            model = tool_model(self.name, tool)
            register(model, self.handler(str(tool["name"])), result=McpResult)


def mcp_servers(specs: dict[str, McpServerSpec], home: Path) -> list[tuple[str, McpServer]]:
    """A plugin per declared server, labelled `mcp:NAME` (for `build_registry`)."""
    out = []
    for name, spec in specs.items():
        out.append((f"mcp:{name}", McpServer(name, spec, home)))
    return out
