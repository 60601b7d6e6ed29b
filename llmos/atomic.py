"""Crash-safe writes, the one place llmos replaces a file: temp file beside the target, fsync,
rename (or hard link, to create without clobbering), directory fsync; a killed writer leaves the
old file or none, never half of one. The lowest layer, so every other one may use it."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from llmos.errors import ErrorCode, LlmosError

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

TEMP_MARK = ".llmos-tmp-"
"""In the name of every temp file a writer makes; listings and indexers skip such names."""


def temp_name(name: str) -> str:
    """A fresh hidden temp name for a file about to become `name`, in the same folder."""
    # Cut by bytes, not characters: 80 CJK characters are 240 bytes, and the temp name must stay
    # under NAME_MAX (255 bytes) for any name that is itself valid.
    stem = os.fsencode(name)[:80].decode("utf-8", "ignore")
    return f".{stem}{TEMP_MARK}{secrets.token_hex(4)}"


def write_all(fd: int, data: bytes, *, sync: bool = True) -> None:
    """Write every byte (os.write may write fewer) and, with `sync`, fsync, so it is on disk."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fsync(fd)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: str, name: str, dir_fd: int | None, *, exclusive: bool) -> None:
    """Move the finished temp file onto `name`: a rename, or for `exclusive` a hard link that
    fails with E_EXISTS instead of clobbering (a rename where the file system has no links)."""
    if not exclusive:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise LlmosError(ErrorCode.E_EXISTS, f"{name} already exists") from None
    except OSError:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        raise LlmosError(ErrorCode.E_EXISTS, f"{name} already exists") from None
    os.unlink(tmp, dir_fd=dir_fd)


def write_atomic_at(
    dir_fd: int, name: str, data: bytes, *, exclusive: bool = False, mode: int = 0o644
) -> None:
    """Replace (or, if `exclusive`, create) `name` in the folder `dir_fd` with `data`, atomically.

    The content goes to a temp file that is fsynced, then renamed (or hard-linked when exclusive,
    which fails with E_EXISTS instead of clobbering) over the target; the directory is fsynced too.
    """
    tmp = temp_name(name)
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC, mode, dir_fd=dir_fd
    )
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        _place(tmp, name, dir_fd, exclusive=exclusive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Atomically replace (or, if `exclusive`, create) a file of llmos's own state (under
    LLMOS_HOME) with `data`; its folder is made (0700) when missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        write_atomic_at(dir_fd, path.name, data, mode=mode, exclusive=exclusive)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temp path beside `target` for a writer that streams (a model file, a KV-cache state):
    when the block ends without an error and the temp file exists, it is fsynced and renamed onto
    `target`; on an error it is deleted. A writer that made no file replaces nothing."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(temp_name(target.name))
    try:
        yield tmp
        try:
            fd = os.open(tmp, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # the error that brought us here is the one to tell
            tmp.unlink()
        raise
    _sync_folder(target.parent)
