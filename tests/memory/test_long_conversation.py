"""The long conversation with the real small model: facts told in the first turns are answered
after two hundred other turns, by paging, on a 4k context that is never exceeded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmos.bench.conversation import FACTS, Replay, filler, run_conversation
from llmos.kernel.backend import LlamaCppBackend
from llmos.kernel.loop import Conversation, Kernel
from llmos.memory.embedder import Embedder
from llmos.pager import Pager
from llmos.system import System


@pytest.mark.slow
def test_planted_facts_are_answered_after_two_hundred_turns(
    system: System, default_backend: LlamaCppBackend, workspace: Path, embedder: Embedder
) -> None:
    figures = run_conversation(system, default_backend, workspace, filler_turns=200)
    print("\n".join(figures.lines()))
    assert default_backend.context == 4096 and figures.turns == 200 + 2 * len(FACTS)
    assert figures.max_prompt_tokens <= figures.limit, "the context never exceeds the budget"
    assert figures.page_outs >= 10 and figures.turns_paged_out >= 150
    # the bench is deterministic: the extracted summary always, whatever the measured speed
    assert figures.summaries == {"model": 0, "extractive": figures.page_outs}
    assert figures.lost_turns == [], "every turn is resident or in recall"
    assert figures.recall_at_5 >= 0.8, "retrieval finds the planted turns"
    assert figures.recalled_into_prompt >= 0.8, "the pager pages them in"
    assert figures.accuracy >= 0.6, figures.answers


@pytest.mark.slow
def test_the_model_writes_the_running_summary(
    system: System, backend: LlamaCppBackend, workspace: Path, embedder: Embedder
) -> None:
    """With time to spare, the kernel's model summarises what is paged out, continuing the
    prompt it holds; the summary stays within its budget and the talk goes on."""
    replay = Replay(backend)
    kernel = Kernel(system, replay)
    pager = Pager(summary_seconds=math.inf)
    conversation = Conversation(pager=pager)
    process = system.spawn("talk", workspace)
    requests = [FACTS[0].said] + [filler(n)[0] for n in range(40)]
    for request in requests:
        replay.queued.append(json.dumps({"call": "reply", "text": "Noted."}))
        assert list(kernel.turn(process, conversation, request))[-1].kind == "reply"
        if pager.stats.page_outs:
            break
    assert pager.stats.model_summaries == 1 and pager.stats.last_summary_kind == "model"
    summary = conversation.summary
    assert summary and backend.tokens(summary) <= pager.summary_tokens + 8
    assert "4512" in summary, summary
    assert pager.stats.max_prompt_tokens <= pager.budget(kernel).limit


@pytest.mark.slow
def test_bench_conversation_prints_and_writes_its_figures(
    small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.cli import main

    out = tmp_path / "figures.json"
    args = ["--model", str(small_model), "bench", "conversation", "--turns", "4"]
    assert main([*args, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["turns"] == 4 + 2 * len(FACTS) and figures["lost_turns"] == []
    assert len(figures["answers"]) == len(FACTS)
    assert "answer accuracy:" in capsys.readouterr().out
