"""Relative time words in a remembered message, resolved against the day it was said: a page
written on 25 May 2023 that says "last Saturday" also says "last Saturday = 20 May 2023", so
a small model asked "when?" weeks later has the date instead of the word (or of today's)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

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


MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_MONTH = r"(?P<month>" + "|".join(MONTHS) + r"|" + "|".join(m[:3] for m in MONTHS) + r")\.?"
_ORDINAL = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
ASKED = (
    re.compile(rf"\b{_ORDINAL}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+{_ORDINAL},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b(?:in|during|of)\s+{_MONTH}(?!\s*\d)", re.IGNORECASE),
    re.compile(rf"\b(?:in|during|of)\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(
        r"\b(?:(?P<rel>yesterday|today)|(?P<dir>last|this)\s+(?P<unit>week|month|year))\b",
        re.IGNORECASE,
    ),
)
"""Time words in a question, most precise first: a date, a month of a year, a month, a year,
and a few relative to the day asked."""


@dataclass(frozen=True)
class Window:
    """The days a question's time words point at: from `start` up to (not including) `end`,
    or, for a month named without a year, that month of any year."""

    start: dt.date | None = None
    end: dt.date | None = None
    month: int | None = None

    def holds(self, day: dt.date) -> bool:
        """Whether `day` falls in the window."""
        if self.month is not None:
            return day.month == self.month
        return self.start is not None and self.end is not None and self.start <= day < self.end


def _month_number(name: str) -> int:
    return [m[:3] for m in MONTHS].index(name.lower()[:3]) + 1


def window(question: str, today: dt.date) -> Window | None:
    """The days the time words in `question` point at ("on 1 February, 2023", "in June 2023",
    "in June", "in 2022", "last month"), or None when it has none (or an impossible date)."""
    for kind, pattern in enumerate(ASKED):
        found = pattern.search(question)
        if found is None:
            continue
        try:
            return _window(kind, found, today)
        except ValueError:  # "31 February, 2023"
            return None
    return None


def _window(kind: int, found: re.Match[str], today: dt.date) -> Window:
    if kind <= 1:
        day = dt.date(int(found["year"]), _month_number(found["month"]), int(found["day"]))
        return Window(day, day + dt.timedelta(days=1))
    if kind == 2:
        first = dt.date(int(found["year"]), _month_number(found["month"]), 1)
        return Window(first, _month(first, 1))
    if kind == 3:
        return Window(month=_month_number(found["month"]))
    if kind == 4:
        year = int(found["year"])
        return Window(dt.date(year, 1, 1), dt.date(year + 1, 1, 1))
    if found["rel"]:
        day = today - dt.timedelta(days=1 if found["rel"].lower() == "yesterday" else 0)
        return Window(day, day + dt.timedelta(days=1))
    back = found["dir"].lower() == "last"
    unit = found["unit"].lower()
    if unit == "week":
        monday = today - dt.timedelta(days=today.weekday(), weeks=1 if back else 0)
        return Window(monday, monday + dt.timedelta(weeks=1))
    if unit == "month":
        first = _month(today, -1 if back else 0)
        return Window(first, _month(first, 1))
    year = today.year - (1 if back else 0)
    return Window(dt.date(year, 1, 1), dt.date(year + 1, 1, 1))
