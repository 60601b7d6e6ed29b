"""The shell: a prompt-toolkit REPL on a terminal, plain line-by-line when input is a pipe.

A line that starts with `!`, or with a syscall name that has a dot (`fs.list`) or is followed
by a `key=value` word (`reply text=hi`), runs that syscall directly; anything else ("reply to
the email from Bob") is a request for the kernel, whose every step is shown as it happens; a
request ending in ` &` runs in the background as its own process. Without a model the shell
runs in direct-call mode. The model loads in the background, so the prompt appears at once;
once loaded, a scheduler serves it to the shell and to its background jobs, one completion at
a time. Whatever goes wrong while a line is handled ends as one error line; the shell goes on.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.consolidate import IdleTidy, Tidied, consolidate
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.lessons import Learner, scope_of
from llmos.security.audit import AuditEntry, verify
from llmos.security.capabilities import GrantCallback
from llmos.shell.jobs import SCHEDULER_STATES, BackgroundJob, JobTable, scheduler_states
from llmos.shell.model import LazyKernel
from llmos.syscalls.cmdline import is_direct_call, parse_line

if TYPE_CHECKING:
    from llmos.kernel.loop import Event, Turn
    from llmos.pager import Pager
    from llmos.syscalls.context import Process
    from llmos.system import System

PATH_KEYS = ("path", "src", "dst")

Emit = Callable[[str, bool], None]

HELP = """\
Ask for what you want in plain words ("tidy the .log files into logs/"), or type a syscall to
run it directly, e.g.  fs.list   fs.read path=notes.txt   !fs.write path=a.txt content=hi
A name without a dot needs ! or a key=value word (!reply hi, reply text=hi): "reply to Bob"
and "ask mom about dinner" are requests. Words without = fill a call's one required field.
Built-ins:
  :help                 this text
  :syscalls             the syscall table
  :caps                 capabilities this session holds
  :caps grant CALL [on SCOPE]   grant one for this session (e.g. :caps grant fs.delete on old)
  :caps revoke ID       revoke one (and everything attenuated from it)
  :audit [N]            the last N calls (10) from the audit log, and whether it verifies
  :undo [N | list]      undo the last change (a request's, a syscall's) or change N; list them
  :teach [REQUEST]      show the right calls for the last request (or REQUEST): type them as
                        syscalls (!fs.write path=x.txt content=), then :done (or :cancel)
  :good                 keep the last request and its calls as an example for the kernel
  :bad                  never show the last request's calls as an example
  :tidy                 tidy now what the shell tidies when idle: merge learned examples,
                        mark facts stored twice or replaced by later ones (nothing deleted)
  :mem                  context budget, summary, resident and recalled turns
  :model                the model in use and its speed
  :apps                 plugin apps loaded (and failed), tools declared
  :ps                   the shell and its background jobs: state, time, model use
  :jobs [N]             the jobs; with N, job N's steps and reply (waits for it)
  :wait N               the same as :jobs N (Ctrl-C stops waiting, not the job)
  :kill N               cancel job N
  :quit                 leave (or Ctrl-D); jobs still running are cancelled
Background: end a request with " &" to run it as its own process (fresh conversation, same
workspace) while you go on typing; "[N] done: ..." shows when it ends. A background job
cannot be asked for a grant: it holds the shell's default capabilities and this workspace's
remembered grants, and a call beyond them fails with E_PERM.
Keys: Enter runs the line, Alt-Enter (or Esc Enter) starts a new line, Ctrl-C cancels the
current request (background jobs go on), Ctrl-D leaves.
"""


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
    if event.kind == "reply" and event.note:
        return f"{event.text}\n⚠ {event.note}", True
    return event.text, event.kind == "reply"


def _short(value: object) -> str:
    """A value on one line, at most 40 characters (then …), quoted if it has spaces."""
    text = str(value).replace("\n", "⏎")
    if len(text) > 40:
        return repr(text[:40] + "…")
    return repr(text) if " " in text else text


def render_audit_entry(entry: AuditEntry) -> str:
    """One audit line as `:audit` shows it: number, time, process, call and its key arguments
    (shortened; digests as `#hash…`), and the outcome."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time)) if entry.time else "?"
    number = f"#{entry.seq}" if entry.written else "(unwritten)"
    # Lines keep their keys sorted; the paths a call works on read best first.
    keys = sorted(entry.args, key=lambda k: PATH_KEYS.index(k) if k in PATH_KEYS else 3)
    args = " ".join(
        f"{key}={_audit_value(entry.args[key])}" for key in keys if entry.args[key] is not None
    )
    outcome = "ok" if entry.ok else (entry.code or "failed")
    who = f"{entry.process}[{entry.pid}]"
    return f"{number:>6} {when}  {who:14} {entry.call} {args}".rstrip() + f"  → {outcome}"


