"""llmos's own state (LLMOS_HOME) is out of reach of every syscall, whatever capabilities a
process holds, also when it lies inside the workspace (as with `cd ~ && llmos`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System


def _tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` and its bytes: what must not change (but the audit trail,
    which records each refusal, and the undo journal, which records the workspace's changes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.is_symlink()
        and not p.name.startswith("audit.log")
        and p.relative_to(root).parts[0] != "journal"
    }


@pytest.fixture(params=[".llmos", "config/llmos"])
def inside(request: pytest.FixtureRequest, workspace: Path) -> Iterator[tuple[System, Path]]:
    """A system whose LLMOS_HOME lies inside the workspace: a dot folder (the default home
    when the workspace is ~) or a plain folder deeper down."""
    home = workspace / request.param
    with System(Settings(home=home), plugins=False) as system:
        yield system, home


@pytest.fixture
def everything(inside: tuple[System, Path], workspace: Path) -> Process:
    """A process holding every capability there is."""
    system, _ = inside
    return system.spawn("all", workspace, patterns=["*"])


def run(inside: tuple[System, Path], proc: Process, **call: Any) -> SyscallResult:
    return inside[0].dispatch(proc, call)


def test_state_files_cannot_be_read_written_or_copied_out(
    inside: tuple[System, Path], everything: Process, workspace: Path
) -> None:
    _, home = inside
    rel = home.relative_to(workspace).as_posix()
    (home / "config.toml").write_text('default_caps = ["reply"]\n')
    keys = [p.relative_to(workspace).as_posix() for p in home.rglob("*.key")]
    assert keys, "the system made its key under LLMOS_HOME"
    before = _tree(home)
    attempts: list[dict[str, Any]] = [
        {"call": "fs.write", "path": f"{rel}/config.toml", "content": 'default_caps = ["*"]'},
        {"call": "fs.write", "path": f"{rel}/new.toml", "content": "x"},
        {"call": "fs.append", "path": f"{rel}/config.toml", "text": 'default_caps = ["*"]'},
        {"call": "fs.edit", "path": f"{rel}/config.toml", "old": "reply", "new": "*"},
        {"call": "fs.read", "path": keys[0]},
        {"call": "fs.copy", "src": keys[0], "dst": "stolen.key"},
        {"call": "fs.move", "src": keys[0], "dst": "stolen.key"},
        {"call": "fs.delete", "path": keys[0]},
        {"call": "fs.stat", "path": rel},
        {"call": "fs.list", "path": rel},
        {"call": "fs.mkdir", "path": f"{rel}/grants"},
        {"call": "fs.delete", "path": rel, "recursive": True},
        {"call": "fs.move", "src": rel, "dst": "elsewhere"},
        {"call": "fs.search", "query": "default_caps", "path": rel},
    ]
    for call in attempts:
        result = run(inside, everything, **call)
        assert result.code is ErrorCode.E_PERM, (call, result)
        assert "llmos's own state" in (result.message or ""), call
    assert _tree(home) == before
    assert not (workspace / "stolen.key").exists() and not (workspace / "elsewhere").exists()


def test_a_folder_holding_the_state_cannot_be_moved_or_deleted_whole(
    inside: tuple[System, Path], everything: Process, workspace: Path
) -> None:
    _, home = inside
    before = _tree(home)
    top = home.relative_to(workspace).parts[0]
    if top != home.name:  # config/llmos: config holds the state
        for call in (
            {"call": "fs.delete", "path": top, "recursive": True},
            {"call": "fs.move", "src": top, "dst": "moved"},
        ):
            result = run(inside, everything, **call)
            assert result.code is ErrorCode.E_PERM, (call, result)
    (workspace / "junk.txt").write_text("x")
    run(inside, everything, call="fs.delete", path="*", recursive=True)
    assert _tree(home) == before, "a pattern leaves the state out"


def test_walks_leave_the_state_out(
    inside: tuple[System, Path], everything: Process, workspace: Path
) -> None:
    _, home = inside
    (home / "notes.txt").write_text("secret-in-state needle\n")
    (workspace / "mine.txt").write_text("needle of mine\n")
    listing = run(inside, everything, call="fs.list", path=".", recursive=True)
    assert listing.ok and isinstance(listing.value, dict)
    paths = [e["path"] for e in listing.value["entries"]]
    assert "mine.txt" in paths
    home_rel = home.relative_to(workspace).as_posix()
    assert not any(p == home_rel or p.startswith(home_rel + "/") for p in paths), paths
    found = run(inside, everything, call="fs.search", query="needle")
    assert found.ok and isinstance(found.value, dict)
    assert [h["path"] for h in found.value["hits"]] == ["mine.txt"]


def test_a_symlink_into_the_state_is_refused(
    inside: tuple[System, Path], everything: Process, workspace: Path
) -> None:
    _, home = inside
    os.symlink(home, workspace / "door")
    os.symlink(home / "config.toml", workspace / "cfg")
    for call in (
        {"call": "fs.write", "path": "door/config.toml", "content": "x"},
        {"call": "fs.write", "path": "cfg", "content": "x"},
        {"call": "fs.read", "path": "cfg"},
        {"call": "fs.list", "path": "door"},
    ):
        result = run(inside, everything, **call)
        assert result.code is ErrorCode.E_PERM, (call, result)
    assert not (home / "config.toml").exists() or (home / "config.toml").read_text() != "x"


def test_a_workspace_inside_the_state_is_refused(settings: Settings, system: System) -> None:
    inner = settings.home / "memory-copy"
    inner.mkdir(parents=True)
    with pytest.raises(LlmosError) as caught:
        system.spawn("x", inner)
    assert caught.value.code is ErrorCode.E_PERM
    assert "another folder" in caught.value.message


def test_a_home_outside_the_workspace_hides_nothing(system: System, workspace: Path) -> None:
    proc = system.spawn("x", workspace, patterns=["*"])
    assert proc.workspace.hidden == ()
    (workspace / ".llmos").mkdir()  # a folder of that name that is not the state is the user's
    assert system.dispatch(proc, {"call": "fs.write", "path": ".llmos/a.txt", "content": "1"}).ok
