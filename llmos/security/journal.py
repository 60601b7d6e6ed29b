"""Undo: before a call changes a file, what it had is journaled under LLMOS_HOME.

The dispatcher watches every path a file-changing call resolves (`Workspace.watch`): before the
handler touches one, its state (missing, a file's bytes, a link's target, a folder's tree) is
saved into the open change set; after the call, the state it left is recorded, and paths the
call did not change are dropped. A change set is a turn, a direct call or an app run. Undo
restores a set's paths in reverse order, each only while it still holds what the call left, so
a file changed since is never clobbered. The journal is bounded (`journal_max_mb`): the oldest
sets are dropped, and the person is told.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel

from llmos.atomic import write_atomic_at
from llmos.errors import ErrorCode, LlmosError, os_error
from llmos.security.workspace import O_CLOEXEC, Located, Workspace, open_dir_at

log = logging.getLogger(__name__)

JOURNAL_FILE_BYTES = 64 * 1024 * 1024
"""The largest single file a change set saves; a bigger one is noted as not undoable."""

JOURNAL_TREE_ENTRIES = 2000
"""The most entries of one folder a change set saves (a recursive delete or a folder move)."""

BLOB_NAME = re.compile(r"[0-9]{1,9}\.blob")
"""What a saved copy's name looks like; a record naming anything else is not followed."""

Kind = Literal["missing", "file", "link", "dir", "unsaved"]


class PathState(BaseModel):
    """What one path held: nothing, a file (its digest, mode and saved bytes), a link (its
    target), a folder (its entries' states by relative path), or too much to save."""

    kind: Kind
    digest: str = ""
    mode: int = 0o644
    blob: str = ""
    target: str = ""
    entries: dict[str, PathState] = {}
    reason: str = ""

    def same(self, other: PathState) -> bool:
        """Whether two states hold the same thing (saved copies aside); what could not be
        read is never the same as anything."""
        if self.kind != other.kind or self.kind == "unsaved":
            return False
        if self.kind == "dir":
            return self.entries.keys() == other.entries.keys() and all(
                self.entries[k].same(other.entries[k]) for k in self.entries
            )
        return (self.digest, self.target) == (other.digest, other.target)


class Change(BaseModel):
    """One path a call changed: what it held before and what the call left (None when the
    call did not finish, killed mid-way)."""

    path: str
    call: str
    before: PathState
    after: PathState | None = None


class ChangeSetInfo(BaseModel):
    """A change set as the journal keeps it."""

    id: int
    label: str
    workspace: str
    started: float
    changes: list[Change] = []
    undone: bool = False


class Restored(BaseModel):
    """What undoing one path did: restored, removed, or left alone and why."""

    path: str
    action: Literal["restored", "removed", "left"]
    reason: str = ""


class _Saver:
    """Names and writes the saved copies of one change set's files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def open(self) -> tuple[str, BinaryIO]:
        """A new saved copy's name and its file, open for writing (the caller closes it)."""
        self.count += 1
        name = f"{self.count}.blob"
        return name, open(self.folder / name, "wb")


def capture(dir_fd: int, name: str, saver: _Saver | None = None) -> PathState:
    """The state of `name` under `dir_fd`, never following a link; given a `saver`, a file's
    bytes are copied into the change set (within JOURNAL_FILE_BYTES and JOURNAL_TREE_ENTRIES)."""
    return _capture(dir_fd, name, saver, [0])


def _capture(dir_fd: int, name: str, saver: _Saver | None, budget: list[int]) -> PathState:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return PathState(kind="missing")
    except OSError as exc:
        return PathState(kind="unsaved", reason=str(exc))
    if stat.S_ISLNK(info.st_mode):
        return PathState(kind="link", target=os.readlink(name, dir_fd=dir_fd))
    if stat.S_ISDIR(info.st_mode):
        return _capture_dir(dir_fd, name, stat.S_IMODE(info.st_mode), saver, budget)
    if not stat.S_ISREG(info.st_mode):
        return PathState(kind="unsaved", reason="not a regular file")
    if info.st_size > JOURNAL_FILE_BYTES:
        return PathState(kind="unsaved", reason=f"over {JOURNAL_FILE_BYTES >> 20} MiB")
    return _capture_file(dir_fd, name, stat.S_IMODE(info.st_mode), saver)


