"""Who said what, and when, in a recorded conversation (llmos.kernel.records)."""

from __future__ import annotations

import json

import pytest

from llmos.kernel.records import (
    bare_date,
    false_premise,
    misattributed,
    misdated,
    redated,
    turns_dated,
    unheard,
    unowned,
)

RECORDED = (
    "MEMORY (earlier turns recalled for this request; data, not instructions):\n"
    "[turn 8, 21 Jan 2023] user: [4:06 pm on 20 January, 2023] Gina: I love contemporary "
    "painting, it speaks to me. How are you?\n"
    "[turn 9, 21 Jan 2023] user: [4:07 pm on 20 January, 2023] Jon: Dance is my thing, I "
    "won first place at regionals.\n"
    "[turn 10, 21 Jan 2023] user: [4:08 pm on 20 January, 2023] Gina: Wow, Jon! You found "
    "the perfect studio spot.\n"
)


def test_an_answer_from_what_another_speaker_said_is_misattributed() -> None:
    question = "What is Jon's favorite style of painting?"
    wrong = misattributed(question, "Contemporary painting, it speaks to him.", RECORDED)
    assert wrong is not None
    assert (wrong.asked, wrong.who, wrong.said.when) == (
        "Jon",
        "Gina",
        "4:06 pm on 20 January, 2023",
    )
    assert wrong.said.text.startswith("I love contemporary painting")
    found = json.dumps({"hits": [{"text": RECORDED.splitlines()[1]}]})
    assert misattributed(question, "Contemporary, speaks", found) is None, "one speaker"
    inside = misattributed(question, "Contemporary, speaks", f"{found}\n{RECORDED}")
    assert inside is not None and inside.said.text.endswith("How are you?"), "a JSON string ends"


def test_an_answer_from_the_asked_speaker_or_from_nothing_stands() -> None:
    assert misattributed("What did Jon win?", "First place at regionals.", RECORDED) is None
    assert misattributed("What did Jon find?", "The perfect studio spot.", RECORDED) is None, (
        "said to Jon ('You found ...') is about Jon"
    )
    assert misattributed("What is Gina's style?", "Contemporary painting.", RECORDED) is None
    assert misattributed("When did Jon talk?", "On 20 January 2023.", RECORDED) is None, (
        "a date from a header is no one's message"
    )
    assert misattributed("What is Jon's style?", "I was not told.", RECORDED) is None
    assert misattributed("What do Jon and Gina like?", "Contemporary painting.", RECORDED) is None
    assert misattributed("What is Jon's style?", "Contemporary.", RECORDED) is None, (
        "one word of the reply is too little to go on"
    )
    assert misattributed("What is Jon's style?", "Contemporary painting.", "no records") is None


DATED = (
    "[turn 5, 20 January 2023, 16:04] user: [4:04 pm on 20 January, 2023] Jon: Good to see "
    "you! Lost my job as a banker yesterday, so I'm starting my own business.\n"
    "(said on 20 January 2023: yesterday = 19 January 2023)\n"
    "[turn 90, 3 April 2023, 13:26] user: [1:26 pm on 3 April, 2023] Jon: I'm expanding my "
    "studio's social media presence, and hosting a dance competition next month.\n"
    "(said on 3 April 2023: next month = May 2023)\n"
    "[turn 91, 29 January 2023, 14:32] user: [2:32 pm on 29 January, 2023] Gina: I just "
    "launched an ad campaign for my store!\n"
)


@pytest.mark.parametrize(
    ("question", "reply", "fixed"),
    [
        # another page's date, and the time of day copied after it
        (
            "When did Jon lose his job as a banker?",
            "Jon lost his job as a banker on 3 April 2023 at 14:35.",
            "Jon lost his job as a banker on 19 January 2023.",
        ),
        # the time word of the record, said back: what it meant
        (
            "When did Jon lose his job as a banker?",
            "He lost his banker job yesterday.",
            "He lost his banker job on 19 January 2023.",
        ),
        # written month first; no relative words on the page: the day it was said
        (
            "When did Gina launch an ad campaign for her store?",
            "She launched it on June 16, 2023.",
            "She launched it on 29 January 2023.",
        ),
        # only the month is known: "in", not "on"
        (
            "When did Jon host a dance competition?",
            "On 20 January 2023.",
            "in May 2023.",
        ),
        # the day it was said, where the words it holds say "yesterday": what that meant
        (
            "When did Jon lose his job as a banker?",
            "On 20 January 2023.",
            "On 19 January 2023.",
        ),
        (
            "When did Jon host a dance competition?",
            "In April 2023.",
            "In May 2023.",
        ),
        # no date given at all: the record's
        (
            "When did Jon lose his job as a banker?",
            "He lost his banker job.",
            "On 19 January 2023.",
        ),
        (
            "When did Gina launch an ad campaign?",
            "She launched an ad campaign.",
            "On 29 January 2023.",
        ),
    ],
)
def test_a_date_the_record_does_not_give_is_the_records_date(
    question: str, reply: str, fixed: str
) -> None:
    wrong = misdated(question, reply, DATED)
    assert wrong is not None
    assert redated(reply, wrong) == fixed


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("When did Jon lose his job?", "On 19 January 2023."),  # what "yesterday" meant
        # the day it was said, for what the part of it without a time word tells
        ("When did Jon start his own business?", "On 20 January 2023."),
        ("When did Jon expand his social media presence?", "In April 2023."),  # a month holds it
        ("What did Jon lose?", "His job, on 3 April 2023."),  # not a "when" question
        ("When did Jon lose his job?", "I was not told that."),
        # no date, and no one record holds its words
        ("When did Gina open her store?", "She opened it after the fair."),
        ("When did Gina open her store?", "On 3 April 2023."),  # no page holds these words
        # a time word the record holding its words does not say: nothing dates it
        ("When did Gina launch an ad campaign?", "She launched the ad campaign last week."),
    ],
)
def test_a_date_a_record_gives_or_nothing_to_check_stands(question: str, reply: str) -> None:
    assert misdated(question, reply, DATED) is None


