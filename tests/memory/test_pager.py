"""The pager with a scripted kernel and real memory: whole turns out to recall behind a summary,
relevant pages back in, the budget never exceeded, sessions that survive a restart or a kill."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmos.config import Settings
from llmos.kernel.backend import Completion, Message, text_tokens
from llmos.kernel.grammar import Constraint
from llmos.kernel.loop import Conversation, Kernel, Turn
from llmos.kernel.prompt import memory_block, memory_pages
from llmos.memory.embedder import Embedder
from llmos.memory.memory import CONTEXT_KEY, vector_text
from llmos.pager import (
    Pager,
    SessionFile,
    answered_from_memory,
    count_tokens,
    new_conversation,
    resume_conversation,
)
from llmos.syscalls.context import Process
from llmos.syscalls.services import ANSWERED_KEY
from llmos.system import System
from llmos.testing import ScriptedBackend

CONTEXT = 3800
"""A context that leaves the scripted conversation about 700 tokens (the system prompt takes
about 2,700 at four characters a token, and 384 are kept for the output)."""


class ScriptedWithSummary(ScriptedBackend):
    """Scripted calls; free-text requests (the pager's summaries) get a fixed summary."""

    summaries: list[list[Message]]

    def complete(
        self, messages: list[Message], *, constraint: Constraint | None, max_tokens: int
    ) -> Completion:
        if constraint is None:
            self.summaries.append(messages)
            return Completion(text="- the user keeps a locker; code 4512")
        return super().complete(messages, constraint=constraint, max_tokens=max_tokens)


@pytest.fixture
def shell_proc(system: System, workspace: Path, embedder: Embedder) -> Process:
    """A process with the shell's default capabilities (mem.store and mem.search among them)."""
    return system.spawn("shell", workspace)


def filler(n: int) -> tuple[str, dict[str, Any]]:
    """A filler request and its reply."""
    return (
        f"tell me something about the number {n} and why people like it so much",
        {"call": "reply", "text": f"{n} is a fine number; it comes after {n - 1}."},
    )


def talk(
    kernel: Kernel, proc: Process, conv: Conversation, request: str, outputs: list[Any]
) -> list[str]:
    """One turn with the given scripted outputs; the texts of its memory events."""
    assert isinstance(kernel.backend, ScriptedBackend)
    kernel.backend.outputs.extend(outputs)
    events = list(kernel.turn(proc, conv, request))
    assert events[-1].kind == "reply", events
    return [e.text for e in events if e.kind == "memory"]


def locker_told(
    system: System, proc: Process
) -> tuple[ScriptedBackend, Kernel, Pager, Conversation]:
    """A paged conversation on a scripted kernel whose first turn tells the gym locker code."""
    backend = ScriptedBackend([], context=CONTEXT)
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    pager = Pager(SessionFile(system.settings.home), archival=False)
    conv = Conversation(pager=pager)
    talk(
        kernel,
        proc,
        conv,
        "my locker code at the gym is 4512",
        [{"call": "reply", "text": "Noted: your gym locker code is 4512."}],
    )
    return backend, kernel, pager, conv


def test_turns_page_out_whole_and_the_prompt_stays_within_budget(
    system: System, shell_proc: Process, workspace: Path
) -> None:
    (workspace / "notes.txt").write_text("buy milk\n")
    backend = ScriptedBackend([], context=CONTEXT)
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    pager = Pager(SessionFile(system.settings.home))
    conv = Conversation(pager=pager)
    limit = pager.budget(kernel).limit
    seen: list[str] = []
    for n in range(1, 41):
        if n % 5 == 0:
            outputs: list[Any] = [
                {"call": "fs.read", "path": "notes.txt"},
                {"call": "reply", "text": "It says buy milk."},
            ]
            seen += talk(kernel, shell_proc, conv, "what is in notes.txt?", outputs)
        else:
            request, reply = filler(n)
            seen += talk(kernel, shell_proc, conv, request, [reply])
        for prompt in backend.prompts:
            assert count_tokens(backend, prompt) <= limit
    assert pager.stats.page_outs >= 3 and any("paged out" in s for s in seen)
    assert conv.paged_out == conv.turns[0].number - 1, "resident turns follow the paged-out ones"
    for turn in conv.turns:
        roles = [m["role"] for m in turn.messages]
        assert roles[0] == "user" and roles[-1] == "assistant", "only whole turns are resident"
        assert roles == ["user", "assistant"] * (len(roles) // 2)
    pages = system.memory.db.all("recall")
    numbers = sorted(int(p.meta["turn"]) for p in pages)  # type: ignore[arg-type]
    assert numbers == list(range(1, conv.paged_out + 1)), "every paged-out turn is in recall once"
    read_turn = next(p for p in pages if p.meta["turn"] == 5)
    assert "notes.txt" in read_turn.text and "buy milk" in read_turn.text, "call with its result"
    assert json.loads(str(read_turn.meta["messages"]))[2]["content"].startswith("RESULT:")
    said = read_turn.meta["said"]
    assert isinstance(said, float) and said <= read_turn.created, "the page keeps when it was said"
    assert conv.summary.splitlines()[-1].startswith(f"- turn {conv.paged_out}: user:")
    # Each page's vector is made with what was said just before it (not shown with it).
    after_read = next(p for p in pages if p.meta["turn"] == 6)
    assert after_read.meta[CONTEXT_KEY] == "what is in notes.txt?"
    assert next(p for p in pages if p.meta["turn"] == 1).meta[CONTEXT_KEY] == ""
    assert vector_text(after_read) == f"what is in notes.txt?\n{after_read.text}"
    system.memory.flush(60)
    ids, blobs = system.memory.db.session_vectors(
        "recall", pager.session_id, system.memory.embedder.name
    )
    stored = np.frombuffer(blobs[ids.index(after_read.id)], dtype=np.float32)
    made = np.asarray(system.memory.embedder.embed([vector_text(after_read)])[0])
    alone = np.asarray(system.memory.embedder.embed([after_read.text])[0])
    assert np.allclose(stored, made, atol=1e-5) and not np.allclose(stored, alone, atol=1e-3)
    assert pager.stats.last_summary_kind == "extractive", "no speed known: no model summary"
    first = next(m for m in backend.prompts[-1] if m["role"] != "system")
    assert first["content"].startswith(f"SUMMARY of turns 1-{conv.paged_out} ")


def test_relevant_pages_come_back_before_the_request(system: System, shell_proc: Process) -> None:
    backend, kernel, pager, conv = locker_told(system, shell_proc)
    # Two short turns, so a filler page recalled with its neighbours never shows turn 1 early.
    for request in ("thanks", "ok"):
        talk(kernel, shell_proc, conv, request, [{"call": "reply", "text": "You're welcome."}])
    for n in range(4, 32):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    assert conv.paged_out >= 1 and conv.turns[0].number > 1, "turn 1 is out of the context"
    system.memory.flush(60)
    lines = talk(
        kernel,
        shell_proc,
        conv,
        "what is the code of my gym locker?",
        [{"call": "reply", "text": "4512"}],
    )
    assert any("recalled" in line and "turn 1" in line for line in lines), lines
    request = backend.prompts[-1][-1]["content"]
    memory = request[request.index("MEMORY (earlier turns recalled") :]
    assert "4512" in memory and memory.endswith("\n\nwhat is the code of my gym locker?")
    first = pager.stats.last_recalled[0]
    assert first.turn == 1
    assert conv.turns[-1].recalled[0] == first.id
    assert "4512" not in conv.turns[-1].request, "the turn's own text has no recalled copy"


def locker_asked(kernel: Kernel, proc: Process, conv: Conversation) -> None:
    """A question about the locker, answered by searching memory with a wrong guess (9999)."""
    talk(
        kernel,
        proc,
        conv,
        "what is the code of my gym locker at the club?",
        [
            {"call": "mem.search", "query": "gym locker code"},
            {"call": "reply", "text": "Your gym locker code at the club is 9999."},
        ],
    )


def test_a_question_answered_from_memory_is_not_paged_in_for_the_next(
    system: System, shell_proc: Process
) -> None:
    """A question the kernel answered by searching memory (and its guess) is kept in recall,
    but a later request is shown the record it came from, not the earlier answer."""
    backend, kernel, pager, conv = locker_told(system, shell_proc)
    locker_asked(kernel, shell_proc, conv)
    talk(kernel, shell_proc, conv, "what is 2 plus 2?", [{"call": "reply", "text": "4"}])
    for n in range(4, 32):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    assert conv.turns[0].number > 3, "the question and its answer are out of the context"
    system.memory.flush(60)
    pages = {int(p.meta["turn"]): p for p in system.memory.db.all("recall")}  # type: ignore[arg-type]
    assert pages[2].meta[ANSWERED_KEY] is True and "9999" in pages[2].text, "kept in recall"
    assert pages[1].meta[ANSWERED_KEY] is False, "told, not asked"
    assert pages[3].meta[ANSWERED_KEY] is False, "a question answered without memory"
    talk(kernel, shell_proc, conv, "what's my gym locker code?", [{"call": "reply", "text": "x"}])
    recalled = {r.turn for r in pager.stats.last_recalled}
    assert 1 in recalled and 2 not in recalled, recalled
    request = backend.prompts[-1][-1]["content"]
    assert "4512" in request and "9999" not in request


def test_what_the_conversation_was_told_is_every_page_but_memory_said_again(
    system: System, shell_proc: Process
) -> None:
    """`Pager.told` gives what the person said on every page, oldest first, beyond the pages
    paged in (what a question's premise is checked against), without the questions answered
    from memory; a page stored later is read in on the next call."""
    _, kernel, pager, conv = locker_told(system, shell_proc)
    locker_asked(kernel, shell_proc, conv)
    for n in range(3, 24):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    told = pager.told(shell_proc).splitlines()
    assert told[0].endswith("user: my locker code at the gym is 4512"), told[0]
    assert not any("club" in line or "9999" in line for line in told), "asked, not told"
    assert [line.split("number ")[1].split()[0] for line in told[1:]] == [
        str(n) for n in range(3, 3 + len(told) - 1)
    ], "oldest first"
    for n in range(24, 30):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    assert len(pager.told(shell_proc).splitlines()) > len(told), "new pages are read in"


@pytest.mark.parametrize(
    ("request_", "recalled", "answered"),
    [
        ("How do Jon and Gina both like to destress?", ["page"], True),
        ("what is my locker code", ["page"], True),
        # told, and asking too: the person's words hold a fact of theirs
        ("Dance is my go-to for stress relief. Got any fave styles?", ["page"], False),
        # nothing recalled, no search: answered without memory
        ("How do Jon and Gina both like to destress?", [], False),
    ],
)
def test_a_question_answered_from_the_pages_recalled_for_it_is_an_answer_from_memory(
    request_: str, recalled: list[str], answered: bool
) -> None:
    """Answered from the pages paged in for it, with no search, a question is memory said
    again as much as one that searched: on conv-30 such an answer ('Jon and Gina both like to
    destress by dancing') was found for the next two questions and given as their answer."""
    turn = Turn(
        7,
        [
            {"role": "user", "content": request_},
            {"role": "assistant", "content": json.dumps({"call": "reply", "text": "By dancing."})},
        ],
    )
    turn.recalled = recalled
    assert answered_from_memory(turn) is answered


def test_the_summary_leaves_out_questions_answered_from_memory(system: System) -> None:
    """An answer from memory (right or a guess) is not carried in the summary, where the model
    took it for the answer to the next question; what was told is."""
    told = Turn(
        1,
        [
            {"role": "user", "content": "my locker code is 4512"},
            {"role": "assistant", "content": json.dumps({"call": "reply", "text": "Noted."})},
        ],
    )
    asked = Turn(
        2,
        [
            {"role": "user", "content": "what is my locker code?"},
            {"role": "assistant", "content": json.dumps({"call": "mem.search", "query": "locker"})},
            {"role": "user", "content": 'RESULT: {"ok":true}'},
            {"role": "assistant", "content": json.dumps({"call": "reply", "text": "It is 9999."})},
        ],
    )
    kernel = Kernel(system, ScriptedBackend([]), example_count=0)
    summary = Pager()._extractive(kernel, "", [told, asked])
    assert "4512" in summary and "9999" not in summary and "turn 2" not in summary


def test_a_turn_that_outgrows_the_context_sheds_what_was_recalled_for_it(
    system: System, shell_proc: Process, workspace: Path
) -> None:
    backend, kernel, pager, conv = locker_told(system, shell_proc)
    for n in range(2, 32):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    system.memory.flush(60)
    # Sized so that the turn fits the context without its recalled page, and not with it.
    (workspace / "big.txt").write_text("locker rules: " + "keep it tidy and locked. " * 60)
    lines = talk(
        kernel,
        shell_proc,
        conv,
        "what is the code of my gym locker? and show me big.txt",
        [{"call": "fs.read", "path": "big.txt"}, {"call": "reply", "text": "4512"}],
    )
    assert any("recalled" in line for line in lines), lines
    assert any("dropped 1 recalled block" in line for line in lines), lines
    limit = pager.budget(kernel).limit
    assert count_tokens(backend, backend.prompts[-1]) <= limit
    assert "MEMORY (earlier turns recalled" not in backend.prompts[-1][-2]["content"]
    assert pager.stats.max_prompt_tokens <= limit


def test_a_recalled_page_comes_with_what_was_said_around_it(
    system: System, shell_proc: Process
) -> None:
    backend = ScriptedBackend([], context=CONTEXT)
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    pager = Pager(SessionFile(system.settings.home))
    conv = Conversation(pager=pager)
    system.memory.store("The user also likes to dance salsa on Fridays.")
    said = [
        "Ana asked me what I enjoy most",
        "I told her contemporary dance is the style I like best, it is so expressive",
        "then we talked about the weather in Lisbon " + "and the rain " * 30,
    ]
    for request in said:
        talk(kernel, shell_proc, conv, request, [{"call": "reply", "text": "Noted."}])
    for n in range(4, 32):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    assert conv.paged_out >= 3
    system.memory.flush(60)
    talk(
        kernel,
        shell_proc,
        conv,
        "which dance style do I like best?",
        [{"call": "reply", "text": "?"}],
    )
    shown = pager.stats.last_recalled
    window = next(r for r in shown if r.turn == 2)
    assert {window.turn, *(n for _, n in window.around)} == {1, 2, 3}, "the page and both sides"
    text = window.text
    assert text.index("enjoy most") < text.index("contemporary") < text.index("Lisbon")
    assert "the rain " * 30 not in text, "a neighbour is cut short"
    others = [r.turn for r in shown if r is not window]
    assert not {1, 2, 3} & set(others), "a turn shown beside another is not shown again"
    recalled = conv.turns[-1].recalled
    assert len(recalled) == len(set(recalled)) >= 3
    assert any(r.turn is None and "salsa" in r.text for r in shown), (
        "a kept fact still gets its turn beside pages that match the words"
    )


def test_a_memory_block_says_how_to_use_it_and_gives_its_pages_back() -> None:
    block = memory_block(["[turn 1] user: My gym locker code is 4512.", "[turn 7] user: hi"])
    assert block.startswith("MEMORY (") and "you were not told" in block.splitlines()[-1]
    pages = memory_pages(block)
    assert pages == ["[turn 1] user: My gym locker code is 4512.", "[turn 7] user: hi"]
    assert memory_pages(memory_block([*pages, "[turn 9] user: bye"]))[-1] == "[turn 9] user: bye"


def test_kept_facts_are_paged_in_only_where_mem_search_is_allowed(
    system: System, workspace: Path, embedder: Embedder
) -> None:
    system.memory.store("The user's car is parked on level 3, spot B7.")
    system.memory.flush(60)
    for patterns, expect in ((["mem.*", "reply"], True), (["reply"], False)):
        proc = system.spawn("p", workspace, patterns=patterns)
        backend = ScriptedBackend([{"call": "reply", "text": "ok"}], context=CONTEXT)
        conv = Conversation(pager=Pager())
        list(
            Kernel(system, backend, example_count=0, check_replies=False).turn(
                proc, conv, "where did I park the car?"
            )
        )
        assert ("spot B7" in backend.prompts[-1][-1]["content"]) is expect


def test_the_model_writes_the_summary_when_it_is_cheap_enough(
    system: System, shell_proc: Process
) -> None:
    backend = ScriptedWithSummary([], context=CONTEXT)
    backend.summaries = []
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    pager = Pager(summary_seconds=math.inf)
    conv = Conversation(pager=pager)
    for n in range(1, 25):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    assert pager.stats.model_summaries >= 1 and pager.stats.last_summary_kind == "model"
    written, *kept = conv.summary.splitlines()
    assert written == "- the user keeps a locker; code 4512", "the model's summary"
    assert kept and all(line.startswith("- turn ") for line in kept), "turns whose numbers it lost"
    asked = backend.summaries[0]
    assert asked[-1]["content"].startswith("Write the new SUMMARY")
    assert asked[-2]["role"] == "assistant", "it continues the evicted turns, nothing after"


def test_a_session_resumes_with_its_summary_and_turns(
    system: System, shell_proc: Process, settings: Settings
) -> None:
    backend = ScriptedBackend([], context=CONTEXT)
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    conv = new_conversation(settings.home)
    for n in range(1, 25):
        request, reply = filler(n)
        talk(kernel, shell_proc, conv, request, [reply])
    assert conv.paged_out > 0
    again = resume_conversation(settings.home)
    assert again.summary == conv.summary and again.paged_out == conv.paged_out
    assert [t.messages for t in again.turns] == [t.messages for t in conv.turns]
    assert again.pager is not None and conv.pager is not None
    assert again.pager.session_id == conv.pager.session_id, "same recall pages"
    talk(kernel, shell_proc, again, "and 99?", [{"call": "reply", "text": "also fine"}])
    assert again.turns[-1].number == conv.turns[-1].number + 1


def test_resume_without_a_session_or_with_a_damaged_one_is_a_clear_error(
    settings: Settings,
) -> None:
    from llmos.errors import LlmosError

    with pytest.raises(LlmosError) as none:
        resume_conversation(settings.home)
    assert none.value.code == "E_NOENT"
    folder = settings.home / "sessions"
    folder.mkdir(parents=True)
    (folder / "x.json").write_text('{"turns": [')
    with pytest.raises(LlmosError) as bad:
        resume_conversation(settings.home)
    assert bad.value.code == "E_INVAL" and "damaged" in bad.value.message


CHILD = """
import sys
from llmos.config import Settings
from llmos.testing import ScriptedBackend
from llmos.kernel.loop import Kernel
from llmos.pager import new_conversation, resume_conversation
from llmos.system import System

home, workspace, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = Settings(home=home)
with System(settings, plugins=False) as system:
    proc = system.spawn("shell", __import__("pathlib").Path(workspace))
    conv = resume_conversation(settings.home) if start > 1 else new_conversation(settings.home)
    kernel = Kernel(system, ScriptedBackend([], context=int(sys.argv[4])), example_count=0)
    system.memory.warm()
    print("ready", flush=True)
    n = conv.turns[-1].number + 1 if conv.turns else conv.paged_out + 1
    while True:
        kernel.backend.outputs.append({"call": "reply", "text": f"reply to turn {n}"})
        for _ in kernel.turn(proc, conv, f"request number {n}, about something else again"):
            pass
        print(f"done {n}", flush=True)
        n += 1
"""


@pytest.mark.slow
def test_a_kill_during_paging_loses_no_turn(settings: Settings, workspace: Path) -> None:
    """kill -9 at arbitrary moments of a paging conversation; every finished turn is then
    resident in the saved session or in recall memory, and the conversation resumes."""
    from llmos.memory.store import MemoryStore

    done = 0
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *map(str, (settings.home, workspace, done + 1, CONTEXT))],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "LLMOS_HOME": str(settings.home)},
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", f"round {round_} did not start"
        target = done + 9 + 2 * round_
        while done < target:
            line = child.stdout.readline()
            assert line.startswith("done "), f"round {round_}: the child stopped: {line!r}"
            done = int(line.split()[1])
        time.sleep(random.Random(round_).uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert done > 0
        conv = resume_conversation(settings.home)
        with MemoryStore(
            settings.home / "memory", key_path=settings.home / "keys" / "memory.key"
        ) as store:
            paged = {int(r.meta["turn"]) for r in store.all("recall")}  # type: ignore[arg-type]
        resident = {t.number for t in conv.turns}
        missing = set(range(1, done + 1)) - paged - resident
        assert not missing, f"round {round_}: turns lost: {sorted(missing)}"
        assert conv.paged_out == 0 or conv.paged_out in paged
    assert len(paged) > 10, "paging happened several times"


def test_many_turns_with_numbers_evicted_at_once_keep_the_written_summary(
    system: System,
) -> None:
    """When more turns with numbers the summary left out are evicted than its budget holds,
    their lines give way, oldest first, and the model's written summary keeps its first line
    (it once gave way whole, and everything the model had summarised was lost)."""
    kernel = Kernel(system, ScriptedBackend([], context=CONTEXT), example_count=0)
    evicted = []
    for n in range(1, 9):
        request, reply = filler(100 + n)
        evicted.append(
            Turn(
                number=n,
                messages=[
                    {"role": "user", "content": request},
                    {"role": "assistant", "content": json.dumps(reply)},
                ],
            )
        )
    written = "- the user keeps a locker; code 4512\n- they like the number seven"
    pager = Pager()
    summary = pager._with_lost_numbers(kernel, written, evicted).splitlines()
    assert summary[0] == "- the user keeps a locker; code 4512"
    lost = summary[1:] if summary[1].startswith("- turn ") else summary[2:]
    assert lost and all(line.startswith("- turn ") for line in lost)
    assert lost[-1].startswith("- turn 8:"), "the newest turns' numbers are the ones kept"
    assert text_tokens(kernel.backend, "\n".join(summary)) <= pager.summary_tokens


def test_a_fact_stored_a_moment_ago_is_paged_in_on_the_very_next_turn(
    system: System, workspace: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told "remember my locker is 88", then at once "what's my locker number?": the fact is
    still being indexed when the next turn pages in, and is waited for (a recall page evicted a
    moment ago is not, but a fact the person just told is what they ask about next)."""
    system.memory.store("The user's bike is blue.")
    assert system.memory.flush(60), "the index is open and up to date, as in a running shell"
    real = system.memory.embedder.embed

    def slow(texts: Any) -> list[list[float]]:
        time.sleep(1.5)  # indexing still under way when the next turn begins
        return real(texts)

    monkeypatch.setattr(system.memory.embedder, "embed", slow)
    system.memory.store("The user's gym locker is number 88.")
    proc = system.spawn("p", workspace, patterns=["mem.*", "reply"])
    backend = ScriptedBackend([{"call": "reply", "text": "ok"}], context=CONTEXT)
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    list(kernel.turn(proc, Conversation(pager=Pager()), "what's my locker number?"))
    assert "locker is number 88" in backend.prompts[-1][-1]["content"]


def test_a_turn_whose_own_result_outgrows_the_context_has_it_cut_not_refused(
    system: System, shell_proc: Process, workspace: Path
) -> None:
    """Seen in `bench recall`: a search's long result and a reply sent back made a prompt over
    the window (E_TOOBIG, no answer). With nothing recalled left to drop, the turn's longest
    result is cut, marked as cut, and the turn still gets its reply."""
    backend, kernel, pager, conv = locker_told(system, shell_proc)
    for name in ("rules.txt", "hours.txt"):
        (workspace / name).write_text(f"{name}: " + "keep it tidy and locked. " * 400)
    lines = talk(
        kernel,
        shell_proc,
        conv,
        "show me rules.txt and hours.txt",
        [
            {"call": "fs.read", "path": "rules.txt"},
            {"call": "fs.read", "path": "hours.txt"},
            {"call": "reply", "text": "Rules."},
        ],
    )
    assert any("cut the turn's longest result" in line for line in lines), lines
    limit = pager.budget(kernel).limit
    assert count_tokens(backend, backend.prompts[-1]) <= limit
    assert backend.prompts[-1][-1]["content"].endswith("(cut: the context is full)")
    assert conv.turns[-1].reply == "Rules."
