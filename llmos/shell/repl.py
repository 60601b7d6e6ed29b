"""The shell: a prompt-toolkit REPL on a terminal, plain line-by-line when input is a pipe.

Until the kernel is wired in, the shell runs in direct-call mode: each line is a syscall
(`fs.read path=notes.txt`, or `!fs.read path=notes.txt`), dispatched through the one path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmos.errors import LlmosError
from llmos.security.audit import verify_log
from llmos.security.capabilities import GrantAnswer, GrantCallback, GrantRequest
from llmos.shell.grants import parse_answer, question, terminal_grant
from llmos.syscalls.cmdline import parse_line

if TYPE_CHECKING:
    from llmos.kernel.process import Process
    from llmos.system import System

HELP = """\
Type a syscall to run it, e.g.  fs.list   fs.read path=notes.txt   !fs.write path=a.txt content=hi
Built-ins:
  :help                 this text
  :syscalls             the syscall table
  :caps                 capabilities this session holds
  :caps revoke ID       revoke one (and everything attenuated from it)
  :audit                verify the audit log
  :quit                 leave (or Ctrl-D)
"""


class Shell:
    """One shell session: a process on the workspace and the commands typed into it."""

    def __init__(self, system: System, workspace: Path, grant: GrantCallback | None) -> None:
        self.system = system
        self.process: Process = system.spawn("shell", workspace, grant=grant)

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
            return False, (
                "direct-call mode: the kernel is not wired in yet, so type a syscall "
                "(see :syscalls), e.g. fs.list"
            )
        try:
            raw = parse_line(line)
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        result = self.system.dispatch(self.process, raw)
        return result.ok, result.render()

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
        if name in ("quit", "exit", "q"):
            raise EOFError
        return False, f"unknown command :{name}; try :help"


def run_piped(system: System, workspace: Path) -> int:
    """Non-terminal input: one line at a time, plain output; status 1 if any line failed."""
    shell = Shell(system, workspace, grant=None)
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


def run_shell(system: System, workspace: Path) -> int:
    """Start the shell on `workspace`: the REPL on a terminal, plain lines on a pipe."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_piped(system, workspace)
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
    words = [*system.registry.names(), ":help", ":syscalls", ":caps", ":audit", ":quit"]
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(home / "history")),
        completer=WordCompleter(words, sentence=True),
    )
    shell = Shell(system, workspace, grant=grant)
    toolbar = HTML(f" workspace <b>{shell.process.workspace.root}</b> │ direct-call mode ")
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
