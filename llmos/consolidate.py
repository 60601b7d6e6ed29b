"""Consolidation while idle (Letta's sleep-time idea): when no request has come for a while,
the shell tidies what llmos keeps, and stops at once when one arrives. Learned examples that
say the same thing are merged; kept facts stored twice are marked the same, and a fact a later
one contradicts ("the boiler code is 1234", then "... is 5678") is marked replaced, so a search
shows it with the newer one's id; the conversation's running summary loses repeated lines.
Nothing the person stored is ever deleted: facts are only marked, and of the lessons only
those learned without the person (never taught, kept or marked bad) are merged."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmos.errors import LlmosError
from llmos.kernel.lessons import normal
from llmos.syscalls.mem import REPLACED_BY, SAME_AS

if TYPE_CHECKING:
    from llmos.kernel.loop import Conversation
    from llmos.memory.memory import Memory
    from llmos.syscalls.services import Record
    from llmos.system import System

LEARNED_SAME = 0.9
"""Two learned lessons with the same calls whose requests are at least this close in meaning
(cosine) are one lesson said twice: the more used is kept."""

SUBJECT_WORDS = 3
"""A fact contradicts an earlier one when both say the same first words, at least this many,
and then differ only in a last value of at most VALUE_WORDS words each ("the spare key is
under the" mat / flower pot). Measured on pairs by hand: the cosine of all-MiniLM-L6-v2 does
not tell these apart ("Lena's flight lands at 6pm" / "at 8pm" 0.97, as alike as a copy;
"Mira lives in Oslo" / "Mira works in Oslo", both true, 0.88), the words do."""

VALUE_WORDS = 4

log = logging.getLogger(__name__)

_WORD = re.compile(r"[\w'@.:/-]+")


@dataclass
class Tidied:
    """What one consolidation did, and whether a request stopped it."""

    lessons_merged: int = 0
    facts_same: int = 0
    facts_replaced: int = 0
    summary_lines: int = 0
    stopped: bool = False
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    """Steps that could not run, and why (the memory held by another llmos, say)."""

    def describe(self) -> str:
        """One line for the person."""
        done = (
            f"merged {self.lessons_merged} learned examples, marked {self.facts_same} facts "
            f"stored twice and {self.facts_replaced} replaced by later ones, dropped "
            f"{self.summary_lines} repeated summary lines"
        )
        if self.skipped:
            done += "; skipped: " + "; ".join(self.skipped)
        return done + (" (stopped for a request)" if self.stopped else "")


def consolidate(
    system: System, stop: threading.Event, conversation: Conversation | None = None
) -> Tidied:
    """Tidy the lessons, the kept facts and `conversation`'s summary, checking `stop` between
    every step: it returns as soon as it is set, with what was done so far (each change is
    written whole, so stopping loses nothing)."""
    start = time.perf_counter()
    done = Tidied()
    steps: tuple[Callable[[], None], ...] = (
        lambda: _merge_learned(system, stop, done),
        lambda: _mark_facts(system.memory, stop, done),
        lambda: _tidy_summary(conversation, done),
    )
    for name, step in zip(("learned examples", "facts", "summary"), steps, strict=True):
        if stop.is_set():
            break
        try:
            step()
        except LlmosError as exc:  # one part that cannot be tidied leaves the others to do
            done.skipped.append(f"{name}: {exc.code}: {exc.message}")
    done.stopped = stop.is_set()
    done.seconds = time.perf_counter() - start
    return done


def _merge_learned(system: System, stop: threading.Event, done: Tidied) -> None:
    """Merge learned lessons of the same calls said nearly the same way: the most used stays,
    with the others' uses added."""
    bank, lessons = system.examples, system.lessons
    groups: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    learned = [x for x in lessons.all() if x.kind == "learned"]
    for i, lesson in enumerate(learned):
        groups[(lesson.workspace, repr(lesson.calls))].append(i)
    gone: set[str] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        cosines = bank.similarities([learned[i].request for i in members])  # once a group
        for a_at, a in enumerate(members):
            if stop.is_set():
                return
            for b_at in range(a_at + 1, len(members)):
                one, two = learned[a], learned[members[b_at]]
                if one.id in gone or two.id in gone:
                    continue
                alike = normal(one.request) == normal(two.request)
                score = None if cosines is None else cosines[a_at][b_at]
                if alike or (score is not None and score >= LEARNED_SAME):
                    first = (one.uses, one.created) >= (two.uses, two.created)
                    keep, drop = (one, two) if first else (two, one)
                    if lessons.merge(keep.id, drop.id):
                        gone.add(drop.id)
                        bank.forget_own(drop.request, drop.workspace)
                        done.lessons_merged += 1


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().rstrip(".!"))


