"""Words of a text for lexical ranking: its stemmed content words and Okapi BM25 over them.
Shared by the kernel's example bank and memory's recall search (words beside meanings)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

RRF_K = 60
"""Reciprocal rank fusion's constant (Cormack et al.): a hit scores 1/(RRF_K + rank) per list."""

# Words that carry no intent; kept short, BM25's idf discounts the rest.
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an the to of in on at for and or is are be it its this that these those my me i you "
        "your can could would please with into from by as do does did what which",
    )
)
_WORD = re.compile(r"[a-z0-9]+")
SENTENCE = re.compile(r"[^.!?]+[.!?]*")
"""A sentence of a text, up to and with its closing marks."""


def stem(word: str) -> str:
    """A crude suffix strip so "photos"/"photo" and "mentions"/"mention" meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The stemmed content words of a text, for the lexical ranking."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def bm25(query: Sequence[str], docs: Sequence[Sequence[str]]) -> list[float]:
    """Okapi BM25 (k1=1.2, b=0.75) of a query's words against each doc's words."""
    if not docs:
        return []
    n = len(docs)
    avg = sum(len(d) for d in docs) / n or 1.0
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(set(doc))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if term not in tf:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            f = tf[term]
            score += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * len(doc) / avg))
        scores.append(score)
    return scores
