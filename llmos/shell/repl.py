"""The shell: a prompt-toolkit REPL on a terminal, plain line-by-line when input is a pipe.

A line that starts with a syscall name (or `!`) runs that syscall directly; anything else is a
request for the kernel, whose every step is shown as it happens. Without a model the shell
runs in direct-call mode. The model loads in the background, so the prompt appears at once.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmos.errors import ErrorCode, LlmosError
from llmos.security.audit import verify_log
from llmos.security.capabilities import GrantAnswer, GrantCallback, GrantRequest
from llmos.shell.grants import parse_answer, question, terminal_grant
from llmos.syscalls.cmdline import parse_line

if TYPE_CHECKING:
    from llmos.kernel.backend import Backend
    from llmos.kernel.loop import Event, Kernel
    from llmos.kernel.process import Process
    from llmos.system import System

Emit = Callable[[str, bool], None]

HELP = """\
Ask for what you want in plain words ("tidy the .log files into logs/"), or type a syscall to
run it directly, e.g.  fs.list   fs.read path=notes.txt   !fs.write path=a.txt content=hi
Built-ins:
  :help                 this text
  :syscalls             the syscall table
  :caps                 capabilities this session holds
  :caps grant CALL [on SCOPE]   grant one for this session (e.g. :caps grant fs.delete on old)
  :caps revoke ID       revoke one (and everything attenuated from it)
  :audit                verify the audit log
  :mem                  context budget, summary, resident and recalled turns
  :model                the model in use and its speed
  :apps                 plugin apps loaded (and failed), tools declared
  :ps                   processes of this shell
Keys: Enter runs the line, Alt-Enter (or Esc Enter) starts a new line, Ctrl-C cancels the
current request, Ctrl-D leaves.
  :quit                 leave (or Ctrl-D)
