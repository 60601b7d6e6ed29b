"""The long conversation with the real small model: facts told in the first turns are answered
after two hundred other turns, by paging, on a 4k context that is never exceeded."""

from __future__ import annotations

from pathlib import Path

from llmos.bench.conversation import FACTS, run_conversation
from llmos.kernel.backend import LlamaCppBackend
from llmos.memory.embedder import Embedder
from llmos.system import System


def test_planted_facts_are_answered_after_two_hundred_turns(
    system: System, backend: LlamaCppBackend, workspace: Path, embedder: Embedder
) -> None:
    figures = run_conversation(system, backend, workspace, filler_turns=200)
    print("\n".join(figures.lines()))
    assert backend.context == 4096 and figures.turns == 200 + 2 * len(FACTS)
    assert figures.max_prompt_tokens <= figures.limit, "the context never exceeds the budget"
    assert figures.page_outs >= 10 and figures.turns_paged_out >= 150
    assert figures.lost_turns == [], "every turn is resident or in recall"
    assert figures.recall_at_5 >= 0.8, "retrieval finds the planted turns"
    assert figures.recalled_into_prompt >= 0.8, "the pager pages them in"
    assert figures.accuracy >= 0.6, figures.answers
