"""The light side of `llmos serve`: find the daemon of an LLMOS_HOME and talk to it. Standard
library only, so a client process (a piped shell, `llmos call`) starts in a fraction of a second
and stays small: the model, the memory and the syscall table live in the daemon.

The protocol is JSON, one object a line, both ways, over the Unix socket
`$LLMOS_HOME/serve.sock` (mode 0600; the daemon also checks the peer's uid)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

SOCKET_FILE = "serve.sock"
PID_FILE = "serve.pid"


def socket_path(home: Path) -> Path:
    """Where the daemon of `home` listens."""
    return home / SOCKET_FILE


def home_of_env() -> Path:
    """The LLMOS_HOME the environment names (the default otherwise), without loading Settings."""
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos")


class Connection:
    """One client connection: send a JSON object, read JSON objects back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("r", encoding="utf-8", newline="\n")

    def send(self, message: dict[str, Any]) -> None:
        """Send one message."""
        self.sock.sendall((json.dumps(message) + "\n").encode())

    def receive(self) -> dict[str, Any]:
        """The next message; ConnectionError when the daemon hung up."""
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the llmos daemon closed the connection")
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ConnectionError(f"the llmos daemon sent {line[:80]!r}")
        return data

    def close(self) -> None:
        """Close the connection (shut down first: a thread blocked reading it then wakes with
        end of input, where closing the reader under it would wait on its lock forever)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.reader.close()
        self.sock.close()


def connect(home: Path, timeout: float = 2.0) -> Connection | None:
    """A connection to the daemon of `home`, or None when none runs there."""
    path = socket_path(home)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    sock.settimeout(None)
    return Connection(sock)


def run_piped_remote(
    conn: Connection,
    workspace: Path,
    resume: bool,
    lines: TextIO | None = None,
    say: Callable[[str, bool], None] | None = None,
) -> int:
    """`llmos` with piped input (`lines`, stdin by default), through the daemon: each line is
    handled by a shell the daemon runs for this client (its own process and conversation, the
    shared model and memory); what it says goes to `say` (printed here by default) as it comes.
    Status 1 if any line or background job failed."""
    lines = sys.stdin if lines is None else lines
    say = say or _print
    conn.send({"op": "shell", "workspace": str(workspace.resolve()), "resume": resume})
    status = 0
    ready = conn.receive()
    if "error" in ready:
        print(ready["error"], file=sys.stderr)
        return 1
    for line in lines:
        conn.send({"op": "line", "text": line})
        message = _answer(conn, say)
        if message.get("eof"):
            break
        ok, text = bool(message.get("ok")), str(message.get("text", ""))
        if text:
            say(text, ok)
        status = status or (0 if ok else 1)
    conn.send({"op": "end"})
    message = _answer(conn, say)
    if not message.get("jobs_ok", True):
        status = status or 1
    return status


def _answer(conn: Connection, say: Callable[[str, bool], None]) -> dict[str, Any]:
    """The daemon's next answer, passing what its shell says before it to `say`."""
    while True:
        message = conn.receive()
        if "say" not in message:
            return message
        say(str(message["say"]), bool(message.get("ok", True)))


def _print(text: str, ok: bool) -> None:
    print(text, file=sys.stdout if ok else sys.stderr, flush=True)


def call_remote(
    conn: Connection, workspace: Path, call: dict[str, Any], allow: list[str]
) -> dict[str, Any]:
    """One syscall through the daemon's dispatch path: its result as JSON data."""
    conn.send({"op": "call", "workspace": str(workspace.resolve()), "call": call, "allow": allow})
    return conn.receive()


def run_remote(
    conn: Connection,
    manifest: Path,
    workspace: Path,
    inputs: dict[str, str],
    yes: bool,
    show: Any = print,
) -> dict[str, Any]:
    """`llmos run` of one manifest through the daemon; its lines go to `show` as they come.
    The outcome: {"ok", "code", "message"}."""
    conn.send(
        {
            "op": "run",
            "manifest": str(manifest.resolve()),
            "workspace": str(workspace.resolve()),
            "inputs": inputs,
            "yes": yes,
        }
    )
    while True:
        message = conn.receive()
        if "say" in message:
            show(str(message["say"]))
            continue
        return message


def run_terminal_remote(conn: Connection, workspace: Path, resume: bool, history: Path) -> int:
    """The interactive shell through the daemon: a prompt here (prompt-toolkit, with the
    syscall names to complete and the shell's history), every line handled by a shell the
    daemon runs for this client; a grant question it asks is asked here, Ctrl-C cancels the
    request running, and what background jobs say is printed above the prompt."""
    import queue
    import threading

    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    conn.send(
        {
            "op": "shell",
            "workspace": str(workspace.resolve()),
            "resume": resume,
            "interactive": True,
        }
    )
    ready = conn.receive()
    if "error" in ready:
        print(ready["error"], file=sys.stderr)
        return 1
    replies: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        try:
            while True:
                message = conn.receive()
                if "say" in message:
                    _print(str(message["say"]), bool(message.get("ok", True)))
                elif "thinking" not in message:
                    replies.put(message)
        except (ConnectionError, OSError, ValueError):
            replies.put({"gone": True})

    names = [str(n) for n in ready.get("names", [])]
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)), completer=WordCompleter(names, sentence=True)
    )
    print(f"llmos (through llmos serve) — workspace {ready.get('workspace')}. Type :help.")
    threading.Thread(target=read, name="llmos-client-reader", daemon=True).start()
    with patch_stdout():
        while True:
            try:
                line = session.prompt("llmos> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            conn.send({"op": "line", "text": line})
            while True:
                try:
                    message = replies.get()
                except KeyboardInterrupt:
                    conn.send({"op": "cancel"})
                    print("^C (cancelling)")
                    continue
                if "grant" in message:
                    try:
                        answer = session.prompt(str(message["grant"]))
                    except (EOFError, KeyboardInterrupt):
                        answer = "deny"
                    conn.send({"answer": answer})
                    continue
                break
            if message.get("gone"):
                print("the llmos daemon went away", file=sys.stderr)
                return 1
            if message.get("eof"):
                break
            text = str(message.get("text", ""))
            if text:
                _print(text, bool(message.get("ok")))
        conn.send({"op": "end"})
        replies.get()
    return 0
