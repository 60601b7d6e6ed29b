"""MCP servers as syscalls: a real MCP server written with the `mcp` package
(tests/data/mcp/demo_server.py) declared in config.toml, started sandboxed when first needed,
its tools registered as `demo.<tool>`, checked, audited, timed out, and withdrawn when it dies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode
from llmos.kernel.loop import Conversation, Kernel
from llmos.kernel.prompt import extras_prompt, system_prompt
from llmos.syscalls.context import Process
from llmos.system import System
from llmos.testing import ScriptedBackend

pytest.importorskip("mcp")

SERVER = Path(__file__).resolve().parents[1] / "data" / "mcp" / "demo_server.py"


def declare(home: Path, name: str = "demo", command: list[str] | None = None, **more: str) -> None:
    """Declare an MCP server in `home`'s config.toml."""
    argv = command or [sys.executable, str(SERVER)]
    lines = [
        f'[mcp.servers."{name}"]',
        "command = [" + ", ".join(f'"{a}"' for a in argv) + "]",
        f'read = ["{SERVER.parent}"]',
        "timeout = 5",
        *(f"{k} = {v}" for k, v in more.items()),
    ]
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "config.toml", "a") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.fixture
def mcp_system(llmos_home: Path) -> System:
    declare(llmos_home)
    with System(Settings(), plugins=False) as system:
        yield system


def spawn(system: System, workspace: Path) -> Process:
    return system.spawn("t", workspace, patterns=["demo.*", "fs.*", "reply", "ask"])


def test_the_servers_tools_become_syscalls_of_its_own_namespace(
    mcp_system: System, workspace: Path
) -> None:
    registry = mcp_system.registry
    assert {"demo.echo", "demo.add", "demo.notes", "demo.crash"} <= set(registry.names())
    assert "demo.echo" not in registry.core, "after the cached prompt, like an app's calls"
    assert "demo.echo" in extras_prompt(registry) and "demo.echo" not in system_prompt(registry)
    add = registry.get("demo.add")
    assert add is not None and add.description == "Add two whole numbers."
    proc = spawn(mcp_system, workspace)
    result = mcp_system.dispatch(proc, {"call": "demo.add", "a": 2, "b": 40})
    assert result.ok and result.value["text"] == "42"
    bad = mcp_system.dispatch(proc, {"call": "demo.add", "a": "two", "b": 40})
    assert not bad.ok and bad.code is ErrorCode.E_INVAL, "checked against the tool's schema"


def test_a_call_needs_its_capability_and_is_audited(mcp_system: System, workspace: Path) -> None:
    bare = mcp_system.spawn("bare", workspace, patterns=["fs.read"])
    refused = mcp_system.dispatch(bare, {"call": "demo.echo", "text": "hi"})
    assert not refused.ok and refused.code is ErrorCode.E_PERM and "demo.echo" in refused.message
    ok = mcp_system.dispatch(spawn(mcp_system, workspace), {"call": "demo.echo", "text": "hi"})
    assert ok.ok and ok.value["text"] == "hi"
    logged = [(e.call, e.ok) for e in mcp_system.audit.tail(5)]
    assert ("demo.echo", False) in logged and ("demo.echo", True) in logged


def test_the_server_is_started_when_first_needed_and_works_in_the_workspace(
    llmos_home: Path, workspace: Path, tmp_path: Path
) -> None:
    declare(llmos_home)
    with System(Settings(), plugins=False) as first:
        assert "demo.echo" in first.registry  # listed once (started, listed, stopped)
    (workspace / "mine.txt").write_text("x")
    secret = tmp_path / "secret.txt"
    secret.write_text("the neighbours' wifi key")
    with System(Settings(), plugins=False) as system:
        server = dict(system.mcp)["mcp:demo"]
        assert "demo.echo" in system.registry and not server.links, "from the cache: not started"
        proc = spawn(system, workspace)
        notes = system.dispatch(proc, {"call": "demo.notes"})
        assert notes.ok and notes.value["text"] == "mine.txt", "it runs in the caller's workspace"
        leak = system.dispatch(proc, {"call": "demo.leak", "path": str(secret)})
        assert not leak.ok and "wifi key" not in leak.message, "the sandbox keeps it inside"
        assert list(server.links) == [workspace.resolve()]


