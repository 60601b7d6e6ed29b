"""What a recorded conversation says, and of whom: checks that an answer from memory about one
speaker was said by or of that speaker (`misattributed`) and gives the date the records give
(`misdated`). The records are the "[date] Name: text" lines the pages shown to the model hold;
each check is a pure function of text."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass

from llmos.kernel.checks import says_not_known
from llmos.kernel.prompt import PAGE_SAID_ON
from llmos.memory.when import MONTHS, RELATIVE, WEEKDAYS, resolved
from llmos.text import SENTENCE, stem

_SAID_LINE = re.compile(
    r"\[([^\]\n]{4,40})\] ([A-Z][\w'.-]{1,30}(?: [A-Z][\w'.-]{1,30})?): "
    r'(.+?)(?=\\n|\\?"[,}\]]|\n|$)'
)
"""A recorded message in a page or result: "[1:56 pm on 8 May, 2023] Gina: I love ..." (its
text up to the end of its line, also inside a JSON string)."""

_ANSWER_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_NOT_ANSWER = frozenset(
    re.findall(
        r"\S+",
        "the and for are was were has have had his her hers him she he they them their theirs "
        "this that with from into about what which who when where why how does did done not "
        "yes very really also just like likes liked love loves loved said says say told tell "
        "would could should will can may might been being its it's one "
        "day days week weeks month months year years ago last next today yesterday tomorrow "
        "january february march april june july august september october november december "
        "monday tuesday wednesday thursday friday saturday sunday morning evening night "
        "two three four five six seven eight nine ten twelve twenty hundred first second "
        "herself himself themselves myself yourself through because there here some lot "
        "more most much get gets got getting going gonna thing things",
    )
)
"""Words that carry no answer of anyone's own: filler, and the words of dates and numbers
(which a page's header gives every message alike)."""
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|our|us)\b", re.I)
_SECOND_PERSON = re.compile(r"\b(?:you|you're|you've|you'd|you'll|your|yours|yourself)\b", re.I)


@dataclass(frozen=True)
class Said:
    """One recorded message: when (as its header says), who, what."""

    when: str
    who: str
    text: str


@dataclass(frozen=True)
class Misattributed:
    """A reply about `asked` made of what `who` said of themself (`said`)."""

    asked: str
    who: str
    said: Said


def said_by(text: str) -> list[Said]:
    """The recorded messages `text` holds, in order."""
    return [Said(m.group(1), m.group(2), m.group(3)) for m in _SAID_LINE.finditer(text)]


def _answer_words(text: str, leave_out: set[str]) -> set[str]:
    """The words of `text` that carry an answer: not the question's own words, not filler."""
    found = {w.removesuffix("'s") for w in _ANSWER_WORD.findall(text.lower())}
    return found - _NOT_ANSWER - leave_out


_ELIDED_I = re.compile(
    r"^\W*(?:just |also |finally |recently |still )?(?:got|took|made|went|had|did|saw|found|"
    r"bought|won|lost|gonna|been|[a-z]{3,}ed)\b",
    re.IGNORECASE,
)
"""A sentence that opens on a past verb, its "I" left out as people do when they chat ("Got
the tattoo a few years ago", "Gonna be a big change"): it speaks of its speaker."""


def _persons(sentence: str) -> tuple[bool, bool]:
    """Whether a sentence speaks in the first person (said or left out) and in the second."""
    first = bool(_FIRST_PERSON.search(sentence) or _ELIDED_I.match(sentence))
    return first, bool(_SECOND_PERSON.search(sentence))


