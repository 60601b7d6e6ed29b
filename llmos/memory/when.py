"""Relative time words in a remembered message, resolved against the day it was said: a page
written on 25 May 2023 that says "last Saturday" also says "last Saturday = 20 May 2023", so
a small model asked "when?" weeks later has the date instead of the word (or of today's)."""

from __future__ import annotations

import datetime as dt
import re

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "couple of": 2,
    "few": 3,
}

RELATIVE = re.compile(
    r"\b(?:(?P<day>yesterday|today|tonight|tomorrow)"
    r"|(?P<dir>last|next|this\s+past|this\s+coming)\s+(?P<unit>"
    + "|".join(WEEKDAYS)
    + r"|week(?:end)?|month|year)"
    r"|(?P<n>\d+|" + "|".join(_NUMBER_WORDS) + r")\s+"
    r"(?P<span>days?|weeks?|months?|years?)\s+(?P<way>ago|from now|later))\b",
    re.IGNORECASE,
)


def _month(day: dt.date, months: int) -> dt.date:
    """`day` moved by whole months (the first of that month: "last month" names a month)."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _long(day: dt.date) -> str:
    return f"{day.day} {day:%B %Y}"


def resolve(phrase: re.Match[str], said: dt.date) -> str:
    """What one relative phrase means on the day `said`: a date, a week, a month or a year."""
    if phrase["day"]:
        shift = {"yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1}[phrase["day"].lower()]
        return _long(said + dt.timedelta(days=shift))
    if phrase["unit"]:
        forward = phrase["dir"].lower().split()[-1] in ("next", "coming")
        unit = phrase["unit"].lower()
        if unit in WEEKDAYS:
            target = WEEKDAYS.index(unit)
            if forward:
                days = (target - said.weekday()) % 7 or 7
            else:
                days = -((said.weekday() - target) % 7 or 7)
            return _long(said + dt.timedelta(days=days))
        if unit.startswith("week"):
            monday = (
                said - dt.timedelta(days=said.weekday()) + dt.timedelta(weeks=1 if forward else -1)
            )
            if unit == "weekend":
                return f"the weekend of {_long(monday + dt.timedelta(days=5))}"
            return f"the week of {_long(monday)}"
        if unit == "month":
            return f"{_month(said, 1 if forward else -1):%B %Y}"
        return str(said.year + (1 if forward else -1))
    raw = phrase["n"].lower()
    count = int(raw) if raw.isdigit() else _NUMBER_WORDS[raw]
    sign = -1 if phrase["way"].lower() == "ago" else 1
    span = phrase["span"].lower().rstrip("s")
    if span == "day":
        return _long(said + dt.timedelta(days=sign * count))
    if span == "week":
        return f"about {_long(said + dt.timedelta(weeks=sign * count))}"
    if span == "month":
        return f"{_month(said, sign * count):%B %Y}"
    return str(said.year + sign * count)


def resolved(text: str, said: dt.date) -> list[str]:
    """Each distinct relative phrase of `text` with what it meant on `said`
    ("last Saturday = 20 May 2023")."""
    out: dict[str, str] = {}
    for phrase in RELATIVE.finditer(text):
        words = phrase.group(0)
        out.setdefault(words.lower(), f"{words} = {resolve(phrase, said)}")
    return list(out.values())
