"""The fs family: files and folders, confined to the calling process's workspace."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from pydantic import BaseModel, Field

from llmos.apps.hooks import hookimpl
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.process import Process
from llmos.limits import (
    MAX_LIST_ENTRIES,
    MAX_READ_BYTES,
    MAX_SEARCH_FILE_BYTES,
    MAX_SEARCH_HITS,
    MAX_WRITE_BYTES,
)
from llmos.security.workspace import O_CLOEXEC, Located, Workspace, open_dir_at, os_error
from llmos.syscalls.atomic import write_all, write_atomic_at
from llmos.syscalls.base import Registry, Syscall

# O_NONBLOCK: opening a FIFO (or one swapped in) must not hang the caller; no effect on files.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
PathArg = Field(description="Path inside the workspace, e.g. notes.txt or docs/a.md")


class FsRead(Syscall):
    """Read a text file's content (optionally a byte range of it)."""

    call: Literal["fs.read"] = "fs.read"
    path: str = PathArg
    offset: int = Field(default=0, ge=0, description="Byte offset to start at.")
    limit: int | None = Field(default=None, ge=1, description="Most bytes to return.")


class FsReadResult(BaseModel):
    """The text read and whether more remains."""

    path: str
    text: str
    size: int
    offset: int
    bytes_read: int
    truncated: bool
    next_offset: int | None = None


class FsWrite(Syscall):
    """Write text to a file, creating missing folders (overwrite, append, or create only if new)."""

    call: Literal["fs.write"] = "fs.write"
    path: str = PathArg
    content: str = Field(description="The full text to write.")
    mode: Literal["overwrite", "append", "create"] = Field(
        default="overwrite", description="overwrite (default), append, or create (fail if exists)."
    )


class FsWriteResult(BaseModel):
    """Where the text went."""

    path: str
    bytes_written: int
    created: bool


class FsList(Syscall):
    """List the files and folders in a folder."""

    call: Literal["fs.list"] = "fs.list"
    path: str = Field(default=".", description="Folder to list; the workspace root by default.")
    pattern: str | None = Field(default=None, description="Glob such as *.txt to filter names.")
    recursive: bool = Field(default=False, description="Include sub-folders' contents.")


class FsEntry(BaseModel):
    """One listed entry."""

    path: str
    type: Literal["file", "dir", "link", "other"]
    size: int


class FsListResult(BaseModel):
    """A folder's entries, sorted."""

    path: str
    entries: list[FsEntry]
    truncated: bool


class FsStat(Syscall):
    """Show a file's or folder's type, size and modification time (not its content)."""

    call: Literal["fs.stat"] = "fs.stat"
    path: str = PathArg


class FsStatResult(BaseModel):
    """Metadata of one path."""

    path: str
    type: Literal["file", "dir", "link", "other"]
    size: int
    mtime: float
    mode: str


class FsDelete(Syscall):
    """Delete a file, or a folder (recursive=true for a non-empty one)."""

    call: Literal["fs.delete"] = "fs.delete"
    path: str = PathArg
    recursive: bool = Field(default=False, description="Delete a folder with everything in it.")


class FsDeleteResult(BaseModel):
    """What was deleted."""

    path: str
    deleted: int


class FsMove(Syscall):
    """Move or rename a file or folder (into dst if dst is an existing folder)."""

    call: Literal["fs.move"] = "fs.move"
    src: str = Field(description="Path to move, or a pattern like *.log (then dst is a folder).")
    dst: str = Field(description="New path, or an existing folder to move into.")
    overwrite: bool = Field(default=False, description="Replace an existing file at dst.")


class FsCopy(Syscall):
    """Copy a file (into dst if dst is an existing folder)."""

    call: Literal["fs.copy"] = "fs.copy"
    src: str = Field(description="File to copy, or a pattern like *.txt (then dst is a folder).")
    dst: str = Field(description="New path, or an existing folder to copy into.")
    overwrite: bool = Field(default=False, description="Replace an existing file at dst.")


class FsMoveResult(BaseModel):
    """Where it went (for a pattern: every file it matched)."""

    src: str
    dst: str
    files: list[str] | None = None