def _about(message: Said, sentence: str, speakers: set[str]) -> set[str]:
    """Whom a sentence of a message speaks of: its speaker ("I made hoodies"), the one it is
    said to ("Gina! You found the perfect spot": the person the message names, or the other
    one of two), or everyone it may be when it cannot be told (both persons, or none: "The
    store's doing great!"). A sentence that names no one, in a message that speaks only of its
    speaker, speaks of the speaker too ("I'm excited. It's part-time, in the fashion
    department")."""
    first, second = _persons(sentence)
    if not first and not second:
        said = [_persons(s) for s in SENTENCE.findall(message.text)]
        first = any(f for f, _ in said) and not any(y for _, y in said)
    if not first and not second:
        return set(speakers)
    if not second:
        return {message.who}
    named = {s for s in speakers - {message.who} if re.search(rf"\b{re.escape(s)}\b", message.text)}
    others = named or (speakers - {message.who} if len(speakers) == 2 else set())
    if first or len(others) != 1:
        return {message.who, *others} if others else set(speakers)
    return others


def _one_asked(question: str, messages: list[Said]) -> tuple[str, set[str]] | None:
    """The one speaker of two or more that `question` names, and all the speakers; None for a
    record told ("[date] Jon: Your store looks amazing." names Jon and asks nothing)."""
    if _SAID_LINE.search(question):
        return None
    speakers = {m.who for m in messages}
    named = [s for s in speakers if re.search(rf"\b{re.escape(s)}\b", question)]
    return (named[0], speakers) if len(speakers) >= 2 and len(named) == 1 else None


MISATTRIBUTED_WORDS = 3
"""How many of the words a reply claims (the question's and its own) a sentence about someone
else must hold, more than any about the one asked about. On LoCoMo's conv-30, with the pages
found for each question shown, the gold answers: 0 of 81 answerable flagged, 11 of 24
adversarial caught (with the reply's own words alone and 2 needed: 0 and 7)."""


def misattributed(question: str, reply: str, shown: str) -> Misattributed | None:
    """The message a reply about one speaker of a recorded conversation took from another
    speaker, speaking of themself: asked "What is Jon's favourite painting style?", the 1.5B
    model answered with Gina's "I love contemporary painting". What the reply claims (the
    question's words and the ones it adds) is looked for sentence by sentence; the reply is
    misattributed when a sentence about someone else holds MISATTRIBUTED_WORDS of them, more
    than any about the one asked about (a sentence that speaks of no one counts for
    everyone). None when the question names no single speaker `shown` records, the reply
    says it does not know or adds no word (a date from a page's header decides nothing)."""
    messages = said_by(shown)
    one = _one_asked(question, messages)
    if one is None or says_not_known(reply):
        return None
    asked, speakers = one
    names = {s.lower() for s in speakers}
    added = _answer_words(reply, {*_answer_words(question, set()), *names})
    if not added:
        return None
    # What the reply claims is the question's words and its own: with a short answer
    # ("Hoodies"), the question's words are what find the sentence it came from.
    claimed = added | _answer_words(question, names)
    theirs = 0
    best: tuple[int, Said | None] = (0, None)
    for message in messages:
        for sentence in SENTENCE.findall(message.text):
            mine = _answer_words(sentence, set())
            hits = len(claimed & mine)
            if not hits:
                continue
            about = _about(message, sentence, speakers)
            if asked in about:
                theirs = max(theirs, hits)
            elif hits > best[0]:
                best = (hits, message)
    found = best[1]
    return (
        Misattributed(asked, found.who, found)
        if found and best[0] > theirs and best[0] >= MISATTRIBUTED_WORDS
        else None
    )


_WORD = re.compile(r"[\w'-]+")
_NAME = re.compile(r"(?<=[\w,;:\"] )[A-Z][\w'-]+")
"""A capitalized word inside a question (not its first): a name ("Barcelona", "HR")."""


def unheard(question: str, shown: str) -> str:
    """The name a question about one speaker of a recorded conversation asks about that no
    record shown holds ("What did Jon take a trip to Barcelona for?", when the trip was to
    Rome), or "". The records shown are the pages found by meaning and by words, and a word
    search ranks a page that holds a rare name first, so a name none of them holds was not
    said."""
    messages = said_by(shown)
    found = _one_asked(question, messages)
    if found is None:
        return ""
    said = {w.removesuffix("'s") for m in messages for w in _WORD.findall(m.text.lower())}
    known = {s.lower() for s in found[1]} | set(MONTHS) | set(WEEKDAYS) | {"i"}
    for name in _NAME.findall(question):
        word = name.lower().removesuffix("'s")
        if word not in known and word not in said:
            return str(name).removesuffix("'s")
    return ""


