"""The scheduler: one model serves several processes. A worker thread owns the backend; each
process talks to the model through a proxy backend and runs its turns in its own thread, so
while one process waits on a slow syscall another uses the model. With llama.cpp the worker
decodes up to `SCHED_SLOTS` processes' completions together, each in its own sequence of one
KV cache (continuous batching); otherwise it runs one completion at a time, picked by policy
(FIFO or round-robin), and a context switch can restore the incoming process's KV state from
memory instead of prefilling its conversation again."""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import (
    Backend,
    Cancelling,
    Completion,
    LlamaCppBackend,
    Message,
    Parallel,
    Warming,
    common_prefix,
    context_of,
    count_tokens,
    decode_speed,
    text_tokens,
)
from llmos.limits import SCHED_AGING_S, SCHED_KV_BYTES, SCHED_SLOTS

if TYPE_CHECKING:
    from llmos.kernel.batch import BatchEngine, Stream
    from llmos.kernel.grammar import Constraint
    from llmos.kernel.loop import Conversation, Event, Kernel
    from llmos.syscalls.context import Process

Priority = int
FOREGROUND: Priority = 0
"""A person waits for this process's answer (a shell's own kernel)."""
BACKGROUND: Priority = 1
"""Nobody waits at a prompt (a background job, an app): served after the foreground."""

Policy = Literal["fifo", "rr"]
POLICIES: tuple[Policy, ...] = ("fifo", "rr")


@dataclass
class _Request:
    client: SchedulerClient
    messages: list[Message]
    constraint: Constraint | None
    max_tokens: int
    seq: int
    queued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: Completion | None = None
    error: BaseException | None = None
    cancelled: str = ""
    """Why the request was withdrawn while on the model (batching drops it at the next step)."""


@dataclass(frozen=True)
class Served:
    """One completion the worker ran: for whom, whether it followed a context switch, and what
    the switch cost (saving the outgoing state, restoring the incoming one, the prefill)."""

    process: str
    seq: int
    switched: bool
    restored_tokens: int
    """Tokens whose KV state was restored from memory (0: none restored)."""
    save_seconds: float
    restore_seconds: float
    prefill_tokens: int
    prefill_seconds: float
    seconds: float
    waited: float
    ok: bool
    reused_tokens: int = 0
    """With batching: prompt tokens the process's own sequence (or a shared prefix) already
    held, so neither restored nor prefilled."""
    batch_peers: int = 0
    """With batching: the most other completions that shared a batch with this one."""

    @property
    def switch_seconds(self) -> float:
        """What the switch cost before decoding began: save + restore + prefill."""
        return self.save_seconds + self.restore_seconds + self.prefill_seconds


@dataclass
class KvState:
    """A llama.cpp context's KV state held in memory, with the tokens it holds."""

    data: Any
    tokens: list[int]

    @property
    def size(self) -> int:
        """Bytes held."""
        return len(self.data)


@dataclass
class Rate:
    """Seconds per token of some work, a running mean of what was measured (None: not yet)."""

    per_token: float | None = None

    def add(self, tokens: int, seconds: float) -> None:
        """Fold in one measurement of `tokens` tokens taking `seconds`."""
        if tokens <= 0:
            return
        x = seconds / tokens
        self.per_token = x if self.per_token is None else 0.7 * self.per_token + 0.3 * x

    def cost(self, tokens: int) -> float | None:
        """The expected seconds for `tokens` tokens (None: never measured)."""
        return None if self.per_token is None else self.per_token * max(tokens, 0)


KvPolicy = Literal["auto", "always", "never"]
KV_POLICIES: tuple[KvPolicy, ...] = ("auto", "always", "never")


