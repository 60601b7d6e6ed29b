"""The example bank: request -> calls examples, so the kernel is shown the few nearest to each
request (by sentence embedding, or by word overlap when no embedder is given) instead of one
fixed list. Built-ins are data here; apps add theirs through the `register_examples` hook."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import (
    EXAMPLE_QUESTION_MISMATCH,
    LEARNED_BONUS,
    LESSON_BONUS,
    LESSON_FRAME_SCORE,
    LESSON_MIN_SCORE,
)
from llmos.syscalls.base import Registry
from llmos.text import SENTENCE, STOPWORDS, bm25, words

# The line the kernel sees after each call is prompt.result_message(json); examples show its
# shape without a real result. Not imported from prompt.py, which may come to import this module.
RESULT_PLACEHOLDER = "RESULT: ..."

DEFAULT_K = 4
READY_MISSING = 8
"""Examples without a vector a bank embeds while ranking rather than wait for `warm`."""

_SHARED_VECTORS: dict[tuple[str, str], list[float]] = {}
"""Vectors of example requests by (embedding model, request), shared by a process's banks:
a pure cache of the model's output, like the embedder's own cache of loaded models."""

log = logging.getLogger(__name__)

Call = dict[str, Any]
Shape = tuple[tuple[str, tuple[str, ...]], ...]


class TextEmbedder(Protocol):
    """What the bank needs of an embedder (llmos.memory.embedder.Embedder is one): unit-length
    vectors, so cosine similarity is a dot product."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text."""
        ...

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text."""
        ...


@dataclass(frozen=True, eq=False)
class Example:
    """One request and the syscalls (as the kernel emits them) that carry it out, in order."""

    request: str
    calls: list[Call]
    source: str = "builtin"
    scope: str | None = None
    """The workspace root an example holds in (a lesson naming its paths); None: anywhere."""

    @property
    def shape(self) -> Shape:
        """The call sequence with each call's argument names: two examples of one shape teach
        the model the same thing, so the bank shows one of them."""
        return tuple((c["call"], tuple(sorted(k for k in c if k != "call"))) for c in self.calls)

    def render(self) -> str:
        """`User: request` then each call's JSON, a placeholder result line between calls."""
        lines = [f"User: {self.request}"]
        for i, call in enumerate(self.calls):
            if i:
                lines.append(RESULT_PLACEHOLDER)
            lines.append(json.dumps(call))
        return "\n".join(lines)


@dataclass(frozen=True)
class Rule:
    """A line for the prompt saying when to use some syscalls ("notes: use notes.add for ...")."""

    text: str
    source: str


PERSON_SOURCES = frozenset({"taught", "good"})
"""Sources of the person's own examples (llmos.kernel.lessons): ranked above the others."""

LEARNED = "learned"
"""Source of the examples learned from turns that went right without the person saying so
(llmos.kernel.lessons.Learner): ranked above the built-ins, below what the person taught."""

OWN_SOURCES = PERSON_SOURCES | {LEARNED}
"""Examples of this person's own requests: one per request (and workspace), the newest."""

APP_PREFIX = "app:"
"""A process (and the examples) of a scripted app are named `app:NAME`."""


def visible(source: str, viewer: str | None) -> bool:
    """Whether an example from `source` is shown to the process named `viewer`: the built-ins
    and the person's own to every process; an app's (a plugin's `NAME`, a manifest's
    `app:NAME`) to that app's process alone (never another app's), and a plugin's also to the
    person's processes (the shell, its jobs), which load it."""
    if source == "builtin" or source in OWN_SOURCES:
        return True
    if viewer is not None and viewer.startswith(APP_PREFIX):
        return source in (viewer, viewer.removeprefix(APP_PREFIX))
    return not source.startswith(APP_PREFIX)


_FRAME_TOKEN = re.compile(
    r"""'[^']*'|"[^"]*"|[\w.~/@+-]*[./][\w.~/@+-]+|[\w.~@+-]+/|\d[\d:.,]*\w*|[\w']+:?""", re.UNICODE
)


