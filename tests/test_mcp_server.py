"""`llmos mcp`: the syscall table as MCP tools, driven by the `mcp` package's own client over a
real stdio connection to a real `llmos mcp` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from llmos.security.audit import tail_log

mcp = pytest.importorskip("mcp")

Session = Callable[[Any], Awaitable[None]]


def talk(workspace: Path, home: Path, body: Session, *extra: str) -> None:
    """Start `llmos mcp -w workspace` as an MCP client would, and run `body` on the client."""
    from mcp import Client, StdioServerParameters

    env = {"LLMOS_HOME": str(home), "HOME": str(home.parent), "PATH": os.environ["PATH"]}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "llmos", "mcp", "-w", str(workspace), *extra],
        env=env,
    )

    async def main() -> None:
        async with Client(params, read_timeout_seconds=60) as client:
            await body(client)

    anyio.run(main)


def test_an_mcp_client_lists_the_syscalls_and_calls_one(workspace: Path, llmos_home: Path) -> None:
    (workspace / "notes.txt").write_text("hello\n")
    seen: dict[str, Any] = {}

    async def body(client: Any) -> None:
        listed = await client.list_tools()
        seen["tools"] = {t.name: t for t in listed.tools}
        seen["stat"] = await client.call_tool("fs.stat", {"path": "notes.txt"})

    talk(workspace, llmos_home, body)
    tools = seen["tools"]
    assert {"fs.read", "fs.stat", "mem.search", "calc"} <= set(tools)
    assert "reply" not in tools and "ask" not in tools, "they only end a kernel's turn"
    schema = tools["fs.read"].input_schema
    assert schema["required"] == ["path"] and "call" not in schema["properties"]
    assert tools["fs.read"].description.startswith("Read")
    stat = seen["stat"]
    assert not stat.is_error
    assert json.loads(stat.content[0].text)["size"] == 6
    assert stat.structured_content["path"] == "notes.txt"
    logged = [(e.process, e.call, e.ok) for e in tail_log(llmos_home / "audit.log", 10)]
    assert ("mcp", "fs.stat", True) in logged, "the call went through dispatch and the audit"


def test_a_call_beyond_the_clients_capabilities_is_a_tool_error_naming_it(
    workspace: Path, llmos_home: Path
) -> None:
    (workspace / "keep.txt").write_text("mine\n")
    seen: dict[str, Any] = {}

    async def body(client: Any) -> None:
        seen["delete"] = await client.call_tool("fs.delete", {"path": "keep.txt"})
        seen["outside"] = await client.call_tool("fs.read", {"path": "/etc/hostname"})

    talk(workspace, llmos_home, body)
    assert seen["delete"].is_error
    assert seen["delete"].content[0].text.startswith("E_PERM") and "fs.delete" in (
        seen["delete"].content[0].text
    )
    assert (workspace / "keep.txt").exists()
    assert seen["outside"].is_error and seen["outside"].content[0].text.startswith("E_")


def test_a_capability_approved_once_is_held_by_later_clients(
    workspace: Path, llmos_home: Path
) -> None:
    (workspace / "old.txt").write_text("x\n")
    command = [sys.executable, "-m", "llmos", "mcp", "-w", str(workspace), "--allow", "fs.delete"]
    env = {**os.environ, "LLMOS_HOME": str(llmos_home)}
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--yes" in refused.stderr, "not approved: nothing served"
    approved = subprocess.run(
        [*command, "--yes", "--approve-only"], env=env, capture_output=True, text=True, timeout=60
    )
    assert approved.returncode == 0, approved.stderr
    seen: dict[str, Any] = {}

    async def body(client: Any) -> None:
        seen["delete"] = await client.call_tool("fs.delete", {"path": "old.txt"})

    talk(workspace, llmos_home, body)
    assert not seen["delete"].is_error, seen["delete"].content[0].text
    assert not (workspace / "old.txt").exists()


def test_bench_mcp_measures_all_three_ways() -> None:
    from llmos.bench.mcp import bench_mcp

    figures = bench_mcp(n=3)
    for way in ("dispatch", "server", "client"):
        assert figures[way]["p50_ms"] > 0
    assert figures["server"]["p50_ms"] > figures["dispatch"]["p50_ms"], "a process away costs"