def _audit_value(value: object) -> str:
    """An argument as logged, short: digests as their first hex digits and size."""
    if isinstance(value, dict) and ("sha256" in value or "hmac" in value):
        digest = str(value.get("hmac") or value.get("sha256"))[:8]
        size = next((f"{value[k]} {k}" for k in ("chars", "bytes") if k in value), "")
        return f"#{digest}…" + (f"({size})" if size else "")
    if isinstance(value, str):
        return _short(value)
    return _short(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def failure_line(exc: BaseException) -> str:
    """One line for an unexpected error while the shell handled a line: what failed and where
    (the innermost frame), so it can be reported; the shell itself goes on."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {Path(last.filename).name}:{last.lineno})"
    message = str(exc).replace("\n", " ").strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{ErrorCode.E_INTERNAL}: unexpected error, the line was not completed: {text}{where}"


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
        notify: Emit | None = None,
    ) -> None:
        from llmos.pager import new_conversation, resume_conversation

        self.system = system
        self.process: Process = system.spawn("shell", workspace, grant=grant)
        self.kernel = kernel
        home = system.settings.ensure_home()
        sealed = system.settings.memory_encrypt  # the saved conversation is sealed too
        self.conversation = (
            resume_conversation(home, encrypt=sealed)
            if resume
            else new_conversation(home, encrypt=sealed)
        )
        self.emit: Emit = emit or (lambda text, ok: None)
        self.notify: Emit = notify or self.emit
        """Told, from the job's own thread, when a background job ends."""
        self.others: Callable[[], list[str]] = list
        """The other clients' processes (`llmos serve` sets it): `:ps` lists them too, even one
        that has not used the model yet."""
        self.thinking: Callable[[bool], None] = lambda on: None
        """Told when the kernel starts and stops thinking (the terminal shows a spinner)."""
        self.started = time.monotonic()
        self.teaching: tuple[str, list[dict[str, Any]], str | None] | None = None
        """While teaching (`:teach`): the request, the calls shown for it so far, and the
        workspace the lesson holds in (None: anywhere)."""
        self.jobs = JobTable(system, workspace, kernel, self._job_ended, parent=self.process)
        self.learner: Learner | None = (
            Learner(system.lessons, system.examples, system.registry)
            if system.settings.learn_from_use
            else None
        )
        """Learns the turns that went right (llmos.kernel.lessons.Learner); None when off."""
        after = system.settings.tidy_idle_s
        self.idle: IdleTidy | None = IdleTidy(self.tidy, after) if after > 0 else None
        """Tidies while the person is away (the terminal calls `rest` at the prompt)."""

    def handle(self, line: str) -> tuple[bool, str]:
        """Run one line; returns (ok, text to show). It raises only EOFError (leave) and
        KeyboardInterrupt (Ctrl-C): any other failure, expected or not, becomes one error line
        and the shell goes on."""
        try:
            ok, text = self._handle(line)
            notices = self.system.journal.take_notices()
            return ok, "\n".join([text, *(f"note: {n}" for n in notices)]).strip("\n")
        except (EOFError, KeyboardInterrupt):
            raise
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        except Exception as exc:
            return False, failure_line(exc)

    def _handle(self, line: str) -> tuple[bool, str]:
        line = line.strip()
        if not line or line.startswith("#"):
            return True, ""
        if line.startswith(":"):
            return self.builtin(line[1:].split())
        background = line == "&" or line.endswith(" &")
        if self.teaching is not None and not is_direct_call(line, self.system.registry):
            return False, (
                f"teaching {self.teaching[0]!r}: type its calls as syscalls "
                "(!fs.write path=x.txt content=), then :done, or :cancel"
            )
        if not is_direct_call(line, self.system.registry):
            if background:
                return self.background(line[:-1].strip())
            return self.ask_kernel(line)
        if background:
            return False, (
                f"{ErrorCode.E_INVAL}: only requests to the kernel run in the background; "
                "a syscall runs at once (drop the &)"
            )
        return self.direct(line.removeprefix("!").strip())

    def direct(self, line: str) -> tuple[bool, str]:
        """Run `NAME key=value ...` (or a JSON call) through the dispatch path; words without
        `=` fill the call's one required field, if it has one (`!reply hi`)."""
        if not line:
            return False, (
                f"{ErrorCode.E_INVAL}: ! runs a syscall: !NAME key=value ... "
                "(e.g. !fs.list, or !reply hi); see :syscalls"
            )
        positional = None
        if not line.startswith("{"):
            name = line.split(maxsplit=1)[0]
            spec = self.system.registry.get(name)
            if spec is None:
                return False, f"{ErrorCode.E_INVAL}: no syscall {name!r} (see :syscalls)"
            required = [
                field
                for field, info in spec.model.model_fields.items()
                if field != "call" and info.is_required()
            ]
            positional = required[0] if len(required) == 1 else None
        raw = parse_line(line, positional)
        if self.learner is not None:  # what the person does by hand may mend the last turn
            self.learner.drop()
        result = self.system.dispatch(self.process, raw)
        if result.ok and self.teaching is not None:
            self.teaching[1].append(raw)
        return result.ok, result.render()

    def last_turn(self, ended: bool = True) -> Turn | None:
        """The conversation's last turn that ended in a reply or a question (any last turn,
        when not `ended`: one that failed may be taught too), or None."""
        turns = [t for t in self.conversation.turns if not ended or t.reply or t.asked]
        return turns[-1] if turns else None

    def teach(self, name: str, rest: list[str]) -> tuple[bool, str]:
        """`:teach`, `:done`, `:cancel`, `:good` and `:bad`: the person's lessons (examples the
        kernel is shown for requests like theirs; see llmos.kernel.lessons)."""
        from llmos.kernel.lessons import turn_calls

        lessons, bank = self.system.lessons, self.system.examples
        if self.learner is not None:
            self.learner.drop()
        if name in ("done", "cancel"):
            if self.teaching is None:
                return False, f":{name} ends teaching; start it with :teach"
            (request, calls, scope), self.teaching = self.teaching, None
            if name == "cancel" or not calls:
                return True, "nothing taught"
            lessons.add(request, calls, "taught", scope)
            bank.add(request, calls, source="taught", scope=scope)
            return True, f"taught: {request!r} -> " + ", ".join(c["call"] for c in calls)
        if self.teaching is not None:
            return False, f"already teaching {self.teaching[0]!r}: :done or :cancel first"
        turn = self.last_turn(ended=name != "teach")
        if name == "teach":
            request = " ".join(rest) or (turn.request if turn is not None else "")
            if not request:
                return False, "usage: :teach REQUEST (no request has been made yet)"
            # Scoped by the paths that exist now, before the shown calls make any.
            self.teaching = (request, [], scope_of(request, self.process.workspace.root))
            return True, (
                f"teaching {request!r}: type the calls that do it as syscalls "
                "(!fs.write path=x.txt content=), then :done (or :cancel)"
            )
        if turn is None:
            return False, f":{name} marks the last request's calls; no request has ended yet"
        calls = turn_calls(turn.messages)
        if not calls:
            return False, "the last request made no call that went through"
        scope = scope_of(turn.request, self.process.workspace.root)
        if name == "good":
            lessons.add(turn.request, calls, "good", scope)
            bank.add(turn.request, calls, source="good", scope=scope)
            return True, f"kept as an example: {turn.request!r}"
        lessons.add(turn.request, calls, "bad", scope)
        bank.hide(turn.request, calls)
        return True, f"never shown again: {turn.request!r} -> " + ", ".join(
            c["call"] for c in calls
        )

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
        before = self.last_turn(ended=False)
        if self.learner is not None:
            self.learner.settle(request)
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
                    self._offer(before is not None and bool(before.asked))
                    return True, text
                self.emit(text, good)
        except Exception:
            # Close the broken turn, so the next request is not taken as more of this one.
            with contextlib.suppress(Exception):
                self.conversation.cancel()
            raise
        finally:
            events.close()

    def tidy(self, stop: threading.Event) -> Tidied:
        """Consolidate what llmos keeps (llmos.consolidate), stopping when `stop` is set; the
        tidied summary is saved with the session."""
        done = consolidate(self.system, stop, self.conversation)
        if done.summary_lines and self.conversation.pager is not None:
            self.conversation.pager.save(self.conversation, self.process)
        return done

    def _offer(self, after_ask: bool) -> None:
        """Hold the turn that just ended for learning (llmos.kernel.lessons.Learner)."""
        turn = self.conversation.current
        if self.learner is None or turn is None:
            return
        scope = scope_of(turn.request, self.process.workspace.root)
        self.learner.offer(turn.messages, scope, after_ask, turn.asks)

    def cancelled(self) -> None:
        """After Ctrl-C in the middle of a request: the shell's queued request leaves the
        scheduler's queue. The model itself is never interrupted (the scheduler's thread runs
        it, so its cache stays whole): a completion already running finishes, unused, and
        background jobs go on. The stopped turn is closed with a reply that says so."""
        if self.conversation.cancel() and self.conversation.pager is not None:
            self.conversation.pager.save(self.conversation, self.process)
        if self.kernel is not None and self.kernel.ready:
            from llmos.kernel.backend import Cancelling

            try:
                backend = self.kernel.get().backend
            except LlmosError:
                return
            if isinstance(backend, Cancelling):
                backend.cancel()

    def background(self, request: str) -> tuple[bool, str]:
        """`request &`: start it as a background job; the prompt returns at once."""
        if not request:
            return False, f"{ErrorCode.E_INVAL}: nothing to run in the background"
        if self.kernel is None:
            return self.ask_kernel(request)
        job = self.jobs.start(request)
        return True, f"[{job.number}] started: {request}"

    def _job_ended(self, job: BackgroundJob) -> None:
        ok, text = job.outcome()
        self.notify(f"[{job.number}] {'done' if ok else 'failed'}: {text}", ok)

    def job_report(self, number: str) -> tuple[bool, str]:
        """`:jobs N` / `:wait N`: job N's steps and how it ended, waiting for it to end (Ctrl-C
        stops the waiting, not the job)."""
        job = self._job(number)
        if job is None:
            return False, f"{ErrorCode.E_NOENT}: no job {number!r} (see :jobs)"
        try:
            job.ended.wait()
        except KeyboardInterrupt:
            return True, (
                f"stopped waiting; [{job.number}] is still running (:kill {job.number} stops it)"
            )
        lines = [f"[{job.number}] {job.request}   ({job.elapsed():.1f}s, pid {job.process.pid})"]
        for event in job.events:
            if event.kind in ("reply", "ask"):
                continue
            text, good = render_event(event)
            lines.append(text if good else f"✗ {text.strip()}")
        ok, text = job.outcome()
        lines.append(f"[{job.number}] {'done' if ok else 'failed'}: {text}")
        return ok, "\n".join(lines)

    def kill(self, number: str) -> tuple[bool, str]:
        """`:kill N`: cancel job N."""
        job = self._job(number)
        if job is None:
            return False, f"{ErrorCode.E_NOENT}: no job {number!r} (see :jobs)"
        if job.done:
            return False, f"[{job.number}] has already ended"
        self.jobs.kill(job)
        return True, f"[{job.number}] cancelling: {job.request}"

    def _job(self, number: str) -> BackgroundJob | None:
        return self.jobs.get(int(number.lstrip("%"))) if number.lstrip("%").isdigit() else None

    def leave(self) -> str:
        """On the way out: cancel the jobs still running; what to say about them ("" if none)."""
        if self.idle is not None:
            self.idle.wake()
        cancelled = self.jobs.close()
        if not cancelled:
            return ""
        listed = ", ".join(f"[{job.number}] {job.request}" for job in cancelled)
        return f"cancelled {len(cancelled)} background job(s) still running: {listed}"

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

    def audit_report(self, n: int) -> tuple[bool, str]:
        """`:audit [N]`: the last N calls in the audit log (when, who, what, how it ended),
        then whether the whole log verifies."""
        audit = self.system.audit
        audit.flush()
        lines = [render_audit_entry(entry) for entry in audit.tail(n)]
        report = verify(audit.path, self.system.signer)
        if report.problems:
            lines += [f"line {p.line}: {p.reason}" for p in report.problems]
            lines.append(
                f"audit log FAILED verification: {len(report.problems)} problem(s) "
                f"in {report.lines} lines"
            )
        else:
            older = (
                f" (the first {report.legacy_lines} signed with the install key, from before"
                " the audit had its own)"
                if report.legacy_lines
                else ""
            )
            lines.append(f"audit log OK: {report.lines} lines verified{older}")
        if audit.pending:
            lines.append(
                f"{audit.pending} line(s) not yet written ({audit.failure}); kept in memory "
                "and written with the next call"
            )
        return not report.problems and not audit.pending, "\n".join(lines)

    def model_status(self) -> tuple[bool, str]:
        """`:model`: which model the kernel runs, its context and measured speed."""
        if self.kernel is None:
            return True, "no model (direct-call mode); install one with: llmos model pull"
        if not self.kernel.ready:
            return True, "the model is still loading"
        try:
            self.kernel.get()
        except LlmosError as exc:
            return False, f"{exc.code}: {exc.message}"
        backend = self.kernel.model
        assert backend is not None
        lines = [f"model {backend.name}"]
        from llmos.kernel.backend import LlamaCppBackend, context_of, decode_speed

        if isinstance(backend, LlamaCppBackend):
            lines.append(f"file {backend.model_path}")
        context = context_of(backend)
        if context:
            lines.append(f"context {context} tokens")
        if isinstance(backend, LlamaCppBackend):
            lines.append(f"runs on {backend.placement()}")
        speed = decode_speed(backend)
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
        """`:ps`: the shell's process and each background job: its state, time so far, the
        model's completions for it, and its request."""
        rows: dict[str, str] = {}
        every: list[dict[str, Any]] = []
        shell_completions = 0
        own: set[str] = set()
        if self.kernel is not None and self.kernel.scheduler is not None:
            every = self.kernel.scheduler.ps()
            rows = scheduler_states(every)
            try:
                from llmos.kernel.scheduler import SchedulerClient

                client = self.kernel.get().backend
                if isinstance(client, SchedulerClient):
                    shell_completions = client.completions
                    own.add(client.process)
            except LlmosError:
                shell_completions = 0
        turns = len(self.conversation.turns) + self.conversation.paged_out
        table = [
            ("JOB", "PID", "NAME", "STATE", "TIME", "MODEL", "REQUEST"),
            (
                "-",
                str(self.process.pid),
                self.process.name,
                "ready",
                _seconds(time.monotonic() - self.started),
                str(shell_completions),
                f"({turns} turns in this conversation)",
            ),
        ]
        for job in self.jobs.all():
            table.append(
                (
                    f"[{job.number}]",
                    str(job.process.pid),
                    job.process.name,
                    job.state(rows),
                    _seconds(job.elapsed()),
                    str(job.completions),
                    job.request,
                )
            )
        own |= {job.client.process for job in self.jobs.all() if job.client is not None}
        for other in every:  # the other clients of `llmos serve`, sharing this model
            name = str(other["process"])
            if name not in own:
                state = SCHEDULER_STATES.get(str(other["state"]), "idle")
                uses = str(other["completions"])
                table.append(("·", "-", name, state, "-", uses, "(another client)"))
                own.add(name)
        for name in self.others():
            if name not in own:
                table.append(("·", "-", name, "idle", "-", "0", "(another client)"))
        widths = [max(len(row[i]) for row in table) for i in range(6)]
        lines = [f"workspace {self.process.workspace.root}"]
        for row in table:
            cells = [
                row[i].rjust(widths[i]) if i in (1, 4, 5) else row[i].ljust(widths[i])
                for i in range(6)
            ]
            lines.append("  ".join([*cells, row[6]]))
        return "\n".join(lines)

    def jobs_list(self) -> str:
        """`:jobs`: one line per background job."""
        rows: dict[str, str] = {}
        if self.kernel is not None and self.kernel.scheduler is not None:
            rows = scheduler_states(self.kernel.scheduler.ps())
        lines = [f"[{job.number}] {job.state(rows):18} {job.request}" for job in self.jobs.all()]
        return "\n".join(lines) or "(no background jobs; end a request with & to start one)"

    def _pager(self) -> Pager | None:
        """The conversation's pager (the shell made it; the kernel knows only its protocol)."""
        from llmos.pager import Pager

        pager = self.conversation.pager
        return pager if isinstance(pager, Pager) else None

    def context_use(self) -> str:
        """Prompt tokens in use against the budget, for the toolbar ("" before a request)."""
        pager = self._pager()
        if pager is None or not pager.stats.prompt_tokens or self.kernel is None:
            return ""
        try:
            limit = pager.budget(self.kernel.get()).limit
        except LlmosError:
            return ""
        return f"context {pager.stats.prompt_tokens}/{limit}"

    def memory_status(self) -> tuple[bool, str]:
        """`:mem`: the pager's view of this conversation, and the memory store's counts."""
        pager = self._pager()
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

    def undo(self, rest: list[str]) -> tuple[bool, str]:
        """`:undo` restores the last change set (a turn, a direct call), `:undo N` set N,
        `:undo list` lists them; each file only while it holds what the change left."""
        from llmos.undo import list_lines, undo

        root = self.process.workspace.root
        if rest in (["list"], ["--list"]):
            return True, "\n".join(list_lines(self.system, root))
        if len(rest) > 1 or (rest and not rest[0].isdigit()):
            return False, "usage: :undo [N | list]"
        if self.learner is not None:  # an undone turn is never learned
            self.learner.drop()
        lines = undo(self.system, root, int(rest[0]) if rest else None, None)
        return True, "\n".join(lines)

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
            if rest and not (rest[0].isdigit() and len(rest) == 1):
                return False, "usage: :audit [N]   (the last N calls, 10 if not given)"
            return self.audit_report(int(rest[0]) if rest else 10)
        if name == "undo":
            return self.undo(rest)
        if name in ("teach", "done", "cancel", "good", "bad"):
            return self.teach(name, rest)
        if name == "tidy":
            return True, self.tidy(threading.Event()).describe()
        if name == "mem":
            return self.memory_status()
        if name == "model":
            return self.model_status()
        if name == "apps":
            return True, self.apps_status()
        if name == "ps":
            return True, self.processes()
        if name in ("jobs", "wait"):
            if not rest:
                return (True, self.jobs_list()) if name == "jobs" else (False, "usage: :wait N")
            return self.job_report(rest[0])
        if name == "kill":
            if not rest:
                return False, "usage: :kill N"
            return self.kill(rest[0])
        if name in ("quit", "exit", "q"):
            raise EOFError
        return False, f"unknown command :{name}; try :help"


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 600 else f"{value / 60:.0f}m"


def run_piped(
    system: System, workspace: Path, kernel: LazyKernel | None = None, resume: bool = False
) -> int:
    """Non-terminal input: one line at a time, plain output; background jobs (`request &`)
    are waited for at the end of the input, each announced as it ends. Status 1 if any line
    or job failed."""
    lock = threading.Lock()

    def say(text: str, ok: bool) -> None:
        with lock:
            print(text, file=sys.stdout if ok else sys.stderr, flush=True)

    shell = Shell(system, workspace, grant=None, kernel=kernel, emit=say, resume=resume, notify=say)
    status = 0
    for line in sys.stdin:
        try:
            ok, text = shell.handle(line)
        except EOFError:
            break
        if text:
            say(text, ok)
        status = status or (0 if ok else 1)
    jobs = shell.jobs.wait_all()
    if any(not job.outcome()[0] for job in jobs):
        status = status or 1
    return status
