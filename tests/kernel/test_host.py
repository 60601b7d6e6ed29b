"""The one model host: the model opens once (first use, or in the background), every process
gets its own client of one scheduler, and a failure to open reaches every caller."""

from __future__ import annotations

import threading

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Backend
from llmos.kernel.host import ModelHost
from llmos.testing import ScriptedBackend


def test_the_model_opens_once_on_first_use_and_is_shared() -> None:
    opened: list[Backend] = []

    def open_model() -> Backend:
        opened.append(ScriptedBackend(["a", "b"]))
        return opened[-1]

    host = ModelHost(open_model)
    assert host.model is None and opened == [], "nothing opens before it is needed"
    try:
        first, second = host.client("one"), host.client("two")
        assert len(opened) == 1 and host.model is opened[0]
        assert first.complete([], constraint=None, max_tokens=8).text == "a"
        assert second.complete([], constraint=None, max_tokens=8).text == "b"
    finally:
        host.close()
    with pytest.raises(LlmosError) as out:
        host.client("three")
    assert out.value.code is ErrorCode.E_BACKEND and len(opened) == 1


def test_a_failure_to_open_reaches_every_caller_and_is_not_retried() -> None:
    tries: list[int] = []

    def broken() -> Backend:
        tries.append(1)
        raise RuntimeError("no GGUF here")

    host = ModelHost(broken)
    for _ in range(2):
        with pytest.raises(LlmosError) as out:
            host.client("p")
        assert (
            out.value.code is ErrorCode.E_BACKEND and "RuntimeError: no GGUF" in out.value.message
        )
    assert tries == [1]


def test_a_background_open_runs_its_follow_up_on_the_loading_thread() -> None:
    release = threading.Event()
    seen: list[str] = []

    def slow() -> Backend:
        assert release.wait(10)
        return ScriptedBackend([])

    host = ModelHost(slow)
    host.start(after_open=lambda: seen.append(threading.current_thread().name))
    assert not host.ready
    release.set()
    host.wait()
    assert host.ready and seen == ["llmos-model"]
    host.close()
