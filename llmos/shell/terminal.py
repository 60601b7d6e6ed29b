"""The shell on a terminal: prompt-toolkit's prompt with completion of commands, syscalls and
workspace paths, coloured output, a spinner while the kernel works, and grant questions
asked inline."""

from __future__ import annotations

import contextlib
import html
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmos.errors import LlmosError
from llmos.security.capabilities import GrantAnswer, GrantRequest
from llmos.shell.grants import parse_answer, question
from llmos.shell.model import LazyKernel
from llmos.shell.repl import PATH_KEYS, Shell, failure_line, run_piped

if TYPE_CHECKING:
    from llmos.system import System

BUILTINS = (
    ":help",
    ":syscalls",
    ":caps",
    ":audit",
    ":undo",
    ":tidy",
    ":teach",
    ":done",
    ":cancel",
    ":good",
    ":bad",
    ":mem",
    ":model",
    ":apps",
    ":ps",
    ":jobs",
    ":wait",
    ":kill",
    ":quit",
)
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

    def print_line(self, text: str) -> None:
        """Print a line in one piece, over the spinner's line if it shows (it is drawn again
        below on its next tick, its clock going on); safe from any thread."""
        with self._lock:
            self.stream.write(f"\r\033[K{text}\n")
            self.stream.flush()


def run_shell(
    system: System, workspace: Path, kernel: LazyKernel | None = None, resume: bool = False
) -> int:
    """Start the shell on `workspace`: the REPL on a terminal, plain lines on a pipe; with
    `resume`, continue the last saved conversation."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_piped(system, workspace, kernel, resume)
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application import run_in_terminal
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
        spinner.print_line(paint(text, ok))
        spinner.resume()

    # A background job's end is announced from its own thread. At the prompt, the line goes
    # above it through prompt_toolkit (the line being typed is drawn again after it); while a
    # request runs, above the spinner. Lines wait in `pending` when neither holds, and are
    # printed by whichever comes next, each exactly once.
    pending: deque[str] = deque()
    busy = threading.Event()

    def print_pending() -> None:
        while True:
            try:
                line = pending.popleft()
            except IndexError:
                return
            spinner.print_line(line)

    def notify(text: str, ok: bool) -> None:
        pending.append(paint(text, ok))
        app = session.app
        loop = app.loop if app.is_running else None
        if loop is not None:
            # RuntimeError: that prompt has just ended, and the main loop prints the line.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    lambda: run_in_terminal(print_pending, in_executor=False),
                    context=app.context,
                )
        elif busy.is_set():
            print_pending()

    def at_prompt() -> None:
        if pending:
            run_in_terminal(print_pending, in_executor=False)

    shell = Shell(
        system, workspace, grant=grant, kernel=kernel, emit=emit, resume=resume, notify=notify
    )
    shell.thinking = lambda on: spinner.resume() if on else spinner.pause()

    def leave() -> int:
        said = shell.leave()
        if said:
            spinner.print_line(said)
        if kernel is not None and kernel.busy():
            spinner.print_line("waiting for the model to finish its current step…")
        return 0

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
        parts = [f"workspace <b>{html.escape(str(shell.process.workspace.root))}</b>", state]
        running = len(shell.jobs.running())
        if running:
            parts.append(f"{running} job(s) running (:ps)")
        use = shell.context_use()
        return HTML(" " + " │ ".join([*parts, use] if use else parts) + " ")

    def run_line(line: str) -> bool:
        """Handle one line and show its outcome; False when the shell is to leave."""
        if shell.idle is not None:
            shell.idle.wake()  # a consolidation running stops before the line runs
        busy.set()
        print_pending()
        try:
            ok, text = shell.handle(line)
        except EOFError:
            return False
        except KeyboardInterrupt:
            spinner.pause()
            try:
                shell.cancelled()
            except Exception as exc:
                spinner.print_line(paint(failure_line(exc), False))
            spinner.print_line("^C (cancelled; the shell is ready)")
            return True
        finally:
            spinner.pause()
            busy.clear()
            print_pending()
        if text:
            spinner.print_line(paint(text, ok))
        if shell.idle is not None:
            shell.idle.rest()
        return True

    print(f"llmos — workspace {shell.process.workspace.root}. Type :help.", file=term)
    failures = 0
    while True:
        try:
            line = session.prompt("llmos> ", bottom_toolbar=toolbar, pre_run=at_prompt)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return leave()
        except Exception as exc:  # the prompt itself failed (the terminal, the toolbar)
            spinner.print_line(paint(failure_line(exc), False))
            failures += 1
            if failures >= 3:
                spinner.print_line("the prompt failed 3 times in a row; leaving the shell")
                leave()
                return 1
            continue
        failures = 0
        try:
            if not run_line(line):
                return leave()
        except KeyboardInterrupt:  # a second Ctrl-C while the outcome was being shown
            continue