_NO_MEANING = STOPWORDS | frozenset(
    [
        "PATH",
        "TEXT",
        "NUM",
        "how",
        "where",
        "when",
        "who",
        "whom",
        "whose",
        "why",
        "was",
        "were",
        "have",
        "has",
        "had",
        "will",
        "not",
        "i'm",
        "don't",
        "let",
    ]
)
"""Frame words that say nothing of a request's kind (a placeholder, a question word)."""


def frame(request: str) -> list[str]:
    """A request's words with what varies put aside: quoted text as TEXT, paths as PATH,
    numbers as NUM ("tuck notes.txt away in old/" -> tuck PATH away in PATH)."""
    out = []
    for token in _FRAME_TOKEN.findall(request.lower()):
        if token[0] in "'\"" and len(token) > 1 and token[-1] == token[0]:
            out.append("TEXT")
        elif token[0].isdigit():
            out.append("NUM")
        elif "/" in token or re.search(r"\w\.\w", token):
            out.append("PATH")
        else:
            out.append(token)
    return out


def frame_score(request: str, example: str) -> float:
    """How surely `example` is said the way `request` is: 0 unless their frames open with the
    same two or more words, one of them a word of meaning ("keep in mind that ...", "tuck
    PATH away ..."), then LESSON_FRAME_SCORE and more for a longer shared opening. A person's
    habits of phrasing live there, where sentence embeddings weigh the content: "never forget:
    Lena's flight lands at 6pm" and "never forget: the boiler code is 1234" score 0.25."""
    ours, theirs = frame(request), frame(example)
    shared = 0
    for a, b in zip(ours, theirs, strict=False):
        if a != b:
            break
        shared += 1
    meaning = [w for w in ours[:shared] if w.strip(":") not in _NO_MEANING]
    if shared < 2 or not meaning:
        return 0.0
    return min(LESSON_FRAME_SCORE + 0.05 * (shared - 2), 0.9)


_BONUS = {"taught": LESSON_BONUS, "good": LESSON_BONUS, LEARNED: LEARNED_BONUS}
"""What each source of the person's own examples adds to its similarity when ranked."""


def _own_of(example: Example, key: str, scope: str | None) -> bool:
    """Whether `example` is the person's own for the request `key` (lower-cased) in `scope`."""
    return (
        example.source in OWN_SOURCES and example.request.lower() == key and example.scope == scope
    )


def _key(example: Example) -> tuple[str, str]:
    """What a hidden example is known by: its request's words and its calls."""
    return (" ".join(example.request.lower().split()), json.dumps(example.calls, sort_keys=True))


def render(examples: Sequence[Example]) -> str:
    """Examples as the prompt shows them: each `User: ...` block, one after another."""
    return "\n".join(example.render() for example in examples)


_QUESTION = re.compile(
    r"\?\s*$|^\s*(?:what|which|who|whom|whose|where|when|why|how|is|are|was|were|do|does|did|"
    r"can|could|will|would|should|have|has)\b",
    re.IGNORECASE,
)


_POLITE = re.compile(r"^\s*(?:please\s+)?(?:can|could|would|will)\s+you\b", re.IGNORECASE)


def is_question(text: str) -> bool:
    """Whether a request asks something (a question mark, or a question word first) rather
    than tells or orders ("could you copy a.txt?" orders)."""
    return bool(_QUESTION.search(text)) and not _POLITE.search(text)


def asks_only(text: str) -> bool:
    """Whether every sentence of `text` asks ("How is the store? Any news?"), or it is one
    sentence that `is_question`: nothing in it tells."""
    sentences = [s.strip() for s in SENTENCE.findall(text) if s.strip()]
    if len(sentences) == 1:
        return is_question(sentences[0])
    return bool(sentences) and all(s.endswith("?") for s in sentences)


class ExampleRegistrar:
    """What a plugin's `register_examples` hook receives: `add` an example, `rule` a prompt
    line. It remembers what it added so a plugin that raises is undone."""

    def __init__(self, bank: ExampleBank, source: str) -> None:
        self._bank = bank
        self.source = source
        self._examples: list[Example] = []
        self._rules: list[Rule] = []

    def add(self, request: str, calls: Call | Sequence[Call]) -> Example | None:
        """Add `request` -> `calls` (one call dict, or the calls in order); None if the bank
        already holds the same example."""
        example = self._bank.add(request, calls, source=self.source)
        if example is not None:
            self._examples.append(example)
        return example

    def rule(self, text: str) -> None:
        """Add a line for the prompt naming when to use this app's syscalls."""
        self._rules.append(self._bank.add_rule(text, source=self.source))

    def undo(self) -> None:
        """Remove everything this registrar added (its plugin failed)."""
        self._bank.discard(self._examples, self._rules)
        self._examples.clear()
        self._rules.clear()