class KvStates:
    """Saves and restores the one llama.cpp context of a `LlamaCppBackend` per process, in
    memory, through the low-level state API (`Llama.save_state` would also copy the whole
    scores array, n_ctx x n_vocab floats). Least recently saved states go first beyond
    `max_bytes`.

    Which is faster depends on the machine (measured by `llmos bench sched`: on a 2-core CPU
    restoring 2,178 tokens took 67 ms against 2 s to prefill 192; on an H100 190 ms against
    14 ms), so it times its saves, restores and the prefills it sees and, unless `always`,
    keeps and restores a state only while that is expected to beat prefilling the tokens it
    holds. Until a cost has been measured it assumes restoring wins, which measures it."""

    def __init__(
        self, backend: LlamaCppBackend, max_bytes: int = SCHED_KV_BYTES, *, always: bool = False
    ) -> None:
        import llama_cpp

        self.backend = backend
        self.llm: Any = backend.llm
        self.lib = llama_cpp
        self.max_bytes = max_bytes
        self.always = always
        self.states: OrderedDict[int, KvState] = OrderedDict()
        self.save_rate, self.restore_rate, self.prefill_rate = Rate(), Rate(), Rate()

    def _dearer(self, spend: list[float | None], gain: float | None) -> bool:
        """Whether measured costs say `spend` (seconds) outweighs `gain` (seconds of prefill
        it would spare); False while any of them is unmeasured or under `always`."""
        if self.always or gain is None or any(x is None for x in spend):
            return False
        return sum(x for x in spend if x is not None) >= gain

    def context_tokens(self) -> list[int]:
        """The tokens the context holds now."""
        return [int(t) for t in self.llm.input_ids[: int(self.llm.n_tokens)]]

    def save(self, key: int, shared: int = 0) -> None:
        """Keep the context's current state under `key`, unless saving and later restoring it
        is expected to cost more than prefilling again what it holds beyond the `shared`
        tokens (those the next prompt keeps in the context anyway)."""
        llm = self.llm
        n = int(llm.n_tokens)
        self.states.pop(key, None)
        if n == 0:
            return
        spend = [self.save_rate.cost(n), self.restore_rate.cost(n)]
        if self._dearer(spend, self.prefill_rate.cost(n - shared)):
            return
        start = time.perf_counter()
        ctx = llm._ctx.ctx
        size = self.lib.llama_state_get_size(ctx)
        data = (ctypes.c_uint8 * size)()
        written = self.lib.llama_state_get_data(ctx, data, size)
        if written <= 0:
            return
        self.states[key] = KvState(data=data, tokens=self.context_tokens())
        self.save_rate.add(n, time.perf_counter() - start)
        total = sum(s.size for s in self.states.values())
        while total > self.max_bytes and len(self.states) > 1:
            _, old = self.states.popitem(last=False)
            total -= old.size

    def drop(self, key: int) -> None:
        """Forget `key`'s state (its process ended)."""
        self.states.pop(key, None)

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """The tokens `complete` will prefill for `messages`."""
        text = self.backend.prompt(messages)
        return list(self.llm.tokenize(text.encode(), add_bos=True, special=True))

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """A completion prefilled `tokens` tokens in `seconds` (what a restore would spare)."""
        self.prefill_rate.add(tokens, seconds)

    def restore_if_better(self, key: int, tokens: list[int], cached: int) -> int:
        """Restore `key`'s state when it holds a longer prefix of the coming prompt `tokens`
        than the `cached` tokens the context holds now and restoring is not expected to cost
        more than prefilling the difference; returns the tokens restored (0: nothing
        restored)."""
        state = self.states.get(key)
        if state is None:
            return 0
        saved = common_prefix(state.tokens, tokens)
        if saved <= cached:
            return 0
        n = len(state.tokens)
        if self._dearer([self.restore_rate.cost(n)], self.prefill_rate.cost(saved - cached)):
            return 0
        llm = self.llm
        start = time.perf_counter()
        if self.lib.llama_state_set_data(llm._ctx.ctx, state.data, state.size) <= 0:
            llm._ctx.kv_cache_clear()
            llm.n_tokens = 0
            self.states.pop(key, None)
            return 0
        self.restore_rate.add(n, time.perf_counter() - start)
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n
        return saved


