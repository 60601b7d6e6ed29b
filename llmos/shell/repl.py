"""The shell: a prompt-toolkit REPL on a terminal, plain line-by-line when input is a pipe.

A line that starts with a syscall name (or `!`) runs that syscall directly; anything else is a
request for the kernel, whose every step is shown as it happens. Without a model the shell
runs in direct-call mode. The model loads in the background, so the prompt appears at once.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

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
  :caps revoke ID       revoke one (and everything attenuated from it)
  :audit                verify the audit log
  :mem                  context budget, summary, resident and recalled turns
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
        try:
            kernel = self.kernel.get()
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        ok = False
        for event in kernel.turn(self.process, self.conversation, request):
            text, good = render_event(event)
            if event.kind in ("reply", "ask"):
                ok = True
                return True, text
            self.emit(text, good)
        return ok, ""

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


def run_shell(
    system: System, workspace: Path, kernel: LazyKernel | None = None, resume: bool = False
) -> int:
    """Start the shell on `workspace`: the REPL on a terminal, plain lines on a pipe; with
    `resume`, continue the last saved conversation."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_piped(system, workspace, kernel, resume)
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.formatted_text import HTML
    from prompt_toolkit.history import FileHistory

    def grant(request: GrantRequest) -> GrantAnswer:
        for _ in range(2):
            try:
                answer = parse_answer(session.prompt(question(request)))
            except (EOFError, KeyboardInterrupt):
                return GrantAnswer.DENY
            if answer is not None:
                return answer
        return GrantAnswer.DENY

    home = system.settings.ensure_home()
    words = [*system.registry.names(), ":help", ":syscalls", ":caps", ":audit", ":mem", ":quit"]
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(home / "history")),
        completer=WordCompleter(words, sentence=True),
    )

    def emit(text: str, ok: bool) -> None:
        print(text if ok else f"✗ {text.strip()}", flush=True)

    shell = Shell(system, workspace, grant=grant, kernel=kernel, emit=emit, resume=resume)

    def toolbar() -> HTML:
        if kernel is None:
            state = "direct-call mode (no model)"
        elif kernel.ready:
            state = f"model {getattr(kernel.get().backend, 'name', '?')}"
        else:
            state = "loading model…"
        return HTML(f" workspace <b>{shell.process.workspace.root}</b> │ {state} ")

    print(f"llmos — workspace {shell.process.workspace.root}. Type :help.")
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
            print("^C (cancelled)")
            continue
        if text:
            print(text if ok else f"✗ {text}")


__all__ = ["Shell", "run_piped", "run_shell", "terminal_grant"]
