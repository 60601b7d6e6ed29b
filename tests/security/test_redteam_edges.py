"""Red team, the edges: a symlink swapped mid-call, hard links, FIFOs, huge files, odd names,
image outputs outside, malformed model output, forged or revoked capabilities, hand-edited
grants, audit log and undo journal. Each asserts that nothing outside the workspace changed
and nothing was lost."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.errors import LlmosError
from llmos.security.audit import verify
from llmos.security.capabilities import Capability
from llmos.security.keys import Signer
from llmos.security.workspace import Located, Workspace
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System
from llmos.undo import undo
from tests.security.test_redteam import World, png, refused, tree


@pytest.fixture
def everything(world: World) -> Process:
    """A process holding every capability (no one to ask)."""
    return world.system.spawn("all", world.workspace, patterns=["*"], remembered=False)


def never_internal(result: SyscallResult) -> None:
    assert result.code != "E_INTERNAL", result


# --- A symlink swapped mid-call ------------------------------------------------------------


@pytest.fixture
def swap_after_locate(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Make the next Workspace.locate run `swap` right after resolving, before the handler acts
    on what it resolved."""

    def install(swap: Callable[[], None]) -> None:
        real = Workspace.locate
        pending = [swap]

        @contextlib.contextmanager
        def racing(self: Workspace, path: str, **kwargs: Any) -> Iterator[Located]:
            with real(self, path, **kwargs) as located:
                if pending:
                    pending.pop()()
                yield located

        monkeypatch.setattr(Workspace, "locate", racing)

    return install


@pytest.mark.parametrize(
    "call",
    [
        {"call": "fs.read", "path": "notes.txt"},
        {"call": "fs.write", "path": "notes.txt", "content": "overwritten"},
        {"call": "fs.append", "path": "notes.txt", "text": "appended"},
        {"call": "fs.edit", "path": "notes.txt", "old": "mine", "new": "theirs"},
        {"call": "fs.copy", "src": "notes.txt", "dst": "copy.txt"},
        {"call": "fs.stat", "path": "notes.txt"},
    ],
    ids=lambda call: call["call"],
)
def test_a_file_swapped_for_a_link_to_outside_mid_call_reaches_nothing_outside(
    world: World,
    everything: Process,
    swap_after_locate: Callable[[Callable[[], None]], None],
    call: dict[str, Any],
) -> None:
    notes = world.workspace / "notes.txt"
    notes.write_text("mine\n")
    before = world.snapshot()

    def swap() -> None:
        notes.unlink()
        notes.symlink_to(world.outside / "victim.txt")

    swap_after_locate(swap)
    result = world.call(everything, **call)
    assert "must not change" not in str(result.value), result
    assert world.snapshot() == before


def test_a_folder_swapped_for_a_link_to_outside_mid_call_writes_inside(
    world: World,
    everything: Process,
    swap_after_locate: Callable[[Callable[[], None]], None],
) -> None:
    docs = world.workspace / "docs"
    docs.mkdir()
    before = world.snapshot()

    def swap() -> None:
        docs.rename(world.workspace / "docs-old")
        docs.symlink_to(world.outside)

    swap_after_locate(swap)
    world.call(everything, call="fs.write", path="docs/new.txt", content="x")
    assert world.snapshot() == before
    assert not (world.outside / "new.txt").exists()


# --- Hard links, FIFOs, huge files, odd names ----------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        {"call": "fs.write", "path": "linked.txt", "content": "overwritten"},
        {"call": "fs.edit", "path": "linked.txt", "old": "must", "new": "may"},
        {"call": "fs.append", "path": "linked.txt", "text": "appended"},
        {"call": "fs.write", "path": "linked.txt", "content": "more", "mode": "append"},
    ],
    ids=["write", "edit", "append", "write-append"],
)
def test_a_hard_link_to_an_outside_file_does_not_carry_a_write_out(
    world: World, everything: Process, call: dict[str, Any]
) -> None:
    os.link(world.outside / "victim.txt", world.workspace / "linked.txt")
    before = world.snapshot()
    result = world.call(everything, **call)
    never_internal(result)
    assert world.snapshot() == before, "the write went through the hard link to outside"


