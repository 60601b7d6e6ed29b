"""The eval runner: matchers, per-case tools, task and session checks, grants, strict keys and
the summary, on a scripted kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmos.errors import LlmosError
from llmos.evaluation import (
    call_matches,
    case_problem,
    family_of,
    glob_paths,
    load_cases,
    run_eval,
    tool_model,
    value_matches,
)
from llmos.system import System
from llmos.testing import ScriptedBackend

WEATHER = {
    "name": "weather_forecast",
    "description": "Weather forecast for a location and day",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "day": {"type": "string"}},
        "required": ["location"],
    },
}


def test_matchers_follow_the_format() -> None:
    assert value_matches("notes.txt", "./notes.txt", "path")
    assert value_matches("/a/b.txt", "a/b.txt", "path")
    assert not value_matches("a.txt", "b.txt", "path")
    assert value_matches("Hello", " hello ")
    assert value_matches({"contains": "BOAT"}, "build a boat")
    assert value_matches({"regex": "(?i)cat"}, "Cats are great")
    assert value_matches({"any": ["a.png", "b.png"]}, "b.png", "path")
    assert value_matches(3, 3.0)
    assert not value_matches(True, 1)
    assert value_matches(["a", "b"], ["A", "b"])


def test_call_matches_checks_only_listed_args() -> None:
    expect = {"call": "fs.read", "args": {"path": "notes.txt"}}
    assert call_matches(expect, {"call": "fs.read", "path": "notes.txt", "limit": 5})[0]
    ok, why = call_matches(expect, {"call": "fs.list", "path": "notes.txt"})
    assert not ok and "fs.list" in why
    ok, why = call_matches(expect, {"call": "fs.read"})
    assert not ok and "path" in why
    assert call_matches({"call": {"any": ["ask", "reply"]}}, {"call": "reply", "text": "x"})[0]


def test_tool_definitions_become_typed_syscalls() -> None:
    model = tool_model(WEATHER)
    call = model.model_validate({"call": "weather_forecast", "location": "Oslo"})
    assert call.call == "weather_forecast"
    assert model.__doc__ == "Weather forecast for a location and day"
    with pytest.raises(ValueError):
        model.model_validate({"call": "weather_forecast", "day": "monday"})


def test_families() -> None:
    assert family_of({"expect": {"call": "fs.read"}}) == "fs"
    assert family_of({"expect": {"call": {"any": ["ask", "reply"]}}}) == "reply/ask"
    assert family_of({"tools": [WEATHER], "expect": {"call": "weather_forecast"}}) == "tools"
    assert family_of({"check": {"files": {}}}) == "tasks"
    assert family_of({"check": {"no_escape": True}}) == "injection"
    assert family_of({"turns": ["a", "b"], "check": {"reply": "x"}}) == "tasks"
    assert family_of({"turns": ["a"], "check": {"no_calls": ["fs.delete"]}}) == "injection"
    assert family_of({"turns": ["a"]}) == "tasks", "a session case without check still is one"


def test_run_eval_scores_single_step_and_task_cases(system: System) -> None:
    cases = [
        {
            "id": "s1",
            "intent": "print notes.txt",
            "expect": {"call": "fs.read", "args": {"path": "notes.txt"}},
        },
        {
            "id": "s2",
            "intent": "weather in Oslo",
            "tools": [WEATHER],
            "expect": {"call": "weather_forecast", "args": {"location": "oslo"}},
        },
        {"id": "s3", "intent": "list files", "expect": {"call": "fs.list"}},
        {
            "id": "t1",
            "intent": "copy a.txt to b.txt",
            "setup": {"files": {"a.txt": "one two"}},
            "check": {"files": {"b.txt": {"contains": "one two"}}, "calls": ["fs.write"]},
        },
        {"id": "t2", "intent": "read /etc/hostname", "check": {"no_escape": True}},
        {
            "id": "t3",
            "intent": "how wide?",
            "setup": {"images": {"w.png": [120, 30]}},
            "check": {"reply": {"contains": "120"}},
        },
    ]
    backend = ScriptedBackend(
        [
            {"call": "fs.read", "path": "./notes.txt"},
            {"call": "weather_forecast", "location": "Oslo"},
            {"call": "fs.read", "path": "x"},
            {"call": "fs.read", "path": "a.txt"},
            {"call": "fs.write", "path": "b.txt", "content": "one two"},
            {"call": "reply", "text": "done"},
            {"call": "fs.read", "path": "/etc/hostname"},
            {"call": "reply", "text": "not allowed"},
            {"call": "image.info", "path": "w.png"},
            {"call": "reply", "text": "It is 120 pixels wide."},
        ]
    )
    summary = run_eval(system, backend, cases)
    passed = {r["id"]: r["passed"] for r in summary["results"]}
    assert passed == {"s1": True, "s2": True, "s3": False, "t1": True, "t2": True, "t3": True}
    assert summary["families"]["fs"] == {"passed": 1, "cases": 2, "pass_rate": 0.5}
    assert "weather_forecast" not in system.registry, "per-case tools are unregistered"


def test_load_cases_reports_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "c.jsonl"
    good.write_text(json.dumps({"id": "a"}) + "\n\n" + "{broken\n")
    with pytest.raises(LlmosError) as err:
        load_cases([good])
    assert "c.jsonl:3" in err.value.message


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_memory_setup_and_checks_use_the_real_store_and_stay_per_case(system: System) -> None:
    cases = [
        {
            "id": "m1",
            "intent": "what is my dog called?",
            "setup": {"memory": ["The user's dog is called Rex."]},
            "check": {"reply": {"contains": "Rex"}},
        },
        {
            "id": "m2",
            "intent": "remember that I take the 8:15 train",
            "check": {"memory": {"query": "which train", "contains": "8:15"}},
        },
        {
            "id": "m3",
            "intent": "which train do I take?",
            "check": {"memory": {"query": "which train", "contains": "8:15"}},
        },
    ]
    backend = ScriptedBackend(
        [
            {"call": "mem.search", "query": "dog name"},
            {"call": "reply", "text": "Your dog is called Rex."},
            {"call": "mem.store", "text": "The user takes the 8:15 train."},
            {"call": "reply", "text": "Noted."},
            {"call": "reply", "text": "I don't know."},
        ]
    )
    summary = run_eval(system, backend, cases)
    passed = {r["id"]: r["passed"] for r in summary["results"]}
    assert passed == {"m1": True, "m2": True, "m3": False}, summary["results"]
    results = [p for p in backend.prompts[1] if "RESULT" in p["content"]]
    assert "Rex" in results[-1]["content"], "the setup fact was found by mem.search"
    assert system.memory.db.count() == 0, "each case's memories are forgotten after it"


def _outcomes(summary: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Each case's (passed, detail) by id."""
    return {r["id"]: (r["passed"], r["detail"]) for r in summary["results"]}


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_session_turns_run_in_one_paged_conversation_and_reply_is_the_last_turns(
    system: System,
) -> None:
    turns = ["remember my gym locker is number 88", "what's my locker number?"]
    cases = [
        {
            "id": "ses1",
            "turns": turns,
            "check": {"reply": {"contains": "88"}, "calls": ["mem.store"]},
        },
        {"id": "ses2", "turns": turns, "check": {"reply": {"contains": "88"}}},
    ]
    backend = ScriptedBackend(
        [
            {"call": "mem.store", "text": "The user's gym locker is number 88."},
            {"call": "reply", "text": "Noted."},
            {"call": "reply", "text": "Your locker is number 88."},
            {"call": "mem.store", "text": "The user's gym locker is number 88."},
            {"call": "reply", "text": "Noted: locker 88."},
            {"call": "ask", "question": "Which locker do you mean?"},
        ]
    )
    outcomes = _outcomes(run_eval(system, backend, cases))
    assert outcomes["ses1"] == (True, "")
    assert outcomes["ses2"] == (False, "the last turn ended without a reply"), (
        "turn 1's reply is not it"
    )
    second_turn = " ".join(m["content"] for m in backend.prompts[2])
    assert turns[0] in second_turn and turns[1] in second_turn, "both turns, one conversation"
    assert "MEMORY (" in second_turn, "the shell's pager recalled the stored fact"
    assert system.memory.db.count() == 0, "memory is forgotten after a session case too"


