"""The measuring helpers the scripts in ``benchmarks/`` share (step-time breakdowns, decoding and rollout timing,
log-probability gaps, round ablations, synthetic runs): measurement tools, kept out of the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opensir_lite.curves import finite_mean

PARTS = ["teacher_generation", "student_generation", "grading", "embedding", "selfplay_other", "update"]


def step_breakdown(rows: list[dict[str, Any]], skip_first: int = 0) -> dict[str, Any]:
    """Mean seconds per step for each part, the overhead share and generation throughput.

    ``overhead`` is everything outside generation and the update: grading, embedding and the self-play
    bookkeeping (parsing, selection, pool). ``update`` is what TRL does after the rollout: log-probabilities,
    reward functions, loss, backward and optimiser step.
    """
    rows = rows[skip_first:] or rows
    n = len(rows)
    mean = {p: sum(r.get(f"time/{p}", 0.0) for r in rows) / n for p in PARTS}
    step = sum(r.get("time/step", 0.0) for r in rows) / n
    generation = mean["teacher_generation"] + mean["student_generation"]
    overhead = mean["grading"] + mean["embedding"] + mean["selfplay_other"]
    tokens = sum(r.get("tokens_generated", 0) for r in rows) / n
    return {
        "steps": n,
        "seconds": mean,
        "step_seconds": step,
        "share": {p: (mean[p] / step if step else 0.0) for p in PARTS},
        "overhead_seconds": overhead,
        "overhead_share": overhead / step if step else 0.0,
        "generated_tokens_per_step": tokens,
        "generation_tokens_per_second": tokens / generation if generation else 0.0,
        "legal_ratio": finite_mean(rows, "legal_ratio"),  # None for the gold control (no teacher)
    }


def without_probe_steps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training rows of a run's metrics whose step ran no label probe (a probe's seconds land in its step's
    time), so that a finished run's steps can be timed like a benchmark's."""
    return [r for r in rows if "time/step" in r and not r.get("time/probe")]


def steps_between(rows: list[dict[str, Any]], first: int, last: int) -> list[dict[str, Any]]:
    """The rows of steps ``first`` to ``last`` (inclusive): the same steps of two runs, or the part of a resumed
    run that ran in one sitting, when the machine's speed changed between sittings."""
    return [r for r in rows if isinstance(r.get("step"), int) and first <= r["step"] <= last]


def seconds_per_token(b: dict[str, Any]) -> float | None:
    """Seconds of a whole step per generated token (None when a step generated nothing)."""
    tokens = b.get("generated_tokens_per_step") or 0
    return b["step_seconds"] / tokens if tokens else None


def overhead_ratio(selfplay: dict[str, Any], control: dict[str, Any]) -> float | None:
    """Self-play's seconds per generated token over the control's: what a self-play step costs per generated
    token beyond plain GRPO on the same machinery."""
    a, b = seconds_per_token(selfplay), seconds_per_token(control)
    return a / b if a is not None and b else None


def format_overhead(record: dict[str, Any]) -> str:
    """Both recipes' steps side by side and the ratio of their seconds per generated token."""
    lines = [f"{'recipe':<26}{'s/step':>9}{'tokens/step':>13}{'s/1k tokens':>13}{'gen tok/s':>11}{'update':>9}"
             f"{'peak GB':>9}"]  # fmt: skip
    for name, b in record["rows"].items():
        spt = seconds_per_token(b)
        lines.append(
            f"{name:<26}{b['step_seconds']:>9.1f}{b['generated_tokens_per_step']:>13.0f}"
            f"{'-' if spt is None else f'{1000 * spt:.1f}':>13}{b['generation_tokens_per_second']:>11.1f}"
            f"{b['share']['update']:>8.0%}{b.get('peak_memory_gb', float('nan')):>9.2f}"
        )
    ratio = record.get("ratio_seconds_per_token")
    shown = "-" if ratio is None else f"{ratio:.2f}x"
    lines.append(f"self-play seconds per generated token / control's: {shown} (target <= 1.10x)")
    return "\n".join(lines)


def format_breakdown(b: dict[str, Any], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'part':<22}{'seconds':>10}{'share':>9}")
    for p in PARTS:
        lines.append(f"{p:<22}{b['seconds'][p]:>10.2f}{b['share'][p]:>8.1%}")
    lines.append(f"{'step (total)':<22}{b['step_seconds']:>10.2f}{1:>8.0%}")
    lines.append(f"overhead outside generation and update: {b['overhead_seconds']:.2f} s = {b['overhead_share']:.1%}")
    lines.append(
        f"generated tokens per step: {b['generated_tokens_per_step']:.0f}; "
        f"generation throughput: {b['generation_tokens_per_second']:.1f} tokens/s; legal ratio "
        + ("-" if b["legal_ratio"] is None else f"{b['legal_ratio']:.2f}")
    )
    for key in ("peak_memory_gb", "device"):
        if key in b:
            lines.append(f"{key}: {b[key]}")
    return "\n".join(lines)


