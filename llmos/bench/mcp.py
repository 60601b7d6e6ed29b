"""`llmos bench mcp`: what MCP costs a call, p50/p99 of `fs.stat` three ways: in-process through
dispatch, as a `tools/call` from the `mcp` SDK's client to `llmos mcp` (stdio, another process),
and as an llmos syscall of an MCP server (llmos's client to a server written with the SDK)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmos.bench.dispatch import percentile
from llmos.config import Settings
from llmos.system import System

ECHO_SERVER = '''
from mcp.server.mcpserver import MCPServer

app = MCPServer("bench")


@app.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


app.run()
'''


def _figures(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


def bench_mcp(n: int = 200) -> dict[str, Any]:
    """Time `n` calls each way in a scratch home and workspace; prints and returns figures."""
    import anyio
    from mcp import Client, StdioServerParameters

    out: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix="llmos-bench-mcp-") as tmp:
        home, ws = Path(tmp) / "home", Path(tmp) / "ws"
        ws.mkdir()
        (ws / "a.txt").write_text("hello\n")
        server = Path(tmp) / "echo_server.py"
        server.write_text(ECHO_SERVER)
        home.mkdir()
        (home / "config.toml").write_text(
            f'[mcp.servers.bench]\ncommand = ["{sys.executable}", "{server}"]\n'
            f'read = ["{server.parent}"]\n'
        )
        with System(Settings(home=home), plugins=False) as system:
            proc = system.spawn("bench", ws, patterns=["fs.*", "bench.*"])
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                system.dispatch(proc, {"call": "fs.stat", "path": "a.txt"})
                samples.append((time.perf_counter() - start) * 1000)
            out["dispatch"] = _figures(samples)
            start = time.perf_counter()
            first = system.dispatch(proc, {"call": "bench.echo", "text": "hi"})
            out["client_first_call_ms"] = (time.perf_counter() - start) * 1000
            if not first.ok:
                raise RuntimeError(f"bench.echo failed: {first.message}")
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                system.dispatch(proc, {"call": "bench.echo", "text": "hi"})
                samples.append((time.perf_counter() - start) * 1000)
            out["client"] = _figures(samples)
        env = {"LLMOS_HOME": str(home), "HOME": tmp, "PATH": os.environ.get("PATH", "")}
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "llmos", "mcp", "-w", str(ws)], env=env
        )
        timing: dict[str, Any] = {}

        async def talk() -> None:
            start = time.perf_counter()
            async with Client(params) as client:
                timing["connect_ms"] = (time.perf_counter() - start) * 1000
                await client.call_tool("fs.stat", {"path": "a.txt"})
                calls = []
                for _ in range(n):
                    begun = time.perf_counter()
                    await client.call_tool("fs.stat", {"path": "a.txt"})
                    calls.append((time.perf_counter() - begun) * 1000)
                timing["calls"] = calls

        anyio.run(talk)
        out["server"] = _figures(timing["calls"])
        out["server_connect_ms"] = timing["connect_ms"]
    print(f"MCP round trips, {n} calls each (ms):")
    print(
        f"  fs.stat in-process dispatch      p50 {out['dispatch']['p50_ms']:.3f}"
        f"   p99 {out['dispatch']['p99_ms']:.3f}"
    )
    print(
        f"  fs.stat via llmos mcp (SDK)      p50 {out['server']['p50_ms']:.3f}"
        f"   p99 {out['server']['p99_ms']:.3f}   (connect {out['server_connect_ms']:.0f})"
    )
    print(
        f"  bench.echo, an MCP server's tool p50 {out['client']['p50_ms']:.3f}"
        f"   p99 {out['client']['p99_ms']:.3f}   (first call, starting it:"
        f" {out['client_first_call_ms']:.0f})"
    )
    return out
