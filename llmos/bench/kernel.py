"""`llmos bench kernel`: decision latency, prefill and decode speed, and the cost of the grammar
against the same model's raw decoding, all in one run on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from llmos.bench.dispatch import percentile
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, LlamaCppBackend, Message
from llmos.kernel.loop import Conversation, Kernel
from llmos.kernel.prompt import result_message
from llmos.syscalls.base import Registry, Syscall
from llmos.system import System

REQUESTS = (
    "show me notes.txt",
    "list the files in docs",
    "rename a.txt to b.txt",
    "make a 64px thumbnail of cat.png",
    "which files mention budget?",
    "copy report.md to backup/report.md",
    "what size is photo.jpg?",
    "create a folder called archive",
    "write 'buy milk' to todo.txt",
    "convert logo.png to jpg",
    "how big is data.csv?",
    "hello!",
)


class PaddingResult(BaseModel):
    """What a padding syscall returns."""

    text: str


def padding_syscalls(registry: Registry, n: int) -> list[str]:
    """Register `n` extra syscalls (to show the per-step cost does not grow with the table)."""
    names = []
    for i in range(n):
        name = f"pad.op{i}"
        model = create_model(
            f"PadOp{i}",
            __base__=Syscall,
            __doc__=f"Padding operation number {i}, used only to grow the syscall table.",
            call=(Literal[name], name),  # type: ignore[arg-type]
            text=(str, Field(description="Any text.")),
        )
        registry.register(model, lambda call, process: PaddingResult(text="ok"))
        names.append(name)
    return names


@dataclass(frozen=True)
class Decision:
    """One timed decision: intent to validated syscall."""

    request: str
    seconds: float
    completion: Completion
    call: str


def decide(kernel: Kernel, backend: LlamaCppBackend, request: str, *, grammar: bool) -> Decision:
    """Decode and validate one call for `request` from a fresh conversation."""
    messages = kernel.messages(Conversation.from_messages([{"role": "user", "content": request}]))
    start = time.perf_counter()
    out = backend.complete(
        messages, constraint=kernel.grammars.constraint() if grammar else None, max_tokens=64
    )
    try:
        call = kernel.system.registry.parse(json.loads(out.text)).call
    except (ValueError, LlmosError):
        call = "(invalid)"
    return Decision(request, time.perf_counter() - start, out, call)


def second_step_prefill(kernel: Kernel, backend: LlamaCppBackend) -> tuple[int, int]:
    """(system prompt tokens, tokens prefilled for step 2 of a turn): a request, its call and
    its result, then the next decision."""
    conversation = Conversation.from_messages([{"role": "user", "content": "show me notes.txt"}])
    first = backend.complete(
        kernel.messages(conversation), constraint=kernel.grammars.constraint(), max_tokens=64
    )
    conversation.add("assistant", first.text)
    conversation.add("user", result_message('{"ok":true,"value":{"text":"hello"}}'))
    second = backend.complete(
        kernel.messages(conversation), constraint=kernel.grammars.constraint(), max_tokens=64
    )
    system = [m["content"] for m in kernel.messages(Conversation()) if m["role"] == "system"]
    return backend.tokens("".join(system)), second.prefill_tokens


WORKSPACE = {
    "notes.txt": "Groceries.\nThe wifi password for the cabin is larch-7731.\nCall Bo.\n",
    "todo.md": "- book dentist\n",
    "report.md": "# Report\nSales rose.\n",
    "docs/intro.md": "Hello.\n",
    "logs/app1.log": "start\nERROR disk full\n",
    "logs/app2.log": "start\nok\n",
}
"""The workspace grounded decisions are made in: a few files and folders, as a person's."""


