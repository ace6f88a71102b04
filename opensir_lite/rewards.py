"""OpenSIR rewards as TRL reward functions: ``(completions, **columns) -> list[float | None]``.

Each function returns None for rows of the other role, so TRL's weighted ``nansum`` sees one role per row; the
function name is the metric name (``rewards/<name>/mean``). Values that need the student round (solve rate,
novelty, student lengths, majority answer) arrive as columns computed upstream by the round. The four teacher
rewards (:func:`make_teacher_rewards`) are computed once per round (:func:`opensir_lite.round.score`); TRL's teacher
reward functions read those values back from the rows (:func:`make_reward_funcs`). The scalar formulas are plain
functions so that selection, the pool records and the tests share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from opensir_lite.parsing import has_final_answer_line, has_think_block, tag_span
from opensir_lite.prompts import CONCEPTS_TAG, PROBLEM_TAG, THINK_TAG

TEACHER = "teacher"
STUDENT = "student"
PAD = "pad"  # filler rows (no legal problem to train the student on); every reward is None, loss-masked

RewardFunc = Callable[..., list[float | None]]

FORMAT_CREDITS = ("official", "partial")  # teacher_format: the official all-or-nothing, or a third per tag pair
GATE_LOWER = 0.5  # the paper's solvability gate: lowest rewarded solve rate
GATE_UPPER = 0.9  # the paper's solvability gate: highest rewarded solve rate
STUDENT_FORMAT_GATES = ("none", "accuracy_variance")  # student_format: always (paper), or where accuracy varies


# ---- scalar formulas --------------------------------------------------------------------------------------
def finite_or_none(value: object) -> float | None:
    """``value`` as a float when it is a finite number, else None (NaN, inf, strings and None are no value)."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def solve_rate_levels(lower: float, upper: float, num_generations: int) -> list[float]:
    """L = {i/G : i = 1..G, lower <= i/G <= upper}: the solve rates G samples can produce inside the gate."""
    eps = 1e-9
    return [
        i / num_generations for i in range(1, num_generations + 1) if lower - eps <= i / num_generations <= upper + eps
    ]


def in_gate(solve_rate: float | None, lower: float = GATE_LOWER, upper: float = GATE_UPPER) -> bool:
    """The solvability gate: a solve rate in [lower, upper], both ends closed (None is outside)."""
    return solve_rate is not None and lower - 1e-9 <= solve_rate <= upper + 1e-9


def solvability_score(
    solve_rate: float | None, lower: float = GATE_LOWER, upper: float = GATE_UPPER, num_generations: int = 8
) -> float:
    """0 outside [lower, upper]; inside, 1.0 at the midpoint falling linearly to 1/|L| at both limits."""
    solve_rate = finite_or_none(solve_rate)
    if solve_rate is None or solve_rate < lower - 1e-9 or solve_rate > upper + 1e-9:
        return 0.0
    levels = solve_rate_levels(lower, upper, num_generations)
    floor = 1.0 / len(levels) if levels else 1.0
    midpoint = (lower + upper) / 2
    half_range = midpoint - lower
    distance = min(abs(solve_rate - midpoint) / half_range, 1.0) if half_range > 0 else 0.0
    return 1.0 - (1.0 - floor) * distance


def partial_format_score(text: str) -> float:
    """A third for each of the ``<think>``, ``<problem>`` and ``<concepts>`` tag pairs present (closed)."""
    return sum(tag_span(text, tag) is not None for tag in (THINK_TAG, PROBLEM_TAG, CONCEPTS_TAG)) / 3


def response_length_score(mean_tokens: float | None, cap: float | None = 1000.0, baseline: float = 1000.0) -> float:
    """min(mean student completion length, cap) / baseline; 0 when there is no length."""
    mean_tokens = finite_or_none(mean_tokens)
    if mean_tokens is None or mean_tokens <= 0:
        return 0.0
    if cap:
        mean_tokens = min(mean_tokens, cap)
    return mean_tokens / baseline


def combined_score(
    difficulty: float, diversity: float, difficulty_weight: float = 1.0, diversity_weight: float = 1.0
) -> float:
    """The score used to pick teacher groups (by variance) and student problems (best first)."""
    return difficulty_weight * difficulty + diversity_weight * diversity


# ---- TRL reward functions ---------------------------------------------------------------------------------
def _text(completion: object) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return "" if completion is None else str(completion)


def _col(completions: Sequence, value: object) -> list:
    """A column as one value per row (a scalar is broadcast)."""
    return list(value) if isinstance(value, list | tuple) else [value] * len(completions)


