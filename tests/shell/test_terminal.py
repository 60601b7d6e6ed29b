"""The real shell in a real terminal (tmux): a request the real small model carries out, one in
the background (`&`, `:ps`, its end announced above a half-typed line), a grant prompt answered
inline, Ctrl-C in the middle of a request, and Ctrl-D to leave (cancelling a running job)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Pane:
    """One tmux session running a command; keys go in, the screen comes out."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.name = f"llmos-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.stderr: Path | None = None
        # The pane starts idle and keeps its screen once its command exits (remain-on-exit),
        # so a shell that dies at start-up shows why instead of a vanished session.
        self._tmux("new-session", "-d", "-s", self.name, "-x", "160", "-y", "50", "cat")
        self._tmux("set-option", "-t", self.name, "remain-on-exit", "on")
        self._tmux("respawn-pane", "-k", "-t", self.name, command)

    def _tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, *args], env=self.env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"tmux {args[0]} failed: {done.stderr.strip()}"
        return done.stdout

    def send(self, *keys: str) -> None:
        """Type keys (tmux key names such as Enter or C-c, or literal text)."""
        self._tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        """Type literal text, then Enter."""
        self._tmux("send-keys", "-t", self.name, "-l", text)
        self.send("Enter")

    def screen(self) -> str:
        """What the terminal shows now (with the scrollback)."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 120.0, times: int = 1) -> str:
        """Wait until `text` shows on the screen `times` times; the screen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(text) >= times:
                return screen
            time.sleep(0.2)
        raise AssertionError(
            f"{text!r} never showed {times}x (shell exit status: {self.exit_status()}); "
            f"the screen:\n{self.screen()}"
        )

    def exit_status(self) -> int | None:
        """The shell's exit status once it has exited (the pane stays, dead), else None."""
        out = self._tmux("list-panes", "-t", self.name, "-F", "#{pane_dead} #{pane_dead_status}")
        dead, _, status = out.strip().partition(" ")
        return int(status or 0) if dead == "1" else None

    def send_signal(self, name: str) -> None:
        """Send a signal to the shell running in the pane."""
        pid = self._tmux("list-panes", "-t", self.name, "-F", "#{pane_pid}").strip()
        if pid:
            subprocess.run(["kill", f"-{name}", pid], capture_output=True, timeout=10)

    def close(self) -> None:
        """Kill the session (and the shell, if it still runs) and its server."""
        assert TMUX is not None
        subprocess.run([TMUX, "kill-server"], env=self.env, capture_output=True, timeout=30)


def _start(workspace: Path, llmos_home: Path, tmp_path: Path, *args: str) -> Pane:
    """The shell on `workspace` in a new tmux pane, run with `args`."""
    env = {
        **os.environ,
        "LLMOS_HOME": str(llmos_home),
        "TMUX_TMPDIR": str(tmp_path),
        "TERM": "xterm-256color",
    }
    env.pop("TMUX", None)
    argv = [sys.executable, "-X", "faulthandler", "-m", "llmos.cli", "-w", str(workspace), *args]
    command = " ".join(shlex.quote(a) for a in argv)
    stderr = tmp_path / "stderr.txt"
    shell = Pane(f"env LLMOS_HOME={shlex.quote(str(llmos_home))} {command} 2>{stderr}", env)
    shell.stderr = stderr
    return shell


@pytest.fixture
def pane(small_model: Path, workspace: Path, llmos_home: Path, tmp_path: Path) -> Iterator[Pane]:
    (workspace / "notes.txt").write_text("The meeting is at noon.\n")
    (workspace / "old.txt").write_text("stale\n")
    shell = _start(workspace, llmos_home, tmp_path, "--model", str(small_model))
    try:
        yield shell
    finally:
        shell.close()


@pytest.fixture
def direct_pane(workspace: Path, llmos_home: Path, tmp_path: Path) -> Iterator[Pane]:
    """The shell without a model (direct-call mode): starts in a second, needs no GGUF."""
    (workspace / "notes.txt").write_text("The meeting is at noon.\n")
    shell = _start(workspace, llmos_home, tmp_path, "--direct")
    try:
        yield shell
    finally:
        shell.close()


