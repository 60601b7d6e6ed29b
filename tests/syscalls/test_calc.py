"""calc through the one dispatch path: arithmetic, functions, and every refusal as a clear code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmos.errors import ErrorCode
from llmos.limits import MAX_CALC_CHARS
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System


@pytest.fixture
def calc_proc(system: System, workspace: Path) -> Process:
    """A process that holds calc beside the control calls."""
    return system.spawn("calc-test", workspace, patterns=["reply", "ask", "calc"])


def _calc(system: System, proc: Process, expression: str) -> SyscallResult:
    return system.dispatch(proc, {"call": "calc", "expression": expression})


@pytest.mark.parametrize(
    "expression,value",
    [
        ("10+25+7", 42),
        ("(3.5*4)/2", 7),
        ("10/4", 2.5),
        ("7//2", 3),
        ("7 % 3", 1),
        ("2**10", 1024),
        ("2^10", 1024),
        ("-3 + +5", 2),
        ("-(2-7)*3", 15),
        ("0.1+0.2", 0.3),
        ("1/3", 0.333333333333),
        ("2**-2", 0.25),
        ("15% of 80", 12),
        ("12.5 % of (40*2)", 10),
        ("6 \u00d7 7 \u00f7 2", 21),
    ],
)
def test_arithmetic(
    system: System, calc_proc: Process, expression: str, value: int | float
) -> None:
    res = _calc(system, calc_proc, expression)
    assert res.ok, res.message
    assert res.value == {"expression": expression, "value": value}
    assert type(res.value["value"]) is type(value)


@pytest.mark.parametrize(
    "expression,value",
    [
        ("sum(10, 25, 7)", 42),
        ("sum([1, 2, 3])", 6),
        ("round(100/3, 2)", 33.33),
        ("round(2.6)", 3),
        ("max(3,9)", 9),
        ("min(4, -2, 8)", -2),
        ("avg(1, 2, 3, 4)", 2.5),
        ("mean([10, 20])", 15),
        ("abs(-7.5)", 7.5),
        ("sqrt(16)", 4),
        ("sum(1, 2) * max(2, 3)", 9),
    ],
)
def test_functions(system: System, calc_proc: Process, expression: str, value: int | float) -> None:
    res = _calc(system, calc_proc, expression)
    assert res.ok, res.message
    assert res.value["value"] == value
    assert type(res.value["value"]) is type(value)


@pytest.mark.parametrize(
    "expression,words",
    [
        ("x + 1", "not a number"),
        ("__import__('os')", "only the functions"),
        ("(1).real", "attributes"),
        ("().__class__", "attributes"),
        ("open('f')", "only the functions"),
        ("sum(1, start=2)", "only the functions"),
        ("'a' * 3", "not a number"),
        ("True + 1", "not a number"),
        ("1 < 2", "not arithmetic"),
        ("[x for x in (1, 2)]", "not arithmetic"),
        ("lambda: 1", "not arithmetic"),
        ("1 +", "not arithmetic"),
        ("", "give an expression"),
        ("1, 2", "not a list"),
        ("max()", "at least one number"),
        ("sqrt(-1)", "negative"),
        ("(-8) ** 0.5", "not a real number"),
        ("round(1.5, 0.5)", "whole number"),
        ("[1] + 2", "function's argument"),
    ],
)
def test_refused_is_inval(system: System, calc_proc: Process, expression: str, words: str) -> None:
    res = _calc(system, calc_proc, expression)
    assert res.code == ErrorCode.E_INVAL, res
    assert words in (res.message or ""), res.message


@pytest.mark.parametrize("expression", ["1/0", "5 // 0", "5 % 0", "0 ** -1", "avg(1) / (2-2)"])
def test_division_by_zero_is_inval(system: System, calc_proc: Process, expression: str) -> None:
    res = _calc(system, calc_proc, expression)
    assert res.code == ErrorCode.E_INVAL, res
    assert "division by zero" in (res.message or "")


@pytest.mark.parametrize(
    "expression", ["9**9**9", "10**1000", "2**(2**64)", "1.5**100000", "1e308 * 10", "9" * 150]
)
def test_huge_numbers_are_toobig_at_once(
    system: System, calc_proc: Process, expression: str
) -> None:
    start = time.monotonic()
    res = _calc(system, calc_proc, expression)
    assert res.code == ErrorCode.E_TOOBIG, res
    assert time.monotonic() - start < 1.0


def test_small_powers_of_one_are_fine(system: System, calc_proc: Process) -> None:
    res = _calc(system, calc_proc, "1 ** (10**50) + (-1) ** 3")
    assert res.ok, res.message
    assert res.value["value"] == 0


def test_too_long_is_toobig(system: System, calc_proc: Process) -> None:
    expression = "+".join(["1"] * (MAX_CALC_CHARS // 2 + 1))
    assert len(expression) > MAX_CALC_CHARS
    res = _calc(system, calc_proc, expression)
    assert res.code == ErrorCode.E_TOOBIG, res
    assert str(MAX_CALC_CHARS) in (res.message or "")


def test_deep_nesting_is_inval_not_a_crash(system: System, calc_proc: Process) -> None:
    res = _calc(system, calc_proc, "-" * (MAX_CALC_CHARS - 1) + "1")
    assert res.ok or res.code == ErrorCode.E_INVAL, res
    res = _calc(system, calc_proc, "(" * 99 + "1" + ")" * 99)
    assert res.ok or res.code == ErrorCode.E_INVAL, res


def test_needs_the_calc_capability(system: System, workspace: Path) -> None:
    proc = system.spawn("no-calc", workspace, patterns=["reply", "ask"])
    res = _calc(system, proc, "1+1")
    assert res.code == ErrorCode.E_PERM, res
    assert "calc" in (res.message or "")


def test_registered_after_reply_and_ask(system: System) -> None:
    control = [s.name for s in system.registry.specs() if s.family == "control"]
    assert control[:3] == ["reply", "ask", "calc"]
    spec = system.registry.get("calc")
    assert spec is not None and spec.cap_name == "calc"
