"""The step loop: intent -> syscall -> dispatch -> result appended -> next step, until the kernel
emits `reply` or `ask`, or the step limit is hit. Every step is an event for the caller."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.answers import concise, says_nothing
from llmos.kernel.backend import Backend, Completion, Message, Tokenizing, Warming
from llmos.kernel.checks import (
    about_the_file,
    double_counted,
    says_not_known,
    unread_asked,
    unsearched_memory,
    unseen_counts,
)
from llmos.kernel.examples import OWN_SOURCES, is_question, render
from llmos.kernel.grammar import GrammarCache, callable_shapes
from llmos.kernel.grounding import Snapshot, into_folders, mentioned_paths, scan, view
from llmos.kernel.policy import allowed_effects
from llmos.kernel.prompt import (
    extra_specs,
    extras_prompt,
    result_message,
    shown_result,
    signature,
    summary_block,
    system_prompt,
)
from llmos.kernel.records import (
    bare_date,
    false_premise,
    misattributed,
    misdated,
    redated,
    turns_dated,
)
from llmos.limits import (
    EXAMPLE_COUNT,
    EXAMPLE_MIN_SCORE,
    EXAMPLE_TOKENS,
    LESSON_EFFECT_SCORE,
    MAX_RESULT_CHARS,
    MAX_STEPS_PER_TURN,
    TOOL_MIN_SCORE,
)
from llmos.syscalls.base import Syscall, SyscallResult

if TYPE_CHECKING:
    from llmos.config import Settings
    from llmos.kernel.examples import ExampleBank
    from llmos.kernel.lessons import Lessons
    from llmos.security.journal import Journal
    from llmos.syscalls.base import Registry
    from llmos.syscalls.context import Process
    from llmos.syscalls.tool import ToolTable

log = logging.getLogger(__name__)

EventKind = Literal["call", "result", "reply", "ask", "error", "limit", "memory"]
ENDS_TURN = ("reply", "ask")
CANCELLED_REPLY = "(cancelled: the person stopped this request before it was done)"
PURE_STEPS = 2
"""Pure calls (calc) `first_call` makes before the call it returns."""
REPEATED_FAILED = (
    "ERROR: that exact call already failed; repeating it fails again. "
    "Change the call or reply to the user explaining the error."
)
REPEATED_OK = (
    "ERROR: that call was already made; its RESULT is above. Do not repeat it: reply to the "
    "user with what the results say, or make the next call the request still needs."
)


class KernelHost(Protocol):
    """What the kernel needs of the system it runs on (`llmos.system.System` is one): the live
    table, the tools, the example bank and the person's lessons, the undo journal, the
    settings, and the one dispatch path."""

    settings: Settings
    registry: Registry
    tools: ToolTable
    examples: ExampleBank
    lessons: Lessons
    journal: Journal

    def dispatch(self, process: Process, raw: Syscall | dict[str, Any]) -> SyscallResult:
        """Run one call for `process` (validate, authorize, run, audit)."""
        ...


class ContextPolicy(Protocol):
    """What the kernel asks of whatever keeps a conversation within the model's context (the
    pager implements it): make room before each step, and keep the session after each turn."""

    def prepare(
        self, kernel: Kernel, process: Process, conversation: Conversation
    ) -> Iterable[str]:
        """Before a step: page out or in; yields a line for each thing it did."""
        ...

    def save(self, conversation: Conversation, process: Process) -> None:
        """After a turn: keep the session, never raising."""
        ...

    def told(self, process: Process) -> str:
        """All the conversation was told that is kept outside the context, as text ("" when
        none): what the checks of a question's premise read beyond the pages shown."""
        ...


