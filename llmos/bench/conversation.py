"""The long conversation: facts told in the first turns, a couple of hundred turns of other
talk, then questions about the facts, answered by the kernel's real model with whatever the
pager brings back. Shared by `llmos bench conversation` (prints figures) and the integration
test (asserts them).

The other talk is replayed (the kernel's replies to it are given, not decoded) so a run takes
minutes, not hours; everything else is real: the model's tokenizer counts the budget before
every step, turns page out to the SQLite store and the Chroma index, and the questions are
decoded by the model from a prompt the pager assembled.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.bench.dispatch import percentile
from llmos.kernel.backend import Completion, Message
from llmos.kernel.loop import Conversation, Kernel, Turn
from llmos.limits import SUMMARY_MAX_SECONDS
from llmos.pager import Pager, SessionFile

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmos.config import Settings
    from llmos.kernel.backend import LlamaCppBackend
    from llmos.kernel.grammar import Constraint
    from llmos.syscalls.context import Process
    from llmos.system import System


@dataclass(frozen=True)
class Fact:
    """Something the person says early, asked about later in other words."""

    said: str
    question: str
    answer: str


FACTS = (
    Fact("My gym locker code is 4512.", "What's the code for my locker at the gym?", "4512"),
    Fact("My sister Ilse lives in Rotterdam.", "In which city does my sister live?", "Rotterdam"),
    Fact(
        "The wifi password at the cabin is tangerine42.",
        "What was the cabin's wifi password?",
        "tangerine42",
    ),
    Fact("I parked the car on level 3, spot B7.", "Where did I leave the car?", "B7"),
    Fact(
        "My dentist appointment is on Thursday at 10:30.",
        "At what time is my dentist appointment?",
        "10:30",
    ),
)

TOPICS = (
    "volcanoes",
    "the Roman empire",
    "sourdough bread",
    "jazz piano",
    "honeybees",
    "black holes",
    "the French revolution",
    "tomato plants",
    "chess openings",
    "electric cars",
    "origami",
    "the Amazon river",
    "penguins",
    "solar panels",
    "Japanese tea",
    "marathon training",
    "medieval castles",
    "coral reefs",
    "the printing press",
    "octopuses",
    "bicycle repair",
    "the Moon landing",
    "coffee roasting",
    "glaciers",
    "the violin",
    "desert plants",
)
ASKS = (
    "Tell me one surprising thing about {t}.",
    "Why do people find {t} interesting?",
    "Give me a one-line summary of {t}.",
    "What should a beginner know about {t}?",
    "Suggest a good book about {t}.",
    "What is a common myth about {t}?",
    "How would you explain {t} to a child?",
    "What's the history of {t} in one sentence?",
)


def filler(n: int) -> tuple[str, str]:
    """The n-th turn of other talk: a request and the kernel's reply."""
    topic = TOPICS[n % len(TOPICS)]
    ask = ASKS[(n // len(TOPICS)) % len(ASKS)].format(t=topic)
    return ask, f"Here is something about {topic}: it has a long and curious story (note {n})."


class Replay:
    """The real model's tokenizer, context and speed, with some calls given in advance: while
    any are queued, `complete` returns the next one; then the model decodes."""

    def __init__(self, real: LlamaCppBackend) -> None:
        self.real = real
        self.name = real.name
        self.context = real.context
        self.queued: list[str] = []
        self.decoded: list[Completion] = []
        """The completions the real model decoded (not replayed): where the time went."""

    @property
    def decode_tps(self) -> float:
        """The real model's measured decode speed (the pager's summary cost estimate)."""
        return self.real.decode_tps

    def count(self, messages: list[Message]) -> int:
        """Prompt tokens, by the real model's template and tokenizer."""
        return self.real.count(messages)

    def tokens(self, text: str) -> int:
        """Tokens of plain text, by the real model's tokenizer."""
        return self.real.tokens(text)

    def complete(
        self, messages: list[Message], *, constraint: Constraint | None, max_tokens: int
    ) -> Completion:
        """The next queued call, else the real model's; free text (the pager's summaries) is
        always the real model's."""
        if self.queued and constraint is not None:
            return Completion(text=self.queued.pop(0))
        done = self.real.complete(messages, constraint=constraint, max_tokens=max_tokens)
        self.decoded.append(done)
        return done


@dataclass
class Talk:
    """A conversation on the real model whose told turns have their replies written in
    advance (only the questions asked later are decoded), paged as in the shell."""

    backend: Replay
    kernel: Kernel
    process: Process
    pager: Pager
    talk: Conversation

    @classmethod
    def open(
        cls,
        system: System,
        real: LlamaCppBackend,
        workspace: Path,
        name: str,
        *,
        summary_seconds: float = SUMMARY_MAX_SECONDS,
    ) -> Talk:
        """A new conversation of a new process `name` on `workspace`, memory warmed first;
        `summary_seconds` as the pager's (0: always the extracted summary)."""
        backend = Replay(real)
        kernel = Kernel(system, backend, check_replies=False)
        pager = Pager(
            SessionFile(system.settings.ensure_home()),
            archival=False,
            summary_seconds=summary_seconds,
        )
        system.memory.warm()
        system.memory.embedder.load()  # as the shell does at start-up: not a page-in's cost
        process = system.spawn(name, workspace)
        return cls(backend, kernel, process, pager, Conversation(pager=pager))

    def tell(self, request: str, reply: str) -> Turn:
        """One turn whose reply is `reply` (replayed, not decoded); the turn."""
        self.backend.queued.append(json.dumps({"call": "reply", "text": reply}))
        for _ in self.kernel.turn(self.process, self.talk, request):
            pass
        return self.talk.turns[-1]


@dataclass
class Figures:
    """What a long conversation measured."""

    model: str
    turns: int
    limit: int
    max_prompt_tokens: int
    page_outs: int
    turns_paged_out: int
    recall_at_5: float
    recalled_into_prompt: float
    accuracy: float
    answers: list[dict[str, Any]] = field(default_factory=list)
    page_out_ms_p50: float = 0.0
    page_in_ms_p50: float = 0.0
    page_in_ms_p99: float = 0.0
    summaries: dict[str, int] = field(default_factory=dict)
    lost_turns: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The figures as the bench prints them."""
        return [
            f"long conversation: {self.turns} turns on {self.model}, context budget "
            f"{self.limit} tokens",
            f"  largest prompt {self.max_prompt_tokens} tokens (never above the budget: "
            f"{'yes' if self.max_prompt_tokens <= self.limit else 'NO'})",
            f"  {self.page_outs} page-outs, {self.turns_paged_out} turns paged out, "
            f"lost turns: {len(self.lost_turns)}",
            f"  summaries: {self.summaries}",
            f"  page-out p50 {self.page_out_ms_p50:.1f} ms; page-in p50 "
            f"{self.page_in_ms_p50:.1f} ms, p99 {self.page_in_ms_p99:.1f} ms",
            f"  retrieval recall@5 of the planted turns: {self.recall_at_5:.0%}; "
            f"in the prompt when asked: {self.recalled_into_prompt:.0%}",
            f"  answer accuracy: {self.accuracy:.0%} "
            f"({sum(a['correct'] for a in self.answers)}/{len(self.answers)})",
            *(
                f"    {'ok ' if a['correct'] else 'BAD'} {a['question']} -> {a['reply']!r}"
                for a in self.answers
            ),
            f"  {self.seconds:.0f} s in all",
        ]


def run_conversation(
    system: System,
    real: LlamaCppBackend,
    workspace: Path,
    *,
    filler_turns: int = 200,
    facts: tuple[Fact, ...] = FACTS,
) -> Figures:
    """Tell the facts, talk of other things for `filler_turns` turns, then ask about each fact;
    measure the pager's retrieval and the model's answers."""
    start = time.perf_counter()
    # Deterministic, as `run_recall` is: the extracted summary always (which summary was
    # written flipped with the measured speed, and the pages with it: 148 page-outs one run,
    # 153 the next, and a different answer), and every page indexed before a question.
    talk = Talk.open(system, real, workspace, "conversation", summary_seconds=0.0)
    kernel, process, pager, conversation = talk.kernel, talk.process, talk.pager, talk.talk
    limit = pager.budget(kernel).limit
    for fact in facts:
        talk.tell(fact.said, "Noted.")
    planted = {fact.answer: n + 1 for n, fact in enumerate(facts)}
    for n in range(filler_turns):
        talk.tell(*filler(n))
    memory = system.memory
    memory.flush(300)
    found = in_prompt = correct = 0
    answers: list[dict[str, Any]] = []
    for fact in facts:
        memory.flush(300)
        hits = memory.search(fact.question, k=5, collections=("recall",), session=pager.session_id)
        turns = [h.record.meta.get("turn") for h in hits]
        found += planted[fact.answer] in turns
        reply = ""
        for event in kernel.turn(process, conversation, fact.question):
            if event.kind in ("reply", "ask"):
                reply = event.text
        shown = memory.get([i for t in conversation.turns for i in t.recalled])
        seen = {r.meta.get("turn") for r in shown} | {t.number for t in conversation.turns}
        in_prompt += planted[fact.answer] in seen
        ok = fact.answer.lower() in reply.lower()
        correct += ok
        answers.append({"question": fact.question, "reply": reply, "correct": ok})
    stored = {r.meta.get("turn") for r in memory.db.all("recall")}
    resident = {t.number for t in conversation.turns}
    last = conversation.turns[-1].number
    lost = [n for n in range(1, last + 1) if n not in stored and n not in resident]
    stats = pager.stats
    return Figures(
        model=real.name,
        turns=last,
        limit=limit,
        max_prompt_tokens=stats.max_prompt_tokens,
        page_outs=stats.page_outs,
        turns_paged_out=conversation.paged_out,
        recall_at_5=found / len(facts),
        recalled_into_prompt=in_prompt / len(facts),
        accuracy=correct / len(facts),
        answers=answers,
        page_out_ms_p50=statistics.median(stats.page_out_ms) if stats.page_out_ms else 0.0,
        page_in_ms_p50=statistics.median(stats.page_in_ms) if stats.page_in_ms else 0.0,
        page_in_ms_p99=percentile(stats.page_in_ms, 99) if stats.page_in_ms else 0.0,
        summaries={"model": stats.model_summaries, "extractive": stats.extractive_summaries},
        lost_turns=lost,
        seconds=time.perf_counter() - start,
    )


def in_scratch(
    settings: Settings, what: str, run: Callable[[System, LlamaCppBackend, Path], Any]
) -> dict[str, Any]:
    """Run a conversation bench (`what`, for its error) on the configured local model, in a
    scratch LLMOS_HOME and workspace: `run(system, model, workspace)` gives figures with
    `lines()`; prints them and returns them as a dict."""
    import dataclasses
    import tempfile

    from llmos.config import Settings as Config
    from llmos.errors import ErrorCode, LlmosError
    from llmos.kernel.backend import LlamaCppBackend, open_backend
    from llmos.system import System

    real = open_backend(settings)
    if not isinstance(real, LlamaCppBackend):
        raise LlmosError(ErrorCode.E_INVAL, f"bench {what} measures a local GGUF")
    with tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp:
        workspace = Path(tmp, "ws")
        workspace.mkdir()
        with System(Config(home=Path(tmp, "home")), plugins=False) as system:
            figures = run(system, real, workspace)
    print("\n".join(figures.lines()))
    return dataclasses.asdict(figures)


def bench_conversation(settings: Settings, *, filler_turns: int = 200) -> dict[str, Any]:
    """`llmos bench conversation`: the long conversation on the configured (default) model, in
    a scratch LLMOS_HOME and workspace; prints and returns the figures."""
    return in_scratch(
        settings,
        "conversation",
        lambda system, real, workspace: run_conversation(
            system, real, workspace, filler_turns=filler_turns
        ),
    )
