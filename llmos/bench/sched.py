"""`llmos bench sched`: N processes, each a task that needs a slow (1 s) tool and two model
decisions, run one after another and then at once through the scheduler (batched, and one
completion at a time), in one run; and what a context switch costs with and without restoring
the incoming process's KV state."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from llmos.config import Settings
from llmos.kernel.backend import Backend, Completion, LlamaCppBackend, Message
from llmos.kernel.grammar import Constraint
from llmos.kernel.loop import Conversation, Kernel, Turn
from llmos.kernel.prompt import result_message
from llmos.kernel.scheduler import Job, KvPolicy, Policy, Scheduler, Served
from llmos.system import System

TASK = "Task {i}: run the sleep tool now (no args). Reply done only after it has run."

HISTORY = (
    ("list the files here", {"call": "fs.list"}, '{"ok":true,"value":{"entries":[]}}', "Empty."),
    ("hello!", None, "", "Hello! What can I do for you?"),
    ("what is in todo.txt?", {"call": "fs.read", "path": "todo.txt"}, "", "It says: buy milk."),
)


def history(i: int, turns: int) -> Conversation:
    """Earlier turns of a process's session (a shell that has been in use), distinct per process
    so each conversation diverges right after the system prompt."""
    conv = Conversation()
    for n in range(turns):
        request, call, result, reply = HISTORY[n % len(HISTORY)]
        turn = Turn(n + 1, [{"role": "user", "content": f"({i}.{n}) {request}"}])
        if call is not None:
            turn.messages.append({"role": "assistant", "content": json.dumps(call)})
            shown = result or '{"ok":true,"value":{"text":"buy milk"}}'
            turn.messages.append({"role": "user", "content": result_message(shown)})
        reply_call = {"call": "reply", "text": reply}
        turn.messages.append({"role": "assistant", "content": json.dumps(reply_call)})
        conv.turns.append(turn)
    return conv


def add_sleep_tool(system: System, seconds: float) -> None:
    """The bench's I/O-bound tool: sleeps, holding no CPU and not the model."""

    def sleep() -> str:
        """Wait one second (an I/O-bound tool)."""
        time.sleep(seconds)
        return "slept"

    system.tools.function(
        sleep, description=f"Wait {seconds:g} s (an I/O-bound tool); takes no arguments."
    )


def task_ok(events: list[Any]) -> bool:
    """The task was done right: the sleep tool ran, then the kernel replied."""
    calls = [e.call for e in events if e.kind == "call" and e.call]
    ran = any(
        e.kind == "result"
        and e.call
        and e.call.get("name") == "sleep"
        and e.result is not None
        and e.result.ok
        for e in events
    )
    return bool(calls) and ran and events[-1].kind == "reply"


