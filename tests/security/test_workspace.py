"""Workspace confinement: traversal, symlink escapes, TOCTOU swaps and a random-tree property."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import llmos.syscalls.fs as fs_mod
import llmos.syscalls.fs_search as search_mod
from llmos.atomic import write_atomic_at
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError, os_error
from llmos.security.workspace import Located, Workspace
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System

SECRET = "TOP-SECRET-outside-the-workspace"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace holding secret.txt and sub/inner.txt."""
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "secret.txt").write_text(SECRET)
    (out / "sub" / "inner.txt").write_text(SECRET + "-inner")
    return out


@pytest.fixture
def call(system: System, proc: Process) -> Callable[..., SyscallResult]:
    """Dispatch one call for the default process: call("fs.read", path="x")."""

    def run(name: str, **args: Any) -> SyscallResult:
        return system.dispatch(proc, {"call": name, **args})

    return run


def snapshot(top: Path, *skip: Path) -> dict[str, tuple[str, object]]:
    """Every entry under `top` (never following links): kind plus bytes, link target or mode."""
    found: dict[str, tuple[str, object]] = {}
    pending = [(top, "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                if path in skip:
                    continue
                rel = prefix + entry.name
                if entry.is_symlink():
                    found[rel] = ("link", os.readlink(path))
                elif entry.is_dir(follow_symlinks=False):
                    found[rel] = ("dir", stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
                    pending.append((path, rel + "/"))
                else:
                    found[rel] = ("file", path.read_bytes())
    return found


def refused(result: SyscallResult) -> None:
    """Assert an E_PERM refusal that shows nothing of the secret."""
    assert not result.ok, f"expected E_PERM, got success {result.value}"
    assert result.code is ErrorCode.E_PERM, f"{result.code}: {result.message}"
    assert SECRET not in (result.message or "")


def no_leak(result: SyscallResult) -> None:
    """Assert that nothing of the secret appears anywhere in a result."""
    assert SECRET not in json.dumps(result.model_dump(mode="json"))


# ---------------------------------------------------------------- path strings


@pytest.mark.parametrize(
    "path",
    ["..", "../secret.txt", "a/../b", "a/..", "a/b/../../..", "./..", "/..", "a/./../..", "x/.."],
)
@pytest.mark.parametrize(
    "op", ["fs.read", "fs.write", "fs.list", "fs.stat", "fs.delete", "fs.mkdir", "fs.search"]
)
def test_dotdot_anywhere_is_refused(
    call: Callable[..., SyscallResult], workspace: Path, outside: Path, path: str, op: str
) -> None:
    (workspace / "a" / "b").mkdir(parents=True)
    before = snapshot(workspace.parent, workspace.parent / "llmos-home")
    args: dict[str, Any] = {"path": path}
    if op == "fs.write":
        args["content"] = "pwned"
    if op == "fs.search":
        args["query"] = "secret"
    if op == "fs.delete":
        args["recursive"] = True
    refused(call(op, **args))
    assert snapshot(workspace.parent, workspace.parent / "llmos-home") == before


@pytest.mark.parametrize("src,dst", [("../outside/secret.txt", "x"), ("f.txt", "a/../../f.txt")])
def test_dotdot_in_move_is_refused(
    call: Callable[..., SyscallResult], workspace: Path, outside: Path, src: str, dst: str
) -> None:
    (workspace / "f.txt").write_text("mine")
    (workspace / "a").mkdir()
    before = snapshot(workspace.parent, workspace.parent / "llmos-home")
    refused(call("fs.move", src=src, dst=dst, overwrite=True))
    assert snapshot(workspace.parent, workspace.parent / "llmos-home") == before


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc", "/proc/self/environ", "/etc/../etc"])
def test_absolute_machine_paths_are_refused(
    call: Callable[..., SyscallResult], workspace: Path, path: str
) -> None:
    refused(call("fs.read", path=path))
    refused(call("fs.list", path=path))
    refused(call("fs.write", path=path, content="x"))


def test_absolute_path_into_sibling_folder_is_refused(
    call: Callable[..., SyscallResult], proc: Process, outside: Path
) -> None:
    root = proc.workspace.root
    refused(call("fs.read", path=str(outside.resolve() / "secret.txt")))
    # string-prefix confusion: /.../ws2 starts with /.../ws but is not inside it
    sibling = root.parent / (root.name + "2")
    sibling.mkdir()
    (sibling / "secret.txt").write_text(SECRET)
    refused(call("fs.read", path=f"{sibling}/secret.txt"))
    refused(call("fs.write", path=f"{sibling}/new.txt", content="x"))
    assert os.listdir(sibling) == ["secret.txt"]


@pytest.mark.parametrize("path", ["~", "~/secret.txt", "~root/.bashrc", "~/../etc/passwd"])
def test_home_directory_is_refused(
    call: Callable[..., SyscallResult], workspace: Path, path: str
) -> None:
    refused(call("fs.read", path=path))
    refused(call("fs.write", path=path, content="x"))
    refused(call("fs.list", path=path))
    assert os.listdir(workspace) == []


def test_tilde_inside_a_path_is_an_ordinary_name(
    call: Callable[..., SyscallResult], workspace: Path
) -> None:
    assert call("fs.write", path="a/~", content="x").ok
    assert (workspace / "a" / "~").read_text() == "x"


def test_relpath_normalises(proc: Process) -> None:
    ws = proc.workspace
    root = str(ws.root)
    for path in ("x", "./x", "/x", ".//x/", f"{root}/x", f"{root}//./x"):
        assert ws.relpath(path) == "x", path
    for path in ("", ".", "/", root, f"{root}/"):
        assert ws.relpath(path) == "", path
    with pytest.raises(LlmosError) as info:
        ws.relpath("a\x00b")
    assert info.value.code is ErrorCode.E_INVAL


def test_workspace_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "missing"):
        with pytest.raises(LlmosError) as info:
            Workspace(bad)
        assert info.value.code is ErrorCode.E_NOTDIR


# ---------------------------------------------------------------- symlinks to outside


def link_targets(outside: Path, workspace: Path) -> dict[str, tuple[str, str]]:
    """(file target, dir target) for each way a link can name the outside folder."""
    rel = os.path.relpath(outside, workspace)
    return {
        "absolute": (str(outside / "secret.txt"), str(outside)),
        "relative": (f"{rel}/secret.txt", rel),
        "absolute-dotdot": (
            f"{workspace.resolve()}/../outside/secret.txt",
            f"{workspace.resolve()}/../outside",
        ),
    }


@pytest.fixture(params=["absolute", "relative", "absolute-dotdot"])
def escapes(request: pytest.FixtureRequest, workspace: Path, outside: Path) -> Path:
    """Workspace links out: file-link -> secret.txt, dir-link -> outside, and sub/ copies."""
    file_target, dir_target = link_targets(outside, workspace)[request.param]
    (workspace / "sub").mkdir()
    (workspace / "file-link").symlink_to(file_target)
    (workspace / "dir-link").symlink_to(dir_target)
    # inside sub/ a relative target needs one more ".."
    extra = "../" if request.param == "relative" else ""
    (workspace / "sub" / "file-link").symlink_to(extra + file_target)
    (workspace / "sub" / "dir-link").symlink_to(extra + dir_target)
    return workspace


LINK_PATHS = [
    "file-link",
    "dir-link/secret.txt",
    "dir-link/sub/inner.txt",
    "sub/file-link",
    "sub/dir-link/secret.txt",
    "/dir-link/secret.txt",
    "./sub/dir-link/sub/inner.txt",
]


@pytest.mark.parametrize("path", LINK_PATHS)
def test_read_through_link_to_outside_is_refused(
    call: Callable[..., SyscallResult], escapes: Path, outside: Path, path: str
) -> None:
    refused(call("fs.read", path=path))
    refused(call("fs.search", query="secret", path=path))


@pytest.mark.parametrize("mode", ["overwrite", "append", "create"])
@pytest.mark.parametrize("path", [*LINK_PATHS, "dir-link/new.txt", "sub/dir-link/sub/new.txt"])
def test_write_through_link_to_outside_is_refused(
    call: Callable[..., SyscallResult], escapes: Path, outside: Path, path: str, mode: str
) -> None:
    before = snapshot(outside)
    refused(call("fs.write", path=path, content="pwned", mode=mode))
    assert snapshot(outside) == before


def test_write_through_dangling_link_to_outside_creates_nothing(
    call: Callable[..., SyscallResult], workspace: Path, outside: Path
) -> None:
    (workspace / "dangling").symlink_to(outside / "new.txt")
    (workspace / "dangling-rel").symlink_to("../outside/new2.txt")
    before = snapshot(outside)
    for path in ("dangling", "dangling-rel"):
        for mode in ("overwrite", "append", "create"):
            refused(call("fs.write", path=path, content="pwned", mode=mode))
    assert snapshot(outside) == before


@pytest.mark.parametrize(
    "path", ["dir-link", "sub/dir-link", "dir-link/sub", "file-link", "sub/file-link"]
)
def test_list_and_search_through_link_to_outside_are_refused(
    call: Callable[..., SyscallResult], escapes: Path, path: str
) -> None:
    refused(call("fs.list", path=path))
    refused(call("fs.list", path=path, recursive=True))
    refused(call("fs.search", query="secret", path=path))


def test_list_and_search_of_workspace_never_enter_outside_links(
    call: Callable[..., SyscallResult], escapes: Path
) -> None:
    listing = call("fs.list", recursive=True)
    assert listing.ok
    paths = {e["path"]: e["type"] for e in listing.value["entries"]}
    assert paths == {
        "dir-link": "link",
        "file-link": "link",
        "sub": "dir",
        "sub/dir-link": "link",
        "sub/file-link": "link",
    }
    found = call("fs.search", query="TOP-SECRET")
    assert found.ok
    assert found.value["hits"] == []
    no_leak(found)


def test_stat_of_link_to_outside_describes_the_link_only(
    call: Callable[..., SyscallResult], escapes: Path
) -> None:
    result = call("fs.stat", path="dir-link")
    assert result.ok
    assert result.value["type"] == "link"
    refused(call("fs.stat", path="dir-link/secret.txt"))
    refused(call("fs.stat", path="sub/dir-link/sub"))


def test_mkdir_through_link_to_outside_is_refused(
    call: Callable[..., SyscallResult], escapes: Path, outside: Path
) -> None:
    before = snapshot(outside)
    refused(call("fs.mkdir", path="dir-link/new"))
    refused(call("fs.mkdir", path="sub/dir-link/a/b/c"))
    refused(call("fs.mkdir", path="dir-link"))
    assert snapshot(outside) == before


def test_delete_link_to_outside_removes_only_the_link(
    call: Callable[..., SyscallResult], escapes: Path, outside: Path
) -> None:
    before = snapshot(outside)
    refused(call("fs.delete", path="dir-link/secret.txt"))
    refused(call("fs.delete", path="dir-link/sub", recursive=True))
    assert call("fs.delete", path="file-link").ok
    assert call("fs.delete", path="dir-link", recursive=True).ok
    assert call("fs.delete", path="sub", recursive=True).ok
    assert os.listdir(escapes) == []
    assert snapshot(outside) == before


def test_move_with_links_to_outside_never_touches_outside(
    call: Callable[..., SyscallResult], escapes: Path, outside: Path
) -> None:
    (escapes / "mine.txt").write_text("mine")
    before = snapshot(outside)
    # moving out of, into, or through a link to outside is refused
    refused(call("fs.move", src="dir-link/secret.txt", dst="stolen.txt"))
    refused(call("fs.move", src="sub/dir-link/sub", dst="stolen"))
    refused(call("fs.move", src="mine.txt", dst="dir-link"))
    refused(call("fs.move", src="mine.txt", dst="dir-link/mine.txt"))
    refused(call("fs.move", src="mine.txt", dst="file-link", overwrite=True))
    # moving the link itself is fine: the link moves, its target stays put
    assert call("fs.move", src="dir-link", dst="moved-link").ok
    assert (escapes / "moved-link").is_symlink()
    assert call("fs.move", src="file-link", dst="sub/renamed", overwrite=True).ok
    assert (escapes / "mine.txt").read_text() == "mine"
    assert not (escapes / "stolen.txt").exists()
    assert snapshot(outside) == before


# ---------------------------------------------------------------- chains, loops, inside links


def test_symlink_chain_ending_outside_is_refused(
    call: Callable[..., SyscallResult], workspace: Path, outside: Path
) -> None:
    (workspace / "d").mkdir()
    (workspace / "l3").symlink_to("../outside/secret.txt")
    (workspace / "d" / "l2").symlink_to("../l3")
    (workspace / "l1").symlink_to("d/l2")
    refused(call("fs.read", path="l1"))
    refused(call("fs.write", path="l1", content="pwned"))
    assert (outside / "secret.txt").read_text() == SECRET


def test_symlink_chain_staying_inside_is_followed(
    call: Callable[..., SyscallResult], workspace: Path, proc: Process
) -> None:
    (workspace / "data" / "deep").mkdir(parents=True)
    (workspace / "data" / "deep" / "f.txt").write_text("followed")
    (workspace / "links").mkdir()
    (workspace / "l3").symlink_to(f"{proc.workspace.root}/data/deep/f.txt")
    (workspace / "links" / "l2").symlink_to("../l3")
    (workspace / "l1").symlink_to("links/l2")
    (workspace / "dir-alias").symlink_to("data/deep")
    (workspace / "links" / "up").symlink_to("..")
    result = call("fs.read", path="l1")
    assert result.ok
    assert result.value["text"] == "followed"
    assert result.value["path"] == "data/deep/f.txt"
    result = call("fs.read", path="links/up/dir-alias/f.txt")
    assert result.ok
    assert result.value["path"] == "data/deep/f.txt"
    assert call("fs.write", path="dir-alias/new.txt", content="via alias").ok
    assert (workspace / "data" / "deep" / "new.txt").read_text() == "via alias"
    listing = call("fs.list", path="dir-alias")
    assert listing.ok
    assert listing.value["path"] == "data/deep"


def test_link_that_climbs_above_root_and_back_is_refused(
    call: Callable[..., SyscallResult], workspace: Path
) -> None:
    (workspace / "f.txt").write_text("mine")
    (workspace / "sneaky").symlink_to(f"../{workspace.name}/f.txt")
    refused(call("fs.read", path="sneaky"))


@pytest.mark.parametrize("op", ["fs.read", "fs.write", "fs.list", "fs.mkdir", "fs.search"])
def test_symlink_loops_are_refused_without_hanging(
    call: Callable[..., SyscallResult], workspace: Path, op: str
) -> None:
    (workspace / "self").symlink_to("self")
    (workspace / "a").symlink_to("b")
    (workspace / "b").symlink_to("a")
    (workspace / "grow").symlink_to("grow/x/y")
    for path in ("self", "a", "b/file", "grow", "grow/z"):
        args: dict[str, Any] = {"path": path}
        if op == "fs.write":
            args["content"] = "x"
        if op == "fs.search":
            args["query"] = "x"
        refused(call(op, **args))


def test_too_many_hops_through_a_directory_self_link(
    call: Callable[..., SyscallResult], workspace: Path
) -> None:
    (workspace / "d").mkdir()
    (workspace / "d" / "f.txt").write_text("found")
    (workspace / "d" / "again").symlink_to(".")
    few = call("fs.read", path="d/" + "again/" * 5 + "f.txt")
    assert few.ok
    assert few.value["path"] == "d/f.txt"
    refused(call("fs.read", path="d/" + "again/" * 60 + "f.txt"))


def test_link_to_root_and_to_parent_of_root(
    call: Callable[..., SyscallResult], workspace: Path
) -> None:
    (workspace / "f.txt").write_text("root file")
    (workspace / "here").symlink_to(".")
    (workspace / "up").symlink_to("..")
    (workspace / "slash").symlink_to("/")
    assert call("fs.read", path="here/f.txt").value["text"] == "root file"
    assert call("fs.list", path="here").value["path"] == "."
    refused(call("fs.list", path="up"))
    refused(call("fs.read", path="slash/etc/passwd"))
    refused(call("fs.list", path="slash"))


# ---------------------------------------------------------------- TOCTOU


def test_parent_swapped_for_link_after_locate_does_not_redirect(
    workspace: Path, outside: Path
) -> None:
    ws = Workspace(workspace)
    (workspace / "a" / "b").mkdir(parents=True)
    with ws.locate("a/b/new.txt") as loc:
        os.rename(workspace / "a", workspace / "a-moved")
        (workspace / "a").symlink_to(outside)
        (outside / "b").mkdir()
        before = snapshot(outside)
        fd = os.open(loc.name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=loc.dir_fd)
        os.write(fd, b"stays inside")
        os.close(fd)
        write_atomic_at(loc.dir_fd, "atomic.txt", b"also inside")
    assert (workspace / "a-moved" / "b" / "new.txt").read_bytes() == b"stays inside"
    assert (workspace / "a-moved" / "b" / "atomic.txt").read_bytes() == b"also inside"
    assert snapshot(outside) == before


def test_final_component_swapped_for_link_is_refused(workspace: Path, outside: Path) -> None:
    ws = Workspace(workspace)
    (workspace / "a").mkdir()
    (workspace / "a" / "f.txt").write_text("mine")
    with ws.locate("a/f.txt") as loc:
        os.unlink(workspace / "a" / "f.txt")
        (workspace / "a" / "f.txt").symlink_to(outside / "secret.txt")
        with pytest.raises(OSError) as info:
            os.open(loc.name, fs_mod.FILE_FLAGS, dir_fd=loc.dir_fd)
        assert info.value.errno == errno.ELOOP
        assert os_error(info.value, "a/f.txt").code is ErrorCode.E_PERM
        with pytest.raises(OSError):
            os.open(loc.name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW, dir_fd=loc.dir_fd)
    assert (outside / "secret.txt").read_text() == SECRET


def test_directory_swapped_during_walk_fails_closed(
    workspace: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A component that is a folder when statted but a link when opened is refused (ELOOP)."""
    ws = Workspace(workspace)
    (workspace / "a").mkdir()
    real_stat = os.stat
    swapped: list[bool] = []

    def racing_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        info = real_stat(path, *args, **kwargs)
        if path == "a" and not swapped:
            swapped.append(True)
            os.rename(workspace / "a", workspace / "a-moved")
            (workspace / "a").symlink_to(outside)
        return info

    monkeypatch.setattr(os, "stat", racing_stat)
    with pytest.raises(LlmosError) as info, ws.locate("a/secret.txt"):
        pass
    assert swapped
    assert info.value.code is ErrorCode.E_PERM


@pytest.fixture
def swap_after_locate(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Make the next Workspace.locate run `swap` right after resolving, before the handler acts."""

    def install(swap: Callable[[], None]) -> None:
        original = Workspace.locate
        pending = [swap]

        @contextlib.contextmanager
        def racing(self: Workspace, path: str, **kwargs: Any) -> Iterator[Located]:
            with original(self, path, **kwargs) as loc:
                if pending:
                    pending.pop()()
                yield loc

        monkeypatch.setattr(Workspace, "locate", racing)

    return install


def test_handler_read_of_final_component_swapped_to_outside_is_refused(
    call: Callable[..., SyscallResult],
    workspace: Path,
    outside: Path,
    swap_after_locate: Callable[[Callable[[], None]], None],
) -> None:
    target = workspace / "f.txt"
    target.write_text("mine")

    def swap() -> None:
        target.unlink()
        target.symlink_to(outside / "secret.txt")

    swap_after_locate(swap)
    result = call("fs.read", path="f.txt")
    refused(result)
    no_leak(result)


def test_handler_append_to_final_component_swapped_to_outside_is_refused(
    call: Callable[..., SyscallResult],
    workspace: Path,
    outside: Path,
    swap_after_locate: Callable[[Callable[[], None]], None],
) -> None:
    target = workspace / "f.txt"
    target.write_text("mine")
    before = snapshot(outside)

    def swap() -> None:
        target.unlink()
        target.symlink_to(outside / "secret.txt")

    swap_after_locate(swap)
    refused(call("fs.write", path="f.txt", content="pwned", mode="append"))
    assert snapshot(outside) == before


def test_handler_overwrite_replaces_a_swapped_in_link_not_its_target(
    call: Callable[..., SyscallResult],
    workspace: Path,
    outside: Path,
    swap_after_locate: Callable[[Callable[[], None]], None],
) -> None:
    target = workspace / "f.txt"
    target.write_text("mine")
    before = snapshot(outside)

    def swap() -> None:
        target.unlink()
        target.symlink_to(outside / "secret.txt")

    swap_after_locate(swap)
    assert call("fs.write", path="f.txt", content="new").ok
    assert not target.is_symlink()
    assert target.read_text() == "new"
    assert snapshot(outside) == before


def test_handler_write_after_parent_swapped_stays_inside(
    call: Callable[..., SyscallResult],
    workspace: Path,
    outside: Path,
    swap_after_locate: Callable[[Callable[[], None]], None],
) -> None:
    (workspace / "a").mkdir()
    before = snapshot(outside)

    def swap() -> None:
        os.rename(workspace / "a", workspace / "a-moved")
        (workspace / "a").symlink_to(outside)

    swap_after_locate(swap)
    assert call("fs.write", path="a/secret.txt", content="inside").ok
    assert (workspace / "a-moved" / "secret.txt").read_text() == "inside"
    assert snapshot(outside) == before


def test_search_with_folder_swapped_mid_walk_reads_no_outside_file(
    call: Callable[..., SyscallResult],
    workspace: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (workspace / "sub").mkdir()
    (workspace / "sub" / "secret.txt").write_text("harmless needle")
    real_walk = fs_mod._walk

    def racing_walk(dir_fd: int, recursive: bool, hidden: tuple[str, ...] = ()) -> Iterator[Any]:
        for item in real_walk(dir_fd, recursive, hidden):
            if item[0] == "sub/secret.txt":
                os.rename(workspace / "sub", workspace / "sub-moved")
                (workspace / "sub").symlink_to(outside)
            yield item

    monkeypatch.setattr(search_mod, "_walk", racing_walk)
    result = call("fs.search", query="e")
    assert result.ok
    no_leak(result)
    assert [h["text"] for h in result.value["hits"]] == ["harmless needle"]


# ---------------------------------------------------------------- property test

NAMES = ["a", "b", "c", "l1", "l2"]
PATH_PARTS = [*NAMES * 4, "..", ".", "", "~", "outside", "secret.txt", "ws", "ws2", "sub"]
TARGET_PARTS = ["..", ".", "a", "b", "l1", "l2", "outside", "secret.txt", "sub", "ws", "ws2"]
ESCAPES = [
    "..",
    "../outside",
    "../outside/secret.txt",
    "../../outside/sub",
    "../outside/sub/secret.txt",
    "../outside/back",
    "../ws2/secret.txt",
    "../ws/../outside",
    "a/../../outside",
]
GUARDS = [f"guard{i:02d}" for i in range(16)]
OUTSIDE_TARGETS = ["outside", "outside/secret.txt", "outside/sub", "outside/back", "ws2", "."]

names_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)
target_st = st.one_of(
    st.tuples(st.just("rel"), st.lists(st.sampled_from(TARGET_PARTS), max_size=5)),
    st.tuples(st.just("rel"), names_st),
    st.tuples(st.just("rel"), st.sampled_from(ESCAPES).map(lambda t: t.split("/"))),
    # a relative path from the link's own folder to something outside, whatever its depth
    st.tuples(st.just("escape"), st.sampled_from(OUTSIDE_TARGETS).map(lambda t: t.split("/"))),
    st.tuples(st.just("escape"), st.sampled_from(OUTSIDE_TARGETS).map(lambda t: t.split("/"))),
    st.tuples(
        st.sampled_from(["ws", "root", "outside"]),
        st.lists(st.sampled_from(TARGET_PARTS), max_size=4),
    ),
)
path_st = st.tuples(
    st.sampled_from(["", "", "", "", "/", "./", "ws", "root", "outside", "~/"]),
    # start at the i-th link (or file) made, or (True) at the folder holding it
    st.one_of(st.none(), st.tuples(st.integers(0, 11), st.booleans())),
    st.one_of(st.just([]), st.lists(st.sampled_from(PATH_PARTS), min_size=1, max_size=3)),
)
op_st = st.tuples(
    st.sampled_from(
        [
            "fs.read",
            "fs.write",
            "fs.delete",
            "fs.move",
            "fs.list",
            "fs.mkdir",
            "fs.stat",
            "fs.search",
        ]
    ),
    path_st,
    path_st,
    st.booleans(),
    st.sampled_from(["overwrite", "append", "create"]),
)
tree_st = st.fixed_dictionaries(
    {
        "dirs": st.lists(names_st, max_size=6),
        "files": st.lists(names_st, max_size=8),
        "links": st.lists(
            st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2), target_st),
            min_size=1,
            max_size=8,
        ),
    }
)


@pytest.fixture(scope="module")
def shared_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One System for every hypothesis example (function-scoped fixtures do not mix)."""
    home = tmp_path_factory.mktemp("llmos-home")
    with System(Settings(home=home), plugins=False) as system:
        yield system


def _build_path(
    spec: tuple[str, tuple[int, bool] | None, list[str]], links: list[str], root: Path
) -> str:
    kind, link, parts = spec
    if link is not None and links:
        start = links[link[0] % len(links)]
        if link[1]:
            start = start.rpartition("/")[0] or "."
        parts = [start, *parts]
    body = "/".join(parts)
    ws = root / "ws"
    prefixes = {"ws": f"{ws}/", "root": f"{root}/", "outside": f"{root}/outside/"}
    return prefixes.get(kind, kind) + body


def _target(kind: str, parts: list[str], root: Path, link: Path) -> str:
    body = "/".join(parts)
    ws = root / "ws"
    if kind == "rel":
        return body or "."
    if kind == "escape":
        return os.path.relpath(root / body, link.parent)
    base = {"ws": ws, "root": root, "outside": root / "outside"}[kind]
    return f"{base}/{body}" if body else str(base)


def _is_real_dir(ws: Path, parts: list[str]) -> bool:
    """Whether ws/parts... is a chain of real folders (no link), so creating in it stays inside."""
    here = ws
    for part in parts:
        here = here / part
        try:
            if not stat.S_ISDIR(here.lstat().st_mode):
                return False
        except OSError:
            return False
    return True


def _build_tree(tree: dict[str, Any], root: Path, ws: Path) -> list[str]:
    """Create the folders, files and links of `tree` (never through a link).

    Returns the links made, then the files made, for the calls to start their paths at.
    """
    made: list[str] = []
    for parts in tree["dirs"]:
        with contextlib.suppress(OSError):
            ws.joinpath(*parts).mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for i, parts in enumerate(tree["files"]):
        if _is_real_dir(ws, parts[:-1]) and not ws.joinpath(*parts).exists():
            ws.joinpath(*parts).write_text(f"file {i}\n")
            files.append("/".join(parts))
    for parts, (kind, target_parts) in tree["links"]:
        if _is_real_dir(ws, parts[:-1]) and not os.path.lexists(ws.joinpath(*parts)):
            link = ws.joinpath(*parts)
            os.symlink(_target(kind, target_parts, root, link), link)
            made.append("/".join(parts))
    return made + files


def _result_paths(result: SyscallResult) -> list[str]:
    """Every workspace path an ok result reports (path, src, dst, entries, hits)."""
    if not result.ok or not isinstance(result.value, dict):
        return []
    value = result.value
    shown = [value[k] for k in ("path", "src", "dst") if isinstance(value.get(k), str)]
    for key in ("entries", "hits"):
        shown += [item["path"] for item in value.get(key, [])]
    return shown


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tree=tree_st, ops=st.lists(op_st, min_size=1, max_size=8))
def test_random_trees_and_calls_never_touch_outside(
    shared_system: System, tree: dict[str, Any], ops: list[Any]
) -> None:
    sentinel = f"SENTINEL-{secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(os.path.realpath(tmp))
        # Guard folders above the sandbox: link targets and paths climb at most a few levels
        # above it (no name in the pools exists up there), so even a broken resolver that lets
        # ".." escape lands in these empty guards, never in the host's real folders.
        root = top.joinpath(*GUARDS, "sandbox")
        ws = root / "ws"
        ws.mkdir(parents=True)
        for folder in ("outside", "outside/sub", "ws2"):
            (root / folder).mkdir()
        (root / "outside" / "secret.txt").write_text(sentinel)
        (root / "outside" / "sub" / "secret.txt").write_text(sentinel + "-sub")
        (root / "ws2" / "secret.txt").write_text(sentinel + "-ws2")
        (root / "outside" / "back").symlink_to("../ws")
        before, guarded = snapshot(root, ws), snapshot(top, ws)
        made = _build_tree(tree, root, ws)
        assert snapshot(top, ws) == guarded
        process = shared_system.spawn("prop", ws, patterns=["fs.*"])

        def check(args: dict[str, Any]) -> None:
            result = shared_system.dispatch(process, args)
            event(f"{args['call']} {'ok' if result.ok else result.code}")
            dumped = json.dumps(result.model_dump(mode="json"))
            assert sentinel not in dumped, (args, result)
            for shown in _result_paths(result):
                assert not shown.startswith("/"), (args, result)
                assert ".." not in shown.split("/"), (args, result)
            assert result.code not in (ErrorCode.E_INTERNAL, ErrorCode.E_IO), (args, result)
            assert snapshot(root, ws) == before, (args, result)

        for name, spec, dst_spec, flag, mode in ops:
            path = _build_path(spec, made, root)
            args: dict[str, Any] = {"call": name}
            if name == "fs.move":
                args.update(src=path, dst=_build_path(dst_spec, made, root), overwrite=flag)
            else:
                args["path"] = path
            if name == "fs.write":
                args.update(content="written by the property test", mode=mode)
            elif name in ("fs.delete", "fs.list"):
                args["recursive"] = flag
            elif name == "fs.search":
                args["query"] = "SENTINEL" if flag else "e"
            check(args)
        # then every call through every link still there, and a recursive delete of it all
        for link in made:
            if not os.path.islink(ws / link):
                continue
            check({"call": "fs.read", "path": link})
            check({"call": "fs.read", "path": f"{link}/secret.txt"})
            check({"call": "fs.list", "path": link, "recursive": True})
            check({"call": "fs.search", "query": "SENTINEL", "path": link})
            check({"call": "fs.write", "path": link, "content": "w", "mode": "append"})
            check({"call": "fs.write", "path": f"{link}/probe.txt", "content": "w"})
            check({"call": "fs.mkdir", "path": f"{link}/probe-dir"})
            check({"call": "fs.move", "src": f"{link}/secret.txt", "dst": "stolen.txt"})
        for entry in sorted(os.listdir(ws)):
            check({"call": "fs.delete", "path": entry, "recursive": True})
        assert snapshot(top, ws) == guarded


def test_workspace_keeps_its_folder_when_the_path_is_swapped(tmp_path: Path) -> None:
    """The root handle is held: renaming the folder and putting another in its place
    does not redirect later calls to the new folder."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mine.txt").write_text("mine")
    ws = Workspace(root)
    root.rename(tmp_path / "moved")
    root.mkdir()
    (root / "theirs.txt").write_text("theirs")
    with ws.locate("mine.txt") as loc:
        assert loc.lstat() is not None
    with ws.locate("theirs.txt") as loc:
        assert loc.lstat() is None
    ws.close()
    with pytest.raises(LlmosError) as err, ws.locate("mine.txt"):
        pass
    assert err.value.code == ErrorCode.E_IO
