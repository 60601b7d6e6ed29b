"""`llmos bench lessons [--size N]`: what the person's lessons cost a request. In a scratch
LLMOS_HOME, the same requests are decided by the default model before and after N lessons
(1,000 by default, made from templates) are taught: the examples block's prompt tokens, the
time to rank the bank, the first decision's latency p50, and the one-off time to embed the
lessons when the bank warms."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.kernel.backend import text_tokens
from llmos.kernel.loop import Conversation, Kernel

if TYPE_CHECKING:
    from llmos.config import Settings
    from llmos.kernel.backend import Backend
    from llmos.kernel.examples import Call

REQUESTS = (
    "never forget: the dentist moved to Friday",
    "ditch scratch.txt",
    "what does plan.txt say?",
    "keep in mind that the bins go out on Thursday",
    "list the text files",
    "how big is photo.png?",
    "copy plan.txt to backup/plan.txt",
    "what did I tell you about the plumber?",
)
"""Requests decided with and without the lessons: some near lessons, some not."""

_FRAMES: tuple[tuple[str, Any], ...] = (
    ("never forget: {}", lambda c: [{"call": "mem.store", "text": c}]),
    ("keep in mind that {}", lambda c: [{"call": "mem.store", "text": c}]),
    ("bear in mind that {}", lambda c: [{"call": "mem.store", "text": c}]),
    ("what did I say about {}?", lambda c: [{"call": "mem.search", "query": c}]),
    (
        "jot down in notes.txt: {}",
        lambda c: [{"call": "fs.append", "path": "notes.txt", "text": c}],
    ),
    ("search my files for {}", lambda c: [{"call": "fs.search", "query": c}]),
    ("wipe what you know about {}", lambda c: [{"call": "mem.forget", "query": c}]),
    ("remember for later: {}", lambda c: [{"call": "mem.store", "text": c}]),
)
_CONTENT = (
    "the {} key is under the mat",
    "{} is allergic to nuts",
    "the {} meeting moved to noon",
    "the {} code is 4471",
    "{} likes green tea",
)
_NAMES = (
    "spare",
    "Sam",
    "team",
    "locker",
    "Mira",
    "garage",
    "Bo",
    "office",
    "Lena",
    "gate",
    "Ana",
    "shed",
    "Kai",
    "club",
    "Noor",
    "boat",
    "Ivo",
    "gym",
    "Tess",
    "cellar",
    "Omar",
    "attic",
    "Jun",
    "bike",
    "Eva",
)


def lessons(size: int) -> list[tuple[str, list[Call]]]:
    """`size` distinct lessons from the templates above."""
    out: list[tuple[str, list[Call]]] = []
    for name in _NAMES:
        for content in _CONTENT:
            for request, calls in _FRAMES:
                if len(out) == size:
                    return out
                text = content.format(name)
                out.append((request.format(text), calls(text)))
    return out


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _round(kernel: Kernel, workspace: Path, process: Any, decide: bool) -> dict[str, float]:
    """Rank (and decide, when `decide`) every request once: p50 ms and mean block tokens."""
    ranking, deciding, tokens = [], [], []
    for request in REQUESTS:
        started = time.perf_counter()
        block = kernel.examples_for(request, None, str(workspace))
        ranking.append((time.perf_counter() - started) * 1000)
        tokens.append(text_tokens(kernel.backend, block) if block else 0)
        if decide:
            started = time.perf_counter()
            kernel.first_call(process, Conversation(), request)
            deciding.append((time.perf_counter() - started) * 1000)
    return {
        "rank_ms_p50": _p50(ranking),
        "decide_ms_p50": _p50(deciding),
        "example_tokens_mean": statistics.fmean(tokens),
    }


def bench_lessons(settings: Settings, backend: Backend, size: int = 1000) -> dict[str, Any]:
    """The figures, printed and returned (see the module's docstring)."""
    from llmos.config import Settings
    from llmos.system import System

    with tempfile.TemporaryDirectory(prefix="llmos-bench-lessons-") as scratch:
        workspace = Path(scratch) / "ws"
        workspace.mkdir()
        for name in ("scratch.txt", "plan.txt"):
            (workspace / name).write_text("Ship the heron feature in May.\n")
        home = Settings(home=Path(scratch) / "home", model=settings.model)
        with System(home, plugins=False) as system:
            warming = system.examples.warm()
            if warming is not None:
                warming.join()
            process = system.spawn("bench", workspace, patterns=["fs.*", "mem.*", "reply", "ask"])
            kernel = Kernel(system, backend)
            kernel.first_call(process, Conversation(), "hello")  # the prompt's prefix cached
            without = _round(kernel, workspace, process, decide=True)
            for request, calls in lessons(size):
                system.lessons.add(request, calls)
            started = time.perf_counter()
            system.lessons.teach_bank(system.examples)
            warming = system.examples.warm()
            if warming is not None:
                warming.join()
            embed_s = time.perf_counter() - started
            taught = _round(kernel, workspace, process, decide=True)
    figures = {
        "lessons": size,
        "without": without,
        "with": taught,
        "embed_lessons_s": embed_s,
        "requests": len(REQUESTS),
    }
    print(f"lessons: {len(REQUESTS)} requests decided before and after {size} lessons")
    for label, row in (("built-ins only", without), (f"+ {size} lessons", taught)):
        print(
            f"  {label:<16} rank p50 {row['rank_ms_p50']:7.1f} ms   decide p50 "
            f"{row['decide_ms_p50']:7.0f} ms   examples {row['example_tokens_mean']:5.1f} tokens"
        )
    print(
        f"  embedding {size} lessons when the bank warms: {embed_s:.1f} s (once, in the background)"
    )
    return figures
