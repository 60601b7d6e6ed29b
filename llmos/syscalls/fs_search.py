"""fs.search: the lines of a workspace's files that hold a query's words (BM25 over the lines,
stems and all), a regex, or, when no line holds the words, the passages nearest in meaning
(the process's `FilesByMeaning` service). Part of the fs family (`llmos.syscalls.fs`
registers it), in a module of its own for its size."""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from llmos.documents import Documents, Labels, kind_of, where
from llmos.errors import ErrorCode, LlmosError
from llmos.limits import (
    DOCUMENT_MAX_BYTES,
    MAX_SEARCH_FILE_BYTES,
    MAX_SEARCH_FILES,
    MAX_SEARCH_HITS,
    MAX_SEARCH_LINE_CHARS,
    SEARCH_DOCUMENT_SECONDS,
    SEARCH_HITS,
    SEARCH_MEANING_HIT_CHARS,
    SEARCH_MEANING_HITS,
    SEARCH_MEANING_MIN_SIMILARITY,
    SEARCH_MEANING_SECONDS,
)
from llmos.syscalls.base import (
    Quiet,
    Syscall,
    existing_path,
    fixed,
    narrowing_glob,
)
from llmos.syscalls.context import Process
from llmos.syscalls.fs import (
    BINARY_SNIFF_BYTES,
    FILE_FLAGS,
    _glob_match,
    _open_dir,
    _open_file,
    _read_capped,
    _require,
    _walk,
)
from llmos.syscalls.services import FilesByMeaning

log = logging.getLogger(__name__)


class FsSearch(Syscall):
    """Find which lines and files mention some words (in any order), best matches first."""

    needs_files = True
    call: Literal["fs.search"] = "fs.search"
    query: str = Field(
        min_length=1, description="Words to find, in any order and case (or a regex, regex=true)."
    )
    path: str = existing_path(
        "dir",
        named=True,
        default=".",
        description="A folder the request names to search in (else all of the workspace).",
    )
    pattern: str | None = narrowing_glob(default=None, description="Only files matching this glob.")
    regex: bool = fixed(default=False, description="Treat query as a regular expression.")
    max_hits: int = fixed(
        default=SEARCH_HITS, ge=1, le=MAX_SEARCH_HITS, description="Most lines to return."
    )


class FsSearchHit(Quiet):
    """One matching line: where it is, its text (cut around the match), how well it matches.
    A hit found by meaning (`by` "meaning") is a passage, lines `line` to `end_line`, and its
    score is its cosine similarity to the query, not a word score."""

    path: str
    line: int
    end_line: int | None = None
    text: str
    score: float | None = None
    by: Literal["meaning"] | None = None
    where: str | None = None
    """The page, sheet or slide of a document that holds the line ("page 3")."""
    quiet = frozenset({"where"})


class FsSearchFile(BaseModel):
    """A file with matching lines, and how many."""

    path: str
    hits: int


class FsSearchResult(Quiet):
    """Matching lines, best first (a regex's in file order), and per-file counts. `matches`
    counts every matching line, `files_matched` every file with one; `truncated` says that
    more lines matched than `hits` holds. `note` says when passages found by meaning were
    added because no line holds all of the query's words."""

    query: str
    note: str | None = None
    matches: int
    files_matched: int
    files: list[FsSearchFile]
    hits: list[FsSearchHit]
    files_scanned: int
    truncated: bool
    unread: int | None = None
    """Documents and images not read for text this time (over the search's time budget for
    converting new ones); a later search reads them."""
    quiet = frozenset({"unread"})


