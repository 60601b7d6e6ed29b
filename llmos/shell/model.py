"""The shell's model: a `ModelHost` that opens the model in the background while the person
types, and hands each process (the shell's own, each background job's) a kernel of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmos.errors import ErrorCode, LlmosError

if TYPE_CHECKING:
    from llmos.kernel.backend import Backend
    from llmos.kernel.host import ModelHost
    from llmos.kernel.loop import Kernel
    from llmos.kernel.scheduler import Scheduler
    from llmos.system import System


class LazyKernel:
    """The shell's kernel on the one model host: the model loads in the background while the
    person types, then serves the shell's kernel and each background job's through their own
    scheduler clients, so no two ever use it at once. `get` waits for the model (or raises its
    error)."""

    def __init__(
        self,
        system: System,
        loader: Callable[[], Backend] | None = None,
        *,
        own: str | None = "shell",
        host: ModelHost | None = None,
    ) -> None:
        from llmos.kernel.host import ModelHost

        self.system = system
        self._own = own
        """The name of the kernel `get` returns; None for a host with no kernel of its own
        (`llmos serve`: each client gets its own)."""
        self._kernel: Kernel | None = None
        self._lock = threading.Lock()
        self.shared = host is not None
        """True for one client's view of another's host (`llmos serve`): `get` makes its kernel
        on first use, its jobs' names carry its own, and `close` closes its client only."""
        if host is not None:
            self.host = host
            return
        if loader is None:
            raise LlmosError(ErrorCode.E_INTERNAL, "a LazyKernel needs a loader or a host")
        self.host = ModelHost(loader)
        self.host.start(after_open=self._after_open)

    def _after_open(self) -> None:
        """On the loading thread: the shell's kernel, its prompt warmed into the cache, and
        memory made ready, so the first request waits for none of them."""
        from llmos.kernel.loop import Kernel

        client = self.host.client(self._own or "warm-up")
        kernel = Kernel(self.system, client)
        kernel.warm()
        if self._own is None:
            client.close()  # the warmed prompt stays in the model's cache
        else:
            self._kernel = kernel
        self._warm_memory()

    def _warm_memory(self) -> None:
        """Load the embedder and ready the index in the background, so the first page-in or
        mem.search does not wait for them; a memory that cannot open says so on first use. The
        example bank embeds its examples then too, for the first request's examples."""
        self.system.examples.warm()
        try:
            self.system.memory.warm()
        except LlmosError:
            return

    @property
    def model(self) -> Backend | None:
        """The backend itself (for :model); every completion goes through the scheduler."""
        return self.host.model

    @property
    def scheduler(self) -> Scheduler | None:
        """The scheduler sharing the model, once it has loaded."""
        return self.host.scheduler

    @property
    def ready(self) -> bool:
        """True once the model has loaded (or failed to)."""
        return self.host.ready

    def get(self) -> Kernel:
        """The shell's kernel, waiting for the model to finish loading."""
        self.host.wait()
        with self._lock:
            if self._kernel is None and self.shared and self._own is not None:
                from llmos.kernel.loop import Kernel

                self._kernel = Kernel(self.system, self.host.client(self._own))
            if self._kernel is None:
                raise self.host.error or LlmosError(ErrorCode.E_BACKEND, "the model did not load")
            return self._kernel

    def spawn(self, process: str) -> Kernel:
        """A kernel for another process (a background job), on its own scheduler client, served
        after the shell's own (close the client, its `backend`, when the process ends); waits
        for the model."""
        from llmos.kernel.loop import Kernel

        name = f"{self._own}/{process}" if self.shared else process
        return Kernel(self.system, self.host.client(name, background=True))

    def busy(self) -> bool:
        """True while the model is running a completion."""
        return self.host.busy()

    def close(self) -> None:
        """Stop the scheduler: queued requests fail, a running completion finishes first. A
        shared view closes only its own scheduler client; the model stays."""
        if not self.shared:
            self.host.close()
            return
        with self._lock:
            kernel, self._kernel = self._kernel, None
        if kernel is not None:
            kernel.backend.close()  # type: ignore[attr-defined]
