"""Allowed ranges of numeric settings: declared once beside each field's ``help`` and checked by one function.

A dataclass field declares its range with its help text (``metadata={"help": ranged(at_least(1), "...")}``: a
string that also carries the range and ends with it, so ``--help`` shows it; argument parsers pass metadata on to
argparse, which takes no other keys); fields a dataclass inherits (TRL's) are given ranges in a table passed to
:func:`check_ranges`. A list field's range applies
to each item; ``None`` passes where the field's default or type allows it ("null" in a recipe). The error names the
field, the value and the range, in one line, before any model loads or any file is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


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
