"""`llmos bench memory`: page-out and page-in latency of the memory at several store sizes, and
the embedder's batched throughput, measured on this machine in a scratch LLMOS_HOME.

A page is what the pager writes for one evicted turn: its text (request, reply, steps) and the
turn's messages in its metadata. Page-out is `Memory.store_many` of one such page (a durable
SQLite commit); "until indexed" runs from the same start until the page is embedded and indexed
in the background (after the page-in that follows it, which goes first). Page-in is the pager's
recall search, `Memory.search(query, k=5, collections=("recall",), session=..., wait=False,
allow=recallable)`, for a question never asked before (so it is embedded each time); it is
timed on its own, again with the question's vector cached, and right after a page-out as the
pager does it.

Embedding 100k pages would take this machine hours, so the corpus is `distinct` made-up pages
embedded for real and, beyond them, copies with new turn numbers and vectors moved a little at
random (re-normalised), stored with their vectors through `Memory.store_embedded`. The output
says how many of each.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmos.bench.dispatch import percentile
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.memory.memory import Memory
from llmos.memory.store import NewRecord
from llmos.syscalls.services import recallable

SIZES = (1_000, 10_000, 100_000)
SAMPLES = 100
DISTINCT = 500
SESSION_PAGES = 200
FILL_BATCH = 1_000
NOISE = 0.35
"""Norm of the random change added to a reused unit vector (its copy stays at cosine ~0.94)."""
PAGER_GAP_S = 0.005
"""Between a page-out and its page-in the pager writes a summary and counts the prompt's tokens
(an extractive summary and a tokenizer pass take a few ms)."""
CURRENT = "bench-current"
PAGE_OUTS = "bench-page-outs"

NAMES = ("Ana", "Bo", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jun", "Kemal")
TOPICS = (
    "the quarterly budget",
    "the database migration",
    "the trip to Lisbon",
    "the flaky login test",
    "the garden irrigation",
    "the new laptop order",
    "the thesis draft",
    "the kitchen renovation",
    "the release checklist",
    "the vet appointment",
    "the conference talk",
    "the backup schedule",
    "the invoice from the printer",
    "the onboarding guide",
    "the marathon training plan",
    "the tax return",
)
FILES = (
    "notes.txt",
    "budget.xlsx",
    "report.md",
    "todo.txt",
    "plan.md",
    "photo.jpg",
    "draft.docx",
    "data.csv",
    "invoice.pdf",
    "minutes.md",
    "README.md",
    "schedule.ics",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend", "next week")
REQUESTS = (
    "show me {file}",
    "what did {name} say about {topic}?",
    "summarise {file} for me",
    "add a line to {file} about {topic}",
    "rename {file} to {topic_word}-{n}.md",
    "when is {topic} due?",
    "find everything that mentions {topic}",
    "remind me what we decided on {day} about {topic}",
    "how big is {file}?",
    "copy {file} to archive/{file}",
    "list the files about {topic}",
    "write '{name} will handle {topic} by {day}' to {file}",
)
REPLIES = (
    "{file} has {n} lines; most of them are about {topic}, the last one added on {day}.",
    "{name} said {topic} can wait until {day}, but wants a first version of {file} before.",
    "Done: {file} now ends with a note that {name} owns {topic}.",
    "We agreed on {day} that {topic} needs {n} more hours and that {name} reviews it.",
    "I found {n} mentions of {topic}, mostly in {file} and in the minutes from {day}.",
    "{file} is {n} KB. It was last changed on {day} when {name} updated {topic}.",
    "There is no deadline written down for {topic}; {name} mentioned {day} in {file}.",
)
QUESTIONS = (
    "what did {name} decide about {topic}",
    "where did we put the notes on {topic}?",
    "is {topic} still planned for {day}",
    "which file had the {topic} numbers",
    "remind me who handles {topic}",
    "what was in {file} about {topic} last time",
    "did {name} reply about {topic} on {day}?",
    "how many hours did we estimate for {topic}",
    "summarise what we said about {topic} and {topic2}",
    "{name} asked about {topic} again, what did I tell them",
)


def _fill(template: str, rng: random.Random) -> str:
    topic = rng.choice(TOPICS)
    return template.format(
        name=rng.choice(NAMES),
        topic=topic,
        topic2=rng.choice(TOPICS),
        topic_word=topic.split()[-1],
        file=rng.choice(FILES),
        day=rng.choice(DAYS),
        n=rng.randint(2, 400),
    )


def synthetic_turn(rng: random.Random, number: int) -> tuple[str, list[dict[str, str]]]:
    """A made-up turn as the pager pages it out: the page text and the turn's messages."""
    request = _fill(rng.choice(REQUESTS), rng)
    reply = " ".join(_fill(rng.choice(REPLIES), rng) for _ in range(rng.randint(1, 3)))
    call = json.dumps({"call": "fs.read", "path": rng.choice(FILES)})
    result = json.dumps({"ok": True, "value": {"text": _fill(rng.choice(REPLIES), rng)}})
    messages = [
        {"role": "user", "content": request},
        {"role": "assistant", "content": call},
        {"role": "user", "content": result},
        {"role": "assistant", "content": json.dumps({"call": "reply", "text": reply})},
    ]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(1.7e9 + number * 60))
    text = f"[turn {number}, {when}] user: {request}\nreply: {reply}\n→ {call}\n{result}"
    return text, messages


