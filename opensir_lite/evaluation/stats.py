"""Statistics of graded samples: pass@k (unbiased), avg@n and maj@k per question with standard errors, the paired
difference of two evaluations of the same rows, and McNemar's exact test.
"""

from __future__ import annotations

import math

import numpy as np

from opensir_lite.grading import majority_vote


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return 0.0, 0.0
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def question_values(corrects: list[list[bool]], answers: list[list[str | None]], k: int) -> dict[str, list[float]]:
    """Each question's avg@n, pass@k and maj@k (first k samples): the values that :func:`score_questions` averages
    and a paired comparison differences. maj@k is right when the majority class of the first k answers holds a
    correct answer (the class is right or wrong as a whole)."""
    n = len(corrects[0]) if corrects else 0
    k = max(1, min(k, n)) if n else 1
    avg = [sum(c) / len(c) for c in corrects]
    passk = [pass_at_k(len(c), sum(c), k) for c in corrects]
    majk = []
    for ans, cor in zip(answers, corrects, strict=True):
        vote = majority_vote(ans[:k])
        first = next((i for i in range(len(vote.classes)) if vote.agrees(i)), None)
        majk.append(float(first is not None and cor[first]))
    return {f"avg@{n}": avg, f"pass@{k}": passk, f"maj@{k}": majk}


def score_questions(corrects: list[list[bool]], answers: list[list[str | None]], k: int) -> dict:
    """avg@n, pass@k and maj@k (first k samples) with standard errors over questions."""
    out = {}
    for name, values in question_values(corrects, answers, k).items():
        mean, se = _mean_se(values)
        out[name], out[f"{name}_se"] = mean, se
    return out


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c discordant pairs at 1/2 (1.0 when
    there is no discordant pair)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_difference(base: list[float], other: list[float]) -> dict[str, float | int | None]:
    """other - base on the same questions: the mean difference with its standard error (of the per-question
    differences) and, when every value is 0 or 1, the discordant counts (b: right only in base, c: right only in
    other) and the exact McNemar p-value; None where undefined."""
    if len(base) != len(other):
        raise ValueError(f"paired values need the same questions: {len(base)} vs {len(other)}")
    diff = [o - b for b, o in zip(base, other, strict=True)]
    delta, se = _mean_se(diff)
    out: dict[str, float | int | None] = {"delta": delta, "se": se, "z": delta / se if se > 0 else None,
                                          "b": None, "c": None, "p": None}  # fmt: skip
    if all(v in (0.0, 1.0) for v in (*base, *other)):
        b = sum(1 for x, y in zip(base, other, strict=True) if x == 1.0 and y == 0.0)
        c = sum(1 for x, y in zip(base, other, strict=True) if x == 0.0 and y == 1.0)
        out.update(b=b, c=c, p=mcnemar_exact_p(b, c))
    return out