def time_decoding(model, input_ids, attention_mask, max_new_tokens: int, pad_token_id: int) -> dict[str, Any]:
    """Greedy generation of exactly ``max_new_tokens`` per row: seconds, tokens/s and the tokens (for comparing)."""
    import time

    import torch

    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    generated = input_ids.shape[0] * max_new_tokens
    return {"seconds": seconds, "tokens": generated, "tokens_per_second": generated / seconds, "output": out}


def format_decoding(rows: list[dict[str, Any]]) -> str:
    width = max([16, *(len(r["attention"]) + 2 for r in rows)])
    lines = [f"{'attention':<{width}}{'seconds':>10}{'tokens/s':>10}{'speed-up':>10}  same tokens as the first"]
    base = rows[0]["seconds"] if rows else 1.0
    for r in rows:
        lines.append(
            f"{r['attention']:<{width}}{r['seconds']:>10.1f}{r['tokens_per_second']:>10.1f}"
            f"{base / r['seconds']:>9.2f}x  {r['same_tokens']}"
        )
    return "\n".join(lines)


def time_generation(model, tokenizer, prompts: list[str], num_samples: int, sampling, seed: int = 0) -> dict:
    """Seconds, generated tokens and tokens/s of one batched ``generate`` call (sampling from ``seed``)."""
    import time

    import torch

    from opensir_lite.generation import generate

    torch.manual_seed(seed)
    start = time.perf_counter()
    out = generate(model, tokenizer, prompts, num_samples, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(c.num_tokens for c in out)
    return {"sequences": len(out), "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}


def completion_logprobs(model, prompt_ids: list[int], completion_ids: list[int], temperature: float, autocast=None):
    """Per-token log-probabilities of a completion at a temperature, as GRPO scores them (``autocast``: a torch
    dtype to score under CPU/CUDA autocast, as a bf16 run does)."""
    import contextlib

    import torch

    ids = torch.tensor([prompt_ids + completion_ids], device=next(model.parameters()).device)
    device_type = ids.device.type
    ctx = torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids) :, None])[:, 0]


def logprob_gap(sampler, scorer, completions, temperature: float, autocast=None) -> dict[str, float]:
    """How far the sampler's distribution is from the scored policy's on the sampler's own completions: the mean
    and largest absolute per-token log-probability difference, and the mean per-token log-ratio (an estimate of
    KL(sampler || scorer) per token)."""
    import torch

    diffs = []
    for c in completions:
        if c.completion_ids:
            a = completion_logprobs(sampler, c.prompt_ids, c.completion_ids, temperature)
            b = completion_logprobs(scorer, c.prompt_ids, c.completion_ids, temperature, autocast)
            diffs.append(a - b)
    d = torch.cat(diffs) if diffs else torch.zeros(0)
    return {"tokens": int(d.numel()), "mean_abs": float(d.abs().mean()) if d.numel() else 0.0,
            "max_abs": float(d.abs().max()) if d.numel() else 0.0,
            "mean_log_ratio": float(d.mean()) if d.numel() else 0.0}  # fmt: skip


def format_rollout_speed(rows: list[dict[str, Any]], baseline: str | None = None) -> str:
    """A table of rollout samplers: teacher and student tokens, seconds, tokens/s and the speed-up over the
    ``baseline`` sampler's tokens/s (default: the first row)."""

    def total(r: dict[str, Any]) -> tuple[int, float]:
        return r["teacher"]["tokens"] + r["student"]["tokens"], r["teacher"]["seconds"] + r["student"]["seconds"]

    base = next((r for r in rows if r["sampler"] == baseline), rows[0])
    base_tokens, base_seconds = total(base)
    base_rate = base_tokens / base_seconds
    lines = [
        f"{'sampler':<15}{'teacher tok':>12}{'tok/s':>8}{'student tok':>12}{'tok/s':>8}{'total s':>9}{'tok/s':>8}{'x':>7}"
    ]
    for r in rows:
        tokens, seconds = total(r)
        lines.append(
            f"{r['sampler']:<15}{r['teacher']['tokens']:>12}{r['teacher']['tokens_per_second']:>8.1f}"
            f"{r['student']['tokens']:>12}{r['student']['tokens_per_second']:>8.1f}{seconds:>9.1f}"
            f"{tokens / seconds:>8.1f}{tokens / seconds / base_rate:>6.2f}x"
        )
    return "\n".join(lines)


