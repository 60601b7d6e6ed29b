"""What a turn may cause, fixed from the person's words alone before anything is read.

CaMeL's principle: the plan comes from trusted input and data only fills it. A question about
a file may read; "add X to my list" may also change files; "delete the old logs" may delete;
"my cat is called Miso" may store a memory. Whatever a file, a tool's output or a recalled
memory says later in the turn, a call with an effect outside this set is asked about on a
terminal and refused without one (the dispatcher enforces `Process.allows`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from llmos.kernel.examples import is_question
from llmos.kernel.grounding import mentioned_paths

DELETE_WORDS = re.compile(
    r"\b(?:delet|remov|eras|trash|chuck|discard|wip|clean|tid(?:y|ie)|purg|get rid|clear|"
    r"empty|bin|rm|drop|junk|prun)\w{0,4}\b",
    re.IGNORECASE,
)
"""Words with which people ask for files to go."""

FORGET_WORDS = re.compile(
    r"\b(?:forget|forgot|delet|remov|eras|wip|purg|clear|drop|get rid|unlearn|no longer)\w{0,4}\b",
    re.IGNORECASE,
)
"""Words with which people ask for memories to go."""

REMEMBER_WORDS = re.compile(
    r"\b(?:remember|rememb|memori[sz]|note|store|save|keep|record|jot|learn|don'?t forget|"
    r"keep in mind|for later|from now on)\w{0,4}\b",
    re.IGNORECASE,
)
"""Words with which people ask for something to be remembered."""

COMMAND_START = re.compile(
    r"^\W*(?:please\s+)?(?:summari[sz]e|read|show|list|open|find|search|look|tell|explain|"
    r"describe|count|check|give|print|display|translate|compare|review|analy[sz]e|grep|cat|"
    r"what|which|who|where|when|why|how|is|are|does|do|did|can|could|would|will|should)\b",
    re.IGNORECASE,
)
"""Openings of a request to look at something, not to tell a fact."""

TELLING = re.compile(
    r"^\W*(?:my|mine|i|i'm|i've|i'll|i'd|im|we|we're|our|us)\b|"
    r"\b(?:is|are|was|were|has|have|had|lives?|works?|likes?|loves?|hates?|prefers?|"
    r"called|named|born|moved|starts?|ends?|due)\b",
    re.IGNORECASE,
)
"""A statement of a fact: about oneself ("I parked on level 3"), or something is so ("the
meeting is at 3pm", "John's birthday is in May")."""

RUN_WORDS = re.compile(r"\b(?:run|runs|use|using|execute|launch|invoke|call|start|tool)\b", re.I)
"""Words with which people ask for a tool to run."""


def allowed_effects(
    words: str, *, changes: bool, tools: Iterable[str] = (), fits_tool: bool = False
) -> frozenset[str]:
    """The effects (`Syscall.effects`) a request may cause: "write" when it asks for a change
    (`changes`, as grounding decides from the same words), "delete" and "forget" when it says
    so, "remember" when it asks to or tells a fact (not a question, not an order to look at
    something), "run" when it asks to run, names one of the `tools`, or is close in meaning to
    one's description (`fits_tool`: the descriptions are the app author's, not data)."""
    text = words
    for path in mentioned_paths(words):  # "notes-removed.txt" asks for nothing
        text = text.replace(path, " ")
    out: set[str] = set()
    if changes:
        out.add("write")
    if DELETE_WORDS.search(text):
        out.add("delete")
    if FORGET_WORDS.search(text):
        out.add("forget")
    telling = not is_question(text) and not COMMAND_START.search(text) and TELLING.search(text)
    if REMEMBER_WORDS.search(text) or telling:
        out.add("remember")
    lowered = text.lower()
    if fits_tool or RUN_WORDS.search(text) or any(_named(tool, lowered) for tool in tools):
        out.add("run")
    return frozenset(out)


def _named(tool: str, lowered: str) -> bool:
    """Whether a request names a tool (its name, or its name's words: "make_thumbs")."""
    name = tool.lower()
    if re.search(rf"\b{re.escape(name)}\b", lowered):
        return True
    parts = [p for p in re.split(r"[_\-.]", name) if len(p) > 2]
    return len(parts) > 1 and all(re.search(rf"\b{re.escape(p)}", lowered) for p in parts)
