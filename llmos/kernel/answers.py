"""The shape of an answer from memory: the fact asked for, not the question said back. The
MEMORY block asks for just the fact; the 1.5B model still opened most answers by restating
the question ("Jon lost his job as a banker on 19 January 2023.") and went on with sentences
no page held. The system keeps the answer's first sentence, less the restatement."""

from __future__ import annotations

import re

from llmos.text import STOPWORDS, stem

GLUE = STOPWORDS | set(
    re.findall(
        r"\w+",
        "his her hers their theirs he she they him them was were has have had will am been "
        "both also currently really just s",
    )
)
"""Words a restatement holds besides the question's own: articles, pronouns, auxiliaries."""

KEPT = frozenset(re.findall(r"\w+", "a an the on in at by to for with from of into about as"))
"""Glue that belongs to the answer when it comes right before it ("on 19 January", "a dance
studio"); other glue before the answer ("is", "his") is dropped with the restatement."""

_TOKEN = re.compile(r"\S+")
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s+(?=[A-Z\"'])|$)", re.DOTALL)


IRREGULAR = dict(
    pair.split("=")
    for pair in re.findall(
        r"\S+",
        "said=say told=tell made=make got=get gotten=get went=go gone=go lost=lose found=find "
        "took=take taken=take gave=give given=give felt=feel thought=think bought=buy "
        "began=begin begun=begin won=win met=meet saw=see seen=see came=come left=leave "
        "kept=keep did=do done=do wrote=write written=write ran=run knew=know known=know "
        "taught=teach brought=bring built=build sold=sell held=hold",
    )
)
"""Past forms of common verbs and their present, so "Jon said" restates "What did Jon say"."""


def _key(token: str) -> str:
    """A token as a word to compare: lower case, no punctuation, no "'s", a verb's present."""
    word = token.lower().strip(".,;:!?\"'()[]").removesuffix("'s").removesuffix("’s")
    return stem(IRREGULAR.get(word, word))


def first_sentence(text: str) -> str:
    """The first sentence of `text` (all of it when it has one)."""
    found = _FIRST_SENTENCE.match(text.strip())
    return found.group(1) if found else text.strip()


def _words(text: str) -> set[str]:
    """The words of `text` as `_key` compares them, glue aside."""
    return {_key(t) for t in _TOKEN.findall(text)} - GLUE - {""}


def _asked(key: str, asked: set[str]) -> bool:
    """Whether a word is one of the question's, its stem or a longer form ("promoted" for
    "promote", "receiv" for "receive")."""
    return key in asked or (
        len(key) >= 4 and any(a.startswith(key) or key.startswith(a) for a in asked if len(a) >= 4)
    )


def without_restatement(question: str, reply: str) -> str:
    """`reply` less a head that only says the question back: the words up to the first one
    the question does not hold (glue words aside), the glue before it kept ("Jon is working on
    opening a dance studio." asked "What is Jon working on opening?" is "A dance studio.";
    other glue before the answer goes: "Her favourite is contemporary." is "Contemporary.").
    `reply` itself when its head holds fewer than two of the question's words or nothing
    would be left."""
    asked = _words(question)
    tokens = list(_TOKEN.finditer(reply))
    content = 0
    last = -1  # the last question word of the head
    for i, token in enumerate(tokens):
        key = _key(token.group(0))
        if key not in GLUE and _asked(key, asked):
            content += 1
            last = i
        elif key not in GLUE:
            break
        # A comma ends the head, unless the question's words go on after it ("1 February,
        # 2023, Jon found"): what follows a comma the question does not hold is the answer's.
        after = _key(tokens[i + 1].group(0)) if i + 1 < len(tokens) else ""
        if token.group(0)[-1] in ",;:" and (after in GLUE or not _asked(after, asked)):
            break
    start = last + 1
    while start < len(tokens) and _key(tokens[start].group(0)) in GLUE - KEPT:
        start += 1
    if content < 2 or start >= len(tokens):
        return reply
    rest = reply[tokens[start].start() :]
    if not any(c.isalnum() for c in rest):
        return reply
    return rest[0].upper() + rest[1:]


TAIL_OPENS = frozenset(re.findall(r"\w+", "about in at from for of to with on into by"))
"""Words that open a phrase an answer may end by saying the question back ("Excited about
the opening night of his dance studio." asked "How does Jon feel about the opening night of
his dance studio?")."""


TAIL_AFTER_AT_MOST = 3
"""The most words (glue aside) an answer may hold before a tail said back is cut: after a
longer one the question's words are its own ("Because she wanted to sell unique pieces of
clothing." asked why Gina started her clothing store)."""


def without_tail(question: str, reply: str) -> str:
    """`reply` less a last phrase that only says the question back: from the first word in
    TAIL_OPENS after which every word is the question's or glue, when what comes before it
    holds a word the question does not and at most TAIL_AFTER_AT_MOST words ("Trophy from a
    dance contest." asked "What did Gina receive from a dance contest?" is "Trophy.");
    `reply` itself otherwise."""
    asked = _words(question)
    tokens = list(_TOKEN.finditer(reply))
    keys = [_key(t.group(0)) for t in tokens]
    for i in range(1, len(tokens)):
        if keys[i] not in TAIL_OPENS or tokens[i - 1].group(0)[-1] in ",;:":
            continue
        tail = [k for k in keys[i:] if k not in GLUE and k]
        head = [k for k in keys[:i] if k not in GLUE and k]
        if tail and all(_asked(k, asked) for k in tail):
            if any(not _asked(k, asked) for k in head) and len(head) <= TAIL_AFTER_AT_MOST:
                return reply[: tokens[i - 1].end()].rstrip(",;:") + "."
            return reply
    return reply


LEAD_IN = re.compile(
    r"^\s*(?:(?:based on|according to|from) [^,.]{1,60},\s*|"
    r"(?:[A-Z]\w+ )?(?:mentioned|mentions|said|says|stated|states|told \w+|tells \w+) that\s+)",
    re.IGNORECASE,
)
"""Where an answer says it comes from ("Based on Gina's response,", "Jon mentioned that"):
not the fact asked for."""


_WH = re.compile(r"^\s*(?:what|which|who|whom|whose|where|when|why|how)\b", re.IGNORECASE)


def says_nothing(question: str, reply: str) -> bool:
    """Whether `reply` to a question asking what, who, when, ... holds no word the question
    does not (glue aside): the question said back as an answer ("Jon took a temporary job to
    cover expenses." asked "What temporary job did Jon take to cover expenses?"), which tells
    nothing. A yes-or-no question said back is an answer ("Jon likes it." is yes)."""
    return bool(_WH.search(question)) and bool(_words(reply)) and _says_back(question, reply)


def _says_back(question: str, text: str) -> bool:
    """Whether every word of `text` (glue aside) is one of the question's; true of none."""
    asked = _words(question)
    return all(_asked(w, asked) for w in _words(text))


_YES_NO_QUESTION = re.compile(
    r"^\s*(?:do|does|did|is|are|was|were|has|have|had|can|could|will|would|should)\b",
    re.IGNORECASE,
)
_YES_NO = re.compile(r"^\s*(yes|no)\b[,.;:!]?\s*", re.IGNORECASE)


def yes_or_no(question: str, reply: str) -> str:
    """`reply` to a yes-or-no question as "Yes." or "No." when what follows only says the
    question back ("Yes, Jon and Gina both participated in dance competitions." asked "Did
    Jon and Gina both participate in dance competitions?"); `reply` itself when it adds
    something ("No, it closed in May.") or opens with neither."""
    found = _YES_NO.match(reply)
    if not found or not _YES_NO_QUESTION.match(question):
        return reply
    if not _says_back(question, reply[found.end() :]):
        return reply
    return found.group(1).capitalize() + "."


def sentences(text: str) -> list[str]:
    """The sentences of `text` as `first_sentence` cuts them, in order."""
    out: list[str] = []
    rest = text.strip()
    while rest:
        sentence = first_sentence(rest)
        out.append(sentence)
        rest = rest[len(sentence) :].strip()
    return out


def concise(question: str, reply: str) -> str:
    """An answer from memory as the fact asked for: the reply's first sentence that says
    something (`says_nothing`: "Jon went to a fair to get more exposure. It was on 24 April
    2023." asked when he went is its second), without where it says it comes from and without
    its restatement of the question, at its head or its tail (a yes or no alone when the rest
    only says the question back). The first sentence when none says anything."""
    facts = [_concise_one(question, s) for s in sentences(reply)] or [reply]
    return next((f for f in facts if not says_nothing(question, f)), facts[0])


def _concise_one(question: str, sentence: str) -> str:
    sentence = yes_or_no(question, sentence)
    rest = LEAD_IN.sub("", sentence, count=1)
    if rest != sentence and any(c.isalnum() for c in rest):
        sentence = rest[0].upper() + rest[1:]
    return without_tail(question, without_restatement(question, sentence))
