"""The fs syscall family through the one dispatch path: results, limits and every error code."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import llmos.syscalls.fs as fs_mod
import llmos.syscalls.fs_search as search_mod
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.memory.embedder import Embedder
from llmos.memory.files import FileIndex
from llmos.syscalls.base import SyscallResult, existing_kind
from llmos.syscalls.context import Process
from llmos.syscalls.services import FileHit, FileSearchResult, ScanReport
from llmos.system import System


@pytest.fixture
def call(system: System, proc: Process) -> Any:
    """Dispatch one call for the default process: call("fs.read", path="x")."""

    def run(name: str, **args: Any) -> SyscallResult:
        return system.dispatch(proc, {"call": name, **args})

    return run


def ok(result: SyscallResult) -> dict[str, Any]:
    """The value of a successful result (fails the test with the message otherwise)."""
    assert result.ok, f"{result.code}: {result.message}"
    assert isinstance(result.value, dict)
    return result.value


def err(result: SyscallResult, code: ErrorCode) -> None:
    """Assert that a result failed with exactly `code` and carries no value."""
    assert not result.ok, f"expected {code}, got success {result.value}"
    assert result.code is code, f"expected {code}, got {result.code}: {result.message}"
    assert result.value is None
    assert result.message


def names(folder: Path) -> list[str]:
    """Sorted entry names of a host folder."""
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- fs.read


def test_read_whole_file(call: Any, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("hello\nworld\n")
    value = ok(call("fs.read", path="notes.txt"))
    assert value == {
        "path": "notes.txt",
        "text": "hello\nworld\n",
        "size": 12,
        "lines": 2,
        "words": 2,
        "offset": 0,
        "bytes_read": 12,
        "truncated": False,
        "next_offset": None,
    }


@pytest.mark.parametrize("path", ["/notes.txt", "./notes.txt", ".//notes.txt", "notes.txt/"])
def test_read_slash_and_dot_prefixes_mean_the_workspace_file(
    call: Any, workspace: Path, path: str
) -> None:
    (workspace / "notes.txt").write_text("mine")
    value = ok(call("fs.read", path=path))
    assert value["text"] == "mine"
    assert value["path"] == "notes.txt"


def test_read_absolute_path_under_workspace_real_path(call: Any, proc: Process) -> None:
    root = proc.workspace.root
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("deep")
    value = ok(call("fs.read", path=f"{root}/sub/notes.txt"))
    assert value["text"] == "deep"
    assert value["path"] == "sub/notes.txt"
    assert ok(call("fs.list", path=str(root)))["path"] == "."


def test_read_in_subfolder(call: Any, workspace: Path) -> None:
    (workspace / "docs" / "a").mkdir(parents=True)
    (workspace / "docs" / "a" / "x.md").write_text("# x")
    assert ok(call("fs.read", path="docs/a/x.md"))["text"] == "# x"


def test_read_offset_and_limit(call: Any, workspace: Path) -> None:
    (workspace / "n.txt").write_text("0123456789")
    first = ok(call("fs.read", path="n.txt", offset=3, limit=4))
    assert first["text"] == "3456"
    assert first["offset"] == 3
    assert first["bytes_read"] == 4
    assert first["truncated"] is True
    assert first["next_offset"] == 7
    rest = ok(call("fs.read", path="n.txt", offset=7))
    assert rest["text"] == "789"
    assert rest["truncated"] is False
    assert rest["next_offset"] is None
    assert rest["size"] == 10


def test_read_offset_past_end_is_empty(call: Any, workspace: Path) -> None:
    (workspace / "n.txt").write_text("abc")
    value = ok(call("fs.read", path="n.txt", offset=100))
    assert value["text"] == ""
    assert value["bytes_read"] == 0
    assert value["truncated"] is False


def test_read_empty_file(call: Any, workspace: Path) -> None:
    (workspace / "empty.txt").write_bytes(b"")
    value = ok(call("fs.read", path="empty.txt"))
    assert value["text"] == ""
    assert value["size"] == 0
    assert value["truncated"] is False


def test_read_truncates_at_byte_cap(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_mod, "MAX_READ_BYTES", 10)
    text = "abcdefghijklmnopqrstuvwxy"
    (workspace / "big.txt").write_text(text)
    first = ok(call("fs.read", path="big.txt"))
    assert first["text"] == "abcdefghij"
    assert first["truncated"] is True
    assert first["next_offset"] == 10
    assert first["size"] == 25
    # an explicit larger limit is still capped
    capped = ok(call("fs.read", path="big.txt", limit=1000))
    assert capped["text"] == "abcdefghij"
    # paging with next_offset reassembles the whole file
    parts, offset = [], 0
    while True:
        value = ok(call("fs.read", path="big.txt", offset=offset))
        parts.append(value["text"])
        if not value["truncated"]:
            break
        offset = value["next_offset"]
    assert "".join(parts) == text


def test_read_utf8_char_cut_at_range_end_is_left_for_next_page(call: Any, workspace: Path) -> None:
    (workspace / "u.txt").write_text("xé€")  # 78 | c3 a9 | e2 82 ac
    value = ok(call("fs.read", path="u.txt", limit=2))
    assert value["text"] == "x"
    assert value["bytes_read"] == 1
    assert value["next_offset"] == 1
    value = ok(call("fs.read", path="u.txt", offset=1, limit=4))
    assert value["text"] == "é"
    assert value["next_offset"] == 3


def test_read_utf8_char_cut_at_range_start_is_skipped(call: Any, workspace: Path) -> None:
    (workspace / "u.txt").write_text("é€x")  # c3 a9 | e2 82 ac | 78
    value = ok(call("fs.read", path="u.txt", offset=1))
    assert value["text"] == "€x"
    assert value["bytes_read"] == 5
    value = ok(call("fs.read", path="u.txt", offset=3))  # inside the euro sign
    assert value["text"] == "x"
    assert value["truncated"] is False


def test_read_paging_with_small_limit_reassembles_multibyte_text(
    call: Any, workspace: Path
) -> None:
    text = "aé€😀b" * 7 + "ü"
    (workspace / "u.txt").write_text(text)
    parts, offset, pages = [], 0, 0
    while True:
        value = ok(call("fs.read", path="u.txt", offset=offset, limit=5))
        assert value["bytes_read"] <= 5
        parts.append(value["text"])
        pages += 1
        assert pages < 200
        if not value["truncated"]:
            break
        assert value["next_offset"] > offset
        offset = value["next_offset"]
    assert "".join(parts) == text


def test_read_file_ending_in_a_cut_character_terminates(call: Any, workspace: Path) -> None:
    (workspace / "cut.txt").write_bytes("abc€".encode()[:-1])  # last char cut by the file end
    value = ok(call("fs.read", path="cut.txt"))
    assert value["text"].startswith("abc")
    assert value["truncated"] is False
    assert value["next_offset"] is None
    value = ok(call("fs.read", path="cut.txt", offset=3))
    assert value["truncated"] is False


def test_read_missing_file_is_enoent(call: Any) -> None:
    err(call("fs.read", path="nope.txt"), ErrorCode.E_NOENT)
    err(call("fs.read", path="no/such/folder.txt"), ErrorCode.E_NOENT)


def test_read_folder_is_eisdir(call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    err(call("fs.read", path="d"), ErrorCode.E_ISDIR)
    err(call("fs.read", path="."), ErrorCode.E_ISDIR)
    err(call("fs.read", path="/"), ErrorCode.E_ISDIR)


def test_read_through_a_file_is_enotdir(call: Any, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("x")
    err(call("fs.read", path="notes.txt/inner"), ErrorCode.E_NOTDIR)


def test_read_binary_file_is_einval(call: Any, workspace: Path) -> None:
    (workspace / "bin.dat").write_bytes(b"abc\x00def")
    err(call("fs.read", path="bin.dat"), ErrorCode.E_INVAL)
    (workspace / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    err(call("fs.read", path="latin1.txt"), ErrorCode.E_INVAL)


@pytest.mark.parametrize(
    "args",
    [
        {"path": "n.txt", "offset": -1},
        {"path": "n.txt", "limit": 0},
        {"path": "n.txt", "limit": -5},
        {"path": "n.txt", "offset": "soon"},
        {"path": "n\x00.txt"},
        {"path": "n.txt", "bogus": 1},
        {},
    ],
)
def test_read_invalid_arguments_are_einval(
    call: Any, workspace: Path, args: dict[str, Any]
) -> None:
    (workspace / "n.txt").write_text("abc")
    err(call("fs.read", **args), ErrorCode.E_INVAL)


def test_read_fifo_is_einval_without_hanging(system: System, proc: Process) -> None:
    fifo = proc.workspace.root / "pipe"
    os.mkfifo(fifo)
    results: list[SyscallResult] = []
    worker = threading.Thread(
        target=lambda: results.append(system.dispatch(proc, {"call": "fs.read", "path": "pipe"})),
        daemon=True,
    )
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the reader so the thread can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("fs.read blocked on a FIFO")
    err(results[0], ErrorCode.E_INVAL)


def test_read_escape_is_eperm(call: Any) -> None:
    err(call("fs.read", path="../notes.txt"), ErrorCode.E_PERM)


def test_read_without_capability_is_eperm(system: System, workspace: Path) -> None:
    (workspace / "n.txt").write_text("abc")
    only_list = system.spawn("lister", workspace, patterns=["fs.list"])
    err(system.dispatch(only_list, {"call": "fs.read", "path": "n.txt"}), ErrorCode.E_PERM)
    assert system.dispatch(only_list, {"call": "fs.list"}).ok


# ---------------------------------------------------------------- fs.write


def test_write_creates_file_and_parents(call: Any, workspace: Path) -> None:
    value = ok(call("fs.write", path="a/b/new.txt", content="héllo"))
    assert value == {"path": "a/b/new.txt", "bytes_written": 6, "created": True}
    assert (workspace / "a" / "b" / "new.txt").read_text() == "héllo"


def test_write_overwrite_replaces_and_leaves_no_temp_files(call: Any, workspace: Path) -> None:
    target = workspace / "notes.txt"
    target.write_text("old content that is longer")
    value = ok(call("fs.write", path="notes.txt", content="new"))
    assert value["created"] is False
    assert value["bytes_written"] == 3
    assert target.read_text() == "new"
    assert names(workspace) == ["notes.txt"]


def test_write_overwrite_keeps_file_mode(call: Any, workspace: Path) -> None:
    target = workspace / "private.txt"
    target.write_text("x")
    target.chmod(0o640)
    ok(call("fs.write", path="private.txt", content="y"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_text() == "y"


def test_write_append(call: Any, workspace: Path) -> None:
    target = workspace / "log.txt"
    target.write_text("one\n")
    value = ok(call("fs.write", path="log.txt", content="two\n", mode="append"))
    assert value == {"path": "log.txt", "bytes_written": 4, "created": False}
    ok(call("fs.write", path="log.txt", content="three\n", mode="append"))
    assert target.read_text() == "one\ntwo\nthree\n"


def test_write_append_creates_missing_file(call: Any, workspace: Path) -> None:
    value = ok(call("fs.write", path="sub/log.txt", content="first", mode="append"))
    assert value["created"] is True
    assert (workspace / "sub" / "log.txt").read_text() == "first"


def test_write_create_mode(call: Any, workspace: Path) -> None:
    value = ok(call("fs.write", path="fresh.txt", content="1", mode="create"))
    assert value["created"] is True
    err(call("fs.write", path="fresh.txt", content="2", mode="create"), ErrorCode.E_EXISTS)
    assert (workspace / "fresh.txt").read_text() == "1"
    assert names(workspace) == ["fresh.txt"]


def test_write_over_limit_is_etoobig(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_mod, "MAX_WRITE_BYTES", 10)
    err(call("fs.write", path="big.txt", content="x" * 11), ErrorCode.E_TOOBIG)
    assert not (workspace / "big.txt").exists()
    # the limit counts UTF-8 bytes, not characters
    err(call("fs.write", path="big.txt", content="é" * 6), ErrorCode.E_TOOBIG)
    err(call("fs.write", path="big.txt", content="x" * 11, mode="append"), ErrorCode.E_TOOBIG)
    assert names(workspace) == []
    assert ok(call("fs.write", path="big.txt", content="x" * 10))["bytes_written"] == 10


def test_write_to_folder_is_eisdir(call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    err(call("fs.write", path="d", content="x"), ErrorCode.E_ISDIR)
    err(call("fs.write", path="d", content="x", mode="append"), ErrorCode.E_ISDIR)
    err(call("fs.write", path=".", content="x"), ErrorCode.E_ISDIR)
    err(call("fs.write", path="/", content="x"), ErrorCode.E_ISDIR)
    assert names(workspace / "d") == []


def test_write_through_a_file_is_enotdir(call: Any, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("x")
    err(call("fs.write", path="notes.txt/inner.txt", content="y"), ErrorCode.E_NOTDIR)
    assert (workspace / "notes.txt").read_text() == "x"


@pytest.mark.parametrize(
    "args",
    [
        {"path": "x.txt", "content": "y", "mode": "truncate"},
        {"path": "x.txt"},
        {"path": "x.txt", "content": 5},
        {"path": "x\x00.txt", "content": "y"},
    ],
)
def test_write_invalid_arguments_are_einval(
    call: Any, workspace: Path, args: dict[str, Any]
) -> None:
    err(call("fs.write", **args), ErrorCode.E_INVAL)
    assert names(workspace) == []


def test_write_escape_is_eperm(call: Any, workspace: Path) -> None:
    err(call("fs.write", path="../escaped.txt", content="x"), ErrorCode.E_PERM)
    assert not (workspace.parent / "escaped.txt").exists()


def test_write_through_in_workspace_symlink_updates_target(call: Any, workspace: Path) -> None:
    (workspace / "real.txt").write_text("old")
    (workspace / "alias.txt").symlink_to("real.txt")
    value = ok(call("fs.write", path="alias.txt", content="new"))
    assert value["path"] == "real.txt"
    assert (workspace / "real.txt").read_text() == "new"
    assert (workspace / "alias.txt").is_symlink()


def test_write_long_non_ascii_name(call: Any, workspace: Path) -> None:
    name = "文" * 80  # 240 bytes: a valid name whose temp file must still fit NAME_MAX
    ok(call("fs.write", path=name, content="x"))
    ok(call("fs.write", path=name, content="y"))
    assert (workspace / name).read_text() == "y"
    assert names(workspace) == [name]


def test_write_too_long_name_is_einval(call: Any) -> None:
    err(call("fs.write", path="a" * 300, content="x"), ErrorCode.E_INVAL)


def test_append_to_fifo_is_einval_without_hanging(system: System, proc: Process) -> None:
    fifo = proc.workspace.root / "pipe"
    os.mkfifo(fifo)
    results: list[SyscallResult] = []
    request = {"call": "fs.write", "path": "pipe", "content": "x", "mode": "append"}
    worker = threading.Thread(
        target=lambda: results.append(system.dispatch(proc, request)), daemon=True
    )
    worker.start()
    worker.join(5)
    if worker.is_alive():
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        worker.join(5)
        os.close(reader)
        pytest.fail("fs.write append blocked on a FIFO")
    err(results[0], ErrorCode.E_INVAL)


# ---------------------------------------------------------------- fs.list


@pytest.fixture
def tree(workspace: Path) -> Path:
    """a.txt (3 bytes), b.md, docs/c.txt, docs/deep/d.txt, docs/e.md, empty/, link -> a.txt."""
    (workspace / "a.txt").write_text("abc")
    (workspace / "b.md").write_text("# b")
    (workspace / "docs" / "deep").mkdir(parents=True)
    (workspace / "docs" / "c.txt").write_text("c")
    (workspace / "docs" / "deep" / "d.txt").write_text("d")
    (workspace / "docs" / "e.md").write_text("e")
    (workspace / "empty").mkdir()
    (workspace / "link").symlink_to("a.txt")
    return workspace


def entry_paths(value: dict[str, Any]) -> list[str]:
    """The listed paths of an fs.list value."""
    return [e["path"] for e in value["entries"]]


def test_list_root(call: Any, tree: Path) -> None:
    value = ok(call("fs.list"))
    assert value["path"] == "."
    assert value["truncated"] is False
    by_path = {e["path"]: (e["type"], e["size"]) for e in value["entries"]}
    assert by_path == {
        "a.txt": ("file", 3),
        "b.md": ("file", 3),
        "docs": ("dir", 0),
        "empty": ("dir", 0),
        "link": ("link", 0),
    }
    assert entry_paths(value) == sorted(by_path)


def test_list_subfolder_and_empty_folder(call: Any, tree: Path) -> None:
    value = ok(call("fs.list", path="docs"))
    assert value["path"] == "docs"
    assert entry_paths(value) == ["c.txt", "deep", "e.md"]
    assert ok(call("fs.list", path="empty"))["entries"] == []


def test_list_glob(call: Any, tree: Path) -> None:
    assert entry_paths(ok(call("fs.list", pattern="*.txt"))) == ["a.txt"]
    assert entry_paths(ok(call("fs.list", pattern="*.md"))) == ["b.md"]


def test_list_recursive(call: Any, tree: Path) -> None:
    paths = entry_paths(ok(call("fs.list", recursive=True)))
    assert set(paths) == {
        "a.txt",
        "b.md",
        "docs",
        "docs/c.txt",
        "docs/deep",
        "docs/deep/d.txt",
        "docs/e.md",
        "empty",
        "link",
    }
    assert len(paths) == len(set(paths))
    assert paths == sorted(paths, key=lambda p: p.split("/")), "a folder's contents follow it"


def test_list_recursive_with_glob(call: Any, tree: Path) -> None:
    txt = entry_paths(ok(call("fs.list", recursive=True, pattern="*.txt")))
    assert sorted(txt) == ["a.txt", "docs/c.txt", "docs/deep/d.txt"]
    nested = entry_paths(ok(call("fs.list", recursive=True, pattern="docs/*.md")))
    assert nested == ["docs/e.md"]


def test_list_a_file_gives_its_own_entry(call: Any, tree: Path) -> None:
    value = ok(call("fs.list", path="docs/c.txt"))
    assert value["entries"] == [{"path": "docs/c.txt", "type": "file", "size": 1}]


def test_list_hides_temp_files(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("x")
    (workspace / ".a.txt.llmos-tmp-deadbeef").write_text("partial")
    assert entry_paths(ok(call("fs.list"))) == ["a.txt"]


def test_list_truncates_at_entry_cap(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_mod, "MAX_LIST_ENTRIES", 3)
    for i in range(5):
        (workspace / f"f{i}.txt").write_text("x")
    value = ok(call("fs.list"))
    assert value["truncated"] is True
    assert entry_paths(value) == ["f0.txt", "f1.txt", "f2.txt"]
    monkeypatch.setattr(fs_mod, "MAX_LIST_ENTRIES", 5)
    assert ok(call("fs.list"))["truncated"] is False


def test_list_errors(call: Any, tree: Path) -> None:
    err(call("fs.list", path="missing"), ErrorCode.E_NOENT)
    err(call("fs.list", path="a.txt/x"), ErrorCode.E_NOTDIR)
    err(call("fs.list", path=".."), ErrorCode.E_PERM)
    err(call("fs.list", recursive="very"), ErrorCode.E_INVAL)


# ---------------------------------------------------------------- fs.stat


def test_stat_file(call: Any, workspace: Path) -> None:
    target = workspace / "f.txt"
    target.write_text("12345")
    target.chmod(0o640)
    value = ok(call("fs.stat", path="f.txt"))
    assert value["path"] == "f.txt"
    assert value["type"] == "file"
    assert value["size"] == 5
    assert value["mode"] == "-rw-r-----"
    modified = dt.datetime.fromisoformat(value["modified"])
    assert modified.tzinfo is not None
    assert modified.timestamp() == pytest.approx(target.stat().st_mtime, abs=1)


def test_stat_folder_root_and_link(call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    (workspace / "l").symlink_to("d")
    assert ok(call("fs.stat", path="d"))["type"] == "dir"
    root = ok(call("fs.stat", path="."))
    assert root["type"] == "dir"
    assert root["path"] == "."
    link = ok(call("fs.stat", path="l"))
    assert link["type"] == "link"
    assert link["path"] == "l"


def test_stat_errors(call: Any, workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    err(call("fs.stat", path="missing"), ErrorCode.E_NOENT)
    err(call("fs.stat", path="f.txt/x"), ErrorCode.E_NOTDIR)
    err(call("fs.stat", path="../f.txt"), ErrorCode.E_PERM)


# ---------------------------------------------------------------- fs.delete


def test_delete_file(call: Any, workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    (workspace / "keep.txt").write_text("x")
    assert ok(call("fs.delete", path="f.txt")) == {"path": "f.txt", "deleted": 1, "files": None}
    assert names(workspace) == ["keep.txt"]


def test_delete_empty_folder(call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    assert ok(call("fs.delete", path="d"))["deleted"] == 1
    assert names(workspace) == []


def test_delete_non_empty_folder_needs_recursive(call: Any, workspace: Path) -> None:
    (workspace / "d" / "e").mkdir(parents=True)
    (workspace / "d" / "f.txt").write_text("x")
    (workspace / "d" / "e" / "g.txt").write_text("x")
    err(call("fs.delete", path="d"), ErrorCode.E_NOTEMPTY)
    assert (workspace / "d" / "e" / "g.txt").exists()
    value = ok(call("fs.delete", path="d", recursive=True))
    assert value == {"path": "d", "deleted": 4, "files": None}
    assert names(workspace) == []


def test_delete_symlink_deletes_the_link_not_its_target(call: Any, workspace: Path) -> None:
    (workspace / "target.txt").write_text("keep me")
    (workspace / "dir").mkdir()
    (workspace / "dir" / "inner.txt").write_text("keep me too")
    (workspace / "file-link").symlink_to("target.txt")
    (workspace / "dir-link").symlink_to("dir")
    assert ok(call("fs.delete", path="file-link"))["path"] == "file-link"
    assert ok(call("fs.delete", path="dir-link", recursive=True))["deleted"] == 1
    assert names(workspace) == ["dir", "target.txt"]
    assert (workspace / "target.txt").read_text() == "keep me"
    assert (workspace / "dir" / "inner.txt").read_text() == "keep me too"


def test_delete_recursive_does_not_follow_links_inside(call: Any, workspace: Path) -> None:
    (workspace / "keep").mkdir()
    (workspace / "keep" / "k.txt").write_text("k")
    (workspace / "trash").mkdir()
    (workspace / "trash" / "to-keep").symlink_to("../keep")
    (workspace / "trash" / "to-file").symlink_to("../keep/k.txt")
    assert ok(call("fs.delete", path="trash", recursive=True))["deleted"] == 3
    assert names(workspace) == ["keep"]
    assert (workspace / "keep" / "k.txt").read_text() == "k"


def test_delete_errors(call: Any, workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    err(call("fs.delete", path="missing"), ErrorCode.E_NOENT)
    err(call("fs.delete", path="no/such/file"), ErrorCode.E_NOENT)
    err(call("fs.delete", path="f.txt/x"), ErrorCode.E_NOTDIR)
    err(call("fs.delete", path="../f.txt"), ErrorCode.E_PERM)
    for root in (".", "/", "", str(workspace.resolve())):
        err(call("fs.delete", path=root, recursive=True), ErrorCode.E_PERM)
    assert names(workspace) == ["f.txt"]


# ---------------------------------------------------------------- fs.move


def test_move_renames_file(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    assert ok(call("fs.move", src="a.txt", dst="b.txt")) == {
        "src": "a.txt",
        "dst": "b.txt",
        "files": None,
        "lines": None,
    }
    assert names(workspace) == ["b.txt"]
    assert (workspace / "b.txt").read_text() == "A"


def test_move_into_existing_folder(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    (workspace / "docs").mkdir()
    value = ok(call("fs.move", src="a.txt", dst="docs"))
    assert value == {"src": "a.txt", "dst": "docs/a.txt", "files": None, "lines": None}
    assert (workspace / "docs" / "a.txt").read_text() == "A"
    assert not (workspace / "a.txt").exists()


def test_move_into_root(call: Any, workspace: Path) -> None:
    (workspace / "docs").mkdir()
    (workspace / "docs" / "a.txt").write_text("A")
    assert ok(call("fs.move", src="docs/a.txt", dst="."))["dst"] == "a.txt"
    assert (workspace / "a.txt").read_text() == "A"


def test_move_into_folder_named_like_home(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    (workspace / "~backup").mkdir()
    assert ok(call("fs.move", src="a.txt", dst="./~backup"))["dst"] == "~backup/a.txt"
    assert (workspace / "~backup" / "a.txt").read_text() == "A"


def test_move_creates_parent_folders(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    assert ok(call("fs.move", src="a.txt", dst="x/y/z.txt"))["dst"] == "x/y/z.txt"
    assert (workspace / "x" / "y" / "z.txt").read_text() == "A"
    assert not (workspace / "a.txt").exists()


def test_move_folder(call: Any, workspace: Path) -> None:
    (workspace / "src" / "deep").mkdir(parents=True)
    (workspace / "src" / "deep" / "f.txt").write_text("F")
    assert ok(call("fs.move", src="src", dst="dst"))["dst"] == "dst"
    assert (workspace / "dst" / "deep" / "f.txt").read_text() == "F"
    assert names(workspace) == ["dst"]


def test_move_does_not_clobber_without_overwrite(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    (workspace / "b.txt").write_text("B")
    err(call("fs.move", src="a.txt", dst="b.txt"), ErrorCode.E_EXISTS)
    assert (workspace / "a.txt").read_text() == "A"
    assert (workspace / "b.txt").read_text() == "B"
    (workspace / "docs").mkdir()
    (workspace / "docs" / "a.txt").write_text("old")
    err(call("fs.move", src="a.txt", dst="docs"), ErrorCode.E_EXISTS)
    assert (workspace / "docs" / "a.txt").read_text() == "old"


def test_move_overwrite_replaces(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    (workspace / "b.txt").write_text("B")
    ok(call("fs.move", src="a.txt", dst="b.txt", overwrite=True))
    assert names(workspace) == ["b.txt"]
    assert (workspace / "b.txt").read_text() == "A"


def test_move_overwrite_onto_folder_is_eisdir(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    (workspace / "docs" / "a.txt").mkdir(parents=True)
    err(call("fs.move", src="a.txt", dst="docs", overwrite=True), ErrorCode.E_ISDIR)
    assert (workspace / "a.txt").read_text() == "A"
    assert (workspace / "docs" / "a.txt").is_dir()


def test_move_to_itself_is_a_no_op(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    assert ok(call("fs.move", src="a.txt", dst="./a.txt")) == {
        "src": "a.txt",
        "dst": "a.txt",
        "files": None,
        "lines": None,
    }
    assert (workspace / "a.txt").read_text() == "A"


def test_move_folder_into_itself_is_einval(call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    err(call("fs.move", src="d", dst="d/sub"), ErrorCode.E_INVAL)
    assert (workspace / "d").is_dir()


def test_move_symlink_moves_the_link(call: Any, workspace: Path) -> None:
    (workspace / "target.txt").write_text("T")
    (workspace / "l1").symlink_to("target.txt")
    ok(call("fs.move", src="l1", dst="l2"))
    assert (workspace / "l2").is_symlink()
    assert os.readlink(workspace / "l2") == "target.txt"
    assert (workspace / "target.txt").read_text() == "T"
    assert names(workspace) == ["l2", "target.txt"]


def test_move_errors(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("A")
    err(call("fs.move", src="missing", dst="b"), ErrorCode.E_NOENT)
    err(call("fs.move", src="a.txt/x", dst="b"), ErrorCode.E_NOTDIR)
    err(call("fs.move", src="a.txt", dst="../b.txt"), ErrorCode.E_PERM)
    err(call("fs.move", src="../a.txt", dst="b.txt"), ErrorCode.E_PERM)
    err(call("fs.move", src=".", dst="b"), ErrorCode.E_PERM)
    err(call("fs.move", src="a.txt"), ErrorCode.E_INVAL)
    assert names(workspace) == ["a.txt"]
    assert not (workspace.parent / "b.txt").exists()


# ---------------------------------------------------------------- fs.mkdir


def test_mkdir(call: Any, workspace: Path) -> None:
    assert ok(call("fs.mkdir", path="a/b/c")) == {"path": "a/b/c", "created": True}
    assert (workspace / "a" / "b" / "c").is_dir()
    assert ok(call("fs.mkdir", path="a/b")) == {"path": "a/b", "created": False}
    assert ok(call("fs.mkdir", path=".")) == {"path": ".", "created": False}


def test_mkdir_errors(call: Any, workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    err(call("fs.mkdir", path="f.txt"), ErrorCode.E_EXISTS)
    err(call("fs.mkdir", path="f.txt/sub"), ErrorCode.E_NOTDIR)
    err(call("fs.mkdir", path="../d"), ErrorCode.E_PERM)
    assert names(workspace) == ["f.txt"]
    assert not (workspace.parent / "d").exists()


# ---------------------------------------------------------------- fs.search


@pytest.fixture
def corpus(workspace: Path) -> Path:
    """A few text files with known lines, a binary file and a nested folder."""
    (workspace / "a.txt").write_text("alpha\n  Needle here  \nbeta\nneedle again\n")
    (workspace / "b.md").write_text("no match\nNEEDLE in markdown\n")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "c.txt").write_text("x\ny\nthe needle\n")
    (workspace / "bin.dat").write_bytes(b"needle\x00\x01\x02")
    return workspace


def hit_tuples(value: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(path, line, text) of each hit of an fs.search value."""
    return [(h["path"], h["line"], h["text"]) for h in value["hits"]]