class FsMkdir(Syscall):
    """Create a folder (and its parents)."""

    call: Literal["fs.mkdir"] = "fs.mkdir"
    path: str = PathArg


class FsMkdirResult(BaseModel):
    """The folder and whether it is new."""

    path: str
    created: bool


class FsSearch(Syscall):
    """Search the text of files for a word or phrase."""

    call: Literal["fs.search"] = "fs.search"
    query: str = Field(min_length=1, description="Text (or regex with regex=true) to find.")
    path: str = Field(default=".", description="Folder (or file) to search in.")
    pattern: str | None = Field(default=None, description="Only files matching this glob.")
    regex: bool = Field(default=False, description="Treat query as a regular expression.")
    max_hits: int = Field(default=50, ge=1, le=MAX_SEARCH_HITS, description="Most hits to return.")


class FsSearchHit(BaseModel):
    """One matching line."""

    path: str
    line: int
    text: str


class FsSearchResult(BaseModel):
    """Matching lines, in path order."""

    query: str
    hits: list[FsSearchHit]
    files_scanned: int
    truncated: bool


def _kind(mode: int) -> Literal["file", "dir", "link", "other"]:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _display(rel: str) -> str:
    return rel or "."


def _require(loc: Located, shown: str) -> os.stat_result:
    info = loc.lstat()
    if info is None:
        raise LlmosError(ErrorCode.E_NOENT, f"{shown} does not exist")
    return info


def _open_file(loc: Located, shown: str) -> int:
    """Open a regular file for reading; a FIFO, socket or device is E_INVAL."""
    try:
        fd = os.open(loc.name, FILE_FLAGS, dir_fd=loc.dir_fd)
    except OSError as exc:
        raise os_error(exc, shown) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LlmosError(ErrorCode.E_INVAL, f"{shown} is not a regular file")
    return fd


def _open_dir(loc: Located, shown: str) -> int:
    try:
        return open_dir_at(loc.dir_fd, loc.name)
    except OSError as exc:
        raise os_error(exc, shown) from None


def _decode_text(
    data: bytes, shown: str, at_start: bool, at_eof: bool = False
) -> tuple[str, int, int]:
    """Decode UTF-8, tolerating a character cut at either end of the range; binary is E_INVAL.

    A character cut at the end of the file itself (not just of the range) is read as U+FFFD, so
    paging with next_offset always makes progress. Returns (text, bytes skipped at the start,
    bytes decoded after them).
    """
    skipped = 0
    if not at_start:
        while skipped < 3 and skipped < len(data) and (data[skipped] & 0xC0) == 0x80:
            skipped += 1
        data = data[skipped:]
    if b"\x00" in data:
        raise LlmosError(ErrorCode.E_INVAL, f"{shown} is a binary file, not text")
    try:
        return data.decode("utf-8"), skipped, len(data)
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            head = data[: exc.start].decode("utf-8")
            if at_eof:
                return head + "\ufffd", skipped, len(data)
            return head, skipped, exc.start
        raise LlmosError(
            ErrorCode.E_INVAL, f"{shown} is not UTF-8 text (binary at byte {exc.start})"
        ) from None


def fs_read(call: FsRead, process: Process) -> FsReadResult:
    """Read up to `limit` (capped at MAX_READ_BYTES) bytes of text from `offset`."""
    with process.workspace.locate(call.path) as loc:
        info = _require(loc, call.path)
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.path} is a folder; use fs.list")
        fd = _open_file(loc, call.path)
        try:
            size = os.fstat(fd).st_size
            want = min(call.limit or MAX_READ_BYTES, MAX_READ_BYTES)
            data = os.pread(fd, want, call.offset)
        finally:
            os.close(fd)
    at_eof = call.offset + len(data) >= size
    text, skipped, used = _decode_text(data, call.path, call.offset == 0, at_eof)
    end = call.offset + skipped + used
    truncated = end < size
    return FsReadResult(
        path=loc.rel,
        text=text,
        size=size,
        offset=call.offset,
        bytes_read=end - call.offset,
        truncated=truncated,
        next_offset=end if truncated else None,
    )