def after(screen: str, marker: str) -> str:
    """What the screen shows after the last `marker`."""
    return screen.rsplit(marker, 1)[-1]


def wait_after(pane: Pane, marker: str, needle: str, seconds: float, what: str) -> None:
    """Wait until `needle` shows on the screen after `marker`, else fail saying `what`."""
    deadline = time.monotonic() + seconds
    while needle not in after(pane.screen(), marker):
        assert time.monotonic() < deadline, f"{what}:\n{pane.screen()}"
        time.sleep(0.2)


def first_prompt(pane: Pane) -> None:
    """Wait for the shell's first prompt. Under the full suite in CI the screen has stayed
    blank now and then (cause not found yet: the process was running); if so, ask for a
    redraw, and if that does not help, make the shell dump its threads' stacks (faulthandler)
    into the failure message."""
    try:
        pane.wait_for("llmos>", timeout=45)
        return
    except AssertionError:
        pane.send("C-l")
    try:
        pane.wait_for("llmos>", timeout=30)
        warnings.warn("the shell's first screen stayed blank until a redraw", stacklevel=1)
        return
    except AssertionError:
        pane.send_signal("ABRT")
        time.sleep(2)
        stacks = pane.stderr.read_text() if pane.stderr else ""
        raise AssertionError(
            f"no prompt, even after a redraw; the shell's threads:\n{stacks}"
        ) from None


LONG_REQUESTS = (
    "write a very long poem about the sea, the wind and the stars",
    "tell me a very long story about a lighthouse keeper and his dog",
    "write a very long essay on the history of sailing ships",
)
"""Requests the small model takes a while over; now and then it is done with one in three
seconds, before Ctrl-C arrives (CI saw it once), so the next is tried."""


def interrupt_a_request(pane: Pane) -> None:
    """Press Ctrl-C while a request runs (its spinner shows) and see it cancelled; a request
    that ended before the key arrived proves nothing, so another is tried."""
    for request in LONG_REQUESTS:
        marker = f"llmos> {request}"
        pane.type(request)
        pane.wait_for(marker)
        deadline = time.monotonic() + 120
        while True:
            shown = after(pane.screen(), marker)
            if "thinking…" in shown:  # the spinner (`:ps` shows a job's state "thinking")
                pane.send("C-c")
                break
            if "llmos>" in shown:
                break  # done before its spinner was seen
            assert time.monotonic() < deadline, f"the request never ran:\n{pane.screen()}"
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = after(pane.screen(), marker)
            if "^C (cancelled" in shown:
                return
            if "llmos>" in shown:
                break  # it ended before Ctrl-C did anything
            time.sleep(0.2)
    raise AssertionError(f"no request was cancelled by Ctrl-C:\n{pane.screen()}")


