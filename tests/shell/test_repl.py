"""The shell in direct-call mode: lines, built-ins, pipes, and grant prompts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llmos.security.capabilities import GrantAnswer, GrantRequest
from llmos.shell.grants import parse_answer
from llmos.shell.repl import Shell
from llmos.system import System
from llmos.testing import ScriptedBackend


def test_direct_calls_and_builtins(system: System, workspace: Path) -> None:
    shell = Shell(system, workspace, grant=None)
    ok, text = shell.handle('fs.write path=a.txt content="two words"')
    assert ok, text
    assert (workspace / "a.txt").read_text() == "two words"
    ok, text = shell.handle("!fs.read path=a.txt")
    assert ok and text == "two words"
    ok, text = shell.handle("fs.read path=../escape")
    assert not ok and text.startswith("E_PERM")
    ok, text = shell.handle("please tidy my files")
    assert not ok and "direct-call mode" in text
    ok, text = shell.handle(":caps")
    assert ok and "fs.read" in text and "fs.delete" not in text
    ok, text = shell.handle(":audit")
    assert ok and "3 lines verified" in text
    ok, text = shell.handle(":bogus")
    assert not ok


def test_grant_prompt_answers_flow_into_capabilities(system: System, workspace: Path) -> None:
    asked: list[GrantRequest] = []

    def grant(request: GrantRequest) -> GrantAnswer:
        asked.append(request)
        return GrantAnswer.SESSION

    shell = Shell(system, workspace, grant=grant)
    shell.process.caps.caps.clear()
    ok, _ = shell.handle("fs.write path=x.txt content=1")
    assert ok and len(asked) == 1 and asked[0].call == "fs.write"
    ok, _ = shell.handle("fs.write path=x.txt content=2")
    assert ok and len(asked) == 1, "a session grant is not asked for again"


def test_answers_are_parsed_like_denos_prompt() -> None:
    assert parse_answer("o") is GrantAnswer.ONCE
    assert parse_answer(" Session ") is GrantAnswer.SESSION
    assert parse_answer("a") is GrantAnswer.ALWAYS
    assert parse_answer("") is GrantAnswer.DENY
    assert parse_answer("maybe") is None


def test_piped_input_runs_line_by_line(workspace: Path) -> None:
    script = "fs.write path=p.txt content=piped\nfs.read path=p.txt\nfs.read path=nope.txt\n"
    proc = subprocess.run(
        [sys.executable, "-m", "llmos.cli"],
        cwd=workspace,
        input=script,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert proc.returncode == 1, "a failed line makes the status non-zero"
    assert proc.stdout.endswith("\npiped\n")
    assert "E_NOENT" in proc.stderr
    assert (workspace / "p.txt").read_text() == "piped"


def test_requests_go_to_the_kernel_and_steps_are_shown(system: System, workspace: Path) -> None:
    from llmos.shell.model import LazyKernel

    (workspace / "server.cfg").write_text("port = 9090\n")
    backend = ScriptedBackend(
        [
            {"call": "fs.read", "path": "server.cfg"},
            {"call": "reply", "text": "It uses port 9090."},
        ]
    )
    shown: list[tuple[str, bool]] = []
    shell = Shell(
        system,
        workspace,
        grant=None,
        kernel=LazyKernel(system, lambda: backend),
        emit=lambda text, ok: shown.append((text, ok)),
    )
    ok, text = shell.handle("what port does server.cfg use?")
    assert ok and text == "It uses port 9090."
    assert shown[0][0].startswith("→ fs.read path=server.cfg")
    assert "port = 9090" in shown[1][0]
    ok, text = shell.handle("fs.stat path=server.cfg")
    assert ok and '"type": "file"' in text, "syscall lines still run directly"


def test_a_model_that_fails_to_load_gives_a_clear_error(system: System, workspace: Path) -> None:
    from llmos.errors import ErrorCode, LlmosError
    from llmos.shell.model import LazyKernel

    def broken() -> ScriptedBackend:
        raise LlmosError(ErrorCode.E_NOENT, "model file /nowhere.gguf does not exist")

    shell = Shell(system, workspace, grant=None, kernel=LazyKernel(system, broken))
    ok, text = shell.handle("hello")
    assert not ok and text.startswith("E_NOENT") and "/nowhere.gguf" in text


def test_mem_shows_the_pager_and_resume_continues_the_conversation(
    system: System, workspace: Path
) -> None:
    from llmos.shell.model import LazyKernel

    backend = ScriptedBackend(
        [
            {"call": "reply", "text": "Nice to meet you, Ada."},
            {"call": "reply", "text": "You are Ada."},
        ]
    )
    kernel = LazyKernel(system, lambda: backend)
    shell = Shell(system, workspace, grant=None, kernel=kernel)
    assert shell.handle("hi, I am Ada") == (True, "Nice to meet you, Ada.")
    ok, text = shell.handle(":mem")
    assert ok and "context:" in text and "resident: 1 turn(s), 1-1" in text
    assert "paged out: nothing yet" in text
    again = Shell(system, workspace, grant=None, kernel=kernel, resume=True)
    assert [t.request for t in again.conversation.turns] == ["hi, I am Ada"]
    assert again.handle("who am I?") == (True, "You are Ada.")
    assert again.conversation.turns[-1].number == 2
    assert any("hi, I am Ada" in m["content"] for m in backend.prompts[-1])


def test_resume_with_nothing_to_resume_is_a_clear_error(workspace: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmos.cli", "--direct", "--resume", "-w", str(workspace)],
        input="fs.list\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "E_NOENT: there is no saved session to resume" in proc.stderr


def test_builtins_for_caps_model_apps_and_processes(system: System, workspace: Path) -> None:
    from llmos.shell.model import LazyKernel

    (workspace / "old").mkdir()
    (workspace / "old" / "x.txt").write_text("x")
    (workspace / "keep.txt").write_text("k")
    kernel = LazyKernel(system, lambda: ScriptedBackend([]))
    shell = Shell(system, workspace, grant=None, kernel=kernel)
    assert not shell.handle("fs.delete path=old/x.txt")[0], "no grant, no one to ask"
    ok, text = shell.handle(":caps grant fs.delete on old")
    assert ok and text.startswith("granted fs.delete on old")
    assert shell.handle("fs.delete path=old/x.txt")[0]
    assert not shell.handle("fs.delete path=keep.txt")[0], "the grant is scoped to old/"
    assert shell.handle(":caps grant fs.delete on ../etc")[1].startswith("E_PERM")
    assert shell.handle(":caps grant no.such")[1].startswith("E_INVAL")
    kernel.get()
    ok, text = shell.handle(":model")
    assert ok and "model scripted" in text and "context 4096 tokens" in text
    ok, text = shell.handle(":apps")
    assert ok and text.startswith("loaded: (no plugin apps)") and "tools: (none)" in text
    ok, text = shell.handle(":ps")
    assert ok and str(shell.process.pid) in text and str(workspace) in text


def test_completion_offers_workspace_paths_only(tmp_path: Path) -> None:
    from llmos.shell.terminal import workspace_paths

    root = tmp_path / "ws"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "todo.md").write_text("")
    (root / "nova.txt").write_text("")
    (root / ".secret").write_text("")
    assert workspace_paths(root, "no") == ["notes/", "nova.txt"]
    assert workspace_paths(root, "notes/t") == ["notes/todo.md"]
    assert workspace_paths(root, "") == ["notes/", "nova.txt"], "hidden files only when asked"
    assert workspace_paths(root, ".s") == [".secret"]
    assert workspace_paths(root, "../") == [] and workspace_paths(root, "/etc/pa") == []


def test_steps_are_coloured_by_kind() -> None:
    from llmos.shell.terminal import paint

    assert paint("→ fs.read path=a", True).startswith("\033[36m")
    assert paint("  port = 9090", True).startswith("\033[2m")
    assert paint("E_PERM: no", False) == "\033[31m✗ E_PERM: no\033[0m"
    assert paint("The port is 9090.", True) == "The port is 9090."
