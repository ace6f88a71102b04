"""How often the student's training label is right where training uses it: the measurement behind
``student_label: program_confirmed`` (scripts/label_quality.py, docs/programs.md).

Training trains the student only on problems whose solve rate falls in the gate, so the figure that matters is
P(majority = gold | solve rate in the gate). This module owns that table: rows by solve-rate bin with Wilson
intervals, and inside the gate the precision of the majority label, of the program-confirmed label (program answer
equal to the majority) and of the program's answer alone, and the filter's recall (the share of the right in-gate
majorities it keeps). Inputs are plain rows (the label probe's per-row readings, the program check's rows), so the
statistics need no model; and the measuring stages' files and samplers (:class:`LabelFiles`, :func:`open_sampler`,
:func:`write_votes`: k sampled programs per row for the rules of :mod:`opensir_lite.label_rules`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opensir_lite.evaluation.benchmarks import Item
from opensir_lite.generation import sequence_seed
from opensir_lite.label_rules import format_share, share, wilson  # noqa: F401 - wilson: this module's users read it here
from opensir_lite.pool import ProblemPool
from opensir_lite.rewards import finite_or_none, in_gate
from opensir_lite.round_output import SOLVE_RATE_BINS

PROGRAM_STREAM = 2  # program j of row r samples from the stream (seed, PROGRAM_STREAM, r, j); the probe's is 1


class LabelFiles:
    """The measurement's files in one results folder: samples.jsonl (the probe's rows with question and gold),
    program_checks.jsonl (one greedy program per row) and program_votes.jsonl (k sampled programs per row)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.samples = folder / "samples.jsonl"
        self.checks = folder / "program_checks.jsonl"
        self.votes = folder / "program_votes.jsonl"

    def samples_rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.samples.open()] if self.samples.is_file() else []


def open_sampler(args, model_args, backend: str):
    """The sampler of the measurement: the recipe's model in its rollout dtype, on the compacting decoder
    (``transformers``) or one vLLM engine serving it (``vllm``)."""
    if backend == "vllm":
        from opensir_lite.vllm_backend import base_sampler
        from opensir_lite.vllm_engine import require_vllm

        require_vllm()
        return base_sampler(args, model_args)
    from opensir_lite.models import load_for_inference
    from opensir_lite.sampling import TransformersSampler

    model, tokenizer = load_for_inference(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code,
                                          dtype=args.rollout_dtype)  # fmt: skip
    return TransformersSampler(model, tokenizer, args)


def close_sampler(sampler) -> None:
    server = getattr(sampler, "server", None)
    if server is not None:
        server.close()


