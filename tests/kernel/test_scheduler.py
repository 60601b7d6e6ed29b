"""The scheduler: FIFO and round-robin order, errors back to the caller, overlap of slow
syscalls with the model, clean shutdown; with the real 0.5B model, interleaved processes, a KV
state restore that decodes exactly what a fresh prefill does, and continuous batching that
decodes exactly what one-at-a-time decoding does."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import LlamaCppBackend, Message, common_prefix
from llmos.kernel.grammar import Constraint
from llmos.kernel.loop import Conversation, Kernel
from llmos.kernel.scheduler import BACKGROUND, FOREGROUND, Job, Scheduler
from llmos.system import System
from llmos.testing import GatedModel, request_of

SLEEP_REQUEST = "Run the sleep tool (no args), then reply done."


def tool_then_reply(gate: threading.Event | None = None, delay: float = 0.0) -> GatedModel:
    """A fake model: a fresh request gets `tool.run sleep`, a tool result gets `reply done`, a
    request saying "boom" fails; `requests` records which process each completion served (by
    the request text); with `gate`, every completion waits for it."""

    def script(messages: list[Message]) -> dict[str, Any]:
        time.sleep(delay)
        if "boom" in request_of(messages):
            raise LlmosError(ErrorCode.E_BACKEND, "the model fell over")
        if "RESULT" in messages[-1]["content"]:
            return {"call": "reply", "text": "done"}
        return {"call": "tool.run", "name": "sleep", "args": {}}

    fake = GatedModel({"": script})
    if gate is not None:
        fake.gates[""] = gate
    return fake


def sleep_tool(system: System, seconds: float = 1.0) -> None:
    def sleep() -> str:
        """Wait (an I/O-bound tool)."""
        time.sleep(seconds)
        return "slept"

    system.tools.function(sleep, description="Wait 1 s (an I/O-bound tool); takes no arguments.")


def submit(sched: Scheduler, name: str, text: str) -> threading.Thread:
    client = sched.client(name)
    thread = threading.Thread(
        target=client.complete,
        args=([{"role": "user", "content": text}],),
        kwargs={"constraint": None, "max_tokens": 8},
        daemon=True,
    )
    thread.start()
    return thread


def on_model(fake: GatedModel) -> None:
    deadline = time.monotonic() + 10
    while not fake.busy:
        assert time.monotonic() < deadline, "nothing reached the model"
        time.sleep(0.01)


def wait_pending(sched: Scheduler, n: int) -> None:
    deadline = time.monotonic() + 10
    while sched.pending() < n:
        assert time.monotonic() < deadline, "requests never queued"
        time.sleep(0.01)


def ordered(policy: str) -> list[str]:
    gate = threading.Event()
    fake = tool_then_reply(gate)
    with Scheduler(fake, policy=policy) as sched:  # type: ignore[arg-type]
        a, b, c = sched.client("a"), sched.client("b"), sched.client("c")
        threads = [submit(sched, "x", "x1")]
        on_model(fake)
        for client, text in ((a, "a1"), (a, "a2"), (a, "a3"), (b, "b1"), (c, "c1")):
            thread = threading.Thread(
                target=client.complete,
                args=([{"role": "user", "content": text}],),
                kwargs={"constraint": None, "max_tokens": 8},
                daemon=True,
            )
            thread.start()
            threads.append(thread)
            wait_pending(sched, len(threads) - 1)
        gate.set()
        for thread in threads:
            thread.join(10)
    return fake.requests


def test_fifo_serves_in_arrival_order() -> None:
    assert ordered("fifo") == ["x1", "a1", "a2", "a3", "b1", "c1"]


def test_round_robin_takes_turns_across_processes() -> None:
    assert ordered("rr") == ["x1", "a1", "b1", "c1", "a2", "a3"]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(LlmosError) as err:
        Scheduler(tool_then_reply(), policy="lifo")  # type: ignore[arg-type]
    assert err.value.code == ErrorCode.E_INVAL


def test_an_error_reaches_the_caller_as_the_same_error() -> None:
    with Scheduler(tool_then_reply()) as sched:
        client = sched.client("p")
        with pytest.raises(LlmosError) as err:
            client.complete([{"role": "user", "content": "boom"}], constraint=None, max_tokens=8)
        assert err.value.code == ErrorCode.E_BACKEND and "fell over" in err.value.message
        ok = client.complete([{"role": "user", "content": "fine"}], constraint=None, max_tokens=8)
        assert "tool.run" in ok.text, "the worker survives a failed completion"
        assert [s.ok for s in sched.served] == [False, True]


def test_proxy_forwards_what_the_backend_has() -> None:
    with Scheduler(tool_then_reply()) as sched:
        client = sched.client("p")
        assert client.name == "fake" and client.context == 4096
        assert client.count([{"role": "user", "content": "x" * 40}]) == 14, "estimated"
        assert client.warm([{"role": "user", "content": "hi"}]).text == ""
        assert sched.backend.served == [], "a backend that cannot warm is asked nothing"  # type: ignore[attr-defined]


def test_four_processes_overlap_their_slow_tools(system: System, tmp_path: Path) -> None:
    sleep_tool(system, 1.0)
    fake = tool_then_reply(delay=0.05)
    with Scheduler(fake, policy="rr") as sched:
        jobs = []
        for i in range(4):
            ws = tmp_path / f"ws{i}"
            ws.mkdir()
            process = system.spawn(f"p{i}", ws, patterns=["tool.*", "reply", "ask"])
            # No examples: their embedder's first load would be timed as the tools' wait.
            kernel = Kernel(system, sched.client(process.name), example_count=0)
            jobs.append(Job(kernel, process, Conversation(), f"{SLEEP_REQUEST} ({i})"))
        start = time.perf_counter()
        for job in jobs:
            job.start()
        assert all(job.join(10) for job in jobs)
        wall = time.perf_counter() - start
    assert not fake.overlapped, "the model ran one completion at a time"
    for job in jobs:
        assert [e.kind for e in job.events] == ["call", "result", "call", "reply"], job.events
        assert job.reply == "done" and job.error is None
    assert wall < 2.5, f"4 x 1 s tools took {wall:.2f} s: they did not overlap"


def test_ending_a_process_frees_its_slot_and_fails_its_queue() -> None:
    gate = threading.Event()
    fake = tool_then_reply(gate)
    with Scheduler(fake, policy="rr") as sched:
        first = submit(sched, "x", "x1")
        on_model(fake)
        client = sched.client("doomed")
        errors: list[LlmosError] = []

        def wait_for_it() -> None:
            try:
                client.complete([{"role": "user", "content": "d"}], constraint=None, max_tokens=8)
            except LlmosError as exc:
                errors.append(exc)

        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        wait_pending(sched, 1)
        assert [row["process"] for row in sched.ps()] == ["x", "doomed"]
        client.close()
        waiter.join(5)
        assert errors and errors[0].code == ErrorCode.E_BACKEND
        assert [row["process"] for row in sched.ps()] == ["x"]
        assert sched.pending() == 0
        with pytest.raises(LlmosError):
            client.complete([{"role": "user", "content": "d"}], constraint=None, max_tokens=8)
        gate.set()
        first.join(5)


def test_shutdown_fails_queued_requests_and_leaves_no_thread() -> None:
    gate = threading.Event()
    fake = tool_then_reply(gate)
    sched = Scheduler(fake)
    running = submit(sched, "a", "a1")
    on_model(fake)
    client = sched.client("b")
    errors: list[LlmosError] = []

    def queued() -> None:
        try:
            client.complete([{"role": "user", "content": "b1"}], constraint=None, max_tokens=8)
        except LlmosError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=queued, daemon=True)
    waiter.start()
    wait_pending(sched, 1)
    threading.Timer(0.1, gate.set).start()
    sched.close()
    waiter.join(5)
    running.join(5)
    assert errors and "shut down" in errors[0].message
    assert not any(t.name == "llmos-scheduler" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(LlmosError):
        sched.client("late")


def test_a_cancelled_job_stops_and_keeps_its_events(system: System, workspace: Path) -> None:
    sleep_tool(system, 0.2)
    with Scheduler(tool_then_reply()) as sched:
        process = system.spawn("p", workspace, patterns=["tool.*", "reply", "ask"])
        job = Job(Kernel(system, sched.client("p")), process, Conversation(), SLEEP_REQUEST)
        seen = threading.Event()
        job.on_event = lambda event: seen.set()
        job.start()
        assert seen.wait(5)
        job.cancel()
        assert job.join(5) and job.done
        assert job.events and job.events[-1].kind in ("call", "result")


# The real 0.5B model.


def real_jobs(
    system: System, sched: Scheduler, tmp_path: Path, n: int
) -> tuple[list[Job], list[str]]:
    jobs, names = [], []
    for i in range(n):
        ws = tmp_path / f"ws{i}"
        ws.mkdir()
        process = system.spawn(f"p{i}", ws, patterns=["tool.*", "reply", "ask"])
        kernel = Kernel(system, sched.client(process.name), max_steps=4)
        jobs.append(Job(kernel, process, Conversation(), SLEEP_REQUEST))
        names.append(process.name)
    return jobs, names


def test_real_model_serves_two_interleaved_processes(
    system: System, backend: LlamaCppBackend, tmp_path: Path
) -> None:
    sleep_tool(system, 1.0)
    with Scheduler(backend, policy="rr", kv_restore="always", batch=0) as sched:
        jobs, names = real_jobs(system, sched, tmp_path, 2)
        for job in jobs:
            job.start()
        assert all(job.join(300) for job in jobs)
        served = [s.process for s in sched.served]
    for job in jobs:
        calls = [e.call for e in job.events if e.kind == "call"]
        assert calls and calls[0] is not None, job.events
        assert calls[0]["call"] == "tool.run" and calls[0]["name"] == "sleep", job.events
        assert job.events[-1].kind == "reply", job.events
    assert served[:2] == names or served[:2] == names[::-1]
    assert served != sorted(served), f"the turns interleaved: {served}"


def prompts(system: System, backend: LlamaCppBackend) -> tuple[Kernel, Constraint]:
    kernel = Kernel(system, backend)
    return kernel, kernel.grammars.constraint()


def chat(kernel: Kernel, request: str) -> list[Message]:
    return kernel.messages(Conversation.from_messages([{"role": "user", "content": request}]))


def test_kv_restore_decodes_what_a_fresh_prefill_does(
    system: System, backend: LlamaCppBackend
) -> None:
    kernel, constraint = prompts(system, backend)
    a, b = chat(kernel, "show me notes.txt"), chat(kernel, "rename a.txt to b.txt please")
    with Scheduler(backend, kv_restore="always", batch=0) as sched:
        pa, pb = sched.client("a"), sched.client("b")
        first = pa.complete(a, constraint=constraint, max_tokens=48)
        pb.complete(b, constraint=constraint, max_tokens=48)
        a += [
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": 'RESULT: {"ok":false,"error":"E_NOENT: no notes.txt"}'},
        ]
        restored = pa.complete(a, constraint=constraint, max_tokens=48)
        switch = sched.served[-1]
    assert switch.switched and switch.restored_tokens > 1000
    assert switch.prefill_tokens < 60, "only the new messages were prefilled"
    with Scheduler(backend, kv_restore="never", batch=0) as sched:
        pb = sched.client("b")
        pb.complete(b, constraint=constraint, max_tokens=48)
        fresh = sched.client("a").complete(a, constraint=constraint, max_tokens=48)
        assert sched.served[-1].restored_tokens == 0
        assert sched.served[-1].prefill_tokens > switch.prefill_tokens
    same_call_about_notes(restored.text, fresh.text)


def same_call_about_notes(kept: str, fresh: str) -> None:
    """A continued sequence (restored, or kept in a batch) and a fresh prefill make the same
    call, about the process's own conversation (notes.txt, never the other process's a.txt).
    Their words may differ: a sequence's keys for the tokens it decoded were computed one at a
    time, a fresh prefill computes them in one batch, and greedy decoding flips at near-ties
    (seen here: "No notes.txt found." against "I can't find notes.txt: no file here.")."""
    assert json.loads(kept)["call"] == json.loads(fresh)["call"]
    for text in (kept, fresh):
        assert "notes" in text and "a.txt" not in text, text


def test_kv_restore_measures_and_takes_the_cheaper_of_restoring_and_prefilling(
    system: System, backend: LlamaCppBackend
) -> None:
    kernel, constraint = prompts(system, backend)

    def more(messages: list[Message], text: str) -> list[Message]:
        return [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": 'RESULT: {"ok":false,"error":"E_NOENT: no such file"}'},
        ]

    a, b = chat(kernel, "show me notes.txt"), chat(kernel, "rename a.txt to b.txt please")
    with Scheduler(backend, kv_restore="auto", batch=0) as sched:
        kv = sched.kv
        assert kv is not None
        pa, pb = sched.client("a"), sched.client("b")
        a = more(a, pa.complete(a, constraint=constraint, max_tokens=48).text)
        b = more(b, pb.complete(b, constraint=constraint, max_tokens=48).text)
        assert kv.save_rate.per_token and kv.prefill_rate.per_token, "the switch was measured"
        a = more(a, pa.complete(a, constraint=constraint, max_tokens=48).text)
        assert sched.served[-1].restored_tokens > 1000, "nothing measured says restoring is dear"
        assert kv.restore_rate.per_token
        kv.restore_rate.per_token = 1.0  # a machine where restoring is far slower than prefill
        mine, theirs = kv.prompt_tokens(b), kv.context_tokens()
        pb.complete(b, constraint=constraint, max_tokens=48)
        switch = sched.served[-1]
        assert switch.switched and switch.restored_tokens == 0
        beyond = len(mine) - common_prefix(mine, theirs)
        assert switch.prefill_tokens >= beyond > 30, "b's own part was prefilled again"
        assert pa.id not in kv.states, "a state that would not be restored is not kept"
        kv.restore_rate.per_token = kv.save_rate.per_token = 1e-9
        pa.complete(a, constraint=constraint, max_tokens=48)
        assert sched.served[-1].restored_tokens == 0, "a's state was not kept to restore"
        pb.complete(b, constraint=constraint, max_tokens=48)
        assert sched.served[-1].restored_tokens > 1000, "cheap again: b's state is restored"


REQUESTS = ("show me notes.txt", "rename a.txt to b.txt please", "list the files here")


def test_batched_decoding_matches_one_at_a_time(system: System, backend: LlamaCppBackend) -> None:
    kernel, constraint = prompts(system, backend)
    chats = [chat(kernel, r) for r in REQUESTS]
    alone = [backend.complete(c, constraint=constraint, max_tokens=48).text for c in chats]
    outs: dict[int, str] = {}
    with Scheduler(backend, batch=4) as sched:
        clients = [sched.client(f"p{i}") for i in range(len(chats))]
        gate = threading.Barrier(len(chats))

        def run(i: int) -> None:
            gate.wait()
            outs[i] = clients[i].complete(chats[i], constraint=constraint, max_tokens=48).text

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(chats))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        served = list(sched.served)
        assert sched.engine is not None and sched.engine.imported == 1
    assert [outs[i] for i in range(len(chats))] == alone
    assert all(json.loads(text)["call"] for text in alone)
    assert max(s.batch_peers for s in served) >= 1, "no two completions shared a batch"
    system_tokens = backend.count(chats[0][:1])
    for s in served:
        assert s.reused_tokens >= system_tokens - 8, "the system prompt was prefilled again"
        assert s.prefill_tokens < 40, s


def test_a_batched_process_keeps_its_sequence_between_completions(
    system: System, backend: LlamaCppBackend
) -> None:
    kernel, constraint = prompts(system, backend)
    a, b = chat(kernel, REQUESTS[0]), chat(kernel, REQUESTS[1])
    with Scheduler(backend, batch=2) as sched:
        pa, pb = sched.client("a"), sched.client("b")
        first = pa.complete(a, constraint=constraint, max_tokens=48)
        pb.complete(b, constraint=constraint, max_tokens=48)
        a += [
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": 'RESULT: {"ok":false,"error":"E_NOENT: no notes.txt"}'},
        ]
        again = pa.complete(a, constraint=constraint, max_tokens=48)
        last = sched.served[-1]
    assert last.process == "a" and last.prefill_tokens < 60, "only the new messages prefilled"
    assert last.reused_tokens > backend.count(a[:2])
    same_call_about_notes(
        again.text, backend.complete(a, constraint=constraint, max_tokens=48).text
    )


def test_more_processes_than_slots_all_finish(system: System, backend: LlamaCppBackend) -> None:
    kernel, constraint = prompts(system, backend)
    chats = [chat(kernel, r) for r in REQUESTS]
    outs: dict[int, str] = {}
    with Scheduler(backend, batch=2) as sched:
        clients = [sched.client(f"p{i}") for i in range(len(chats))]

        def run(i: int) -> None:
            outs[i] = clients[i].complete(chats[i], constraint=constraint, max_tokens=48).text

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(chats))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert max(s.batch_peers for s in sched.served) <= 1
    expected = [backend.complete(c, constraint=constraint, max_tokens=48).text for c in chats]
    assert [outs[i] for i in range(len(chats))] == expected


@pytest.mark.slow
def test_batched_errors_and_cancels_stay_with_their_process(
    system: System, backend: LlamaCppBackend
) -> None:
    kernel, constraint = prompts(system, backend)
    story = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    huge = [{"role": "user", "content": "word " * 5000}]
    with Scheduler(backend, batch=4) as sched:
        writer, big, fine = sched.client("writer"), sched.client("big"), sched.client("fine")
        errors: list[LlmosError] = []

        def write() -> None:
            try:
                writer.complete(story, constraint=None, max_tokens=2000)
            except LlmosError as exc:
                errors.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sched.ps()[0]["state"] != "model":
            time.sleep(0.01)
        with pytest.raises(LlmosError) as err:
            big.complete(huge, constraint=None, max_tokens=8)
        assert err.value.code == ErrorCode.E_TOOBIG
        ok = fine.complete(chat(kernel, REQUESTS[2]), constraint=constraint, max_tokens=48)
        assert json.loads(ok.text)["call"] == "fs.list"
        assert sched.ps()[0]["state"] == "model", "the story is still being written"
        began = time.monotonic()
        writer.cancel()
        thread.join(30)
        assert time.monotonic() - began < 5, "the cancelled completion stopped at the next step"
        assert errors and errors[0].code == ErrorCode.E_BACKEND and "cancel" in errors[0].message
        again = writer.complete(chat(kernel, REQUESTS[0]), constraint=constraint, max_tokens=48)
        assert json.loads(again.text)["call"] == "fs.read"


@pytest.mark.slow
def test_bench_sched_runs_every_task_right_each_way(
    settings: Settings, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.bench.sched import bench_sched

    figures = bench_sched(settings, model=small_model, processes=2, sleep=0.2, turns=2)
    n = figures["processes"]
    assert (figures["sequential_ok"], figures["batched_ok"]) == (n, n)
    assert (figures["concurrent_ok"], figures["concurrent_prefill_ok"]) == (n, n)
    assert figures["concurrent_auto_ok"] == n
    assert figures["switch_restore"]["restored_tokens"] > 0
    assert figures["switch_prefill"]["restored_tokens"] == 0
    assert figures["overlap_bound"] > 0 and figures["batched_prefill_tokens"] > 0
    out = capsys.readouterr().out
    assert "scheduler, batched" in out and "scheduler, KV auto" in out


def test_a_long_prompt_is_prefilled_in_steps_beside_a_decoding_process(
    system: System, backend: LlamaCppBackend
) -> None:
    # One step evaluates at most SCHED_STEP_TOKENS tokens, so a process decoding beside a
    # long prefill gets its next token every short step, not after the whole prompt.
    from llmos.kernel.batch import BatchEngine
    from llmos.limits import SCHED_STEP_TOKENS

    kernel, constraint = prompts(system, backend)
    long = chat(kernel, "summarise: " + " ".join(f"w{i}" for i in range(250)))
    short = chat(kernel, "list the files here")
    engine = BatchEngine(backend, slots=2)
    try:
        a = engine.start("long", long, constraint=constraint, max_tokens=16)
        b = engine.start("short", short, constraint=constraint, max_tokens=16)
        first = len(a.pending)
        assert first > 3 * SCHED_STEP_TOKENS
        steps, done = 0, []
        while len(done) < 2:
            before = len(a.pending) + len(b.pending)
            done += engine.step([s for s in (a, b) if s not in done])
            steps += 1
            assert before - len(a.pending) - len(b.pending) <= SCHED_STEP_TOKENS
            if b.prefill_done and not a.prefill_done:
                break
        assert b.prefill_done and not a.prefill_done, "short waited for the whole long prompt"
        assert b.sampled >= 1 and steps <= 2
    finally:
        engine.close()


def prioritised(aging: float, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two background processes queue before a person's request, while another completion
    holds the model; the order they are served in."""
    import llmos.kernel.scheduler as scheduler_mod

    monkeypatch.setattr(scheduler_mod, "SCHED_AGING_S", aging)
    gate = threading.Event()
    fake = tool_then_reply(gate)
    with Scheduler(fake, policy="fifo") as sched:  # type: ignore[arg-type]
        job = sched.client("job", priority=BACKGROUND)
        app = sched.client("app", priority=BACKGROUND)
        shell = sched.client("shell", priority=FOREGROUND)
        threads = [submit(sched, "x", "x1")]
        on_model(fake)
        for client, text in ((job, "job1"), (app, "app1"), (shell, "shell1")):
            thread = threading.Thread(
                target=client.complete,
                args=([{"role": "user", "content": text}],),
                kwargs={"constraint": None, "max_tokens": 8},
                daemon=True,
            )
            thread.start()
            threads.append(thread)
            wait_pending(sched, len(threads) - 1)
        time.sleep(0.05)
        gate.set()
        for thread in threads:
            thread.join(10)
    return fake.requests


