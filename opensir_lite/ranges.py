"""Allowed ranges of numeric settings: declared once beside each field's ``help`` and checked by one function.

A dataclass field declares its range with its help text (``metadata={"help": ranged(at_least(1), "...")}``: a
string that also carries the range and ends with it, so ``--help`` shows it; argument parsers pass metadata on to
argparse, which takes no other keys); fields a dataclass inherits (TRL's) are given ranges in a table passed to
:func:`check_ranges`. A list field's range applies
to each item; ``None`` passes where the field's default or type allows it ("null" in a recipe). The error names the
field, the value and the range, in one line, before any model loads or any file is written.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, Union


@dataclass(frozen=True)
class Range:
    """A closed or open interval of numbers; ``low``/``high`` None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low end itself is outside
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        """``> 0``, ``>= 1``, ``in (0, 1]``..."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "any number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def at_least(low: float) -> Range:
    return Range(low=low)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low=low, high=high, low_open=low_open, high_open=high_open)


class RangedHelp(str):
    """A field's help text that carries its allowed range (``.range``)."""

    range: Range


def ranged(rng: Range, text: str) -> RangedHelp:
    """The help text ``text`` with the range appended, carrying ``rng``."""
    help_text = RangedHelp(f"{text.rstrip()} Range: {rng.describe()}.")
    help_text.range = rng
    return help_text


class RangeError(ValueError):
    """A numeric setting outside its declared range; the message names the field, the value and the range."""


def declared_ranges(config: Any, table: dict[str, Range] | None = None) -> dict[str, Range]:
    """Field name -> range: the ranges the dataclass's fields carry in their help, then ``table`` for the fields
    that carry none (inherited ones)."""
    out: dict[str, Range] = {}
    for f in fields(config):
        rng = getattr(f.metadata.get("help"), "range", None)
        if rng is not None:
            out[f.name] = rng
    for name, rng in (table or {}).items():
        out.setdefault(name, rng)
    return out


def range_problems(config: Any, ranges: dict[str, Range]) -> list[str]:
    """One message per field of ``config`` whose value is outside its range (None passes)."""
    problems = []
    for name, rng in ranges.items():
        if not hasattr(config, name):
            continue
        value = getattr(config, name)
        if value is None:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        bad = [v for v in items if not rng.contains(v)]
        if bad:
            shown = value if not isinstance(value, list | tuple) else list(value)
            each = "each value " if isinstance(value, list | tuple) else ""
            problems.append(f"{name} = {shown!r} is out of range: {each}must be {rng.describe()}")
    return problems


def check_ranges(config: Any, table: dict[str, Range] | None = None) -> None:
    """Raise :class:`RangeError` naming every field of ``config`` outside its declared range, in one line."""
    problems = range_problems(config, declared_ranges(config, table))
    if problems:
        raise RangeError("; ".join(problems))


_BOOL_WORDS = {"true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"}


def type_problem(value: Any, tp: Any) -> str | None:
    """Why a recipe's (YAML) value does not fit the field type ``tp`` (None when it fits or the type is not
    checked): the type check every recipe key gets before a model loads."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [type_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if value is None:
        return "expected a value"
    if origin is Literal:
        return None if value in args else f"expected one of {', '.join(map(repr, args))}"
    if tp is bool:
        ok = isinstance(value, bool) or (isinstance(value, str | int) and str(value).lower() in _BOOL_WORDS)
        return None if ok else "expected true or false"
    if tp in (int, float):
        if isinstance(value, bool) or isinstance(value, list | dict):
            return f"expected {'an integer' if tp is int else 'a number'}"
        if tp is int and isinstance(value, float) and not value.is_integer():
            return "expected an integer"
        try:
            tp(value)  # int("2.5") and int("two") fail, float("1e-5") parses
        except (TypeError, ValueError):
            return f"expected {'an integer' if tp is int else 'a number'}"
        return None
    if tp is str:
        return None if isinstance(value, str | int | float) and not isinstance(value, bool) else "expected a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [e.value for e in tp]
        return None if value in allowed or value in [e.name for e in tp] else f"expected one of {allowed}"
    if origin in (list, tuple) or tp in (list, tuple):
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict):
            return "expected a list"
        inner = args[0] if args else Any
        for item in items:
            problem = type_problem(item, inner)
            if problem is not None:
                return f"list item {item!r}: {problem}"
        return None
    if origin is dict or tp is dict:
        return None if isinstance(value, dict | str) else "expected a mapping"
    return None
