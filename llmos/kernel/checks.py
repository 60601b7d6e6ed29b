"""Checks of a turn's calls and reply against what its results showed, each a pure function of
text: the loop sends a call that fails one back to the model once, with the reason (see
`Kernel._doubt`). Each names the mistake the 1.5B model was seen making."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable

from llmos.kernel.grammar import wanted_name
from llmos.kernel.grounding import mentioned_paths

_SUM = re.compile(r"\s*\d+(?:\.\d+)?(?:\s*\+\s*\d+(?:\.\d+)?){2,}\s*")


def double_counted(expression: str) -> str:
    """ "T = a + b" when a calc adds up plain numbers one of which (T) is the sum of the others:
    a total added to its own parts; else "". Asked for the total on an invoice that showed a
    subtotal, the VAT and the total, the 1.5B model computed 310.00+58.90+368.90."""
    if not _SUM.fullmatch(expression):
        return ""
    terms = [t.strip() for t in expression.split("+")]
    values = [float(t) for t in terms]
    whole = sum(values)
    for i, value in enumerate(values):
        if value > 0 and math.isclose(value, whole - value, rel_tol=1e-9, abs_tol=0.005):
            return f"{terms[i]} = {' + '.join(t for j, t in enumerate(terms) if j != i)}"
    return ""


COUNTED = re.compile(
    r"\b(\d+)\s+(?:[a-z-]+\s+)?(?:items?|rows?|entries|entry|lines?|files?|pages?|slides?|"
    r"sheets?|words?|columns?|records?|people|persons?|names?|tasks?|images?|photos?|"
    r"pictures?|folders?|emails?|messages?|products?)\b",
    re.IGNORECASE,
)
"""A count a reply states: "4 items", "3 python files"."""


def unseen_counts(text: str, seen: str) -> list[str]:
    """The counts `text` states ("4 items") whose number `seen` never shows standing alone (a
    "4" inside "45" or "4.1" does not count): a number the model counted, or guessed. Asked
    what a table with two priced rows held, the 1.5B model replied "4 items"."""
    out = []
    for found in COUNTED.finditer(text):
        number = found.group(1)
        if not re.search(rf"(?<![\d.,]){number}(?![\d]|[.,]\d)", seen):
            out.append(found.group(0))
    return out


READ_WORDS = re.compile(
    r"\b(?:summari[sz]e|summary|gist|says?|said|read|contents?|explain|describe|"
    r"what(?:'s|\s+is|\s+are)\s+(?:in|on))\b",
    re.IGNORECASE,
)
"""Words that ask what a file says, not about the file (its size, its date)."""
ABOUT_THE_FILE = re.compile(
    r"\b(?:size|big|large|long|bytes?|words?|lines?|characters?|chars|changed|modified|"
    r"updated|created|when|date|old|new|format|type|pages?|slides?|sheets?)\b",
    re.IGNORECASE,
)
"""Words that ask about a file itself: its size, its date, its length."""
METADATA = re.compile(
    r"\b\d[\d,.]*\s*(?:bytes?|[KMG]i?B|words?|characters?)\b|"
    r"\blast\s+(?:changed|modified|updated)\b|\bmodified\s+on\b",
    re.IGNORECASE,
)
"""What a reply about a file itself says: "36752 bytes long", "17 words", "last changed"."""


READING_CALLS = frozenset({"fs.read", "fs.search", "image.text"})
"""Calls that show what a file says."""
LOOKING_CALLS = frozenset({*READING_CALLS, "fs.stat", "fs.list", "image.info", "calc"})
"""Calls that change nothing: after any other, a reply may well say what it wrote."""


def about_the_file(request: str, reply: str, calls: Iterable[str] = ()) -> str:
    """What `reply` says about a file itself ("36752 bytes") when `request` asks what a named
    file holds and nothing about its size or date, and the turn's `calls` (their JSON) only
    looked; else "". Asked what the table in a document held, the 1.5B model read it and
    replied with its byte and word counts."""
    if not READ_WORDS.search(request) or ABOUT_THE_FILE.search(request):
        return ""
    if any(wanted_name(text) not in LOOKING_CALLS for text in calls):
        return ""
    if not [p for p in mentioned_paths(request) if "." in p.rsplit("/", 1)[-1]]:
        return ""
    found = METADATA.search(reply)
    return found.group(0) if found else ""


def unread_asked(request: str, calls: Iterable[str], made: Collection[str] = ()) -> str:
    """The first path `request` asks what it says ("summarise report.pdf") that none of the
    turn's `calls` (their JSON, as the model wrote them) read, else "". Paths in `made` are
    the ones it asks to be written ("summarise story.txt into short.txt"), not read. Asked to
    summarise a PDF, the 1.5B model called fs.stat and replied with the file's date."""
    if not READ_WORDS.search(request):
        return ""
    wanted = [p for p in mentioned_paths(request) if "." in p.rsplit("/", 1)[-1] and p not in made]
    if not wanted:
        return ""
    read: set[str] = set()
    for text in calls:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("call") not in READING_CALLS:
            continue
        name = str(data.get("path") or ".").rstrip("/").rsplit("/", 1)[-1].lower()
        if data["call"] == "fs.search" and "." not in name.strip("."):
            return ""  # a folder's search reads every file in it
        read.add(name)
    for path in wanted:
        if path.rsplit("/", 1)[-1].lower() not in read:
            return path
    return ""


NOT_KNOWN = re.compile(
    r"\b(?:(?:do|does|did)\s*n[o']t\s+(?:know|have|say|mention|remember|recall)|"
    r"not\s+(?:known|sure|mentioned|stated|said|told|specified|in\s+(?:my\s+)?memory)|"
    r"no\s+(?:record|information|mention|memory|memories|details?|indication)|"
    r"(?:can\s*not|can't|couldn't|could not|unable to)\s+(?:find|tell|say|recall|determine)|"
    r"never\s+(?:mentioned|said|told)|unknown|nothing\s+(?:about|on|in))",
    re.IGNORECASE,
)
"""Ways a reply says it does not know (or was not told) what was asked."""


def says_not_known(reply: str) -> bool:
    """Whether a reply says it does not know, or was not told, the answer."""
    return bool(NOT_KNOWN.search(reply))


def unsearched_memory(reply: str, earlier_calls: Iterable[str], turn_calls: Iterable[str]) -> bool:
    """True for a reply saying it does not know, in a conversation where an earlier turn kept
    facts (mem.store) and no call of this turn searched memory (mem.search). Told "my gym locker
    is number 88" and then asked "what's my locker number?", the 1.5B model now and then
    replied "I don't have any information about your locker number" without looking."""
    if not says_not_known(reply):
        return False
    kept = any(wanted_name(call) == "mem.store" for call in earlier_calls)
    searched = any(wanted_name(call) == "mem.search" for call in turn_calls)
    return kept and not searched
