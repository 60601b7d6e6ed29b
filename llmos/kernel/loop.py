"""The step loop: intent -> syscall -> dispatch -> result appended -> next step, until the kernel
emits `reply` or `ask`, or the step limit is hit. Every step is an event for the caller."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Backend, Message
from llmos.kernel.grammar import GrammarCache
from llmos.kernel.prompt import extras_prompt, result_message, system_prompt
from llmos.limits import MAX_RESULT_CHARS, MAX_STEPS_PER_TURN
from llmos.syscalls.base import Syscall, SyscallResult

if TYPE_CHECKING:
    from llmos.kernel.process import Process
    from llmos.system import System

EventKind = Literal["call", "result", "reply", "ask", "error", "limit"]
ENDS_TURN = ("reply", "ask")


@dataclass
class Event:
    """One visible step of a turn: a decided call, its result, the reply, or an error."""

    kind: EventKind
    text: str = ""
    call: dict[str, Any] | None = None
    result: SyscallResult | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The event as JSON data (for `--json` output)."""
        out: dict[str, Any] = {"kind": self.kind, "text": self.text, "seconds": self.seconds}
        if self.call is not None:
            out["call"] = self.call
        if self.result is not None:
            out["result"] = self.result.model_dump(mode="json")
        return out


@dataclass
class Conversation:
    """The messages after the system prompt: requests, calls and results, oldest first."""

    messages: list[Message] = field(default_factory=list)

    def add(self, role: str, content: str) -> None:
        """Append one message."""
        self.messages.append({"role": role, "content": content})


_CTRL = re.compile(r"[\x00-\x1f]")


def repair(text: str) -> dict[str, Any] | None:
    """Fix what is safely fixable in a model's JSON: raw control characters inside strings,
    text after the object, up to three missing closing braces. None if still not an object."""
    text = text.strip()
    start = text.find("{")
    if start < 0:
        return None
    text = text[start:]
    escaped = _escape_controls_in_strings(text)
    decoder = json.JSONDecoder()
    for candidate in (escaped, escaped + "}", escaped + "}}", escaped + '"}', escaped + "}}}"):
        try:
            value, _ = decoder.raw_decode(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _escape_controls_in_strings(text: str) -> str:
    out: list[str] = []
    in_string = escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            elif _CTRL.match(ch):
                out.append(json.dumps(ch)[1:-1])
                continue
        elif ch == '"':
            in_string = True
        out.append(ch)
    return "".join(out)


def compact_result(result: SyscallResult) -> str:
    """A result as the kernel sees it: compact JSON, long values cut with a marker."""
    data = result.model_dump(mode="json", exclude_none=True)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [cut: {len(text)} chars in all]"
    return text


class Kernel:
    """Drives one model over the syscall table for a process; one turn at a time."""

    def __init__(
        self,
        system: System,
        backend: Backend,
        *,
        max_steps: int = MAX_STEPS_PER_TURN,
        max_tokens: int = 384,
    ) -> None:
        self.system = system
        self.backend = backend
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.grammars = GrammarCache(system.registry)
        self._prompt_version = -1
        self._system_message = ""
        self._extras_message = ""

    def system_message(self) -> str:
        """The system prompt, rebuilt only when the syscall table changes."""
        self._refresh()
        return self._system_message

    def _refresh(self) -> None:
        if self._prompt_version != self.system.registry.version:
            self._system_message = system_prompt(self.system.registry)
            self._extras_message = extras_prompt(self.system.registry)
            self._prompt_version = self.system.registry.version

    def warm(self) -> None:
        """Bring the system prompt into the backend's cache now, if the backend can (the shell
        does this while the person types, so the first request is answered at full speed)."""
        warm = getattr(self.backend, "warm", None)
        if callable(warm):
            warm(self.messages(Conversation()))

    def messages(self, conversation: Conversation) -> list[Message]:
        """The full prompt: the stable system message, then the conversation."""
        head = [{"role": "system", "content": self.system_message()}]
        if self._extras_message:
            head.append({"role": "system", "content": self._extras_message})
        return [*head, *conversation.messages]

    def decide(self, conversation: Conversation) -> tuple[Syscall, str]:
        """Decode one call and validate it; repair, else feed the error back once and retry.

        Returns (call, the text to keep as the assistant's message). Raises LlmosError with
        E_BACKEND or E_INVAL when no valid call came out.
        """
        error = ""
        for attempt in range(2):
            messages = self.messages(conversation)
            if attempt:
                messages = [*messages, {"role": "user", "content": error}]
            out = self.backend.complete(
                messages,
                constraint=self.grammars.constraint(),
                max_tokens=self.max_tokens,
            )
            try:
                data: Any = json.loads(out.text)
            except ValueError:
                data = repair(out.text)
            try:
                if data is None:
                    raise LlmosError(ErrorCode.E_INVAL, "the output is not a JSON object")
                call = self.system.registry.parse(data)
            except LlmosError as exc:
                error = (
                    f"ERROR: that was not a valid syscall ({exc.message}). "
                    "Emit exactly one valid JSON syscall."
                )
                continue
            return call, json.dumps(call.model_dump(mode="json", exclude_defaults=True))
        raise LlmosError(ErrorCode.E_INVAL, f"the model gave no valid syscall: {error}")

    def turn(self, process: Process, conversation: Conversation, request: str) -> Iterator[Event]:
        """Run one request to its reply, yielding every step as it happens."""
        conversation.add("user", request)
        failed: dict[str, int] = {}
        for _ in range(self.max_steps):
            start = time.perf_counter()
            try:
                call, shown = self.decide(conversation)
            except LlmosError as exc:
                yield Event("error", text=f"{exc.code}: {exc.message}")
                return
            decided = time.perf_counter() - start
            data = call.model_dump(mode="json")
            conversation.add("assistant", shown)
            yield Event("call", call=data, seconds=decided)
            if shown in failed:
                failed[shown] += 1
                if failed[shown] > 2:
                    yield Event(
                        "error",
                        text=f"{ErrorCode.E_INVAL}: the kernel kept repeating a call that failed "
                        f"({shown}); try rewording the request",
                    )
                    return
                conversation.add(
                    "user",
                    "ERROR: that exact call already failed; repeating it fails again. "
                    "Change the call or reply to the user explaining the error.",
                )
                yield Event("error", call=data, text="repeated a failed call; not run again")
                continue
            result = self.system.dispatch(process, call)
            if not result.ok:
                failed[shown] = 1
            if result.ok and call.call in ENDS_TURN:
                kind: EventKind = "reply" if call.call == "reply" else "ask"
                value = result.value if isinstance(result.value, dict) else {}
                yield Event(kind, text=str(value.get("text", "")), call=data, result=result)
                return
            conversation.add("user", result_message(compact_result(result)))
            yield Event("result", call=data, result=result, text=result.render())
        yield Event(
            "limit",
            text=f"stopped after {self.max_steps} steps without a reply (the step limit); "
            "ask again more specifically, or raise the limit",
        )