def test_a_slow_call_times_out_and_a_dead_server_is_withdrawn(
    mcp_system: System, workspace: Path
) -> None:
    proc = spawn(mcp_system, workspace)
    slow = mcp_system.dispatch(proc, {"call": "demo.slow", "seconds": 30})
    assert not slow.ok and slow.code is ErrorCode.E_TIMEOUT
    crash = mcp_system.dispatch(proc, {"call": "demo.crash"})
    assert not crash.ok and crash.code is ErrorCode.E_IO and "demo" in crash.message
    assert "demo.echo" not in mcp_system.registry, "its syscalls are withdrawn"
    again = mcp_system.dispatch(proc, {"call": "demo.echo", "text": "hi"})
    assert not again.ok
    (workspace / "a.txt").write_text("still here")
    assert mcp_system.dispatch(proc, {"call": "fs.stat", "path": "a.txt"}).ok, "nothing else broke"


def test_a_server_that_cannot_start_is_reported_and_nothing_else_breaks(
    llmos_home: Path, workspace: Path
) -> None:
    declare(llmos_home, "broken", [sys.executable, "-c", "import sys; sys.exit(2)"])
    declare(llmos_home, "Bad Name")
    with System(Settings(), plugins=False) as system:
        failed = system.plugins.failed
        assert "E_IO" in failed["mcp:broken"] and "E_INVAL" in failed["mcp:Bad Name"]
        assert not [n for n in system.registry.names() if n.startswith("broken.")]
        proc = spawn(system, workspace)
        (workspace / "a.txt").write_text("x")
        assert system.dispatch(proc, {"call": "fs.stat", "path": "a.txt"}).ok


def test_a_tools_answer_reaches_the_kernel_as_a_result_not_an_instruction(
    mcp_system: System, workspace: Path
) -> None:
    backend = ScriptedBackend([{"call": "demo.instruct"}, {"call": "reply", "text": "A note."}])
    kernel = Kernel(mcp_system, backend)
    events = list(kernel.turn(spawn(mcp_system, workspace), Conversation(), "what's the note?"))
    assert [e.kind for e in events][-1] == "reply"
    last = backend.prompts[-1]
    holding = [m for m in last if "IGNORE ALL PREVIOUS" in m["content"]]
    assert holding and all(
        m["role"] != "system" and m["content"].startswith("RESULT") for m in holding
    )


def test_llmos_call_runs_an_mcp_tool(llmos_home: Path, workspace: Path) -> None:
    declare(llmos_home)
    env = {**os.environ, "LLMOS_HOME": str(llmos_home)}
    command = [sys.executable, "-m", "llmos", "-w", str(workspace), "call", "demo.echo"]
    done = subprocess.run(
        [*command, "text=hello", "--allow", "demo.*"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello"


def test_an_app_manifest_brings_its_own_mcp_server_for_its_run(
    system: System, tmp_path: Path, workspace: Path
) -> None:
    """`[mcp.NAME]` in a manifest: approved with the app (the command and its walls shown),
    its tools callable as NAME.<tool> during the run, gone after it."""
    from llmos.apps.manifest import parse_manifest, run_app

    manifest = parse_manifest(
        f"""
name = "greeter"

[mcp.hello]
command = ["{sys.executable}", "{SERVER}"]
read = ["{SERVER.parent}"]

[[steps]]
call = "hello.echo"
text = "hi from the app"
"""
    )
    asked: list[str] = []

    def approve(m: object, needs: list) -> bool:
        asked.extend(n.describe() for n in needs)
        return True

    shown: list[str] = []
    run = run_app(
        system, manifest, tmp_path / "app.toml", workspace, {}, approve=approve, show=shown.append
    )
    assert run.ok, run.message
    assert any("hi from the app" in line for line in shown)
    assert asked == [f"hello.* (the MCP server {sys.executable} {SERVER}, sandboxed)"]
    assert "hello.echo" not in system.registry, "the app's server is gone with its run"
