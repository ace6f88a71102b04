"""The label-quality table: Wilson intervals, the solve-rate bins and the in-gate precision / recall of the
majority, the program-confirmed majority and the program alone, on hand-built probe readings and checks."""

import pytest

from opensir_lite.label_quality import format_table, in_gate, label_table, share, wilson


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (5, 5, 0.566, 1.0),  # all right on a small sample: the lower bound stays far from 1
        (5, 24, 0.092, 0.405),  # docs/programs.md's probe figure (5 of 24)
        (0, 10, 0.0, 0.278),  # none right
        (150, 300, 0.444, 0.556),  # a half on 300 rows
    ],
)
def test_wilson(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-3) and hi == pytest.approx(high, abs=1e-3)


def test_share_of_nothing():
    """No rows: no proportion and no interval, rather than a division by zero."""
    assert share(0, 0) == {"k": 0, "n": 0, "p": None, "low": None, "high": None}
    assert wilson(0, 0) is None


@pytest.mark.parametrize(
    "rate, inside",
    [(0.5, True), (0.9, True), (0.75, True), (0.875, True), (0.375, False), (1.0, False), (None, False)],
)  # the gate's closed ends, a rate above it, and no valid answer
def test_in_gate(rate, inside):
    assert in_gate(rate, 0.5, 0.9) is inside


def _row(row, rate, right):
    return {"row": row, "solve_rate": rate, "majority_right": right, "answers": [], "majority": "1"}


def test_label_table():
    """In the gate: the majority's precision over every in-gate row; the confirmed label's precision over rows a
    program confirmed, its recall over the right majorities; the program alone over rows with a program answer."""
    samples = [
        _row(1, 0.75, True),  # in gate, right, confirmed
        _row(2, 0.625, True),  # in gate, right, program disagrees (a right majority the filter loses)
        _row(3, 0.5, False),  # in gate, wrong, confirmed (a wrong label the filter keeps)
        _row(4, 0.875, False),  # in gate, wrong, program failed
        _row(5, 0.25, False),  # below the gate, confirmed
        _row(6, 1.0, True),  # above the gate, no program
        _row(7, None, False),  # no valid answer
    ]
    checks = {
        1: {"agrees": True, "program_answer": "3", "program_gold": True},
        2: {"agrees": False, "program_answer": "4", "program_gold": False},
        3: {"agrees": True, "program_answer": "5", "program_gold": False},
        4: {"agrees": None, "program_answer": None, "program_gold": None, "failure": "error"},
        5: {"agrees": True, "program_answer": "9", "program_gold": False},
    }
    t = label_table(samples, checks, 0.5, 0.9)
    g = t["in_gate"]
    assert t["rows"] == 7 and t["programs"] == 5 and g["rows"] == 4
    assert (g["majority_precision"]["k"], g["majority_precision"]["n"]) == (2, 4)
    assert (g["confirmed_precision"]["k"], g["confirmed_precision"]["n"]) == (1, 2)
    assert (g["confirmed_recall"]["k"], g["confirmed_recall"]["n"]) == (1, 2)
    assert (g["confirmed_share"]["k"], g["confirmed_share"]["n"]) == (2, 4)
    assert (g["program_precision"]["k"], g["program_precision"]["n"]) == (1, 3)
    assert (g["program_accuracy"]["k"], g["program_accuracy"]["n"]) == (1, 4)
    assert (t["outside_gate"]["confirmed_precision"]["k"], t["outside_gate"]["confirmed_precision"]["n"]) == (0, 1)
    bins = {b["bin"]: (b["k"], b["n"]) for b in t["by_solve_rate"]}
    assert bins["0.7-0.8"] == (1, 1) and bins["0.9-1.0"] == (1, 1) and bins["0.2-0.3"] == (0, 1)
    assert sum(n for _, n in bins.values()) == 6 and t["no_valid_answer"]["n"] == 1
    text = format_table(t)
    assert "| majority | precision | 50.0%" in text and "no valid answer | 1 |" in text


def test_pool_table():
    """Where gold is absent: the share of answered pool problems whose program confirmed the majority, by bin and
    in the gate; illegal and unanswered problems are not counted."""
    from opensir_lite.label_quality import format_pool_table, pool_table
    from opensir_lite.pool import ProblemRecord

    records = [
        ProblemRecord(id=1, problem="a", solve_rate=0.75),  # in gate, confirmed
        ProblemRecord(id=2, problem="b", solve_rate=0.625),  # in gate, contradicted
        ProblemRecord(id=3, problem="c", solve_rate=0.5),  # in gate, never checked
        ProblemRecord(id=4, problem="d", solve_rate=1.0),  # above the gate, confirmed
        ProblemRecord(id=5, problem="e", solve_rate=None),  # no valid answer: not counted
        ProblemRecord(id=6, problem="", legal=False),  # illegal: not counted
    ]
    checks = {1: {"agrees": True}, 2: {"agrees": False}, 4: {"agrees": True}}
    t = pool_table(records, checks, 0.5, 0.9)
    assert t["answered"] == 4 and t["checked"] == 3
    assert (t["confirmed"]["k"], t["confirmed"]["n"]) == (2, 4)
    assert t["in_gate"]["rows"] == 3 and t["in_gate"]["checked"] == 2
    assert (t["in_gate"]["confirmed_share"]["k"], t["in_gate"]["confirmed_share"]["n"]) == (1, 3)
    assert "inside the gate [0.5, 0.9]: 3 problems, confirmed 33.3%" in format_pool_table(t)