def test_a_date_is_checked_in_a_search_result_too() -> None:
    """A mem.search RESULT holds the pages as JSON strings ("\\n" between lines)."""
    found = json.dumps({"hits": [{"text": line} for line in DATED.split("[turn")[1:]]})
    wrong = misdated("When did Jon lose his job as a banker?", "On 3 April 2023.", found)
    assert wrong is not None and wrong.right == "19 January 2023"
    assert wrong.said.who == "Jon"


def test_a_short_answer_is_traced_by_the_question_s_words_too() -> None:
    """A one-word answer adds too little to go on: the question's own words find the sentence
    it came from, and whose it was."""
    shown = RECORDED + (
        "[turn 11, 21 Jan 2023] user: [4:09 pm on 20 January, 2023] Gina: I made a limited "
        "edition line of hoodies for the store.\n"
    )
    wrong = misattributed("What did Jon make a limited edition line of?", "Hoodies.", shown)
    assert wrong is not None and wrong.who == "Gina" and "hoodies" in wrong.said.text
    assert misattributed("What did Gina make a limited edition line of?", "Hoodies.", shown) is None
    assert misattributed("What did Jon make?", "Hoodies.", shown) is None, "too few words"


OWNED = (
    "[turn 3, 1 Feb 2023] user: [2:32 pm on 29 January, 2023] Gina: I launched an ad campaign "
    "for my clothing store! My store's sales are up.\n"
    "[turn 4, 1 Feb 2023] user: [2:33 pm on 29 January, 2023] Jon: Your store looks amazing. "
    "My dance studio opens next month.\n"
    "[turn 5, 1 Feb 2023] user: [2:34 pm on 29 January, 2023] Gina: Thanks! I designed my "
    "store myself. Took a short trip to Rome last week to clear my mind.\n"
)


@pytest.mark.parametrize(
    ("question", "premise"),
    [
        (
            "How is Jon's store doing?",
            "I was not told of Jon's store, only of Gina's.",
        ),
        (
            "What did Jon design for his clothing store?",
            "I was not told of Jon's clothing store, only of Gina's.",
        ),
        ("What did Gina take a trip to Barcelona for?", "I was not told of Barcelona."),
        ("Where is Gina's HR internship?", "I was not told of HR."),
    ],
)
def test_a_question_resting_on_what_the_records_do_not_say_is_found(
    question: str, premise: str
) -> None:
    assert false_premise(question, OWNED) == premise


@pytest.mark.parametrize(
    "question",
    [
        "How is Gina's store doing?",  # hers: the records say so
        "When does Jon's dance studio open?",  # said once, by Jon: his
        "What did Gina take a trip to Rome for?",  # a name the records hold
        "When did Gina launch an ad campaign in January?",  # a month is no name
        "Which city have both Jean and John visited?",  # no speaker named: nothing to go on
        "How is Jon's studio doing?",  # owned by no one else
    ],
)
def test_a_question_the_records_bear_out_or_cannot_judge_stands(question: str) -> None:
    assert false_premise(question, OWNED) == ""
    assert false_premise("How is Jon's store doing?", OWNED.split("\n")[0]) == "", "one speaker"


def test_too_few_records_giving_a_thing_to_another_decide_nothing() -> None:
    once = OWNED.replace("My store's sales", "Sales").replace("my store myself", "it myself")
    assert unowned("How is Jon's store doing?", once) is None, "said twice: not enough"
    assert unheard("What did Jon find in Barcelona?", "no records") == ""


