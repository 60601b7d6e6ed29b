"""Undo: every file a call changes is journaled first, and a change set restores exactly what
it changed, never a file changed since."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.security.journal import JOURNAL_FILE_BYTES
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System
from llmos.undo import list_lines, undo


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (its bytes), folder ("dir") and link ("-> target") below `root`."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


@pytest.fixture
def run(system: System, proc: Process) -> Any:
    def call(name: str, **args: Any) -> SyscallResult:
        result = system.dispatch(proc, {"call": name, **args})
        assert result.ok, result.render()
        return result

    return call


@pytest.fixture
def files(workspace: Path) -> Path:
    (workspace / "notes.txt").write_text("one\ntwo\n")
    (workspace / "todo.md").write_text("- eggs\n")
    (workspace / "docs").mkdir()
    (workspace / "docs" / "a.md").write_text("alpha\n")
    (workspace / "docs" / "b.md").write_text("beta\n")
    os.symlink("a.md", workspace / "docs" / "link")
    return workspace


@pytest.mark.parametrize(
    "calls",
    [
        [("fs.write", {"path": "notes.txt", "content": "hi"})],
        [("fs.append", {"path": "todo.md", "text": "milk"})],
        [("fs.edit", {"path": "notes.txt", "old": "two", "new": "2"})],
        [("fs.move", {"src": "todo.md", "dst": "notes.txt", "overwrite": True})],
        [("fs.copy", {"src": "todo.md", "dst": "notes.txt", "overwrite": True})],
        [("fs.copy", {"src": "todo.md", "dst": "backup/todo.md"})],
        [("fs.delete", {"path": "notes.txt"})],
        [("fs.delete", {"path": "docs", "recursive": True})],
        [("fs.delete", {"path": "docs/*.md"})],
        [("fs.move", {"src": "docs", "dst": "archive/docs"})],
        [("fs.move", {"src": "docs/*.md", "dst": "done"})],
        [("fs.write", {"path": "new/deep.txt", "content": "x"})],
    ],
    ids=lambda calls: " ".join(f"{n}" for n, _ in calls),
)
def test_undo_restores_what_one_call_changed(
    system: System, run: Any, files: Path, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    before = tree(files)
    for name, args in calls:
        run(name, **args)
    assert tree(files) != before
    lines = undo(system, files, None, None)
    assert lines[0].startswith("undid change set")
    after = tree(files)
    made = {k for k in after if k not in before}
    assert {k: v for k, v in after.items() if k not in made} == before, lines
    assert all(after[k] == "dir" for k in made), "only folders the call made may stay"


def test_a_read_only_call_leaves_no_change_set(system: System, run: Any, files: Path) -> None:
    run("fs.read", path="notes.txt")
    run("fs.list", path=".")
    run("fs.copy", src="notes.txt", dst="copy.txt")
    [only] = system.journal.sets()
    assert [c.path for c in only.changes] == ["copy.txt"], "the copy's source is not kept"


def test_a_file_changed_since_is_left_alone(system: System, run: Any, files: Path) -> None:
    run("fs.write", path="notes.txt", content="by the model")
    (files / "notes.txt").write_text("by the person, later")
    lines = undo(system, files, None, None)
    assert any("left notes.txt: changed since" in line for line in lines), lines
    assert (files / "notes.txt").read_text() == "by the person, later"


def test_a_change_set_groups_the_calls_of_a_turn(
    system: System, proc: Process, run: Any, files: Path
) -> None:
    before = tree(files)
    proc.changes = system.journal.begin("turn: tidy up", proc.workspace)
    run("fs.write", path="notes.txt", content="1")
    run("fs.write", path="notes.txt", content="2")
    run("fs.move", src="todo.md", dst="done/todo.md")
    system.journal.end(proc.changes)
    proc.changes = None
    run("fs.append", path="docs/a.md", text="later")
    assert system.journal.sets()[0].label == "turn: tidy up"
    undo(system, files, None, None)  # the later direct call first
    assert (files / "docs" / "a.md").read_text() == "alpha\n"
    lines = undo(system, files, None, None)
    assert "tidy up" in lines[0]
    assert {k: v for k, v in tree(files).items() if k != "done"} == before
    with pytest.raises(LlmosError) as nothing:
        undo(system, files, None, None)
    assert nothing.value.code is ErrorCode.E_NOENT


def test_a_set_is_undone_once_and_only_in_its_workspace(
    system: System, run: Any, files: Path, tmp_path: Path
) -> None:
    run("fs.write", path="notes.txt", content="x")
    number = system.journal.sets()[-1].id
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(LlmosError) as wrong:
        undo(system, other, number, None)
    assert wrong.value.code is ErrorCode.E_INVAL
    undo(system, files, number, None)
    with pytest.raises(LlmosError) as twice:
        undo(system, files, number, None)
    assert twice.value.code is ErrorCode.E_EXISTS
    assert "(undone)" in list_lines(system, files)[0]


def test_a_cancelled_undo_changes_nothing(system: System, run: Any, files: Path) -> None:
    run("fs.write", path="notes.txt", content="x")
    shown: list[str] = []

    def refuse(info: Any, changes: list[str]) -> bool:
        shown.extend(changes)
        return False

    assert undo(system, files, None, refuse) == ["undo cancelled; nothing changed"]
    assert shown == ["fs.write notes.txt: file -> file"]
    assert (files / "notes.txt").read_text() == "x"


def test_the_oldest_sets_are_dropped_and_the_person_told(llmos_home: Path, workspace: Path) -> None:
    with System(Settings(home=llmos_home, journal_max_mb=1), plugins=False) as system:
        proc = system.spawn("t", workspace, patterns=["fs.*"])
        for i in range(4):
            (workspace / "big.bin").write_bytes(bytes([i]) * 400_000)
            assert system.dispatch(proc, {"call": "fs.write", "path": "big.bin", "content": "x"}).ok
        notices = system.journal.take_notices()
        assert notices and "dropped" in notices[0] and "1 MiB" in notices[0]
        assert system.journal.take_notices() == [], "told once"
        kept = system.journal.sets()
        assert 1 <= len(kept) < 4
        undo(system, workspace, None, None)
        assert (workspace / "big.bin").read_bytes() == bytes([3]) * 400_000


def test_a_file_too_big_to_save_is_reported_not_lost_silently(
    system: System, run: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llmos.security.journal.JOURNAL_FILE_BYTES", 10)
    assert JOURNAL_FILE_BYTES > 10
    (workspace / "big.txt").write_text("more than ten bytes\n")
    run("fs.write", path="big.txt", content="x")
    lines = undo(system, workspace, None, None)
    assert any("left big.txt: not saved (over" in line for line in lines), lines


def test_a_call_killed_mid_way_can_still_be_undone(
    system: System, proc: Process, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmos.syscalls.fs as fs_mod

    real = fs_mod.write_atomic_at

    def dies(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(fs_mod, "write_atomic_at", dies)
    with pytest.raises(KeyboardInterrupt):
        system.dispatch(proc, {"call": "fs.write", "path": "notes.txt", "content": "half"})
    assert (files / "notes.txt").read_text() == "half"
    [line] = system.audit.tail(1)
    assert (line.call, line.ok, line.code) == ("fs.write", False, "E_INTR"), "audited anyway"
    undo(system, files, None, None)
    assert (files / "notes.txt").read_text() == "one\ntwo\n"


def test_llmos_undo_command(workspace: Path, llmos_home: Path) -> None:
    (workspace / "notes.txt").write_text("keep me\n")
    env = {**os.environ, "LLMOS_HOME": str(llmos_home)}

    def llmos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llmos.cli", "-w", str(workspace), *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    wrote = llmos("call", "fs.write", "path=notes.txt", "content=gone")
    assert wrote.returncode == 0, wrote.stderr
    listed = llmos("undo", "--list")
    assert "fs.write path=notes.txt" in listed.stdout
    refused = llmos("undo")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert (workspace / "notes.txt").read_text() == "gone"
    done = llmos("undo", "--yes")
    assert done.returncode == 0, done.stderr
    assert "restored notes.txt" in done.stdout
    assert (workspace / "notes.txt").read_text() == "keep me\n"


def test_a_kernel_turn_is_one_change_set(system: System, proc: Process, files: Path) -> None:
    from llmos.kernel.loop import Conversation, Kernel
    from llmos.testing import ScriptedBackend

    before = tree(files)
    backend = ScriptedBackend(
        [
            {"call": "fs.write", "path": "notes.txt", "content": "rewritten"},
            {"call": "fs.append", "path": "todo.md", "text": "milk"},
            {"call": "reply", "text": "done"},
        ]
    )
    request = "rewrite notes.txt and add milk to todo.md"
    events = list(Kernel(system, backend).turn(proc, Conversation(), request))
    assert events[-1].kind == "reply", [e.text for e in events]
    assert proc.changes is None, "the turn closed its change set"
    [turn] = system.journal.sets()
    assert turn.label == request
    assert sorted(c.path for c in turn.changes) == ["notes.txt", "todo.md"]
    undo(system, files, None, None)
    assert tree(files) == before


def test_an_app_run_is_one_change_set(system: System, workspace: Path) -> None:
    from llmos.apps.manifest import Manifest, run_app

    (workspace / "a.txt").write_text("a\n")
    manifest = Manifest.model_validate(
        {
            "name": "tidy",
            "capabilities": ["fs.write", "fs.append"],
            "steps": [
                {"call": "fs.write", "path": "a.txt", "content": "A"},
                {"call": "fs.append", "path": "a.txt", "text": "more"},
                {"call": "fs.write", "path": "b.txt", "content": "B"},
            ],
        }
    )
    run = run_app(
        system,
        manifest,
        workspace / "tidy.toml",
        workspace,
        {},
        approve=lambda *a: True,
        show=lambda line: None,
    )
    assert run.ok
    [app] = system.journal.sets()
    assert app.label == "app tidy"
    assert [(c.path, c.call) for c in app.changes] == [
        ("a.txt", "fs.write, fs.append"),
        ("b.txt", "fs.write"),
    ]
    undo(system, workspace, None, None)
    assert (workspace / "a.txt").read_text() == "a\n" and not (workspace / "b.txt").exists()