# Words a query leaves out unless it has nothing else: "the wifi password for the cabin".
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """a about an and any are as at be been but by can could did do does for from had has have
        he her his how i if in into is it its me my no not of on or our she so than that the their
        them then there these they this those to was we were what when where which who why will
        with would you your s t""",
    )
)
WORD = re.compile(r"\w+")
# BM25's usual constants: term-frequency saturation and how much a long line is discounted.
BM25_K1 = 1.2
BM25_B = 0.75
# Characters of a file whose words are counted to estimate its mean line length.
WORD_SAMPLE_CHARS = 64 * 1024
# A line's BM25 at which it earns half of the 0.5 the score gives BM25 (see _Scorer.score).
BM25_HALF = 5.0


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """Fold a lower-case word's simple English plural ("errors" -> "error", "boxes" -> "box",
    "cities" -> "city"), the same way for queries and lines, so either form finds the other."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zzes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _stems(text: str) -> list[str]:
    return [_stem(w) for w in WORD.findall(text.lower())]


@dataclass(frozen=True)
class _WordQuery:
    """A query's distinct terms (stopwords left out unless nothing else is left), its text and
    stems for phrase matches, and the strings whose presence makes a line worth scoring."""

    raw: str
    terms: tuple[str, ...]
    phrase: str
    starts: tuple[str, ...]

    @classmethod
    def parse(cls, query: str) -> _WordQuery:
        """Split a query into its terms and the strings that find their lines."""
        raw = query.strip().lower()
        words = WORD.findall(raw)
        kept = [w for w in words if w not in STOPWORDS] or words
        terms = tuple(dict.fromkeys(_stem(w) for w in kept))
        # A term's words start with it, except a "-ies" plural (city: cities), hence "cit".
        starts = tuple(
            dict.fromkeys(t[:-1] if t.endswith("y") and len(t) > 1 else t for t in terms)
        )
        phrase = " ".join(_stem(w) for w in words)
        return cls(raw=raw, terms=terms, phrase=f" {phrase} ", starts=starts)

    def first_at(self, low: str) -> int:
        """Where in a lower-case text the query's text or a term first appears (0 if nowhere)."""
        found = [at for at in (low.find(n) for n in (self.raw, *self.starts)) if at >= 0]
        return min(found, default=0)


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"  # what the regex \w matches


def _line_starts(low: str, query: _WordQuery) -> list[int]:
    """Offsets of the lines of a lower-case text that hold the query's text anywhere or a word
    starting with one of its terms. str.find, not a regex: one regex over the alternatives, with
    a word-start lookbehind, scanned a 4 MB log about 6x slower (measured)."""
    starts: set[int] = set()
    for needle, anywhere in ((query.raw, True), *((s, False) for s in query.starts)):
        if not needle or (not anywhere and query.raw and query.raw in needle):
            continue  # the query's own text, found anywhere, already finds these lines
        at = low.find(needle)
        while at >= 0:
            if anywhere or at == 0 or not _is_word_char(low[at - 1]):
                starts.add(low.rfind("\n", 0, at) + 1)
                at = low.find("\n", at)  # one hit makes the line a candidate
                if at < 0:
                    break
            at = low.find(needle, at + 1)
    return sorted(starts)


def _numbered(text: str) -> Iterator[tuple[int, str]]:
    """(number, line) of each line of a text, numbered by newlines as editors do (CRLF too)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line.removesuffix("\r")


def _candidates(text: str, query: _WordQuery) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line of a text worth scoring."""
    low = text.lower()
    if len(low) != len(text):
        # A character whose lower case is longer ("İ") would shift offsets: go line by line.
        for number, line in _numbered(text):
            if _line_starts(line.lower(), query):
                yield number, line
        return
    number, previous = 1, 0
    for start in _line_starts(low, query):
        number += text.count("\n", previous, start)
        previous = start
        end = text.find("\n", start)
        yield number, text[start : end if end >= 0 else len(text)].removesuffix("\r")


@dataclass
class _Line:
    """A line that holds a query term or the query's text: the counts BM25 needs."""

    path: str
    number: int
    text: str
    counts: dict[str, int]
    length: int
    phrase: bool


@dataclass
class _Corpus:
    """What a word search saw: every line's share of the statistics, and the candidates."""

    lines: int = 0
    words: float = 0.0
    df: dict[str, int] = field(default_factory=dict)
    found: list[_Line] = field(default_factory=list)
    path_terms: dict[str, frozenset[str]] = field(default_factory=dict)


def _scan_words(text: str, rel: str, query: _WordQuery, corpus: _Corpus) -> None:
    """Add one file's lines to the corpus statistics and its matching lines to the candidates."""
    corpus.lines += text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    # Words are counted in a sample and scaled to the file (BM25 needs only the mean line
    # length): counting all of a 4 MB file's took ten times as long as the rest of its search.
    sample = text[:WORD_SAMPLE_CHARS]
    corpus.words += len(WORD.findall(sample)) * len(text) / max(len(sample), 1)
    terms = set(query.terms)
    corpus.path_terms[rel] = frozenset(_stems(rel)) & terms
    for number, line in _candidates(text, query):
        low = line.lower()
        stems = _stems(low)
        counts: dict[str, int] = {}
        for stem in stems:
            if stem in terms:
                counts[stem] = counts.get(stem, 0) + 1
        phrase = query.raw in low
        if not phrase and len(counts) == len(terms) > 1:
            phrase = query.phrase in f" {' '.join(stems)} "
        if not counts and not phrase:
            continue
        for term in counts:
            corpus.df[term] = corpus.df.get(term, 0) + 1
        corpus.found.append(_Line(rel, number, line, counts, len(stems), phrase))


