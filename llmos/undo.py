"""`llmos undo` and the shell's `:undo`: list the journal's change sets, restore one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmos.security.journal import ChangeSetInfo, Restored, describe, iter_changes
from llmos.security.workspace import Workspace
from llmos.system import System


def list_lines(system: System, workspace: Path, most: int = 20) -> list[str]:
    """The workspace's latest change sets, newest first, one line each."""
    ws = Workspace(workspace, hidden=[system.settings.home])
    try:
        sets = system.journal.sets_of(ws)
    finally:
        ws.close()
    if not sets:
        return [f"no change to undo in {ws.root}"]
    return [describe(info) for info in reversed(sets[-most:])]


def undo(
    system: System,
    workspace: Path,
    number: int | None,
    confirm: Callable[[ChangeSetInfo, list[str]], bool] | None,
) -> list[str]:
    """Restore change set `number` (or the last one not undone) of `workspace`, once
    `confirm` (shown the set and what it changed) agrees; None confirms. Returns what
    happened, a line a path, and records it in the audit trail."""
    ws = Workspace(workspace, hidden=[system.settings.home])
    try:
        info = system.journal.get(number, ws)
        if confirm is not None and not confirm(info, list(iter_changes(info))):
            return ["undo cancelled; nothing changed"]
        info, done = system.journal.undo(info.id, ws)
    finally:
        ws.close()
    system.audit.record(
        pid=0,
        process="undo",
        call="undo",
        args={"set": info.id},
        ok=all(r.action != "left" for r in done),
        code=None,
        resources=[r.path for r in done],
    )
    return [f"undid change set {info.id} ({info.label}):", *map(_line, done)]


def _line(done: Restored) -> str:
    if done.action == "restored":
        return f"  restored {done.path}"
    if done.action == "removed":
        return f"  removed {done.path} (the change had made it)"
    return f"  left {done.path}: {done.reason}"


def confirm_on_terminal(info: ChangeSetInfo, changes: list[str]) -> bool:
    """Ask on the terminal whether to undo `info`, after showing what it changed."""
    print(describe(info))
    for line in changes:
        print(f"  {line}")
    try:
        answer = input("undo these changes? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
