"""Relative time words in a remembered message, resolved against the day it was said."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from llmos.kernel.loop import Turn
from llmos.memory.when import Window, resolved, window
from llmos.pager import Pager, page_text, recall_text
from llmos.syscalls.services import Hit, Record

THURSDAY = dt.date(2023, 5, 25)


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("we went hiking last Saturday", "last Saturday = 20 May 2023"),
        ("I met Ann yesterday", "yesterday = 24 May 2023"),
        ("see you tomorrow", "tomorrow = 26 May 2023"),
        ("next Thursday is the show", "next Thursday = 1 June 2023"),
        ("last Thursday was rainy", "last Thursday = 18 May 2023"),
        ("this past Friday we danced", "this past Friday = 19 May 2023"),
        ("I quit 3 days ago", "3 days ago = 22 May 2023"),
        ("two weeks ago we moved", "two weeks ago = about 11 May 2023"),
        ("we fly next month", "next month = June 2023"),
        ("a month ago I started", "a month ago = April 2023"),
        ("last week was busy", "last week = the week of 15 May 2023"),
        ("next weekend we camp", "next weekend = the weekend of 3 June 2023"),
        ("last year I lost my job", "last year = 2022"),
        ("In January last year", "last year = 2022"),
    ],
)
def test_a_relative_phrase_is_the_date_it_meant_that_day(text: str, meant: str) -> None:
    assert resolved(text, THURSDAY) == [meant]


def test_a_message_without_time_words_resolves_nothing_and_repeats_are_kept_once() -> None:
    assert resolved("I love dancing and my studio", THURSDAY) == []
    assert resolved("Yesterday was great, yesterday!", THURSDAY) == ["Yesterday = 24 May 2023"]
    new_year = dt.date(2024, 1, 3)
    assert resolved("last month", new_year) == ["last month = December 2023"]


def test_a_page_says_what_its_time_words_meant_when_it_was_said() -> None:
    turn = Turn(number=7, started=time.mktime((2023, 5, 25, 10, 2, 0, 0, 0, -1)))
    turn.messages = [
        {"role": "user", "content": "Mara: we went hiking at Lake Bled last Saturday."},
        {"role": "assistant", "content": '{"call": "reply", "text": "Noted."}'},
    ]
    text = page_text(turn)
    assert text.startswith("[turn 7, 25 May 2023, 10:02] user: Mara: we went hiking")
    assert "(said on 25 May 2023: last Saturday = 20 May 2023)" in text
    assert recall_text(turn) == (
        "[turn 7, 25 May 2023, 10:02] user: Mara: we went hiking at Lake Bled last Saturday.\n"
        "(said on 25 May 2023: last Saturday = 20 May 2023)"
    ), "shown again, a talk turn keeps its day and what its time words meant"


def test_a_recalled_page_is_dated_by_when_it_was_said_not_when_it_was_stored() -> None:
    said = time.mktime((2023, 1, 29, 13, 56, 0, 0, 0, -1))
    messages = [
        {"role": "user", "content": "Gina: I opened my online store yesterday!"},
        {"role": "assistant", "content": '{"call": "reply", "text": "Noted."}'},
    ]
    record = Record(
        "p1",
        "recall",
        "page",
        meta={"turn": 3, "said": said, "messages": json.dumps(messages)},
        created=time.time(),
    )
    shown = Pager._recall(Hit(record, 0.9)).text
    assert shown.startswith("[turn 3, 29 January 2023, 13:56] user: Gina: I opened")
    assert "yesterday = 28 January 2023" in shown


@pytest.mark.parametrize(
    ("question", "first", "last"),
    [
        ("What did Gina find on 1 February, 2023?", dt.date(2023, 2, 1), dt.date(2023, 2, 1)),
        ("What was she accepted for on May 23, 2023?", dt.date(2023, 5, 23), dt.date(2023, 5, 23)),
        ("what did we plan in June 2023?", dt.date(2023, 6, 1), dt.date(2023, 6, 30)),
        ("what did I buy in 2022?", dt.date(2022, 1, 1), dt.date(2022, 12, 31)),
        ("what did I say yesterday?", dt.date(2023, 5, 24), dt.date(2023, 5, 24)),
        ("who did I meet last week?", dt.date(2023, 5, 15), dt.date(2023, 5, 21)),
        ("what did I read last month?", dt.date(2023, 4, 1), dt.date(2023, 4, 30)),
    ],
)
def test_a_question_s_time_words_name_its_days(
    question: str, first: dt.date, last: dt.date
) -> None:
    days = window(question, THURSDAY)
    assert days is not None
    assert days.holds(first) and days.holds(last)
    assert not days.holds(first - dt.timedelta(days=1))
    assert not days.holds(last + dt.timedelta(days=1))


def test_a_month_without_a_year_is_that_month_of_any_year() -> None:
    days = window("what did we do in June?", THURSDAY)
    assert days == Window(month=6)
    assert days.holds(dt.date(2021, 6, 30)) and not days.holds(dt.date(2023, 7, 1))


@pytest.mark.parametrize(
    "question", ["may I ask you something?", "what is on 31 February, 2023?", "where is my car?"]
)
def test_no_time_words_no_window(question: str) -> None:
    assert window(question, THURSDAY) is None
