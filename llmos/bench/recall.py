"""`llmos bench recall FILE.json`: a long, real conversation told to the kernel and then asked
about. The file has LoCoMo's shape (../shared/eval/locomo: two speakers, dated sessions of
messages, questions with answers, evidence message ids and a category).

Each message is told as one turn ("[1:56 pm on 8 May, 2023] Caroline: ...") with the kernel's
"Noted." replayed, as `bench conversation` replays its filler, so the pager pages as in the
shell; then each question is a turn the model really decodes. Figures: token F1 of the reply
against the answer and evidence recall@5 (an evidence message among the five pages the recall
search finds for the question or the pages the pager shows around them, or still in the
context; the pages alone are reported beside) per category, the share of
unanswerable questions (category 5) answered as not known, page-in latency, where time went.
"""

from __future__ import annotations

import json
import re
import statistics
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.bench.conversation import Talk, in_scratch
from llmos.bench.dispatch import percentile
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.checks import says_not_known
from llmos.pager import PAGE_AROUND
from llmos.syscalls.services import recallable

if TYPE_CHECKING:
    from llmos.config import Settings
    from llmos.kernel.backend import LlamaCppBackend
    from llmos.system import System

ANSWERABLE = (1, 2, 3, 4)
"""LoCoMo's categories whose answer is in the conversation: multi-hop, temporal, open-domain
inference, single-hop. Category 5 (adversarial) has none."""


@dataclass(frozen=True)
class Said:
    """One message of the conversation."""

    dia_id: str
    speaker: str
    text: str
    date: str

    def moment(self) -> float | None:
        """When it was said, as a timestamp, from its session's date ("1:56 pm on 8 May, 2023");
        None when that does not parse."""
        try:
            return time.mktime(time.strptime(self.date.strip(), "%I:%M %p on %d %B, %Y"))
        except ValueError:
            return None

    def told(self) -> str:
        """The message as it is told to the kernel: its session's date, who, what."""
        said = f"{self.speaker}: {self.text}"
        return f"[{self.date}] {said}" if self.date else said


@dataclass(frozen=True)
class Question:
    """A question about the conversation, with its answer and the messages that hold it."""

    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


def load(path: Path) -> tuple[list[Said], list[Question]]:
    """The messages (in order) and questions of a conversation in LoCoMo's shape; E_INVAL
    naming what is missing or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LlmosError(ErrorCode.E_NOENT, f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"{path} is not JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("conversation"), dict):
        data = {**data["conversation"], "qa": data.get("qa", [])}  # the upstream file's nesting
    if not isinstance(data, dict):
        raise LlmosError(ErrorCode.E_INVAL, f"{path}: expected an object with session_N lists")
    numbers = sorted(
        int(key.removeprefix("session_"))
        for key, value in data.items()
        if re.fullmatch(r"session_\d+", key) and isinstance(value, list)
    )
    if not numbers:
        raise LlmosError(ErrorCode.E_INVAL, f"{path}: no session_N lists of messages")
    said: list[Said] = []
    for n in numbers:
        date = str(data.get(f"session_{n}_date_time", ""))
        for i, message in enumerate(data[f"session_{n}"]):
            try:
                text = str(message["text"])
                if message.get("blip_caption"):
                    text += f" [shares a photo: {message['blip_caption']}]"
                said.append(Said(str(message["dia_id"]), str(message["speaker"]), text, date))
            except (KeyError, TypeError, AttributeError) as exc:
                raise LlmosError(
                    ErrorCode.E_INVAL, f"{path}: session_{n} message {i} lacks {exc}"
                ) from exc
    questions: list[Question] = []
    for i, qa in enumerate(data.get("qa", [])):
        try:
            category = int(qa["category"])
            answer = qa.get("answer", qa.get("adversarial_answer", "") if category == 5 else None)
            if answer is None:
                raise KeyError("answer")
            questions.append(
                Question(str(qa["question"]), str(answer), tuple(qa.get("evidence", [])), category)
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LlmosError(ErrorCode.E_INVAL, f"{path}: question {i} lacks {exc}") from exc
    return said, questions


_ARTICLES = re.compile(r"\b(?:a|an|the|and)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> list[str]:
    """LoCoMo's answer normalisation: lower case, no punctuation, no articles; its words."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(reply: str, answer: str) -> float:
    """Token F1 of a reply against the answer (the usual measure of such QA)."""
    got, want = normalize(reply), normalize(answer)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