class _Timed:
    """The backend, timing each completion (the model's busy time when run one by one)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.completions: list[Completion] = []

    def complete(
        self, messages: list[Message], *, constraint: Constraint | None, max_tokens: int
    ) -> Completion:
        out = self.backend.complete(messages, constraint=constraint, max_tokens=max_tokens)
        self.completions.append(out)
        return out


def _sequential(
    system: System, backend: Backend, n: int, turns: int
) -> tuple[float, int, list[Completion], list[float]]:
    ok = 0
    timed = _Timed(backend)
    tasks = []
    start = time.perf_counter()
    for i in range(n):
        began = time.perf_counter()
        process = system.spawn(f"seq{i}", _ws(system, f"seq{i}"), patterns=PATTERNS)
        kernel = Kernel(system, timed, max_steps=4)
        events = list(kernel.turn(process, history(i, turns), TASK.format(i=i)))
        ok += task_ok(events)
        tasks.append(time.perf_counter() - began)
    return time.perf_counter() - start, ok, timed.completions, tasks


def _concurrent(
    system: System,
    backend: Backend,
    n: int,
    turns: int,
    policy: Policy,
    kv_restore: KvPolicy,
    batch: int = 0,
) -> tuple[float, int, list[Served]]:
    with Scheduler(backend, policy=policy, kv_restore=kv_restore, batch=batch) as sched:
        jobs = []
        for i in range(n):
            name = f"{'b' if batch > 1 else kv_restore}{i}"
            process = system.spawn(name, _ws(system, name), patterns=PATTERNS)
            kernel = Kernel(system, sched.client(name), max_steps=4)
            jobs.append(Job(kernel, process, history(i, turns), TASK.format(i=i)))
        start = time.perf_counter()
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        wall = time.perf_counter() - start
        served = list(sched.served)
    return wall, sum(task_ok(job.events) for job in jobs), served


PATTERNS = ["tool.*", "fs.*", "reply", "ask"]


def _ws(system: System, name: str) -> Path:
    path = system.settings.home.parent / "ws" / name  # beside the home: it is out of reach
    path.mkdir(parents=True, exist_ok=True)
    return path


def _switches(served: list[Served]) -> dict[str, float]:
    """Switches back to a process served before (a first visit has no state to restore)."""
    seen: set[str] = set()
    switched = []
    for s in served:
        if s.switched and s.ok and s.process in seen:
            switched.append(s)
        seen.add(s.process)
    if not switched:
        return {"count": 0, "ms": 0.0, "prefill_tokens": 0.0, "restored_tokens": 0.0}
    return {
        "count": len(switched),
        "restored": sum(s.restored_tokens > 0 for s in switched),
        "ms": 1000 * statistics.mean(s.switch_seconds for s in switched),
        "save_restore_ms": 1000
        * statistics.mean(s.save_seconds + s.restore_seconds for s in switched),
        "prefill_tokens": statistics.mean(s.prefill_tokens for s in switched),
        "restored_tokens": statistics.mean(s.restored_tokens for s in switched),
        "model_s": sum(s.seconds for s in served),
        "decisions": len(served),
    }


def bench_sched(
    settings: Settings,
    *,
    model: Path | None = None,
    processes: int = 4,
    sleep: float = 1.0,
    turns: int = 2,
    policy: Policy = "rr",
) -> dict[str, Any]:
    """Run the scheduler benchmark on the default model (or `model`); prints and returns it."""
    from llmos.kernel.backend import open_backend

    home = settings.ensure_home()
    started = time.perf_counter()
    if model is not None:
        backend: Backend = LlamaCppBackend(
            model, n_ctx=settings.n_ctx, cache_dir=home / "cache" / "kv"
        )
    else:
        backend = open_backend(settings)
    load_s = time.perf_counter() - started
    local = isinstance(backend, LlamaCppBackend)
    figures: dict[str, Any] = {
        "model": backend.name,
        "threads": backend.n_threads if isinstance(backend, LlamaCppBackend) else 0,
        "processes": processes,
        "sleep_s": sleep,
        "history_turns": turns,
        "policy": policy,
        "load_s": load_s,
    }
    with (
        tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp,
        System(Settings(home=Path(tmp, "home")), plugins=False) as system,
    ):
        add_sleep_tool(system, sleep)
        Kernel(system, backend).warm()
        seq_s, seq_ok, seq_done, seq_tasks = _sequential(system, backend, processes, turns)
        figures.update(
            sequential_s=seq_s,
            sequential_ok=seq_ok,
            sequential_model_s=sum(c.seconds for c in seq_done),
            sequential_tasks_s=seq_tasks,
        )
        model_s = figures["sequential_model_s"]
        figures["overlap_bound"] = seq_s / (model_s + sleep) if model_s + sleep else 0.0
        if local:
            slots = max(processes, 2)
            b_s, b_ok, b_served = _concurrent(
                system, backend, processes, turns, policy, "never", batch=slots
            )
            figures.update(
                batched_s=b_s,
                batched_ok=b_ok,
                batched_speedup=seq_s / b_s if b_s else 0.0,
                batched_peers=statistics.mean(s.batch_peers for s in b_served) if b_served else 0,
                batched_prefill_tokens=sum(s.prefill_tokens for s in b_served),
            )
        kv_s, kv_ok, kv_served = _concurrent(system, backend, processes, turns, policy, "always")
        figures.update(
            concurrent_s=kv_s,
            concurrent_ok=kv_ok,
            speedup=seq_s / kv_s if kv_s else 0.0,
            switch_restore=_switches(kv_served),
        )
        if local:
            pf_s, pf_ok, pf_served = _concurrent(system, backend, processes, turns, policy, "never")
            figures.update(
                concurrent_prefill_s=pf_s,
                concurrent_prefill_ok=pf_ok,
                switch_prefill=_switches(pf_served),
            )
            au_s, au_ok, au_served = _concurrent(system, backend, processes, turns, policy, "auto")
            figures.update(
                concurrent_auto_s=au_s, concurrent_auto_ok=au_ok, switch_auto=_switches(au_served)
            )
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    n = f["processes"]
    print(f"bench sched: {f['model']} on {f['threads']} threads ({os.cpu_count()} cpus)")
    print(
        f"  {n} processes, each: {f['history_turns']} earlier turns, then a task needing a "
        f"{f['sleep_s']:g} s tool and two decisions; policy {f['policy']}"
    )
    print(
        f"  one after another:     {f['sequential_s']:6.1f} s  ({f['sequential_ok']}/{n} ok; "
        f"model busy {f['sequential_model_s']:.1f} s; tasks "
        + ", ".join(f"{t:.1f}" for t in f["sequential_tasks_s"])
        + " s)"
    )
    bound = f["overlap_bound"]
    print(
        f"  (the model's own work bounds what overlapping the tool waits can give: at best "
        f"{f['sequential_model_s'] + f['sleep_s']:.1f} s, {bound:.2f}x, one completion at a time)"
    )
    if "batched_s" in f:
        print(
            f"  scheduler, batched:    {f['batched_s']:6.1f} s  ({f['batched_ok']}/{n} ok)  "
            f"= {f['batched_speedup']:.2f}x faster  (on average {f['batched_peers']:.1f} other "
            f"completions in the same batch; {f['batched_prefill_tokens']} tokens prefilled; "
            "no context switches)"
        )
    print(
        f"  scheduler, KV restore: {f['concurrent_s']:6.1f} s  ({f['concurrent_ok']}/{n} ok)  "
        f"= {f['speedup']:.2f}x faster  (one completion at a time)"
    )
    if "concurrent_prefill_s" in f:
        pf = f["concurrent_prefill_s"]
        print(
            f"  scheduler, re-prefill: {pf:6.1f} s  ({f['concurrent_prefill_ok']}/{n} ok)  "
            f"= {f['sequential_s'] / pf:.2f}x faster"
        )
    if "concurrent_auto_s" in f:
        au, sw = f["concurrent_auto_s"], f["switch_auto"]
        print(
            f"  scheduler, KV auto:    {au:6.1f} s  ({f['concurrent_auto_ok']}/{n} ok)  "
            f"= {f['sequential_s'] / au:.2f}x faster  (restored on {sw.get('restored', 0)} of "
            f"{sw['count']} switches back, by measured cost)"
        )
    for key, label in (("switch_restore", "KV restore"), ("switch_prefill", "re-prefill")):
        s = f.get(key)
        if not s or not s["count"]:
            continue
        print(
            f"  context switch, {label}: {s['ms']:7.1f} ms each over {s['count']} switches "
            f"(save+restore {s['save_restore_ms']:.1f} ms; {s['prefill_tokens']:.0f} tokens "
            f"prefilled, {s['restored_tokens']:.0f} restored); model busy {s['model_s']:.1f} s "
            f"over {s['decisions']} decisions"
        )


def start_model_server(
    model: Path, n_ctx: int = 4096, *, log: Path | None = None, timeout: float = 180.0
) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's OpenAI-compatible server on `model`, once it answers; its /v1 URL.
    Its output goes to `log` when given; a server that dies or never answers is a
    RuntimeError quoting the log's end."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=2):
                return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                said = log.read_text(errors="replace")[-2000:] if log else ""
                raise RuntimeError(f"llama_cpp.server did not start: {said}") from None
            time.sleep(0.5)


def bench_sched_server(
    settings: Settings,
    model: Path,
    *,
    processes: int = 4,
    slots: int = 4,
    sleep: float = 1.0,
    turns: int = 2,
    policy: Policy = "rr",
) -> dict[str, Any]:
    """The same task against a model server (llama-cpp-python's, started here on `model`): one
    after another, on the scheduler with one request in flight, and with `slots` in flight."""
    from llmos.kernel.server import OpenAIBackend

    proc, base = start_model_server(model, settings.n_ctx)
    figures: dict[str, Any] = {"model": model.name, "processes": processes, "slots": slots}
    try:
        one = OpenAIBackend(base, model=model.stem, context=settings.n_ctx, slots=1)
        many = OpenAIBackend(base, model=model.stem, context=settings.n_ctx, slots=slots)
        with (
            tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp,
            System(Settings(home=Path(tmp, "home")), plugins=False) as system,
        ):
            add_sleep_tool(system, sleep)
            seq_s, seq_ok, _, _ = _sequential(system, one, processes, turns)
            one_s, one_ok, _ = _concurrent(system, one, processes, turns, policy, "never")
            many_s, many_ok, _ = _concurrent(system, many, processes, turns, policy, "never")
    finally:
        proc.terminate()
        proc.wait(30)
    figures.update(
        sequential_s=seq_s,
        sequential_ok=seq_ok,
        one_in_flight_s=one_s,
        one_in_flight_ok=one_ok,
        slots_s=many_s,
        slots_ok=many_ok,
        ratio=seq_s / many_s if many_s else 0.0,
    )
    n = processes
    print(f"bench sched against llama-cpp-python's server on {model.name} ({base}):")
    print(f"  one after another:          {seq_s:6.1f} s  ({seq_ok}/{n} ok)")
    print(
        f"  scheduler, 1 in flight:     {one_s:6.1f} s  ({one_ok}/{n} ok)  "
        f"= {seq_s / one_s:.2f}x faster"
    )
    print(
        f"  scheduler, {slots} in flight:     {many_s:6.1f} s  ({many_ok}/{n} ok)  "
        f"= {figures['ratio']:.2f}x faster than one after another"
    )
    return figures
