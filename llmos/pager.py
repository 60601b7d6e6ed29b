"""The pager: keeps a conversation inside the model's context by swapping whole turns out to
recall memory (behind a running summary) and paging the relevant ones back in before each step.

Budget, in prompt tokens counted with the model's own tokenizer: `limit` is the context window
less the room kept for the kernel's output. The system prompt is fixed; of the room left, the
conversation may fill `high` before the oldest turns go out, and paging stops below `low`.
A turn is stored in recall (durably) before it leaves the context, so a crash while paging
loses nothing; the session (summary and resident turns) is saved after every change.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

from llmos.atomic import write_atomic
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import context_of, count_tokens, decode_speed, text_tokens
from llmos.kernel.examples import asks_only, is_question
from llmos.kernel.loop import Conversation, Turn
from llmos.kernel.prompt import (
    MEMORY_HEAD,
    PAGE_REPLY,
    PAGE_SAID_ON,
    memory_block,
    memory_pages,
)
from llmos.limits import (
    CONTEXT_HIGH,
    CONTEXT_LOW,
    RECALL_K,
    RECALL_MIN_SCORE,
    RECALL_TOKENS,
    SUMMARY_MAX_SECONDS,
    SUMMARY_TOKENS,
)
from llmos.memory.when import resolved, window
from llmos.syscalls.services import ANSWERED_KEY, recallable

if TYPE_CHECKING:
    from llmos.kernel.loop import Kernel
    from llmos.memory.cipher import RecordCipher
    from llmos.memory.memory import Memory
    from llmos.syscalls.context import Process
    from llmos.syscalls.services import Allow, Hit, Record

SESSIONS_DIR = "sessions"
PAGE_STEP_CHARS = 600
"""A step's call and result are cut to this many characters in a page's text (the embedding
sees the start of a page; the store keeps the turn's messages whole in the page's metadata)."""
NOTE_CHARS = 400
"""A recalled page is shown to the model cut to this many characters."""
AROUND_CHARS = 240
"""A recalled page's neighbours (shown for context) are cut to this many characters."""
PAGE_AROUND = 1
"""How many pages either side of a recalled one are shown with it."""
CONTEXT_CHARS = 300
"""What was said before a page is cut to this many characters in its vector's text (the
embedder reads 256 tokens: the page's own words must fit after it)."""
LINE_CHARS = 160
"""The request and the reply are cut to this many characters in an extractive summary line."""


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def said_when(moment: float) -> str:
    """When a turn was said, as a person writes it ("25 May 2023, 10:02"): a reply that quotes
    a page's date quotes it so."""
    local = dt.datetime.fromtimestamp(moment)
    return f"{local.day} {local:%B %Y, %H:%M}"


def page_text(turn: Turn) -> str:
    """A turn as one recall page: the request and the reply first (what a search most often
    matches), then its steps."""
    lines = [f"[turn {turn.number}, {said_when(turn.started)}] user: {turn.request}"]
    if turn.reply:
        lines.append(f"{PAGE_REPLY}{turn.reply}")
    meant = time_words(f"{turn.request}\n{turn.reply}", turn.started)
    if meant:
        lines.append(meant)
    steps = turn.messages[1:]
    if turn.reply:
        steps = steps[:-1]
    for message in steps:
        prefix = "→ " if message["role"] == "assistant" else ""
        lines.append(prefix + _cut(message["content"], PAGE_STEP_CHARS))
    return "\n".join(lines)


_MEMORY_ANSWER_CALLS = frozenset({"mem.search", "reply", "ask"})


def answered_from_memory(turn: Turn) -> bool:
    """Whether `turn` was a question the kernel answered from memory and nothing else, by
    searching it or, for a request that only asks, from the pages recalled for it: its page
    holds no fact of the person's, only memory said again (and the model's guesses). Paged in
    for a later question, such pages crowded out the records they came from (on conv-30,
    evidence among the five pages fell from 72% to 66% of the questions once earlier questions
    were indexed) and their wrong answers were repeated. A request that tells as well as asks
    ("Dance is my go-to. Any tips?") is the person's own words, whatever was recalled."""
    calls = turn.calls
    if not is_question(turn.request) or any(c not in _MEMORY_ANSWER_CALLS for c in calls):
        return False
    return "mem.search" in calls or (bool(turn.recalled) and asks_only(turn.request))