@dataclass
class RecallFigures:
    """What telling and asking about one conversation measured."""

    model: str
    messages: int
    questions: int
    f1: float
    recall_at_5: float
    recall_at_5_meaning: float
    recall_at_5_pages: float
    """Evidence among the five pages themselves, without the pages shown around them."""
    not_known: float
    by_category: dict[str, dict[str, float]]
    answers: list[dict[str, Any]] = field(default_factory=list)
    page_in_ms_p50: float = 0.0
    page_in_ms_p99: float = 0.0
    page_outs: int = 0
    tell_seconds: float = 0.0
    ask_seconds: float = 0.0
    seconds: float = 0.0
    steps: int = 0
    """Model steps decoded while asking (a question takes one or more)."""
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0

    def lines(self) -> list[str]:
        """The figures as the bench prints them."""
        out = [
            f"recall: {self.messages} messages told, {self.questions} questions on {self.model}",
            f"  token F1 {self.f1:.3f}, evidence recall@5 {self.recall_at_5:.0%} with the "
            f"pages around each ({self.recall_at_5_pages:.0%} the pages alone, "
            f"{self.recall_at_5_meaning:.0%} by meaning alone; categories 1-4); "
            f"not known when not told: {self.not_known:.0%} (category 5)",
        ]
        for category, row in sorted(self.by_category.items()):
            out.append(
                f"    category {category}: {int(row['questions'])} questions, F1 "
                f"{row['f1']:.3f}, recall@5 {row['recall_at_5']:.0%}"
                + (f", not known {row['not_known']:.0%}" if "not_known" in row else "")
            )
        out += [
            f"  page-in p50 {self.page_in_ms_p50:.1f} ms, p99 {self.page_in_ms_p99:.1f} ms; "
            f"{self.page_outs} page-outs",
            f"  telling {self.tell_seconds:.0f} s, asking {self.ask_seconds:.0f} s "
            f"({self.ask_seconds / max(self.questions, 1):.1f} s a question), "
            f"{self.seconds:.0f} s in all",
            f"  asking: {self.steps} model steps; prefill {self.prefill_tokens} tokens in "
            f"{self.prefill_seconds:.0f} s, decode {self.decode_tokens} tokens in "
            f"{self.decode_seconds:.0f} s, the rest (page-in, search, examples, checks) "
            f"{max(self.ask_seconds - self.prefill_seconds - self.decode_seconds, 0):.0f} s",
        ]
        return out


