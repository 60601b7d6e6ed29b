"""The one model host: opens the model once (on first use, or in the background while the
person types), serves it through one scheduler, and gives each process its own client. The
shell, its background jobs and `llmos run` all use it; `llmos serve` will hold one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmos.errors import BackendError, ErrorCode, LlmosError

if TYPE_CHECKING:
    from llmos.kernel.backend import Backend
    from llmos.kernel.scheduler import Policy, Scheduler, SchedulerClient


class ModelHost:
    """Opens `open_backend` at most once and shares it. `start` opens it on a thread of its
    own (then runs `after_open`, e.g. warming the prompt); otherwise the first `client` call
    opens it. A failure to open is kept and raised to every caller."""

    def __init__(self, open_backend: Callable[[], Backend], *, policy: Policy = "rr") -> None:
        self._open = open_backend
        self._policy: Policy = policy
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self.model: Backend | None = None
        """The backend itself (to describe it); every completion goes through the scheduler."""
        self.scheduler: Scheduler | None = None
        self.error: LlmosError | None = None
        self._closed = False

    def start(self, after_open: Callable[[], None] | None = None) -> None:
        """Open the model on a background thread, then call `after_open` there (its error is
        kept like an opening error)."""

        def load() -> None:
            try:
                self._open_now()
                if after_open is not None:
                    after_open()
            except Exception as exc:  # kept for every caller; nothing to raise into here
                self.error = _as_error(exc)

        self._loader = threading.Thread(target=load, name="llmos-model", daemon=True)
        self._loader.start()

    def _open_now(self) -> Scheduler:
        from llmos.kernel.scheduler import Scheduler

        with self._lock:
            if self.error is not None:
                raise self.error
            if self._closed:
                raise LlmosError(ErrorCode.E_BACKEND, "the model was closed")
            if self.scheduler is None:
                try:
                    self.model = self._open()
                    self.scheduler = Scheduler(self.model, policy=self._policy)
                except Exception as exc:
                    self.error = _as_error(exc)
                    raise self.error from exc
            return self.scheduler

    @property
    def ready(self) -> bool:
        """True unless the model is still loading in the background."""
        return self._loader is None or not self._loader.is_alive()

    def wait(self) -> Scheduler:
        """The scheduler, once the model is open (waiting for a background load, or opening it
        now); the opening error otherwise."""
        loader = self._loader
        if loader is not None and loader is not threading.current_thread():
            loader.join()
        return self._open_now()

    def client(self, process: str, *, background: bool = False) -> SchedulerClient:
        """A backend for `process` that queues with the others (close it when it ends); a
        `background` one (a job, an app) is served after those a person waits for."""
        from llmos.kernel.scheduler import BACKGROUND, FOREGROUND

        return self.wait().client(process, priority=BACKGROUND if background else FOREGROUND)

    def busy(self) -> bool:
        """True while the model is running a completion."""
        scheduler = self.scheduler
        return scheduler is not None and any(row["state"] == "model" for row in scheduler.ps())

    def close(self) -> None:
        """Stop the scheduler once loaded: queued requests fail, a running completion finishes
        first. A model still loading is left to its thread."""
        if not self.ready:
            return
        with self._lock:
            self._closed = True
            scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.close()


def _as_error(exc: Exception) -> LlmosError:
    """An opening failure: an llmos error as it is, anything else the model's (E_BACKEND)."""
    return exc if isinstance(exc, LlmosError) else BackendError(f"{type(exc).__name__}: {exc}")
