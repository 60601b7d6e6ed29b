"""Model backends behind one protocol: llama.cpp in-process, an OpenAI-compatible server, or a
scripted replay for fast tests of the loop."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmos.errors import ErrorCode, LlmosError

if TYPE_CHECKING:
    from llmos.config import Settings

Message = dict[str, str]


@dataclass(frozen=True)
class Completion:
    """One decoded output and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class Backend(Protocol):
    """Turns a chat (system + turns) into one constrained completion."""

    name: str

    def complete(
        self,
        messages: list[Message],
        *,
        grammar: str | None,
        schema: dict[str, Any] | None,
        max_tokens: int,
    ) -> Completion:
        """Decode one reply; with `grammar`/`schema` the output is constrained to it."""
        ...


@dataclass
class ScriptedBackend:
    """Replays the given outputs in order (strings or dicts), recording every prompt it saw."""

    outputs: list[str | dict[str, Any]]
    name: str = "scripted"
    prompts: list[list[Message]] = field(default_factory=list)

    def complete(
        self,
        messages: list[Message],
        *,
        grammar: str | None,
        schema: dict[str, Any] | None,
        max_tokens: int,
    ) -> Completion:
        """The next scripted output; E_BACKEND when the script has run out."""
        self.prompts.append([dict(m) for m in messages])
        if not self.outputs:
            raise LlmosError(ErrorCode.E_BACKEND, "the scripted backend has no outputs left")
        out = self.outputs.pop(0)
        return Completion(text=out if isinstance(out, str) else json.dumps(out))


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


class LlamaCppBackend:
    """Any GGUF in-process through llama-cpp-python; every layer on the GPU when llama.cpp was
    built with CUDA or Metal (n_gpu_layers=-1 is ignored by a CPU build)."""

    def __init__(
        self, model_path: Path, *, n_ctx: int = 4096, n_threads: int | None = None, seed: int = 0
    ) -> None:
        from llama_cpp import Llama

        self.model_path = model_path
        self.name = model_path.stem
        self.n_threads = n_threads or physical_cores()
        self.llm = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_gpu_layers=-1,
            seed=seed,
            verbose=False,
        )
        self._grammars: dict[str, Any] = {}

    def grammar(self, text: str) -> Any:
        """A compiled LlamaGrammar, cached by its text (rebuilt only when the table changes)."""
        compiled = self._grammars.get(text)
        if compiled is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            compiled = LlamaGrammar.from_string(text, verbose=False)
            self._grammars = {text: compiled}
        return compiled

    def tokens(self, text: str) -> int:
        """How many tokens the model's own tokenizer makes of `text`."""
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def complete(
        self,
        messages: list[Message],
        *,
        grammar: str | None,
        schema: dict[str, Any] | None,
        max_tokens: int,
    ) -> Completion:
        """Greedy decoding under the grammar; llama.cpp reuses the KV cache of the shared prefix."""
        start = time.perf_counter()
        try:
            out = self.llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                grammar=self.grammar(grammar) if grammar else None,
                temperature=0.0,
                max_tokens=max_tokens,
            )
        except (RuntimeError, ValueError) as exc:
            raise LlmosError(ErrorCode.E_BACKEND, f"llama.cpp failed: {exc}") from exc
        usage = out.get("usage", {})  # type: ignore[union-attr]
        text = out["choices"][0]["message"]["content"] or ""  # type: ignore[index]
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.perf_counter() - start,
        )


def open_backend(settings: Settings) -> Backend:
    """The backend the settings name: a server if `server` is set, else the local GGUF."""
    from llmos.kernel.models import resolve_model

    if settings.server:
        return OpenAIBackend(settings.server, model=settings.model or "default")
    path = resolve_model(settings.model, settings.ensure_home())
    return LlamaCppBackend(path, n_ctx=settings.n_ctx)


class OpenAIBackend:
    """Any OpenAI-compatible server (llama.cpp's llama-server, vLLM) with JSON-Schema output."""

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.timeout = timeout

    def complete(
        self,
        messages: list[Message],
        *,
        grammar: str | None,
        schema: dict[str, Any] | None,
        max_tokens: int,
    ) -> Completion:
        """POST /chat/completions with a json_schema response format (and the grammar, which
        llama-server honours directly)."""
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "syscall", "schema": schema, "strict": True},
            }
        if grammar is not None:
            body["grammar"] = grammar
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
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
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
