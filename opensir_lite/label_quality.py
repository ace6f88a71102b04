"""How often the student's training label is right where training uses it: the measurement behind
``student_label: program_confirmed`` (scripts/label_quality.py, docs/programs.md).

Training trains the student only on problems whose solve rate falls in the gate, so the figure that matters is
P(majority = gold | solve rate in the gate). This module owns that table: rows by solve-rate bin with Wilson
intervals, and inside the gate the precision of the majority label, of the program-confirmed label (program answer
equal to the majority) and of the program's answer alone, and the filter's recall (the share of the right in-gate
majorities it keeps). Inputs are plain rows (the label probe's per-row readings, the program check's rows), so the
statistics need no model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from opensir_lite.evaluation.benchmarks import Item
from opensir_lite.pool import ProblemPool

SOLVE_RATE_BINS = 10  # the metrics' and the explorer's histogram bins over [0, 1]
GATE_EPS = 1e-9  # the gate's closed ends, as the round tests them


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) for a binomial share; None for n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def share(successes: int, n: int) -> dict[str, Any]:
    """``{"k", "n", "p", "low", "high"}`` with the Wilson interval (p and the bounds None for n = 0)."""
    interval = wilson(successes, n)
    return {"k": successes, "n": n, "p": successes / n if n else None,
            "low": interval[0] if interval else None, "high": interval[1] if interval else None}  # fmt: skip


def pool_gold_items(pool_path: str, benchmark_items: Sequence[Item], rows: int) -> list[Item]:
    """The benchmark rows whose question the pool holds, in the pool's order, the first ``rows`` of them (their
    gold may be read for measurement, never for training)."""
    by_question = {it.question.strip(): it for it in benchmark_items}
    pool = ProblemPool.from_jsonl(pool_path)
    out = [by_question[r.problem.strip()] for r in pool.history if r.problem.strip() in by_question]
    return out[:rows] if rows else out


def in_gate(rate: float | None, lower: float, upper: float) -> bool:
    """The round's gate: a solve rate in [lower, upper] (closed)."""
    return rate is not None and lower - GATE_EPS <= rate <= upper + GATE_EPS


def solve_rate(sample_row: Mapping[str, Any]) -> float | None:
    """The majority's share of the valid answers of one probe reading, as the vote computed it (None without a
    valid answer)."""
    rate = sample_row.get("solve_rate")
    return None if rate is None else float(rate)


def label_table(
    samples: Sequence[Mapping[str, Any]],
    checks: Mapping[int, Mapping[str, Any]],
    lower: float,
    upper: float,
    bins: int = SOLVE_RATE_BINS,
) -> dict[str, Any]:
    """The label-quality table of probe readings ``samples`` (rows with ``row``, ``answers``, ``right``,
    ``majority``, ``majority_right`` and optionally ``solve_rate``) and program checks keyed by the same row."""
    bin_rows = [{"bin": f"{i / bins:.1f}-{(i + 1) / bins:.1f}", "k": 0, "n": 0} for i in range(bins)]
    none = {"k": 0, "n": 0}
    gate = {"rows": 0, "majority_right": 0, "confirmed": 0, "confirmed_right": 0, "program_answer": 0,
            "program_right": 0}  # fmt: skip
    outside = {"rows": 0, "confirmed": 0, "confirmed_right": 0}
    for row in samples:
        rate = solve_rate(row)
        right = bool(row.get("majority_right"))
        if rate is None:
            none["n"] += 1
        else:
            b = bin_rows[min(int(rate * bins), bins - 1)]
            b["n"] += 1
            b["k"] += right
        check = checks.get(row["row"]) or {}
        confirmed = bool(check.get("agrees"))
        if in_gate(rate, lower, upper):
            gate["rows"] += 1
            gate["majority_right"] += right
            gate["confirmed"] += confirmed
            gate["confirmed_right"] += confirmed and right
            gate["program_answer"] += check.get("program_answer") is not None
            gate["program_right"] += bool(check.get("program_gold"))
        elif rate is not None:
            outside["rows"] += 1
            outside["confirmed"] += confirmed
            outside["confirmed_right"] += confirmed and right
    g = gate
    return {
        "rows": len(samples),
        "programs": sum(1 for row in samples if row["row"] in checks),
        "gate": [lower, upper],
        "majority_gold": share(sum(bool(r.get("majority_right")) for r in samples), len(samples)),
        "by_solve_rate": [{**b, **share(b["k"], b["n"])} for b in bin_rows],
        "no_valid_answer": share(none["k"], none["n"]),
        "in_gate": {
            "rows": g["rows"],
            "majority_precision": share(g["majority_right"], g["rows"]),
            "confirmed_precision": share(g["confirmed_right"], g["confirmed"]),
            "confirmed_recall": share(g["confirmed_right"], g["majority_right"]),
            "confirmed_share": share(g["confirmed"], g["rows"]),
            "program_precision": share(g["program_right"], g["program_answer"]),
            "program_accuracy": share(g["program_right"], g["rows"]),
        },
        "outside_gate": {
            "rows": outside["rows"],
            "confirmed_precision": share(outside["confirmed_right"], outside["confirmed"]),
        },
    }