@dataclass(frozen=True)
class Unowned:
    """A question about `asked`'s `thing` ("clothing store") where the records give it (or
    one of its words) only to `owner`."""

    asked: str
    thing: str
    owner: str


OWNED_AT_LEAST = 3
"""How many times the records must give a thing to another (and never to the one asked about)
before a question that gives it to the one asked about is taken to be wrong. On conv-30's whole
conversation with 2 (where "style" is said to be Gina's twice), "What is Jon's favorite style
of dance?" was flagged; with 3, no answerable question but one whose own premise is wrong
("When did Jon visit networking events for his store?": the store is Gina's)."""

_STOPS = frozenset(
    [
        "of",
        "to",
        "for",
        "in",
        "on",
        "at",
        "with",
        "and",
        "or",
        "is",
        "was",
        "are",
        "be",
        "been",
        "a",
        "an",
        "the",
        "as",
        "by",
        "from",
    ]
)


def _possessed(question: str, asked: str) -> list[list[str]]:
    """What a question says `asked` has, each as its words: "Jon's store", "his clothing
    store" (up to three words, to the first small word)."""
    things: list[list[str]] = []
    mark = rf"(?:\b{re.escape(asked)}'s|\b(?:his|her|their))\s+([\w' -]+)"
    for found in re.finditer(mark, question):
        words: list[str] = []
        for word in _WORD.findall(found.group(1))[:3]:
            if word.lower() in _STOPS:
                break
            words.append(word.lower())
        if words:
            things.append(words)
    return things


def _owners(messages: list[Said], thing: str, speakers: set[str]) -> Counter[str]:
    """How often the records give `thing` to each speaker: "my store" to its speaker, "your
    store" to the other of two, "Gina's store" to Gina (a word or two may come between)."""
    owners: Counter[str] = Counter()
    between = r"(?:(?![\w-]+'s\b)[\w'-]+\s+){0,2}?"
    mine = re.compile(rf"\b(my|our|your)\s+{between}{re.escape(thing)}s?\b", re.IGNORECASE)
    for message in messages:
        others = speakers - {message.who}
        for found in mine.finditer(message.text):
            if found.group(1).lower() != "your":
                owners[message.who] += 1
            elif len(others) == 1:
                owners[next(iter(others))] += 1
        for who in speakers:
            owners[who] += len(
                re.findall(rf"\b{who}'s\s+{between}{re.escape(thing)}s?\b", message.text)
            )
    return owners


def unowned(question: str, shown: str) -> Unowned | None:
    """The thing a question about one speaker gives them that the records give only to
    another, at least OWNED_AT_LEAST times: asked "How is Jon's store doing?" where Gina speaks
    of "my store" and Jon of "your store", and never of his. None when nothing the question
    gives is owned in the records, or the one asked about owns it too."""
    messages = said_by(shown)
    found = _one_asked(question, messages)
    if found is None:
        return None
    asked, speakers = found
    for thing in _possessed(question, asked):
        # the last word the records give to another names it ("clothing store", not "store
        # doing" of "How is Jon's store doing?")
        for end in range(len(thing), 0, -1):
            owners = _owners(messages, thing[end - 1], speakers)
            if owners[asked] == 0 and owners:
                owner, times = owners.most_common(1)[0]
                if times >= OWNED_AT_LEAST:
                    return Unowned(asked, " ".join(thing[:end]), owner)
    return None


