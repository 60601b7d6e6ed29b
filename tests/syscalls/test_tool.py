"""The tool family: declared tools run through dispatch, bounded in time and output, without a
shell, in the workspace, and only when the process holds `tool.run` for that tool's name."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llmos.kernel.prompt import system_prompt
from llmos.syscalls.context import Process
from llmos.syscalls.tool import Tool, ToolSpec, build_argv
from llmos.system import System

ECHO_ARGS = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
    "required": ["text"],
    "additionalProperties": False,
}
PY = sys.executable


def run(system: System, proc: Process, name: str, **args: Any) -> Any:
    """Dispatch tool.run the way every caller does."""
    return system.dispatch(proc, {"call": "tool.run", "name": name, "args": args})


@pytest.fixture
def tools_proc(system: System, workspace: Path) -> Process:
    """A process that may run every tool."""
    return system.spawn("t", workspace, patterns=["tool.*"], remembered=False)


def test_no_tools_no_tool_family_and_the_core_prompt_never_changes(system: System) -> None:
    before = system_prompt(system.registry)
    assert "tool.run" not in system.registry and "tool.list" not in system.registry
    system.tools.command("echo", ["echo", "{text}"], "Print text.", args=ECHO_ARGS)
    assert "tool.run" in system.registry and "tool.list" in system.registry
    assert "tool.run" not in system.registry.core
    assert system_prompt(system.registry) == before
    spec = system.registry.get("tool.run")
    assert spec is not None and "echo(text, count?): Print text." in spec.description
    system.tools.remove("echo")
    assert "tool.run" not in system.registry


def test_command_tool_runs_without_a_shell(
    system: System, tools_proc: Process, workspace: Path
) -> None:
    system.tools.command("echo", ["echo", "{text}"], "Print text.", args=ECHO_ARGS)
    (workspace / "x").write_text("keep me")
    nasty = "; rm -rf x && echo $HOME `id` | cat"
    result = run(system, tools_proc, "echo", text=nasty)
    assert result.ok, result.message
    assert result.value["output"] == nasty + "\n", "the argument reached echo as one literal word"
    assert result.value["exit_code"] == 0 and not result.value["truncated"]
    assert (workspace / "x").read_text() == "keep me"


def test_arguments_are_validated_against_the_schema(system: System, tools_proc: Process) -> None:
    system.tools.command("echo", ["echo", "{text}"], "Print text.", args=ECHO_ARGS)
    result = run(system, tools_proc, "echo", text=5)
    assert not result.ok and result.code == "E_INVAL"
    assert "tool echo" in (result.message or "") and "text: 5 is not of type 'string'" in (
        result.message or ""
    )
    result = run(system, tools_proc, "echo")
    assert result.code == "E_INVAL" and "'text' is a required property" in (result.message or "")
    result = run(system, tools_proc, "echo", text="a", count=0)
    assert result.code == "E_INVAL" and "count:" in (result.message or "")
    result = run(system, tools_proc, "echo", text="a", extra=1)
    assert result.code == "E_INVAL" and "extra" in (result.message or "")
    assert run(system, tools_proc, "nope").code == "E_NOENT"


def test_time_out_kills_the_whole_process_group(
    system: System, tools_proc: Process, workspace: Path
) -> None:
    marker = workspace / "child.pid"  # in the workspace: the sandboxed tool writes nowhere else
    script = (
        "import subprocess, sys, time;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(marker)!r}, 'w').write(str(c.pid));"
        "time.sleep(60)"
    )
    system.tools.command("hang", [PY, "-c", script], "Hang.", timeout=3.0)
    start = time.monotonic()
    result = run(system, tools_proc, "hang")
    assert time.monotonic() - start < 10
    assert not result.ok and result.code == "E_TIMEOUT"
    assert "3 s time-out" in (result.message or "")
    child = int(marker.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child), "the tool's child process was killed with its group"


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_output_is_capped_and_the_endless_writer_is_stopped(
    system: System, tools_proc: Process
) -> None:
    endless = "import sys\nwhile True: sys.stdout.write('y' * 4096)"
    system.tools.command("yes", [PY, "-c", endless], "Endless output.", max_output=10_000)
    start = time.monotonic()
    result = run(system, tools_proc, "yes")
    assert time.monotonic() - start < 10, "stopped at the cap, not at the time-out"
    assert result.ok and result.value["truncated"] is True
    assert len(result.value["output"]) == 10_000
    assert "cut at 10000 bytes" in result.value["note"]
    assert result.value["exit_code"] is None


def test_python_tool_output_is_capped(system: System, tools_proc: Process) -> None:
    def shout(text: str) -> str:
        """Shout."""
        return text.upper() * 100

    system.tools.function(shout, args=ECHO_ARGS, max_output=50)
    result = run(system, tools_proc, "shout", text="ab")
    assert result.ok and result.value["output"] == "AB" * 25 and result.value["truncated"]
    assert result.value["exit_code"] is None


def test_python_tool_has_a_time_out_and_its_errors_come_back(
    system: System, tools_proc: Process
) -> None:
    import threading

    release = threading.Event()

    def stuck() -> str:
        """Never returns on its own."""
        release.wait(30)
        return "late"

    def broken() -> str:
        """Raises."""
        raise ValueError("disk on fire")

    system.tools.function(stuck, timeout=0.3)
    system.tools.function(broken)
    began = time.monotonic()
    result = run(system, tools_proc, "stuck")
    assert time.monotonic() - began < 5
    assert result.code == "E_TIMEOUT" and "0.3 s time-out" in (result.message or "")
    release.set()
    result = run(system, tools_proc, "broken")
    assert result.code == "E_INTERNAL" and "disk on fire" in (result.message or "")
    assert run(system, tools_proc, "stuck").ok, "the tool runs again once released"


def test_a_stopped_process_stops_its_running_tool(
    system: System, tools_proc: Process, workspace: Path
) -> None:
    import threading

    pidfile = workspace / "child.pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    system.tools.command("slow", [PY, "-c", script], "Sleep a minute.", timeout=120)
    release = threading.Event()

    def stuck() -> str:
        """Never returns on its own."""
        release.wait(60)
        return "late"

    system.tools.function(stuck, timeout=120)
    try:
        for name in ("slow", "stuck"):
            tools_proc.stop.clear()
            threading.Timer(0.5, tools_proc.stop.set).start()
            began = time.monotonic()
            result = run(system, tools_proc, name)
            assert time.monotonic() - began < 10, name
            assert result.code == "E_INTR" and "stopped" in (result.message or ""), result
        pid = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the command's process is gone, not left running
    finally:
        release.set()


def test_working_dir_is_the_workspace_and_stays_inside(
    system: System, tools_proc: Process, workspace: Path, tmp_path: Path
) -> None:
    system.tools.command("pwd", [PY, "-c", "import os; print(os.getcwd())"], "Where am I.")
    result = run(system, tools_proc, "pwd")
    assert result.ok and result.value["output"].strip() == os.path.realpath(workspace)
    (workspace / "sub").mkdir()
    system.tools.command("pwd2", [PY, "-c", "import os; print(os.getcwd())"], "Sub.", cwd="sub")
    result = run(system, tools_proc, "pwd2")
    assert result.value["output"].strip() == os.path.realpath(workspace / "sub")
    (workspace / "out").symlink_to(tmp_path)
    system.tools.command("pwd3", ["pwd"], "Escapes.", cwd="out")
    result = run(system, tools_proc, "pwd3")
    assert result.code == "E_PERM" and "outside the workspace" in (result.message or "")
    system.tools.command("pwd4", ["pwd"], "Escapes.", cwd="../")
    assert run(system, tools_proc, "pwd4").code == "E_PERM"


def test_tool_run_is_scoped_by_tool_name(system: System, workspace: Path) -> None:
    system.tools.command("echo", ["echo", "{text}"], "Print text.", args=ECHO_ARGS)
    system.tools.command("pwd", ["pwd"], "Where am I.")
    proc = system.spawn("app", workspace, patterns=["tool.list"], remembered=False)
    proc.caps.add(system.authority.mint("tool.run", scope="echo"))
    assert run(system, proc, "echo", text="hi").ok
    denied = run(system, proc, "pwd")
    assert denied.code == "E_PERM" and "tool.run on pwd" in (denied.message or "")
    listed = system.dispatch(proc, {"call": "tool.list"})
    assert [t["name"] for t in listed.value["tools"]] == ["echo"]


def test_missing_program_and_bad_declarations(system: System, tools_proc: Process) -> None:
    system.tools.command("ghost", ["/no/such/program-xyz"], "Missing.")
    result = run(system, tools_proc, "ghost")
    assert result.code == "E_NOENT" and "not found" in (result.message or "")
    with pytest.raises(ValidationError, match="cannot be a"):
        ToolSpec(description="x", command=["{prog}"], args=ECHO_ARGS)
    with pytest.raises(ValidationError, match=r"args\.properties lacks"):
        ToolSpec(description="x", command=["echo", "{nope}"])
    with pytest.raises(ValidationError, match="exactly one"):
        Tool(name="t", description="x")
    with pytest.raises(ValidationError, match="Input should be less than or equal"):
        ToolSpec(description="x", command=["true"], timeout=10_000)
    with pytest.raises(ValidationError, match="valid JSON Schema"):
        ToolSpec(description="x", command=["true"], args={"type": "object", "required": 3})
    with pytest.raises(Exception, match="already declared"):
        system.tools.command("ghost", ["true"], "Again.")


def test_build_argv_keeps_each_value_one_word() -> None:
    template = ["grep", "-n", "{flag}", "--", "{pattern}", "{files}", "x={pattern}"]
    argv = build_argv(template, {"pattern": "a b; c", "files": ["f 1", "f2"]})
    assert argv == ["grep", "-n", "--", "a b; c", "f 1", "f2", "x=a b; c"]