class Scheduler:
    """Owns one backend and the worker thread that runs every completion on it.

    `policy` picks the next request: `fifo` in arrival order, `rr` round-robin across the
    processes with requests pending. With llama.cpp and `batch` > 1 (the default), up to
    `batch` completions decode together, one sequence each in one KV cache (continuous
    batching: no context switches at all, see `llmos.kernel.batch`); the policy then orders
    admission to a free sequence. Otherwise one completion runs at a time, and `kv_restore`
    (llama.cpp only) saves the outgoing process's KV state at a context switch and restores
    the incoming one's when that beats prefilling its conversation again (measured by
    `llmos bench sched`)."""

    def __init__(
        self,
        backend: Backend,
        *,
        policy: Policy = "rr",
        kv_restore: KvPolicy = "auto",
        batch: int = SCHED_SLOTS,
        history: int = 1000,
    ) -> None:
        if policy not in POLICIES:
            raise LlmosError(
                ErrorCode.E_INVAL, f"unknown policy {policy!r} (one of {', '.join(POLICIES)})"
            )
        self.backend = backend
        self.policy: Policy = policy
        local = isinstance(backend, LlamaCppBackend)
        self.engine: BatchEngine | None = None
        if local and batch > 1:
            from llmos.kernel.batch import BatchEngine

            self.engine = BatchEngine(backend, slots=batch)  # type: ignore[arg-type]
        if kv_restore not in KV_POLICIES:
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"unknown kv_restore {kv_restore!r} (one of {', '.join(KV_POLICIES)})",
            )
        self.kv: KvStates | None = None
        if kv_restore != "never" and local and self.engine is None:
            self.kv = KvStates(backend, always=kv_restore == "always")  # type: ignore[arg-type]
        self.served: deque[Served] = deque(maxlen=history)
        self._cond = threading.Condition()
        self._kv_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._active: list[_Request] = []
        self._released: list[int] = []
        self._clients: list[SchedulerClient] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._last: SchedulerClient | None = None
        self._resident: SchedulerClient | None = None
        self._stopping = False
        work = self._work_batched if self.engine is not None else self._work
        self.parallel = 1
        """Requests in flight at once: a server's slots, else one (llama.cpp in-process batches
        inside one worker instead)."""
        if self.engine is None and self.kv is None and isinstance(backend, Parallel):
            self.parallel = max(1, backend.slots)
        self._workers = [
            threading.Thread(target=work, name=f"llmos-scheduler-{i}", daemon=True)
            for i in range(self.parallel)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def kv_restore(self) -> bool:
        """Whether context switches restore KV state (only ever true for llama.cpp)."""
        return self.kv is not None

    @property
    def slots(self) -> int:
        """How many completions can decode at once (1 without batching)."""
        return self.engine.slots if self.engine is not None else 1

    def client(self, process: str, *, priority: Priority = FOREGROUND) -> SchedulerClient:
        """A proxy backend for one process; close it when the process ends. A FOREGROUND
        process (a person waiting at a shell) is served before BACKGROUND ones (jobs, apps)."""
        with self._cond:
            if self._stopping:
                raise LlmosError(ErrorCode.E_BACKEND, "the scheduler has shut down")
            client = SchedulerClient(self, process, next(self._ids), priority)
            self._clients.append(client)
            return client

    def pending(self) -> int:
        """Requests waiting for the model."""
        with self._cond:
            return len(self._pending)

    def ps(self) -> list[dict[str, Any]]:
        """One row per process: its name, whether it is on the model, waiting, or elsewhere
        (running a syscall or idle), and its completions so far."""
        with self._cond:
            running = {r.client.id for r in self._active}
            waiting = {r.client.id for r in self._pending}
            rows = []
            for c in self._clients:
                state = "model" if c.id in running else "waiting" if c.id in waiting else "other"
                rows.append({"process": c.process, "state": state, "completions": c.completions})
            return rows

    def close(self) -> None:
        """Fail whatever is still queued, let the running completion finish, stop the worker."""
        with self._cond:
            self._stopping = True
            dropped, self._pending = self._pending, []
            self._cond.notify_all()
        for req in dropped:
            req.error = LlmosError(ErrorCode.E_BACKEND, "the scheduler shut down")
            req.done.set()
        for worker in self._workers:
            if threading.current_thread() is not worker:
                worker.join()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, client: SchedulerClient, req: _Request) -> None:
        with self._cond:
            if self._stopping:
                raise LlmosError(ErrorCode.E_BACKEND, "the scheduler has shut down")
            if client.closed:
                raise LlmosError(ErrorCode.E_BACKEND, f"process {client.process} has ended")
            self._pending.append(req)
            self._cond.notify_all()

    def _withdraw(self, client: SchedulerClient, reason: str) -> None:
        """Fail `client`'s queued requests (a cancelled or ended process)."""
        with self._cond:
            mine = [r for r in self._pending if r.client is client]
            self._pending = [r for r in self._pending if r.client is not client]
            if self.engine is not None:
                for req in self._active:
                    if req.client is client:
                        req.cancelled = reason
        for req in mine:
            req.error = LlmosError(ErrorCode.E_BACKEND, reason)
            req.done.set()

    def _release(self, client: SchedulerClient) -> None:
        self._withdraw(client, f"process {client.process} has ended")
        with self._cond:
            if client in self._clients:
                self._clients.remove(client)
            if self._last is client:
                self._last = None
            if self.engine is not None:
                self._released.append(client.id)
                self._cond.notify_all()
        if self.kv is not None:
            with self._kv_lock:
                self.kv.drop(client.id)

    def _urgent(self, req: _Request, now: float) -> bool:
        """Whether `req` is served in the first class: a foreground process's, or a background
        one's that has waited SCHED_AGING_S (so the foreground never starves the rest)."""
        return req.client.priority == FOREGROUND or now - req.queued >= SCHED_AGING_S

    def _pick(self) -> _Request:
        """The next request: of the first class pending (`_urgent`), by policy (called with the
        lock held, something pending)."""
        now = time.perf_counter()
        urgent = [r for r in self._pending if self._urgent(r, now)]
        pending = urgent or self._pending
        if self.policy == "fifo" or self._last is None:
            return pending[0]
        waiting = {r.client.id for r in pending}
        ring = self._clients
        start = ring.index(self._last) + 1 if self._last in ring else 0
        for client in itertools.islice(itertools.cycle(ring), start, start + len(ring)):
            if client.id in waiting:
                return next(r for r in pending if r.client is client)
        return pending[0]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                req = self._pick()
                self._pending.remove(req)
                self._active.append(req)
            try:
                req.result = self._run(req)
            except Exception as exc:  # every failure goes back to the caller, never kills us
                req.error = exc
            finally:
                with self._cond:
                    self._active.remove(req)
                    self._last = req.client
                    req.client.completions += 1
                req.done.set()

    def _work_batched(self) -> None:
        """The worker with continuous batching: admit what waits while sequences are free,
        then evaluate one batch for everything active; repeat."""
        engine = self.engine
        assert engine is not None
        streams: dict[int, tuple[_Request, Stream]] = {}
        try:
            while True:
                with self._cond:
                    while not (self._pending or streams or self._stopping or self._released):
                        self._cond.wait()
                    if self._stopping and not self._pending and not streams:
                        return
                    released, self._released = self._released, []
                    admit: list[_Request] = []
                    while self._pending and len(admit) < engine.free_slots():
                        req = self._pick()
                        self._pending.remove(req)
                        self._last = req.client
                        admit.append(req)
                    self._active.extend(admit)
                for key in released:
                    engine.release(key)
                for req in admit:
                    try:
                        stream = engine.start(
                            req.client.id,
                            req.messages,
                            constraint=req.constraint,
                            max_tokens=req.max_tokens,
                        )
                    except Exception as exc:  # the caller gets it; the others go on
                        self._settle(req, None, error=exc)
                        continue
                    streams[id(stream)] = (req, stream)
                for key, (req, stream) in list(streams.items()):
                    if req.cancelled:
                        engine.drop(stream)
                        del streams[key]
                        self._settle(
                            req, stream, error=LlmosError(ErrorCode.E_BACKEND, req.cancelled)
                        )
                if not streams:
                    continue
                peers = len(streams) - 1
                now = time.perf_counter()
                first = [s for r, s in streams.values() if self._urgent(r, now)]
                try:  # while a person waits, background streams sit out the steps
                    finished = engine.step(first or [s for _, s in streams.values()])
                except Exception as exc:
                    for key, (req, stream) in list(streams.items()):
                        engine.drop(stream)
                        del streams[key]
                        self._settle(req, stream, error=exc, peers=peers)
                    continue
                for stream in finished:
                    req, _ = streams.pop(id(stream))
                    self._settle(req, stream, peers=peers)
        finally:
            engine.close()

    def _settle(
        self,
        req: _Request,
        stream: Stream | None,
        *,
        error: BaseException | None = None,
        peers: int = 0,
    ) -> None:
        """Hand a batched request its result or error and record what it cost."""
        result = stream.result if stream is not None else None
        now = time.perf_counter()
        started = stream.started if stream is not None else now
        if result is not None:
            self.served.append(
                Served(
                    process=req.client.process,
                    seq=req.seq,
                    switched=False,
                    restored_tokens=0,
                    save_seconds=0.0,
                    restore_seconds=0.0,
                    prefill_tokens=result.prefill_tokens,
                    prefill_seconds=result.prefill_seconds,
                    seconds=result.seconds,
                    waited=started - req.queued,
                    ok=error is None,
                    reused_tokens=stream.reused if stream is not None else 0,
                    batch_peers=peers,
                )
            )
        req.result, req.error = (None, error) if error is not None else (result, None)
        with self._cond:
            if req in self._active:
                self._active.remove(req)
            req.client.completions += 1
        req.done.set()

    def _run(self, req: _Request) -> Completion:
        client = req.client
        switched = self._resident is not None and self._resident is not client
        save = restore = 0.0
        restored = 0
        start = time.perf_counter()
        kv = self.kv
        if kv is not None and self._resident is not client:
            with self._kv_lock:
                tokens = kv.prompt_tokens(req.messages)
                cached = kv.backend.decoder._cached(tokens)
                outgoing = self._resident
                if outgoing is not None and not outgoing.closed:
                    kv.save(outgoing.id, cached)
            mark = time.perf_counter()
            save = mark - start
            with self._kv_lock:
                restored = kv.restore_if_better(client.id, tokens, cached)
            restore = time.perf_counter() - mark
        self._resident = client
        ok = False
        out = Completion(text="")
        try:
            out = self.backend.complete(
                req.messages, constraint=req.constraint, max_tokens=req.max_tokens
            )
            ok = True
            if kv is not None:
                kv.observe_prefill(out.prefill_tokens, out.prefill_seconds)
            return out
        finally:
            self.served.append(
                Served(
                    process=client.process,
                    seq=req.seq,
                    switched=switched,
                    restored_tokens=restored,
                    save_seconds=save,
                    restore_seconds=restore,
                    prefill_tokens=out.prefill_tokens,
                    prefill_seconds=out.prefill_seconds,
                    seconds=time.perf_counter() - start,
                    waited=start - req.queued,
                    ok=ok,
                )
            )


