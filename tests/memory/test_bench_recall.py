"""`llmos bench recall`: a conversation in LoCoMo's shape is loaded, told and asked about; the
scoring (token F1, evidence recall@5, "not known") and the figures it writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from llmos.bench.recall import Question, Said, load, says_not_known, score, spread, token_f1
from llmos.errors import ErrorCode, LlmosError


def conversation() -> dict[str, Any]:
    """A small conversation of the shape: two dated sessions, four questions."""
    return {
        "speaker_a": "Mara",
        "speaker_b": "Tomas",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Mara", "dia_id": "D1:1", "text": "I adopted a grey cat called Pepper."},
            {"speaker": "Tomas", "dia_id": "D1:2", "text": "Lovely! I am learning the cello."},
        ],
        "session_2_date_time": "10:02 am on 25 May, 2023",
        "session_2": [
            {
                "speaker": "Mara",
                "dia_id": "D2:1",
                "text": "We went hiking at Lake Bled last Saturday.",
                "blip_caption": "a photo of a lake with mountains",
            },
            {"speaker": "Tomas", "dia_id": "D2:2", "text": "I bought a red bicycle yesterday."},
        ],
        "qa": [
            {
                "question": "What is Mara's cat called?",
                "answer": "Pepper",
                "evidence": ["D1:1"],
                "category": 4,
            },
            {
                "question": "Which instrument is Tomas learning?",
                "answer": "cello",
                "evidence": ["D1:2"],
                "category": 4,
            },
            {
                "question": "Where did Mara go hiking?",
                "answer": "Lake Bled",
                "evidence": ["D2:1"],
                "category": 1,
            },
            {
                "question": "What is Tomas's dog called?",
                "adversarial_answer": "Pepper",
                "evidence": [],
                "category": 5,
            },
        ],
    }


def test_a_conversation_loads_in_order_with_dates_photos_and_questions(tmp_path: Path) -> None:
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(conversation()))
    said, questions = load(path)
    assert [s.dia_id for s in said] == ["D1:1", "D1:2", "D2:1", "D2:2"]
    assert said[0].told() == "[1:56 pm on 8 May, 2023] Mara: I adopted a grey cat called Pepper."
    assert said[2].date == "10:02 am on 25 May, 2023"
    assert Said("D9:9", "Mara", "hi", "").told() == "Mara: hi", "no date, none shown"
    moment = said[2].moment()
    assert moment is not None and time.localtime(moment)[:5] == (2023, 5, 25, 10, 2)
    assert Said("D9:9", "Mara", "hi", "sometime in spring").moment() is None
    assert said[2].text.endswith("[shares a photo: a photo of a lake with mountains]")
    assert [q.category for q in questions] == [4, 4, 1, 5]
    assert questions[3].answer == "Pepper" and questions[0].evidence == ("D1:1",)
    nested = tmp_path / "nested.json"  # the upstream file keeps the sessions in "conversation"
    data = conversation()
    nested.write_text(json.dumps({"conversation": data, "qa": data.pop("qa")}))
    assert load(nested)[0] == said


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("not json", "is not JSON"),
        ("[]", "expected an object"),
        ('{"qa": []}', "no session_N lists"),
        ('{"session_1": [{"speaker": "A", "text": "hi"}]}', "session_1 message 0 lacks 'dia_id'"),
        ('{"session_1": [], "qa": [{"question": "q?", "category": 4}]}', "question 0 lacks"),
    ],
)
def test_a_malformed_conversation_is_a_clear_error(
    tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LlmosError) as caught:
        load(path)
    assert caught.value.code is ErrorCode.E_INVAL and named in caught.value.message
    with pytest.raises(LlmosError) as missing:
        load(tmp_path / "none.json")
    assert missing.value.code is ErrorCode.E_NOENT


def test_token_f1_is_the_usual_measure() -> None:
    assert token_f1("Pepper", "Pepper") == 1.0
    assert token_f1("The cat is called Pepper.", "Pepper") == pytest.approx(
        2 * (1 / 4) / (1 + 1 / 4)
    )
    assert token_f1("She went to Lake Bled", "lake bled") == pytest.approx(2 * 0.4 / 1.4)
    assert token_f1("a cello", "the Cello!") == 1.0, "case, punctuation and articles do not count"
    assert token_f1("no idea", "Pepper") == 0.0
    assert token_f1("", "Pepper") == 0.0


def test_not_known_is_a_reply_that_says_so() -> None:
    for reply in (
        "I don't know what Tomas's dog is called.",
        "The conversation does not mention a dog.",
        "There is no information about a dog.",
        "I couldn't find that in memory.",
        "That was never mentioned.",
    ):
        assert says_not_known(reply), reply
    for reply in ("His dog is called Pepper.", "Pepper, I think.", "Lake Bled"):
        assert not says_not_known(reply), reply


def test_scores_cover_answerable_categories_and_count_not_known_apart() -> None:
    answers = [
        {"category": 4, "f1": 1.0, "found": True, "found_alone": False, "found_by_meaning": False},
        {"category": 4, "f1": 0.0, "found": False, "found_alone": False, "found_by_meaning": False},
        {"category": 1, "f1": 0.5, "found": True, "found_alone": True, "found_by_meaning": True},
        {"category": 5, "f1": 0.0, "found": None, "found_by_meaning": None, "not_known": True},
        {"category": 5, "f1": 1.0, "found": None, "found_by_meaning": None, "not_known": False},
    ]
    figures = score(answers)
    assert figures["f1"] == pytest.approx(0.5) and figures["recall_at_5"] == pytest.approx(2 / 3)
    assert figures["recall_at_5_meaning"] == pytest.approx(1 / 3)
    assert figures["recall_at_5_pages"] == pytest.approx(1 / 3)
    assert figures["not_known"] == 0.5
    assert figures["by_category"]["4"] == {"questions": 2.0, "f1": 0.5, "recall_at_5": 0.5}
    assert figures["by_category"]["5"]["not_known"] == 0.5


@pytest.mark.slow
def test_bench_recall_tells_asks_and_writes_its_figures(
    small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real small model, a real store and index: every message is told, every question
    asked, and the recall search finds the one-message evidence of a single-hop question."""
    from llmos.cli import main

    path = tmp_path / "conv.json"
    path.write_text(json.dumps(conversation()))
    out = tmp_path / "figures.json"
    args = ["--model", str(small_model), "bench", "recall", str(path), "--questions", "3"]
    assert main([*args, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["messages"] == 4 and figures["questions"] == 3
    assert set(figures["by_category"]) == {"1", "4"}
    assert [a["question"] for a in figures["answers"]] == [
        "What is Mara's cat called?",
        "Which instrument is Tomas learning?",
        "Where did Mara go hiking?",
    ]
    assert all(a["found"] for a in figures["answers"]), "four turns: each evidence is in view"
    for a in figures["answers"]:  # never the question handed back as the answer
        assert a["reply"].strip(" ?").lower() != a["question"].strip(" ?").lower(), a
    assert figures["recall_at_5"] == 1.0
    assert 0.0 <= figures["f1"] <= 1.0
    assert figures["steps"] >= 3, "each question is at least one decoded step"
    assert figures["prefill_tokens"] > 0 and figures["decode_tokens"] >= figures["steps"]
    spent = figures["prefill_seconds"] + figures["decode_seconds"]
    assert 0.0 < spent <= figures["ask_seconds"], "the model's time is part of the asking time"
    printed = capsys.readouterr().out
    assert "token F1" in printed and "model steps; prefill" in printed


def test_spread_takes_questions_from_every_part_of_the_file() -> None:
    questions = [Question(f"q{i}", "a", (), 1 + i // 10) for i in range(40)]
    picked = spread(questions, 8)
    assert len(picked) == 8 and len(set(picked)) == 8
    assert {q.category for q in picked} == {1, 2, 3, 4}
    assert spread(questions, 0) == questions and spread(questions, 99) == questions
