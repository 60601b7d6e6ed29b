"""The kernel with the real small model (Qwen2.5-Coder-0.5B, assembled from its packages)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.bench.kernel import padding_syscalls, second_step_prefill
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, LlamaCppBackend, Message
from llmos.kernel.grammar import Constraint
from llmos.kernel.loop import Conversation, Event, Kernel
from llmos.system import System


def turn(system: System, backend: LlamaCppBackend, workspace: Path, request: str) -> list[Event]:
    kernel = Kernel(system, backend, max_steps=4)
    return list(kernel.turn(system.spawn("it", workspace), Conversation(), request))


def calls(events: list[Event]) -> list[dict[str, object]]:
    return [e.call for e in events if e.kind == "call" and e.call]


@pytest.mark.slow
def test_file_task_end_to_end(system: System, backend: LlamaCppBackend, workspace: Path) -> None:
    (workspace / "server.cfg").write_text("port = 9090\n")
    events = turn(system, backend, workspace, "show me server.cfg")
    run = [e.call for e in events if e.kind == "result" and e.call]
    first = run[0]  # a reply before anything looked at server.cfg goes back to the model
    assert first["call"] == "fs.read" and str(first["path"]).endswith("server.cfg")
    results = [e.result for e in events if e.kind == "result" and e.result is not None]
    assert results and results[0].ok and "9090" in results[0].render()


def test_permission_error_goes_back_to_the_model(
    system: System, backend: LlamaCppBackend, workspace: Path
) -> None:
    events = turn(system, backend, workspace, "read /etc/hostname")
    results = [e.result for e in events if e.kind == "result" and e.result is not None]
    assert results and results[0].code == "E_PERM"
    assert len(calls(events)) >= 2, "the kernel took another step after the E_PERM result"
    assert not any(r.ok and "hostname" in r.render() for r in results[1:])


class Unconstrained:
    """The real model with no grammar, as a server without grammar support would behave."""

    def __init__(self, inner: LlamaCppBackend, first: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.name = inner.name
        self.raw: list[str] = []
        self.prompts: list[list[Message]] = []
        self.first = list(first)
        """Outputs given before the model's own (a known-broken one, to see it mended)."""

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        self.prompts.append(messages)
        if self.first:
            out = Completion(text=self.first.pop(0))
        else:
            out = self.inner.complete(messages, constraint=None, max_tokens=max_tokens)
        self.raw.append(out.text)
        return out


def test_unconstrained_output_is_repaired_or_retried(
    system: System, backend: LlamaCppBackend, workspace: Path
) -> None:
    (workspace / "todo.txt").write_text("buy milk\n")
    conv = Conversation()
    conv.add("user", "print todo.txt")
    mendable = 'Sure: {"call": "fs.read", "path": "todo.txt"'  # prose first, a brace short
    loose = Unconstrained(backend, first=(mendable,))
    call, _ = Kernel(system, loose, max_steps=2).decide(conv)
    assert call.call == "fs.read" and len(loose.raw) == 1, "repaired without asking again"
    garbage = "Sure! I will read the file for you now."
    loose = Unconstrained(backend, first=(garbage,))
    try:
        call, _ = Kernel(system, loose, max_steps=2).decide(conv)
        assert call.call == "fs.read"
    except LlmosError as exc:  # the small model, unconstrained, may fail the retry too
        assert exc.code == ErrorCode.E_INVAL and "no valid syscall" in exc.message
    assert len(loose.raw) == 2, "what cannot be mended is asked for again"
    assert "ERROR: that was not a valid syscall" in loose.prompts[1][-1]["content"]


def test_step_prefill_does_not_grow_with_the_table(
    system: System, backend: LlamaCppBackend
) -> None:
    """After the first step only the new messages are prefilled, however many syscalls the
    system prompt describes: the prefix stays byte-stable and llama.cpp reuses its cache."""
    kernel = Kernel(system, backend)
    measured = []
    for padding in (0, 12):
        added = padding_syscalls(system.registry, padding)
        system_tokens, step2 = second_step_prefill(kernel, backend)
        measured.append((system_tokens, step2))
        for name in added:
            system.registry.unregister(name)
    (small_table, small_step), (big_table, big_step) = measured
    assert big_table > small_table + 200
    assert small_step == big_step
    assert small_step < 80