@dataclass
class _Validity:
    """Which examples parse against one version of one registry."""

    key: tuple[int, int, int]
    problems: dict[int, str] = field(default_factory=dict)


class ExampleBank:
    """Every example the kernel may be shown, ranked against a request on demand.

    With an embedder, examples rank by cosine similarity of their requests' embeddings (each
    request embedded once, on first use); without one, by BM25 over their requests' words.
    """

    def __init__(self, embedder: TextEmbedder | None = None) -> None:
        self.embedder = embedder
        self._examples: list[Example] = []
        self._words: list[list[str]] = []
        self._rules: list[Rule] = []
        self._vectors: dict[str, list[float]] = {}
        self._last_query: tuple[str, list[float]] | None = None
        self._warming: threading.Thread | None = None
        self._validity: _Validity | None = None
        self._hidden: set[tuple[str, str]] = set()
        self._matrix: tuple[tuple[str, ...], Any] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._examples)

    def examples(self) -> list[Example]:
        """All examples, in the order they were added."""
        return list(self._examples)

    def rules(self) -> list[Rule]:
        """All routing rules, in the order they were added."""
        return list(self._rules)

    def render_rules(self) -> str:
        """The rules as prompt lines ("- text"), or ""."""
        return "\n".join(f"- {rule.text}" for rule in self._rules)

    def registrar(self, source: str) -> ExampleRegistrar:
        """A registrar that adds to this bank under `source` (a plugin's name)."""
        return ExampleRegistrar(self, source)

    def add(
        self,
        request: str,
        calls: Call | Sequence[Call],
        *,
        source: str = "builtin",
        scope: str | None = None,
    ) -> Example | None:
        """Add one example (a copy of `calls`, which must be JSON), shown only in the workspace
        `scope` when given; None if the same request with the same calls is already here. A
        person's example (source "taught", "good" or "learned") replaces their earlier one of the
        same request and scope, but a learned one never takes a taught one's place."""
        request = " ".join(request.split()) if isinstance(request, str) else ""
        if not request:
            raise LlmosError(ErrorCode.E_INVAL, "an example needs a non-empty request")
        listed = [calls] if isinstance(calls, dict) else list(calls)
        if not listed or not all(
            isinstance(c, dict) and isinstance(c.get("call"), str) for c in listed
        ):
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"example {request!r}: calls must be one or more objects with a string 'call'",
            )
        try:
            copied: list[Call] = json.loads(json.dumps(listed))
        except (TypeError, ValueError) as exc:
            raise LlmosError(ErrorCode.E_INVAL, f"example {request!r}: {exc}") from None
        example = Example(request=request, calls=copied, source=source, scope=scope)
        key = request.lower()
        with self._lock:
            if _key(example) in self._hidden or any(
                e.request == request and e.calls == copied and e.scope == scope
                for e in self._examples
            ):
                return None
            if source in OWN_SOURCES:
                if source == LEARNED and any(
                    _own_of(e, key, scope) and e.source in PERSON_SOURCES for e in self._examples
                ):
                    return None
                self._keep(lambda e: not _own_of(e, key, scope))
            self._examples.append(example)
            self._words.append(words(request))
            self._validity = None
        return example

    def hide(self, request: str, calls: Sequence[Call]) -> None:
        """Never show an example of this request with these calls (the person marked such a
        turn bad), nor keep one."""
        key = (" ".join(request.lower().split()), json.dumps(list(calls), sort_keys=True))
        with self._lock:
            self._hidden.add(key)
            self._keep(lambda e: _key(e) != key)

    def forget_own(self, request: str, scope: str | None) -> None:
        """Drop the person's example of `request` in `scope` (a lesson merged or forgotten)."""
        key = " ".join(request.lower().split())
        with self._lock:
            self._keep(lambda e: not _own_of(e, key, scope))

    def add_rule(self, text: str, *, source: str = "builtin") -> Rule:
        """Add one routing rule for the prompt."""
        text = " ".join(text.split()) if isinstance(text, str) else ""
        if not text:
            raise LlmosError(ErrorCode.E_INVAL, "a rule needs some text")
        rule = Rule(text=text, source=source)
        with self._lock:
            self._rules.append(rule)
        return rule

    def discard(self, examples: Sequence[Example], rules: Sequence[Rule] = ()) -> None:
        """Remove these examples and rules (by identity)."""
        drop = {id(e) for e in examples}
        with self._lock:
            self._keep(lambda e: id(e) not in drop)
            self._rules = [r for r in self._rules if not any(r is x for x in rules)]

    def _keep(self, keep: Callable[[Example], bool]) -> None:
        """Keep only the examples `keep` accepts, with their words (the lock held)."""
        kept = [i for i, e in enumerate(self._examples) if keep(e)]
        self._examples = [self._examples[i] for i in kept]
        self._words = [self._words[i] for i in kept]
        self._validity = None

    def _snapshot(self) -> tuple[list[Example], list[list[str]]]:
        """The examples and their words as they stand now (another thread may add more)."""
        with self._lock:
            return list(self._examples), list(self._words)

    def validate(self, registry: Registry) -> list[tuple[Example, str]]:
        """The examples with a call `registry` rejects (not registered, bad arguments), and why;
        `nearest(registry=...)` never shows those."""
        examples, _ = self._snapshot()
        problems = self._problems(registry, examples)
        return [(e, problems[id(e)]) for e in examples if id(e) in problems]

    def _problems(self, registry: Registry, examples: list[Example]) -> dict[int, str]:
        """id(example) -> why, for examples that do not parse, cached per registry version."""
        key = (id(registry), registry.version, len(examples))
        found = self._validity
        if found is not None and found.key == key:
            return found.problems
        problems: dict[int, str] = {}
        for example in examples:
            for call in example.calls:
                try:
                    registry.parse(call)
                except LlmosError as exc:
                    problems[id(example)] = f"{exc.code}: {exc.message}"
                    break
        self._validity = _Validity(key, problems)
        return problems

    def _embed_missing(self, embedder: TextEmbedder, examples: list[Example]) -> None:
        """Embed, in one batch, the requests that have no vector yet, in this bank or in the
        process's cache of them (every System makes a bank with the same 55 built-ins, and
        embedding them costs seconds on 2 cores)."""
        self._embed_texts(embedder, [e.request for e in examples])

    def _embed_texts(self, embedder: TextEmbedder, texts: Sequence[str]) -> None:
        model = getattr(embedder, "name", None)  # a named model's vectors are shared
        with self._lock:
            for text in texts:
                known = _SHARED_VECTORS.get((model, text)) if model else None
                if known is not None:
                    self._vectors.setdefault(text, known)
        missing = sorted(set(texts) - self._vectors.keys())
        if missing:
            vectors = embedder.embed(missing)
            with self._lock:
                self._vectors.update(zip(missing, vectors, strict=True))
                for text, vector in zip(missing, vectors, strict=True):
                    if model:
                        _SHARED_VECTORS[(str(model), text)] = vector

    def _query(self, embedder: TextEmbedder, request: str) -> list[float]:
        """The request's vector (the last one is kept: a turn ranks examples and tools)."""
        last = self._last_query
        if last is not None and last[0] == request:
            return last[1]
        vector = embedder.embed_one(request)
        self._last_query = (request, vector)
        return vector

    def fitting(self, request: str, described: Mapping[str, str], min_score: float) -> list[str]:
        """The names in `described` (name -> what it does) whose description is at least
        `min_score` similar to `request`, most similar first: the session's tools made for
        what is asked. None without an embedder (word overlap is no measure of that)."""
        embedder = self.embedder
        if embedder is None or not described:
            return []
        self._embed_texts(embedder, list(described.values()))
        query = self._query(embedder, request)
        scored = []
        for name, text in described.items():
            score = sum(a * b for a, b in zip(query, self._vectors[text], strict=True))
            if score >= min_score:
                scored.append((-score, name))
        return [name for _, name in sorted(scored)]

    @property
    def ready(self) -> bool:
        """Whether ranking would not wait: no embedder, or it is loaded and at most
        READY_MISSING examples lack a vector (a lesson just taught is embedded in milliseconds
        when it is first ranked)."""
        if self.embedder is None:
            return True
        examples, _ = self._snapshot()
        loaded = bool(getattr(self.embedder, "loaded", True))
        missing = sum(1 for e in examples if e.request not in self._vectors)
        return loaded and missing <= READY_MISSING

    def warm(self) -> threading.Thread | None:
        """Start embedding the examples (loading the embedder) on a background thread, so the
        first ranking need not wait for it; None without an embedder, or while one is already
        at it."""
        embedder = self.embedder
        if embedder is None:
            return None
        with self._lock:
            if self._warming is not None and self._warming.is_alive():
                return None
        examples, _ = self._snapshot()

        def embed_quietly() -> None:
            try:
                self._embed_missing(embedder, examples)
            except LlmosError as exc:
                log.warning("examples were not embedded in the background: %s", exc.message)

        thread = threading.Thread(target=embed_quietly, name="llmos-examples", daemon=True)
        with self._lock:
            self._warming = thread
        thread.start()
        return thread

    def _scores(
        self, request: str, examples: list[Example], word_lists: list[list[str]]
    ) -> list[float]:
        """Each of `examples`' similarity to `request`."""
        if self.embedder is None:
            return bm25(words(request), word_lists)
        import numpy as np

        self._embed_missing(self.embedder, examples)
        query = np.asarray(self._query(self.embedder, request), dtype=np.float64)
        requests = tuple(e.request for e in examples)
        cached = self._matrix
        if cached is None or cached[0] != requests:
            # One matrix product instead of a Python loop: 1,000 lessons ranked in 0.2 ms, not 40.
            cached = (requests, np.asarray([self._vectors[r] for r in requests], np.float64))
            self._matrix = cached
        return [float(score) for score in cached[1] @ query]

    def scores(self, request: str) -> list[float]:
        """Each example's similarity to `request` (cosine with an embedder, else BM25), in the
        order of `examples()`."""
        return self._scores(request, *self._snapshot())

    def ranked(
        self,
        request: str,
        *,
        registry: Registry | None = None,
        min_score: float | None = None,
        allowed: Collection[str] | None = None,
        workspace: str | None = None,
        viewer: str | None = None,
    ) -> list[Example]:
        """Every usable example (at least `min_score` similar, when given; with `allowed`, only
        those whose calls are all in it; of those scoped to a workspace, only `workspace`'s;
        only those `visible` to the process named `viewer`),
        most similar to `request` first (ties: the order added). The person's own examples
        count LESSON_BONUS more, when at least LESSON_MIN_SCORE similar (with `min_score`)."""
        examples, word_lists = self._snapshot()
        problems = dict(self._problems(registry, examples)) if registry is not None else {}
        for e in examples:
            if allowed is not None and any(c["call"] not in allowed for c in e.calls):
                problems.setdefault(id(e), "a call not offered now")
            if e.scope is not None and e.scope != workspace:
                problems.setdefault(id(e), "another workspace's")
            if not visible(e.source, viewer):
                problems.setdefault(id(e), "another app's")
        scores = self._scores(request, examples, word_lists)
        for i, e in enumerate(examples):
            if e.source in PERSON_SOURCES:
                scores[i] = max(scores[i], frame_score(request, e.request))
        asks = is_question(request)

        def floor(e: Example) -> float:
            if min_score is None:
                return -math.inf
            return max(min_score, LESSON_MIN_SCORE) if e.source in OWN_SOURCES else min_score

        def rank(i: int) -> tuple[float, int]:
            unlike = is_question(examples[i].request) != asks
            bonus = _BONUS.get(examples[i].source, 0.0)
            return (-(scores[i] + bonus - (EXAMPLE_QUESTION_MISMATCH if unlike else 0.0)), i)

        order = sorted(
            (i for i, e in enumerate(examples) if id(e) not in problems and scores[i] >= floor(e)),
            key=rank,
        )
        return [examples[i] for i in order]

    def similarity(self, a: str, b: str) -> float | None:
        """How close `a` and `b` are in meaning (cosine); None without an embedder or while it
        loads."""
        cosines = self.similarities([a, b])
        return None if cosines is None else cosines[0][1]

    def similarities(self, texts: Sequence[str]) -> list[list[float]] | None:
        """Every pair of `texts`' cosine, each text embedded once; None without an embedder
        or while it loads."""
        if self.embedder is None or not getattr(self.embedder, "loaded", True):
            return None
        import numpy as np

        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        unit = vectors / norms[:, None]
        return [[float(x) for x in row] for row in unit @ unit.T]

    def nearest_lesson(self, request: str, workspace: str | None = None) -> tuple[Example, float]:
        """The person's example most like `request` (of anywhere, or of `workspace`) and its
        score (the cosine, or the frame score when higher); E_INVAL when there is none."""
        examples, word_lists = self._snapshot()
        ours = [
            i
            for i, e in enumerate(examples)
            if e.source in PERSON_SOURCES and e.scope in (None, workspace)
        ]
        if not ours or self.embedder is None:
            raise LlmosError(ErrorCode.E_INVAL, "no lesson to rank")
        scores = self._scores(request, examples, word_lists)
        best = max(ours, key=lambda i: max(scores[i], frame_score(request, examples[i].request)))
        return examples[best], max(scores[best], frame_score(request, examples[best].request))

    def nearest(
        self,
        request: str,
        k: int = DEFAULT_K,
        budget_tokens: int | None = None,
        count: Callable[[str], int] | None = None,
        *,
        registry: Registry | None = None,
        min_score: float | None = None,
        allowed: Collection[str] | None = None,
        workspace: str | None = None,
        viewer: str | None = None,
    ) -> list[Example]:
        """Up to `k` examples most like `request` whose `render` fits `budget_tokens` (as
        `count` measures it), in rank order. Of examples with one call shape only the best is
        taken, until every other shape has been tried. With `registry`, only examples whose
        calls it accepts; with `min_score`, only ones at least that similar; with `allowed`,
        only ones whose calls can all be made now (an example of a write, shown for "hello",
        taught the model to claim it had written a file); lessons scoped to a workspace only in
        `workspace`; only examples `visible` to the process named `viewer`."""
        if budget_tokens is not None and count is None:
            raise LlmosError(ErrorCode.E_INVAL, "a token budget needs a count function")
        chosen: list[Example] = []
        if k <= 0:
            return chosen

        def fits(example: Example) -> bool:
            if budget_tokens is None or count is None:
                return True
            return count(render([*chosen, example])) <= budget_tokens

        ranked = self.ranked(
            request,
            registry=registry,
            min_score=min_score,
            allowed=allowed,
            workspace=workspace,
            viewer=viewer,
        )
        shapes: set[Shape] = set()
        repeats: list[Example] = []
        for example in ranked:
            if len(chosen) == k:
                break
            if example.shape in shapes:
                repeats.append(example)
            elif fits(example):
                chosen.append(example)
                shapes.add(example.shape)
        for example in repeats:
            if len(chosen) == k:
                break
            if fits(example):
                chosen.append(example)
        order = {id(e): i for i, e in enumerate(ranked)}
        return sorted(chosen, key=lambda e: order[id(e)])


