"""Greedy, grammar-checked decoding on a llama-cpp-python `Llama`: one `Decoder.step` shared by
a single decode and each stream of a batch (`llmos.kernel.batch`), the probe that lets the
model name any call first, and the on-disk cache of the stable prompt's KV state."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.atomic import atomic_path
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, common_prefix

if TYPE_CHECKING:
    from llmos.kernel.grammar import Constraint


class PrefixCache:
    """The KV state of a long stable prompt prefix (the system prompt) saved on disk, so a new
    process loads it in a fraction of a second instead of prefilling it (about 35 s for the
    default model on 2 cores). Files are keyed by the model file, context size, llama.cpp
    version and the exact tokens; a file that fails to load is deleted and recomputed."""

    KEEP = 4

    def __init__(self, folder: Path | None, model_path: Path, n_ctx: int) -> None:
        self.folder = folder
        try:
            info = model_path.stat()
            self._model_key = f"{model_path.resolve()}:{info.st_size}:{info.st_mtime_ns}:{n_ctx}"
        except OSError:
            self._model_key = f"{model_path}:{n_ctx}"
        self.last = ""

    def path(self, tokens: list[int]) -> Path | None:
        """Where the state after exactly `tokens` is (or would be) kept."""
        if self.folder is None:
            return None
        import hashlib

        import llama_cpp

        digest = hashlib.sha256(f"{llama_cpp.__version__}|{self._model_key}|".encode())
        digest.update(",".join(map(str, tokens)).encode())
        return self.folder / f"{digest.hexdigest()[:32]}.kv"

    def load(self, llm: Any, tokens: list[int]) -> bool:
        """Restore the state after `tokens` into `llm` if a good file holds it."""
        import ctypes

        import llama_cpp

        path = self.path(tokens)
        if path is None or not path.is_file():
            return False
        out = (llama_cpp.llama_token * len(tokens))()
        count = ctypes.c_size_t(0)
        ok = llama_cpp.llama_state_load_file(
            llm._ctx.ctx, str(path).encode(), out, len(tokens), ctypes.byref(count)
        )
        if not ok or count.value != len(tokens) or list(out) != tokens:
            path.unlink(missing_ok=True)
            llm._ctx.kv_cache_clear()
            llm.n_tokens = 0
            self.last = "damaged"
            return False
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        os.utime(path)
        self.last = "loaded"
        return True

    def save(self, llm: Any, tokens: list[int]) -> None:
        """Keep the state of `llm` (which holds exactly `tokens`) for later processes."""
        import llama_cpp

        path = self.path(tokens)
        if path is None or path.exists():
            return
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        with atomic_path(path) as tmp:
            saved = llama_cpp.llama_state_save_file(
                llm._ctx.ctx, str(tmp).encode(), array, len(tokens)
            )
            if not saved:
                tmp.unlink(missing_ok=True)
        if saved:
            self.last = "saved"
            files = sorted(path.parent.glob("*.kv"), key=lambda p: p.stat().st_mtime)
            for old in files[: -self.KEEP]:
                old.unlink(missing_ok=True)
        else:
            tmp.unlink(missing_ok=True)


TOP_TRIED = 5
"""How many of the model's best tokens `Decoder.choose` tries before masking the vocabulary."""

CACHED_SAMPLERS = 4
"""Compiled grammars a Decoder keeps."""

PROBE_TOKENS = 24
"""Most tokens the model may take to name the call it wants (the longest names are a few)."""


@dataclass(kw_only=True)
class Decoding:
    """Where one greedy decode stands: its grammar sampler, what came out, and how many tokens
    were sampled or forced out of the `room` it has. `Decoder.step` advances it, for a single
    decode and for each stream of a batch alike."""

    sampler: Any
    constraint: Constraint | None
    room: int
    out: bytes = b""
    sampled: int = 0
    forced: int = 0


