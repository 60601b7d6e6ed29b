"""Crash-safe writes: a killed writer leaves the old file or a whole new one, never a partial."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import llmos
from llmos.atomic import atomic_path, temp_name, write_atomic, write_atomic_at
from llmos.errors import ErrorCode, LlmosError
from llmos.syscalls.context import Process
from llmos.system import System

REPO = Path(llmos.__file__).resolve().parents[1]
SIZE = 4 * 1024 * 1024


def version(i: int) -> str:
    """The i-th complete content: a header naming i, then one letter repeated to SIZE bytes."""
    head = f"version {i:08d}\n"
    return head + chr(ord("a") + i % 26) * (SIZE - len(head))


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from llmos.config import Settings
    from llmos.system import System
    from tests.syscalls.test_atomic_write import version

    workspace, home, start = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    with System(Settings(home=home), plugins=False) as system:
        proc = system.spawn("writer", workspace)
        i = start
        while True:
            call = {"call": "fs.write", "path": "data.txt", "content": version(i)}
            result = system.dispatch(proc, call)
            if not result.ok:
                print(f"error {result.code} {result.message}", flush=True)
                sys.exit(3)
            print(f"done {i}", flush=True)
            i += 1
    """
)


def index_of(data: bytes) -> int:
    """Which complete version `data` is; fails the test on anything partial or mixed."""
    assert len(data) == SIZE, f"partial file: {len(data)} bytes of {SIZE}"
    head = data[:17].decode()
    assert head.startswith("version ") and head.endswith("\n"), head
    i = int(head[8:16])
    assert data == version(i).encode(), f"content of version {i} is torn"
    return i


def test_killed_writer_leaves_a_complete_version(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    target = workspace / "data.txt"
    target.write_text(version(0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LLMOS_HOME": str(tmp_path / "home")}
    rng = random.Random(1234)
    current, start = 0, 1
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(workspace), str(tmp_path / "home"), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        try:
            assert child.stdout is not None
            first = child.stdout.readline()  # the loop is running once one write is done
            assert first == f"done {start}\n", first + (child.stderr.read() if child.stderr else "")
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        # read through the stream readline used: communicate() reads the pipe beneath it and
        # misses the lines readline had already buffered
        out = child.stdout.read() if child.stdout else ""
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        assert child.returncode == -signal.SIGKILL
        done = [int(line.split()[1]) for line in (first + out).splitlines()]
        assert done == list(range(start, start + len(done)))
        last = done[-1]
        found = index_of(target.read_bytes())
        # the last reported write, or the next one if it was renamed in before the report
        assert found in (last, last + 1), (found, last)
        assert found != current
        leftovers = [n for n in os.listdir(workspace) if n != "data.txt"]
        assert all(".llmos-tmp-" in n for n in leftovers), leftovers
        for name in leftovers:
            os.unlink(workspace / name)
        current, start = found, last + 2
    # the content after all the kills is still readable through llmos
    assert index_of(target.read_bytes()) == current


def test_temp_files_left_by_a_kill_are_hidden_and_harmless(system: System, proc: Process) -> None:
    root = proc.workspace.root
    (root / "data.txt").write_text("old")
    (root / ".data.txt.llmos-tmp-0badf00d").write_text("ol")  # a writer died here
    listing = system.dispatch(proc, {"call": "fs.list"})
    assert [e["path"] for e in listing.value["entries"]] == ["data.txt"]
    assert system.dispatch(proc, {"call": "fs.read", "path": "data.txt"}).value["text"] == "old"
    assert system.dispatch(proc, {"call": "fs.write", "path": "data.txt", "content": "new"}).ok
    assert (root / "data.txt").read_text() == "new"


def test_failed_write_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f.txt").write_text("old")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):
            write_atomic_at(dir_fd, "f.txt", b"new content")
    finally:
        os.close(dir_fd)
    assert (tmp_path / "f.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_exclusive_write_never_clobbers(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("old")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(LlmosError) as info:
            write_atomic_at(dir_fd, "f.txt", b"new", exclusive=True)
        assert info.value.code is ErrorCode.E_EXISTS
        write_atomic_at(dir_fd, "g.txt", b"fresh", exclusive=True, mode=0o600)
    finally:
        os.close(dir_fd)
    assert (tmp_path / "f.txt").read_text() == "old"
    assert (tmp_path / "g.txt").read_bytes() == b"fresh"
    assert (tmp_path / "g.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["f.txt", "g.txt"]


def test_atomic_replace_does_not_follow_a_link_at_the_name(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("untouched")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").symlink_to(tmp_path / "outside.txt")
    dir_fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_atomic_at(dir_fd, "f.txt", b"replaced")
    finally:
        os.close(dir_fd)
    assert not (tmp_path / "d" / "f.txt").is_symlink()
    assert (tmp_path / "d" / "f.txt").read_bytes() == b"replaced"
    assert (tmp_path / "outside.txt").read_text() == "untouched"


@pytest.mark.parametrize("name", ["a" * 255, "文" * 85, "😀" * 63, "é" * 127])
def test_temp_name_fits_name_max_for_any_valid_name(name: str) -> None:
    assert len(name.encode()) <= 255
    first, second = temp_name(name), temp_name(name)
    assert len(first.encode()) <= 255
    assert first != second
    assert first.startswith(".") and ".llmos-tmp-" in first


def test_write_atomic_for_own_state_is_private(tmp_path: Path) -> None:
    target = tmp_path / "state" / "grants.json"
    write_atomic(target, b"{}")
    write_atomic(target, b'{"a": 1}')
    assert target.read_bytes() == b'{"a": 1}'
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(target.parent) == ["grants.json"]


def test_exclusive_write_without_hard_links_still_never_clobbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system has no hard links (os.link fails), an exclusive write falls back
    to a rename, and still refuses a name that is taken."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    write_atomic(tmp_path / "key", b"first", exclusive=True)
    with pytest.raises(LlmosError) as info:
        write_atomic(tmp_path / "key", b"second", exclusive=True)
    assert info.value.code is ErrorCode.E_EXISTS
    assert (tmp_path / "key").read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["key"]


def test_a_streamed_file_replaces_the_target_only_when_whole(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m.gguf"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".")
        tmp.write_bytes(b"GGUF v1")
    assert target.read_bytes() == b"GGUF v1"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_bytes(b"GGUF v2, cut short")
        raise ValueError("the download broke")
    with atomic_path(target):
        pass  # a writer that wrote nothing (llama.cpp refused) replaces nothing
    assert target.read_bytes() == b"GGUF v1"
    assert os.listdir(target.parent) == ["m.gguf"]
