"""What llmos learned from its person: requests taught the right calls (`:teach` in the shell,
`llmos learn import`), turns kept as they were (`:good`), turns marked never to be shown
(`:bad`), and turns that went right without a word said (`Learner`: ended in a reply, nothing
failed or was undone, and the next request was no correction). Kept under LLMOS_HOME/learned
(sealed with the memory key when memory is encrypted) and put in the example bank, where the
person's own examples rank above the built-ins: with a fixed small model, what the kernel is
shown is what can change."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llmos.atomic import write_atomic
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.grounding import mentioned_paths
from llmos.limits import LEARNED_MAX_CHARS, LESSONS_MAX

if TYPE_CHECKING:
    from llmos.kernel.examples import Call, ExampleBank
    from llmos.syscalls.base import Registry

FOLDER = "learned"
PLAIN = "lessons.json"
SEALED = "lessons.sealed"
OFF = "off"
USES_SAVE_S = 60.0
"""Use counts are written at most this often (and when the system closes)."""
PURPOSE = "lessons"

Kind = Literal["taught", "good", "bad", "learned"]
PERSON = ("taught", "good")
"""Lesson kinds the person made: they outrank learned ones, which never replace them."""
SHOWN = (*PERSON, "learned")
"""Lesson kinds that become examples (`bad` ones only keep an example from being shown)."""


class Sealer(Protocol):
    """What the store needs of the memory's cipher to keep lessons encrypted."""

    def seal(self, record_id: str, purpose: str, data: bytes) -> bytes: ...

    def open(self, record_id: str, purpose: str, blob: bytes) -> bytes: ...


def normal(request: str) -> str:
    """A request as lessons compare them: words lower-cased, spaces collapsed."""
    return " ".join(request.lower().split())


@dataclass
class Lesson:
    """One request and the calls that carry it out, as the person showed or accepted them."""

    id: str
    request: str
    calls: list[dict[str, Any]]
    kind: Kind
    workspace: str | None = None
    """The workspace root whose paths the request names; None for a lesson that holds anywhere."""
    created: float = field(default_factory=time.time)
    uses: int = 0
    last_used: float = 0.0


def scope_of(request: str, workspace: Path | None) -> str | None:
    """The workspace a lesson of `request` holds in: `workspace`'s root when the request names
    a path there ("move old.log to logs/" is about this folder's files), else None (anywhere:
    "keep in mind that ..." is how the person talks everywhere)."""
    if workspace is None:
        return None
    root = workspace.resolve()
    for path in mentioned_paths(request):
        try:
            if (root / path.strip("/")).resolve().is_relative_to(root) and (
                root / path.strip("/")
            ).exists():
                return str(root)
        except OSError:
            continue
    return None


def turn_calls(messages: Sequence[Mapping[str, str]]) -> list[Call]:
    """The calls a finished turn made that went through, in order, as the model wrote them: a
    call answered by an ERROR (refused, failed, sent back) is left out, and so is the closing
    reply when other calls came first (its words are that turn's results, not a pattern)."""
    calls: list[Call] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        after = messages[index + 1]["content"] if index + 1 < len(messages) else ""
        if after.startswith("ERROR:") or '"ok":false' in after[:40]:
            continue
        try:
            data = json.loads(message["content"])
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("call"), str):
            calls.append(data)
    if len(calls) > 1 and calls[-1]["call"] == "reply":
        calls.pop()
    return calls


def check_calls(calls: Any, registry: Registry | None) -> list[Call]:
    """`calls` as a list of call objects the live table accepts (each parsed by `registry`),
    or E_INVAL saying which call is wrong and why."""
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not calls:
        raise LlmosError(ErrorCode.E_INVAL, "calls must be a non-empty list of call objects")
    out: list[Call] = []
    for number, call in enumerate(calls, 1):
        if not isinstance(call, dict) or not isinstance(call.get("call"), str):
            raise LlmosError(ErrorCode.E_INVAL, f"call {number} is not an object with a 'call'")
        if registry is not None:
            try:
                registry.parse(call)
            except LlmosError as exc:
                raise LlmosError(
                    exc.code, f"call {number} ({call['call']}): {exc.message}"
                ) from None
        out.append(json.loads(json.dumps(call)))
    return out


