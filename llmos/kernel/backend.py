"""Model backends behind one protocol: llama.cpp in-process, an OpenAI-compatible server, or a
scripted replay for fast tests of the loop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from llmos.atomic import atomic_path
from llmos.errors import ErrorCode, LlmosError
from llmos.imports import heavy

if TYPE_CHECKING:
    from llmos.config import Settings
    from llmos.kernel.grammar import Constraint

Message = dict[str, str]


@dataclass(frozen=True)
class Completion:
    """One decoded output and what it cost.

    `prefill_tokens` are the prompt tokens evaluated this time (the rest came from the KV
    cache); `forced_tokens` are output tokens the format forced and were evaluated in a batch
    rather than sampled."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    prefill_tokens: int = 0
    forced_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    wanted: str = ""
    """A call the model named that the constraint does not let out now (a decoder that lets it
    name any registered call first, see `Constraint.names`); `text` is then that name only."""


@runtime_checkable
class Backend(Protocol):
    """Turns a chat (system + turns) into one constrained completion. A syscall handler asks
    for the model its process runs on as `process.services.get(Backend)`."""

    name: str

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        """Decode one reply; with a `constraint` the output is one well-formed syscall."""
        ...


@runtime_checkable
class Tokenizing(Protocol):
    """A backend that counts tokens with its model's own tokenizer and chat template (what the
    pager budgets with; others are estimated at about four characters a token)."""

    def count(self, messages: list[Message]) -> int:
        """The prompt tokens `messages` make, as `complete` would prefill them."""
        ...

    def tokens(self, text: str) -> int:
        """The tokens of plain `text`."""
        ...


@runtime_checkable
class Warming(Protocol):
    """A backend that can bring a prompt's prefix into its cache ahead of the first request."""

    def warm(self, messages: list[Message]) -> Completion:
        """Prefill `messages` and decode nothing."""
        ...


@runtime_checkable
class Cancelling(Protocol):
    """A backend whose queued requests of a cancelled turn can be failed at once."""

    def cancel(self) -> None:
        """Fail what this caller has queued; the backend stays usable."""
        ...


@runtime_checkable
class Windowed(Protocol):
    """A backend that says its context window in tokens."""

    context: int


@runtime_checkable
class Timed(Protocol):
    """A backend that knows its last decoding speed (tokens a second)."""

    decode_tps: float


