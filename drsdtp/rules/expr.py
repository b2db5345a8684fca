"""The rule expression language: a small grammar parsed here (never ``eval``), compiled to numpy.

Grammar (lowest precedence first)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER [UNIT] | "true" | "false" | FIELD | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

``FIELD`` is a field of the twin (``temperature``; letters, digits, ``_`` and ``.``), its latest numeric
value (NaN when missing or not a number, and every comparison with NaN is false: a missing reading never
fires a rule). ``UNIT`` after a number makes it seconds: ``ms``, ``s``, ``min``, ``m``, ``h``, ``d``
(``time_to_threshold(temperature) < 10 min``). Functions of a field: ``quality(f)`` (0..1, the health
score the ingesting node writes back; 1 where none is known yet), ``age(f)`` (seconds since its last
write), ``anomaly(f)`` (1 while the health monitor flags an anomaly, else 0), ``time_to_threshold(f)``
(seconds until its forecast crosses a limit of the model; +inf where none is forecast). Of numbers:
``abs(x)``, ``min(a, b)``, ``max(a, b)``.

Compilation separates a rule's *shape* from its constants and fields: ``temperature > 30`` and
``pressure > 7.5`` share the shape ``$0 > #0``, so every rule of one shape over every twin it matches is
evaluated by one pass of numpy operations (:class:`Program`), the constants a column per rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "LOAD_KINDS",
    "Compiled",
    "ExprError",
    "Load",
    "Program",
    "compile_expr",
    "parse_duration",
]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
Array: TypeAlias = "FloatArray | BoolArray"

LoadKind = Literal["value", "quality", "age", "anomaly", "tte"]
LOAD_KINDS: Final[dict[str, LoadKind]] = {
    "quality": "quality",
    "age": "age",
    "anomaly": "anomaly",
    "time_to_threshold": "tte",
}
MATH_FUNCS: Final = {"abs": 1, "min": 2, "max": 2}
UNITS: Final = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
COMPARE: Final = ("<=", ">=", "==", "!=", "<", ">")
KEYWORDS: Final = frozenset({"and", "or", "not", "true", "false"})
MAX_SOURCE: Final = 4096
MAX_NODES: Final = 256

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|(?P<op><=|>=|==|!=|[<>+\-*/(),]))"
)
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


class ExprError(ValueError):
    """A rule expression that does not parse or type-check; the message names the position."""


@dataclass(frozen=True, slots=True)
class Load:
    """One input of a rule: a kind of reading of one field of the twin."""

    kind: LoadKind
    field: str


# ----- syntax tree ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Num:
    value: float


@dataclass(frozen=True, slots=True)
class _Bool:
    value: bool


@dataclass(frozen=True, slots=True)
class _Field:
    load: Load


@dataclass(frozen=True, slots=True)
class _Op:
    op: str  # + - * / neg abs min max < <= > >= == != and or not
    args: tuple[_Node, ...]


_Node = _Num | _Bool | _Field | _Op


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        self.i = 0
        self.nodes = 0
        pos = 0
        stripped = source.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if m is None or m.end() == pos:
                at = len(stripped[:pos]) + (len(stripped[pos:]) - len(stripped[pos:].lstrip()))
                raise ExprError(f"unexpected character {stripped[at]!r} at position {at + 1}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()

    def error(self, what: str) -> ExprError:
        if self.i < len(self.tokens):
            _, text, at = self.tokens[self.i]
            return ExprError(f"{what}, found {text!r} at position {at + 1}")
        return ExprError(f"{what}, found the end of the expression")

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, text: str) -> bool:
        if self.peek() == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            raise self.error(f"expected {text!r}")

    def node(self, op: str, *args: _Node) -> _Op:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExprError(f"the expression is too long (more than {MAX_NODES} operations)")
        return _Op(op, args)

    def parse(self) -> _Node:
        if not self.tokens:
            raise ExprError("the expression is empty")
        tree = self.or_()
        if self.i < len(self.tokens):
            raise self.error("expected an operator or the end")
        return tree

    def or_(self) -> _Node:
        left = self.and_()
        while self.take("or"):
            left = self.node("or", _bool(left, "or"), _bool(self.and_(), "or"))
        return left

    def and_(self) -> _Node:
        left = self.not_()
        while self.take("and"):
            left = self.node("and", _bool(left, "and"), _bool(self.not_(), "and"))
        return left

    def not_(self) -> _Node:
        if self.take("not"):
            return self.node("not", _bool(self.not_(), "not"))
        return self.compare()

    def compare(self) -> _Node:
        left = self.sum()
        op = self.peek()
        if op in COMPARE:
            self.i += 1
            right = self.sum()
            node = self.node(op, _num(left, op), _num(right, op))
            if self.peek() in COMPARE:
                raise self.error("comparisons do not chain (write a < b and b < c)")
            return node
        return left

    def sum(self) -> _Node:
        left = self.product()
        while (op := self.peek()) in ("+", "-"):
            self.i += 1
            left = self.node(op, _num(left, op), _num(self.product(), op))
        return left

    def product(self) -> _Node:
        left = self.unary()
        while (op := self.peek()) in ("*", "/"):
            self.i += 1
            left = self.node(op, _num(left, op), _num(self.unary(), op))
        return left

    def unary(self) -> _Node:
        if self.take("-"):
            inner = self.unary()
            if isinstance(inner, _Num):
                return _Num(-inner.value)
            return self.node("neg", _num(inner, "-"))
        return self.atom()

    def atom(self) -> _Node:
        if self.i >= len(self.tokens):
            raise self.error("expected a value")
        kind, text, _ = self.tokens[self.i]
        self.i += 1
        if kind == "num":
            value = float(text)
            unit = self.peek()
            if unit is not None and unit in UNITS and self.tokens[self.i][0] == "name":
                self.i += 1
                value *= UNITS[unit]
            if not math.isfinite(value):
                raise ExprError(f"the number {text} is out of range")
            return _Num(value)
        if text == "(":
            inner = self.or_()
            self.expect(")")
            return inner
        if kind != "name" or text in ("and", "or", "not"):
            self.i -= 1
            raise self.error("expected a value")
        if text in ("true", "false"):
            return _Bool(text == "true")
        if self.peek() == "(":
            return self.call(text)
        return _Field(Load("value", text))

    def call(self, name: str) -> _Node:
        self.expect("(")
        if name in LOAD_KINDS:
            if self.i >= len(self.tokens) or self.tokens[self.i][0] != "name" or self.peek() in KEYWORDS:
                raise self.error(f"{name}() takes a field name")
            field_name = self.tokens[self.i][1]
            self.i += 1
            self.expect(")")
            return _Field(Load(LOAD_KINDS[name], field_name))
        arity = MATH_FUNCS.get(name)
        if arity is None:
            known = ", ".join(sorted([*LOAD_KINDS, *MATH_FUNCS]))
            raise ExprError(f"unknown function {name!r} (known: {known})")
        args = [_num(self.or_(), name)]
        while self.take(","):
            args.append(_num(self.or_(), name))
        self.expect(")")
        if len(args) != arity:
            raise ExprError(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, got {len(args)}")
        return self.node(name, *args)


def _is_bool(node: _Node) -> bool:
    return isinstance(node, _Bool) or (isinstance(node, _Op) and node.op in ("and", "or", "not", *COMPARE))


def _bool(node: _Node, op: str) -> _Node:
    if not _is_bool(node):
        raise ExprError(f"{op!r} needs a condition (a comparison), not a number")
    return node


def _num(node: _Node, op: str) -> _Node:
    if _is_bool(node):
        raise ExprError(f"{op!r} needs a number, not a condition")
    return node


# ----- compilation ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """One expression split into its shape (the key of a :class:`Program`), constants and loads."""

    source: str
    shape: str
    constants: tuple[float, ...]
    loads: tuple[Load, ...]
    boolean: bool
    tree: _Node


def compile_expr(source: str, *, boolean: bool = True) -> Compiled:
    """Parses ``source``; a condition when ``boolean`` (else a number). Raises :class:`ExprError`."""
    if len(source) > MAX_SOURCE:
        raise ExprError(f"the expression is longer than {MAX_SOURCE} characters")
    tree = _Parser(source).parse()
    if boolean and not _is_bool(tree):
        raise ExprError("the expression is a number, not a condition (compare it: ... > 30)")
    if not boolean and _is_bool(tree):
        raise ExprError("the expression is a condition, not a number")
    constants: list[float] = []
    loads: list[Load] = []

    def walk(node: _Node) -> str:
        if isinstance(node, _Num):
            constants.append(node.value)
            return f"#{len(constants) - 1}"
        if isinstance(node, _Bool):
            return "T" if node.value else "F"
        if isinstance(node, _Field):
            if node.load not in loads:
                loads.append(node.load)
            return f"${loads.index(node.load)}"
        return f"{node.op}({','.join(walk(a) for a in node.args)})"

    shape = walk(tree)
    return Compiled(source, shape, tuple(constants), tuple(loads), _is_bool(tree), tree)


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """``"30s"``, ``"10 min"``, ``"1.5h"``, or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f'{what}: expected a duration such as "30s", got a boolean')
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        m = _DURATION.fullmatch(text)
        if m is None or (m.group(2) and m.group(2) not in UNITS):
            raise ValueError(f'{what}: {text!r} is not a duration (e.g. "30s", "10 min", "2h")')
        seconds = float(m.group(1)) * UNITS[m.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what}: must be a finite number of seconds >= 0")
    return seconds