def test_forced_text_is_batched_and_the_call_stays_valid(
    system: System, backend: LlamaCppBackend
) -> None:
    kernel = Kernel(system, backend)
    messages = kernel.messages(
        Conversation.from_messages([{"role": "user", "content": "show me a.txt"}])
    )
    out = backend.complete(messages, constraint=kernel.grammars.constraint(), max_tokens=64)
    call = system.registry.parse(json.loads(out.text))
    assert call.call == "fs.read"
    assert out.forced_tokens >= 4, "the format's head and keys were forced, not sampled"
    assert out.text.startswith('{"call": "fs.read"')


@pytest.mark.slow
def test_the_system_prompt_state_is_kept_on_disk_for_the_next_process(
    system: System, small_model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "kv"
    first = LlamaCppBackend(small_model, cache_dir=cache)
    kernel = Kernel(system, first)
    messages = kernel.messages(
        Conversation.from_messages([{"role": "user", "content": "show me a.txt"}])
    )
    cold = first.complete(messages, constraint=kernel.grammars.constraint(), max_tokens=64)
    assert first.decoder.cache is not None and first.decoder.cache.last == "saved"
    assert cold.prefill_tokens > 1000
    files = list(cache.glob("*.kv"))
    assert len(files) == 1
    del first, kernel

    second = LlamaCppBackend(small_model, cache_dir=cache)
    kernel = Kernel(system, second)
    warm = second.complete(messages, constraint=kernel.grammars.constraint(), max_tokens=64)
    assert second.decoder.cache is not None and second.decoder.cache.last == "loaded"
    assert warm.prefill_tokens < 40, "only the request was prefilled"
    assert warm.text == cold.text

    files[0].write_bytes(b"damaged" * 100)
    third = LlamaCppBackend(small_model, cache_dir=cache)
    again = third.complete(messages, constraint=kernel.grammars.constraint(), max_tokens=64)
    assert third.decoder.cache is not None and third.decoder.cache.last == "saved"
    assert again.text == cold.text, "a damaged file is recomputed, never trusted"


def test_weights_stay_out_of_amx_buffers_only_where_the_build_has_amx(
    backend: LlamaCppBackend,
) -> None:
    # A native build on an AMX CPU repacks Q4_K weights for AMX, whose matrix product segfaults
    # on some machines at the first evaluation (this suite's first decode, on ours).
    from llmos.kernel.backend import amx_build

    assert backend.llm.model_params.use_extra_bufts is (not amx_build())
    out = backend.complete([{"role": "user", "content": "Say yes."}], constraint=None, max_tokens=2)
    assert out.completion_tokens >= 1


def test_calc_takes_only_an_operation_not_a_bare_number(backend: LlamaCppBackend) -> None:
    from llmos.syscalls.control import CALC_GBNF, CALC_RULES

    grammar = f"root ::= {CALC_GBNF}\n{CALC_RULES}"
    decoder = backend.decoder

    def accepted(text: str) -> bool:
        sampler = decoder._sampler(grammar)
        return len(decoder._force(sampler, text)) == len(decoder._tokenize(text))

    accepted_texts = ['"12+30"', '"sum(4, 5, 6)"', '"15% of 80"', '"(3 + 4) * 2"', '"-avg(1, 2)"']
    for text in [*accepted_texts, '"round(avg(1, 2, 3), 1)"', '"sum(10, 25, 7) / 3"']:
        assert accepted(text), text
    for text in ['"12"', '"(12)"', '"-7"', '"12 lines"', '"sum(sum(sum(1)))"']:
        assert not accepted(text), text


@pytest.mark.slow
def test_a_taught_correction_changes_the_decision_on_a_paraphrase(
    system: System, backend: LlamaCppBackend, workspace: Path
) -> None:
    """Taught once how the person says "keep this", the real model stores a differently worded
    fact said the same way; the lesson also lets their words mean what it taught."""
    warming = system.examples.warm()
    if warming is not None:
        warming.join()
    proc = system.spawn("t", workspace, patterns=["fs.*", "mem.*", "reply", "ask"])
    request = "never forget: Lena's flight lands at 6pm"
    kernel = Kernel(system, backend, max_steps=1)
    kernel.begin(proc, Conversation(), request)
    assert "remember" not in proc.allows, "untaught, 'never forget' does not ask to store"
    before = kernel.first_call(proc, Conversation(), request)
    taught = [{"call": "mem.store", "text": "the boiler code is 1234"}]
    system.lessons.add("never forget: the boiler code is 1234", taught)
    system.lessons.teach_bank(system.examples)
    after = kernel.first_call(proc, Conversation(), request)
    assert "remember" in proc.allows
    assert before.call != "mem.store"
    assert after.call == "mem.store" and "6" in str(getattr(after, "text", ""))