def _page(text: str, messages: list[dict[str, str]], session: str, turn: int) -> NewRecord:
    return NewRecord(
        text=text,
        meta={
            "session": session,
            "turn": turn,
            "process": "shell",
            "source": "pager",
            "messages": json.dumps(messages, ensure_ascii=False),
        },
    )


class Questions:
    """Made-up questions, each one asked once in the whole run (so none is in the memory's
    query cache when it is timed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.asked: set[str] = set()

    def fresh(self, n: int) -> list[str]:
        """`n` questions never returned before."""
        found: list[str] = []
        while len(found) < n:
            question = _fill(self.rng.choice(QUESTIONS), self.rng)
            if question not in self.asked:
                self.asked.add(question)
                found.append(question)
        return found


def _ms(samples: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 99)}


def _timed(fn: Callable[[str], object], arg: str) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


class Corpus:
    """The pages the bench stores: `distinct` embedded for real, the rest reused copies."""

    def __init__(self, memory: Memory, distinct: int, session_pages: int, seed: int) -> None:
        import numpy as np

        self.memory = memory
        self.session_pages = session_pages
        self.noise = np.random.default_rng(seed)
        rng = random.Random(seed)
        self.turns = [synthetic_turn(rng, i + 1) for i in range(distinct)]
        texts = [text for text, _ in self.turns]
        memory.embedder.embed(texts[: memory.embedder.batch_size])
        started = time.perf_counter()
        self.vectors = np.asarray(memory.embedder.embed(texts), dtype=np.float32)
        self.embed_s = time.perf_counter() - started
        self.chars = sum(len(t) for t in texts)
        self.stored = 0
        self.reused = 0
        self.in_session = 0

    def _vector(self, i: int) -> list[float]:
        import numpy as np

        base = self.vectors[i % len(self.vectors)]
        if i < len(self.vectors):
            return [float(x) for x in base]
        self.reused += 1
        change = self.noise.standard_normal(base.shape[0]).astype(np.float32)
        moved = base + NOISE * change / np.linalg.norm(change)
        return [float(x) for x in moved / np.linalg.norm(moved)]

    def _next(self) -> NewRecord:
        i = self.stored
        text, messages = self.turns[i % len(self.turns)]
        number = i + 1
        if i >= len(self.turns):
            text = text.replace(f"[turn {i % len(self.turns) + 1},", f"[turn {number},", 1)
        if i < self.session_pages:
            session = CURRENT
            self.in_session += 1
        else:
            session = f"bench-{i // self.session_pages}"
        page = _page(text, messages, session, number)
        self.stored += 1
        return NewRecord(text=page.text, meta=page.meta, vector=self._vector(i))

    def fill(self, to: int) -> float:
        """Store pages until the memory holds `to` of them (the first `session_pages` in the
        session the page-ins search); returns the seconds it took."""
        started = time.perf_counter()
        while (have := self.memory.db.count("recall")) < to:
            batch = [self._next() for _ in range(min(FILL_BATCH, to - have))]
            self.memory.store_embedded(batch, "recall")
        return time.perf_counter() - started


def measure_level(memory: Memory, samples: int, questions: Questions) -> dict[str, Any]:
    """Page-out, indexing and page-in figures at the memory's current size."""
    pages = memory.db.count("recall")

    def page_in(query: str) -> None:
        # as the pager searches: pages of questions answered from memory left out
        memory.search(
            query, k=5, collections=("recall",), session=CURRENT, wait=False, allow=recallable
        )

    # What the pager does when a step crosses the high watermark: page a turn out, then page
    # in for the request at once, with the page that just went out waiting to be embedded.
    page_out: list[float] = []
    after_out: list[float] = []
    indexed: list[float] = []
    for n, query in enumerate(questions.fresh(samples)):
        text, messages = synthetic_turn(questions.rng, 1_000_000 + n)
        item = _page(text, messages, PAGE_OUTS, n)
        start = time.perf_counter()
        memory.store_many([item], "recall")
        page_out.append(time.perf_counter() - start)
        time.sleep(PAGER_GAP_S)
        after_out.append(_timed(page_in, query))
        memory.flush()
        indexed.append(time.perf_counter() - start)
    # Page-ins with nothing being indexed, each followed by the same question again: its vector
    # is in the memory's query cache then, so that one is the page-in less the query's
    # embedding (the search and the store's reads).
    for query in questions.fresh(5):
        page_in(query)
    cold: list[float] = []
    warm: list[float] = []
    asked = questions.fresh(samples)
    for query in asked:
        cold.append(_timed(page_in, query))
        warm.append(_timed(page_in, query))
    embed = [_timed(memory.embedder.embed_one, query) for query in questions.fresh(samples)]
    hits = memory.search(asked[0], k=5, collections=("recall",), session=CURRENT, wait=False)
    return {
        "pages": pages,
        "page_out": _ms(page_out),
        "until_indexed": _ms(indexed),
        "page_in": _ms(cold),
        "page_in_cached_query": _ms(warm),
        "page_in_after_page_out": _ms(after_out),
        "query_embed": _ms(embed),
        "hits": len(hits),
        "hits_in_session": sum(h.record.meta.get("session") == CURRENT for h in hits),
    }