def test_a_persons_request_goes_before_background_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert prioritised(60.0, monkeypatch) == ["x1", "shell1", "job1", "app1"]


def test_a_background_request_that_waited_long_is_not_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Aged past SCHED_AGING_S, background requests are first-class again (no starvation)."""
    assert prioritised(0.01, monkeypatch) == ["x1", "job1", "app1", "shell1"]


def test_a_server_with_slots_gets_that_many_requests_at_once() -> None:
    """A backend that decodes several completions at once (a server's slots) is kept that
    full; one without slots gets one at a time."""
    for slots, overlap in ((2, True), (1, False)):
        gate = threading.Event()
        fake = tool_then_reply(gate)
        fake.slots = slots  # type: ignore[attr-defined]
        with Scheduler(fake) as sched:  # type: ignore[arg-type]
            assert sched.parallel == slots
            threads = [submit(sched, name, f"{name}1") for name in ("a", "b")]
            deadline = time.monotonic() + 10
            while fake.busy < slots and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            assert (fake.busy == 2) is overlap
            gate.set()
            for thread in threads:
                thread.join(10)
        assert sorted(fake.requests) == ["a1", "b1"]


def test_the_server_says_how_many_slots_it_has(tmp_path: Path) -> None:
    """llama.cpp's llama-server reports `total_slots` in /props; a server that does not say
    (llama-cpp-python's) counts as one slot; `server_slots` in the settings wins."""
    import http.server
    import json as json_mod

    from llmos.kernel.server import OpenAIBackend, server_slots

    class Props(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json_mod.dumps({"total_slots": 4}).encode()
            self.send_response(200 if self.path == "/props" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Props)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        assert server_slots(url) == 4
        assert OpenAIBackend(url).slots == 4
        assert OpenAIBackend(url, slots=2).slots == 2
    finally:
        httpd.shutdown()
    assert server_slots(url) == 1, "a server that does not answer: one slot"
