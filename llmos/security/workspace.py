"""Workspace confinement: every path is resolved component by component under a directory handle.

Like WASI/cap-std, paths are never checked as strings and then opened: each directory is opened
relative to its parent's descriptor with O_NOFOLLOW, and symlinks are resolved by hand so that
`..` or an absolute target can never climb above the workspace root, even if a link is swapped
in after resolution began (the swapped link then fails O_NOFOLLOW instead of being followed).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmos.errors import ErrorCode, LlmosError, os_error
from llmos.limits import MAX_SYMLINK_HOPS

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | O_CLOEXEC


@dataclass
class Located:
    """A resolved workspace path: an open handle on its parent directory and its final name.

    `name` is "." when the path is a directory reached as a whole (the root, say). `rel` is the
    real workspace-relative path after symlinks, "" for the root.
    """

    dir_fd: int
    name: str
    rel: str

    @property
    def is_root(self) -> bool:
        """True for the workspace root itself."""
        return self.rel == ""

    def lstat(self) -> os.stat_result | None:
        """Stat of the final component without following it; None when it does not exist."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def _perm(message: str) -> LlmosError:
    return LlmosError(ErrorCode.E_PERM, message)


def open_dir_at(dir_fd: int, name: str) -> int:
    """Open the folder `name` under `dir_fd` without following a link.

    O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR on Linux, not ELOOP; a link swapped in
    after the check is reported as ELOOP (E_PERM) like any other refused link.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
        raise


class Workspace:
    """The directory a process may touch; every path the process names is resolved inside it."""

    def __init__(self, root: Path, *, hidden: Iterable[Path] = ()) -> None:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise LlmosError(ErrorCode.E_NOTDIR, f"workspace {root} is not a directory")
        self.root = real
        self._root_parts = real.parts
        self.hidden: tuple[str, ...] = ()
        """Workspace-relative real paths no call may reach, whatever it holds: llmos's own
        state (LLMOS_HOME: keys, config, grants, audit, memory) when it lies inside."""
        for path in hidden:
            inner = Path(os.path.realpath(path))
            if real == inner or inner in real.parents:
                raise _perm(
                    f"workspace {real} lies inside llmos's own state ({inner}); "
                    "start llmos in another folder"
                )
            if real in inner.parents:
                self.hidden += (inner.relative_to(real).as_posix(),)
        # Held for the workspace's lifetime: each resolution starts from a dup of this handle,
        # which is cheaper than re-walking the root's path and keeps pointing at the same
        # folder even if the path is later renamed or replaced.
        self._root_fd = os.open(real, DIR_FLAGS)
        self.guard: Callable[[str], None] | None = None
        """Called with the real workspace-relative path of everything `locate` resolves, so the
        dispatch path can check capability scopes against where a path really leads (a symlink
        inside the workspace must not carry a call out of its scope). Raises to refuse."""
        self.watch: Callable[[Located], None] | None = None
        """Called with everything `locate` resolves, after the guard passed it and before the
        caller acts on it: the dispatch path journals what a file-changing call will change."""

    def close(self) -> None:
        """Release the handle on the root."""
        if getattr(self, "_root_fd", -1) >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __del__(self) -> None:
        self.close()

    def hides(self, rel: str) -> bool:
        """Whether the real workspace path `rel` is, or lies inside, a hidden path."""
        return any(rel == h or rel.startswith(h + "/") for h in self.hidden)

    def hidden_below(self, rel: str) -> tuple[str, ...]:
        """The hidden paths inside the folder `rel`, relative to it: what a walk of that
        folder (a listing, a search, a recursive delete, a move of the folder) must leave out
        or refuse."""
        prefix = f"{rel}/" if rel else ""
        return tuple(h[len(prefix) :] for h in self.hidden if h.startswith(prefix) and h != rel)

    def check_whole(self, rel: str, shown: str) -> None:
        """Refuse (E_PERM) to move, copy or delete the folder `rel` as a whole when a hidden
        path lies inside it: llmos's state would go with it."""
        if self.hidden_below(rel):
            raise _perm(f"{shown}: it holds llmos's own state, which no call may touch")

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def relpath(self, path: str) -> str:
        """Normalise a path the model or person gave into a workspace-relative one ("" = root).

        `x`, `./x` and `/x` all mean the file x in the workspace; an absolute path under the
        workspace's real location is accepted too. `..`, `~`, and absolute paths into the rest
        of the machine (`/etc/passwd`) are refused with E_PERM.
        """
        if "\x00" in path:
            raise LlmosError(ErrorCode.E_INVAL, "path contains a NUL byte")
        if path.startswith("~"):
            raise _perm(f"{path}: the home directory is outside the workspace")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _perm(f"{path}: '..' is not allowed; paths stay inside the workspace")
        if path.startswith("/"):
            root = self._root_parts[1:]
            if tuple(parts[: len(root)]) == root:
                parts = parts[len(root) :]
            elif parts and self._outside_absolute(parts[0]):
                raise _perm(f"{path}: outside the workspace ({self.root})")
        return "/".join(parts)

    def _outside_absolute(self, first: str) -> bool:
        """Whether `/first/...` names the machine's own top-level folder, not the workspace's."""
        if os.path.lexists(self.root / first):
            return False
        return os.path.lexists("/" + first)

    @contextmanager
    def locate(
        self, path: str, *, follow: bool = True, create_parents: bool = False
    ) -> Iterator[Located]:
        """Resolve `path` to (parent handle, final name), confined; the handle closes on exit.

        With `follow`, a final symlink is resolved (inside the workspace only); without it, the
        final component is left as is (to delete or move a link itself). Missing parents raise
        E_NOENT unless `create_parents`.
        """
        rel = self.relpath(path)
        if self.hides(rel):  # before the walk: create_parents must not make folders in there
            raise _perm(f"{path}: llmos's own state is out of reach of every call")
        located, opened = self._walk(path, rel, follow=follow, create_parents=create_parents)
        try:
            if self.hides(located.rel):  # reached through a symlink
                raise _perm(f"{path}: llmos's own state is out of reach of every call")
            if self.guard is not None:
                self.guard(located.rel)
            if self.watch is not None:
                self.watch(located)
            yield located
        finally:
            for fd in opened:
                os.close(fd)

    def _walk(
        self, shown: str, rel: str, *, follow: bool, create_parents: bool
    ) -> tuple[Located, list[int]]:
        if self._root_fd < 0:
            raise LlmosError(ErrorCode.E_IO, "the workspace has been closed")
        root_fd = os.dup(self._root_fd)
        stack: list[int] = [root_fd]
        names: list[str] = []
        pending: deque[str] = deque(p for p in rel.split("/") if p)
        hops = 0
        try:
            while pending:
                comp = pending.popleft()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if len(stack) == 1:
                        raise _perm(f"{shown}: a symlink leads outside the workspace")
                    os.close(stack.pop())
                    names.pop()
                    continue
                last = not pending
                if last and not follow:
                    return self._located(stack, names, comp), stack
                try:
                    info = os.stat(comp, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return self._located(stack, names, comp), stack
                    if not create_parents:
                        raise LlmosError(
                            ErrorCode.E_NOENT,
                            f"{shown}: folder {'/'.join([*names, comp])} does not exist",
                        ) from None
                    os.mkdir(comp, 0o777, dir_fd=stack[-1])
                    info = os.stat(comp, dir_fd=stack[-1], follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise _perm(f"{shown}: too many symlinks")
                    target = os.readlink(comp, dir_fd=stack[-1])
                    if target.startswith("/"):
                        inner = self._inside_absolute(target)
                        if inner is None:
                            raise _perm(f"{shown}: a symlink points outside the workspace")
                        while len(stack) > 1:
                            os.close(stack.pop())
                        names.clear()
                        target = inner
                    pending.extendleft(reversed([p for p in target.split("/") if p]))
                    continue
                if last:
                    return self._located(stack, names, comp), stack
                if not stat.S_ISDIR(info.st_mode):
                    raise LlmosError(ErrorCode.E_NOTDIR, f"{shown}: {comp} is not a folder")
                stack.append(open_dir_at(stack[-1], comp))
                names.append(comp)
            return Located(dir_fd=stack[-1], name=".", rel="/".join(names)), stack
        except OSError as exc:
            for fd in stack:
                os.close(fd)
            raise os_error(exc, shown) from None
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise

    @staticmethod
    def _located(stack: list[int], names: list[str], name: str) -> Located:
        return Located(dir_fd=stack[-1], name=name, rel="/".join([*names, name]))

    def _inside_absolute(self, target: str) -> str | None:
        """The workspace-relative form of an absolute symlink target, or None if it is outside."""
        parts = posixpath.normpath(target).split("/")[1:]
        root = self._root_parts[1:]
        if tuple(parts[: len(root)]) != root:
            return None
        return "/".join(parts[len(root) :])
