"""Labelling rules that use the policy's own programs: which student label training keeps (or changes) given G
answers, their majority vote and k programs written for the same problem (docs/programs.md).

A rule is a small frozen dataclass (:class:`LabelRule`); :func:`apply_rule` turns one problem's answers and program
answers into a label (the index of an answer class, or None: dropped) and says whether it differs from the plain
majority. The family, named before any measurement:

- ``majority``: the plain majority (the paper's label, kept always).
- confirmation: the label is kept when at least ``min_agree`` of the first ``k`` programs print it
  (``min_agree = 1, k = 1`` is ``student_label: program_confirmed`` with a sampled program).
- program majority: kept when the programs' own majority (of their valid answers) is the label, by ``margin``
  votes over the runner-up.
- solve-rate rules: kept only at a solve rate of at least ``min_rate``; or confirmation asked only below
  ``trust_rate`` (labels at or above it kept unconfirmed).
- verified-weighted vote (in the spirit of T3RL): answers a program prints count ``weight`` times, so the label
  can change, not only be dropped; optionally then confirmed.

Program answers are compared with the student's answer classes by math-verify equivalence (a program prints
``15.0`` where a student writes ``15``), as :mod:`opensir_lite.programs` grades them. :func:`rules_table` measures
every rule of :data:`RULES` inside the solvability gate on rows with gold (the label-quality measurement), on two
fixed halves of the rows: the rule is chosen on the ``select`` half by :func:`choose` and reported on the ``held``
half (:func:`half`, fixed before any row was measured). :func:`confirmed_vote` is the test-time protocol: vote
only among answers their program confirms, else the plain majority.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opensir_lite.grading import majority_vote
from opensir_lite.parsing import answers_equal
from opensir_lite.rewards import finite_or_none, in_gate


@dataclass(frozen=True)
class LabelRule:
    """One labelling rule (see the module's docstring); ``k`` programs per problem are its cost."""

    name: str
    k: int = 0  # programs read (the first k)
    min_agree: int = 0  # programs that must print the label (0: none)
    program_majority: bool = False  # the programs' own majority must be the label ...
    margin: int = 1  # ... by at least this many votes over the runner-up
    min_rate: float | None = None  # dropped below this solve rate
    trust_rate: float | None = None  # kept without any program condition at or above this solve rate
    weight: float = 1.0  # answers a program prints count this many times in the vote


# The family measured, in the order of the table (named before the measurement).
RULES: tuple[LabelRule, ...] = (
    LabelRule("majority"),
    LabelRule("confirm 1 of 1", k=1, min_agree=1),
    LabelRule("confirm 1 of 2", k=2, min_agree=1),
    LabelRule("confirm 2 of 2", k=2, min_agree=2),
    LabelRule("confirm 1 of 4", k=4, min_agree=1),
    LabelRule("confirm 2 of 4", k=4, min_agree=2),
    LabelRule("confirm 3 of 4", k=4, min_agree=3),
    LabelRule("confirm 4 of 4", k=4, min_agree=4),
    LabelRule("program majority of 2", k=2, program_majority=True),
    LabelRule("program majority of 4", k=4, program_majority=True),
    LabelRule("program majority of 4, margin 2", k=4, program_majority=True, margin=2),
    LabelRule("solve rate >= 0.625", min_rate=0.625),
    LabelRule("solve rate >= 0.75", min_rate=0.75),
    LabelRule("confirm 1 of 1, solve rate >= 0.625", k=1, min_agree=1, min_rate=0.625),
    LabelRule("confirm 2 of 4, solve rate >= 0.625", k=4, min_agree=2, min_rate=0.625),
    LabelRule("confirm 1 of 1 below solve rate 0.75", k=1, min_agree=1, trust_rate=0.75),
    LabelRule("confirm 2 of 4 below solve rate 0.75", k=4, min_agree=2, trust_rate=0.75),
    LabelRule("weighted x2 by 1", k=1, weight=2.0),
    LabelRule("weighted x4 by 1", k=1, weight=4.0),
    LabelRule("weighted x2 by 4", k=4, weight=2.0),
    LabelRule("weighted x4 by 4", k=4, weight=4.0),
    LabelRule("weighted x4 by 4, confirm 1", k=4, weight=4.0, min_agree=1),
    LabelRule("weighted x4 by 4, confirm 2", k=4, weight=4.0, min_agree=2),
    LabelRule("weighted x4 by 4, program majority", k=4, weight=4.0, program_majority=True),
)
RULES_BY_NAME = {r.name: r for r in RULES}
MIN_KEPT = 0.40  # the goal's floor on the share of right labels kept; :func:`choose` only picks rules above it


def half(source: str, row: int) -> str:
    """``select`` or ``held``: the fixed half of a measured row (the parity of sha256("source:row")'s last byte),
    decided before any row was measured; rules are chosen on ``select`` and reported on ``held``."""
    return "select" if hashlib.sha256(f"{source}:{row}".encode()).digest()[-1] % 2 == 0 else "held"


@dataclass(frozen=True)
class Label:
    """A rule's reading of one problem: ``answer`` (a representative student answer) or None when dropped, its
    answer class, whether it differs from the plain majority, and the programs read."""

    answer: str | None
    cls: int | None
    changed: bool
    confirmations: int


def _agreeing(program_answers: Sequence[str | None], answer: str) -> int:
    return sum(1 for p in program_answers if p is not None and answers_equal(p, answer, "equivalence"))


def apply_rule(
    rule: LabelRule, answers: Sequence[str | None], program_answers: Sequence[str | None], by: str = "string"
) -> Label:
    """The label ``rule`` gives a problem with student ``answers`` (None: no answer) and ``program_answers`` (its
    programs' printed answers in order, None where a program failed; only the first ``rule.k`` are read)."""
    vote = majority_vote(answers, by=by)
    if vote.majority_class is None:
        return Label(None, None, False, 0)
    solve_rate = vote.solve_rate
    reps: dict[int, str] = {}
    sizes: dict[int, int] = {}
    for answer, c in zip(answers, vote.classes, strict=True):
        if c is not None:
            reps.setdefault(c, answer)
            sizes[c] = sizes.get(c, 0) + 1
    programs = list(program_answers[: rule.k])
    confirmations = {c: _agreeing(programs, rep) for c, rep in reps.items()} if programs else dict.fromkeys(reps, 0)
    label = vote.majority_class
    if rule.weight != 1.0 and programs:
        weighted = {c: sizes[c] * (rule.weight if confirmations[c] else 1.0) for c in reps}
        label = max(reps, key=lambda c: (weighted[c], -c))  # ties: the class seen first, as the plain vote
    keep = True
    if rule.trust_rate is None or solve_rate < rule.trust_rate:
        if rule.min_agree and confirmations[label] < rule.min_agree:
            keep = False
        if rule.program_majority:
            valid = [p for p in programs if p is not None]
            pv = majority_vote(valid, by="equivalence")
            top = pv.count
            others = set(pv.classes) - {pv.majority_class, None}
            runner_up = max((sum(1 for c in pv.classes if c == k) for k in others), default=0)
            keep = keep and pv.majority is not None and answers_equal(pv.majority, reps[label], "equivalence") and (
                top - runner_up >= rule.margin)  # fmt: skip
    if rule.min_rate is not None and solve_rate < rule.min_rate:
        keep = False
    if not keep:
        return Label(None, None, False, confirmations[label])
    return Label(reps[label], label, label != vote.majority_class, confirmations[label])


def confirmed_vote(answers: Sequence[str | None], program_answer: str | None, by: str = "string") -> int | None:
    """The test-time protocol's choice among ``answers``: the index of the first answer of the largest class among
    the classes the program's answer confirms (math-verify equivalence), or of the plain majority where the program
    confirms none (or printed nothing); None when no answer is valid."""
    vote = majority_vote(answers, by=by)
    if vote.majority_class is None:
        return None
    chosen = vote.majority_class
    if program_answer is not None:
        sizes: dict[int, int] = {}
        first: dict[int, int] = {}
        for i, c in enumerate(vote.classes):
            if c is not None:
                sizes[c] = sizes.get(c, 0) + 1
                first.setdefault(c, i)
        confirmed = [c for c in sizes if answers_equal(program_answer, answers[first[c]], "equivalence")]
        if confirmed:
            chosen = max(confirmed, key=lambda c: (sizes[c], -c))
    return next(i for i, c in enumerate(vote.classes) if c == chosen)


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) for a binomial share; None for n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def share(successes: int, n: int) -> dict[str, Any]:
    """``{"k", "n", "p", "low", "high"}`` with the Wilson interval (p and the bounds None for n = 0)."""
    interval = wilson(successes, n)
    return {"k": successes, "n": n, "p": successes / n if n else None,
            "low": interval[0] if interval else None, "high": interval[1] if interval else None}  # fmt: skip