class Decoder:
    """Greedy decoding of one output on a llama-cpp-python `Llama`, reusing its KV cache."""

    def __init__(self, llm: Any, cache: PrefixCache | None = None) -> None:
        import ctypes

        import llama_cpp
        from llama_cpp._internals import LlamaTokenDataArray

        self.llm = llm
        self.cache = cache
        self.lib = llama_cpp
        self.vocab = llm._model.vocab
        self.n_vocab = int(llm.n_vocab())
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._one, llama_cpp.llama_token_data_p),
            size=1,
            selected=-1,
            sorted=False,
        )
        self._all = LlamaTokenDataArray(n_vocab=self.n_vocab)
        self._byref = ctypes.byref
        self._samplers: dict[str, Any] = {}
        self.fast_forward = True

    def _sampler(self, grammar: str) -> Any:
        """A grammar sampler for `grammar`, compiled once and reset for each use (the last few
        are kept: a step may use a names-only grammar and its own)."""
        sampler = self._samplers.pop(grammar, None)
        if sampler is None:
            while len(self._samplers) >= CACHED_SAMPLERS:
                self.lib.llama_sampler_free(self._samplers.pop(next(iter(self._samplers))))
            sampler = self.lib.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not sampler:
                raise LlmosError(ErrorCode.E_BACKEND, "llama.cpp could not parse the grammar")
        else:
            self.lib.llama_sampler_reset(sampler)
        self._samplers[grammar] = sampler
        return sampler

    def _allowed(self, sampler: Any, token: int) -> bool:
        """Whether the grammar accepts `token` next (checked on a one-token array: cheap)."""
        self._one[0].id = token  # type: ignore[assignment]
        self._one[0].logit = 0.0
        self._one[0].p = 0.0
        self._one_array.size = 1
        self._one_array.selected = -1
        self._one_array.sorted = False
        self.lib.llama_sampler_apply(sampler, self._byref(self._one_array))
        return bool(self._one[0].logit != float("-inf"))

    def choose(self, sampler: Any, logits: Any) -> int:
        """The token to take next: the model's best if the grammar allows it; else, of its few
        best, the first the grammar allows as it is or without its leading space (the model
        often wants " copy" where the format has no space, and the masked best would then be
        a different word, "append"); else the best token the grammar allows at all."""
        import numpy as np

        best = int(logits.argmax())
        if sampler is None or self._allowed(sampler, best):
            return best
        few = np.argpartition(-logits, TOP_TRIED)[:TOP_TRIED]
        for token in (int(t) for t in few[np.argsort(-logits[few])]):
            if self._allowed(sampler, token):
                return token
            text = self.llm.detokenize([token])
            if text[:1] == b" " and text.strip():
                bare = self._tokenize(text[1:].decode(errors="replace"))
                if bare and self._allowed(sampler, bare[0]):
                    return bare[0]
        return self._masked_best(sampler, logits)

    def _masked_best(self, sampler: Any, logits: Any) -> int:
        """The best token the grammar allows, masking the whole vocabulary."""
        import numpy as np

        self._all.copy_logits(logits)
        self.lib.llama_sampler_apply(sampler, self._byref(self._all.candidates))
        data = self._all.candidates_data
        best = int(np.argmax(data.logit[: self._all.candidates.size]))
        if data.logit[best] == float("-inf"):
            raise LlmosError(ErrorCode.E_BACKEND, "the grammar allows no token here")
        return int(data.id[best])

    def _logits(self) -> Any:
        import numpy as np

        pointer = self.lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def _cached(self, tokens: list[int]) -> int:
        """How many leading `tokens` the KV cache already holds."""
        return common_prefix(self.llm.input_ids[: self.llm.n_tokens], tokens)

    def prefill(self, tokens: list[int], stable: int = 0) -> int:
        """Evaluate `tokens` after the longest prefix already in the KV cache; returns how many
        were evaluated (at least one, so there are fresh logits). The first `stable` tokens are
        loaded from, or saved to, the disk cache when the KV cache lacks them."""
        llm = self.llm
        if len(tokens) >= llm.n_ctx():
            raise LlmosError(
                ErrorCode.E_TOOBIG,
                f"the prompt is {len(tokens)} tokens; the context holds {llm.n_ctx()}",
            )
        keep = self._cached(tokens)
        stable = stable if self.cache is not None and 0 < stable < len(tokens) else 0
        if stable and keep < stable and self.cache is not None:
            if self.cache.load(llm, tokens[:stable]):
                keep = stable
            else:
                llm.n_tokens = keep
                llm.eval(tokens[keep:stable])
                self.cache.save(llm, tokens[:stable])
                llm.eval(tokens[stable:])
                return len(tokens) - keep
        keep = min(keep, len(tokens) - 1)
        llm.n_tokens = keep
        llm.eval(tokens[keep:])
        return len(tokens) - keep

    def decode(
        self,
        prompt: list[int],
        *,
        constraint: Constraint | None,
        max_tokens: int,
        stable: int = 0,
    ) -> Completion:
        """Decode greedily after `prompt`: under the constraint's grammar, with forced text
        evaluated in batches, until the call is complete, an end token, or `max_tokens`.

        When the constraint leaves some registered calls out, the model first names the call
        it wants from all of them (`_probe`). One allowed is kept as the start of the call; one
        left out is reported as `wanted`, and the call starts as the allowed name the model's
        own probabilities rank best instead, so "rename it" (fs.move, nothing to move) goes to
        `ask` rather than sliding into the one fs.* call left."""
        if constraint is None or constraint.names is None or not self.fast_forward:
            return self._decode(prompt, constraint, max_tokens, stable)
        start = time.perf_counter()
        name, steps, prefilled = self._probe(prompt, constraint.names, stable)
        probed = time.perf_counter() - start
        wanted = ""
        if not name:
            return self._decode(prompt, constraint, max_tokens, stable)
        if name not in constraint.format.shapes:
            wanted, name = name, self._best_allowed(steps, list(constraint.format.shapes))
        else:
            name += '"'
        out = self._decode(prompt, constraint, max_tokens, stable, name)
        return replace(
            out,
            seconds=out.seconds + probed,
            prefill_tokens=out.prefill_tokens + prefilled,
            prefill_seconds=out.prefill_seconds + probed,  # the probe is the prompt's prefill
            wanted=wanted,
        )

    def _probe(
        self, prompt: list[int], names: Constraint, stable: int
    ) -> tuple[str, list[tuple[tuple[int, ...], Any]], int]:
        """The call name the model picks from `names` (greedy); at each token it chose, the
        tokens of the name so far and its log-probabilities for the next one; and how many
        prompt tokens were prefilled for it."""
        import numpy as np

        from llmos.kernel.grammar import HEAD, wanted_name

        llm = self.llm
        sampler = self._sampler(names.grammar)
        head_tokens = self._force(sampler, HEAD)
        prefilled = self.prefill(list(prompt) + head_tokens, stable)
        text, path = HEAD, list[int]()
        steps: list[tuple[tuple[int, ...], Any]] = []
        for _ in range(PROBE_TOKENS):
            logits = self._logits()
            top = float(logits.max())
            steps.append((tuple(path), logits - top - np.log(np.exp(logits - top).sum())))
            token = self.choose(sampler, logits)
            self.lib.llama_sampler_accept(sampler, token)
            text += llm.detokenize([token]).decode(errors="replace")
            path.append(token)
            forced, done = names.format.forced(text)
            if done:
                return wanted_name(text + forced)[:200], steps, prefilled
            taken = self._force(sampler, forced)
            text += llm.detokenize(taken).decode(errors="replace") if taken else ""
            path += taken
            llm.eval([token, *taken])
        return "", steps, prefilled

    def _best_allowed(self, steps: list[tuple[tuple[int, ...], Any]], allowed: list[str]) -> str:
        """How the call should start (text after `{"call": "`): the allowed name the model's
        log-probabilities along the probe rank best, as far as they reach it (all of a sibling
        of the wanted name, "fs.write"; the first token of another, "ask" or "mem")."""
        best, best_score = "", -float("inf")
        for name in allowed:
            tokens = self._tokenize(name)
            score, known = 0.0, 0
            for prefix, logprobs in steps:
                depth = len(prefix)
                if depth < len(tokens) and tuple(tokens[:depth]) == prefix:
                    score += float(logprobs[tokens[depth]])
                    known = depth + 1
            if known and score > best_score:
                complete = known == len(tokens)
                start = name + '"' if complete else self.llm.detokenize(tokens[:known]).decode()
                best, best_score = start, score
        return best

    def _decode(
        self,
        prompt: list[int],
        constraint: Constraint | None,
        max_tokens: int,
        stable: int,
        name: str = "",
    ) -> Completion:
        """One greedy decode (see `decode`); `name` is how the call starts (after `{"call": "`)."""
        llm = self.llm
        start = time.perf_counter()
        sampler = self._sampler(constraint.grammar) if constraint else None
        head = constraint.format.forced("")[0] if constraint and self.fast_forward else ""
        if constraint is not None and name:
            from llmos.kernel.grammar import HEAD

            head = HEAD + name
            more, done = constraint.format.forced(head)
            head += more
            if done:
                return Completion(text=head, prompt_tokens=len(prompt))
        head_tokens = self._force(sampler, head) if sampler is not None else self._tokenize(head)
        head = llm.detokenize(head_tokens).decode(errors="replace")
        prefilled = self.prefill(list(prompt) + head_tokens, stable)
        out, forced_count = head.encode(), len(head_tokens)
        prefill_done = time.perf_counter()
        room = max(0, min(max_tokens, llm.n_ctx() - llm.n_tokens - 1))
        state = Decoding(
            sampler=sampler, constraint=constraint, room=room, out=out, forced=forced_count
        )
        while batch := self.step(state, self._logits()):
            llm.eval(batch)
        out, sampled, forced_count = state.out, state.sampled, state.forced
        end = time.perf_counter()
        return Completion(
            text=out.decode(errors="replace"),
            prompt_tokens=len(prompt),
            completion_tokens=sampled + forced_count,
            seconds=end - start,
            prefill_tokens=prefilled,
            forced_tokens=forced_count,
            prefill_seconds=prefill_done - start,
            decode_seconds=end - prefill_done,
        )

    def step(self, state: Decoding, logits: Any) -> list[int]:
        """One step of greedy, grammar-checked decoding, the same for a single decode and for a
        batched one: pick the next token from `logits`, then take the text the call format
        forces after it. Returns the tokens to evaluate next; none once the output is done
        (an end token, the call complete, or its room used up)."""
        if state.sampled + state.forced >= state.room:
            return []
        sampler, constraint = state.sampler, state.constraint
        token = self.choose(sampler, logits)
        if self.lib.llama_vocab_is_eog(self.vocab, token):
            return []
        if sampler is not None:
            self.lib.llama_sampler_accept(sampler, token)
        state.out += self.llm.detokenize([token])
        state.sampled += 1
        batch = [token]
        if constraint is not None and self.fast_forward:
            forced, done = constraint.format.forced(state.out.decode(errors="replace"))
            if done:
                state.out += forced.encode()
                return []
            taken = self._force(sampler, forced)
            state.out += self.llm.detokenize(taken) if taken else b""
            state.forced += len(taken)
            batch += taken
        return batch

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def _force(self, sampler: Any, text: str) -> list[int]:
        """Accept the tokens of forced `text` into the grammar, stopping at any it rejects."""
        taken: list[int] = []
        for token in self._tokenize(text):
            if sampler is not None:
                if not self._allowed(sampler, token):
                    break
                self.lib.llama_sampler_accept(sampler, token)
            taken.append(token)
        return taken