class SchedulerClient:
    """A process's view of the model: `complete` queues the request with the scheduler and
    waits for its turn and its result (an error comes back as the same LlmosError)."""

    def __init__(
        self, scheduler: Scheduler, process: str, id_: int, priority: Priority = 0
    ) -> None:
        self._scheduler = scheduler
        self.process = process
        self.id = id_
        self.priority = priority
        """FOREGROUND (0) or BACKGROUND (1): see `Scheduler.client`."""
        self.name: str = scheduler.backend.name
        self.closed = False
        self.completions = 0

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        """Queue one completion and wait for it."""
        req = _Request(
            self,
            [dict(m) for m in messages],
            constraint,
            max_tokens,
            next(self._scheduler._seq),
        )
        self._scheduler._submit(self, req)
        try:
            req.done.wait()
        except BaseException:
            # Ctrl-C while waiting: the request leaves the queue (or its result is ignored).
            self._scheduler._withdraw(self, "cancelled")
            raise
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def cancel(self) -> None:
        """Fail this process's queued requests (the turn was cancelled); the proxy stays usable."""
        self._scheduler._withdraw(self, f"process {self.process} was cancelled")

    def close(self) -> None:
        """The process ended: fail anything queued and free its slot and saved KV state."""
        if not self.closed:
            self.closed = True
            self._scheduler._release(self)

    def count(self, messages: list[Message]) -> int:
        """The real backend's prompt tokens of `messages` (tokenizing needs no turn on it)."""
        return count_tokens(self._scheduler.backend, messages)

    def tokens(self, text: str) -> int:
        """The real backend's tokens of `text`."""
        return text_tokens(self._scheduler.backend, text)

    @property
    def context(self) -> int:
        """The real backend's context window (0 when it does not say)."""
        return context_of(self._scheduler.backend)

    @property
    def decode_tps(self) -> float:
        """The real backend's last decoding speed."""
        return decode_speed(self._scheduler.backend)

    def warm(self, messages: list[Message]) -> Completion:
        """Warm the real backend's cache through the queue, when it can be warmed."""
        if not isinstance(self._scheduler.backend, Warming):
            return Completion(text="")
        return self.complete(messages, constraint=None, max_tokens=0)