"""


class LazyKernel:
    """Loads the model in a background thread; `get` waits for it (or raises its error)."""

    def __init__(self, system: System, loader: Callable[[], Backend]) -> None:
        self.system = system
        self._loader = loader
        self._kernel: Kernel | None = None
        self._error: LlmosError | None = None
        self._thread = threading.Thread(target=self._load, name="llmos-model", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        from llmos.kernel.loop import Kernel

        try:
            kernel = Kernel(self.system, self._loader())
            kernel.warm()
            self._kernel = kernel
            self._warm_memory()
        except LlmosError as exc:
            self._error = exc
        except Exception as exc:
            self._error = LlmosError(ErrorCode.E_BACKEND, f"{type(exc).__name__}: {exc}")

    def _warm_memory(self) -> None:
        """Load the embedder and ready the index in the background, so the first page-in or
        mem.search does not wait for them; a memory that cannot open says so on first use."""
        try:
            self.system.memory.warm()
        except LlmosError:
            return

    @property
    def ready(self) -> bool:
        """True once the model has loaded (or failed to)."""
        return not self._thread.is_alive()

    def get(self) -> Kernel:
        """The kernel, waiting for the model to finish loading."""
        self._thread.join()
        if self._kernel is None:
            raise self._error or LlmosError(ErrorCode.E_BACKEND, "the model did not load")
        return self._kernel


def render_event(event: Event) -> tuple[str, bool]:
    """One kernel step as the shell shows it: (text, ok)."""
    if event.kind == "call" and event.call is not None:
        args = " ".join(
            f"{k}={_short(v)}" for k, v in event.call.items() if k != "call" and v is not None
        )
        return f"→ {event.call['call']} {args}".rstrip() + f"   ({event.seconds:.1f}s)", True
    if event.kind == "result" and event.result is not None:
        text = event.result.render()
        lines = text.splitlines() or [""]
        shown = "\n".join("  " + line for line in lines[:8])
        if len(lines) > 8:
            shown += f"\n  … {len(lines) - 8} more lines"
        return shown, event.result.ok
    if event.kind == "ask":
        return f"? {event.text}", True
    if event.kind == "memory":
        return f"· {event.text}", True
    return event.text, event.kind == "reply"


def _short(value: object) -> str:
    text = str(value).replace("\n", "⏎")
    return repr(text[:40] + "…") if len(text) > 40 or " " in text else text


class Shell:
    """One shell session: a process on the workspace and the commands typed into it."""

    def __init__(
        self,
        system: System,
        workspace: Path,
        grant: GrantCallback | None,
        kernel: LazyKernel | None = None,
        emit: Emit | None = None,
        resume: bool = False,
    ) -> None:
        from llmos.memory.pager import new_conversation, resume_conversation

        self.system = system
        self.process: Process = system.spawn("shell", workspace, grant=grant)
        self.kernel = kernel
        home = system.settings.ensure_home()
        self.conversation = resume_conversation(home) if resume else new_conversation(home)
        self.emit: Emit = emit or (lambda text, ok: None)
        self.thinking: Callable[[bool], None] = lambda on: None
        """Told when the kernel starts and stops thinking (the terminal shows a spinner)."""

    def handle(self, line: str) -> tuple[bool, str]:
        """Run one line; returns (ok, text to show). Never raises for bad input."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True, ""
        if line.startswith(":"):
            return self.builtin(line[1:].split())
        if line.startswith("!"):
            line = line[1:]
        first = line.split(maxsplit=1)[0]
        if not first.startswith("{") and first not in self.system.registry:
            return self.ask_kernel(line)
        try:
            raw = parse_line(line)
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        result = self.system.dispatch(self.process, raw)
        return result.ok, result.render()

    def ask_kernel(self, request: str) -> tuple[bool, str]:
        """Run a request through the kernel, emitting each step; returns the final status."""
        if self.kernel is None:
            return False, (
                "direct-call mode (no model loaded): type a syscall, e.g. fs.list "
                "(see :syscalls); install a model with: llmos model pull"
            )
        self.thinking(True)
        try:
            kernel = self.kernel.get()
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        finally:
            self.thinking(False)
        events = kernel.turn(self.process, self.conversation, request)
        try:
            while True:
                self.thinking(True)
                try:
                    event = next(events)
                except StopIteration:
                    return False, ""
                finally:
                    self.thinking(False)
                text, good = render_event(event)
                if event.kind in ("reply", "ask"):
                    return True, text
                self.emit(text, good)
        finally:
            events.close()

    def cancelled(self) -> None:
        """After Ctrl-C in the middle of a request: the model's cache may hold a half-evaluated
        batch, so it starts clean from its saved system prompt next time."""
        if self.kernel is not None and self.kernel.ready:
            try:
                reset = getattr(self.kernel.get().backend, "reset", None)
            except LlmosError:
                return
            if callable(reset):
                reset()

    def grant(self, call: str, scope: str | None) -> tuple[bool, str]:
        """`:caps grant`: a capability for this session, scoped to a workspace path if given."""
        from llmos.security.capabilities import ANY

        if call not in self.system.registry and not call.endswith("*"):
            return False, f"E_INVAL: no syscall {call!r} (see :syscalls)"
        if scope is None:
            resource = ANY
        else:
            try:
                resource = self.process.workspace.relpath(scope) or ANY
            except LlmosError as exc:
                return False, f"{exc.code}: {exc.message}"
        cap = self.system.authority.mint(call, scope=resource)
        self.process.caps.add(cap)
        return True, f"granted {cap.describe()} for this session ({cap.id})"

    def model_status(self) -> tuple[bool, str]:
        """`:model`: which model the kernel runs, its context and measured speed."""
        if self.kernel is None:
            return True, "no model (direct-call mode); install one with: llmos model pull"
        if not self.kernel.ready:
            return True, "the model is still loading"
        try:
            backend = self.kernel.get().backend
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        lines = [f"model {backend.name}"]
        path = getattr(backend, "model_path", None)
        if path is not None:
            lines.append(f"file {path}")
        context = getattr(backend, "context", None)
        if context:
            lines.append(f"context {context} tokens")
        threads = getattr(backend, "n_threads", None)
        if threads:
            lines.append(f"threads {threads}")
        speed = float(getattr(backend, "decode_tps", 0.0) or 0.0)
        if speed:
            lines.append(f"decode {speed:.1f} tokens/s (last request)")
        return True, "\n".join(lines)

    def apps_status(self) -> str:
        """`:apps`: plugin apps that loaded and failed, and the tools declared."""
        from llmos.apps.plugins import BUILTIN_FAMILIES

        report = self.system.plugins
        apps = [name for name in report.loaded if name not in BUILTIN_FAMILIES]
        lines = [f"loaded: {', '.join(apps) or '(no plugin apps)'}"]
        lines += [f"failed: {name}: {why}" for name, why in report.failed.items()]
        tools = self.system.tools.names()
        lines.append(f"tools: {', '.join(tools) or '(none)'}")
        return "\n".join(lines)

    def processes(self) -> str:
        """`:ps`: this shell's process, with its workspace and conversation size."""
        proc = self.process
        turns = len(self.conversation.turns) + self.conversation.paged_out
        return (
            f"{'PID':>4}  {'NAME':10} {'TURNS':>5}  WORKSPACE\n"
            f"{proc.pid:>4}  {proc.name:10} {turns:>5}  {proc.workspace.root}"
        )

    def context_use(self) -> str:
        """Prompt tokens in use against the budget, for the toolbar ("" before a request)."""
        pager = self.conversation.pager
        if pager is None or not pager.stats.prompt_tokens or self.kernel is None:
            return ""
        try:
            limit = pager.budget(self.kernel.get()).limit
        except LlmosError:
            return ""
        return f"context {pager.stats.prompt_tokens}/{limit}"

    def memory_status(self) -> tuple[bool, str]:
        """`:mem`: the pager's view of this conversation, and the memory store's counts."""
        pager = self.conversation.pager
        if self.kernel is None or pager is None:
            return False, "no kernel: the conversation is not paged (direct-call mode)"
        try:
            kernel = self.kernel.get()
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        text = pager.describe(kernel, self.conversation)
        if self.system.memory_opened:
            db = self.system.memory.db
            text += (
                f"\nmemory store: {db.count('archival')} kept facts, "
                f"{db.count('recall')} recall pages"
            )
        return True, text

    def builtin(self, words: list[str]) -> tuple[bool, str]:
        """The `:` commands."""
        name, rest = (words[0], words[1:]) if words else ("help", [])
        if name == "help":
            return True, HELP
        if name == "syscalls":
            specs = self.system.registry.specs()
            return True, "\n".join(f"{s.name:18} {s.description}" for s in specs)
        if name == "caps":
            if rest[:1] == ["revoke"] and len(rest) == 2:
                self.system.authority.revoke(rest[1])
                return True, f"revoked {rest[1]}"
            if rest[:1] == ["grant"] and len(rest) in (2, 4) and rest[2:3] in ([], ["on"]):
                return self.grant(rest[1], rest[3] if len(rest) == 4 else None)
            held = self.process.caps.caps
            lines = [f"{c.id}  {c.describe()}" for c in held if self.system.authority.is_valid(c)]
            lines += [f"denied  {call} on {scope}" for call, scope in self.process.caps.denied]
            return True, "\n".join(lines) or "(none)"
        if name == "audit":
            count, problems = verify_log(self.system.audit.path, self.system.signer)
            if problems:
                return False, "\n".join(f"line {p.line}: {p.reason}" for p in problems)
            return True, f"audit log OK: {count} lines verified"
        if name == "mem":
            return self.memory_status()
        if name == "model":
            return self.model_status()
        if name == "apps":
            return True, self.apps_status()
        if name == "ps":
            return True, self.processes()
        if name in ("quit", "exit", "q"):
            raise EOFError
        return False, f"unknown command :{name}; try :help"


