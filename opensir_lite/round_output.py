"""What a played round hands on: the rows TRL trains on (``batch``), the round's metrics (``metrics``) and its
evidence rows, plus the student-side helpers the gold control shares (advantage split, entropy metrics).

The rows go back to TRL's ``GRPOTrainer``: G consecutive rows form a group (teacher and student groups never mix),
``env_mask`` removes the ``<concepts>`` span of teacher completions (and whole filler rows) from the loss, and the
reward columns feed :mod:`opensir_lite.rewards` (the teacher rewards themselves, computed once by the round).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from opensir_lite.distributed import all_ranks
from opensir_lite.parsing import find_concepts_span, has_final_answer_line
from opensir_lite.pool import ProblemPool
from opensir_lite.rewards import (
    PAD,
    STUDENT,
    TEACHER,
    TEACHER_REWARD_NAMES,
    format_advantage_share,
    format_scored_column,
    in_gate,
)
from opensir_lite.round import MAX_STORED_OUTPUT_CHARS, Round, scored_student_tokens

SOLVE_RATE_BINS = 10  # histogram of solve rates over [0, 1] in metrics
NEAR_DUPLICATE_COSINE = 0.95  # two problems whose embeddings are at least this similar count as one
ROW_COLUMNS = ("prompt_ids", "completion_ids", "env_mask", "role", "legal", "solve_rate", "novelty",
               "mean_student_tokens", "answer", "majority_answer", "in_majority", "problem_id", "teacher_prefill",
               "near_duplicate", "label_confirmed", "format_scored", "teacher_rewards")  # fmt: skip


def concepts_loss_mask(tokenizer, completion_ids: list[int]) -> list[int]:
    """1 per completion token, 0 on tokens overlapping the ``<concepts>...</concepts>`` span (tags included)."""
    mask = [1] * len(completion_ids)
    span = find_concepts_span(tokenizer.decode(completion_ids, skip_special_tokens=True))
    if span is None:
        return mask

    def first_token_reaching(chars: int) -> int:  # first j whose decoded prefix [0, j] has >= chars characters
        lo, hi = 0, len(completion_ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if len(tokenizer.decode(completion_ids[: mid + 1], skip_special_tokens=True)) >= chars:
                hi = mid
            else:
                lo = mid + 1
        return lo

    for j in range(first_token_reaching(span[0] + 1), first_token_reaching(span[1]) + 1):
        mask[j] = 0
    return mask


def student_advantage_stats(args, accuracy: list[float], texts: list[str]) -> dict[str, Any]:
    """For the trained student rows (consecutive groups of G): the ``format_scored`` column of the recipe's
    ``student_format_gate`` and how much of their |advantage| the format reward makes (TRL's group advantages
    with the recipe's student weights and ``scale_rewards``). Shared by self-play and the gold control."""
    G = args.num_generations
    scored = format_scored_column(accuracy, G, getattr(args, "student_format_gate", "none"))
    fmt = [float(has_final_answer_line(t)) if ok else None for t, ok in zip(texts, scored, strict=True)]
    weights = list(getattr(args, "student_reward_weights", [1.0, 0.1]))
    share = format_advantage_share(accuracy, fmt, G, weights, scale=getattr(args, "scale_rewards", "group") != "none")
    return {**share, "format_scored": scored}


def advantage_metrics(total: dict[str, Any]) -> dict[str, Any]:
    """Round metrics from the summed local numbers: the format share of the student |advantage|, the groups
    whose only variance is the format reward, and the student's mean sampling entropy."""
    whole = total["format_abs"] + total["accuracy_abs"]
    return {
        "advantage/format_share": total["format_abs"] / whole if whole > 1e-9 else None,
        "advantage/format_only_groups": total["format_only_groups"],
        "advantage/accuracy_variance_groups": total["accuracy_variance_groups"],
        "student_mean_entropy": (
            total["student_entropy_sum"] / total["student_entropy_count"] if total["student_entropy_count"] else None
        ),
    }


def tail(text: str, cap: int) -> str:
    """The last ``cap`` characters of a text, marked with a leading ellipsis when cut."""
    return text if len(text) <= cap else "…" + text[-cap:]


def row_logprobs(completions: list, scored: list[bool]) -> list[list[float | None]] | None:
    """TRL's ``logprobs`` of the rows: each row's completion's sampling log-probabilities (``[None] * length`` for a
    row that trains nothing, which TRL reads as no correction); None when a scored row's sampler gave none."""
    out: list[list[float | None]] = []
    for c, keep in zip(completions, scored, strict=True):
        if not keep:
            out.append([None] * len(c.completion_ids))
        elif c.logprobs is None or len(c.logprobs) != len(c.completion_ids):
            return None
        else:
            out.append(list(c.logprobs))
    return out


def batch(rnd: Round, args, tokenizer) -> dict[str, list]:
    """The round's rows for TRL: the trained teacher groups, the trained student problems' groups, then filler
    groups (zero loss weight, every reward None) when fewer problems could train the student than it has groups.
    Sets ``rnd.rows`` and ``rnd.advantages`` (the student rows' advantage split) and returns the rows."""
    G, pos, prefill = args.num_generations, rnd.cand_pos, args.teacher_prefill or ""
    rows: dict[str, list] = {k: [] for k in ROW_COLUMNS}
    sources: list = []  # each row's completion (for its sampling log-probabilities)

    def add(c, env_mask, role, record, answer=None, majority=None, in_majority=None):
        sources.append(c)
        values = {"prompt_ids": list(c.prompt_ids), "completion_ids": list(c.completion_ids), "env_mask": env_mask,
                  "role": role, "legal": record.legal, "solve_rate": record.solve_rate, "novelty": record.novelty,
                  "mean_student_tokens": scored_student_tokens(record), "answer": answer, "majority_answer": majority,
                  "in_majority": in_majority, "problem_id": record.id, "teacher_prefill": prefill,
                  "near_duplicate": record.near_duplicate, "label_confirmed": record.label_confirmed,
                  "format_scored": True, "teacher_rewards": dict(record.rewards) if role == TEACHER else None}  # fmt: skip
        for k, v in values.items():
            rows[k].append(v)

    for g in rnd.teacher_groups:
        for i in range(g * G, (g + 1) * G):
            c = rnd.teacher_completions[i]
            add(c, concepts_loss_mask(tokenizer, c.completion_ids), TEACHER, rnd.records[i])
    first_student = len(rows["role"])
    texts = []
    for i in rnd.student_problems:
        k = pos[i]
        vote = rnd.votes[k]
        for j in rnd.group(k, G):
            c = rnd.student_completions[j]
            texts.append(c.text)
            add(c, [1] * len(c.completion_ids), STUDENT, rnd.records[i], answer=rnd.answers[j],
                majority=vote.majority, in_majority=vote.agrees(j - k * G))  # fmt: skip
    rnd.advantages = student_advantage_stats(args, [float(bool(v)) for v in rows["in_majority"][first_student:]],
                                             texts)  # fmt: skip
    rows["format_scored"][first_student:] = rnd.advantages.pop("format_scored")
    first = rnd.teacher_groups[0] * G
    filler = rnd.teacher_completions[first]
    for _ in range((args.num_student_groups - len(rnd.student_problems)) * G):
        add(filler, [0] * len(filler.completion_ids), PAD, rnd.records[first])
    rnd.rows = rows
    rnd.logprobs = row_logprobs(sources, [role != PAD for role in rows["role"]])
    return rows


def evidence(rnd: Round, G: int, cap: int) -> list[dict]:
    """Why each legal problem scored what it did: the teacher output, its G student answers with their vote
    classes (and the last ``cap`` characters of each completion; none when ``cap`` is 0), the majority class, the
    solve rate, novelty, every teacher reward and the program check's fields. One row per legal problem."""
    rows, pos = [], rnd.cand_pos
    for i, r in enumerate(rnd.records):
        k = pos.get(i)
        if not r.legal or k is None:
            continue
        vote = rnd.votes[k]
        students = []
        for j in rnd.group(k, G):
            c = rnd.student_completions[j]
            entry = {"answer": rnd.answers[j], "class": vote.classes[j - k * G], "tokens": c.num_tokens}
            if cap > 0:
                entry["completion"] = tail(c.text, cap)
            students.append(entry)
        rows.append({
            "id": r.id, "step": r.step, "reference_id": r.reference_id,
            "teacher_output": tail(rnd.teacher_texts[i], max(cap, 0) * 4 or MAX_STORED_OUTPUT_CHARS),
            "students": students, "majority_class": vote.majority_class, "majority_answer": vote.majority,
            "solve_rate": r.solve_rate, "novelty": r.novelty, "rewards": dict(r.rewards),
            "combined_score": r.combined_score, **rnd.program_fields.get(r.id, {}),
        })  # fmt: skip
    return rows


def distinct_count(pool: ProblemPool, include_seed: bool = False, threshold: float = NEAR_DUPLICATE_COSINE) -> int:
    """Teacher-written problems in the pool after merging near-duplicates (embedding cosine >= ``threshold``),
    greedily in pool order; entries without a cached embedding count as distinct."""
    entries = [r for r in pool.entries if r.source == "teacher" or include_seed]
    vectors = [pool.embeddings.get(r.id) for r in entries]
    count = sum(v is None for v in vectors)
    known = np.array([v for v in vectors if v is not None], dtype=np.float64)
    if not len(known):
        return count
    known /= np.maximum(np.linalg.norm(known, axis=1, keepdims=True), 1e-10)
    sims = known @ known.T
    kept: list[int] = []
    for i in range(len(known)):
        if not kept or float(sims[i, kept].max()) < threshold:
            kept.append(i)
    return count + len(kept)


def local_numbers(rnd: Round, args) -> dict[str, Any]:
    """What only this rank knows (token counts, trained groups, timings), summed over ranks by :func:`metrics`."""
    G = args.num_generations
    zero_var = sum(int(np.var([rnd.records[i].combined_score or 0.0 for i in range(g * G, (g + 1) * G)]) == 0.0)
                   for g in rnd.teacher_groups)  # fmt: skip
    entropies = [c.entropy for c in rnd.student_completions if c.entropy is not None]
    adv = rnd.advantages
    return {
        "format_abs": adv.get("format_abs", 0.0), "accuracy_abs": adv.get("accuracy_abs", 0.0),
        "format_only_groups": adv.get("format_only_groups", 0),
        "accuracy_variance_groups": adv.get("accuracy_variance_groups", 0),
        "student_entropy_sum": float(sum(entropies)), "student_entropy_count": len(entropies),
        "teacher_tokens": sum(c.num_tokens for c in rnd.teacher_completions),
        "student_tokens": sum(c.num_tokens for c in rnd.student_completions),
        "teacher_sequences": len(rnd.teacher_completions), "student_sequences": len(rnd.student_completions),
        "teacher_groups": len(rnd.teacher_groups), "student_groups": len(rnd.student_problems),
        "filler_groups": args.num_student_groups - len(rnd.student_problems),
        "zero_variance_teacher_groups": zero_var, "nonfinite_value": rnd.degenerate["nonfinite_value"],
        "times": dict(rnd.times),
    }  # fmt: skip


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def metrics(rnd: Round, args, pool: ProblemPool) -> dict[str, Any]:
    """The round's metrics: record statistics over the whole (gathered) round, counts summed over ranks, times of
    the slowest rank. Sets ``rnd.stats`` and returns it (a collective on several processes)."""
    local = local_numbers(rnd, args)
    ranks = all_ranks(local)
    total = {k: sum(r[k] for r in ranks) for k in local if k != "times"}
    times = {k: max(r["times"][k] for r in ranks) for k in local["times"]}
    records = rnd.round_records
    legal = [r for r in records if r.legal]
    answered = [r for r in legal if r.solve_rate is not None]
    rates = [r.solve_rate for r in answered]
    lower, upper = args.solve_rate_lower, args.solve_rate_upper
    problems = Counter(r.problem.strip().lower() for r in legal)
    majorities = Counter(r.majority_answer for r in answered if r.majority_answer is not None)
    stats: dict[str, Any] = {
        "teacher_outputs": len(records), "parsed_problems": sum(1 for r in records if r.problem),
        "legal_problems": len(legal), "legal_ratio": len(legal) / len(records) if records else 0.0,
        "answered_problems": len(rates), "solve_rate_mean": float(np.mean(rates)) if rates else None,
        "solve_rate_hist": [int(x) for x in np.histogram(rates, bins=SOLVE_RATE_BINS, range=(0.0, 1.0))[0]],
        "in_gate": sum(1 for s in rates if in_gate(s, lower, upper)),
        "novelty_mean": float(np.mean([r.novelty for r in legal])) if legal else None,
        "pool_size": len(pool), "pool_added": rnd.pool_added,
        "near_duplicates": sum(r.near_duplicate for r in legal),
        **{k: total[k] for k in ("teacher_tokens", "student_tokens", "student_groups", "filler_groups",
                                 "zero_variance_teacher_groups")},
        "degenerate/no_legal_problem": int(not legal),
        "degenerate/no_valid_answer": sum(1 for r in legal if r.solve_rate is None),
        "degenerate/all_answers_equal": sum(1 for r in legal if r.solve_rate == 1.0),
        "degenerate/all_teacher_groups_zero_variance": int(
            total["teacher_groups"] > 0 and total["zero_variance_teacher_groups"] == total["teacher_groups"]),
        "degenerate/empty_pool": rnd.degenerate["empty_pool"],
        "degenerate/nonfinite_value": total["nonfinite_value"],
        # health: learning or reward hacking
        "student_valid_rate": _share(sum(r.n_valid_answers for r in legal), total["student_sequences"]),
        "in_gate_share": _share(sum(in_gate(r.solve_rate, lower, upper) for r in answered), len(answered)),
        "teacher_mean_tokens": _share(total["teacher_tokens"], total["teacher_sequences"]),
        "student_mean_tokens": _share(total["student_tokens"], total["student_sequences"]),
        "legal_problem_mean_chars": float(np.mean([len(r.problem) for r in legal])) if legal else None,
        "round_distinct_problems": len(problems),
        "round_top_problem_share": max(problems.values()) / len(legal) if legal else None,
        "round_top_majority_share": max(majorities.values()) / len(answered) if majorities else None,
        "pool_distinct_problems": distinct_count(pool),
    }  # fmt: skip
    stats["tokens_generated"] = stats["teacher_tokens"] + stats["student_tokens"]
    stats.update(advantage_metrics(total))
    for reason, n in sorted(Counter(r.reason for r in records if not r.legal).items()):
        stats[f"illegal/{reason}"] = n
    for name in TEACHER_REWARD_NAMES:
        stats[f"teacher_all/{name}"] = float(np.mean([r.rewards[name] for r in records])) if records else 0.0
    parts = ("teacher_generation", "student_generation", "grading", "embedding")
    times["selfplay_other"] = max(0.0, times["rollout"] - sum(times.get(p, 0.0) for p in parts))
    for k, v in times.items():
        stats[f"time/{k}"] = v
    rnd.stats = stats
    return stats