def run_recall(
    system: System,
    real: LlamaCppBackend,
    workspace: Path,
    said: list[Said],
    questions: list[Question],
) -> RecallFigures:
    """Tell `said` turn by turn (replies replayed), then ask each of `questions` as a turn the
    model decodes; score the replies and the recall search."""
    start = time.perf_counter()
    # Deterministic, so two runs of the same code score alike: the extracted summary always
    # (on two cores the model's would take longer than SUMMARY_MAX_SECONDS anyway; the choice
    # by measured speed flipped between runs), and every page indexed before a question is
    # asked (a person types slower than a page is indexed; the bench asks at once).
    talk = Talk.open(system, real, workspace, "recall", summary_seconds=0.0)
    kernel, process, pager, conversation = talk.kernel, talk.process, talk.pager, talk.talk
    turn_of: dict[str, int] = {}
    for message in said:
        turn = talk.tell(message.told(), "Noted.")
        turn_of[message.dia_id] = turn.number
        # Replayed history keeps its own time: the page says when it was said, not today.
        turn.started = message.moment() or turn.started
    memory = system.memory
    memory.flush(300)
    told = time.perf_counter()
    talk.backend.decoded.clear()  # what telling decoded (a written summary) is not asking's
    kernel.check_replies = True  # the questions are answered as the shell answers them
    answers: list[dict[str, Any]] = []

    def resident() -> set[object]:
        return {t.number for t in conversation.turns}

    def in_view(question: str, by_words: bool) -> tuple[set[object], set[object]]:
        """The turns in view for `question`: the five pages the recall search finds (alone,
        and with the pages around each that the pager shows with it), and the turns still in
        the context."""
        hits = memory.search(
            question,
            k=5,
            collections=("recall",),
            session=pager.session_id,
            by_words=by_words,
            allow=recallable,  # as the pager pages in
        )
        pages = {h.record.meta.get("turn") for h in hits}
        around = {
            r.meta.get("turn")
            for t in pages
            if isinstance(t, int)
            for r in memory.around("recall", pager.session_id, t, PAGE_AROUND, PAGE_AROUND)
            if recallable(r)
        }
        return pages | resident(), pages | around | resident()

    for q in questions:
        memory.flush(300)
        # found by meaning and words (the pager's way), and by meaning alone
        (alone, found), (_, by_meaning) = in_view(q.question, True), in_view(q.question, False)
        wanted = {turn_of[d] for d in q.evidence if d in turn_of}
        reply = ended = ""
        steps: list[str] = []
        for event in kernel.turn(process, conversation, q.question):
            if event.kind in ("reply", "ask"):
                reply = event.text
            elif event.kind in ("error", "limit"):
                ended = event.text
            if event.kind == "call" and event.call:
                steps.append(str(event.call.get("call", "")))
        answers.append(
            {
                "question": q.question,
                "answer": q.answer,
                "category": q.category,
                "reply": reply,
                "f1": token_f1(reply, q.answer),
                "found": bool(found & wanted) if wanted else None,
                "found_alone": bool(alone & wanted) if wanted else None,
                "found_by_meaning": bool(by_meaning & wanted) if wanted else None,
                "not_known": says_not_known(reply),
                "calls": steps,
                "error": "" if reply else ended,
            }
        )
    asked = time.perf_counter()
    stats = pager.stats
    decoded = talk.backend.decoded
    return RecallFigures(
        model=real.name,
        messages=len(said),
        questions=len(questions),
        **score(answers),
        answers=answers,
        page_in_ms_p50=statistics.median(stats.page_in_ms) if stats.page_in_ms else 0.0,
        page_in_ms_p99=percentile(stats.page_in_ms, 99) if stats.page_in_ms else 0.0,
        page_outs=stats.page_outs,
        tell_seconds=told - start,
        ask_seconds=asked - told,
        seconds=asked - start,
        steps=len(decoded),
        prefill_tokens=sum(c.prefill_tokens for c in decoded),
        prefill_seconds=sum(c.prefill_seconds for c in decoded),
        decode_tokens=sum(c.completion_tokens for c in decoded),
        decode_seconds=sum(c.decode_seconds for c in decoded),
    )


def score(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """F1 and recall@5 over the answerable categories, the share of category 5 answered as not
    known, and each category's own figures."""

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else 0.0

    answerable = [a for a in answers if a["category"] in ANSWERABLE]
    unanswerable = [a for a in answers if a["category"] not in ANSWERABLE]
    by_category: dict[str, dict[str, float]] = {}
    for category in sorted({a["category"] for a in answers}):
        mine = [a for a in answers if a["category"] == category]
        row = {
            "questions": float(len(mine)),
            "f1": mean([a["f1"] for a in mine]),
            "recall_at_5": mean([float(a["found"]) for a in mine if a["found"] is not None]),
        }
        if category not in ANSWERABLE:
            row["not_known"] = mean([float(a["not_known"]) for a in mine])
        by_category[str(category)] = row
    return {
        "f1": mean([a["f1"] for a in answerable]),
        "recall_at_5": mean([float(a["found"]) for a in answerable if a["found"] is not None]),
        "recall_at_5_meaning": mean(
            [float(a["found_by_meaning"]) for a in answerable if a["found_by_meaning"] is not None]
        ),
        "recall_at_5_pages": mean(
            [float(a["found_alone"]) for a in answerable if a["found_alone"] is not None]
        ),
        "not_known": mean([float(a["not_known"]) for a in unanswerable]),
        "by_category": by_category,
    }


def spread(questions: list[Question], n: int) -> list[Question]:
    """`n` of the questions spread evenly over the list (all when `n` is 0 or more than there
    are): a file's questions come grouped by kind, so its first few would measure one kind."""
    if n <= 0 or n >= len(questions):
        return questions
    return [questions[i * len(questions) // n] for i in range(n)]


def bench_recall(settings: Settings, path: Path, *, questions: int = 0) -> dict[str, Any]:
    """`llmos bench recall`: the conversation in `path` on the configured (default) model, in
    a scratch LLMOS_HOME and workspace (`questions` of its questions, or all); prints and
    returns the figures."""
    said, asked = load(path)
    asked = spread(asked, questions)
    return in_scratch(
        settings,
        "recall",
        lambda system, real, workspace: run_recall(system, real, workspace, said, asked),
    )