def false_premise(question: str, shown: str) -> str:
    """What to answer a question about one speaker of a recorded conversation that rests on
    what the records do not say: a name none of them holds (`unheard`), or a thing they give
    only to another (`unowned`); "" when neither. Any answer to such a question is made up."""
    name = unheard(question, shown)
    if name:
        return f"I was not told of {name}."
    wrong = unowned(question, shown)
    if wrong:
        return f"I was not told of {wrong.asked}'s {wrong.thing}, only of {wrong.owner}'s."
    return ""


_MONTH_NAMES = MONTHS
_MONTHS_RE = "|".join(_MONTH_NAMES)
_DATE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m1>{_MONTHS_RE}),?\s+"
    rf"(?P<y1>(?:19|20)\d\d)|(?P<m2>{_MONTHS_RE})\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?,?\s+"
    rf"(?P<y2>(?:19|20)\d\d)|(?P<m3>{_MONTHS_RE}),?\s+(?P<y3>(?:19|20)\d\d))\b"
    r"(?P<time>,?\s*(?:at\s+)?\d{1,2}:\d\d(?:\s*[ap]\.?m\.?)?)?",
    re.IGNORECASE,
)
"""A date in a reply or a record: "19 January 2023", "January 19th, 2023", "May 2023", with a
time of day after it ("at 4:04 pm", ", 14:32") taken as part of it."""
_WHEN_QUESTION = re.compile(
    r"^\s*(?:when\b|(?:on |in )?(?:what|which) (?:date|day|month|year|week)\b)", re.IGNORECASE
)
_RESOLVED = re.compile(re.escape(PAGE_SAID_ON) + r"[^:\n]{4,40}: ([^)\n]+)\)")
"""The line a page gives its relative time words: "(said on 20 January 2023: yesterday = 19
January 2023)"."""

Day = tuple[int, int, int]
"""A date as (year, month, day); day 0 when only the month is known."""


def _day(found: re.Match[str]) -> Day:
    """The date a `_DATE` match names."""
    for n in "123":
        if found[f"m{n}"]:
            month = _MONTH_NAMES.index(found[f"m{n}"].lower()) + 1
            day = found[f"d{n}"] if n != "3" else None
            return int(found[f"y{n}"]), month, int(day) if day else 0
    raise ValueError(found.group(0))


def _same(a: Day, b: Day) -> bool:
    """Whether two dates agree as far as both are known (a month holds its days)."""
    return a[:2] == b[:2] and (not a[2] or not b[2] or a[2] == b[2])


def _written(day: Day, text: str) -> str:
    """A date as a reply writes it: the words of the record's own value ("the week of 6 March
    2023"), else "19 January 2023" or "May 2023"."""
    month = _MONTH_NAMES[day[1] - 1].capitalize()
    plain = f"{day[2]} {month} {day[0]}" if day[2] else f"{month} {day[0]}"
    return text.strip() if text.strip().lower().startswith("the week") else plain


@dataclass(frozen=True)
class Misdated:
    """A reply's date that is not the one the record holding its words gives: `wrong` (the
    date in the reply, or the time word it gave instead) should be `right`, after `said`."""

    wrong: str
    right: str
    said: Said


def _meant(shown: str, start: int, end: int) -> list[tuple[Day, str]]:
    """What the relative time words of the record between `start` and `end` of `shown` meant,
    each date with its written value."""
    meant: list[tuple[Day, str]] = []
    line = _RESOLVED.search(shown, start, end)
    if line:
        for part in line.group(1).split(";"):
            value = part.split("=", 1)[-1]
            found = _DATE.search(value)
            if found:
                meant.append((_day(found), value))
    return meant


STEM_CHARS = 5
"""Two words meet on their first five letters once stemmed ("mentorship", "mentored";
"hosting", "host")."""


def _stems(words: set[str]) -> set[str]:
    """`words` cut to STEM_CHARS letters, so a question's and a record's forms of a word meet."""
    return {stem(w)[:STEM_CHARS] for w in words}


_CLAUSE = re.compile(r"[.!?;]+\s*|\s+(?:so|but|and|then|while|because)\s+", re.IGNORECASE)