def _with_deadline(seconds: float, work: Callable[[], SyscallResult], unblock: Path):
    """Run `work` in a thread; if it is still running after `seconds`, open the FIFO
    `unblock` for writing (which frees a reader blocked on it) and report it hung."""
    out: list[SyscallResult] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    if hung:
        with contextlib.suppress(OSError):
            fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        thread.join(5)
    return hung, (out[0] if out else None)


@pytest.mark.parametrize(
    "call",
    [
        {"call": "fs.read", "path": "pipe"},
        {"call": "fs.stat", "path": "pipe"},
        {"call": "fs.search", "query": "x"},
        {"call": "fs.copy", "src": "pipe", "dst": "copy"},
        {"call": "fs.write", "path": "pipe", "content": "x"},
        {"call": "fs.append", "path": "pipe", "text": "x"},
        {"call": "fs.edit", "path": "pipe", "old": "a", "new": "b"},
        {"call": "image.info", "path": "pipe"},
        {"call": "image.convert", "path": "pipe", "format": "png"},
        {"call": "fs.move", "src": "notes.txt", "dst": "pipe", "overwrite": True},
        {"call": "fs.delete", "path": "pipe"},
    ],
    ids=lambda call: call["call"],
)
def test_a_fifo_in_the_workspace_never_hangs_a_call(
    world: World, everything: Process, call: dict[str, Any]
) -> None:
    pipe = world.workspace / "pipe"
    os.mkfifo(pipe)
    (world.workspace / "notes.txt").write_text("x\n")
    hung, result = _with_deadline(5, lambda: world.call(everything, **call), pipe)
    assert not hung, f"{call['call']} blocked on a FIFO"
    assert result is not None
    never_internal(result)


def test_a_huge_file_is_bounded(world: World, everything: Process) -> None:
    huge = world.workspace / "huge.log"
    with open(huge, "wb") as fh:
        fh.truncate(3 << 30)  # sparse: 3 GiB that take no disk
        fh.seek(1 << 20)
        fh.write(b"needle here\n")
    for call in (
        {"call": "fs.read", "path": "huge.log"},
        {"call": "fs.stat", "path": "huge.log"},
        {"call": "fs.search", "query": "needle"},
        {"call": "fs.edit", "path": "huge.log", "old": "needle", "new": "pin"},
        {"call": "fs.append", "path": "huge.log", "text": "more"},
    ):
        result = world.call(everything, **call)
        never_internal(result)
        assert len(json.dumps(result.value, default=str)) < 2_000_000, call["call"]
    assert huge.stat().st_size >= 3 << 30


@pytest.mark.parametrize(
    "path",
    [
        "a\x00b",
        "notes.txt\x00/../../etc/passwd",
        "x" * 300,
        "/".join(["d" * 50] * 100),
        ("y" * 255 + "/") * 3 + "z" * 256,
    ],
    ids=["nul", "nul-escape", "long-name", "long-path", "long-last-name"],
)
def test_odd_paths_are_clean_refusals(world: World, everything: Process, path: str) -> None:
    before = world.snapshot()
    for call in (
        {"call": "fs.write", "path": path, "content": "x"},
        {"call": "fs.read", "path": path},
        {"call": "fs.mkdir", "path": path},
        {"call": "fs.copy", "src": "notes.txt", "dst": path},
    ):
        result = world.call(everything, **call)
        never_internal(result)
    assert world.snapshot() == before


def test_files_named_like_options_are_plain_files(world: World, everything: Process) -> None:
    ws = world.workspace
    for name in ("-rf", "--help", "-", "--"):
        (ws / name).write_text(f"{name}\n")
    before = tree(ws)
    for name in ("-rf", "--help", "-", "--"):
        result = world.call(everything, call="fs.read", path=name)
        assert result.ok and result.value["text"] == f"{name}\n", result
    assert tree(ws) == before


# --- image.* outputs outside or over files -------------------------------------------------