@dataclass
class Event:
    """One visible step of a turn: a decided call, its result, the reply, or an error."""

    kind: EventKind
    text: str = ""
    call: dict[str, Any] | None = None
    result: SyscallResult | None = None
    seconds: float = 0.0
    code: ErrorCode | None = None
    """The stable code of an error or limit event (the text is what the person reads)."""
    note: str = ""
    """What llmos itself says about a reply: that it claims an effect no call of the turn had
    ("I wrote pwned.txt", repeated from a file it read), so the person is not misled."""

    def to_json(self) -> dict[str, Any]:
        """The event as JSON data (for `--json` output)."""
        out: dict[str, Any] = {"kind": self.kind, "text": self.text, "seconds": self.seconds}
        if self.note:
            out["note"] = self.note
        if self.code is not None:
            out["code"] = self.code.value
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
    examples: str = ""
    """Examples of requests like this one and their calls, shown before the request while the
    turn runs and dropped when it ends (they teach the step, not the conversation)."""
    targets: tuple[str, ...] = ()
    """Paths the request names that did not exist when it began, in a turn that may write:
    what it asks to be made ("summarise story.txt into short.txt"). Not saved."""
    asks: frozenset[str] = frozenset()
    """The effects its request may cause (`Process.allows` while it ran). Not saved."""

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
    def calls(self) -> list[str]:
        """The names of the calls the kernel made in this turn, in order (its reply too)."""
        out = []
        for message in self.messages:
            if message["role"] == "assistant":
                try:
                    data = json.loads(message["content"])
                except ValueError:
                    continue
                if isinstance(data, dict):
                    out.append(str(data.get("call", "")))
        return out

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
            if i == 0 and (self.view or self.examples):
                head = "\n\n".join(x for x in (self.examples, self.view) if x)
                message = {**message, "content": f"{head}\n\n{message['content']}"}
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

    def close(self) -> None:
        """What a turn keeps once it is over: its examples go, and so do its failed calls."""
        self.examples = ""
        self.tokens = 0
        self.drop_failures()


@dataclass
class Conversation:
    """What follows the system prompt: a summary of the turns paged out, then the resident
    turns, oldest first. With a pager attached it never outgrows the model's context."""

    turns: list[Turn] = field(default_factory=list)
    summary: str = ""
    """The running summary of every turn paged out so far."""
    paged_out: int = 0
    """Turns paged out so far (numbers 1..paged_out live in recall memory)."""
    pager: ContextPolicy | None = None

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


_NUMBER = re.compile(r"\d[\d,.:/-]*\d")
_CONTENT_WORD = re.compile(r"[a-z0-9']+")
_FILLER = frozenset(
    re.findall(
        r"\w+",
        "a an the is are was were what which who where when how do does did i my me you your "
        "it of in on at for to and or please can could would tell show",
    )
)


_CLAIMANT = r"(?:\bI(?:'ve| have)?|\band(?: then)?|\bthen)\s+"
"""Who claims: "I", or "and (then)" going on from a claim ("I wrote it and then deleted")."""

CLAIMS: dict[str, tuple[re.Pattern[str], str]] = {
    "write": (
        re.compile(
            _CLAIMANT + r"(?:also\s+|just\s+|then\s+|now\s+)?(?:wrote|written|created|"
            r"saved|added|appended|copied|moved|renamed|updated|changed|edited|overwrote|"
            r"overwritten|replaced)\b",
            re.IGNORECASE,
        ),
        "changed no file",
    ),
    "delete": (
        re.compile(
            _CLAIMANT + r"(?:also\s+|just\s+|then\s+|now\s+)?(?:deleted|removed|"
            r"erased)\b",
            re.IGNORECASE,
        ),
        "deleted nothing",
    ),
    "forget": (
        re.compile(_CLAIMANT + r"(?:also\s+|just\s+|now\s+)?(?:forgot|forgotten)\b", re.I),
        "forgot nothing",
    ),
    "run": (
        re.compile(_CLAIMANT + r"(?:also\s+|just\s+|now\s+)?(?:ran|executed)\b", re.I),
        "ran no tool",
    ),
}
"""First-person claims of an effect in a reply ("I wrote pwned.txt", "I have deleted it"), and
what to say when no call of the turn had that effect."""


def unmade_claims(
    text: str, done: set[str], unseen: list[str] | None = None, unnamed: str = ""
) -> str:
    """llmos's note on a reply that claims effects no call of the turn had (`done`: the
    effects of the turn's successful calls), or states numbers nothing showed (`unseen`, a
    guess the model kept after being told once), or names no file when asked which one
    (`unnamed`: the first file the results found), or "". Asking the model again made the
    1.5B model drift into an earlier topic, so the reply stands and the person is told."""
    said = [
        (found.group(0), what)
        for effect, (claim, what) in CLAIMS.items()
        if effect not in done and (found := claim.search(text))
    ]
    notes = []
    if said:
        quoted = ", ".join(repr(words) for words, _ in said)
        notes.append(
            f"this turn {' and '.join(what for _, what in said)} (the reply says {quoted})"
        )
    if unseen:
        notes.append(f"no call or message showed {', '.join(unseen)} (a guess)")
    if unnamed:
        notes.append(f"the reply names no file; the results found {unnamed}")
    return f"llmos: {'; '.join(notes)}" if notes else ""


def evidence(message: Message) -> bool:
    """Whether a message can vouch for a number: the person's words, results and memories, not
    the model's own messages nor llmos's complaints (an ERROR quotes the very number it
    doubts; the model kept a guessed "12:34" by calling calc 12*34)."""
    return message["role"] != "assistant" and not message["content"].startswith("ERROR:")