def ablate_rounds(policy, tokenizer, embedder, variants: list[tuple[str, Any]], rounds: int, model_args) -> list[dict]:
    """Play ``rounds`` self-play rounds of the (untrained) policy from the seed pool under each variant's settings
    and summarise what GRPO would train on. The rollouts come from a merged copy of the policy when a variant asks
    for one, as in training."""
    import time

    import numpy as np
    import torch

    from opensir_lite.models import attention_for, current_device_dtype
    from opensir_lite.pool import ProblemPool
    from opensir_lite.rewards import TEACHER_REWARD_NAMES
    from opensir_lite.selfplay import SelfPlay
    from opensir_lite.training import MergedRolloutModel, rollout_dtype

    device, _ = current_device_dtype()
    merged = None
    rows = []
    for name, args in variants:
        model = policy
        if args.rollout_model == "merged":
            if merged is None:
                merged = MergedRolloutModel(
                    policy, attention_for(device, model_args.attn_implementation), rollout_dtype(args.rollout_dtype)
                )
                merged.sync()
            model = merged.model
        torch.manual_seed(args.seed)
        selfplay = SelfPlay(args, ProblemPool.from_seed(args.seed_problem), embedder)
        weights = np.asarray(args.teacher_reward_weights, dtype=float)
        G = args.num_generations
        per_round = []
        start = time.perf_counter()
        for step in range(1, rounds + 1):
            result = selfplay.play_round(model, tokenizer, step)
            totals = np.array([[r.rewards[n] for n in TEACHER_REWARD_NAMES] for r in result.records]) @ weights
            groups = totals.reshape(-1, G)
            student_rows = [i for i, role in enumerate(result.rows["role"]) if role == "student"]
            in_majority = [bool(result.rows["in_majority"][i]) for i in student_rows]
            s = result.stats
            per_round.append({
                "legal_ratio": s["legal_ratio"],
                "answered_share": s["answered_problems"] / s["legal_problems"] if s["legal_problems"] else 0.0,
                "student_valid_rate": s["student_valid_rate"] or 0.0,
                "teacher_groups_with_signal": float(np.mean(groups.std(axis=1) > 1e-9)),
                "student_group": float(bool(student_rows) and 0 < sum(in_majority) < len(in_majority)),
                "tokens": s["tokens_generated"],
            })  # fmt: skip
        seconds = time.perf_counter() - start
        row = {"variant": name, "rounds": rounds, "seconds": seconds}
        for key in per_round[0]:
            row[key] = float(np.mean([r[key] for r in per_round]))
        rows.append(row)
        print(f"{name}: {seconds:.0f} s", flush=True)
    return rows


def format_ablation(rows: list[dict[str, Any]]) -> str:
    """The ablation table: one row per variant, the means over its rounds."""
    lines = [f"{'variant':<28}{'legal':>7}{'answered':>9}{'valid ans':>10}{'T signal':>9}{'S signal':>9}{'s/round':>9}"]
    for r in rows:
        lines.append(
            f"{r['variant']:<28}{r['legal_ratio']:>7.2f}{r['answered_share']:>9.2f}{r['student_valid_rate']:>10.2f}"
            f"{r['teacher_groups_with_signal']:>9.2f}{r['student_group']:>9.2f}{r['seconds'] / r['rounds']:>9.0f}"
        )
    return "\n".join(lines)


def synthetic_run(folder, n: int, seed: int = 0, students: int = 8, completion_chars: int = 300) -> Path:
    """A run folder of ``n`` generated problems (every fifth illegal) with embeddings and round evidence of the
    sizes a real run writes (G student answers with completion tails): a stand-in pool for timing the explorer."""
    import numpy as np

    from opensir_lite.checkpointing import EVIDENCE_FILE
    from opensir_lite.pool import ProblemPool, ProblemRecord

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    concepts = [f"concept number {k}" for k in range(40)]
    pool = ProblemPool.from_seed()
    records, vectors, evidence = [], {}, []
    for i in range(1, n + 1):
        legal = i % 5 != 0
        problem = f"Problem {i}: " + " ".join(rng.choice(["apples", "rows", "tulips", "sum", "area"], 12)) + "?"
        r = ProblemRecord(
            id=i, problem=problem if legal else "", step=1 + i // 32, legal=legal,
            concepts=list(rng.choice(concepts, 2, replace=False)) if legal else [],
            reason=None if legal else "no_problem", in_pool=legal, reference_id=int(rng.integers(0, i)),
            solve_rate=float(rng.integers(1, 9)) / 8 if legal else None, majority_answer=str(i) if legal else None,
            n_valid_answers=students if legal else 0, novelty=float(rng.random()) if legal else None,
            rewards={"solvability": 0.5, "diversity": 0.2, "teacher_format": 1.0, "response_length": 0.1},
            teacher_output=None if legal else "x" * 400,
        )  # fmt: skip
        records.append(r)
        if legal:
            vectors[i] = rng.normal(size=384).astype(np.float32)
            evidence.append({
                "id": i, "step": r.step, "reference_id": r.reference_id, "teacher_output": "t" * 600,
                "students": [{"answer": str(k % 3), "class": k % 3, "tokens": 100, "completion": "c" * completion_chars}
                             for k in range(students)],
                "majority_class": 0, "majority_answer": "0", "solve_rate": r.solve_rate, "novelty": r.novelty,
                "rewards": r.rewards, "combined_score": 1.0,
            })  # fmt: skip
    pool.add(records, vectors)
    pool.save(folder)
    (folder / EVIDENCE_FILE).write_text("".join(json.dumps(row) + "\n" for row in evidence), encoding="utf-8")
    return folder