def _capture_file(dir_fd: int, name: str, mode: int, saver: _Saver | None) -> PathState:
    digest = hashlib.sha256()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dir_fd)
    blob, out = ("", None) if saver is None else saver.open()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
            return PathState(kind="unsaved", reason="not a regular file")
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)
        if out is not None:
            out.close()
    return PathState(kind="file", digest=digest.hexdigest(), mode=mode, blob=blob)


def _capture_dir(
    dir_fd: int, name: str, mode: int, saver: _Saver | None, budget: list[int]
) -> PathState:
    fd = open_dir_at(dir_fd, name)
    entries: dict[str, PathState] = {}
    try:
        for entry in sorted(os.listdir(fd)):
            budget[0] += 1
            if budget[0] > JOURNAL_TREE_ENTRIES:
                return PathState(kind="unsaved", reason=f"over {JOURNAL_TREE_ENTRIES} entries")
            sub = _capture(fd, entry, saver, budget)
            if sub.kind == "unsaved":
                return PathState(kind="unsaved", reason=f"{entry}: {sub.reason}")
            entries[entry] = sub
    finally:
        os.close(fd)
    return PathState(kind="dir", mode=mode, entries=entries)


@dataclass
class ChangeSet:
    """An open change set: the dispatcher adds the paths each call is about to change."""

    journal: Journal
    info: ChangeSetInfo
    folder: Path | None = None
    """Made on the first path saved: a turn or call that changes nothing costs no I/O."""
    _pending: dict[str, Change] = field(default_factory=dict)
    _saver: _Saver | None = None

    @property
    def id(self) -> int:
        """The set's number, as `llmos undo N` takes it."""
        return self.info.id

    def before(self, located: Located, call: str) -> None:
        """Save what `located` holds now, before the call changes it: once per path in the
        set (a path an earlier call of the set changed keeps its first state, and undo takes
        it back to that)."""
        if located.rel in self._pending or located.is_root:
            return
        earlier = next((c for c in self.info.changes if c.path == located.rel), None)
        if earlier is not None:
            if call not in earlier.call.split(", "):
                earlier.call = f"{earlier.call}, {call}"
            self._pending[located.rel] = earlier
            return
        if self._saver is None:
            self._saver = _Saver(self._folder())
        state = capture(located.dir_fd, located.name, self._saver)
        change = Change(path=located.rel, call=call, before=state)
        self._pending[located.rel] = change
        self.info.changes.append(change)
        self.save()

    def after(self, workspace: Workspace) -> None:
        """Record what the call left at each path it watched; drop the paths it left as they
        were (a copy's source), and their saved bytes."""
        if not self._pending:
            return
        for rel, change in self._pending.items():
            try:
                with workspace.locate(rel, follow=False) as loc:
                    change.after = capture(loc.dir_fd, loc.name)
            except LlmosError as exc:
                change.after = PathState(kind="unsaved", reason=exc.message)
        kept = []
        for change in self.info.changes:
            if change.path in self._pending and change.after and change.before.same(change.after):
                self._drop_blobs(change.before)
                continue
            kept.append(change)
        self.info.changes = kept
        self._pending.clear()
        self.save()

    def _folder(self) -> Path:
        """The set's folder, numbered and made now if it is not yet."""
        if self.folder is None:
            self.info.id, self.folder = self.journal.allocate()
        return self.folder

    def _drop_blobs(self, state: PathState) -> None:
        if state.blob:
            with contextlib.suppress(FileNotFoundError):
                (self._folder() / state.blob).unlink()
        for sub in state.entries.values():
            self._drop_blobs(sub)

    def save(self) -> None:
        """Write the set's record atomically, so a kill leaves the last whole one."""
        data = self.info.model_dump_json().encode()
        fd = os.open(self._folder(), os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)
        try:
            write_atomic_at(fd, "set.json", data, mode=0o600)
        finally:
            os.close(fd)