def test_search_finds_lines_case_insensitively(call: Any, corpus: Path) -> None:
    value = ok(call("fs.search", query="needle"))
    assert sorted(hit_tuples(value)) == [
        ("a.txt", 2, "Needle here"),
        ("a.txt", 4, "needle again"),
        ("b.md", 2, "NEEDLE in markdown"),
        ("sub/c.txt", 3, "the needle"),
    ]
    assert value["files_scanned"] == 4
    assert value["truncated"] is False
    assert value["query"] == "needle"


def test_search_in_subfolder_and_single_file(call: Any, corpus: Path) -> None:
    assert hit_tuples(ok(call("fs.search", query="needle", path="sub"))) == [
        ("sub/c.txt", 3, "the needle")
    ]
    single = ok(call("fs.search", query="needle", path="a.txt"))
    assert [h["line"] for h in single["hits"]] == [2, 4]
    assert single["files_scanned"] == 1


def test_search_of_a_folder_that_finds_nothing_says_to_look_everywhere(
    call: Any, corpus: Path
) -> None:
    (corpus / "a.txt").write_text("the wifi password is larch\n")
    value = ok(call("fs.search", query="wifi password", path="sub"))
    assert value["matches"] == 0 and value["hits"] == []
    assert 'search again with path "."' in value["note"], "the handler does not widen it itself"
    assert ok(call("fs.search", query="wifi password"))["matches"] == 1
    assert ok(call("fs.search", query="needle", path="sub"))["note"] is None


