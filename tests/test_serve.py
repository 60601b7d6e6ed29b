"""`llmos serve`: one daemon per LLMOS_HOME; clients share its syscall table, memory store and
model over a Unix socket only their user can reach."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.client import call_remote, connect, run_piped_remote, socket_path
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.serve import Daemon, peer_uid, stop
from llmos.system import System


def start(settings: Settings) -> tuple[Daemon, threading.Thread]:
    """A daemon on a thread, once it accepts connections."""
    daemon = Daemon(settings)
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run(ready=ready.set)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(120), "the daemon did not start"
    if errors:
        raise errors[0]
    return daemon, thread


@pytest.fixture
def daemon(llmos_home: Path, tmp_path: Path) -> Iterator[Daemon]:
    """A daemon without a model (syscalls only): fast."""
    running, thread = start(Settings(model=str(tmp_path / "no-model.gguf")))
    yield running
    running.stopping.set()
    thread.join(30)


def piped(home: Path, workspace: Path, text: str) -> tuple[int, str, str]:
    """Run piped shell lines through the daemon; (status, what it said, what it said failed).
    Collected through the client's `say`, not sys.stdout: llama-cpp-python swaps sys.stdout
    while a model loads in the background, and puts back what it found."""
    conn = connect(home)
    assert conn is not None
    out: list[str] = []
    err: list[str] = []

    def say(line: str, ok: bool) -> None:
        (out if ok else err).append(line)

    try:
        status = run_piped_remote(conn, workspace, False, io.StringIO(text), say)
    finally:
        conn.close()
    return status, "\n".join(out), "\n".join(err)


def test_the_socket_is_private_and_one_daemon_runs_per_home(
    daemon: Daemon, llmos_home: Path, tmp_path: Path
) -> None:
    path = socket_path(llmos_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert int((llmos_home / "serve.pid").read_text()) == os.getpid()
    with pytest.raises(LlmosError) as second:
        Daemon(Settings(model=str(tmp_path / "no-model.gguf"))).run()
    assert second.value.code is ErrorCode.E_EXISTS and "already running" in second.value.message
    assert path.exists(), "the running daemon's socket is left alone"


def test_a_stale_socket_is_replaced_and_stop_cleans_up(llmos_home: Path, tmp_path: Path) -> None:
    llmos_home.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path(llmos_home)))
    dead.close()  # a socket file nobody listens on: a daemon that died
    assert connect(llmos_home) is None
    _, thread = start(Settings(model=str(tmp_path / "no-model.gguf")))
    assert connect(llmos_home) is not None
    assert "stopping" in stop(llmos_home)
    thread.join(30)
    assert not thread.is_alive() and not socket_path(llmos_home).exists()
    assert "no llmos daemon" in stop(llmos_home)


def test_a_call_through_the_daemon_is_checked_like_one_in_process(
    daemon: Daemon, llmos_home: Path, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("hello\n")
    conn = connect(llmos_home)
    assert conn is not None
    done = call_remote(conn, workspace, {"call": "fs.stat", "path": "a.txt"}, [])
    assert done["ok"] and done["value"]["size"] == 6
    conn = connect(llmos_home)
    assert conn is not None
    refused = call_remote(conn, workspace, {"call": "fs.delete", "path": "a.txt"}, [])
    assert not refused["ok"] and refused["code"] == "E_PERM"
    conn = connect(llmos_home)
    assert conn is not None
    allowed = call_remote(conn, workspace, {"call": "fs.delete", "path": "a.txt"}, ["fs.delete"])
    assert allowed["ok"] and not (workspace / "a.txt").exists()


def test_two_shells_share_one_memory(daemon: Daemon, llmos_home: Path, workspace: Path) -> None:
    """In-process, the second llmos to open memory gets E_IO; through the daemon a fact one
    shell keeps is found from the other, both connected at once."""
    first = connect(llmos_home)
    assert first is not None
    first.send({"op": "shell", "workspace": str(workspace), "resume": False})
    assert first.receive()["ready"]
    first.send({"op": "line", "text": 'mem.store text="my locker number is 88"\n'})
    assert first.receive()["ok"]
    status, out, err = piped(llmos_home, workspace, "mem.search query='locker number'\n:ps\n")
    assert status == 0, err
    assert "locker number is 88" in out
    first.send({"op": "end"})
    assert first.receive()["jobs_ok"]
    first.close()


def test_the_peer_uid_is_the_callers() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        assert peer_uid(a) == os.getuid()
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_clients_share_the_daemons_model_and_ps_shows_them_all(
    llmos_home: Path, workspace: Path, small_model: Path
) -> None:
    (workspace / "notes.txt").write_text("the train leaves at 9\n")
    daemon, thread = start(Settings(model=str(small_model)))
    try:
        other = connect(llmos_home)
        assert other is not None
        other.send({"op": "shell", "workspace": str(workspace), "resume": False})
        held = other.receive()["process"]
        status, out, err = piped(llmos_home, workspace, "what files are here?\n:ps\n")
        assert status == 0, err
        assert "notes.txt" in out, out
        assert held in out, "`:ps` shows the other client's process"
        other.send({"op": "end"})
        other.receive()
        other.close()
    finally:
        daemon.stopping.set()
        thread.join(60)


def test_llmos_call_goes_through_a_running_daemon(llmos_home: Path, workspace: Path) -> None:
    """`llmos serve` and `llmos call` as a person runs them: with the daemon holding memory, a
    call that stores a fact works through it (in-process it would find the store locked)."""
    env = {**os.environ, "LLMOS_HOME": str(llmos_home), "LLMOS_MODEL": str(workspace / "none")}
    server = subprocess.Popen(
        [sys.executable, "-m", "llmos", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "listening" in server.stdout.readline()
        command = [sys.executable, "-m", "llmos", "-w", str(workspace), "call"]
        kept = subprocess.run(
            [*command, "mem.store", "text=the gate code is 4321"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert kept.returncode == 0, kept.stderr
        direct = subprocess.run(
            [*command, "mem.search", "query=gate code"],
            env={**env, "LLMOS_NO_DAEMON": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert direct.returncode != 0 and "E_IO" in direct.stderr, "the daemon holds the store"
        found = subprocess.run(
            [*command, "mem.search", "query=gate code"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert found.returncode == 0 and "4321" in found.stdout, found.stderr
    finally:
        subprocess.run([sys.executable, "-m", "llmos", "serve", "--stop"], env=env, timeout=60)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0
    time.sleep(0)


def test_an_app_runs_through_the_daemon(
    daemon: Daemon, llmos_home: Path, workspace: Path, tmp_path: Path
) -> None:
    """`llmos run` through the daemon: its syscall steps on the daemon's table, approved with
    --yes (remembered: a second run needs no --yes), its output streamed back."""
    from llmos.client import run_remote

    app = tmp_path / "hello.toml"
    app.write_text(
        'name = "hello"\ncapabilities = ["fs.write"]\n\n[[steps]]\ncall = "fs.write"\n'
        'path = "out.txt"\ncontent = "made by the app"\n'
    )
    shown: list[str] = []
    conn = connect(llmos_home)
    assert conn is not None
    refused = run_remote(conn, app, workspace, {}, False, shown.append)
    assert not refused["ok"] and refused["code"] == "E_PERM" and "--yes" in refused["message"]
    conn = connect(llmos_home)
    assert conn is not None
    done = run_remote(conn, app, workspace, {}, True, shown.append)
    assert done["ok"], done
    assert (workspace / "out.txt").read_text() == "made by the app"
    assert any("fs.write" in line for line in shown)
    conn = connect(llmos_home)
    assert conn is not None
    assert run_remote(conn, app, workspace, {}, False, shown.append)["ok"], "remembered"


@pytest.mark.slow
def test_a_kernel_runs_on_the_daemons_model(
    llmos_home: Path, workspace: Path, small_model: Path, system: System
) -> None:
    """`llmos eval` through the daemon: its own kernel (and scratch system), the daemon's model
    decoding each step under the constraint it sends."""
    from llmos.kernel.loop import Conversation, Kernel
    from llmos.kernel.remote import RemoteBackend

    (workspace / "notes.txt").write_text("the train leaves at 9\n")
    daemon, thread = start(Settings(model=str(small_model)))
    try:
        conn = connect(llmos_home)
        assert conn is not None
        remote = RemoteBackend(conn)
        assert remote.name == small_model.stem and remote.tokens("hello there") > 0
        kernel = Kernel(system, remote)
        proc = system.spawn("eval", workspace, patterns=["fs.*", "reply", "ask"])
        events = list(kernel.turn(proc, Conversation(), "what files are here?"))
        assert events[-1].kind in ("reply", "ask")
        assert any(e.kind == "call" for e in events), "a call the grammar allowed, decoded remotely"
        remote.close()
    finally:
        daemon.stopping.set()
        thread.join(60)