class _Scorer:
    """Scores lines against a query over the statistics of a whole search (see `score`)."""

    def __init__(self, corpus: _Corpus, terms: tuple[str, ...]) -> None:
        n = max(corpus.lines, 1)
        df = corpus.df
        # BM25's inverse document frequency, each line a document: rarer words weigh more.
        self.idf = {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in terms}
        self.total = sum(self.idf.values())
        self.avg_length = max(corpus.words / n, 1.0)

    def coverage(self, covered: Iterable[str]) -> float:
        """The share (0-1) of the query's weight that these terms carry."""
        return sum(self.idf[t] for t in covered) / self.total if self.total else 0.0

    def score(self, line: _Line, in_path: frozenset[str]) -> float:
        """How well a line matches, best first: the share of the query's weight its words and
        its file's path cover (0-1), +1 when the line itself holds every term, +0.5 for the
        exact phrase, + up to 0.5 from its BM25, so all words in one line outrank fewer."""
        norm = BM25_K1 * (1 - BM25_B + BM25_B * line.length / self.avg_length)
        bm25 = 0.0
        for term, tf in line.counts.items():
            bm25 += self.idf[term] * tf * (BM25_K1 + 1) / (tf + norm)
        coverage = self.coverage(line.counts.keys() | in_path)
        whole = 1.0 if self.idf and len(line.counts) == len(self.idf) else 0.0
        return coverage + whole + (0.5 if line.phrase else 0.0) + 0.5 * bm25 / (bm25 + BM25_HALF)


def _snippet(line: str, first_at: Callable[[str], int]) -> str:
    """The line, stripped, cut to MAX_SEARCH_LINE_CHARS around its first match."""
    text = line.strip()
    if len(text) <= MAX_SEARCH_LINE_CHARS:
        return text
    start = max(0, first_at(text) - MAX_SEARCH_LINE_CHARS // 4)
    end = start + MAX_SEARCH_LINE_CHARS
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


class _Documents:
    """The documents one search reads as text: cached text always, new conversions only until
    SEARCH_DOCUMENT_SECONDS have gone, so a folder of scans cannot hold a search for minutes.
    An image's text only from the cache (once fs.read, image.text or the meaning index read
    it): OCR costs a second or more an image, and a folder of photos would spend the whole
    budget on them. Keeps each document's text to say where (page, sheet) a hit is."""

    def __init__(self, process: Process) -> None:
        self.reader = process.services.get(Documents) or Documents()
        self.deadline = time.monotonic() + SEARCH_DOCUMENT_SECONDS
        self.labels: dict[str, Labels] = {}
        self.unread = 0

    def text(self, fd: int, rel: str, kind: str) -> str | None:
        data = _read_capped(fd, DOCUMENT_MAX_BYTES)
        if data is None:
            return None
        extracted = self.reader.cached(data, kind)
        if extracted is None:
            if kind == "image":
                return None  # OCR is for reading an image; a search finds what was read
            if time.monotonic() > self.deadline:
                self.unread += 1
                return None
            try:
                extracted = self.reader.read(data, kind, rel)
            except LlmosError:
                return None  # encrypted, corrupt, too big: not searchable, nothing else breaks
        self.labels[rel] = Labels(extracted.text)
        return extracted.text

    def where(self, rel: str, line: int) -> str | None:
        labels = self.labels.get(rel)
        return None if labels is None else labels.at(line)


def _searchable(fd: int, rel: str, documents: _Documents) -> str | None:
    """A file's text for searching (a document's or an image's converted); None for another
    binary file or a text file over MAX_SEARCH_FILE_BYTES."""
    head = os.pread(fd, BINARY_SNIFF_BYTES, 0)
    kind = kind_of(rel, head)
    if kind is not None:
        return documents.text(fd, rel, kind)
    if b"\x00" in head:
        return None
    data = _read_capped(fd, MAX_SEARCH_FILE_BYTES)
    if data is None:
        return None
    return data.decode("utf-8", errors="replace")


def _search_texts(
    call: FsSearch, process: Process, documents: _Documents
) -> Iterator[tuple[str, str | None]]:
    """(workspace path, text or None) of each regular file the search covers, never following
    a link; a directory's files in path order, filtered by the call's glob."""
    with process.workspace.locate(call.path) as loc:
        info = _require(loc, call.path)
        if not stat.S_ISDIR(info.st_mode):
            fd = _open_file(loc, call.path)
            try:
                text = _searchable(fd, loc.rel, documents)
            finally:
                os.close(fd)
            yield loc.rel, text
            return
        dfd = _open_dir(loc, call.path)
        prefix = f"{loc.rel}/" if loc.rel else ""
        try:
            hidden = process.workspace.hidden_below(loc.rel)
            for rel, name, st, parent_fd in _walk(dfd, recursive=True, hidden=hidden):
                if not stat.S_ISREG(st.st_mode) or not _glob_match(call.pattern, rel, name):
                    continue
                try:
                    # Open by name under the entry's own folder handle, never by a multi-part
                    # path: a folder swapped for a symlink meanwhile must not be followed.
                    fd = os.open(name, FILE_FLAGS, dir_fd=parent_fd)
                except OSError:
                    continue
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        continue
                    text = _searchable(fd, prefix + rel, documents)
                finally:
                    os.close(fd)
                yield prefix + rel, text
        finally:
            os.close(dfd)


def _regex(query: str) -> re.Pattern[str]:
    try:
        return re.compile(query, re.IGNORECASE)
    except re.error as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"bad regular expression: {exc}") from None