def rule_figures(rule: LabelRule, rows: Sequence[Mapping[str, Any]], by: str = "string") -> dict[str, Any]:
    """A rule over measured rows (``answers``, ``right``, ``program_answers``): precision of the labels it keeps,
    the share of right labels it keeps against the plain majority's right labels (above 1 when changed labels are
    right where the majority was not), how many labels it changed, and its programs per problem."""
    kept = right = changed = changed_right = base_right = 0
    for r in rows:
        label = apply_rule(rule, r["answers"], r["program_answers"], by)
        base_right += bool(r["majority_right"])
        if label.cls is None:
            continue
        first = next(i for i, a in enumerate(r["answers"]) if a is not None and a == label.answer)
        ok = bool(r["right"][first])
        kept += 1
        right += ok
        changed += label.changed
        changed_right += label.changed and ok
    return {"rule": rule.name, "programs_per_problem": rule.k, "rows": len(rows), "kept": kept,
            "precision": share(right, kept), "right_kept": right, "majority_right": base_right,
            "kept_share_of_right": right / base_right if base_right else None, "changed": changed,
            "changed_right": changed_right}  # fmt: skip


def choose(figures: Sequence[Mapping[str, Any]], min_kept: float = MIN_KEPT) -> str | None:
    """The rule chosen on the selection half: among rules keeping at least ``min_kept`` of the right labels, the
    highest lower Wilson bound of precision (ties: fewer programs, then the table's order); None when none
    qualifies."""
    ok = [(i, f) for i, f in enumerate(figures) if (f["kept_share_of_right"] or 0) >= min_kept
          and f["precision"]["low"] is not None]  # fmt: skip
    if not ok:
        return None
    return max(ok, key=lambda x: (round(x[1]["precision"]["low"], 12), -x[1]["programs_per_problem"], -x[0]))[1]["rule"]