def read_votes(path: str | Path) -> dict[int, dict[str, Any]]:
    """program_votes.jsonl by row (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {r["row"]: r for r in map(json.loads, path.open())}


def write_votes(sampler, args, path: Path, k_gate: int, k_outside: int, use_system_prompt: bool, lower: float,
                upper: float, rows: Sequence[Mapping[str, Any]]) -> int:  # fmt: skip
    """Sampled programs for measured ``rows`` (samples.jsonl's, with ``question`` and ``gold``) not yet in
    ``path``: ``k_gate`` per row whose solve rate is in the gate, ``k_outside`` per other row, at the recipe's
    temperature, program j of row r from its seeded stream; each run in the sandbox and graded against the row's
    majority and gold. Appends one line per row; returns how many."""
    from opensir_lite.programs import check_problems
    from opensir_lite.sampling import sampling_settings

    done = read_votes(path)
    todo = [r for r in rows if r["row"] not in done]
    seed = int(getattr(args, "seed", 0) or 0)
    sampling = sampling_settings(args, "program")
    for k in sorted({k_gate, k_outside} - {0}):
        group = [r for r in todo if (k_gate if in_gate(finite_or_none(r.get("solve_rate")), lower, upper)
                                     else k_outside) == k]  # fmt: skip
        if not group:
            continue
        t0 = time.perf_counter()
        checks = check_problems(
            None, sampler.tokenizer, [(r["row"], r["question"], r["majority"], r["gold"]) for r in group],
            args.program_max_new_tokens, args.max_generate_batch, use_system_prompt,
            allow_unisolated=args.allow_unisolated_sandbox, sample=sampler.generate, num_programs=k,
            sampling=sampling, sample_seeds=[sequence_seed(seed, PROGRAM_STREAM, r["row"], j) for r in group
                                             for j in range(k)],
        )  # fmt: skip
        seconds = (time.perf_counter() - t0) / len(group)
        with Path(path).open("a") as f:
            for i, r in enumerate(group):
                mine = checks[i * k : (i + 1) * k]
                f.write(json.dumps({"row": r["row"], "majority": r["majority"], "solve_rate": r.get("solve_rate"),
                                    "answers": [c.program_answer for c in mine],
                                    "agrees": [c.agrees for c in mine], "gold": [c.program_gold for c in mine],
                                    "failures": [c.failure for c in mine], "tokens": [c.tokens for c in mine],
                                    "seconds": round(seconds, 2)}) + "\n")  # fmt: skip
    return len(todo)


def pool_gold_items(pool_path: str, benchmark_items: Sequence[Item], rows: int) -> list[Item]:
    """The benchmark rows whose question the pool holds, in the pool's order, the first ``rows`` of them (their
    gold may be read for measurement, never for training)."""
    by_question = {it.question.strip(): it for it in benchmark_items}
    pool = ProblemPool.from_jsonl(pool_path)
    out = [by_question[r.problem.strip()] for r in pool.history if r.problem.strip() in by_question]
    return out[:rows] if rows else out


def binned(pairs: Sequence[tuple[float, bool]], bins: int = SOLVE_RATE_BINS) -> list[dict[str, Any]]:
    """(solve rate, flag) pairs counted in ``bins`` equal bins over [0, 1] (1.0 in the last), each with the share
    of flagged pairs and its Wilson interval."""
    counts = [[0, 0] for _ in range(bins)]
    for rate, flag in pairs:
        b = counts[min(int(rate * bins), bins - 1)]
        b[0] += bool(flag)
        b[1] += 1
    return [{"bin": f"{i / bins:.1f}-{(i + 1) / bins:.1f}", **share(k, n)} for i, (k, n) in enumerate(counts)]


def label_table(
    samples: Sequence[Mapping[str, Any]],
    checks: Mapping[int, Mapping[str, Any]],
    lower: float,
    upper: float,
    bins: int = SOLVE_RATE_BINS,
) -> dict[str, Any]:
    """The label-quality table of probe readings ``samples`` (rows with ``row``, ``majority_right`` and
    ``solve_rate``) and program checks keyed by the same row."""
    rows = []  # (solve rate or None, majority right, its check)
    for r in samples:
        rows.append((finite_or_none(r.get("solve_rate")), bool(r.get("majority_right")), checks.get(r["row"]) or {}))
    gate = [(right, check) for rate, right, check in rows if in_gate(rate, lower, upper)]
    outside = [right for rate, right, check in rows if rate is not None and not in_gate(rate, lower, upper)
               and check.get("agrees")]  # fmt: skip
    right = sum(r for r, _ in gate)
    confirmed = [r for r, c in gate if c.get("agrees")]
    program_right = sum(bool(c.get("program_gold")) for _, c in gate)
    return {
        "rows": len(samples),
        "programs": sum(1 for r in samples if r["row"] in checks),
        "gate": [lower, upper],
        "majority_gold": share(sum(r for _, r, _ in rows), len(rows)),
        "by_solve_rate": binned([(rate, r) for rate, r, _ in rows if rate is not None], bins),
        "no_valid_answer": share(
            sum(r for rate, r, _ in rows if rate is None), sum(rate is None for rate, _, _ in rows)
        ),
        "in_gate": {
            "rows": len(gate),
            "majority_precision": share(right, len(gate)),
            "confirmed_precision": share(sum(confirmed), len(confirmed)),
            "confirmed_recall": share(sum(confirmed), right),
            "confirmed_share": share(len(confirmed), len(gate)),
            "program_precision": share(program_right, sum(c.get("program_answer") is not None for _, c in gate)),
            "program_accuracy": share(program_right, len(gate)),
        },
        "outside_gate": {
            "rows": sum(rate is not None and not in_gate(rate, lower, upper) for rate, _, _ in rows),
            "confirmed_precision": share(sum(outside), len(outside)),
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
    answered = [(r.solve_rate, bool((checks.get(r.id) or {}).get("agrees")), r.id in checks)
                for r in records if r.legal and r.solve_rate is not None]  # fmt: skip
    gate = [(confirmed, checked) for rate, confirmed, checked in answered if in_gate(rate, lower, upper)]
    return {
        "answered": len(answered),
        "checked": sum(checked for _, _, checked in answered),
        "gate": [lower, upper],
        "confirmed": share(sum(c for _, c, _ in answered), len(answered)),
        "by_solve_rate": binned([(rate, c) for rate, c, _ in answered], bins),
        "in_gate": {
            "rows": len(gate),
            "checked": sum(ch for _, ch in gate),
            "confirmed_share": share(sum(c for c, _ in gate), len(gate)),
        },  # fmt: skip
    }


def format_pool_table(table: Mapping[str, Any]) -> str:
    """The pool table as Markdown."""
    lo, hi = table["gate"]
    lines = [f"{table['answered']} answered problems, {table['checked']} checked; confirmed by their program "
             f"{format_share(table['confirmed'])}", "", "| solve rate | problems | confirmed by the program [Wilson 95%] |",
             "|---|---:|---|"]  # fmt: skip
    lines += [f"| {b['bin']} | {b['n']} | {format_share(b)} |" for b in table["by_solve_rate"]]
    g = table["in_gate"]
    lines += ["", f"inside the gate [{lo}, {hi}]: {g['rows']} problems, confirmed {format_share(g['confirmed_share'])}"]
    return "\n".join(lines)


def format_table(table: Mapping[str, Any]) -> str:
    """The table as Markdown (what docs/programs.md quotes)."""
    lines = [f"{table['rows']} rows, {table['programs']} with a program; P(majority = gold) "
             f"{format_share(table['majority_gold'])}", "", "| solve rate | rows | P(majority = gold) [Wilson 95%] |",
             "|---|---:|---|"]  # fmt: skip
    for b in table["by_solve_rate"]:
        lines.append(f"| {b['bin']} | {b['n']} | {format_share(b)} |")
    lines.append(f"| no valid answer | {table['no_valid_answer']['n']} | {format_share(table['no_valid_answer'])} |")
    g = table["in_gate"]
    lo, hi = table["gate"]
    lines += [
        "",
        f"inside the gate [{lo}, {hi}]: {g['rows']} rows",
        "",
        "| label | figure | value [Wilson 95%] |",
        "|---|---|---|",
        f"| majority | precision | {format_share(g['majority_precision'])} |",
        f"| program-confirmed majority | precision | {format_share(g['confirmed_precision'])} |",
        f"| program-confirmed majority | recall of right majorities | {format_share(g['confirmed_recall'])} |",
        f"| program-confirmed majority | share of in-gate rows kept | {format_share(g['confirmed_share'])} |",
        f"| program alone | precision (rows with a program answer) | {format_share(g['program_precision'])} |",
        f"| program alone | accuracy (all in-gate rows) | {format_share(g['program_accuracy'])} |",
    ]
    return "\n".join(lines)