def count_tokens(backend: Backend, messages: list[Message]) -> int:
    """Prompt tokens of `messages` as the backend's model would see them (its own tokenizer and
    chat template when it has them; about four characters a token otherwise)."""
    if isinstance(backend, Tokenizing):
        return int(backend.count(messages))
    return sum(len(m["content"]) // 4 + 4 for m in messages)


def text_tokens(backend: Backend, text: str) -> int:
    """Tokens of plain `text` in the backend's tokenizer (estimated without one)."""
    if isinstance(backend, Tokenizing):
        return int(backend.tokens(text))
    return len(text) // 4 + 1


def context_of(backend: Backend) -> int:
    """The backend's context window in tokens; 0 when it does not say."""
    return int(backend.context) if isinstance(backend, Windowed) else 0


def decode_speed(backend: Backend) -> float:
    """Tokens a second of the backend's last decoding; 0.0 when unknown."""
    return float(backend.decode_tps) if isinstance(backend, Timed) else 0.0


def physical_cores() -> int:
    """Physical cores (llama.cpp is fastest with one thread per core, not per hyperthread)."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as fh:
            phys = core = ""
            for line in fh:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    count = os.cpu_count() or 1
    return max(1, count // 2) if count > 2 else count


def common_prefix(a: Iterable[int], b: Iterable[int]) -> int:
    """How many leading tokens two sequences share (what a KV cache holding `a` can keep of
    `b`)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


_LOAD_LOCK = threading.Lock()


def amx_build() -> bool:
    """Whether the llama.cpp in use runs matrix products on Intel AMX (a native build on a
    Sapphire Rapids or newer CPU)."""
    llama_cpp = heavy("llama_cpp")

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextlib.contextmanager
def _weights_not_repacked_for_amx() -> Iterator[None]:
    """While a model loads, keep its weights out of llama.cpp's AMX buffers when the build has
    them: their Q4_K matrix product segfaults on the first evaluation on some AMX machines
    (ggml-org/llama.cpp#20824; seen on this project's machines). Weights then stay in plain
    CPU buffers, computed with AVX-512."""
    import llama_cpp.llama_cpp as low  # what Llama() calls for its model parameters

    if not amx_build():
        yield
        return
    default = low.llama_model_default_params

    def params() -> Any:
        value = default()
        if hasattr(value, "use_extra_bufts"):
            value.use_extra_bufts = False
        return value

    with _LOAD_LOCK:
        low.llama_model_default_params = params
        try:
            yield
        finally:
            low.llama_model_default_params = default


class LlamaCppBackend:
    """Any GGUF in-process through llama-cpp-python; every layer on the GPU when llama.cpp was
    built with CUDA or Metal (n_gpu_layers=-1 is ignored by a CPU build).

    Decoding is our own greedy loop over llama.cpp's low-level API rather than
    `create_chat_completion`, for speed under the grammar: the top token is checked against the
    grammar alone and the whole vocabulary is masked only when it is rejected (as llama.cpp's
    own common sampler does), and text the call format forces is evaluated in one batch."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        Llama = heavy("llama_cpp").Llama

        self.model_path = model_path
        self.name = model_path.stem
        self.n_threads = n_threads or physical_cores()
        from llmos.kernel.models import check_gguf

        check_gguf(model_path)
        try:
            with _weights_not_repacked_for_amx():
                self.llm = Llama(
                    model_path=str(model_path),
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=-1,
                    seed=seed,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise LlmosError(
                ErrorCode.E_BACKEND, f"llama.cpp cannot load {model_path}: {exc} (damaged file?)"
            ) from exc
        self.decoder = Decoder(self.llm, cache=PrefixCache(cache_dir, model_path, n_ctx))
        self.context = n_ctx
        self.decode_tps = 0.0
        """Sampled tokens a second in the latest decode with any (the pager's cost estimate)."""
        self._formatter: Any = None
        self._heads: dict[str, list[int]] = {}

    def tokens(self, text: str) -> int:
        """How many tokens the model's own tokenizer makes of `text`."""
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def reset(self) -> None:
        """Forget what the KV cache holds (after an interrupted decode): the next prompt is
        evaluated afresh, its system prompt loaded from the disk cache."""
        self.llm.n_tokens = 0

    def count(self, messages: list[Message]) -> int:
        """The prompt tokens `messages` make, exactly as `complete` would prefill them."""
        return len(self.llm.tokenize(self.prompt(messages).encode(), add_bos=True, special=True))

    def prompt(self, messages: list[Message]) -> str:
        """The chat as the model's own template writes it, ready for the assistant's turn."""
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llm.metadata.get("tokenizer.chat_template") or CHATML
            bos, eos = self.llm.token_bos(), self.llm.token_eos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            )
        return str(self._formatter(messages=messages).prompt)

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        """Greedy decoding under the constraint; the KV cache of the shared prefix is reused."""
        try:
            text = self.prompt(messages)
            tokens = self.llm.tokenize(text.encode(), add_bos=True, special=True)
            stable = self._stable_tokens(messages, text, tokens)
            out = self.decoder.decode(
                tokens, constraint=constraint, max_tokens=max_tokens, stable=stable
            )
        except (RuntimeError, ValueError) as exc:
            raise LlmosError(ErrorCode.E_BACKEND, f"llama.cpp failed: {exc}") from exc
        sampled = out.completion_tokens - out.forced_tokens
        if sampled > 2 and out.decode_seconds > 0:
            self.decode_tps = sampled / out.decode_seconds
        return out

    def _stable_tokens(self, messages: list[Message], text: str, tokens: list[int]) -> int:
        """How many leading tokens are the system message (the part every step shares, worth
        keeping on disk); 0 without one."""
        if not messages or messages[0].get("role") != "system":
            return 0
        content = messages[0]["content"]
        ids = self._heads.get(content)
        if ids is None:
            end = text.find(content)
            if end < 0:
                return 0
            head = text[: end + len(content)]
            ids = list(self.llm.tokenize(head.encode(), add_bos=True, special=True))
            self._heads = {content: ids}
        return common_prefix(ids, tokens)

    def warm(self, messages: list[Message]) -> Completion:
        """Bring the system prompt into the KV cache now (from the disk cache when it is
        there), so the person's first request does not wait for it."""
        return self.complete(messages, constraint=None, max_tokens=0)


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


def open_backend(settings: Settings) -> Backend:
    """The backend the settings name: a server if `server` is set, else the local GGUF."""
    from llmos.kernel.models import resolve_model

    if settings.server:
        return OpenAIBackend(
            settings.server,
            model=settings.model or "default",
            constrain=settings.server_constraint,
            context=settings.n_ctx,
        )
    home = settings.ensure_home()
    path = resolve_model(settings.model, home)
    return LlamaCppBackend(path, n_ctx=settings.n_ctx, cache_dir=home / "cache" / "kv")


class OpenAIBackend:
    """Any OpenAI-compatible server held to one syscall per completion: by the GBNF in the
    `grammar` field (`constrain="grammar"`, what llama.cpp's llama-server and llama-cpp-python's
    server take; the latter refuses a json_schema response format outright), or by an OpenAI
    json_schema response format (`constrain="json_schema"`, for vLLM and others)."""

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        timeout: float = 120.0,
        *,
        constrain: Literal["grammar", "json_schema"] = "grammar",
        context: int = 4096,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.timeout = timeout
        self.constrain = constrain
        self.context = context

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        """POST /chat/completions, held to the constraint the way the server understands."""
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        if constraint is not None and self.constrain == "grammar":
            body["grammar"] = constraint.grammar
        elif constraint is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "syscall", "schema": constraint.schema, "strict": True},
            }
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=data, headers=headers, method="POST"
        )
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:  # refused, dropped, late
            raise LlmosError(ErrorCode.E_BACKEND, f"{self.base_url}: {exc}") from exc
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise LlmosError(ErrorCode.E_BACKEND, f"unexpected reply from server: {exc}") from exc
        usage = reply.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.perf_counter() - start,
        )