def measured_rows(
    source: str, samples: Sequence[Mapping[str, Any]], votes: Mapping[int, Mapping[str, Any]], lower: float,
    upper: float,
) -> list[dict[str, Any]]:  # fmt: skip
    """The in-gate rows of one source that have their programs: sample fields, program answers, the half."""
    out = []
    for r in samples:
        v = votes.get(r["row"])
        rate = finite_or_none(r.get("solve_rate"))
        if v is None or not in_gate(rate, lower, upper):
            continue
        out.append({"source": source, "row": r["row"], "answers": r["answers"], "right": r["right"],
                    "majority_right": r["majority_right"], "solve_rate": rate, "program_answers": v["answers"],
                    "half": half(source, r["row"])})  # fmt: skip
    return out


def rules_table(
    sources: Mapping[str, tuple[Sequence[Mapping[str, Any]], Mapping[int, Mapping[str, Any]]]],
    lower: float,
    upper: float,
    by: str = "string",
    rules: Sequence[LabelRule] = RULES,
) -> dict[str, Any]:
    """Every rule on the in-gate rows of ``sources`` (name -> (samples, votes)) that have ``max k`` programs: per
    half and both, the rule chosen on ``select`` and its figures on ``held``, and the majority's and the chosen
    rule's figures per source."""
    need = max(r.k for r in rules)
    rows = [r for name, (samples, votes) in sources.items() for r in measured_rows(name, samples, votes, lower, upper)
            if len(r["program_answers"]) >= need]  # fmt: skip
    halves = {h: [r for r in rows if r["half"] == h] for h in ("select", "held")}
    table = {h: [rule_figures(rule, part, by) for rule in rules] for h, part in halves.items()}
    table["all"] = [rule_figures(rule, rows, by) for rule in rules]
    chosen = choose(table["select"])
    held = next((f for f in table["held"] if f["rule"] == chosen), None)
    by_source = {
        name: [rule_figures(RULES_BY_NAME[n], [r for r in rows if r["source"] == name], by)
               for n in dict.fromkeys(["majority", *([chosen] if chosen else [])])]
        for name in sources
    }  # fmt: skip
    return {"gate": [lower, upper], "rows": len(rows), "rows_by_half": {h: len(p) for h, p in halves.items()},
            "rows_by_source": {n: sum(r["source"] == n for r in rows) for n in sources}, "min_kept": MIN_KEPT,
            "rules": [asdict(r) for r in rules], "table": table, "chosen": chosen, "held": held,
            "by_source": by_source, "goal": goal_verdict(held)}  # fmt: skip