def recall_text(turn: Turn) -> str:
    """A paged-out turn as it is shown again when recalled. A turn that was only talk (request,
    then reply) shows only what the person said: the kernel's words then hold no fact of the
    person's, and a small model shown a recalled "Noted." copies it as its answer. A turn with
    syscalls shows them, their results and the reply, which reports what they found."""
    head = f"[turn {turn.number}, {said_when(turn.started)}] user: {turn.request}"
    if len(turn.messages) <= 2:
        meant = time_words(turn.request, turn.started)
        return f"{head}\n{meant}" if meant else head
    return "\n".join([head, *page_text(turn).splitlines()[1:]])


SHED_CUTS = 8
"""How many times a turn's results may be halved to fit the context (1/256 of one is left)."""

SHED_MARK = " ...(cut: the context is full)"
"""The end of a result that was cut to fit the context."""


def _cut_longest_result(turn: Turn) -> bool:
    """Halve the longest RESULT of `turn` (at least 400 characters long), marked as cut: what
    is left when its recalled pages are gone and it still outgrows the context (a search that
    found long pages, then a reply sent back). False when there is none to cut."""
    longest = max(
        (
            i
            for i, m in enumerate(turn.messages)
            if m["role"] == "user" and m["content"].startswith("RESULT: ")
        ),
        key=lambda i: len(turn.messages[i]["content"]),
        default=None,
    )
    if longest is None:
        return False
    content = turn.messages[longest]["content"].removesuffix(SHED_MARK)
    if len(content) < 400:
        return False
    turn.messages[longest] = {
        **turn.messages[longest],
        "content": content[: len(content) // 2] + SHED_MARK,
    }
    return True


def time_words(text: str, moment: float) -> str:
    """What the relative time words of `text` meant when it was said ("(said on 25 May 2023:
    last Saturday = 20 May 2023)"), or "" when it has none."""
    said = dt.date.fromtimestamp(moment)
    dates = resolved(text, said)
    return f"{PAGE_SAID_ON}{said.day} {said:%B %Y}: {'; '.join(dates)})" if dates else ""


def _copies(summary: str, system: str) -> bool:
    """Whether a written summary repeats the system prompt instead of the conversation (a
    small model continuing its prompt sometimes does): then the extracted one is used."""
    lines = [line.strip("- ").strip() for line in summary.splitlines()]
    return any(len(line) > 30 and line in system for line in lines)


_NUMBER = re.compile(r"\d[\d,.:/-]*\d|\d")


def summary_line(turn: Turn) -> str:
    """One turn in an extractive summary."""
    line = f"- turn {turn.number}: user: {_cut(turn.request, LINE_CHARS)}"
    if turn.reply:
        line += f" → {_cut(turn.reply, LINE_CHARS)}"
    return line


@dataclass(frozen=True)
class Budget:
    """The token budget of one prompt (see the module's docstring)."""

    limit: int
    fixed: int
    high: int
    low: int

    @classmethod
    def of(cls, limit: int, fixed: int, high: float, low: float) -> Budget:
        """Watermarks placed over the room the system prompt leaves."""
        room = max(0, limit - fixed)
        return cls(limit, fixed, fixed + int(room * high), fixed + int(room * low))


@dataclass(frozen=True)
class Recall:
    """A page brought back into the context."""

    id: str
    score: float
    text: str
    turn: int | None
    around: tuple[tuple[str, int], ...] = ()
    """The pages said just before and after it, shown with it (their ids and turns)."""


@dataclass
class PagerStats:
    """What the pager did, for `:mem` and the long-conversation checks."""

    prompt_tokens: int = 0
    max_prompt_tokens: int = 0
    turns_out: int = 0
    last_summary_kind: str = ""
    model_summaries: int = 0
    extractive_summaries: int = 0
    last_recalled: list[Recall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    page_out_ms: list[float] = field(default_factory=list)
    """Every page-out's store time (the summary not included), for the benches."""
    summary_ms: list[float] = field(default_factory=list)
    page_in_ms: list[float] = field(default_factory=list)
    """Every page-in that searched (embedding the request, querying, choosing)."""

    @property
    def page_outs(self) -> int:
        """Page-outs so far."""
        return len(self.page_out_ms)

    @property
    def last_page_out_ms(self) -> float:
        """The latest page-out's store time (0 before any)."""
        return self.page_out_ms[-1] if self.page_out_ms else 0.0

    @property
    def last_summary_ms(self) -> float:
        """The latest summary's time (0 before any)."""
        return self.summary_ms[-1] if self.summary_ms else 0.0

    @property
    def last_page_in_ms(self) -> float:
        """The latest page-in's time (0 before any)."""
        return self.page_in_ms[-1] if self.page_in_ms else 0.0


class SessionFile:
    """A conversation saved as JSON under LLMOS_HOME/sessions, replaced atomically, so
    `llmos --resume` continues it after a restart or a crash.

    With `encrypt` (memory_encrypt) the whole conversation is sealed under the memory key
    (AES-GCM, bound to the session id) and the file holds only its id and the ciphertext; a
    sealed file is opened whatever `encrypt` says, so turning encryption off still resumes it.
    """

    def __init__(self, home: Path, session_id: str | None = None, *, encrypt: bool = False) -> None:
        self.home = home
        self.folder = home / SESSIONS_DIR
        self.id = session_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.path = self.folder / f"{self.id}.json"
        self.encrypt = encrypt
        self._cipher: RecordCipher | None = None

    @classmethod
    def latest(cls, home: Path, *, encrypt: bool = False) -> SessionFile | None:
        """The most recently saved session, if there is one."""
        folder = home / SESSIONS_DIR
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        return cls(home, files[-1].stem, encrypt=encrypt) if files else None

    def _cipher_now(self, *, create: bool) -> RecordCipher:
        if self._cipher is None:
            from llmos.memory.cipher import RecordCipher, memory_key_path

            path = memory_key_path(self.home)
            self._cipher = (
                RecordCipher.from_key_file(path)
                if create
                else RecordCipher.existing(path, f"session {self.id}")
            )
        return self._cipher

    def save(self, conversation: Conversation, process: str) -> None:
        """Write the session: a temporary file, fsync, then rename over the old one."""
        data: dict[str, object] = {
            "id": self.id,
            "process": process,
            "saved": time.time(),
            "summary": conversation.summary,
            "paged_out": conversation.paged_out,
            "turns": [t.to_json() for t in conversation.turns],
        }
        body = json.dumps(data, ensure_ascii=False).encode()
        if self.encrypt:
            sealed = self._cipher_now(create=True).seal(self.id, "session", body)
            body = json.dumps({"id": self.id, "sealed": base64.b64encode(sealed).decode()}).encode()
        write_atomic(self.path, body)

    def load(self, conversation: Conversation) -> None:
        """Fill `conversation` from the saved session (E_NOENT or E_INVAL when it cannot)."""
        try:
            data = json.loads(self.path.read_text())
            if "sealed" in data:
                blob = base64.b64decode(data["sealed"], validate=True)
                data = json.loads(self._cipher_now(create=False).open(self.id, "session", blob))
            turns = [Turn.from_json(t) for t in data["turns"]]
            summary, paged_out = str(data["summary"]), int(data["paged_out"])
        except FileNotFoundError:
            raise LlmosError(ErrorCode.E_NOENT, f"no saved session {self.id!r}") from None
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise LlmosError(
                ErrorCode.E_INVAL, f"session file {self.path} is damaged: {exc}"
            ) from None
        conversation.turns, conversation.summary, conversation.paged_out = turns, summary, paged_out


class Pager:
    """Pages one conversation's turns out to recall memory and back in, within a token budget."""

    def __init__(
        self,
        session: SessionFile | None = None,
        *,
        high: float = CONTEXT_HIGH,
        low: float = CONTEXT_LOW,
        recall_tokens: int = RECALL_TOKENS,
        summary_tokens: int = SUMMARY_TOKENS,
        summary_seconds: float = SUMMARY_MAX_SECONDS,
        recall_k: int = RECALL_K,
        min_score: float = RECALL_MIN_SCORE,
        archival: bool = True,
    ) -> None:
        if not 0.0 < low < high <= 1.0:
            raise LlmosError(ErrorCode.E_INVAL, "watermarks need 0 < low < high <= 1")
        self.session = session
        self._id = session.id if session else f"unsaved-{uuid.uuid4().hex[:8]}"
        self.high, self.low = high, low
        self.recall_tokens = recall_tokens
        self.summary_tokens = summary_tokens
        self.summary_seconds = summary_seconds
        self.recall_k = recall_k
        self.min_score = min_score
        self.archival = archival
        """Also page in kept facts (archival memory) the process may search, not only turns."""
        self.stats = PagerStats()
        self._fixed: tuple[tuple[str, ...], int] | None = None
        self._before = ""
        """The request of the last turn paged out: the context of the next page's vector."""
        self._told: dict[str, str] = {}
        """Each page's first line (what the person said), by page id: pages never change."""

    @property
    def session_id(self) -> str:
        """The id recall pages of this conversation are filed under."""
        return self._id

    def budget(self, kernel: Kernel) -> Budget:
        """The budget for the kernel's model and its current system prompt."""
        messages = kernel.messages(Conversation())
        head = tuple(m["content"] for m in messages)
        if self._fixed is None or self._fixed[0] != head:
            self._fixed = (head, count_tokens(kernel.backend, messages))
        window = context_of(kernel.backend) or kernel.system.settings.n_ctx
        return Budget.of(window - kernel.max_tokens, self._fixed[1], self.high, self.low)

    def tokens(self, kernel: Kernel, conversation: Conversation) -> int:
        """The whole prompt's size now."""
        return count_tokens(kernel.backend, kernel.messages(conversation))

    def prepare(
        self, kernel: Kernel, process: Process, conversation: Conversation
    ) -> Iterator[str]:
        """Before a step: page out if the prompt is above the high watermark less the room kept
        for recall, then page in what is relevant to the request. Yields a line for each thing
        it did (the shell shows them)."""
        budget = self.budget(kernel)
        total = self.tokens(kernel, conversation)
        if total > budget.high - self._recall_room(budget):
            line = self.page_out(kernel, process, conversation, budget, total)
            if line:
                yield line
            total = self.tokens(kernel, conversation)
        line = self.page_in(kernel, process, conversation, budget, total)
        if line:
            yield line
            total = self.tokens(kernel, conversation)
        if total > budget.limit:
            line = self._shed(kernel, conversation, budget)
            if line:
                yield line
                total = self.tokens(kernel, conversation)
        self.stats.prompt_tokens = total
        self.stats.max_prompt_tokens = max(self.stats.max_prompt_tokens, total)

    def _shed(self, kernel: Kernel, conversation: Conversation, budget: Budget) -> str:
        """When the turn in progress has grown past the limit with nothing older left to page
        out (its own results on top of what was recalled for it), drop what was recalled for
        it, the earliest first, then halve its longest result until it fits: a prompt over the
        window is refused (E_TOOBIG, the turn lost), while the recalled pages stay in memory
        for the next request and a cut result says it was cut."""
        turn = conversation.current
        if turn is None:
            return ""
        dropped = 0
        for index in sorted(turn.notes):
            if self.tokens(kernel, conversation) <= budget.limit:
                break
            if turn.notes[index].startswith(MEMORY_HEAD):
                del turn.notes[index]
                dropped += 1
        cut = 0
        while cut < SHED_CUTS and self.tokens(kernel, conversation) > budget.limit:
            if not _cut_longest_result(turn):
                break
            cut += 1
        said = []
        if dropped:
            said.append(f"dropped {dropped} recalled block(s)")
        if cut:
            said.append(f"cut the turn's longest result {cut} time(s)")
        return f"{' and '.join(said)} to stay within the context" if said else ""

    def _recall_room(self, budget: Budget) -> int:
        """The part of the room below the high watermark kept free for recalled pages."""
        return min(self.recall_tokens, (budget.high - budget.low) // 2)

    def _memory(self, process: Process) -> Memory | None:
        from llmos.memory.memory import Memory

        try:
            return process.services.get(Memory)
        except LlmosError as exc:
            self.stats.errors.append(f"{exc.code}: {exc.message}")
            return None

    def page_out(
        self,
        kernel: Kernel,
        process: Process,
        conversation: Conversation,
        budget: Budget,
        total: int,
    ) -> str:
        """Swap the oldest finished turns out until the prompt is below the low watermark:
        first into recall (durable), then out of the context behind the new summary."""
        from llmos.memory.memory import CONTEXT_KEY
        from llmos.memory.store import NewRecord

        memory = self._memory(process)
        if memory is None:
            return "memory is not available: nothing can be paged out"
        evicted: list[Turn] = []
        estimate = total
        for turn in conversation.turns[:-1]:
            if estimate <= budget.low:
                break
            evicted.append(turn)
            estimate -= self._turn_tokens(kernel, turn)
        if not evicted:
            return ""
        start = time.perf_counter()
        before = [self._before, *(t.request for t in evicted[:-1])]
        records = [
            NewRecord(
                text=page_text(turn),
                meta={
                    "session": self.session_id,
                    "turn": turn.number,
                    "said": turn.started,
                    "process": process.name,
                    "source": "pager",
                    "messages": json.dumps(turn.messages, ensure_ascii=False),
                    # embedded with the page (what it answers), not shown with it
                    CONTEXT_KEY: _cut(said, CONTEXT_CHARS),
                    ANSWERED_KEY: answered_from_memory(turn),
                },
            )
            for turn, said in zip(evicted, before, strict=True)
        ]
        try:
            memory.store_many(records, "recall")
        except LlmosError as exc:
            self.stats.errors.append(f"{exc.code}: {exc.message}")
            return f"page-out failed, turns kept in context: {exc.message}"
        stored = time.perf_counter()
        self._before = evicted[-1].request
        summary, kind = self.summarize(kernel, conversation, evicted)
        done = time.perf_counter()
        conversation.turns = conversation.turns[len(evicted) :]
        conversation.summary = summary
        conversation.paged_out = evicted[-1].number
        self.save(conversation, process)
        stats = self.stats
        stats.turns_out += len(evicted)
        stats.last_summary_kind = kind
        stats.page_out_ms.append((stored - start) * 1000)
        stats.summary_ms.append((done - stored) * 1000)
        first, last = evicted[0].number, evicted[-1].number
        span = f"turn {first}" if first == last else f"turns {first}-{last}"
        return f"paged out {span} to memory ({kind} summary)"

    def _turn_tokens(self, kernel: Kernel, turn: Turn) -> int:
        if not turn.tokens or not turn.done:
            text = "".join(m["content"] for m in turn.rendered())
            turn.tokens = text_tokens(kernel.backend, text) + 5 * len(turn.messages)
        return turn.tokens

    def summarize(
        self, kernel: Kernel, conversation: Conversation, evicted: list[Turn]
    ) -> tuple[str, str]:
        """The new running summary: the old one plus the evicted turns, written by the kernel's
        model when its estimated cost is within `summary_seconds`, else extracted."""
        if self._model_cost(kernel) <= self.summary_seconds:
            try:
                text = self._model_summary(kernel, conversation, evicted)
            except LlmosError as exc:
                self.stats.errors.append(f"summary: {exc.code}: {exc.message}")
            else:
                if text and not _copies(text, kernel.system_message()):
                    self.stats.model_summaries += 1
                    return self._with_lost_numbers(kernel, text, evicted), "model"
        self.stats.extractive_summaries += 1
        return self._extractive(kernel, conversation.summary, evicted), "extractive"

    def _with_lost_numbers(self, kernel: Kernel, summary: str, evicted: list[Turn]) -> str:
        """A written summary plus the extracted line of each evicted turn whose request held a
        number the summary left out (a code, a date, an amount: the facts most asked about).
        To stay within its budget the written lines give way, last first, down to the first;
        then the number lines, oldest first (their turns are in recall memory all the same).
        The written summary never gives way whole: it is all that is left of the turns before."""
        lost = [
            summary_line(t)
            for t in evicted
            if any(n not in summary for n in _NUMBER.findall(t.request))
            and not answered_from_memory(t)
        ]
        written = summary.splitlines()

        def over() -> bool:
            return text_tokens(kernel.backend, "\n".join([*written, *lost])) > self.summary_tokens

        while len(written) > 1 and lost and over():
            written.pop()
        while lost and over():
            lost.pop(0)
        return "\n".join([*written, *lost])

    def _model_cost(self, kernel: Kernel) -> float:
        """Seconds the model would take to write a summary, from its measured decode speed
        (the prompt it continues is already in its KV cache); infinite when unknown."""
        rate = decode_speed(kernel.backend)
        if rate <= 0:
            return 0.0 if math.isinf(self.summary_seconds) else math.inf
        return self.summary_tokens / rate

    def _model_summary(
        self, kernel: Kernel, conversation: Conversation, evicted: list[Turn]
    ) -> str:
        """Ask the model for the summary, continuing the prompt it already holds (system,
        summary, the evicted turns) so only the instruction is prefilled."""
        head = Conversation(turns=evicted, summary=conversation.summary)
        head.paged_out = conversation.paged_out
        first, last = evicted[0].number, evicted[-1].number
        words = max(20, self.summary_tokens * 3 // 5)
        ask = (
            f"Write the new SUMMARY of turns 1-{last}: the old summary (if any) plus turns "
            f"{first}-{last} above, in at most {words} words. Keep every name, number, date "
            "and fact the user gave. Write only the summary of what was said in those turns "
            "(not the rules above), as short lines starting with '- '."
        )
        messages = [*kernel.messages(head), {"role": "user", "content": ask}]
        out = kernel.backend.complete(messages, constraint=None, max_tokens=self.summary_tokens)
        return out.text.strip()

    def _extractive(self, kernel: Kernel, old: str, evicted: list[Turn]) -> str:
        """The old summary's lines plus one line per evicted turn (but a question answered
        from memory), oldest lines dropped to fit the summary's budget (they are in recall,
        where page-in finds them)."""
        lines = [line for line in old.splitlines() if line.startswith("- turn ")]
        # A question answered from memory is left out: its answer, right or a guess, came
        # back as the answer to later questions ("Jon and Gina both like to destress by
        # dancing." to "When was Jon in Rome?"); the records it came from are in recall.
        lines += [summary_line(t) for t in evicted if not answered_from_memory(t)]
        while (
            len(lines) > 1 and text_tokens(kernel.backend, "\n".join(lines)) > self.summary_tokens
        ):
            lines.pop(0)
        return "\n".join(lines)

    def page_in(
        self,
        kernel: Kernel,
        process: Process,
        conversation: Conversation,
        budget: Budget,
        total: int,
    ) -> str:
        """Recall the pages most relevant to the current request that are not in the context
        yet, within the recall budget and below the high watermark (what lies above it is the
        turn's own room to grow), shown before the newest message and marked as recalled."""
        turn = conversation.current
        if turn is None or not turn.messages:
            return ""
        if conversation.paged_out == 0 and not self.archival:
            return ""
        memory = self._memory(process)
        if memory is None:
            return ""
        if conversation.paged_out == 0 and memory.db.count("archival") == 0:
            return ""
        start = time.perf_counter()
        try:
            hits = self._search(memory, process, turn.request, conversation.paged_out > 0)
        except LlmosError as exc:
            self.stats.errors.append(f"{exc.code}: {exc.message}")
            return ""
        shown = {i for t in conversation.turns for i in t.recalled}
        # After a crash between a page-out and the session's save, a turn can be both
        # resident and in recall (stored twice, even): show each turn once.
        turns = {t.number for t in conversation.turns}
        room = min(self.recall_tokens, budget.high - total)
        chosen: list[Recall] = []
        for hit in hits:
            if hit.id in shown:  # `_search` gives only hits of at least `min_score`
                continue
            recall = self._recall(hit)
            if recall.turn is not None and recall.turn in turns:
                continue
            cost = text_tokens(kernel.backend, recall.text) + 2
            if cost > room:
                continue
            wider = self._around(memory, recall, turns, shown)
            more = text_tokens(kernel.backend, wider.text) + 2 if wider.around else room + 1
            recall, cost = (wider, more) if more <= room else (recall, cost)
            room -= cost
            chosen.append(recall)
            turns.update(n for _, n in recall.around)
            if recall.turn is not None:
                turns.add(recall.turn)
            shown.update(i for i, _ in recall.around)
        self.stats.page_in_ms.append((time.perf_counter() - start) * 1000)
        if not chosen:
            return ""
        index = len(turn.messages) - 1
        lines = [r.text for r in chosen]
        old = turn.notes.get(index)
        if old:
            lines = [*memory_pages(old), *lines]
        turn.notes[index] = memory_block(lines)
        turn.recalled += [i for r in chosen for i in (r.id, *(n for n, _ in r.around))]
        turn.tokens = 0
        self.stats.last_recalled = chosen
        where = ", ".join(f"turn {r.turn}" if r.turn else "a kept fact" for r in chosen)
        return f"recalled {len(chosen)} page(s) from memory: {where}"

    def told(self, process: Process) -> str:
        """The first line of each of this conversation's pages, oldest first: what the person
        said, all of it, beyond the pages paged in. Checks of what a question takes as said
        (`records.false_premise`) read it; pages of questions answered from memory are left
        out. Each page is read once."""
        memory = self._memory(process)
        if memory is None:
            return ""
        try:
            ids = memory.db.session_ids("recall", self.session_id)
            missing = [i for i in ids if i not in self._told]
            for record in memory.db.get_many(missing):
                line = record.text.split("\n", 1)[0]
                self._told[record.id] = line if recallable(record) else ""
        except LlmosError as exc:
            self.stats.errors.append(f"{exc.code}: {exc.message}")
            return ""
        return "\n".join(self._told[i] for i in ids if self._told.get(i))

    def _search(self, memory: Memory, process: Process, query: str, recall: bool) -> list[Hit]:
        """Hits from this conversation's recall pages and, if allowed, the kept facts, each in
        its own search's order and at least `min_score`, taken in turns: a page's score adds
        its word match to its cosine, a kept fact's is a cosine alone, so the two do not sort
        together (sorted, pages matching a word pushed the kept facts out)."""
        pages: list[Hit] = []
        facts: list[Hit] = []
        if recall:
            pages = memory.search(
                query,
                k=self.recall_k,
                collections=("recall",),
                session=self.session_id,
                allow=recallable,
                wait=False,
                min_score=self.min_score,
                during=window(query, dt.date.today()),
            )
        may, allow = self._archival_allow(process)
        if may:
            facts = memory.search(
                query,
                k=self.recall_k,
                collections=("archival",),
                allow=allow,
                wait=True,  # a fact told a moment ago is what the next request asks about
                min_score=self.min_score,
            )
        taken = [hit for pair in zip_longest(pages, facts) for hit in pair if hit is not None]
        return taken[: self.recall_k]

    def _around(self, memory: Memory, recall: Recall, turns: set[int], shown: set[str]) -> Recall:
        """A recalled turn's page with the pages said just before and after it (PAGE_AROUND
        each side) that are neither in the context nor shown already: the question a message
        answers and the reply it got are where its meaning is ("Got any fave styles?" then
        "Contemporary dance is so expressive"). On a LoCoMo conversation the evidence was in
        the 5 pages recalled for 64% of the questions, in those pages and their neighbours
        for 72%. The neighbours are cut shorter than the page itself."""
        if recall.turn is None:
            return recall
        try:
            near = memory.around("recall", self.session_id, recall.turn, PAGE_AROUND, PAGE_AROUND)
        except LlmosError as exc:
            self.stats.errors.append(f"{exc.code}: {exc.message}")
            return recall
        parts: list[str] = []
        around: list[tuple[str, int]] = []
        for record in near:
            if record.id == recall.id:
                parts.append(recall.text)
                continue
            page = self._page(record, recall.score)
            fresh = page.turn not in turns and record.id not in shown
            if page.turn is not None and fresh and recallable(record):
                parts.append(_cut(page.text, AROUND_CHARS))
                around.append((record.id, page.turn))
        if not around:
            return recall
        return Recall(recall.id, recall.score, "\n".join(parts), recall.turn, tuple(around))

    def _archival_allow(self, process: Process) -> tuple[bool, Allow | None]:
        """Whether kept facts are paged in for this process, and its mem.search filter (the
        pager shows it nothing a mem.search of its own could not find)."""
        if not self.archival or process.caps.find("mem.search", []) is None:
            return False, None
        from llmos.syscalls.mem import search_filter

        return True, search_filter(process)

    @staticmethod
    def _recall(hit: Hit) -> Recall:
        """A hit as the page shown again."""
        return Pager._page(hit.record, hit.score)

    @staticmethod
    def _page(record: Record, score: float) -> Recall:
        """A stored record as the page shown again: a recall page rebuilt as its turn (dated
        when said), a kept fact with the day it was kept."""
        if record.collection == "recall":
            turn = record.meta.get("turn")
            number = int(turn) if isinstance(turn, int | float | str) else None
            text = record.text
            if number is not None and isinstance(record.meta.get("messages"), str):
                try:
                    messages = json.loads(str(record.meta["messages"]))
                    from llmos.memory.memory import said_at

                    text = recall_text(Turn(number, messages, started=said_at(record)))
                except (ValueError, KeyError, TypeError):
                    text = record.text
            return Recall(record.id, score, _cut(text, NOTE_CHARS), number)
        when = time.strftime("%Y-%m-%d", time.localtime(record.created))
        return Recall(
            record.id, score, _cut(f"[kept fact, {when}] {record.text}", NOTE_CHARS), None
        )

    def save(self, conversation: Conversation, process: Process) -> None:
        """Save the session if it has a file (failures are noted, never raised: the turn goes
        on, and recall memory already holds what was paged out)."""
        if self.session is None:
            return
        try:
            self.session.save(conversation, process.name)
        except OSError as exc:
            self.stats.errors.append(f"E_IO: cannot save the session: {exc}")
        except LlmosError as exc:  # the memory key unreadable: the turn goes on all the same
            self.stats.errors.append(f"{exc.code}: cannot save the session: {exc.message}")

    def describe(self, kernel: Kernel, conversation: Conversation) -> str:
        """What `:mem` shows: the budget, the summary, what is resident and what was recalled."""
        budget = self.budget(kernel)
        total = self.tokens(kernel, conversation)
        stats = self.stats
        resident = conversation.turns
        lines = [
            f"session {self.session_id}",
            f"context: {total} of {budget.limit} tokens (system prompt {budget.fixed}; "
            f"pages out above {budget.high}, down to {budget.low}); most so far "
            f"{stats.max_prompt_tokens}",
        ]
        if resident:
            span = f"{resident[0].number}-{resident[-1].number}"
            lines.append(f"resident: {len(resident)} turn(s), {span}")
        else:
            lines.append("resident: none")
        lines.append(
            f"paged out: turns 1-{conversation.paged_out} in recall memory "
            f"({stats.page_outs} page-outs this session, last {stats.last_page_out_ms:.1f} ms "
            f"+ {stats.last_summary_kind or 'no'} summary {stats.last_summary_ms:.1f} ms)"
            if conversation.paged_out
            else "paged out: nothing yet"
        )
        if conversation.summary:
            lines.append("summary:")
            lines += [f"  {line}" for line in conversation.summary.splitlines()]
        if stats.last_recalled:
            lines.append(f"recalled last (page-in {stats.last_page_in_ms:.1f} ms):")
            lines += [f"  {r.score:.2f}  {_cut(r.text, 100)}" for r in stats.last_recalled]
        else:
            lines.append("recalled: nothing yet")
        for error in stats.errors[-3:]:
            lines.append(f"error: {error}")
        return "\n".join(lines)


def resume_conversation(
    home: Path, session_id: str | None = None, *, encrypt: bool = False
) -> Conversation:
    """A conversation continued from its saved session (the latest when no id is given), with
    a pager filing into the same recall pages; E_NOENT when there is none. With `encrypt`
    (memory_encrypt) it is saved sealed from now on."""
    session = (
        SessionFile(home, session_id, encrypt=encrypt)
        if session_id
        else SessionFile.latest(home, encrypt=encrypt)
    )
    if session is None:
        raise LlmosError(ErrorCode.E_NOENT, "there is no saved session to resume")
    conversation = Conversation(pager=Pager(session))
    session.load(conversation)
    return conversation


def new_conversation(home: Path, *, encrypt: bool = False) -> Conversation:
    """A fresh conversation with a pager and its own saved session (sealed with `encrypt`)."""
    return Conversation(pager=Pager(SessionFile(home, encrypt=encrypt)))


__all__ = [
    "Budget",
    "Pager",
    "PagerStats",
    "SessionFile",
    "new_conversation",
    "resume_conversation",
]