@contextmanager
def _home(home: Path | None) -> Iterator[Path]:
    if home is not None:
        yield home
        return
    with tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp:
        yield Path(tmp, "home")


def bench_memory(
    settings: Settings,
    *,
    sizes: Sequence[int] = SIZES,
    samples: int = SAMPLES,
    distinct: int = DISTINCT,
    session_pages: int = SESSION_PAGES,
    home: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the memory benchmark in a scratch LLMOS_HOME (or in `home`, which must hold no
    memories yet); prints the figures as they come and returns them."""
    if not sizes or min(sizes) < 1 or min(samples, distinct, session_pages) < 1:
        raise LlmosError(
            ErrorCode.E_INVAL, "sizes, samples, distinct and session pages must be positive"
        )
    started = time.perf_counter()
    figures: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_before": list(os.getloadavg()),
        "encrypted": settings.memory_encrypt,
        "index": settings.memory_server or "local",
        "samples": samples,
    }
    questions = Questions(random.Random(seed + 1))
    with _home(home) as where, Memory.open(settings.model_copy(update={"home": where})) as memory:
        if memory.db.count():
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"{where} already holds memories; the bench fills memory with made-up pages, "
                "so give it an empty or new home",
            )
        loading = time.perf_counter()
        memory.embedder.load()
        figures["embedder"] = memory.embedder.name
        figures["embedder_load_s"] = time.perf_counter() - loading
        corpus = Corpus(memory, min(distinct, max(sizes)), session_pages, seed)
        figures["embed"] = {
            "texts_per_s": len(corpus.turns) / corpus.embed_s,
            "texts": len(corpus.turns),
            "chars_per_text": corpus.chars / len(corpus.turns),
            "batch": memory.embedder.batch_size,
        }
        _print_head(figures)
        levels: list[dict[str, Any]] = []
        for size in sorted(set(sizes)):
            fill_s = corpus.fill(size)
            level = {"size": size, "fill_s": fill_s, **measure_level(memory, samples, questions)}
            level["session_pages"] = corpus.in_session
            levels.append(level)
            _print_level(level)
        figures["corpus"] = {
            "embedded": min(corpus.stored, len(corpus.turns)),
            "reused": corpus.reused,
            "noise": NOISE,
            "session_pages": corpus.in_session,
        }
    figures["levels"] = levels
    figures["load_after"] = list(os.getloadavg())
    figures["total_s"] = time.perf_counter() - started
    _print_tail(figures)
    return figures


def _load(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _print_head(f: dict[str, Any]) -> None:
    embed = f["embed"]
    crypt = "encrypted" if f["encrypted"] else "not encrypted"
    print(
        f"bench memory: {f['embedder']}, {f['index']} index, {crypt}; {f['cpus']} cpus, "
        f"load average {_load(f['load_before'])}"
    )
    print(
        f"  embedding: model loaded in {f['embedder_load_s']:.1f} s; "
        f"{embed['texts_per_s']:.1f} texts/s batched ({embed['texts']} texts of "
        f"{embed['chars_per_text']:.0f} chars on average, batches of {embed['batch']})"
    )
    print(
        "  page-out: store_many of one turn's page (a durable commit); until indexed: that and "
        "the background embedding and indexing"
    )
    print(
        "  page-in: search(recall, session, k=5, wait=False) for a new question; cached: the same "
        "question again (no embedding); after out: a page-in right after a page-out"
    )
    print(
        "  ms, p50/p99      page-out   until indexed         page-in          cached"
        "     query embed       after out"
    )


def _pair(figure: dict[str, float]) -> str:
    return f"{figure['p50_ms']:6.1f}/{figure['p99_ms']:<6.1f}"


def _print_level(level: dict[str, Any]) -> None:
    print(
        f"  {level['pages']:>7} pages  {_pair(level['page_out'])}  "
        f"{_pair(level['until_indexed'])}  {_pair(level['page_in'])}  "
        f"{_pair(level['page_in_cached_query'])}  {_pair(level['query_embed'])}  "
        f"{_pair(level['page_in_after_page_out'])}  (filled in {level['fill_s']:.1f} s)",
        flush=True,
    )


def _print_tail(f: dict[str, Any]) -> None:
    corpus = f["corpus"]
    print(
        f"  corpus: {corpus['embedded']} made-up pages embedded for real, {corpus['reused']} "
        f"copies of them with new turn numbers and vectors moved by a random {corpus['noise']} "
        "(re-normalised), stored with their vectors"
    )
    print(
        f"  page-ins search a session of {corpus['session_pages']} pages; "
        f"{f['samples']} samples of each figure"
    )
    print(
        "  targets: page-in p50 <= 30 ms at 100k pages, page-out of one turn p50 <= 20 ms; "
        f"load average now {_load(f['load_after'])}; {f['total_s']:.0f} s in all"
    )