def _plain_emit(text: str, ok: bool) -> None:
    print(text, file=sys.stdout if ok else sys.stderr, flush=True)


def run_piped(
    system: System, workspace: Path, kernel: LazyKernel | None = None, resume: bool = False
) -> int:
    """Non-terminal input: one line at a time, plain output; status 1 if any line failed."""
    shell = Shell(system, workspace, grant=None, kernel=kernel, emit=_plain_emit, resume=resume)
    status = 0
    for line in sys.stdin:
        try:
            ok, text = shell.handle(line)
        except EOFError:
            break
        if text:
            print(text, file=sys.stdout if ok else sys.stderr, flush=True)
        status = status or (0 if ok else 1)
    return status


PATH_KEYS = ("path", "src", "dst")
BUILTINS = (":help", ":syscalls", ":caps", ":audit", ":mem", ":model", ":apps", ":ps", ":quit")
COLOURS = {"call": "\033[36m", "quiet": "\033[2m", "error": "\033[31m", "reply": "\033[1m"}
RESET = "\033[0m"


def paint(text: str, ok: bool) -> str:
    """A step's line coloured for a terminal: calls cyan, results and paging dim, errors red."""
    if not ok:
        return f"{COLOURS['error']}✗ {text.strip()}{RESET}"
    if text.startswith("→ "):
        return f"{COLOURS['call']}{text}{RESET}"
    if text.startswith(("  ", "· ")):
        return f"{COLOURS['quiet']}{text}{RESET}"
    return text


def workspace_paths(root: Path, prefix: str, limit: int = 50) -> list[str]:
    """Workspace paths starting with `prefix` (folders end in /), for completion; nothing
    outside the workspace and no hidden files unless asked for."""
    folder, _, stem = prefix.rpartition("/")
    if ".." in folder.split("/") or prefix.startswith(("/", "~")):
        return []
    base = root / folder if folder else root
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        name = entry.name
        if not name.startswith(stem) or (name.startswith(".") and not stem.startswith(".")):
            continue
        text = f"{folder}/{name}" if folder else name
        out.append(text + "/" if entry.is_dir() and not entry.is_symlink() else text)
        if len(out) >= limit:
            break
    return out