def _mark_facts(memory: Memory, stop: threading.Event, done: Tidied) -> None:
    """Mark kept facts stored twice (the same words) and those a later fact contradicts."""
    facts = [r for r in memory.db.all("archival") if not r.meta.get(SAME_AS)]
    first: dict[tuple[str, ...], Record] = {}
    replaced = {r.id for r in facts if r.meta.get(REPLACED_BY)}
    heads: dict[tuple[str, ...], list[tuple[Record, list[str]]]] = defaultdict(list)
    for record in facts:  # oldest first
        if stop.is_set():
            return
        said = _words(record.text)
        key = tuple(said)
        if key in first:
            if memory.db.update_meta(record.id, {SAME_AS: first[key].id}) is not None:
                done.facts_same += 1
            continue
        first[key] = record
        for tail in range(1, VALUE_WORDS + 1):
            if len(said) - tail < SUBJECT_WORDS:
                break
            head = key[:-tail]
            for older, older_said in heads.get(head, []):
                if older.id in replaced or not _differs_at(older_said, said, len(head)):
                    continue
                if memory.db.update_meta(older.id, {REPLACED_BY: record.id}) is not None:
                    replaced.add(older.id)
                    done.facts_replaced += 1
            heads[head].append((record, said))


def _differs_at(older: list[str], newer: list[str], shared: int) -> bool:
    """Whether two facts say the same first `shared` words, then differ at once, and each
    ends within VALUE_WORDS words of there."""
    return (
        older[:shared] == newer[:shared]
        and len(older) > shared
        and older[shared] != newer[shared]
        and len(older) - shared <= VALUE_WORDS
    )


def _tidy_summary(conversation: Conversation | None, done: Tidied) -> None:
    """Drop the running summary's lines that repeat an earlier line."""
    if conversation is None or not conversation.summary:
        return
    seen: set[str] = set()
    kept = []
    for line in conversation.summary.splitlines():
        key = " ".join(line.lower().split())
        if key and key in seen:
            done.summary_lines += 1
            continue
        seen.add(key)
        kept.append(line)
    conversation.summary = "\n".join(kept)


class IdleTidy:
    """Runs one consolidation once the person has left the shell idle `after` seconds, and
    stops it at once when they come back (`wake` waits only for the step running to end)."""

    def __init__(self, work: Callable[[threading.Event], Tidied], after: float) -> None:
        self.work = work
        self.after = after
        self.last: Tidied | None = None
        """What the latest consolidation did (for `:tidy`'s report)."""
        self._stop = threading.Event()
        self._timer: threading.Timer | None = None

    def rest(self) -> None:
        """The shell waits for the person: consolidate if nothing comes within `after`."""
        self.wake()
        self._stop = threading.Event()
        stop = self._stop
        self._timer = threading.Timer(self.after, lambda: self._run(stop))
        self._timer.daemon = True
        self._timer.name = "llmos-tidy"
        self._timer.start()

    def _run(self, stop: threading.Event) -> None:
        try:
            self.last = self.work(stop)
        except Exception as exc:  # tidying is a courtesy: it never takes the shell down
            log.info("consolidation failed: %s: %s", type(exc).__name__, exc)

    def wake(self) -> None:
        """A request came: cancel the countdown, or stop the consolidation and wait for it."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        self._stop.set()
        timer.cancel()
        if timer.is_alive() and timer is not threading.current_thread():
            timer.join()
