"""Command tools inside the walls: path arguments stay in the workspace, no argument becomes an
option, and the sandbox keeps a command from the home, llmos's state, /tmp, the network, the
environment and the time after its end; a kernel without Landlock refuses unsandboxed runs."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llmos.config import Settings
from llmos.security import sandbox
from llmos.syscalls.context import Process
from llmos.syscalls.tool import ToolSpec, build_argv
from llmos.system import System

PY = sys.executable
PATH_ARGS = {
    "type": "object",
    "properties": {"path": {"type": "string", "format": "path"}},
    "required": ["path"],
}
TEXT_ARGS = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
walled = pytest.mark.skipif(sandbox.landlock_abi() < 1, reason="this kernel has no Landlock")


def run(system: System, proc: Process, name: str, **args: Any) -> Any:
    """Dispatch tool.run the way every caller does."""
    return system.dispatch(proc, {"call": "tool.run", "name": name, "args": args})


def shell(system: System, proc: Process, script: str, **spec: Any) -> Any:
    """Declare and run a one-off `sh -c SCRIPT` tool; its result."""
    name = f"sh{len(system.tools)}"
    system.tools.command(name, ["sh", "-c", script], "A script.", **spec)
    return run(system, proc, name)


@pytest.fixture
def tools_proc(system: System, workspace: Path) -> Process:
    """A process that may run every tool."""
    return system.spawn("t", workspace, patterns=["tool.*"], remembered=False)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the workspace (beside it, not the real home) holding a secret."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "secret.txt").write_text("the secret\n")
    return folder


def test_path_arguments_stay_in_the_workspace(
    system: System, tools_proc: Process, workspace: Path
) -> None:
    system.tools.command("head", ["head", "-c", "60", "{path}"], "File start.", args=PATH_ARGS)
    (workspace / "notes.txt").write_text("my notes\n")
    ok = run(system, tools_proc, "head", path="notes.txt")
    assert ok.ok and ok.value["output"] == "my notes\n", ok
    for bad in ("/etc/passwd", "../../../etc/hostname", "~/.bashrc", "a/../../x"):
        result = run(system, tools_proc, "head", path=bad)
        assert not result.ok and result.code == "E_PERM", bad
        assert "root:" not in str(result.value)
    (workspace / "link").symlink_to("/etc/hostname")
    assert run(system, tools_proc, "head", path="link").code == "E_PERM"


def test_a_path_is_handed_over_from_the_tool_folder_and_never_as_an_option(
    system: System, tools_proc: Process, workspace: Path
) -> None:
    (workspace / "sub").mkdir()
    (workspace / "--version").write_text("a file named like an option\n")
    system.tools.command("echo", ["echo", "{path}"], "Echo a path.", args=PATH_ARGS, cwd="sub")
    result = run(system, tools_proc, "echo", path="--version")
    assert result.ok and result.value["output"] == "../--version\n"
    system.tools.command("cat", ["cat", "{path}"], "Cat.", args=PATH_ARGS)
    result = run(system, tools_proc, "cat", path="--version")
    assert result.ok and result.value["output"] == "a file named like an option\n"


def test_a_string_starting_with_a_dash_never_becomes_an_option(
    system: System, tools_proc: Process
) -> None:
    system.tools.command("echo", ["echo", "{text}"], "Print.", args=TEXT_ARGS)
    result = run(system, tools_proc, "echo", text="--version")
    assert result.code == "E_INVAL" and "would be read as an option" in (result.message or "")
    assert run(system, tools_proc, "echo", text="a --version").ok, "not at the start: fine"
    listed = {
        "type": "object",
        "properties": {"mode": {"enum": ["-n", "-e"]}, "text": {"type": "string"}},
    }
    system.tools.command("echo2", ["echo", "{mode}", "{text}"], "Print.", args=listed)
    result = run(system, tools_proc, "echo2", mode="-n", text="x")
    assert result.ok and result.value["output"] == "x", "an option the schema lists is allowed"
    with pytest.raises(Exception, match="option"):
        build_argv(["grep", "{p}"], {"p": "-r"})
    assert build_argv(["grep", "-e", "{p}", "x={p}"], {"p": "-r"}, options={"p"})[2] == "-r"
    with pytest.raises(Exception, match="option"):
        build_argv(["head", "{n}"], {"n": -5})


def test_placeholders_in_shell_code_are_refused_and_positional_ones_run_sandboxed(
    system: System, tools_proc: Process, workspace: Path, outside: Path
) -> None:
    for command in (
        ["sh", "-c", "cat {path}"],
        ["bash", "-ec", "grep x {path}"],
        ["/usr/bin/env", "FOO=1", "python3", "-c", "print('{path}')"],
    ):
        with pytest.raises(ValidationError, match="positional parameter"):
            ToolSpec(description="x", command=command, args=PATH_ARGS)
    ToolSpec(description="x", command=["grep", "-e", "{path}"], args=PATH_ARGS)
    system.tools.command(
        "shcat", ["sh", "-c", 'cat -- "$1"', "sh", "{path}"], "Cat.", args=PATH_ARGS
    )
    (workspace / "a b; rm -rf x").write_text("odd name\n")
    result = run(system, tools_proc, "shcat", path="a b; rm -rf x")
    assert result.ok and result.value["output"] == "odd name\n"
    assert run(system, tools_proc, "shcat", path=str(outside / "secret.txt")).code == "E_PERM"


@walled
def test_a_sandboxed_command_reads_and_writes_nothing_outside(
    system: System, tools_proc: Process, workspace: Path, outside: Path
) -> None:
    result = shell(system, tools_proc, f"cat {outside}/secret.txt")
    assert result.ok and result.value["exit_code"] != 0
    assert "the secret" not in result.value["output"] and "denied" in result.value["stderr"]
    home = Path(os.environ["HOME"])  # the test's own home (conftest), not the real one
    home.mkdir(parents=True, exist_ok=True)
    (home / ".netrc").write_text("password hunter2\n")
    result = shell(system, tools_proc, f"cat {home}/.netrc; ls {home}")
    assert "hunter2" not in result.value["output"] and result.value["exit_code"] != 0
    target = outside / "made.txt"
    result = shell(system, tools_proc, f"touch {target}; echo x > {outside}/secret.txt")
    assert result.value["exit_code"] != 0 and not target.exists()
    assert (outside / "secret.txt").read_text() == "the secret\n"
    stray = Path("/tmp") / f"llmos-sandbox-test-{os.getpid()}"
    result = shell(system, tools_proc, f"touch {stray}")
    assert result.value["exit_code"] != 0 and not stray.exists(), "/tmp at large is closed"


@walled
def test_a_sandboxed_command_works_in_the_workspace_and_its_private_temp(
    system: System, tools_proc: Process, workspace: Path
) -> None:
    (workspace / "in").mkdir()
    script = (
        "echo made > in/out.txt && mkdir -p d/e && mv in/out.txt d/e/ && cat d/e/out.txt && "
        'echo t > "$TMPDIR/t" && cat "$TMPDIR/t" && [ "$HOME" = "$TMPDIR" ] && echo "$TMPDIR"'
    )
    result = shell(system, tools_proc, script)
    assert result.ok and result.value["exit_code"] == 0, result.value["stderr"]
    made, temp_line, temp = result.value["output"].splitlines()
    assert made == "made" and temp_line == "t"
    assert (workspace / "d/e/out.txt").read_text() == "made\n"
    assert not Path(temp).exists(), "the private temp folder is removed after the run"
    assert shell(system, tools_proc, "ulimit -n").value["output"].strip() == str(
        sandbox.SANDBOX_OPEN_FILES
    )


@walled
def test_the_environment_does_not_leak(
    system: System, tools_proc: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "tok-123")
    system.tools.command("env", ["env"], "Environment.")
    result = run(system, tools_proc, "env")
    names = {line.split("=", 1)[0] for line in result.value["output"].splitlines()}
    assert "tok-123" not in result.value["output"]
    assert names <= {"PATH", "LANG", "TMPDIR", "HOME", "PWD", "SHLVL", "_"}, names
    result = shell(system, tools_proc, "cat /proc/$PPID/environ /proc/1/environ")
    assert "tok-123" not in result.value["output"] and result.value["exit_code"] != 0


@walled
def test_llmos_home_inside_the_workspace_is_out_of_reach(tmp_path: Path) -> None:
    ws = tmp_path / "userhome"
    (ws / "docs").mkdir(parents=True)
    (ws / "top.txt").write_text("top\n")
    home = ws / ".llmos"
    with System(Settings(home=home), plugins=False) as system:
        proc = system.spawn("t", ws, patterns=["tool.*"], remembered=False)
        key = next(home.rglob("*.key"))
        result = shell(system, proc, f"cat {key}; ls .llmos; cat .llmos/audit.log")
        assert result.value["exit_code"] != 0 and result.value["output"] == ""
        result = shell(system, proc, f"ln -s {home} docs/h; cat docs/h/audit.log")
        assert result.value["output"] == ""
        result = shell(system, proc, "cat top.txt && echo new > docs/new.txt && cat docs/new.txt")
        assert result.value["output"] == "top\nnew\n", result.value["stderr"]
        system.tools.command("cat", ["cat", "{path}"], "Cat.", args=PATH_ARGS)
        assert run(system, proc, "cat", path=".llmos/audit.log").code == "E_PERM"


@walled
def test_children_die_with_the_command(system: System, tools_proc: Process) -> None:
    began = time.monotonic()
    result = shell(system, tools_proc, "sleep 60 >/dev/null 2>&1 & echo $!")
    assert time.monotonic() - began < 5, "a background child does not hold the run up"
    child = int(result.value["output"])
    assert not _alive(child), "the child left behind was killed with the group"
    result = shell(system, tools_proc, "sleep 60 & echo $! > pid; wait", timeout=1)
    assert result.code == "E_TIMEOUT"
    assert not _alive(int(Path(tools_proc.workspace.root, "pid").read_text()))
    result = shell(system, tools_proc, "setsid sleep 60")
    assert "not permitted" in result.value["stderr"], "no escape from the process group"


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    for _ in range(30):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ", 1)[1][0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True


@walled
def test_no_network_unless_declared(system: System, tools_proc: Process) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('in')"
        system.tools.command("dial", [PY, "-c", code], "Connect.")
        result = run(system, tools_proc, "dial")
        assert result.value["exit_code"] != 0 and "in" not in result.value["output"]
        assert "PermissionError" in result.value["stderr"]
        udp = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
        system.tools.command("udp", [PY, "-c", udp], "UDP.")
        assert run(system, tools_proc, "udp").value["exit_code"] != 0
        system.tools.command("dial2", [PY, "-c", code], "Connect.", network=True)
        result = run(system, tools_proc, "dial2")
        assert result.value["output"] == "in\n", result.value["stderr"]


def test_without_landlock_a_command_tool_refuses_unless_unsandboxed(
    system: System,
    tools_proc: Process,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    system.tools.command("cat", ["cat", f"{outside}/secret.txt"], "Cat.")
    result = run(system, tools_proc, "cat")
    assert result.code == "E_NOSYS" and "no Landlock" in (result.message or "")
    assert "sandbox = false" in (result.message or "")
    system.tools.command("cat2", ["cat", f"{outside}/secret.txt"], "Cat.", sandbox=False)
    result = run(system, tools_proc, "cat2")
    assert result.ok and result.value["output"] == "the secret\n", "unsandboxed, as declared"