class Spinner:
    """A spinner on the terminal's current line while the kernel thinks; `pause` clears it so
    a step's line or a grant prompt can be printed."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._on = threading.Event()
        self._lock = threading.Lock()
        self._since = 0.0
        self._thread = threading.Thread(target=self._spin, name="llmos-spinner", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        frame = 0
        while True:
            self._on.wait()
            with self._lock:
                if self._on.is_set():
                    spent = time.monotonic() - self._since
                    glyph = self.FRAMES[frame % len(self.FRAMES)]
                    self.stream.write(f"\r{glyph} thinking… {spent:.1f}s")
                    self.stream.flush()
            frame += 1
            time.sleep(0.1)

    def resume(self) -> None:
        """Show the spinner (the clock starts again)."""
        self._since = time.monotonic()
        self._on.set()

    def pause(self) -> None:
        """Hide the spinner and clear its line."""
        with self._lock:
            if self._on.is_set():
                self._on.clear()
                self.stream.write("\r\033[K")
                self.stream.flush()


def run_shell(
    system: System, workspace: Path, kernel: LazyKernel | None = None, resume: bool = False
) -> int:
    """Start the shell on `workspace`: the REPL on a terminal, plain lines on a pipe; with
    `resume`, continue the last saved conversation."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_piped(system, workspace, kernel, resume)
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document
    from prompt_toolkit.formatted_text import HTML
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.output.vt100 import Vt100_Output

    # The shell opens the terminal itself (by the name of the one on stdin): llama-cpp-python
    # points fd 1 and sys.stdout at /dev/null while it loads a model in the background, so a
    # prompt drawn then through them was lost, leaving a blank screen until a key was pressed
    # (and a dup of fd 1 taken in that moment is /dev/null too).
    term = open(  # noqa: SIM115 (open for the whole session; closed at exit)
        os.ttyname(sys.stdin.fileno()), "w", buffering=1, encoding="utf-8", errors="replace"
    )
    spinner = Spinner(term)

    def grant(request: GrantRequest) -> GrantAnswer:
        spinner.pause()
        try:
            for _ in range(2):
                try:
                    answer = parse_answer(session.prompt(question(request)))
                except (EOFError, KeyboardInterrupt):
                    return GrantAnswer.DENY
                if answer is not None:
                    return answer
            return GrantAnswer.DENY
        finally:
            spinner.resume()

    class ShellCompleter(Completer):
        """Syscall names and built-ins first on the line; workspace paths after them (and
        after path=, src=, dst=)."""

        def get_completions(
            self, document: Document, complete_event: CompleteEvent
        ) -> Iterator[Completion]:
            word = document.get_word_before_cursor(WORD=True)
            first = not document.text_before_cursor[: -len(word) or None].strip()
            if first:
                for name in [*system.registry.names(), *BUILTINS]:
                    if name.startswith(word.lstrip("!")):
                        yield Completion(name, start_position=-len(word.lstrip("!")))
                return
            key, eq, value = word.partition("=")
            if eq and key not in PATH_KEYS:
                return
            prefix = value if eq else word
            for path in workspace_paths(shell.process.workspace.root, prefix):
                yield Completion(path, start_position=-len(prefix))

    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    # No cursor-position requests: a terminal that does not answer them (tmux, some
    # multiplexers) made prompt_toolkit fail on the next prompt with "a different loop".
    output = Vt100_Output.from_pty(term)
    output.enable_cpr = False
    home = system.settings.ensure_home()
    session: PromptSession[str] = PromptSession(
        output=output,
        history=FileHistory(str(home / "history")),
        completer=ShellCompleter(),
        key_bindings=keys,
        complete_while_typing=False,
    )

    def emit(text: str, ok: bool) -> None:
        spinner.pause()
        print(paint(text, ok), file=term, flush=True)
        spinner.resume()

    shell = Shell(system, workspace, grant=grant, kernel=kernel, emit=emit, resume=resume)
    shell.thinking = lambda on: spinner.resume() if on else spinner.pause()

    def toolbar() -> HTML:
        if kernel is None:
            state = "direct-call mode (no model)"
        elif kernel.ready:
            try:
                state = f"model {kernel.get().backend.name}"
            except LlmosError:
                state = "model failed to load (:model)"
        else:
            state = "loading model…"
        use = shell.context_use()
        parts = [f"workspace <b>{html.escape(str(shell.process.workspace.root))}</b>", state]
        return HTML(" " + " │ ".join([*parts, use] if use else parts) + " ")

    print(f"llmos — workspace {shell.process.workspace.root}. Type :help.", file=term)
    while True:
        try:
            line = session.prompt("llmos> ", bottom_toolbar=toolbar)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        try:
            ok, text = shell.handle(line)
        except EOFError:
            return 0
        except KeyboardInterrupt:
            spinner.pause()
            shell.cancelled()
            print("^C (cancelled; the shell is ready)", file=term)
            continue
        finally:
            spinner.pause()
        if text:
            print(paint(text, ok), file=term, flush=True)


__all__ = ["Shell", "run_piped", "run_shell", "terminal_grant"]
