"""The eval runner: matchers, per-case tools, task checks, and the summary, on a scripted kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.errors import LlmosError
from llmos.kernel.backend import ScriptedBackend
from llmos.kernel.evaluation import (
    call_matches,
    family_of,
    load_cases,
    run_eval,
    tool_model,
    value_matches,
)
from llmos.system import System

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