def goal_verdict(figures: Mapping[str, Any] | None) -> dict[str, Any]:
    """The goal on the held half: precision >= 90% with the lower Wilson bound above 80%, keeping >= 40% of
    the right labels."""
    if not figures or figures["precision"]["p"] is None:
        return {"met": False, "why": "no rule qualified on the selection half"}
    p, low, kept = figures["precision"]["p"], figures["precision"]["low"], figures["kept_share_of_right"] or 0.0
    checks = {"precision >= 0.90": p >= 0.90, "lower bound > 0.80": low > 0.80, "kept >= 0.40": kept >= MIN_KEPT}
    return {"met": all(checks.values()), "checks": checks}


def format_share(s: Mapping[str, Any]) -> str:
    """A :func:`share` as "p% [low, high] (k/n)", "-" for n = 0."""
    if not s["n"]:
        return "-"
    return f"{100 * s['p']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}] ({s['k']}/{s['n']})"


def format_rules(table: Mapping[str, Any]) -> str:
    """The rules table as Markdown: every rule on both halves, then the chosen rule on the held half."""
    lines = [f"{table['rows']} in-gate rows ({', '.join(f'{n} {k}' for n, k in table['rows_by_source'].items())}); "
             f"select {table['rows_by_half']['select']}, held {table['rows_by_half']['held']}", "",
             "| rule | programs | select: precision [Wilson 95%] | kept | held: precision [Wilson 95%] | kept | "
             "changed (right) |", "|---|---:|---|---:|---|---:|---:|"]  # fmt: skip
    for s, h in zip(table["table"]["select"], table["table"]["held"], strict=True):
        kept = [
            f"{100 * f['kept_share_of_right']:.0f}%" if f["kept_share_of_right"] is not None else "-" for f in (s, h)
        ]
        lines.append(f"| {s['rule']} | {s['programs_per_problem']} | {format_share(s['precision'])} | {kept[0]} | "
                     f"{format_share(h['precision'])} | {kept[1]} | {s['changed'] + h['changed']} "
                     f"({s['changed_right'] + h['changed_right']}) |")  # fmt: skip
    held = table["held"]
    lines += ["", "| source (both halves) | rule | precision [Wilson 95%] | right labels kept |", "|---|---|---|---:|"]
    for source, figures in table["by_source"].items():
        for f in figures:
            kept = f"{100 * f['kept_share_of_right']:.0f}%" if f["kept_share_of_right"] is not None else "-"
            lines.append(f"| {source} | {f['rule']} | {format_share(f['precision'])} | {kept} |")
    lines += ["", f"chosen on the selection half: {table['chosen']}"]
    if held:
        lines.append(f"on the held half: precision {format_share(held['precision'])}, right labels kept "
                     f"{100 * (held['kept_share_of_right'] or 0):.1f}%; goal met: {table['goal']['met']}")  # fmt: skip
    return "\n".join(lines)