# ----- evaluation ------------------------------------------------------------------------------------------

Inputs = Sequence[FloatArray]  # one array per load, one entry per slot
_Eval = Callable[[Inputs, Sequence[FloatArray], FloatArray, int], Array]


class Program:
    """The compiled evaluator of one shape. ``__call__(loads, constants, relax)``: ``loads[i]`` and
    ``constants[k]`` are arrays over every slot (a rule applied to one twin); ``relax`` (per slot, >= 0)
    widens each comparison by that much in the direction that keeps the condition true (the deadband of
    hysteresis: an active ``temperature > 30`` with relax 2 holds until ``temperature <= 28``)."""

    def __init__(self, compiled: Compiled) -> None:
        self.shape = compiled.shape
        self.n_constants = len(compiled.constants)
        self.n_loads = len(compiled.loads)
        counter = iter(range(self.n_constants))
        index = {load: i for i, load in enumerate(compiled.loads)}
        self._fn = _build(compiled.tree, counter, index)

    def __call__(self, loads: Inputs, constants: Sequence[FloatArray], relax: FloatArray) -> Array:
        with np.errstate(all="ignore"):  # x/0 is inf, NaN compares false: no rule raises on data
            return self._fn(loads, constants, relax, 1)


def _build(node: _Node, counter: object, index: Mapping[Load, int]) -> _Eval:
    it = counter
    if isinstance(node, _Num):
        k = next(it)  # type: ignore[call-overload]
        return lambda loads, consts, relax, sign: consts[k]
    if isinstance(node, _Bool):
        value = node.value
        return lambda loads, consts, relax, sign: np.full(len(relax), value)
    if isinstance(node, _Field):
        i = index[node.load]
        return lambda loads, consts, relax, sign: loads[i]
    args = [_build(a, it, index) for a in node.args]
    op = node.op
    if op == "not":
        (a,) = args
        return lambda loads, consts, relax, sign: np.logical_not(a(loads, consts, relax, -sign))
    if op in ("and", "or"):
        a, b = args
        combine = np.logical_and if op == "and" else np.logical_or
        return lambda loads, consts, relax, sign: combine(
            a(loads, consts, relax, sign), b(loads, consts, relax, sign)
        )
    if op in COMPARE:
        a, b = args
        cmp: Callable[[Array, Array], BoolArray] = getattr(np, _COMPARE[op])
        # With sign +1, ">" relaxed keeps a > b - relax; under a "not" the relaxation goes the other way.
        direction = {"<": 1.0, "<=": 1.0, ">": -1.0, ">=": -1.0}.get(op, 0.0)
        if direction == 0.0:
            return lambda loads, consts, relax, sign: cmp(
                a(loads, consts, relax, sign), b(loads, consts, relax, sign)
            )
        return lambda loads, consts, relax, sign: cmp(
            a(loads, consts, relax, sign), b(loads, consts, relax, sign) + direction * sign * relax
        )
    if op == "neg":
        (a,) = args
        return lambda loads, consts, relax, sign: np.negative(a(loads, consts, relax, sign))
    if op == "abs":
        (a,) = args
        return lambda loads, consts, relax, sign: np.abs(a(loads, consts, relax, sign))
    a, b = args
    fn: Callable[[Array, Array], FloatArray] = getattr(np, _ARITH[op])
    return lambda loads, consts, relax, sign: fn(a(loads, consts, relax, sign), b(loads, consts, relax, sign))


# numpy ufunc names, looked up when an expression is compiled (numpy is imported on first use).
_COMPARE: Final[dict[str, str]] = {
    "<": "less",
    "<=": "less_equal",
    ">": "greater",
    ">=": "greater_equal",
    "==": "equal",
    "!=": "not_equal",
}
_ARITH: Final[dict[str, str]] = {
    "+": "add",
    "-": "subtract",
    "*": "multiply",
    "/": "divide",
    "min": "fmin",
    "max": "fmax",
}