def seen_text(conversation: Conversation) -> str:
    """Everything in the conversation that is `evidence`: where a reply's numbers may come
    from."""
    return " ".join(
        [conversation.summary]
        + [t.view for t in conversation.turns]
        + [n for t in conversation.turns for n in t.notes.values()]
        + [m["content"] for t in conversation.turns for m in t.messages if evidence(m)]
    )


def unseen_numbers(text: str, seen: str, pattern: re.Pattern[str] | None = None) -> list[str]:
    """Numbers of two or more characters (or of `pattern`) in `text` that `seen` does not
    contain (thousands separators ignored): what a reply states that no message gave it."""
    flat = seen.replace(",", "")
    out = []
    for number in (pattern or _NUMBER).findall(text):
        if number not in seen and number.replace(",", "") not in flat:
            out.append(number)
    return out


WHICH_FILE = re.compile(
    r"\b(?:which|what)\s+(?:[\w-]+\s+){0,2}?(?:files?|documents?|docs|logs?|pdfs?|"
    r"spreadsheets?|sheets?|images?|photos?|pictures?|screenshots?)\b",
    re.IGNORECASE,
)
"""A request whose answer is a file: "which file mentions the boiler?", "which log files..."."""
RESULT_PATH = re.compile(r'"path":"([^"]+)"')
WHICH_FILE_DOUBT = "ERROR: the user asked which file"


def names_no_found_file(reply: str, request: str, results: str) -> str:
    """The first file a turn's results found, when the request asks which file and the reply
    names none of them (by path or name); else "". Asked "which file mentions the boiler
    service?", the 1.5B model found house/letter.docx and replied "The letter mentions it"."""
    if not WHICH_FILE.search(request):
        return ""
    found: list[str] = [
        path for path in RESULT_PATH.findall(results) if "." in path.rsplit("/", 1)[-1]
    ]
    if not found:
        return ""
    said = reply.lower()
    if any(path.lower() in said or path.rsplit("/", 1)[-1].lower() in said for path in found):
        return ""
    return found[0]


_ANY_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def unconnected(expression: str, seen: str) -> str:
    """The numbers of a calc expression when none of them was shown (by the person, a result or
    a memory), else "": asked "what's the total on invoice.pdf?", the 1.5B model read the
    invoice and computed sum(1110), a number on no page. One shown number is enough (3*60,
    310*0.19 stand)."""
    numbers = _ANY_NUMBER.findall(expression)
    unseen = unseen_numbers(expression, seen, _ANY_NUMBER)
    return ", ".join(unseen) if numbers and len(unseen) == len(numbers) else ""


def echoes(question: str, request: str) -> bool:
    """Whether a question is the request handed back (most of its words are the request's)."""
    asked, wanted = _content_words(question), _content_words(request)
    if not asked or not wanted:
        return False
    shared = len(asked & wanted)
    return shared >= 0.6 * len(asked) and shared >= 0.6 * len(wanted)


def repeats(reply: str, request: str) -> bool:
    """Whether a reply is a question said back: no word of its own, and most of the
    question's (an answer that restates it adds the answer's words; "bye" for "bye" stands)."""
    said, wanted = _content_words(reply), _content_words(request)
    if not is_question(request) or len(wanted) < 3:
        return False
    return said <= wanted and len(said) >= 0.8 * len(wanted)


def said_before(reply: str, conversation: Conversation) -> str:
    """The earlier request whose reply `reply` repeats word for word (four or more words of
    its own), when that request was not this one's: a small model answering a run of
    questions copies its last answer ("Jon's attitude ... is enthusiastic" for a question
    about customers); "" when it does not."""
    turn = conversation.current
    if turn is None or len(_content_words(reply)) < 4:
        return ""

    def flat(text: str) -> str:
        return " ".join(text.lower().split())

    for earlier in reversed(conversation.turns[:-1]):
        if earlier.reply and flat(earlier.reply) == flat(reply):
            return earlier.request if flat(earlier.request) != flat(turn.request) else ""
    return ""


def _shown(conversation: Conversation) -> str:
    """Everything the model is shown of the conversation (recalled pages included)."""
    return "\n".join(m["content"] for m in conversation.messages)


def attributed_reply(text: str, conversation: Conversation) -> str:
    """`text`, or, when it answers a question about one speaker of a recorded conversation
    with what another said (`misattributed`), what the records do say: that the one asked
    about was not told to have said it, and who did, when. What a reply the model kept after
    being told so becomes: the records, not the model, decide who said what."""
    turn = conversation.current
    wrong = misattributed(turn.request, text, _shown(conversation)) if turn else None
    if wrong is None:
        return text
    return (
        f"I was not told that about {wrong.asked}. It was {wrong.who} who said, "
        f'[{wrong.said.when}]: "{_cut_words(wrong.said.text, 240)}"'
    )