def _clause_dates(record: re.Match[str], words: set[str]) -> list[tuple[Day, str]]:
    """What the relative time words of the clause of `record` (a `_SAID_LINE` match) holding
    most of `words` (`_stems`) meant on the day its header gives; none when no clause holds
    one of them or its header has no date. A message may tell of two things ("Lost my job
    yesterday, so I'm starting a business"): a time word dates only its own."""
    header = _DATE.search(record.group(1))
    if header is None:
        return []
    clauses = [c for c in _CLAUSE.split(record.group(3)) if c.strip()]
    held = [len(words & _stems(_answer_words(c, set()))) for c in clauses]
    if not held or max(held) == 0:
        return []
    return _resolved_on(header, clauses[held.index(max(held))])


def _resolved_on(header: re.Match[str], text: str) -> list[tuple[Day, str]]:
    """What the relative time words of `text` meant on the day `header` (a `_DATE` match)
    names, each date with its written value."""
    day = _day(header)
    on = dt.date(day[0], day[1], day[2] or 1)
    values = [v.split("=", 1)[-1].strip() for v in resolved(text, on)]
    return [(_day(f), v) for v in values if (f := _DATE.search(v))]


def misdated(question: str, reply: str, shown: str) -> Misdated | None:
    """The date of a reply to a "when" question about a recorded conversation that is not the
    date the record holding the reply's words gives: what its relative time words meant
    ("Lost my job yesterday", said on 20 January, means 19 January) or the day it was said.
    The 1.5B model, shown the right page, gave another page's date ("3 April 2023") in most
    such replies; a reply giving no date at all (`wrong` empty) gets the record's too. None
    when the question does not ask when, the reply says it does not know, no one record holds
    the most of its words (two or more, names aside), or its date is one the record gives."""
    if not _WHEN_QUESTION.search(question) or says_not_known(reply):
        return None
    dates = list(_DATE.finditer(reply))
    # A reply giving a time word instead ("She made it last week.") is dated as well, by
    # what the word meant in the record it came from.
    relative = None if dates else RELATIVE.search(reply)
    # One giving neither ("Gina teamed up with a local artist.") is dated by the record too.
    # One record shown twice (a recalled page with what its time words meant, and in a
    # search's result) is one record, not two that tie.
    once: dict[tuple[str, ...], re.Match[str]] = {}
    for found in _SAID_LINE.finditer(shown):
        said = _RESOLVED.sub("", found.group(3)).strip()
        once.setdefault((found.group(1), found.group(2), said), found)
    matches = list(once.values())
    if not matches:
        return None
    names = {m.group(2).lower() for m in matches}
    words = _stems(_answer_words(f"{question} {_DATE.sub(' ', reply)}", names))
    held = [words & _stems(_answer_words(m.group(3), names)) for m in matches]
    # A rare word ("fair") says more than a common one ("studio"): each counts by how few
    # records hold it.
    counts = Counter(w for found in held for w in found)
    scored = sorted(
        (
            (sum(math.log(1 + len(matches) / counts[w]) for w in found), i)
            for i, found in enumerate(held)
            if len(found) >= 2
        ),
        reverse=True,
    )
    if not scored or (len(scored) > 1 and math.isclose(scored[1][0], scored[0][0])):
        return None
    best = scored[0][1]

    def dates_of(i: int) -> tuple[list[tuple[Day, str]], list[tuple[Day, str]]]:
        """What record `i`'s relative time words meant, and every date it gives."""
        match = matches[i]
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(shown)
        meant = _meant(shown, match.end(), min(stop, match.end() + 600))
        header = _DATE.search(match.group(1))
        if not meant and header:  # a turn still in the context: its time words read here
            meant = _resolved_on(header, match.group(3))
        return meant, [*meant, *([(_day(header), "")] if header else [])]

    # The part of the record that holds the words dates them by its own time word: "Lost my
    # job yesterday" said on 20 January happened on the 19th, whatever day the page shows.
    dated = _clause_dates(matches[best], words)
    if dated:
        if any(_same(_day(d), day) for day, _ in dated for d in dates):
            return None
        # another record stands for the date only when it tells of the same thing
        scored = [(s, i) for s, i in scored if i != best and held[i] >= held[best]]
    # A date that a record holding the reply's words gives stands (a message may name two
    # events, "went to a fair yesterday" and "a competition next month"; two messages may
    # tell of one thing).
    if any(_same(_day(d), day) for _, i in scored for day, _ in dates_of(i)[1] for d in dates):
        return None
    # The day it was said, unless one relative time word says when it happened.
    right = dated
    if not dated:
        meant, known = dates_of(best)
        # a time word is dated by what one of the record meant, never by the day it was said
        right = meant if meant or relative is not None else known
    if len(right) != 1:
        return None
    day, value = right[0]
    match = matches[best]
    wrong = dates[0].group(0) if dates else relative.group(0) if relative else ""
    return Misdated(wrong, _written(day, value), Said(*match.group(1, 2, 3)))


