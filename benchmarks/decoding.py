"""Decoding speed of the attention implementations on real prompts: python benchmarks/decoding.py

python benchmarks/decoding.py [--model embedded] [--data ../shared/benchmarks/gsm8k.jsonl] [--batch 64]
    [--max_new_tokens 128] [--attention sdpa,sdpa_grouped] [--dtype auto] [--json docs/benchmark_decoding.json]
python benchmarks/decoding.py --model embedded-qwen0.5b --attention sdpa_grouped --dtype float32,bfloat16 \
    --batch 16 --max_new_tokens 16    # does this CPU compute bf16 natively? (prefill included in the time)

Greedy generation of exactly max_new_tokens for a batch of OpenSIR student prompts (left-padded), once per attention
implementation and dtype; prints seconds (prefill included), tokens/s, the speed-up over the first and whether the
tokens are identical, and whether the CPU has native bf16 (AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from benchlib import format_decoding, time_decoding

from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items
from opensir_lite.models import ModelLoadError, cpu_has_native_bf16, cpu_model_name, load_for_inference
from opensir_lite.prompts import render, student_messages


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--data", default="tests/fixtures/benchmarks/gsm8k.jsonl", help="benchmark JSONL for prompts")
    p.add_argument("--batch", type=int, default=64, help="prompts per generate call (repeated to fill)")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--attention", default="sdpa,sdpa_grouped", help="comma-separated attn_implementation names")
    p.add_argument("--dtype", default="auto", help="comma-separated model dtypes (auto: by hardware)")
    p.add_argument("--json", default=None, help="write the table here as JSON")
    args = p.parse_args()
    try:
        _, items, _ = load_items(args.data)
        rows = []
        runs = [(a.strip(), d.strip()) for a in args.attention.split(",") if a.strip()
                for d in args.dtype.split(",") if d.strip()]  # fmt: skip
        for name, dtype in runs:
            model, tokenizer = load_for_inference(args.model, attn_implementation=name, dtype=dtype)
            label = name if len(runs) == len({a for a, _ in runs}) else f"{name} {dtype}"
            texts = [render(tokenizer, student_messages(items[i % len(items)].question)) for i in range(args.batch)]
            enc = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
            r = time_decoding(model, enc["input_ids"], enc["attention_mask"], args.max_new_tokens,
                              tokenizer.pad_token_id)  # fmt: skip
            r["same_tokens"] = bool(torch.equal(r["output"], rows[0]["output"])) if rows else True
            rows.append({"attention": label, "dtype": dtype, "prompt_tokens": int(enc["input_ids"].shape[1]), **r})
            print(f"{label}: {r['seconds']:.1f} s", flush=True)
            del model
    except (BenchmarkError, ModelLoadError, FileNotFoundError, ValueError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_decoding(rows))
    native = cpu_has_native_bf16()
    print(f"CPU: {cpu_model_name()}, native bf16 (AVX512-BF16/AMX): {native}, {torch.get_num_threads()} threads")
    if args.json:
        record = {"model": args.model, "data": args.data, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
                  "threads": torch.get_num_threads(), "cpu": cpu_model_name(), "cpu_native_bf16": native,
                  "rows": [{k: v for k, v in r.items() if k != "output"} for r in rows]}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