class Lessons:
    """The person's lessons on disk, under `home`/learned. Thread-safe; every change is written
    at once (atomically), so a kill loses nothing already taught."""

    def __init__(self, home: Path, sealer: Sealer | None = None, limit: int = LESSONS_MAX):
        self.folder = home / FOLDER
        self.sealer = sealer
        self.limit = limit
        self._lock = threading.Lock()
        self._lessons: list[Lesson] | None = None
        self._unsaved = False
        self._saved_at = 0.0

    @property
    def _file(self) -> Path:
        return self.folder / (SEALED if self.sealer is not None else PLAIN)

    @property
    def enabled(self) -> bool:
        """Whether lessons are shown to the kernel (`llmos learn off` turns them off)."""
        return not (self.folder / OFF).exists()

    def set_enabled(self, on: bool) -> None:
        """Show lessons to the kernel (on) or not (off); what was learned is kept either way."""
        flag = self.folder / OFF
        if on:
            flag.unlink(missing_ok=True)
        else:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            flag.touch()

    def all(self) -> list[Lesson]:
        """Every lesson, oldest first."""
        with self._lock:
            return list(self._load())

    def _load(self) -> list[Lesson]:
        if self._lessons is not None:
            return self._lessons
        try:
            blob = self._file.read_bytes()
        except FileNotFoundError:
            self._lessons = []
            return self._lessons
        except OSError as exc:
            raise LlmosError(ErrorCode.E_IO, f"lessons {self._file}: {exc}") from exc
        try:
            data = self.sealer.open(PURPOSE, PURPOSE, blob) if self.sealer is not None else blob
            rows = json.loads(data)
            self._lessons = [Lesson(**row) for row in rows]
        except Exception as exc:  # a torn or tampered file is reported, never half-read
            raise LlmosError(ErrorCode.E_IO, f"lessons {self._file} cannot be read: {exc}") from exc
        return self._lessons

    def _save(self, lessons: list[Lesson]) -> None:
        data = json.dumps([asdict(lesson) for lesson in lessons], ensure_ascii=False).encode()
        if self.sealer is not None:
            data = self.sealer.seal(PURPOSE, PURPOSE, data)
        write_atomic(self._file, data)
        self._lessons = lessons
        self._unsaved = False
        self._saved_at = time.time()

    def add(
        self,
        request: str,
        calls: Sequence[Call],
        kind: Kind = "taught",
        workspace: str | None = None,
    ) -> Lesson | None:
        """Keep `request` -> `calls`. The same request (in the same workspace) taught again
        keeps only the newest; a `bad` lesson also drops a good one of the same calls. A
        learned lesson is not kept (None) where the person taught the request or marked these
        calls bad. Over the limit, learned lessons go first, then the least used (bad ones
        last: they protect)."""
        request = " ".join(request.split())
        if not request:
            raise LlmosError(ErrorCode.E_INVAL, "a lesson needs a request")
        lesson = Lesson(secrets.token_hex(4), request, list(calls), kind, workspace)
        with self._lock:
            if kind == "learned" and any(_outranks(old, lesson) for old in self._load()):
                return None
            kept = [old for old in self._load() if not _replaces(lesson, old)]
            kept.append(lesson)
            while len(kept) > self.limit:
                kept.remove(min(kept, key=_worth))
            self._save(kept)
        return lesson

    def forget(self, ident: str | None) -> int:
        """Drop the lesson with this id (every lesson when None); how many went."""
        with self._lock:
            lessons = self._load()
            kept = [] if ident is None else [x for x in lessons if x.id != ident]
            gone = len(lessons) - len(kept)
            if gone:
                self._save(kept)
        return gone

    def merge(self, keep: str, drop: str) -> bool:
        """Fold the learned lesson `drop` into `keep` (its uses added) and drop it; False when
        either is missing or `drop` is not a learned one (the person's are never merged)."""
        with self._lock:
            lessons = self._load()
            kept = next((x for x in lessons if x.id == keep), None)
            gone = next((x for x in lessons if x.id == drop and x.kind == "learned"), None)
            if kept is None or gone is None or kept is gone:
                return False
            kept.uses += gone.uses
            kept.last_used = max(kept.last_used, gone.last_used)
            self._save([x for x in lessons if x is not gone])
        return True

    def used(self, requests: Iterable[str]) -> None:
        """Count a use of the lessons whose requests were shown to the kernel (the least used
        go first when the store is full). Written at most every USES_SAVE_S seconds (and by
        `flush`): counts are a hint, and rewriting the store every turn costs more than a
        count lost to a kill."""
        shown = {normal(r) for r in requests}
        now = time.time()
        with self._lock:
            lessons = self._load()
            hit = [x for x in lessons if normal(x.request) in shown and x.kind in SHOWN]
            for lesson in hit:
                lesson.uses += 1
                lesson.last_used = now
            self._unsaved = self._unsaved or bool(hit)
            if self._unsaved and now - self._saved_at >= USES_SAVE_S:
                self._save(lessons)

    def flush(self) -> None:
        """Write the use counts not yet written."""
        with self._lock:
            if self._unsaved and self._lessons is not None:
                self._save(self._lessons)

    def import_file(
        self, path: Path, registry: Registry | None, workspace: Path | None = None
    ) -> list[Lesson]:
        """Teach every line of a JSONL file (`{"request": "...", "calls": [{...}, ...]}`),
        each call checked against the live table; all or nothing, and a bad line is named. A
        request naming paths of `workspace` is taught for that workspace alone."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LlmosError(ErrorCode.E_IO, f"{path}: {exc}") from exc
        found: list[tuple[str, list[Call]]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise LlmosError(ErrorCode.E_INVAL, "not a JSON object")
                request = row.get("request")
                if not isinstance(request, str) or not request.strip():
                    raise LlmosError(ErrorCode.E_INVAL, "'request' must be a non-empty string")
                found.append((request, check_calls(row.get("calls"), registry)))
            except ValueError as exc:
                raise LlmosError(ErrorCode.E_INVAL, f"{path}:{number}: not JSON ({exc})") from None
            except LlmosError as exc:
                raise LlmosError(exc.code, f"{path}:{number}: {exc.message}") from None
        out = []
        for request, calls in found:
            lesson = self.add(request, calls, "taught", scope_of(request, workspace))
            if lesson is not None:
                out.append(lesson)
        return out

    def teach_bank(self, bank: ExampleBank) -> int:
        """Put the person's lessons in `bank` (nothing when lessons are off); how many."""
        if not self.enabled:
            return 0
        added = 0
        for lesson in self.all():
            if lesson.kind == "bad":
                bank.hide(lesson.request, lesson.calls)
            elif bank.add(lesson.request, lesson.calls, source=lesson.kind, scope=lesson.workspace):
                added += 1
        return added