class Job:
    """One process's turn: `run` runs it in the calling thread, `start` in a thread of its own;
    its events are kept in order, and also handed to `on_event` as they happen. The one turn
    runner of the shell's jobs, apps and the scheduler's tests."""

    def __init__(
        self,
        kernel: Kernel,
        process: Process,
        conversation: Conversation,
        request: str,
        *,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.kernel = kernel
        self.process = process
        self.conversation = conversation
        self.request = request
        self.on_event = on_event
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.started = self.finished = 0.0
        self._cancelled = threading.Event()
        self._thread = threading.Thread(
            target=self.run, name=f"llmos-{process.name}-{process.pid}", daemon=True
        )

    def start(self) -> Job:
        """Begin the turn in the background."""
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the turn to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        """True once the turn has ended (however it ended)."""
        return self.finished > 0

    @property
    def reply(self) -> str:
        """The reply or question that ended the turn, if any."""
        for event in reversed(self.events):
            if event.kind in ("reply", "ask"):
                return event.text
        return ""

    def cancel(self) -> None:
        """Stop at the next step (a queued completion fails at once, a running tool is
        stopped)."""
        self._cancelled.set()
        self.process.stop.set()
        if isinstance(self.kernel.backend, Cancelling):
            self.kernel.backend.cancel()

    def _events(self) -> Iterator[Event]:
        return self.kernel.turn(self.process, self.conversation, self.request)

    def run(self) -> None:
        """Run the turn to its end here (a thread that has nothing else to do runs it itself,
        rather than start another and wait for it); an error is kept in `error`."""
        if not self.started:
            self.started = time.perf_counter()
        steps = self._events()
        try:
            for event in steps:
                self.events.append(event)
                if self.on_event is not None:
                    self.on_event(event)
                if self._cancelled.is_set():
                    break
        except Exception as exc:  # kept for the caller, like a process's exit status
            self.error = exc
        finally:
            if isinstance(steps, Generator):
                steps.close()
            self.finished = time.perf_counter()
