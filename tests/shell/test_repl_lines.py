"""The foreground never dies: every line the shell handles ends in a result or one error line,
and plain words that start with a control call's name ("reply to Bob") go to the kernel."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.shell.model import LazyKernel
from llmos.shell.repl import Shell, run_piped
from llmos.system import System
from llmos.testing import ScriptedBackend


def _shell(system: System, workspace: Path, outputs: list[Any] | None = None) -> Shell:
    kernel = None
    if outputs is not None:
        backend = ScriptedBackend(list(outputs))
        kernel = LazyKernel(system, lambda: backend)
    return Shell(system, workspace, grant=None, kernel=kernel)


@pytest.mark.parametrize("line", ["!", "! ", "!  "])
def test_a_bang_alone_is_a_clear_error(system: System, workspace: Path, line: str) -> None:
    shell = _shell(system, workspace)
    ok, text = shell.handle(line)
    assert not ok and text.startswith("E_INVAL: ! runs a syscall") and "\n" not in text
    assert shell.handle("fs.list")[0], "the shell goes on"


def test_bang_names_an_unknown_syscall(system: System, workspace: Path) -> None:
    ok, text = _shell(system, workspace).handle("!tidy up")
    assert not ok and text == "E_INVAL: no syscall 'tidy' (see :syscalls)"


def test_plain_words_starting_with_reply_or_ask_go_to_the_kernel(
    system: System, workspace: Path
) -> None:
    shell = _shell(
        system,
        workspace,
        [{"call": "reply", "text": "Drafted."}, {"call": "reply", "text": "Asked."}],
    )
    assert shell.handle("reply to the email from Bob") == (True, "Drafted.")
    assert shell.handle("ask mom about dinner") == (True, "Asked.")
    assert shell.conversation.turns[0].messages[0]["content"] == "reply to the email from Bob"


def test_reply_and_ask_still_run_directly_with_bang_or_key_value(
    system: System, workspace: Path
) -> None:
    shell = _shell(system, workspace, [])  # a kernel with nothing to say: not asked
    for line, text in [
        ("reply text=hi", "hi"),
        ("!reply hi there", "hi there"),
        ('!ask question="which file?"', "which file?"),
    ]:
        ok, shown = shell.handle(line)
        assert ok and text in shown, (line, shown)
    assert shell.conversation.turns == [], "none of them went to the kernel"
    (workspace / "n.txt").write_text("note")
    assert shell.handle("fs.read n.txt") == (True, "note"), "one required field, one bare word"


def test_an_exception_while_handling_a_line_is_one_error_line(
    system: System, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = _shell(system, workspace)

    def broken(*args: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(system, "dispatch", broken)
    ok, text = shell.handle("fs.list")
    assert not ok and "\n" not in text
    assert text.startswith("E_INTERNAL: unexpected error")
    assert "OperationalError: database is locked" in text and "(at test_repl_lines.py:" in text
    monkeypatch.undo()
    assert shell.handle("fs.list")[0], "the next line works"


def test_a_kernel_turn_that_breaks_is_closed_and_the_next_one_works(
    system: System, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = _shell(system, workspace, [{"call": "reply", "text": "Fine now."}])
    assert shell.kernel is not None
    kernel = shell.kernel.get()

    def broken_turn(process: Any, conversation: Any, request: str) -> Iterator[Any]:
        conversation.begin(request)
        raise ConnectionResetError("the model server went away")
        yield

    monkeypatch.setattr(kernel, "turn", broken_turn)
    ok, text = shell.handle("summarise my notes")
    assert not ok and "ConnectionResetError: the model server went away" in text
    assert shell.conversation.turns[-1].done, "the broken turn was closed"
    monkeypatch.undo()
    assert shell.handle("summarise my notes") == (True, "Fine now.")


def test_builtins_that_fail_do_not_escape(
    system: System, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = _shell(system, workspace)

    def broken(cap_id: str) -> None:
        raise PermissionError(13, "Permission denied", "revoked.json")

    monkeypatch.setattr(system.authority, "revoke", broken)
    ok, text = shell.handle(":caps revoke abc")
    assert not ok and "PermissionError" in text and "\n" not in text


def test_ctrl_c_and_leaving_still_reach_the_loop(
    system: System, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = _shell(system, workspace)
    with pytest.raises(EOFError):
        shell.handle(":quit")

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(system, "dispatch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shell.handle("fs.list")


def test_piped_input_goes_on_after_an_unexpected_error(
    system: System,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = system.dispatch
    calls: list[int] = []

    def first_breaks(process: Any, raw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(process, raw)

    monkeypatch.setattr(system, "dispatch", first_breaks)
    script = "!\nfs.list\nfs.write path=a.txt content=x\nfs.read a.txt\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert run_piped(system, workspace) == 1
    out, err = capsys.readouterr()
    assert out.endswith("}\nx\n"), "the lines after the failure ran"
    assert err.count("\n") == 2 and "E_INVAL: ! runs a syscall" in err and "boom" in err


def test_audit_shows_the_last_calls_and_the_verification(system: System, workspace: Path) -> None:
    shell = _shell(system, workspace)
    shell.handle('fs.write path=a.txt content="two words"')
    shell.handle("fs.read path=../escape")
    shell.handle("fs.stat path=a.txt")
    ok, text = shell.handle(":audit 2")
    assert ok, text
    first, second, verdict = text.splitlines()
    assert first.lstrip().startswith("#2 ") and f"shell[{shell.process.pid}]" in first
    assert "fs.read path=../escape" in first and first.endswith("→ E_PERM")
    assert "fs.stat path=a.txt" in second and second.endswith("→ ok")
    assert verdict == "audit log OK: 3 lines verified"
    ok, text = shell.handle(":audit")
    assert ok and "fs.write path=a.txt content='two words'" in text
    assert not shell.handle(":audit many")[0]


def test_audit_shows_digests_and_problems(system: System, workspace: Path) -> None:
    shell = _shell(system, workspace)
    shell.handle(f"fs.write path=big.txt content={'x' * 300}")
    ok, text = shell.handle(":audit 1")
    assert ok and "content=#" in text and "(300 chars)" in text
    path = system.audit.path
    path.write_bytes(path.read_bytes().replace(b"big.txt", b"bog.txt"))
    ok, text = shell.handle(":audit 1")
    assert not ok and "line 1: edited" in text and "FAILED verification" in text


def test_undo_takes_back_a_request_and_a_direct_call(system: System, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("mine\n")
    outputs = [
        {"call": "fs.write", "path": "notes.txt", "content": "the model's"},
        {"call": "reply", "text": "rewritten"},
    ]
    shell = _shell(system, workspace, outputs)
    assert shell.handle("rewrite notes.txt please")[0]
    assert shell.handle('fs.write path=new.txt content="x"')[0]
    ok, listed = shell.handle(":undo list")
    assert ok and "rewrite notes.txt please" in listed and "fs.write path=new.txt" in listed
    ok, text = shell.handle(":undo")
    assert ok and "removed new.txt" in text and not (workspace / "new.txt").exists()
    ok, text = shell.handle(":undo")
    assert ok and "restored notes.txt" in text, text
    assert (workspace / "notes.txt").read_text() == "mine\n"
    ok, text = shell.handle(":undo")
    assert not ok and text.startswith("E_NOENT: nothing to undo")
    assert not shell.handle(":undo now")[0]