def make_teacher_rewards(
    lower: float = GATE_LOWER,
    upper: float = GATE_UPPER,
    num_generations: int = 8,
    length_cap: float | None = 1000.0,
    length_baseline: float = 1000.0,
    format_credit: str = "official",
) -> list[RewardFunc]:
    """The four teacher rewards [solvability, diversity, teacher_format, response_length]; illegal rows score 0
    (with ``format_credit="partial"``, teacher_format pays a third per tag pair, legal or not), and a row marked
    ``near_duplicate``, or whose ``label_confirmed`` is False (``student_label: program_confirmed``: no program
    confirmed the majority answer), earns no solvability."""
    if format_credit not in FORMAT_CREDITS:
        raise ValueError(f"format_credit must be one of {', '.join(FORMAT_CREDITS)}, got {format_credit!r}")

    def solvability(
        completions, role=None, legal=None, solve_rate=None, near_duplicate=None, label_confirmed=None, **_
    ) -> list[float | None]:
        roles, legals, rates, dups, confirmed = (
            _col(completions, v) for v in (role, legal, solve_rate, near_duplicate, label_confirmed)
        )
        return [
            (solvability_score(sr, lower, upper, num_generations) if ok and not dup and conf is not False else 0.0)
            if r == TEACHER
            else None
            for r, ok, sr, dup, conf in zip(roles, legals, rates, dups, confirmed, strict=True)
        ]

    def diversity(completions, role=None, legal=None, novelty=None, **_) -> list[float | None]:
        roles, legals, novs = (_col(completions, v) for v in (role, legal, novelty))
        return [
            ((finite_or_none(nv) or 0.0) if ok else 0.0) if r == TEACHER else None
            for r, ok, nv in zip(roles, legals, novs, strict=True)
        ]

    def teacher_format(completions, role=None, legal=None, teacher_prefill=None, **_) -> list[float | None]:
        roles, legals, prefills = (_col(completions, v) for v in (role, legal, teacher_prefill))
        if format_credit == "partial":
            return [
                partial_format_score((pre or "") + _text(c)) if r == TEACHER else None
                for c, r, pre in zip(completions, roles, prefills, strict=True)
            ]
        return [
            (float(bool(ok) and has_think_block((pre or "") + _text(c)))) if r == TEACHER else None
            for c, r, ok, pre in zip(completions, roles, legals, prefills, strict=True)
        ]

    def response_length(completions, role=None, legal=None, mean_student_tokens=None, **_) -> list[float | None]:
        roles, legals, lengths = (_col(completions, v) for v in (role, legal, mean_student_tokens))
        return [
            (response_length_score(n, length_cap, length_baseline) if ok else 0.0) if r == TEACHER else None
            for r, ok, n in zip(roles, legals, lengths, strict=True)
        ]

    return [solvability, diversity, teacher_format, response_length]


def accuracy(completions, role=None, in_majority=None, **_) -> list[float | None]:
    """Student: 1 when the row's answer is in the majority class of its group's vote (``Vote.agrees``, the same
    classes the solve rate counts), else 0 (no answer = 0)."""
    roles, agrees = (_col(completions, v) for v in (role, in_majority))
    return [float(bool(a)) if r == STUDENT else None for r, a in zip(roles, agrees, strict=True)]


def student_format(completions, role=None, format_scored=None, **_) -> list[float | None]:
    """Student: 1 when the completion has the boxed final-answer line. None (no score) where the column
    ``format_scored`` is False: with ``student_format_gate: accuracy_variance`` the rollout sets it False for every
    row of a group whose accuracy reward does not vary, so the format reward never makes an advantage alone."""
    roles = _col(completions, role)
    scored = _col(completions, True) if format_scored is None else _col(completions, format_scored)
    return [
        float(has_final_answer_line(_text(c))) if r == STUDENT and s is not False else None
        for c, r, s in zip(completions, roles, scored, strict=True)
    ]


def format_scored_column(accuracy: Sequence[float], num_generations: int, gate: str) -> list[bool]:
    """The ``format_scored`` column of student rows (consecutive groups of ``num_generations``): True everywhere
    for gate 'none'; for 'accuracy_variance' True only in groups whose accuracy values are not all equal."""
    if gate not in STUDENT_FORMAT_GATES:
        raise ValueError(f"student_format_gate must be one of {', '.join(STUDENT_FORMAT_GATES)}, got {gate!r}")
    out: list[bool] = []
    for start in range(0, len(accuracy), num_generations):
        group = [float(a) for a in accuracy[start : start + num_generations]]
        varies = max(group) != min(group) if group else False
        out += [gate == "none" or varies] * len(group)
    return out


def gold_accuracy(completions, role=None, correct=None, **_) -> list[float | None]:
    """Student of the gold-label control: 1 when the row's answer equals the labelled answer (``correct``,
    graded upstream by :mod:`opensir_lite.control`), else 0."""
    roles, rights = (_col(completions, v) for v in (role, correct))
    return [float(bool(c)) if r == STUDENT else None for r, c in zip(roles, rights, strict=True)]


def make_gold_reward_funcs() -> list[RewardFunc]:
    """The gold-label control's two reward functions, in the order of ``student_reward_weights``."""
    return [gold_accuracy, student_format]