def _search_regex(call: FsSearch, process: Process) -> FsSearchResult:
    """Every line the regex matches, in file order; the first max_hits are returned."""
    rx = _regex(call.query)
    hits: list[FsSearchHit] = []
    per_file: dict[str, int] = {}
    scanned = 0
    documents = _Documents(process)
    for rel, text in _search_texts(call, process, documents):
        scanned += 1
        for number, line in _numbered(text or ""):
            if rx.search(line):
                per_file[rel] = per_file.get(rel, 0) + 1
                if len(hits) < call.max_hits:
                    shown = _snippet(line, lambda t: m.start() if (m := rx.search(t)) else 0)
                    at = documents.where(rel, number)
                    hits.append(FsSearchHit(path=rel, line=number, text=shown, where=at))
    matches = sum(per_file.values())
    files = [FsSearchFile(path=p, hits=n) for p, n in per_file.items()][:MAX_SEARCH_FILES]
    return FsSearchResult(
        query=call.query,
        matches=matches,
        files_matched=len(per_file),
        files=files,
        hits=hits,
        files_scanned=scanned,
        truncated=matches > len(hits),
        unread=documents.unread or None,
    )


def _search_words(call: FsSearch, process: Process) -> tuple[FsSearchResult, bool]:
    """Lines holding the query's words in any order, ranked (`_Scorer.score`), best first; files
    ranked by how much of the query their lines and path cover, then by their best line. Also
    says whether some line holds all of the query's words (or its very text)."""
    query = _WordQuery.parse(call.query)
    corpus = _Corpus()
    scanned = 0
    documents = _Documents(process)
    for rel, text in _search_texts(call, process, documents):
        scanned += 1
        if text is not None:
            _scan_words(text, rel, query, corpus)
    scorer = _Scorer(corpus, query.terms)
    paths = corpus.path_terms
    scored = [(scorer.score(line, paths[line.path]), line) for line in corpus.found]
    ranked = sorted(scored, key=lambda pair: (-pair[0], pair[1].path, pair[1].number))
    best: dict[str, float] = {}
    count: dict[str, int] = {}
    covered: dict[str, set[str]] = {}
    for score, line in ranked:
        best.setdefault(line.path, score)
        count[line.path] = count.get(line.path, 0) + 1
        covered.setdefault(line.path, set(paths[line.path])).update(line.counts)
    order = sorted(best, key=lambda p: (-scorer.coverage(covered[p]), -best[p], -count[p], p))
    hits = [
        FsSearchHit(
            path=line.path,
            line=line.number,
            text=_snippet(line.text, lambda t: query.first_at(t.lower())),
            score=round(score, 2),
            where=documents.where(line.path, line.number),
        )
        for score, line in ranked[: call.max_hits]
    ]
    whole = any(
        line.phrase or (query.terms and len(line.counts) == len(query.terms))
        for line in corpus.found
    )
    result = FsSearchResult(
        query=call.query,
        matches=len(ranked),
        files_matched=len(order),
        files=[FsSearchFile(path=p, hits=count[p]) for p in order[:MAX_SEARCH_FILES]],
        hits=hits,
        files_scanned=scanned,
        truncated=len(ranked) > len(hits),
        unread=documents.unread or None,
    )
    return result, whole


def _passage(text: str) -> str:
    """A passage found by meaning, cut to SEARCH_MEANING_HIT_CHARS."""
    text = text.strip()
    if len(text) <= SEARCH_MEANING_HIT_CHARS:
        return text
    return text[: SEARCH_MEANING_HIT_CHARS - 1] + "…"