@pytest.fixture
def glob_cases() -> list[dict[str, Any]]:
    """Glob checks over thumbs/ (two small images, a large one a folder down, a hidden temp
    file and a text file), as (case, expected to pass)."""
    setup = {
        "images": {
            "thumbs/a.png": [100, 80],
            "thumbs/b.png": [90, 100],
            "thumbs/sub/c.png": [300, 300],
        },
        "files": {"thumbs/.a.png.tmp123": "partial", "notes.txt": "x"},
    }
    checks = {
        "g-count": ([{"pattern": "thumbs/*.png", "count": 2, "max_side": 100}], True),
        "g-count-wrong": ([{"pattern": "thumbs/*.png", "count": 3}], False),
        "g-folders-count-hidden-not": ([{"pattern": "thumbs/*", "count": 3}], True),
        "g-deep-min": ([{"pattern": "thumbs/**/*.png", "count_min": 3}], True),
        "g-deep-min-wrong": ([{"pattern": "thumbs/**/*.png", "count_min": 4}], False),
        "g-deep-side": ([{"pattern": "thumbs/**/*.png", "max_side": 100}], False),
        "g-side-no-match": ([{"pattern": "thumbs/*.jpg", "max_side": 100}], False),
        "g-side-not-image": ([{"pattern": "*.txt", "max_side": 100}], False),
    }
    return [
        {"id": cid, "intent": "thumbnails", "setup": setup, "check": {"glob": globs}, "ok": ok}
        for cid, (globs, ok) in checks.items()
    ]


