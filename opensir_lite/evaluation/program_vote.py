"""The program vote at test time: n sampled answers and one program per question, written by the same
model and run in the sandbox; the vote counts only the answers the program's printed answer confirms, and falls
back to the plain majority where it confirms none (the idea of PROVE, which filters sampled solutions by their
program's output before voting). Reported as ``pv@k`` beside ``maj@k`` and ``avg@n`` on the same samples, with
the paired differences ``pv-maj@k`` and ``pv-avg@k`` (each question's difference; common random numbers).

``scripts/evaluate.py --program_vote`` adds it to an evaluation (:func:`sample_programs`, then
:func:`add_program_vote`); :func:`program_vote_values` is the same arithmetic over any rows of answers, correctness and
a program answer (the label-quality measurement's rows too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opensir_lite.evaluation.stats import _mean_se, paired_difference, question_values
from opensir_lite.generation import SamplingSettings, sequence_seed
from opensir_lite.label_rules import confirmed_vote
from opensir_lite.programs import MAX_STORED_PROGRAM_CHARS, grade_program, run_programs
from opensir_lite.prompts import program_messages, render

PROGRAM_EVAL_STREAM = 3  # question q's program samples from the stream (seed, 3, q); its answers have no key


def sample_programs(
    sample, tokenizer, items, settings, max_new_tokens: int = 384, allow_unisolated: bool = False
) -> list[dict[str, Any]]:
    """One program per item, sampled like the answers (the evaluation's temperature and top_p, from its own seeded
    stream when the answers use common random numbers), run in the sandbox: ``{"program", "program_answer",
    "program_failure"}`` per item (the answer None where the program printed none)."""
    prompts = [render(tokenizer, program_messages(it.question, settings.use_system_prompt)) for it in items]
    sampling = SamplingSettings(max_new_tokens, settings.temperature, settings.top_p)
    stream = settings.seed if settings.sampling_seed is None else settings.sampling_seed
    seeded = settings.common_random_numbers and settings.temperature > 0
    texts: list[str] = []
    for start in range(0, len(prompts), settings.batch_size):
        chunk = prompts[start : start + settings.batch_size]
        if seeded:
            seeds = [[sequence_seed(stream, PROGRAM_EVAL_STREAM, it.index)] for it in items[start : start + len(chunk)]]
            texts += [group[0][0] for group in sample(chunk, 1, sampling, seeds)]
        else:
            texts += [group[0][0] for group in sample(chunk, 1, sampling)]
    out = []
    for program, result in run_programs(texts, allow_unisolated=allow_unisolated):
        fields = grade_program(result, None)
        out.append({"program": None if program is None else program[:MAX_STORED_PROGRAM_CHARS],
                    "program_answer": fields["program_answer"], "program_failure": fields["failure"]})  # fmt: skip
    return out


def program_vote_values(
    corrects: Sequence[Sequence[bool]], answers: Sequence[Sequence[str | None]], programs: Sequence[str | None], k: int
) -> dict[str, list[float]]:
    """Each question's avg@n, maj@k and pv@k (the program vote over the first k answers): the values averaged and
    paired."""
    n = len(corrects[0]) if corrects else 0
    k = max(1, min(k, n)) if n else 1
    values = question_values([list(c) for c in corrects], [list(a) for a in answers], k)
    pv = []
    for ans, cor, program in zip(answers, corrects, programs, strict=True):
        chosen = confirmed_vote(list(ans[:k]), program)
        pv.append(float(chosen is not None and bool(cor[chosen])))
    return {f"avg@{n}": values[f"avg@{n}"], f"maj@{k}": values[f"maj@{k}"], f"pv@{k}": pv}


def program_vote_table(
    corrects: Sequence[Sequence[bool]], answers: Sequence[Sequence[str | None]], programs: Sequence[str | None], k: int
) -> dict[str, Any]:
    """avg@n, maj@k and pv@k with standard errors, the paired differences of pv@k from maj@k and from avg@n, and
    how often the program vote chose another answer than the majority."""
    values = program_vote_values(corrects, answers, programs, k)
    (avg_name, avg), (maj_name, maj), (pv_name, pv) = values.items()
    out: dict[str, Any] = {"rows": len(pv)}
    for name, v in values.items():
        out[name], out[f"{name}_se"] = _mean_se(v)
    out[f"pv-maj@{k}"] = paired_difference(maj, pv)
    out[f"pv-avg@{k}"] = paired_difference(avg, pv)
    out["programs_with_answer"] = sum(p is not None for p in programs)
    return out


def add_program_vote(result, programs: Sequence[dict[str, Any]]) -> None:
    """Add ``pv@k`` and the paired ``pv-maj@k`` / ``pv-avg@k`` (value and standard error) to every protocol's
    metrics of an evaluation ``result`` (:class:`opensir_lite.evaluation.runner.BenchmarkResult`), and each
    question's program to its sample row."""
    k = result.settings.get("k") or result.settings["n"]
    answers_of = [p["program_answer"] for p in programs]
    for name, metrics in result.protocols.items():
        corrects = [s["by_protocol"][name]["correct"] for s in result.samples]
        answers = [s["by_protocol"][name]["answers"] for s in result.samples]
        table = program_vote_table(corrects, answers, answers_of, k)
        k_used = next(key for key in table if key.startswith("pv@") and not key.endswith("_se"))[3:]
        metrics[f"pv@{k_used}"], metrics[f"pv@{k_used}_se"] = table[f"pv@{k_used}"], table[f"pv@{k_used}_se"]
        for diff in (f"pv-maj@{k_used}", f"pv-avg@{k_used}"):
            metrics[diff], metrics[f"{diff}_se"] = table[diff]["delta"], table[diff]["se"]
    result.metrics = result.protocols[result.settings["protocol"]]
    for sample_row, program in zip(result.samples, programs, strict=True):
        sample_row.update(program)