def fs_write(call: FsWrite, process: Process) -> FsWriteResult:
    """Write atomically (temp file, fsync, rename); append writes in place with O_APPEND."""
    data = call.content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise LlmosError(
            ErrorCode.E_TOOBIG, f"{len(data)} bytes is over the {MAX_WRITE_BYTES}-byte write limit"
        )
    with process.workspace.locate(call.path, create_parents=True) as loc:
        if loc.is_root or loc.name == ".":
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.path} is a folder")
        info = loc.lstat()
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.path} is a folder")
        created = info is None
        if call.mode == "append":
            kind = stat.S_IFMT(info.st_mode) if info is not None else stat.S_IFREG
            if kind not in (stat.S_IFREG, stat.S_IFLNK):  # a link meets O_NOFOLLOW below
                raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is not a regular file")
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
            flags |= O_CLOEXEC
            try:
                fd = os.open(loc.name, flags, 0o644, dir_fd=loc.dir_fd)
                try:
                    write_all(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise os_error(exc, call.path) from None
        else:
            if call.mode == "create" and info is not None:
                raise LlmosError(ErrorCode.E_EXISTS, f"{call.path} already exists")
            mode = stat.S_IMODE(info.st_mode) if info is not None else 0o644
            try:
                write_atomic_at(
                    loc.dir_fd, loc.name, data, exclusive=call.mode == "create", mode=mode
                )
            except LlmosError as exc:
                raise LlmosError(exc.code, f"{call.path}: {exc.message}") from None
            except OSError as exc:
                raise os_error(exc, call.path) from None
        return FsWriteResult(path=loc.rel, bytes_written=len(data), created=created)


def _walk(dir_fd: int, recursive: bool) -> Iterator[tuple[str, str, os.stat_result, int]]:
    """(relative path, name, lstat, parent dir fd) of each entry below `dir_fd`, sorted, never
    following links. The parent fd is valid only until the next item is taken."""
    for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=dir_fd, follow_symlinks=False):
        dirnames.sort()
        base = "" if dirpath == "." else dirpath[2:] + "/"
        for name in sorted(dirnames + filenames):
            try:
                info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield base + name, name, info, dfd
        if not recursive:
            return


def _glob_match(pattern: str | None, rel: str, name: str) -> bool:
    if pattern is None:
        return True
    target = rel if "/" in pattern else name
    return fnmatch.fnmatch(target, pattern)


def _is_temp(name: str) -> bool:
    return ".llmos-tmp-" in name


def fs_list(call: FsList, process: Process) -> FsListResult:
    """List entries (optionally recursive and glob-filtered), capped at MAX_LIST_ENTRIES."""
    with process.workspace.locate(call.path) as loc:
        info = _require(loc, call.path)
        if not stat.S_ISDIR(info.st_mode):
            entry = FsEntry(path=loc.rel, type=_kind(info.st_mode), size=info.st_size)
            return FsListResult(path=loc.rel, entries=[entry], truncated=False)
        fd = _open_dir(loc, call.path)
        entries: list[FsEntry] = []
        truncated = False
        try:
            for rel, name, st, _dfd in _walk(fd, call.recursive):
                if _is_temp(name) or not _glob_match(call.pattern, rel, name):
                    continue
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    break
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                entries.append(FsEntry(path=rel, type=_kind(st.st_mode), size=size))
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.path.split("/"))
        return FsListResult(path=_display(loc.rel), entries=entries, truncated=truncated)


def fs_stat(call: FsStat, process: Process) -> FsStatResult:
    """Stat a path without following a final symlink."""
    with process.workspace.locate(call.path, follow=False) as loc:
        info = _require(loc, call.path)
        return FsStatResult(
            path=_display(loc.rel),
            type=_kind(info.st_mode),
            size=info.st_size,
            mtime=info.st_mtime,
            mode=stat.filemode(info.st_mode),
        )


def _remove_tree(dir_fd: int) -> int:
    """Delete everything inside `dir_fd` bottom-up, never following links; returns the count."""
    count = 0
    for _, dirnames, filenames, dfd in os.fwalk(
        ".", dir_fd=dir_fd, topdown=False, follow_symlinks=False
    ):
        for name in filenames:
            os.unlink(name, dir_fd=dfd)
            count += 1
        for name in dirnames:
            if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dfd)
            else:
                os.rmdir(name, dir_fd=dfd)
            count += 1
    return count