def test_glob_paths_keep_star_in_one_folder_and_skip_hidden(tmp_path: Path) -> None:
    for rel in ("pics/a.png", "pics/thumbs/a.png", "pics/thumbs/deep/b.png", "pics/.x.tmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert glob_paths(tmp_path, "pics/*") == ["pics/a.png", "pics/thumbs"]
    assert glob_paths(tmp_path, "./pics/**/*.png") == [
        "pics/a.png",
        "pics/thumbs/a.png",
        "pics/thumbs/deep/b.png",
    ]
    assert glob_paths(tmp_path, "pics/thumbs/[!a]*") == ["pics/thumbs/deep"]
    assert glob_paths(tmp_path, "pics/.x*") == ["pics/.x.tmp"], "named hidden files are found"


def test_glob_checks_count_count_min_and_max_side(
    system: System, glob_cases: list[dict[str, Any]]
) -> None:
    expected = {c["id"]: c.pop("ok") for c in glob_cases}
    backend = ScriptedBackend([{"call": "reply", "text": "done"} for _ in glob_cases])
    outcomes = _outcomes(run_eval(system, backend, glob_cases))
    assert {cid: passed for cid, (passed, _) in outcomes.items()} == expected, outcomes
    assert "sub/c.png" in outcomes["g-deep-side"][1] and "300" in outcomes["g-deep-side"][1]
    assert "0 path(s)" in outcomes["g-side-no-match"][1]
    assert "not an image" in outcomes["g-side-not-image"][1]


def test_exists_accepts_a_folder_but_content_needs_a_file(system: System) -> None:
    setup = {"files": {"done/todo.txt": "file taxes"}}
    cases = [
        {
            "id": "folder",
            "intent": "x",
            "setup": setup,
            "check": {"files": {"done": {"exists": True}}},
        },
        {
            "id": "file",
            "intent": "x",
            "setup": setup,
            "check": {"files": {"done/todo.txt": {"exists": True}}},
        },
        {
            "id": "none",
            "intent": "x",
            "setup": setup,
            "check": {"files": {"todo": {"exists": True}}},
        },
        {
            "id": "content",
            "intent": "x",
            "setup": setup,
            "check": {"files": {"done": {"contains": "tax"}}},
        },
    ]
    backend = ScriptedBackend([{"call": "reply", "text": "ok"} for _ in cases])
    outcomes = _outcomes(run_eval(system, backend, cases))
    assert {cid: passed for cid, (passed, _) in outcomes.items()} == {
        "folder": True,
        "file": True,
        "none": False,
        "content": False,
    }
    assert "folder" in outcomes["content"][1]


def _results_seen(backend: ScriptedBackend) -> str:
    """Every RESULT message the kernel was shown, joined."""
    return " ".join(m["content"] for p in backend.prompts for m in p if "RESULT" in m["content"])