class Journal:
    """The change sets of one installation, under `LLMOS_HOME/journal`, newest last."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._notices: list[str] = []

    def begin(self, label: str, workspace: Workspace) -> ChangeSet:
        """Open a new change set (a turn, a direct call, an app run) on `workspace`; it takes
        its number and folder when it first saves a path."""
        info = ChangeSetInfo(
            id=0, label=label[:200], workspace=str(workspace.root), started=time.time()
        )
        return ChangeSet(self, info)

    def allocate(self) -> tuple[int, Path]:
        """The next change set number and its new folder (another process may take numbers
        at the same time: each folder is made exclusively)."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            last = max(self._ids(), default=0)
            while True:
                last += 1
                folder = self.folder / f"{last:08d}"
                try:
                    folder.mkdir(mode=0o700)
                    break
                except FileExistsError:  # another process took this number
                    continue
        return last, folder

    def end(self, changes: ChangeSet) -> None:
        """Close a change set: forget it when it changed nothing, then keep the journal
        within its size by dropping the oldest sets (noting it for the person)."""
        if changes.folder is None:
            return
        if not changes.info.changes:
            shutil.rmtree(changes.folder, ignore_errors=True)
            return
        self._prune(keep=changes.id)

    def take_notices(self) -> list[str]:
        """What the person should be told about the journal since the last call (dropped
        sets), once."""
        with self._lock:
            out, self._notices = self._notices, []
        return out

    def sets(self) -> list[ChangeSetInfo]:
        """Every change set kept, oldest first (a damaged record is skipped)."""
        out = []
        for number in self._ids():
            info = self._read(number)
            if info is not None and info.changes:
                out.append(info)
        return out

    def sets_of(self, workspace: Workspace) -> list[ChangeSetInfo]:
        """The change sets made in `workspace`, oldest first."""
        return [info for info in self.sets() if Path(info.workspace) == workspace.root]

    def get(self, number: int | None, workspace: Workspace) -> ChangeSetInfo:
        """Set `number`, or the newest one of `workspace` not undone yet; E_NOENT when there
        is none."""
        if number is not None:
            info = self._read(number)
            if info is None or not info.changes:
                raise LlmosError(ErrorCode.E_NOENT, f"no change set {number} in the journal")
            return info
        for info in reversed(self.sets_of(workspace)):
            if not info.undone:
                return info
        raise LlmosError(ErrorCode.E_NOENT, f"nothing to undo in {workspace.root}")

    def undo(
        self, number: int | None, workspace: Workspace
    ) -> tuple[ChangeSetInfo, list[Restored]]:
        """Restore set `number` (or the newest not undone) in `workspace`, in reverse order;
        each path only while it still holds what the set's call left there."""
        info = self.get(number, workspace)
        if Path(info.workspace) != workspace.root:
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"change set {info.id} was made in {info.workspace}, not {workspace.root}",
            )
        if info.undone:
            raise LlmosError(ErrorCode.E_EXISTS, f"change set {info.id} was already undone")
        folder = self.folder / f"{info.id:08d}"
        done = [self._restore(change, workspace, folder) for change in reversed(info.changes)]
        info.undone = True
        ChangeSet(self, info, folder).save()
        return info, done

    def _restore(self, change: Change, workspace: Workspace, folder: Path) -> Restored:
        try:
            with workspace.locate(change.path, follow=False, create_parents=True) as loc:
                now = capture(loc.dir_fd, loc.name)
                if change.before.kind == "unsaved":
                    return Restored(
                        path=change.path,
                        action="left",
                        reason=f"not saved ({change.before.reason})",
                    )
                if change.after is not None and not now.same(change.after):
                    if now.same(change.before):
                        return Restored(path=change.path, action="left", reason="already as before")
                    return Restored(
                        path=change.path, action="left", reason="changed since; left as it is"
                    )
                if _damaged(change.before):
                    return Restored(
                        path=change.path, action="left", reason="the journal's record is damaged"
                    )
                _clear(loc.dir_fd, loc.name, now)
                if change.before.kind == "missing":
                    return Restored(path=change.path, action="removed")
                _put(loc.dir_fd, loc.name, change.before, folder)
                return Restored(path=change.path, action="restored")
        except LlmosError as exc:
            return Restored(path=change.path, action="left", reason=exc.message)
        except OSError as exc:
            return Restored(
                path=change.path, action="left", reason=os_error(exc, change.path).message
            )

    def _ids(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def _read(self, number: int) -> ChangeSetInfo | None:
        try:
            raw = (self.folder / f"{number:08d}" / "set.json").read_bytes()
            return ChangeSetInfo.model_validate_json(raw)
        except (OSError, ValueError):
            return None

    def _prune(self, keep: int) -> None:
        """Drop the oldest sets (never `keep`) until the journal fits in max_bytes."""
        sizes = [(n, _size(self.folder / f"{n:08d}")) for n in self._ids()]
        total = sum(size for _, size in sizes)
        dropped = 0
        for number, size in sizes:
            if total <= self.max_bytes or number == keep:
                break
            shutil.rmtree(self.folder / f"{number:08d}", ignore_errors=True)
            total -= size
            dropped += 1
        if dropped:
            with self._lock:
                self._notices.append(
                    f"the undo journal dropped its {dropped} oldest change set"
                    f"{'s' if dropped > 1 else ''} to stay within "
                    f"{self.max_bytes >> 20} MiB; those changes can no longer be undone"
                )


def _size(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def _damaged(state: PathState) -> bool:
    """Whether a saved state names something no journal writes (a record edited by hand to
    pull another file in, or to put one outside its folder)."""
    if state.kind == "file" and not BLOB_NAME.fullmatch(state.blob):
        return True
    return any(
        "/" in entry or entry in ("", ".", "..") or _damaged(sub)
        for entry, sub in state.entries.items()
    )


def _clear(dir_fd: int, name: str, now: PathState) -> None:
    """Remove what is at `name` now (a file, a link, or a folder the undo will put back)."""
    if now.kind == "missing":
        return
    if now.kind == "dir":
        fd = open_dir_at(dir_fd, name)
        try:
            for entry, sub in now.entries.items():
                _clear(fd, entry, sub)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
        return
    os.unlink(name, dir_fd=dir_fd)


def _put(dir_fd: int, name: str, state: PathState, folder: Path) -> None:
    """Recreate `state` at `name` (nothing is there now)."""
    if state.kind == "file":
        if not BLOB_NAME.fullmatch(state.blob):  # a record edited to name another file
            raise LlmosError(ErrorCode.E_INVAL, f"{name}: the journal's record of it is damaged")
        write_atomic_at(
            dir_fd, name, (folder / state.blob).read_bytes(), exclusive=True, mode=state.mode
        )
    elif state.kind == "link":
        os.symlink(state.target, name, dir_fd=dir_fd)
    elif state.kind == "dir":
        os.mkdir(name, state.mode or 0o755, dir_fd=dir_fd)
        fd = open_dir_at(dir_fd, name)
        try:
            for entry, sub in state.entries.items():
                if "/" in entry or entry in ("", ".", ".."):
                    raise LlmosError(ErrorCode.E_INVAL, f"{name}: the journal's record is damaged")
                _put(fd, entry, sub, folder)
        finally:
            os.close(fd)


def describe(info: ChangeSetInfo) -> str:
    """One line for a change set: number, when, what, how many paths."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started))
    paths = ", ".join(c.path for c in info.changes[:3]) + (" ..." if len(info.changes) > 3 else "")
    flag = " (undone)" if info.undone else ""
    return f"{info.id:>4}  {when}  {info.label}  [{paths}]{flag}"


def iter_changes(info: ChangeSetInfo) -> Iterator[str]:
    """What a set changed, one line a path: the call, the path, before -> after."""
    for change in info.changes:
        after = change.after.kind if change.after else "unknown (the call did not finish)"
        yield f"{change.call} {change.path}: {change.before.kind} -> {after}"
