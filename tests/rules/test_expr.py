"""The rule expression language: parsing, errors that say what is wrong, shapes and numpy evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drsdtp.rules.expr import ExprError, Load, Program, compile_expr, parse_duration


def run(source: str, values: dict[str, list[float]], relax: float = 0.0) -> list[bool]:
    compiled = compile_expr(source)
    n = len(next(iter(values.values()))) if values else 1
    loads = [np.array(values[f"{x.kind}:{x.field}"], np.float64) for x in compiled.loads]
    consts = [np.full(n, c) for c in compiled.constants]
    out = Program(compiled)(loads, consts, np.full(n, relax))
    return [bool(v) for v in np.broadcast_to(out, (n,))]


def test_precedence_and_arithmetic() -> None:
    values = {"value:a": [1.0, 5.0, 10.0], "value:b": [2.0, 2.0, 2.0]}
    assert run("a + b * 2 > 6", values) == [False, True, True]
    assert run("(a + b) * 2 > 13", values) == [False, True, True]
    assert run("a > 2 and not b > 3 or a == 1", values) == [True, True, True]
    assert run("-a < -4", values) == [False, True, True]
    assert run("abs(a - 6) <= 1 or max(a, b) == 10", values) == [False, True, True]


def test_functions_units_and_shapes() -> None:
    c = compile_expr("time_to_threshold(temperature) < 10 min and quality(temperature) >= 0.5")
    assert c.loads == (Load("tte", "temperature"), Load("quality", "temperature"))
    assert c.constants == (600.0, 0.5)
    other = compile_expr("time_to_threshold(pressure) < 2h and quality(flow) >= 0.9")
    assert other.shape == c.shape  # same structure, other fields and constants: evaluated together
    assert compile_expr("x > 1 and x < 5").loads == (Load("value", "x"),)
    assert parse_duration("30s") == 30 and parse_duration("10 min") == 600 and parse_duration(2) == 2


def test_missing_values_never_fire() -> None:
    assert run("a > 1", {"value:a": [math.nan]}) == [False]
    assert run("a / 0 > 1", {"value:a": [1.0]}) == [True]  # inf, not an exception


def test_deadband_relaxes_comparisons_in_the_holding_direction() -> None:
    values = {"value:t": [29.0, 27.5]}
    assert run("t > 30", values, relax=2.0) == [True, False]
    assert run("t < 20", {"value:t": [21.0, 22.5]}, relax=2.0) == [True, False]
    assert run("not t < 20", {"value:t": [19.0, 17.5]}, relax=2.0) == [True, False]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("temperature", "a number, not a condition"),
        ("temperature > ", "expected a value, found the end"),
        ("a > 1 > 2", "do not chain"),
        ("a > 1 and 3", "needs a condition"),
        ("(a > 1) + 2", "needs a number"),
        ("exec(a) > 1", "unknown function 'exec'"),
        ("a > 1; b", "unexpected character ';' at position 6"),
        ("quality(3) > 1", "takes a field name"),
        ("min(a) > 1", "takes 2 arguments"),
        ("a > (1", "expected ')'"),
        ("__import__ > 1 x", "expected an operator or the end, found 'x'"),
    ],
)
def test_errors_name_what_is_wrong(source: str, message: str) -> None:
    with pytest.raises(ExprError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_expr(source)


def test_parse_duration_errors() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("10 parsecs")
