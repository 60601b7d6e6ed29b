"""`llmos bench learning FILE...`: how often learning from use would teach the kernel its own
mistakes. Each case of the eval files runs whole in its sandbox (a single-step case's request
as a full turn, judged by its first call as `llmos eval` judges it), and each turn is put to
two policies: learn every turn that ended in a reply (the naive one), and learn what
`why_not_learned` accepts and the next request does not correct (`Learner`, the shell's). The
figures: how many turns each would learn, and how many of those were wrong."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.evaluation import Sandbox, call_matches, case_problem, check_task, play, system_of
from llmos.kernel.lessons import corrects, why_not_learned
from llmos.kernel.loop import Conversation, Kernel

if TYPE_CHECKING:
    from llmos.kernel.backend import Backend
    from llmos.system import System


def run_whole(
    kernel: Kernel, case: dict[str, Any]
) -> tuple[bool, list[dict[str, Any]], list[tuple[bool, str]]]:
    """Run one case's requests as full turns; whether it went right, each turn's request,
    messages and whether the kernel ended it with a question, and each turn's `judge`ment
    (made while the case's own tools are still in the table)."""
    system = system_of(kernel)
    with tempfile.TemporaryDirectory(prefix="llmos-learn-") as tmp:
        sandbox = Sandbox(system, case, Path(tmp))
        turns: list[dict[str, Any]] = []

        def keep(conversation: Conversation) -> None:
            turn = conversation.current  # copied now: the pager may page it out later
            assert turn is not None
            turns.append(
                {
                    "request": turn.request,
                    "messages": [dict(m) for m in turn.messages],
                    "asked": bool(turn.asked),
                    "asks": turn.asks,
                }
            )

        try:
            sandbox.grant(case.get("grant") or [])
            events = play(kernel, case, sandbox, keep)
            if "expect" in case:
                first = next((e.call for e in events[0] if e.kind == "call" and e.call), None)
                ok = first is not None and call_matches(case["expect"], first)[0]
            else:
                ok = check_task(case, sandbox, events)[0]
            verdicts = judge(turns, kernel)
        finally:
            sandbox.close()
    return ok, turns, verdicts


def judge(turns: list[dict[str, Any]], kernel: Kernel) -> list[tuple[bool, str]]:
    """Each turn: (whether it ended in a reply, why our policy would not learn it or "")."""
    registry, bank = kernel.system.registry, kernel.system.examples
    out = []
    for i, turn in enumerate(turns):
        messages = turn["messages"]
        replied = bool(messages) and messages[-1]["role"] == "assistant" and not turn["asked"]
        after_ask = i > 0 and bool(turns[i - 1]["asked"])
        _, why = why_not_learned(messages, registry, after_ask, turn["asks"])
        if not why and i + 1 < len(turns):
            later = turns[i + 1]["request"]
            if corrects(later, turn["request"], bank.similarity(later, turn["request"])):
                why = "the next request corrects it"
        out.append((replied, why))
    return out


def bench_learning(system: System, backend: Backend, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the cases and print, then return, what each policy would learn."""
    kernel = Kernel(system, backend)
    warming = system.examples.warm()
    if warming is not None:
        warming.join()
    start = time.perf_counter()
    naive = Counter[str]()
    ours = Counter[str]()
    reasons = Counter[str]()
    turns_seen = 0
    for case in cases:
        if case_problem(case):
            continue
        ok, turns, verdicts = run_whole(kernel, case)
        for replied, why in verdicts:
            turns_seen += 1
            right = "right" if ok else "wrong"
            naive[right] += replied
            if why:
                reasons[why.split(":")[0]] += 1
            else:
                ours[right] += 1
        mark = "ok  " if ok else "FAIL"
        learned = sum(not why for _, why in verdicts)
        print(f"{mark} {case.get('id', '?')}: {len(turns)} turn(s), {learned} learned", flush=True)
        for turn, (_, why) in zip(turns, verdicts, strict=True):
            if not ok or why:
                calls = [m["content"][:120] for m in turn["messages"] if m["role"] == "assistant"]
                print(f"     {why or 'LEARNED'}: {turn['request']!r} -> {' | '.join(calls)}")
    rows = {
        name: {"learned": counts["right"] + counts["wrong"], "wrong": counts["wrong"]}
        for name, counts in (("naive", naive), ("ours", ours))
    }
    figures: dict[str, Any] = {
        "cases": len(cases),
        "turns": turns_seen,
        **rows,
        "reasons": dict(reasons.most_common()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    for name, row in rows.items():
        learned, wrong = row["learned"], row["wrong"]
        share = wrong / learned if learned else 0.0
        print(f"{name:6} learns {learned:3} of {turns_seen} turns; {wrong} wrong ({share:.0%})")
    print("not learned:", ", ".join(f"{why} {n}" for why, n in reasons.most_common()))
    return figures