def _replaces(new: Lesson, old: Lesson) -> bool:
    """Whether `new` takes `old`'s place: a request taught (or kept, or learned) again keeps
    only the newest calls; marking calls bad drops them as an example, and accepting them
    again drops the mark. Lessons of other requests or workspaces stand."""
    if normal(new.request) != normal(old.request) or new.workspace != old.workspace:
        return False
    if new.kind in SHOWN and old.kind in SHOWN:
        return True
    return new.calls == old.calls


def _outranks(old: Lesson, learned: Lesson) -> bool:
    """Whether the person's `old` lesson keeps a `learned` one out: they taught or kept the
    same request, or marked the same calls bad."""
    if normal(old.request) != normal(learned.request) or old.workspace != learned.workspace:
        return False
    return old.kind in PERSON or (old.kind == "bad" and old.calls == learned.calls)


def _worth(lesson: Lesson) -> tuple[int, int, int, float, float]:
    """Which lesson goes first when the store is full: a learned one before the person's, a
    good one before a bad one (a bad one protects), then the least used, then the least
    recently used, then the oldest."""
    return (
        lesson.kind != "learned",
        lesson.kind == "bad",
        lesson.uses,
        lesson.last_used,
        lesson.created,
    )


CORRECTION = re.compile(
    r"^\W*(?:no\b|nope\b|not (?:that|this|what|like|there)\b|wrong\b|that'?s (?:not|wrong)\b|"
    r"that is (?:not|wrong)\b|i (?:meant|said|asked|wanted)\b|actually\b|instead\b|undo\b|"
    r"stop\b|try again\b|again\b|you (?:didn'?t|did not|forgot|missed|were wrong)\b|"
    r"why did(?:n'?t)? you\b|please (?:actually|really)\b)",
    re.IGNORECASE,
)
"""How a request that corrects the one before it opens ("no, I meant the other file")."""