@pytest.mark.parametrize(
    "output",
    ["OUTSIDE", "../outside/x.png", "~/x.png", "door/x.png", "door-file.png", ".."],
)
def test_an_image_output_never_lands_outside(
    world: World, everything: Process, output: str
) -> None:
    png(world.workspace / "photo.png")
    os.symlink(world.outside, world.workspace / "door")
    os.symlink(world.outside / "victim.txt", world.workspace / "door-file.png")
    output = str(world.outside / "x.png") if output == "OUTSIDE" else output
    before = world.snapshot()
    for call in (
        {"call": "image.convert", "path": "photo.png", "format": "png", "output": output},
        {
            "call": "image.resize",
            "path": "photo.png",
            "width": 5,
            "output": output,
            "overwrite": True,
        },
        {"call": "image.thumbnail", "path": "photo.png", "out_dir": output, "overwrite": True},
    ):
        result = world.call(everything, **call)
        never_internal(result)
    assert world.snapshot() == before


def test_an_image_default_output_through_a_link_lands_inside(
    world: World, everything: Process
) -> None:
    png(world.workspace / "photo.png")
    os.symlink(world.outside / "victim.txt", world.workspace / "photo_thumb.png")
    before = world.snapshot()
    for overwrite in (False, True):
        result = world.call(
            everything, call="image.thumbnail", path="photo.png", size=4, overwrite=overwrite
        )
        never_internal(result)
    assert world.snapshot() == before


# --- Malformed model output ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"call": "fs.read", "path": 5},
        {"call": "fs.read", "path": ["a", "b"]},
        {"call": "fs.read", "path": None},
        {"call": "fs.read", "path": "notes.txt", "extra": 1},
        {"call": "fs.read", "path": "notes.txt", "offset": -1},
        {"call": "fs.write", "path": "a.txt", "content": {"nested": True}},
        {"call": "fs.write", "path": "a.txt", "content": "x", "mode": "evil"},
        {"call": "fs.delete", "path": "notes.txt", "recursive": "yes please"},
        {"path": "notes.txt"},
        {"call": None},
        {"call": 7},
        {"call": ["fs.read"]},
        {"call": "fs.nosuch"},
        {"call": ""},
        {"call": "fs.read"},
        {},
        {"call": "fs.read", "path": "notes.txt", "call ": "fs.delete"},
        [],
        None,
        "fs.delete notes.txt",
        42,
    ],
)
def test_malformed_model_output_is_a_typed_error_and_changes_nothing(
    world: World, everything: Process, raw: Any
) -> None:
    (world.workspace / "notes.txt").write_text("keep\n")
    before = tree(world.workspace), world.snapshot()
    lines = len((world.home / "audit.log").read_bytes().splitlines())
    result = world.system.dispatch(everything, raw)
    assert not result.ok and result.code in ("E_INVAL", "E_NOSYS"), result
    assert (tree(world.workspace), world.snapshot()) == before
    after = len((world.home / "audit.log").read_bytes().splitlines())
    assert after == lines + 1, "every call, even a malformed one, leaves one audit line"


def test_a_deeply_nested_call_is_a_typed_error(world: World, everything: Process) -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = {"a": deep}
    result = world.system.dispatch(everything, {"call": "fs.write", "path": "a", "content": deep})
    assert not result.ok and result.code in ("E_INVAL",), result
    assert not (world.workspace / "a").exists()


# --- Capabilities forged, tampered, revoked; grants.json edited -----------------------------


def _app(world: World) -> Process:
    return world.system.spawn("app", world.workspace, patterns=[], remembered=False)


def test_a_forged_or_tampered_capability_grants_nothing(world: World) -> None:
    ws = world.workspace
    (ws / "notes.txt").write_text("keep\n")
    authority = world.system.authority
    genuine = authority.mint("fs.read", scope="public")
    forged = [
        genuine.model_copy(update={"scope": "*"}),
        genuine.model_copy(update={"call": "*"}),
        genuine.model_copy(update={"call": "fs.delete", "scope": "*"}),
        genuine.model_copy(update={"id": "someone-else"}),
        genuine.model_copy(update={"expires": 1.0}),
        Capability(id="x", call="*", scope="*", sig=""),
        Capability(id="x", call="*", scope="*", sig="00" * 32),
        Capability(id="x", call="*", scope="*", sig=Signer(b"k" * 32).sign(b"x")),
        Capability(
            id="x", call="*", sig=Signer(b"k" * 32).sign(Capability(id="x", call="*").payload())
        ),
    ]
    for cap in forged:
        proc = _app(world)
        with pytest.raises(Exception, match=r"forged|altered"):
            proc.caps.add(cap)
        proc.caps.caps.append(cap)  # slipped in without the check: still worth nothing
        refused(world.call(proc, call="fs.delete", path="notes.txt"))
        refused(world.call(proc, call="fs.read", path="notes.txt"))
    assert (ws / "notes.txt").read_text() == "keep\n"


