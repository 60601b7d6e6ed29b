"""Memory tags: the labels a memory is filed under, and part of its capability scope."""

from __future__ import annotations

import re
from collections.abc import Iterable

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import MAX_MEM_TAGS

TAG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags lower-cased, spaces as dashes, duplicates dropped; E_INVAL for anything else.

    A tag becomes part of a capability resource (`mem:archival/<tag>`), so it may hold no `/`,
    no glob characters and nothing a scope check could misread.
    """
    out: list[str] = []
    for raw in tags:
        tag = "-".join(raw.strip().lower().split())
        if not TAG_RE.fullmatch(tag):
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"bad tag {raw!r}: use letters, digits, '-', '_' or '.' (at most 40)",
            )
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_MEM_TAGS:
        raise LlmosError(ErrorCode.E_INVAL, f"at most {MAX_MEM_TAGS} tags, not {len(out)}")
    return tuple(out)