@pytest.mark.slow
def test_a_session_in_a_real_terminal(pane: Pane, workspace: Path) -> None:
    first_prompt(pane)
    pane.type("what does notes.txt say?")
    pane.wait_for("→ fs.read", timeout=240)
    screen = pane.wait_for("→ reply", timeout=240)
    assert "noon" in after(screen, "→ reply"), "the kernel read the file and answered"

    pane.type("what does notes.txt say? &")
    pane.wait_for("[1] started: what does notes.txt say?")
    pane.type(":ps")
    screen = pane.wait_for("job1")
    row = next(line for line in screen.splitlines() if line.startswith("[1]") and "job1" in line)
    assert row.endswith("what does notes.txt say?"), row
    pane.send("-l", "fs.li")  # half a line, typed while the job (most likely) still runs
    deadline = time.monotonic() + 240
    while not any(f"[1] {end}:" in pane.screen() for end in ("done", "failed")):
        assert time.monotonic() < deadline, f"the job never ended:\n{pane.screen()}"
        time.sleep(0.2)
    pane.send("-l", "st")
    pane.send("Enter")
    deadline = time.monotonic() + 60
    while "notes.txt" not in after(pane.screen(), "llmos> fs.list"):
        assert time.monotonic() < deadline, f"the half-typed line was lost:\n{pane.screen()}"
        time.sleep(0.2)

    pane.type("!fs.delete path=old.txt")
    pane.wait_for("wants fs.delete on old.txt")
    assert (workspace / "old.txt").exists(), "nothing is deleted before the answer"
    pane.type("o")
    pane.wait_for('"deleted"')
    assert not (workspace / "old.txt").exists()

    interrupt_a_request(pane)
    pane.type("fs.list")
    wait_after(pane, "^C (cancelled", "notes.txt", 60, "no listing after ^C")

    pane.type("write a very long story about a cat &")
    pane.wait_for("[2] started")
    time.sleep(1.0)  # a ^D typed before the prompt is up would go to the tty's line discipline
    pane.send("C-d")
    # Every screen seen on the way out, not just the last: in CI a dead pane once showed only
    # its first two rows (with status 0), which did not happen here in 9 runs, loaded or not.
    seen = []
    deadline = time.monotonic() + 30
    while pane.exit_status() is None:
        assert time.monotonic() < deadline, "Ctrl-D did not leave the shell"
        seen.append(pane.screen())
        time.sleep(0.05)
    assert pane.exit_status() == 0, pane.stderr.read_text() if pane.stderr else ""
    seen.append(pane.screen())
    said = "cancelled 1 background job(s) still running: [2] write a very long"
    stderr = pane.stderr.read_text() if pane.stderr else ""
    assert any(said in screen for screen in seen), f"{seen[-1]}\nstderr:\n{stderr}"


def test_bad_lines_in_a_real_terminal_leave_the_shell_running(
    direct_pane: Pane, workspace: Path
) -> None:
    pane = direct_pane
    first_prompt(pane)
    pane.type("!")
    pane.wait_for("E_INVAL: ! runs a syscall")
    pane.type("fs.list")
    wait_after(pane, "llmos> fs.list", "notes.txt", 30, "no listing after '!'")
    pane.type("reply to the email from Bob")
    pane.wait_for("direct-call mode (no model loaded)")
    pane.type("!reply hi there")
    screen = pane.wait_for("hi there", times=2)
    assert pane.exit_status() is None and "Traceback" not in screen
    time.sleep(0.5)
    pane.send("C-d")
    deadline = time.monotonic() + 30
    while pane.exit_status() is None:
        assert time.monotonic() < deadline, "Ctrl-D did not leave the shell"
        time.sleep(0.2)
    assert pane.exit_status() == 0


def test_the_terminal_shell_through_the_daemon_asks_its_grants_there(
    workspace: Path, llmos_home: Path, tmp_path: Path
) -> None:
    """With `llmos serve` running, the terminal shell is a client of it: its lines run in the
    daemon, and a grant question the daemon's shell asks is asked, and answered, in this
    terminal (a daemon without a model: direct calls only)."""
    import threading

    from llmos.config import Settings
    from llmos.serve import Daemon

    (workspace / "old.txt").write_text("stale\n")
    daemon = Daemon(Settings(model=str(tmp_path / "no-model.gguf")))
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set}, daemon=True)
    thread.start()
    assert ready.wait(60)
    shell = _start(workspace, llmos_home, tmp_path)
    try:
        shell.wait_for("through llmos serve", timeout=60)
        shell.type("fs.list")
        shell.wait_for("old.txt")
        shell.type("fs.delete path=old.txt")
        shell.wait_for("Allow?", timeout=30)
        assert (workspace / "old.txt").exists(), "nothing deleted before the answer"
        shell.type("o")
        deadline = time.monotonic() + 30
        while (workspace / "old.txt").exists():
            assert time.monotonic() < deadline, shell.screen()
            time.sleep(0.2)
        shell.send("C-d")
        deadline = time.monotonic() + 30
        while shell.exit_status() is None:
            assert time.monotonic() < deadline, shell.screen()
            time.sleep(0.2)
        assert shell.exit_status() == 0
    finally:
        shell.close()
        daemon.stopping.set()
        thread.join(30)
