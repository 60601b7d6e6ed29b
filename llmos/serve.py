"""`llmos serve`: one resident process per LLMOS_HOME holding the model (one scheduler), the
memory store and index, and the syscall table, so clients pay none of their start-up and share
one model and one memory store: two shells and an app at once, where in-process each would load
its own model and the second to open memory would get E_IO.

It listens on `$LLMOS_HOME/serve.sock` (mode 0600, the peer's uid checked against its own) and
holds `serve.lock` for its life, so a second `llmos serve` says one is running, and a socket
left by a daemon that died is removed by the next one. Each connection is a client: a piped
shell gets a `Shell` of its own here (its own process, conversation and scheduler client; the
same lines, commands and output as in-process), `llmos call` one syscall on a process of its
own. `llmos serve --stop` asks it to stop; so does SIGTERM. The client side is
`llmos.client` (standard library only)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import queue
import signal
import socket
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.client import PID_FILE, Connection, connect, socket_path
from llmos.errors import ErrorCode, LlmosError, from_exception

if TYPE_CHECKING:
    from llmos.config import Settings
    from llmos.shell.model import LazyKernel
    from llmos.system import System

log = logging.getLogger(__name__)

LOCK_FILE = "serve.lock"
GRANT_WAIT_S = 300.0
"""How long a grant question waits for the client's answer before it counts as a deny."""


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def claim_lock(home: Path) -> int:
    """Take `serve.lock` for this daemon's life (a file descriptor); E_EXISTS naming the running
    daemon's pid when another holds it."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = ""
        with contextlib.suppress(OSError, ValueError):
            pid = f" (pid {int((home / PID_FILE).read_text())})"
        raise LlmosError(
            ErrorCode.E_EXISTS, f"llmos serve is already running for {home}{pid}"
        ) from None
    return fd


def listen(home: Path) -> socket.socket:
    """The daemon's socket, mode 0600 (a stale one, left by a daemon that died, is replaced:
    the lock says no daemon is running)."""
    path = socket_path(home)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(32)
    return sock


class Daemon:
    """The resident process: the system, the model host, the socket, a thread per client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.ensure_home()
        self.stopping = threading.Event()
        self.numbers = itertools.count(1)
        self.system: System | None = None
        self.kernel: LazyKernel | None = None
        self.clients: dict[str, Path] = {}
        """Each connected shell's process name, and its workspace."""

    def run(self, ready: Any = None) -> int:
        """Serve until stopped; `ready` (a callable) is told once the socket accepts."""
        from llmos.system import System

        lock = claim_lock(self.home)
        try:
            sock = listen(self.home)
            (self.home / PID_FILE).write_text(str(os.getpid()))
            with System(self.settings) as system:
                self.system = system
                self.kernel = self._open_model(system)
                if threading.current_thread() is threading.main_thread():
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(sig, lambda *_: self.stopping.set())
                sock.settimeout(0.2)
                if ready is not None:
                    ready()
                while not self.stopping.is_set():
                    try:
                        conn, _ = sock.accept()
                    except TimeoutError:
                        continue
                    threading.Thread(
                        target=self._client, args=(conn,), name="llmos-client", daemon=True
                    ).start()
                sock.close()
                if self.kernel is not None:
                    self.kernel.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                socket_path(self.home).unlink()
            with contextlib.suppress(FileNotFoundError):
                (self.home / PID_FILE).unlink()
            os.close(lock)
        return 0

    def _open_model(self, system: System) -> LazyKernel | None:
        """The model host, loading in the background (None without a model: direct calls only)."""
        from llmos.kernel.backend import open_backend
        from llmos.kernel.models import resolve_model
        from llmos.shell.model import LazyKernel

        try:
            if not self.settings.server:
                resolve_model(self.settings.model, self.home)
        except LlmosError as exc:
            log.warning("llmos serve: %s; serving syscalls only", exc.message)
            return None
        return LazyKernel(system, lambda: open_backend(self.settings), own=None)

    def _client(self, sock: socket.socket) -> None:
        """Serve one connection until it ends."""
        conn = Connection(sock)
        try:
            if peer_uid(sock) != os.getuid():
                conn.send({"error": "E_PERM: this llmos daemon serves its own user only"})
                return
            message = conn.receive()
            op = message.get("op")
            if op == "shell":
                self._shell(conn, message)
            elif op == "call":
                self._call(conn, message)
            elif op == "run":
                self._run_app(conn, message)
            elif op == "model":
                self._model(conn)
            elif op == "stop":
                conn.send({"stopping": True})
                self.stopping.set()
            elif op == "ping":
                conn.send({"pid": os.getpid(), "home": str(self.home)})
            else:
                conn.send({"error": f"E_INVAL: unknown op {op!r}"})
        except (ConnectionError, OSError, ValueError):
            pass  # the client went away; its processes end with it
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _call(self, conn: Connection, message: dict[str, Any]) -> None:
        """One syscall on a process of its own, with the shell's defaults plus `allow`."""
        assert self.system is not None
        system = self.system
        patterns = [*system.settings.default_caps, *message.get("allow", [])]
        try:
            process = system.spawn("call", Path(message["workspace"]), patterns=patterns)
            result = system.dispatch(process, message["call"])
        except Exception as exc:
            error = from_exception(exc)
            conn.send({"ok": False, "code": str(error.code), "message": error.message})
            return
        conn.send(json.loads(result.model_dump_json()))

    def _model(self, conn: Connection) -> None:
        """The shared model for a client that runs its own kernel (`llmos eval`): completions,
        and token counts, one at a time on a background scheduler client."""
        from llmos.kernel.backend import context_of, count_tokens, text_tokens
        from llmos.kernel.grammar import constraint_from_data
        from llmos.kernel.remote import completion_data

        if self.kernel is None:
            conn.send({"error": "E_BACKEND: llmos serve has no model: syscalls only"})
            return
        try:
            client = self.kernel.host.client(f"model#{next(self.numbers)}", background=True)
        except LlmosError as exc:
            conn.send({"error": f"{exc.code}: {exc.message}"})
            return
        try:
            conn.send({"name": client.name, "context": context_of(client)})
            while True:
                message = conn.receive()
                try:
                    if "count" in message:
                        conn.send({"tokens": count_tokens(client, message["count"])})
                    elif "text" in message:
                        conn.send({"tokens": text_tokens(client, str(message["text"]))})
                    else:
                        shape = message.get("constraint")
                        done = client.complete(
                            message["messages"],
                            constraint=constraint_from_data(shape) if shape else None,
                            max_tokens=int(message["max_tokens"]),
                        )
                        conn.send({"completion": completion_data(done)})
                except (ConnectionError, OSError):
                    raise
                except Exception as exc:  # the client's request failed; the connection goes on
                    error = from_exception(exc)
                    conn.send({"error": f"{error.code}: {error.message}"})
        finally:
            client.close()

    def _run_app(self, conn: Connection, message: dict[str, Any]) -> None:
        """`llmos run APP.toml` for a client: the app on its own scheduler client of the shared
        model, its output sent as it comes; approved only with `yes` or as remembered (no one
        here to ask)."""
        from llmos.apps.manifest import load_manifest, run_app

        assert self.system is not None
        shared = self.kernel
        source = Path(message["manifest"])

        def show(text: str) -> None:
            conn.send({"say": text, "ok": True})

        def backend() -> Any:
            if shared is None:
                raise LlmosError(ErrorCode.E_BACKEND, "llmos serve has no model: syscalls only")
            name = f"app:{source.stem}#{next(self.numbers)}"
            return shared.host.client(name, background=True)

        try:
            manifest = load_manifest(source)
            run = run_app(
                self.system,
                manifest,
                source,
                Path(message["workspace"]),
                dict(message.get("inputs", {})),
                approve=lambda m, needs: True if message.get("yes") else None,
                backend=backend,
                show=show,
            )
        except Exception as exc:
            error = from_exception(exc)
            conn.send({"ok": False, "code": str(error.code), "message": error.message})
            return
        conn.send(
            {"ok": run.ok, "code": str(run.code) if run.code else None, "message": run.message}
        )

    def _shell(self, conn: Connection, message: dict[str, Any]) -> None:
        """A shell for this client, handling its lines as the in-process shell does. For an
        interactive client, grant questions go to it and its answers come back (an unclear
        answer is asked again once; none within GRANT_WAIT_S, or a client gone, is a deny),
        and its Ctrl-C cancels the request running."""
        from llmos.security.capabilities import GrantAnswer, GrantRequest
        from llmos.shell.grants import parse_answer, question
        from llmos.shell.model import LazyKernel
        from llmos.shell.repl import Shell

        assert self.system is not None
        lock = threading.Lock()
        interactive = bool(message.get("interactive"))
        inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        answers: queue.Queue[str | None] = queue.Queue()

        def send(data: dict[str, Any]) -> None:
            with lock:
                conn.send(data)

        def say(text: str, ok: bool) -> None:
            send({"say": text, "ok": ok})

        def grant(request: GrantRequest) -> GrantAnswer:
            for _ in range(2):
                send({"grant": question(request)})
                try:
                    text = answers.get(timeout=GRANT_WAIT_S)
                except queue.Empty:
                    return GrantAnswer.DENY
                answer = parse_answer(text) if text is not None else GrantAnswer.DENY
                if answer is not None:
                    return answer
            return GrantAnswer.DENY

        name = f"shell#{next(self.numbers)}"
        kernel = None
        if self.kernel is not None:  # a kernel of its own on the shared model
            kernel = LazyKernel(self.system, own=name, host=self.kernel.host)
        try:
            shell = Shell(
                self.system,
                Path(message["workspace"]),
                grant=grant if interactive else None,
                kernel=kernel,
                emit=say,
                resume=bool(message.get("resume")),
                notify=say,
            )
        except Exception as exc:
            error = from_exception(exc)
            send({"error": f"{error.code}: {error.message}"})
            return
        shell.process.name = name
        shell.others = lambda: [n for n in list(self.clients) if n != name]
        if interactive:
            shell.thinking = lambda on: send({"thinking": on})
        self.clients[name] = Path(message["workspace"])

        def read() -> None:
            """The client's messages: lines and the end queued, answers and Ctrl-C at once."""
            try:
                while True:
                    got = conn.receive()
                    if "answer" in got:
                        answers.put(str(got["answer"]))
                    elif got.get("op") == "cancel":
                        shell.cancelled()
                    else:
                        inbox.put(got)
            except (ConnectionError, OSError, ValueError):
                answers.put(None)
                inbox.put({"op": "gone"})

        send(
            {
                "ready": True,
                "process": name,
                "workspace": str(shell.process.workspace.root),
                "names": system_names(self.system),
            }
        )
        threading.Thread(target=read, name=f"llmos-{name}", daemon=True).start()
        try:
            while True:
                got = inbox.get()
                op = got.get("op")
                if op == "gone":
                    return
                if op == "end":
                    jobs = shell.jobs.wait_all()
                    send({"jobs_ok": all(job.outcome()[0] for job in jobs)})
                    return
                try:
                    ok, text = shell.handle(str(got.get("text", "")))
                except EOFError:
                    send({"eof": True})
                    continue
                send({"ok": ok, "text": text})
        finally:
            self.clients.pop(name, None)
            said = shell.leave()  # a client that went away leaves no job running
            if said:
                with contextlib.suppress(OSError):
                    say(said, True)
            if kernel is not None:
                kernel.close()


def system_names(system: System) -> list[str]:
    """The syscall names a client's completion offers."""
    return system.registry.names()


def stop(home: Path) -> str:
    """Ask the daemon of `home` to stop; what happened, in words."""
    conn = connect(home)
    if conn is None:
        return f"no llmos daemon runs for {home}"
    try:
        conn.send({"op": "stop"})
        conn.receive()
    finally:
        conn.close()
    return f"the llmos daemon for {home} is stopping"