def fs_delete(call: FsDelete, process: Process) -> FsDeleteResult:
    """Delete a file or link (the link itself), or a folder (recursive for a non-empty one)."""
    with process.workspace.locate(call.path, follow=False) as loc:
        if loc.is_root or loc.name == ".":
            raise LlmosError(ErrorCode.E_PERM, "the workspace root cannot be deleted")
        info = _require(loc, call.path)
        try:
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(loc.name, dir_fd=loc.dir_fd)
                return FsDeleteResult(path=loc.rel, deleted=1)
            count = 0
            if call.recursive:
                fd = _open_dir(loc, call.path)
                try:
                    count = _remove_tree(fd)
                finally:
                    os.close(fd)
            os.rmdir(loc.name, dir_fd=loc.dir_fd)
        except OSError as exc:
            err = os_error(exc, call.path)
            if err.code is ErrorCode.E_NOTEMPTY:
                raise LlmosError(
                    ErrorCode.E_NOTEMPTY, f"{call.path} is not empty; pass recursive=true"
                ) from None
            raise err from None
        return FsDeleteResult(path=loc.rel, deleted=count + 1)


def _destination(ws: Workspace, dst: str, src_name: str) -> str:
    """`dst`, or `dst/src_name` when `dst` is an existing folder (like mv and cp)."""
    with ws.locate(dst, create_parents=True) as probe:
        info = probe.lstat() if probe.name != "." else os.fstat(probe.dir_fd)
        if info is not None and stat.S_ISDIR(info.st_mode):
            # "./" so that a folder or file named like "~x" is not read as the home folder.
            return f"./{probe.rel}/{src_name}" if probe.rel else f"./{src_name}"
    return dst


GLOB_CHARS = frozenset("*?[")


def _is_pattern(ws: Workspace, path: str) -> bool:
    """Whether `path` is a pattern to expand (a file really named `a[1].txt` is not)."""
    if not any(c in GLOB_CHARS for c in path):
        return False
    try:
        with ws.locate(path, follow=False) as loc:
            return loc.lstat() is None
    except LlmosError:
        return True


def _expand(ws: Workspace, pattern: str) -> list[str]:
    """The entries of one folder whose names match the pattern's last part (like a shell's
    `mv *.log logs/`); patterns in folder names are refused."""
    folder, _, name = pattern.rpartition("/")
    if any(c in GLOB_CHARS for c in folder):
        raise LlmosError(ErrorCode.E_INVAL, f"{pattern}: only the last part may be a pattern")
    with ws.locate(folder or ".") as loc:
        _require(loc, folder or ".")
        fd = _open_dir(loc, folder or ".")
        try:
            names = sorted(
                n for n in os.listdir(fd) if not _is_temp(n) and fnmatch.fnmatchcase(n, name)
            )
        finally:
            os.close(fd)
    if not names:
        raise LlmosError(ErrorCode.E_NOENT, f"no files match {pattern}")
    return [f"{folder}/{n}" if folder else n for n in names]


def _each(
    ws: Workspace, src: str, dst: str, one: Callable[[str, str], FsMoveResult]
) -> FsMoveResult:
    """Run `one(src, folder)` for every match of the pattern `src`, into the folder `dst`
    (created if missing); stops at the first failure, reporting what was already done."""
    matches = _expand(ws, src)
    with ws.locate(dst, create_parents=True) as loc:
        info = loc.lstat() if loc.name != "." else os.fstat(loc.dir_fd)
        if info is None:
            os.mkdir(loc.name, 0o777, dir_fd=loc.dir_fd)
        elif not stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_NOTDIR, f"{dst} is not a folder (a pattern needs one)")
        folder = f"./{loc.rel}" if loc.rel else "."
    done: list[str] = []
    for match in matches:
        try:
            done.append(one(match, folder).dst)
        except LlmosError as exc:
            moved = f" (done before it: {', '.join(done)})" if done else ""
            raise LlmosError(exc.code, f"{match}: {exc.message}{moved}") from None
    return FsMoveResult(src=src, dst=_display(folder.removeprefix("./")), files=done)