def _meaning_hits(call: FsSearch, scope: str, files: FilesByMeaning) -> list[FsSearchHit]:
    """Up to SEARCH_MEANING_HITS passages of the searched folder (`scope`, and the call's glob)
    related to the query, best first; none when the index fails, which is logged, so a word
    search never fails because of it."""
    try:
        found = files.search(
            call.query, k=2 * SEARCH_MEANING_HITS, path=call.path, budget_s=SEARCH_MEANING_SECONDS
        )
    except Exception as exc:  # the index, its database or its model: the words still answer
        log.warning("fs.search by meaning failed; answering by words only: %s", exc)
        return []
    hits: list[FsSearchHit] = []
    for hit in found.hits:
        rel = hit.path.removeprefix(f"{scope}/") if scope else hit.path
        if hit.similarity < SEARCH_MEANING_MIN_SIMILARITY or (
            hit.path != scope and not _glob_match(call.pattern, rel, rel.rpartition("/")[2])
        ):
            continue
        hits.append(
            FsSearchHit(
                path=hit.path,
                line=hit.start_line,
                end_line=hit.end_line,
                text=_passage(hit.text),
                score=round(hit.similarity, 2),
                by="meaning",
                where=where(hit.text, 1),  # its first line: [page 3]
            )
        )
        if len(hits) >= SEARCH_MEANING_HITS:
            break
    return hits


def with_meaning(
    result: FsSearchResult, call: FsSearch, process: Process, files: FilesByMeaning
) -> FsSearchResult:
    """A word search's result with passages found by meaning put first (marked `by` "meaning",
    with their line range), for a search in which no line holds all of the query's words: the
    model asked "which database does the app use?" of a config saying `engine = "postgres"`
    under `[db]`, found nothing by words, and gave up. Word hits inside a passage are dropped
    (the passage shows them); the hits stay within max_hits."""
    with process.workspace.locate(call.path) as loc:
        scope = loc.rel
    found = _meaning_hits(call, scope, files)
    if not found:
        return result
    covered = {(h.path, n) for h in found for n in range(h.line, (h.end_line or h.line) + 1)}
    words = [h for h in result.hits if (h.path, h.line) not in covered]
    hits = (found + words)[: call.max_hits]
    held = "these words" if result.matches == 0 else "all of these words"
    note = (
        f"no line holds {held}, but the hits marked by meaning are the passages closest in"
        " meaning to the query (lines line to end_line): the answer is likely in their text"
    )
    truncated = result.truncated or len(found) + len(words) > len(hits)
    return result.model_copy(update={"note": note, "hits": hits, "truncated": truncated})


def fs_search(
    call: FsSearch, process: Process, files: FilesByMeaning | None = None
) -> FsSearchResult:
    """Search text files (skipping binaries and huge files) by words, or by regex. Given the
    workspace's search by meaning (`files`), a word search in which no line holds all of the
    query's words also brings passages found by meaning (`with_meaning`)."""
    if call.regex:
        return _search_regex(call, process)
    result, whole = _search_words(call, process)
    if whole or files is None:
        return result
    return with_meaning(result, call, process, files)


def fs_search_here(call: FsSearch, process: Process) -> FsSearchResult:
    """fs.search as the dispatch path runs it: by words, and when the words match nothing,
    with the process's own search by meaning too, when it has one that opens (a missing
    embedder or a broken index leaves the word search's answer alone)."""
    found = fs_search(call, process)
    if not (found.matches or call.regex):
        try:  # no line matched, so no line holds every word: add what meaning finds
            files = process.services.get(FilesByMeaning)
            if files is not None:
                found = with_meaning(found, call, process, files)
        except Exception as exc:  # the word search must still answer
            log.warning("search by meaning is unavailable: %s", exc)
    return _elsewhere(found, call, process)


def _elsewhere(found: FsSearchResult, call: FsSearch, process: Process) -> FsSearchResult:
    """`found`, with a note when a search of one folder found nothing: the words may be
    elsewhere in the workspace (the handler does not widen the search itself, since only
    the folder asked for was authorized; the kernel's next call is checked like any)."""
    where = process.workspace.relpath(call.path)
    narrowed = where not in ("", ".")
    if found.matches or found.hits or not (narrowed or call.pattern):
        return found
    scope = " in ".join(
        ([f"files matching {call.pattern}"] if call.pattern else []) + ([where] if narrowed else [])
    )
    again = " and ".join(
        (['with path "."'] if narrowed else []) + (["without the pattern"] if call.pattern else [])
    )
    note = f"nothing in {scope} matches; it may be elsewhere: search again {again}"
    return found.model_copy(update={"note": note})