def pool_table(
    records: Sequence[Any],
    checks: Mapping[int, Mapping[str, Any]],
    lower: float,
    upper: float,
    bins: int = SOLVE_RATE_BINS,
) -> dict[str, Any]:
    """A self-play pool, where gold is absent: the share of answered problems whose program confirmed the majority
    (``agrees``), by solve-rate bin and inside the gate (the teacher's solvability judgement under
    ``student_label: program_confirmed``). ``records`` are pool records (``legal``, ``solve_rate``, ``id``)."""
    answered = [r for r in records if r.legal and r.solve_rate is not None]
    bin_rows = [{"bin": f"{i / bins:.1f}-{(i + 1) / bins:.1f}", "k": 0, "n": 0} for i in range(bins)]
    gate = {"k": 0, "n": 0, "checked": 0}
    for r in answered:
        confirmed = bool((checks.get(r.id) or {}).get("agrees"))
        b = bin_rows[min(int(r.solve_rate * bins), bins - 1)]
        b["n"] += 1
        b["k"] += confirmed
        if in_gate(r.solve_rate, lower, upper):
            gate["n"] += 1
            gate["k"] += confirmed
            gate["checked"] += r.id in checks
    return {
        "answered": len(answered),
        "checked": sum(r.id in checks for r in answered),
        "gate": [lower, upper],
        "confirmed": share(sum(bool((checks.get(r.id) or {}).get("agrees")) for r in answered), len(answered)),
        "by_solve_rate": [{**b, **share(b["k"], b["n"])} for b in bin_rows],
        "in_gate": {"rows": gate["n"], "checked": gate["checked"], "confirmed_share": share(gate["k"], gate["n"])},
    }


def format_pool_table(table: Mapping[str, Any]) -> str:
    """The pool table as Markdown."""
    lo, hi = table["gate"]
    lines = [f"{table['answered']} answered problems, {table['checked']} checked; confirmed by their program "
             f"{_fmt(table['confirmed'])}", "", "| solve rate | problems | confirmed by the program [Wilson 95%] |",
             "|---|---:|---|"]  # fmt: skip
    lines += [f"| {b['bin']} | {b['n']} | {_fmt(b)} |" for b in table["by_solve_rate"]]
    g = table["in_gate"]
    lines += ["", f"inside the gate [{lo}, {hi}]: {g['rows']} problems, confirmed {_fmt(g['confirmed_share'])}"]
    return "\n".join(lines)


def _fmt(s: Mapping[str, Any]) -> str:
    if not s["n"]:
        return "-"
    return f"{100 * s['p']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}] ({s['k']}/{s['n']})"


def format_table(table: Mapping[str, Any]) -> str:
    """The table as Markdown (what docs/programs.md quotes)."""
    lines = [f"{table['rows']} rows, {table['programs']} with a program; P(majority = gold) "
             f"{_fmt(table['majority_gold'])}", "", "| solve rate | rows | P(majority = gold) [Wilson 95%] |",
             "|---|---:|---|"]  # fmt: skip
    for b in table["by_solve_rate"]:
        lines.append(f"| {b['bin']} | {b['n']} | {_fmt(b)} |")
    lines.append(f"| no valid answer | {table['no_valid_answer']['n']} | {_fmt(table['no_valid_answer'])} |")
    g = table["in_gate"]
    lo, hi = table["gate"]
    lines += [
        "",
        f"inside the gate [{lo}, {hi}]: {g['rows']} rows",
        "",
        "| label | figure | value [Wilson 95%] |",
        "|---|---|---|",
        f"| majority | precision | {_fmt(g['majority_precision'])} |",
        f"| program-confirmed majority | precision | {_fmt(g['confirmed_precision'])} |",
        f"| program-confirmed majority | recall of right majorities | {_fmt(g['confirmed_recall'])} |",
        f"| program-confirmed majority | share of in-gate rows kept | {_fmt(g['confirmed_share'])} |",
        f"| program alone | precision (rows with a program answer) | {_fmt(g['program_precision'])} |",
        f"| program alone | accuracy (all in-gate rows) | {_fmt(g['program_accuracy'])} |",
    ]
    return "\n".join(lines)