def _ex(request: str, *calls: Call) -> Example:
    """A built-in example."""
    return Example(request=request, calls=list(calls))


BUILTIN: tuple[Example, ...] = (
    # fs.read: content questions read the file, then answer from its text.
    _ex("show me todo.md", {"call": "fs.read", "path": "todo.md"}),
    _ex("what timeout does app.yaml set?", {"call": "fs.read", "path": "app.yaml"}),
    _ex(
        "what port does server.cfg use?",
        {"call": "fs.read", "path": "server.cfg"},
        {"call": "reply", "text": "server.cfg uses port 8080."},
    ),
    _ex("show me the start of big.log", {"call": "fs.read", "path": "big.log", "limit": 2000}),
    # Documents (PDF, Word, Excel, PowerPoint, OpenDocument) are read as text by fs.read too.
    _ex("summarise minutes.docx", {"call": "fs.read", "path": "minutes.docx"}),
    # fs.list
    _ex("what's in the docs folder?", {"call": "fs.list", "path": "docs"}),
    _ex("list all the text files", {"call": "fs.list", "pattern": "*.txt"}),
    _ex(
        "show every python file, sub-folders too",
        {"call": "fs.list", "pattern": "*.py", "recursive": True},
    ),
    # fs.stat: size and dates only, never content.
    _ex("how big is backup.zip?", {"call": "fs.stat", "path": "backup.zip"}),
    _ex("when was report.pdf last changed?", {"call": "fs.stat", "path": "report.pdf"}),
    # fs.search: the query is a word or two, not the user's phrase.
    _ex(
        "which logs mention an error?",
        {"call": "fs.search", "query": "error", "pattern": "*.log"},
    ),
    _ex("which files mention the budget?", {"call": "fs.search", "query": "budget"}),
    _ex(
        "where did I write about the dentist in my notes?",
        {"call": "fs.search", "query": "dentist", "path": "notes"},
    ),
    # fs.write: a new file with its whole content.
    _ex(
        "save 'call Bob' to reminders/today.txt",
        {"call": "fs.write", "path": "reminders/today.txt", "content": "call Bob"},
    ),
    _ex(
        "create hello.py that prints hello",
        {"call": "fs.write", "path": "hello.py", "content": 'print("hello")\n'},
    ),
    # fs.append: add to the end of an existing file.
    _ex(
        "add 'renew passport' to my todo list",
        {"call": "fs.append", "path": "todo.md", "text": "renew passport\n"},
    ),
    _ex(
        "put eggs on shopping.txt",
        {"call": "fs.append", "path": "shopping.txt", "text": "eggs\n"},
    ),
    # fs.edit: read first when the old text is not in the request.
    _ex(
        "change the port in server.cfg to 9000",
        {"call": "fs.read", "path": "server.cfg"},
        {"call": "fs.edit", "path": "server.cfg", "old": "port = 8080", "new": "port = 9000"},
    ),
    _ex(
        "replace every 'colour' with 'color' in essay.md",
        {"call": "fs.edit", "path": "essay.md", "old": "colour", "new": "color", "all": True},
    ),
    _ex(
        "fix the typo 'recieve' in readme.md",
        {"call": "fs.edit", "path": "readme.md", "old": "recieve", "new": "receive"},
    ),
    # fs.copy / fs.move, of one file or a pattern into a folder.
    _ex("copy report.pdf to backup/", {"call": "fs.copy", "src": "report.pdf", "dst": "backup/"}),
    _ex(
        "back up all the csv files into archive",
        {"call": "fs.copy", "src": "*.csv", "dst": "archive"},
    ),
    _ex(
        "rename draft.txt to final.txt", {"call": "fs.move", "src": "draft.txt", "dst": "final.txt"}
    ),
    _ex("move the logs into old/", {"call": "fs.move", "src": "*.log", "dst": "old/"}),
    # fs.delete: only a file the user named; otherwise look, then ask.
    _ex("delete old.txt", {"call": "fs.delete", "path": "old.txt"}),
    _ex(
        "remove the tmp folder and everything in it",
        {"call": "fs.delete", "path": "tmp", "recursive": True},
    ),
    _ex(
        "delete the old report",
        {"call": "fs.list", "pattern": "*report*"},
        {
            "call": "ask",
            "question": "I see report-2023.pdf and report-2024.pdf: which one should I delete?",
        },
    ),
    # fs.mkdir
    _ex("make a folder called projects", {"call": "fs.mkdir", "path": "projects"}),
    # image.*: one file, or a folder / pattern with out_dir for the results.
    _ex(
        "thumbnails of every photo in pics",
        {"call": "image.thumbnail", "path": "pics", "size": 128, "out_dir": "pics/thumbs"},
    ),
    _ex(
        "make a 128px thumbnail of cat.jpg",
        {"call": "image.thumbnail", "path": "cat.jpg", "size": 128},
    ),
    _ex(
        "resize all the jpgs to 800 pixels wide into small/",
        {"call": "image.resize", "path": "*.jpg", "width": 800, "out_dir": "small"},
    ),
    _ex(
        "convert logo.png to webp", {"call": "image.convert", "path": "logo.png", "format": "webp"}
    ),
    _ex(
        "turn every png in icons into a jpg",
        {"call": "image.convert", "path": "icons/*.png", "format": "jpg", "out_dir": "icons/jpg"},
    ),
    _ex("how big is photo.png?", {"call": "image.info", "path": "photo.png"}),
    # image.text: the words an image shows (a screenshot, a scan, a photo of a note).
    _ex("what does the screenshot say?", {"call": "image.text", "path": "screenshot.png"}),
    _ex(
        "what's the deadline in the scanned letter?", {"call": "fs.read", "path": "letter_scan.pdf"}
    ),
    _ex(
        "what sizes are the images in scans?",
        {"call": "image.info", "path": "scans"},
    ),
    _ex(
        "crop the top-left 100x100 of map.png",
        {"call": "image.crop", "path": "map.png", "left": 0, "top": 0, "right": 100, "bottom": 100},
    ),
    # calc: arithmetic goes to calc, never mental arithmetic (beyond one-digit sums).
    _ex("what's 3+5?", {"call": "reply", "text": "3 + 5 = 8."}),
    _ex(
        "what is the total of 10, 25 and 7?",
        {"call": "calc", "expression": "10+25+7"},
        {"call": "reply", "text": "The total is 42."},
    ),
    _ex("what is 15% of 240?", {"call": "calc", "expression": "240*15/100"}),
    _ex(
        "add up the amounts in expenses.txt",
        {"call": "fs.read", "path": "expenses.txt"},
        {"call": "calc", "expression": "12.5+40+7.25"},
        {"call": "reply", "text": "The amounts in expenses.txt add up to 59.75."},
    ),
    # mem.*: the user's own facts.
    _ex(
        "my sister's birthday is on 3 May",
        {"call": "mem.store", "text": "The user's sister's birthday is on 3 May."},
    ),
    _ex("I work at Acme", {"call": "mem.store", "text": "The user works at Acme."}),
    _ex("my cat's name is Miso", {"call": "mem.store", "text": "The user's cat is called Miso."}),
    _ex(
        "remember that the cabin's wifi password is pine42",
        {"call": "mem.store", "text": "The wifi password at the cabin is pine42."},
    ),
    _ex("when is my sister's birthday?", {"call": "mem.search", "query": "sister's birthday"}),
    _ex("what did I tell you my wife's name is?", {"call": "mem.search", "query": "wife's name"}),
    _ex(
        "forget what I told you about my old job",
        {"call": "mem.forget", "query": "old job"},
    ),
    # reply: words alone, or a plain no for what no syscall can do.
    _ex("hi there", {"call": "reply", "text": "Hello! What would you like me to do?"}),
    _ex("thanks!", {"call": "reply", "text": "You're welcome!"}),
    _ex(
        "what's the weather tomorrow?",
        {"call": "reply", "text": "I can't check the weather: I have no internet or weather tool."},
    ),
    _ex(
        "what's the time in London?",
        {"call": "reply", "text": "I can't tell: I have no clock or time-zone tool."},
    ),
    _ex(
        "send an email to Anna",
        {"call": "reply", "text": "I can't send email: I have no mail tool."},
    ),
    _ex(
        "tell me a joke",
        {"call": "reply", "text": "Why did the computer sneeze? It had a virus."},
    ),
    # ask: the target is unclear, and nothing earlier names it.
    _ex("delete that", {"call": "ask", "question": "Which file do you want me to delete?"}),
    _ex("move that one", {"call": "ask", "question": "Which file should I move, and where to?"}),
    _ex("resize the picture", {"call": "ask", "question": "Which image, and to what size?"}),
    # Several parts: one call per step, then a reply with what was found.
    _ex(
        "copy report.md into backup and tell me how many lines it has",
        {"call": "fs.copy", "src": "report.md", "dst": "backup/"},
        {"call": "fs.read", "path": "backup/report.md"},
        {"call": "reply", "text": "I copied report.md into backup/; it has 12 lines."},
    ),
    _ex(
        "make a folder called old and move the logs into it",
        {"call": "fs.mkdir", "path": "old"},
        {"call": "fs.move", "src": "*.log", "dst": "old"},
        {"call": "reply", "text": "I made old/ and moved 3 logs into it."},
    ),
)
