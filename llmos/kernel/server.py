"""A model server as backend: any OpenAI-compatible server (llama.cpp's llama-server,
llama-cpp-python's server, vLLM) held to one syscall per completion."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Literal

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, Message

if TYPE_CHECKING:
    from llmos.kernel.grammar import Constraint


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
        slots: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key = api_key
        self.timeout = timeout
        self.constrain = constrain
        self.context = context
        self._slots = slots

    @property
    def slots(self) -> int:
        """How many completions the server decodes at once: as configured (`server_slots`),
        else what it says (llama.cpp's llama-server: `total_slots` in /props), else 1. Asked
        once; the scheduler keeps this many requests in flight."""
        if self._slots < 1:
            self._slots = server_slots(self.base_url, self.timeout)
        return self._slots

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


def server_slots(base_url: str, timeout: float = 5.0) -> int:
    """The server's parallel slots as it reports them (`GET /props`, llama.cpp's llama-server),
    or 1 when it does not say (llama-cpp-python's server, vLLM)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/props", timeout=min(timeout, 5.0)) as response:
            data = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError):
        return 1
    total = data.get("total_slots") if isinstance(data, dict) else None
    return total if isinstance(total, int) and total > 0 else 1
