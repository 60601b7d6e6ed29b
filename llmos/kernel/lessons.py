"""What llmos learned from its person: requests taught the right calls (`:teach` in the shell,
`llmos learn import`), turns kept as they were (`:good`) and turns marked never to be shown
(`:bad`). Kept under LLMOS_HOME/learned (sealed with the memory key when memory is encrypted)
and put in the example bank, where the person's own examples rank above the built-ins: with a
fixed small model, what the kernel is shown is what can change."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.grounding import mentioned_paths
from llmos.limits import LESSONS_MAX
from llmos.syscalls.atomic import write_atomic

if TYPE_CHECKING:
    from llmos.kernel.examples import Call, ExampleBank
    from llmos.syscalls.base import Registry

FOLDER = "learned"
PLAIN = "lessons.json"
SEALED = "lessons.sealed"
OFF = "off"
PURPOSE = "lessons"

Kind = Literal["taught", "good", "bad"]
PERSON = ("taught", "good")
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

    def add(
        self,
        request: str,
        calls: Sequence[Call],
        kind: Kind = "taught",
        workspace: str | None = None,
    ) -> Lesson:
        """Keep `request` -> `calls`. The same request (in the same workspace) taught again
        keeps only the newest; a `bad` lesson also drops a good one of the same calls. Over
        the limit, the least used lessons go (bad ones last: they protect)."""
        request = " ".join(request.split())
        if not request:
            raise LlmosError(ErrorCode.E_INVAL, "a lesson needs a request")
        lesson = Lesson(secrets.token_hex(4), request, list(calls), kind, workspace)
        with self._lock:
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

    def used(self, requests: Iterable[str]) -> None:
        """Count a use of the lessons whose requests were shown to the kernel (the least used
        go first when the store is full)."""
        shown = {normal(r) for r in requests}
        now = time.time()
        with self._lock:
            lessons = self._load()
            hit = [x for x in lessons if normal(x.request) in shown and x.kind in PERSON]
            for lesson in hit:
                lesson.uses += 1
                lesson.last_used = now
            if hit:
                self._save(lessons)

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
        return [
            self.add(request, calls, "taught", scope_of(request, workspace))
            for request, calls in found
        ]

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
    """Whether `new` takes `old`'s place: a request taught (or kept) again keeps only the
    newest calls; marking calls bad drops them as an example, and accepting them again drops
    the mark. Lessons of other requests or workspaces stand."""
    if normal(new.request) != normal(old.request) or new.workspace != old.workspace:
        return False
    if new.kind in PERSON and old.kind in PERSON:
        return True
    return new.calls == old.calls


def _worth(lesson: Lesson) -> tuple[int, int, float, float]:
    """Which lesson goes first when the store is full: a good one before a bad one (a bad one
    protects), then the least used, then the least recently used, then the oldest."""
    return (lesson.kind == "bad", lesson.uses, lesson.last_used, lesson.created)