def test_an_expired_or_revoked_capability_grants_nothing(world: World) -> None:
    ws = world.workspace
    (ws / "notes.txt").write_text("keep\n")
    authority = world.system.authority
    parent = authority.mint("fs.*")
    child = authority.attenuate(parent, call="fs.read")
    with pytest.raises(Exception, match="widen"):
        authority.attenuate(child, call="fs.*")
    with pytest.raises(Exception, match="widen"):
        authority.attenuate(authority.mint("fs.read", scope="docs"), scope="*")
    proc = _app(world)
    proc.caps.add(child)
    assert world.call(proc, call="fs.read", path="notes.txt").ok
    with System(world.system.settings, plugins=False) as other:  # another llmos process
        other.authority.revoke(parent.id)
    refused(world.call(proc, call="fs.read", path="notes.txt"))
    expired = authority.mint("fs.delete", ttl=-1)
    proc2 = _app(world)
    proc2.caps.caps.append(expired)
    refused(world.call(proc2, call="fs.delete", path="notes.txt"))
    assert (ws / "notes.txt").read_text() == "keep\n"


def _grants(world: World) -> Path:
    return world.home / "grants.json"


def test_a_grants_file_edited_by_hand_grants_nothing(world: World) -> None:
    ws = world.workspace
    (ws / "notes.txt").write_text("keep\n")
    saved = world.system.authority.mint("fs.read", scope="public")
    world.system.grants.save(ws.resolve(), saved)
    data = json.loads(_grants(world).read_text())
    entry = data[str(ws.resolve())][0]
    data[str(ws.resolve())] += [
        {**entry, "call": "*", "scope": "*"},
        {**entry, "call": "fs.delete"},
        {"id": "x", "call": "*", "scope": "*", "sig": ""},
        {"call": "*"},
        "not even an object",
    ]
    _grants(world).write_text(json.dumps(data))
    proc = world.system.spawn("app", ws, patterns=[])
    assert {(c.call, c.scope) for c in proc.caps.caps} == {("fs.read", "public")}
    refused(world.call(proc, call="fs.delete", path="notes.txt"))
    assert (ws / "notes.txt").read_text() == "keep\n"


def test_a_grant_moved_to_another_workspace_by_hand_is_not_honoured(
    world: World, tmp_path: Path
) -> None:
    other = tmp_path / "other-ws"
    other.mkdir()
    (other / "notes.txt").write_text("keep\n")
    cap = world.system.authority.mint("fs.delete")
    world.system.grants.save(world.workspace.resolve(), cap)
    data = json.loads(_grants(world).read_text())
    data[str(other.resolve())] = data[str(world.workspace.resolve())]
    _grants(world).write_text(json.dumps(data))
    proc = world.system.spawn("shell", other)
    refused(world.call(proc, call="fs.delete", path="notes.txt"))
    assert (other / "notes.txt").read_text() == "keep\n"


def test_a_broken_grants_file_fails_closed_and_clearly(world: World) -> None:
    _grants(world).write_text('{ "broken": [ this is not json')
    try:
        proc = world.system.spawn("shell", world.workspace)
    except LlmosError as exc:  # refusing to start, saying which file, is fine
        assert exc.code == "E_IO" and "grants" in exc.message
        return
    assert proc.caps.find("fs.delete", ["notes.txt"]) is None


# --- The audit log edited by hand -----------------------------------------------------------


def _audited(world: World, n: int = 6) -> Path:
    proc = world.shell_proc()
    for i in range(n):
        world.call(proc, call="fs.write", path=f"f{i}.txt", content=str(i))
    log = world.home / "audit.log"
    assert verify(log, world.system.signer).problems == []
    return log