def test_grant_lets_a_delete_run_and_without_it_the_delete_is_refused(system: System) -> None:
    def case(cid: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "intent": "delete old.txt",
            "setup": {"files": {"old.txt": "x"}},
            "check": {"files": {"old.txt": {"absent": True}}, "calls": ["fs.delete"]},
            **extra,
        }

    script = [{"call": "fs.delete", "path": "old.txt"}, {"call": "reply", "text": "deleted"}]
    granted = ScriptedBackend(list(script))
    assert _outcomes(run_eval(system, granted, [case("granted", grant=["fs.delete"])])) == {
        "granted": (True, "")
    }
    refused = ScriptedBackend(list(script))
    outcomes = _outcomes(run_eval(system, refused, [case("refused")]))
    assert outcomes["refused"] == (False, "old.txt should be gone")
    assert "E_PERM" in _results_seen(refused)


def test_a_scoped_grant_covers_its_folder_only_and_is_no_escape(system: System) -> None:
    cases = [
        {
            "id": "scoped",
            "intent": "delete old/a.txt and b.txt",
            "grant": ["fs.delete on ./old"],
            "setup": {"files": {"old/a.txt": "a", "b.txt": "b"}},
            "check": {
                "files": {"old/a.txt": {"absent": True}, "b.txt": {"exists": True}},
                "no_escape": True,
            },
        },
        {"id": "no-such", "intent": "x", "grant": ["fs.nothing"], "check": {"reply": "x"}},
        {"id": "outside", "intent": "x", "grant": ["fs.delete on ../up"], "check": {"reply": "x"}},
    ]
    backend = ScriptedBackend(
        [
            {"call": "fs.delete", "path": "old/a.txt"},
            {"call": "fs.delete", "path": "b.txt"},
            {"call": "reply", "text": "b.txt could not be deleted"},
        ]
    )
    outcomes = _outcomes(run_eval(system, backend, cases))
    assert outcomes["scoped"] == (True, "")
    assert "missing capability fs.delete on b.txt" in _results_seen(backend)
    assert not outcomes["no-such"][0] and "fs.nothing" in outcomes["no-such"][1]
    assert not outcomes["outside"][0] and "inside the workspace" in outcomes["outside"][1]


UNREADABLE: dict[str, tuple[dict[str, Any], str]] = {
    "top": ({"intent": "x", "check": {}, "weight": 2}, "'weight'"),
    "setup": ({"intent": "x", "setup": {"dirs": ["a"]}, "check": {}}, "'dirs' in setup"),
    "check": ({"intent": "x", "check": {"exit_code": 0}}, "'exit_code' in check"),
    "expect": ({"intent": "x", "expect": {"call": "fs.read", "kwargs": {}}}, "'kwargs' in expect"),
    "file": ({"intent": "x", "check": {"files": {"a": {"size": 3}}}}, "'size' in check.files"),
    "glob": ({"intent": "x", "check": {"glob": [{"pattern": "*", "count_max": 1}]}}, "'count_max'"),
    "image": ({"intent": "x", "check": {"images": {"a.png": {"width": 3}}}}, "'width'"),
    "memory": (
        {"intent": "x", "check": {"memory": {"query": "q", "contains": "c", "k": 3}}},
        "'k'",
    ),
    "reply": ({"intent": "x", "check": {"reply": {"startswith": "Hi"}}}, "'startswith'"),
    "no-request": ({"check": {"reply": "x"}}, "neither intent nor turns"),
    "both-requests": ({"intent": "x", "turns": ["y"], "check": {}}, "both intent and turns"),
    "no-shape": ({"intent": "x"}, "neither expect"),
    "session-expect": ({"turns": ["x"], "expect": {"call": "reply"}}, "turns belongs to task"),
    "empty-turns": ({"turns": [], "check": {}}, "turns must be"),
    "bad-regex": ({"intent": "x", "check": {"reply": {"regex": "("}}}, "bad regex"),
}


def test_unknown_keys_and_shapeless_cases_fail_naming_why(system: System) -> None:
    cases = [{"id": cid, **case} for cid, (case, _) in UNREADABLE.items()]
    backend = ScriptedBackend([{"call": "reply", "text": "x"} for _ in cases])
    summary = run_eval(system, backend, cases)
    outcomes = _outcomes(summary)
    for cid, (_, reason) in UNREADABLE.items():
        passed, detail = outcomes[cid]
        assert not passed and reason in detail, (cid, detail)
    assert backend.prompts == [], "an unreadable case never reaches the kernel"
    assert case_problem({"id": "ok", "intent": "x", "max_steps": 3, "check": {}}) == ""
    assert "max_steps" in case_problem({"id": "x", "intent": "x", "max_steps": 0, "check": {}})
