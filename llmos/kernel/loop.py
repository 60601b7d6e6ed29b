"""The step loop: intent -> syscall -> dispatch -> result appended -> next step, until the kernel
emits `reply` or `ask`, or the step limit is hit. Every step is an event for the caller."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Backend, Message
from llmos.kernel.grammar import GrammarCache
from llmos.kernel.grounding import Snapshot, scan, view
from llmos.kernel.prompt import extras_prompt, result_message, summary_block, system_prompt
from llmos.limits import MAX_RESULT_CHARS, MAX_STEPS_PER_TURN
from llmos.syscalls.base import Syscall, SyscallResult

if TYPE_CHECKING:
    from llmos.kernel.process import Process
    from llmos.memory.pager import Pager
    from llmos.system import System

EventKind = Literal["call", "result", "reply", "ask", "error", "limit", "memory"]
ENDS_TURN = ("reply", "ask")
CANCELLED_REPLY = "(cancelled: the person stopped this request before it was done)"


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
class Turn:
    """One request and every step taken for it: the unit the pager swaps out, so a syscall is
    never separated from its result."""

    number: int
    messages: list[Message] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)
    """Recalled memory shown before a message (by its index); not part of the turn's own text."""
    recalled: list[str] = field(default_factory=list)
    """Ids of the pages recalled into this turn."""
    started: float = field(default_factory=time.time)
    tokens: int = 0
    """The turn's size in prompt tokens, as last counted (0: not counted yet)."""
    view: str = ""
    """The workspace view shown before the request (empty when it had not changed since the
    last one the conversation shows)."""

    @property
    def request(self) -> str:
        """What the person asked."""
        return self.messages[0]["content"] if self.messages else ""

    @property
    def reply(self) -> str:
        """The kernel's reply (or question) that ended the turn; empty if it has not ended."""
        for message in reversed(self.messages):
            if message["role"] != "assistant":
                continue
            try:
                data = json.loads(message["content"])
            except ValueError:
                return ""
            if isinstance(data, dict) and data.get("call") in ENDS_TURN:
                return str(data.get("text", ""))
            return ""
        return ""

    @property
    def asked(self) -> bool:
        """True when the turn ended by asking the person something."""
        last = next((m for m in reversed(self.messages) if m["role"] == "assistant"), None)
        return last is not None and last["content"].startswith('{"call": "ask"')

    @property
    def done(self) -> bool:
        """True once the kernel replied or asked."""
        return bool(self.reply)

    def rendered(self) -> list[Message]:
        """The turn's messages as the model sees them, recalled memory included."""
        out: list[Message] = []
        for i, message in enumerate(self.messages):
            if i == 0 and self.view:
                message = {**message, "content": f"{self.view}\n\n{message['content']}"}
            note = self.notes.get(i)
            if note:
                message = {**message, "content": f"{note}\n\n{message['content']}"}
            out.append(message)
        return out

    def to_json(self) -> dict[str, Any]:
        """The turn as JSON data (sessions are saved as JSON)."""
        return {
            "number": self.number,
            "messages": self.messages,
            "notes": {str(k): v for k, v in self.notes.items()},
            "recalled": self.recalled,
            "started": self.started,
            "view": self.view,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        """A turn saved by `to_json`."""
        return cls(
            number=int(data["number"]),
            messages=[
                {"role": str(m["role"]), "content": str(m["content"])} for m in data["messages"]
            ],
            notes={int(k): str(v) for k, v in data.get("notes", {}).items()},
            recalled=[str(i) for i in data.get("recalled", [])],
            started=float(data.get("started", 0.0)),
            view=str(data.get("view", "")),
        )

    def drop_failures(self) -> None:
        """Forget the calls that failed (and their errors) once the turn is over, so a later
        request does not inherit a wrong guess ("cabin/wifi.txt" does not exist) as if it were
        a fact. A refusal (E_PERM) stays: it is the truth about what is allowed."""
        kept: list[Message] = []
        index = {}
        for i, message in enumerate(self.messages):
            content = message["content"]
            failed = message["role"] == "user" and (
                (content.startswith('RESULT: {"ok":false') and '"E_PERM"' not in content)
                or content.startswith("ERROR: ")
            )
            if failed and kept and kept[-1]["role"] == "assistant" and len(kept) > 1:
                kept.pop()
                continue
            index[i] = len(kept)
            kept.append(message)
        if len(kept) != len(self.messages):
            self.notes = {index[i]: n for i, n in self.notes.items() if i in index}
            self.messages = kept
            self.tokens = 0


@dataclass
class Conversation:
    """What follows the system prompt: a summary of the turns paged out, then the resident
    turns, oldest first. With a pager attached it never outgrows the model's context."""

    turns: list[Turn] = field(default_factory=list)
    summary: str = ""
    """The running summary of every turn paged out so far."""
    paged_out: int = 0
    """Turns paged out so far (numbers 1..paged_out live in recall memory)."""
    pager: Pager | None = None

    @classmethod
    def from_messages(cls, messages: list[Message]) -> Conversation:
        """A conversation of one turn holding `messages` (for tests and benches)."""
        return cls(turns=[Turn(1, [dict(m) for m in messages])])

    @property
    def next_number(self) -> int:
        """The number the next turn gets."""
        return self.turns[-1].number + 1 if self.turns else self.paged_out + 1

    @property
    def current(self) -> Turn | None:
        """The newest turn, if any."""
        return self.turns[-1] if self.turns else None

    def begin(self, request: str) -> Turn:
        """Start a turn with the person's request."""
        turn = Turn(self.next_number, [{"role": "user", "content": request}])
        self.turns.append(turn)
        return turn

    def add(self, role: str, content: str) -> None:
        """Append one message to the current turn (starting one if there is none)."""
        if not self.turns:
            self.turns.append(Turn(self.next_number))
        self.turns[-1].messages.append({"role": role, "content": content})

    def cancel(self) -> bool:
        """Close the newest turn after the person stopped it (Ctrl-C): a call decoded but not
        run is marked so, and the turn ends with a reply saying it was cancelled, so the model
        does not take the next request as more of this one. False if there was nothing to
        close."""
        turn = self.current
        if turn is None or turn.done:
            return False
        if turn.messages and turn.messages[-1]["role"] == "assistant":
            self.add("user", "CANCELLED: the person stopped this request; that call was not run.")
        self.add("assistant", json.dumps({"call": "reply", "text": CANCELLED_REPLY}))
        return True

    @property
    def messages(self) -> list[Message]:
        """The messages the model sees after the system prompt. The summary opens the first
        resident message rather than standing alone, so user and assistant still alternate
        (some chat templates insist on it)."""
        out = [m for turn in self.turns for m in turn.rendered()]
        if self.summary:
            block = summary_block(self.summary, self.paged_out)
            if out and out[0]["role"] == "user":
                out[0] = {**out[0], "content": f"{block}\n\n{out[0]['content']}"}
            else:
                out.insert(0, {"role": "user", "content": block})
        return out


def grounding_text(conversation: Conversation) -> str:
    """The person's words a turn is grounded in: its request, and the one before when that
    turn ended by asking something back (so "yes, do it" may do what was asked about)."""
    turns = conversation.turns
    if not turns:
        return ""
    request = turns[-1].request
    if len(turns) > 1 and turns[-2].asked:
        return f"{turns[-2].request}\n{request}"
    return request


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

    def begin(self, process: Process, conversation: Conversation, request: str) -> Snapshot:
        """Start a turn: the request, with a view of the workspace before it when that differs
        from the last view the conversation shows. Returns the workspace snapshot."""
        turn = conversation.begin(request)
        snapshot = scan(process.workspace, grounding_text(conversation))
        shown = view(snapshot)
        last = next((t.view for t in reversed(conversation.turns[:-1]) if t.view), "")
        if shown != last:
            turn.view = shown
        return snapshot

    def decide(
        self, conversation: Conversation, ground: Snapshot | None = None
    ) -> tuple[Syscall, str]:
        """Decode one call and validate it; repair, else feed the error back once and retry.
        With a workspace snapshot, arguments that read an existing path can only name a real
        one (or one the request names).

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
                constraint=self.grammars.constraint(ground),
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
            # `call` has a default (its Literal), so exclude_defaults would drop the name and
            # the history would show the model its own calls without saying what they were.
            shown = {"call": call.call, **call.model_dump(mode="json", exclude_defaults=True)}
            return call, json.dumps(shown)
        raise LlmosError(ErrorCode.E_INVAL, f"the model gave no valid syscall: {error}")

    def turn(
        self, process: Process, conversation: Conversation, request: str
    ) -> Generator[Event, None, None]:
        """Run one request to its reply, yielding every step as it happens. With a pager on the
        conversation, each step is preceded by paging (shown as `memory` events) and the
        session is saved when the turn ends, however it ends."""
        self.begin(process, conversation, request)
        pager = conversation.pager
        try:
            yield from self._steps(process, conversation, pager)
        finally:
            turn = conversation.current
            if turn is not None:
                turn.drop_failures()
            if pager is not None:
                pager.save(conversation, process)

    def _steps(
        self, process: Process, conversation: Conversation, pager: Pager | None
    ) -> Iterator[Event]:
        failed: dict[str, int] = {}
        turn = conversation.current
        request = turn.request if turn is not None else ""
        grounding = grounding_text(conversation)
        for _ in range(self.max_steps):
            if pager is not None:
                for line in pager.prepare(self, process, conversation):
                    yield Event("memory", text=line)
            start = time.perf_counter()
            try:
                call, shown = self.decide(conversation, scan(process.workspace, grounding))
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
            conversation.add("user", result_message(compact_result(result), request))
            yield Event("result", call=data, result=result, text=result.render())
        yield Event(
            "limit",
            text=f"stopped after {self.max_steps} steps without a reply (the step limit); "
            "ask again more specifically, or raise the limit",
        )
