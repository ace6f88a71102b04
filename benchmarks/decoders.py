"""Decoders and dtypes on real prompts: transformers' generate against the compacting decoder, fp32 against bf16.

python benchmarks/decoders.py [--model embedded-qwen0.5b] [--data ../shared/benchmarks/gsm8k.jsonl]
    [--questions 32] [--samples 1] [--temperature 0] [--max_new_tokens 512]
    [--variants generate/float32,compacting/float32,generate/bfloat16,compacting/bfloat16] [--json FILE]

``questions`` student prompts (GSM8K rows that no seed-0 evaluation subset of up to 500 rows contains), each
sampled ``samples`` times in one batch, until EOS or ``max_new_tokens``, once per variant ``decoder/dtype``: seconds,
generated tokens, tokens/s, truncated completions, the speed-up over the first variant and, for greedy decoding,
how many completions equal the first variant's of the same dtype.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, training_items
from opensir_lite.generation import DECODERS, SamplingSettings, generate
from opensir_lite.models import ModelLoadError, load_for_inference
from opensir_lite.prompts import render, student_messages


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded-qwen0.5b")
    p.add_argument("--data", default="../shared/benchmarks/gsm8k.jsonl", help="GSM8K JSONL for the prompts")
    p.add_argument("--questions", type=int, default=32, help="prompts in the batch")
    p.add_argument("--samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--variants", default="generate/float32,compacting/float32,generate/bfloat16,compacting/bfloat16")
    p.add_argument("--json", default=None, help="write the table here as JSON")
    args = p.parse_args()
    if args.questions < 1 or args.samples < 1 or args.max_new_tokens < 1 or args.temperature < 0:
        print("error: need --questions, --samples, --max_new_tokens >= 1 and --temperature >= 0", file=sys.stderr)
        return 2
    variants = [v.strip().split("/") for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if len(v) != 2 or v[0] not in DECODERS or v[1] not in ("float32", "bfloat16")]
    if bad:
        print(f"error: variants are decoder/dtype with decoder in {DECODERS}: {bad[0]}", file=sys.stderr)
        return 2
    try:
        _, items, _ = load_items(args.data)
        items = training_items(items, "gsm8k")[: args.questions]
        sampling = SamplingSettings(args.max_new_tokens, args.temperature)
        rows, firsts, models = [], {}, {}
        for decoder, dtype in variants:
            if dtype not in models:
                models[dtype] = load_for_inference(args.model, dtype=dtype)
            model, tokenizer = models[dtype]
            prompts = [render(tokenizer, student_messages(it.question)) for it in items]
            torch.manual_seed(0)
            start = time.perf_counter()
            out = generate(model, tokenizer, prompts, args.samples, sampling, decoder=decoder)
            seconds = time.perf_counter() - start
            tokens = sum(c.num_tokens for c in out)
            ids = [c.completion_ids for c in out]
            same = sum(a == b for a, b in zip(ids, firsts.setdefault(dtype, ids), strict=True))
            rows.append({"decoder": decoder, "dtype": dtype, "sequences": len(out), "tokens": tokens,
                         "seconds": seconds, "tokens_per_second": tokens / seconds,
                         "truncated": sum(c.num_tokens >= args.max_new_tokens for c in out),
                         "same_as_first_of_dtype": same})  # fmt: skip
            print(f"{decoder}/{dtype}: {seconds:.1f} s", flush=True)
    except (BenchmarkError, ModelLoadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = rows[0]["tokens_per_second"]
    print(
        f"{'decoder/dtype':<22}{'seqs':>6}{'tokens':>8}{'seconds':>9}{'tok/s':>8}{'x':>7}{'truncated':>11}{'same':>7}"
    )
    for r in rows:
        same = f"{r['same_as_first_of_dtype']}" if args.temperature == 0 else "-"
        print(f"{r['decoder'] + '/' + r['dtype']:<22}{r['sequences']:>6}{r['tokens']:>8}{r['seconds']:>9.1f}"
              f"{r['tokens_per_second']:>8.1f}{r['tokens_per_second'] / base:>6.2f}x{r['truncated']:>11}{same:>7}")  # fmt: skip
    if args.json:
        record = {**{k: v for k, v in vars(args).items() if k != "json"}, "threads": torch.get_num_threads(),
                  "rows": rows}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