def test_search_glob_filter(call: Any, corpus: Path) -> None:
    value = ok(call("fs.search", query="needle", pattern="*.md"))
    assert hit_tuples(value) == [("b.md", 2, "NEEDLE in markdown")]


def test_search_literal_and_regex(call: Any, workspace: Path) -> None:
    (workspace / "r.txt").write_text("abc\na.c\nid-42\n")
    assert [h["text"] for h in ok(call("fs.search", query="a.c"))["hits"]] == ["a.c"]
    regex = ok(call("fs.search", query=r"a.c", regex=True))
    assert [h["text"] for h in regex["hits"]] == ["abc", "a.c"]
    digits = ok(call("fs.search", query=r"^id-\d+$", regex=True))
    assert [h["line"] for h in digits["hits"]] == [3]


def test_search_cap_marks_truncated(call: Any, workspace: Path) -> None:
    (workspace / "one.txt").write_text("hit\n" * 10)
    (workspace / "two.txt").write_text("hit\n" * 10)
    value = ok(call("fs.search", query="hit", max_hits=15))
    assert len(value["hits"]) == 15
    assert value["truncated"] is True
    single = ok(call("fs.search", query="hit", path="one.txt", max_hits=3))
    assert len(single["hits"]) == 3
    assert single["truncated"] is True
    every = ok(call("fs.search", query="hit", path="one.txt", max_hits=50))
    assert len(every["hits"]) == 10
    assert every["truncated"] is False


