"""Comparing two evaluations of the same rows: per benchmark, protocol and metric, the paired difference with its
standard error and McNemar's p; evaluations of different rows are refused, not paired.
"""

from __future__ import annotations

import math
from typing import Any

from opensir_lite.evaluation.benchmarks import BenchmarkError
from opensir_lite.evaluation.runner import MACRO, _protocol_tables
from opensir_lite.evaluation.stats import paired_difference, question_values


def paired_rows(bench: str, base: dict[int, dict], other: dict[int, dict]) -> list[int]:
    """The row indices both evaluations graded; a one-line :class:`BenchmarkError` when the row sets differ."""
    if set(base) != set(other):
        only_base, only_other = len(set(base) - set(other)), len(set(other) - set(base))
        raise BenchmarkError(
            f"cannot pair {bench}: the two evaluations graded different rows ({len(base)} and {len(other)} rows; "
            f"{only_base} only in the first, {only_other} only in the second): evaluate both with the same "
            "--limit and --seed"
        )
    return sorted(base)


def _per_question(samples: dict[int, dict], rows: list[int], protocol: str, settings: dict) -> dict[str, list]:
    graded = [samples[i]["by_protocol"][protocol] for i in rows]
    k = settings.get("k") or settings.get("n") or len(graded[0]["correct"])
    return question_values([g["correct"] for g in graded], [g["answers"] for g in graded], k)


def _distinct_metrics(table: dict[str, float]) -> list[str]:
    """The metrics of a protocol's table worth a row: with one sample per question (n = 1, so k = 1) avg@1, pass@1
    and maj@1 are the same number, so only avg@1 is shown."""
    names = [name for name in table if not name.endswith("_se")]
    if "avg@1" in names and all(name.endswith("@1") for name in names):
        return ["avg@1"]
    return names


def compare_results(
    base: dict[str, Any],
    other: dict[str, Any],
    base_samples: dict[str, dict[int, dict]] | None = None,
    other_samples: dict[str, dict[int, dict]] | None = None,
) -> str:
    """Deltas (other - base) per benchmark, protocol and metric: the unpaired difference with the standard error of
    the difference and z; with both evaluations' samples, also the paired difference on the same rows, its
    standard error, z, the discordant rows (b: right only in base, c: right only in other) and the exact McNemar
    p-value (for 0/1 metrics). Refuses, in one line, to pair evaluations whose row sets differ."""
    paired = base_samples is not None and other_samples is not None
    head = f"{'benchmark':<15}{'protocol':<9}{'metric':<10}{'base':>8}{'other':>8}{'delta':>8}{'± se':>8}{'z':>7}"
    lines = [head + (f"{'paired':>9}{'± se':>7}{'z':>7}{'b':>5}{'c':>5}{'McNemar p':>11}" if paired else "")]
    for bench in base:
        if bench not in other:
            continue
        theirs = _protocol_tables(other[bench])
        rows = None
        if paired and bench != MACRO:
            if bench not in base_samples or bench not in other_samples:
                raise BenchmarkError(f"cannot pair {bench}: its samples are missing from samples.jsonl")
            rows = paired_rows(bench, base_samples[bench], other_samples[bench])
        for proto, table in _protocol_tables(base[bench]).items():
            if proto not in theirs:
                continue
            per_q = None
            if rows is not None:
                per_q = (_per_question(base_samples[bench], rows, proto, base[bench].get("settings", {})),
                         _per_question(other_samples[bench], rows, proto, other[bench].get("settings", {})))  # fmt: skip
            for name, value in table.items():
                if name.endswith("_se") or name not in theirs[proto] or name not in _distinct_metrics(table):
                    continue
                v2 = theirs[proto][name]
                se = math.hypot(table.get(name + "_se", 0.0), theirs[proto].get(name + "_se", 0.0))
                z = f"{(v2 - value) / se:>+7.1f}" if se > 0 else f"{'-':>7}"
                line = (
                    f"{bench:<15}{proto:<9}{name:<10}{100 * value:>7.1f}%{100 * v2:>7.1f}%{100 * (v2 - value):>+7.1f}"
                    f"{100 * se:>8.1f}{z}"
                )
                if per_q is not None and name in per_q[0] and name in per_q[1]:
                    d = paired_difference(per_q[0][name], per_q[1][name])
                    pz = f"{d['z']:>+7.1f}" if d["z"] is not None else f"{'-':>7}"
                    counts = (f"{d['b']:>5}{d['c']:>5}{d['p']:>11.4f}" if d["p"] is not None
                              else f"{'-':>5}{'-':>5}{'-':>11}")  # fmt: skip
                    line += f"{100 * d['delta']:>+9.1f}{100 * d['se']:>7.1f}{pz}{counts}"
                lines.append(line)
    return "\n".join(lines)
