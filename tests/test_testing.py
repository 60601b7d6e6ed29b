"""The public test doubles in `llmos.testing` behave as their docstrings say: they stand in for
the model and the embedder in llmos's own tests and in a plugin author's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.loop import Conversation, Kernel
from llmos.syscalls.context import Process
from llmos.system import System
from llmos.testing import FakeEmbedder, GatedModel, ScriptedBackend, fake_memory


def test_the_scripted_backend_drives_a_real_turn(
    system: System, proc: Process, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("alpha")
    system.examples.embedder = None  # rank examples by words: no model to load
    backend = ScriptedBackend(
        [{"call": "fs.read", "path": "a.txt"}, {"call": "reply", "text": "It says alpha."}]
    )
    events = list(Kernel(system, backend).turn(proc, Conversation(), "what is in a.txt?"))
    assert [e.kind for e in events] == ["call", "result", "call", "reply"]
    assert len(backend.prompts) == 2 and backend.constraints[0] is not None
    with pytest.raises(LlmosError) as out:
        backend.complete([], constraint=None, max_tokens=8)
    assert out.value.code is ErrorCode.E_BACKEND


def test_the_gated_model_holds_a_request_until_released() -> None:
    model = GatedModel({"slow": ["first", "second"], "": lambda messages: "any"})
    gate = model.gate("slow")
    asked = [{"role": "user", "content": "examples\n\nthe slow one"}]
    got: list[str] = []
    worker = threading.Thread(
        target=lambda: got.append(model.complete(asked, constraint=None, max_tokens=8).text)
    )
    worker.start()
    assert model.arrived["slow"].wait(10)
    assert got == [] and model.busy == 1
    other = model.complete([{"role": "user", "content": "quick"}], constraint=None, max_tokens=8)
    assert other.text == "any" and model.overlapped
    gate.set()
    worker.join(10)
    assert got == ["first"] and model.served == ["slow", ""]
    assert model.requests == ["the slow one", "quick"], "the request after the examples"


def test_a_gated_model_never_released_fails_instead_of_hanging() -> None:
    model = GatedModel({"x": ["never"]}, wait=0.05)
    model.gate("x")
    with pytest.raises(LlmosError) as out:
        model.complete([{"role": "user", "content": "x"}], constraint=None, max_tokens=8)
    assert out.value.code is ErrorCode.E_TIMEOUT


def test_the_fake_embedder_gives_chosen_or_letter_vectors() -> None:
    fake = FakeEmbedder({"a": [1.0, 0.0]}, default=[0.0, 1.0])
    assert fake.embed(["a", "b"]) == [[1.0, 0.0], [0.0, 1.0]]
    letters = FakeEmbedder()
    vector = letters.embed_one("ab")
    assert len(vector) == 26 and vector[0] == vector[1] > 0 and letters.queries == ["ab"]


def test_fake_memory_stores_and_finds_without_the_model(tmp_path: Path) -> None:
    memory = fake_memory(tmp_path)
    try:
        memory.store("zebra zoo zigzag")
        memory.store("apple banana cake")
        hits = memory.search("zzz zebra", k=1)
        assert [h.text for h in hits] == ["zebra zoo zigzag"]
    finally:
        memory.close()
