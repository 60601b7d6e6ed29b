"""What the pager, the scheduler and the shell need of a backend is typed (Tokenizing, Warming,
Cancelling, Windowed, Timed), and a scheduler client offers it by forwarding explicitly."""

from __future__ import annotations

from llmos.kernel.backend import (
    Cancelling,
    Completion,
    Message,
    Timed,
    Tokenizing,
    Warming,
    Windowed,
    context_of,
    count_tokens,
    decode_speed,
    text_tokens,
)
from llmos.kernel.scheduler import Scheduler
from llmos.testing import ScriptedBackend


class Counting(ScriptedBackend):
    """A scripted backend that counts a token per word and knows its context and speed."""

    decode_tps = 12.5

    def count(self, messages: list[Message]) -> int:
        return sum(len(m["content"].split()) for m in messages)

    def tokens(self, text: str) -> int:
        return len(text.split())

    def warm(self, messages: list[Message]) -> Completion:
        return self.complete(messages, constraint=None, max_tokens=0)


def test_a_plain_backend_gets_estimates_and_offers_no_extras() -> None:
    plain = ScriptedBackend([])
    assert not any(isinstance(plain, p) for p in (Tokenizing, Warming, Cancelling, Timed))
    assert text_tokens(plain, "x" * 40) == 11
    assert count_tokens(plain, [{"role": "user", "content": "y" * 40}]) == 14
    assert context_of(plain) == 4096, "the scripted backend says its context"
    assert decode_speed(plain) == 0.0


def test_a_scheduler_client_forwards_what_its_backend_can_do() -> None:
    real = Counting(["a"], context=2048)
    with Scheduler(real) as sched:
        client = sched.client("p")
        assert all(
            isinstance(client, p) for p in (Tokenizing, Warming, Cancelling, Windowed, Timed)
        )
        assert client.tokens("three words here") == 3
        assert client.count([{"role": "user", "content": "two words"}]) == 2
        assert (client.context, client.decode_tps) == (2048, 12.5)
        client.warm([{"role": "user", "content": "hi"}])
        assert real.prompts == [[{"role": "user", "content": "hi"}]], "warmed through the queue"


def test_a_client_of_a_backend_that_cannot_warm_asks_it_nothing() -> None:
    real = ScriptedBackend([])
    with Scheduler(real) as sched:
        client = sched.client("p")
        assert client.warm([{"role": "user", "content": "hi"}]).text == ""
        assert real.prompts == []
        assert client.tokens("x" * 40) == 11, "estimated as for the backend itself"