REFERS = re.compile(
    r"\b(?:it|its|that|them|those|these|this one|the same|again|too|also|as well)\b",
    re.IGNORECASE,
)
"""Words by which a request points back at an earlier turn ("what's in it?")."""

QUOTED = re.compile(r"(?<!\w)'([^']{2,})'(?!\w)|\"([^\"]{2,})\"")
"""Text a request quotes: what it gives to be written, searched for or kept."""

PATH_ARGS = frozenset({"path", "src", "dst"})
"""Arguments that name a file: one the request does not name, where it points back, came
from an earlier turn, and the example would teach it as if from nowhere."""

UNDECIDED_MAX = 8
"""Turns kept waiting for the embedder to load (`Learner.settle`); older ones are let go."""

MEANT_AGAIN = 0.75
"""A next request naming the same paths as a turn's and at least this close in meaning
(cosine) asks it again: the turn did not do it. Measured with all-MiniLM-L6-v2: asked again,
"delete temp.csv" / "remove temp.csv" 0.95, "summarise report.md" / "... in one line" 0.80,
"what's in notes.txt" / "show me notes.txt" 0.80; new requests, "read a.txt" / "read b.txt"
0.83 (other paths), "copy a.txt to b.txt" / "now move b.txt to old/" 0.58."""


CHANGING = frozenset({"write", "delete", "remember", "forget"})
"""Effects by which a request asks for something to change."""


def why_not_learned(
    messages: Sequence[Mapping[str, str]],
    registry: Registry | None,
    after_ask: bool = False,
    asks: frozenset[str] | None = None,
) -> tuple[list[Call], str]:
    """The calls a finished turn would teach, and "" when it may be learned, else why not.
    Only a turn that ended in a reply, where no call failed and no answer was sent back, is
    learned; with something its calls changed, deleted or ran after a result was read, only
    when every word those calls were given is the person's (a file's text may have asked for
    them: the kernel must not teach itself what a file told it); where the request asked for
    a change (`asks`, the effects its words allowed), only when some call made one; not an
    answer to a question the kernel asked (`after_ask`), and not longer than LEARNED_MAX_CHARS."""
    if after_ask:
        return [], "it answers a question the kernel asked"
    if not messages or messages[0].get("role") != "user":
        return [], "no request"
    if CORRECTION.search(messages[0]["content"]):
        return [], "it corrects an earlier turn"
    last = _call_of(messages[-1]) if messages[-1].get("role") == "assistant" else None
    if last is None or last.get("call") != "reply":
        return [], "it did not end in a reply"
    for message in messages[1:]:
        text = message["content"]
        if message["role"] != "assistant" and (
            text.startswith(("ERROR:", "CANCELLED:")) or text.startswith('RESULT: {"ok":false')
        ):
            return [], "a call failed or was sent back"
    calls = turn_calls(messages)
    if not [c for c in calls if c["call"] != "reply"]:
        return [], "it made no call but its reply"
    request = messages[0]["content"]
    if REFERS.search(request) and any(
        key in PATH_ARGS and isinstance(value, str) and value.lower() not in request.lower()
        for call in calls
        for key, value in call.items()
    ):
        return [], "it leans on an earlier turn"
    if len(json.dumps({"request": request, "calls": calls})) > LEARNED_MAX_CHARS:
        return [], "too long to be an example"
    try:
        calls = check_calls(calls, registry)
    except LlmosError as exc:
        return [], exc.message
    read = False
    made: set[str] = set()
    for call in calls:
        spec = registry.get(call["call"]) if registry is not None else None
        effects = spec.model.declared_effects() if spec is not None else frozenset()
        if effects and read and not _all_said(call, request):
            return [], f"{call['call']} used what a result said, not the person"
        if effects and not _paths_named(call, request):
            return [], f"{call['call']} acts on a path the request does not name"
        read = read or not effects
        made |= effects
    if asks and asks & CHANGING and not made & CHANGING:
        return [], "it was asked for a change and made none"
    given = json.dumps(calls, ensure_ascii=False).lower()
    for single, double in QUOTED.findall(request):
        quoted = (single or double).strip().lower()
        if quoted and quoted not in given:
            return [], "no call used the text the request quotes"
    return calls, ""


