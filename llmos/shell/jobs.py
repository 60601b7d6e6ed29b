"""Background requests of the shell (`request &`): each runs as its own process, with a fresh
conversation, through the scheduler the foreground shares, and says when it has ended. A
background process holds what the shell's process holds (its defaults, the workspace's
"always" grants, and what was granted or denied in this session) and has no one to ask for more:
beyond that a call fails with E_PERM, and the kernel's turn goes on to report that."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.errors import ErrorCode, LlmosError, from_exception

if TYPE_CHECKING:
    from llmos.kernel.loop import Event
    from llmos.kernel.scheduler import Job, SchedulerClient
    from llmos.shell.model import LazyKernel
    from llmos.syscalls.context import Process
    from llmos.system import System

SCHEDULER_STATES = {"model": "thinking", "waiting": "waiting for model"}
"""How `:ps` names what the scheduler says of a process."""


class BackgroundJob:
    """One background request: its process, its turn once the model is ready, and its end."""

    def __init__(self, number: int, request: str, process: Process) -> None:
        self.number = number
        self.request = request
        self.process = process
        self.started = time.monotonic()
        self.finished = 0.0
        self.client: SchedulerClient | None = None
        self.turn: Job | None = None
        self.error: LlmosError | None = None
        """Why the job could not run its turn to an end (the model did not load, a bug)."""
        self.killed = False
        self.ended = threading.Event()

    @property
    def done(self) -> bool:
        """True once the job has ended, however it ended."""
        return self.ended.is_set()

    @property
    def events(self) -> list[Event]:
        """The turn's steps so far."""
        return list(self.turn.events) if self.turn is not None else []

    @property
    def completions(self) -> int:
        """Completions the model has run for this job so far."""
        return self.client.completions if self.client is not None else 0

    def elapsed(self) -> float:
        """Seconds since the job started (until it ended, once it has)."""
        return (self.finished or time.monotonic()) - self.started

    def outcome(self) -> tuple[bool, str]:
        """(ok, text): the reply (or question) that ended the turn, else what went wrong."""
        if self.killed:
            return False, f"cancelled (:kill {self.number})"
        if self.error is not None:
            return False, f"{self.error.code}: {self.error.message}"
        events = self.events
        if not events:
            return False, f"{ErrorCode.E_INTERNAL}: the turn ended without a step"
        last = events[-1]
        if last.kind == "reply":
            return True, last.text
        if last.kind == "ask":
            return True, f"? {last.text}"
        return False, last.text

    def state(self, scheduler_rows: dict[str, str]) -> str:
        """thinking, waiting for model, running a syscall, done or failed (`scheduler_rows`:
        the scheduler's state of each process by name)."""
        if self.done:
            return "done" if self.outcome()[0] else "failed"
        if self.client is None:
            return "waiting for model"
        state = scheduler_rows.get(self.client.process, "other")
        if state in SCHEDULER_STATES:
            return SCHEDULER_STATES[state]
        events = self.events
        if events and events[-1].kind == "call":
            return "running a syscall"
        return "thinking"


class JobTable:
    """The shell's background jobs, numbered from 1. `ended` is told of each job that ends
    (from the job's own thread) until the table is closed."""

    def __init__(
        self,
        system: System,
        workspace: Path,
        kernel: LazyKernel | None,
        ended: Callable[[BackgroundJob], None],
        parent: Process | None = None,
    ) -> None:
        self.system = system
        self.parent = parent
        self.workspace = workspace
        self.kernel = kernel
        self.ended = ended
        self._jobs: dict[int, BackgroundJob] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False

    def start(self, request: str) -> BackgroundJob:
        """Start `request` in the background as a new process on the workspace."""
        if self.kernel is None:
            raise LlmosError(ErrorCode.E_BACKEND, "no model: nothing can run in the background")
        number = next(self._numbers)
        process = self.system.spawn(f"job{number}", self.workspace, grant=None)
        if self.parent is not None:
            process.caps.inherit(self.parent.caps)
        job = BackgroundJob(number, request, process)
        with self._lock:
            self._jobs[number] = job
        thread = threading.Thread(
            target=self._run, args=(job, self.kernel), name=f"llmos-job{number}", daemon=True
        )
        thread.start()
        return job

    def _run(self, job: BackgroundJob, lazy: LazyKernel) -> None:
        from llmos.kernel.loop import Conversation
        from llmos.kernel.scheduler import Job
        from llmos.pager import Pager

        try:
            kernel = lazy.spawn(job.process.name)
            job.client = kernel.backend  # type: ignore[assignment]
            with self._lock:
                if job.killed:
                    return
                # An unsaved pager: kept facts are paged in, and `--resume` still finds the
                # shell's own conversation, not a job's.
                turn = job.turn = Job(kernel, job.process, Conversation(pager=Pager()), job.request)
            turn.run()  # in this job's own thread: no second thread to wait on
            error = turn.error
            if error is not None:
                job.error = from_exception(error)
        except LlmosError as exc:
            job.error = exc
        except Exception as exc:  # a job's bug is its own failure, never the shell's
            job.error = from_exception(exc)
        finally:
            if job.client is not None:
                job.client.close()
            job.finished = time.monotonic()
            try:
                if not self._closed:
                    self.ended(job)
            finally:
                # After the announcement, so whoever waits for the job sees it announced.
                job.ended.set()

    def get(self, number: int) -> BackgroundJob | None:
        """Job `number`, if there is one."""
        with self._lock:
            return self._jobs.get(number)

    def all(self) -> list[BackgroundJob]:
        """Every job of this shell, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def running(self) -> list[BackgroundJob]:
        """The jobs that have not ended."""
        return [job for job in self.all() if not job.done]

    def kill(self, job: BackgroundJob) -> None:
        """Cancel `job`: a request it has queued for the model fails at once, it asks the model
        nothing more, a tool it is running is stopped (E_INTR), and it ends after that step."""
        with self._lock:
            job.killed = True
            turn = job.turn
        if turn is not None:
            turn.cancel()
        if job.client is not None:
            job.client.close()

    def wait_all(self) -> list[BackgroundJob]:
        """Wait for every job to end; the jobs."""
        jobs = self.all()
        for job in jobs:
            job.ended.wait()
        return jobs

    def close(self) -> list[BackgroundJob]:
        """Cancel the jobs still running (they are no longer announced) and give each a few
        seconds to stop at its next step, so the shell does not exit (and free the model) while
        one is inside llama.cpp; those jobs."""
        self._closed = True
        running = self.running()
        for job in running:
            self.kill(job)
        deadline = time.monotonic() + CLOSE_WAIT_S
        for job in running:
            job.ended.wait(max(0.0, deadline - time.monotonic()))
        return running


CLOSE_WAIT_S = 10.0
"""How long leaving the shell waits, in all, for cancelled jobs to stop."""


def scheduler_states(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The scheduler's `ps` rows as {process name: state}."""
    return {str(row["process"]): str(row["state"]) for row in rows}
