"""The program check: the policy writes a short Python program for a problem, the sandbox runs it, and the answer it
prints is held against the student majority (and, where a gold answer exists, against gold) with the grader that
grades everything else.

Stages, each a small function: :func:`write_programs` (the program prompt, one greedy completion per problem,
batched by :func:`opensir_lite.generation.generate`) -> :func:`run_programs` (``parsing.extract_program`` -> the
sandbox -> the last printed line) -> :func:`grade_program` (``answers_equal`` against the majority, ``gold_matches``
against gold) -> one :class:`ProgramCheck` per problem. ``scripts/check_programs.py`` runs them over a run's pool
(or the label probe) and writes ``program_checks.jsonl``, which the explorer shows as a column and a filter; the
optional per-round measurement (``program_check: true``) puts the same fields in the round evidence and
``programs/...`` in ``metrics.jsonl``. Nothing here feeds a reward or a filter.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opensir_lite.generation import Completion, SamplingSettings, generate
from opensir_lite.parsing import answers_equal, extract_program, gold_matches, is_math_expression, normalise_answer
from opensir_lite.pool import atomic_write_text, read_rows_by_id
from opensir_lite.prompts import program_messages, render
from opensir_lite.sandbox import FAILURES, ProgramResult, SandboxLimits, run_program

PROGRAM_CHECKS_FILE = "program_checks.jsonl"
# Why a problem has no program answer: no closed code block, any way the sandbox ended it, or a printed line that
# is no answer (not maths by the official test that student answers pass, or unreadable by the grader).
CHECK_FAILURES = ("no_program", *FAILURES, "no_answer")
MAX_STORED_PROGRAM_CHARS = 2000  # the program text kept per check


@dataclass
class ProgramCheck:
    """One problem's program check. ``agrees``: the program answer equals the student majority (None when either is
    missing); ``program_gold`` / ``majority_gold``: each equals the gold answer (None without gold)."""

    id: int
    problem: str
    majority_answer: str | None
    program_answer: str | None = None
    agrees: bool | None = None
    failure: str | None = None
    seconds: float = 0.0  # sandbox wall-clock
    tokens: int = 0  # the program completion's tokens
    program: str | None = None
    gold: str | None = None
    program_gold: bool | None = None
    majority_gold: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_programs(
    model,
    tokenizer,
    problems: Sequence[str],
    max_new_tokens: int = 384,
    max_batch: int = 0,
    use_system_prompt: bool = True,
    sample: Callable[..., list[Completion]] | None = None,
    num_programs: int = 1,
    sampling: SamplingSettings | None = None,
    sample_seeds: list[int] | None = None,
) -> list[Completion]:
    """``num_programs`` program completions per problem (consecutive), greedy unless ``sampling`` is given (then
    each from its seed in ``sample_seeds``, where given), in as few batched calls as ``max_batch`` allows.
    ``sample`` (a sampler's ``generate``: prompts, num_samples, settings, seeds) writes them instead of ``model``:
    in training, the round's own sampler (vLLM where the round samples with vLLM)."""
    prompts = [render(tokenizer, program_messages(p, use_system_prompt)) for p in problems]
    settings = sampling or SamplingSettings(max_new_tokens, temperature=0.0)
    if sample is not None:
        if sample_seeds is None:
            return sample(prompts, num_programs, settings)
        return sample(prompts, num_programs, settings, sample_seeds)
    return generate(model, tokenizer, prompts, num_programs, settings, max_batch, sample_seeds=sample_seeds)


def run_programs(
    texts: Sequence[str], limits: SandboxLimits | None = None, allow_unisolated: bool = False
) -> list[tuple[str | None, ProgramResult | None]]:
    """(program, sandbox result) per completion text; (None, None) where no program could be cut out.
    Raises :class:`opensir_lite.sandbox.SandboxUnavailable` before running anything when isolation is missing and
    ``allow_unisolated`` is False."""
    out: list[tuple[str | None, ProgramResult | None]] = []
    for text in texts:
        program = extract_program(text)
        out.append((program, None if program is None else run_program(program, limits, allow_unisolated)))
    return out


def grade_program(result: ProgramResult | None, majority: str | None, gold: str | None = None) -> dict[str, Any]:
    """The graded fields of one check: ``program_answer``, ``failure``, ``agrees`` and, with gold,
    ``program_gold`` / ``majority_gold``. Always math-verify equivalence, the evaluation grader: a program prints
    Python's float form (``15.0``), which the official vote's string rule would split from the student's ``15``."""
    fields: dict[str, Any] = {"program_answer": None, "failure": None, "agrees": None}
    if gold is not None:
        fields["majority_gold"] = gold_matches(majority, gold) if majority is not None else None
    if result is None:
        fields["failure"] = "no_program"
    elif result.failure is not None:
        fields["failure"] = result.failure
    elif not is_math_expression(result.answer_line) or normalise_answer(result.answer_line) is None:
        fields["failure"] = "no_answer"
    else:
        fields["program_answer"] = result.answer_line
        if majority is not None:
            fields["agrees"] = answers_equal(result.answer_line, majority, "equivalence")
        if gold is not None:
            fields["program_gold"] = gold_matches(result.answer_line, gold)
    return fields


def check_problems(
    model,
    tokenizer,
    items: Sequence[tuple[int, str, str | None, str | None]],
    max_new_tokens: int = 384,
    max_batch: int = 0,
    use_system_prompt: bool = True,
    limits: SandboxLimits | None = None,
    allow_unisolated: bool = False,
    sample: Callable[..., list[Completion]] | None = None,
    num_programs: int = 1,
    sampling: SamplingSettings | None = None,
    sample_seeds: list[int] | None = None,
) -> list[ProgramCheck]:
    """The whole check for ``(id, problem, majority answer, gold or None)`` items: write (with ``model``, or with
    ``sample``: see :func:`write_programs`), run, grade; ``num_programs`` checks per item, consecutive."""
    if not items:
        return []
    completions = write_programs(model, tokenizer, [it[1] for it in items], max_new_tokens, max_batch,
                                 use_system_prompt, sample, num_programs, sampling, sample_seeds)  # fmt: skip
    ran = run_programs([c.text for c in completions], limits, allow_unisolated)
    checks = []
    repeated = [it for it in items for _ in range(num_programs)]
    for (pid, problem, majority, gold), completion, (program, result) in zip(repeated, completions, ran, strict=True):
        checks.append(ProgramCheck(
            id=pid, problem=problem, majority_answer=majority, gold=gold, tokens=completion.num_tokens,
            seconds=result.seconds if result else 0.0,
            program=None if program is None else program[:MAX_STORED_PROGRAM_CHARS],
            **grade_program(result, majority, gold),
        ))  # fmt: skip
    return checks


def regrade(rows: Sequence[dict[str, Any]]) -> list[ProgramCheck]:
    """Checks read back from a file, graded again from their stored program answers (no generation, no sandbox):
    what ``scripts/check_programs.py --regrade_only`` does after a change of the grader."""
    out = []
    for row in rows:
        fields = {k: row.get(k) for k in ProgramCheck.__dataclass_fields__}
        line = row.get("program_answer")
        failure = row.get("failure")
        result = None if failure == "no_program" else ProgramResult(line, None if line else failure or "no_output",
                                                                    0, row.get("seconds") or 0.0, "", True)  # fmt: skip
        fields.update(grade_program(result, row.get("majority_answer"), row.get("gold")))
        out.append(ProgramCheck(**fields))
    return out


def _share(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_checks(checks: Sequence[ProgramCheck | dict[str, Any]]) -> dict[str, Any]:
    """Counts and shares: problems checked, with a program answer, agreeing with the majority (share of those with
    both answers), failures by reason, the sandbox's mean seconds, and on rows with gold the pairwise agreements of
    program, majority and gold and how well agreement predicts a right majority."""
    rows = [c.to_dict() if isinstance(c, ProgramCheck) else dict(c) for c in checks]
    both = [r for r in rows if r.get("agrees") is not None]
    summary: dict[str, Any] = {
        "checked": len(rows),
        "with_program_answer": sum(r.get("program_answer") is not None for r in rows),
        "with_both_answers": len(both),
        "agreement": _share([bool(r["agrees"]) for r in both]),
        "failures": dict(Counter(r["failure"] for r in rows if r.get("failure"))),
        "mean_sandbox_seconds": _share([r.get("seconds") or 0.0 for r in rows]),
        "mean_program_tokens": _share([r.get("tokens") or 0 for r in rows]),
    }
    gold = [r for r in rows if r.get("gold") is not None]
    if gold:
        majority_right = [bool(r.get("majority_gold")) for r in gold]
        program_right = [bool(r.get("program_gold")) for r in gold]
        agree = [r for r in gold if r.get("agrees")]
        disagree = [r for r in gold if r.get("agrees") is False]
        summary["gold"] = {
            "rows": len(gold),
            "majority_gold": _share(majority_right),
            "program_gold": _share(program_right),
            "program_majority": _share([bool(r.get("agrees")) for r in gold]),
            "all_three": _share([bool(r.get("agrees")) and bool(r.get("majority_gold")) for r in gold]),
            # the case for a filter: is the majority right more often where the program agrees with it?
            "majority_gold_when_agree": _share([bool(r.get("majority_gold")) for r in agree]),
            "majority_gold_when_disagree": _share([bool(r.get("majority_gold")) for r in disagree]),
            "rows_agree": len(agree),
            "rows_disagree": len(disagree),
        }
    return summary


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def format_summary(summary: dict[str, Any], title: str = "program check") -> str:
    """The summary as a console table."""
    lines = [
        f"{title}: {summary['checked']} problems",
        f"  with a program answer        {summary['with_program_answer']}",
        f"  with program and majority    {summary['with_both_answers']}",
        f"  program agrees with majority {_pct(summary['agreement'])}",
        f"  failures                     {', '.join(f'{k} {v}' for k, v in sorted(summary['failures'].items())) or '-'}",
        f"  sandbox seconds per program  {summary['mean_sandbox_seconds'] or 0:.2f}",
    ]
    g = summary.get("gold")
    if g:
        lines += [
            f"  on {g['rows']} rows with gold:",
            f"    majority = gold            {_pct(g['majority_gold'])}",
            f"    program = gold             {_pct(g['program_gold'])}",
            f"    program = majority         {_pct(g['program_majority'])}",
            f"    all three agree            {_pct(g['all_three'])}",
            f"    majority = gold | agree    {_pct(g['majority_gold_when_agree'])} of {g['rows_agree']}",
            f"    majority = gold | disagree {_pct(g['majority_gold_when_disagree'])} of {g['rows_disagree']}",
        ]
    return "\n".join(lines)


def write_checks(path: str | Path, checks: Sequence[ProgramCheck]) -> Path:
    """Write ``program_checks.jsonl`` (atomically; one row per check)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in checks))
    return path


def read_checks(path: str | Path) -> dict[int, dict[str, Any]]:
    """The checks of a file keyed by id ({} when it does not exist; lines that do not parse are skipped, the
    last row of an id wins)."""
    path = Path(path)
    return read_rows_by_id(path / PROGRAM_CHECKS_FILE if path.is_dir() else path)