def test_search_skips_files_over_size_cap(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_mod, "MAX_SEARCH_FILE_BYTES", 20)
    (workspace / "small.txt").write_text("needle\n")
    (workspace / "large.txt").write_text("needle\n" + "x" * 30)
    assert [h["path"] for h in ok(call("fs.search", query="needle"))["hits"]] == ["small.txt"]


def test_search_does_not_follow_links(call: Any, workspace: Path) -> None:
    (workspace / "real.txt").write_text("needle\n")
    (workspace / "alias.txt").symlink_to("real.txt")
    (workspace / "d").mkdir()
    (workspace / "d-link").symlink_to("d")
    (workspace / "d" / "x.txt").write_text("needle\n")
    paths = [h["path"] for h in ok(call("fs.search", query="needle"))["hits"]]
    assert sorted(paths) == ["d/x.txt", "real.txt"]


def test_search_errors(call: Any, corpus: Path) -> None:
    err(call("fs.search", query="(unclosed", regex=True), ErrorCode.E_INVAL)
    err(call("fs.search", query=""), ErrorCode.E_INVAL)
    err(call("fs.search", query="x", max_hits=0), ErrorCode.E_INVAL)
    err(call("fs.search", query="x", max_hits=10_000), ErrorCode.E_INVAL)
    err(call("fs.search", query="x", path="missing"), ErrorCode.E_NOENT)
    err(call("fs.search", query="x", path="a.txt/x"), ErrorCode.E_NOTDIR)
    err(call("fs.search", query="x", path=".."), ErrorCode.E_PERM)