def round_teacher_reward(name: str) -> RewardFunc:
    """The TRL reward function ``name`` of a teacher reward: it reads the value the round computed once (the row's
    ``teacher_rewards`` column, :func:`opensir_lite.round.score`) for teacher rows, None for the others."""

    def reward(completions, role=None, teacher_rewards=None, **_) -> list[float | None]:
        roles, values = (_col(completions, v) for v in (role, teacher_rewards))
        return [float(v[name]) if r == TEACHER and v is not None else None for r, v in zip(roles, values, strict=True)]

    reward.__name__ = reward.__qualname__ = name  # the metric name: rewards/<name>/mean
    return reward


def make_reward_funcs() -> list[RewardFunc]:
    """All six reward functions in the order of ``reward_weights``: the four teacher rewards as the round computed
    them (``teacher_rewards`` column), then the two student rewards."""
    return [*(round_teacher_reward(name) for name in TEACHER_REWARD_NAMES), accuracy, student_format]


TEACHER_REWARD_NAMES = ["solvability", "diversity", "teacher_format", "response_length"]
STUDENT_REWARD_NAMES = ["accuracy", "student_format"]


# ---- what GRPO does with the rewards ----------------------------------------------------------------------
def group_advantages(
    rewards_per_func: Sequence[Sequence[float | None]],
    num_generations: int,
    weights: Sequence[float] | None = None,
    scale: bool = True,
) -> list[float]:
    """The advantages TRL's GRPOTrainer computes (``multi_objective_aggregation="sum_then_normalize"``,
    ``scale_rewards="group"`` or ``"none"``), for showing them: per row the weighted sum of the functions that
    scored it, then per group of ``num_generations`` rows ``(r - mean) / (std + 1e-4)`` with the unbiased std.
    A row no function scored (a filler row) gets advantage 0 and is left out of its group's statistics."""
    import numpy as np

    values = np.array([[np.nan if v is None else float(v) for v in row] for row in rewards_per_func], dtype=float)
    if values.size == 0:
        return []
    if values.shape[0] % num_generations:
        raise ValueError(f"{values.shape[0]} rows do not form groups of {num_generations}")
    w = np.ones(values.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    unscorable = np.isnan(values).all(axis=1)
    totals = np.nansum(values * w, axis=1)
    totals[unscorable] = np.nan
    advantages = np.zeros_like(totals)
    for start in range(0, len(totals), num_generations):
        group = totals[start : start + num_generations]
        scored = group[~np.isnan(group)]
        if scored.size == 0:
            continue
        mean = scored.mean()
        std = scored.std(ddof=1) if scored.size > 1 else 0.0
        adv = group - mean
        if scale:
            adv = adv / (std + 1e-4)
        advantages[start : start + num_generations] = np.where(np.isnan(group), 0.0, adv)
    return [float(a) for a in advantages]


def format_advantage_share(
    accuracy: Sequence[float],
    fmt: Sequence[float | None],
    num_generations: int,
    weights: Sequence[float] = (1.0, 0.1),
    scale: bool = True,
) -> dict[str, float | int | None]:
    """How much of the student rows' |advantage| the format reward makes, under TRL's group advantages.

    Per group of ``num_generations`` rows the advantage of a row is ``(w_a (a - mean a) + w_f (f - mean f)) / d``
    with ``d`` the std of the weighted totals plus 1e-4 (``scale``, TRL's ``scale_rewards: group``) or 1
    (``none``); a format value of None (the gate) counts as no format term. Returns the format share of
    sum |format term| + sum |accuracy term| (None when no group has an advantage), the number of groups whose only
    variance is the format reward (``format_only_groups``) and of groups whose accuracy varies, and the two sums
    (``format_abs``, ``accuracy_abs``: shares of several rounds or ranks combine through them)."""
    import numpy as np

    w_a, w_f = float(weights[0]), float(weights[1])
    fmt_abs = acc_abs = 0.0
    format_only = acc_groups = 0
    for start in range(0, len(accuracy), num_generations):
        a = np.asarray(accuracy[start : start + num_generations], dtype=float)
        f = np.asarray([0.0 if v is None else float(v) for v in fmt[start : start + num_generations]], dtype=float)
        has_f = any(v is not None for v in fmt[start : start + num_generations])
        a_term = w_a * (a - a.mean())
        f_term = w_f * (f - f.mean()) if has_f else np.zeros_like(f)
        total = w_a * a + (w_f * f if has_f else 0.0)
        d = (total.std(ddof=1) if len(total) > 1 else 0.0) + 1e-4 if scale else 1.0
        acc_varies = bool(np.ptp(a) > 0)
        acc_groups += acc_varies
        format_only += (not acc_varies) and bool(np.ptp(f_term) > 0)
        fmt_abs += float(np.abs(f_term / d).sum())
        acc_abs += float(np.abs(a_term / d).sum())
    whole = fmt_abs + acc_abs
    return {
        "format_share": fmt_abs / whole if whole > 1e-9 else None,
        "format_only_groups": format_only,
        "accuracy_variance_groups": acc_groups,
        "format_abs": fmt_abs,
        "accuracy_abs": acc_abs,
    }