def fs_copy(call: FsCopy, process: Process) -> FsMoveResult:
    """Copy a file (atomically written, never clobbering unless `overwrite`)."""
    ws = process.workspace
    if _is_pattern(ws, call.src):
        return _each(
            ws,
            call.src,
            call.dst,
            lambda s, d: fs_copy(FsCopy(src=s, dst=d, overwrite=call.overwrite), process),
        )
    with ws.locate(call.src) as src:
        info = _require(src, call.src)
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.src} is a folder; copy its files")
        if info.st_size > MAX_WRITE_BYTES:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{call.src} is over the {MAX_WRITE_BYTES}-byte write limit"
            )
        fd = _open_file(src, call.src)
        try:
            data = os.read(fd, MAX_WRITE_BYTES + 1)
        finally:
            os.close(fd)
        mode = stat.S_IMODE(info.st_mode)
        src_rel, src_name = src.rel, src.name
    with ws.locate(_destination(ws, call.dst, src_name), create_parents=True) as dst:
        if dst.rel == src_rel:
            raise LlmosError(ErrorCode.E_INVAL, f"{call.src} and {call.dst} are the same file")
        existing = dst.lstat()
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{dst.rel} is a folder")
        if existing is not None and not call.overwrite:
            raise LlmosError(ErrorCode.E_EXISTS, f"{dst.rel} already exists")
        try:
            write_atomic_at(dst.dir_fd, dst.name, data, exclusive=not call.overwrite, mode=mode)
        except LlmosError as exc:
            raise LlmosError(exc.code, f"{dst.rel}: {exc.message}") from None
        except OSError as exc:
            raise os_error(exc, call.dst) from None
        return FsMoveResult(src=src_rel, dst=dst.rel)


def fs_move(call: FsMove, process: Process) -> FsMoveResult:
    """Rename within the workspace; never clobbers unless `overwrite`."""
    ws = process.workspace
    if _is_pattern(ws, call.src):
        return _each(
            ws,
            call.src,
            call.dst,
            lambda s, d: fs_move(FsMove(src=s, dst=d, overwrite=call.overwrite), process),
        )
    with ws.locate(call.src, follow=False) as src:
        if src.is_root or src.name == ".":
            raise LlmosError(ErrorCode.E_PERM, "the workspace root cannot be moved")
        src_info = _require(src, call.src)
        dst_path = _destination(ws, call.dst, src.name)
        with ws.locate(dst_path, follow=False, create_parents=True) as dst:
            if dst.rel == src.rel:
                return FsMoveResult(src=src.rel, dst=dst.rel)
            dst_info = dst.lstat()
            if dst_info is not None:
                if not call.overwrite:
                    raise LlmosError(ErrorCode.E_EXISTS, f"{dst.rel} already exists")
                if stat.S_ISDIR(dst_info.st_mode):
                    raise LlmosError(ErrorCode.E_ISDIR, f"{dst.rel} is a folder")
            try:
                if dst_info is None and not stat.S_ISDIR(src_info.st_mode):
                    os.link(
                        src.name,
                        dst.name,
                        src_dir_fd=src.dir_fd,
                        dst_dir_fd=dst.dir_fd,
                        follow_symlinks=False,
                    )
                    os.unlink(src.name, dir_fd=src.dir_fd)
                else:
                    os.rename(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd)
            except OSError as exc:
                raise os_error(exc, f"{call.src} -> {call.dst}") from None
            return FsMoveResult(src=src.rel, dst=dst.rel)


def fs_mkdir(call: FsMkdir, process: Process) -> FsMkdirResult:
    """Create a folder with its parents; an existing folder is fine."""
    with process.workspace.locate(call.path, create_parents=True) as loc:
        info = loc.lstat() if loc.name != "." else os.fstat(loc.dir_fd)
        if info is not None:
            if not stat.S_ISDIR(info.st_mode):
                raise LlmosError(ErrorCode.E_EXISTS, f"{call.path} exists and is not a folder")
            return FsMkdirResult(path=_display(loc.rel), created=False)
        try:
            os.mkdir(loc.name, 0o777, dir_fd=loc.dir_fd)
        except OSError as exc:
            raise os_error(exc, call.path) from None
        return FsMkdirResult(path=loc.rel, created=True)


