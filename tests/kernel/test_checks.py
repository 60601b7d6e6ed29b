"""The pure checks a turn's calls and reply are held to (llmos.kernel.checks)."""

from __future__ import annotations

import json

import pytest

from llmos.kernel.checks import (
    about_the_file,
    double_counted,
    unread_asked,
    unseen_counts,
)


@pytest.mark.parametrize(
    ("expression", "twice"),
    [
        ("310.00+58.90+368.90", "368.90 = 310.00 + 58.90"),
        ("12 + 24 + 5 + 7", "24 = 12 + 5 + 7"),
        ("1+2+4", ""),
        ("310.00+58.90", ""),  # two terms: a sum, nothing counted twice
        ("3*60+180", ""),  # not a plain sum
        ("0+0+0", ""),
    ],
)
def test_a_total_added_to_its_parts_is_found(expression: str, twice: str) -> None:
    assert double_counted(expression) == twice


def test_a_count_needs_its_number_shown_standing_alone() -> None:
    shown = "Price list\nItem | Price\nDelta kite | 45\nBox kite | 60\nRevenue 4.1 million"
    assert unseen_counts("The table has 4 items.", shown) == ["4 items"]
    assert unseen_counts("There are 3 python files in src.", "summary: 3 files (3 .py)") == []
    assert unseen_counts("It lists 2 kites.", shown) == [], "kites are not a counted noun"
    assert unseen_counts("The file has 12 lines.", '{"lines": 12}') == []
    assert unseen_counts("The file has 12 lines.", '{"lines": 123}') == ["12 lines"]


def call(name: str, **args: str) -> str:
    return json.dumps({"call": name, **args})


def test_a_request_for_what_a_file_says_needs_a_read_of_it() -> None:
    stat = call("fs.stat", path="report.pdf")
    assert unread_asked("summarise report.pdf", [stat]) == "report.pdf"
    assert unread_asked("summarise report.pdf", [stat, call("fs.read", path="./report.pdf")]) == ""
    assert unread_asked("what does the text in docs/sign.jpg say?", []) == "docs/sign.jpg"
    assert unread_asked("what does sign.jpg say?", [call("image.text", path="sign.jpg")]) == ""
    # A search of a folder reads every file in it; a search of another file does not.
    assert unread_asked("what does a.docx say about notice?", [call("fs.search", path=".")]) == ""
    assert unread_asked("what does a.docx say?", [call("fs.search", path="b.docx")]) == "a.docx"
    # Questions about the file, not what it says, and requests naming no file, need no read.
    assert unread_asked("when was report.pdf last changed?", [stat]) == ""
    assert unread_asked("summarise the meeting", []) == ""
    # A path the request asks to be written is not one it asks to be read.
    read = [call("fs.read", path="story.txt")]
    assert unread_asked("summarise story.txt into short.txt", read, ("short.txt",)) == ""
    assert unread_asked("summarise story.txt into short.txt", read) == "short.txt"


def test_a_reply_about_the_file_itself_is_found_when_its_text_was_asked_for() -> None:
    said = "The table in prices.docx contains 17 words and is 36752 bytes long."
    assert about_the_file("what's in the table in prices.docx?", said) == "17 words"
    assert about_the_file("summarise report.pdf", "It was last changed today.") == "last changed"
    assert about_the_file("summarise report.pdf", "Revenue grew 12% to 4.1 million.") == ""
    # Asked about the file itself, or about no named file, a reply may say so.
    assert about_the_file("how many words are in prices.docx?", said) == ""
    assert about_the_file("what's in the docs folder?", "3 files, 2048 bytes") == ""
    # After a write, a reply may say what it wrote.
    wrote = [call("fs.read", path="a.txt"), call("fs.write", path="b.txt", content="x")]
    assert about_the_file("summarise a.txt into b.txt", "Wrote 58 bytes to b.txt.", wrote) == ""
