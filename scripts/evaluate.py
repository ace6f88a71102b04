"""Evaluate a model (and optionally a LoRA adapter) on maths benchmarks, graded under both protocols.

python scripts/evaluate.py --model <hub id|path|embedded> [--adapter DIR_OR_HUB_ID] --benchmarks gsm8k,college_math
    [--data_dir ../shared/benchmarks] [--limit 250 --seed 0] [--protocol opensir|strict]
    [--n 1 --temperature 0 --max_new_tokens 320]      # sampling overrides (default: the protocol's)
    [--n 4 --temperature 0.7 --max_new_tokens 512]    # avg@4 with common random numbers (paired with the base)
    [--sampling_seed 1]                               # the same rows, other streams (the placebo's second half)
    [--n 8 --temperature 0.7 --max_new_tokens 512 --program_vote]   # pv@8: one program per question votes too
python scripts/evaluate.py --compare base/results.json adapter/results.json
python scripts/evaluate.py --regrade RUN_DIR [--data_dir ../shared/benchmarks]   # grade samples.jsonl again
python scripts/evaluate.py --truncation RUN_DIR   # completions at the token budget, and how many are repetition loops
python scripts/evaluate.py --regrade RUN_DIR --limit 250 --seed 0 --output_dir OUT   # its 250-row subset, graded in OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, subset
from opensir_lite.evaluation.compare import compare_results
from opensir_lite.evaluation.program_vote import add_program_vote, sample_programs
from opensir_lite.evaluation.protocols import PROTOCOLS
from opensir_lite.evaluation.regrade import regrade, subset_run, truncation_report
from opensir_lite.evaluation.runner import (
    EVAL_DTYPES,
    EvalSettings,
    evaluate_items,
    format_results,
    free_memory_bytes,
    load_results,
    load_samples,
    sequence_cap,
    setting_help,
    transformers_sampler,
    vllm_sampler,
    write_outputs,
)
from opensir_lite.models import ModelLoadError
from opensir_lite.sandbox import SandboxUnavailable

PROMPT_TOKENS = 1024  # a question's prompt, at most (for the memory budget of a sampling call)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default="embedded",
        help="Hub id, local folder, 'embedded' (SmolLM2-135M-Instruct) or 'embedded-qwen0.5b' (Qwen2.5-Coder-0.5B-Instruct)",
    )  # fmt: skip
    p.add_argument("--adapter", default=None, help="LoRA adapter folder or Hub id")
    p.add_argument("--benchmarks", default="gsm8k", help="comma-separated names or .jsonl paths")
    p.add_argument(
        "--data_dir", default=None, help="folder of local JSONL copies (default: $OPENSIR_LITE_DATA, else the Hub)"
    )
    p.add_argument("--question_field", default=None, help="question field of a custom JSONL")
    p.add_argument("--answer_field", default=None, help="gold answer field of a custom JSONL")
    p.add_argument("--skip_bad_rows", action="store_true", help="skip (and count) rows without a usable gold answer")
    p.add_argument(
        "--protocol", choices=sorted(PROTOCOLS), default="opensir",
        help="headline grading and sampling defaults: opensir (official evaluate.py: n=16, temperature 0.6, "
        "top_p 0.95, 4096 tokens) or strict (last boxed answer only; greedy, 1024 tokens); both are reported",
    )  # fmt: skip
    p.add_argument("--n", type=int, default=None, help=setting_help("n", "default: the protocol's"))
    p.add_argument(
        "--temperature", type=float, default=None, help=setting_help("temperature", "default: the protocol's")
    )
    p.add_argument("--top_p", type=float, default=None, help=setting_help("top_p", "default: the protocol's"))
    p.add_argument("--k", type=int, default=None, help=setting_help("k"))
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help=setting_help("max_new_tokens", "default: the protocol's")
    )
    p.add_argument("--batch_size", type=int, default=64, help=setting_help("batch_size"))
    p.add_argument("--max_sequences", type=int, default=None, help=setting_help("max_sequences"))
    p.add_argument("--limit", type=int, default=None, help=setting_help("limit"))
    p.add_argument("--seed", type=int, default=0, help=setting_help("seed"))
    p.add_argument("--sampling_seed", type=int, default=None, help=setting_help("sampling_seed"))
    p.add_argument(
        "--independent_sampling", action="store_true",
        help="sample from the global random stream instead of common random numbers (one stream per row and sample, "
        "fixed by the sampling seed, so that two models evaluated alike sample alike where they agree)",
    )  # fmt: skip
    p.add_argument(
        "--dtype",
        choices=EVAL_DTYPES,
        default="auto",
        help="model dtype: auto (by hardware: fp32 on a CPU, bf16 on Ampere+) or bfloat16 (on a CPU with AVX512-BF16 "
        "or AMX about twice as fast as fp32; compare evaluations made with the same dtype)",
    )
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--load_in_4bit", action="store_true", help="4-bit NF4 base model (transformers backend)")
    p.add_argument("--no_system_prompt", action="store_true", help="fold the instructions into the user turn")
    p.add_argument(
        "--program_vote", action="store_true",
        help="also sample one program per question (the model writes it, the sandbox runs it) and report pv@k: the "
        "majority among the answers the program's output confirms, else the plain majority; paired with maj@k and "
        "avg@n on the same samples (docs/programs.md)",
    )  # fmt: skip
    p.add_argument("--program_max_new_tokens", type=int, default=384, help="token budget of a program (--program_vote)")
    p.add_argument(
        "--allow_unisolated_sandbox", action="store_true",
        help="--program_vote where the sandbox cannot isolate programs (no network or file-system isolation)",
    )  # fmt: skip
    p.add_argument("--output_dir", default="eval_results", help="results.json and samples.jsonl go here")
    p.add_argument("--compare", nargs=2, metavar=("BASE_JSON", "OTHER_JSON"), help="print deltas and exit")
    p.add_argument("--truncation", metavar="RUN_DIR", help="count RUN_DIR's completions at the budget and the loops")
    p.add_argument("--regrade", metavar="RUN_DIR", help="grade RUN_DIR/samples.jsonl again, rewrite results.json")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    try:
        if args.compare:
            base, other = (load_results(f) for f in args.compare)
            base_samples, other_samples = (load_samples(f) for f in args.compare)
            print(compare_results(base, other, base_samples, other_samples))
            return 0
        if args.truncation:
            for bench, r in truncation_report(args.truncation).items():
                print(f"{bench}: {r['truncated']} of {r['completions']} completions reached the token budget, "
                      f"{r['loops']} of them in a repetition loop")  # fmt: skip
            return 0
        if args.regrade and args.limit is not None:
            path = subset_run(args.regrade, args.output_dir, args.limit, args.seed, args.data_dir)
            print(format_results(json.loads(path.read_text())))
            return 0
        if args.regrade:
            path = regrade(args.regrade, args.data_dir, args.protocol)
            print(format_results(json.loads(path.read_text())))
            return 0
        settings = EvalSettings.for_protocol(
            args.protocol, n=args.n, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, k=args.k, batch_size=args.batch_size, seed=args.seed,
            max_sequences=args.max_sequences,
            limit=args.limit, use_system_prompt=not args.no_system_prompt, dtype=args.dtype,
            sampling_seed=args.sampling_seed, common_random_numbers=not args.independent_sampling,
        )  # fmt: skip
        benches = []
        for name in [b.strip() for b in args.benchmarks.split(",") if b.strip()]:
            bench, items, skipped = load_items(
                name, args.data_dir, args.question_field, args.answer_field, args.skip_bad_rows
            )
            benches.append((bench, subset(items, args.limit, args.seed, bench), skipped, name))
        if not benches:
            raise BenchmarkError("--benchmarks names no benchmark")
        torch.manual_seed(args.seed)
        if args.backend == "vllm":
            sample, tokenizer = vllm_sampler(args.model, args.adapter, args.seed, settings.dtype)
        else:
            from opensir_lite.memory import shape_of
            from opensir_lite.models import load_for_inference

            model, tokenizer = load_for_inference(
                args.model, args.adapter, load_in_4bit=args.load_in_4bit, dtype=settings.dtype
            )
            cap = settings.max_sequences or sequence_cap(
                shape_of(model.config), str(model.dtype).replace("torch.", ""),
                PROMPT_TOKENS + settings.max_new_tokens, free_memory_bytes(model.device.type),
            )  # fmt: skip
            print(f"decoding at most {cap} sequences at once (--max_sequences)", file=sys.stderr)
            sample = transformers_sampler(model, tokenizer, cap)
        results = []
        for bench, items, skipped, source in benches:  # written after each benchmark: a long run keeps them
            results.append(evaluate_items(bench, items, sample, tokenizer, settings, skipped, source=source))
            if args.program_vote:
                t0 = time.perf_counter()
                programs = sample_programs(sample, tokenizer, items, settings, args.program_max_new_tokens,
                                           args.allow_unisolated_sandbox)  # fmt: skip
                add_program_vote(results[-1], programs)
                results[-1].timings["programs_s"] = time.perf_counter() - t0
            path = write_outputs(results, args.output_dir, args.model, args.adapter)
    except (BenchmarkError, ModelLoadError, FileNotFoundError, json.JSONDecodeError, KeyError,
            SandboxUnavailable) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_results(json.loads(path.read_text())))
    print(f"results: {path}; samples: {path.with_name('samples.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