def test_unknown_fs_call_is_enosys(call: Any) -> None:
    err(call("fs.chmod", path="x"), ErrorCode.E_NOSYS)


def test_copy_file_and_into_folder(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("one two")
    (workspace / "a.txt").chmod(0o640)
    value = ok(call("fs.copy", src="a.txt", dst="b.txt"))
    assert value == {"src": "a.txt", "dst": "b.txt", "files": None, "lines": 1}
    assert (workspace / "b.txt").read_text() == "one two"
    assert (workspace / "a.txt").read_text() == "one two"
    assert stat.S_IMODE((workspace / "b.txt").stat().st_mode) == 0o640
    (workspace / "backup").mkdir()
    assert ok(call("fs.copy", src="a.txt", dst="backup"))["dst"] == "backup/a.txt"
    assert ok(call("fs.copy", src="a.txt", dst="new/dir/c.txt"))["dst"] == "new/dir/c.txt"


def test_copy_errors(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("new")
    (workspace / "b.txt").write_text("old")
    err(call("fs.copy", src="a.txt", dst="b.txt"), ErrorCode.E_EXISTS)
    assert (workspace / "b.txt").read_text() == "old"
    ok(call("fs.copy", src="a.txt", dst="b.txt", overwrite=True))
    assert (workspace / "b.txt").read_text() == "new"
    err(call("fs.copy", src="missing.txt", dst="c.txt"), ErrorCode.E_NOENT)
    err(call("fs.copy", src="a.txt", dst="a.txt"), ErrorCode.E_INVAL)
    (workspace / "d").mkdir()
    err(call("fs.copy", src="d", dst="e"), ErrorCode.E_ISDIR)
    err(call("fs.copy", src="a.txt", dst="../out.txt"), ErrorCode.E_PERM)
    err(call("fs.copy", src="/etc/hostname", dst="h.txt"), ErrorCode.E_PERM)
    assert not (workspace / "h.txt").exists()


def test_move_a_pattern_into_a_new_folder(call: Any, workspace: Path) -> None:
    for name, text in (("x.log", "1"), ("y.log", "2"), ("z.txt", "3")):
        (workspace / name).write_text(text)
    value = ok(call("fs.move", src="*.log", dst="logs"))
    assert value["files"] == ["logs/x.log", "logs/y.log"] and value["dst"] == "logs"
    assert (workspace / "logs" / "y.log").read_text() == "2"
    assert names(workspace) == ["logs", "z.txt"] and names(workspace / "logs") == ["x.log", "y.log"]
    err(call("fs.move", src="*.log", dst="logs"), ErrorCode.E_NOENT)


def test_copy_a_pattern_keeps_the_originals(call: Any, workspace: Path) -> None:
    (workspace / "docs").mkdir()
    (workspace / "docs" / "a.txt").write_text("a")
    (workspace / "docs" / "b.md").write_text("b")
    (workspace / "out").mkdir()
    value = ok(call("fs.copy", src="docs/*.txt", dst="out/"))
    assert value["files"] == ["out/a.txt"]
    assert (workspace / "docs" / "a.txt").read_text() == "a"
    assert (workspace / "out" / "a.txt").read_text() == "a"
    err(call("fs.copy", src="*/a.txt", dst="out"), ErrorCode.E_INVAL)
    (workspace / "f").write_text("not a folder")
    err(call("fs.copy", src="docs/*", dst="f"), ErrorCode.E_NOTDIR)


def test_a_name_with_pattern_characters_is_taken_literally_when_it_exists(
    call: Any, workspace: Path
) -> None:
    (workspace / "a[1].txt").write_text("literal")
    (workspace / "a1.txt").write_text("other")
    ok(call("fs.move", src="a[1].txt", dst="b.txt"))
    assert (workspace / "b.txt").read_text() == "literal"
    assert (workspace / "a1.txt").read_text() == "other"


def test_a_pattern_stops_at_the_first_failure_and_says_what_was_done(
    call: Any, workspace: Path
) -> None:
    (workspace / "logs").mkdir()
    (workspace / "a.log").write_text("a")
    (workspace / "b.log").write_text("b")
    (workspace / "logs" / "b.log").write_text("already there")
    result = call("fs.move", src="*.log", dst="logs")
    err(result, ErrorCode.E_EXISTS)
    assert "b.log" in str(result.message) and "logs/a.log" in str(result.message)
    assert (workspace / "logs" / "b.log").read_text() == "already there"


def test_a_pattern_cannot_reach_outside_the_workspace(
    call: Any, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "s.log").write_text("secret")
    (workspace / "link").symlink_to(outside)
    err(call("fs.copy", src="link/*.log", dst="got"), ErrorCode.E_PERM)
    err(call("fs.copy", src="../outside/*.log", dst="got"), ErrorCode.E_PERM)
    assert not (workspace / "got" / "s.log").exists()


# ---------------------------------------------------------------- fs.search by words


@pytest.fixture
def notes(workspace: Path) -> Path:
    """Files where a query's words are spread over lines, files and paths."""
    (workspace / "cabin.txt").write_text(
        "Directions: take the second left after the lake.\n"
        "The wifi password for the cabin is larch-7731.\n"
        "Firewood is in the shed.\n"
    )
    (workspace / "home.txt").write_text("wifi at home is slow\nmy email password is secret\n")
    (workspace / "server.log").write_text(
        "12:00 INFO started\n12:01 ERROR disk full\n12:02 INFO retry\n12:03 Errors: 2\n"
    )
    (workspace / "report.md").write_text("an error in the report\nthe log of changes\n")
    return workspace


def test_search_matches_words_in_any_order_best_first(call: Any, notes: Path) -> None:
    value = ok(call("fs.search", query="wifi password cabin"))
    best = value["hits"][0]
    assert (best["path"], best["line"]) == ("cabin.txt", 2)
    assert best["text"] == "The wifi password for the cabin is larch-7731."
    assert all(best["score"] > h["score"] for h in value["hits"][1:])
    assert [h["score"] for h in value["hits"]] == sorted(
        (h["score"] for h in value["hits"]), reverse=True
    )
    assert value["files"][0] == {"path": "cabin.txt", "hits": 1}


def test_search_a_word_in_the_file_path_counts_for_its_lines(call: Any, notes: Path) -> None:
    value = ok(call("fs.search", query="error log"))
    top = [(h["path"], h["line"]) for h in value["hits"][:2]]
    assert sorted(top) == [("server.log", 2), ("server.log", 4)]
    assert {h["path"] for h in value["hits"][2:]} == {"report.md"}
    assert value["files"][0] == {"path": "server.log", "hits": 2}
    assert value["matches"] == 4


def test_search_the_exact_phrase_ranks_first(call: Any, notes: Path) -> None:
    (notes / "todo.txt").write_text("read the error log tomorrow\n")
    value = ok(call("fs.search", query="error log"))
    assert (value["hits"][0]["path"], value["hits"][0]["line"]) == ("todo.txt", 1)


def test_search_ignores_case_plurals_and_stopwords(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("one error here\nTWO ERRORS THERE\nboxes and cities\n")
    # the exact form ranks first, the other form and case still match
    assert [h["line"] for h in ok(call("fs.search", query="Errors"))["hits"]] == [2, 1]
    assert [h["line"] for h in ok(call("fs.search", query="the error"))["hits"]] == [1, 2]
    assert [h["line"] for h in ok(call("fs.search", query="box city"))["hits"]] == [3]
    # a query of stopwords only still finds them
    assert [h["line"] for h in ok(call("fs.search", query="and"))["hits"]] == [3]


def test_search_rarer_words_weigh_more(call: Any, workspace: Path) -> None:
    lines = [f"server ok {i}" for i in range(30)]
    lines[17] = "timeout waiting for reply"
    lines[25] = "server timeout after 30 s"
    (workspace / "s.txt").write_text("\n".join(lines) + "\n")
    value = ok(call("fs.search", query="server timeout"))
    assert [h["line"] for h in value["hits"][:2]] == [26, 18]
    assert value["matches"] == 30
    assert value["truncated"] is True and len(value["hits"]) == 20


def test_search_counts_hits_per_file_best_file_first(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("invoice 1\ninvoice 2\nother\n")
    (workspace / "b.txt").write_text("Invoice for Alice\n")
    (workspace / "docs").mkdir()
    (workspace / "docs" / "c.md").write_text("\n".join(["invoices"] * 5) + "\n")
    (workspace / "d.txt").write_text("nothing here\n")
    value = ok(call("fs.search", query="invoice alice", max_hits=3))
    # b.txt holds both words; then the files with only one, by their best line
    assert value["files"] == [
        {"path": "b.txt", "hits": 1},
        {"path": "docs/c.md", "hits": 5},
        {"path": "a.txt", "hits": 2},
    ]
    assert value["files_matched"] == 3 and value["matches"] == 8
    assert len(value["hits"]) == 3 and value["truncated"] is True
    assert value["files_scanned"] == 4


def test_search_per_file_counts_are_capped(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_mod, "MAX_SEARCH_FILES", 2)
    for i in range(4):
        (workspace / f"f{i}.txt").write_text("needle\n" * (i + 1))
    value = ok(call("fs.search", query="needle"))
    assert value["files_matched"] == 4
    assert [f["path"] for f in value["files"]] == ["f3.txt", "f2.txt"]


def test_search_cuts_a_long_line_around_the_match(call: Any, workspace: Path) -> None:
    (workspace / "min.js").write_text("x" * 1000 + " needle " + "y" * 1000 + "\n")
    text = ok(call("fs.search", query="needle"))["hits"][0]["text"]
    assert "needle" in text
    assert len(text) <= search_mod.MAX_SEARCH_LINE_CHARS + 2
    assert text.startswith("…") and text.endswith("…")


def test_search_regex_stays_exact_and_in_file_order(call: Any, workspace: Path) -> None:
    (workspace / "a.txt").write_text("error log\nlog error\nerrors\n")
    (workspace / "b.log").write_text("error\n")
    value = ok(call("fs.search", query="error log", regex=True))
    assert hit_tuples(value) == [("a.txt", 1, "error log")]
    assert value["hits"][0]["score"] is None
    value = ok(call("fs.search", query=r"^errors?$", regex=True))
    assert hit_tuples(value) == [("a.txt", 3, "errors"), ("b.log", 1, "error")]
    assert value["files"] == [{"path": "a.txt", "hits": 1}, {"path": "b.log", "hits": 1}]


def test_search_finds_the_one_matching_line_of_a_long_log(call: Any, workspace: Path) -> None:
    lines = [
        f"2024-05-01 12:{i // 60 % 60:02d}:{i % 60:02d} INFO worker {i % 7} handled request {i}"
        for i in range(2500)
    ]
    lines[1733] = "2024-05-01 12:28:53 WARN certificate for mail.example.org expires in 3 days"
    (workspace / "big.log").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    value = ok(call("fs.search", query="certificate expiry mail"))
    # ~3-5 ms measured on 2 busy cores; the bound only catches a scan gone quadratic
    assert time.perf_counter() - started < 1.0
    assert value["hits"][0]["line"] == 1734
    assert "certificate" in value["hits"][0]["text"]
    assert value["matches"] == 1


# ---------------------------------------------------------------- fs.edit


def test_edit_replaces_unique_text_keeping_mode(call: Any, workspace: Path) -> None:
    target = workspace / "app.cfg"
    target.write_text("host = example.org\nport = 8080\n")
    target.chmod(0o640)
    value = ok(call("fs.edit", path="app.cfg", old="port = 8080", new="port = 9090"))
    assert value == {"path": "app.cfg", "replacements": 1, "lines": 2}
    assert target.read_text() == "host = example.org\nport = 9090\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert names(workspace) == ["app.cfg"]


def test_edit_absent_text_is_enoent_with_the_closest_line(call: Any, workspace: Path) -> None:
    (workspace / "app.cfg").write_text("host = example.org\nport = 8080\n")
    result = call("fs.edit", path="app.cfg", old="port=8081", new="port=1")
    err(result, ErrorCode.E_NOENT)
    assert "line 2" in str(result.message) and "port = 8080" in str(result.message)
    spaced = call("fs.edit", path="app.cfg", old="PORT = 8080", new="x")
    err(spaced, ErrorCode.E_NOENT)
    assert "other case or spacing" in str(spaced.message)
    assert (workspace / "app.cfg").read_text() == "host = example.org\nport = 8080\n"


def test_edit_text_that_is_not_unique_needs_all(call: Any, workspace: Path) -> None:
    (workspace / "list.txt").write_text("- milk\n- eggs\n- milk\n- milk\n")
    result = call("fs.edit", path="list.txt", old="milk", new="oat milk")
    err(result, ErrorCode.E_INVAL)
    assert "3 times" in str(result.message) and "lines 1, 3, 4" in str(result.message)
    assert (workspace / "list.txt").read_text() == "- milk\n- eggs\n- milk\n- milk\n"
    value = ok(call("fs.edit", path="list.txt", old="milk", new="oat milk", all=True))
    assert value["replacements"] == 3 and value["lines"] == 4
    assert (workspace / "list.txt").read_text().count("oat milk") == 3


def test_edit_removes_text_and_matches_windows_line_ends(call: Any, workspace: Path) -> None:
    (workspace / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    value = ok(call("fs.edit", path="w.txt", old="one\ntwo\n", new=""))
    assert value == {"path": "w.txt", "replacements": 1, "lines": 1}
    assert (workspace / "w.txt").read_bytes() == b"three\r\n"


def test_edit_errors(call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    (workspace / "bin.dat").write_bytes(b"ab\x00cd")
    (workspace / "f.txt").write_text("x")
    err(call("fs.edit", path="missing.txt", old="a", new="b"), ErrorCode.E_NOENT)
    err(call("fs.edit", path="d", old="a", new="b"), ErrorCode.E_ISDIR)
    err(call("fs.edit", path="bin.dat", old="ab", new="b"), ErrorCode.E_INVAL)
    err(call("fs.edit", path="f.txt", old="", new="b"), ErrorCode.E_INVAL)
    err(call("fs.edit", path="../f.txt", old="x", new="y"), ErrorCode.E_PERM)
    assert (workspace / "bin.dat").read_bytes() == b"ab\x00cd"


# ---------------------------------------------------------------- fs.append


def test_append_adds_a_line_to_a_file_ending_in_a_newline(call: Any, workspace: Path) -> None:
    (workspace / "todo.md").write_text("- milk\n")
    value = ok(call("fs.append", path="todo.md", text="- eggs"))
    assert value == {
        "path": "todo.md",
        "added": None,
        "bytes_added": 7,
        "lines": 2,
        "created": False,
    }
    assert (workspace / "todo.md").read_text() == "- milk\n- eggs\n"


def test_append_ends_an_unfinished_last_line_first(call: Any, workspace: Path) -> None:
    (workspace / "todo.md").write_text("- milk")
    value = ok(call("fs.append", path="todo.md", text="- eggs\n- tea\n"))
    assert value == {
        "path": "todo.md",
        "added": None,
        "bytes_added": 14,
        "lines": 3,
        "created": False,
    }
    assert (workspace / "todo.md").read_text() == "- milk\n- eggs\n- tea\n"


@pytest.mark.parametrize(
    ("before", "text", "after"),
    [
        ("# Todo\n- eggs\n", "buy milk", "# Todo\n- eggs\n- buy milk\n"),
        ("* eggs\n\n", "milk", "* eggs\n\n* milk\n"),
        ("- [x] eggs\n", "milk", "- [x] eggs\n- [ ] milk\n"),
        ("1. eggs\n2. tea", "milk", "1. eggs\n2. tea\n3. milk\n"),
        ("  - eggs\n", "- milk", "  - eggs\n- milk\n"),
        ("- eggs\n", "milk\ntea", "- eggs\nmilk\ntea\n"),
        ("notes\n", "milk", "notes\nmilk\n"),
    ],
)
def test_append_to_a_list_follows_its_style(
    call: Any, workspace: Path, before: str, text: str, after: str
) -> None:
    (workspace / "todo.md").write_text(before)
    value = ok(call("fs.append", path="todo.md", text=text))
    assert (workspace / "todo.md").read_text() == after
    assert value["bytes_added"] == len(after) - len(before)
    styled = value["added"] is not None
    assert styled == (after.strip().splitlines()[-1] != text.splitlines()[-1])


def test_append_creates_a_missing_file_and_folders(call: Any, workspace: Path) -> None:
    value = ok(call("fs.append", path="lists/shop.txt", text="bread"))
    assert value == {
        "path": "lists/shop.txt",
        "added": None,
        "bytes_added": 6,
        "lines": 1,
        "created": True,
    }
    assert (workspace / "lists" / "shop.txt").read_text() == "bread\n"
    (workspace / "empty.txt").write_text("")
    assert ok(call("fs.append", path="empty.txt", text="first"))["lines"] == 1
    assert (workspace / "empty.txt").read_text() == "first\n"


def test_append_errors(system: System, proc: Process, call: Any, workspace: Path) -> None:
    (workspace / "d").mkdir()
    os.mkfifo(workspace / "pipe")
    err(call("fs.append", path="d", text="x"), ErrorCode.E_ISDIR)
    err(call("fs.append", path="pipe", text="x"), ErrorCode.E_INVAL)
    err(call("fs.append", path="a.txt", text=""), ErrorCode.E_INVAL)
    err(call("fs.append", path="../a.txt", text="x"), ErrorCode.E_PERM)
    assert names(workspace) == ["d", "pipe"]


# ---------------------------------------------------------------- exact counts


def test_read_counts_the_lines_and_words_it_returns(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "n.txt").write_text("one two\nthree\nfour five six")
    value = ok(call("fs.read", path="n.txt"))
    assert (value["lines"], value["words"]) == (3, 6)
    monkeypatch.setattr(fs_mod, "MAX_READ_BYTES", 14)
    part = ok(call("fs.read", path="n.txt"))
    assert part["text"] == "one two\nthree\n" and part["truncated"] is True
    assert (part["lines"], part["words"]) == (2, 3)
    (workspace / "empty.txt").write_text("")
    assert ok(call("fs.read", path="empty.txt"))["lines"] == 0


def test_stat_counts_a_text_files_lines(
    call: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "log.txt").write_text("a\n" * 2500)
    (workspace / "short.txt").write_text("a\nb")
    (workspace / "bin.dat").write_bytes(b"\x00\n\n")
    (workspace / "d").mkdir()
    assert ok(call("fs.stat", path="log.txt"))["lines"] == 2500
    assert ok(call("fs.stat", path="short.txt"))["lines"] == 2
    assert ok(call("fs.stat", path="bin.dat"))["lines"] is None
    assert ok(call("fs.stat", path="d"))["lines"] is None
    monkeypatch.setattr(fs_mod, "MAX_COUNT_BYTES", 100)
    assert ok(call("fs.stat", path="log.txt"))["lines"] is None


# ---------------------------------------------------------------- fs.delete by pattern


def test_delete_a_pattern_lists_every_file_deleted(call: Any, workspace: Path) -> None:
    for name in ("a.tmp", "b.tmp", "keep.txt"):
        (workspace / name).write_text("x")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "c.tmp").write_text("x")
    value = ok(call("fs.delete", path="*.tmp"))
    assert value == {"path": "*.tmp", "deleted": 2, "files": ["a.tmp", "b.tmp"]}
    assert names(workspace) == ["keep.txt", "sub"]
    assert ok(call("fs.delete", path="sub/*.tmp"))["files"] == ["sub/c.tmp"]
    err(call("fs.delete", path="*.tmp"), ErrorCode.E_NOENT)


def test_delete_a_pattern_stops_at_a_folder_that_needs_recursive(
    call: Any, workspace: Path
) -> None:
    (workspace / "a-old").write_text("x")
    (workspace / "b-old").mkdir()
    (workspace / "b-old" / "f").write_text("x")
    result = call("fs.delete", path="*-old")
    err(result, ErrorCode.E_NOTEMPTY)
    assert "deleted before it: a-old" in str(result.message)
    assert ok(call("fs.delete", path="*-old", recursive=True)) == {
        "path": "*-old",
        "deleted": 2,
        "files": ["b-old"],
    }
    err(call("fs.delete", path="*/f"), ErrorCode.E_INVAL)
    err(call("fs.delete", path="../*"), ErrorCode.E_PERM)


# ---------------------------------------------------------------- results that steer the kernel


def test_search_path_names_a_folder_but_a_file_still_works(call: Any, corpus: Path) -> None:
    # The model kept searching inside the one file it should have read, and scoped searches to
    # folders the request never spoke of; the grammar now offers only folders the person named.
    # A direct caller may still name a file.
    field = search_mod.FsSearch.model_fields["path"]
    grounded = existing_kind(field)
    assert grounded is not None and grounded.kind == "dir" and grounded.named
    assert field.default == "."
    assert [h["line"] for h in ok(call("fs.search", query="needle", path="a.txt"))["hits"]] == [
        2,
        4,
    ]


def test_stat_previews_a_small_text_file_whole(call: Any, workspace: Path) -> None:
    (workspace / "app.toml").write_text('[db]\nengine = "postgres"\n')
    (workspace / "empty.txt").write_text("")
    assert ok(call("fs.stat", path="app.toml"))["preview"] == '[db]\nengine = "postgres"\n'
    assert ok(call("fs.stat", path="empty.txt"))["preview"] == ""


def test_stat_preview_of_a_long_file_is_cut_at_a_line_end(call: Any, workspace: Path) -> None:
    text = "".join(f"line {n}: the quick brown fox jumps\n" for n in range(1, 41))
    (workspace / "long.txt").write_text(text)
    preview = ok(call("fs.stat", path="long.txt"))["preview"]
    assert preview.endswith("\n...")
    head = preview.removesuffix("...")
    assert text.startswith(head) and head.startswith("line 1: ")
    assert 120 < len(head) <= fs_mod.STAT_PREVIEW_CHARS
    one_line = "word " * 200
    (workspace / "one.txt").write_text(one_line)
    cut = ok(call("fs.stat", path="one.txt"))["preview"]
    assert cut.endswith("word...") and len(cut) <= fs_mod.STAT_PREVIEW_CHARS + 3
    assert one_line.startswith(cut.removesuffix("..."))


def test_stat_has_no_preview_for_binaries_folders_links_and_big_files(
    call: Any, workspace: Path
) -> None:
    (workspace / "bin.dat").write_bytes(b"GIF89a\x00\x01text")
    (workspace / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (workspace / "d").mkdir()
    (workspace / "small.txt").write_text("hi\n")
    (workspace / "l").symlink_to("small.txt")
    (workspace / "big.log").write_text(
        ("x" * 99 + "\n") * (fs_mod.STAT_PREVIEW_MAX_BYTES // 100 + 1)
    )
    for path in ("bin.dat", "latin1.txt", "d", "l", "big.log"):
        assert ok(call("fs.stat", path=path))["preview"] is None, path
    assert ok(call("fs.stat", path="big.log"))["lines"] is not None


def test_list_summary_counts_files_by_extension_and_folders(call: Any, workspace: Path) -> None:
    src = workspace / "src"
    (src / "pkg").mkdir(parents=True)
    for name in ("main.py", "util.py", "notes.txt", "Makefile"):
        (src / name).write_text("x")
    (src / "pkg" / "deep.py").write_text("x")
    value = ok(call("fs.list", path="src"))
    assert value["summary"] == "4 files (2 .py, 1 .txt, 1 without extension), 1 folder"
    assert list(value).index("summary") < list(value).index("entries"), "survives a cut"
    python = ok(call("fs.list", path="src", pattern="*.py", recursive=True))
    assert python["summary"] == "3 files (3 .py)"
    (workspace / "empty").mkdir()
    assert ok(call("fs.list", path="empty"))["summary"] == "nothing"
    assert ok(call("fs.list", path="src/main.py"))["summary"] == "1 file (1 .py)"


def test_list_summary_of_the_tree_and_of_a_cut_listing(
    call: Any, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ok(call("fs.list"))["summary"] == "2 files (1 .md, 1 .txt), 2 folders, 1 link"
    monkeypatch.setattr(fs_mod, "MAX_LIST_ENTRIES", 2)
    assert ok(call("fs.list"))["summary"] == (
        "at least 2 files (1 .md, 1 .txt) (the listing stops at 2 entries)"
    )


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [("essay.txt", "teh", "the"), ("./essay.txt", 'teh "cat"\n', "the cat\n")],
)
def test_edit_of_repeated_text_names_the_exact_call_that_changes_every_one(
    system: System, proc: Process, workspace: Path, path: str, old: str, new: str
) -> None:
    text = 'teh "cat"\nsat on teh "cat"\nteh "cat"\nend\n'
    (workspace / "essay.txt").write_text(text)
    result = system.dispatch(proc, {"call": "fs.edit", "path": path, "old": old, "new": new})
    err(result, ErrorCode.E_INVAL)
    message = str(result.message)
    every = {"call": "fs.edit", "path": "essay.txt", "old": old, "new": new, "all": True}
    assert message.endswith("to change every one: " + json.dumps(every, ensure_ascii=False))
    assert "to change just one, give more of the text around it" in message
    copied = json.loads(message.rpartition("to change every one: ")[2])
    assert ok(system.dispatch(proc, copied))["replacements"] == 3
    assert (workspace / "essay.txt").read_text() == text.replace(old, new)


# ---------------------------------------------------------------- fs.search by meaning

CONFIG = """\
[server]
port = 8080
workers = 4

[db]
engine = "postgres"
host = "db.internal"
"""
ENGINE_LINE = 6
DB_QUESTION = "which database does the app use?"


class ScriptedFiles:
    """A search by meaning that answers with the given hits (or raises) and records its calls."""

    def __init__(self, hits: list[FileHit] | None = None, fail: Exception | None = None) -> None:
        self.hits = hits or []
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    def search(
        self, query: str, k: int = 10, path: str = "", budget_s: float | None = None
    ) -> FileSearchResult:
        self.calls.append({"query": query, "k": k, "path": path, "budget_s": budget_s})
        if self.fail is not None:
            raise self.fail
        scan = ScanReport(0, 0, 0, 0, 0, 0, 0, False)
        return FileSearchResult(query=query, hits=self.hits, scan=scan)


def file_hit(path: str, start: int, end: int, text: str, similarity: float) -> FileHit:
    return FileHit(path, start, end, text, score=0.03, similarity=similarity)


def meaning_search(proc: Process, files: Any, **args: Any) -> dict[str, Any]:
    """fs.search's handler given a search by meaning, as the kernel would value it."""
    call = search_mod.FsSearch(**{"query": DB_QUESTION, **args})
    return search_mod.fs_search(call, proc, files).model_dump(mode="json", exclude_none=True)


def test_meaning_hits_come_first_when_no_line_holds_all_words(
    call: Any, proc: Process, workspace: Path
) -> None:
    (workspace / "config.toml").write_text(CONFIG)
    (workspace / "README.md").write_text("# Shop app\nA small web shop.\n")
    words = ok(call("fs.search", query=DB_QUESTION))
    assert words["matches"] == 1 and words["note"] is None  # "app" alone, in the README
    files = ScriptedFiles(
        [
            file_hit("config.toml", 5, 7, '[db]\nengine = "postgres"\nhost = "db.internal"', 0.19),
            file_hit("README.md", 1, 2, "# Shop app\nA small web shop.", 0.21),
            file_hit("config.toml", 1, 3, "[server]\nport = 8080\nworkers = 4", 0.05),
        ]
    )
    value = meaning_search(proc, files)
    assert value["hits"][0] == {
        "path": "config.toml",
        "line": 5,
        "end_line": 7,
        "text": '[db]\nengine = "postgres"\nhost = "db.internal"',
        "score": 0.19,
        "by": "meaning",
    }
    assert [(h["path"], h.get("by")) for h in value["hits"]] == [
        ("config.toml", "meaning"),
        ("README.md", "meaning"),  # the README's word hit lies inside it: shown once
    ]
    assert "by meaning" in value["note"]
    assert files.calls == [
        {
            "query": DB_QUESTION,
            "k": 2 * search_mod.SEARCH_MEANING_HITS,
            "path": ".",
            "budget_s": search_mod.SEARCH_MEANING_SECONDS,
        }
    ]
    toml_only = meaning_search(proc, files, pattern="*.toml", max_hits=1)
    assert [(h["path"], h["line"]) for h in toml_only["hits"]] == [("config.toml", 5)]


def test_meaning_is_not_asked_when_a_line_holds_every_word(proc: Process, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("the app uses the orders database\n")
    files = ScriptedFiles([file_hit("notes.txt", 1, 1, "x", 0.9)])
    value = meaning_search(proc, files)
    assert files.calls == [] and "note" not in value
    assert [h["line"] for h in value["hits"]] == [1]


def test_a_failing_meaning_index_leaves_the_word_hits(
    proc: Process, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (workspace / "README.md").write_text("# Shop app\n")
    files = ScriptedFiles(fail=LlmosError(ErrorCode.E_BACKEND, "the embedding model is broken"))
    with caplog.at_level(logging.WARNING, logger=search_mod.__name__):
        value = meaning_search(proc, files)
    assert [(h["path"], h["line"]) for h in value["hits"]] == [("README.md", 1)]
    assert "note" not in value
    assert "the embedding model is broken" in caplog.text
    assert meaning_search(proc, ScriptedFiles(fail=RuntimeError("sqlite gone")))["hits"]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """all-MiniLM-L6-v2, loaded once, as tests/memory/conftest.py loads it (every Embedder in
    the process shares the loaded model)."""
    loaded = Embedder()
    loaded.load()
    return loaded


def test_a_question_no_word_answers_is_found_by_meaning(
    call: Any, proc: Process, settings: Settings, workspace: Path, embedder: Embedder
) -> None:
    (workspace / "config.toml").write_text(CONFIG)
    (workspace / "notes").mkdir()
    (workspace / "notes" / "todo.txt").write_text(
        "- renew the car insurance before March\n- call the dentist about the crown\n"
    )
    words = search_mod.fs_search(search_mod.FsSearch(query=DB_QUESTION), proc)
    assert words.matches == 0 and words.hits == []
    wired = ok(call("fs.search", query=DB_QUESTION))
    assert wired["hits"] and wired["hits"][0]["path"] == "config.toml", "dispatch adds meaning"
    with FileIndex.open(settings, proc.workspace, embedder) as files:
        value = meaning_search(proc, files)
    found = [h for h in value["hits"] if h["path"] == "config.toml"]
    assert found and found[0]["by"] == "meaning", value
    assert found[0]["line"] <= ENGINE_LINE <= found[0]["end_line"]
    assert 'engine = "postgres"' in found[0]["text"]
    assert "notes/todo.txt" not in {h["path"] for h in value["hits"]}, "unrelated: left out"


# ---------------------------------------------------------------- the table


def test_arguments_that_name_existing_paths_are_marked(system: System) -> None:
    marked = {}
    for spec in system.registry.specs():
        if spec.family != "fs":
            continue
        for name, info in spec.model.model_fields.items():
            kind = existing_kind(info)
            if kind is not None:
                # (kind, patterns allowed, only real ones)
                marked[f"{spec.name}.{name}"] = (kind.kind, kind.patterns, kind.real)
    assert marked == {
        "fs.read.path": ("file", False, False),
        "fs.list.path": ("dir", False, False),
        "fs.search.path": ("dir", False, False),
        "fs.append.path": ("file", False, True),
        "fs.edit.path": ("file", False, True),
        "fs.move.src": ("any", True, False),
        "fs.copy.src": ("file", True, False),
        "fs.stat.path": ("any", False, False),
        "fs.delete.path": ("any", True, False),
    }


def test_fs_calls_are_registered_most_used_first(system: System, settings: Settings) -> None:
    fs_calls = [s.name for s in system.registry.specs() if s.family == "fs"]
    assert fs_calls[:4] == ["fs.read", "fs.write", "fs.list", "fs.search"]
    assert {"fs.append", "fs.edit"} <= set(fs_calls)
    assert {"fs.append", "fs.edit", "calc"} <= set(settings.default_caps)
    assert "fs.delete" not in settings.default_caps


def test_a_destination_ending_in_a_slash_is_a_folder_made_if_missing(
    system: System, proc: Process, workspace: Path
) -> None:
    (workspace / "todo.txt").write_text("file taxes\n")
    (workspace / "plan.txt").write_text("ship it\n")
    moved = system.dispatch(proc, {"call": "fs.move", "src": "todo.txt", "dst": "done/"})
    assert moved.ok, moved.message
    assert (workspace / "done" / "todo.txt").read_text() == "file taxes\n"
    copied = system.dispatch(proc, {"call": "fs.copy", "src": "plan.txt", "dst": "old/2026/"})
    assert copied.ok and (workspace / "old" / "2026" / "plan.txt").read_text() == "ship it\n"
    renamed = system.dispatch(proc, {"call": "fs.move", "src": "plan.txt", "dst": "final"})
    assert renamed.ok and (workspace / "final").is_file(), "without a slash it is a new name"


def test_a_narrowed_search_that_finds_nothing_says_where_else_to_look(
    call: Any, corpus: Path
) -> None:
    # "the wifi password for the cabin" searched logs/* and the model replied it was not there.
    (corpus / "notes.txt").write_text("The wifi password for the cabin is larch-7731.\n")
    in_folder = ok(call("fs.search", query="wifi password", path="sub"))
    assert in_folder["matches"] == 0
    assert in_folder["note"] == (
        'nothing in sub matches; it may be elsewhere: search again with path "."'
    )
    by_glob = ok(call("fs.search", query="wifi password", pattern="*.md"))
    assert by_glob["note"] == (
        "nothing in files matching *.md matches; it may be elsewhere: search again without "
        "the pattern"
    )
    both = ok(call("fs.search", query="wifi password", path="sub", pattern="*.txt"))
    assert both["note"].startswith("nothing in files matching *.txt in sub matches")
    assert both["note"].endswith('with path "." and without the pattern')
    found = ok(call("fs.search", query="wifi password"))
    assert found["note"] is None and found["hits"][0]["path"] == "notes.txt"
