"""Evaluate a model (and optionally a LoRA adapter) with lm-evaluation-harness on this project's rows, then regrade:
the harness's completions with our grader (both protocols), and, given our own evaluation of the same rows, ours
with the harness's filters. Prints and writes the agreement of the two graders on identical completions.

python scripts/peer_eval.py --model embedded-qwen0.5b [--adapter DIR [--merge]] --task opensir_gsm8k
    --data_dir ../shared/benchmarks --limit 250 --seed 0 --output_dir runs/peer/base
    [--ours results/qwen0.5b/eval/base-gsm8k]   # also regrade scripts/evaluate.py's completions of the same rows
    [--regrade_only]                            # read the harness output already in --output_dir
Sampled (scripts/evaluate.py's --n/--temperature/--top_p): --repeats 4 --temperature 0.7 --top_p 1.0 --max_gen_toks 512
runs the task's sampled variant (written to --output_dir/tasks) and reports avg@k, pass@k and maj@k under both
graders, and, with --ours, the paired difference from scripts/evaluate.py's figure on the same rows.
--merge folds the adapter into a copy of the base first (cached; the function scripts/evaluate.py samples from) and
gives the harness that folder instead of peft=: decoded as fast as the base (unmerged, the adapter ran 2.2x slower).
Needs `pip install -r requirements-peer.txt`. The lm_eval command it runs is printed first, so it can be rerun by
hand; embedded names resolve to their cached folders.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from opensir_lite.device import resolve_device
from opensir_lite.evaluation.benchmarks import BenchmarkError
from opensir_lite.evaluation.peer import (
    agreement_report,
    each_completion,
    find_peer_samples,
    format_agreement,
    identical_completions,
    lm_eval_command,
    read_our_samples,
    read_peer_samples,
    run_lm_eval,
    sampled_difference,
    sampled_scores,
    sampled_task,
)
from opensir_lite.models import ModelLoadError, merged_model_dir, resolve_model_path
from opensir_lite.peer_tasks import CHAT_TASKS, PEER_TASKS


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded-qwen0.5b", help="Hub id, folder, embedded or embedded-qwen0.5b")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (the harness's peft=)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="merge --adapter into a cached copy of the model in --dtype and evaluate that folder (no peft=)",
    )
    p.add_argument("--task", default="opensir_gsm8k", choices=PEER_TASKS, help="a task of opensir_lite/peer_tasks")
    p.add_argument("--data_dir", default=None, help="offline benchmark copies (default: the Hub)")
    p.add_argument("--limit", type=int, default=250, help="rows of the seed's subset, as scripts/evaluate.py")
    p.add_argument("--seed", type=int, default=0, help="the subset's seed, as scripts/evaluate.py")
    p.add_argument(
        "--holdout",
        type=int,
        default=None,
        help="few-shot rows lie outside every subset of up to this many rows (default 500)",
    )
    p.add_argument("--batch_size", type=int, default=8, help="the harness's batch size")
    p.add_argument("--dtype", default="bfloat16", help="model dtype (the harness's dtype=)")
    p.add_argument("--device", default="auto", help="auto (cuda when a GPU is visible, else cpu), cpu, cuda, ...")
    p.add_argument("--max_gen_toks", type=int, default=None, help="the harness's token budget (default: its 256)")
    p.add_argument("--repeats", type=int, default=1, help="completions per row (scripts/evaluate.py's --n)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: the task's greedy decoding; > 0: sampled")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling where --temperature > 0")
    p.add_argument("--sampling_seed", type=int, default=None, help="the harness's torch seed (its default 1234)")
    p.add_argument("--output_dir", required=True, help="the harness's output, agreement.json")
    p.add_argument("--ours", default=None, help="a scripts/evaluate.py results folder of the same rows to regrade")
    p.add_argument("--regrade_only", action="store_true", help="do not run the harness; regrade its output")
    return p.parse_args()


def format_sampled(sampled: dict) -> str:
    """avg@n, maj@k, pass@k of the harness's completions (and of scripts/evaluate.py's) under every reader, and the
    paired difference of the two evaluators' per-row accuracy."""
    lines = ["| completions | reader | avg@n | maj@n | pass@n |", "|---|---|---:|---:|---:|"]
    for source in ("harness", "ours"):
        for reader, m in sampled.get(source, {}).items():
            avg = next(k for k in m if k.startswith("avg@") and not k.endswith("_se"))
            maj, pas = (next(k for k in m if k.startswith(p) and not k.endswith("_se")) for p in ("maj@", "pass@"))
            lines.append(f"| {source} | {reader} | {m[avg]:.3f} ± {m[avg + '_se']:.3f} | {m[maj]:.3f} | {m[pas]:.3f} |")
    for d in sampled.get("difference", []):
        lines.append(f"harness - scripts/evaluate.py, {d['reader']}, paired by row ({d['rows']} rows): "
                     f"{d['other']:.3f} - {d['base']:.3f} = {d['delta']:+.3f} ± {d['se']:.3f}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    out = Path(args.output_dir)
    same, sampled, include, task = None, None, None, args.task
    is_sampled = args.repeats > 1 or args.temperature > 0
    try:
        if args.merge and not args.adapter:
            raise BenchmarkError("--merge needs --adapter")
        if args.repeats > 1 and args.temperature <= 0:
            raise BenchmarkError("--repeats > 1 needs --temperature > 0 (greedy repeats are identical)")
        if is_sampled:  # the shipped task with repeats and sampling, in a task folder of this run
            include = out / "tasks"
            task = sampled_task(args.task, include, args.repeats, args.temperature, args.top_p, args.max_gen_toks)
        if not args.regrade_only:
            model, adapter = resolve_model_path(args.model), args.adapter
            if args.merge:
                model, adapter = str(merged_model_dir(args.model, args.adapter, args.dtype)), None
                print(f"merged {args.adapter} into {model}", flush=True)
            cmd = lm_eval_command(
                model, task, out / "lm_eval", adapter=adapter, include_path=include, sampling_seed=args.sampling_seed,
                data_dir=args.data_dir, limit=args.limit, seed=args.seed, holdout=args.holdout, batch_size=args.batch_size,
                dtype=args.dtype, device=resolve_device(args.device), max_gen_toks=args.max_gen_toks,
            )  # fmt: skip
            print(shlex.join(cmd), flush=True)
            run_lm_eval(cmd)
        samples = find_peer_samples(out / "lm_eval", task)
        peer_graded = read_peer_samples(samples, args.task, args.data_dir)
        per = each_completion if is_sampled else (lambda rows: rows)  # sampled: every completion, not the first
        reports = [agreement_report(per(peer_graded), f"lm_eval ({samples.name})")]
        if is_sampled:
            sampled = {"harness": sampled_scores(peer_graded)}
        if args.ours:
            peer_rows = {g.index for g in peer_graded}
            ours = [g for g in read_our_samples(args.ours, args.task, args.data_dir) if g.index in peer_rows]
            if len(ours) != len(peer_rows):
                raise BenchmarkError(
                    f"{args.ours} lacks {len(peer_rows) - len(ours)} of the harness's rows: evaluate the same --limit/--seed"
                )
            reports.append(agreement_report(per(ours), f"scripts/evaluate.py ({args.ours})"))
            if is_sampled:
                sampled["ours"] = sampled_scores(ours)
                sampled["difference"] = [sampled_difference(ours, peer_graded, r) for r in sampled["harness"]]
            elif args.task in CHAT_TASKS:  # our prompt: the harness should sample our completions
                same = identical_completions(peer_graded, ours)
    except (BenchmarkError, ModelLoadError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    payload = {"model": args.model, "adapter": args.adapter, "merged": args.merge, "task": args.task, "limit": args.limit,
               "seed": args.seed, "repeats": args.repeats, "temperature": args.temperature, "top_p": args.top_p,
               "max_gen_toks": args.max_gen_toks, "sampling_seed": args.sampling_seed, "reports": reports,
               "identical_completions": same, "sampled": sampled}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(payload, indent=2))
    for r in reports:
        print(format_agreement(r), end="\n\n")
    if sampled is not None:
        print(format_sampled(sampled), end="\n\n")
    if same is not None:
        print(
            f"identical completions: {same['identical']} of {same['rows']} ({same['identical_stripped']} once stripped)"
        )
    print(f"agreement: {out / 'agreement.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