_TURNS_CITED = re.compile(
    r"(?:\b(?:in|on|at|from)\s+)?(?:\[turn\s+(?P<h>\d+),[^\]\n]*\]|\bturns?\s+(?P<t>\d+)"
    rf"(?:,\s*(?:{_DATE.pattern}))?(?:(?:\s*,|\s+and|\s+or)\s+(?:turn\s+)?\d+)*)",
    re.IGNORECASE,
)
"""A reply naming pages by their turn ("in turn 359 and turn 358") or copying a page's header
("on [turn 68, 4 February 2023, 10:43]"): a person never saw them."""


def turns_dated(question: str, reply: str, shown: str) -> str:
    """A reply to a "when" question that names the turn of a page shown ("Gina mentioned it
    in turn 359.") with the day that page was said instead ("... on 23 July 2023."); any
    other reply as it is."""
    if not _WHEN_QUESTION.search(question):
        return reply

    def put(found: re.Match[str]) -> str:
        page = re.search(rf"\[turn {found.group('h') or found.group('t')}, ([^,\]\n]+)", shown)
        if not page or not _DATE.search(page.group(1)):
            return found[0]
        on = "On" if found[0][:1].isupper() else "on"
        return f"{on} {page.group(1).strip()}"

    return _TURNS_CITED.sub(put, reply)


_ON_DATE = re.compile(rf"^\s*(?:on|in)\s+(?P<date>{_DATE.pattern})\s*[.!]?\s*$", re.IGNORECASE)


def bare_date(question: str, fact: str) -> str:
    """The answer to a "when" question that is only a date, as the date: "On 19 January 2023 at
    10:43 am." is "19 January 2023." (the day asked for; a time of day in a record is its
    header's, when it was said). Any other answer as it is."""
    found = _ON_DATE.match(fact) if _WHEN_QUESTION.search(question) else None
    if found is None:
        return fact
    end = found.start("time") if found.group("time") else found.end("date")
    return f"{fact[found.start('date') : end].rstrip(' ,')}."


def redated(reply: str, wrong: Misdated) -> str:
    """`reply` with each date it gives (and a time of day after it) made the record's date
    ("in May 2023", not "on May 2023", when the record gives only the month); or with the time
    word it gave instead made the date ("last week" is "in the week of 12 June 2023"); a reply
    that gave none is the date ("On 8 February 2023.")."""
    month = not wrong.right[0].isdigit()
    if not wrong.wrong:
        return f"{'In' if month else 'On'} {wrong.right}."
    if not _DATE.fullmatch(wrong.wrong):
        said = ("in " if month else "on ") + wrong.right
        return re.sub(rf"\b{re.escape(wrong.wrong)}\b", said, reply, count=1)

    def put(found: re.Match[str]) -> str:
        before = found.group("on") or ""
        return ("in " if month and before else before) + wrong.right

    return re.sub(rf"(?P<on>\b[Oo]n )?(?:{_DATE.pattern})", put, reply, flags=re.IGNORECASE)