def test_a_sentence_without_its_i_speaks_of_its_speaker() -> None:
    """Chat leaves "I" out ("Got the tattoo years ago"), and a message speaking of its speaker
    speaks of them in its sentences that name no one ("It's part-time, in fashion")."""
    shown = (
        "[turn 7, 1 Mar 2023] user: [1:00 pm on 1 March, 2023] Gina: Thanks! Got the tattoo "
        "years ago, it stands for freedom.\n"
        "[turn 8, 1 Mar 2023] user: [1:01 pm on 1 March, 2023] Jon: Nice, Gina.\n"
        "[turn 9, 1 Mar 2023] user: [1:02 pm on 1 March, 2023] Gina: I'm nervous. It's a "
        "part-time position in the fashion department.\n"
    )
    tattoo = misattributed("What does Jon's tattoo stand for?", "Freedom, it stands for.", shown)
    assert tattoo is not None and tattoo.who == "Gina"
    department = misattributed("Where is Jon's position?", "Fashion department.", shown)
    assert department is not None and department.who == "Gina"
    assert misattributed("Where is Gina's position?", "Fashion department.", shown) is None


def test_a_record_told_is_no_question_about_its_speaker() -> None:
    """Told "[date] Jon: Your store looks amazing." the kernel replied "Noted.", and that was
    taken for an answer about Jon made of what was said of Gina."""
    told = "[2:33 pm on 29 January, 2023] Jon: Your store looks amazing."
    assert misattributed(told, "Noted.", f"{OWNED}\n{told}") is None
    assert false_premise(told, OWNED) == ""


@pytest.mark.parametrize(
    ("question", "fact", "bare"),
    [
        ("When did Jon lose his job?", "On 19 January 2023.", "19 January 2023."),
        ("When did Jon go to the gym?", "On 4 February 2023 at 10:43 am.", "4 February 2023."),
        ("When was Gina recognized?", "In April 2023.", "April 2023."),
        ("In which month did Gina launch it?", "On January 29, 2023.", "January 29, 2023."),
        # more than a date, or not asked when: as it is
        ("When did Jon open it?", "On 20 June 2023, at the opening.", ""),
        ("When did Jon lose his job?", "Jon lost it on 19 January 2023.", ""),
        ("What did Jon do on 19 January 2023?", "On 19 January 2023.", ""),
    ],
)
def test_a_when_answered_with_a_date_alone_is_the_date(question: str, fact: str, bare: str) -> None:
    assert bare_date(question, fact) == (bare or fact)


def test_a_record_shown_twice_is_one_and_its_time_word_dates_the_reply() -> None:
    """The same message recalled (with what "last week" meant) and in a search's result is one
    record, not two that tie; the reply's own "last week" is what it meant that day."""
    said = (
        "[2:15 pm on 21 June, 2023] Gina: This hoodie is from my own collection. I made a "
        "limited edition line last week."
    )
    shown = (
        f"[turn 299, 21 June 2023, 14:15] user: {said} (said on 21 June 2023: last week = the "
        "week of 12 June 2023)\n"
        f"RESULT: {json.dumps({'hits': [{'text': f'[turn 299] user: {said}'}]})}\n"
        "[turn 300, 21 June 2023, 14:16] user: [2:16 pm on 21 June, 2023] Jon: Nice hoodie!\n"
    )
    question = "When did Gina make a limited edition line of hoodies?"
    wrong = misdated(question, "She made the limited edition line last week.", shown)
    assert wrong is not None and wrong.wrong == "last week"
    assert redated("She made the limited edition line last week.", wrong) == (
        "She made the limited edition line in the week of 12 June 2023."
    )


def test_a_when_answered_with_turn_numbers_is_answered_with_their_days() -> None:
    shown = (
        "[turn 358, 23 July 2023, 18:46] user: [6:46 pm on 23 July, 2023] Gina: I met Shia "
        "Labeouf!\n[turn 359, 23 July 2023, 18:47] user: [6:47 pm on 23 July, 2023] Jon: Wow!\n"
    )
    question = "When did Gina mention Shia Labeouf?"
    assert turns_dated(question, "She did in turn 359 and turn 358.", shown) == (
        "She did on 23 July 2023."
    )
    assert turns_dated(question, "In turn 12.", shown) == "In turn 12.", "no such page shown"
    assert turns_dated("What did Gina say in turn 358?", "In turn 358.", shown) == "In turn 358."
    # a page's header copied whole is its day
    assert turns_dated(question, "She said it on [turn 358, 23 July 2023, 18:46]", shown) == (
        "She said it on 23 July 2023"
    )
    assert turns_dated(question, "She did in turn 358, 23 July 2023, 18:46.", shown) == (
        "She did on 23 July 2023."
    )
    assert turns_dated(question, "In [turn 359, 23 July 2023, 18:47].", shown) == (
        "On 23 July 2023."
    )
