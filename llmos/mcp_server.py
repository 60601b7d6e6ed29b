"""`llmos mcp`: the syscall table as MCP tools, over stdio, for any MCP client (an editor, a chat
UI, another agent). Each tool is one registered syscall: its name, its description and the JSON
Schema of its arguments come from the same pydantic model the kernel's prompt uses, and each
`tools/call` goes through the one dispatch path (validate, authorize, run, audit).

The client is one process of the kernel on the workspace `llmos mcp -w DIR` was started in. It
holds the shell's default capabilities there, plus what was approved for MCP clients on that
workspace (`--allow PATTERN --yes`, once, remembered); a call beyond them is a tool error that
names the capability it lacks. Nothing here asks a person anything: stdin is the protocol."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.errors import ErrorCode, LlmosError
from llmos.security.capabilities import GrantStore

if TYPE_CHECKING:
    import mcp_types

    from llmos.syscalls.base import Registry, SyscallResult
    from llmos.syscalls.context import Process
    from llmos.system import System

MCP_DIR = "mcp"
GRANTS_FILE = "clients.grants.json"


def client_grants(system: System) -> GrantStore:
    """Where what was approved for MCP clients is kept, per workspace."""
    folder = system.settings.ensure_home() / MCP_DIR
    folder.mkdir(exist_ok=True, mode=0o700)
    return GrantStore(folder / GRANTS_FILE, system.authority)


def mcp_process(system: System, workspace: Path, allow: Iterable[str], *, yes: bool) -> Process:
    """The MCP client's process: the shell's defaults plus the approved patterns. A pattern in
    `allow` not yet approved is approved (and remembered) with `yes`; E_PERM without it."""
    store = client_grants(system)
    root = Path(workspace).resolve()
    held = store.load(root)
    new = [p for p in dict.fromkeys(allow) if not any(c.call == p for c in held)]
    if new and not yes:
        raise LlmosError(
            ErrorCode.E_PERM,
            f"not approved for MCP clients on {root}: {', '.join(new)}; approve them once with "
            "`llmos mcp -w DIR --allow PATTERN --yes`",
        )
    for pattern in new:
        cap = system.authority.mint(pattern)
        store.save(root, cap)
        held.append(cap)
    process = system.spawn("mcp", root, patterns=system.settings.default_caps, remembered=False)
    for cap in held:
        process.caps.add(cap)
    return process


def input_schema(model: type[Any]) -> dict[str, Any]:
    """A syscall's arguments as a JSON Schema object (its `call` tag left out: the tool's name
    says it)."""
    schema = model.model_json_schema()
    properties = {k: v for k, v in schema.get("properties", {}).items() if k != "call"}
    out: dict[str, Any] = {"type": "object", "properties": properties}
    required = [k for k in schema.get("required", []) if k != "call"]
    if required:
        out["required"] = required
    if "$defs" in schema:
        out["$defs"] = schema["$defs"]
    return out


def tools(registry: Registry) -> list[mcp_types.Tool]:
    """Every registered syscall as an MCP tool, in the table's order, less the two that only
    end a kernel's turn (`reply`, `ask`: an MCP client talks to its own person)."""
    import mcp_types

    from llmos.kernel.loop import ENDS_TURN

    return [
        mcp_types.Tool(
            name=spec.name, description=spec.description, input_schema=input_schema(spec.model)
        )
        for spec in registry.specs()
        if spec.name not in ENDS_TURN
    ]


def tool_result(result: SyscallResult) -> mcp_types.CallToolResult:
    """A dispatch result as an MCP tool result: the value as JSON text (and structured), or an
    error whose text starts with the stable code."""
    import mcp_types

    if result.ok:
        value = json.loads(result.model_dump_json()).get("value")
        structured = value if isinstance(value, dict) else {"value": value}
        text = json.dumps(value, ensure_ascii=False)
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=text)],
            structured_content=structured,
            is_error=False,
        )
    text = f"{result.code}: {result.message}"
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)], is_error=True
    )


def build_server(system: System, process: Process) -> Any:
    """The MCP server (the `mcp` package's low-level `Server`) over `system` for `process`."""
    import anyio.to_thread
    import mcp_types
    from mcp.server.lowlevel import Server

    from llmos import __version__

    async def list_tools(ctx: Any, params: Any) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=tools(system.registry))

    async def call_tool(ctx: Any, params: mcp_types.CallToolRequestParams) -> Any:
        raw = {"call": params.name, **(params.arguments or {})}
        result = await anyio.to_thread.run_sync(system.dispatch, process, raw)
        return tool_result(result)

    return Server(
        "llmos",
        version=__version__,
        instructions="The syscalls of llmos, run in one workspace under its capabilities.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def serve_stdio(system: System, process: Process) -> None:
    """Serve MCP on stdin/stdout until the client closes the connection."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(system, process)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)