def _matcher(call: FsSearch) -> re.Pattern[str]:
    try:
        return re.compile(call.query if call.regex else re.escape(call.query), re.IGNORECASE)
    except re.error as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"bad regular expression: {exc}") from None


def _search_file(fd: int, rel: str, rx: re.Pattern[str], room: int) -> list[FsSearchHit]:
    data = os.read(fd, MAX_SEARCH_FILE_BYTES + 1)
    if len(data) > MAX_SEARCH_FILE_BYTES or b"\x00" in data[:8192]:
        return []
    text = data.decode("utf-8", errors="replace")
    hits: list[FsSearchHit] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if rx.search(line):
            hits.append(FsSearchHit(path=rel, line=number, text=line.strip()[:300]))
            if len(hits) >= room:
                break
    return hits


def fs_search(call: FsSearch, process: Process) -> FsSearchResult:
    """Case-insensitive text search over text files, skipping binaries and huge files."""
    rx = _matcher(call)
    hits: list[FsSearchHit] = []
    scanned = 0
    with process.workspace.locate(call.path) as loc:
        info = _require(loc, call.path)
        if not stat.S_ISDIR(info.st_mode):
            fd = _open_file(loc, call.path)
            try:
                hits = _search_file(fd, loc.rel, rx, call.max_hits)
            finally:
                os.close(fd)
            truncated = len(hits) >= call.max_hits
            return FsSearchResult(query=call.query, hits=hits, files_scanned=1, truncated=truncated)
        dfd = _open_dir(loc, call.path)
        prefix = f"{loc.rel}/" if loc.rel else ""
        try:
            for rel, name, st, parent_fd in _walk(dfd, recursive=True):
                if not stat.S_ISREG(st.st_mode) or not _glob_match(call.pattern, rel, name):
                    continue
                try:
                    # Open by name under the entry's own folder handle, never by a multi-part
                    # path: a folder swapped for a symlink meanwhile must not be followed.
                    fd = os.open(name, FILE_FLAGS, dir_fd=parent_fd)
                except OSError:
                    continue
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    continue
                try:
                    scanned += 1
                    hits += _search_file(fd, prefix + rel, rx, call.max_hits - len(hits))
                finally:
                    os.close(fd)
                if len(hits) >= call.max_hits:
                    return FsSearchResult(
                        query=call.query, hits=hits, files_scanned=scanned, truncated=True
                    )
        finally:
            os.close(dfd)
    return FsSearchResult(query=call.query, hits=hits, files_scanned=scanned, truncated=False)


def _path_resource(
    call: FsRead | FsWrite | FsList | FsStat | FsDelete | FsMkdir | FsSearch, process: Process
) -> Iterable[str]:
    return [process.workspace.relpath(call.path)]


def _move_resources(call: FsMove | FsCopy, process: Process) -> Iterable[str]:
    ws: Workspace = process.workspace
    return [ws.relpath(call.src), ws.relpath(call.dst)]


@hookimpl
def register_syscalls(registry: Registry) -> None:
    """Register the fs family."""
    registry.register(FsRead, fs_read, result=FsReadResult, resources=_path_resource)
    registry.register(FsWrite, fs_write, result=FsWriteResult, resources=_path_resource)
    registry.register(FsList, fs_list, result=FsListResult, resources=_path_resource)
    registry.register(FsStat, fs_stat, result=FsStatResult, resources=_path_resource)
    registry.register(FsDelete, fs_delete, result=FsDeleteResult, resources=_path_resource)
    registry.register(FsMove, fs_move, result=FsMoveResult, resources=_move_resources)
    registry.register(FsCopy, fs_copy, result=FsMoveResult, resources=_move_resources)
    registry.register(FsMkdir, fs_mkdir, result=FsMkdirResult, resources=_path_resource)
    registry.register(FsSearch, fs_search, result=FsSearchResult, resources=_path_resource)