def _edit_field(lines: list[bytes]) -> list[bytes]:
    entry = json.loads(lines[2])
    entry["ok"] = not entry["ok"]
    return [*lines[:2], json.dumps(entry).encode(), *lines[3:]]


@pytest.mark.parametrize(
    "edit",
    [
        _edit_field,
        lambda lines: [*lines[:2], *lines[3:]],  # a line removed
        lambda lines: lines[:-1],  # the last line removed
        lambda lines: lines[:-3],  # the last lines removed
        lambda lines: [lines[0], lines[2], lines[1], *lines[3:]],  # reordered
        lambda lines: [*lines, lines[-1]],  # a line replayed
        lambda lines: [*lines[:3], lines[3].replace(b"f3.txt", b"f9.txt"), *lines[4:]],
        lambda lines: [*lines, b'{"seq": 99, "call": "fs.read", "mac": "00"}'],
        lambda lines: [],  # emptied
    ],
    ids=["field", "removed", "last", "tail", "reordered", "replayed", "arg", "forged", "empty"],
)
def test_an_audit_log_edited_by_hand_fails_verification(
    world: World, edit: Callable[[list[bytes]], list[bytes]]
) -> None:
    log = _audited(world)
    world.system.audit.close()
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"".join(line + b"\n" for line in edit(lines)))
    assert verify(log, world.system.signer).problems, "the edit went unnoticed"


def test_a_deleted_audit_log_fails_verification(world: World) -> None:
    log = _audited(world)
    world.system.audit.close()
    log.unlink()
    assert verify(log, world.system.signer).problems


# --- The undo journal edited by hand --------------------------------------------------------


def _journaled(world: World) -> Path:
    (world.workspace / "report.txt").write_text("v1\n")
    assert world.call(world.shell_proc(), call="fs.write", path="report.txt", content="v2\n").ok
    sets = sorted((world.home / "journal").glob("*/set.json"))
    assert sets
    return sets[-1]


@pytest.mark.parametrize(
    "path",
    ["../outside/victim.txt", "OUTSIDE", "~/.bashrc", "../llmos-home/keys/install.key"],
)
def test_an_undo_journal_edited_by_hand_cannot_reach_outside(world: World, path: str) -> None:
    record = _journaled(world)
    data = json.loads(record.read_text())
    path = str(world.outside / "victim.txt") if path == "OUTSIDE" else path
    data["changes"][0]["path"] = path
    data["changes"][0]["after"] = data["changes"][0]["before"] = {"kind": "missing"}
    record.write_text(json.dumps(data))
    before = world.snapshot()
    with contextlib.suppress(Exception):
        undo(world.system, world.workspace, None, None)
    assert world.snapshot() == before


def test_an_undo_journal_entry_name_cannot_climb_out(world: World) -> None:
    record = _journaled(world)
    data = json.loads(record.read_text())
    blob = data["changes"][0]["before"]["blob"]
    (world.workspace / "d").mkdir()
    data["changes"][0]["path"] = "d"
    data["changes"][0]["after"] = {"kind": "dir", "mode": 0o755, "entries": {}}
    data["changes"][0]["before"] = {
        "kind": "dir",
        "mode": 0o755,
        "entries": {
            "../../outside/planted.txt": {"kind": "file", "blob": blob, "digest": "x"},
            "../../outside/victim.txt": {"kind": "file", "blob": blob, "digest": "x"},
        },
    }
    record.write_text(json.dumps(data))
    before = world.snapshot()
    with contextlib.suppress(Exception):
        undo(world.system, world.workspace, None, None)
    assert world.snapshot() == before
    assert not (world.outside / "planted.txt").exists()


def test_an_undo_journal_blob_cannot_pull_an_outside_file_in(world: World) -> None:
    record = _journaled(world)
    data = json.loads(record.read_text())
    data["changes"][0]["before"]["blob"] = str(world.outside / "secret.txt")
    record.write_text(json.dumps(data))
    with contextlib.suppress(Exception):
        undo(world.system, world.workspace, None, None)
    assert "the secret" not in (world.workspace / "report.txt").read_text()
