"""Control calls: `reply` and `ask` end a kernel turn; `calc` works out arithmetic exactly."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import MAX_CALC_CHARS, MAX_CALC_DIGITS
from llmos.syscalls.base import Registrar, Syscall
from llmos.syscalls.context import Process
from llmos.syscalls.hooks import hookimpl


class Reply(Syscall):
    """Answer the person and end the turn."""

    call: Literal["reply"] = "reply"
    text: str = Field(description="The answer, in plain words.")


class Ask(Syscall):
    """Ask the person a question when the request is unclear, and end the turn."""

    call: Literal["ask"] = "ask"
    question: str = Field(description="One short question.")


CALC_GBNF = "calc-expr"
CALC_RULES = r"""
calc-expr ::= "\"" calc-work "\""
calc-work ::= calc-factor ( " "? calc-op " "? calc-factor ){1,40} | "-"? calc-whole
calc-whole ::= calc-call | calc-percent | "(" calc-work ")"
calc-op ::= [-+] | "*" | "/" | "//" | "%" | "**" | "^"
calc-sum ::= calc-factor ( " "? calc-op " "? calc-factor ){0,40}
calc-factor ::= "-"? ( calc-percent | calc-number | "(" calc-sum ")" | calc-call )
calc-percent ::= calc-number " "? "%" " of " calc-factor
calc-call ::= calc-fn "(" calc-inner ( ", "? calc-inner ){0,60} ")"
calc-inner ::= calc-ifactor ( " "? calc-op " "? calc-ifactor ){0,40}
calc-ifactor ::= "-"? ( calc-number | "(" calc-inner ")" | calc-icall )
calc-icall ::= calc-fn "(" calc-flat ( ", "? calc-flat ){0,60} ")"
calc-flat ::= calc-ffactor ( " "? calc-op " "? calc-ffactor ){0,40}
calc-ffactor ::= "-"? ( calc-number | "(" calc-flat ")" )
calc-fn ::= "sum" | "min" | "max" | "avg" | "mean" | "round" | "abs" | "sqrt"
calc-number ::= [0-9]{1,15} ( "." [0-9]{1,12} )?
""".strip()
"""What the kernel's grammar lets it write as an expression: numbers, operators and the named
functions, nothing else, so "time in Tokyo" or "sum(scores.csv)" cannot be sent to calc; and at
least one operation, so a number the model guessed cannot come back from calc as computed; and
functions nested two deep at most (a model that wanted to write "sum(scores" wrote "sum(sum(sum(
..." until the length limit)."""


class Calc(Syscall):
    """Work out arithmetic exactly (totals, averages, percentages) instead of guessing."""

    pure = True
    needs_numbers = True
    call: Literal["calc"] = "calc"
    expression: str = Field(
        description="Numbers with + - * / % ** ( ), sum min max avg round abs; e.g. 10+25+7.",
        json_schema_extra={"gbnf": CALC_GBNF, "gbnf_rules": CALC_RULES},
    )


class CalcResult(BaseModel):
    """The expression and its value."""

    expression: str
    value: int | float


class TextResult(BaseModel):
    """Text shown to the person."""

    text: str


def reply(call: Reply, process: Process) -> TextResult:
    """Echo the answer so the caller can show it."""
    return TextResult(text=call.text)


def ask(call: Ask, process: Process) -> TextResult:
    """Echo the question so the caller can show it and wait for the answer."""
    return TextResult(text=call.question)


Number = int | float
Value = Number | list[Number]


def _number_check(value: object) -> Number:
    """`value` as a real number within MAX_CALC_DIGITS digits, else a clear error."""
    if isinstance(value, complex):
        raise LlmosError(ErrorCode.E_INVAL, "the result is not a real number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LlmosError(ErrorCode.E_INVAL, f"{value!r} is not a number")
    if isinstance(value, float) and math.isnan(value):
        raise LlmosError(ErrorCode.E_INVAL, "the result is not a number")
    if abs(value) >= 10**MAX_CALC_DIGITS:  # infinity too
        raise LlmosError(ErrorCode.E_TOOBIG, f"a number is over {MAX_CALC_DIGITS} digits")
    return value


def _power(base: Number, exp: Number) -> Number:
    """`base ** exp`, refused before it is computed when the result would be too long."""
    if exp > 0 and abs(base) > 1 and exp * math.log10(abs(base)) >= MAX_CALC_DIGITS:
        raise LlmosError(ErrorCode.E_TOOBIG, f"{base}**{exp} is over {MAX_CALC_DIGITS} digits")
    result: Number = base**exp
    return result


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}


def _numbers(args: list[Value]) -> list[Number]:
    """The arguments of sum/min/max/avg with lists spread out (`sum(1, 2)` or `sum([1, 2])`)."""
    flat = [x for a in args for x in (a if isinstance(a, list) else [a])]
    if not flat:
        raise LlmosError(ErrorCode.E_INVAL, "give the function at least one number")
    return flat


def _one(args: list[Value], name: str) -> Number:
    if len(args) != 1 or isinstance(args[0], list):
        raise LlmosError(ErrorCode.E_INVAL, f"{name}() takes one number")
    return args[0]


def _round(args: list[Value]) -> Number:
    if not 1 <= len(args) <= 2 or any(isinstance(a, list) for a in args):
        raise LlmosError(ErrorCode.E_INVAL, "round() takes a number and, optionally, digits")
    digits = args[1] if len(args) == 2 else 0
    if not isinstance(digits, int) or abs(digits) > MAX_CALC_DIGITS:
        raise LlmosError(ErrorCode.E_INVAL, "round()'s digits must be a small whole number")
    value = args[0]
    assert not isinstance(value, list)
    result: Number = round(value, digits) if len(args) == 2 else round(value)
    return result


def _sqrt(args: list[Value]) -> Number:
    value = _one(args, "sqrt")
    if value < 0:
        raise LlmosError(ErrorCode.E_INVAL, "sqrt() of a negative number")
    return math.sqrt(value)


def _avg(args: list[Value]) -> Number:
    values = _numbers(args)
    return sum(values) / len(values)


FUNCTIONS: dict[str, Callable[[list[Value]], Number]] = {
    "sum": lambda args: sum(_numbers(args)),
    "min": lambda args: min(_numbers(args)),
    "max": lambda args: max(_numbers(args)),
    "avg": _avg,
    "mean": _avg,
    "round": _round,
    "abs": lambda args: abs(_one(args, "abs")),
    "sqrt": _sqrt,
}
"""The only names calc knows; each takes numbers (or lists of them) and returns one."""

_PERCENT_OF = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*%\s*of\b", re.IGNORECASE)
_SPELLINGS = {"^": "**", "\u00d7": "*", "\u00f7": "/"}


def _eval(node: ast.AST) -> Value:
    """Walk the parsed expression; anything but numbers, operators and FUNCTIONS is refused."""
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _number_check(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(left, list) or isinstance(right, list):
            raise LlmosError(ErrorCode.E_INVAL, "a list can only be a function's argument")
        return _number_check(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(node.operand)
        if isinstance(operand, list):
            raise LlmosError(ErrorCode.E_INVAL, "a list can only be a function's argument")
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.List | ast.Tuple):
        numbers: list[Number] = []
        for element in node.elts:
            item = _eval(element)
            if isinstance(item, list):
                raise LlmosError(ErrorCode.E_INVAL, "lists inside lists are not allowed")
            numbers.append(item)
        return numbers
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or node.keywords:
            known = ", ".join(FUNCTIONS)
            raise LlmosError(ErrorCode.E_INVAL, f"calc knows only the functions {known}")
        return _number_check(FUNCTIONS[name]([_eval(a) for a in node.args]))
    if isinstance(node, ast.Name):
        raise LlmosError(
            ErrorCode.E_INVAL, f"{node.id!r} is not a number; calc takes numbers, not names"
        )
    if isinstance(node, ast.Attribute):
        raise LlmosError(ErrorCode.E_INVAL, "calc takes numbers and operators, not attributes")
    raise LlmosError(
        ErrorCode.E_INVAL,
        f"{type(node).__name__} is not arithmetic; use numbers, + - * / // % ** and ( )",
    )


def _tidy(value: Number) -> Number:
    """Whole floats as ints (7.0 -> 7) and float noise rounded away (0.1+0.2 -> 0.3)."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return float(f"{value:.12g}")
    return value


def calculate(expression: str) -> Number:
    """Evaluate arithmetic safely: `ast` over numbers, operators and a few functions, no eval."""
    text = expression.strip()
    if len(text) > MAX_CALC_CHARS:
        raise LlmosError(
            ErrorCode.E_TOOBIG, f"the expression is {len(text)} characters, over {MAX_CALC_CHARS}"
        )
    if not text:
        raise LlmosError(ErrorCode.E_INVAL, "give an expression, e.g. 10+25+7")
    text = _PERCENT_OF.sub(r"(\1/100)*", text)
    for spelled, op in _SPELLINGS.items():
        text = text.replace(spelled, op)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise LlmosError(
            ErrorCode.E_INVAL, f"{expression!r} is not arithmetic calc can read ({exc.msg})"
        ) from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise LlmosError(ErrorCode.E_INVAL, "division by zero") from None
    except OverflowError:
        raise LlmosError(ErrorCode.E_TOOBIG, f"a number is over {MAX_CALC_DIGITS} digits") from None
    except RecursionError:
        raise LlmosError(ErrorCode.E_INVAL, "the expression is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"cannot compute {expression!r}: {exc}") from None
    if isinstance(value, list):
        raise LlmosError(ErrorCode.E_INVAL, "the expression must give one number, not a list")
    return _tidy(value)


def calc(call: Calc, process: Process) -> CalcResult:
    """Compute the expression so the kernel states a worked-out number."""
    return CalcResult(expression=call.expression, value=calculate(call.expression))


@hookimpl
def register_syscalls(register: Registrar) -> None:
    """Register the control calls (calc after reply and ask)."""
    register(Reply, reply, result=TextResult)
    register(Ask, ask, result=TextResult)
    register(Calc, calc, result=CalcResult, capability="calc")