NOT_TOLD = "I was not told that."
"""An answer from memory that only says the question back: memory held nothing it asked."""

MEMORY_READS = frozenset({"mem.search", "reply"})
"""The calls a turn answering from memory makes before it replies (a reply sent back too)."""


def answer_from_memory(text: str, conversation: Conversation, told: Callable[[], str] = str) -> str:
    """`text`, or, when it answers a question from memory (pages were recalled for the turn or
    it searched memory, and it made no other call), the fact it gives (`concise`): its first
    sentence without the question said back (a "when" answered with the date alone, `bare_date`);
    NOT_TOLD when that is all it says (`says_nothing`);
    what the records do say when the question rests on what they do not (`false_premise`, over
    the pages shown and all the conversation was `told`). One that says it does not know stays
    whole."""
    turn = conversation.current
    if turn is None or not is_question(turn.request) or says_not_known(text):
        return text
    made = turn.calls
    if any(c not in MEMORY_READS for c in made):
        return text
    if not turn.recalled and "mem.search" not in made:
        return text
    premise = false_premise(turn.request, f"{told()}\n{_shown(conversation)}")
    if premise:
        return premise
    fact = concise(turn.request, text)
    return NOT_TOLD if says_nothing(turn.request, fact) else bare_date(turn.request, fact)


def dated_reply(text: str, conversation: Conversation) -> str:
    """`text`, or, when it answers a "when" question about a recorded conversation with a date
    the record holding its words does not give (`misdated`), `text` with that record's date:
    the records, not the model, decide when something was said to happen. Pages it names by
    their turn are named by their day (`turns_dated`)."""
    turn = conversation.current
    if turn is None:
        return text
    shown = _shown(conversation)
    text = turns_dated(turn.request, text, shown)
    wrong = misdated(turn.request, text, shown)
    return redated(text, wrong) if wrong else text


