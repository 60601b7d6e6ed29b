"""The model of a running `llmos serve`, as a backend: completions are sent over the daemon's
socket and decoded by its model (one scheduler, shared with every other client), so `llmos
eval` loads no model of its own while a daemon runs."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import TYPE_CHECKING

from llmos.client import Connection
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, Message
from llmos.kernel.grammar import constraint_data

if TYPE_CHECKING:
    from llmos.kernel.grammar import Constraint


class RemoteBackend:
    """A `Backend` over one connection to the daemon (`op: model`), asked one completion at a
    time; E_BACKEND when the daemon fails it or goes away."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        conn.send({"op": "model"})
        hello = conn.receive()
        if "error" in hello:
            raise LlmosError(ErrorCode.E_BACKEND, str(hello["error"]))
        self.name = str(hello.get("name", "llmos serve"))
        self.context = int(hello.get("context", 4096))

    def _ask(self, message: dict[str, object]) -> dict[str, object]:
        with self._lock:
            try:
                self.conn.send(message)
                answer = self.conn.receive()
            except (ConnectionError, OSError) as exc:
                raise LlmosError(ErrorCode.E_BACKEND, f"llmos serve: {exc}") from None
        if "error" in answer:
            code, _, text = str(answer["error"]).partition(": ")
            known = code in ErrorCode.__members__
            raise LlmosError(ErrorCode(code) if known else ErrorCode.E_BACKEND, text or code)
        return answer

    def complete(
        self, messages: list[Message], *, constraint: Constraint | None, max_tokens: int
    ) -> Completion:
        """One completion, decoded by the daemon's model."""
        answer = self._ask(
            {
                "messages": messages,
                "constraint": constraint_data(constraint) if constraint is not None else None,
                "max_tokens": max_tokens,
            }
        )
        done = answer["completion"]
        assert isinstance(done, dict)
        return Completion(**done)

    def count(self, messages: list[Message]) -> int:
        """Tokens the daemon's model makes of the chat."""
        return int(str(self._ask({"count": messages})["tokens"]))

    def tokens(self, text: str) -> int:
        """Tokens the daemon's model makes of `text`."""
        return int(str(self._ask({"text": text})["tokens"]))

    def close(self) -> None:
        """Close the connection (the daemon's model stays)."""
        self.conn.close()


def completion_data(done: Completion) -> dict[str, object]:
    """A completion as JSON data."""
    return asdict(done)
