"""The shape of an answer from memory: the fact asked, not the question said back."""

from __future__ import annotations

import pytest

from llmos.kernel.answers import concise, first_sentence, says_nothing, without_restatement


@pytest.mark.parametrize(
    ("question", "reply", "answer"),
    [
        (
            "When did Jon lose his job as a banker?",
            "Jon lost his job as a banker on 19 January 2023.",
            "On 19 January 2023.",
        ),
        (
            "What is Jon working on opening?",
            "Jon is working on opening a dance studio.",
            "A dance studio.",
        ),
        (
            "What is Gina's favorite style of dance?",
            "Gina's favorite style of dance is contemporary.",
            "Contemporary.",
        ),
        ("what's my locker code?", "Your locker code is 4512.", "4512."),
        # a longer form of the question's word ("promoted" for "promote")
        (
            "How did Gina promote her store?",
            "Gina promoted her store by running ads.",
            "By running ads.",
        ),
        # the head ends at a comma: what follows is the answer's
        (
            "Do Jon and Gina like dancing?",
            "Yes, Jon and Gina like dancing.",
            "Yes, Jon and Gina like dancing.",
        ),
        # a date's comma is not the head's end: the question's words go on after it
        (
            "What did Gina find for her clothing store on 1 February, 2023?",
            "On 1 February, 2023, Gina found a spot with a variety of clothes.",
            "A spot with a variety of clothes.",
        ),
        # fewer than two of the question's words: nothing is cut
        ("Where is the key?", "The key is under the mat.", "The key is under the mat."),
        ("What does Jon like?", "Jon likes.", "Jon likes."),  # nothing would be left
    ],
)
def test_a_restated_question_is_cut_from_the_answer(question: str, reply: str, answer: str) -> None:
    assert without_restatement(question, reply) == answer


@pytest.mark.parametrize(
    ("question", "reply", "answer"),
    [
        (
            "According to Gina, what makes Jon a perfect mentor?",
            "Based on Gina's response, his positivity and determination.",
            "His positivity and determination.",
        ),
        (
            "What did Jon say about his customers?",
            "Jon mentioned that they should feel welcome.",
            "They should feel welcome.",
        ),
        (
            "What is Jon working on opening?",
            "According to the records, Jon is working on opening a dance studio.",
            "A dance studio.",
        ),
    ],
)
def test_where_an_answer_says_it_comes_from_is_not_the_answer(
    question: str, reply: str, answer: str
) -> None:
    assert concise(question, reply) == answer


def test_an_answer_from_memory_is_its_first_sentence() -> None:
    assert first_sentence("It was 4512. You told me on Monday! Anything else?") == "It was 4512."
    assert first_sentence("Version 2.5 of it.") == "Version 2.5 of it."
    assert first_sentence("no stop at all") == "no stop at all"
    assert (
        concise(
            "What did Jon say about the opening?",
            "Jon said the opening is tomorrow. He is confident it will be a success.",
        )
        == "Tomorrow."
    )


@pytest.mark.parametrize(
    ("question", "reply", "nothing"),
    [
        (
            "What temporary job did Jon take to cover expenses?",
            "Jon took a temporary job to cover expenses.",
            True,
        ),
        ("What is Jon working on opening?", "Jon is working on opening a dance studio.", False),
        ("Does Jon like dancing?", "Jon likes dancing.", False),  # yes, said back
        ("What is my locker code?", "4512.", False),
    ],
)
def test_the_question_said_back_says_nothing(question: str, reply: str, nothing: bool) -> None:
    assert says_nothing(question, reply) is nothing


@pytest.mark.parametrize(
    ("question", "reply", "answer"),
    [
        (
            "Did Jon and Gina both participate in dance competitions?",
            "Yes, Jon and Gina both participated in dance competitions.",
            "Yes.",
        ),
        (
            "Do Jon and Gina start businesses out of what they love?",
            "Yes, they start businesses out of what they love.",
            "Yes.",
        ),
        (
            "Was the cabin's wifi password larch-7731?",
            "yes, the wifi password of the cabin was larch-7731.",
            "Yes.",
        ),
        # what adds to the yes or no stays
        ("Is Gina's store open?", "No, it closed in May.", "No, it closed in May."),
        # a reply that opens with neither, or a question that asks what, is left as it is
        ("Did Jon go to Rome?", "Yesterday he went.", "Yesterday he went."),
        ("What did Jon say?", "No, thanks.", "No, thanks."),
    ],
)
def test_a_yes_or_no_that_only_says_the_question_back_is_yes_or_no(
    question: str, reply: str, answer: str
) -> None:
    assert concise(question, reply) == answer


@pytest.mark.parametrize(
    ("question", "reply", "answer"),
    [
        ("What did Gina receive from a dance contest?", "Trophy from a dance contest.", "Trophy."),
        (
            "How does Jon feel about the opening night of his dance studio?",
            "Jon feels excited about the opening night of his dance studio.",
            "Excited.",
        ),
        # a tail holding a word the question does not is the answer's
        (
            "Where is Gina's fashion internship?",
            "At an international company in the fashion department.",
            "At an international company in the fashion department.",
        ),
        # after a longer answer the question's words are its own
        (
            "Why did Gina decide to start her own clothing store?",
            "Because she wanted to sell unique pieces of clothing.",
            "Because she wanted to sell unique pieces of clothing.",
        ),
        # nothing but the question is left as it is (says_nothing decides)
        (
            "What did Gina receive from the contest?",
            "Gina received it from the contest.",
            "Gina received it from the contest.",
        ),
    ],
)
def test_a_tail_that_only_says_the_question_back_is_cut(
    question: str, reply: str, answer: str
) -> None:
    assert concise(question, reply) == answer


def test_the_answer_is_the_first_sentence_that_says_something() -> None:
    question = "What advice does Gina give to Jon about running a successful business?"
    reply = (
        "Gina gave Jon advice about running a successful business. She suggested building "
        "relationships with customers. Stay positive!"
    )
    assert concise(question, reply) == "She suggested building relationships with customers."
    # when none says anything, the first (which says_nothing then finds empty)
    said_back = "Gina gave Jon advice about running a business. It was about a business."
    assert concise(question, said_back) == "Gina gave Jon advice about running a business."
    assert concise("What is my locker code?", "It is 4512. You told me.") == "It is 4512."
