"""Continuous batching: several processes decode on one llama.cpp context at once.

Each process owns a sequence of a unified KV cache, so its conversation stays resident between
its completions (a context switch costs nothing) and sequences share the cells of the system
prompt they have in common. Every `step` evaluates one batch holding the next tokens of every
active completion (a sampled token plus the text the call format forces, or a chunk of a
prompt), so the weights are read once for all of them; decoding itself is the same greedy,
grammar-checked step as `Decoder.decode` (`Decoder.step`), run per sequence."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, LlamaCppBackend, Message, common_prefix
from llmos.kernel.decoder import Decoding
from llmos.limits import SCHED_STEP_TOKENS

if TYPE_CHECKING:
    from llmos.kernel.grammar import Constraint


@dataclass(kw_only=True)
class Stream(Decoding):
    """One completion in flight on sequence `seq`: what is left to evaluate, and where its
    decoding stands (`Decoding`, advanced by the same `Decoder.step` as a single decode)."""

    key: Hashable
    seq: int
    prompt_tokens: int
    pending: list[int]
    prefilled: int
    reused: int
    """Prompt tokens the sequence already held (no prefill needed)."""
    started: float = field(default_factory=time.perf_counter)
    prefill_done: float = 0.0
    result: Completion | None = None

    @property
    def done(self) -> bool:
        """True once the completion is finished (its `result` is set)."""
        return self.result is not None


@dataclass
class _Seq:
    tokens: list[int] = field(default_factory=list)
    owner: Hashable | None = None
    used: float = 0.0
    busy: bool = False
    samplers: dict[str, Any] = field(default_factory=dict)


class BatchEngine:
    """A second llama.cpp context on the backend's model, with `slots` sequences in one
    unified KV cache of `slots` x the backend's context. Not thread-safe: one thread (the
    scheduler's worker) drives it."""

    def __init__(
        self, backend: LlamaCppBackend, slots: int = 4, n_batch: int = SCHED_STEP_TOKENS
    ) -> None:
        import llama_cpp

        if slots < 1:
            raise LlmosError(ErrorCode.E_INVAL, f"slots must be at least 1, not {slots}")
        self.backend = backend
        self.lib = llama_cpp
        self.slots = slots
        self.n_batch = n_batch
        own = backend.llm.context_params
        params = type(own).from_buffer_copy(own)  # the same KV layout, so cells can move over
        params.n_ctx = slots * backend.context
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = True
        params.n_threads = backend.n_threads
        params.n_threads_batch = backend.n_threads
        self.ctx = llama_cpp.llama_init_from_model(backend.llm._model.model, params)
        if not self.ctx:
            raise LlmosError(ErrorCode.E_BACKEND, "llama.cpp could not make a batching context")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.seqs = [_Seq() for _ in range(slots)]
        self.n_vocab = backend.decoder.n_vocab
        self.imported = 0
        """Times the system prompt came over from the backend's own context."""

    def close(self) -> None:
        """Free the context, its batch and its grammar samplers."""
        if self.ctx:
            for seq in self.seqs:
                for sampler in seq.samplers.values():
                    self.lib.llama_sampler_free(sampler)
                seq.samplers.clear()
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None

    def free_slots(self) -> int:
        """Sequences not decoding now."""
        return sum(not s.busy for s in self.seqs)

    def release(self, key: Hashable) -> None:
        """`key`'s process ended: its sequence is free for the next one (cells kept until
        then; a newcomer may share their prefix)."""
        for seq in self.seqs:
            if seq.owner == key:
                seq.owner = None
                seq.used = 0.0

    def start(
        self,
        key: Hashable,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Stream:
        """Begin a completion for `key` on its own sequence (the one it used last, else a free
        one, else the least recently used idle one). E_TOOBIG for a prompt over the context;
        E_BACKEND when every sequence is decoding."""
        backend = self.backend
        text = backend.prompt(messages)
        tokens = list(backend.llm.tokenize(text.encode(), add_bos=True, special=True))
        if len(tokens) >= backend.context:
            raise LlmosError(
                ErrorCode.E_TOOBIG,
                f"the prompt is {len(tokens)} tokens; the context holds {backend.context}",
            )
        index = self._seq_for(key)
        seq = self.seqs[index]
        seq.owner, seq.busy, seq.used = key, True, time.perf_counter()
        try:
            sampler = self._sampler(seq, constraint.grammar) if constraint else None
            head = constraint.format.forced("")[0] if constraint else ""
            head_tokens = backend.decoder._tokenize(head)
            for token in head_tokens:
                if sampler is not None:
                    self.lib.llama_sampler_accept(sampler, token)
            full = tokens + head_tokens
            keep = self._reuse(index, full, backend._stable_tokens(messages, text, tokens))
        except BaseException:
            seq.busy = False
            raise
        keep = min(keep, len(full) - 1)
        self._trim(index, keep)
        room = max(0, min(max_tokens, backend.context - len(full) - 1))
        return Stream(
            key=key,
            seq=index,
            prompt_tokens=len(tokens),
            constraint=constraint,
            room=room,
            sampler=sampler,
            pending=full[keep:],
            prefilled=len(full) - keep,
            reused=keep,
            out=head.encode(),
            forced=len(head_tokens),
        )

    def drop(self, stream: Stream) -> None:
        """Abandon `stream` (its process was cancelled); its sequence keeps what it evaluated."""
        self.seqs[stream.seq].busy = False

    def step(self, streams: list[Stream]) -> list[Stream]:
        """Evaluate one batch for every unfinished stream and sample where a stream's input is
        used up; returns the streams that finished. A failed evaluation fails them all."""
        live = [s for s in streams if not s.done]
        plan: list[tuple[Stream, int, int]] = []
        room = self.n_batch
        for stream in sorted(live, key=lambda s: len(s.pending)):
            if room <= 0:
                break
            take = min(len(stream.pending), room)
            plan.append((stream, len(self.seqs[stream.seq].tokens), take))
            room -= take
        batch = self.batch
        n = 0
        last: dict[int, int] = {}
        for stream, start, take in plan:
            for j in range(take):
                batch.token[n] = stream.pending[j]
                batch.pos[n] = start + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = stream.seq
                ends = j == take - 1 and take == len(stream.pending)
                batch.logits[n] = ends
                if ends:
                    last[id(stream)] = n
                n += 1
        batch.n_tokens = n
        if n:
            code = self.lib.llama_decode(self.ctx, batch)
            if code != 0:
                for stream, _, _ in plan:
                    self._trim(stream.seq, len(self.seqs[stream.seq].tokens))
                raise LlmosError(ErrorCode.E_BACKEND, f"llama_decode failed ({code})")
        finished = []
        now = time.perf_counter()
        for stream, _, take in plan:
            seq = self.seqs[stream.seq]
            seq.tokens.extend(stream.pending[:take])
            del stream.pending[:take]
            if stream.pending:
                continue
            if not stream.prefill_done:
                stream.prefill_done = now
            self._advance(stream, last[id(stream)])
            if stream.done:
                seq.busy = False
                seq.used = time.perf_counter()
                finished.append(stream)
        return finished

    def _advance(self, stream: Stream, index: int) -> None:
        """Take `stream`'s next tokens from the logits at batch row `index` (`Decoder.step`),
        queue them, or finish the stream."""
        import numpy as np

        pointer = self.lib.llama_get_logits_ith(self.ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        batch = self.backend.decoder.step(stream, logits)
        if batch:
            stream.pending = batch
        else:
            self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        end = time.perf_counter()
        prefill_done = stream.prefill_done or end
        stream.result = Completion(
            text=stream.out.decode(errors="replace"),
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=stream.sampled + stream.forced,
            seconds=end - stream.started,
            prefill_tokens=stream.prefilled,
            forced_tokens=stream.forced,
            prefill_seconds=prefill_done - stream.started,
            decode_seconds=end - prefill_done,
        )

    def _seq_for(self, key: Hashable) -> int:
        idle = [i for i, s in enumerate(self.seqs) if not s.busy]
        if not idle:
            raise LlmosError(ErrorCode.E_BACKEND, "every sequence is decoding")
        for i in idle:
            if self.seqs[i].owner == key:
                return i
        return min(idle, key=lambda i: (self.seqs[i].owner is not None, self.seqs[i].used))

    def _sampler(self, seq: _Seq, grammar: str) -> Any:
        sampler = seq.samplers.get(grammar)
        if sampler is None:
            for old in seq.samplers.values():
                self.lib.llama_sampler_free(old)
            seq.samplers.clear()
            sampler = self.lib.llama_sampler_init_grammar(
                self.backend.decoder.vocab, grammar.encode(), b"root"
            )
            if not sampler:
                raise LlmosError(ErrorCode.E_BACKEND, "llama.cpp could not parse the grammar")
            seq.samplers[grammar] = sampler
        else:
            self.lib.llama_sampler_reset(sampler)
        return sampler

    def _reuse(self, index: int, tokens: list[int], stable: int) -> int:
        """Make sequence `index` hold the longest prefix of `tokens` to be had: its own, one
        shared from another sequence, or the system prompt from the backend's context (loaded
        from the disk cache there when needed). Returns the tokens it now holds."""
        own = common_prefix(self.seqs[index].tokens, tokens)
        best, source = own, index
        for i, other in enumerate(self.seqs):
            if i != index:
                common = common_prefix(other.tokens, tokens)
                if common > best:
                    best, source = common, i
        if source != index:
            self.lib.llama_memory_seq_rm(self.mem, index, -1, -1)
            self.lib.llama_memory_seq_cp(self.mem, source, index, 0, best)
            self.seqs[index].tokens = tokens[:best]
            return best
        if best < stable:
            imported = self._import(index, tokens, stable)
            if imported > best:
                return imported
        return own

    def _import(self, index: int, tokens: list[int], stable: int) -> int:
        """Copy the system prompt's KV cells from the backend's context into sequence `index`."""
        llm = self.backend.llm
        decoder = self.backend.decoder
        if decoder._cached(tokens) < stable:
            decoder.prefill(tokens[: stable + 1], stable)
        held = [int(t) for t in llm.input_ids[: llm.n_tokens]]
        common = common_prefix(held, tokens)
        if common == 0:
            return 0
        main = llm._ctx.ctx
        size = self.lib.llama_state_seq_get_size(main, 0)
        data = (ctypes.c_uint8 * size)()
        if self.lib.llama_state_seq_get_data(main, data, size, 0) <= 0:
            return 0
        self.lib.llama_memory_seq_rm(self.mem, index, -1, -1)
        if self.lib.llama_state_seq_set_data(self.ctx, data, size, index) <= 0:
            self.seqs[index].tokens = []
            return 0
        self.seqs[index].tokens = held
        self._trim(index, common)
        self.imported += 1
        return common

    def _trim(self, index: int, keep: int) -> None:
        """Drop every cell of sequence `index` from position `keep` on."""
        seq = self.seqs[index]
        if len(seq.tokens) > keep:
            self.lib.llama_memory_seq_rm(self.mem, index, keep, -1)
            del seq.tokens[keep:]