class _Recorder:
    """The backend, keeping every completion (a grounded decision may take two)."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.completions: list[Completion] = []

    def tokens(self, text: str) -> int:
        return self.backend.tokens(text)

    def complete(self, messages: list[Message], **kwargs: Any) -> Completion:
        out = self.backend.complete(messages, **kwargs)
        self.completions.append(out)
        return out


@dataclass(frozen=True)
class Grounded:
    """One decision made as a turn's first step is: workspace view, examples and grounded
    paths included, and what the view and the examples cost in prompt tokens."""

    seconds: float
    prefill_tokens: int
    view_tokens: int
    example_tokens: int
    wanted: bool


def grounded_decisions(
    system: System, backend: LlamaCppBackend, root: Path, requests: list[str]
) -> list[Grounded]:
    """Each request decided from a fresh conversation in a workspace holding WORKSPACE, as
    `Kernel.turn` decides its first step (the example bank warmed first, as the shell does)."""
    for rel, text in WORKSPACE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    warming = system.examples.warm()
    if warming is not None:
        warming.join()
    recorder = _Recorder(backend)
    kernel = Kernel(system, recorder)
    process = system.spawn("bench", root, remembered=False)
    out = []
    for request in requests:
        conversation = Conversation()
        ground = kernel.begin(process, conversation, request)
        turn = conversation.current
        recorder.completions.clear()
        start = time.perf_counter()
        with contextlib.suppress(LlmosError):  # a failed decision is timed like the rest
            kernel.decide(conversation, ground)
        seconds = time.perf_counter() - start
        view_t = backend.tokens(turn.view) if turn is not None and turn.view else 0
        example_t = backend.tokens(turn.examples) if turn is not None and turn.examples else 0
        out.append(
            Grounded(
                seconds,
                sum(c.prefill_tokens for c in recorder.completions),
                view_t,
                example_t,
                any(c.wanted for c in recorder.completions),
            )
        )
    return out


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def bench_kernel(
    settings: Settings, *, table_sizes: tuple[int, ...] = (0, 16), repeat: int = 1
) -> dict[str, Any]:
    """Run the kernel benchmark on the configured (default) model; prints and returns figures."""
    from llmos.kernel.backend import open_backend

    started = time.perf_counter()
    backend = open_backend(settings)
    if not isinstance(backend, LlamaCppBackend):
        raise LlmosError(ErrorCode.E_INVAL, "bench kernel measures a local GGUF, not a server")
    load_s = time.perf_counter() - started
    figures: dict[str, Any] = {"model": backend.name, "threads": backend.n_threads}
    with (
        tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp,
        System(Settings(home=Path(tmp, "home")), plugins=False) as system,
    ):
        kernel = Kernel(system, backend)
        cold = decide(kernel, backend, "hi", grammar=True).completion
        requests = list(REQUESTS) * repeat
        fast = [decide(kernel, backend, r, grammar=True) for r in requests]
        backend.decoder.fast_forward = False
        slow = [decide(kernel, backend, r, grammar=True) for r in requests]
        backend.decoder.fast_forward = True
        raw = [decide(kernel, backend, r, grammar=False) for r in requests]
        ws = Path(tmp, "ws")
        ws.mkdir()
        turns = grounded_decisions(system, backend, ws, requests)
        steps = []
        for n in table_sizes:
            added = padding_syscalls(system.registry, n)
            steps.append((n, len(system.registry), *second_step_prefill(kernel, backend)))
            for name in added:
                system.registry.unregister(name)
    latencies = [d.seconds for d in fast]

    def decode_rate(ds: list[Decision]) -> float:
        """Output tokens per second after the prompt (forced ones count: they are output)."""
        tokens = sum(d.completion.completion_tokens for d in ds)
        return _rate(tokens, sum(d.completion.decode_seconds for d in ds))

    raw_rate = decode_rate(raw)
    figures.update(
        load_s=load_s,
        cold_prefill_tokens=cold.prefill_tokens,
        cold_prefill_tok_s=_rate(cold.prefill_tokens, cold.prefill_seconds),
        decision_p50_s=statistics.median(latencies),
        decision_p90_s=percentile(latencies, 90),
        step_prefill_tokens=statistics.median(d.completion.prefill_tokens for d in fast),
        step_prefill_tok_s=_rate(
            sum(d.completion.prefill_tokens for d in fast),
            sum(d.completion.prefill_seconds for d in fast),
        ),
        raw_decode_tok_s=raw_rate,
        grammar_decode_tok_s=decode_rate(slow),
        constrained_decode_tok_s=decode_rate(fast),
        forced_share=_rate(
            sum(d.completion.forced_tokens for d in fast),
            sum(d.completion.completion_tokens for d in fast),
        ),
        valid_calls=sum(d.call != "(invalid)" for d in fast),
        raw_valid_calls=sum(d.call != "(invalid)" for d in raw),
        requests=len(requests),
        grounded_p50_s=statistics.median(g.seconds for g in turns),
        grounded_p90_s=percentile([g.seconds for g in turns], 90),
        grounded_prefill_tokens=statistics.median(g.prefill_tokens for g in turns),
        view_tokens=statistics.median(g.view_tokens for g in turns),
        example_tokens=statistics.median(g.example_tokens for g in turns),
        wanted=sum(g.wanted for g in turns),
        table_steps=[
            {"padding": n, "syscalls": size, "system_tokens": sys_t, "step2_prefill": pre}
            for n, size, sys_t, pre in steps
        ],
    )
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    raw = f["raw_decode_tok_s"] or 1.0
    print(f"bench kernel: {f['model']} on {f['threads']} threads ({os.cpu_count()} cpus)")
    print(f"  load {f['load_s']:.1f} s; first prompt {f['cold_prefill_tokens']} tokens prefilled")
    print(f"  decision (intent -> validated syscall), {f['requests']} requests:")
    print(f"    p50 {f['decision_p50_s']:.2f} s   p90 {f['decision_p90_s']:.2f} s")
    print(f"    valid calls {f['valid_calls']}/{f['requests']} (raw: {f['raw_valid_calls']})")
    print(
        f"  prefill: {f['cold_prefill_tok_s']:.1f} tok/s (first prompt), "
        f"{f['step_prefill_tok_s']:.1f} tok/s per step ({f['step_prefill_tokens']:.0f} tokens)"
    )
    print(
        f"  as a turn's first step (workspace view, examples, grounded paths): "
        f"p50 {f['grounded_p50_s']:.2f} s   p90 {f['grounded_p90_s']:.2f} s"
    )
    print(
        f"    prefills {f['grounded_prefill_tokens']:.0f} tokens (median), of which the "
        f"view is {f['view_tokens']:.0f} and the examples {f['example_tokens']:.0f}; "
        f"{f['wanted']}/{f['requests']} named a call that could not be made"
    )
    print(f"  decode, raw unconstrained:         {raw:6.1f} tok/s")
    print(
        f"  decode, grammar (no fast-forward): {f['grammar_decode_tok_s']:6.1f} tok/s  "
        f"= {f['grammar_decode_tok_s'] / raw:.2f}x raw"
    )
    print(
        f"  decode, grammar + forced text:     {f['constrained_decode_tok_s']:6.1f} tok/s  "
        f"= {f['constrained_decode_tok_s'] / raw:.2f}x raw "
        f"({f['forced_share']:.0%} of tokens forced)"
    )
    for row in f["table_steps"]:
        print(
            f"  table of {row['syscalls']:3} syscalls: system prompt "
            f"{row['system_tokens']} tokens, step 2 prefills {row['step2_prefill']} tokens"
        )
