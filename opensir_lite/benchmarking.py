"""Step-time breakdown of a self-play run from its ``metrics.jsonl``: a table for the console and a JSON record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PARTS = ["teacher_generation", "student_generation", "grading", "embedding", "selfplay_other", "update"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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
        "legal_ratio": sum(r.get("legal_ratio", 0.0) for r in rows) / n,
    }


def format_breakdown(b: dict[str, Any], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'part':<22}{'seconds':>10}{'share':>9}")
    for p in PARTS:
        lines.append(f"{p:<22}{b['seconds'][p]:>10.2f}{b['share'][p]:>8.1%}")
    lines.append(f"{'step (total)':<22}{b['step_seconds']:>10.2f}{1:>8.0%}")
    lines.append(f"overhead outside generation and update: {b['overhead_seconds']:.2f} s = {b['overhead_share']:.1%}")
    lines.append(
        f"generated tokens per step: {b['generated_tokens_per_step']:.0f}; "
        f"generation throughput: {b['generation_tokens_per_second']:.1f} tokens/s; legal ratio {b['legal_ratio']:.2f}"
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
    lines = [f"{'attention':<16}{'seconds':>10}{'tokens/s':>10}{'speed-up':>10}  same tokens as the first"]
    base = rows[0]["seconds"] if rows else 1.0
    for r in rows:
        lines.append(
            f"{r['attention']:<16}{r['seconds']:>10.1f}{r['tokens_per_second']:>10.1f}"
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
