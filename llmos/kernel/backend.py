"""Model backends behind one protocol: the contract (`Backend`, `Completion`, the optional
abilities a backend may have) and llama.cpp in-process (`LlamaCppBackend`, whose decoding is
`llmos.kernel.decoder`); an OpenAI-compatible server is `llmos.kernel.server`, and a scripted
replay for fast tests of the loop is `llmos.testing.ScriptedBackend`."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
class Parallel(Protocol):
    """A backend that decodes several completions at once on its own (a model server with
    slots): the scheduler keeps `slots` requests in flight."""

    slots: int


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


def llama_build() -> dict[str, str]:
    """The llama.cpp build llama-cpp-python loaded: its version, the GPU backend it offloads to
    ("CUDA", "Metal", "Vulkan", ... or "" for a CPU build) and its CPU features."""
    llama_cpp = heavy("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    gpu = ""
    if llama_cpp.llama_supports_gpu_offload():
        known = ("CUDA", "Metal", "Vulkan", "SYCL", "HIP", "ROCm", "OpenCL", "CANN", "MUSA")
        gpu = next((name for name in known if name.lower() in info.lower()), "GPU")
    cpu = info.split("|")
    features = [
        f.split("=")[0].replace("CPU :", "").strip() for f in cpu if f.strip().endswith("1")
    ]
    return {"version": llama_cpp.__version__, "gpu": gpu, "cpu": " ".join(features)}


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
        from llmos.kernel.decoder import Decoder, PrefixCache

        self.decoder = Decoder(self.llm, cache=PrefixCache(cache_dir, model_path, n_ctx))
        self.context = n_ctx
        self.decode_tps = 0.0
        """Sampled tokens a second in the latest decode with any (the pager's cost estimate)."""
        self._formatter: Any = None
        self._heads: dict[str, list[int]] = {}

    def placement(self) -> str:
        """Where the model's layers run: "GPU (CUDA), all 29 layers", or "CPU, 2 threads" and
        why not the GPU."""
        build = llama_build()
        layers = int(
            self.llm.metadata.get(
                f"{self.llm.metadata.get('general.architecture', '')}.block_count", 0
            )
            or 0
        )
        if build["gpu"]:
            count = f"all {layers} layers" if layers else "all layers"
            return f"GPU ({build['gpu']}), {count}; {self.n_threads} CPU threads"
        return f"CPU, {self.n_threads} threads (this llama.cpp build has no GPU support)"

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


def open_backend(settings: Settings) -> Backend:
    """The backend the settings name: a server if `server` is set, else the local GGUF."""
    from llmos.kernel.models import resolve_model

    if settings.server:
        from llmos.kernel.server import OpenAIBackend

        return OpenAIBackend(
            settings.server,
            model=settings.model or "default",
            constrain=settings.server_constraint,
            context=settings.n_ctx,
            slots=settings.server_slots,
        )
    home = settings.ensure_home()
    path = resolve_model(settings.model, home)
    return LlamaCppBackend(path, n_ctx=settings.n_ctx, cache_dir=home / "cache" / "kv")
