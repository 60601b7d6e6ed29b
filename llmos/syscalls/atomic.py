"""Crash-safe writes: temp file, fsync, rename, directory fsync; a killed writer leaves the old."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from llmos.errors import ErrorCode, LlmosError

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _temp_name(name: str) -> str:
    # Cut by bytes, not characters: 80 CJK characters are 240 bytes, and the temp name must stay
    # under NAME_MAX (255 bytes) for any name that is itself valid.
    stem = os.fsencode(name)[:80].decode("utf-8", "ignore")
    return f".{stem}.llmos-tmp-{secrets.token_hex(4)}"


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer) and fsync, so the data is on disk."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def write_atomic_at(
    dir_fd: int, name: str, data: bytes, *, exclusive: bool = False, mode: int = 0o644
) -> None:
    """Replace (or, if `exclusive`, create) `name` in the folder `dir_fd` with `data`, atomically.

    The content goes to a temp file that is fsynced, then renamed (or hard-linked when exclusive,
    which fails with E_EXISTS instead of clobbering) over the target; the directory is fsynced too.
    """
    tmp = _temp_name(name)
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC, mode, dir_fd=dir_fd
    )
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise LlmosError(ErrorCode.E_EXISTS, f"{name} already exists") from None
            os.unlink(tmp, dir_fd=dir_fd)
        else:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Atomically replace a file of llmos's own state (under LLMOS_HOME) with `data`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        write_atomic_at(dir_fd, path.name, data, mode=mode)
    finally:
        os.close(dir_fd)