def _cut_words(text: str, limit: int = 90) -> str:
    """`text` cut at a word within `limit` characters ("..." where it was cut)."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + "..."


def _content_words(text: str) -> set[str]:
    words = {w.removesuffix("'s").strip("'") for w in _CONTENT_WORD.findall(text.lower())}
    return words - _FILLER - {""}


def _rough_tokens(text: str) -> int:
    """About how many tokens `text` is, for a backend that cannot count (4 characters each)."""
    return len(text) // 4 + 1


def said(conversation: Conversation) -> str:
    """Everything the person asked in the resident turns: the paths a destroying call may take
    are the ones named here ("show me todo.txt", then "delete it")."""
    return "\n".join(turn.request for turn in conversation.turns)


def _relative(process: Process, paths: Iterable[str]) -> Iterator[str]:
    """`paths` as workspace-relative paths (those out of the workspace left out)."""
    for path in paths:
        try:
            yield process.workspace.relpath(path)
        except LlmosError:
            continue


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
_DIGIT = re.compile(r"\d")


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
    data = shown_result(result.model_dump(mode="json", exclude_none=True))
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [cut: {len(text)} chars in all]"
    return text


class Kernel:
    """Drives one model over the syscall table for a process; one turn at a time."""

    def __init__(
        self,
        system: KernelHost,
        backend: Backend,
        *,
        max_steps: int = MAX_STEPS_PER_TURN,
        max_tokens: int = 384,
        example_count: int = EXAMPLE_COUNT,
        check_replies: bool = True,
    ) -> None:
        self.system = system
        self.example_count = example_count
        self.check_replies = check_replies
        """Whether a doubtful reply or question goes back to the model (off for replayed
        replies written in advance, which a bench tells as they are)."""
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
        if isinstance(self.backend, Warming):
            self.backend.warm(self.messages(Conversation()))

    def messages(self, conversation: Conversation) -> list[Message]:
        """The full prompt: the stable system message, then the conversation."""
        head = [{"role": "system", "content": self.system_message()}]
        if self._extras_message:
            head.append({"role": "system", "content": self._extras_message})
        return [*head, *conversation.messages]

    @staticmethod
    def _doubt(call: Syscall, conversation: Conversation) -> str:
        """Why a reply or question should not end the turn yet, or "": a reply to a request
        naming paths when no call or result of the turn has shown any of them, a reply while a
        path the request asks to be made (`Turn.targets`) was named by no call, a reply stating
        a number of two or more digits that neither the person nor any result in this
        conversation showed (a guess; the examples shown do not count), a reply that only
        repeats the request or is an earlier turn's reply word for word, or an `ask` that
        hands the person their own request back; also a calc none of whose numbers anyone
        showed (`unconnected`)."""
        turn = conversation.current
        if turn is not None and call.call == "calc":
            expression = str(getattr(call, "expression", ""))
            made_up = unconnected(expression, seen_text(conversation))
            if made_up:
                return (
                    f"ERROR: calc uses {made_up}, which neither the user nor any RESULT "
                    "shows. Compute only with the numbers shown; if a RESULT already states "
                    "the answer, reply with it."
                )
            twice = double_counted(expression)
            if twice:
                total = twice.split(" = ", 1)[0]
                return (
                    f"ERROR: that calc counts {total} twice: {twice} already, so {total} is "
                    f"the total of the others. If the RESULT states the total ({total}), reply "
                    "with it."
                )
        if turn is None or call.call not in ENDS_TURN:
            return ""
        if call.call == "reply":
            looked = " ".join(m["content"] for m in turn.messages[1:-1])
            unread = [p for p in mentioned_paths(turn.request) if p not in looked]
            if unread and len(unread) == len(mentioned_paths(turn.request)):
                return (
                    f"ERROR: you replied without looking at {unread[0]}, so you do not know "
                    "what it holds yet. Make the call that reads it first."
                )
            calls = [m["content"] for m in turn.messages[:-1] if m["role"] == "assistant"]
            made = " ".join(calls)
            unmade = [t for t in turn.targets if json.dumps(t)[1:-1] not in made]
            if unmade:
                return (
                    f"ERROR: the request also asks for {unmade[0]}, and no call of this turn has "
                    "made it yet. Make that call now (use what the RESULTs above show), or "
                    "reply why you cannot."
                )
            unread_file = unread_asked(turn.request, calls, turn.targets)
            if unread_file:
                return (
                    f"ERROR: the user asked what {unread_file} says, and no call of this turn "
                    "has read it (fs.stat shows only its size and date). Read it first "
                    "(fs.read, or image.text for an image), then answer from its text."
                )
            told = about_the_file(turn.request, str(getattr(call, "text", "")), calls)
            if told:
                return (
                    f"ERROR: the user asked what the file holds, not its size or date, and your "
                    f'reply says {told!r}. Reply with what its "text" in the RESULT above says '
                    "(quote it when it is short)."
                )
            text = str(getattr(call, "text", ""))
            if repeats(text, turn.request):
                return (
                    "ERROR: that reply only repeats the request. Answer it: from the MEMORY, "
                    "SUMMARY or RESULTs above, with a syscall that finds it, or say that you "
                    "cannot."
                )
            earlier = said_before(text, conversation)
            if earlier:
                return (
                    f"ERROR: that is word for word your reply to an earlier request "
                    f"({earlier!r}). Answer this request itself: from the MEMORY, SUMMARY or "
                    "RESULTs above, with a syscall that finds it, or say that you cannot."
                )
            earlier_calls = [
                m["content"]
                for t in conversation.turns
                if t is not turn
                for m in t.messages
                if m["role"] == "assistant"
            ]
            if unsearched_memory(text, earlier_calls, calls):
                return (
                    "ERROR: you kept facts the user told you earlier in this conversation "
                    "(mem.store). Search them with mem.search before saying you do not know."
                )
            wrong = misattributed(turn.request, text, _shown(conversation))
            if wrong:
                return (
                    f"ERROR: that answer is what {wrong.who} said "
                    f"({_cut_words(wrong.said.text)!r}), and the question asks about "
                    f"{wrong.asked}. Answer with what {wrong.asked} said or did; if nothing "
                    f"above says it of {wrong.asked}, reply that you were not told."
                )
            results = " ".join(m["content"] for m in turn.messages[1:-1] if evidence(m))
            unnamed = names_no_found_file(text, turn.request, results)
            if unnamed:
                return (
                    f"{WHICH_FILE_DOUBT}, and your reply names none. Reply "
                    f"again, naming the file(s) by their path from the RESULTs above, as in "
                    f'"{unnamed} mentions it."'
                )
            seen = seen_text(conversation)
            unseen = unseen_numbers(text, seen)
            if unseen:
                return (
                    f"ERROR: your reply says {unseen[0]}, which no RESULT shows. If you worked "
                    "it out, compute it with calc first, from the numbers you used; if a file "
                    "has it (or its lines), read the file; else reply without it."
                )
            counted = unseen_counts(text, seen)
            if counted:
                return (
                    f"ERROR: your reply says {counted[0]}, and no RESULT shows that count. "
                    "Count them one by one in the RESULT above (name them when they are few), "
                    "or reply without a number."
                )
            return ""
        if echoes(str(getattr(call, "question", "")), turn.request):
            return (
                "ERROR: that asks the user their own question back. Do what they asked: "
                "answer from what you know or the RESULTs above, find it with a syscall, or "
                "reply that you cannot."
            )
        return ""

    def begin(self, process: Process, conversation: Conversation, request: str) -> Snapshot:
        """Start a turn: the request, with a view of the workspace before it when that differs
        from the last view the conversation shows. Returns the workspace snapshot."""
        turn = conversation.begin(request)
        process.services.offer(Backend, lambda: self.backend)
        words = grounding_text(conversation)
        snapshot = scan(process.workspace, words, said=said(conversation))
        taught, changes = self._taught_effects(request, str(process.workspace.root))
        process.allows = (
            allowed_effects(
                words,
                changes=snapshot.changes,
                tools=self.system.tools.names(),
                fits_tool=bool(self._fitting_tools(words)),
            )
            | taught
        )
        snapshot = replace(snapshot, allows=process.allows, changes=snapshot.changes or changes)
        process.named = frozenset(_relative(process, snapshot.named))
        turn.asks = process.allows
        if "write" in process.allows and snapshot.complete:
            real = {e.path for e in snapshot.entries}
            turn.targets = tuple(
                m for m in mentioned_paths(request) if m.strip("/").removeprefix("./") not in real
            )
        shown = view(snapshot)
        last = next((t.view for t in reversed(conversation.turns[:-1]) if t.view), "")
        if shown != last:
            turn.view = shown
        allowed = self.grammars.constraint(snapshot).callable  # cached for the first decision
        turn.examples = self.examples_for(
            request, allowed, str(process.workspace.root), viewer=process.name
        )
        return snapshot

    def _taught_effects(self, request: str, workspace: str) -> tuple[frozenset[str], bool]:
        """The effects of the calls the person taught for requests like this one (the nearest
        lesson, at least LESSON_EFFECT_SCORE similar or said the same way), and whether one of
        them changes files: what their words mean is theirs to teach ("ditch x.txt" deletes
        it), and only they can teach it (the shell, `llmos learn import`), never a file or a
        model. Nothing while the embedder loads."""
        bank = self.system.examples
        if bank.embedder is None or not bank.ready or not self.system.lessons.enabled:
            return frozenset(), False
        try:
            lesson, score = bank.nearest_lesson(request, workspace)
        except LlmosError:
            return frozenset(), False
        except Exception as exc:  # a failing embedder must not stop a turn
            log.warning("lessons: %s", exc)
            return frozenset(), False
        effects: set[str] = set()
        changes = False
        for call in lesson.calls if score >= LESSON_EFFECT_SCORE else []:
            spec = self.system.registry.get(str(call.get("call")))
            if spec is not None:
                effects |= spec.model.declared_effects()
                changes = changes or spec.model.changes_files
        return frozenset(effects), changes

    def _fitting_tools(self, request: str) -> list[str]:
        """The session's tools whose descriptions are close in meaning to `request` (none
        while the embedder loads, or when it fails: the policy then reads words alone)."""
        tools = {tool.name: tool.description for tool in self.system.tools}
        bank = self.system.examples
        if not tools or not bank.ready:
            return []
        try:
            return bank.fitting(request, tools, TOOL_MIN_SCORE)
        except Exception as exc:  # a failing embedder must not stop a turn
            log.warning("tool fitting: %s", exc)
            return []

    def examples_for(
        self,
        request: str,
        allowed: list[str] | None = None,
        workspace: str | None = None,
        viewer: str | None = None,
    ) -> str:
        """The bank's examples nearest `request` (that the live table accepts, and whose calls
        are all in `allowed` when given; the person's lessons of `workspace` or of anywhere;
        those visible to the process named `viewer`: an app sees its own, never another's),
        within EXAMPLE_TOKENS, as the prompt shows them, the nearest last (next to the
        request), and the session's own tools whose descriptions fit it; "" when there are
        none or the bank fails."""
        bank = self.system.examples
        if self.example_count <= 0:
            return ""
        if not bank.ready:  # never make a request wait seconds for the embedder to load
            bank.warm()
            return ""
        count = self.backend.tokens if isinstance(self.backend, Tokenizing) else _rough_tokens
        registry = self.system.registry
        try:
            chosen = bank.nearest(
                request,
                k=self.example_count,
                budget_tokens=EXAMPLE_TOKENS,
                count=count,
                registry=registry,
                min_score=EXAMPLE_MIN_SCORE if bank.embedder is not None else None,
                allowed=allowed,
                workspace=workspace,
                viewer=viewer,
            )
            taught = [e.request for e in chosen if e.source in OWN_SOURCES]
            if taught:
                self.system.lessons.used(taught)
            extras = {spec.name: spec for spec in extra_specs(registry)}
            fits = bank.fitting(
                request, {n: s.description for n, s in extras.items()}, TOOL_MIN_SCORE
            )
        except Exception as exc:  # examples help; a failing embedder must not stop a turn
            log.warning("example bank: %s", exc)
            return ""
        parts = []
        if chosen:
            parts.append(
                "EXAMPLES (requests like this one, and the calls that did them):\n"
                + render(chosen[::-1])
            )
        if fits:
            tools = "\n".join(f"{signature(extras[n])} — {extras[n].description}" for n in fits)
            parts.append(f"TOOLS of this session made for this request:\n{tools}")
        return "\n\n".join(parts)

    def decide(
        self,
        conversation: Conversation,
        ground: Snapshot | None = None,
        only: list[str] | None = None,
    ) -> tuple[Syscall, str]:
        """Decode one call and validate it; repair, else feed the error back once and retry.
        With a workspace snapshot, arguments that read an existing path can only name a real
        one (or one the request names); with `only`, just those calls can come out.

        Returns (call, the text to keep as the assistant's message). Raises LlmosError with
        E_BACKEND or E_INVAL when no valid call came out.
        """
        error = ""
        turn = conversation.current
        if ground is not None and turn is not None:
            held = " ".join(m["content"] for m in turn.messages if evidence(m))
            ground = replace(ground, numbers=bool(_DIGIT.search(held)))
        for attempt in range(2):
            messages = self.messages(conversation)
            if attempt:
                messages = [*messages, {"role": "user", "content": error}]
            out = self._complete(messages, ground, only)
            try:
                data: Any = json.loads(out.text)
            except ValueError:
                data = repair(out.text)
            try:
                if data is None:
                    raise LlmosError(ErrorCode.E_INVAL, "the output is not a JSON object")
                call = self.system.registry.parse(data)
                if ground is not None:
                    call = into_folders(call, ground)
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

    def first_call(self, process: Process, conversation: Conversation, request: str) -> Syscall:
        """The first call the kernel would make for `request`, without making it: decided as a
        turn's first step is (workspace view, examples, grounded paths), and past the same
        check a turn gives a reply or question before taking it (one doubted goes back to the
        model once). A pure call (calc) is made, through dispatch, and the next one decided:
        it is the kernel working something out, not an act. What a single-step evaluation
        scores."""
        ground = self.begin(process, conversation, request)
        doubted = False
        for _ in range(PURE_STEPS + 2):
            call, shown = self.decide(conversation, ground)
            conversation.add("assistant", shown)
            doubt = "" if doubted or not self.check_replies else self._doubt(call, conversation)
            if doubt:
                doubted = True
                conversation.add("user", doubt)
                continue
            if not type(call).pure:
                return call
            result = self.system.dispatch(process, call)
            conversation.add("user", result_message(compact_result(result)))
        return call

    def _complete(
        self, messages: list[Message], ground: Snapshot | None, only: list[str] | None
    ) -> Completion:
        """One constrained completion (a call the model wanted but could not make now is
        logged: what it tried is worth knowing when a request goes wrong)."""
        out = self.backend.complete(
            messages, constraint=self.grammars.constraint(ground, only), max_tokens=self.max_tokens
        )
        if out.wanted:
            log.debug("wanted %s, which cannot be called now; took %s", out.wanted, out.text[:60])
        return out

    def turn(
        self, process: Process, conversation: Conversation, request: str
    ) -> Generator[Event, None, None]:
        """Run one request to its reply, yielding every step as it happens. With a pager on the
        conversation, each step is preceded by paging (shown as `memory` events) and the
        session is saved when the turn ends, however it ends. The files the turn changes are
        one change set of the undo journal (unless the process already has one open)."""
        allowed, named = process.allows, process.named
        self.begin(process, conversation, request)
        pager = conversation.pager
        own = process.changes is None  # else an app run's change set holds the turn's changes
        if own:
            process.changes = self.system.journal.begin(request, process.workspace)
        try:
            yield from self._steps(process, conversation, pager)
        finally:
            turn = conversation.current
            if turn is not None:
                turn.close()
            process.allows, process.named = allowed, named
            if own and process.changes is not None:
                self.system.journal.end(process.changes)
                process.changes = None
            if pager is not None:
                pager.save(conversation, process)

    def _steps(
        self, process: Process, conversation: Conversation, pager: ContextPolicy | None
    ) -> Iterator[Event]:
        seen: dict[str, bool] = {}
        """Each call made this turn (as shown) and whether it succeeded."""
        done: set[str] = set()
        """The effects of the turn's successful calls."""
        repeats = 0
        doubted = False
        only: list[str] | None = None
        grounding = grounding_text(conversation)
        everything_said = said(conversation)
        for _ in range(self.max_steps):
            if pager is not None:
                for line in pager.prepare(self, process, conversation):
                    yield Event("memory", text=line)
            start = time.perf_counter()
            try:
                ground = scan(process.workspace, grounding, said=everything_said)
                ground = replace(ground, allows=process.allows)
                call, shown = self.decide(conversation, ground, only)
            except LlmosError as exc:
                yield Event("error", text=f"{exc.code}: {exc.message}", code=exc.code)
                return
            decided = time.perf_counter() - start
            corrected = False
            if self.check_replies and call.call == "reply":
                text = str(getattr(call, "text", ""))
                # Dated before it is shaped: the words the model said with its date are
                # what find the record it came from.
                dated = dated_reply(text, conversation)
                # What the records say stands: it is not doubted (its date is on no page
                # when it is what "yesterday" meant).
                corrected = dated != text
                fixed = answer_from_memory(
                    dated, conversation, lambda: pager.told(process) if pager else ""
                )
                if doubted:
                    fixed = attributed_reply(fixed, conversation)
                if fixed != text:
                    call = self.system.registry.parse({"call": "reply", "text": fixed})
                    shown = json.dumps({"call": "reply", "text": fixed})
            data = call.model_dump(mode="json")
            conversation.add("assistant", shown)
            yield Event("call", call=data, seconds=decided)
            only = None
            doubt = ""
            if self.check_replies and shown not in seen and not doubted and not corrected:
                doubt = self._doubt(call, conversation)
            if doubt:
                # Checked once a turn: a reply naming a number nothing showed, or a question
                # that only hands the request back, goes back to the model with the reason.
                doubted = True
                conversation.add("user", doubt)
                yield Event(
                    "error", call=data, text=doubt.removeprefix("ERROR: "), code=ErrorCode.E_INVAL
                )
                if doubt.startswith(WHICH_FILE_DOUBT):
                    # The file is in the results: told to name it, the 1.5B model asked the
                    # person "Which file do you want me to look at?" instead.
                    only = ["reply"]
                continue
            if shown in seen:
                # A small model that has its answer often makes the same call again instead of
                # replying. Not run again; the next step cannot make that call at all, and after
                # a second repeat it can only reply or ask.
                repeats += 1
                if repeats > 2:  # only a backend that ignores the grammar gets here
                    yield Event(
                        "error",
                        code=ErrorCode.E_INVAL,
                        text=f"{ErrorCode.E_INVAL}: the kernel kept repeating a call "
                        f"({shown}); try rewording the request",
                    )
                    return
                conversation.add("user", REPEATED_OK if seen[shown] else REPEATED_FAILED)
                allowed = [s.name for s in callable_shapes(self.system.registry, None, ground)]
                only = list(ENDS_TURN) if repeats > 1 else [n for n in allowed if n != call.call]
                yield Event(
                    "error",
                    call=data,
                    text="repeated a call; not run again",
                    code=ErrorCode.E_INVAL,
                )
                continue
            result = self.system.dispatch(process, call)
            seen[shown] = result.ok
            if result.ok:
                done |= type(call).declared_effects()
            if result.ok and call.call in ENDS_TURN:
                kind: EventKind = "reply" if call.call == "reply" else "ask"
                value = result.value if isinstance(result.value, dict) else {}
                text = str(value.get("text", ""))
                note = ""
                turn = conversation.current
                if kind == "reply" and turn is not None:
                    shown_text = seen_text(conversation)
                    unseen = unseen_numbers(text, shown_text) + unseen_counts(text, shown_text)
                    results = " ".join(m["content"] for m in turn.messages if evidence(m))
                    unnamed = names_no_found_file(text, turn.request, results)
                    note = unmade_claims(text, done, unseen, unnamed)
                yield Event(kind, text=text, call=data, result=result, note=note)
                return
            conversation.add("user", result_message(compact_result(result)))
            yield Event("result", call=data, result=result, text=result.render())
        yield Event(
            "limit",
            code=ErrorCode.E_INVAL,
            text=f"stopped after {self.max_steps} steps without a reply (the step limit); "
            "ask again more specifically, or raise the limit",
        )