def _call_of(message: Mapping[str, str]) -> dict[str, Any] | None:
    try:
        data = json.loads(message["content"])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _paths_named(call: Call, request: str) -> bool:
    """Whether every path `call` changes is the person's: named in the request whole, or
    each of its parts is ("tuck notes.txt away in old/" moves to old/notes.txt). A path the
    model made up ("never forget: ..." written to mem/last_flight) is no pattern to keep."""
    said = set(re.findall(r"[\w.@~+-]+", request.lower()))
    for key in PATH_ARGS:
        value = call.get(key)
        if not isinstance(value, str) or value.lower() in request.lower():
            continue
        parts = [p for p in value.lower().strip("/").split("/") if p not in ("", ".")]
        if not parts or any(p not in said for p in parts):
            return False
    return True


def _all_said(call: Call, request: str) -> bool:
    """Whether every text argument of `call` is in the person's request."""
    said = request.lower()
    return all(
        value.lower() in said
        for key, value in call.items()
        if key != "call" and isinstance(value, str) and value
    )


def corrects(request: str, earlier: str, similarity: float | None) -> bool:
    """Whether `request` corrects `earlier`, the request just before it, or asks it again
    (the same paths, and its meaning `similarity` at least MEANT_AGAIN, when known): then the
    earlier turn did not do what was asked."""
    if CORRECTION.search(request) or normal(request) == normal(earlier):
        return True
    same = set(mentioned_paths(request)) == set(mentioned_paths(earlier))
    return same and similarity is not None and similarity >= MEANT_AGAIN


@dataclass
class Pending:
    """A turn that may be learned, waiting for the person's next request."""

    request: str
    calls: list[Call]
    scope: str | None


class Learner:
    """Turns that went right become examples without the person saying so, carefully: a turn
    `why_not_learned` accepts waits for the person's next request, and is kept (as a "learned"
    lesson) only if that request neither corrects it nor asks it again, and nothing was undone,
    taught or marked in between (`drop`)."""

    def __init__(self, lessons: Lessons, bank: ExampleBank, registry: Registry | None) -> None:
        self.lessons = lessons
        self.bank = bank
        self.registry = registry
        self.pending: Pending | None = None
        self.undecided: list[tuple[Pending, str]] = []
        """Turns and the request after each, waiting for the embedder to say if it asked the
        turn again."""

    def offer(
        self,
        messages: Sequence[Mapping[str, str]],
        scope: str | None,
        after_ask: bool = False,
        asks: frozenset[str] | None = None,
    ) -> str:
        """Hold a finished turn until the next request; "" when it may be learned, else why
        it will not be."""
        self._decide_waiting()
        calls, why = why_not_learned(messages, self.registry, after_ask, asks)
        self.pending = None if why else Pending(messages[0]["content"], calls, scope)
        return why

    def drop(self) -> None:
        """Forget the waiting turns: the person undid something, taught or marked a turn."""
        self.pending = None
        self.undecided = []

    def settle(self, request: str) -> Lesson | None:
        """The person's next request: learn the waiting turn unless `request` corrects it;
        the lesson learned, or None. While the embedder loads, whether `request` asks the turn
        again cannot be told: the pair waits (UNDECIDED_MAX of them) and is decided once it
        can be, at a later request or turn, never by guessing."""
        self._decide_waiting()
        pending, self.pending = self.pending, None
        if pending is None or not self.lessons.enabled:
            return None
        if corrects(request, pending.request, None):
            return None
        similarity = self.bank.similarity(request, pending.request)
        if similarity is None and self.bank.embedder is not None:
            self.undecided = [*self.undecided, (pending, request)][-UNDECIDED_MAX:]
            return None
        return self._learn(pending, request, similarity)

    def _decide_waiting(self) -> None:
        """Decide the pairs that waited for the embedder, now that it may have loaded."""
        waiting, self.undecided = self.undecided, []
        for pending, request in waiting:
            similarity = self.bank.similarity(request, pending.request)
            if similarity is None:
                self.undecided.append((pending, request))
            elif self.lessons.enabled:
                self._learn(pending, request, similarity)

    def _learn(self, pending: Pending, request: str, similarity: float | None) -> Lesson | None:
        if corrects(request, pending.request, similarity):
            return None
        lesson = self.lessons.add(pending.request, pending.calls, "learned", pending.scope)
        if lesson is not None:
            self.bank.add(lesson.request, lesson.calls, source="learned", scope=lesson.workspace)
        return lesson
