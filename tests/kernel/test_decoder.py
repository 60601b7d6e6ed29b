"""The decoder's choice of a call name when the constraint leaves the model's own wish out:
scored on its log-probabilities along the probe (a fake tokenizer here; the real model in
test_real_requests)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from llmos.kernel.decoder import Decoder, Decoding

VOCAB = ["fs", ".move", ".write", "ask", "mem", ".store", '"']


class FakeLlm:
    """Tokenizes greedily over VOCAB (longest piece first)."""

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        rest, out = text.decode(), []
        while rest:
            piece = max((v for v in VOCAB if rest.startswith(v)), key=len)
            out.append(VOCAB.index(piece))
            rest = rest[len(piece) :]
        return out

    def detokenize(self, tokens: list[int]) -> bytes:
        return "".join(VOCAB[t] for t in tokens).encode()


def logprobs(**chosen: float) -> list[float]:
    values = [-30.0] * len(VOCAB)
    for word, value in chosen.items():
        values[
            VOCAB.index({"move": ".move", "write": ".write", "store": ".store"}.get(word, word))
        ] = value
    return values


def decoder() -> Decoder:
    made = Decoder.__new__(Decoder)
    made.llm = FakeLlm()
    return made


def test_a_sibling_the_model_hardly_wants_loses_to_another_call() -> None:
    steps = [((), logprobs(fs=-0.5, ask=-1.0, mem=-3.0)), ((0,), logprobs(move=-0.1, write=-5.0))]
    start = decoder()._best_allowed(steps, ["fs.write", "ask", "mem.store"])
    assert start == 'ask"', "fs.write scores -5.5 in all; ask -1.0"


def test_a_sibling_the_model_nearly_wants_is_taken_whole() -> None:
    steps = [((), logprobs(fs=-0.5, ask=-1.0)), ((0,), logprobs(move=-0.9, write=-0.3))]
    assert decoder()._best_allowed(steps, ["fs.write", "ask"]) == 'fs.write"'


def test_a_call_known_only_by_its_first_token_starts_with_that_token() -> None:
    steps = [((), logprobs(fs=-0.2, mem=-0.4)), ((0,), logprobs(move=-0.1, write=-math.inf))]
    assert decoder()._best_allowed(steps, ["fs.write", "mem.store"]) == "mem"


def stepper(eog: int) -> Decoder:
    """A decoder whose library says only `eog` ends the output (no grammar needed here)."""
    made = decoder()
    made.lib = SimpleNamespace(llama_vocab_is_eog=lambda _vocab, token: token == eog)
    made.vocab = None
    made.fast_forward = True
    return made


def test_one_step_takes_the_best_token_until_the_room_is_used_or_an_end_token() -> None:
    import numpy as np

    step = stepper(eog=VOCAB.index('"')).step
    state = Decoding(sampler=None, constraint=None, room=2)
    best_fs = np.array(logprobs(fs=-0.1, ask=-2.0))
    assert step(state, best_fs) == [VOCAB.index("fs")]
    assert step(state, np.array(logprobs(move=-0.1))) == [VOCAB.index(".move")]
    assert (state.out, state.sampled) == (b"fs.move", 2)
    assert step(state, best_fs) == [], "the room of 2 tokens is used up"
    ended = Decoding(sampler=None, constraint=None, room=5)
    assert step(ended, np.array(logprobs(**{'"': -0.1}))) == []
    assert ended.out == b"" and ended.sampled == 0, "an end token is not part of the output"
